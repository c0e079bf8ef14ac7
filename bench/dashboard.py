"""Dashboard benchmark: how long each page's figures take to read from a large store.

Seeds a store with ``--n`` conversions spread evenly over the last ``--days`` days (two
outbox rows each, ~90 % delivered with a few seconds of latency, ~1 % dead), one ledger order
per conversion (80 % attributed to TikTok), a landing session per order and a Pixel mirror
row for 60 % of them — roughly what a shop doing n orders a month leaves behind. Then it
times, per page, the same data function the page calls (best and median of ``--repeat``
runs), for the whole range and the last 7 days: the first read (every day's partial
computed, backchannel.rollups), then reads from the kept daily partials, then after orders
arrive today (one day recomputed), and the background refresh of that day:

    ./dev bench dashboard               # SQLite, then PostgreSQL (./dev starts a throwaway
                                        # server): 1,000,000 conversions over 30 days
    ./dev bench dashboard --n 50000 --repeat 5
    .venv/bin/python bench/dashboard.py # SQLite only (no PostgreSQL URL in the environment)

Pages answer off the event loop (a thread), and SQLite reads on a connection of their own,
so these times are what a dashboard user waits, not what ingest waits. Never pass/fail.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from backchannel import report, rollups
from backchannel.diagnostics.dead_letters import dead_page
from backchannel.diagnostics.dedup import dedup_report
from backchannel.diagnostics.identifiers import identifiers_report
from backchannel.diagnostics.overview import overview
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store.base import BrowserEvent, Dead, LedgerEntry, SessionUpdate, Store
from backchannel.store.sqlite import SqliteStore

DESTINATIONS = ("tiktok", "meta")
CHUNK = 2000


def seed(store: Store, n: int, days: int, today: date) -> None:
    start = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days - 1)
    first = start.timestamp() + 3600  # orders are placed a minute before; keep them in range
    span = days * 86400.0 - 7200
    began = time.perf_counter()
    for base in range(0, n, CHUNK):
        ids = range(base, min(n, base + CHUNK))
        at = first + span * base / n
        items = []
        updates = []
        mirror = []
        for i in ids:
            session = f"s{i}"
            conversion = normalize(
                {
                    "event": "CompletePayment" if i % 5 else "Lead",
                    "event_time": int(at) - 60,
                    "order_id": i,
                    "value": 20.0 + i % 50,
                    "currency": "USD",
                    "user": {
                        "email": f"c{i}@example.com",
                        **({"phone": f"+1415{i % 10_000_000:07d}"} if i % 3 == 0 else {}),
                        "ip": "81.2.69.160",
                        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
                        **({"ttclid": f"E.C.{i}"} if i % 5 < 4 else {}),
                    },
                    "page": {"url": "https://shop.example/thanks"},
                    "session_id": session,
                },
                now=at,
            ).conversion
            record = to_record(conversion, [], "api", DESTINATIONS)
            record.ledger = LedgerEntry(
                "api",
                str(i),
                int(at) - 60,
                conversion.value,
                "USD",
                conversion.event,
                conversion.event_id,
                session,
                i % 5 < 4,
                orjson.dumps({"ttclid": "page.url"} if i % 5 < 4 else {}),
            )
            items.append(record)
            updates.append(
                SessionUpdate(
                    session,
                    at - 600,
                    url="https://shop.example/?ttclid=x",
                    landing=True,
                    browser=("Chrome", "Safari", "TikTok in-app")[i % 3],
                    os=("Android", "iOS", "iOS")[i % 3],
                    os_version=("14", "17.4", "16.7")[i % 3],
                    load_time_ms=400 + (i * 37) % 6000,
                    pixel_status=("loaded", "blocked", "loaded", "absent", "loaded")[i % 5],
                )
            )
            if i % 5 in (0, 2, 4):
                mirror.append(BrowserEvent(session, conversion.event, conversion.event_id, at))
        store.record_collect(updates, mirror)
        store.insert_conversions(items, at)
        for destination in DESTINATIONS:
            claimed = store.claim(destination, len(items), at + 1, 120)
            # ~1 % dead, ~90 % delivered a few seconds later, the rest left pending
            dead = [c.outbox_id for c in claimed if c.conversion_id % 100 == 0]
            done = [c.outbox_id for c in claimed if c.conversion_id % 10 and c.conversion_id % 100]
            rest = [c.outbox_id for c in claimed if c.conversion_id % 10 == 0]
            rest = [i for i in rest if i not in set(dead)]
            store.mark_delivered(done, at + 2 + (base % 7), "ref")
            if dead:
                store.mark_dead(
                    [Dead(i, b'{"event":"x"}') for i in dead], "Invalid parameter", "{}", None
                )
            store.release(rest, at + 86400 * 365)
    print(f"seeded {n} conversions over {days} days in {time.perf_counter() - began:.1f} s")


def timed(label: str, call: Callable[[], Any], repeat: int) -> None:
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        runs.append((time.perf_counter() - began) * 1000)
    print(f"  {label:<44} best {min(runs):8.1f} ms   median {statistics.median(runs):8.1f} ms")


def once(label: str, call: Callable[[], Any]) -> None:
    began = time.perf_counter()
    call()
    print(f"  {label:<44} {(time.perf_counter() - began) * 1000:8.1f} ms")


def pages(store: Store, start: date, today: date) -> dict[str, Callable[[], object]]:
    return {
        "overview": functools.partial(overview, store, start, today, DESTINATIONS),
        "identifiers": functools.partial(identifiers_report, store, start, today),
        "dedup page 1": functools.partial(dedup_report, store, start, today),
        "gap report": functools.partial(report.from_store, store, start, today),
    }


def measure(label: str, store: Store, days: int, today: date, repeat: int) -> None:
    """Per page: the first read (every day's partial computed: what a page costs once after
    start-up or an upgrade), then reads answered from the kept daily partials (best and median
    of ``repeat``), then the read after orders arrived today (one day recomputed), and what
    the background refresh of that day costs."""
    week = today - timedelta(days=6)
    month = today - timedelta(days=days - 1)
    print(f"{label}:")
    store.take_rollup_marks()
    for name, start in ((f"{days} days", month), ("7 days", week)):
        for page, call in pages(store, start, today).items():
            once(f"{page}, {name}, first read", call)
            timed(f"{page}, {name}, kept partials", call, repeat)
        scan = functools.partial(report.from_store, store, start, today, scan=True)
        timed(f"gap report, {name}, row scan (scan=True)", scan, repeat)
    timed("dead letters page 1", lambda: dead_page(store), repeat)
    now = time.time()
    store.insert_conversions(
        [
            to_record(
                normalize(
                    {
                        "event": "CompletePayment",
                        "event_time": int(now) - 30,
                        "order_id": f"late-{i}",
                        "value": 10.0,
                        "currency": "USD",
                        "user": {"email": f"late{i}@example.com", "ip": "81.2.69.160"},
                    },
                    now=now,
                ).conversion,
                [],
                "api",
                DESTINATIONS,
            )
            for i in range(100)
        ],
        now,
    )
    print("  100 conversions arrive today; then:")
    for page, call in pages(store, month, today).items():
        once(f"{page}, {days} days, today recomputed", call)
    store.insert_conversions(
        [
            to_record(
                normalize(
                    {
                        "event": "CompletePayment",
                        "event_time": int(now) - 20,
                        "order_id": "later",
                        "value": 10.0,
                        "currency": "USD",
                        "user": {"email": "later@example.com", "ip": "81.2.69.160"},
                    },
                    now=now,
                ).conversion,
                [],
                "api",
                DESTINATIONS,
            )
        ],
        now,
    )
    began = time.perf_counter()
    recomputed = rollups.refresh(store)
    print(
        f"  background refresh after one more, at once: {recomputed} partials of today"
        f" recomputed in {(time.perf_counter() - began) * 1000:.1f} ms (a partial waits"
        f" {rollups.COST_SHARE:g}x what it took since it was computed)"
    )
    later = time.time() + rollups.COST_SHARE * 60  # past the allowance of a minute's compute
    began = time.perf_counter()
    recomputed = rollups.refresh(store, now=later)
    print(
        f"  background refresh after the allowance: {recomputed} partials of today recomputed"
        f" in {(time.perf_counter() - began) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="conversions to seed")
    parser.add_argument("--days", type=int, default=30, help="days they are spread over")
    parser.add_argument("--repeat", type=int, default=3, help="runs per query")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL (default: BACKCHANNEL_TEST_POSTGRES_URL, which ./dev sets)",
    )
    parser.add_argument(
        "--only",
        choices=("sqlite", "postgres"),
        help="measure one backend only (default: SQLite, then PostgreSQL when a URL is known)",
    )
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    if args.only != "postgres":
        sqlite(args, today)
    if args.only == "sqlite":
        return
    if not args.postgres:
        print("PostgreSQL skipped (set BACKCHANNEL_TEST_POSTGRES_URL or pass --postgres URL)")
        return
    from backchannel.store.postgres import PostgresStore
    from store_insert import postgres_database  # a throwaway database, dropped after

    with postgres_database(args.postgres) as url:
        pg = PostgresStore(url)
        try:
            seed(pg, args.n, args.days, today)
            measure(f"PostgreSQL, {args.n} conversions", pg, args.days, today, args.repeat)
        finally:
            pg.close()


def sqlite(args: argparse.Namespace, today: date) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "bench.db", synchronous="OFF")
        try:
            seed(store, args.n, args.days, today)
            measure(f"SQLite, {args.n} conversions", store, args.days, today, args.repeat)
        finally:
            store.close()


if __name__ == "__main__":
    main()
