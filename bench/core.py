"""Core benchmark: normalize + hash + both payload builders, per conversion.

Prints µs/conversion and conversions/s for four inputs: email + external_id only; with a
phone in E.164 form (fast path); with national-format phones (full phonenumbers parse, unique
numbers so the cache never hits); and with repeat customers (cache hits). Each figure is the
best of several rounds, to keep noise from the other core out of it. Two clocks: wall time
(``perf_counter``) and the thread's CPU time (``thread_time``). On a shared machine the CPU
time is the steadier one: time spent waiting for a core while another process ran is not in
it (cache and memory-bus sharing still are).

``--profile`` runs the E.164 input once under cProfile and prints where the time goes.

    ./dev bench core [--n 20000] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable
from typing import Any

from backchannel.destinations import meta, tiktok
from backchannel.destinations.base import Target
from backchannel.events import normalize

NOW = 1_795_600_000.0
TARGET = Target("http://127.0.0.1:1", "PIXEL", "token")


def conversion(i: int, phone: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {
        "email": f"Customer.{i}@Example.com ",
        "external_id": f"user-{i}",
        "ip": "81.2.69.160",
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
        "ttp": f"ttp.{i}",
    }
    if phone is not None:
        user["phone"] = phone
    return {
        "event": "CompletePayment",
        "event_time": 1_795_599_000,
        "order_id": 100_000 + i,
        "value": 59.9,
        "currency": "USD",
        "contents": [{"id": 123, "quantity": 2, "price": 29.95}],
        "user": user,
        "page": {"url": f"https://shop.example/thanks?ttclid=E.{i}"},
    }


def work(inputs: list[dict[str, Any]], region: str | None) -> None:
    for item in inputs:
        c = normalize(item, now=NOW, default_region=region).conversion
        tiktok.build_body([c], TARGET)
        meta.build_body([c], TARGET)


def run(
    label: str,
    make: Callable[[int], dict[str, Any]],
    n: int,
    rounds: int = 5,
    region: str | None = None,
) -> None:
    best_wall = best_cpu = float("inf")
    for r in range(rounds):
        inputs = [make(r * n + i) for i in range(n)]
        gc.collect()
        start, cpu = time.perf_counter(), time.thread_time()
        work(inputs, region)
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - start)
    per, per_cpu = best_wall / n * 1e6, best_cpu / n * 1e6
    print(
        f"{label:<44} {per:7.2f} µs/conversion  {n / best_wall:10,.0f} conversions/s"
        f"  (CPU {per_cpu:.2f} µs)"
    )


def profile(n: int) -> None:
    """cProfile of the E.164 input: the functions that take the most time of their own."""
    inputs = [conversion(i, f"+1415{i % 10_000_000:07d}") for i in range(n)]
    work(inputs[: n // 10], None)  # warm the caches the steady state has warm
    profiler = cProfile.Profile()
    profiler.runcall(work, inputs, None)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the E.164 input")
    args = parser.parse_args()
    n, rounds = args.n, args.rounds
    if args.profile:
        profile(n)
        return
    print(f"core: normalize + hash + TikTok body + Meta body, best of {rounds} rounds of {n:,}")
    run("email + external_id (no phone)", lambda i: conversion(i, None), n, rounds)
    run(
        "+ phone, E.164 input (fast path)",
        lambda i: conversion(i, f"+1415{i % 10_000_000:07d}"),
        n,
        rounds,
    )
    run(
        "+ phone, national format, unique (full parse)",
        lambda i: conversion(i, f"(415) {200 + i % 800:03d}-{i // 800 % 10000:04d}"),
        n,
        rounds,
        region="US",
    )
    run(
        "+ phone, repeat customers (parse cached)",
        lambda i: conversion(i, "(415) 555-2671"),
        n,
        rounds,
        region="US",
    )


if __name__ == "__main__":
    main()
