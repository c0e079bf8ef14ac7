"""Emulation of the Reddit Conversions API v3, ``POST /api/v3/pixels/{pixel_id}/conversion_events``.

The contract is ``docs/platforms/reddit.md`` (§n below). Reddit speaks HTTP; its error body
is ``{"error": {"code", "message", "fields": [{"field", "message"}]}}``, the shape of a real
v3 answer Segment recorded (§9: ``$.data.events[0].user.UUID`` "invalid UUID: UUID must be
RFC-4122 compliant"). What the emulator checks, in the order Reddit would meet it:

- ``User-Agent``: a missing or library-default agent (``python-httpx/…``, ``Go-http-client``,
  ``curl``…) is throttled: 429 "Your user agent was automatically ratelimited." (§2).
- ``Authorization: Bearer``: none is 401 "No bearer token provided", a wrong one 401
  "UNAUTHORIZED"; a pixel other than ``reddit_pixel`` 403 "You're not authorized to post
  conversions to Pixel ID {id}." (§9).
- The body: ``{"data": {"events": [...], "test_id"?, "partner"?}}``, 1 to 1,000 events
  (more: 400 "Bad Request", §8). v2 names (``test_mode``, ``event_type``, ``event_metadata``,
  ``event_at_ms``, ``value_decimal``, ``opt_out``) are refused naming their v3 successor.
- Every event (all of them, so the count in the message is right): ``event_at`` an integer
  in **milliseconds** within 168 hours (Reddit's own message: "event_at timestamp must be
  less than 168h0m0s old"; a value in seconds is 1970 to Reddit, and the message says so),
  ``action_source`` of WEBSITE/APP/OTHER/PHYSICAL_STORE, ``type.tracking_type`` of §4 and
  ``custom_event_name`` (1 to 64 characters) exactly with CUSTOM, ``metadata`` (§3.3:
  ``value`` a number, ``currency`` three capitals, ``item_count`` an integer, ``products``
  with an ``id``), ``user`` (§3.2: email, phone_number, idfa, aaid as 64 lowercase hex; ip an
  address or a hash; ``uuid`` ``<ms>.<RFC 4122 UUID>`` or the bare UUID), and at least one
  match key. One bad event refuses the request: 400 "There were N invalid conversion
  events. None were processed." with a field error per problem (§9).
- Test events (``data.test_id``): Event Testing displays one event per request (§1), so only
  the first event of a test request is kept in the inspection log; at most 10 test events a
  second (§8), more is 429 "Too many requests/events within timeframe.".

Stricter than Reddit on purpose (assumptions): unknown keys are refused (Reddit's handling of
them is not documented; Segment's undocumented ``data.partner`` is allowed), email and phone
must be hashed (Reddit also takes them plain, §5: our builder always hashes, so a plain one
is a bug), and the wording of field messages other than the two quoted above is ours.

The inspection log (``GET /_sandbox/reddit/events``) keeps each kept event as received, with
``_pixel`` = the Pixel ID, ``_test_event_code`` = the ``test_id``, ``_user_agent`` = the
request's User-Agent (so a test can see ours arrive), and ``event_id`` added: its
``metadata.conversion_id``, Reddit's dedup key (§7). Duplicates are counted on (pixel, type,
conversion id), a custom event's name being part of its type, as Reddit dedups (§7).

Faults as the others take them: an injected 5xx answers "The service is currently
unavailable. No conversion events were processed.", a rate limit the 429 "Too many
requests/events within timeframe." (§9); ``reject_event_ids`` refuses the batch naming the
row (``$.data.events[i].metadata.conversion_id``), or naming none with ``reject_without_row``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.sandbox.common import is_number, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW, SandboxConfig
from backchannel.sandbox.emulator import FAULT_REJECTION, Context, Emulator, hang
from backchannel.sandbox.faults import Action, first_rejected
from backchannel.sandbox.state import http_code

PATH = "/api/v3/pixels/{pixel_id}/conversion_events"
MAX_EVENTS = 1000  # §8
MAX_CUSTOM_NAME = 64  # §4
#: §8: test events are limited to 10 a second
TEST_EVENTS_PER_SECOND = 10

TRACKING_TYPES = frozenset(
    {
        "PAGE_VISIT",
        "VIEW_CONTENT",
        "SEARCH",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "PURCHASE",
        "LEAD",
        "SIGN_UP",
        "CUSTOM",
    }
)
ACTION_SOURCES = frozenset({"WEBSITE", "APP", "OTHER", "PHYSICAL_STORE"})
DATA_KEYS = frozenset({"events", "test_id", "partner"})
EVENT_KEYS = frozenset(
    {"event_at", "action_source", "event_source_url", "click_id", "type", "metadata", "user"}
)
TYPE_KEYS = frozenset({"tracking_type", "custom_event_name"})
METADATA_KEYS = frozenset({"conversion_id", "value", "currency", "item_count", "products"})
PRODUCT_KEYS = frozenset({"id", "name", "category", "quantity", "item_price"})
USER_KEYS = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "ip_address",
        "user_agent",
        "uuid",
        "idfa",
        "aaid",
        "screen_dimensions",
        "data_processing_options",
    }
)
HASHED_USER_KEYS = ("email", "phone_number", "idfa", "aaid")
#: v2 names and their v3 successors (§2)
RENAMED = {
    "test_mode": "test_id",
    "event_type": "type",
    "event_metadata": "metadata",
    "event_at_ms": "event_at",
    "value_decimal": "value",
    "opt_out": "data_processing_options",
}
#: other platforms' names for Reddit's user keys
USER_KEY_HINTS = {
    "em": "email",
    "phone": "phone_number",
    "ph": "phone_number",
    "ip": "ip_address",
    "client_ip_address": "ip_address",
    "client_user_agent": "user_agent",
}
#: what HTTP libraries send when nobody set a User-Agent (§2: "Default user agents get
#: throttled"), compared without case at the start of the header
DEFAULT_AGENTS = (
    "python-httpx",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "curl",
    "wget",
    "axios",
    "node-fetch",
    "undici",
    "okhttp",
    "java",
    "apache-httpclient",
    "libwww-perl",
    "ruby",
    "faraday",
)
_UUID = re.compile(
    r"(?:\d{1,16}\.)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    re.IGNORECASE,
)
_CURRENCY = re.compile(r"[A-Z]{3}")
#: an event_at below this (2001-09-09 in milliseconds) was written in seconds
MILLISECONDS_FLOOR = 10**12

USER_AGENT_THROTTLED = "Your user agent was automatically ratelimited."
TOO_MANY = "Too many requests/events within timeframe."
UNAVAILABLE = "The service is currently unavailable. No conversion events were processed."
NO_TOKEN = "No bearer token provided"  # noqa: S105 (a message, not a secret)
BAD_TOKEN = "UNAUTHORIZED"  # noqa: S105 (a message, not a secret)
BAD_REQUEST = "Bad Request"
UUID_REASON = "invalid UUID: UUID must be RFC-4122 compliant"
HASH_REASON = "must be a SHA-256 hash: 64 lowercase hex characters of the normalized value"


class RedditError(Exception):
    """A refusal: the HTTP status, Reddit's message and its field errors (field, message)."""

    def __init__(
        self, status: int, message: str, fields: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields or []


def error_body(status: int, message: str, fields: list[tuple[str, str]] | None = None) -> bytes:
    """``{"error": {"code", "message", "fields"?}}`` (§9)."""
    error: dict[str, Any] = {"code": status, "message": message}
    if fields:
        error["fields"] = [{"field": f, "message": m} for f, m in fields]
    return orjson.dumps({"error": error})


def success_body(processed: int) -> bytes:
    """§1: ``{"data": {"message": "Successfully processed N conversion events."}}``."""
    return orjson.dumps(
        {"data": {"message": f"Successfully processed {processed} conversion events."}}
    )


def invalid_events(fields: list[tuple[str, str]], count: int) -> RedditError:
    return RedditError(
        400, f"There were {count} invalid conversion events. None were processed.", fields
    )


def default_agent(agent: str | None) -> bool:
    """No User-Agent, or one an HTTP library sends by default (§2)."""
    if not agent or not agent.strip():
        return True
    return agent.strip().lower().startswith(DEFAULT_AGENTS)


def check_auth(authorization: str | None, pixel: str, config: SandboxConfig) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RedditError(401, NO_TOKEN)
    if config.reddit_token is not None and token.strip() != config.reddit_token:
        raise RedditError(401, BAD_TOKEN)
    if config.reddit_pixel is not None and pixel != config.reddit_pixel:
        raise RedditError(403, f"You're not authorized to post conversions to Pixel ID {pixel}.")


def parse(raw: bytes) -> tuple[list[Any], str | None]:
    """The events and test_id of a body, or a request-level 400 naming what is wrong."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise RedditError(400, BAD_REQUEST, [("$", "the request body is not valid JSON")]) from None
    if type(body) is not dict:
        raise RedditError(400, BAD_REQUEST, [("$", "the request body must be a JSON object")])
    for key in body:
        if key != "data":
            hint = " (v3 wraps the events in data)" if key == "events" else ""
            raise RedditError(400, BAD_REQUEST, [(f"$.{key}", f"{key}: unknown field{hint}")])
    data = body.get("data")
    if type(data) is not dict:
        raise RedditError(400, BAD_REQUEST, [("$.data", "data: required, an object")])
    for key in data:
        if key not in DATA_KEYS:
            raise RedditError(400, BAD_REQUEST, [(f"$.data.{key}", _unknown(key))])
    test_id = data.get("test_id")
    if test_id is not None and (type(test_id) is not str or not test_id.strip()):
        raise RedditError(400, BAD_REQUEST, [("$.data.test_id", "test_id: a non-empty string")])
    partner = data.get("partner")
    if partner is not None and type(partner) is not str:
        raise RedditError(400, BAD_REQUEST, [("$.data.partner", "partner: must be a string")])
    events = data.get("events")
    if type(events) is not list or not events:
        raise RedditError(
            400, BAD_REQUEST, [("$.data.events", "events: required, a list of 1 to 1000 events")]
        )
    if len(events) > MAX_EVENTS:
        raise RedditError(400, BAD_REQUEST)  # §9: the whole answer to an oversized batch
    return events, test_id


def _unknown(key: str, hints: Mapping[str, str] | None = None) -> str:
    successor = RENAMED.get(key) or (hints or {}).get(key)
    if successor is not None:
        return f"{key}: unknown field (Reddit's v3 name is {successor})"
    return f"{key}: unknown field"


class _Event:
    """The problems of one event, as (JSONPath, message) pairs."""

    def __init__(self, index: int) -> None:
        self.at = f"$.data.events[{index}]"
        self.problems: list[tuple[str, str]] = []

    def bad(self, path: str, reason: str, field: str | None = None) -> None:
        self.problems.append((f"{self.at}.{field or path}", f"{path}: {reason}"))


def check_event(index: int, event: Any, now: float, max_age: int) -> list[tuple[str, str]]:
    """Every problem of one event (empty: valid)."""
    e = _Event(index)
    if type(event) is not dict:
        return [(e.at, "event: must be an object")]
    for key in event:
        if key not in EVENT_KEYS:
            e.bad(key, _unknown(key).partition(": ")[2])
    _check_time(e, event.get("event_at"), now, max_age)
    source = event.get("action_source")
    if source is None:
        e.bad("action_source", "required")
    elif type(source) is not str or source not in ACTION_SOURCES:
        e.bad("action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}")
    for key in ("event_source_url", "click_id"):
        value = event.get(key)
        if value is not None and (type(value) is not str or not value):
            e.bad(key, "must be a non-empty string")
    _check_type(e, event.get("type"))
    metadata = event.get("metadata")
    if metadata is not None:
        _check_metadata(e, metadata)
    user = event.get("user")
    if user is not None:
        _check_user(e, user)
    if not _has_match_key(event):
        e.bad(
            "user",
            "at least one match key is required (click_id, email, phone_number, external_id,"
            " uuid, idfa, aaid, or ip_address with user_agent)",
        )
    return e.problems


def _check_time(e: _Event, event_at: Any, now: float, max_age: int) -> None:
    if event_at is None:
        e.bad("event_at", "required")
        return
    if type(event_at) is not int:
        e.bad("event_at", "must be an integer: Unix epoch milliseconds")
        return
    limit = f"event_at timestamp must be less than {max_age // 3600}h0m0s old"
    if event_at < MILLISECONDS_FLOOR:
        e.bad("event_at", f"{limit} (v3 takes milliseconds; this looks like seconds)")
    elif event_at < (now - max_age) * 1000:
        e.bad("event_at", limit)
    elif event_at > (now + MAX_FUTURE_SKEW) * 1000:
        e.bad("event_at", "event_at timestamp must not be in the future")


def _check_type(e: _Event, kind: Any) -> None:
    if kind is None:
        e.bad("type", "required: {tracking_type}")
        return
    if type(kind) is not dict:
        e.bad("type", "must be an object")
        return
    for key in kind:
        if key not in TYPE_KEYS:
            e.bad(f"type.{key}", "unknown field")
    tracking = kind.get("tracking_type")
    if type(tracking) is not str or tracking not in TRACKING_TYPES:
        e.bad("type.tracking_type", f"must be one of {', '.join(sorted(TRACKING_TYPES))}")
        return
    name = kind.get("custom_event_name")
    if tracking == "CUSTOM":
        if type(name) is not str or not name.strip():
            e.bad("type.custom_event_name", "required with tracking_type CUSTOM")
        elif len(name) > MAX_CUSTOM_NAME:
            e.bad("type.custom_event_name", f"at most {MAX_CUSTOM_NAME} characters")
    elif name is not None:
        e.bad("type.custom_event_name", "only with tracking_type CUSTOM")


def _check_metadata(e: _Event, metadata: Any) -> None:
    if type(metadata) is not dict:
        e.bad("metadata", "must be an object")
        return
    for key in metadata:
        if key not in METADATA_KEYS:
            e.bad(f"metadata.{key}", _unknown(key).partition(": ")[2])
    conversion_id = metadata.get("conversion_id")
    if conversion_id is not None and (type(conversion_id) is not str or not conversion_id):
        e.bad("metadata.conversion_id", "must be a non-empty string")
    value = metadata.get("value")
    if value is not None and not is_number(value):
        e.bad("metadata.value", "must be a number (a double, in the currency's base unit)")
    currency = metadata.get("currency")
    if currency is not None and (type(currency) is not str or not _CURRENCY.fullmatch(currency)):
        e.bad("metadata.currency", "must be an ISO 4217 code in capitals")
    count = metadata.get("item_count")
    if count is not None and (type(count) is not int or count < 0):
        e.bad("metadata.item_count", "must be a non-negative integer")
    products = metadata.get("products")
    if products is None:
        return
    if type(products) is not list:
        e.bad("metadata.products", "must be a list")
        return
    for position, product in enumerate(products):
        at = f"metadata.products[{position}]"
        if type(product) is not dict:
            e.bad(at, "must be an object")
            continue
        for key in product:
            if key not in PRODUCT_KEYS:
                e.bad(f"{at}.{key}", "unknown field")
        product_id = product.get("id")
        if type(product_id) is not str or not product_id:
            e.bad(f"{at}.id", "required, a non-empty string")
        for key in ("name", "category"):
            if product.get(key) is not None and type(product[key]) is not str:
                e.bad(f"{at}.{key}", "must be a string")
        quantity = product.get("quantity")
        if quantity is not None and type(quantity) is not int:
            e.bad(f"{at}.quantity", "must be an integer")
        price = product.get("item_price")
        if price is not None and not is_number(price):
            e.bad(f"{at}.item_price", "must be a number")


def _check_user(e: _Event, user: Any) -> None:
    if type(user) is not dict:
        e.bad("user", "must be an object")
        return
    for key in user:
        if key not in USER_KEYS:
            e.bad(f"user.{key}", _unknown(key, USER_KEY_HINTS).partition(": ")[2])
    for key in HASHED_USER_KEYS:
        value = user.get(key)
        if value is not None and (type(value) is not str or is_sha256(value) is None):
            e.bad(f"user.{key}", HASH_REASON)
    for key in ("external_id", "user_agent"):
        value = user.get(key)
        if value is not None and (type(value) is not str or not value):
            e.bad(f"user.{key}", "must be a non-empty string")
    ip = user.get("ip_address")
    if ip is not None and not (type(ip) is str and (_is_ip(ip) or is_sha256(ip) is not None)):
        e.bad("user.ip_address", "must be an IP address or its SHA-256 hash")
    uuid = user.get("uuid")
    if uuid is not None and (type(uuid) is not str or _UUID.fullmatch(uuid) is None):
        e.bad("user.UUID", UUID_REASON)  # Reddit's own path and words (§9)
    screen = user.get("screen_dimensions")
    if screen is not None and not (
        type(screen) is dict
        and set(screen) == {"width", "height"}
        and all(type(v) is int and v > 0 for v in screen.values())
    ):
        e.bad("user.screen_dimensions", "must be {width, height}, positive integers")
    options = user.get("data_processing_options")
    if options is not None:
        _check_processing(e, options)


def _check_processing(e: _Event, options: Any) -> None:
    at = "user.data_processing_options"
    if type(options) is not dict or not set(options) <= {"modes", "country", "region"}:
        e.bad(at, "must be {modes, country?, region?}")
        return
    modes = options.get("modes")
    if type(modes) is not list or not modes or any(m != "LDU" for m in modes):
        e.bad(f"{at}.modes", 'must be ["LDU"]')
    for key in ("country", "region"):
        if options.get(key) is not None and type(options[key]) is not str:
            e.bad(f"{at}.{key}", "must be a string")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _has_match_key(event: dict[str, Any]) -> bool:
    if event.get("click_id"):
        return True
    user = event.get("user")
    if type(user) is not dict:
        return False
    if any(user.get(k) for k in ("email", "phone_number", "external_id", "uuid", "idfa", "aaid")):
        return True
    return bool(user.get("ip_address") and user.get("user_agent"))


def dedup_name(event: dict[str, Any]) -> str:
    """What Reddit dedups within (§7): the type, and a custom event's name with it."""
    kind = event["type"]
    if kind["tracking_type"] == "CUSTOM":
        return f"CUSTOM:{kind['custom_event_name']}"
    return str(kind["tracking_type"])


def _conversion_id(event: dict[str, Any]) -> str | None:
    metadata = event.get("metadata")
    found = metadata.get("conversion_id") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else None


def _test_rate(ctx: Context, count: int, now: float) -> None:
    """§8: at most 10 test events a second (the sandbox clock's second)."""
    times: deque[float] = ctx.state.setdefault("test_events", deque())
    while times and times[0] <= now - 1.0:
        times.popleft()
    if len(times) + count > TEST_EVENTS_PER_SECOND:
        raise RedditError(429, TOO_MANY)
    times.extend([now] * count)


# --- the HTTP endpoint --------------------------------------------------------------------


async def handle(request: Request, ctx: Context) -> Response:
    """``POST /api/v3/pixels/{pixel_id}/conversion_events`` as Reddit answers it."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        return _reply(decision.status, error_body(decision.status, UNAVAILABLE))
    if decision.action is Action.RATE_LIMIT:
        log.count("429")
        return _reply(429, error_body(429, TOO_MANY))
    pixel = request.path_params["pixel_id"]
    now = config.clock()
    try:
        if default_agent(request.headers.get("user-agent")):
            raise RedditError(429, USER_AGENT_THROTTLED)
        check_auth(request.headers.get("authorization"), pixel, config)
        events, test_id = parse(raw)
        problems: list[tuple[str, str]] = []
        invalid = 0
        for index, event in enumerate(events):
            found = check_event(index, event, now, config.max_age_seconds)
            if found:
                invalid += 1
                problems.extend(found)
        if problems:
            raise invalid_events(problems, invalid)
        ids = [{"event_id": _conversion_id(e)} for e in events]
        bad = first_rejected(ids, decision.reject_event_ids)
        if bad is not None:
            where = f"$.data.events[{bad}].metadata.conversion_id"
            fields = (
                []
                if decision.without_row
                else [(where, f"metadata.conversion_id: {FAULT_REJECTION}")]
            )
            raise invalid_events(fields, 1)
        if test_id is not None:
            _test_rate(ctx, len(events), now)
    except RedditError as exc:
        log.count(str(exc.status))
        return _reply(exc.status, error_body(exc.status, exc.message, exc.fields))
    # Event Testing displays one event per request (§1): a test request keeps its first
    kept = events[:1] if test_id is not None else events
    agent = request.headers.get("user-agent")
    taken = [
        {**e, "event_id": cid, "_user_agent": agent}
        if (cid := _conversion_id(e))
        else {**e, "_user_agent": agent}
        for e in kept
    ]
    log.store(
        [{"event_id": _conversion_id(e), "event_name": dedup_name(e)} for e in kept],
        raw=orjson.dumps(taken),
        field=None,
        pixel=pixel,
        test_event_code=test_id,
        received_at=now,
        request_id=secrets.token_hex(8),
    )
    log.count("0")
    response = _reply(200, success_body(len(events)))
    if decision.action is Action.TIMEOUT:  # after_accept: the answer is what gets lost
        await hang(request, decision.hang)
    return response


def _reply(status: int, body: bytes) -> Response:
    return Response(body, status, media_type="application/json")


EMULATOR = Emulator(
    name="reddit",
    routes=((PATH, ("POST",)),),
    event_field="event_name",
    handle=handle,
    dedup_key=lambda item: str(item["metadata"]["conversion_id"]),
    sample_credentials={"pixel": "a2_sandbox01", "token": "sandbox-conversion-token"},
)
