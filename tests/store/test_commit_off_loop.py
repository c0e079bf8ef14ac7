"""On SQLite, a group commit's COMMIT (its fsync) runs on a thread, off the event loop.

What must hold (store/runner.py, ``SqliteStore.write_deferred``): the statements run on the
loop, the COMMIT on the commit thread; while it is in progress the loop keeps running (the
next requests are read and queued for the next group), nothing is acknowledged before its
COMMIT returned, other writes on the loop wait for it without blocking the loop, and a COMMIT
that fails reaches the requests of its group and leaves the store ready for the next write;
a group waits the commit window before it is taken, so requests arriving within it join.

How a COMMIT is made slow at will: SQLite's trace callback runs on the thread that executes a
statement, as it starts; for ``COMMIT`` it records that thread's name and waits for an event
the test sets. Real files, real threads, a second connection to see what is committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backchannel.store.runner import COMMIT_WINDOW, AsyncStore, for_store
from backchannel.store.sqlite import SqliteStore

from .helpers import NOW, conversion


class SlowCommits:
    """Holds every COMMIT of ``store``'s write connection until :meth:`release`."""

    def __init__(self, store: SqliteStore) -> None:
        self.threads: dict[str, set[str]] = {"COMMIT": set(), "INSERT": set()}
        self.commits = 0
        self.started = threading.Event()
        self._go = threading.Event()
        store._db.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        verb = sql.split(None, 1)[0].upper()
        if verb in self.threads:
            self.threads[verb].add(threading.current_thread().name)
        if verb == "COMMIT":
            self.commits += 1
            self.started.set()
            self._go.wait(2)  # on the loop's thread, this would hold the loop for 2 s

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "commit.db"


@pytest.fixture
def runner(db_path: Path) -> Iterator[AsyncStore]:
    runner = for_store(SqliteStore(db_path))
    yield runner
    runner.close()


def committed_rows(db_path: Path) -> int:
    """Conversions another connection sees: what is committed."""
    other = sqlite3.connect(db_path)
    try:
        return int(other.execute("SELECT COUNT(*) FROM conversions").fetchone()[0])
    finally:
        other.close()


async def until(event: threading.Event) -> None:
    """Wait for ``event`` while the loop keeps running (fails after 1 s)."""
    for _ in range(100):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the COMMIT never started")


async def test_the_loop_runs_during_the_commit_and_answers_only_after_it(
    runner: AsyncStore, db_path: Path
) -> None:
    assert isinstance(runner.store, SqliteStore)
    slow = SlowCommits(runner.store)
    first = asyncio.create_task(runner.ingest([conversion(1)]))
    await until(slow.started)
    # the COMMIT is in progress: the loop still runs, and requests arriving now are queued
    later = [asyncio.create_task(runner.ingest([conversion(n)])) for n in range(2, 12)]
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not first.done(), "the COMMIT held the loop, or it answered before the COMMIT"
    assert committed_rows(db_path) == 0
    assert all(not task.done() for task in later)
    slow.release()
    assert await first == [True]
    assert await asyncio.gather(*later) == [[True]] * 10
    assert committed_rows(db_path) == 11
    # the ten that arrived during the first COMMIT formed one group: two COMMITs in all
    assert slow.commits == 2
    loop_thread = threading.current_thread().name
    assert slow.threads["INSERT"] == {loop_thread}, "the statements left the loop's thread"
    assert len(slow.threads["COMMIT"]) == 1
    assert loop_thread not in slow.threads["COMMIT"]


async def test_other_writes_on_the_loop_wait_for_the_commit_without_blocking_it(
    runner: AsyncStore, db_path: Path
) -> None:
    """The delivery worker writes through ``run`` on the same connection: it must wait for
    the COMMIT in progress on the loop (not on the connection's lock, which would stop the
    loop), then write."""
    assert isinstance(runner.store, SqliteStore)
    store = runner.store
    slow = SlowCommits(store)
    first = asyncio.create_task(runner.ingest([conversion(1)]))
    await until(slow.started)
    direct = asyncio.create_task(runner.run(store.insert_conversions, [conversion(2)], NOW))
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10
    assert not direct.done()
    slow.release()
    assert await first == [True]
    assert await direct == [True]
    assert committed_rows(db_path) == 2


async def test_a_failed_commit_reaches_its_group_and_the_next_write_goes_through(
    runner: AsyncStore, db_path: Path
) -> None:
    """A deferred foreign key fails at COMMIT (as a full disk would): the error reaches the
    caller, nothing of that transaction is stored, and the connection is free again."""
    assert isinstance(runner.store, SqliteStore)
    store = runner.store

    def orphan() -> None:
        with store._write() as db:
            db.execute("PRAGMA defer_foreign_keys=ON")
            db.execute(
                "INSERT INTO outbox (conversion_id, connection_id, destination, due_at,"
                " created_at) VALUES (999, 1, 'tiktok', 0, 0)"
            )

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await runner.write(orphan)
    assert not store._db.in_transaction
    assert await runner.ingest([conversion(1)]) == [True]
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("SELECT conversion_id FROM outbox").fetchall() == [(1,), (1,)]
    finally:
        other.close()
    assert committed_rows(db_path) == 1


def test_a_deferred_write_holds_one_transaction(db_path: Path) -> None:
    """A second transaction inside a deferred write would wait forever for the lock its
    first one keeps: refused, and the first is rolled back."""
    store = SqliteStore(db_path)
    try:

        def two() -> None:
            store.insert_conversions([conversion(1)], NOW)
            store.insert_conversions([conversion(2)], NOW)

        with pytest.raises(RuntimeError, match="one transaction"):
            store.write_deferred(two)
        assert not store._db.in_transaction
        assert committed_rows(db_path) == 0
        result, pending = store.write_deferred(store.insert_conversions, [conversion(3)], NOW)
        assert result == [True]
        assert pending is not None
        assert committed_rows(db_path) == 0  # not before its COMMIT
        pending.commit()
        assert committed_rows(db_path) == 1
        assert store.insert_conversions([conversion(4)], NOW) == [True]  # the lock is free
    finally:
        store.close()


@pytest.mark.parametrize(("window", "commits"), [(0.3, 1), (0.0, 2)])
async def test_a_request_arriving_within_the_window_joins_the_group(
    db_path: Path, window: float, commits: int
) -> None:
    """The group waits ``window`` before it is taken: a request queued 50 ms after the first
    shares its COMMIT when the window is longer than that, and gets a COMMIT of its own
    without a window."""
    store = SqliteStore(db_path)
    runner = AsyncStore(store, inline=True, deferred=store.write_deferred, window=window)
    counted = SlowCommits(store)
    counted.release()  # count only
    try:
        first = asyncio.create_task(runner.ingest([conversion(1)]))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(runner.ingest([conversion(2)]))
        assert await asyncio.gather(first, second) == [[True], [True]]
    finally:
        runner.close()
    assert counted.commits == commits
    assert committed_rows(db_path) == 2


def test_sqlite_groups_wait_the_commit_window(db_path: Path) -> None:
    runner = for_store(SqliteStore(db_path))
    try:
        assert runner.window == COMMIT_WINDOW > 0
    finally:
        runner.close()
