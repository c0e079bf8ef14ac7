"""Graceful shutdown of real processes: SIGTERM and SIGINT stop `serve` and `worker` cleanly.

What must hold (issue 12, and issue 18's "SIGTERM does not release leases"):

- the process exits with status 0 within ``shutdown_grace`` (20 s by default), even while a
  platform hangs on every request;
- every request in flight is either committed and answered, or not answered: every 202
  received before or during the stop is stored;
- rows the process had leased are given back at once (pending, lease cleared), so the next
  process delivers them right away instead of waiting out the 120 s lease; each event then
  reaches each platform once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from scaleout.test_workers import Cluster, database  # noqa: F401 - the fixture is used below

from .conftest import DESTINATIONS, Ingestor, Stack, event, event_id, order_ids, wait_until

pytestmark = pytest.mark.slow

GRACE = 20.0  # the default BACKCHANNEL_SHUTDOWN_GRACE
HANG = {"timeout_rate": 1.0, "hang_seconds": 120.0}  # every request hangs past any timeout


def _stop(proc_popen: subprocess.Popen[bytes], sig: int) -> tuple[int, float]:
    """Send ``sig``; the exit status and how long the process took to exit."""
    started = time.monotonic()
    os.kill(proc_popen.pid, sig)
    code = proc_popen.wait(timeout=GRACE + 15)
    return code, time.monotonic() - started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_and_releases_its_leases(
    make_stack: Callable[..., Stack], sig: int
) -> None:
    """`serve` on SQLite, a platform hanging on every request, clients posting: exit 0 in
    time, every 202 stored, no row left leased; the restart delivers each event once."""
    stack = make_stack(retry=(0.2, 1.0))
    stack.faults({"all": HANG})
    stack.start_gateway()
    first = [next(order_ids()) for _ in range(20)]
    response = stack.post({"events": [event(o) for o in first]})
    assert response.status_code == 202
    wait_until(
        lambda: {d for d, _ in stack.leased()} == set(DESTINATIONS), 20, "rows to be in flight"
    )
    ingest = Ingestor(stack, threads=4, pause=0.01).start()
    wait_until(lambda: ingest.acked_count() >= 50, 20, "clients to be acknowledged")
    assert stack.gateway is not None
    code, took = _stop(stack.gateway.popen, sig)
    ledger = ingest.stop()
    assert code == 0, stack.gateway.log_tail()
    assert took < GRACE, f"stopped in {took:.1f} s"
    assert not ledger.anomalies, ledger.anomalies
    stored = stack.stored_ids()
    assert ledger.acked <= stored, f"{len(ledger.acked - stored)} acknowledged but not stored"
    assert stack.leased() == [], "rows still leased after a clean stop"

    stack.clear_faults()
    restarted = time.monotonic()
    stack.start_gateway()
    wait_until(lambda: stack.undelivered() == 0, 60, "everything to be delivered")
    # released, not left to expire: delivered well before the 120 s lease could have run out
    assert time.monotonic() - restarted < 60
    for destination in DESTINATIONS:
        received = stack.received_ids(destination)
        assert set(received) == stored
        assert {event_id(o) for o in first} <= set(received)
        assert len(received) == len(set(received)), "an event reached a platform twice"


def test_postgres_worker_stops_cleanly_and_another_takes_over_at_once(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture imported above
) -> None:
    """`worker` on PostgreSQL: SIGTERM while its requests hang exits 0 within the grace and
    releases its rows; a second worker delivers them at once, each event once."""
    cluster = Cluster(tmp_path, database)
    try:
        cluster.start(nodes=1, workers=0)
        cluster.faults({"all": HANG})
        orders = [next(order_ids()) for _ in range(30)]
        cluster.ingest(orders)
        first = cluster.spawn("worker-a", "worker")
        cluster.workers.append(first)

        def count(sql: str) -> int:
            with psycopg.connect(database) as conn:
                row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        def leased() -> int:
            return count("SELECT COUNT(*) FROM outbox WHERE status = 'in_flight'")

        wait_until(lambda: leased() == 60, 30, "both destinations' rows to be in flight")
        code, took = _stop(first.popen, signal.SIGTERM)
        assert code == 0, first.log_tail()
        assert took < GRACE, f"stopped in {took:.1f} s"
        assert leased() == 0, "rows still leased after a clean stop"

        cluster.http.delete(cluster.sandbox_url + "/_sandbox/faults")
        restarted = time.monotonic()
        cluster.workers.append(cluster.spawn("worker-b", "worker"))
        wait_until(
            lambda: count("SELECT COUNT(*) FROM outbox WHERE status != 'delivered'") == 0,
            60,
            "everything to be delivered",
        )
        assert time.monotonic() - restarted < 60
        for destination in ("tiktok", "meta"):
            stats = cluster.stats(destination)
            assert (stats["unique_event_ids"], stats["duplicates"]) == (len(orders), 0)
    finally:
        cluster.close()
