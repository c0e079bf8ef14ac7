"""What every destination module provides, and the verdicts a platform response maps to.

Delivery outcomes, from the worker's point of view::

    Verdict
     ├── DELIVERED   the platform took the batch (TikTok code 0/20001, Meta 2xx)
     ├── RETRY       nothing wrong with the events: rate limit, 5xx, timeout, connection
     │               error, platform-side transient code. Same rows, later, with backoff.
     └── PERMANENT   the platform refused the events or our credentials; resending the same
                     bytes cannot succeed. With ``bad_index`` the refusal names one row,
                     and the worker dead-letters only that row and resends the rest.

The modules are pure: they turn conversions into a :class:`PreparedRequest` and a response
(status, headers, body bytes) into a :class:`Outcome`. The worker does the I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from backchannel.events import Conversion
from backchannel.notes import Note


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(slots=True)
class Outcome:
    """How one request went. ``reason`` is the platform's own message where it gave one."""

    verdict: Verdict
    reason: str
    #: TikTok request_id or Meta fbtrace_id: what the platform's support asks for
    platform_ref: str | None = None
    #: seconds the platform asked us to wait (Retry-After), if it said
    retry_after: float | None = None
    #: index in the batch of the one row the platform blamed, when it named one
    bad_index: int | None = None
    #: the raw response body, shortened, for dead letters and diagnostics
    response: str = ""
    #: delivered except these rows (index in the batch -> the platform's message), each
    #: refused for good: Google Ads' partial failure names them
    failed_rows: Mapping[int, str] = field(default_factory=dict)
    #: the platform refused the OAuth access token (expired, revoked): the worker gets a
    #: new one and sends once more before counting a failure
    reauthorize: bool = False
    #: the refusal concerns our credentials or account, not any row: splitting cannot help.
    #: The worker suspends the destination instead of dead-lettering (see suspension.py).
    whole_request: bool = False
    #: delivered, but the platform says not every event was taken (TikTok 20001, Meta's
    #: events_received below the batch size): the answer is kept for the dashboard
    partial: bool = False
    #: how many events the platform says it took, when it says (Meta's events_received)
    received: int | None = None


@dataclass(slots=True)
class PreparedRequest:
    """An HTTP request ready to send. ``body`` is what users see: it never holds a token."""

    url: str
    headers: dict[str, str]
    content: bytes
    body: dict[str, Any]
    count: int = 0


@dataclass(slots=True)
class Target:
    """Where and as whom to send: the per-installation settings of one destination."""

    base_url: str
    #: TikTok pixel code / Meta pixel (dataset) id
    pixel: str
    token: str = ""
    #: TikTok: event_source_id for non-web sources (offline/crm event set, app id)
    source_ids: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "v25.0"
    #: this destination's own Test Events code (from its connection). Delivery sends it
    #: instead of the conversion's code for TEST conversions only (a conversion is a test
    #: when its ``test_event_code`` is set): Meta's code means nothing to TikTok, and the
    #: reverse. Production conversions are never touched.
    test_event_code: str | None = None
    #: the connection's other values, by :class:`Credential` key: plain ones (an OAuth
    #: client id, conversion actions…) and, decrypted, secret ones (a refresh token…)
    settings: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: an OAuth access token the worker obtained through the destination's :class:`OAuth`
    access_token: str = ""
    #: True while the destination has no credentials and delivers to the local sandbox
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class Credential:
    """One value a connection of a destination needs, as the destination declares it.

    The Connections page renders one field per credential, the CLI's ``token set`` and
    ``connect`` take them, the store keeps them (secrets encrypted), and :class:`Target`
    hands them back to the destination's request builder. ``key`` ``pixel`` (the account's
    public id: a pixel code, a measurement id, a customer id) and ``token`` (its main
    secret) keep the columns every connection has; any other key is stored with the rest.
    """

    key: str
    label: str
    #: stored encrypted, write-only on the page, never logged or shown (last 4 only)
    secret: bool = False
    #: a value must match this whole (re.fullmatch); None: any non-empty text
    pattern: str | None = None
    #: what a valid value looks like, shown beside the field and in the error
    hint: str = ""
    required: bool = True


@dataclass(frozen=True, slots=True)
class Identifier:
    """A click id or first-party browser id a platform matches on, and where it is found.

    Why declared here rather than as fields of the canonical model: a new platform's ids must
    flow from the landing page to its request without any other module naming them. A
    destination lists its identifiers; the canonical ``user`` object accepts each ``field``,
    ingest reads ``url_param`` from the page URL, bc.js keeps ``url_param`` in a first-party
    cookie and reads ``cookie``, landing sessions store them, stitching copies them onto the
    conversion. The builder reads them from ``conversion.user.ids[field]``.

    The four platforms that came first keep their ids as named ``HashedUser`` attributes
    (``ttclid``, ``fbp``, ``gclid``…); their declarations say where those come from, and
    :mod:`backchannel.identifiers` keeps the two kinds apart (``generic``).
    """

    #: the canonical ``user`` field (and ``user.ids`` key): lower-case, platform-prefixed
    field: str
    #: "click": it proves an ad click (attribution); "browser": a first-party visitor id
    kind: Literal["click", "browser"]
    #: the landing URL's query parameter that carries it (exact case, e.g. ``ScCid``)
    url_param: str | None = None
    #: the first-party cookie the platform's Pixel keeps it in (e.g. ``_scid``)
    cookie: str | None = None
    #: how long a value may be (longer ones are dropped with a warning)
    max_length: int = 512


@dataclass(frozen=True, slots=True)
class OAuth:
    """A destination that sends with short-lived access tokens (Google Ads): how to get one.

    The worker calls :attr:`request` with the target (client id/secret, refresh token) and
    sends it; :attr:`parse` reads the answer into (access token, seconds it lives) or raises
    :class:`OAuthError`. The worker caches the token until shortly before it expires and
    fetches a new one once when the platform answers 401.
    """

    request: Callable[[Target], PreparedRequest]
    parse: Callable[[int, bytes], tuple[str, float]]


class OAuthError(Exception):
    """The token endpoint refused (a revoked refresh token, a wrong client): ``permanent``
    means the credentials must be replaced; otherwise it may work on a later try."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Destination(Protocol):
    """A platform. Only its module knows the platform's field names.

    A destination is one module in ``backchannel/destinations/`` that declares the module
    attributes below (found by :mod:`backchannel.destinations`, no list to edit) and one
    emulator in ``backchannel/sandbox/``. Everything else (config, CLI, routing, the
    dashboard, doctor, test orders, metrics) iterates the registry.
    """

    #: the name used everywhere: settings, CLI, routes, metrics labels, outbox rows
    name: str
    #: how people call it: "TikTok", "Google Ads"
    display_name: str
    #: the registry's order (dashboards list destinations in it)
    ORDER: int
    max_batch: int
    #: the platform's production endpoint root (a configured base URL or the sandbox
    #: replaces it while there are no credentials)
    DEFAULT_BASE_URL: str
    #: True: gets outbox rows with no configuration, delivered to the sandbox until a
    #: token is set (TikTok, Meta). False: off until connected (credentials stored).
    ON_BY_DEFAULT: bool
    #: what a connection of it needs, in the order the page shows them
    CREDENTIALS: tuple[Credential, ...]
    #: the email form it hashes with: "" for the common rule, else a key of
    #: ``HashedUser.email_forms`` (e.g. "google")
    EMAIL_FORM: str
    #: the platform's own email rule (a raw address -> the string to hash), computed at
    #: ingest into ``email_forms[EMAIL_FORM]`` where it differs from the common rule (raw
    #: addresses are never stored, so a rule cannot be applied later); None with "" above
    EMAIL_NORMALIZER: Callable[[str], str] | None
    #: its click ids and browser ids and where they come from (see :class:`Identifier`)
    IDENTIFIERS: tuple[Identifier, ...]
    #: quality.py weights of the identifiers it matches on (sum 10); keys of quality.LABELS
    QUALITY_WEIGHTS: Mapping[str, float]
    #: where its body keeps the identifiers (test orders show that part side by side)
    IDENTIFIER_SECTION: str
    #: the ``user`` fields holding its click id (any one counts) and its first-party browser
    #: id, and how the identifiers page names them; empty when it takes none
    CLICK_IDS: tuple[str, ...]
    CLICK_ID_LABEL: str
    BROWSER_IDS: tuple[str, ...]
    BROWSER_ID_LABEL: str
    #: the browser Pixel's call bc.js mirrors for the dedup page, e.g. "ttq.track", "fbq":
    #: bc.js knows how to read each call; the server tells it which ones to watch (the
    #: calls the registry declares) and the name of each (below)
    PIXEL_CALL: str
    #: the ``platform`` its mirrored calls are stored under (``browser_events.platform``,
    #: ``events[].platform`` of /v1/collect): its own name, or a name the destinations sharing
    #: one Pixel share (Google's tag, for GA4 and Google Ads, is "google")
    PIXEL_MIRROR: str
    #: which id of a conversion its Pixel call and its server event both carry, the pair the
    #: platform deduplicates on: our "event_id" (TikTok's event_id, Meta's eventID, Snap's
    #: client_dedup_id…) or the "order_id" (Google's transaction_id)
    DEDUP_ID: Literal["event_id", "order_id"]
    #: utm_source values (lower case) that attribute an order to it in the gap report,
    #: besides its click ids
    UTM_SOURCES: tuple[str, ...]
    #: access tokens from an OAuth refresh flow, or None
    OAUTH: OAuth | None
    #: True when the platform files test events under a Test Events code the user copies
    #: from its console (TikTok, Meta); False when a test goes to a validation endpoint
    #: instead (GA4's /debug/mp/collect, Google Ads' validateOnly), which needs no code
    TEST_EVENT_CODES: bool

    def body_items(self, body: Mapping[str, Any]) -> list[Any]:
        """The per-event items of a body it built, in batch order (TikTok's and Meta's
        ``data``, GA4's ``events``, Google Ads' ``conversions``): what dead letters and test
        orders keep as "the event as sent"."""
        ...

    def pixel_events(self, event: str) -> tuple[str, ...]:
        """The names its Pixel fires a conversion of our ``event`` under (what bc.js mirrors):
        the dedup page takes a mirrored call with another id than the order's for a mismatch
        only under one of these names (compared without case, ``_`` or spaces); empty when
        its Pixel has no name for the event."""
        ...

    def batch_key(self, conversion: Conversion) -> str:
        """What every event of one request must share besides source and test code (GA4:
        the client id, one per request); "" when nothing."""
        ...

    def max_age(self, conversion: Conversion) -> int:
        """Seconds after event_time during which the platform still takes the event."""
        ...

    def build_body(self, batch: Sequence[Conversion], target: Target) -> dict[str, Any]: ...

    def prepare(self, batch: Sequence[Conversion], target: Target) -> PreparedRequest: ...

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome: ...

    def notes(self, conversion: Conversion, target: Target, now: float) -> list[Note]: ...

    def refusals(self, conversion: Conversion) -> list[Note]:
        """What the platform will refuse in this conversion whatever the target (checked
        at ingest, after stitching, and returned as warnings with the 202)."""
        ...

    def unsendable(self, conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
        """Why this installation cannot send the conversion here at all (TikTok: no event
        source id for a non-web source), or None. Ingest stores such a row dead at once,
        with this reason, so ``replay`` sends it once the setting exists."""
        ...


def shorten(body: bytes, limit: int = 2000) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > limit else "")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from APIs and is ignored)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(seconds, 3600.0))


_ROW_PATH = re.compile(r"\b(?:Batch|data)(?:\.(\d+)\.|\[(\d+)\])", re.IGNORECASE)


def row_index(message: str) -> int | None:
    """The batch row a refusal names, from its JSON path: TikTok's ``Batch.3.properties…``,
    and ``data.3.…`` or ``data[3].…`` (Meta's ``error_user_msg`` in our sandbox; the
    issue tracker saw both spellings). None when the message names no row."""
    match = _ROW_PATH.search(message)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def age_note(conversion: Conversion, max_age: int, now: float, platform: str) -> list[Note]:
    age = now - conversion.event_time
    if age > max_age:
        days = max_age // 86400
        return [
            Note(
                "event_time",
                f"{age / 86400:.1f} days old: older than {platform}'s {days}-day window;"
                " delivery will mark it expired instead of sending it",
            )
        ]
    return []
