"""``serve --workers N``: several server processes on one port and one SQLite file.

What must hold (issue 17):

- exactly one process of the group runs the delivery worker; every event, whichever process
  took it, reaches each platform once;
- ``/metrics`` from any process is the group's (counters summed over the processes);
  ``/readyz`` is answered by one process about itself and says which;
- ``kill -9`` of one process while clients post loses no acknowledged event: every 202 is in
  the file, complete; the group keeps answering, the parent starts the dead process again;
- SIGTERM or SIGINT to the parent stops the whole group with exit status 0 within the grace,
  every 202 stored, no row left leased, no process left behind.

Which process answered a request: see :func:`reliability.conftest.pinned_clients`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    DESTINATIONS,
    HOST,
    Ingestor,
    Stack,
    event,
    event_id,
    free_port,
    group_processes,
    order_ids,
    pinned_clients,
    report,
    wait_until,
    which_process,
)
from .test_crash import LEASE, _deliver_everything_after_restart

pytestmark = pytest.mark.slow

GRACE = 20.0  # the default BACKCHANNEL_SHUTDOWN_GRACE
HANG = {"timeout_rate": 1.0, "hang_seconds": 120.0}  # every platform request hangs
METRICS_TOKEN = "metrics-token-for-the-group-test"


def _processes(stack: Stack, count: int) -> dict[int, dict[str, Any]]:
    return group_processes(stack.url, count)


def _pinned(stack: Stack, count: int, per_process: int) -> dict[int, list[httpx.Client]]:
    return pinned_clients(stack.url, count, per_process)


def _process(stack: Stack, client: httpx.Client) -> dict[str, Any]:
    return which_process(stack.url, client)


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _stop(stack: Stack, sig: int) -> tuple[int, float]:
    assert stack.gateway is not None
    started = time.monotonic()
    os.kill(stack.gateway.pid, sig)
    code = stack.gateway.popen.wait(timeout=GRACE + 20)
    return code, time.monotonic() - started


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_one_delivery_worker_group_metrics_and_per_process_readiness(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(lease=LEASE)
    stack.env["BACKCHANNEL_METRICS_TOKEN"] = METRICS_TOKEN
    stack.start_gateway("--workers", "3")
    assert stack.gateway is not None
    processes = _processes(stack, 3)
    # exactly one delivery worker, in the first process; the pids are the parent's children
    assert {i: p["delivery_worker"] for i, p in processes.items()} == {
        0: True,
        1: False,
        2: False,
    }
    assert {p["pid"] for p in processes.values()} == _children(stack.gateway.pid)

    # Single events through every process, each process told apart by its own /readyz.
    took: dict[int, int] = {}
    posted: list[str] = []
    orders = order_ids()
    for index, clients in _pinned(stack, 3, 2).items():
        for client in clients:
            with contextlib.closing(client):
                for _ in range(index + 2):  # 2, 3, 4, 5, 6, 7: a different count each
                    order = next(orders)
                    response = stack.post(event(order), client)
                    assert response.status_code == 202, response.text
                    assert _process(stack, client)["index"] == index  # still the same one
                    took[index] = took.get(index, 0) + 1
                    posted.append(event_id(order))

    # /metrics from any process counts what all of them did
    for _ in range(12):
        with httpx.Client(timeout=10.0) as client:
            response = client.get(
                stack.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        assert _metric(response.text, "backchannel_ingested_total", {"origin": "api"}) == len(
            posted
        )
        assert _metric(
            response.text,
            "backchannel_request_duration_seconds_count",
            {"route": "/v1/events"},
        ) == len(posted)

    # the one worker delivers what every process took, each event once
    wait_until(lambda: stack.undelivered() == 0, 60, "every outbox row delivered")
    assert stack.stored_ids() == set(posted)
    for destination in DESTINATIONS:
        received = stack.received_ids(destination)
        assert sorted(received) == sorted(posted), destination

    code, took_s = _stop(stack, signal.SIGTERM)
    assert code == 0, stack.gateway.log_tail()
    assert all(_gone(p["pid"]) for p in processes.values())
    report("group of 3", events=len(posted), per_process=took, stop_s=round(took_s, 1))


@pytest.mark.parametrize("victim", [1, 0], ids=["api-process", "worker-process"])
def test_kill_9_of_one_process_loses_no_acknowledged_event(
    make_stack: Callable[..., Stack], victim: int
) -> None:
    stack = make_stack(lease=LEASE)
    stack.start_gateway("--workers", "2")
    assert stack.gateway is not None
    before = _processes(stack, 2)
    # three clients on each process, so that both have requests in flight at the kill
    clients = [c for cs in _pinned(stack, 2, 3).values() for c in cs]
    ingestor = Ingestor(stack, batch_every=3, batch_size=50, clients=clients, threads=0).start()
    try:
        wait_until(lambda: ingestor.acked_count() >= 100, 30, "the first acknowledgements")
        time.sleep(2.0)
        os.kill(before[victim]["pid"], signal.SIGKILL)  # requests are in flight on both
        at_kill = ingestor.acked_count()
        # the group keeps acknowledging, and the parent starts the dead process again
        wait_until(
            lambda: ingestor.acked_count() >= at_kill + 200, 30, "acknowledgements after the kill"
        )
        wait_until(
            lambda: _processes(stack, 2)[victim]["pid"] != before[victim]["pid"],
            30,
            "the killed process to be started again",
        )
        after = _processes(stack, 2)
        assert after[1 - victim]["pid"] == before[1 - victim]["pid"], "the other one restarted"
        assert after[0]["delivery_worker"]
        assert not after[1]["delivery_worker"]
        acked_later = ingestor.acked_count()
        wait_until(
            lambda: ingestor.acked_count() >= acked_later + 100,
            30,
            "acknowledgements with the restarted process",
        )
    finally:
        ledger = ingestor.stop()
    assert ledger.anomalies == []
    assert ledger.refused == {}, f"non-202 answers: {ledger.refused}"
    assert stack.gateway.alive(), "the group's parent died with its child"

    stored = stack.stored_ids()
    assert stack.incomplete() == [], "a conversion without one outbox row per destination"
    assert ledger.acked <= stored, f"{len(ledger.acked - stored)} acknowledged events lost"
    assert stored - ledger.acked <= ledger.unanswered, "stored an event nobody sent"
    assert not stored & ledger.not_sent

    code, _ = _stop(stack, signal.SIGTERM)
    assert code == 0, stack.gateway.log_tail()
    figures = _deliver_everything_after_restart(stack, stored)
    report(
        f"kill -9 of group process {victim}",
        requests=ledger.requests,
        acknowledged=len(ledger.acked),
        unanswered=len(ledger.unanswered),
        stored_unanswered=len(stored - ledger.acked),
        **figures,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_stops_cleanly_and_releases_its_leases(
    make_stack: Callable[..., Stack], sig: int
) -> None:
    """A platform hanging on every request, clients posting to both processes: the parent
    exits 0 in time, every 202 is stored, no row stays leased, no child is left; the restart
    delivers each event once."""
    stack = make_stack(retry=(0.2, 1.0))
    stack.faults({"all": HANG})
    stack.start_gateway("--workers", "2")
    assert stack.gateway is not None
    pids = {p["pid"] for p in _processes(stack, 2).values()}
    first = [next(order_ids()) for _ in range(20)]
    assert stack.post({"events": [event(o) for o in first]}).status_code == 202
    wait_until(
        lambda: {d for d, _ in stack.leased()} == set(DESTINATIONS), 20, "rows to be in flight"
    )
    clients = [c for cs in _pinned(stack, 2, 2).values() for c in cs]
    ingest = Ingestor(stack, pause=0.01, clients=clients, threads=0).start()
    wait_until(lambda: ingest.acked_count() >= 50, 20, "clients to be acknowledged")
    code, took = _stop(stack, sig)
    ledger = ingest.stop()
    assert code == 0, stack.gateway.log_tail()
    assert took < GRACE, f"stopped in {took:.1f} s"
    assert all(_gone(pid) for pid in pids), "a process of the group outlived its parent"
    assert not ledger.anomalies, ledger.anomalies
    stored = stack.stored_ids()
    assert ledger.acked <= stored, f"{len(ledger.acked - stored)} acknowledged but not stored"
    assert stack.leased() == [], "rows still leased after a clean stop"

    stack.clear_faults()
    stack.start_gateway()
    wait_until(lambda: stack.undelivered() == 0, 60, "everything to be delivered")
    for destination in DESTINATIONS:
        received = stack.received_ids(destination)
        assert set(received) == stored
        assert len(received) == len(set(received)), "an event reached a platform twice"


def test_the_parents_death_stops_the_group(make_stack: Callable[..., Stack]) -> None:
    """kill -9 of the parent: its children notice (their pipe closes) and stop on their own,
    so no orphan keeps serving the port."""
    stack = make_stack()
    stack.start_gateway("--workers", "2")
    assert stack.gateway is not None
    pids = {p["pid"] for p in _processes(stack, 2).values()}
    stack.kill_gateway()
    wait_until(lambda: all(_gone(pid) for pid in pids), GRACE + 10, "the children to stop")


def test_bad_workers_and_a_busy_port_fail_cleanly(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    base = [sys.executable, "-m", "backchannel.cli", "serve", "--no-sandbox"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args],
            env=stack.env,
            cwd=stack.tmp,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    zero = run("--workers", "0", "--port", str(free_port()))
    assert zero.returncode == 2
    assert "--workers" in zero.stderr
    assert "Traceback" not in zero.stderr
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run("--workers", "2", "--port", str(port))
    assert taken.returncode == 2, taken.stderr
    assert f"--port: cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "Traceback" not in taken.stderr
