"""Store benchmark: the CPU one row of each hot write costs, in-process (SQLite).

Per round: ``insert_conversions`` of ``--batch`` conversions with their ledger rows (two
outbox rows each, as ingest writes them), ``mark_delivered`` of the TikTok rows claimed, and
``record_collect`` of 200 session updates (100 of sessions an order names, 100 new landings).
Figures are the thread's CPU time per row (best and median of ``--rounds``), with
``synchronous=OFF``: what the statements, the indexes and the rollup marks cost, without the
disk. Compare two trees by running it with ``PYTHONPATH=<tree>/src`` (how issue 17 measured
what migration 0019's marks and indexes cost):

    ./dev bench store_writes [--rounds 20] [--batch 1000]

Never pass/fail: it prints.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store.base import LedgerEntry, NewConversion, SessionUpdate
from backchannel.store.sqlite import SqliteStore


def batch(base: int, size: int, now: float) -> list[NewConversion]:
    items = []
    for i in range(base, base + size):
        conversion = normalize(
            {
                "event": "CompletePayment",
                "event_time": int(now) - 60,
                "order_id": i,
                "value": 20.0,
                "currency": "USD",
                "user": {"email": f"c{i}@example.com", "ip": "81.2.69.160"},
                "session_id": f"s{i}",
            },
            now=now,
        ).conversion
        record = to_record(conversion, [], "api", ("tiktok", "meta"))
        record.ledger = LedgerEntry(
            "api", str(i), int(now) - 60, 20.0, "USD", conversion.event,
            conversion.event_id, f"s{i}", True, b"{}",
        )  # fmt: skip
        items.append(record)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    size = args.batch
    inserts: list[float] = []
    delivered: list[float] = []
    collects: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db", synchronous="OFF")
        now = time.time()
        for k in range(args.rounds):
            items = batch(k * size, size, now)
            ups = [
                SessionUpdate(f"s{i}", now + 3, url="https://x.example/?a=1", browser="Chrome")
                for i in range(k * size, k * size + 100)
            ] + [
                SessionUpdate(f"new{k}-{i}", now + 3, landing=True, browser="Chrome")
                for i in range(100)
            ]
            gc.collect()
            began = time.thread_time()
            store.insert_conversions(items, now)
            inserts.append((time.thread_time() - began) / size)
            claimed = store.claim("tiktok", size, now + 1, 120)
            began = time.thread_time()
            store.mark_delivered([c.outbox_id for c in claimed], now + 2, "ref")
            delivered.append((time.thread_time() - began) / max(1, len(claimed)))
            began = time.thread_time()
            store.record_collect(ups, [])
            collects.append((time.thread_time() - began) / len(ups))
        store.close()
    for label, runs in (
        ("insert_conversions (+ ledger, 2 outbox rows), per event", inserts),
        ("mark_delivered, per row", delivered),
        ("record_collect, per session update", collects),
    ):
        print(
            f"{label:<56} best {min(runs) * 1e6:6.2f} µs"
            f"   median {statistics.median(runs) * 1e6:6.2f} µs (CPU)"
        )


if __name__ == "__main__":
    main()
