"""Delivery benchmark: drain a backlog to the sandbox over real HTTP, and peak memory.

A backlog of N conversions (two outbox rows each: TikTok and Meta) is written straight into a
fresh SQLite store, then `backchannel serve --no-sandbox` (API + worker: the embedded default's
process) is started against a separate `backchannel sandbox` process and timed until the
sandbox has accepted every event for both destinations. Figures: deliveries per second per
destination and together, the sandbox's duplicate count (must be 0), and the serve process's
peak RSS (VmHWM) while it holds and drains the backlog.

    ./dev bench delivery [--n 100000]          # throughput
    ./dev bench delivery --n 1000000           # the 1M-backlog memory figure
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from _common import (
    bench_env,
    conversion,
    cpu_seconds,
    free_port,
    process,
    python,
    rss_mb,
    wait_http,
)
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store.base import NewConversion
from backchannel.store.sqlite import SqliteStore

CHUNK = 5000


def prefill(db: Path, n: int) -> float:
    """Write n conversions + 2n outbox rows; returns seconds. Payloads share one template."""
    store = SqliteStore(db)
    now = time.time()
    template = to_record(
        normalize(conversion(0, "TEMPLATE"), now=now).conversion, [], "api", ("tiktok", "meta")
    )
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        records = []
        for i in range(start, min(n, start + CHUNK)):
            order = f"bench-{i}"
            records.append(
                NewConversion(
                    event=template.event,
                    event_id=f"CompletePayment-{order}",
                    event_time=template.event_time,
                    order_id=order,
                    session_id=None,
                    test_event_code=None,
                    payload=template.payload.replace(b"TEMPLATE-0", order.encode()),
                    warnings=b"[]",
                    origin="api",
                    destinations=("tiktok", "meta"),
                )
            )
        store.insert_conversions(records, now)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def stats(url: str, destination: str) -> dict[str, int]:
    response = httpx.get(f"{url}/_sandbox/{destination}/stats", timeout=30)
    data: dict[str, int] = orjson.loads(response.content)
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    n = args.n
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = bench_env(
        workdir, BACKCHANNEL_TIKTOK_BASE_URL=sandbox_url, BACKCHANNEL_META_BASE_URL=sandbox_url
    )
    seconds = prefill(workdir / "bench.db", n)
    print(
        f"delivery benchmark: backlog of {n:,} conversions ({2 * n:,} deliveries),"
        f" written in {seconds:.1f} s"
    )
    sandbox_cmd = python("-m", "backchannel.cli", "sandbox", "--port", str(sandbox_port))
    serve_cmd = python("-m", "backchannel.cli", "serve", "--port", str(port), "--no-sandbox")
    with process(sandbox_cmd, env, workdir) as sandbox:
        wait_http(sandbox_url + "/_sandbox/faults")
        with process(serve_cmd, env, workdir) as serve:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            serve_cpu, sandbox_cpu = cpu_seconds(serve.pid), cpu_seconds(sandbox.pid)
            started = time.perf_counter()
            done: dict[str, float] = {}
            peak_rss = 0.0
            while len(done) < 2 and time.perf_counter() - started < args.timeout:
                time.sleep(0.5)
                peak_rss = max(peak_rss, rss_mb(serve.pid, "VmHWM"))
                for destination in ("tiktok", "meta"):
                    if (
                        destination not in done
                        and stats(sandbox_url, destination)["accepted_events"] >= n
                    ):
                        done[destination] = time.perf_counter() - started
            total = time.perf_counter() - started
            serve_cpu = cpu_seconds(serve.pid) - serve_cpu
            sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu
            results = {d: stats(sandbox_url, d) for d in ("tiktok", "meta")}
    for destination in ("tiktok", "meta"):
        s = results[destination]
        took = done.get(destination)
        rate = f"{n / took:,.0f} events/s in {took:.1f} s" if took else "DID NOT FINISH"
        print(
            f"{destination:<7} {rate}  (requests {s['requests']}, unique {s['unique_event_ids']:,},"
            f" duplicates {s['duplicates']})"
        )
    if len(done) == 2:
        print(f"both    {2 * n / total:,.0f} deliveries/s (wall clock for all {2 * n:,})")
    print(
        f"CPU: serve {serve_cpu:.1f} s ({serve_cpu / total:.0%} of one core),"
        f" sandbox {sandbox_cpu:.1f} s ({sandbox_cpu / total:.0%}) over {total:.1f} s"
    )
    print(f"serve peak RSS while draining: {peak_rss:.0f} MB")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
