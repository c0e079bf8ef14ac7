"""Emulation of Snapchat's Conversions API v3: ``POST /v3/{pixel_id}/events`` and the Test
Event Tool ``POST /v3/{pixel_id}/events/validate``, both with ``?access_token=…``.

The contract is ``docs/platforms/snapchat.md`` (cited as §n). Strict where it is:

- the token in the **query string** (§2; a header does not count): missing or not the
  configured one (:class:`SandboxConfig` ``snapchat_token``, None = any non-empty), or a pixel
  other than ``snapchat_pixel``, is HTTP 401 ``{"status": "INVALID", "reason": "Unauthorized
  resources"}`` (the reason Treasure Data quotes for a pixel the token may not use; the 401 is
  what users report for a refused token, §9);
- a JSON object with ``data``: 1 to 2,000 events (§8); top-level keys ``data`` and, on
  ``/events`` only, ``test_event_code`` (Snap's SDK spec, §1);
- per event (§3.1): the keys of Snap's SDK ``CapiEvent``, nothing else; ``event_name`` one of
  Snap's names (§4, upper case); ``event_time`` an integer in **seconds**, no more than 37 days
  old (§8) and not in the future ("Timestamp invalid or out of range", §9); ``action_source``
  ``WEB``, ``MOBILE_APP``, ``OFFLINE`` or one of the documented Meta-style aliases;
  ``event_source_url`` for web events and ``app_data.extinfo`` for app events (§3.1);
- ``user_data`` (§3.2): the SDK's keys only; ``em``, ``ph``, ``fn``, ``ln``, ``ge``, ``ct``,
  ``st``, ``zp``, ``country`` as 64 lowercase hex ("Unhashed PII", §9), a string or a list;
  ``client_ip_address`` an IP address; at least one matching key (em, ph, a mobile ad id, or
  IP and user agent together: "Insufficient PII");
- ``custom_data``: the SDK's keys; ``value`` a number or a numeric string (the SDK types it
  as a number, the docs' examples send strings, §3.3); ``currency`` an upper-case ISO 4217
  code; ``contents`` objects with ``id`` and ``quantity`` / ``item_price`` as strings (the
  docs' example and the SDK's ``Content`` model agree); PURCHASE needs value and currency
  ("Missing price and/or currency in Purchase events", §9).

Answers (§9; Snap's SDK ``EventResponse``/``ValidateResponse``): ``/events`` takes a valid
request with 200 ``{"status": "VALID", "reason": "Events have been processed
successfully."}`` (the reason users quote) and refuses the whole request with 400
``{"status": "INVALID", "reason", "event": <index>, "errors": {"codes": [...],
"error_msgs": [...]}}`` naming the first bad event. ``/events/validate`` checks every event and
answers ``{"status", "test_event": true, "reason", "event_logs": [{"event", "status", "errors",
"warnings"}]}``, 200 when all are valid, 400 when one is not; it records the valid ones as
test events (``_test_event_code`` ``"validate"``), as Snap keeps them for its test-event logs.

Assumptions (Snap documents none of these): ``errors.codes`` are this sandbox's own names
(``INSUFFICIENT_PII``…); ``error_msgs`` start with §9's wording and name the field; unknown
keys are refused (Snap's behaviour is unknown; a misspelt key means a signal that never
arrives); a rate limit is HTTP 429 ``{"status": "INVALID", "reason": "Too many requests"}``;
an injected 5xx is the edge's nginx page.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.catalog import ISO_4217
from backchannel.sandbox.common import MILLISECONDS_FLOOR, is_number, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW
from backchannel.sandbox.emulator import (
    FAULT_REJECTION,
    FAULT_REJECTION_NO_ROW,
    Context,
    Emulator,
    hang,
    json_response,
    nginx_page,
)
from backchannel.sandbox.faults import Action
from backchannel.sandbox.state import EventLog, http_code

PATH = "/v3/{pixel_id}/events"
VALIDATE_PATH = "/v3/{pixel_id}/events/validate"
MAX_EVENTS = 2000  # §8
MAX_AGE = 37 * 86400  # §8: "maximum 37 days back"

SUCCESS_REASON = "Events have been processed successfully."
VALIDATE_REASON = "All events are valid."
INVALID_REASON = "At least one of the events is invalid."
UNAUTHORIZED_REASON = "Unauthorized resources"
RATE_LIMIT_REASON = "Too many requests"
#: what a validated test event is stored as (``_test_event_code``)
VALIDATE = "validate"

# the sandbox's own codes (Snap's are not documented); error_msgs start with §9's wording
MISSING_FIELD = ("MISSING_REQUIRED_FIELD", "Missing required fields")
MISSING_PRICE = ("MISSING_PRICE_OR_CURRENCY", "Missing price and/or currency in Purchase events")
BAD_IP = ("INVALID_IP_ADDRESS", "Invalid IP Address")
BAD_TIME = ("INVALID_TIMESTAMP", "Timestamp invalid or out of range")
UNHASHED = ("UNHASHED_PII", "Unhashed PII")
INSUFFICIENT = ("INSUFFICIENT_PII", "Insufficient PII")
UNKNOWN = ("UNKNOWN_FIELD", "Unknown field")
BAD_VALUE = ("INVALID_VALUE", "Invalid value")
REJECTED = ("REJECTED", "Rejected")

#: §4: Snap's event names (written here from the contract, not taken from the destination)
EVENT_NAMES = frozenset(
    """
    PURCHASE ADD_CART START_CHECKOUT ADD_BILLING VIEW_CONTENT PAGE_VIEW LIST_VIEW SEARCH
    ADD_TO_WISHLIST SIGN_UP SUBSCRIBE START_TRIAL SAVE SHARE INVITE LOGIN RESERVE RATE
    COMPLETE_TUTORIAL LEVEL_COMPLETE ACHIEVEMENT_UNLOCKED SPENT_CREDITS AD_CLICK AD_VIEW
    APP_OPEN APP_INSTALL CUSTOM_EVENT_1 CUSTOM_EVENT_2 CUSTOM_EVENT_3 CUSTOM_EVENT_4
    CUSTOM_EVENT_5
    """.split()
)
#: Snap's native values and the Meta-style aliases its Offline Events page documents
ACTION_SOURCES = frozenset(
    {"WEB", "MOBILE_APP", "OFFLINE", "physical_store", "phone_call", "email", "chat"}
)
#: the SDK's ``CapiEvent`` keys a client sets (§3.1)
EVENT_KEYS = frozenset(
    {
        "event_name",
        "event_time",
        "event_id",
        "action_source",
        "event_source_url",
        "user_data",
        "custom_data",
        "app_data",
        "opt_out",
        "data_processing_options",
        "integration",
    }
)
#: §3.2: hashed identifiers (a hash or a list of hashes)
HASHED_KEYS = frozenset({"em", "ph", "fn", "ln", "ge", "ct", "st", "zp", "country"})
#: §3.2 and the SDK's ``UserData``: plain values
PLAIN_KEYS = frozenset(
    {
        "client_ip_address",
        "client_user_agent",
        "sc_click_id",
        "sc_cookie1",
        "mobile_ad_id",
        "madid",
        "idfv",
        "external_id",
        "subscription_id",
        "lead_id",
        "download_id",
        "partner_id",
    }
)
LIST_KEYS = frozenset({"anon_id"})
#: names other APIs use, sent to Snap by mistake
USER_KEY_HINTS = {
    "email": "em",
    "hashed_email": "em",
    "phone": "ph",
    "phone_number": "ph",
    "hashed_phone_number": "ph",
    "ip": "client_ip_address",
    "ip_address": "client_ip_address",
    "hashed_ip_address": "client_ip_address",
    "user_agent": "client_user_agent",
    "click_id": "sc_click_id",
    "uuid_c1": "sc_cookie1",
}
#: the SDK's ``CustomData`` keys
CUSTOM_KEYS = frozenset(
    """
    currency value content_category content_ids content_type contents delivery_category
    num_items order_id search_string status custom_fields checkin_date travel_end
    travel_start suggested_destinations destination_airport country city region neighborhood
    departing_departure_date departing_arrival_date num_adults origin_airport
    returning_departure_date returning_arrival_date num_children hotel_score postal_code
    num_infants preferred_neighborhoods preferred_star_ratings suggested_hotels brands
    sign_up_method content_name predicted_ltv event_tag destination_ids
    """.split()
)
CONTENT_KEYS = frozenset({"id", "quantity", "item_price", "brand", "delivery_category"})
_DIGITS = re.compile(r"[0-9]+").fullmatch
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?").fullmatch


@dataclass(slots=True)
class Problem:
    """What is wrong with one event: §9's kind (code, message) and the field it concerns."""

    code: str
    message: str

    @classmethod
    def of(cls, kind: tuple[str, str], detail: str) -> Problem:
        return cls(kind[0], f"{kind[1]}: {detail}")


class RequestError(Exception):
    """A refusal of the whole request: its HTTP status and Snap's body."""

    def __init__(self, status: int, body: dict[str, Any], code: str) -> None:
        super().__init__(str(body.get("reason")))
        self.status = status
        self.body = body
        self.code = code


def _invalid(reason: str, code: str = BAD_VALUE[0]) -> RequestError:
    return RequestError(400, {"status": "INVALID", "reason": reason}, code)


def _unauthorized() -> RequestError:
    return RequestError(401, {"status": "INVALID", "reason": UNAUTHORIZED_REASON}, "UNAUTHORIZED")


def check_request(
    pixel: str, query: dict[str, str], raw: bytes, ctx: Context, *, validate: bool
) -> tuple[list[Any], str | None]:
    """(events, test_event_code) of a request whose auth and envelope are right."""
    config = ctx.config
    token = query.get("access_token", "")
    if not token or (config.snapchat_token is not None and token != config.snapchat_token):
        raise _unauthorized()
    if config.snapchat_pixel is not None and pixel != config.snapchat_pixel:
        raise _unauthorized()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid("The request body is not valid JSON") from None
    if type(body) is not dict:
        raise _invalid('The request body must be a JSON object {"data": [...]}')
    allowed = {"data"} if validate else {"data", "test_event_code"}
    for key in body:
        if key not in allowed:
            raise _invalid(f"Unknown field: {key}", UNKNOWN[0])
    code = body.get("test_event_code")
    if code is not None and (type(code) is not str or not code):
        raise _invalid("test_event_code: must be a non-empty string")
    data = body.get("data")
    if type(data) is not list or not data:
        raise _invalid(f"{MISSING_FIELD[1]}: data (a list of 1 to {MAX_EVENTS} events)")
    if len(data) > MAX_EVENTS:
        raise _invalid(f"data: at most {MAX_EVENTS} events per request (got {len(data)})")
    return data, code


def event_problems(index: int, event: Any, now: float) -> list[Problem]:
    """Everything Snap would refuse in one event (the Test Event Tool lists them all)."""
    at = f"data[{index}]"
    if type(event) is not dict:
        return [Problem.of(BAD_VALUE, f"{at} must be an object")]
    found: list[Problem] = []
    for key in event:
        if key not in EVENT_KEYS:
            found.append(Problem.of(UNKNOWN, f"{at}.{key}"))
    name = event.get("event_name")
    if name is None or name == "":
        found.append(Problem.of(MISSING_FIELD, f"{at}.event_name"))
    elif type(name) is not str or name not in EVENT_NAMES:
        found.append(
            Problem.of(
                BAD_VALUE,
                f"{at}.event_name {name!r} is not a Snap event (PURCHASE, ADD_CART, …,"
                " CUSTOM_EVENT_1 … CUSTOM_EVENT_5)",
            )
        )
    found.extend(_time_problems(at, event.get("event_time"), now))
    source = event.get("action_source")
    if source is None or source == "":
        found.append(Problem.of(MISSING_FIELD, f"{at}.action_source"))
    elif source not in ACTION_SOURCES:
        found.append(
            Problem.of(
                BAD_VALUE, f"{at}.action_source must be one of {', '.join(sorted(ACTION_SOURCES))}"
            )
        )
    url = event.get("event_source_url")
    if url is not None and (type(url) is not str or not url):
        found.append(Problem.of(BAD_VALUE, f"{at}.event_source_url must be a non-empty string"))
    elif url is None and source == "WEB":
        found.append(Problem.of(MISSING_FIELD, f"{at}.event_source_url (web events)"))
    if source == "MOBILE_APP":
        app = event.get("app_data")
        if type(app) is not dict or type(app.get("extinfo")) is not list:
            found.append(Problem.of(MISSING_FIELD, f"{at}.app_data.extinfo (app events)"))
    event_id = event.get("event_id")
    if event_id is not None and (type(event_id) is not str or not event_id):
        found.append(Problem.of(BAD_VALUE, f"{at}.event_id must be a non-empty string"))
    for key, kind in (("opt_out", bool), ("integration", str)):
        value = event.get(key)
        if value is not None and type(value) is not kind:
            found.append(Problem.of(BAD_VALUE, f"{at}.{key} must be a {kind.__name__}"))
    options = event.get("data_processing_options")
    if options is not None and (
        type(options) is not list or any(type(o) is not str for o in options)
    ):
        found.append(Problem.of(BAD_VALUE, f"{at}.data_processing_options must be strings"))
    user = event.get("user_data")
    if user is None:
        found.append(Problem.of(MISSING_FIELD, f"{at}.user_data"))
    elif type(user) is not dict:
        found.append(Problem.of(BAD_VALUE, f"{at}.user_data must be an object"))
    else:
        found.extend(_user_problems(at, user))
    custom = event.get("custom_data")
    if custom is not None:
        found.extend(_custom_problems(at, custom))
    if name == "PURCHASE":
        custom_dict = custom if type(custom) is dict else {}
        if custom_dict.get("value") is None or custom_dict.get("currency") is None:
            found.append(Problem.of(MISSING_PRICE, f"{at}.custom_data.value and .currency"))
    return found


def _time_problems(at: str, value: Any, now: float) -> list[Problem]:
    if value is None:
        return [Problem.of(MISSING_FIELD, f"{at}.event_time")]
    if type(value) is not int:
        return [Problem.of(BAD_TIME, f"{at}.event_time must be an integer unix time in seconds")]
    if value >= MILLISECONDS_FLOOR:
        return [Problem.of(BAD_TIME, f"{at}.event_time is in milliseconds; send seconds")]
    if value < now - MAX_AGE:
        return [Problem.of(BAD_TIME, f"{at}.event_time is more than 37 days in the past")]
    if value > now + MAX_FUTURE_SKEW:
        return [Problem.of(BAD_TIME, f"{at}.event_time is in the future")]
    return []


def _user_problems(at: str, user: dict[str, Any]) -> list[Problem]:
    found: list[Problem] = []
    for key, value in user.items():
        path = f"{at}.user_data.{key}"
        if key in HASHED_KEYS:
            values = value if type(value) is list else [value]
            if not values:
                found.append(Problem.of(BAD_VALUE, f"{path} is empty"))
            for one in values:
                if type(one) is not str or is_sha256(one) is None:
                    found.append(Problem.of(UNHASHED, f"{path} must be SHA-256 (64 lowercase hex)"))
                    break
        elif key in PLAIN_KEYS:
            if type(value) is not str or not value:
                found.append(Problem.of(BAD_VALUE, f"{path} must be a non-empty string"))
        elif key in LIST_KEYS:
            if type(value) is not list or any(type(v) is not str for v in value):
                found.append(Problem.of(BAD_VALUE, f"{path} must be a list of strings"))
        else:
            hint = USER_KEY_HINTS.get(key)
            detail = path + (f" (Snap's name for it is '{hint}')" if hint else "")
            found.append(Problem.of(UNKNOWN, detail))
    ip = user.get("client_ip_address")
    if type(ip) is str and ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            found.append(Problem.of(BAD_IP, f"{at}.user_data.client_ip_address"))
    matching = (
        user.get("em")
        or user.get("ph")
        or user.get("mobile_ad_id")
        or user.get("madid")
        or (user.get("client_ip_address") and user.get("client_user_agent"))
    )
    if not matching:
        found.append(
            Problem.of(
                INSUFFICIENT,
                f"{at}.user_data needs em, ph, a mobile ad id, or client_ip_address and"
                " client_user_agent",
            )
        )
    return found


def _custom_problems(at: str, custom: Any) -> list[Problem]:
    if type(custom) is not dict:
        return [Problem.of(BAD_VALUE, f"{at}.custom_data must be an object")]
    found: list[Problem] = []
    for key in custom:
        if key not in CUSTOM_KEYS:
            found.append(Problem.of(UNKNOWN, f"{at}.custom_data.{key}"))
    value = custom.get("value")
    if value is not None and not (
        (is_number(value) and value >= 0) or (type(value) is str and _DECIMAL(value))
    ):
        found.append(Problem.of(BAD_VALUE, f"{at}.custom_data.value must be a number"))
    currency = custom.get("currency")
    if currency is not None and (type(currency) is not str or currency not in ISO_4217):
        found.append(
            Problem.of(BAD_VALUE, f"{at}.custom_data.currency must be an ISO 4217 code (USD)")
        )
    contents = custom.get("contents")
    if contents is not None:
        if type(contents) is not list:
            found.append(Problem.of(BAD_VALUE, f"{at}.custom_data.contents must be a list"))
        else:
            for position, item in enumerate(contents):
                found.extend(_content_problems(f"{at}.custom_data.contents[{position}]", item))
    ids = custom.get("content_ids")
    if ids is not None and (type(ids) is not list or any(type(i) is not str for i in ids)):
        found.append(Problem.of(BAD_VALUE, f"{at}.custom_data.content_ids must be strings"))
    items = custom.get("num_items")
    if items is not None and (type(items) is not int or items < 0):
        found.append(Problem.of(BAD_VALUE, f"{at}.custom_data.num_items must be an integer"))
    for key in ("order_id", "search_string", "content_type", "content_category"):
        text = custom.get(key)
        if text is not None and type(text) is not str:
            found.append(Problem.of(BAD_VALUE, f"{at}.custom_data.{key} must be a string"))
    return found


def _content_problems(path: str, item: Any) -> list[Problem]:
    if type(item) is not dict:
        return [Problem.of(BAD_VALUE, f"{path} must be an object")]
    found = [Problem.of(UNKNOWN, f"{path}.{key}") for key in item if key not in CONTENT_KEYS]
    if type(item.get("id")) is not str or not item.get("id"):
        found.append(Problem.of(MISSING_FIELD, f"{path}.id"))
    quantity = item.get("quantity")
    if quantity is not None and (type(quantity) is not str or not _DIGITS(quantity)):
        found.append(Problem.of(BAD_VALUE, f'{path}.quantity must be a string of digits ("2")'))
    price = item.get("item_price")
    if price is not None and (type(price) is not str or not _DECIMAL(price)):
        found.append(Problem.of(BAD_VALUE, f'{path}.item_price must be a numeric string ("9.5")'))
    return found


def _errors(problems: list[Problem]) -> dict[str, list[str]]:
    return {"codes": [p.code for p in problems], "error_msgs": [p.message for p in problems]}


# --- the HTTP endpoints -------------------------------------------------------------------


async def handle(request: Request, ctx: Context) -> Response:
    """``/v3/{pixel_id}/events`` and its ``/validate`` twin, as Snap answers them."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        return nginx_page(decision.status)
    if decision.action is Action.RATE_LIMIT:
        log.count("429")
        return json_response({"status": "INVALID", "reason": RATE_LIMIT_REASON}, 429)
    validate = request.url.path.endswith("/validate")
    pixel = request.path_params["pixel_id"]
    now = config.clock()
    try:
        data, test_event_code = check_request(
            pixel, dict(request.query_params), raw, ctx, validate=validate
        )
    except RequestError as exc:
        log.count(exc.code)
        return json_response(exc.body, exc.status)
    problems = [event_problems(i, e, now) for i, e in enumerate(data)]
    rejected = decision.reject_event_ids
    if rejected:
        for index, event in enumerate(data):
            if type(event) is dict and event.get("event_id") in rejected:
                why = (
                    FAULT_REJECTION_NO_ROW
                    if decision.without_row
                    else f"data[{index}].event_id {FAULT_REJECTION}"
                )
                problems[index].append(Problem(REJECTED[0], why))
    if validate:
        return _validated(data, problems, pixel, log, config.clock())
    bad = next((i for i, p in enumerate(problems) if p), None)
    if bad is not None:
        first = problems[bad][0]
        log.count(first.code)
        body: dict[str, Any] = {"status": "INVALID", "reason": INVALID_REASON}
        if not (first.code == REJECTED[0] and decision.without_row):
            body["event"] = bad
        body["errors"] = _errors(problems[bad])
        return json_response(body, 400)
    log.store(
        data,
        raw=orjson.dumps(data),
        field=None,
        pixel=pixel,
        test_event_code=test_event_code,
        received_at=config.clock(),
        request_id=secrets.token_hex(8),
    )
    log.count("0")
    response = json_response({"status": "VALID", "reason": SUCCESS_REASON})
    if decision.action is Action.TIMEOUT:  # after_accept: the answer is lost, not the events
        await hang(request, decision.hang)
    return response


def _validated(
    data: list[Any], problems: list[list[Problem]], pixel: str, log: EventLog, now: float
) -> Response:
    """The Test Event Tool's answer: one ``event_logs`` entry per event; the valid events are
    kept as test events (nothing reaches reporting)."""
    event_logs: list[dict[str, Any]] = [
        {
            "event": index,
            "status": "INVALID" if found else "VALID",
            "errors": _errors(found),
            "warnings": [],
        }
        for index, found in enumerate(problems)
    ]
    valid = [e for e, found in zip(data, problems, strict=True) if not found]
    if valid:
        log.store(
            valid,
            raw=orjson.dumps(valid),
            field=None,
            pixel=pixel,
            test_event_code=VALIDATE,
            received_at=now,
            request_id=secrets.token_hex(8),
        )
    ok = len(valid) == len(data)
    log.count(VALIDATE if ok else "validate_invalid")
    return json_response(
        {
            "status": "VALID" if ok else "INVALID",
            "test_event": True,
            "reason": VALIDATE_REASON if ok else INVALID_REASON,
            "event_logs": event_logs,
        },
        200 if ok else 400,
    )


EMULATOR = Emulator(
    name="snapchat",
    routes=((PATH, ("POST",)), (VALIDATE_PATH, ("POST",))),
    event_field="event_name",
    handle=handle,
    # Snap keeps our event_id as the event's own (the default dedup_key)
    sample_credentials={
        "pixel": "5bf81ee1-15b1-4dc1-b636-d7dae49b950e",
        "token": "sandbox-snapchat-capi-token",
    },
)
