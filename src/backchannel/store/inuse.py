"""Who has a SQLite store open: a lock file next to the database, held with ``flock``.

Why: ``backchannel restore`` must never swap the file under a running ``serve`` or
``worker`` (it would keep writing to the unlinked old file, or to the new one through a WAL
and a shared-memory index that describe the old one). SQLite's own locks say nothing here: in
WAL mode an idle process holds no lock a probe can see. So every process that opens the store
holds a *shared* ``flock`` on ``<db>.lock`` for as long as it is open, and ``restore`` takes
it *exclusively* without waiting. The kernel drops a lock when its process dies, even by
``kill -9``, so a crashed gateway never leaves a stale "in use" behind (unlike a pidfile).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class StoreInUse(OSError):
    """The store is held by another process (a running gateway, or a restore)."""


def lock_path(db_path: str | Path) -> Path:
    return Path(f"{db_path}.lock")


def _open(db_path: str | Path) -> int:
    return os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)


def holders(db_path: str | Path) -> list[str]:
    """``pid (command)`` of the processes holding the lock, best effort (from /proc/locks)."""
    try:
        inode = lock_path(db_path).stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF" (a "->" marks a waiter)
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        pid, where = parts[4], parts[5]
        if where.rsplit(":", 1)[-1] != str(inode) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            command = " ".join(a.decode(errors="replace") for a in argv if a)[:80]
        except OSError:
            command = "?"
        found.append(f"{pid} ({command})")
    return found


def hold_shared(db_path: str | Path) -> int:
    """Mark the store as open by this process until :func:`release`; fails at once (never
    waits) while a restore holds it, naming what to do."""
    fd = _open(db_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(
            f"{db_path} is being restored (`backchannel restore` holds {lock_path(db_path)});"
            " start again when it has finished"
        ) from None
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def exclusive(db_path: str | Path) -> Iterator[None]:
    """Hold the store alone for the block, or raise :class:`StoreInUse` naming who has it."""
    fd = _open(db_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holders(db_path)
            raise StoreInUse(
                f"{db_path} is in use by a running process"
                f" ({', '.join(who) if who else 'see `fuser ' + str(lock_path(db_path)) + '`'}):"
                " stop `serve` and every `worker` on it first"
            ) from None
        yield
    finally:
        os.close(fd)
