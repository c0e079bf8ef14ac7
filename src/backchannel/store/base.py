"""The storage seam: one small protocol, an SQLite and a PostgreSQL implementation.

Why a protocol: the ingest API, the worker and the CLI never write SQL; they call these
methods, and the same test suite runs against both backends. Every method is synchronous and
does its own transaction; :mod:`backchannel.store.runner` puts them on a dedicated thread and
groups concurrent ingests into one commit.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from backchannel.destinations import tiktok as tiktok_destination

#: outbox states (see the migration for the state machine)
PENDING, IN_FLIGHT, DELIVERED, DEAD, EXPIRED = (
    "pending",
    "in_flight",
    "delivered",
    "dead",
    "expired",
)
STATUSES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, EXPIRED)

#: the property every install has (migration 0013 creates it and gives it every row stored
#: before): where a tool or a single-property install writes when no property is named
DEFAULT_PROPERTY = 1
DEFAULT_PROPERTY_NAME = "default"

#: a connection named by its id, or by its label within a property (the first connection of
#: a destination is labelled with the destination's name: "tiktok" is the property's TikTok
#: connection unless a second one was added under another label)
ConnectionKey = int | str


class UnknownConnection(LookupError):
    """A connection named by a label (or id) the store does not hold."""


class ForeignSession(PermissionError):
    """A write names landing sessions that belong to another property (see record_collect):
    the caller answers 403 instead of writing into the other property's session."""

    def __init__(self, session_ids: Sequence[str]) -> None:
        self.session_ids = list(session_ids)
        super().__init__(f"{len(self.session_ids)} session(s) belong to another property")


@dataclass(slots=True)
class NewConversion:
    """A normalized conversion about to be stored with one outbox row per connection."""

    event: str
    event_id: str
    event_time: int
    order_id: str | None
    session_id: str | None
    test_event_code: str | None
    payload: bytes
    warnings: bytes
    origin: str
    #: the connections that get an outbox row (ids, or labels in ``property_id``): ingest
    #: passes the ids event routing chose; tools and tests may name labels ("tiktok")
    connections: tuple[ConnectionKey, ...]
    #: sources and ledger: the order-ledger row written in the SAME transaction, if any
    ledger: LedgerEntry | None = None
    #: browser leg: where each identifier came from, JSON (see backchannel.stitch.Provenance)
    stitched: str | None = None
    #: connections that cannot take this conversion (connection -> reason): their outbox
    #: row is stored dead at once with the reason, so it shows among the dead letters and
    #: ``replay`` sends it once the cause is fixed (e.g. TikTok without a CRM event set)
    refused: Mapping[ConnectionKey, str] = field(default_factory=dict)
    #: the property it belongs to: its dedup key is (property, event, event_id)
    property_id: int = DEFAULT_PROPERTY


@dataclass(slots=True)
class Claimed:
    """An outbox row leased to a worker, with the stored conversion it delivers."""

    outbox_id: int
    conversion_id: int
    attempts: int
    payload: bytes
    #: the token of the claim that leased this row. Every mark made for the claim passes it,
    #: and a mark whose token no longer matches (the lease ran out and another worker took
    #: the row) changes nothing: a late worker can never undo a newer worker's outcome.
    lease: str = ""


def connection_settings(raw: str | None) -> dict[str, str]:
    """The stored JSON of a connection's plain settings (NULL: none)."""
    if not raw:
        return {}
    data = orjson.loads(raw)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


#: the Pixel mirror's platform of rows that name none: TikTok's (the mirror watched only its
#: Pixel before Google's tag was mirrored too)
MIRROR_DEFAULT = tiktok_destination.name


def new_lease_token() -> str:
    """A claim's token: random, so two workers (or two claims of one) never share one."""
    return secrets.token_hex(8)


@dataclass(slots=True)
class Dead:
    outbox_id: int
    #: the event exactly as it was sent (the platform's data[] item), JSON
    body: bytes


@dataclass(slots=True)
class KeyRecord:
    id: int
    name: str
    scope: str
    prefix: str
    created_at: float
    revoked_at: float | None
    #: a site key that may post to /v1/collect from an opaque origin (``Origin: null``): a
    #: Shopify custom pixel's sandboxed iframe (see backchannel.web.collect)
    allow_null_origin: bool = False
    #: an admin key's role (owner | editor | viewer; host-wide); None for other scopes
    role: str | None = None
    #: the property an ingest or site key writes into; None for admin keys (the install's)
    property_id: int | None = DEFAULT_PROPERTY


@dataclass(slots=True)
class Connection:
    """One destination account of a property: a pixel and its token (and what else its
    destination declares), its test code, its routes, its suspension record."""

    destination: str
    pixel: str
    token_encrypted: bytes | None
    token_last4: str | None
    test_event_code: str | None
    updated_at: float
    #: the destination's other plain values, by Credential key
    settings: dict[str, str] = field(default_factory=dict)
    #: the destination's other secret values: one Fernet ciphertext of a JSON object
    secrets_encrypted: bytes | None = None
    property_id: int = DEFAULT_PROPERTY
    #: unique in its property; "" means the destination's name (its first connection)
    label: str = ""
    #: set by the store (None: not stored yet)
    id: int | None = None
    #: read back only (set_connection never writes them; see set_routes, set_suspension):
    #: the routed events' JSON list (None: every event) and the suspension record's JSON
    routes: str | None = None
    suspension: str | None = None

    @property
    def name(self) -> str:
        """The label, or the destination's name when none was given."""
        return self.label or self.destination

    @property
    def live(self) -> bool:
        """Credentials stored: it sends to the platform (else the sandbox, or nowhere)."""
        return self.token_encrypted is not None


def is_active(connection: Connection, always: Sequence[str]) -> bool:
    """Whether a connection gets outbox rows now: live (a token), or of a destination that is
    on without credentials (``always``, the ``destinations`` setting: TikTok and Meta by
    default, which deliver to the sandbox until a token is set). A disconnected connection of
    any other destination keeps its id and history but gets nothing."""
    return connection.live or connection.destination in always


@dataclass(slots=True)
class Property:
    """A shop, site or app: its name, settings (None: the install's) and bindings."""

    id: int
    name: str
    created_at: float
    default_region: str | None = None
    tiktok_utm_sources: str | None = None
    #: page origins allowed to post to /v1/collect with its site keys (empty: the install's
    #: ``collect_origins``)
    origins: tuple[str, ...] = ()
    #: Shopify shop domains (X-Shopify-Shop-Domain) and Stripe accounts (acct_…) whose
    #: webhooks are its orders
    shopify_shops: tuple[str, ...] = ()
    stripe_accounts: tuple[str, ...] = ()


#: property_bindings kinds, and the Property field each fills
BINDING_KINDS = {"origin": "origins", "shopify": "shopify_shops", "stripe": "stripe_accounts"}


def properties_from_rows(
    rows: Iterable[Sequence[Any]], bindings: Iterable[Sequence[Any]]
) -> list[Property]:
    """Properties from ``(id, name, created_at, default_region, tiktok_utm_sources)`` rows and
    their ``(kind, value, property_id)`` bindings (both backends)."""
    found = {int(r[0]): Property(int(r[0]), str(r[1]), float(r[2]), r[3], r[4]) for r in rows}
    lists: dict[tuple[int, str], list[str]] = {}
    for kind, value, property_id in bindings:
        lists.setdefault((int(property_id), str(kind)), []).append(str(value))
    for (property_id, kind), values in lists.items():
        if property_id in found and kind in BINDING_KINDS:
            setattr(found[property_id], BINDING_KINDS[kind], tuple(values))
    return list(found.values())


def qualified_name(property_id: int, property_name: str, label: str) -> str:
    """How logs, metrics, doctor and readiness name a connection (or a property's source
    secret): the label alone in the default property (what a single-property install always
    showed), ``property/label`` in any other."""
    return label if property_id == DEFAULT_PROPERTY else f"{property_name}/{label}"


def qualified_sql(column: str) -> str:
    """:func:`qualified_name` in SQL, for a row joined to ``properties p`` as ``c``."""
    return (
        f"CASE WHEN c.property_id = {DEFAULT_PROPERTY} THEN {column}"
        f" ELSE p.name || '/' || {column} END"
    )


#: what both backends select of a connection, in :func:`connection_row`'s order
CONNECTION_COLUMNS = (
    "destination, pixel, token_encrypted, token_last4, test_event_code, updated_at, settings,"
    " secrets_encrypted, property_id, label, id, routes, suspension"
)
#: "forget" a connection (store.delete_connection): the row stays for its outbox rows' sake
FORGET_CONNECTION = (
    "pixel = '', token_encrypted = NULL, token_last4 = NULL, test_event_code = NULL,"
    " settings = NULL, secrets_encrypted = NULL, routes = NULL, suspension = NULL"
)


def connection_row(row: Sequence[Any]) -> Connection:
    """A Connection from a row of :data:`CONNECTION_COLUMNS` (BLOB or BYTEA alike)."""
    (destination, pixel, token, last4, code, updated_at, settings, secrets) = row[:8]
    property_id, label, connection_id, routes, suspension = row[8:13]
    return Connection(
        destination,
        pixel,
        None if token is None else bytes(token),
        last4,
        code,
        float(updated_at),
        connection_settings(settings),
        None if secrets is None else bytes(secrets),
        int(property_id),
        str(label),
        int(connection_id),
        routes,
        suspension,
    )


@dataclass(slots=True)
class DeliveryRow:
    """What a user asks about one event: where it went and how that went."""

    event: str
    event_id: str
    destination: str
    status: str
    attempts: int
    last_error: str | None
    platform_ref: str | None
    delivered_at: float | None
    #: the connection's label (the destination's name for its first connection)
    connection: str = ""


@dataclass(slots=True)
class AdminSession:
    """A dashboard login: the cookie holds a random token, the store only its SHA-256."""

    token_hash: str
    csrf_token: str
    created_at: float
    expires_at: float
    #: whose session it is (members.id); None authenticates nobody
    member_id: int | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A role on one property, or on every property (``property_id`` None: host-wide)."""

    property_id: int | None
    role: str


@dataclass(slots=True)
class Member:
    """A team member: an admin user who logs in with a name and a password."""

    id: int
    name: str
    #: scrypt hash (web/auth.py); empty once the member was removed
    password_hash: str
    created_at: float
    #: when ``member remove`` took the member's access away (None: active)
    disabled_at: float | None
    #: every grant, host-wide first, then by property id
    grants: tuple[Grant, ...] = ()


# sources and ledger ---------------------------------------------------------------------------


@dataclass(slots=True)
class LedgerEntry:
    """One order or subscription for the order ledger (the truth set of the gap report).

    ``evidence`` is a JSON object naming each TikTok signal and where it was found, e.g.
    ``{"ttclid": "landing_site"}``; ``attributed_tiktok`` is true when it is not empty.
    """

    source: str
    order_id: str
    order_time: int
    value: float | None
    currency: str | None
    event: str | None
    event_id: str | None
    session_id: str | None
    attributed_tiktok: bool
    evidence: bytes
    property_id: int = DEFAULT_PROPERTY


@dataclass(slots=True)
class OrderRow:
    """A ledger row as read back (``recorded_at`` set by the store)."""

    source: str
    order_id: str
    order_time: int
    value: float | None
    currency: str | None
    event: str | None
    event_id: str | None
    session_id: str | None
    attributed_tiktok: bool
    evidence: bytes
    recorded_at: float
    property_id: int = DEFAULT_PROPERTY


@dataclass(slots=True)
class Rejection:
    """Input a source refused, for the diagnostics page (no raw body, no PII)."""

    at: float
    source: str
    delivery_id: str | None
    reason: bytes
    #: None: no property could be named (an unknown shop or Stripe account)
    property_id: int | None = DEFAULT_PROPERTY


# browser leg ----------------------------------------------------------------------------------
#: pixel states, weakest first: a session keeps the strongest it reported (see SessionUpdate)
PIXEL_STATUSES = ("absent", "blocked", "loaded")


@dataclass(slots=True)
class SessionUpdate:
    """One ``/v1/collect`` message, to be merged into its landing session.

    Merge rules (the same SQL in both backends): first/last seen widen; a click id, cookie, IP
    or user agent replaces the stored one when present (the newest touch wins, as in
    last-click attribution); the five UTMs are replaced together when the message has any;
    ``landing_url``, ``referrer`` and ``load_time_ms`` come from the message flagged
    ``landing`` (the page that created the session), else from the first message seen;
    ``pixel_status`` keeps the strongest state (loaded > blocked > absent).
    """

    session_id: str
    at: float
    url: str | None = None
    referrer: str | None = None
    landing: bool = False
    ttclid: str | None = None
    ttp: str | None = None
    fbclid: str | None = None
    fbp: str | None = None
    fbc: str | None = None
    #: Google: the GA4 client id (normalized from the _ga cookie) and the Ads click ids
    ga_client_id: str | None = None
    gclid: str | None = None
    gbraid: str | None = None
    wbraid: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None
    load_time_ms: int | None = None
    pixel_status: str = "absent"
    page_view: bool = True
    #: a Shopify checkout this session completed (the custom pixel's checkout.token): stored
    #: in ``checkout_sessions`` in the same transaction, first report wins
    checkout_token: str | None = None
    #: the other platforms' ids (identifiers.generic()), by field; merged into the session's
    ids: dict[str, str] = field(default_factory=dict)
    #: the property of the site key that sent it (a session belongs to one property)
    property_id: int = DEFAULT_PROPERTY

    def ids_json(self) -> str | None:
        """``ids`` as the column stores it (None when there are none: the merge keeps the
        session's)."""
        return orjson.dumps(self.ids).decode() if self.ids else None

    @property
    def has_utm(self) -> bool:
        return any(
            v is not None
            for v in (
                self.utm_source,
                self.utm_medium,
                self.utm_campaign,
                self.utm_content,
                self.utm_term,
            )
        )


@dataclass(slots=True)
class BrowserEvent:
    """One tag call seen by bc.js (the Pixel mirror): ``ttq.track(event, props, {event_id})``
    (``platform`` TikTok's, the default), or ``gtag('event', name, {transaction_id})``
    (Google's, the transaction_id as ``event_id``)."""

    session_id: str
    event: str
    event_id: str | None
    at: float
    page_url: str | None = None
    #: the TikTok Pixel's state when it fired, if known (None for Google's calls)
    pixel_status: str | None = None
    platform: str = MIRROR_DEFAULT
    property_id: int = DEFAULT_PROPERTY


def session_owners(
    updates: Iterable[SessionUpdate], events: Iterable[BrowserEvent]
) -> dict[str, set[int]]:
    """Per session id a collect write names, the properties its messages come from."""
    owners: dict[str, set[int]] = {}
    for update in updates:
        owners.setdefault(update.session_id, set()).add(update.property_id)
    for event in events:
        owners.setdefault(event.session_id, set()).add(event.property_id)
    return owners


def foreign_sessions(owners: Mapping[str, set[int]], stored: Iterable[Sequence[Any]]) -> list[str]:
    """The session ids a collect write may not touch: stored under another property
    (``stored``: ``(session_id, property_id)`` rows), or named by two properties at once."""
    bad = {session for session, props in owners.items() if len(props) > 1}
    for session_id, property_id in stored:
        props = owners.get(session_id, set())
        if property_id is not None and props and int(property_id) not in props:
            bad.add(session_id)
    return sorted(bad)


@dataclass(slots=True)
class LandingSession:
    """A ``landing_sessions`` row as read back."""

    session_id: str
    first_seen: float
    last_seen: float
    ttclid: str | None
    ttp: str | None
    fbclid: str | None
    fbp: str | None
    fbc: str | None
    ga_client_id: str | None
    gclid: str | None
    gbraid: str | None
    wbraid: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_content: str | None
    utm_term: str | None
    landing_url: str | None
    referrer: str | None
    last_url: str | None
    ip: str | None
    user_agent: str | None
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    load_time_ms: int | None
    pixel_status: str
    page_views: int
    #: the other platforms' ids by field (the column's JSON, read back as a dict)
    ids: dict[str, str] = field(default_factory=dict)
    property_id: int = DEFAULT_PROPERTY

    def __post_init__(self) -> None:
        raw: object = self.ids
        if isinstance(raw, str | bytes):
            raw = orjson.loads(raw)
        self.ids = dict(raw) if isinstance(raw, dict) else {}


#: the landing_sessions columns, in LandingSession's order (both backends select these)
SESSION_COLUMNS = (
    "session_id, first_seen, last_seen, ttclid, ttp, fbclid, fbp, fbc, ga_client_id, gclid,"
    " gbraid, wbraid, utm_source, utm_medium, utm_campaign, utm_content, utm_term, landing_url,"
    " referrer, last_url, ip, user_agent, browser, browser_version, os, os_version,"
    " load_time_ms, pixel_status, page_views, ids, property_id"
)


@dataclass(slots=True)
class SessionMatch:
    """A session found for a stitching key: ``kind`` is session_id, ttclid or email."""

    kind: str
    key: str
    session: LandingSession


#: the columns :func:`members_from_rows` reads, in order (both backends select them)
MEMBER_COLUMNS = (
    "m.id, m.name, m.password_hash, m.created_at, m.disabled_at, r.property_id, r.role"
    " FROM members m LEFT JOIN member_roles r ON r.member_id = m.id"
)


def members_from_rows(rows: Iterable[Sequence[Any]]) -> list[Member]:
    """Members from ``SELECT MEMBER_COLUMNS ... ORDER BY`` member, then host-wide grant first,
    then property id: one row per grant (a member without any: one row of NULLs)."""
    found: dict[int, Member] = {}
    grants: dict[int, list[Grant]] = {}
    for member_id, name, password_hash, created_at, disabled_at, property_id, role in rows:
        mid = int(member_id)
        if mid not in found:
            found[mid] = Member(mid, name, password_hash, created_at, disabled_at)
            grants[mid] = []
        if role is not None:
            grants[mid].append(Grant(None if property_id is None else int(property_id), role))
    for mid, member in found.items():
        member.grants = tuple(grants[mid])
    return list(found.values())


class Store(Protocol):
    def migrate(self) -> None: ...

    def close(self) -> None: ...

    # ingest ---------------------------------------------------------------------------------
    def insert_conversions(self, items: Sequence[NewConversion], now: float) -> list[bool]:
        """Store conversions and their outbox rows in ONE transaction.

        Returns, per item, True if it was new and False if (property, event, event_id) was
        already stored (a duplicate: nothing is enqueued again). Nothing is visible before the
        commit. A connection named by a label the property does not hold raises
        :class:`UnknownConnection` (nothing is stored).
        """
        ...

    # delivery --------------------------------------------------------------------------------
    def claim(
        self, connection: ConnectionKey, limit: int, now: float, lease: float
    ) -> list[Claimed]:
        """Lease up to ``limit`` due rows of ONE connection (pending, or in flight with an
        expired lease): a batch never mixes connections. A label names the connection of the
        default property.

        All rows of one claim share a fresh random token (:attr:`Claimed.lease`), stored with
        them. The marks below take it as ``lease=``: given, a mark touches only rows that are
        still in flight under that token, and returns how many it changed, so a worker whose
        lease ran out (a slow platform, a stalled process) learns that its outcome was not
        recorded instead of overwriting the outcome of the worker that took the rows over.
        ``lease=None`` is unguarded: for tools and tests that mark rows they did not claim.
        """
        ...

    def mark_delivered(
        self,
        ids: Sequence[int],
        now: float,
        ref: str | None,
        *,
        sent: Sequence[bytes] | None = None,
        response: str | None = None,
        lease: str | None = None,
    ) -> int:
        """Mark rows delivered. Test batches also pass ``sent`` (each row's event as sent,
        aligned with ``ids``, kept in ``sent_body``) and ``response`` (the platform's answer,
        in ``last_response``); production deliveries pass neither and store nothing extra."""
        ...

    def mark_retry(
        self,
        ids: Sequence[int],
        due_at: float,
        error: str,
        response: str | None,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int:
        """Back to pending until ``due_at``. ``failed_at``: when the attempt failed (kept in
        ``outbox.failed_at`` for the dashboard; None leaves the stored time as it was)."""
        ...

    def release(self, ids: Sequence[int], due_at: float, *, lease: str | None = None) -> int:
        """Give rows back untried (the attempt is not counted): used when a cycle runs out of
        time before sending them, and when a worker shuts down."""
        ...

    def mark_dead(
        self,
        rows: Sequence[Dead],
        error: str,
        response: str | None,
        ref: str | None,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int: ...

    def mark_expired(
        self,
        ids: Sequence[int],
        reason: str,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int: ...

    def enqueue(self, connection: ConnectionKey, conversion_ids: Sequence[int], now: float) -> int:
        """Give stored conversions a pending outbox row for ``connection`` (backfill), due
        now; a conversion that already has one, or of another property than the connection's,
        is left alone. Returns how many were added."""
        ...

    def replay(
        self,
        now: float,
        *,
        event_id: str | None = None,
        destination: str | None = None,
        property_id: int | None = None,
        connection: ConnectionKey | None = None,
    ) -> int:
        """Re-queue dead rows (all, or one event_id's; of one destination, property or
        connection) with the same event_id; returns count."""
        ...

    def wake_hint(self) -> int:
        """A cheap counter that changes when rows may have become due (for polling workers)."""
        ...

    # reading ---------------------------------------------------------------------------------
    # ``property_id``: one property's rows; None: every property's (the host's view).
    def outbox_counts(self, property_id: int | None = None) -> dict[str, dict[str, int]]:
        """Rows per destination and state (the queue-depth metric: per destination, summed
        over connections, so its labels stay bounded by the registry)."""
        ...

    def connection_counts(self, property_id: int | None = None) -> dict[int, dict[str, int]]:
        """Rows per connection id and state."""
        ...

    def deliveries(self, event_id: str, property_id: int | None = None) -> list[DeliveryRow]: ...

    def conversion_count(self, property_id: int | None = None) -> int: ...

    # properties ------------------------------------------------------------------------------
    def create_property(
        self,
        name: str,
        now: float,
        *,
        default_region: str | None = None,
        tiktok_utm_sources: str | None = None,
        destinations: Sequence[str] = (),
    ) -> int | None:
        """Add a property (None when the name is taken) with a sandbox connection of each of
        ``destinations`` (those on by default), in ONE transaction; returns its id."""
        ...

    def properties(self) -> list[Property]:
        """Every property with its bindings, by id."""
        ...

    def get_property(self, name_or_id: str | int) -> Property | None: ...

    def update_property(
        self, property_id: int, *, default_region: str | None, tiktok_utm_sources: str | None
    ) -> None:
        """Set both settings (None: the install's)."""
        ...

    def bind(self, property_id: int, kind: str, value: str) -> int:
        """Bind an origin / shop domain / Stripe account to a property; returns the property
        that holds it now (another one's id when it was already bound elsewhere: unchanged)."""
        ...

    def unbind(self, property_id: int, kind: str, value: str | None = None) -> int:
        """Remove one binding of a property (or all of ``kind``: value None); returns count."""
        ...

    def bound_property(self, kind: str, value: str) -> int | None:
        """The property an origin, shop domain or Stripe account is bound to, if any."""
        ...

    # keys and connections --------------------------------------------------------------------
    def add_key(
        self,
        name: str,
        scope: str,
        prefix: str,
        key_hash: str,
        now: float,
        property_id: int | None = DEFAULT_PROPERTY,
        *,
        allow_null_origin: bool = False,
        role: str | None = None,
    ) -> int:
        """Store a key's hash. ``role``: an admin key's role (an admin key without one
        authenticates but may do nothing)."""
        ...

    def find_key(self, key_hash: str) -> KeyRecord | None: ...

    def list_keys(self, property_id: int | None = None) -> list[KeyRecord]: ...

    def revoke_key(
        self, name_or_prefix: str, now: float, property_id: int | None = None
    ) -> int: ...

    def set_connection(self, connection: Connection) -> int:
        """Insert or update (by property and label) a connection's credentials, test code
        and settings; returns its id. Routes and the suspension record are left alone."""
        ...

    def get_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> Connection | None:
        """The property's connection labelled ``label`` (a destination's name: its first)."""
        ...

    def connection(self, connection_id: int) -> Connection | None: ...

    def list_connections(self, property_id: int | None = None) -> list[Connection]:
        """Connections (of one property, or all), by property then id."""
        ...

    def delete_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> bool:
        """Forget a connection's credentials, settings and routes. Its row stays (outbox rows
        and dead letters keep naming it) but it is disconnected: it gets no more rows unless
        its destination is on without credentials (then it goes back to the sandbox)."""
        ...

    def ensure_connections(
        self, destinations: Sequence[str], now: float, property_id: int | None = None
    ) -> int:
        """Give every property (or one) that has no connection of a destination in
        ``destinations`` one labelled with its name, without credentials (the sandbox
        connection of the destinations that are on by default). Returns how many were added."""
        ...

    def set_routes(self, connection: ConnectionKey, events: str | None) -> None:
        """Store a connection's routed events (a JSON list; None: every event)."""
        ...

    def set_suspension(self, connection: ConnectionKey, record: str | None) -> None:
        """Store (or clear: None) a connection's suspension record (suspension.py)."""
        ...

    def all_token_ciphertexts(self) -> list[tuple[str, bytes]]:
        """(``property/label``, token ciphertext) of every connection with a token."""
        ...

    def audit(
        self, now: float, actor: str, action: str, detail: str, property_id: int | None = None
    ) -> None: ...

    # hardening: readiness, admin access, key rotation ---------------------------------------
    def schema_version(self) -> int:
        """The highest applied migration (a cheap query: also the readiness probe's ping)."""
        ...

    def get_admin_setting(self, name: str) -> str | None: ...

    def set_admin_setting(self, name: str, value: str, now: float) -> None: ...

    def create_admin_session(self, session: AdminSession) -> None:
        """Store a new session (and forget sessions that expired before it was created)."""
        ...

    def get_admin_session(self, token_hash: str, now: float) -> AdminSession | None:
        """The session if it exists and has not expired at ``now``."""
        ...

    def delete_admin_session(self, token_hash: str) -> bool: ...

    def delete_admin_sessions(self) -> int:
        """Log everyone out."""
        ...

    # team members ------------------------------------------------------------------------------
    # Rules (who may grant what, the last host owner) live in backchannel.members; these
    # methods only keep the rows consistent: one grant per (member, property), and every
    # change to a member's grants or access in one transaction.
    def add_member(self, name: str, password_hash: str, grant: Grant, now: float) -> int | None:
        """A new member with one grant, in one transaction; returns its id. A removed member
        of that name comes back (new password, that grant only, same id). None when an active
        member already has the name (nothing changed)."""
        ...

    def member_by_name(self, name: str) -> Member | None: ...

    def member_by_id(self, member_id: int) -> Member | None: ...

    def list_members(self) -> list[Member]:
        """Every member, removed ones included, by name (byte order)."""
        ...

    def set_member_grant(self, member_id: int, grant: Grant) -> None:
        """Give the member ``grant.role`` on ``grant.property_id``, replacing the role it had
        there (the member's other grants stay)."""
        ...

    def delete_member_grant(self, member_id: int, property_id: int | None) -> bool:
        """Take the member's grant on ``property_id`` (None: the host-wide one) away."""
        ...

    def set_member_password(
        self, member_id: int, password_hash: str, now: float, *, keep_session: str | None = None
    ) -> int:
        """Store a new password hash and end the member's sessions (one transaction);
        returns how many sessions ended. ``keep_session``: the token hash of one session
        that stays (the member's own, changing their password from it)."""
        ...

    def remove_member(self, member_id: int, now: float) -> int:
        """Take every grant and the password away, mark the member removed and end its
        sessions (one transaction; the row stays, so audit rows keep naming someone);
        returns how many sessions ended."""
        ...

    def reencrypt_secrets(self, transform: Callable[[bytes], bytes]) -> int:
        """Replace EVERY ciphertext the store holds by ``transform(ciphertext)``, in ONE
        transaction (all or nothing); returns how many were rewritten.

        Used by ``backchannel token rotate-key``. Covers destination tokens and source webhook
        secrets; any column added later that holds a Fernet ciphertext must be rewritten here
        (and listed by :meth:`all_ciphertexts`), or rotating the key would strand it.
        """
        ...

    def all_ciphertexts(self) -> list[tuple[str, bytes]]:
        """(label, ciphertext) of every encrypted value: ``token tiktok``, ``source stripe``…"""
        ...

    # sources and ledger -----------------------------------------------------------------------
    # Conversions carrying ``NewConversion.ledger`` get their ledger row in the same transaction
    # as the conversion (inside insert_conversions); these methods cover everything else.
    def set_source_secret(
        self,
        source: str,
        ciphertext: bytes,
        now: float,
        store_url: str | None = None,
        property_id: int = DEFAULT_PROPERTY,
    ) -> None:
        """Store (or replace) a property's encrypted webhook secret of a source;
        ``store_url`` (the shop its webhooks must come from, WooCommerce) is recorded with
        it, None keeping the one already stored."""
        ...

    def get_source_secret(
        self, source: str, property_id: int = DEFAULT_PROPERTY
    ) -> bytes | None: ...

    def source_secrets(self, source: str) -> dict[int, bytes]:
        """Every property's stored secret of ``source``, by property id (webhook routing)."""
        ...

    def get_source_store_url(self, source: str, property_id: int = DEFAULT_PROPERTY) -> str | None:
        """The store URL recorded with a property's secret of a source, if any."""
        ...

    def delete_source_secret(self, source: str, property_id: int = DEFAULT_PROPERTY) -> bool: ...

    def record_orders(self, entries: Sequence[LedgerEntry], now: float) -> list[bool]:
        """Add ledger rows in ONE transaction; per entry, True if written, False if its
        (property, source, order_id) was already there (the first row seen is kept).

        The one exception, here and for the ledger rows ``insert_conversions`` writes: a row
        recorded without a conversion (``event_id`` NULL: an unpaid WooCommerce order, a
        ``--record-only`` import) is completed by the first row of that order that has one
        (every column but ``recorded_at`` is replaced), so the ledger says the order was
        sent once it was."""
        ...

    def orders(
        self, *, source: str | None = None, limit: int = 1000, property_id: int | None = None
    ) -> list[OrderRow]:
        """Ledger rows, newest order first."""
        ...

    def ledger_counts(self, property_id: int | None = None) -> dict[str, dict[str, int]]:
        """Per source: ``{"orders": n, "attributed_tiktok": m}``."""
        ...

    def delivery_seen(self, source: str, delivery_id: str) -> bool: ...

    def record_delivery(
        self,
        source: str,
        delivery_id: str,
        status: str,
        now: float,
        property_id: int | None = DEFAULT_PROPERTY,
    ) -> bool:
        """Remember a processed webhook delivery; False if it was already recorded."""
        ...

    def record_rejection(
        self,
        source: str,
        reason: bytes,
        now: float,
        delivery_id: str | None = None,
        property_id: int | None = DEFAULT_PROPERTY,
    ) -> None:
        """``property_id`` None: no property could be named (an unknown shop or account)."""
        ...

    def rejections(
        self, *, source: str | None = None, limit: int = 100, property_id: int | None = None
    ) -> list[Rejection]:
        """Recent rejections, newest first (of one property: its own only)."""
        ...

    # browser leg ------------------------------------------------------------------------------
    def record_collect(
        self, updates: Sequence[SessionUpdate], events: Sequence[BrowserEvent]
    ) -> None:
        """Merge session updates (in order; see :class:`SessionUpdate`) and append browser
        events, all in ONE transaction (collect's group commit batches many page views).

        A session id belongs to the property that created it: an update or event naming a
        session of another property raises :class:`ForeignSession` and nothing is written
        (the group commit then retries each message alone, so only that one is refused)."""
        ...

    def find_sessions(
        self,
        *,
        session_ids: Sequence[str] = (),
        ttclids: Sequence[str] = (),
        email_hashes: Sequence[str] = (),
        property_id: int = DEFAULT_PROPERTY,
    ) -> list[SessionMatch]:
        """The stitching lookup, one indexed query: every session named by id (of ANY
        property: the caller refuses a conversion naming another property's session; see
        :attr:`LandingSession.property_id`), and for each ttclid and email hash the most
        recently seen session of ``property_id`` carrying it."""
        ...

    def checkout_session(self, checkout_token: str) -> str | None:
        """The landing session that reported this Shopify checkout token (the custom pixel's
        checkout_completed), or None: how an ``orders/create`` webhook finds its session."""
        ...

    def attach_emails(self, pairs: Sequence[tuple[str, str]], now: float) -> None:
        """Remember (session_id, email_hash) pairs; pairs already known are left as they are."""
        ...

    def get_session(self, session_id: str) -> LandingSession | None: ...

    def session_emails(self, session_id: str) -> list[str]:
        """Email hashes seen on a session, sorted."""
        ...

    def browser_events(
        self,
        *,
        session_id: str | None = None,
        event_id: str | None = None,
        property_id: int | None = None,
    ) -> list[BrowserEvent]:
        """Mirrored Pixel calls of a session or of an event_id, oldest first."""
        ...

    # retention --------------------------------------------------------------------------------
    # See backchannel.retention: the CLI's `purge` and `serve`'s hourly task call these in
    # bounded chunks, each chunk ONE transaction, until a call returns fewer than ``limit``.
    def purge_sessions(self, cutoff: float, limit: int) -> PurgeCounts:
        """Delete up to ``limit`` landing sessions last seen before ``cutoff``, oldest first,
        with their email hashes and browser events, after adding them to the session rollups
        (see :func:`rollup_sessions`) in the same transaction. Concurrent callers (several
        ``serve`` nodes on PostgreSQL) take different sessions: none is counted twice."""
        ...

    def scrub_conversions(self, cutoff: float, limit: int, now: float) -> int:
        """Remove ``user.ip`` and ``user.user_agent`` from the payloads (and dead letters'
        ``sent_body``) of up to ``limit`` conversions received before ``cutoff``, not yet
        scrubbed, and with no outbox row pending or in flight (those still need them to be
        delivered); mark them ``scrubbed_at = now``. Returns how many were scrubbed."""
        ...

    def retention_backlog(self, cutoff: float) -> RetentionBacklog:
        """What a purge at ``cutoff`` would remove now, and what it would have to keep."""
        ...

    def purge_diagnostics(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Delete refused-input records (``ingest_rejections``) older than ``cutoff`` and
        remove the client IP from older audit rows (actor ``ip 1.2.3.4`` becomes
        ``ip (purged)``; the action stays). Returns (rejections, audit rows) — what it
        would touch when ``dry_run``."""
        ...

    def session_rollups(self, property_id: int | None = None) -> list[SessionRollup]:
        """The counts kept from purged sessions, sorted by their key."""
        ...

    # rollups (backchannel.rollups, migration 0019) ----------------------------------------------
    def take_rollup_marks(self) -> int:
        """Take every rollup mark written so far: delete them and bump the version of each
        (property, day) they name, in one transaction. Returns how many marks were taken.

        Every write that can change a report's figure of a day appends a mark for it in its
        own transaction; a cached partial is valid only at the version it was computed at."""
        ...

    def put_rollups(self, name: str, rows: Sequence[RollupRow]) -> None:
        """Keep partials of report ``name`` (a row computed at an older version than the one
        stored never replaces it)."""
        ...

    # reports ----------------------------------------------------------------------------------
    #: "sqlite" or "postgres": which SQL dialect :meth:`read` speaks
    dialect: str

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only query written once for both backends (``?`` placeholders).

        Why a raw read seam: the dashboard's diagnostics are many small aggregate queries
        that only read; writing each twice (and a protocol method each) would double the code
        without adding a guarantee the shared contract tests do not already give. Queries must
        be portable (no ``%``, no dialect functions unless chosen by :attr:`dialect`); BLOB
        and BYTEA columns both come back as ``bytes``. Writes never go through here.
        """
        ...

    def gap_rows(self, start: int, end: int, property_id: int | None = None) -> list[GapRow]:
        """Every ledger order with ``start <= order_time < end`` (of one property, or all),
        oldest first, each with what the gap report needs (ONE query: ledger, Pixel mirror,
        TikTok outbox, landing session, each of the order's own property)."""
        ...

    def set_pixel_counts(
        self,
        rows: Sequence[tuple[str, str, int]],
        now: float,
        property_id: int = DEFAULT_PROPERTY,
    ) -> int:
        """Upsert daily Events Manager counts, ``(day 'YYYY-MM-DD', event, count)``, in one
        transaction: a re-imported day replaces its count (imports are idempotent). Returns
        how many rows were written."""
        ...

    def pixel_counts(
        self, start_day: str, end_day: str, event: str, property_id: int | None = None
    ) -> dict[str, int]:
        """Imported counts of ``event`` for the days ``start_day..end_day`` (both included,
        ISO dates), day -> count (summed over properties when None); days never imported are
        absent (not zero)."""
        ...


# retention --------------------------------------------------------------------------------------
#: page-load buckets of the session rollups: (upper bound in ms, label); slower is SLOW_BUCKET
LOAD_BUCKETS: tuple[tuple[int, str], ...] = ((1000, "<1s"), (2500, "1-2.5s"), (5000, "2.5-5s"))
SLOW_BUCKET = "5s+"
#: a rollup value the session did not have (never NULL: NULLs would defeat the unique key)
UNKNOWN = "unknown"
#: the actor of an audit row whose client IP retention removed
PURGED_IP_ACTOR = "ip (purged)"
#: outbox states whose conversion still needs its IP and user agent
LIVE_STATUSES = (PENDING, IN_FLIGHT)


@dataclass(slots=True)
class PurgeCounts:
    """Rows one :meth:`Store.purge_sessions` call deleted."""

    sessions: int = 0
    session_emails: int = 0
    browser_events: int = 0


@dataclass(slots=True)
class RetentionBacklog:
    """Counts for a cutoff: sessions to purge, conversions to scrub, conversions held back."""

    sessions: int
    #: received before the cutoff, not yet scrubbed, nothing left to deliver
    conversions: int
    #: received before the cutoff but with an outbox row pending or in flight: kept whole
    held: int


@dataclass(frozen=True, slots=True)
class SessionRollup:
    """How many purged sessions shared one combination of what the gap report breaks down by."""

    day: str  # UTC date of the session's first page view, YYYY-MM-DD
    browser_family: str
    os: str
    os_version_major: str
    load_bucket: str
    pixel_status: str
    had_ttclid: bool
    sessions: int
    #: the session had a Google Ads click id (gclid, gbraid or wbraid); last, with a default,
    #: because it came later (migration 0011) and the count stays the 8th positional field
    had_google_click: bool = False
    property_id: int = DEFAULT_PROPERTY

    @property
    def key(self) -> tuple[int, str, str, str, str, str, str, bool, bool]:
        return (
            self.property_id,
            self.day,
            self.browser_family,
            self.os,
            self.os_version_major,
            self.load_bucket,
            self.pixel_status,
            self.had_ttclid,
            self.had_google_click,
        )


def load_bucket(load_time_ms: int | None) -> str:
    """The rollup bucket of a landing page's load time."""
    if load_time_ms is None:
        return UNKNOWN
    for bound, label in LOAD_BUCKETS:
        if load_time_ms < bound:
            return label
    return SLOW_BUCKET


#: what a purge reads of each session: (first_seen, browser, os, os_version, load_time_ms,
#: pixel_status, had a ttclid, had a Google Ads click id, property_id)
PurgedSession = Sequence[Any]

#: the SQL both backends select for "had a Google Ads click id" (see PurgedSession)
HAD_GOOGLE_CLICK = "(gclid IS NOT NULL OR gbraid IS NOT NULL OR wbraid IS NOT NULL)"


def rollup_sessions(rows: Iterable[PurgedSession]) -> list[SessionRollup]:
    """Count sessions per rollup key (both backends call this: one definition of the buckets),
    sorted by key so concurrent upserts take their row locks in the same order."""
    counts: Counter[tuple[int, str, str, str, str, str, str, bool, bool]] = Counter()
    for row in rows:
        first_seen, browser, os_name, os_version, load_ms, pixel, had_ttclid, had_google = row[:8]
        property_id = row[8] if len(row) > 8 and row[8] is not None else DEFAULT_PROPERTY
        day = datetime.fromtimestamp(first_seen, UTC).strftime("%Y-%m-%d")
        major = os_version.split(".", 1)[0] if os_version else ""
        counts[
            (
                int(property_id),
                day,
                browser or UNKNOWN,
                os_name or UNKNOWN,
                major or UNKNOWN,
                load_bucket(load_ms),
                pixel or "absent",
                bool(had_ttclid),
                bool(had_google),
            )
        ] += 1
    return [
        SessionRollup(*key[1:8], sessions=n, had_google_click=key[8], property_id=key[0])
        for key, n in sorted(counts.items())
    ]


def scrub_payload(payload: bytes) -> bytes | None:
    """A stored conversion (``Conversion.to_dict()`` JSON) without ``user.ip`` and
    ``user.user_agent``; None when it holds neither (nothing to rewrite)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    user = data.get("user") if isinstance(data, dict) else None
    if not isinstance(user, dict) or (user.get("ip") is None and user.get("user_agent") is None):
        return None
    user["ip"] = None
    user["user_agent"] = None
    return orjson.dumps(data)


#: where a sent event (a dead letter's ``sent_body``) holds the IP and user agent, per platform
_SENT_IDENTIFIERS = (
    ("user", ("ip", "user_agent")),  # TikTok
    ("user_data", ("client_ip_address", "client_user_agent")),  # Meta
)


def scrub_sent_body(body: bytes) -> bytes | None:
    """A dead letter's event as sent, without the IP and user agent; None if it had neither."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    changed = False
    for section, keys in _SENT_IDENTIFIERS:
        part = data.get(section)
        if isinstance(part, dict):
            for key in keys:
                if key in part:
                    del part[key]
                    changed = True
    return orjson.dumps(data) if changed else None


# rollup marks (backchannel.rollups, migration 0019) --------------------------------------------
DAY_SECONDS = 86_400


def mark_day(unix: float) -> int:
    """The UTC day number (days since 1970-01-01) a rollup mark names for a unix time."""
    return int(unix // DAY_SECONDS)


def conversion_days(rows: Iterable[Sequence[Any]]) -> set[tuple[int, int]]:
    """(property, day) of each (property_id, received_at, event_time[, order_time]) row: the
    days of a conversion, and of a ledger order with its event id when the row has one (the
    order of another source may be dated another day: the delivered flag is the event's)."""
    out: set[tuple[int, int]] = set()
    for property_id, received_at, event_time, *order in rows:
        out.add((int(property_id), mark_day(float(received_at))))
        out.add((int(property_id), mark_day(float(event_time))))
        if order and order[0] is not None:
            out.add((int(property_id), mark_day(float(order[0]))))
    return out


# reports ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RollupRow:
    """One report's partial of one (property, UTC day number), computed at ``version``."""

    property_id: int
    day: int
    version: int
    computed_at: float
    data: bytes
    #: how long computing it took (the refresh's and the pages' allowance, rollups.COST_SHARE)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class GapRow:
    """One ledger order as the gap report reads it: plain facts from the store, no judgement.

    ``pixel_fired``: a TikTok browser_events row carries the order's event_id (the Pixel
    mirror; gtag's mirrored calls are Google's);
    ``tiktok_delivered``: the order's conversion has a delivered TikTok outbox row;
    ``has_session``: the order names a session AND that landing session is still stored (the
    browser fields are None when it is not: never seen, or purged by retention).
    """

    source: str
    order_id: str
    order_time: int
    attributed_tiktok: bool
    event_id: str | None
    session_id: str | None
    pixel_fired: bool
    tiktok_delivered: bool
    has_session: bool
    browser: str | None
    os: str | None
    os_version: str | None
    load_time_ms: int | None
    pixel_status: str | None
    property_id: int = DEFAULT_PROPERTY


#: the gap report's query, the same text for both backends (``?`` placeholders; PostgreSQL's
#: side swaps them for ``%s``). EXISTS keeps one row per order however many events matched.
#: The delivered test matches (property, event, event_id), the conversions' unique key, so each
#: order costs one index probe (a ledger row with an event_id always names its event); matching
#: on event_id alone, or on COALESCE(o.event, c.event), made SQLite scan every conversion per
#: order (52 s for 16,000 orders in bench/dashboard.py; now milliseconds). Everything joined is
#: the order's own property's: its Pixel mirror, its conversion, its landing session.
#: ``{scope}`` is "" (every property) or :data:`GAP_SCOPE` (one: one more parameter).
GAP_ROWS_SQL = """
SELECT o.source, o.order_id, o.order_time, o.attributed_tiktok, o.event_id, o.session_id,
       CASE WHEN o.event_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM browser_events b
           WHERE b.event_id = o.event_id AND b.platform = 'tiktok'
             AND b.property_id = o.property_id
       ) THEN 1 ELSE 0 END,
       CASE WHEN o.event_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM conversions c JOIN outbox x ON x.conversion_id = c.id
           WHERE c.property_id = o.property_id AND c.event = o.event AND c.event_id = o.event_id
             AND x.destination = 'tiktok' AND x.status = 'delivered'
       ) THEN 1 ELSE 0 END,
       CASE WHEN s.session_id IS NULL THEN 0 ELSE 1 END,
       s.browser, s.os, s.os_version, s.load_time_ms, s.pixel_status, o.property_id
FROM orders o
LEFT JOIN landing_sessions s ON s.session_id = o.session_id AND s.property_id = o.property_id
WHERE o.order_time >= ? AND o.order_time < ?{scope}
ORDER BY o.order_time, o.source, o.order_id
"""
GAP_SCOPE = " AND o.property_id = ?"


def gap_query(property_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The gap query for one property (or every one: None) and its extra parameter."""
    if property_id is None:
        return GAP_ROWS_SQL.format(scope=""), ()
    return GAP_ROWS_SQL.format(scope=GAP_SCOPE), (property_id,)


def gap_row(r: Sequence[Any]) -> GapRow:
    """A GapRow from one row of :data:`GAP_ROWS_SQL` (both backends)."""
    return GapRow(
        source=r[0],
        order_id=r[1],
        order_time=int(r[2]),
        attributed_tiktok=bool(r[3]),
        event_id=r[4],
        session_id=r[5],
        pixel_fired=bool(r[6]),
        tiktok_delivered=bool(r[7]),
        has_session=bool(r[8]),
        browser=r[9],
        os=r[10],
        os_version=r[11],
        load_time_ms=None if r[12] is None else int(r[12]),
        pixel_status=r[13],
        property_id=int(r[14]),
    )
