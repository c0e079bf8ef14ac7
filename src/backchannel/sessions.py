"""The browser leg's pure half: collect payloads, visitor IPs, origins, user agents, event ids.

Why pure: ``/v1/collect`` receives every page view of a shop, from browsers nobody controls. The
rules that decide what is kept (and what is refused with a ``{path, reason}``) are easiest to
trust when they are plain functions tested without a server; :mod:`backchannel.web.collect`
only adds HTTP, the key check and batched writes.

What a collect message is (sent by ``bc.js``, as JSON in a ``text/plain`` body so a
cross-origin ``sendBeacon`` needs no CORS preflight)::

    {"key": "bc_pub_…",            # the site key (or ?key=… or X-Backchannel-Key)
     "session_id": "…",            # bc.js's first-party session cookie (_bc_sid)
     "url": "https://shop/…", "referrer": "…", "landing": true,
     "ttclid": "…", "ttp": "…", "fbclid": "…", "fbp": "…", "fbc": "…",
     "gclid": "…", "gbraid": "…", "wbraid": "…",   # Google Ads click ids
     "ids": {"sc_click_id": "…", …},   # other platforms' ids (identifiers.generic())
     "ga_client_id": "GA1.1.1234567890.1700000000", # the _ga cookie as read (or the bare id)
     "utm": {"source": "…", "medium": "…", "campaign": "…", "content": "…", "term": "…"},
     "load_time_ms": 812, "pixel": "loaded" | "blocked" | "absent",
     "page_view": true,
     "checkout_token": "84ad7857…",   # Shopify custom pixel: checkout.token of a completed
                                      # checkout (the orders/create webhook's checkout_token)
     "events": [{"event": "CompletePayment", "event_id": "CompletePayment-1001",
                 "at": 1790000000123},                      # platform: TikTok's (the default)
                {"event": "PURCHASE", "event_id": "CompletePayment-1001",   # snaptr's
                 "at": 1790000000124, "platform": "snapchat"},    # client_dedup_id
                {"event": "purchase", "event_id": "1001",   # gtag: the transaction_id
                 "at": 1790000000125, "platform": "google"}]}
       # platform: the PIXEL_MIRROR of a destination (backchannel.mirrors), one per Pixel

The same message comes from ``bc.js`` and from the Shopify custom pixel (``backchannel snippet
shopify``), which reads the same cookies through Shopify's ``browser.cookie`` API and adds
``checkout_token`` when a checkout completes (see :mod:`backchannel.shopify_pixel`).

No PII is collected: no email, phone or name travels on this path (bc.js never reads forms).
The visitor's IP and user agent are taken from the request itself (the browser's own
connection, or ``X-Forwarded-For`` from a trusted proxy), never from the message, so a page
cannot put words in the browser's mouth, and a shop server can never be mistaken for the
visitor.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backchannel import identifiers, mirrors
from backchannel.events import (
    CONTROL_REASON,
    DEFAULT_STRIP,
    EVENT_NAME,
    derive_event_id,
    has_control,
    is_web_url,
    validation_notes,
)
from backchannel.identity import Unusable, normalize_ga_client_id
from backchannel.notes import InvalidConversion, Note
from backchannel.store.base import MIRROR_DEFAULT, BrowserEvent, SessionUpdate
from backchannel.urls import strip_pii

#: bytes; a page view is ~1 KiB, a page with a few mirrored Pixel calls ~2 KiB
MAX_COLLECT_BODY = 16 * 1024
#: ``bc.js`` makes 22-character base64url ids; other first-party ids are accepted if plain
SESSION_ID = r"^[A-Za-z0-9_.\-]{8,128}$"
MAX_EVENTS = 20
#: browser clocks are wrong; a mirrored event dated further from receive time is re-dated
MAX_EVENT_SKEW = 24 * 3600.0

Url = Annotated[str, Field(max_length=2048)]
Ident = Annotated[str, Field(min_length=1, max_length=512)]
Utm = Annotated[str, Field(max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UtmIn(_Strict):
    source: Utm | None = None
    medium: Utm | None = None
    campaign: Utm | None = None
    content: Utm | None = None
    term: Utm | None = None


#: the mirror an event naming no platform is of: the TikTok Pixel's (bc.js mirrored only
#: ``ttq.track`` before the other Pixels, and sent no platform); ``pixel_status`` (the landing
#: page's Pixel state) is that Pixel's too
TIKTOK_PIXEL = MIRROR_DEFAULT


class BrowserEventIn(_Strict):
    event: Annotated[str, Field(min_length=1, max_length=100)]
    event_id: Annotated[str, Field(max_length=256)] | None = None
    #: unix milliseconds (Date.now() in the browser)
    at: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    #: whose Pixel call bc.js mirrored: a destination's ``PIXEL_MIRROR`` (mirrors.platforms():
    #: ttq.track's, fbq's, gtag's, snaptr's, pintrk's, rdt's)
    platform: str = TIKTOK_PIXEL

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, value: str) -> str:
        known = mirrors.platforms()
        if value not in known:
            raise ValueError(f"one of {', '.join(sorted(known))}")
        return value


class CollectIn(_Strict):
    """One message from bc.js: a page view, mirrored Pixel calls, or both."""

    key: Annotated[str, Field(max_length=128)] | None = None
    session_id: Annotated[str, Field(pattern=SESSION_ID)]
    url: Url | None = None
    referrer: Url | None = None
    landing: bool = False
    page_view: bool = True
    ttclid: Ident | None = None
    ttp: Ident | None = None
    fbclid: Ident | None = None
    fbp: Ident | None = None
    fbc: Ident | None = None
    gclid: Ident | None = None
    gbraid: Ident | None = None
    wbraid: Ident | None = None
    #: the _ga cookie as bc.js read it, or a bare client id; normalized here (see parse_collect)
    ga_client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    #: the other platforms' ids by the field their destination declares
    # default_factory, not ``= {}`` / ``= []``: pydantic deep-copies a mutable default for
    # every message (two deepcopy calls of every page view)
    ids: Annotated[dict[str, Ident], Field(max_length=32, default_factory=dict)]
    utm: UtmIn | None = None
    load_time_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None
    pixel: Literal["loaded", "blocked", "absent"] | None = None
    #: Shopify's checkout token (checkout_completed's ``checkout.token``): 32 hex characters
    #: in every capture seen, so 256 leaves room without storing junk
    checkout_token: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    events: Annotated[list[BrowserEventIn], Field(max_length=MAX_EVENTS, default_factory=list)]


@dataclass(slots=True)
class Collected:
    """A validated message, ready for the store."""

    key: str | None
    update: SessionUpdate
    events: list[BrowserEvent]


def parse_collect(
    document: object,
    *,
    now: float,
    ip: str | None,
    user_agent: str | None,
    strip_params: frozenset[str] = DEFAULT_STRIP,
    raw: bytes | None = None,
) -> Collected:
    """Validate one collect message; raise :class:`InvalidConversion` with every bad field.

    ``raw``: the JSON text ``document`` was parsed from. When it holds nothing that can make
    a control character in a string (:data:`_MAY_HOLD_CONTROL`), the field-by-field check
    for them (~18 µs of every page view) is skipped: it can find nothing.

    ``ip`` and ``user_agent`` are the visitor's, taken from the request by the caller.
    ``url`` and ``referrer`` lose query parameters holding an email or phone, or named in
    ``strip_params`` (:mod:`backchannel.urls`): the landing URL is stored and later
    forwarded with conversions stitched to the session. Silently, unlike ingest: bc.js
    reads no answer, and the page is not at fault.

    ``ga_client_id`` is stored as :func:`~backchannel.identity.normalize_ga_client_id` makes
    it (``GA1.1.1234567890.1700000000`` -> ``1234567890.1700000000``, as ingest does); a value
    of another shape (some other script's ``_ga`` cookie) is dropped, silently too: it is not
    worth losing the page view and its click ids over. Too long, or with a control character,
    it is a 422 like every other field.
    """
    if not isinstance(document, dict):
        raise InvalidConversion([Note("(body)", "must be a JSON object")])
    try:
        message = CollectIn.model_validate(document)
    except ValidationError as exc:
        raise InvalidConversion(validation_notes(exc)) from None
    errors = _control_errors(message) if raw is None or _MAY_HOLD_CONTROL.search(raw) else []
    for index, item in enumerate(message.events):
        if EVENT_NAME.match(item.event.strip()) is None:
            errors.append(
                Note(
                    f"events[{index}].event",
                    "must start with a letter and hold letters, digits, _ or spaces",
                )
            )
    for name in ("url", "referrer"):
        value = getattr(message, name)
        if value and not is_web_url(value):
            errors.append(Note(name, "must be an http(s) URL"))
    known = identifiers.generic()
    for name, value in message.ids.items():
        if name not in known:
            errors.append(Note(f"ids.{name}", "not an identifier any destination declares"))
        elif len(value) > known[name].max_length:
            errors.append(Note(f"ids.{name}", f"at most {known[name].max_length} characters"))
        elif has_control(value):
            errors.append(Note(f"ids.{name}", CONTROL_REASON))
    if errors:
        raise InvalidConversion(errors)
    url = strip_pii(message.url, strip_params)[0] if message.url else message.url
    referrer = strip_pii(message.referrer, strip_params)[0] if message.referrer else None
    agent = parse_user_agent(user_agent)
    utm = message.utm or UtmIn()
    update = SessionUpdate(
        session_id=message.session_id,
        at=now,
        url=url,
        referrer=referrer or None,
        landing=message.landing,
        ttclid=message.ttclid,
        ttp=message.ttp,
        fbclid=message.fbclid,
        fbp=message.fbp,
        fbc=message.fbc,
        ga_client_id=_ga_client_id(message.ga_client_id),
        gclid=message.gclid,
        gbraid=message.gbraid,
        wbraid=message.wbraid,
        utm_source=utm.source or None,
        utm_medium=utm.medium or None,
        utm_campaign=utm.campaign or None,
        utm_content=utm.content or None,
        utm_term=utm.term or None,
        ip=ip,
        user_agent=(user_agent or None) and user_agent[:1024],
        browser=agent.browser,
        browser_version=agent.browser_version,
        os=agent.os,
        os_version=agent.os_version,
        load_time_ms=message.load_time_ms,
        pixel_status=message.pixel or "absent",
        page_view=message.page_view,
        ids=dict(message.ids),
        checkout_token=(message.checkout_token or "").strip() or None,
    )
    events = [
        BrowserEvent(
            session_id=message.session_id,
            event=item.event.strip(),
            event_id=item.event_id.strip() if item.event_id else None,
            at=_event_time(item.at, now),
            page_url=url,
            # the landing page's Pixel state is the TikTok Pixel's: it says nothing of the
            # other Pixels' calls
            pixel_status=message.pixel if item.platform == TIKTOK_PIXEL else None,
            platform=item.platform,
        )
        for item in message.events
    ]
    return Collected(message.key, update, events)


_TEXT_FIELDS = (
    "url",
    "referrer",
    "ttclid",
    "ttp",
    "fbclid",
    "fbp",
    "fbc",
    "gclid",
    "gbraid",
    "wbraid",
    "ga_client_id",
    "checkout_token",
)
_UTM_FIELDS = ("source", "medium", "campaign", "content", "term")


#: what a JSON text needs for a string of it to hold a control character (U+0000-U+001F,
#: U+007F): an escape (``\n \r \t \b \f``, ``\u0000``-``\u001f``, ``\u007f``) or DEL
#: itself (raw C0 characters are not valid JSON). An escaped backslash before an ``n`` also
#: matches: then the fields are checked one by one, which is only slower.
_MAY_HOLD_CONTROL = re.compile(rb"\\[nrtbf]|\\u00[01]|\\u007[fF]|\x7f")


def _control_errors(message: CollectIn) -> list[Note]:
    """Control characters in any stored string: a 422 naming it, never a database error
    (PostgreSQL text cannot hold U+0000) that fails every page view sharing the commit."""
    found = [n for n in _TEXT_FIELDS if has_control(getattr(message, n))]
    if message.utm is not None:
        found += [f"utm.{n}" for n in _UTM_FIELDS if has_control(getattr(message.utm, n))]
    found += [
        f"events[{i}].event_id" for i, e in enumerate(message.events) if has_control(e.event_id)
    ]
    return [Note(path, CONTROL_REASON) for path in found]


def _ga_client_id(raw: str | None) -> str | None:
    """The GA4 client id of a ``_ga`` cookie (or of a bare id); None if it is neither."""
    if raw is None:
        return None
    try:
        return normalize_ga_client_id(raw)
    except Unusable:
        return None


def _event_time(at_ms: float | None, now: float) -> float:
    """The browser's time of a Pixel call, unless its clock is too far off to believe."""
    if at_ms is None:
        return now
    at = at_ms / 1000.0
    return at if abs(at - now) <= MAX_EVENT_SKEW else now


# --- event ids -----------------------------------------------------------------------------


def event_id(order_id: str | int, event: str) -> str:
    """The event_id the server derives for ``event`` of order ``order_id``.

    The Python twin of ``bc.eventId(orderId, eventName)`` in bc.js: put it in the thank-you
    page's ``ttq.track(event, props, {event_id})`` when rendering server-side, and the Pixel and
    the Events API send the same id. ``event`` is trimmed as ingest trims it.
    """
    return derive_event_id(order_id, event.strip())


# --- the visitor's IP ----------------------------------------------------------------------


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (a bare address is a /32 or /128); raises ValueError naming the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {value!r}") from None
    return tuple(networks)


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[Network],
) -> str | None:
    """The visitor's address: the connection's, or X-Forwarded-For's when the peer is trusted.

    Why right to left: each proxy appends the address it received the request from, so the
    right end is written by our own proxies and the left end by whoever sent the request (which
    may be forged). Walking from the right, skipping trusted proxies, the first address not
    ours is the client. With no trusted proxies configured, X-Forwarded-For is ignored: any
    browser could otherwise claim any IP.
    """
    address = _address(peer)
    if address is None:
        return None
    if not forwarded_for or not _is_trusted(address, trusted):
        return address.compressed
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        candidate = _address(hop)
        if candidate is None:
            return address.compressed  # garbage in the chain: trust only what we saw
        if not _is_trusted(candidate, trusted):
            return candidate.compressed
        address = candidate
    return address.compressed


@functools.lru_cache(maxsize=4096)
def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a peer or X-Forwarded-For entry, or None. Cached: every page view
    parses its peer (a proxy, or a returning visitor) twice, ~3 µs each time uncached."""
    if not text:
        return None
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def public_address(
    scheme: str,
    host: str | None,
    peer: str | None,
    headers: Mapping[str, str],
    trusted: Sequence[Network],
) -> tuple[str, str | None]:
    """(scheme, host) the page reached us at: the connection's, or a trusted proxy's word.

    Why: behind a TLS-terminating proxy the connection is http and the page is https, so the
    same-origin check of collect refused every page view. ``X-Forwarded-Proto`` (``http`` or
    ``https``) and ``X-Forwarded-Host`` are read only when the connection comes from a
    ``trusted_proxies`` network: from anyone else they are the client's say-so. When a
    header holds a list (proxies that append), the last entry is the one our own proxy
    wrote. ``headers`` is looked up by lowercase name (Starlette's are case-blind).
    """
    address = _address(peer)
    if address is None or not _is_trusted(address, trusted):
        return scheme, host
    proto = _last(headers.get("x-forwarded-proto"))
    if proto is not None and proto.lower() in ("http", "https"):
        scheme = proto.lower()
    forwarded_host = _last(headers.get("x-forwarded-host"))
    if forwarded_host:
        host = forwarded_host
    return scheme, host


def _last(value: str | None) -> str | None:
    if not value:
        return None
    return value.rsplit(",", 1)[-1].strip() or None


def _is_trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    trusted: Sequence[Network],
) -> bool:
    return any(address.version == n.version and address in n for n in trusted)


# --- origins -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` lowercased, default ports dropped; None if not an origin.
    Cached: a shop's pages send a handful of origins, each page view needs it twice."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def origin_allowed(
    origin: str | None, allowed: Sequence[str], *, own_host: str | None, scheme: str
) -> bool:
    """May a page of ``origin`` post to collect?

    ``allowed`` holds normalized origins (``*`` allows any). Empty means same-origin only:
    the Origin's host must be the host this request was addressed to (the Host header, as
    a reverse proxy that keeps it forwards it), which is how a shop serving bc.js from its own
    domain works with no configuration.
    """
    if origin is None:
        return False
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    if "*" in allowed:
        return True
    if allowed:
        return normalized in allowed
    if not own_host:
        return False
    return normalized == normalize_origin(f"{scheme}://{own_host}")


# --- user agents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserAgent:
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None


# Order matters: in-app browsers and Chromium derivatives carry "Chrome/" and "Safari/" too,
# so the most specific tokens are tried first. Only the major version is kept (enough for
# "Safari 17 loses ttclid" in a gap report; full versions are noise and fingerprinting).
_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # musical_ly_<build> is a build number, not a version: only app_version/N is believed
    (
        "TikTok in-app",
        re.compile(r"(?:musical_ly|BytedanceWebview|TikTok)(?:.*?app_version/(\d+))?"),
    ),
    ("Instagram in-app", re.compile(r"Instagram (\d+)")),
    ("Facebook in-app", re.compile(r"(?:FBAV|FBAN|FB_IAB)/?(\d+)?")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/(\d+)")),
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"(?:OPR|OPiOS)/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"(?:HeadlessChrome|Chrome|CriOS|Chromium)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)(?:\.\d+)*(?: Mobile/\S+)? Safari/")),
)
_OSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("iOS", re.compile(r"(?:iPhone|iPad|iPod).*? OS (\d+(?:_\d+)?)")),
    ("Android", re.compile(r"Android (\d+(?:\.\d+)?)")),
    ("Windows", re.compile(r"Windows NT (\d+\.\d+)")),
    ("macOS", re.compile(r"Mac OS X (\d+(?:[_.]\d+)?)")),
    ("ChromeOS", re.compile(r"CrOS \S+ (\d+)")),
    ("Linux", re.compile(r"Linux()")),
)


@functools.lru_cache(maxsize=1024)
def parse_user_agent(text: str | None) -> UserAgent:
    """Browser family and major version, OS and version, from a User-Agent header.

    A small table of regular expressions rather than a UA database: the gap report needs
    the few families that behave differently with tracking (Safari/iOS with ITP, in-app
    browsers of TikTok/Instagram/Facebook, Firefox with ETP, Chromium), not device models.
    Unknown agents give ``None`` fields. ``Windows NT 10.0`` is reported as ``10`` (Windows 11
    sends the same token). iOS/macOS versions use dots (``17_4`` -> ``17.4``). Cached (the
    answer is immutable): a shop's visitors send a few hundred distinct agents, and the
    table costs ~15 µs a page view.
    """
    if not text:
        return UserAgent()
    browser = version = os_name = os_version = None
    for name, pattern in _BROWSERS:
        match = pattern.search(text)
        if match:
            browser, version = name, match.group(1) or None
            break
    for name, pattern in _OSES:
        match = pattern.search(text)
        if match:
            os_name = name
            os_version = (match.group(1) or "").replace("_", ".") or None
            if name == "Windows" and os_version == "10.0":
                os_version = "10"
            break
    if os_name == "Linux" and "Android" in text:
        os_name = "Android"
    return UserAgent(browser, version, os_name, os_version)
