"""Backups of the embedded SQLite store: ``backup`` while it runs, ``restore`` when stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from backchannel.cli.common import fail, load_settings


def _key_advice(written: Path | None, source: str, where: Path) -> str:
    """Where the Fernet key is: without it a backup's tokens cannot be decrypted."""
    if written is not None:
        return f"key: written to {written} (mode 0600): keep it as safe as the tokens it opens"
    return (
        f"key: NOT in {where}: tokens and webhook secrets in it decrypt only with the key in"
        f" {source}; keep that apart and safe (or use --with-key)"
    )


def backup(
    file: Annotated[Path, typer.Argument(help="Where to write the copy of the SQLite store.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    with_key: Annotated[
        bool, typer.Option("--with-key", help="Also write the Fernet key to FILE.key (0600).")
    ] = False,
) -> None:
    """Copy the live SQLite store, consistently, while serve keeps ingesting and delivering."""
    from backchannel import backup as backups

    settings = load_settings()
    try:
        done = backups.backup(settings, file, force=force, with_key=with_key)
    except backups.BackupError as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"backup: {exc}", code=1)
    v = done.verified
    typer.echo(
        f"backup: {v.path} ({v.size} bytes, {v.conversions} conversions, schema {v.schema_version},"
        f" integrity ok) in {done.seconds:.2f} s"
    )
    typer.echo(_key_advice(done.key.written, done.key.source, file))


def restore(
    file: Annotated[Path, typer.Argument(help="A backup made by `backchannel backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a stopped store (kept as *.replaced-…).")
    ] = False,
    with_key: Annotated[
        bool, typer.Option("--with-key", help="Also restore the key from FILE.key.")
    ] = False,
) -> None:
    """Put a backup in place of the configured SQLite store; refuses while it is in use."""
    from backchannel import backup as backups
    from backchannel.store.inuse import StoreInUse

    settings = load_settings()
    try:
        done = backups.restore(settings, file, force=force, with_key=with_key)
    except (backups.BackupError, StoreInUse) as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"restore: {exc}", code=1)
    v = done.verified
    typer.echo(
        f"restore: {done.target} from {file} ({v.conversions} conversions,"
        f" schema {v.schema_version}, integrity ok)"
    )
    for path in done.moved_aside:
        typer.echo(f"kept the replaced file as {path}")
    if done.key.written is not None:
        typer.echo(f"key: restored to {done.key.written} from {done.key.source}")
    else:
        typer.echo(
            f"key: not restored; tokens in the store decrypt only with the key they were"
            f" encrypted with (configured: {done.key.source}; --with-key restores FILE.key)"
        )
    typer.echo("next: `backchannel doctor` checks that every stored token decrypts, then `serve`")
