"""Fire a test order: one conversion with a Test Events code, through the real pipeline.

Why through :func:`backchannel.ingest.ingest` and the running worker rather than a direct
request: the point is to check the installation as it runs — normalization, hashing, event
routing, the worker, the token and the platform's answer — the check users otherwise do by
hand in Events Manager's Test Events tab. A test order never enters the order ledger (``ledger
=None``), so it is never in the gap report.

**The code.** A conversion is a *test* when its ``test_event_code`` is set. Resolution, first
that applies: the code given (``--code``, or the file's own ``test_event_code``); a code set
on a connection; :data:`SANDBOX_CODE` when every destination is in sandbox mode (no token);
else :class:`FireError` naming ``test_event_code``. Delivery then sends each
destination's OWN connection code when it has one (TikTok's code to TikTok, Meta's to Meta;
see ``Target.test_event_code``), so one test order can be checked on both platforms.

**What is recorded.** For test batches only, the worker keeps each row's event as sent
(``outbox.sent_body``) and the platform's answer (``outbox.last_response``);
:func:`load_view` turns them into the side-by-side view of the dashboard and the CLI.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from backchannel import stitch
from backchannel.destinations import DESTINATIONS
from backchannel.ingest import BadRequest, InvalidBatch, ingest
from backchannel.routing import Routes
from backchannel.store.base import DEAD, DEFAULT_PROPERTY, DELIVERED, EXPIRED, Connection, Store
from backchannel.store.runner import AsyncStore

SANDBOX_CODE = "BACKCHANNEL_TEST"
FINAL = frozenset({DELIVERED, DEAD, EXPIRED})
NOT_ROUTED = "not routed"
#: a user agent that says what it is (Meta requires one on website events)
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) BackchannelTestOrder/1.0"
POLL = 0.2  # seconds between looks at the outbox while waiting
#: where each platform's sent event keeps its identifiers (each destination declares it)
IDENTIFIER_SECTIONS = {name: d.IDENTIFIER_SECTION for name, d in DESTINATIONS.items()}


class FireError(ValueError):
    """A test order that cannot be fired; the message names the field and the reason."""


def sample_order(code: str) -> dict[str, Any]:
    """The built-in order: clearly fake identifiers, order_id ``test-<random>``, 1.00 USD.

    No IP address: the only one at hand is a server's, which is not a visitor's address
    (ingest drops non-public addresses with a warning, and a public one here would be
    someone else's). The user agent names itself.
    """
    order_id = "test-" + secrets.token_hex(6)
    return {
        "event": "CompletePayment",
        "order_id": order_id,
        "value": 1.00,
        "currency": "USD",
        "contents": [{"id": "BACKCHANNEL-TEST", "quantity": 1, "price": 1.00}],
        "user": {
            "email": "test@example.com",
            "phone": "+1 202 555 0143",  # 555-01xx: reserved for fiction
            "external_id": order_id,
            "user_agent": USER_AGENT,
            # GA4 needs a client id and Google Ads a click id: clearly fake ones, which
            # their validation endpoints judge (a test never reaches their reports)
            "ga_client_id": "1000000000.1000000000",
            "gclid": "BACKCHANNEL-TEST-GCLID",
        },
        "page": {"url": "https://backchannel.invalid/test-order"},
        "test_event_code": code,
    }


def is_sandbox(connection: Connection | None) -> bool:
    """No stored token: the destination sends to the sandbox (as :class:`Targets` decides)."""
    return connection is None or not connection.token_encrypted


def resolve_code(
    given: str | None,
    connections: Mapping[str, Connection | None],
    destinations: Sequence[str],
) -> str:
    """The conversion's test_event_code (see the module docstring for the order).

    ``destinations`` name the connections that will get the test order (a destination's
    name, or a connection's label), ``connections`` what is stored under each name."""
    if given is not None:
        code = given.strip()
        if not code or len(code) > 64:
            raise FireError("test_event_code: must be 1 to 64 characters")
        return code

    def takes_codes(name: str) -> bool:
        found = connections.get(name)
        destination = DESTINATIONS.get(found.destination if found is not None else name)
        return destination is not None and destination.TEST_EVENT_CODES

    # a platform without Test Events codes validates test events elsewhere: it needs none
    coded = [d for d in destinations if takes_codes(d)]
    own = {d: c.test_event_code for d in coded if (c := connections.get(d)) is not None}
    found = [code for code in own.values() if code]
    live_without = [d for d in coded if not is_sandbox(connections.get(d)) and not own.get(d)]
    if live_without:
        raise FireError(
            f"test_event_code: {live_without[0]} is live and has none; set it on the"
            " Connections page (Events Manager → Test Events shows it) or pass --code"
        )
    if found:
        return found[0]
    return SANDBOX_CODE


def prepare_item(item: Any, code: str, *, override: bool) -> dict[str, Any]:
    """A given conversion made a test: ``code`` unless it carries its own (and not override)."""
    if not isinstance(item, dict):
        raise FireError("(body): a test order is one conversion (a JSON object)")
    out = dict(item)
    if override or not out.get("test_event_code"):
        out["test_event_code"] = code
    return out


@dataclass(slots=True)
class Fired:
    conversion_id: int
    event: str
    event_id: str
    test_event_code: str
    warnings: list[dict[str, Any]] = field(default_factory=list)


async def fire(
    item: dict[str, Any],
    runner: AsyncStore,
    *,
    now: float,
    default_region: str | None,
    destinations: tuple[str, ...],
    routes: Routes | None,
    stitch_window: float | None = stitch.DEFAULT_WINDOW,
    property_id: int = DEFAULT_PROPERTY,
) -> Fired:
    """Ingest one test conversion of ``property_id`` (never into the ledger); its stored id
    and event."""
    try:
        result = await ingest(
            [item],
            runner,
            now=now,
            default_region=default_region,
            destinations=destinations,
            origin="test",
            ledger=None,  # a test order is never an order of the ledger / gap report
            routes=routes,
            stitch_window=stitch_window,
            property_id=property_id,
        )
    except BadRequest as exc:
        raise FireError("; ".join(f"{n.path}: {n.reason}" for n in exc.notes)) from None
    except InvalidBatch as exc:
        notes = [n for r in exc.results for n in r.errors]
        raise FireError("; ".join(f"{n.path}: {n.reason}" for n in notes)) from None
    (one,) = result.results
    assert one.event is not None
    assert one.event_id is not None
    if one.status == "duplicate":
        raise FireError(
            f"event_id: {one.event_id!r} is already stored; a test order needs a new"
            " order_id or event_id"
        )
    rows = await runner.run(
        runner.store.read,
        "SELECT id, test_event_code FROM conversions"
        " WHERE property_id = ? AND event = ? AND event_id = ?",
        (property_id, one.event, one.event_id),
    )
    conversion_id, code = rows[0]
    return Fired(
        int(conversion_id), one.event, one.event_id, str(code), [n.as_dict() for n in one.warnings]
    )


def statuses(store: Store, conversion_id: int) -> dict[int, str]:
    """Per outbox row (one per connection) of the conversion: its state."""
    rows = store.read("SELECT id, status FROM outbox WHERE conversion_id = ?", (conversion_id,))
    return {int(i): str(s) for i, s in rows}


def wait(
    store: Store,
    conversion_id: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll until every outbox row of the conversion is final; False on timeout."""
    deadline = clock() + timeout
    while True:
        found = statuses(store, conversion_id)
        if all(s in FINAL for s in found.values()):
            return True
        if clock() >= deadline:
            return False
        sleep(POLL)


# -- the side-by-side view ---------------------------------------------------------------------
@dataclass(slots=True)
class Identifier:
    key: str
    shown: str


@dataclass(slots=True)
class DestinationView:
    destination: str
    status: str
    #: the connection's label (the destination's name for its first connection)
    connection: str = ""
    attempts: int = 0
    #: the code this destination receives: its connection's own, else the conversion's
    code_sent: str | None = None
    sent: str | None = None
    answered: str | None = None
    platform_ref: str | None = None
    last_error: str | None = None
    delivered_at: float | None = None
    identifiers: list[Identifier] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL or self.status == NOT_ROUTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "connection": self.connection or self.destination,
            "status": self.status,
            "attempts": self.attempts,
            "test_event_code": self.code_sent,
            "platform_ref": self.platform_ref,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "identifiers": {i.key: i.shown for i in self.identifiers},
            "sent": orjson.loads(self.sent) if self.sent else None,
            "answered": _json_or_text(self.answered),
        }


@dataclass(slots=True)
class SideBySide:
    conversion_id: int
    event: str
    event_id: str
    test_event_code: str | None
    received_at: float
    destinations: list[DestinationView]

    @property
    def final(self) -> bool:
        return all(d.final for d in self.destinations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversion_id": self.conversion_id,
            "event": self.event,
            "event_id": self.event_id,
            "test_event_code": self.test_event_code,
            "received_at": self.received_at,
            "final": self.final,
            "destinations": [d.as_dict() for d in self.destinations],
        }


def _json_or_text(text: str | None) -> Any:
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def shown_value(value: Any) -> str:
    """How an identifier is shown: a SHA-256 as ``sha256 …last6``, anything else shortened."""
    if isinstance(value, list):
        return ", ".join(shown_value(v) for v in value)
    text = str(value)
    if len(text) == 64 and all(ch in "0123456789abcdef" for ch in text):
        return f"sha256 …{text[-6:]}"
    return text if len(text) <= 48 else text[:47] + "…"


def identifiers(destination: str, sent: bytes | None) -> list[Identifier]:
    """The identifiers a sent event carried: TikTok ``user`` keys, Meta ``user_data`` keys."""
    if not sent:
        return []
    try:
        body = orjson.loads(sent)
    except orjson.JSONDecodeError:
        return []
    section = (
        body.get(IDENTIFIER_SECTIONS.get(destination, "user")) if isinstance(body, dict) else None
    )
    if isinstance(section, list):  # Google Ads: userIdentifiers, one object per identifier
        merged: dict[str, Any] = {}
        for part in section:
            if isinstance(part, dict):
                for k, v in part.items():
                    merged.setdefault(str(k), []).append(v)
        section = {k: v[0] if len(v) == 1 else v for k, v in merged.items()}
    if not isinstance(section, dict):
        return []
    return [
        Identifier(str(k), shown_value(v))
        for k, v in sorted(section.items())
        if v not in (None, "", [])
    ]


def load_view(
    store: Store,
    conversion_id: int,
    destinations: Sequence[str],
    *,
    property_id: int | None = None,
) -> SideBySide | None:
    """The test conversion and, per connection it went to, what was sent and answered (each
    of ``destinations`` it did not go to is shown "not routed"); None if it is not a stored
    test conversion (of ``property_id``, when given: a page of one property never shows
    another's, even by its id)."""
    only, extra = ("", ()) if property_id is None else (" AND property_id = ?", (property_id,))
    found = store.read(
        "SELECT id, event, event_id, test_event_code, received_at FROM conversions"  # noqa: S608
        f" WHERE id = ? AND test_event_code IS NOT NULL{only}",
        (conversion_id, *extra),
    )
    if not found:
        return None
    cid, event, event_id, code, received_at = found[0]
    rows = store.read(
        "SELECT destination, status, attempts, sent_body, last_response, platform_ref,"
        " last_error, delivered_at, connection_id FROM outbox WHERE conversion_id = ?"
        " ORDER BY id",
        (conversion_id,),
    )
    views: list[DestinationView] = []
    for name in destinations:
        if all(str(row[0]) != name for row in rows):
            views.append(DestinationView(name, NOT_ROUTED))
    for row in rows:
        name = str(row[0])
        connection = store.connection(int(row[8]))
        own = connection.test_event_code if connection is not None else None
        sent = bytes(row[3]) if row[3] is not None else None
        views.append(
            DestinationView(
                destination=name,
                status=str(row[1]),
                connection=connection.name if connection is not None else name,
                attempts=int(row[2]),
                code_sent=own or code,
                sent=orjson.dumps(orjson.loads(sent), option=orjson.OPT_INDENT_2).decode()
                if sent
                else None,
                answered=row[4],
                platform_ref=row[5],
                last_error=row[6],
                delivered_at=None if row[7] is None else float(row[7]),
                identifiers=identifiers(name, sent),
            )
        )
    order = {n: i for i, n in enumerate(DESTINATIONS)}
    views.sort(key=lambda v: (order.get(v.destination, 99), v.connection))
    return SideBySide(int(cid), str(event), str(event_id), code, float(received_at), views)
