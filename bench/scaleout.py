"""Scale-out benchmark: ingest nodes and workers as separate processes on one PostgreSQL.

Three runs, each on a fresh database of the test cluster (`./dev bench scaleout` starts it),
with a separate `backchannel sandbox` process standing in for TikTok and Meta:

1. end to end: 2 ingest nodes (`serve --no-worker`) + 4 workers, N events (default 200,000)
   posted in batches of 1000, 4 in flight, alternating nodes; timed until both destinations
   hold every event. Lost = N - unique event_ids at the sandbox; duplicates as it counts them.
2. the same with `kill -9` of one worker once a third is delivered (half the events).
3. scaling: a backlog of M events (default 50,000) drained by 1, 2 and 4 workers.

Everything shares this machine's 2 cores: the figures show how the design behaves, not what a
cluster of machines would do.

    ./dev bench scaleout [--n 200000] [--backlog 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psycopg
from cryptography.fernet import Fernet

from _common import conversion, free_port, wait_http


class Run:
    """One database, one sandbox, and the processes started against them."""

    def __init__(self, base_url: str, workdir: Path) -> None:
        self.db_name = f"bc_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.base_url = base_url
        self.database = base_url.rsplit("/", 1)[0] + "/" + self.db_name
        self.workdir = workdir
        self.sandbox = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "BACKCHANNEL_DATABASE_URL": self.database,
            "BACKCHANNEL_SECRET_KEY": Fernet.generate_key().decode(),
            "BACKCHANNEL_TIKTOK_BASE_URL": self.sandbox,
            "BACKCHANNEL_META_BASE_URL": self.sandbox,
            "BACKCHANNEL_LEASE_SECONDS": "20",
            "BACKCHANNEL_RETRY_BASE": "0.2",
            "BACKCHANNEL_RETRY_CAP": "2",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[str] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.key = ""

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backchannel.cli", *args],
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def start(self, nodes: int) -> None:
        self.cli("sandbox", "--port", self.sandbox.rsplit(":", 1)[1])
        wait_http(self.sandbox + "/_sandbox/faults")
        subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "migrate"],
            env=self.env,
            cwd=self.workdir,
            check=True,
            capture_output=True,
        )
        self.key = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "keys", "create", "--name", "bench"],
            env=self.env,
            cwd=self.workdir,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for _ in range(nodes):
            port = free_port()
            self.cli("serve", "--port", str(port), "--no-worker", "--no-sandbox")
            self.nodes.append(f"http://127.0.0.1:{port}")
        for node in self.nodes:
            wait_http(node + "/healthz")

    def add_workers(self, count: int) -> None:
        for _ in range(count):
            self.workers.append(self.cli("worker"))

    def stats(self, destination: str) -> dict[str, int]:
        data: dict[str, int] = orjson.loads(
            httpx.get(f"{self.sandbox}/_sandbox/{destination}/stats", timeout=60).content
        )
        return data

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        with psycopg.connect(self.base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


async def ingest(run: Run, n: int, tag: str) -> float:
    """Post n events in batches of 1000 over the nodes; returns seconds until all are 202."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for b in range(0, n, 1000):
        events = [conversion(i, tag) for i in range(b, min(n, b + 1000))]
        queue.put_nowait((b // 1000, orjson.dumps({"events": events})))
    headers = {"Authorization": f"Bearer {run.key}", "Content-Type": "application/json"}

    async def lane(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, body = queue.get_nowait()
            node = run.nodes[index % len(run.nodes)]
            response = await client.post(node + "/v1/events", content=body, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(lane(client) for _ in range(4)))
    return time.perf_counter() - started


def wait_delivered(run: Run, n: int, timeout: float = 1800) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if all(run.stats(d)["unique_event_ids"] >= n for d in ("tiktok", "meta")):
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError("delivery did not finish")


def end_to_end(base: str, workdir: Path, n: int, kill: bool) -> None:
    run = Run(base, workdir)
    try:
        run.start(nodes=2)
        run.add_workers(4)
        started = time.perf_counter()
        if kill:

            async def ingest_then_kill() -> float:
                task = asyncio.create_task(ingest(run, n, "kill"))
                # Polling another process's counter: there is no event to await.
                while run.stats("tiktok")["accepted_events"] < n // 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                run.workers[0].send_signal(signal.SIGKILL)
                return await task

            took_ingest = asyncio.run(ingest_then_kill())
        else:
            took_ingest = asyncio.run(ingest(run, n, "e2e"))
        wait_delivered(run, n)
        total = time.perf_counter() - started
        s = {d: run.stats(d) for d in ("tiktok", "meta")}
        lost = {d: n - s[d]["unique_event_ids"] for d in s}
        label = "kill -9 of 1 of 4 workers" if kill else "2 nodes + 4 workers"
        print(
            f"{label}: {n:,} events ingested in {took_ingest:.1f} s ({n / took_ingest:,.0f}/s),"
            f" all delivered to both in {total:.1f} s ({2 * n / total:,.0f} deliveries/s end to"
            f" end); lost {lost}, duplicates"
            f" {{'tiktok': {s['tiktok']['duplicates']}, 'meta': {s['meta']['duplicates']}}}"
        )
    finally:
        run.close()


def scaling(base: str, workdir: Path, backlog: int) -> None:
    print(f"drain of a {backlog:,}-event backlog ({2 * backlog:,} deliveries):")
    print("| workers | seconds | deliveries/s |")
    print("|---|---|---|")
    for count in (1, 2, 4):
        run = Run(base, workdir)
        try:
            run.start(nodes=2)
            asyncio.run(ingest(run, backlog, f"scale{count}"))
            run.add_workers(count)
            took = wait_delivered(run, backlog)
            print(f"| {count} | {took:.1f} | {2 * backlog / took:,.0f} |")
        finally:
            run.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=50_000)
    args = parser.parse_args()
    base = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
    if not base:
        sys.exit("BACKCHANNEL_TEST_POSTGRES_URL is not set: run it as ./dev bench scaleout")
    workdir = Path(tempfile.mkdtemp(prefix="bc-scale-"))
    print("scale-out benchmark on PostgreSQL (all processes on this machine's cores)")
    end_to_end(base, workdir, args.n, kill=False)
    end_to_end(base, workdir, args.n // 2, kill=True)
    scaling(base, workdir, args.backlog)


if __name__ == "__main__":
    main()
