"""Snapchat Conversions API v3 (``POST /v3/{pixel_id}/events?access_token=…``): body, request,
verdicts.

The contract is ``docs/platforms/snapchat.md`` (cited below as §n). What shapes this module:

- **The token rides in the query string** (§2: official docs, Snap's own SDK spec, every
  peer). :class:`PreparedRequest` ``body`` (what users see, what dead letters keep) never holds
  it; only ``url`` does, and delivery never logs, stores or shows a request URL (the log
  pipeline also scrubs ``access_token=…`` and every registered secret).
- **A Meta-like body** (§3): ``{"data": [event, …]}``, each event with ``event_name`` (Snap's
  upper-case vocabulary, §4), ``event_time`` in **seconds** (§3.1, Still unsure 1),
  ``event_id``, ``action_source``, ``event_source_url``, ``user_data`` and ``custom_data``.
- **Dedup with the Snap Pixel** (§7): Snap merges a Pixel event and a CAPI event of the same
  pixel that carry the same id, the Pixel's ``client_dedup_id`` (on ``snaptr('track', …)``)
  matching the CAPI ``event_id``. The browser leg's ``snaptr`` mirror (bc.js, built apart
  from this module) gives the Pixel call ``client_dedup_id`` = our ``event_id``, and this
  module sends that same ``event_id``; purchases also carry the order id as
  ``custom_data.order_id``.
- **Test conversions go to the Test Event Tool**, ``POST /v3/{pixel}/events/validate`` (§1:
  "validated, not recorded"), whose ``event_logs`` name each refused event: Snap has no
  Test Events code a user copies from a console (``TEST_EVENT_CODES = False``).

Choices where the contract leaves room, and why:

- ``user_data``: ``em`` is SHA-256 of the trimmed, lowercased address (§3.2, the common
  rule); ``ph`` is SHA-256 of the digits with the country code and no ``+``, ``00`` or trunk
  ``0`` (§3.2, §5: ``+44 844 412 4653`` → ``448444124653``), which is the stored
  ``phone_digits`` (Meta's form). Both as lists (the official example and Snap's SDK spec).
  ``fn``/``ln``/``zp`` are sent hashed, ``ct``/``st``/``country`` hashed here (SDK spec: lists
  of hashes). IP, user agent, ``sc_click_id`` (the landing URL's ``ScCid``) and ``sc_cookie1``
  (the Pixel's ``_scid`` cookie) go as they are (§3.2, §6). ``external_id`` is not sent: Snap's
  public parameter pages do not list it (only its newest SDK model does, without a hashing
  rule).
- ``custom_data``: ``value`` a number (Snap's SDK spec; the docs' examples send strings, Still
  unsure 6), ``currency`` upper-case ISO 4217, ``contents`` with ``quantity`` and
  ``item_price`` as strings (both the docs' example and the SDK's ``Content`` model),
  ``content_ids``, ``num_items``, ``content_type``, ``order_id``, ``search_string``.
- ``action_source``: ``WEB`` for web events; offline and CRM events are ``OFFLINE`` (Snap's
  native value for non-pixel conversions, filed under the pixel). App events need a Snap App
  ID and ``app_data.extinfo`` (§3.1), which Backchannel does not collect: they are not sent
  (:func:`unsendable`).
- ``event_source_url`` is required for web events (§3.1's required list; a website event
  without its page says nothing Snap can use); offline events are sent without one when they
  have none (Still unsure 10).
- **Event names**: the catalog's standard events map to Snap's (:data:`EVENT_NAMES`). Snap
  takes no free-form names (§4): any other event goes under the name the connection's
  ``custom_events`` setting gives it (``PlaceAnOrder=CUSTOM_EVENT_1``), or as it is when it
  already is one of Snap's names (``PAGE_VIEW``); otherwise it is not sent (a dead letter
  naming the fix; ``replay`` sends it once configured).
- ``data_processing_options`` is not sent: Snap documents no meaning for Meta's ``LDU``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from backchannel.destinations.base import (
    Credential,
    Identifier,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
    age_note,
    retry_after_seconds,
    shorten,
)
from backchannel.events import Conversion
from backchannel.identity import sha256_hex
from backchannel.notes import Note

name = "snapchat"
display_name = "Snapchat"
ORDER = 50
ON_BY_DEFAULT = False  # off until connected: a pixel id and a Conversions API token

#: Snap's event vocabulary (§4: RudderStack's v3 mapping, cross-checked with Stape's; Snap
#: takes no free-form names, custom events use the five CUSTOM_EVENT_n slots)
SNAP_EVENTS: frozenset[str] = frozenset(
    """
    PURCHASE ADD_CART START_CHECKOUT ADD_BILLING VIEW_CONTENT PAGE_VIEW LIST_VIEW SEARCH
    ADD_TO_WISHLIST SIGN_UP SUBSCRIBE START_TRIAL SAVE SHARE INVITE LOGIN RESERVE RATE
    COMPLETE_TUTORIAL LEVEL_COMPLETE ACHIEVEMENT_UNLOCKED SPENT_CREDITS AD_CLICK AD_VIEW
    APP_OPEN APP_INSTALL CUSTOM_EVENT_1 CUSTOM_EVENT_2 CUSTOM_EVENT_3 CUSTOM_EVENT_4
    CUSTOM_EVENT_5
    """.split()
)
#: the catalog's standard events -> Snap's (§4's suggested mapping). Events without a Snap
#: counterpart (PlaceAnOrder, Lead, Contact…) are left to the ``custom_events`` setting:
#: sending PlaceAnOrder as PURCHASE would count an order twice beside CompletePayment.
EVENT_NAMES: dict[str, str] = {
    "CompletePayment": "PURCHASE",
    "Purchase": "PURCHASE",
    "AddToCart": "ADD_CART",
    "InitiateCheckout": "START_CHECKOUT",
    "AddPaymentInfo": "ADD_BILLING",
    "ViewContent": "VIEW_CONTENT",
    "Search": "SEARCH",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "CompleteRegistration": "SIGN_UP",
    "Subscribe": "SUBSCRIBE",
    "StartTrial": "START_TRIAL",
    # Snap's RESERVE ("reservation made") is the closest to an appointment booked
    "Schedule": "RESERVE",
}

_EVENT = r"[A-Za-z][A-Za-z0-9_ ]{0,99}"  # events.py's EVENT_NAME
_SNAP_NAME = "|".join(sorted(SNAP_EVENTS, key=len, reverse=True))
_ENTRY = rf"[ \t]*{_EVENT}[ \t]*=[ \t]*(?:{_SNAP_NAME})[ \t]*"
#: ``Event=SNAP_NAME`` entries, ';'- or newline-separated (checked when the value is stored)
CUSTOM_EVENTS_PATTERN = rf"{_ENTRY}(?:[;\n]+{_ENTRY})*;?"

CREDENTIALS = (
    Credential(
        "pixel",
        "Pixel ID",
        # Snap Pixel ids are UUIDs (§1; e.g. 5bf81ee1-15b1-4dc1-b636-d7dae49b950e)
        pattern=r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
        hint="a Snap Pixel ID is a UUID (8-4-4-4-12 hex digits), shown in Events Manager",
    ),
    Credential("token", "Conversions API token", secret=True),
    Credential(
        "custom_events",
        "Snap event per custom event",
        pattern=CUSTOM_EVENTS_PATTERN,
        hint=(
            "Event=CUSTOM_EVENT_1 (or another Snap event name such as SIGN_UP), one per"
            " line or ';'-separated; only for events Snap has no standard name for"
        ),
        required=False,
    ),
)
EMAIL_FORM = ""  # the common rule: trim, lowercase (§3.2)
EMAIL_NORMALIZER = None
IDENTIFIERS = (
    # §6: the click id is the landing URL's ScCid parameter; the Pixel's first-party cookie
    # _scid is "cookie1"
    Identifier("sc_click_id", "click", url_param="ScCid"),
    Identifier("sc_cookie1", "browser", cookie="_scid"),
)
#: quality.py weights (sum 10). §3.2's matching keys: hashed email and phone first (the
#: strongest, and each alone enough), then Snap's click id (it names the ad click), then IP +
#: user agent (a matching key only together) and the _scid cookie. external_id is not sent.
QUALITY_WEIGHTS = {
    "email": 3.0,
    "phone": 3.0,
    "click_id": 2.0,
    "browser_id": 1.0,
    "ip_user_agent": 1.0,
}
IDENTIFIER_SECTION = "user_data"
CLICK_IDS = ("sc_click_id",)
CLICK_ID_LABEL = "ScCid (sc_click_id)"
BROWSER_IDS = ("sc_cookie1",)
BROWSER_ID_LABEL = "_scid cookie"
#: test conversions go to the Test Event Tool endpoint (§1), no code to copy
TEST_EVENT_CODES = False
#: snaptr('track', NAME, {client_dedup_id}): Snap pairs client_dedup_id with our event_id (§7)
PIXEL_CALL = "snaptr"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("snapchat", "snap")
OAUTH = None
DEFAULT_BASE_URL = "https://tr.snapchat.com"
#: §8: 2,000 events per request (RudderStack's MAX_BATCH_SIZE; Still unsure 4)
max_batch = 2000
#: §8: "events can have a date (timestamp) of maximum 37 days back"
MAX_AGE = 37 * 86400  # seconds

ACTION_SOURCE = {"web": "WEB", "offline": "OFFLINE", "crm": "OFFLINE"}
_APP_REASON = (
    "Snapchat files app events under a Snap App ID with app_data (extinfo), which"
    " Backchannel does not collect; app events are not sent to Snapchat"
)
_UNAUTHORIZED = "unauthorized"


class CustomEventsError(ValueError):
    """The ``custom_events`` setting cannot be read; the message says where."""


class UnmappedEvent(ValueError):
    """An event with no Snap name: Snap cannot take it (the row becomes a dead letter with
    this reason; ``replay`` sends it once the connection maps it)."""


# --- event names --------------------------------------------------------------------------


def parse_custom_events(text: str) -> dict[str, str]:
    """``Event=SNAP_NAME`` entries, one per line or ';'-separated, as {event: Snap name}.
    Raises :class:`CustomEventsError` naming the first bad entry."""
    mapping: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split(";")]
    for position, entry in enumerate((e for e in entries if e), start=1):
        where = f"custom_events entry {position} ({entry!r})"
        event, sep, snap = (part.strip() for part in entry.partition("="))
        if not sep or not re.fullmatch(_EVENT, event):
            raise CustomEventsError(f"{where}: expected Event=CUSTOM_EVENT_1")
        if snap not in SNAP_EVENTS:
            raise CustomEventsError(
                f"{where}: {snap!r} is not a Snap event name (CUSTOM_EVENT_1 … CUSTOM_EVENT_5,"
                " or a standard one such as SIGN_UP)"
            )
        if mapping.get(event, snap) != snap:
            raise CustomEventsError(f"{where}: {event} already has a Snap event")
        mapping[event] = snap
    return mapping


def custom_events(target: Target) -> dict[str, str]:
    """The connection's custom event mapping (empty when none is set)."""
    return parse_custom_events(target.settings.get("custom_events", ""))


def event_name(conversion: Conversion, custom: Mapping[str, str] | None = None) -> str | None:
    """Snap's name for the conversion's event, or None when it has none.

    The connection's mapping first (an explicit choice), then the standard mapping, then the
    event itself when it already is a Snap name (``PAGE_VIEW``, ``CUSTOM_EVENT_2``).
    """
    event = conversion.event
    if custom and event in custom:
        return custom[event]
    standard = EVENT_NAMES.get(event)
    if standard is not None:
        return standard
    return event if event in SNAP_EVENTS else None


def _unmapped(event: str) -> str:
    return (
        f"Snapchat has no event named {event!r} and takes no custom names: add"
        f" {event}=CUSTOM_EVENT_1 (CUSTOM_EVENT_1 … CUSTOM_EVENT_5) to the connection's"
        " custom events; not sent to Snapchat"
    )


# --- the body -----------------------------------------------------------------------------


def _number_text(number: float) -> str:
    """A number as Snap's examples write it in strings: ``5``, ``29.95`` (no ``5.0``)."""
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(float(number))


def _user_data(conversion: Conversion) -> dict[str, Any]:
    u = conversion.user
    data: dict[str, Any] = {}
    if u.email:
        data["em"] = list(u.email)
    if u.phone_digits:
        data["ph"] = list(u.phone_digits)  # digits with country code, no '+' (§3.2)
    for key, hashed in (("fn", u.first_name), ("ln", u.last_name), ("zp", u.zip)):
        if hashed is not None:
            data[key] = [hashed]
    for key, plain in (("ct", u.city), ("st", u.state), ("country", u.country)):
        if plain is not None:
            data[key] = [sha256_hex(plain)]
    for key, raw in (
        ("client_ip_address", u.ip),
        ("client_user_agent", u.user_agent),
        ("sc_click_id", u.ids.get("sc_click_id")),
        ("sc_cookie1", u.ids.get("sc_cookie1")),
    ):
        if raw is not None:
            data[key] = raw
    return data


def _custom_data(conversion: Conversion) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if conversion.value is not None:
        data["value"] = conversion.value
    if conversion.currency is not None:
        data["currency"] = conversion.currency.upper()
    if conversion.contents:
        contents = []
        for c in conversion.contents:
            item: dict[str, Any] = {"id": c.id, "quantity": str(c.quantity)}
            if c.price is not None:
                item["item_price"] = _number_text(c.price)
            if c.brand is not None:
                item["brand"] = c.brand
            contents.append(item)
        data["contents"] = contents
        data["content_ids"] = [c.id for c in conversion.contents]
        data["num_items"] = sum(c.quantity for c in conversion.contents)
    if conversion.content_type is not None:
        data["content_type"] = conversion.content_type
    if conversion.order_id is not None:
        data["order_id"] = conversion.order_id
    if conversion.query is not None:
        data["search_string"] = conversion.query
    return data


def event(conversion: Conversion, snap_name: str) -> dict[str, Any]:
    """One element of ``data``, named ``snap_name``."""
    item: dict[str, Any] = {
        "event_name": snap_name,
        "event_time": conversion.event_time,  # seconds (§3.1)
        "event_id": conversion.event_id,  # the Pixel's client_dedup_id (§7)
        "action_source": ACTION_SOURCE[conversion.source],
    }
    if conversion.page_url is not None:
        item["event_source_url"] = conversion.page_url
    item["user_data"] = _user_data(conversion)
    custom = _custom_data(conversion)
    if custom:
        item["custom_data"] = custom
    return item


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """``{"data": [...]}`` for ``batch`` (sharing ``test_event_code``), token excluded.

    Raises :class:`UnmappedEvent` for an event Snap has no name for, :class:`CustomEventsError`
    when the connection's mapping cannot be read, ValueError for what Snap refuses (a
    PURCHASE without value or currency, an app event).
    """
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    code = batch[0].test_event_code
    if any(c.test_event_code != code for c in batch):
        raise ValueError("a batch must share test_event_code")
    custom = custom_events(target)
    data = []
    for conversion in batch:
        snap_name = event_name(conversion, custom)
        if snap_name is None:
            raise UnmappedEvent(_unmapped(conversion.event))
        if conversion.source not in ACTION_SOURCE:
            raise ValueError(_APP_REASON)
        if snap_name == "PURCHASE" and (conversion.value is None or conversion.currency is None):
            # §9: "Missing price and/or currency in Purchase events" -> INVALID
            raise ValueError(
                f"{conversion.event} is sent to Snapchat as PURCHASE, which needs value and"
                " currency"
            )
        data.append(event(conversion, snap_name))
    return {"data": data}


def events_url(target: Target, *, test: bool) -> str:
    """``{base}/v3/{pixel}/events`` (or its ``/validate`` Test Event Tool twin) with the
    token as ``access_token`` in the query (§1, §2)."""
    path = f"/v3/{quote(target.pixel, safe='')}/events"
    if test:
        path += "/validate"
    return f"{target.base_url.rstrip('/')}{path}?{urlencode({'access_token': target.token})}"


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """The request for ``batch``: the body as JSON, the token only in ``url`` (§2). A test
    batch goes to the Test Event Tool (``/events/validate``, §1), which records nothing."""
    body = build_body(batch, target)
    return PreparedRequest(
        url=events_url(target, test=batch[0].test_event_code is not None),
        headers={"Content-Type": "application/json"},
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


# --- the answer ---------------------------------------------------------------------------


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _messages(errors: Any) -> list[str]:
    """``errors.error_msgs`` (§9: ``{codes: [...], error_msgs: [...]}``)."""
    if not isinstance(errors, dict):
        return []
    found = errors.get("error_msgs")
    return [str(m) for m in found] if isinstance(found, list) else []


def _index(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _reason(status: int, payload: dict[str, Any] | None) -> str:
    if payload is None:
        return f"HTTP {status}"
    text = f"Snapchat {payload.get('status') or f'HTTP {status}'}"
    said = payload.get("reason")
    if isinstance(said, str) and said:
        text += f": {said}"
    messages = _messages(payload.get("errors"))
    if messages:
        text += " (" + "; ".join(messages) + ")"
    return text


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read Snap's answer (§9: ``{"status": "VALID"|"INVALID", "reason", "event", "errors"}``).

    - ``VALID`` with a 2xx: DELIVERED. From the Test Event Tool (``test_event`` in the answer)
      that means "valid, not recorded".
    - The Test Event Tool's ``event_logs`` (§9) name each event's status: the INVALID ones are
      refused for good (``failed_rows``, with Snap's messages), the others validated.
    - 401/403 (a token Snap refuses, a pixel the token may not write to: "Unauthorized
      resources") and 404: PERMANENT for the whole request; the worker pauses the
      destination instead of dead-lettering every row.
    - 429, 408 and 5xx: RETRY (Retry-After when given; Snap documents no CAPI rate limit).
    - any other refusal (400 ``INVALID``): PERMANENT; ``event`` (§9: "only present in error
      responses") names the row, which alone becomes a dead letter, the rest is resent.
    - a 2xx whose body is not Snap's (a proxy's page, a cut-off answer): RETRY, since nothing
      says the events were taken.
    """
    text = shorten(body)
    payload = _payload(body)
    said = payload.get("status") if payload is not None else None
    reason = _reason(status, payload)
    wait = retry_after_seconds(headers)
    if status == 429 or status >= 500 or status == 408:
        return Outcome(Verdict.RETRY, reason, retry_after=wait, response=text)
    logs = payload.get("event_logs") if payload is not None else None
    if isinstance(logs, list) and logs and status not in (401, 403, 404):
        failed: dict[int, str] = {}
        for log in logs:
            if not isinstance(log, dict) or log.get("status") == "VALID":
                continue
            index = _index(log.get("event"))
            if index is not None:
                failed[index] = "Snapchat test event INVALID: " + (
                    "; ".join(_messages(log.get("errors"))) or "no message"
                )
        if failed or said == "VALID":
            return Outcome(
                Verdict.DELIVERED,
                f"Snapchat Test Event Tool: {len(logs) - len(failed)} valid, {len(failed)}"
                " invalid (test events are validated, not recorded)",
                response=text,
                partial=bool(failed),
                failed_rows=failed,
            )
    if 200 <= status < 300:
        if said == "VALID":
            return Outcome(Verdict.DELIVERED, reason, response=text)
        if said != "INVALID":
            return Outcome(Verdict.RETRY, f"HTTP {status} without Snapchat's status", response=text)
    unauthorized = _UNAUTHORIZED in str((payload or {}).get("reason") or "").lower()
    whole = status in (401, 403, 404) or unauthorized
    return Outcome(
        Verdict.PERMANENT,
        reason,
        response=text,
        bad_index=None if whole else _index((payload or {}).get("event")),
        whole_request=whole,
    )


# --- what users are told ------------------------------------------------------------------


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``data[]`` items."""
    items = body.get("data")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Nothing beyond source and test code: any events share a request."""
    return ""


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """snaptr fires Snap's names, the same as the Conversions API's (PURCHASE…); an event
    with no Snap name has none (the connection's custom mapping is per connection)."""
    name = EVENT_NAMES.get(event) or (event if event in SNAP_EVENTS else None)
    return (name,) if name is not None else ()


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """App events cannot go to a pixel (§3.1: app events need a Snap App ID and
    ``app_data.extinfo``)."""
    return _APP_REASON if conversion.source not in ACTION_SOURCE else None


def refusals(conversion: Conversion) -> list[Note]:
    """What Snap refuses whatever the connection (§3.1, §3.2, §9): a web event without its
    page URL (``event_source_url`` is required), and an event with no matching key ("at
    least one of em, ph, client_ip_address & client_user_agent"; Snap answers "Insufficient
    PII")."""
    found: list[Note] = []
    if conversion.source == "web" and conversion.page_url is None:
        found.append(
            Note("page.url", "missing: Snapchat refuses web events without event_source_url")
        )
    u = conversion.user
    if not (u.email or u.phone_digits or (u.ip and u.user_agent)):
        found.append(
            Note(
                "user",
                "Snapchat needs an email, a phone, or ip and user_agent together"
                ' ("Insufficient PII"): not sent to Snapchat',
            )
        )
    return found


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    """What would make Snap refuse, drop or poorly match this event."""
    found = age_note(conversion, MAX_AGE, now, "Snapchat")
    if not target.pixel:
        found.append(Note("snapchat.pixel", "no Snapchat pixel id configured"))
    try:
        snap_name = event_name(conversion, custom_events(target))
    except CustomEventsError as exc:
        found.append(Note("snapchat.custom_events", str(exc)))
        snap_name = event_name(conversion)
    if snap_name is None and conversion.source in ACTION_SOURCE:
        found.append(Note("event", _unmapped(conversion.event)))
    found.extend(refusals(conversion))
    if conversion.source not in ACTION_SOURCE:
        found.append(Note("source", _APP_REASON))
    u = conversion.user
    if conversion.source == "web" and not u.ids.get("sc_click_id") and not u.ids.get("sc_cookie1"):
        found.append(
            Note(
                "user",
                "no Snapchat click id (ScCid) or _scid cookie: Snap matches this web event"
                " on email, phone or IP only",
            )
        )
    return found
