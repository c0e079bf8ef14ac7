"""``backchannel backup`` / ``restore``: consistent copies of a live SQLite store.

How the copy is made, and why: ``VACUUM INTO`` reads the store inside one read transaction
and writes a compact, self-contained file (rollback-journal mode, no ``-wal`` beside it). In
WAL mode a read transaction never blocks the writer, so ingest and delivery go on while the
copy is written; the copy is the store as of the moment the read began: every event
acknowledged before that moment is in it, with its outbox rows as they were then. SQLite's
online backup API was the other candidate: stepped (``pages=N``) it restarts whenever another
process commits, so under steady ingest it may never finish; in one step it is the same read
transaction as ``VACUUM INTO`` without the compaction. (Measured stall: README, Backups.)

Nothing is reported as done before the copy is checked: written to a temporary file in the
destination's folder, fsynced, ``PRAGMA integrity_check``, the schema version compared with
this build's migrations, then renamed into place (a crash leaves the old file or the new one,
never half of one).

Restore refuses to run while any process has the store open (``store/inuse.py``: a ``flock``
every open store holds), verifies the backup the same way, and never deletes: a store it
replaces (``--force``) is moved aside with its ``-wal`` and ``-shm``, whose frames belong to
the old file and must never be replayed onto the restored one.

The Fernet key that encrypts destination tokens and webhook secrets is not in the database:
a backup without it restores events, keys and settings but no usable token. ``--with-key``
writes it beside the backup (``FILE.key``, mode 0600); either way the output says where the
key is.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from backchannel.config import Settings
from backchannel.store import inuse
from backchannel.store.sqlite import migrations, path_from_url

#: what `backup` prints (and exits non-zero) for a PostgreSQL store: the server's own tools
#: make consistent copies there, and a gateway process has no business holding them.
POSTGRES_RECIPE = """\
the store is PostgreSQL, which `backchannel backup` does not copy; use PostgreSQL's own
tools (README, Backups):

  Logical (nightly; restores to the moment it was taken):
    pg_dump --format=custom --file=backchannel-$(date +%F).dump "$BACKCHANNEL_DATABASE_URL"
    pg_restore --clean --if-exists --no-owner --dbname="$BACKCHANNEL_DATABASE_URL" FILE.dump

  Point in time (base backup + WAL archive; restores to any moment):
    postgresql.conf: wal_level = replica, archive_mode = on,
                     archive_command = 'test ! -f /backup/wal/%f && cp %p /backup/wal/%f'
    pg_basebackup --pgdata=/backup/base-$(date +%F) --wal-method=stream --checkpoint=fast
    restore: stop PostgreSQL, replace the data directory with the base backup, set
      restore_command = 'cp /backup/wal/%f %p' and recovery_target_time = '…',
      touch recovery.signal, start PostgreSQL.

Either way, keep the Fernet key (BACKCHANNEL_SECRET_KEY or backchannel.key) apart from the
dump: without it the stored tokens cannot be decrypted."""


class BackupError(Exception):
    """A backup or restore that cannot be done; the message names what is wrong."""


@dataclass(frozen=True)
class Verified:
    """A store file that passed ``integrity_check`` with a schema this build can run."""

    path: Path
    schema_version: int
    conversions: int
    size: int


@dataclass(frozen=True)
class KeyNote:
    """Where the Fernet key is, for the output: a backup is useless for tokens without it."""

    written: Path | None
    source: str


@dataclass(frozen=True)
class BackupResult:
    verified: Verified
    seconds: float
    key: KeyNote


@dataclass(frozen=True)
class RestoreResult:
    verified: Verified
    target: Path
    moved_aside: list[Path]
    key: KeyNote


def sqlite_store_path(settings: Settings) -> Path:
    """The configured SQLite file, or :class:`BackupError` (with the recipe for PostgreSQL)."""
    url = settings.database_url
    if url.startswith(("postgresql:", "postgres:")):
        raise BackupError(POSTGRES_RECIPE)
    try:
        return Path(path_from_url(url))
    except ValueError as exc:
        raise BackupError(f"database URL: {exc}") from None


def _latest_version() -> int:
    return max(version for version, _ in migrations())


def verify(path: Path) -> Verified:
    """Check that ``path`` is a whole, self-contained store this build can open."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    with path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise BackupError(f"{path}: not an SQLite database")
    wal = Path(f"{path}-wal")
    if header[18] == 2 and wal.exists() and wal.stat().st_size > 0:
        # a WAL-mode file with frames beside it: the file alone is not the whole store
        raise BackupError(
            f"{path}: has un-checkpointed changes in {wal}; make backups with `backchannel backup`"
        )
    # immutable: read the file as it is, create no -wal/-shm beside it, take no locks
    uri = f"file:{path.resolve()}?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise BackupError(f"{path}: integrity check failed: {'; '.join(problems[:5])}")
            try:
                version = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
                conversions = db.execute("SELECT COUNT(*) FROM conversions").fetchone()[0]
            except sqlite3.OperationalError as exc:
                raise BackupError(f"{path}: not a Backchannel store ({exc})") from None
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: unreadable: {exc}") from None
    latest = _latest_version()
    if not isinstance(version, int) or version < 1:
        raise BackupError(f"{path}: no schema version recorded")
    if version > latest:
        raise BackupError(
            f"{path}: schema version {version} is newer than this build's ({latest});"
            " use the backchannel version that made it"
        )
    return Verified(path, version, int(conversions), path.stat().st_size)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)  # a rename is durable once its directory is


def _temp_beside(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def _write_key(settings: Settings, destination: Path, *, force: bool) -> KeyNote:
    """Write the Fernet key(s) to ``destination`` (mode 0600)."""
    if settings.secret_key:
        raw, source = settings.secret_key.strip(), "BACKCHANNEL_SECRET_KEY"
    else:
        key_file = Path(settings.key_file)
        if not key_file.is_file():
            raise BackupError(
                f"--with-key: no key file at {key_file} and no BACKCHANNEL_SECRET_KEY"
            )
        raw, source = key_file.read_text().strip(), str(key_file)
    if destination.exists() and not force:
        raise BackupError(f"{destination} exists; add --force to overwrite it")
    temp = _temp_beside(destination)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, destination)
    return KeyNote(destination, source)


def key_source(settings: Settings) -> str:
    if settings.secret_key:
        return "BACKCHANNEL_SECRET_KEY"
    key_file = Path(settings.key_file)
    return str(key_file) if key_file.exists() else f"{key_file} (not created yet: no token stored)"


def backup(settings: Settings, destination: Path, *, force: bool, with_key: bool) -> BackupResult:
    """Copy the live store to ``destination`` (see the module docstring for how and why)."""
    source = sqlite_store_path(settings)
    if not source.is_file():
        raise BackupError(f"no store at {source} (BACKCHANNEL_DATABASE_URL)")
    if destination.is_dir():
        raise BackupError(f"{destination} is a directory; name the backup file")
    if not destination.parent.is_dir():
        raise BackupError(f"{destination.parent}: no such directory")
    if destination.exists() and not force:
        raise BackupError(f"{destination} exists; add --force to overwrite it")
    if destination.resolve() == source.resolve():
        raise BackupError(f"{destination} is the store itself")
    key_path = Path(f"{destination}.key")
    if with_key and key_path.exists() and not force:
        raise BackupError(f"{key_path} exists; add --force to overwrite it")
    temp = _temp_beside(destination)
    temp.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        # mode=rw: never create an empty store where the configured one is missing
        db = sqlite3.connect(f"file:{source.resolve()}?mode=rw", uri=True, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("VACUUM INTO ?", (str(temp),))
        finally:
            db.close()
        seconds = time.monotonic() - started
        os.chmod(temp, 0o600)  # hashed identifiers and encrypted tokens: the store's own care
        _fsync_file(temp)
        verified = verify(temp)
        os.replace(temp, destination)
        _fsync_dir(destination.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source}: {exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    key = (
        _write_key(settings, key_path, force=force)
        if with_key
        else KeyNote(None, key_source(settings))
    )
    return BackupResult(
        Verified(destination, verified.schema_version, verified.conversions, verified.size),
        seconds,
        key,
    )


def restore(settings: Settings, source: Path, *, force: bool, with_key: bool) -> RestoreResult:
    """Put the backup ``source`` in place of the configured store, which must not be open."""
    target = sqlite_store_path(settings)
    verify(source)
    key_in = Path(f"{source}.key")
    key_out = Path(settings.key_file)
    if with_key:
        if settings.secret_key:
            raise BackupError(
                f"--with-key: BACKCHANNEL_SECRET_KEY is set; set it to the key in {key_in}"
                " instead (restore writes only the key file)"
            )
        if not key_in.is_file():
            raise BackupError(f"--with-key: no key beside the backup ({key_in})")
        other_key = key_out.exists() and key_out.read_text().strip() != key_in.read_text().strip()
        if other_key and not force:
            raise BackupError(
                f"{key_out} holds another key; add --force to replace it (it is kept as"
                f" {key_out}.replaced-…)"
            )
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent}: no such directory")
    with inuse.exclusive(target):
        sidecars = [target, Path(f"{target}-wal"), Path(f"{target}-shm")]
        present = [p for p in sidecars if p.exists()]
        if present and not force:
            raise BackupError(
                f"a store exists at {target}; add --force to replace it (it is kept as"
                f" {target}.replaced-…, not deleted)"
            )
        temp = _temp_beside(target)
        try:
            shutil.copyfile(source, temp)
            _fsync_file(temp)
            verified = verify(temp)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            moved = []
            for path in present:
                aside = path.with_name(f"{path.name}.replaced-{stamp}")
                os.replace(path, aside)
                moved.append(aside)
            os.replace(temp, target)
            _fsync_dir(target.parent)
        finally:
            temp.unlink(missing_ok=True)
    key = KeyNote(None, key_source(settings))
    if with_key:
        if key_out.exists() and key_out.read_text().strip() != key_in.read_text().strip():
            os.replace(key_out, key_out.with_name(f"{key_out.name}.replaced-{stamp}"))
        if not key_out.exists():
            fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key_in.read_text().strip() + "\n")
        key = KeyNote(key_out, str(key_in))
    result = Verified(target, verified.schema_version, verified.conversions, verified.size)
    return RestoreResult(result, target, moved, key)
