"""One delivery worker's cycle against a real sandbox over loopback and a real SQLite file.

The gateway (ingest only, no worker) stores real conversions; the test then drives a
:class:`DestinationWorker` itself, so it can choose the lease, the clocks and the moment to
look at the outbox. What each test pins is a defect issue 18 or 12 reproduced.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from backchannel.delivery import DestinationWorker, RetryPolicy
from backchannel.destinations import Target
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store import open_store
from backchannel.store.runner import for_store
from support.server import ServerThread

from .helpers import META_PIXEL, TIKTOK_PIXEL, Gateway, Sandbox, wait_for
from .test_delivery import lead, post_all

FAST = RetryPolicy(base=0.05, cap=0.5, max_attempts=3)


@pytest.fixture
def sandbox(stack: ExitStack) -> Sandbox:
    config = SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL)
    server = stack.enter_context(ServerThread(create_sandbox(config)))
    http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
    return Sandbox(server.url, http)


@pytest.fixture
def make_worker(gateway: Gateway, sandbox: Sandbox) -> Iterator[Callable[..., DestinationWorker]]:
    """``make_worker(destination, lease=..., clock=...)`` on the gateway's SQLite file."""
    stores = []

    def make(destination: str = "tiktok", **options: Any) -> DestinationWorker:
        store = open_store(gateway.settings.database_url)
        stores.append(store)
        pixel = TIKTOK_PIXEL if destination == "tiktok" else META_PIXEL
        target = Target(sandbox.url, pixel, "sandbox-token")
        options.setdefault("policy", FAST)
        options.setdefault("concurrency", 1)
        return DestinationWorker(destination, for_store(store), lambda: target, **options)

    yield make
    for store in stores:
        store.close()


def once(worker: DestinationWorker) -> bool:
    """One cycle in a fresh event loop, with a client of its own (a client is bound to the
    loop it was first used on), timed out as the worker's own client is."""

    async def cycle() -> bool:
        timeout = min(15.0, worker.lease / 2)
        worker.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=timeout))
        try:
            return await worker.run_once()
        finally:
            await worker.client.aclose()

    return asyncio.run(cycle())


def write(gateway: Gateway, sql: str) -> None:
    """Change the SQLite file behind the gateway's back (what an old version left there)."""
    with sqlite3.connect(gateway.db_path) as db:
        db.execute(sql)


def outbox(gateway: Gateway, destination: str) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in gateway.outbox(destination)}


def test_a_cycle_ends_by_its_deadline_even_when_the_answer_trickles(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """Headers, then a byte a second: httpx's per-read timeout never fires, but the cycle's
    deadline (half the lease) ends the request, and the row is marked before the lease runs
    out, so no other worker can take it while this one still waits."""
    sandbox.faults({"tiktok": {"malformed_rate": 1.0, "malformed": "stall", "hang_seconds": 60}})
    post_all(gateway, [lead(1)])
    worker = make_worker(lease=4.0)
    started = time.monotonic()
    assert once(worker) is True
    took = time.monotonic() - started
    assert took < 4.0 * 0.5 + 1.0, f"the cycle took {took:.1f} s for a 4 s lease"
    row = outbox(gateway, "tiktok")["lead-1"]
    assert row["status"] == "pending"
    assert "deadline" in row["last_error"]
    assert worker.held == {}
    assert worker.stats.lease_lost == 0


@pytest.mark.parametrize("kind", ["truncated_json", "html", "empty", "stall"])
@pytest.mark.parametrize("destination", ["tiktok", "meta"])
def test_a_useless_200_is_never_a_delivery_and_leaves_no_lease(
    gateway: Gateway,
    sandbox: Sandbox,
    make_worker: Callable[..., DestinationWorker],
    kind: str,
    destination: str,
) -> None:
    """Truncated JSON, an HTML page, an empty body, or a stalled one, all with HTTP 200: the
    rows are retried (never marked delivered, never left in flight); once the platform
    answers properly they are delivered once."""
    sandbox.faults({destination: {"malformed_rate": 1.0, "malformed": kind, "hang_seconds": 30}})
    post_all(gateway, [lead(i) for i in range(5)])
    worker = make_worker(destination, lease=4.0)
    once(worker)
    rows = outbox(gateway, destination)
    assert {r["status"] for r in rows.values()} == {"pending"}
    leased = gateway.query("SELECT COUNT(*) FROM outbox WHERE lease_until IS NOT NULL")
    assert leased == [(0,)]
    assert sandbox.stats(destination)["accepted_events"] == 0
    sandbox.clear_faults()
    time.sleep(0.6)  # past the backoff (FAST: at most 0.05 s, then the breaker's pause)
    worker.paused_until = 0.0
    once(worker)
    assert {r["status"] for r in outbox(gateway, destination).values()} == {"delivered"}
    stats = sandbox.stats(destination)
    assert (stats["unique_event_ids"], stats["duplicates"]) == (5, 0)


def test_the_attempt_limit_is_per_row(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """One row at its last attempt goes to the dead letters alone; the fresh rows of the
    same batch are retried (issue 18: max(attempts) dead-lettered the whole batch)."""
    post_all(gateway, [lead(i) for i in range(4)])
    write(  # lead-0 has failed twice before: this claim is its third and last attempt
        gateway,
        "UPDATE outbox SET attempts = 2 WHERE destination = 'tiktok' AND conversion_id ="
        " (SELECT id FROM conversions WHERE event_id = 'lead-0')",
    )
    sandbox.faults({"tiktok": {"error_rate": 1.0}})
    once(make_worker())
    rows = outbox(gateway, "tiktok")
    assert rows["lead-0"]["status"] == "dead"
    assert "gave up after 3 attempts" in rows["lead-0"]["last_error"]
    assert {rows[f"lead-{i}"]["status"] for i in (1, 2, 3)} == {"pending"}
    assert {rows[f"lead-{i}"]["attempts"] for i in (1, 2, 3)} == {1}


def test_an_unreadable_stored_event_is_dead_lettered_alone(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """A payload this version cannot parse used to keep its whole claim in flight forever
    (attempts climbing, never dead). It is now a dead letter; the others are delivered."""
    post_all(gateway, [lead(i) for i in range(4)])
    write(gateway, "UPDATE conversions SET payload = X'7b6e6f74' WHERE event_id = 'lead-2'")
    worker = make_worker()
    once(worker)
    rows = outbox(gateway, "tiktok")
    assert rows["lead-2"]["status"] == "dead"
    assert "could not be read" in rows["lead-2"]["last_error"]
    assert {rows[f"lead-{i}"]["status"] for i in (0, 1, 3)} == {"delivered"}
    assert sandbox.stats("tiktok")["accepted_events"] == 3
    assert once(worker) is False  # nothing left in flight or due


def test_a_success_sent_before_a_rate_limit_does_not_end_the_pause(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """Two lanes: A's request is on its way (400 ms) when B's is rate-limited and the
    destination pauses; A's late 200 must not end that pause (issue 18: a success on one
    lane cleared another lane's pause, so the platform was hit again at once)."""
    post_all(gateway, [lead(i) for i in range(2)])
    worker = make_worker(batch_size=1, policy=RetryPolicy(base=30.0, cap=60.0))
    sandbox.faults({"tiktok": {"latency_ms": 400}})

    async def two_lanes() -> None:
        worker.client = httpx.AsyncClient(timeout=10.0)
        lane_a = asyncio.create_task(worker.run_once())
        await asyncio.sleep(0.15)  # A's request has arrived and waits out its latency
        sandbox.faults({"tiktok": {"rate_limit_next": 1}})
        await worker.run_once()  # lane B: TikTok 40100, the breaker pauses 15-30 s
        assert worker.paused_until - worker.monotonic() > 10.0
        await lane_a
        await worker.client.aclose()

    asyncio.run(two_lanes())
    rows = outbox(gateway, "tiktok")
    assert rows["lead-0"]["status"] == "delivered"
    assert rows["lead-1"]["status"] == "pending"
    assert worker.paused_until - worker.monotonic() > 10.0


def test_a_wall_clock_jump_does_not_stretch_pauses_or_deadlines(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """The breaker's pause and the cycle deadline are monotonic: the wall clock jumping an
    hour back (NTP, a VM resumed) neither stalls delivery for an hour nor lets a cycle run
    past its lease; jumping forward does not cut a cycle short."""
    offset = [0.0]
    worker = make_worker(lease=4.0, clock=lambda: time.time() + offset[0])
    sandbox.faults({"tiktok": {"error_rate": 1.0}})
    post_all(gateway, [lead(1)])
    once(worker)
    assert worker.failures == 1
    offset[0] = -3600.0
    assert worker.paused_until - worker.monotonic() < 1.0  # not an hour
    offset[0] = 3600.0  # forward: the row's stored due time has long passed
    sandbox.clear_faults()
    time.sleep(0.6)
    once(worker)
    row = outbox(gateway, "tiktok")["lead-1"]
    assert row["status"] == "delivered"
    assert worker.stats.lease_lost == 0
    wait_for(lambda: sandbox.stats("tiktok")["accepted_events"] == 1, what="one delivery")


def test_a_row_whose_request_cannot_be_built_is_a_dead_letter_not_a_stuck_lease(
    gateway: Gateway, sandbox: Sandbox, make_worker: Callable[..., DestinationWorker]
) -> None:
    """A TikTok CRM event replayed while no CRM event set id is configured: the request
    cannot be built, so that row is a dead letter with the reason (it used to stay leased and
    be claimed again every lease); the web event claimed with it is delivered."""
    crm = lead(1, source="crm")
    post_all(gateway, [crm, lead(2)])
    assert outbox(gateway, "tiktok")["lead-1"]["status"] == "dead"  # refused at ingest
    store = open_store(gateway.settings.database_url)
    try:
        assert store.replay(time.time(), event_id="lead-1") == 1
    finally:
        store.close()
    once(make_worker())
    rows = outbox(gateway, "tiktok")
    assert rows["lead-1"]["status"] == "dead"
    assert "cannot be built" in rows["lead-1"]["last_error"]
    assert "CRM" in rows["lead-1"]["last_error"].upper()
    assert rows["lead-2"]["status"] == "delivered"
    assert gateway.query("SELECT COUNT(*) FROM outbox WHERE status = 'in_flight'") == [(0,)]
