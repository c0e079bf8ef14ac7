"""Store benchmark: ``insert_conversions`` throughput, per backend, in events per second.

Each call stores ``--batch`` new conversions (real payloads: the normalized conversion as
ingest stores it, ~1 KB of JSON) with one outbox row per destination (``--destinations``, 2
by default: tiktok and meta) — the work of one group commit. The figure is the best of several
rounds of ``--calls`` calls into a store that already holds the previous rounds, each call
durable (SQLite ``synchronous=FULL``; PostgreSQL with ``fsync`` as the server has it).

    ./dev bench store_insert                                 # SQLite only
    BACKCHANNEL_TEST_POSTGRES_URL=postgresql://… ./dev bench store_insert   # + PostgreSQL
    # both, with the throwaway PostgreSQL that ./dev test uses:
    bash -c 'set -euo pipefail; VENV=$PWD/.venv; source scripts/test-services.sh;
             .venv/bin/python bench/store_insert.py'

With PostgreSQL a fresh database ``bench_store_<pid>`` is created next to the given one and
dropped at the end (the URL's user needs CREATEDB). Never pass/fail on time: it prints.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store.base import NewConversion, Store
from backchannel.store.sqlite import SqliteStore

NOW = 1_795_600_000.0


def records(start: int, n: int, destinations: tuple[str, ...]) -> list[NewConversion]:
    out = []
    for i in range(start, start + n):
        conversion = normalize(
            {
                "event": "CompletePayment",
                "event_time": 1_795_599_000,
                "order_id": 100_000 + i,
                "value": 59.9,
                "currency": "USD",
                "contents": [{"id": "SKU-1", "quantity": 2, "price": 29.95}],
                "user": {
                    "email": f"customer.{i}@example.com",
                    "phone": f"+1415{i % 10_000_000:07d}",
                    "external_id": f"user-{i}",
                    "ip": "81.2.69.160",
                    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
                    "ttp": f"ttp.{i}",
                },
                "page": {"url": f"https://shop.example/thanks?ttclid=E.{i}"},
            },
            now=NOW,
        ).conversion
        out.append(to_record(conversion, [], "api", destinations))
    return out


def measure(
    label: str, store: Store, *, batch: int, calls: int, rounds: int, destinations: int
) -> None:
    names = ("tiktok", "meta", "third", "fourth")[:destinations]
    best = float("inf")
    size = 0
    for r in range(rounds):
        batches = [records((r * calls + c) * batch, batch, names) for c in range(calls)]
        size = len(batches[0][0].payload)
        gc.collect()
        start = time.perf_counter()
        for items in batches:
            fresh = store.insert_conversions(items, NOW)
            assert all(fresh)
        best = min(best, time.perf_counter() - start)
    events = batch * calls
    print(
        f"{label:<12} {events / best:10,.0f} events/s  ({best / calls * 1e3:6.1f} ms per call of"
        f" {batch} events, {destinations} destinations, payload {size} B; best of {rounds})"
    )


@contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database next to the one ``url`` names, dropped afterwards; yields its conninfo."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = sql.Identifier(f"bench_store_{os.getpid()}")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield make_conninfo(url, dbname=f"bench_store_{os.getpid()}")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--destinations", type=int, default=2)
    parser.add_argument(
        "--postgres", default=os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL"), help="server URL"
    )
    args = parser.parse_args()
    shape = {
        "batch": args.batch,
        "calls": args.calls,
        "rounds": args.rounds,
        "destinations": args.destinations,
    }
    print(f"store insert_conversions: {args.calls} calls per round, one commit each")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStore(Path(tmp) / "bench.db")
        try:
            measure("sqlite", sqlite, **shape)
        finally:
            sqlite.close()
    if not args.postgres:
        print("postgres     skipped (set BACKCHANNEL_TEST_POSTGRES_URL or pass --postgres)")
        return
    from backchannel.store.postgres import PostgresStore

    with postgres_database(args.postgres) as url:
        postgres = PostgresStore(url)
        try:
            measure("postgres", postgres, **shape)
        finally:
            postgres.close()


if __name__ == "__main__":
    main()
