"""Ingest benchmark: durable batch ingest, single-event ingest vs a no-op endpoint, fixed-rate p99.

The gateway runs as its own process (bench/_server.py, worker off so only ingest is measured)
on a fresh SQLite file with synchronous=FULL: every 202 counted here was fsynced first.

1. Batch ingest: batches of 1000 realistic conversions, 4 in flight, unique order ids.
2. Single-event ingest vs `POST /_bench/noop` on the same server: closed-loop load by `wrk`
   (Debian package; installed by `./dev bench ingest` when missing), 64 connections, 10 s each,
   unique order ids per request (Lua), so nothing is a duplicate.
3. Latency at a fixed 500 req/s (open loop, Python asyncio): p50/p90/p99/max.

    ./dev bench ingest [--batches 60] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from _common import (
    bench_env,
    conversion,
    create_key,
    free_port,
    percentile,
    process,
    python,
    rss_mb,
    wait_http,
)

HERE = Path(__file__).resolve().parent


async def batch_ingest(url: str, key: str, batches: int, in_flight: int) -> tuple[int, float]:
    bodies = [
        orjson.dumps({"events": [conversion(b * 1000 + i, "batch") for i in range(1000)]})
        for b in range(batches)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def lane(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(url + "/v1/events", content=body, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
            accepted += response.json()["accepted"]

    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(lane(client) for _ in range(in_flight)))
        elapsed = time.perf_counter() - start
    return accepted, elapsed


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
counter = 0
request = function()
  counter = counter + 1
  local id = tostring(counter) .. "-" .. tostring(math.random(1, 1000000000))
  local body = string.format([[%(template)s]], id, id)
  return wrk.format(nil, "%(path)s", nil, body)
end
"""


def wrk_run(url: str, key: str, path: str, seconds: int) -> tuple[float, dict[str, float]]:
    template = orjson.dumps(conversion(0, "wrk")).decode()
    template = template.replace('"wrk-0"', '"%s"').replace('"user-0"', '"u-%s"')
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(LUA % {"key": key, "template": template, "path": path})
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[-1])
    latencies: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            latencies[parts[0]] = _ms(parts[1])
    non2xx = [line for line in out.splitlines() if "Non-2xx" in line]
    if non2xx:
        raise RuntimeError(f"{path}: {non2xx[0].strip()}")
    return rps, latencies


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


async def fixed_rate(url: str, key: str, rate: int, seconds: int) -> list[float]:
    """Open-loop load at ``rate`` req/s; latency measured from each request's *scheduled* time.

    Requests are scheduled on a fixed clock and served by 64 lanes, each with its own
    one-connection client (httpx's shared pool degrades badly with hundreds of waiting
    requests, which measured the client, not the server). Latency counts from when a request
    was due, so time spent waiting for a free lane is included (no coordinated omission).
    The first two seconds are a warm-up and are not counted.
    """
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    warmup = 2 * rate
    total = rate * seconds + warmup
    bodies = [orjson.dumps(conversion(i, "rate")) for i in range(total)]
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    failures = 0

    async def lane() -> None:
        nonlocal failures
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as c:
            while (item := await queue.get()) is not None:
                index, due = item
                response = await c.post(url + "/v1/events", content=bodies[index], headers=headers)
                if index >= warmup:
                    latencies.append(time.perf_counter() - due)
                if response.status_code != 202:
                    failures += 1

    lanes = [asyncio.create_task(lane()) for _ in range(64)]
    begin = time.perf_counter() + 0.5
    for index in range(total):
        due = begin + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((index, due))
    for _ in lanes:
        queue.put_nowait(None)
    await asyncio.gather(*lanes)
    if failures:
        raise RuntimeError(f"{failures} requests were not accepted")
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    env = bench_env(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = create_key(env, workdir)
    with process(python(str(HERE / "_server.py"), str(port), "--no-worker"), env, workdir) as srv:
        wait_http(url + "/healthz")
        print(f"ingest benchmark (server pid {srv.pid}, SQLite WAL synchronous=FULL, worker off)")

        accepted, elapsed = asyncio.run(batch_ingest(url, key, args.batches, 4))
        print(
            f"batch ingest: {accepted:,} events in {elapsed:.2f} s = {accepted / elapsed:,.0f}"
            " durable events/s (batches of 1000, 4 in flight)"
        )

        if shutil.which("wrk"):
            ingest_rps, ingest_lat = wrk_run(url, key, "/v1/events", args.seconds)
            noop_rps, noop_lat = wrk_run(url, key, "/_bench/noop", args.seconds)
            print(
                f"single-event ingest: {ingest_rps:,.0f} req/s (p50 {ingest_lat.get('50%', 0):.1f}"
                f" ms, p99 {ingest_lat.get('99%', 0):.1f} ms, 64 connections)"
            )
            print(
                f"no-op endpoint:      {noop_rps:,.0f} req/s (p50 {noop_lat.get('50%', 0):.1f}"
                f" ms, p99 {noop_lat.get('99%', 0):.1f} ms)"
            )
            print(f"single-event ingest / no-op = {ingest_rps / noop_rps:.0%}")
        else:
            print(
                "single-event vs no-op: skipped, `wrk` is not installed (./dev bench installs it)"
            )

        latencies = asyncio.run(fixed_rate(url, key, 500, args.seconds))
        print(
            f"fixed 500 req/s for {args.seconds} s: p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
            f" p90 {percentile(latencies, 0.9) * 1000:.1f} ms,"
            f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms,"
            f" max {latencies[-1] * 1000:.1f} ms"
        )
        print(f"server peak RSS: {rss_mb(srv.pid, 'VmHWM'):.0f} MB")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
