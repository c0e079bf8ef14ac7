"""Ingest benchmark: durable batch ingest, single-event ingest vs a no-op endpoint, fixed-rate p99.

The gateway runs as its own process (bench/_server.py, worker off so only ingest is measured)
on a fresh SQLite file with synchronous=FULL: every 202 counted here was fsynced first.

1. Batch ingest: batches of 1000 realistic conversions, 4 in flight, unique order ids.
2. Single-event ingest vs `POST /_bench/noop` (FastAPI route) and `POST /_bench/asgi-noop`
   (bare ASGI) on the same server: closed-loop load by `wrk` (Debian package; installed by
   `./dev bench ingest` when missing), 64 connections, 10 s each, unique order ids per request
   (Lua), so nothing is a duplicate.
3. Open loop at a fixed rate (1000 req/s): bench/openloop.js in Node (npm packages pinned by
   bench/package-lock.json, installed by `./dev bench ingest`), latency from each request's
   due time; first the two no-ops for 10 s each, then /v1/events for 60 s. Beside the client's
   percentiles: the server's own (backchannel_request_duration_seconds from /metrics, the
   difference of two scrapes), the event-loop lag, stalls and GC pauses (the watchdog's
   metrics, stall stacks from the server's log), the server's CPU, and the fsync latency of
   the same disk before and after.

    ./dev bench ingest [--batches 60] [--seconds 10] [--rate 1000] [--open-seconds 60]
                       [--ref-seconds 10] [--autocannon] [--skip batch,wrk,refs]

Properties (issue 14): ``--properties N`` measures, in one run, batch ingest and closed-loop
single-event ingest (wrk) on one property with 2 connections (TikTok and Meta in sandbox mode),
then on N properties with 2 connections each, the load spread round-robin over one ingest key
per property; ``--rounds R`` alternates the two R times (a shared machine drifts); both figures
and their ratio are printed:

    ./dev bench ingest --properties 20 [--rounds 2] [--batches 30] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from _common import (
    bench_env,
    conversion,
    cpu_seconds,
    create_key,
    free_port,
    percentile,
    process,
    python,
    rss_mb,
    wait_http,
)

HERE = Path(__file__).resolve().parent


async def batch_ingest(
    url: str, key: str | list[str], batches: int, in_flight: int
) -> tuple[int, float]:
    """Batches of 1000; with several keys (one per property), batch b goes with key b % n."""
    keys = [key] if isinstance(key, str) else key
    bodies = [
        (
            keys[b % len(keys)],
            orjson.dumps({"events": [conversion(b * 1000 + i, "batch") for i in range(1000)]}),
        )
        for b in range(batches)
    ]
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    accepted = 0

    async def lane(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while not queue.empty():
            owner, body = queue.get_nowait()
            headers = {"Authorization": f"Bearer {owner}", "Content-Type": "application/json"}
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
keys = {%(keys)s}
counter = 0
request = function()
  counter = counter + 1
  local id = tostring(counter) .. "-" .. tostring(math.random(1, 1000000000))
  local body = string.format([[%(template)s]], id, id)
  local headers = {["Authorization"] = "Bearer " .. keys[(counter %% #keys) + 1]}
  return wrk.format(nil, "%(path)s", headers, body)
end
"""


def wrk_run(
    url: str, key: str | list[str], path: str, seconds: int
) -> tuple[float, dict[str, float]]:
    """Closed loop; with several keys (one per property) requests take them in turn."""
    keys = [key] if isinstance(key, str) else key
    template = orjson.dumps(conversion(0, "wrk")).decode()
    template = template.replace('"wrk-0"', '"%s"').replace('"user-0"', '"u-%s"')
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua_keys = ", ".join(f'"{k}"' for k in keys)
    script.write_text(LUA % {"keys": lua_keys, "template": template, "path": path})
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


def fsync_probe(directory: Path, calls: int = 2000) -> list[float]:
    """Seconds per 4 KiB write + os.fsync on the disk that holds the database, sorted."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(calls):
            os.pwrite(fd, block, (i % 256) * 4096)
            begin = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - begin)
    finally:
        os.close(fd)
        path.unlink()
    return sorted(times)


def scrape(url: str, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def histogram_delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    labels: dict[str, str],
) -> list[tuple[float, float]]:
    """(upper bound, requests at or under it) observed between two scrapes, by bound."""
    out = []
    for (sample, sample_labels), value in after.items():
        if sample != name + "_bucket":
            continue
        as_dict = dict(sample_labels)
        le = as_dict.pop("le")
        if as_dict != labels:
            continue
        out.append((float(le), value - before.get((sample, sample_labels), 0.0)))
    return sorted(out)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> tuple[float, float]:
    """(interpolated value, the bucket's upper bound) at quantile ``q``, Prometheus-style."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return float("nan"), float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower, bound
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share, bound
        lower, below = bound, count
    return lower, float("inf")


def open_loop(url: str, path: str, key: str, rate: int, seconds: int) -> dict[str, Any]:
    """bench/openloop.js (Node) at a fixed rate; its JSON result."""
    template = orjson.dumps(conversion(0, "ol")).decode()
    template = template.replace('"ol-0"', '"__ID__"').replace('"user-0"', '"u-__ID__"')
    config = {
        "url": url,
        "path": path,
        "headers": {"authorization": f"Bearer {key}", "content-type": "application/json"},
        "template": template,
        "rate": rate,
        "seconds": seconds,
        "warmup": 2,
        "sockets": 256,
    }
    config_file = Path(tempfile.mkstemp(suffix=".json")[1])
    config_file.write_text(orjson.dumps(config).decode())
    out = subprocess.run(
        ["node", str(HERE / "openloop.js"), str(config_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config_file.unlink()
    result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return result


def autocannon(url: str, path: str, key: str, rate: int, seconds: int) -> dict[str, Any]:
    """autocannon --overallRate: paced per connection per second (bursts), a cross-check."""
    body = orjson.dumps(conversion(0, "ac")).decode().replace('"ac-0"', '"[<id>]"')
    out = subprocess.run(
        [
            "node",
            str(HERE / "node_modules" / "autocannon" / "autocannon.js"),
            "--json",
            "-m",
            "POST",
            "-H",
            f"authorization=Bearer {key}",
            "-H",
            "content-type=application/json",
            "-b",
            body,
            "--idReplacement",
            "-c",
            "100",
            "--overallRate",
            str(rate),
            "-d",
            str(seconds),
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = orjson.loads(out)
    return result


def describe(label: str, result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    ok = sum(n for code, n in result["statuses"].items() if code.startswith("2"))
    lost = result["sent"] - ok
    return (
        f"{label}: {result['achieved_rate']:,.0f} req/s achieved; client p50 {lat['p50']:.1f} ms,"
        f" p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}, p99.9 {lat['p999']:.1f},"
        f" max {lat['max']:.1f} ms; not 2xx: {lost} of {result['sent']}"
        f" (statuses {result['statuses']}, errors {result['errors']});"
        f" generator late by at most {result['max_send_lag_ms']:.1f} ms"
    )


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main (event-loop) thread was runnable but not running."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def properties_run(count: int, batches: int, seconds: int) -> tuple[float, float, float]:
    """One fresh store with ``count`` properties (2 sandbox connections each) and one ingest
    key per property; (batch events/s, wrk req/s, wrk p99 ms) with the load spread over the
    keys round-robin."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-props-"))
    env = bench_env(workdir)
    keys = [create_key(env, workdir)]
    for i in range(1, count):
        name = f"prop{i:02d}"
        subprocess.run(
            python("-m", "backchannel.cli", "property", "create", name),
            env=env,
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        keys.append(create_key(env, workdir, "--property", name))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(python(str(HERE / "_server.py"), str(port), "--no-worker"), env, workdir):
        wait_http(url + "/healthz")
        accepted, elapsed = asyncio.run(batch_ingest(url, keys, batches, 4))
        rps, lat = wrk_run(url, keys, "/v1/events", seconds) if shutil.which("wrk") else (0, {})
    shutil.rmtree(workdir, ignore_errors=True)
    return accepted / elapsed, rps, lat.get("99%", float("nan"))


def compare_properties(count: int, rounds: int, batches: int, seconds: int) -> None:
    """Single property vs ``count`` properties, alternated ``rounds`` times, same machine."""
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    if not shutil.which("wrk"):
        print("closed loop: skipped, `wrk` is not installed (./dev bench installs it)")
    results: dict[int, list[tuple[float, float, float]]] = {1: [], count: []}
    for round_ in range(rounds):
        for n in (1, count):
            got = properties_run(n, batches, seconds)
            results[n].append(got)
            print(
                f"round {round_ + 1}: {n} propert{'y' if n == 1 else 'ies'}, {2 * n} connections:"
                f" batch {got[0]:,.0f} durable events/s; closed loop {got[1]:,.0f} req/s"
                f" (p99 {got[2]:.1f} ms)"
            )

    def mean(n: int, i: int) -> float:
        return sum(r[i] for r in results[n]) / len(results[n])

    for i, what in ((0, "batch ingest events/s"), (1, "single-event req/s")):
        single, several = mean(1, i), mean(count, i)
        if single:
            print(
                f"{what}: 1 property {single:,.0f}, {count} properties {several:,.0f}"
                f" = {several / single:.1%} of single-property"
            )
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=10, help="each closed-loop wrk run")
    parser.add_argument("--rate", type=int, default=1000, help="open-loop requests per second")
    parser.add_argument("--open-seconds", type=int, default=60, help="the open-loop ingest run")
    parser.add_argument("--ref-seconds", type=int, default=10, help="open-loop no-op runs")
    parser.add_argument("--autocannon", action="store_true", help="also autocannon --overallRate")
    parser.add_argument("--skip", default="", help="comma list of: batch,wrk,refs")
    parser.add_argument(
        "--server", default="", help="flags for bench/_server.py: --no-checkpointer,--no-freeze-gc"
    )
    parser.add_argument(
        "--properties",
        type=int,
        default=0,
        help="compare 1 property with N (2 connections each): batch and closed-loop only",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --properties: alternations")
    args = parser.parse_args()
    if args.properties > 1:
        compare_properties(args.properties, args.rounds, args.batches, args.seconds)
        return
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    token = secrets.token_urlsafe(16)
    env = bench_env(workdir, BACKCHANNEL_METRICS_TOKEN=token)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = create_key(env, workdir)
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    probe = fsync_probe(workdir)
    print(
        f"fsync of a 4 KiB write, same disk, {len(probe)} calls: p50 {ms(percentile(probe, 0.5))},"
        f" p99 {ms(percentile(probe, 0.99))}, max {ms(probe[-1])}"
    )
    log_path = workdir / "server.log"
    with (
        log_path.open("wb") as server_log,
        process(
            python(
                str(HERE / "_server.py"),
                str(port),
                "--no-worker",
                *filter(None, args.server.split(",")),
            ),
            env,
            workdir,
            stderr=server_log,
        ) as srv,
    ):
        wait_http(url + "/healthz")
        print(
            f"ingest benchmark (server pid {srv.pid}, SQLite WAL synchronous=FULL, worker off,"
            f" server flags: {args.server or 'none'})"
        )

        if "batch" not in skip:
            batch_cpu = cpu_seconds(srv.pid)
            accepted, elapsed = asyncio.run(batch_ingest(url, key, args.batches, 4))
            batch_cpu = cpu_seconds(srv.pid) - batch_cpu
            print(
                f"batch ingest: {accepted:,} events in {elapsed:.2f} s ="
                f" {accepted / elapsed:,.0f} durable events/s (batches of 1000, 4 in flight)"
            )
            # the steadier figure on a shared machine: the server's own CPU per event
            print(f"  server CPU {batch_cpu / accepted * 1e6:.1f} µs per event")

        if "wrk" not in skip and shutil.which("wrk"):
            rates = {}
            for path in ("/v1/events", "/_bench/noop", "/_bench/asgi-noop"):
                rps, lat = wrk_run(url, key, path, args.seconds)
                rates[path] = rps
                print(
                    f"closed loop {path}: {rps:,.0f} req/s (p50 {lat.get('50%', 0):.1f} ms,"
                    f" p99 {lat.get('99%', 0):.1f} ms, wrk, 64 connections)"
                )
            print(
                f"single-event ingest / FastAPI no-op = "
                f"{rates['/v1/events'] / rates['/_bench/noop']:.0%};"
                f" / pure-ASGI no-op = {rates['/v1/events'] / rates['/_bench/asgi-noop']:.0%}"
            )
        elif "wrk" not in skip:
            print("closed loop: skipped, `wrk` is not installed (./dev bench installs it)")

        if "refs" not in skip:
            for path in ("/_bench/asgi-noop", "/_bench/noop"):
                result = open_loop(url, path, key, args.rate, args.ref_seconds)
                print(describe(f"open loop {args.rate}/s {args.ref_seconds} s {path}", result))

        server_log.flush()
        log_offset = log_path.stat().st_size
        before = scrape(url, token)
        cpu_before = cpu_seconds(srv.pid)
        busy_before, wait_before = machine_busy(), runqueue_wait(srv.pid)
        began = time.perf_counter()
        result = open_loop(url, "/v1/events", key, args.rate, args.open_seconds)
        took = time.perf_counter() - began
        cpu = cpu_seconds(srv.pid) - cpu_before
        busy = machine_busy() - busy_before
        waited = runqueue_wait(srv.pid) - wait_before
        after = scrape(url, token)
        print(describe(f"open loop {args.rate}/s {args.open_seconds} s /v1/events", result))
        buckets = histogram_delta(
            before, after, "backchannel_request_duration_seconds", {"route": "/v1/events"}
        )
        parts = []
        for q in (0.5, 0.9, 0.99, 0.999):
            value, bound = bucket_quantile(buckets, q)
            parts.append(f"p{q * 100:g} {ms(value)} (bucket <= {ms(bound)})")
        print(f"  server (time inside the app, /metrics histogram): {', '.join(parts)}")
        over = [(b, buckets[-1][1] - c) for b, c in buckets if b in (0.01, 0.025, 0.1)]
        print("  server requests over " + ", ".join(f"{ms(b)}: {int(n)}" for b, n in over))
        stalls = after.get(("backchannel_event_loop_stalls_total", ()), 0.0) - before.get(
            ("backchannel_event_loop_stalls_total", ()), 0.0
        )
        lag = histogram_delta(before, after, "backchannel_event_loop_lag_seconds", {})
        lag99, _ = bucket_quantile(lag, 0.99)
        print(
            f"  event loop: longest lag since start"
            f" {ms(after[('backchannel_event_loop_lag_max_seconds', ())])};"
            f" lag p99 {ms(lag99)}; stalls >= 100 ms in this run: {int(stalls)};"
            f" server CPU {cpu / args.open_seconds:.0%} of one core"
        )
        print(
            f"  CPU contention: the server's loop thread waited {waited * 1000:.0f} ms on the run"
            f" queue ({waited / took * 1000:.1f} ms per s: runnable, not running); the machine"
            f" was busy {busy / took:.2f} of 2 cores, the server {cpu / took:.2f}"
        )
        for generation in ("0", "1", "2"):
            gc_buckets = histogram_delta(
                before, after, "backchannel_gc_pause_seconds", {"generation": generation}
            )
            count = gc_buckets[-1][1] if gc_buckets else 0
            name = "backchannel_gc_pause_seconds_sum"
            total = after.get((name, (("generation", generation),)), 0.0) - before.get(
                (name, (("generation", generation),)), 0.0
            )
            biggest = next((b for b, c in gc_buckets if c >= count), 0.0) if count else 0.0
            print(
                f"  GC gen {generation}: {int(count)} collections, {ms(total)} in all,"
                f" longest <= {ms(biggest)}"
            )
        if args.autocannon:
            ac = autocannon(url, "/v1/events", key, args.rate, args.ref_seconds)
            lat = ac["latency"]
            print(
                f"autocannon --overallRate {args.rate} -c 100, {args.ref_seconds} s (paced per"
                f" connection per second, bursty): {ac['requests']['average']:,.0f} req/s;"
                f" p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms;"
                f" non-2xx {ac['non2xx']}, errors {ac['errors']}"
            )
        print(f"server peak RSS: {rss_mb(srv.pid, 'VmHWM'):.0f} MB")
    probe = fsync_probe(workdir)
    print(
        f"fsync again after the run: p50 {ms(percentile(probe, 0.5))},"
        f" p99 {ms(percentile(probe, 0.99))}, max {ms(probe[-1])}"
    )
    with log_path.open("rb") as logged:
        logged.seek(log_offset)
        stalls_seen = [
            line
            for line in logged.read().decode(errors="replace").splitlines()
            if "stalled for" in line
        ]
    print(f"stalls logged during the open-loop ingest run: {len(stalls_seen)}")
    for line in stalls_seen[:20]:  # innermost frame first
        print("  " + line[line.index("event loop stalled") :][:260])
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
