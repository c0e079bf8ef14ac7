"""The gap report: how many of a platform's orders its Pixel alone reports, and how many the
server leg recovers, following the method users run by hand. By default the platform is
TikTok's (the ledger's attribution rule is TikTok's); ``destination=`` runs it for any other.

Every figure is a count of ledger orders read from the store (the rows of
:meth:`backchannel.store.base.Store.gap_rows`'s query for TikTok, of :func:`platform_rows` for
another destination), summarized per property and UTC day and merged (see "per-day partials"
below; ``scan=True`` reads the whole range at once, the reference); every group says how many
orders it is based on.

- **truth set**: orders in the ledger attributed to the platform, in the time range (TikTok:
  the ledger's ``attributed_tiktok``, its ttclid / TikTok UTM rule; any other destination: one
  of its click ids on the order's conversion or landing session, or the landing's
  ``utm_source`` among its ``UTM_SOURCES``, see :func:`attributed`);
- **pixel only**: those whose browser leg fired (a mirror row of the platform's Pixel with the
  order's id in its key: the event_id, or for Google's tag the order id);
- **server delivered**: those whose conversion has a delivered outbox row for it;
- **deduplicated**: the union of both, by (property, event_id) (what the platform counts
  once);
- **recovered**: deduplicated − pixel only;
- **coverage**: deduplicated / truth set, before and after the switch-on date if given.

The pixel gap is broken down by browser family, by Pixel state (``blocked`` is the ad-blocker
share), by iOS version and by page-load bucket, from the order's landing session. An order
whose session is not stored (never seen, or purged by retention) is in the ``unknown`` bucket:
session rollups count sessions, not orders, so they cannot be joined to an order — the report
never spreads them over orders by guesswork.

Two additions feed the pictures and the "pixel-only from an export" variant of the method:

- **daily**: the same four counts per UTC day of ``order_time`` (:func:`daily_tallies`), every
  day of the range present (a zero is a count too); :func:`series` reshapes them per leg for
  :func:`backchannel.charts.timeseries_svg`;
- **pixel reported**: when daily counts exported from TikTok Events Manager were imported
  (``backchannel report import-pixel``), their total over the range is shown next to the
  mirror's ``pixel_only``, with how many of the range's days the import covers, and
  ``recovered_vs_reported = deduplicated - pixel_reported``. Without an import these are None:
  a missing export is not a zero.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from backchannel import identifiers, rollups
from backchannel.destinations import DESTINATIONS, Destination
from backchannel.destinations import get as get_destination
from backchannel.sources.ledger import PLATFORM as LEDGER_PLATFORM
from backchannel.store.base import (
    GAP_ROWS_SQL,
    LOAD_BUCKETS,
    SLOW_BUCKET,
    UNKNOWN,
    GapRow,
    Store,
    gap_row,
    load_bucket,
)

#: the breakdowns, in output order
SECTIONS = ("browser", "pixel_status", "ios_version", "load_time")
#: the breakdowns of another destination's report: the sessions' Pixel state is TikTok's
#: Pixel's (the only one bc.js watches load), so it says nothing of another platform's
OTHER_SECTIONS = tuple(s for s in SECTIONS if s != "pixel_status")
#: the event whose imported Events Manager counts the report reads by default
PIXEL_EVENT = "CompletePayment"
#: days a gap report covers when no range is given (the dashboard page and `report gap`)
DEFAULT_DAYS = 30
#: the filter of the ledger's queries to one property
SCOPE = " AND o.property_id = ?"
#: the same for the queries of ONE day (the partials): read through orders_property_time
#: (migration 0019), the property's rows of the day (without that index SQLite, which has no
#: statistics, read the property's whole ledger, ~1 s a day at 1,000,000 orders)
DAY_SCOPE = SCOPE

#: section -> what its buckets are, for headings and chart titles
SECTION_TITLES = {
    "browser": "By browser family",
    "pixel_status": "By Pixel state (blocked: an ad blocker or tracking protection)",
    "ios_version": "By iOS version (iOS orders only)",
    "load_time": "By page-load time",
}


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
class LedgerOrder:
    """One ledger order as the report of one destination reads it (another destination's
    :class:`~backchannel.store.base.GapRow`): plain facts, no judgement."""

    order_time: int
    event_id: str | None
    #: attributed to the destination (see :func:`attributed`)
    attributed: bool
    #: a mirror row of its Pixel carries the order's id in its key
    pixel_fired: bool
    #: the order's conversion has a delivered outbox row for it
    server_delivered: bool
    has_session: bool
    browser: str | None = None
    os: str | None = None
    os_version: str | None = None
    load_time_ms: int | None = None
    pixel_status: str | None = None
    #: the order's property (the deduplicated union is by property and event_id)
    property_id: int = 1


#: a row of either kind: TikTok's from the store, another destination's from platform_rows
Row = GapRow | LedgerOrder


def _attributed(row: Row) -> bool:
    return row.attributed if isinstance(row, LedgerOrder) else row.attributed_tiktok


def _delivered(row: Row) -> bool:
    return row.server_delivered if isinstance(row, LedgerOrder) else row.tiktok_delivered


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
    #: (UTC day, tally of that day's truth-set orders) for every day of the range, in order
    daily: list[tuple[date, Tally]] = field(default_factory=list)
    #: counts imported from an Events Manager export (None: nothing imported for the range)
    pixel_import: PixelImport | None = None
    #: per destination, truth-set orders whose conversion was delivered there (the report's
    #: own is ``total.server_delivered``; the others show what the same orders reached
    #: elsewhere)
    server_delivered_by: dict[str, int] = field(default_factory=dict)
    #: the destination whose Pixel and server leg the report is about
    destination: str = LEDGER_PLATFORM
    #: when the oldest kept day partial shown although its day changed since was computed
    #: (``max_stale`` allowed it: the dashboard page); None: exact
    as_of: float | None = None

    @property
    def pixel_reported(self) -> int | None:
        return self.pixel_import.count if self.pixel_import else None

    @property
    def recovered_vs_reported(self) -> int | None:
        """deduplicated - the Pixel count Events Manager reported (None without an import)."""
        if self.pixel_import is None:
            return None
        return self.total.deduplicated - self.pixel_import.count

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
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
            "pixel_reported": self.pixel_reported,
            "recovered_vs_reported": self.recovered_vs_reported,
            "pixel_import": self.pixel_import.as_dict() if self.pixel_import else None,
            "server_delivered_by": dict(self.server_delivered_by),
            "daily": {
                day.isoformat(): {
                    "orders": t.orders,
                    "pixel_only": t.pixel_only,
                    "server_delivered": t.server_delivered,
                    "deduplicated": t.deduplicated,
                }
                for day, t in self.daily
            },
        }


@dataclass(frozen=True, slots=True)
class PixelImport:
    """Daily counts imported from an Events Manager export, summed over the report's range."""

    event: str
    #: the sum of the imported days' counts
    count: int
    #: days of the range that have an imported count / days in the range
    days_covered: int
    days_in_range: int
    #: ISO day -> imported count (the days covered), for the time series
    by_day: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "days_covered": self.days_covered,
            "days_in_range": self.days_in_range,
        }


def pixel_import(counts: dict[str, int], start: date, end: date, event: str) -> PixelImport | None:
    """The import's figures for [start, end] from ``Store.pixel_counts`` (None when empty)."""
    if not counts:
        return None
    return PixelImport(
        event=event,
        count=sum(counts.values()),
        days_covered=len(counts),
        days_in_range=(end - start).days + 1,
        by_day=dict(counts),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def day_start(day: date) -> int:
    """Unix seconds of a UTC day's midnight."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def time_range(start: date, end: date) -> tuple[int, int]:
    """The half-open unix range [start 00:00, end + 1 day 00:00) of an inclusive date range."""
    return day_start(start), day_start(end + timedelta(days=1))


def tally(rows: Iterable[Row]) -> Tally:
    """Counts over truth-set rows; the deduplicated total is a union by event_id (within a
    property: two properties' orders with one event_id go to different pixels, and each is
    counted by its own)."""
    orders = pixel = server = 0
    union: set[tuple[int, str]] = set()
    for row in rows:
        orders += 1
        delivered = _delivered(row)
        pixel += row.pixel_fired
        server += delivered
        if row.event_id is not None and (row.pixel_fired or delivered):
            union.add((row.property_id, row.event_id))
    return Tally(orders, pixel, server, len(union))


def browser_bucket(row: Row) -> str:
    return (row.browser or UNKNOWN) if row.has_session else UNKNOWN


def pixel_bucket(row: Row) -> str:
    return (row.pixel_status or UNKNOWN) if row.has_session else UNKNOWN


def ios_bucket(row: Row) -> str | None:
    """``iOS 17`` (major version) for iOS sessions, ``unknown`` without a session or version,
    None (not in this breakdown) for other systems."""
    if not row.has_session:
        return UNKNOWN
    if row.os != "iOS":
        return None
    major = row.os_version.split(".", 1)[0] if row.os_version else ""
    return f"iOS {major}" if major else UNKNOWN


def load_time_bucket(row: Row) -> str:
    return load_bucket(row.load_time_ms) if row.has_session else UNKNOWN


_BUCKETS = {
    "browser": browser_bucket,
    "pixel_status": pixel_bucket,
    "ios_version": ios_bucket,
    "load_time": load_time_bucket,
}


#: page-load buckets fastest first (their labels do not sort that way: "<1s" sorts last)
_LOAD_ORDER = {
    label: i for i, label in enumerate([*(b for _, b in LOAD_BUCKETS), SLOW_BUCKET, UNKNOWN])
}


def reading_order(section: str, buckets: dict[str, Tally]) -> dict[str, Tally]:
    """The buckets in the order a reader expects (load times fastest first; the rest as the
    report keeps them, sorted by name) for tables and charts; the JSON keeps sorted keys."""
    if section != "load_time":
        return dict(buckets)
    return dict(sorted(buckets.items(), key=lambda item: (_LOAD_ORDER.get(item[0], 99), item[0])))


def breakdown(rows: Sequence[Row], section: str) -> dict[str, Tally]:
    key_of = _BUCKETS[section]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = key_of(row)
        if key is not None:
            groups.setdefault(key, []).append(row)
    return {key: tally(groups[key]) for key in sorted(groups)}


def days(start: date, end: date) -> list[date]:
    """Every UTC day of the inclusive range, in order."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def daily_tallies(rows: Sequence[Row], start: date, end: date) -> list[tuple[date, Tally]]:
    """The truth set's tally per UTC day of ``order_time``, for EVERY day of [start, end].

    Why every day: a chart or a script that skips empty days draws a line straight across
    them and hides an outage. Rows outside the range are ignored (the store query already
    filters them; a caller passing more rows gets no phantom day).
    """
    by_day: dict[date, list[Row]] = {day: [] for day in days(start, end)}
    for row in rows:
        if not _attributed(row):
            continue
        day = datetime.fromtimestamp(row.order_time, UTC).date()
        if day in by_day:
            by_day[day].append(row)
    return [(day, tally(group)) for day, group in by_day.items()]


#: the legs of :func:`series`, in drawing order: (key, label)
LEGS: tuple[tuple[str, str], ...] = (
    ("orders", "Truth set (ledger)"),
    ("pixel_only", "Pixel"),
    ("server_delivered", "Server"),
    ("deduplicated", "Deduplicated"),
)
#: the extra leg of :func:`series` when Events Manager counts were imported
REPORTED_LEG = "Pixel (Events Manager)"


def series(
    daily: Sequence[tuple[date, Tally]], reported: dict[str, int] | None = None
) -> dict[str, list[tuple[date, int]]]:
    """Leg label -> [(day, count)] for the time-series chart; with imported Events Manager
    counts (``reported``: ISO day -> count) a fifth leg, where a day not imported is 0."""
    out: dict[str, list[tuple[date, int]]] = {
        label: [(day, getattr(t, key)) for day, t in daily] for key, label in LEGS
    }
    if reported:
        out[REPORTED_LEG] = [(day, reported.get(day.isoformat(), 0)) for day, _ in daily]
    return out


def gap_report(
    rows: Sequence[Row],
    start: date,
    end: date,
    switch_on: date | None = None,
    *,
    pixel_counts: dict[str, int] | None = None,
    pixel_event: str = PIXEL_EVENT,
    destination: str = LEDGER_PLATFORM,
) -> GapReport:
    """The report from the store's rows for [start, end] (both inclusive, UTC days).

    ``pixel_counts``: ``Store.pixel_counts`` for the range (ISO day -> count), if any.
    ``destination``: whose report it is (its rows come from :func:`platform_rows`, TikTok's
    from ``Store.gap_rows``); another destination's has no Pixel state breakdown."""
    truth = [r for r in rows if _attributed(r)]
    sections = SECTIONS if destination == LEDGER_PLATFORM else OTHER_SECTIONS
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
        breakdowns={section: breakdown(truth, section) for section in sections},
        daily=daily_tallies(rows, start, end),
        pixel_import=pixel_import(pixel_counts or {}, start, end, pixel_event),
        destination=destination,
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


# Events Manager import ---------------------------------------------------------------------------
class PixelCsvError(ValueError):
    """A CSV that cannot be imported; ``problems`` names each column or line at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class PixelCsv:
    """A validated Events Manager export: one count per UTC day, days in order."""

    days: list[tuple[str, int]]
    #: data rows read (more than ``len(days)`` when a day was split over several rows)
    rows: int
    #: rows of other events, left out (only with an event column)
    skipped: int = 0


_THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+")
MAX_PROBLEMS = 20  # lines listed in one error; the rest are counted


def _delimiter(header: str) -> str:
    """``,``, ``;`` or tab: exports written for some locales use ``;`` (``,`` is their decimal
    separator), and a tab-separated "CSV" is common too; the header tells which."""
    return max((",", ";", "\t"), key=header.count) if header.strip() else ","


def _count(raw: str) -> int | None:
    value = raw.strip().replace("\u00a0", "").replace(" ", "")
    if _THOUSANDS.fullmatch(value):
        value = value.replace(",", "")
    return int(value) if value.isdigit() else None


def _day(raw: str, date_format: str | None) -> date | None:
    value = raw.strip()
    try:
        if date_format:
            return datetime.strptime(value, date_format).date()
        try:
            return date.fromisoformat(value)
        except ValueError:
            return datetime.fromisoformat(value).date()  # "2026-11-05 00:00:00"
    except ValueError:
        return None


def parse_pixel_csv(
    text: str,
    *,
    date_column: str = "date",
    count_column: str = "count",
    date_format: str | None = None,
    event_column: str | None = None,
    event: str | None = None,
) -> PixelCsv:
    """Validate a whole export before anything is imported (all or nothing).

    With ``event_column`` (an export listing several events), only the rows whose cell in
    that column is ``event`` are read; the others are counted in :attr:`PixelCsv.skipped`.

    Column names are matched case-insensitively (exports vary by locale, hence the options);
    dates are ISO (``2026-11-05``, or with a time) unless ``date_format`` (``strptime``) says
    otherwise; counts are non-negative integers (``1,234`` accepted). Several rows for one
    day (an export split by another dimension) are summed. Raises :class:`PixelCsvError`
    naming every missing column, or every bad line by its line number.
    """
    text = text.removeprefix("\ufeff")
    first_line = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first_line))
    header = next(reader, None)
    if not header or not any(cell.strip() for cell in header):
        raise PixelCsvError(["the file is empty (expected a header row naming the columns)"])
    names = [cell.strip().lower() for cell in header]
    found = ", ".join(cell.strip() for cell in header)
    missing = [
        f"{option}: no column {wanted!r} in the header (columns: {found})"
        for option, wanted in (
            ("--date-column", date_column),
            ("--count-column", count_column),
            *((("--event-column", event_column),) if event_column else ()),
        )
        if wanted.strip().lower() not in names
    ]
    if missing:
        raise PixelCsvError(missing)
    at_date = names.index(date_column.strip().lower())
    at_count = names.index(count_column.strip().lower())
    at_event = names.index(event_column.strip().lower()) if event_column else None
    problems: list[str] = []
    totals: dict[date, int] = {}
    rows = skipped = 0
    seen_events: set[str] = set()
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        line = reader.line_num
        if at_event is not None:
            cell = cells[at_event].strip() if at_event < len(cells) else ""
            seen_events.add(cell)
            if cell != (event or ""):
                skipped += 1
                continue
        rows += 1
        raw_day = cells[at_date] if at_date < len(cells) else ""
        raw_count = cells[at_count] if at_count < len(cells) else ""
        day = _day(raw_day, date_format)
        count = _count(raw_count)
        if day is None:
            expected = date_format or "YYYY-MM-DD"
            problems.append(f"line {line}: {date_column} {raw_day!r} is not a date ({expected})")
        if count is None:
            problems.append(
                f"line {line}: {count_column} {raw_count!r} is not a non-negative integer"
            )
        if day is not None and count is not None:
            totals[day] = totals.get(day, 0) + count
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + ([f"and {more} more"] if more > 0 else [])
        raise PixelCsvError(shown)
    if not totals and at_event is not None and skipped:
        found_events = ", ".join(sorted(seen_events)[:10])
        raise PixelCsvError(
            [f"--event: no row of {event!r} in column {event_column!r} (found: {found_events})"]
        )
    if not totals:
        raise PixelCsvError(["the file has a header but no data rows"])
    return PixelCsv([(d.isoformat(), totals[d]) for d in sorted(totals)], rows, skipped)


def from_store(
    store: Store,
    start: date,
    end: date,
    switch_on: date | None = None,
    *,
    pixel_event: str = PIXEL_EVENT,
    destination: str | None = None,
    property_id: int | None = None,
    scan: bool = False,
    max_stale: float = 0.0,
) -> GapReport:
    """The gap report read from a store: what the CLI, the page and its downloads all show.
    ``property_id``: one property's orders only (None: every property's, the host's view).

    ``destination``: the platform it is about (default, and ``tiktok``: TikTok's, the
    ledger's); any other destination's reads :func:`platform_rows` instead, and has no
    Events Manager import (the imported counts are TikTok's Pixel's). Raises KeyError
    naming the known destinations for an unknown one.

    How it reads: one partial per (property, UTC day of ``order_time``) from
    :func:`backchannel.rollups.partials` (:func:`day_partial`; a day that did not change is
    not read again), merged by :func:`merge_partials`; the imported Events Manager counts
    are read live (a small table). ``scan=True`` reads every row of the range instead (one
    query, :func:`scan_report`): the reference the merged partials are tested against on
    both backends. ``max_stale``: see
    :func:`backchannel.rollups.partials` (0, the default: exact)."""
    name = destination or LEDGER_PLATFORM
    target = get_destination(name)
    if scan:
        return scan_report(store, target, start, end, switch_on, property_id, pixel_event)
    parts = rollups.partials(
        store,
        partial_name(name),
        functools.partial(day_partial, destination=target),
        start,
        end,
        property_id,
        max_stale=max_stale,
    )
    counts = None
    if name == LEDGER_PLATFORM:
        counts = store.pixel_counts(start.isoformat(), end.isoformat(), pixel_event, property_id)
    merged = merge_partials(
        parts, start, end, switch_on, destination=name, pixel_counts=counts, pixel_event=pixel_event
    )
    stale = [part.computed_at for part in parts if part.stale]
    return replace(merged, as_of=min(stale)) if stale else merged


def scan_report(
    store: Store,
    destination: Destination,
    start: date,
    end: date,
    switch_on: date | None,
    property_id: int | None,
    pixel_event: str = PIXEL_EVENT,
) -> GapReport:
    """The gap report from every row of the range at once (``from_store(..., scan=True)``):
    the definition the per-day partials must reproduce exactly."""
    if destination.name != LEDGER_PLATFORM:
        return _platform_report(store, destination, start, end, switch_on, property_id)
    low, high = time_range(start, end)
    rows = store.gap_rows(low, high, property_id)
    counts = store.pixel_counts(start.isoformat(), end.isoformat(), pixel_event, property_id)
    report = gap_report(rows, start, end, switch_on, pixel_counts=counts, pixel_event=pixel_event)
    return replace(report, server_delivered_by=delivered_by(store, low, high, property_id))


def delivered_by(
    store: Store, low: int, high: int, property_id: int | None, *, scope: str = SCOPE
) -> dict[str, int]:
    """:data:`DELIVERED_BY_SQL` over [low, high): destination -> truth-set orders delivered
    there (destinations with none are absent). ``scope``: how one property is filtered
    (:data:`SCOPE`, or :data:`DAY_SCOPE` for one day)."""
    sql, params = DELIVERED_BY_SQL.format(scope=""), [low, high]
    if property_id is not None:
        sql = DELIVERED_BY_SQL.format(scope=scope)
        params.append(property_id)
    return {str(destination): int(n) for destination, n in store.read(sql, params)}


#: truth-set orders (TikTok-attributed, in the range) delivered, per destination; an order
#: counts once per destination however many rows it has (portable SQL, ``?`` placeholders)
DELIVERED_BY_SQL = """
SELECT x.destination, COUNT(DISTINCT o.id)
FROM orders o
JOIN conversions c
  ON c.property_id = o.property_id AND c.event = o.event AND c.event_id = o.event_id
JOIN outbox x ON x.conversion_id = c.id
WHERE o.order_time >= ? AND o.order_time < ? AND o.attributed_tiktok = 1
  AND x.status = 'delivered'{scope}
GROUP BY x.destination
ORDER BY x.destination
"""


# another destination's report -------------------------------------------------------------------
def attributed(
    destination: Destination,
    user: Mapping[str, Any],
    session_ids: Mapping[str, str | None],
    utm_sources: Iterable[str | None],
) -> bool:
    """Is an order the destination's? One of its click ids (``CLICK_IDS``) on the order's
    conversion (``user``: its stored form, stitching's copies of the landing session's ids
    included) or on its landing session (``session_ids``), or a ``utm_source`` of its
    landing (the session's, the conversion page's) among its ``UTM_SOURCES`` (any case).

    Why this rule: it is the ledger's TikTok rule (a click id or the platform's UTM on the
    landing) with each destination's own declarations in place of TikTok's."""
    for field_name in destination.CLICK_IDS:
        if identifiers.value(user, field_name) or session_ids.get(field_name):
            return True
    wanted = {s.lower() for s in destination.UTM_SOURCES}
    return any(s is not None and s.strip().lower() in wanted for s in utm_sources)


_FIELD = re.compile(r"[a-z][a-z0-9_]*")


def platform_sql(destination: Destination, *, scope: str = "") -> str:
    """The ledger orders of the range with what one destination's report needs (portable SQL,
    ``?`` placeholders: the Pixel's mirror name, the destination, the range, and the property
    with a ``scope``, :data:`SCOPE` or :data:`DAY_SCOPE`): whether a mirror row of its Pixel
    carries the order's id in its key, whether an outbox row of it is delivered, the landing
    session's browser facts, utm_source, ids and the click-id columns the destination's named
    click ids are kept in, and the conversion's stored payload. Everything joined is the
    order's own property's."""
    key = "o.event_id" if destination.DEDUP_ID == "event_id" else "o.order_id"
    columns = [f for f in destination.CLICK_IDS if f in identifiers.NAMED]
    if not all(_FIELD.fullmatch(c) for c in columns):  # declared names: never user input
        raise ValueError(f"{destination.name}: CLICK_IDS must be lower-case field names")
    extra = "".join(f", s.{c}" for c in columns)
    return f"""
SELECT o.order_time, o.event_id, o.session_id,
       CASE WHEN {key} IS NOT NULL AND EXISTS (
           SELECT 1 FROM browser_events b WHERE b.event_id = {key} AND b.platform = ?
              AND b.property_id = o.property_id
       ) THEN 1 ELSE 0 END,
       CASE WHEN o.event_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM conversions c JOIN outbox x ON x.conversion_id = c.id
           WHERE c.property_id = o.property_id AND c.event = o.event AND c.event_id = o.event_id
             AND x.destination = ? AND x.status = 'delivered'
       ) THEN 1 ELSE 0 END,
       CASE WHEN s.session_id IS NULL THEN 0 ELSE 1 END,
       s.browser, s.os, s.os_version, s.load_time_ms, s.utm_source, s.ids, c.payload,
       o.property_id{extra}
FROM orders o
LEFT JOIN landing_sessions s ON s.session_id = o.session_id AND s.property_id = o.property_id
LEFT JOIN conversions c
  ON c.property_id = o.property_id AND c.event = o.event AND c.event_id = o.event_id
WHERE o.order_time >= ? AND o.order_time < ?{scope}
ORDER BY o.order_time, o.source, o.order_id
"""  # noqa: S608 - interpolated: constants and declared field names checked above


def _json(value: Any) -> dict[str, Any]:
    """A JSON object column (TEXT or BLOB in SQLite, JSONB in PostgreSQL) as a dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    loaded = orjson.loads(value)
    return loaded if isinstance(loaded, dict) else {}


def _utm_source(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    found = dict(parse_qsl(urlsplit(url).query)).get("utm_source")
    return found or None


def platform_rows(
    store: Store,
    destination: Destination,
    low: int,
    high: int,
    property_id: int | None = None,
    *,
    scope: str = SCOPE,
) -> list[LedgerOrder]:
    """Every ledger order with ``low <= order_time < high`` (of one property, or of all when
    None), oldest first, as the report of ``destination`` reads it (one query,
    :func:`platform_sql`; ``scope``: how one property is filtered)."""
    named = [f for f in destination.CLICK_IDS if f in identifiers.NAMED]
    params: list[Any] = [destination.PIXEL_MIRROR, destination.name, low, high]
    if property_id is not None:
        params.append(property_id)
    out: list[LedgerOrder] = []
    sql = platform_sql(destination, scope="" if property_id is None else scope)
    for r in store.read(sql, params):
        payload = _json(r[12])
        user = payload.get("user")
        page = payload.get("page")
        session_ids: dict[str, str | None] = {
            **_json(r[11]),
            **dict(zip(named, r[14:], strict=True)),
        }
        out.append(
            LedgerOrder(
                order_time=int(r[0]),
                event_id=r[1],
                attributed=attributed(
                    destination,
                    user if isinstance(user, dict) else {},
                    session_ids,
                    (r[10], _utm_source(page.get("url") if isinstance(page, dict) else None)),
                ),
                pixel_fired=bool(r[3]),
                server_delivered=bool(r[4]),
                has_session=bool(r[5]),
                browser=r[6],
                os=r[7],
                os_version=r[8],
                load_time_ms=None if r[9] is None else int(r[9]),
                property_id=int(r[13]),
            )
        )
    return out


def _platform_report(
    store: Store,
    destination: Destination,
    start: date,
    end: date,
    switch_on: date | None,
    property_id: int | None,
) -> GapReport:
    low, high = time_range(start, end)
    rows = platform_rows(store, destination, low, high, property_id)
    return gap_report(rows, start, end, switch_on, destination=destination.name)


# per-day partials ------------------------------------------------------------------------------
# Why: at 1,000,000 orders a month, reading every row of 30 days is seconds per report. Each
# (property, UTC day of order_time) is summarized once (rollups.partials keeps it until the day
# changes) and the report merges 30 small summaries. Every figure but one is a sum over days
# (counts of orders; the cut at the switch-on date is a day boundary). The one that is not is
# the deduplicated union by (property, event_id): an event_id can have ledger rows on two days
# (two sources recording one order), and counting it once per day would count it twice. So a
# day's tally keeps ``local``, the number of its qualifying event_ids that have no ledger row on
# another day (they cannot meet another day's), and ``shared``, the list of the qualifying
# event_ids that do (found by a query at compute time); merged: sum(local) + |union(shared)|.

#: the shape of the partials below; a change of shape takes a new number (a new rollup name)
PARTIAL_VERSION = 1


def partial_name(destination: str) -> str:
    """The rollup name of one destination's gap partials, shape included ("gap.tiktok/1")."""
    return f"gap.{destination}/{PARTIAL_VERSION}"


#: the event_ids of one property's orders of [low, high) that also have a ledger row (of the
#: same property) outside it: the only ones two days' partials can both count. The day's
#: orders by orders_property_time, one probe of orders_event_id each
SHARED_SQL = """
SELECT DISTINCT o.event_id
FROM orders o
WHERE o.order_time >= ? AND o.order_time < ? AND o.property_id = ?
  AND o.event_id IS NOT NULL
  AND EXISTS (
      SELECT 1 FROM orders d
      WHERE d.property_id = o.property_id AND d.event_id = o.event_id
        AND (d.order_time < ? OR d.order_time >= ?)
  )
"""


def shared_event_ids(store: Store, property_id: int, low: int, high: int) -> set[str]:
    """:data:`SHARED_SQL`: the event_ids of the day's orders that another day also has."""
    return {str(r[0]) for r in store.read(SHARED_SQL, [low, high, property_id, low, high])}


class _DayTally:
    """A tally being counted over one day's rows (see :func:`summarize`)."""

    __slots__ = ("local", "orders", "pixel", "server", "shared")

    def __init__(self) -> None:
        self.orders = self.pixel = self.server = 0
        self.local: set[str] = set()
        self.shared: set[str] = set()

    def dump(self) -> list[Any]:
        """``[orders, pixel_only, server_delivered, local, [shared event_ids]]`` (JSON)."""
        return [self.orders, self.pixel, self.server, len(self.local), sorted(self.shared)]


def summarize(rows: Sequence[Row], sections: Sequence[str], shared: set[str]) -> dict[str, Any]:
    """The partial of one property's day from its rows (TikTok's :class:`GapRow` or another
    destination's :class:`LedgerOrder`): ``ledger_orders``; the truth set's ``total``; and
    ``sections``: section -> bucket -> tally, with the buckets of :data:`_BUCKETS` (the same
    functions the row scan groups by). ``shared``: :func:`shared_event_ids` of the day. A
    tally is ``[orders, pixel_only, server_delivered, local, [shared event_ids]]``, where the
    union of :func:`tally` is split as this section's header says."""
    total = _DayTally()
    groups: dict[str, dict[str, _DayTally]] = {section: {} for section in sections}
    bucket_of = [(_BUCKETS[section], groups[section]) for section in sections]
    for row in rows:
        if not _attributed(row):
            continue
        delivered = _delivered(row)
        pixel = row.pixel_fired
        counted = row.event_id if row.event_id is not None and (pixel or delivered) else None
        targets = [total]
        for key_of, buckets in bucket_of:
            key = key_of(row)
            if key is not None:
                target = buckets.get(key)
                if target is None:
                    target = buckets[key] = _DayTally()
                targets.append(target)
        for t in targets:
            t.orders += 1
            t.pixel += pixel
            t.server += delivered
            if counted is not None:
                (t.shared if counted in shared else t.local).add(counted)
    return {
        "ledger_orders": len(rows),
        "total": total.dump(),
        "sections": {
            section: {key: t.dump() for key, t in sorted(buckets.items())}
            for section, buckets in groups.items()
        },
    }


def day_partial(
    store: Store, property_id: int, low: int, high: int, *, destination: Destination
) -> dict[str, Any]:
    """The gap partial of one property's UTC day [low, high) for ``destination`` (the
    ``compute`` of :func:`backchannel.rollups.partials`): :func:`summarize` of the same rows
    the row scan reads (``Store.gap_rows``'s query for TikTok, :func:`platform_rows` for
    another; by the day's index, :data:`DAY_SCOPE`), and for TikTok ``delivered_by``
    (:func:`delivered_by` of the day)."""
    if destination.name == LEDGER_PLATFORM:
        gap_sql = GAP_ROWS_SQL.format(scope=DAY_SCOPE)  # Store.gap_rows's query, by the day
        rows: Sequence[Row] = [gap_row(r) for r in store.read(gap_sql, [low, high, property_id])]
        sections: Sequence[str] = SECTIONS
    else:
        rows = platform_rows(store, destination, low, high, property_id, scope=DAY_SCOPE)
        sections = OTHER_SECTIONS
    shared = shared_event_ids(store, property_id, low, high) if rows else set()
    partial = summarize(rows, sections, shared)
    if destination.name == LEDGER_PLATFORM:
        partial["delivered_by"] = (
            delivered_by(store, low, high, property_id, scope=DAY_SCOPE) if rows else {}
        )
    return partial


def _register() -> None:
    """Declare every destination's compute to the rollups, so that the background refresh
    (serve's primary process) keeps the gap partials a page read fresh."""
    for name, destination in DESTINATIONS.items():
        rollups.register(
            partial_name(name),
            functools.partial(day_partial, destination=destination),
            warm_for=functools.partial(_connected, destination=name),
        )


def _connected(store: Store, destination: str) -> set[int]:
    """The properties with a connection to ``destination``: whose gap report a page shows."""
    return {c.property_id for c in store.list_connections() if c.destination == destination}


_register()


class _Merged:
    """Day tallies being merged into one :class:`Tally` (shared ids are per property)."""

    __slots__ = ("local", "orders", "pixel", "server", "shared")

    def __init__(self) -> None:
        self.orders = self.pixel = self.server = self.local = 0
        self.shared: set[tuple[int, str]] = set()

    def add(self, property_id: int, part: Sequence[Any]) -> None:
        orders, pixel, server, local, shared = part
        self.orders += orders
        self.pixel += pixel
        self.server += server
        self.local += local
        self.shared.update((property_id, event_id) for event_id in shared)

    def tally(self) -> Tally:
        return Tally(self.orders, self.pixel, self.server, self.local + len(self.shared))


def merge_partials(
    parts: Iterable[rollups.DayPartial],
    start: date,
    end: date,
    switch_on: date | None = None,
    *,
    destination: str = LEDGER_PLATFORM,
    pixel_counts: dict[str, int] | None = None,
    pixel_event: str = PIXEL_EVENT,
) -> GapReport:
    """The report of [start, end] from its days' partials (:func:`day_partial`, of one
    property or of several): what :func:`gap_report` makes of the same rows. The total, the
    breakdowns and before/after switch-on (a day boundary) merge every day's tallies; each
    day of ``daily`` merges that day's (every property's)."""
    sections = SECTIONS if destination == LEDGER_PLATFORM else OTHER_SECTIONS
    ledger_orders = 0
    total = _Merged()
    before = _Merged() if switch_on is not None else None
    after = _Merged() if switch_on is not None else None
    by_day = {day: _Merged() for day in days(start, end)}
    breakdowns: dict[str, dict[str, _Merged]] = {section: {} for section in sections}
    delivered: dict[str, int] = {}
    for part in parts:
        data, pid = part.data, part.property_id
        ledger_orders += data["ledger_orders"]
        total.add(pid, data["total"])
        by_day[part.day].add(pid, data["total"])
        if switch_on is not None and before is not None and after is not None:
            (before if part.day < switch_on else after).add(pid, data["total"])
        for section in sections:
            merged = breakdowns[section]
            for key, t in data["sections"][section].items():
                if key not in merged:
                    merged[key] = _Merged()
                merged[key].add(pid, t)
        for name, n in data.get("delivered_by", {}).items():
            delivered[name] = delivered.get(name, 0) + n
    return GapReport(
        start=start,
        end=end,
        switch_on=switch_on,
        ledger_orders=ledger_orders,
        total=total.tally(),
        before=before.tally() if before is not None else None,
        after=after.tally() if after is not None else None,
        breakdowns={
            section: {key: m.tally() for key, m in sorted(merged.items())}
            for section, merged in breakdowns.items()
        },
        daily=[(day, m.tally()) for day, m in by_day.items()],
        pixel_import=pixel_import(pixel_counts or {}, start, end, pixel_event),
        server_delivered_by=dict(sorted(delivered.items())),
        destination=destination,
    )
