"""Core benchmark: normalize + hash + both payload builders, per conversion.

Prints µs/conversion and conversions/s for four inputs: email + external_id only; with a
phone in E.164 form (fast path); with national-format phones (full phonenumbers parse, unique
numbers so the cache never hits); and with repeat customers (cache hits). Each figure is the
best of several rounds, to keep noise from the other core out of it.

    ./dev bench core [--n 20000]
"""

from __future__ import annotations

import argparse
import gc
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


def run(
    label: str,
    make: Callable[[int], dict[str, Any]],
    n: int,
    rounds: int = 5,
    region: str | None = None,
) -> None:
    best = float("inf")
    for r in range(rounds):
        inputs = [make(r * n + i) for i in range(n)]
        gc.collect()
        start = time.perf_counter()
        for item in inputs:
            c = normalize(item, now=NOW, default_region=region).conversion
            tiktok.build_body([c], TARGET)
            meta.build_body([c], TARGET)
        best = min(best, time.perf_counter() - start)
    per = best / n * 1e6
    print(f"{label:<44} {per:7.2f} µs/conversion  {n / best:10,.0f} conversions/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n
    print(f"core: normalize + hash + TikTok body + Meta body, best of 5 rounds of {n:,}")
    run("email + external_id (no phone)", lambda i: conversion(i, None), n)
    run(
        "+ phone, E.164 input (fast path)", lambda i: conversion(i, f"+1415{i % 10_000_000:07d}"), n
    )
    run(
        "+ phone, national format, unique (full parse)",
        lambda i: conversion(i, f"(415) {200 + i % 800:03d}-{i // 800 % 10000:04d}"),
        n,
        region="US",
    )
    run(
        "+ phone, repeat customers (parse cached)",
        lambda i: conversion(i, "(415) 555-2671"),
        n,
        region="US",
    )


if __name__ == "__main__":
    main()
