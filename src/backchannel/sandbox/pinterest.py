"""Emulation of Pinterest's Conversions API v5, ``POST /v5/ad_accounts/{ad_account_id}/events``.

The contract is ``docs/platforms/pinterest.md`` (cited as §n), whose primary source is
Pinterest's OpenAPI description (``pinterest/api-description`` ``v5/openapi.json`` 5.23.0).
What it answers, and how sure we are:

- **Auth** (§2): ``Authorization: Bearer <token>``; missing or wrong: HTTP 401
  ``{"code": 2, "message": "Authentication failed."}`` (the spec's example).
  :class:`SandboxConfig` ``pinterest_token`` (None: any non-empty token).
- **Ad account** (§1): the path's id must be digits, at most 18 (the parameter's schema);
  an account the token may not write to (``pinterest_ad_account_id`` set and different):
  HTTP 403 ``{"code": 29, "message": "You are not permitted to access that resource."}``.
- **Schema** (§3): the root, each event, ``custom_data`` and each ``contents`` item allow no
  other keys; required ``event_name``, ``action_source``, ``event_time``, ``user_data``,
  ``event_id``; ``value``/``item_price``/``predicted_ltv`` are strings; hashed ``user_data``
  keys are lists of strings; ``user_data`` needs ``em``, ``hashed_maids`` or the pair
  ``client_ip_address`` + ``client_user_agent``; 1 to 1000 events. A violation refuses the
  whole request: HTTP 400 ``{"code": 4196, "message": "Invalid request: …"}``. The message
  follows the one real refusal on record (a WooCommerce log: "400 … Invalid request:
  Additional properties are not allowed ('category_name' was unexpected)", Python
  jsonschema's wording); code 4196 is the spec's 400 example. *Assumption*: the field's
  path in parentheses after the message, which the real one may not give.
- **Per event** (§9): HTTP 200 ``{"num_events_received", "num_events_processed", "events":
  [{"status", "error_message", "warning_message"}]}`` in request order. An event is
  ``failed`` (with a message of ours: Pinterest's texts are not documented) for an
  ``event_name`` outside the enum (§4: "otherwise the event will not be accepted"), an
  unknown ``action_source``, ``event_time`` in milliseconds, older than 7 days (§8) or in
  the future, an empty ``event_id``, a hashed value that is not 64 lowercase hex, an IP that
  is not one, a ``value``/``item_price`` that is no number, a currency outside ISO 4217.
  Unknown ``user_data`` keys are not refused (the spec allows them) but answered with a
  ``warning_message`` ("fields in the event which are not standard", §9).
  *Assumption*: Pinterest may answer some of these with the documented 422 ("Not all events
  were successfully processed", ``details`` unspecified) instead; our client reads both.
- **Test** (§1): ``?test=true`` answers the same and records nothing at Pinterest; the
  sandbox keeps such events with ``_test_event_code`` ``"test"`` so they can be inspected.
- **Faults**: a rate limit is HTTP 429 ``{"code": 8, …}`` (the spec's example); an injected
  503 is ``{"code": 4197, "message": "The endpoint has been ramped down…"}`` (the spec's),
  other 5xx an nginx page; ``reject_event_ids`` fail those events in the 200 (Pinterest
  names rows), or, with ``reject_without_row``, refuse the request with a 400 naming none.

Accepted (processed) events are kept with ``_pixel`` the ad account id; duplicates count on
(ad account, event_name, event_id), Pinterest's dedup key with the Tag (§7).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.catalog import ISO_4217
from backchannel.sandbox.common import MILLISECONDS_FLOOR, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW, SandboxConfig
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
from backchannel.sandbox.state import http_code

PATH = "/v5/ad_accounts/{ad_account_id}/events"
MAX_EVENTS = 1000  # §3: maxItems
MAX_AGE = 7 * 86400  # §8 (a vendor's documentation; Pinterest's pages state none)
TEST_MARK = "test"

AUTH_FAILED = 2
INVALID_REQUEST = 4196
RATE_LIMITED = 8
NOT_PERMITTED = 29
RAMPED_DOWN = 4197
MESSAGES = {
    AUTH_FAILED: "Authentication failed.",
    NOT_PERMITTED: "You are not permitted to access that resource.",
    RATE_LIMITED: "This request exceeded a rate limit. This can happen if the client exceeds"
    " one\nof the published rate limits within a short time window.",
    RAMPED_DOWN: "The endpoint has been ramped down and is currently not accepting any traffic.",
}

#: §4: the ``event_name`` enum of 5.23.0
EVENT_NAMES = frozenset(
    """
    add_payment_info add_to_cart add_to_wishlist app_install checkout custom
    initiate_checkout lead page_visit search signup subscribe view_category view_content
    watch_video
    """.split()
)
ACTION_SOURCES = frozenset({"app_android", "app_ios", "web", "offline"})

# JSON kinds of the schema's properties (§3): "str", "int", "bool", "obj", "strs" (a list of
# strings), "objs" (a list of objects); a trailing "?" allows null ("nullable: true").
EVENT_KEYS: dict[str, str] = {
    "action_source": "str",
    "app_id": "str?",
    "app_info": "obj",
    "app_name": "str?",
    "app_version": "str?",
    "custom_data": "obj",
    "device_brand": "str?",
    "device_carrier": "str?",
    "device_info": "obj",
    "device_model": "str?",
    "device_type": "str?",
    "event_id": "str",
    "event_name": "str",
    "event_source_url": "str?",
    "event_time": "int",
    "language": "str?",
    "opt_out": "bool",
    "os_version": "str?",
    "partner_name": "str?",
    "user_data": "obj",
    "wifi": "bool",
}
REQUIRED = ("event_name", "action_source", "event_time", "user_data", "event_id")
CUSTOM_KEYS: dict[str, str] = {
    "content_brand": "str?",
    "content_category": "str?",
    "content_ids": "strs",
    "content_name": "str?",
    "contents": "objs",
    "currency": "str?",
    "external_measurement_id": "str?",
    "external_measurement_vendor_id": "int?",
    "np": "str?",
    "num_items": "int",
    "opt_out_type": "str?",
    "order_id": "str?",
    "predicted_ltv": "str?",
    "search_string": "str?",
    "value": "str?",
}
CONTENT_KEYS: dict[str, str] = {
    "id": "str",
    "item_brand": "str",
    "item_category": "str",
    "item_name": "str",
    "item_price": "str",
    "quantity": "int",
}
#: §3.2: the SHA-256 keys, each a list
HASHED_KEYS = tuple("country ct db em external_id fn ge hashed_maids ln ph st zp".split())
_HASHED = frozenset(HASHED_KEYS)
USER_KEYS: dict[str, str] = {
    **dict.fromkeys(HASHED_KEYS, "strs"),
    "click_id": "str?",
    "client_ip_address": "str",
    "client_user_agent": "str",
    "partner_id": "str?",
}
#: ``value``-like strings Pinterest parses into a double
NUMERIC_STRINGS = ("value", "predicted_ltv")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ACCOUNT = re.compile(r"\d{1,18}")
_LANGUAGE = re.compile(r"[A-Za-z]{2}")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
#: the common case without ipaddress's parser (the rest goes through it)
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}").fullmatch


class PinterestError(Exception):
    """A request-level refusal: the HTTP status and ``{"code", "message"}``."""

    def __init__(self, status: int, code: int, message: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(code, ""))
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, "")

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def invalid(message: str, where: str = "") -> PinterestError:
    """A schema refusal (HTTP 400, code 4196), jsonschema's wording, the path after it."""
    text = f"Invalid request: {message}"
    if where:
        text += f" ({where})"
    return PinterestError(400, INVALID_REQUEST, text)


def _show(value: Any) -> str:
    """A value as jsonschema's messages show it (Python's repr), shortened."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: kind -> (JSON type as Python's, null allowed, element type of a list, jsonschema's name)
Kind = tuple[type, bool, type | None, str]
_KINDS: dict[str, Kind] = {
    "strs": (list, False, str, "array"),
    "objs": (list, False, dict, "array"),
}
for _name, (_type, _label) in {
    "str": (str, "string"),
    "int": (int, "integer"),
    "bool": (bool, "boolean"),
    "obj": (dict, "object"),
}.items():
    _KINDS[_name] = (_type, False, None, _label)
    _KINDS[_name + "?"] = (_type, True, None, _label)


def _compile(keys: Mapping[str, str]) -> dict[str, Kind]:
    """Property -> kind, resolved once: the per-event check is then one dict lookup and one
    ``type(x) is`` per field (the sandbox's hot path, as in sandbox/common.py)."""
    return {key: _KINDS[kind] for key, kind in keys.items()}


_EVENT_KINDS = _compile(EVENT_KEYS)
_CUSTOM_KINDS = _compile(CUSTOM_KEYS)
_CONTENT_KINDS = _compile(CONTENT_KEYS)
_USER_KINDS = _compile(USER_KEYS)


def _check_fields(obj: dict[str, Any], kinds: Mapping[str, Kind], where: str) -> None:
    """Raise the schema refusal for the first property not of its kind; properties without
    a kind are the caller's business (refused, or, in user_data, a warning)."""
    for key, value in obj.items():
        kind = kinds.get(key)
        if kind is None:
            continue
        expected, nullable, element, label = kind
        if type(value) is not expected:
            if value is None and nullable:
                continue
            raise invalid(f"{_show(value)} is not of type '{label}'", f"{where}.{key}")
        if element is not None:
            for index, one in enumerate(cast("list[Any]", value)):
                if type(one) is not element:
                    name = "string" if element is str else "object"
                    raise invalid(
                        f"{_show(one)} is not of type '{name}'", f"{where}.{key}[{index}]"
                    )


def _no_other_keys(obj: dict[str, Any], keys: Mapping[str, Any], where: str = "") -> None:
    """``additionalProperties: false``, in jsonschema's words."""
    extra = [key for key in obj if key not in keys]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        verb = "was" if len(extra) == 1 else "were"
        raise invalid(f"Additional properties are not allowed ({names} {verb} unexpected)", where)


def check_request(raw: bytes) -> list[dict[str, Any]]:
    """The events of a request Pinterest's schema accepts (§3); raises :class:`PinterestError`."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise invalid("the body is not valid JSON") from None
    if type(body) is not dict:
        raise invalid(f"{_show(body)} is not of type 'object'")
    _no_other_keys(body, {"data": None})
    if "data" not in body:
        raise invalid("'data' is a required property")
    data = body["data"]
    if type(data) is not list:
        raise invalid(f"{_show(data)} is not of type 'array'", "data")
    if not data:
        raise invalid("[] is too short", "data")
    if len(data) > MAX_EVENTS:
        raise invalid(f"a list of {len(data)} events is too long (at most {MAX_EVENTS})", "data")
    for index, event in enumerate(data):
        _check_event_schema(event, f"data[{index}]")
    return data


def _check_event_schema(event: Any, at: str) -> None:
    if type(event) is not dict:
        raise invalid(f"{_show(event)} is not of type 'object'", at)
    for key in REQUIRED:
        if key not in event:
            raise invalid(f"{key!r} is a required property", at)
    _no_other_keys(event, _EVENT_KINDS, at)
    _check_fields(event, _EVENT_KINDS, at)
    custom = event.get("custom_data")
    if custom is not None:
        where = f"{at}.custom_data"
        _no_other_keys(custom, _CUSTOM_KINDS, where)
        _check_fields(custom, _CUSTOM_KINDS, where)
        for position, item in enumerate(custom.get("contents") or ()):
            _no_other_keys(item, _CONTENT_KINDS, f"{where}.contents[{position}]")
            _check_fields(item, _CONTENT_KINDS, f"{where}.contents[{position}]")
    user = event["user_data"]
    _check_fields(user, _USER_KINDS, f"{at}.user_data")
    if not (
        "em" in user
        or "hashed_maids" in user
        or ("client_ip_address" in user and "client_user_agent" in user)
    ):
        raise invalid(
            f"{_show(user)} is not valid under any of the given schemas (user_data needs em,"
            " hashed_maids, or client_ip_address with client_user_agent)",
            f"{at}.user_data",
        )


def event_problem(event: dict[str, Any], now: float) -> str | None:
    """Why Pinterest would fail this (schema-valid) event, or None (§3, §4, §8)."""
    name = event["event_name"]
    if name not in EVENT_NAMES:
        known = ", ".join(sorted(EVENT_NAMES))
        return f"event_name {name!r} is not a Pinterest event name ({known})"
    source = event["action_source"]
    if source not in ACTION_SOURCES:
        return f"action_source {source!r} is not one of {', '.join(sorted(ACTION_SOURCES))}"
    event_time = event["event_time"]
    if event_time >= MILLISECONDS_FLOOR:
        return "event_time must be a Unix timestamp in seconds (this looks like milliseconds)"
    if event_time < now - MAX_AGE:
        return f"event_time is more than {MAX_AGE // 86400} days in the past"
    if event_time > now + MAX_FUTURE_SKEW:
        return "event_time is in the future"
    if not event["event_id"].strip():
        return "event_id must not be empty"
    language = event.get("language")
    if language is not None and _LANGUAGE.fullmatch(language) is None:
        return f"language {language!r} is not a two-character ISO-639-1 code"
    user = event["user_data"]
    for key, values in user.items():
        if key not in _HASHED:
            continue
        for position, value in enumerate(values):
            if is_sha256(value) is None:
                return (
                    f"user_data.{key}[{position}] must be a SHA-256 hash (64 lowercase hex"
                    " characters of the normalized value)"
                )
    ip = user.get("client_ip_address")
    if ip is not None and _IPV4(ip) is None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return f"user_data.client_ip_address {ip!r} is not an IPv4 or IPv6 address"
    custom = event.get("custom_data") or {}
    for key in NUMERIC_STRINGS:
        value = custom.get(key)
        if value is not None and not _is_decimal(value):
            return f"custom_data.{key} {value!r} cannot be parsed into a number"
    currency = custom.get("currency")
    if currency is not None and currency not in ISO_4217:
        return f"custom_data.currency {currency!r} is not an ISO-4217 currency code"
    for position, item in enumerate(custom.get("contents") or []):
        price = item.get("item_price")
        if price is not None and not _is_decimal(price):
            return f"custom_data.contents[{position}].item_price {price!r} cannot be parsed"
    return None


def _is_decimal(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None and math.isfinite(float(text))


def unknown_user_keys(event: dict[str, Any]) -> str | None:
    """The §9 warning for ``user_data`` keys that are not standard, or None."""
    extra = [key for key in event["user_data"] if key not in USER_KEYS]
    if not extra:
        return None
    return "Fields not standard, ignored: " + ", ".join(f"user_data.{k}" for k in extra)


def check_auth(request: Request, config: SandboxConfig) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise PinterestError(401, AUTH_FAILED)
    if config.pinterest_token is not None and token != config.pinterest_token:
        raise PinterestError(401, AUTH_FAILED)


def check_account(account: str, config: SandboxConfig) -> None:
    if _ACCOUNT.fullmatch(account) is None:
        raise invalid(f"{account!r} does not match '^\\\\d+$' (at most 18 digits)", "ad_account_id")
    if config.pinterest_ad_account_id is not None and account != config.pinterest_ad_account_id:
        raise PinterestError(403, NOT_PERMITTED)


def test_mode(request: Request) -> bool:
    """``?test=true`` (§1: a boolean query parameter)."""
    raw = request.query_params.get("test")
    if raw is None or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    raise invalid(f"{raw!r} is not of type 'boolean'", "test")


# --- the HTTP endpoint --------------------------------------------------------------------


async def handle(request: Request, ctx: Context) -> Response:
    """``POST /v5/ad_accounts/{ad_account_id}/events`` as Pinterest answers it."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        if decision.status == 503:
            return json_response(PinterestError(503, RAMPED_DOWN).body(), 503)
        return nginx_page(decision.status)
    if decision.action is Action.RATE_LIMIT:
        log.count(str(RATE_LIMITED))
        return json_response(PinterestError(429, RATE_LIMITED).body(), 429)
    account = request.path_params["ad_account_id"]
    try:
        check_auth(request, config)
        check_account(account, config)
        test = test_mode(request)
        events = check_request(raw)
        rejected = {
            i for i, e in enumerate(events) if e.get("event_id") in decision.reject_event_ids
        }
        if rejected and decision.without_row:
            raise PinterestError(400, INVALID_REQUEST, FAULT_REJECTION_NO_ROW)
    except PinterestError as exc:
        log.count(str(exc.code))
        return json_response(exc.body(), exc.status)
    now = config.clock()
    answers: list[dict[str, Any]] = []
    processed: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        problem = FAULT_REJECTION if index in rejected else event_problem(event, now)
        warning = unknown_user_keys(event)
        if problem is None:
            processed.append(event)
        answers.append(
            {
                "status": "failed" if problem else "processed",
                "error_message": problem,
                "warning_message": warning,
            }
        )
    if processed:
        log.store(
            processed,
            raw=orjson.dumps(processed),
            field=None,
            pixel=account,
            test_event_code=TEST_MARK if test else None,
            received_at=now,
            request_id="",
        )
    log.count("0")
    response = json_response(
        {
            "num_events_received": len(events),
            "num_events_processed": len(processed),
            "events": answers,
        }
    )
    if decision.action is Action.TIMEOUT:  # after_accept
        await hang(request, decision.hang)
    return response


EMULATOR = Emulator(
    name="pinterest",
    routes=((PATH, ("POST",)),),
    event_field="event_name",
    handle=handle,
    sample_credentials={"pixel": "549755885175", "token": "sandbox-conversion-token"},
)
