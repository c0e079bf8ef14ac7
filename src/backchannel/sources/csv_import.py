"""CSV backfill: orders exported from any commerce platform, validated before anything is stored.

Why validate everything first: an import is a one-off operation a person watches. Telling them
"line 7: value: must not be negative; line 912: currency: unknown currency 'US'" and storing
nothing lets them fix the file and run it again; storing 910 rows and stopping would leave them
guessing which half is in. So :func:`plan` reads the whole file, normalizes every row exactly as
``POST /v1/events`` would, and returns either the conversions or every error with its line.

Writing (``backchannel import``) happens only for a file without errors, in chunks of
:data:`CHUNK` rows, each chunk one transaction holding its conversions, outbox rows and ledger
rows. A run that is interrupted part-way (Ctrl-C, a crash) has stored whole chunks only and says
so; running the same command again completes it, because every row is idempotent: the order id
gives the event_id (``{event}-{order_id}``) and the ledger is unique per (source, order id).

Columns: a header row is required. A column is used when its header (any case, spaces or
underscores) names a field of :data:`FIELDS` or one of :data:`ALIASES`; ``--map column=field``
adds or overrides. Rows repeating an order id (line-item exports) are merged when they agree
on the order's value and currency, and refused when they do not.

A ``lead_id`` column (and ``lead_event_source``, the system the lead event comes from) gives
the conversion its ``lead``: the ad platform's lead id, for lead quality optimisation.

A ``session_id`` column names the row's landing session (bc.js's ``_bc_sid``): the sessions
named are read with one lookup per :data:`CHUNK` ids (:func:`named_sessions`); their ttclid and
``utm_source`` count as ``landing_session`` evidence in the ledger, after the row's own, and
the conversion is stitched from them as an API conversion naming its session would be (the
identifiers the row lacks — ttclid, _ttp, fbp/fbc, IP, user agent, landing URL — filled in,
with their provenance stored).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backchannel.events import Conversion, normalize
from backchannel.notes import InvalidConversion, Note
from backchannel.sources.common import amount, currency
from backchannel.sources.ledger import Landing, Signal, session_signals, url_signals
from backchannel.store.base import SessionMatch

CHUNK = 1000  # rows per transaction when writing

#: canonical field -> where it goes in the canonical conversion (``user.x`` or top level)
FIELDS: dict[str, str] = {
    "order_id": "order_id",
    "event_time": "event_time",
    "value": "value",
    "currency": "currency",
    "event": "event",
    "email": "user.email",
    "phone": "user.phone",
    "external_id": "user.external_id",
    "first_name": "user.first_name",
    "last_name": "user.last_name",
    "zip": "user.zip",
    "city": "user.city",
    "state": "user.state",
    "country": "user.country",
    "ip": "user.ip",
    "user_agent": "user.user_agent",
    "ttclid": "user.ttclid",
    "ttp": "user.ttp",
    "fbclid": "user.fbclid",
    "fbc": "user.fbc",
    "fbp": "user.fbp",
    "landing_site": "page.url",
    "utm_source": "utm_source",
    "session_id": "session_id",
    # the ad platform's lead id (TikTok's CRM CSV names the column lead_id) and the system
    # the lead event comes from
    "lead_id": "lead.id",
    "lead_event_source": "lead.source",
}

#: common export headers (normalized: lowercase, spaces as underscores) -> field
ALIASES: dict[str, str] = {
    "id": "order_id",
    "order": "order_id",
    "order_number": "order_id",
    "name": "order_id",  # Shopify's order export: "Name" is "#1001"
    "total": "value",
    "total_price": "value",
    "amount": "value",
    "created_at": "event_time",
    "paid_at": "event_time",
    "date": "event_time",
    "time": "event_time",
    "order_date": "event_time",
    "email_address": "email",
    "phone_number": "phone",
    "billing_zip": "zip",
    "billing_city": "city",
    "billing_province": "state",
    "billing_country": "country",
    "landing_page": "landing_site",
    "landing_url": "landing_site",
    "url": "landing_site",
    "browser_ip": "ip",
    "tiktok_lead_id": "lead_id",
    "lead_source": "lead_event_source",
}


class MappingError(ValueError):
    """A ``--map`` or header problem: nothing can be read (not a row error)."""


@dataclass(slots=True)
class Row:
    line: int
    conversion: Conversion
    warnings: list[Note]
    signals: list[Signal]


@dataclass(slots=True)
class Plan:
    """The outcome of reading a file: good rows, or the errors (``line N: path: reason``)."""

    rows: list[Row] = field(default_factory=list)
    errors: list[tuple[int, Note]] = field(default_factory=list)
    #: rows merged into an earlier row of the same order (line-item exports)
    merged: int = 0
    total: int = 0
    columns: dict[str, str] = field(default_factory=dict)

    def error_lines(self) -> list[str]:
        return [f"line {line}: {note.path}: {note.reason}" for line, note in self.errors]


def _key(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.strip().lower())


def parse_maps(maps: Iterable[str]) -> dict[str, str]:
    """``["Order Total=value", ...]`` -> ``{"Order Total": "value"}``; raises MappingError."""
    result: dict[str, str] = {}
    for item in maps:
        column, sep, target = item.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise MappingError(f"--map {item!r}: write it as COLUMN=FIELD")
        name = target.strip().lower()
        if name not in FIELDS:
            raise MappingError(
                f"--map {item!r}: unknown field {name!r} (one of {', '.join(sorted(FIELDS))})"
            )
        result[column.strip()] = name
    return result


def columns_for(header: list[str], maps: dict[str, str]) -> dict[str, str]:
    """Header column -> field; raises MappingError for unknown ``--map`` columns or a missing
    required field."""
    by_key = {_key(h): h for h in header}
    chosen: dict[str, str] = {}
    for column, target in maps.items():
        actual = column if column in header else by_key.get(_key(column))
        if actual is None:
            raise MappingError(f"--map {column}={target}: no column {column!r} in the header")
        chosen[actual] = target
    taken = set(chosen.values())
    for h in header:
        if h in chosen:
            continue
        key = _key(h)
        found = key if key in FIELDS else ALIASES.get(key)
        if found is not None and found not in taken:
            chosen[h] = found
            taken.add(found)
    missing = [f for f in ("order_id", "value", "currency", "event_time") if f not in taken]
    if missing:
        raise MappingError(
            f"no column for {', '.join(missing)}; name one with --map COLUMN=FIELD"
            f" (header: {', '.join(header)[:300]})"
        )
    return chosen


_TZ_SPACE = re.compile(r"\s+([+-]\d{2}:?\d{2})$")


def _time_text(raw: str) -> str:
    """Export spellings of a time made ISO: ``2026-11-20 10:00:00 -0500`` -> ``...-05:00``."""
    text = _TZ_SPACE.sub(r"\1", raw.strip())
    match = re.search(r"([+-])(\d{2})(\d{2})$", text)
    if match and ":" in text[:-5]:
        text = text[: match.start()] + f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    return text


def _row_input(
    values: dict[str, str], event: str, line: int, errors: list[tuple[int, Note]]
) -> tuple[dict[str, Any], list[Signal]] | None:
    notes: list[Note] = []
    order_id = values.get("order_id", "").strip().lstrip("#") or None
    if order_id is None:
        notes.append(Note("order_id", "required"))
    value = amount(values.get("value"), "value", notes)
    code = currency(values.get("currency"), "currency", notes)
    when = values.get("event_time", "").strip()
    if not when:
        notes.append(Note("event_time", "required: when the order was placed"))
    if notes:
        errors.extend((line, n) for n in notes)
        return None
    item: dict[str, Any] = {
        "event": values.get("event", "").strip() or event,
        "order_id": order_id,
        "value": value,
        "currency": code,
        "event_time": _time_text(when),
    }
    user: dict[str, Any] = {}
    lead: dict[str, str] = {}
    signals: list[Signal] = []
    for name, target in FIELDS.items():
        raw = values.get(name, "").strip()
        if not raw:
            continue
        if target.startswith("user."):
            user[target[5:]] = raw
        elif target.startswith("lead."):
            lead[target[5:]] = raw
        elif target == "page.url":
            if raw.startswith(("http://", "https://")):
                item["page"] = {"url": raw}
            signals.extend(url_signals(raw, "landing_site"))
        elif target == "utm_source":
            signals.append(Signal("utm_source", raw, "column"))
        elif target == "session_id":
            item["session_id"] = raw[:128]
    if user.get("ttclid"):
        signals.append(Signal("ttclid", user["ttclid"], "column"))
    if user:
        item["user"] = user
    if lead:  # a lead_event_source without a lead_id: normalize names lead.id as required
        item["lead"] = lead
    return item, signals


def plan(
    text: str,
    *,
    maps: dict[str, str] | None = None,
    event: str = "CompletePayment",
    now: float,
    default_region: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Plan:
    """Read and validate a whole CSV text; raises MappingError when it cannot be read at all."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise MappingError("the file is empty (a header row is required)") from None
    except csv.Error as exc:
        raise MappingError(f"line 1: not CSV ({exc})") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise MappingError("line 1: the header row is empty")
    columns = columns_for(header, maps or {})
    result = Plan(columns=columns)
    first_seen: dict[str, Row] = {}
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append((start, Note("(row)", f"not CSV ({exc})")))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # blank lines are not rows
        result.total += 1
        if progress is not None:
            progress(1)
        if len(cells) > len(header):
            result.errors.append(
                (line, Note("(row)", f"{len(cells)} cells but the header has {len(header)}"))
            )
            continue
        values = {columns[h]: cell for h, cell in zip(header, cells, strict=False) if h in columns}
        made = _row_input(values, event, line, result.errors)
        if made is None:
            continue
        item, signals = made
        try:
            normalized = normalize(item, now=now, default_region=default_region)
        except InvalidConversion as exc:
            result.errors.extend((line, n) for n in exc.notes)
            continue
        conversion = normalized.conversion
        assert conversion.order_id is not None
        earlier = first_seen.get(conversion.order_id)
        if earlier is not None:
            before = earlier.conversion
            if (before.value, before.currency) != (conversion.value, conversion.currency):
                result.errors.append(
                    (
                        line,
                        Note(
                            "order_id",
                            f"order {conversion.order_id} repeated with another value or"
                            f" currency (first on line {earlier.line})",
                        ),
                    )
                )
            else:
                result.merged += 1
            continue
        row = Row(line, conversion, normalized.warnings, signals)
        first_seen[conversion.order_id] = row
        result.rows.append(row)
    return result


def named_sessions(
    rows: Sequence[Row], find: Callable[[list[str]], Iterable[SessionMatch]]
) -> list[SessionMatch]:
    """The landing sessions named by the rows' ``session_id`` column.

    ``find`` is ``Store.find_sessions`` by session ids, called once per :data:`CHUNK` ids (no
    call when no row names a session). A session id nobody recorded finds nothing. Only
    sessions named explicitly are returned: an import never guesses by ttclid or email.
    """
    ids = sorted({row.conversion.session_id for row in rows if row.conversion.session_id})
    found: list[SessionMatch] = []
    for start in range(0, len(ids), CHUNK):
        found.extend(m for m in find(ids[start : start + CHUNK]) if m.kind == "session_id")
    return found


def landings(matches: Iterable[SessionMatch]) -> dict[str, Landing]:
    """The named sessions as ledger evidence (their ttclid and utm_source), by session id."""
    return {
        m.session.session_id: Landing(
            m.session.session_id, "session_id", tuple(session_signals(m.session))
        )
        for m in matches
    }
