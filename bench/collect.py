"""Browser-leg benchmark: ``POST /v1/collect`` page views per second (target >= 5,000/s).

What one request is: what bc.js sends for a landing page view from a TikTok ad (site key in
the body, a new session id, the page URL with its ttclid and UTM parameters, referrer, the
click ids bc.js read, load time, pixel state), ``text/plain`` with the shop's ``Origin`` and
an iPhone's User-Agent. Every request is a new visitor (a new session row): the costlier
case; an answer is a 204 only after the commit that holds it (SQLite, synchronous=FULL).

Each configuration (``--workers 1,2``, repeated ``--rounds`` times, interleaved) gets its own
server (bench/_server.py, delivery worker off) on a fresh SQLite file:

1. closed loop, ``wrk`` 64 connections for ``--seconds``: the most page views per second,
   and the same body posted to ``/_bench/noop-first`` (read the body, answer 202, routed
   where /v1/collect is: the framework's cost alone) as the reference;
2. open loop at ``--rate`` (5,000/s) for ``--open-seconds`` with bench/openloop.js: client
   latency from each request's due time, what was lost, the server's own p99
   (``/metrics``, route ``/v1/collect``).

Beside every figure: who used the two cores (the server's processes each, the load generator,
others) and /proc/loadavg. ``--profile`` adds a cProfile run of one process under the closed
loop and prints where its time goes.

    ./dev bench collect [--workers 1,2] [--rounds 1] [--seconds 10] [--rate 5000]
                        [--open-seconds 30] [--profile]
"""

from __future__ import annotations

import argparse
import pstats
import secrets
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _common import bench_env, create_key, free_port, process, python, wait_http
from _measure import (
    Window,
    describe_open_loop,
    describe_server,
    describe_window,
    loadavg,
    open_loop,
    scrape,
    server_pids,
    server_view,
    wrk_run,
)

HERE = Path(__file__).resolve().parent
SHOP = "https://shop.example"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


def page_view(key: str) -> str:
    """One landing page view as bc.js sends it; ``__ID__`` makes the visitor unique."""
    return orjson.dumps(
        {
            "key": key,
            "session_id": "sess-__ID__",
            "url": f"{SHOP}/products/linen-shirt?utm_source=tiktok&utm_medium=paid"
            "&utm_campaign=spring&ttclid=E.C.P.__ID__",
            "referrer": "https://www.tiktok.com/",
            "landing": True,
            "ttclid": "E.C.P.__ID__",
            "ttp": "ttp-__ID__",
            "fbp": "fb.1.1700000000000.__ID__",
            "utm": {"source": "tiktok", "medium": "paid", "campaign": "spring"},
            "load_time_ms": 840,
            "pixel": "loaded",
        }
    ).decode()


HEADERS = {"content-type": "text/plain;charset=UTF-8", "origin": SHOP, "user-agent": IPHONE}


def environment(workdir: Path) -> tuple[dict[str, str], str, str]:
    """(environment, site key, metrics token) for a server on a fresh database in workdir."""
    token = secrets.token_urlsafe(16)
    env = bench_env(
        workdir,
        BACKCHANNEL_METRICS_TOKEN=token,
        BACKCHANNEL_COLLECT_ORIGINS=SHOP,
        # the per-address and per-key limits protect production; here they would measure
        # themselves (every request comes from 127.0.0.1 with one key)
        BACKCHANNEL_COLLECT_RATE="10000000",
        BACKCHANNEL_COLLECT_BURST="10000000",
        BACKCHANNEL_COLLECT_KEY_RATE="10000000",
        BACKCHANNEL_COLLECT_KEY_BURST="10000000",
    )
    return env, create_key(env, workdir, "--scope", "collect"), token


def run_config(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers}
    workdir = Path(tempfile.mkdtemp(prefix="bc-collect-"))
    env, key, token = environment(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = page_view(key)
    with (
        (workdir / "server.log").open("wb") as server_log,
        process(
            python(str(HERE / "_server.py"), str(port), "--workers", str(workers), "--no-worker"),
            env,
            workdir,
            stderr=server_log,
        ) as srv,
    ):
        wait_http(url + "/healthz")
        time.sleep(1.0)  # a group: let every process finish starting
        pids = server_pids(srv.pid) if workers > 1 else [srv.pid]
        print(f"  server pids {pids}, load {loadavg()}")
        for path in ("/v1/collect", "/_bench/noop-first"):
            window = Window(pids).start()
            rps, lat = wrk_run(url, path, HEADERS, body, args.seconds)
            used = window.stop()
            out[f"wrk {path}"] = rps
            out[f"wrk {path} window"] = used
            print(
                f"  closed loop {path}: {rps:,.0f} req/s (p50 {lat.get('50%', 0):.1f} ms,"
                f" p99 {lat.get('99%', 0):.1f} ms, wrk, 64 connections);"
                f" {describe_window(used)}"
            )
        with sqlite3.connect(workdir / "bench.db") as db:
            sessions = db.execute("SELECT COUNT(*) FROM landing_sessions").fetchone()[0]
        print(f"  landing sessions stored so far: {sessions:,}")
        before = scrape(url, token)
        window = Window(pids).start()
        result = open_loop(url, "/v1/collect", HEADERS, body, args.rate, args.open_seconds)
        used = window.stop()
        after = scrape(url, token)
        view = server_view(before, after, "/v1/collect", "collect")
        out.update(open=result, open_window=used, server=view)
        print(
            "  "
            + describe_open_loop(
                f"open loop {args.rate}/s {args.open_seconds} s /v1/collect", result
            )
        )
        for line in describe_server(view):
            print(f"    {line}")
        print(f"    {describe_window(used)}")
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def profile(args: argparse.Namespace) -> None:
    """One process under cProfile while wrk posts page views: where the time goes."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-collect-prof-"))
    env, key, _ = environment(workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stats_file = workdir / "collect.prof"
    with process(
        python(str(HERE / "_server.py"), str(port), "--no-worker", "--profile", str(stats_file)),
        env,
        workdir,
    ):
        wait_http(url + "/healthz")
        rps, _ = wrk_run(url, "/v1/collect", HEADERS, page_view(key), args.seconds)
    print(f"profile: {rps:,.0f} page views/s under cProfile (slower than without); top 25:")
    stats = pstats.Stats(str(stats_file))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2", help="server processes per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the configurations")
    parser.add_argument("--seconds", type=int, default=10, help="each closed-loop wrk run")
    parser.add_argument("--rate", type=int, default=5000, help="open-loop page views per second")
    parser.add_argument("--open-seconds", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="also a cProfile run")
    args = parser.parse_args()
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    results = []
    for round_ in range(args.rounds):
        for workers in (int(w) for w in args.workers.split(",") if w):
            print(f"== round {round_ + 1}, workers={workers} (SQLite WAL synchronous=FULL)")
            results.append(run_config(workers, args))
    print()
    print(
        "summary: workers | closed loop page views/s (noop req/s) | open loop"
        f" {args.rate}/s: achieved, client p50/p99/max ms, server p99 ms, lost |"
        " server cores (each) | others | load"
    )
    for r in results:
        o, v, w = r["open"], r["server"], r["open_window"]
        lat = o["latency_ms"]
        each = "+".join(f"{c:.2f}" for c in w["server_cores_each"])
        print(
            f"{r['workers']} | {r['wrk /v1/collect']:,.0f} ({r['wrk /_bench/noop-first']:,.0f}) |"
            f" {o['achieved_rate']:,.0f}, {lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f},"
            f" {v['p99'] * 1000:.1f} (<= {v['p99_bucket'] * 1000:g}), {o['lost']} |"
            f" {w['server_cores']:.2f} ({each}) | {w['others_cores']:.2f} | {w['load']}"
        )
    if args.profile:
        profile(args)
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
