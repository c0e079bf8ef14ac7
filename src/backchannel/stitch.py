"""Stitching: join a conversion to the visitor's landing session and fill what it lacks.

Why: the shop's backend knows the order (email, value) but not the browser's click id, Pixel
cookie, IP or user agent; the browser leg (bc.js -> ``/v1/collect``) knows those but not the
order. TikTok matches best with ttclid + _ttp + ip + user_agent, so the server leg is only as
good as this join.

How a conversion finds its session, strongest key first:

1. ``session_id`` given by the caller (the shop read bc.js's ``_bc_sid`` cookie): that
   session, however old — the caller said so.
2. its ``ttclid`` (sent, or found in ``page.url``): the most recently seen session carrying
   that click id;
3. one of its email hashes, seen on a session before (see :func:`emails_to_attach`): the most
   recently seen such session.

Matches by ttclid or email must be plausible: the session was seen within the click window
(``click_cookie_days``, default 7 — how long bc.js keeps ttclid, and TikTok's default
attribution window) before the conversion, and did not start after it. A repeat customer's
order three months later is not joined to their first visit's click.

What is filled, only where the conversion has nothing: ``ttclid``, ``ttp``, ``fbclid``,
``fbp``, ``fbc``, Google's ``ga_client_id`` (from the ``_ga`` cookie) and Ads click ids
``gclid``/``gbraid``/``wbraid`` — these three as one: only when the conversion has none of
them, so a click id sent by the caller is never paired with another click's from the session
(Google takes one of the three per conversion) — ``ip`` (public addresses only: a private
one is a proxy, not the visitor), ``user_agent``, every other platform's id in ``user.ids``
(each on its own: one platform's id says nothing about another's click), ``page_url`` with
its ``page_referrer`` (the landing page: it carries the click id, and TikTok asks for
``page.url`` whenever ``ttclid`` is sent), and ``session_id``. A value the caller sent
always wins over the session's. :class:`Provenance` records, per identifier,
whether it came from the ``request`` or the ``session``; it is stored with the conversion.

Pure: the caller does the one batched lookup (:func:`lookup_keys` ->
``Store.find_sessions``) and passes the matches in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from backchannel.events import Conversion
from backchannel.store.base import LandingSession, SessionMatch

#: seconds a conversion may precede its session's first page view (clock skew between hosts)
SKEW = 300.0
DEFAULT_WINDOW = 7 * 86400.0

#: user fields filled from a session, in the order they are reported
USER_FIELDS = (
    "ttclid",
    "ttp",
    "fbclid",
    "fbp",
    "fbc",
    "ga_client_id",
    "gclid",
    "gbraid",
    "wbraid",
    "ip",
    "user_agent",
)
#: Google Ads click ids: filled together, and only when the conversion carries none of them
GOOGLE_CLICK_IDS = ("gclid", "gbraid", "wbraid")


@dataclass(slots=True)
class Provenance:
    """Where each identifier of one conversion came from."""

    session_id: str | None = None
    #: "session_id", "ttclid", "email", or None when no session matched
    matched_by: str | None = None
    #: identifier -> "request" | "session"
    fields: dict[str, str] = field(default_factory=dict)
    #: the session joined (not stored: the order ledger reads its signals, see sources/ledger.py)
    session: LandingSession | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        return orjson.dumps(
            {"session_id": self.session_id, "matched_by": self.matched_by, "fields": self.fields}
        ).decode()


@dataclass(slots=True)
class Keys:
    """What a batch of conversions offers the session lookup."""

    session_ids: list[str] = field(default_factory=list)
    ttclids: list[str] = field(default_factory=list)
    email_hashes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.session_ids or self.ttclids or self.email_hashes)


def lookup_keys(conversions: Iterable[Conversion]) -> Keys:
    """The distinct session ids, ttclids and email hashes of ``conversions``."""
    ids: dict[str, None] = {}
    clicks: dict[str, None] = {}
    emails: dict[str, None] = {}
    for c in conversions:
        if c.session_id:
            ids[c.session_id] = None
        if c.user.ttclid:
            clicks[c.user.ttclid] = None
        for email in c.user.email:
            emails[email] = None
    return Keys(list(ids), list(clicks), list(emails))


def index(matches: Iterable[SessionMatch]) -> dict[tuple[str, str], LandingSession]:
    """Matches by (kind, key), for :func:`choose`."""
    return {(m.kind, m.key): m.session for m in matches}


def _plausible(session: LandingSession, event_time: float, window: float) -> bool:
    return session.last_seen >= event_time - window and session.first_seen <= event_time + SKEW


def choose(
    conversion: Conversion,
    found: dict[tuple[str, str], LandingSession],
    *,
    window: float = DEFAULT_WINDOW,
) -> tuple[LandingSession | None, str | None]:
    """The session of ``conversion`` and the key that found it (see the module docstring)."""
    if conversion.session_id:
        session = found.get(("session_id", conversion.session_id))
        if session is not None:
            return session, "session_id"
    t = float(conversion.event_time)
    if conversion.user.ttclid:
        session = found.get(("ttclid", conversion.user.ttclid))
        if session is not None and _plausible(session, t, window):
            return session, "ttclid"
    best: LandingSession | None = None
    for email in conversion.user.email:
        session = found.get(("email", email))
        if (
            session is not None
            and _plausible(session, t, window)
            and (best is None or session.last_seen > best.last_seen)
        ):
            best = session
    if best is not None:
        return best, "email"
    return None, None


def public_ip(text: str | None) -> str | None:
    """The address if it is a public one (what identity.py keeps for ``user.ip``)."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.compressed if address.is_global else None


def apply(
    conversion: Conversion, session: LandingSession | None, matched_by: str | None
) -> Provenance:
    """Fill ``conversion``'s missing identifiers from ``session`` (in place); say where each
    identifier came from. With no session, every present identifier is the request's."""
    user = conversion.user
    provenance = Provenance()
    for name in USER_FIELDS:
        if getattr(user, name):
            provenance.fields[name] = "request"
    for name, given in user.ids.items():
        if given:
            provenance.fields[name] = "request"
    if conversion.page_url:
        provenance.fields["page_url"] = "request"
    if conversion.session_id:
        provenance.session_id = conversion.session_id
    if session is None:
        return provenance
    provenance.matched_by = matched_by
    provenance.session_id = session.session_id
    provenance.session = session
    candidates = {
        "ttclid": session.ttclid,
        "ttp": session.ttp,
        "fbclid": session.fbclid,
        "fbp": session.fbp,
        "fbc": session.fbc,
        "ga_client_id": session.ga_client_id,
        "gclid": session.gclid,
        "gbraid": session.gbraid,
        "wbraid": session.wbraid,
        "ip": public_ip(session.ip),
        "user_agent": session.user_agent,
    }
    if any(getattr(user, name) for name in GOOGLE_CLICK_IDS):
        for name in GOOGLE_CLICK_IDS:
            candidates[name] = None  # the caller's click is the one; the session's may differ
    for name in USER_FIELDS:
        value = candidates[name]
        if value and not getattr(user, name):
            setattr(user, name, value)
            provenance.fields[name] = "session"
    for name, found in session.ids.items():  # the other platforms' ids, each on its own
        if found and not user.ids.get(name):
            user.ids[name] = found
            provenance.fields[name] = "session"
    if not conversion.page_url and session.landing_url:
        conversion.page_url = session.landing_url
        if not conversion.page_referrer:
            conversion.page_referrer = session.referrer
        provenance.fields["page_url"] = "session"
    if not conversion.session_id:
        conversion.session_id = session.session_id
    return provenance


def stitch_all(
    conversions: Sequence[Conversion],
    matches: Iterable[SessionMatch],
    *,
    window: float = DEFAULT_WINDOW,
) -> list[Provenance]:
    """:func:`choose` and :func:`apply` for each conversion; provenance in input order."""
    found = index(matches)
    out: list[Provenance] = []
    for conversion in conversions:
        session, matched_by = choose(conversion, found, window=window)
        out.append(apply(conversion, session, matched_by))
    return out


def emails_to_attach(
    conversions: Sequence[Conversion], provenance: Sequence[Provenance]
) -> list[tuple[str, str]]:
    """(session_id, email_hash) pairs to remember: emails of conversions whose session the
    caller named explicitly (a ttclid or email match is a guess; guesses do not breed more)."""
    pairs: dict[tuple[str, str], None] = {}
    for conversion, origin in zip(conversions, provenance, strict=True):
        if origin.matched_by == "session_id" and origin.session_id:
            for email in conversion.user.email:
                pairs[(origin.session_id, email)] = None
    return list(pairs)
