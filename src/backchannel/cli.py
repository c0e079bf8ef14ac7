"""The ``backchannel`` command line.

Every command turns bad input into a one-line message naming the field and the reason and a
non-zero exit (2 for usage and input errors), never a traceback: the CLI is used in shell
pipelines and cron jobs where a traceback is noise and an exit code is the contract.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from backchannel import __version__, config
from backchannel.destinations import Target
from backchannel.notes import InvalidConversion
from backchannel.preview import normalize_all, render

app = typer.Typer(
    name="backchannel",
    help="Server-side conversion tracking for TikTok's Events API and Meta's Conversions API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit: the single way commands report errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> config.Settings:
    try:
        return config.load()
    except config.ConfigError as exc:
        fail(f"configuration: {exc}")


def read_json_input(source: str) -> Any:
    """Read JSON from a file path or ``-`` (stdin); errors name the input and the position."""
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        fail(f"{name}: cannot read ({exc.strerror})")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"{name}: not valid JSON ({exc})")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.command()
def send(
    source: Annotated[
        str, typer.Argument(help="A JSON file with one conversion or an array; - for stdin.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the bodies; send nothing.")
    ] = False,
    destination: Annotated[
        list[str] | None,
        typer.Option("--destination", "-d", help="tiktok or meta (repeatable). Default: both."),
    ] = None,
    tiktok_pixel: Annotated[str | None, typer.Option(help="TikTok pixel code to show.")] = None,
    meta_pixel: Annotated[str | None, typer.Option(help="Meta pixel id to show.")] = None,
) -> None:
    """Show exactly what would be sent for a conversion, one JSON line per destination."""
    settings = load_settings()
    names = destination or ["tiktok", "meta"]
    for name in names:
        if name not in ("tiktok", "meta"):
            fail(f"--destination: unknown destination {name!r} (tiktok or meta)")
    if not dry_run:
        fail("sending for real needs `backchannel serve`; use --dry-run to preview", 2)
    document = read_json_input(source)
    items = document if isinstance(document, list) else [document]
    if not items:
        fail("input: an empty array holds no conversion")
    try:
        accepted = normalize_all(items, now=time.time(), default_region=settings.default_region)
    except InvalidConversion as exc:
        fail("; ".join(f"{n.path}: {n.reason}" for n in exc.notes))
    targets = {
        "tiktok": Target(settings.tiktok_url, tiktok_pixel or settings.tiktok_pixel or ""),
        "meta": Target(
            settings.meta_url,
            meta_pixel or settings.meta_pixel or "",
            api_version=settings.meta_api_version,
        ),
    }
    chosen = {name: targets[name] for name in dict.fromkeys(names)}
    for line in render(accepted, chosen, now=time.time()):
        typer.echo(orjson.dumps(line).decode())


@app.command()
def serve() -> None:
    """Run the ingest API, the delivery worker and the dashboard (SQLite + sandbox by default)."""
    fail("serve: not built yet (see the serve issue)", 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
