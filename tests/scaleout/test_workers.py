"""Scale-out on PostgreSQL with real processes: two ingest nodes, several workers, one database.

What these prove: workers in other processes wake on LISTEN/NOTIFY instead of polling; any
number of workers share the outbox without ever sending one event twice while they live
(``FOR UPDATE SKIP LOCKED`` + leases); and a worker killed mid-batch loses nothing, its leased
rows going to the survivors once the lease runs out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from reliability.conftest import HOST, Proc, event, free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the test cluster (./dev test starts it)."""
    base = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("BACKCHANNEL_TEST_POSTGRES_URL is not set: run the suite with ./dev test")
    name = f"bc_scaleout_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Cluster:
    """A sandbox, ingest nodes (`serve --no-worker`) and workers on one PostgreSQL database."""

    def __init__(self, tmp: Path, database: str, **settings: str) -> None:
        self.tmp = tmp
        self.sandbox_url = f"http://{HOST}:{free_port()}"
        self.env = {
            **os.environ,
            "BACKCHANNEL_DATABASE_URL": database,
            "BACKCHANNEL_SECRET_KEY": Fernet.generate_key().decode(),
            "BACKCHANNEL_TIKTOK_BASE_URL": self.sandbox_url,
            "BACKCHANNEL_META_BASE_URL": self.sandbox_url,
            "BACKCHANNEL_RETRY_BASE": "0.2",
            "BACKCHANNEL_RETRY_CAP": "2",
            "PYTHONUNBUFFERED": "1",
            **{f"BACKCHANNEL_{k.upper()}": v for k, v in settings.items()},
        }
        self.env.pop("BACKCHANNEL_CONFIG", None)
        self.procs: list[Proc] = []
        self.nodes: list[str] = []
        self.workers: list[Proc] = []
        self.http = httpx.Client(timeout=30.0)
        self.key = ""

    def spawn(self, name: str, *args: str) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "backchannel.cli", *args], self.env, self.tmp)
        self.procs.append(proc)
        return proc

    def ready(self, proc: Proc, url: str) -> None:
        def up() -> bool:
            if not proc.alive():
                pytest.fail(f"{proc.name} exited:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                return self.http.get(url, timeout=2.0).status_code == 200
            return False

        wait_until(up, 30, f"{proc.name} to be ready")

    def start(self, nodes: int, workers: int) -> None:
        port = self.sandbox_url.rsplit(":", 1)[1]
        self.ready(
            self.spawn("sandbox", "sandbox", "--port", port), self.sandbox_url + "/_sandbox/faults"
        )
        done = self.spawn("migrate", "migrate")
        assert done.popen.wait(60) == 0, done.log_tail()
        keys = self.spawn("keys", "keys", "create", "--name", "t")
        assert keys.popen.wait(60) == 0, keys.log_tail()
        self.key = keys.log_tail().strip().splitlines()[-1]
        for i in range(nodes):
            url = f"http://{HOST}:{free_port()}"
            node = self.spawn(
                f"node{i}", "serve", "--port", url.rsplit(":", 1)[1], "--no-worker", "--no-sandbox"
            )
            self.ready(node, url + "/healthz")
            self.nodes.append(url)
        for i in range(workers):
            self.workers.append(self.spawn(f"worker{i}", "worker"))

    def ingest(self, order_ids: list[str], batch: int = 200) -> None:
        """Post in batches, alternating between ingest nodes; every batch must be a 202."""
        for n, start in enumerate(range(0, len(order_ids), batch)):
            body = {"events": [event(o) for o in order_ids[start : start + batch]]}
            url = self.nodes[n % len(self.nodes)] + "/v1/events"
            response = self.http.post(
                url, json=body, headers={"Authorization": f"Bearer {self.key}"}
            )
            assert response.status_code == 202, response.text

    def stats(self, destination: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get(
            f"{self.sandbox_url}/_sandbox/{destination}/stats"
        ).json()
        return data

    def faults(self, payload: dict[str, Any]) -> None:
        assert (
            self.http.post(self.sandbox_url + "/_sandbox/faults", json=payload).status_code == 200
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.http.close()


@pytest.fixture
def cluster(tmp_path: Path, database: str) -> Iterator[Cluster]:
    made: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        made.append(Cluster(tmp_path, database, **settings))
        return made[-1]

    yield make  # type: ignore[misc]
    for c in made:
        c.close()


class TestWakeUp:
    def test_workers_in_other_processes_wake_on_notify_not_on_poll(self, cluster: Any) -> None:
        """With a 60 s poll interval, an event still reaches the sandbox within seconds."""
        c: Cluster = cluster(poll_interval="60")
        c.start(nodes=1, workers=1)
        # Let the listener connect (it wakes the lanes once on connect, then they idle).
        time.sleep(2.0)
        c.ingest(["wake-1"])
        took = wait_until(
            lambda: (
                c.stats("tiktok")["accepted_events"] == 1
                and c.stats("meta")["accepted_events"] == 1
            ),
            20,
            "the event to be delivered after a NOTIFY",
        )
        assert took < 20


class TestManyWorkers:
    def test_two_nodes_three_workers_deliver_each_event_once(self, cluster: Any) -> None:
        """3 workers share 3,000 events from 2 nodes: every event exactly once per destination."""
        c: Cluster = cluster(lease_seconds="10")
        c.start(nodes=2, workers=3)
        orders = [f"many-{i}" for i in range(3000)]
        c.ingest(orders)
        wait_until(
            lambda: all(c.stats(d)["unique_event_ids"] == 3000 for d in ("tiktok", "meta")),
            90,
            "3,000 events at both destinations",
        )
        for destination in ("tiktok", "meta"):
            s = c.stats(destination)
            assert s["accepted_events"] == 3000, s
            assert s["duplicates"] == 0, s

    def test_worker_killed_mid_batch_loses_nothing(self, cluster: Any) -> None:
        """kill -9 of a worker mid-run: its leased rows go to the others; nothing is lost."""
        c: Cluster = cluster(lease_seconds="8")
        c.start(nodes=2, workers=3)
        c.faults({"all": {"latency_ms": 300}})  # keep batches in flight
        orders = [f"kill-{i}" for i in range(4000)]
        c.ingest(orders)
        wait_until(lambda: c.stats("tiktok")["accepted_events"] >= 600, 60, "delivery to start")
        before = {d: c.stats(d)["duplicates"] for d in ("tiktok", "meta")}
        c.workers[0].kill()
        wait_until(
            lambda: all(c.stats(d)["unique_event_ids"] == 4000 for d in ("tiktok", "meta")),
            120,
            "all 4,000 events at both destinations after the kill",
        )
        # While all workers lived, no event was sent twice.
        assert before == {"tiktok": 0, "meta": 0}

        def outbox() -> list[tuple[str, str, int]]:
            with psycopg.connect(c.env["BACKCHANNEL_DATABASE_URL"]) as db:
                rows = db.execute(
                    "SELECT destination, status, COUNT(*) FROM outbox GROUP BY 1, 2"
                ).fetchall()
            return sorted(rows)

        # The dead worker's leased rows come back after the lease and are delivered by the
        # survivors (the platform may see them twice: it deduplicates on event_id).
        delivered = [("meta", "delivered", 4000), ("tiktok", "delivered", 4000)]
        wait_until(lambda: outbox() == delivered, 60, f"every outbox row delivered ({outbox()})")


class TestWorkerMetrics:
    def test_standalone_worker_serves_its_own_metrics(self, cluster: Any) -> None:
        """`worker --metrics-port`: its deliveries and queue on /metrics (the metrics token
        required), /healthz, and a clean stop on SIGTERM; beyond loopback it needs a token."""
        c: Cluster = cluster(metrics_token="scrape-me")
        c.start(nodes=1, workers=0)
        port = free_port()
        worker = c.spawn("metrics-worker", "worker", "--metrics-port", str(port))
        base = f"http://{HOST}:{port}"
        c.ready(worker, base + "/healthz")
        c.ingest([f"metric-{i}" for i in range(40)])
        wait_until(
            lambda: (
                c.stats("tiktok")["accepted_events"] == 40
                and c.stats("meta")["accepted_events"] == 40
            ),
            30,
            "the worker to deliver 40 events",
        )
        assert c.http.get(base + "/metrics").status_code == 401
        text = c.http.get(base + "/metrics", headers={"Authorization": "Bearer scrape-me"}).text
        for destination in ("tiktok", "meta"):
            assert f'backchannel_delivered_total{{destination="{destination}"}} 40.0' in text
        assert "backchannel_queue_depth" in text
        worker.terminate()
        assert worker.popen.returncode == 0, worker.log_tail()

        c.env.pop("BACKCHANNEL_METRICS_TOKEN")  # without a token, only loopback is allowed
        everywhere = "0.0.0.0"  # noqa: S104 - the point: it must be refused without a token
        exposed = c.spawn(
            "exposed", "worker", "--metrics-port", str(free_port()), "--metrics-host", everywhere
        )
        assert exposed.popen.wait(60) == 2
        assert "--metrics-host: serving /metrics beyond loopback needs" in exposed.log_tail()
