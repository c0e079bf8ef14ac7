"""Pinterest Conversions API v5 (``POST /v5/ad_accounts/{ad_account_id}/events``).

The wire contract is ``docs/platforms/pinterest.md`` (cited below as §n; its primary source is
Pinterest's own OpenAPI description, ``pinterest/api-description`` ``v5/openapi.json`` 5.23.0).
What shapes this module:

- **Bearer token, ad account in the path** (§1, §2): ``Authorization: Bearer <conversion
  token>``; the token never travels in the URL or the body, so neither the request log line
  (httpx logs URLs) nor ``PreparedRequest.body`` can hold it.
- **Test events** go to the same URL with ``?test=true`` (§1: "The events will not be recorded
  but the API will still return the same response messages"): Pinterest has no Test Events
  code, so :data:`TEST_EVENT_CODES` is False and a conversion is a test when it carries any
  ``test_event_code``.
- **Strict schema** (§3): the root, each event, ``custom_data`` and each ``contents`` item are
  ``additionalProperties: false``; ``custom_data.value`` and ``item_price`` are **strings**
  ("parsed into a double"); every hashed ``user_data`` key is a **list**.
- **Per-row answers** (§9): a 200 carries ``events[]`` in request order, each ``processed`` or
  ``failed`` with an ``error_message``; :func:`classify` maps the failed ones to
  ``failed_rows`` (dead-lettered alone) and delivers the rest.

Choices where the contract leaves room, each repeated where it is made:

- **Event names** (§4): the catalog's standard events map to Pinterest's enum
  (:data:`EVENT_NAMES`); everything else is sent as ``custom``, the API having no field for a
  custom name. ``PlaceAnOrder`` is ``custom`` too, so an order is not counted twice beside its
  payment (as for Meta). ``ViewContent`` is ``page_visit``: Pinterest's catalog fields are
  recommended "for PageVisit, AddToCart and Checkouts" (§3.3 ``content_ids``).
- **action_source** (§3.1): web -> ``web``, offline and crm -> ``offline``; an app event is
  ``app_ios`` or ``app_android`` from its user agent, and refused (:func:`refusals`) when the
  user agent names neither, rather than filed under the wrong store.
- **Email** under the common rule (§5: "lowercase version"), **phone** as E.164 digits without
  ``+`` (§3.2: "only digits with country code … Remove any symbols"), i.e. ``phone_digits``.
- **click_id** (§6) is the ``epik`` value, from the landing URL's ``epik`` parameter or the
  ``_epik`` cookie (one identifier, ``pin_epik``: Pinterest's Tag writes the URL value into
  that cookie).
- ``num_items`` (given, else the contents' quantities) and ``predicted_ltv`` (a string) go
  in ``custom_data``; ``lead`` and ``delivery_category`` have no Pinterest field.
- ``limited_data_use`` is sent as ``custom_data.opt_out_type: "LDP"`` (§3.3, Pinterest's
  Limited Data Processing flag); ``language`` from ``user.locale`` when it starts with a
  two-letter code; ``partner_name`` is not sent (it is assigned to Pinterest partners).
- **Window**: 7 days (§8; Pinterest's own pages state none, a vendor's documentation does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

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
    row_index,
    shorten,
)
from backchannel.events import Conversion
from backchannel.identity import sha256_hex
from backchannel.notes import Note

name = "pinterest"
display_name = "Pinterest"
ORDER = 60
ON_BY_DEFAULT = False  # off until connected: it needs an ad account and a conversion token
CREDENTIALS = (
    Credential(
        "pixel",
        "Ad account ID",
        # the path parameter's own schema: "^\d+$", maxLength 18 (§1)
        pattern=r"[0-9]{1,18}",
        hint="the numeric ad account id from Ads Manager (up to 18 digits, e.g. 549755885175)",
    ),
    Credential("token", "Conversion access token", secret=True),
)
EMAIL_FORM = ""  # the common rule: trim, lowercase (§5)
EMAIL_NORMALIZER = None
IDENTIFIERS = (
    # §6: "stored in _epik cookie on your domain or &epik= query parameter in the URL"
    Identifier("pin_epik", "click", url_param="epik", cookie="_epik"),
)
#: quality.py weights (sum 10). user_data must hold an email, a mobile ad id or the pair IP +
#: user agent (§3.2), and Pinterest's field descriptions call email ("Used for matching") and
#: IP and user agent ("Used for matching … for all events") the matching keys; the click id
#: "may improve reporting performance"; phone and external_id are further hashed keys. No
#: first-party browser id exists in the API.
QUALITY_WEIGHTS = {
    "email": 3.5,
    "phone": 2.0,
    "click_id": 2.0,
    "external_id": 1.0,
    "ip_user_agent": 1.5,
}
IDENTIFIER_SECTION = "user_data"
CLICK_IDS = ("pin_epik",)
CLICK_ID_LABEL = "epik (URL) / _epik cookie"
BROWSER_IDS: tuple[str, ...] = ()
BROWSER_ID_LABEL = "none"
#: tests go with ?test=true (§1), no code to copy from a console
TEST_EVENT_CODES = False
#: pintrk('track', name, {event_id}): the Tag's event_id pairs with ours (§7)
PIXEL_CALL = "pintrk"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("pinterest",)
OAUTH = None
DEFAULT_BASE_URL = "https://api.pinterest.com"
PATH = "/v5/ad_accounts/{ad_account_id}/events"
#: "maxItems: 1000" (§3, §8)
max_batch = 1000
#: not in Pinterest's pages; "Only events that occurred within the previous seven days may be
#: sent" (Amperity's Pinterest documentation, §8 and Still unsure 1)
MAX_AGE = 7 * 86400  # seconds

#: the catalog's standard events -> Pinterest's ``event_name`` enum (§4); others are "custom"
EVENT_NAMES: dict[str, str] = {
    "ViewContent": "page_visit",
    "Search": "search",
    "AddToWishlist": "add_to_wishlist",
    "AddToCart": "add_to_cart",
    "InitiateCheckout": "initiate_checkout",
    "AddPaymentInfo": "add_payment_info",
    "CompletePayment": "checkout",
    "Purchase": "checkout",
    "CompleteRegistration": "signup",
    "Subscribe": "subscribe",
    "Lead": "lead",
    "SubmitForm": "lead",
}
CUSTOM = "custom"
#: web/offline sources; app events are split by their store (see :func:`action_source`)
ACTION_SOURCE = {"web": "web", "offline": "offline", "crm": "offline"}
#: the documented error codes (§9) this module acts on
AUTH_FAILED = 2
RATE_LIMITED = 8
NOT_PERMITTED = 29
RAMPED_DOWN = 4197

_IOS = re.compile(r"iPhone|iPad|iPod|\biOS\b|CFNetwork", re.IGNORECASE)
_ANDROID = re.compile(r"Android", re.IGNORECASE)
_LANGUAGE = re.compile(r"([A-Za-z]{2})(?:[-_].*)?")


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``data[]`` items."""
    items = body.get("data")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Nothing beyond source and test: any events share a request."""
    return ""


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """pintrk fires the Tag's names, the API's without the underscore (checkout,
    addtocart, pagevisit…): the dedup page compares names without case or separators."""
    name = EVENT_NAMES.get(event)
    return (name,) if name is not None else ()


def event_name(conversion: Conversion) -> str:
    """Pinterest's name for the event: the mapped standard event, else ``custom``."""
    return EVENT_NAMES.get(conversion.event, CUSTOM)


def action_source(conversion: Conversion) -> str | None:
    """``web``/``offline`` by source; an app event's store from its user agent (None when
    the user agent names neither iOS nor Android)."""
    if conversion.source != "app":
        return ACTION_SOURCE[conversion.source]
    agent = conversion.user.user_agent or ""
    if _IOS.search(agent):
        return "app_ios"
    if _ANDROID.search(agent):
        return "app_android"
    return None


def decimal_string(value: float) -> str:
    """A number as Pinterest's string fields take it (§3.3: "Accepted as a string … parsed
    into a double"): the shortest exact decimal, never an exponent (``1e+16`` would be)."""
    return format(Decimal(repr(value)), "f")


def language(conversion: Conversion) -> str | None:
    """The two-letter ISO-639-1 code that starts ``user.locale`` (``en-US`` -> ``en``)."""
    locale = conversion.user.locale
    if locale is None:
        return None
    match = _LANGUAGE.fullmatch(locale.strip())
    return match.group(1).lower() if match else None


def _user_data(conversion: Conversion) -> dict[str, Any]:
    """§3.2: hashed keys as lists, IP, user agent and click id as plain strings."""
    u = conversion.user
    data: dict[str, Any] = {}
    emails = u.email_forms.get(EMAIL_FORM, u.email)
    if emails:
        data["em"] = list(emails)
    if u.phone_digits:
        data["ph"] = list(u.phone_digits)  # digits with country code, no "+"
    for key, hashed in (("fn", u.first_name), ("ln", u.last_name), ("zp", u.zip)):
        if hashed is not None:
            data[key] = [hashed]
    for key, plain in (("ct", u.city), ("st", u.state), ("country", u.country)):
        if plain is not None:  # normalized at ingest, hashed here (as for Meta)
            data[key] = [sha256_hex(plain)]
    if u.external_id:
        data["external_id"] = list(u.external_id)
    for key, raw in (
        ("client_ip_address", u.ip),
        ("client_user_agent", u.user_agent),
        ("click_id", u.ids.get("pin_epik")),
    ):
        if raw is not None:
            data[key] = raw
    return data


def _custom_data(conversion: Conversion) -> dict[str, Any]:
    """§3.3, with ``value`` and ``item_price`` as strings."""
    data: dict[str, Any] = {}
    if conversion.value is not None:
        data["value"] = decimal_string(conversion.value)
    if conversion.currency is not None:
        data["currency"] = conversion.currency
    if conversion.contents:
        data["content_ids"] = [c.id for c in conversion.contents]
        contents = []
        for c in conversion.contents:
            item: dict[str, Any] = {"id": c.id}
            if c.price is not None:
                item["item_price"] = decimal_string(c.price)
            item["quantity"] = c.quantity
            if c.name is not None:
                item["item_name"] = c.name
            if c.category is not None:
                item["item_category"] = c.category
            if c.brand is not None:
                item["item_brand"] = c.brand
            contents.append(item)
        data["contents"] = contents
        data["num_items"] = sum(c.quantity for c in conversion.contents)
    if conversion.num_items is not None:  # a count given wins over the contents' sum
        data["num_items"] = conversion.num_items
    if conversion.order_id is not None:
        data["order_id"] = conversion.order_id
    if conversion.query is not None:
        data["search_string"] = conversion.query
    if conversion.predicted_ltv is not None:  # a string too, "parsed into a double" (§3.3)
        data["predicted_ltv"] = decimal_string(conversion.predicted_ltv)
    if conversion.limited_data_use:
        data["opt_out_type"] = "LDP"  # Limited Data Processing (§3.3)
    return data


def event(conversion: Conversion) -> dict[str, Any]:
    """One ``data[]`` item. Raises ValueError for an app event of unknown store."""
    source = action_source(conversion)
    if source is None:
        raise ValueError(
            "Pinterest files app events as app_ios or app_android; the user agent names neither"
        )
    item: dict[str, Any] = {
        "event_name": event_name(conversion),
        "action_source": source,
        "event_time": conversion.event_time,
        "event_id": conversion.event_id,
    }
    if conversion.page_url is not None:
        item["event_source_url"] = conversion.page_url
    item["user_data"] = _user_data(conversion)
    custom = _custom_data(conversion)
    if custom:
        item["custom_data"] = custom
    spoken = language(conversion)
    if spoken is not None:
        item["language"] = spoken
    return item


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """``{"data": [...]}`` for ``batch``, which is all test or all production (the URL, not
    the body, says which)."""
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    test = batch[0].test_event_code is not None
    if any((c.test_event_code is not None) != test for c in batch):
        raise ValueError("a Pinterest request is all test (?test=true) or all production")
    return {"data": [event(c) for c in batch]}


def events_url(target: Target, *, test: bool) -> str:
    path = PATH.format(ad_account_id=target.pixel)
    return f"{target.base_url.rstrip('/')}{path}" + ("?test=true" if test else "")


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """The request (§1, §2): the token in the Authorization header only."""
    body = build_body(batch, target)
    return PreparedRequest(
        url=events_url(target, test=batch[0].test_event_code is not None),
        headers={
            "Authorization": f"Bearer {target.token}",
            "Content-Type": "application/json",
        },
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


# --- the answer ---------------------------------------------------------------------------


def _load(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _per_event(payload: Mapping[str, Any]) -> list[Any] | None:
    """The per-event answers: ``events`` (§9), also looked for in a 422's ``details``."""
    events = payload.get("events")
    if isinstance(events, list):
        return events
    details = payload.get("details")
    if isinstance(details, Mapping) and isinstance(details.get("events"), list):
        return list(details["events"])
    return None


def _rows(events: list[Any], payload: Mapping[str, Any], status: int, text: str) -> Outcome:
    """Delivered, except the events Pinterest marks ``failed`` (each with its message)."""
    failed: dict[int, str] = {}
    warnings: list[str] = []
    for index, answer in enumerate(events):
        if not isinstance(answer, Mapping):
            failed[index] = "Pinterest: no status for this event"
            continue
        said = answer.get("status")
        message = answer.get("error_message")
        if said != "processed":
            reason = str(message) if message else f"status {said!r} without a message"
            failed[index] = f"Pinterest: {reason}"
        warning = answer.get("warning_message")
        if warning:
            warnings.append(f"event {index}: {warning}")
    processed = payload.get("num_events_processed")
    if isinstance(processed, bool) or not isinstance(processed, int):
        processed = len(events) - len(failed)
    parts = [f"HTTP {status}: {processed} of {len(events)} events processed"]
    if failed:
        parts.append(f"{len(failed)} failed")
    if warnings:
        parts.append("warnings: " + "; ".join(warnings))
    return Outcome(
        Verdict.DELIVERED,
        ", ".join(parts),
        response=text,
        failed_rows=failed,
        partial=bool(failed),
        received=processed,
    )


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read Pinterest's answer (§9).

    - 200 ``{num_events_received, num_events_processed, events[]}``: every event answered
      in request order; the ``failed`` ones (with ``error_message``) are ``failed_rows``,
      refused for good, the rest delivered. A 2xx without ``events`` (a proxy's page, a
      truncated body) says nothing about the events: RETRY.
    - 422 "Not all events were successfully processed" (``DetailedError``, ``details`` not
      specified): read like a 200 when it carries the per-event answers; otherwise a
      refusal naming no row (the worker bisects; a web event resent is deduplicated on its
      ``event_id``).
    - 401 (code 2, "Authentication failed.") and 403 (code 29, "not permitted to access that
      resource": the token's user has no role on the ad account): the credentials, not the
      events; the worker suspends the destination (``whole_request``). 404 likewise (an ad
      account path that does not exist).
    - 429 (code 8, the rate limit) and 5xx (503 code 4197: "ramped down"), 408: RETRY, after
      Retry-After when given.
    - 400 (code 4196 "The request was invalid", schema errors): PERMANENT, naming a row when
      the message does.
    """
    text = shorten(body)
    payload = _load(body)
    payload = payload if isinstance(payload, dict) else None
    if 200 <= status < 300 or status == 422:
        events = _per_event(payload) if payload is not None else None
        if events is not None:
            return _rows(events, payload or {}, status, text)
        if status != 422:
            return Outcome(Verdict.RETRY, f"HTTP {status} without per-event answers", response=text)
    code = payload.get("code") if payload is not None else None
    message = str(payload.get("message") or "") if payload is not None else ""
    reason = f"HTTP {status}"
    if code is not None or message:
        reason = f"Pinterest {code}: {message}" if message else f"Pinterest {code}"
        reason = f"HTTP {status} {reason}"
    wait = retry_after_seconds(headers)
    if status == 429 or status >= 500 or status == 408 or code in (RATE_LIMITED, RAMPED_DOWN):
        return Outcome(Verdict.RETRY, reason, retry_after=wait, response=text)
    whole = status in (401, 403, 404) or code in (AUTH_FAILED, NOT_PERMITTED)
    return Outcome(
        Verdict.PERMANENT,
        reason,
        response=text,
        bad_index=None if whole else row_index(message),
        whole_request=whole,
    )


# --- what users are told ------------------------------------------------------------------


def refusals(conversion: Conversion) -> list[Note]:
    """What Pinterest cannot take whatever the connection (§3.2, §3.1)."""
    found: list[Note] = []
    u = conversion.user
    if not u.email and not (u.ip and u.user_agent):
        found.append(
            Note(
                "user",
                "Pinterest needs a hashed email, or ip and user_agent together"
                " (user_data: em, or client_ip_address with client_user_agent)",
            )
        )
    if action_source(conversion) is None:
        found.append(
            Note(
                "user.user_agent",
                "Pinterest files app events as app_ios or app_android: the user agent"
                " names neither iOS nor Android",
            )
        )
    return found


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """Pinterest takes every source under the ad account (action_source says which)."""
    return None


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    """What would make Pinterest drop, mis-file or poorly use this event."""
    found = age_note(conversion, MAX_AGE, now, "Pinterest")
    if not target.pixel:
        found.append(Note("pinterest.pixel", "no Pinterest ad account id configured"))
    found.extend(refusals(conversion))
    if conversion.event == "PlaceAnOrder":
        found.append(
            Note(
                "event",
                "sent to Pinterest as event_name 'custom', not 'checkout': the payment's"
                " event is the checkout, and an order must not count twice",
            )
        )
    elif conversion.event not in EVENT_NAMES:
        found.append(
            Note(
                "event",
                f"sent to Pinterest as event_name 'custom': Pinterest has no name for"
                f" {conversion.event!r} and its API takes no custom event name",
            )
        )
    if action_source(conversion) == "offline":
        found.append(
            Note(
                "source",
                "Pinterest does not deduplicate offline events: one resent after a lost"
                " answer counts twice",
            )
        )
    return found
