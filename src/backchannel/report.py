"""The gap report: how many TikTok-attributed orders the Pixel alone reports, and how many the
server leg recovers, following the method users run by hand.

Every figure is a count of ledger orders read from the store (one query,
:meth:`backchannel.store.base.Store.gap_rows`); every group says how many orders it is based on.

- **truth set**: orders in the ledger attributed to TikTok, in the time range;
- **pixel only**: those whose browser leg fired (a Pixel mirror row with the order's event_id);
- **server delivered**: those whose conversion has a delivered TikTok outbox row;
- **deduplicated**: the union of both, by event_id (what TikTok counts once);
- **recovered**: deduplicated − pixel only;
- **coverage**: deduplicated / truth set, before and after the switch-on date if given.

The pixel gap is broken down by browser family, by Pixel state (``blocked`` is the ad-blocker
share), by iOS version and by page-load bucket, from the order's landing session. An order
whose session is not stored (never seen, or purged by retention) is in the ``unknown`` bucket:
session rollups count sessions, not orders, so they cannot be joined to an order — the report
never spreads them over orders by guesswork.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from backchannel.store.base import UNKNOWN, GapRow, load_bucket

#: the breakdowns, in output order
SECTIONS = ("browser", "pixel_status", "ios_version", "load_time")


@dataclass(frozen=True, slots=True)
class Tally:
    """The headline figures of a group of truth-set orders; ``orders`` is the base."""

    orders: int
    pixel_only: int
    server_delivered: int
    deduplicated: int

    @property
    def recovered(self) -> int:
        return self.deduplicated - self.pixel_only

    @property
    def pixel_gap(self) -> int:
        """Orders the Pixel did not report."""
        return self.orders - self.pixel_only

    @property
    def coverage(self) -> float | None:
        """deduplicated / orders; None for an empty group (no number to invent)."""
        return self.deduplicated / self.orders if self.orders else None

    @property
    def pixel_coverage(self) -> float | None:
        return self.pixel_only / self.orders if self.orders else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "pixel_only": self.pixel_only,
            "server_delivered": self.server_delivered,
            "deduplicated": self.deduplicated,
            "recovered": self.recovered,
            "pixel_gap": self.pixel_gap,
            "coverage": _round(self.coverage),
            "pixel_coverage": _round(self.pixel_coverage),
        }


@dataclass(frozen=True, slots=True)
class GapReport:
    start: date
    end: date  # inclusive
    switch_on: date | None
    #: every ledger order in the range, attributed or not
    ledger_orders: int
    #: the truth set
    total: Tally
    #: truth-set orders before / on-or-after the switch-on date (None without one)
    before: Tally | None
    after: Tally | None
    #: section -> bucket -> tally, buckets sorted
    breakdowns: dict[str, dict[str, Tally]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "switch_on": self.switch_on.isoformat() if self.switch_on else None,
            "ledger_orders": self.ledger_orders,
            "truth_set": self.total.orders,
            "total": self.total.as_dict(),
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "breakdowns": {
                section: {key: t.as_dict() for key, t in buckets.items()}
                for section, buckets in self.breakdowns.items()
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def day_start(day: date) -> int:
    """Unix seconds of a UTC day's midnight."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def time_range(start: date, end: date) -> tuple[int, int]:
    """The half-open unix range [start 00:00, end + 1 day 00:00) of an inclusive date range."""
    return day_start(start), day_start(end + timedelta(days=1))


def tally(rows: Iterable[GapRow]) -> Tally:
    """Counts over truth-set rows; the deduplicated total is a union by event_id."""
    orders = pixel = server = 0
    union: set[str] = set()
    for row in rows:
        orders += 1
        pixel += row.pixel_fired
        server += row.tiktok_delivered
        if row.event_id is not None and (row.pixel_fired or row.tiktok_delivered):
            union.add(row.event_id)
    return Tally(orders, pixel, server, len(union))


def browser_bucket(row: GapRow) -> str:
    return (row.browser or UNKNOWN) if row.has_session else UNKNOWN


def pixel_bucket(row: GapRow) -> str:
    return (row.pixel_status or UNKNOWN) if row.has_session else UNKNOWN


def ios_bucket(row: GapRow) -> str | None:
    """``iOS 17`` (major version) for iOS sessions, ``unknown`` without a session or version,
    None (not in this breakdown) for other systems."""
    if not row.has_session:
        return UNKNOWN
    if row.os != "iOS":
        return None
    major = row.os_version.split(".", 1)[0] if row.os_version else ""
    return f"iOS {major}" if major else UNKNOWN


def load_time_bucket(row: GapRow) -> str:
    return load_bucket(row.load_time_ms) if row.has_session else UNKNOWN


_BUCKETS = {
    "browser": browser_bucket,
    "pixel_status": pixel_bucket,
    "ios_version": ios_bucket,
    "load_time": load_time_bucket,
}


def breakdown(rows: Sequence[GapRow], section: str) -> dict[str, Tally]:
    key_of = _BUCKETS[section]
    groups: dict[str, list[GapRow]] = {}
    for row in rows:
        key = key_of(row)
        if key is not None:
            groups.setdefault(key, []).append(row)
    return {key: tally(groups[key]) for key in sorted(groups)}


def gap_report(
    rows: Sequence[GapRow], start: date, end: date, switch_on: date | None = None
) -> GapReport:
    """The report from the store's rows for [start, end] (both inclusive, UTC days)."""
    truth = [r for r in rows if r.attributed_tiktok]
    before = after = None
    if switch_on is not None:
        cut = day_start(switch_on)
        before = tally(r for r in truth if r.order_time < cut)
        after = tally(r for r in truth if r.order_time >= cut)
    return GapReport(
        start=start,
        end=end,
        switch_on=switch_on,
        ledger_orders=len(rows),
        total=tally(truth),
        before=before,
        after=after,
        breakdowns={section: breakdown(truth, section) for section in SECTIONS},
    )


# output -----------------------------------------------------------------------------------------
CSV_FIELDS = (
    "section",
    "bucket",
    "orders",
    "pixel_only",
    "server_delivered",
    "deduplicated",
    "recovered",
    "pixel_gap",
    "coverage",
    "pixel_coverage",
)


def table_rows(report: GapReport) -> list[tuple[str, str, Tally]]:
    """(section, bucket, tally) in output order: the total, coverage periods, breakdowns."""
    out = [("total", "truth set", report.total)]
    if report.before is not None and report.after is not None:
        out.append(("coverage", "before switch-on", report.before))
        out.append(("coverage", "after switch-on", report.after))
    for section, buckets in report.breakdowns.items():
        out.extend((section, key, t) for key, t in buckets.items())
    return out


def to_csv(report: GapReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for section, bucket, t in table_rows(report):
        d = t.as_dict()
        writer.writerow(
            [section, bucket, *("" if d[name] is None else d[name] for name in CSV_FIELDS[2:])]
        )
    return buffer.getvalue()


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
