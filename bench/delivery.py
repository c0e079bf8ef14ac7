"""Delivery benchmark: drain a backlog to the sandbox over real HTTP, and peak memory.

A backlog of N conversions (two outbox rows each: TikTok and Meta) is written straight into a
fresh SQLite store, then `backchannel serve --no-sandbox` (API + worker: the embedded default's
process) is started against a separate `backchannel sandbox` process and timed until the
sandbox has accepted every event for both destinations. Figures: deliveries per second per
destination and together, the sandbox's duplicate count (must be 0), and the serve process's
peak RSS (VmHWM) while it holds and drains the backlog.

    ./dev bench delivery [--n 100000]          # throughput
    ./dev bench delivery --n 1000000           # the 1M-backlog memory figure

Properties (issue 14): ``--properties N`` drains, in one run, the same backlog twice: held by
one property (2 connections: 2 delivery lanes) and spread round-robin over N properties with 2
connections each (2N lanes, each with DELIVERY_CONCURRENCY requests in flight), and prints
both figures and their ratio:

    ./dev bench delivery --properties 20 [--n 100000]
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
from backchannel.destinations import ON_BY_DEFAULT
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store.base import DEFAULT_PROPERTY, NewConversion
from backchannel.store.sqlite import SqliteStore

CHUNK = 5000


def prefill(db: Path, n: int, properties: int = 1) -> float:
    """Write n conversions + 2n outbox rows, conversion i in property i % ``properties``
    (each with its TikTok and Meta sandbox connections); returns seconds. Payloads share one
    template."""
    store = SqliteStore(db)
    now = time.time()
    owners = [DEFAULT_PROPERTY]
    for i in range(1, properties):
        created = store.create_property(f"prop{i:02d}", now, destinations=ON_BY_DEFAULT)
        assert created is not None
        owners.append(created)
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
                    connections=("tiktok", "meta"),
                    property_id=owners[i % len(owners)],
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


def drain(n: int, properties: int, timeout: float) -> tuple[float, float]:
    """Prefill a fresh store (n conversions in ``properties`` properties), start a sandbox and
    `serve`, and time until the sandbox accepted every event for both destinations."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = bench_env(
        workdir, BACKCHANNEL_TIKTOK_BASE_URL=sandbox_url, BACKCHANNEL_META_BASE_URL=sandbox_url
    )
    seconds = prefill(workdir / "bench.db", n, properties)
    print(
        f"delivery benchmark: backlog of {n:,} conversions ({2 * n:,} deliveries) in"
        f" {properties} propert{'y' if properties == 1 else 'ies'} ({2 * properties}"
        f" connections), written in {seconds:.1f} s"
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
            while len(done) < 2 and time.perf_counter() - started < timeout:
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
        shown = f"{n / took:,.0f} events/s in {took:.1f} s" if took else "DID NOT FINISH"
        print(
            f"{destination:<7} {shown}  (requests {s['requests']},"
            f" unique {s['unique_event_ids']:,}, duplicates {s['duplicates']})"
        )
    rate: float = 2 * n / total if len(done) == 2 else 0.0
    if rate:
        print(f"both    {rate:,.0f} deliveries/s (wall clock for all {2 * n:,})")
    print(
        f"CPU: serve {serve_cpu:.1f} s ({serve_cpu / total:.0%} of one core),"
        f" sandbox {sandbox_cpu:.1f} s ({sandbox_cpu / total:.0%}) over {total:.1f} s"
    )
    print(f"serve peak RSS while draining: {peak_rss:.0f} MB")
    shutil.rmtree(workdir, ignore_errors=True)
    return rate, peak_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--properties", type=int, default=1, help="also drain it spread over N properties"
    )
    args = parser.parse_args()
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    single = drain(args.n, 1, args.timeout)
    if args.properties > 1:
        several = drain(args.n, args.properties, args.timeout)
        ratio = f"{several[0] / single[0]:.1%}" if single[0] else "-"
        print(
            f"deliveries/s: 1 property {single[0]:,.0f}, {args.properties} properties"
            f" {several[0]:,.0f} = {ratio} of single-property; peak RSS {single[1]:.0f} MB vs"
            f" {several[1]:.0f} MB"
        )
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
