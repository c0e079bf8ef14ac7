"""Ingest benchmark: durable batch ingest, single-event ingest vs no-op endpoints, fixed-rate
latency, for one server process and for a group of them (``serve --workers N``).

Each configuration (``--workers 1,2``: one process, then two) gets its own server
(bench/_server.py: the real app plus the no-op references, delivery worker off so only ingest
is measured) on a fresh SQLite file with synchronous=FULL: every 202 counted here was fsynced
first. ``--rounds R`` repeats the list, interleaved (1, 2, 1, 2, …), so that the load other
processes put on the shared machine falls on every configuration alike. Per configuration:

1. Batch ingest: batches of 1000 realistic conversions, 4 in flight, unique order ids.
2. Closed loop (``wrk``, Debian package, installed by ``./dev bench`` when missing), 64
   connections, ``--seconds`` each: ``/v1/events`` (one conversion per request, unique order
   ids), ``POST /_bench/noop`` (a FastAPI route behind the app's middlewares, matched after
   every other route: the reference of the issue and of earlier figures),
   ``POST /_bench/noop-first`` (the same at the head of the router, where /v1/events is: the
   fair reference) and ``POST /_bench/asgi-noop`` (bare ASGI in front of the app):
   single-event req/s as a share of the no-ops' (target >= 60 %).
3. Open loop at a fixed rate (``--rate``, 1000 req/s) with bench/openloop.js (Node, npm
   packages pinned by bench/package-lock.json, installed by ``./dev bench ingest``); latency
   from each request's due time: the two no-ops for ``--ref-seconds``, then ``/v1/events``
   for ``--open-seconds`` (60). Beside the client's percentiles: the server's
   (``backchannel_request_duration_seconds`` from /metrics, two scrapes subtracted; a group's
   /metrics is summed over its processes), the event loop's lag and stalls, GC pauses, the
   fsync latency of the same disk before and after, and who used the cores (the server's
   processes each, the generator, others) with /proc/loadavg. Targets: client p99 <= 25 ms,
   server p99 <= 10 ms, nothing lost.

A summary table of every configuration and round comes last.

Properties (issue 14): ``--properties N`` measures, in one run, batch ingest and closed-loop
single-event ingest (wrk) on one property with 2 connections (TikTok and Meta in sandbox mode),
then on N properties with 2 connections each, the load spread round-robin over one ingest key
per property; ``--rounds R`` alternates the two R times (a shared machine drifts); both figures
and their ratio are printed:

    ./dev bench ingest --properties 20 [--rounds 2] [--batches 30] [--seconds 10]

    ./dev bench ingest [--workers 1,2] [--rounds 1] [--batches 60] [--seconds 10]
                       [--rate 1000] [--open-seconds 60] [--ref-seconds 10]
                       [--autocannon] [--skip batch,wrk,refs] [--server --no-checkpointer]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _common import bench_env, conversion, create_key, free_port, process, python, rss_mb, wait_http
from _measure import (
    Window,
    describe_fsync,
    describe_open_loop,
    describe_server,
    describe_window,
    fsync_probe,
    fsync_summary,
    loadavg,
    open_loop,
    scrape,
    server_pids,
    server_view,
    wrk_run,
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


def template() -> str:
    """One realistic conversion; ``__ID__`` makes its order id (and external id) unique."""
    body = orjson.dumps(conversion(0, "t")).decode()
    return body.replace('"t-0"', '"__ID__"').replace('"user-0"', '"u-__ID__"')


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


def run_config(workers: int, args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    """One server (``workers`` processes) on a fresh database: every measurement, printed
    as it comes; the figures for the summary returned."""
    out: dict[str, Any] = {"workers": workers}
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    token = secrets.token_urlsafe(16)
    env = bench_env(workdir, BACKCHANNEL_METRICS_TOKEN=token)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = create_key(env, workdir)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    body = template()
    out["fsync_before"] = fsync_summary(fsync_probe(workdir))
    print(f"  fsync of a 4 KiB write, same disk, 2000 calls: {describe_fsync(out['fsync_before'])}")
    log_path = workdir / "server.log"
    flags = [f for f in args.server.split(",") if f]
    with (
        log_path.open("wb") as server_log,
        process(
            python(
                str(HERE / "_server.py"),
                str(port),
                "--workers",
                str(workers),
                "--no-worker",
                *flags,
            ),
            env,
            workdir,
            stderr=server_log,
        ) as srv,
    ):
        wait_http(url + "/healthz")
        time.sleep(1.0)  # a group: let every process finish starting
        pids = server_pids(srv.pid) if workers > 1 else [srv.pid]
        print(f"  server pids {pids} (flags: {args.server or 'none'}), load {loadavg()}")

        if "batch" not in skip:
            window = Window(pids).start()
            accepted, elapsed = asyncio.run(batch_ingest(url, key, args.batches, 4))
            out["batch"] = accepted / elapsed
            out["batch_window"] = used = window.stop()
            # the steadier figure on a shared machine: the server's own CPU per event
            out["batch_cpu_us"] = used["server_cores"] * used["seconds"] / accepted * 1e6
            print(
                f"  batch ingest: {accepted:,} events in {elapsed:.2f} s ="
                f" {out['batch']:,.0f} durable events/s (batches of 1000, 4 in flight);"
                f" server CPU {out['batch_cpu_us']:.1f} µs per event;"
                f" {describe_window(used)}"
            )

        if "wrk" not in skip and shutil.which("wrk"):
            rates = {}
            for path in ("/v1/events", "/_bench/noop", "/_bench/noop-first", "/_bench/asgi-noop"):
                window = Window(pids).start()
                rps, lat = wrk_run(url, path, headers, body, args.seconds)
                used = window.stop()
                rates[path] = rps
                out[f"wrk {path}"] = rps
                out[f"wrk {path} window"] = used
                print(
                    f"  closed loop {path}: {rps:,.0f} req/s (p50 {lat.get('50%', 0):.1f} ms,"
                    f" p99 {lat.get('99%', 0):.1f} ms, wrk, 64 connections);"
                    f" {describe_window(used)}"
                )
            out["ratio"] = rates["/v1/events"] / rates["/_bench/noop"]
            out["ratio_first"] = rates["/v1/events"] / rates["/_bench/noop-first"]
            out["ratio_asgi"] = rates["/v1/events"] / rates["/_bench/asgi-noop"]
            print(
                f"  single-event ingest / FastAPI no-op = {out['ratio']:.0%};"
                f" / no-op at the head of the router = {out['ratio_first']:.0%};"
                f" / pure-ASGI no-op = {out['ratio_asgi']:.0%} (target >= 60 % of the no-op)"
            )
        elif "wrk" not in skip:
            print("  closed loop: skipped, `wrk` is not installed (./dev bench installs it)")

        if "refs" not in skip:
            for path in ("/_bench/asgi-noop", "/_bench/noop"):
                window = Window(pids).start()
                result = open_loop(url, path, headers, body, args.rate, args.ref_seconds)
                used = window.stop()
                out[f"open {path}"] = result
                label = f"open loop {args.rate}/s {args.ref_seconds} s {path}"
                print("  " + describe_open_loop(label, result))
                print(f"    {describe_window(used)}")

        server_log.flush()
        log_offset = log_path.stat().st_size
        before = scrape(url, token)
        window = Window(pids).start()
        result = open_loop(url, "/v1/events", headers, body, args.rate, args.open_seconds)
        used = window.stop()
        after = scrape(url, token)
        view = server_view(before, after, "/v1/events", "ingest")
        out.update(open=result, open_window=used, server=view)
        label = f"open loop {args.rate}/s {args.open_seconds} s /v1/events"
        print("  " + describe_open_loop(label, result))
        for line in describe_server(view):
            print(f"    {line}")
        print(f"    {describe_window(used)}")
        if args.autocannon:
            ac = autocannon(url, "/v1/events", key, args.rate, args.ref_seconds)
            lat = ac["latency"]
            print(
                f"  autocannon --overallRate {args.rate} -c 100, {args.ref_seconds} s (paced per"
                f" connection per second, bursty): {ac['requests']['average']:,.0f} req/s;"
                f" p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms;"
                f" non-2xx {ac['non2xx']}, errors {ac['errors']}"
            )
        rss = [rss_mb(p, "VmHWM") for p in pids]
        print(f"  server peak RSS: {' + '.join(f'{r:.0f}' for r in rss)} MB")
    out["fsync_after"] = fsync_summary(fsync_probe(workdir))
    print(f"  fsync again after the run: {describe_fsync(out['fsync_after'])}")
    with log_path.open("rb") as logged:
        logged.seek(log_offset)
        stalls_seen = [
            line
            for line in logged.read().decode(errors="replace").splitlines()
            if "stalled for" in line
        ]
    print(f"  stalls logged during the open-loop ingest run: {len(stalls_seen)}")
    for line in stalls_seen[:10]:  # innermost frame first
        print("    " + line[line.index("event loop stalled") :][:240])
    shutil.rmtree(workdir, ignore_errors=True)
    return out


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
        headers = {"content-type": "application/json"}
        rps, lat = (
            wrk_run(url, "/v1/events", headers, template(), seconds, keys=keys)
            if shutil.which("wrk")
            else (0.0, {})
        )
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


def summary(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """One line per configuration and round: the figures the README's table holds."""
    print()
    print(
        f"summary (open loop {args.rate} req/s for {args.open_seconds} s; 'others' = cores"
        " busy with processes not ours during that run, of 2)"
    )
    head = (
        "workers | batch ev/s (server CPU per event) |"
        " wrk ingest / noop / noop-first / asgi req/s (ratios) | open ingest client"
        " p50/p99/max ms | server p99 ms | lost | loop longest <= ms | fsync p99 ms |"
        " noop / asgi client p99 ms | server cores (each) | others | load |"
        " group commits (requests each)"
    )
    print(head)
    for r in results:
        o, v, w = r["open"], r["server"], r["open_window"]
        lat = o["latency_ms"]
        wrk = (
            f"{r['wrk /v1/events']:,.0f} / {r['wrk /_bench/noop']:,.0f} /"
            f" {r['wrk /_bench/noop-first']:,.0f} / {r['wrk /_bench/asgi-noop']:,.0f}"
            f" ({r['ratio']:.0%}, {r['ratio_first']:.0%})"
            if "ratio" in r
            else "-"
        )
        refs = (
            f"{r['open /_bench/noop']['latency_ms']['p99']:.1f} /"
            f" {r['open /_bench/asgi-noop']['latency_ms']['p99']:.1f}"
            if "open /_bench/noop" in r
            else "-"
        )
        batch = f"{r['batch']:,.0f} ({r['batch_cpu_us']:.0f} µs)" if "batch" in r else "-"
        each = "+".join(f"{c:.2f}" for c in w["server_cores_each"])
        g = v.get("groups")
        groups = f"{g['commits']:,} ({g['mean']:.2f})" if g else "-"
        print(
            f"{r['workers']} | {batch} | {wrk} | {lat['p50']:.1f} / {lat['p99']:.1f} /"
            f" {lat['max']:.1f} | {v['p99'] * 1000:.1f} (<= {v['p99_bucket'] * 1000:g})"
            f" | {o['lost']} |"
            f" {v['lag_longest_bucket'] * 1000:.0f} |"
            f" {max(r['fsync_before']['p99'], r['fsync_after']['p99']) * 1000:.2f} | {refs} |"
            f" {w['server_cores']:.2f} ({each}) | {w['others_cores']:.2f} | {w['load']} |"
            f" {groups}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2", help="server processes per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the configurations")
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
    args = parser.parse_args()
    if args.properties > 1:
        compare_properties(args.properties, args.rounds, args.batches, args.seconds)
        return
    skip = set(filter(None, args.skip.split(",")))
    configs = [int(w) for w in args.workers.split(",") if w]
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    results = []
    for round_ in range(args.rounds):
        for workers in configs:
            print(
                f"== round {round_ + 1}, workers={workers}"
                " (SQLite WAL synchronous=FULL, delivery worker off)"
            )
            results.append(run_config(workers, args, skip))
    summary(results, args)
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
