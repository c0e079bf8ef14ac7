"""SQLite writer turns among the processes of ``serve --workers N`` (store/turns.py).

Two store objects on one file stand in for two processes: each opens its own descriptors of
``<db>.writer.lock``, and ``flock`` locks of separate open files exclude each other within
one process exactly as across processes. Real files, real threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from backchannel.store import unavailable
from backchannel.store.runner import AsyncStore
from backchannel.store.sqlite import SqliteStore

from .helpers import NOW, conversion


def two_stores(tmp_path: Path) -> tuple[SqliteStore, SqliteStore]:
    a = SqliteStore(tmp_path / "t.db")
    b = SqliteStore(tmp_path / "t.db")
    a.take_turns()
    b.take_turns()
    return a, b


def hold_turn(store: SqliteStore, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """A thread that opens a write transaction on ``store`` and keeps it ``seconds``."""
    inside = threading.Event()

    def run() -> None:
        with store._write():
            inside.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(5)
    return thread, inside


def test_a_write_transaction_holds_the_turn_until_it_ends(tmp_path: Path) -> None:
    a, b = two_stores(tmp_path)
    try:
        assert b.turn is not None
        assert b.turn.free()
        with a._write():
            assert not b.turn.free()
        assert b.turn.free()
        with pytest.raises(ValueError, match="boom"), a._write():
            raise ValueError("boom")
        assert b.turn.free(), "a failed transaction kept the turn"
    finally:
        a.close()
        b.close()


def test_the_next_writer_starts_when_the_turn_is_given_back(tmp_path: Path) -> None:
    a, b = two_stores(tmp_path)
    try:
        thread, _ = hold_turn(a, 0.3)
        began = time.perf_counter()
        assert b.insert_conversions([conversion(1)], NOW) == [True]
        waited = time.perf_counter() - began
        thread.join()
        assert 0.25 <= waited < 0.3 + 0.1, f"waited {waited:.3f} s"
        assert b.conversion_count() == 1
    finally:
        a.close()
        b.close()


def test_a_turn_kept_too_long_is_a_busy_database(tmp_path: Path) -> None:
    """Past the timeout the write fails as SQLite's own busy timeout does: a 503 for ingest."""
    a, b = two_stores(tmp_path)
    try:
        assert b.turn is not None
        thread, _ = hold_turn(a, 0.5)
        began = time.perf_counter()
        with pytest.raises(sqlite3.OperationalError) as caught:
            b.turn.take(timeout=0.2)
        assert 0.2 <= time.perf_counter() - began < 0.45
        assert unavailable.reason(caught.value) == "the database is locked by another process"
        thread.join()
        b.turn.take(timeout=0.2)  # free again
        b.turn.give()
    finally:
        a.close()
        b.close()


async def test_a_group_commit_waits_for_its_turn_off_the_event_loop(tmp_path: Path) -> None:
    """While another process writes, the event loop keeps running (requests are read and
    validated meanwhile); the commit follows as soon as the turn is free."""
    a, b = two_stores(tmp_path)
    runner = AsyncStore(b, inline=True)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    try:
        thread, _ = hold_turn(a, 0.3)
        ticking = asyncio.create_task(ticker())
        began = time.perf_counter()
        assert await runner.ingest([conversion(1)]) == [True]
        waited = time.perf_counter() - began
        ticking.cancel()
        thread.join()
        assert waited >= 0.25
        assert ticks >= 15, f"the loop ticked {ticks} times in {waited:.2f} s: it was blocked"
        assert b.conversion_count() == 1
    finally:
        runner._pool.shutdown()
        a.close()
        b.close()


def test_without_turns_nothing_is_locked_beside_the_database(tmp_path: Path) -> None:
    """A store outside a group takes no turn and creates no lock file for it."""
    store = SqliteStore(tmp_path / "alone.db")
    try:
        assert store.turn is None
        assert store.insert_conversions([conversion(1)], NOW) == [True]
        assert not (tmp_path / "alone.db.writer.lock").exists()
    finally:
        store.close()
