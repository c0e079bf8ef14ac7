"""SQLite: WAL checkpoints on their own thread, off the commit path (store/sqlite.py).

Real files, real threads: commits no longer checkpoint, the thread does (PASSIVE), the WAL
stays bounded (TRUNCATE past the bound), and every committed row is in the database file
after close, read by a fresh connection.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from backchannel.store.sqlite import SqliteStore

from .helpers import NOW, conversion


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def fill(store: SqliteStore, start: int, batches: int, size: int = 200) -> None:
    for b in range(batches):
        items = [conversion(start + b * size + i) for i in range(size)]
        assert all(store.insert_conversions(items, NOW))


def test_commits_leave_checkpoints_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    try:
        checkpointer = store.start_checkpointer(every=3600, start_at=1, bound=1 << 40)
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        fill(store, 0, 40)  # ~8,000 rows: several times SQLite's 1000-page autocheckpoint
        wal = Path(str(path) + "-wal")
        # no commit checkpointed: the WAL grew past SQLite's 1000 pages (4 MiB) untouched
        assert wal.stat().st_size > 4 * 1024 * 1024
        assert checkpointer.passive == 0
    finally:
        store.close()


def test_the_thread_checkpoints_passively_and_the_rows_survive(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    n = 0
    try:
        checkpointer = store.start_checkpointer(every=0.01, start_at=64 * 1024, bound=1 << 40)
        fill(store, 0, 30)
        wait_for(lambda: checkpointer.passive >= 1)
        big = checkpointer.wal_size()
        # once a checkpoint has copied every frame, the next commit restarts the WAL from the
        # top and cuts the file back to journal_size_limit (4 x start_at)
        for n in range(50):
            fill(store, 100_000 + n * 20, 1, size=20)
            if checkpointer.wal_size() <= 4 * 64 * 1024:
                break
            time.sleep(0.05)
        assert checkpointer.wal_size() <= 4 * 64 * 1024 < big
        assert checkpointer.truncating == 0
        assert checkpointer.failures == 0
    finally:
        store.close()
    db = sqlite3.connect(path)
    (count,) = db.execute("SELECT COUNT(*) FROM conversions").fetchone()
    assert count == 6000 + 20 * (n + 1)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (2 * count,)


def test_past_the_bound_the_wal_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    try:
        checkpointer = store.start_checkpointer(every=0.01, start_at=1, bound=1)
        fill(store, 0, 5)
        wait_for(lambda: checkpointer.truncating >= 1 and checkpointer.wal_size() == 0)
        fill(store, 10_000, 1)  # the writer goes on after a TRUNCATE
    finally:
        store.close()
    assert not os.path.exists(str(path) + "-wal") or os.path.getsize(str(path) + "-wal") == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM conversions").fetchone() == (1200,)
