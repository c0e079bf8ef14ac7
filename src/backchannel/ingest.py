"""Accepting conversions: parse, validate, normalize, then one durable write.

Why separate from the web layer: the HTTP API, the webhook sources and the CSV import all end
here, and the rule "answer only after the conversion and its outbox rows are committed" must
hold for each of them without being written three times.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from backchannel import stitch
from backchannel.destinations import DESTINATIONS
from backchannel.events import DEFAULT_STRIP, Conversion, normalize
from backchannel.notes import InvalidConversion, Note
from backchannel.sources.ledger import Landing
from backchannel.sources.ledger import landing as session_landing
from backchannel.store.base import DEFAULT_PROPERTY, ConnectionKey, LedgerEntry, NewConversion
from backchannel.store.runner import AsyncStore

if TYPE_CHECKING:
    from backchannel.metrics import Metrics
    from backchannel.routing import Routes

MAX_BATCH = 1000  # events per request, the same as both platforms' request limit

#: sources and ledger: (input index, normalized conversion, its stitched landing session's
#: signals or None) -> the order-ledger row, if an order
LedgerHook = Callable[[int, Conversion, Landing | None], LedgerEntry | None]


class BadRequest(ValueError):
    """The request as a whole is unusable (not JSON, wrong shape, too many events)."""

    def __init__(self, notes: list[Note], status: int = 422, code: str = "bad_request") -> None:
        self.notes = notes
        self.status = status
        self.code = code
        super().__init__("; ".join(f"{n.path}: {n.reason}" for n in notes))


#: why a conversion naming another property's landing session is refused (403)
FOREIGN_SESSION = (
    "names a landing session of another property; this key (or webhook) writes into its own"
    " property only: use that property's key"
)


@dataclass(slots=True)
class EventResult:
    index: int
    status: str  # accepted | duplicate | rejected
    event_id: str | None = None
    event: str | None = None
    warnings: list[Note] = field(default_factory=list)
    errors: list[Note] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event is not None:
            out["event"] = self.event
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.warnings:
            out["warnings"] = [n.as_dict() for n in self.warnings]
        if self.errors:
            out["errors"] = [n.as_dict() for n in self.errors]
        return out


@dataclass(slots=True)
class IngestResult:
    results: list[EventResult]

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r.status == "accepted")

    @property
    def duplicates(self) -> int:
        return sum(1 for r in self.results if r.status == "duplicate")

    @property
    def rejected(self) -> int:
        return sum(1 for r in self.results if r.status == "rejected")

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "events": [r.as_dict() for r in self.results],
        }


def parse_body(raw: bytes) -> list[Any]:
    """The events of a request body: one conversion object, or ``{"events": [...]}``."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest([Note("(body)", f"not valid JSON: {exc}")]) from None
    if not isinstance(document, dict):
        raise BadRequest(
            [Note("(body)", 'must be a JSON object (a conversion, or {"events": [...]})')]
        )
    if "events" in document and "event" not in document:
        events = document["events"]
        extra = sorted(set(document) - {"events"})
        if extra:
            raise BadRequest([Note(extra[0], 'unknown field (a batch holds only "events")')])
        if not isinstance(events, list):
            raise BadRequest([Note("events", "must be an array of conversions")])
        if not events:
            raise BadRequest([Note("events", "must hold at least one conversion")])
        if len(events) > MAX_BATCH:
            raise BadRequest(
                [Note("events", f"at most {MAX_BATCH} conversions per request, got {len(events)}")],
                status=413,
            )
        return events
    return [document]


def prepare(
    items: list[Any],
    *,
    now: float,
    default_region: str | None,
    strip_params: frozenset[str] = DEFAULT_STRIP,
) -> tuple[list[EventResult], list[tuple[int, Conversion]]]:
    """Normalize every item; results for all, conversions for the valid ones."""
    results: list[EventResult] = []
    good: list[tuple[int, Conversion]] = []
    for index, item in enumerate(items):
        try:
            normalized = normalize(
                item, now=now, default_region=default_region, strip_params=strip_params
            )
        except InvalidConversion as exc:
            results.append(EventResult(index, "rejected", errors=exc.notes))
            continue
        c = normalized.conversion
        results.append(
            EventResult(index, "accepted", c.event_id, c.event, warnings=normalized.warnings)
        )
        good.append((index, c))
    return results, good


_NO_WARNINGS = b"[]"
#: the stored payload's writer: msgspec writes the Conversion dataclass in ~3 µs where
#: orjson took ~6; the JSON is the same but for exponents (``1e16``, not ``1e+16``), which
#: read back as the same numbers (tests/core/test_payload_json.py)
_PAYLOAD = msgspec.json.Encoder()
#: the warning of a conversion that event routing sends nowhere (it is still stored)
UNROUTED = "routed to no destination (see Connections)"


def to_record(
    conversion: Conversion,
    warnings: list[Note],
    origin: str,
    destinations: tuple[str, ...] | tuple[tuple[ConnectionKey, str], ...],
    source_ids: Mapping[str, Mapping[str, str]] | None = None,
    property_id: int = DEFAULT_PROPERTY,
) -> NewConversion:
    """The store row of ``conversion`` with an outbox row per connection.

    ``destinations`` are ``(connection, destination)`` pairs (event routing's choice: a
    connection id, or a label of ``property_id``), or bare destination names, each meaning the
    property's connection labelled with it (its first of that destination).

    A connection that cannot take the conversion as configured (``unsendable``: TikTok
    without the event source id of a non-web source; ``source_ids`` is the property's
    ``Settings.source_ids``) gets a dead row with the reason, and a warning saying so in
    ``warnings`` (see tiktok.missing_source_id for why this and not a 422 or a later
    failure).
    """
    pairs: list[tuple[ConnectionKey, str]] = [
        (target, target) if isinstance(target, str) else target for target in destinations
    ]
    refused: dict[ConnectionKey, str] = {}
    said: set[str] = set()
    for key, name in pairs:
        destination = DESTINATIONS[name]
        reason = destination.unsendable(conversion, (source_ids or {}).get(name, {}))
        if reason is not None:
            refused[key] = reason
            if name not in said:
                said.add(name)
                warnings.append(Note("source", f"not sent to {destination.display_name}: {reason}"))
    return NewConversion(
        event=conversion.event,
        event_id=conversion.event_id,
        event_time=conversion.event_time,
        order_id=conversion.order_id,
        session_id=conversion.session_id,
        test_event_code=conversion.test_event_code,
        payload=_PAYLOAD.encode(conversion),
        warnings=orjson.dumps([n.as_dict() for n in warnings]) if warnings else _NO_WARNINGS,
        origin=origin,
        connections=tuple(key for key, _ in pairs if key not in refused),
        refused=refused,
        property_id=property_id,
    )


async def ingest(
    items: list[Any],
    store: AsyncStore,
    *,
    now: float,
    default_region: str | None,
    destinations: tuple[str, ...],
    partial: bool = False,
    origin: str = "api",
    ledger: LedgerHook | None = None,
    metrics: Metrics | None = None,
    stitch_window: float | None = stitch.DEFAULT_WINDOW,
    routes: Routes | None = None,
    strip_params: frozenset[str] = DEFAULT_STRIP,
    source_ids: Mapping[str, Mapping[str, str]] | None = None,
    property_id: int = DEFAULT_PROPERTY,
) -> IngestResult:
    """Validate all, then store the good ones in one commit (or none, unless ``partial``).

    Raises :class:`BadRequest` when nothing can be accepted, with status 403 when an event
    names a landing session of another property than ``property_id`` (the key's): nothing of
    the request is stored. A conversion whose (property, event, event_id) is already stored
    comes back as ``duplicate`` and is not enqueued again.

    ``routes`` (event routing, :mod:`backchannel.routing`): each conversion gets outbox rows
    only for the property's connections its event is routed to (one dict lookup per event);
    one routed nowhere is still stored (and ledgered) and carries a warning. None: the
    property's first connection of each destination in ``destinations``.
    """
    results, good = prepare(
        items, now=now, default_region=default_region, strip_params=strip_params
    )
    rejected = [r for r in results if r.status == "rejected"]
    if rejected and (not partial or not good):
        if metrics is not None:
            metrics.count_ingest(origin, 0, 0, len(rejected))
        raise InvalidBatch(results)
    # browser leg: join landing sessions before anything is stored (stitch_window=None: off)
    provenance = (
        await _stitch(store, good, stitch_window, property_id, batch=len(items) > 1)
        if stitch_window is not None
        else []
    )
    # consent: an opted-out conversion is stored (and ledgered) but gets no outbox rows
    if routes is not None:  # event routing: only the destinations this event is routed to
        if routes.always != tuple(destinations):
            raise ValueError("routes were built for other destinations")
        await routes.ensure_fresh(store)
    records = []
    for index, c in good:
        targets: tuple[tuple[ConnectionKey, str], ...] = ()
        if not c.opt_out:
            if routes is None:
                targets = tuple((name, name) for name in destinations)
            else:
                targets = tuple(
                    (t.connection_id, t.destination)
                    for t in routes.connections_for(c.event, property_id)
                )
            warnings = results[index].warnings
            if not targets:
                warnings.append(Note("event", UNROUTED))
            for name in dict.fromkeys(d for _, d in targets):  # what a platform will refuse:
                warnings.extend(DESTINATIONS[name].refusals(c))  # said now, not only later
        records.append(
            to_record(c, results[index].warnings, origin, targets, source_ids, property_id)
        )
    for record, origin_of in zip(records, provenance, strict=False):
        record.stitched = origin_of.to_json()
    if ledger is not None:  # sources and ledger: the order row commits with its conversion
        # after stitching: the joined session's signals count too, read from the rows
        # stitching already fetched (no extra query)
        landings: list[Landing | None] = [session_landing(p) for p in provenance]
        if not landings:  # stitching off
            landings = [None] * len(good)
        for (index, c), record, landing in zip(good, records, landings, strict=True):
            entry = ledger(index, c, landing)
            if entry is not None:
                entry.property_id = property_id  # the order is the conversion's property's
            record.ledger = entry
    fresh = await store.ingest(records)
    for (index, _), is_new in zip(good, fresh, strict=True):
        if not is_new:
            results[index].status = "duplicate"
    if provenance:
        await _remember_emails(store, good, provenance, now)
    outcome = IngestResult(results)
    if metrics is not None:
        metrics.count_ingest(origin, outcome.accepted, outcome.duplicates, len(rejected))
    return outcome


class InvalidBatch(ValueError):
    """Some events are invalid and the caller did not ask for partial acceptance."""

    def __init__(self, results: list[EventResult]) -> None:
        self.results = results
        super().__init__(f"{sum(r.status == 'rejected' for r in results)} invalid event(s)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": "invalid_events",
            "message": "no event was accepted: fix the listed fields, or send ?partial=true"
            " to accept the valid ones",
            "events": [
                {"index": r.index, "errors": [n.as_dict() for n in r.errors]}
                for r in self.results
                if r.status == "rejected"
            ],
        }


# -- browser leg: stitching -------------------------------------------------------------------
log = logging.getLogger("backchannel.ingest")


async def _stitch(
    store: AsyncStore,
    good: list[tuple[int, Conversion]],
    window: float,
    property_id: int,
    *,
    batch: bool,
) -> list[stitch.Provenance]:
    """One batched session lookup for the whole request, then the pure join (stitch.py).

    Never fails the ingest, except when an event names a landing session of another property
    (:class:`BadRequest`, 403): a lookup error is logged and the conversions go as they came.
    """
    conversions = [c for _, c in good]
    keys = stitch.lookup_keys(conversions)
    matches = []
    if keys:
        try:
            matches = await store.run(
                functools.partial(
                    store.store.find_sessions,
                    session_ids=keys.session_ids,
                    ttclids=keys.ttclids,
                    email_hashes=keys.email_hashes,
                    property_id=property_id,
                )
            )
        except Exception:
            log.exception("session lookup failed; conversions stored without stitching")
    foreign = {
        m.key for m in matches if m.kind == "session_id" and m.session.property_id != property_id
    }
    if foreign:
        raise BadRequest(
            [
                Note(f"events[{index}].session_id" if batch else "session_id", FOREIGN_SESSION)
                for index, c in good
                if c.session_id in foreign
            ],
            status=403,
            code="forbidden",
        )
    return stitch.stitch_all(conversions, matches, window=window)


async def _remember_emails(
    store: AsyncStore,
    good: list[tuple[int, Conversion]],
    provenance: list[stitch.Provenance],
    now: float,
) -> None:
    """Email hashes of conversions that named their session, for later email-only stitching.
    After the commit and best effort: the conversions are already safe."""
    pairs = stitch.emails_to_attach([c for _, c in good], provenance)
    if not pairs:
        return
    try:
        await store.run(store.store.attach_emails, pairs, now)
    except Exception:
        log.exception("could not remember the email hashes of stitched sessions")
