"""How many delivery cycles one process keeps in flight with many connections (issue 14).

Each cycle holds up to a batch of rows in memory while its request is out, so 20 properties
with two connections each must not hold 40 x DELIVERY_CONCURRENCY cycles at once: each
connection keeps one lane of its own (a slow connection never takes another's) and the other
lanes of every connection share one pool, as large as one property with one connection of
each registered destination uses. The cycle itself is replaced by a counting stand-in that
holds its slot for a while, so what is measured is the lanes' scheduling alone, on a real
SQLite store with real connections.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from backchannel.delivery import DestinationWorker, RetryPolicy, build_worker
from backchannel.destinations import DESTINATIONS, ON_BY_DEFAULT, Target
from backchannel.routing import active_lanes
from backchannel.store.runner import for_store
from backchannel.store.sqlite import SqliteStore

CONCURRENCY = 4
POOL = (CONCURRENCY - 1) * len(DESTINATIONS)


class Counter:
    """Cycles in flight now, the most ever, and per connection."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.by_connection: dict[str, int] = {}
        self.peak_by_connection: dict[str, int] = {}
        self.started: dict[str, int] = {}


def count_cycles(
    monkeypatch: pytest.MonkeyPatch, counter: Counter, hold: float, stalled: set[str]
) -> None:
    """Replace a cycle by: count it, hold it ``hold`` s (a ``stalled`` connection: until
    cancelled, a platform that never answers), report work done."""

    async def run_once(self: DestinationWorker) -> bool:
        name = self.connection_name
        counter.now += 1
        counter.peak = max(counter.peak, counter.now)
        counter.by_connection[name] = counter.by_connection.get(name, 0) + 1
        counter.peak_by_connection[name] = max(
            counter.peak_by_connection.get(name, 0), counter.by_connection[name]
        )
        counter.started[name] = counter.started.get(name, 0) + 1
        try:
            await asyncio.sleep(3600 if name in stalled else hold)
        finally:
            counter.now -= 1
            counter.by_connection[name] -= 1
        return True

    monkeypatch.setattr(DestinationWorker, "run_once", run_once)


def store_with(tmp_path: Path, properties: int) -> SqliteStore:
    """``properties`` properties (default included), each with its TikTok and Meta
    connections."""
    store = SqliteStore(tmp_path / "pool.db")
    store.migrate()
    store.ensure_connections(ON_BY_DEFAULT, time.time())
    for i in range(1, properties):
        assert store.create_property(f"p{i:02d}", time.time(), destinations=ON_BY_DEFAULT)
    return store


def drive(store: SqliteStore, seconds: float) -> list[str]:
    """Run the process's worker over every active connection for ``seconds``; its lanes'
    names."""
    lanes = active_lanes(store, ON_BY_DEFAULT)

    async def run() -> None:
        worker = build_worker(
            lanes,
            for_store(store),
            lambda _id: lambda: Target("http://127.0.0.1:9", "pixel", "token"),
            policy=RetryPolicy(),
            concurrency=CONCURRENCY,
            lease=120.0,
        )
        worker.start()
        await asyncio.sleep(seconds)
        await worker.stop(grace=0.0)

    asyncio.run(run())
    return [lane.name for lane in lanes]


def test_forty_connections_share_one_pool_of_extra_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter()
    count_cycles(monkeypatch, counter, hold=0.05, stalled=set())
    store = store_with(tmp_path, 20)
    try:
        names = drive(store, 1.0)
    finally:
        store.close()
    assert len(names) == 40
    # every connection ran, none with more than its concurrency
    assert set(counter.started) == set(names)
    assert max(counter.peak_by_connection.values()) <= CONCURRENCY
    # in flight at once: one lane of each connection plus the shared pool, never 40 x 4
    assert counter.peak <= 40 + POOL
    assert counter.peak > 40  # the pool is used, not just the first lanes
    assert 40 + POOL < 40 * CONCURRENCY


def test_one_property_keeps_every_lane_it_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default install (TikTok and Meta): the pool is larger than its extra lanes, so
    both connections run ``concurrency`` cycles at once, as before pools."""
    counter = Counter()
    count_cycles(monkeypatch, counter, hold=0.05, stalled=set())
    store = store_with(tmp_path, 1)
    try:
        names = drive(store, 0.6)
    finally:
        store.close()
    assert sorted(names) == ["meta", "tiktok"]
    assert counter.peak_by_connection == {"tiktok": CONCURRENCY, "meta": CONCURRENCY}
    assert counter.peak == 2 * CONCURRENCY


def test_stalled_connections_never_starve_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Platforms that never answer hold their cycles (pool slots included): every other
    connection still sends, on its own lane at least."""
    stalled = {f"p{i:02d}/tiktok" for i in range(1, 15)}  # 14 x 4 lanes > 14 + the pool
    counter = Counter()
    count_cycles(monkeypatch, counter, hold=0.05, stalled=stalled)
    store = store_with(tmp_path, 20)
    try:
        names = drive(store, 1.0)
    finally:
        store.close()
    healthy = [n for n in names if n not in stalled]
    assert len(healthy) == 26
    # each healthy connection went through many cycles (0.05 s each over 1 s), not one
    assert min(counter.started[n] for n in healthy) >= 5, counter.started
    assert counter.peak <= 40 + POOL
