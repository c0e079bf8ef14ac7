"""PostgreSQL stops and starts again while two ingest nodes and two workers run.

What must hold: while the server is down, the nodes answer ``503`` with ``Retry-After`` (not
500, not a hang); the processes are not restarted, and once the server is back they take
events again and the workers deliver again; a client that retries what got a 503 until it
gets a 202 finds every event at each destination exactly once: 0 lost, 0 duplicated.

The test runs its own PostgreSQL cluster (initdb in a temp dir, as ``scripts/test-services.sh``
does), so stopping it disturbs no other test that shares the suite's cluster.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from reliability.conftest import event, free_port, report, wait_until
from scaleout.test_workers import Cluster

pytestmark = pytest.mark.slow

DESTINATIONS = ("tiktok", "meta")


class PrivateServer:
    """A throwaway PostgreSQL cluster on a free loopback port, owned by ``postgres`` when we
    are root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
        if not found:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql (./dev test)")
        self.bin = Path(found[-1]).parent
        self.root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="backchannel-pgrestart.", dir="/tmp"))
        self.dir.chmod(0o755)
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E",
            "UTF8", "--locale=C",
        )  # fmt: skip
        self.start()
        self._run("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "bc")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/bc"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.dir, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.dir}"
        )
        log = str(self.dir / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what a restart by an operator or a service manager does (clients are
        disconnected, open transactions rolled back)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _version(path: str) -> tuple[int, ...]:
    part = path.split("/")[4]
    return tuple(int(p) for p in part.split(".") if p.isdigit())


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    pg = PrivateServer()
    try:
        yield pg
    finally:
        pg.close()


class RetryingClient:
    """Posts 50-event batches, alternating nodes; a batch answered 503 is sent again (after
    a short pause, not the full Retry-After: the test has a time budget) until it gets a
    202, as a well-behaved client does. Anything but 202/503 is an anomaly."""

    def __init__(self, cluster: Cluster, threads: int) -> None:
        self.cluster = cluster
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.unavailable = 0
        self.retry_after: set[str | None] = set()
        self.anomalies: list[str] = []
        self.lock = threading.Lock()
        self._ids = (f"pgr-{n}" for n in itertools.count())
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def _run(self, number: int) -> None:
        headers = {"Authorization": f"Bearer {self.cluster.key}"}
        with httpx.Client(timeout=60.0) as client:
            for turn in itertools.count(number):
                if self._stop.is_set():
                    return
                with self.lock:
                    orders = [next(self._ids) for _ in range(50)]
                    self.sent.update(f"CompletePayment-{o}" for o in orders)
                body = {"events": [event(o) for o in orders]}
                for attempt in itertools.count(turn):
                    node = self.cluster.nodes[attempt % len(self.cluster.nodes)]
                    try:
                        response = client.post(node + "/v1/events", json=body, headers=headers)
                    except httpx.TransportError as exc:
                        with self.lock:
                            self.anomalies.append(f"transport error: {exc!r}")
                        return
                    if response.status_code == 202:
                        with self.lock:
                            self.acked.update(e["event_id"] for e in response.json()["events"])
                        break
                    with self.lock:
                        if response.status_code != 503:
                            self.anomalies.append(f"{response.status_code}: {response.text[:200]}")
                            return
                        self.unavailable += 1
                        self.retry_after.add(response.headers.get("retry-after"))
                    time.sleep(0.5)

    def start(self) -> RetryingClient:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        assert not any(t.is_alive() for t in self._threads), "client threads did not stop"


def test_postgres_restart_mid_run_503_then_every_event_delivered_once(
    server: PrivateServer, tmp_path: Path
) -> None:
    # The outage (about 10 s) must end before 0.9 of the lease, the window in which delivery
    # retries a mark that failed; the default lease is 120 s.
    cluster = Cluster(tmp_path, server.url, lease_seconds="30")
    try:
        cluster.start(nodes=2, workers=2)
        cluster.faults({"all": {"latency_ms": 100}})  # batches in flight when it stops
        client = RetryingClient(cluster, threads=2).start()
        try:
            wait_until(lambda: len(client.acked) >= 1000, 60, "1,000 acknowledged events")
            wait_until(lambda: cluster.stats("tiktok")["accepted_events"] > 0, 30, "delivery")
            server.stop()
            down_at = time.monotonic()
            probe = httpx.post(
                cluster.nodes[0] + "/v1/events",
                json=event("pgr-probe"),
                headers={"Authorization": f"Bearer {cluster.key}"},
                timeout=60.0,
            )
            answered_in = time.monotonic() - down_at
            wait_until(lambda: client.unavailable > 0, 60, "the client to see a 503")
            time.sleep(2.0)
            server.start()
            up_at = time.monotonic()
            seen = len(client.acked)
            wait_until(lambda: len(client.acked) >= seen + 1000, 90, "ingest after the restart")
            back_in = time.monotonic() - up_at
        finally:
            client.stop()
        assert client.anomalies == []
        assert probe.status_code == 503, probe.text
        assert probe.headers.get("retry-after") == "5"
        assert probe.json()["error"] == "unavailable"
        assert client.retry_after == {"5"}
        assert all(p.alive() for p in cluster.procs if p.name.startswith(("node", "worker")))
        assert client.acked == client.sent  # every batch was retried until it got a 202
        expected = len(client.acked)
        wait_until(
            lambda: all(cluster.stats(d)["unique_event_ids"] == expected for d in DESTINATIONS),
            120,
            f"all {expected} events at both destinations",
        )

        def left() -> int:
            with psycopg.connect(server.url) as db:
                row = db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE status != 'delivered'"
                ).fetchone()
            return int(row[0]) if row else -1

        # marks retried through the restart may land a moment after the platform has the events
        wait_until(lambda: left() == 0, 30, "every outbox row to be marked delivered")
        duplicates = {d: cluster.stats(d)["duplicates"] for d in DESTINATIONS}
        report(
            "postgres restart",
            events=expected,
            requests_503=client.unavailable,
            first_503_after_s=round(answered_in, 1),
            ingest_back_after_s=round(back_in, 1),
            **{f"{d}_duplicates": n for d, n in duplicates.items()},
        )
        # A batch the platform accepted as the server went down is marked once it is back
        # (delivery retries a failed mark within the lease): nothing is sent twice.
        assert duplicates == dict.fromkeys(DESTINATIONS, 0), duplicates
        for destination in DESTINATIONS:
            stats = cluster.stats(destination)
            assert stats["accepted_events"] == expected, stats  # 0 lost, 0 duplicated
    finally:
        cluster.close()
