"""The order ledger: which orders exist, and which of them TikTok can claim.

Why a ledger apart from the conversions table: the gap report needs the *truth set* — every
order or subscription that happened, from every source (API, Shopify, Stripe, CSV), whether or
not a conversion was sent for it (a CSV backfill may only record; an order older than the
destinations' window is never sent) — and for each, the evidence that TikTok drove it.

Attribution rule (deliberately simple and explainable, since the report shows it): an order is
*TikTok-attributed* when its landing session or the order itself carries

- a ``ttclid`` (TikTok's click id, appended to ad click URLs), or
- a ``utm_source`` equal, case-insensitively, to one of the configured TikTok values
  (``tiktok_utm_sources``, default ``tiktok,tt,tiktokads``).

The evidence is kept as ``{signal: where}``, e.g. ``{"ttclid": "landing_site",
"utm_source": "landing_site"}``, so the dashboard can say *why* an order counts, not only
that it does. Only the signal's location is stored, never its value: a ttclid is an
identifier and the ledger needs none.

Landing sessions: the browser leg stores them, and ingest joins a conversion to its session
(``backchannel.stitch``) before the ledger hook runs. The hook then gets a :class:`Landing`
made from the session row stitching already read (no extra query): the session's ``ttclid``,
its ``utm_source`` and its landing URL's query count as ``"landing_session"`` evidence, after
the order's own signals (``{"utm_source": "landing_site", "ttclid": "landing_session"}``).
What stitching *filled into* the conversion (``user.ttclid``, ``page.url``) is the session's,
so it is reported as the session's, never as the order's. Orders carry their ``session_id``
in the ledger, so sessions recorded later can still be joined by the report.

Pure: no I/O; the store writes what :func:`entry` returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import orjson

from backchannel.destinations import tiktok as tiktok_destination
from backchannel.events import Conversion
from backchannel.store.base import LandingSession, LedgerEntry

if TYPE_CHECKING:
    from backchannel.stitch import Provenance

DEFAULT_UTM_SOURCES = "tiktok,tt,tiktokads"
#: the destination whose attribution the ledger records (``attributed_tiktok``, the rule
#: above): TikTok's. The gap report reads it for that destination; any other's is derived
#: from the destination's own declarations (``backchannel.report.attributed``)
PLATFORM = tiktok_destination.name
#: where the signals of the landing session a conversion was joined to are reported
LANDING_SESSION = "landing_session"


@dataclass(frozen=True, slots=True)
class Signal:
    """One attribution signal: ``kind`` is ``ttclid`` or ``utm_source``; ``where`` names the
    place it was found (``landing_site``, ``note_attributes``, ``page.url``, ``user.ttclid``,
    ``metadata``, ``csv``, ``landing_session``)."""

    kind: str
    value: str | None
    where: str


@dataclass(frozen=True, slots=True)
class Landing:
    """What the ledger needs of the landing session ingest joined a conversion to.

    ``signals`` are the session's (``where`` is ``landing_session``); ``filled`` names the
    conversion's fields the session supplied (``ttclid``, ``page_url``, ...), which are
    therefore not the order's own signals.
    """

    session_id: str
    #: how stitching found it: ``session_id``, ``ttclid`` or ``email``
    matched_by: str
    signals: tuple[Signal, ...] = ()
    filled: frozenset[str] = frozenset()


def session_signals(session: LandingSession) -> list[Signal]:
    """A landing session's signals: its ``ttclid`` and ``utm_source`` as bc.js sent them,
    then its landing URL's query."""
    signals = [
        Signal("ttclid", session.ttclid, LANDING_SESSION),
        Signal("utm_source", session.utm_source, LANDING_SESSION),
    ]
    signals.extend(url_signals(session.landing_url, LANDING_SESSION))
    return signals


def landing(provenance: Provenance) -> Landing | None:
    """The :class:`Landing` of a stitched conversion, or None when no session was joined."""
    session = provenance.session
    if session is None or provenance.matched_by is None:
        return None
    return Landing(
        session_id=session.session_id,
        matched_by=provenance.matched_by,
        signals=tuple(session_signals(session)),
        filled=frozenset(name for name, where in provenance.fields.items() if where == "session"),
    )


def utm_sources(setting: str | Iterable[str]) -> frozenset[str]:
    """The configured TikTok ``utm_source`` values, lowercased (a comma list or an iterable)."""
    items = setting.split(",") if isinstance(setting, str) else setting
    return frozenset(item.strip().lower() for item in items if item.strip())


def url_signals(url: str | None, where: str) -> list[Signal]:
    """``ttclid`` and ``utm_source`` from a URL or a bare path with a query (Shopify's
    ``landing_site`` is ``/path?query``): what ``urlsplit`` and ``parse_qsl`` find.

    Why by hand for most URLs: the two took ~6 µs of every order at ingest. For an ASCII
    URL without spaces, control characters or brackets, ``urlsplit`` can neither fail nor
    strip anything, and its query is the text after the first ``?`` before the first
    ``#``; each ``name=value`` pair is then read as ``parse_qsl`` reads it, and a value is
    decoded only under one of the two names. Other URLs take the library's way. A property
    test holds the two ways equal."""
    if not url or "?" not in url:
        return []
    if url.isascii() and _PLAIN_URL.search(url) is None:
        query = url.partition("#")[0].partition("?")[2]
        pairs = _named_pairs(query)
    else:
        try:
            query = urlsplit(url).query
        except ValueError:
            return []
        pairs = parse_qsl(query, keep_blank_values=False)
    found: list[Signal] = []
    for key, value in pairs:
        if key in _SIGNAL_NAMES and value.strip():
            found.append(Signal(key, value.strip(), where))
    return found


_SIGNAL_NAMES = ("ttclid", "utm_source")
#: what makes ``urlsplit`` strip, remove or refuse something: C0 controls and space, brackets
#: (IPv6 hosts); and DEL, which it leaves alone, to keep the by-hand way to plain URLs
_PLAIN_URL = re.compile(r"[\x00-\x20\x7f\[\]]")


def _named_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query)``'s pairs named ttclid or utm_source (values decoded only there)."""
    pairs: list[tuple[str, str]] = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if not equals or not value:
            continue  # parse_qsl drops a pair without '=' or with an empty value
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in _SIGNAL_NAMES:
            pairs.append((name, unquote_plus(value)))
    return pairs


def evidence(signals: Iterable[Signal], tiktok_utm: frozenset[str]) -> dict[str, str]:
    """``{signal: where}`` for the signals that point at TikTok; the first place wins."""
    result: dict[str, str] = {}
    for signal in signals:
        if not signal.value or signal.kind in result:
            continue
        if signal.kind == "ttclid" or (
            signal.kind == "utm_source" and signal.value.strip().lower() in tiktok_utm
        ):
            result[signal.kind] = signal.where
    return result


def conversion_signals(
    conversion: Conversion,
    *,
    page_label: str = "page.url",
    user_label: str = "user.ttclid",
    filled: frozenset[str] = frozenset(),
) -> list[Signal]:
    """The signals a canonical conversion carries: its page URL's query, then ``user.ttclid``.

    (``normalize`` copies a ttclid found in ``page.url`` into ``user.ttclid``; listing the URL
    first attributes it to the URL, where it really came from.) Fields in ``filled`` came from
    the landing session (:attr:`Landing.filled`) and are left to :attr:`Landing.signals`.
    """
    signals = [] if "page_url" in filled else url_signals(conversion.page_url, page_label)
    if "ttclid" not in filled:
        signals.append(Signal("ttclid", conversion.user.ttclid, user_label))
    return signals


def entry(
    conversion: Conversion,
    source: str,
    signals: Iterable[Signal],
    tiktok_utm: frozenset[str],
    *,
    event_id: str | None = None,
    landing: Landing | None = None,
) -> LedgerEntry | None:
    """The ledger row of a conversion that is an order, or None.

    An order is a conversion with an ``order_id`` and a value (payment-like events always have
    one; a sign-up has neither and is not an order). ``signals`` are the order's own; the
    ``landing`` session's come after them, so the order's place wins for a signal both carry.
    """
    if conversion.order_id is None or conversion.value is None:
        return None
    if landing is not None:
        signals = [*signals, *landing.signals]
    found = evidence(signals, tiktok_utm)
    return LedgerEntry(
        source=source,
        order_id=conversion.order_id,
        order_time=conversion.event_time,
        value=conversion.value,
        currency=conversion.currency,
        event=conversion.event,
        event_id=conversion.event_id if event_id is None else event_id,
        session_id=conversion.session_id,
        attributed_tiktok=bool(found),
        evidence=orjson.dumps(found),
    )


def api_entry(
    conversion: Conversion, tiktok_utm: frozenset[str], *, landing: Landing | None = None
) -> LedgerEntry | None:
    """The ledger row for ``POST /v1/events``: payment-like events with an order_id only
    (an ``AddToCart`` with an order id is not an order)."""
    spec = conversion.spec
    if spec is None or not spec.payment:
        return None
    own = conversion_signals(conversion, filled=landing.filled if landing else frozenset())
    return entry(conversion, "api", own, tiktok_utm, landing=landing)
