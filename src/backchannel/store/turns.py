"""Whose turn it is to write one SQLite file, among the processes of ``serve --workers N``.

SQLite lets one writer at a time in (WAL mode too). A process whose ``BEGIN IMMEDIATE``
finds another writer in is handed to SQLite's busy handler, which *sleeps* and tries again:
1, 2, 5, 10, 15, 20, 25 … ms. It cannot know when the other commit ends, so a wait that
needed half a millisecond (one commit and its fsync) often costs 3 or 8, and with two
processes committing hundreds of times a second such waits are frequent. On SQLite our
writes run on the event loop (store/runner.py), so the loop, and every request of that
process, sleeps with it.

A turn is an exclusive ``flock`` on ``<db>.writer.lock``, taken around every write
transaction (before ``BEGIN IMMEDIATE``, released after ``COMMIT``). A process that finds the
turn taken looks again after 50 µs, then at doubling intervals of at most 1 ms, so it starts
at most about a millisecond after the other's commit. Why not a blocking ``flock``, which
the kernel would end the very moment the turn is free: it cannot time out, and a process
stopped mid-transaction (SIGSTOP, a debugger) must cost the others a 503 after
``BUSY_TIMEOUT``, as SQLite's own wait does, not hang them. Measured on this project's
machine, two processes committing single rows as fast as they could, three interleaved runs
(the machine heavily loaded by other work; ``./dev bench write_turns`` repeats it): the wait
for the write lock was p99 4.5–13 ms with turns, 18–56 ms with the busy handler, and more
commits went through per second.

The group commits go one better (:meth:`WriterTurn.free`, :meth:`WriterTurn.wait`, used by
store/runner.py): when another process has the turn, they wait for it on a thread, so the
event loop keeps reading and validating requests meanwhile, which then join the next group.

Only the processes of one group take turns; anything else that writes the file (a CLI
command, a ``worker``) still meets SQLite's busy handler, as before. A process that dies
holding its turn gives it up with its file descriptors (the kernel drops the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from pathlib import Path

#: seconds a process waits for its turn before the write fails as "database is locked" (a
#: 503 for ingest), as long as SQLite's own busy timeout (store/sqlite.py)
TIMEOUT = 30.0
FIRST_LOOK = 0.00005  # seconds before the first look again; doubling up to EVERY
EVERY = 0.001


def turn_path(db_path: str | Path) -> Path:
    return Path(f"{db_path}.writer.lock")


class WriterTurn:
    """The turn of one process (see module docstring). Two descriptors of the same file:
    ``_fd`` holds the turn during a transaction; ``_probe``, a separate open file, looks at
    (or waits for) the turn without taking it, so it also sees this process's own turn."""

    def __init__(self, db_path: str | Path) -> None:
        path = turn_path(db_path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._probe = os.open(path, os.O_RDWR)
        except BaseException:
            os.close(self._fd)
            raise

    def take(self, timeout: float = TIMEOUT) -> None:
        """Wait until this process has the turn; past ``timeout``, "database is locked"."""
        if not _lock(self._fd, timeout):
            error = sqlite3.OperationalError(
                "database is locked: another process of the group kept its turn to write"
            )
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # a 503, like SQLite's own timeout
            raise error

    def give(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def free(self) -> bool:
        """Nobody has the turn right now (it may be taken a moment later)."""
        try:
            fcntl.flock(self._probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._probe, fcntl.LOCK_UN)
        return True

    def wait(self, timeout: float = TIMEOUT) -> None:
        """Wait until the turn is free or ``timeout`` passed (call on a thread; the turn is
        not taken: :meth:`take` follows)."""
        if _lock(self._probe, timeout):
            fcntl.flock(self._probe, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._fd, self._probe):
            with contextlib.suppress(OSError):
                os.close(fd)


def _lock(fd: int, timeout: float) -> bool:
    """Take the exclusive flock on ``fd``, looking again and again until ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = FIRST_LOOK
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(EVERY, pause * 2)
            continue
        return True
