"""The gap report, end to end from a seeded store: every figure asserted exactly.

The seed (order n has event_id ``CompletePayment-n``; November 2026, switch-on the 15th):

====  ======  ==========  =====  =========  ==================================================
n     day     attributed  pixel  delivered  landing session
====  ======  ==========  =====  =========  ==================================================
1     Nov 5   yes         yes    no         Chrome, Android 14, 800 ms, loaded
2     Nov 6   yes         no     meta only  Safari, iOS 17.4, 3000 ms, blocked
3     Nov 7   yes         no     no         none named
4     Nov 16  yes         yes×2  tiktok     Chrome, Android 14, 1200 ms, loaded
5     Nov 17  yes         no     tiktok     Safari, iOS 17.1, 6000 ms, blocked
6     Nov 18  yes         no     tiktok     TikTok in-app, iOS 16.7, no load time, absent
7     Nov 19  yes         no     no         named but not stored (purged)
8     Nov 20  no          yes    tiktok     Chrome (not in the truth set)
9     Dec 2   yes         no     tiktok     none (outside the range)
10    Nov 21  yes         yes    pending    Safari, iOS 18.0, 400 ms, loaded
====  ======  ==========  =====  =========  ==================================================
"""

from __future__ import annotations

import csv
import io
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from backchannel.report import Tally, gap_report, time_range
from backchannel.store.base import BrowserEvent, LedgerEntry, SessionUpdate, Store
from backchannel.store.sqlite import SqliteStore
from report.helpers import RANGE, report_cli
from store.helpers import LEASE, NOW, conversion

START, END, SWITCH = date(2026, 11, 1), date(2026, 11, 30), date(2026, 11, 15)


def at(day: date, hour: int = 12) -> int:
    return time_range(day, day)[0] + hour * 3600


#: n -> (day, attributed, session_id)
ORDERS: dict[int, tuple[date, bool, str | None]] = {
    1: (date(2026, 11, 5), True, "s1"),
    2: (date(2026, 11, 6), True, "s2"),
    3: (date(2026, 11, 7), True, None),
    4: (date(2026, 11, 16), True, "s4"),
    5: (date(2026, 11, 17), True, "s5"),
    6: (date(2026, 11, 18), True, "s6"),
    7: (date(2026, 11, 19), True, "gone"),
    8: (date(2026, 11, 20), False, "s8"),
    9: (date(2026, 12, 2), True, None),
    10: (date(2026, 11, 21), True, "s10"),
}
SESSIONS: dict[str, dict[str, Any]] = {
    "s1": {"browser": "Chrome", "os": "Android", "os_version": "14", "load_time_ms": 800,
           "pixel_status": "loaded"},
    "s2": {"browser": "Safari", "os": "iOS", "os_version": "17.4", "load_time_ms": 3000,
           "pixel_status": "blocked"},
    "s4": {"browser": "Chrome", "os": "Android", "os_version": "14", "load_time_ms": 1200,
           "pixel_status": "loaded"},
    "s5": {"browser": "Safari", "os": "iOS", "os_version": "17.1", "load_time_ms": 6000,
           "pixel_status": "blocked"},
    "s6": {"browser": "TikTok in-app", "os": "iOS", "os_version": "16.7", "load_time_ms": None,
           "pixel_status": "absent"},
    "s8": {"browser": "Chrome", "os": "Android", "os_version": "14", "load_time_ms": 900,
           "pixel_status": "loaded"},
    "s10": {"browser": "Safari", "os": "iOS", "os_version": "18.0", "load_time_ms": 400,
            "pixel_status": "loaded"},
}  # fmt: skip
PIXEL = {1: 1, 4: 2, 8: 1, 10: 1}  # n -> Pixel mirror rows with its event_id
TIKTOK_DELIVERED = {4, 5, 6, 8, 9}
META_DELIVERED = {2}


def seed(store: Store) -> None:
    items = []
    for n, (day, attributed, session_id) in ORDERS.items():
        item = conversion(n, session_id=session_id, event_time=at(day))
        item.ledger = LedgerEntry(
            source="shopify",
            order_id=str(n),
            order_time=at(day),
            value=10.0,
            currency="USD",
            event="CompletePayment",
            event_id=f"CompletePayment-{n}",
            session_id=session_id,
            attributed_tiktok=attributed,
            evidence=b'{"ttclid": "landing_site"}' if attributed else b"{}",
        )
        items.append(item)
    assert store.insert_conversions(items, NOW) == [True] * len(items)
    updates = [
        SessionUpdate(session_id=sid, at=NOW, landing=True, **fields)
        for sid, fields in SESSIONS.items()
    ]
    events = [
        BrowserEvent(session_id=ORDERS[n][2] or "x", event="CompletePayment",
                     event_id=f"CompletePayment-{n}", at=NOW + i)
        for n, times in PIXEL.items()
        for i in range(times)
    ]  # fmt: skip
    events.append(BrowserEvent("s2", "ViewContent", "ViewContent-2", NOW))  # another event
    store.record_collect(updates, events)
    for destination, wanted in (("tiktok", TIKTOK_DELIVERED), ("meta", META_DELIVERED)):
        claimed = store.claim(destination, 100, NOW, LEASE)
        ids = [c.outbox_id for c in claimed if int(orjson.loads(c.payload)["n"]) in wanted]
        assert len(ids) == len(wanted)
        store.mark_delivered(ids, NOW, "ref")
        rest = [c.outbox_id for c in claimed if c.outbox_id not in ids]
        store.release(rest, NOW)


def t(orders: int, pixel: int, server: int, dedup: int) -> Tally:
    return Tally(orders, pixel, server, dedup)


EXPECTED_BREAKDOWNS = {
    "browser": {
        "Chrome": t(2, 2, 1, 2),
        "Safari": t(3, 1, 1, 2),
        "TikTok in-app": t(1, 0, 1, 1),
        "unknown": t(2, 0, 0, 0),
    },
    "pixel_status": {
        "absent": t(1, 0, 1, 1),
        "blocked": t(2, 0, 1, 1),
        "loaded": t(3, 3, 1, 3),
        "unknown": t(2, 0, 0, 0),
    },
    "ios_version": {
        "iOS 16": t(1, 0, 1, 1),
        "iOS 17": t(2, 0, 1, 1),
        "iOS 18": t(1, 1, 0, 1),
        "unknown": t(2, 0, 0, 0),
    },
    "load_time": {
        "1-2.5s": t(1, 1, 1, 1),
        "2.5-5s": t(1, 0, 0, 0),
        "5s+": t(1, 0, 1, 1),
        "<1s": t(2, 2, 0, 2),
        "unknown": t(3, 0, 1, 1),
    },
}


class TestGapReport:
    def test_every_figure(self, store: Store) -> None:
        seed(store)
        report = gap_report(store.gap_rows(*time_range(START, END)), START, END, SWITCH)
        assert report.ledger_orders == 9
        total = report.total
        assert total == t(8, 3, 3, 5)
        assert (total.recovered, total.pixel_gap) == (2, 5)
        assert (total.coverage, total.pixel_coverage) == (5 / 8, 3 / 8)
        assert report.before == t(3, 1, 0, 1)
        assert report.before.recovered == 0
        assert report.after == t(5, 2, 3, 4)
        assert report.after.recovered == 2
        assert (report.before.coverage, report.after.coverage) == (1 / 3, 4 / 5)
        assert report.breakdowns == EXPECTED_BREAKDOWNS
        assert list(report.breakdowns["load_time"]) == sorted(EXPECTED_BREAKDOWNS["load_time"])
        for buckets in report.breakdowns.values():  # every truth-set order is counted once
            if buckets is not report.breakdowns["ios_version"]:
                assert sum(b.orders for b in buckets.values()) == 8
        assert sum(b.orders for b in report.breakdowns["ios_version"].values()) == 6

    def test_without_switch_on_no_periods(self, store: Store) -> None:
        seed(store)
        report = gap_report(store.gap_rows(*time_range(START, END)), START, END)
        assert (report.before, report.after) == (None, None)
        assert report.as_dict()["before"] is None

    def test_empty_range_has_no_ratio(self, store: Store) -> None:
        seed(store)
        day = date(2026, 10, 1)
        report = gap_report(store.gap_rows(*time_range(day, day)), day, day)
        assert report.total == t(0, 0, 0, 0)
        assert report.total.coverage is None
        assert report.breakdowns == {s: {} for s in EXPECTED_BREAKDOWNS}


# -- the CLI --------------------------------------------------------------------------------------
def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return report_cli(db, "gap", *args)


class TestCli:
    def test_json(self, seeded: Path) -> None:
        done = run(seeded, *RANGE, "--format", "json")
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        assert (data["from"], data["to"], data["switch_on"]) == (
            "2026-11-01",
            "2026-11-30",
            "2026-11-15",
        )
        assert (data["ledger_orders"], data["truth_set"]) == (9, 8)
        assert data["total"] == {
            "orders": 8,
            "pixel_only": 3,
            "server_delivered": 3,
            "deduplicated": 5,
            "recovered": 2,
            "pixel_gap": 5,
            "coverage": 0.625,
            "pixel_coverage": 0.375,
        }
        assert data["before"]["orders"] == 3
        assert data["before"]["deduplicated"] == 1
        assert data["after"]["orders"] == 5
        assert data["after"]["recovered"] == 2
        assert data["after"]["coverage"] == 0.8
        for section, buckets in EXPECTED_BREAKDOWNS.items():
            assert {k: v["orders"] for k, v in data["breakdowns"][section].items()} == {
                k: v.orders for k, v in buckets.items()
            }
            assert {k: v["recovered"] for k, v in data["breakdowns"][section].items()} == {
                k: v.recovered for k, v in buckets.items()
            }

    def test_csv(self, seeded: Path) -> None:
        done = run(seeded, *RANGE, "--format", "csv")
        assert done.returncode == 0, done.stderr
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        got = {(r["section"], r["bucket"]): r for r in rows}
        assert len(rows) == 3 + sum(len(b) for b in EXPECTED_BREAKDOWNS.values())
        total = got[("total", "truth set")]
        assert (total["orders"], total["pixel_only"], total["server_delivered"]) == ("8", "3", "3")
        assert (total["deduplicated"], total["recovered"], total["coverage"]) == ("5", "2", "0.625")
        before = got[("coverage", "before switch-on")]
        assert (before["orders"], before["deduplicated"], before["recovered"]) == ("3", "1", "0")
        after = got[("coverage", "after switch-on")]
        assert (after["orders"], after["deduplicated"], after["recovered"]) == ("5", "4", "2")
        blocked = got[("pixel_status", "blocked")]
        assert (blocked["orders"], blocked["pixel_only"], blocked["recovered"]) == ("2", "0", "1")
        assert got[("ios_version", "iOS 17")]["orders"] == "2"
        assert got[("load_time", "unknown")]["orders"] == "3"

    def test_table(self, seeded: Path) -> None:
        done = run(seeded, *RANGE)
        assert done.returncode == 0, done.stderr
        assert "truth set" in done.stdout
        assert "9 ledger order(s) in range, 8 attributed" in done.stdout

    def test_no_range_is_the_last_30_days_as_on_the_dashboard(self, tmp_path: Path) -> None:
        """Without --from/--to: today and the 29 days before it (UTC), the gap page's default;
        --to alone ends the 30 days there."""
        today = datetime.now(UTC).date()
        days = {1: today, 2: today - timedelta(days=29), 3: today - timedelta(days=30)}
        db = tmp_path / "recent.db"
        store = SqliteStore(db)
        try:
            items = []
            for n, day in days.items():
                item = conversion(n, event_time=at(day))
                item.ledger = LedgerEntry(
                    source="shopify", order_id=str(n), order_time=at(day), value=10.0,
                    currency="USD", event="CompletePayment", event_id=f"CompletePayment-{n}",
                    session_id=None, attributed_tiktok=True, evidence=b'{"ttclid": "x"}',
                )  # fmt: skip
                items.append(item)
            assert store.insert_conversions(items, NOW) == [True] * 3
        finally:
            store.close()
        done = run(db, "--format", "json")
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        assert (data["from"], data["to"]) == (
            (today - timedelta(days=29)).isoformat(),
            today.isoformat(),
        )
        assert data["ledger_orders"] == 2  # today and 29 days ago; not 30 days ago
        ended = today - timedelta(days=1)
        done = run(db, "--to", ended.isoformat(), "--format", "json")
        data = orjson.loads(done.stdout)
        assert (data["from"], data["to"]) == (
            (ended - timedelta(days=29)).isoformat(),
            ended.isoformat(),
        )
        assert data["ledger_orders"] == 2  # 29 and 30 days ago

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--from", "2026-13-01", "--to", "2026-11-30"), "error: --from: "),
            (("--from", "2026-11-01", "--to", "tomorrow"), "error: --to: "),
            (("--from", "2026-11-02", "--to", "2026-11-01"), "error: --to: "),
            ((*RANGE[:4], "--switch-on", "x"), "error: --switch-on: "),
            ((*RANGE, "--format", "xml"), "error: --format: "),
        ],
    )
    def test_bad_input_exits_2(self, seeded: Path, args: tuple[str, ...], message: str) -> None:
        done = run(seeded, *args)
        assert done.returncode == 2
        assert done.stderr.startswith(message), done.stderr
