"""Emulation of TikTok Events API 2.0, ``POST /open_api/v1.3/event/track/``.

The contract is ``../shared/reference/tiktok-events-api.md`` §1-§4. What the emulator does and
why:

- Business errors are HTTP 200 with a non-zero ``code`` (§4), exactly like TikTok, so a client
  that trusts the HTTP status alone fails here as it would in production.
- The first problem found refuses the **whole batch** (§3, "Batch failure mode"): nothing from a
  refused request is stored.
- Every row-level 40002 message starts with ``Batch.{index}.`` and a dotted JSON path, in the
  form of the one real message we have ("Batch.0.properties.contents.0.content_id: Not a valid
  string", §4 and §8 vector 18). Our worker parses that index to dead-letter one row and resend
  the rest. Request-level problems (``data``, ``event_source``) never start with ``Batch.`` so a
  worker cannot mistake them for a row's fault.
- Reasons use the wording of that real message (marshmallow-style, no final period). Where the
  reference has no real message, the wording is ours; those places say "assumption".

The sandbox is deliberately *stricter* than the stored evidence proves TikTok to be on a few
points (unknown fields, plaintext identifiers): those are the mistakes that make real events
silently useless, and a sandbox that accepted them would hide them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.sandbox.common import (
    MILLISECONDS_FLOOR,
    is_number,
    is_sha256,
    plural_days,
    tiktok_request_id,
)
from backchannel.sandbox.config import MAX_FUTURE_SKEW, SandboxConfig
from backchannel.sandbox.emulator import (
    FAULT_REJECTION,
    FAULT_REJECTION_NO_ROW,
    Context,
    Emulator,
    hang,
    nginx_page,
)
from backchannel.sandbox.faults import Action, first_rejected
from backchannel.sandbox.state import EventLog, http_code

PATH = "/open_api/v1.3/event/track/"
MAX_EVENTS = 1000  # events per request (reference §3)

OK = 0
NO_PERMISSION = 40001
INVALID_PARAMETER = 40002
RATE_LIMITED = 40100
BAD_TOKEN = 40105

#: The real 40100 message (reference §4, §8 vector 17).
RATE_LIMIT_MESSAGE = "Too many requests. Please retry in some time."
#: Assumption: the reference gives only the meaning of 40105 ("missing, incorrect or revoked"),
#: not TikTok's wording.
REFUSED_CREDENTIALS = "Access token is incorrect or has been revoked."

EVENT_SOURCES = ("web", "app", "offline", "crm")
_EVENT_SOURCES = frozenset(EVENT_SOURCES)

#: data[] item keys (reference §2.2). Anything else, e.g. the legacy ``timestamp``/``context``
#: of Events 1.0, is refused (assumption: TikTok may ignore unknown keys; we surface them).
ITEM_KEYS = frozenset(
    {
        "event",
        "event_time",
        "event_id",
        "user",
        "properties",
        "page",
        "limited_data_use",
        "lead",
        "app",
        "ad",
    }
)

_HASHED, _PLAIN, _ATT = 1, 2, 3
#: user keys (reference §2.3) and how each is checked.
USER_FIELDS: dict[str, int] = {
    "email": _HASHED,
    "phone": _HASHED,
    "external_id": _HASHED,
    "first_name": _HASHED,
    "last_name": _HASHED,
    "zip_code": _HASHED,
    "ttclid": _PLAIN,
    "ttp": _PLAIN,
    "ip": _PLAIN,
    "user_agent": _PLAIN,
    "locale": _PLAIN,
    "city": _PLAIN,
    "state": _PLAIN,
    "country": _PLAIN,
    "idfa": _PLAIN,
    "idfv": _PLAIN,
    "gaid": _PLAIN,
    "att_status": _ATT,
}
_ATT_STATUSES = frozenset(
    {"AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"}
)
#: The names people carry over from the legacy API, the browser pixel or Meta (reference §2.3,
#: §6, §7): the message says which v2 name was meant.
USER_KEY_HINTS: dict[str, str] = {
    "phone_number": "phone",
    "em": "email",
    "ph": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "zp": "zip_code",
    "zip": "zip_code",
    "ct": "city",
    "st": "state",
    "emails": "email",
    "phones": "phone",
    "external_ids": "external_id",
    "client_ip_address": "ip",
    "client_user_agent": "user_agent",
}
HASH_REASON = "Not a SHA-256 hash (expected 64 lowercase hex characters of the normalized value)"

#: TikTok's currency list (reference §2.4, from TikTok's SDK docs). Kept here rather than
#: imported from ``backchannel.catalog`` on purpose: the emulator must not inherit a mistake
#: of the client it is testing.
CURRENCIES = frozenset(
    """
    AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP GTQ HKD
    HNL HUF IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR PEN
    PHP PKR PLN PYG QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR
    """.split()
)
CONTENT_TYPES = frozenset({"product", "product_group"})

# --- properties (reference §2.4; docs/platforms/tiktok-crm.md §3) -------------------------
# How each documented ``properties`` key is checked. Like ``data[]`` items and ``user``,
# anything else is refused as an unknown field (assumption: TikTok may ignore keys it does not
# know; a misspelt ``num_item`` would then be lost without a word, so the sandbox says so).
# Kept here rather than imported from the client on purpose (see CURRENCIES).
_STR, _NUM, _INT, _STRS, _DATE, _ENUM, _MILEAGE, _RANGE = range(8)
DELIVERY_CATEGORIES = ("in_store", "curbside", "home_delivery")
PROPERTY_ENUMS: dict[str, tuple[str, ...]] = {
    "delivery_category": DELIVERY_CATEGORIES,
    "travel_class": ("eco", "prem", "bus", "first"),
    "state_of_vehicle": ("New", "Used", "CPO"),
    "transmission": ("Automatic", "Manual", "Other"),
    "body_style": (
        "Convertible", "Coupe", "Hatchback", "Minivan", "Truck", "SUV", "Sedan", "Van",
        "Wagon", "Crossover", "Other",
    ),
    "fuel_type": ("Diesel", "Electric", "Flex", "Gasoline", "Hybrid", "Other"),
    "drivetrain": ("AWD", "FOUR_WD", "FWD", "RWD", "TWO_WD", "Other"),
    "condition_of_vehicle": ("Excellent", "Good", "Fair", "Poor", "Other"),
}  # fmt: skip
PROPERTY_FIELDS: dict[str, int] = {
    # standard properties; contents, content_ids, currency, value, content_type have their
    # own checks below
    "query": _STR,
    "search_string": _STR,
    "description": _STR,
    "order_id": _STR,
    "shop_id": _STR,
    "num_items": _NUM,
    "predicted_ltv": _NUM,
    "delivery_category": _ENUM,
    # travel
    "city": _STR,
    "region": _STR,
    "country": _STR,
    "checkin_date": _STR,
    "checkout_date": _STR,
    "num_adults": _NUM,
    "num_children": _NUM,
    "num_infants": _NUM,
    "suggested_hotels": _STRS,
    "departing_departure_date": _DATE,
    "returning_departure_date": _DATE,
    "departing_arrival_date": _DATE,
    "returning_arrival_date": _DATE,
    "origin_airport": _STR,
    "destination_airport": _STR,
    "destination_ids": _STRS,
    "travel_class": _ENUM,
    "user_score": _NUM,
    "preferred_num_stops": _INT,
    "travel_start": _DATE,
    "travel_end": _DATE,
    "suggested_destinations": _STRS,
    # vehicle
    "postal_code": _STR,
    "make": _STR,
    "model": _STR,
    "year": _NUM,
    "state_of_vehicle": _ENUM,
    "mileage": _MILEAGE,
    "exterior_color": _STR,
    "interior_color": _STR,
    "transmission": _ENUM,
    "body_style": _ENUM,
    "fuel_type": _ENUM,
    "drivetrain": _ENUM,
    "preferred_price_range": _RANGE,
    "trim": _STR,
    "vin": _STR,
    "condition_of_vehicle": _ENUM,
    "viewcontent_type": _STR,
    "search_type": _STR,
    "registration_type": _STR,
}
_OWN_CHECKS = frozenset({"contents", "content_ids", "currency", "value", "content_type"})
#: the travel date formats TikTok documents: YYYYMMDD, YYYY-MM-DD, YYYY-MM-DDThh:mmTZD,
#: YYYY-MM-DDThh:mm:ssTZD
TRAVEL_DATE = re.compile(r"\d{8}|\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2}))?")
VIN_MAX = 17  # "Maximum characters: 17"
LEAD_KEYS = frozenset({"lead_id", "lead_event_source"})


class TikTokError(Exception):
    """A refusal: TikTok's ``code`` and ``message``, always sent with HTTP 200."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Accepted:
    """A request that passed every check; ``events`` are the ``data[]`` items as received."""

    pixel: str
    test_event_code: str | None
    events: list[dict[str, Any]]


def envelope(code: int, message: str, request_id: str) -> bytes:
    """TikTok's response body, the same shape for success and business errors (§4)."""
    return orjson.dumps({"code": code, "message": message, "request_id": request_id, "data": {}})


def row_error(index: int, path: str, reason: str) -> TikTokError:
    """A 40002 naming one data[] row, in the form the worker parses (``Batch.{i}.path: …``)."""
    return TikTokError(INVALID_PARAMETER, f"Batch.{index}.{path}: {reason}")


def check_token(header: str | None, config: SandboxConfig) -> None:
    """The ``Access-Token`` header: raw token, no ``Bearer`` prefix (reference §1)."""
    if not header or header.startswith("Bearer "):
        raise TikTokError(BAD_TOKEN, REFUSED_CREDENTIALS)
    if config.token is not None and header != config.token:
        raise TikTokError(BAD_TOKEN, REFUSED_CREDENTIALS)


def check(token: str | None, raw: bytes, config: SandboxConfig, now: float) -> Accepted:
    """Validate one request as TikTok would; raise :class:`TikTokError` on the first problem."""
    check_token(token, config)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Assumption: TikTok's reply to unparsable JSON is not in the stored material; a 40002
        # with HTTP 200 is the plausible form (all its parameter errors take it).
        raise TikTokError(INVALID_PARAMETER, "Request body is not valid JSON") from None
    if type(body) is not dict:
        raise TikTokError(INVALID_PARAMETER, "Request body must be a JSON object")

    source = body.get("event_source")
    if source is None:
        raise TikTokError(INVALID_PARAMETER, "event_source: Missing data for required field")
    if type(source) is not str or source not in _EVENT_SOURCES:
        raise TikTokError(
            INVALID_PARAMETER, f"event_source: Must be one of: {', '.join(EVENT_SOURCES)}"
        )
    pixel = body.get("event_source_id")
    if pixel is None:
        raise TikTokError(INVALID_PARAMETER, "event_source_id: Missing data for required field")
    if type(pixel) is not str or not pixel:
        raise TikTokError(INVALID_PARAMETER, "event_source_id: Not a valid string")
    allowed = (
        (None if config.tiktok_pixel is None else {config.tiktok_pixel})
        if source == "web"
        else config.tiktok_event_sets  # offline/CRM event sets, app ids
    )
    owner = config.pixel_tokens.get(pixel)
    if (allowed is not None and pixel not in allowed) or (owner is not None and token != owner):
        # The real 40001 wording (reference §4); a pixel another token's account owns is
        # refused the same way.
        raise TikTokError(
            NO_PERMISSION,
            f"No permission to operate pixel code: {pixel}. You must be an admin or operator"
            " of this advertiser account.",
        )
    test_event_code = body.get("test_event_code")
    if test_event_code is not None and type(test_event_code) is not str:
        raise TikTokError(INVALID_PARAMETER, "test_event_code: Not a valid string")
    partner = body.get("partner_name")
    if partner is not None and type(partner) is not str:
        raise TikTokError(INVALID_PARAMETER, "partner_name: Not a valid string")

    data = body.get("data")
    if data is None:
        raise TikTokError(INVALID_PARAMETER, "data: Missing data for required field")
    if type(data) is not list:
        raise TikTokError(INVALID_PARAMETER, "data: Not a valid list")
    if not 1 <= len(data) <= MAX_EVENTS:
        raise TikTokError(
            INVALID_PARAMETER, f"data: Length must be between 1 and {MAX_EVENTS} (got {len(data)})"
        )
    oldest = now - config.max_age_seconds
    newest = now + MAX_FUTURE_SKEW
    for index, item in enumerate(data):
        _check_item(index, item, oldest, newest, config.max_age_seconds)
    return Accepted(pixel, test_event_code, data)


def _check_item(index: int, item: Any, oldest: float, newest: float, max_age: int) -> None:
    if type(item) is not dict:
        raise row_error(index, "_schema", "Invalid input type")
    if not ITEM_KEYS.issuperset(item):
        key = next(k for k in item if k not in ITEM_KEYS)
        raise row_error(index, key, "Unknown field")

    event = item.get("event")
    if event is None:
        raise row_error(index, "event", _missing_or_null(item, "event"))
    if type(event) is not str:
        raise row_error(index, "event", "Not a valid string")
    if not event.strip():
        raise row_error(index, "event", "Shorter than minimum length 1")

    event_time = item.get("event_time")
    if event_time is None:
        raise row_error(index, "event_time", _missing_or_null(item, "event_time"))
    if type(event_time) is not int:
        # Strings and floats are refused: TikTok wants an integer (reference §2.2).
        raise row_error(index, "event_time", "Not a valid integer")
    if event_time >= MILLISECONDS_FLOOR:
        raise row_error(
            index,
            "event_time",
            "Must be a unix timestamp in seconds (this looks like milliseconds)",
        )
    # Assumption: TikTok's age limit is undocumented (§9); the sandbox applies its configured one.
    if event_time < oldest:
        raise row_error(index, "event_time", f"Event time is more than {plural_days(max_age)} old")
    if event_time > newest:
        raise row_error(index, "event_time", "Event time is in the future")

    event_id = item.get("event_id")
    if event_id is not None and type(event_id) is not str:
        raise row_error(index, "event_id", "Not a valid string")

    user = item.get("user")
    if user is not None:
        _check_user(index, user)
    properties = item.get("properties")
    if properties is not None:
        _check_properties(index, properties)
    page = item.get("page")
    if page is not None:
        if type(page) is not dict:
            raise row_error(index, "page", "Invalid input type")
        for key in ("url", "referrer"):
            value = page.get(key)
            if value is not None and type(value) is not str:
                raise row_error(index, f"page.{key}", "Not a valid string")
    ldu = item.get("limited_data_use")
    if ldu is not None and type(ldu) is not bool:
        raise row_error(index, "limited_data_use", "Not a valid boolean")
    lead = item.get("lead")
    if lead is not None:
        _check_lead(index, lead)
    for key in ("app", "ad"):
        value = item.get(key)
        if value is not None and type(value) is not dict:
            raise row_error(index, key, "Invalid input type")


def _check_lead(index: int, lead: Any) -> None:
    """``{lead_id, lead_event_source}``: lead_id a non-empty string, required when ``lead`` is
    sent (Segment, which TikTok maintains, sends the object only with a string lead_id)."""
    if type(lead) is not dict:
        raise row_error(index, "lead", "Invalid input type")
    if not LEAD_KEYS.issuperset(lead):
        key = next(k for k in lead if k not in LEAD_KEYS)
        raise row_error(index, f"lead.{key}", "Unknown field")
    lead_id = lead.get("lead_id")
    if lead_id is None:
        raise row_error(index, "lead.lead_id", _missing_or_null(lead, "lead_id"))
    if type(lead_id) is not str:
        raise row_error(index, "lead.lead_id", "Not a valid string")
    if not lead_id.strip():
        raise row_error(index, "lead.lead_id", "Shorter than minimum length 1")
    source = lead.get("lead_event_source")
    if source is not None and type(source) is not str:
        raise row_error(index, "lead.lead_event_source", "Not a valid string")


def _missing_or_null(item: dict[str, Any], key: str) -> str:
    return "Field may not be null" if key in item else "Missing data for required field"


def _check_user(index: int, user: Any) -> None:
    if type(user) is not dict:
        raise row_error(index, "user", "Invalid input type")
    for key, value in user.items():
        kind = USER_FIELDS.get(key)
        if kind is None:
            hint = USER_KEY_HINTS.get(key)
            reason = "Unknown field"
            if hint is not None:
                reason += f" (Events API 2.0 expects '{hint}')"
            raise row_error(index, f"user.{key}", reason)
        if value is None:
            raise row_error(index, f"user.{key}", "Field may not be null")
        if kind == _HASHED:
            _check_hashed(index, key, value)
        elif type(value) is not str:
            raise row_error(index, f"user.{key}", "Not a valid string")
        elif kind == _ATT and value not in _ATT_STATUSES:  # value is a str here
            raise row_error(
                index, f"user.{key}", f"Must be one of: {', '.join(sorted(_ATT_STATUSES))}"
            )


def _check_hashed(index: int, key: str, value: Any) -> None:
    """A string or a list of strings, each a lowercase SHA-256 hex digest (reference §2.3)."""
    if type(value) is str:
        if is_sha256(value) is None:
            raise row_error(index, f"user.{key}", HASH_REASON)
        return
    if type(value) is not list:
        raise row_error(index, f"user.{key}", "Not a valid string")
    for position, one in enumerate(value):
        if type(one) is not str:
            raise row_error(index, f"user.{key}.{position}", "Not a valid string")
        if is_sha256(one) is None:
            raise row_error(index, f"user.{key}.{position}", HASH_REASON)


def _check_properties(index: int, properties: Any) -> None:
    if type(properties) is not dict:
        raise row_error(index, "properties", "Invalid input type")
    contents = properties.get("contents")
    if contents is not None:
        if type(contents) is not list:
            raise row_error(index, "properties.contents", "Not a valid list")
        for position, content in enumerate(contents):
            _check_content(index, position, content)
    content_ids = properties.get("content_ids")
    if content_ids is not None:
        _check_strings(index, "properties.content_ids", content_ids)
    currency = properties.get("currency")
    if currency is not None and (type(currency) is not str or currency not in CURRENCIES):
        # Assumption on wording; the list is TikTok's (reference §2.4).
        shown = currency if type(currency) is str else orjson.dumps(currency).decode()
        raise row_error(index, "properties.currency", f"Currency {shown} is not supported")
    value = properties.get("value")
    if value is not None and not is_number(value):
        raise row_error(index, "properties.value", "Not a valid number")
    content_type = properties.get("content_type")
    if content_type is not None and (
        type(content_type) is not str or content_type not in CONTENT_TYPES
    ):
        raise row_error(index, "properties.content_type", "Must be one of: product, product_group")
    for key, value in properties.items():
        if key in _OWN_CHECKS:
            continue
        kind = PROPERTY_FIELDS.get(key)
        if kind is None:
            raise row_error(index, f"properties.{key}", "Unknown field")
        if value is None:
            raise row_error(index, f"properties.{key}", "Field may not be null")
        _check_property(index, f"properties.{key}", kind, value)


def _check_property(index: int, path: str, kind: int, value: Any) -> None:
    """One documented property against its documented type (wording: assumption, in the
    marshmallow style of the one real 40002 message)."""
    name = path.rsplit(".", 1)[-1]
    if kind in (_STR, _DATE, _ENUM) and type(value) is not str:
        raise row_error(index, path, "Not a valid string")
    if kind == _DATE and TRAVEL_DATE.fullmatch(value) is None:
        raise row_error(
            index,
            path,
            "Not a valid date (YYYYMMDD, YYYY-MM-DD, YYYY-MM-DDThh:mmTZD, YYYY-MM-DDThh:mm:ssTZD)",
        )
    if kind == _ENUM and value not in PROPERTY_ENUMS[name]:
        raise row_error(index, path, f"Must be one of: {', '.join(PROPERTY_ENUMS[name])}")
    if name == "vin" and len(value) > VIN_MAX:
        raise row_error(index, path, f"Longer than maximum length {VIN_MAX}")
    if kind == _NUM and not is_number(value):
        raise row_error(index, path, "Not a valid number")
    if kind == _INT and type(value) is not int:
        raise row_error(index, path, "Not a valid integer")
    if kind == _STRS:
        _check_strings(index, path, value)
    if kind == _MILEAGE:
        if type(value) is not dict:
            raise row_error(index, path, "Invalid input type")
        for key in value:
            if key not in ("value", "unit"):
                raise row_error(index, f"{path}.{key}", "Unknown field")
        for key in ("value", "unit"):
            if value.get(key) is None:
                raise row_error(index, f"{path}.{key}", _missing_or_null(value, key))
        if not is_number(value["value"]):
            raise row_error(index, f"{path}.value", "Not a valid number")
        if value["unit"] not in ("MI", "KM"):
            raise row_error(index, f"{path}.unit", "Must be one of: MI, KM")
    if kind == _RANGE:
        if type(value) is not list or len(value) != 2:
            raise row_error(index, path, "Must be a list of two numbers: [min, max]")
        for position, one in enumerate(value):
            if not is_number(one):
                raise row_error(index, f"{path}.{position}", "Not a valid number")


def _check_content(index: int, position: int, content: Any) -> None:
    path = f"properties.contents.{position}"
    if type(content) is not dict:
        raise row_error(index, path, "Invalid input type")
    content_id = content.get("content_id")
    if content_id is not None and type(content_id) is not str:
        # The one real 40002 message in the reference, reproduced exactly (§4, §8 vector 18).
        raise row_error(index, f"{path}.content_id", "Not a valid string")
    for key in ("quantity", "price"):
        number = content.get(key)
        if number is not None and not is_number(number):
            raise row_error(index, f"{path}.{key}", "Not a valid number")
    content_type = content.get("content_type")
    if content_type is not None and (
        type(content_type) is not str or content_type not in CONTENT_TYPES
    ):
        raise row_error(index, f"{path}.content_type", "Must be one of: product, product_group")


def _check_strings(index: int, path: str, values: Any) -> None:
    if type(values) is not list:
        raise row_error(index, path, "Not a valid list")
    for position, one in enumerate(values):
        if type(one) is not str:
            raise row_error(index, f"{path}.{position}", "Not a valid string")


# --- the HTTP endpoint --------------------------------------------------------------------


async def handle(request: Request, ctx: Context) -> Response:
    """``POST /open_api/v1.3/event/track/`` as TikTok answers it."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        return nginx_page(decision.status)
    request_id = tiktok_request_id()
    if decision.action is Action.RATE_LIMIT:
        return _reply(log, RATE_LIMITED, RATE_LIMIT_MESSAGE, request_id)
    try:
        accepted = check(request.headers.get("access-token"), raw, config, config.clock())
        bad = first_rejected(accepted.events, decision.reject_event_ids)
        if bad is not None and decision.without_row:
            raise TikTokError(INVALID_PARAMETER, FAULT_REJECTION_NO_ROW)
        if bad is not None:
            raise row_error(bad, "event_id", FAULT_REJECTION)
    except TikTokError as exc:
        return _reply(log, exc.code, exc.message, request_id)
    log.store(
        accepted.events,
        raw=raw,
        field="data",
        pixel=accepted.pixel,
        test_event_code=accepted.test_event_code,
        received_at=config.clock(),
        request_id=request_id,
    )
    response = _reply(log, OK, "OK", request_id)
    if decision.action is Action.TIMEOUT:  # after_accept: the answer is what gets lost
        await hang(request, decision.hang)
    return response


def _reply(log: EventLog, code: int, message: str, request_id: str) -> Response:
    log.count(str(code))
    # Always HTTP 200: TikTok reports business errors in the body (reference §4).
    return Response(envelope(code, message, request_id), 200, media_type="application/json")


EMULATOR = Emulator(
    name="tiktok",
    routes=((PATH, ("POST",)),),
    event_field="event",
    handle=handle,
    sample_credentials={"pixel": "CSANDBOX0000000000000", "token": "sandbox-access-token"},
)
