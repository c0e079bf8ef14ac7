"""Emulation of Meta's Conversions API, ``POST /{version}/{pixel_id}/events``.

The contract is ``../shared/reference/tiktok-events-api.md`` §7 plus Meta's Python SDK
(``facebook_business/adobjects/serverside``). Unlike TikTok, Meta speaks HTTP: refusals are 4xx
with the Graph error shape ``{"error": {"message", "type", "code", "fbtrace_id", …}}``.

Error shapes, and how sure we are:

- no token: HTTP 400, ``OAuthException`` code 104, "An access token is required to request this
  resource." (seen verbatim in several Graph API error dumps).
- wrong token: HTTP 400, ``OAuthException`` code 190, "Invalid OAuth access token - Cannot parse
  access token", with a ``WWW-Authenticate`` header (seen in Graph responses with status 400).
- pixel the token may not write to: HTTP 400, ``GraphMethodException`` code 100, subcode 33,
  "Unsupported post request. Object with ID … does not exist…" (Graph's usual wording for an
  object the token cannot reach; written from memory, not found in the stored material).
- invalid events: HTTP 400, ``OAuthException`` code 100 "Invalid parameter" with
  ``error_user_title`` / ``error_user_msg`` and ``is_transient: false``, the shape of real CAPI
  validation errors. Meta's ``error_user_msg`` texts and subcodes per rule are not in the stored
  material: ours name the field (``data[3].user_data.em[0]``) and omit the subcode.

Meta refuses the whole request when any event is invalid or too old (§7), so does the sandbox.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.sandbox.common import MILLISECONDS_FLOOR, fbtrace_id, is_number, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW, SandboxConfig
from backchannel.sandbox.emulator import (
    FAULT_REJECTION,
    FAULT_REJECTION_NO_ROW,
    Context,
    Emulator,
    hang,
)
from backchannel.sandbox.faults import Action, first_rejected
from backchannel.sandbox.state import http_code

PATH = "/{version}/{pixel_id}/events"
MAX_EVENTS = 1000  # events per request (reference §7)
MAX_AGE_PHYSICAL_STORE = 62 * 86400  # seconds (reference §7)

INVALID_PARAMETER = 100
NO_TOKEN = 104
BAD_TOKEN = 190
RATE_LIMITED = 4
TRANSIENT = 2

#: Action sources of the SDK's ``ActionSource`` enum.
ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
#: Event keys of the SDK's ``Event.param_types``; anything else is a code 100.
EVENT_KEYS = frozenset(
    {
        "event_name",
        "event_time",
        "event_id",
        "action_source",
        "event_source_url",
        "opt_out",
        "data_processing_options",
        "data_processing_options_country",
        "data_processing_options_state",
        "referrer_url",
        "user_data",
        "custom_data",
        "app_data",
        "original_event_data",
        "attribution_data",
        "messaging_channel",
        "advanced_measurement_table",
    }
)
#: user_data keys the SDK hashes and sends as lists (``UserData.normalize``).
HASHED_KEYS = frozenset({"em", "ph", "fn", "ln", "zp", "ct", "st", "country", "db", "ge"})
#: user_data keys sent as plain values (``external_id`` may be raw or hashed, so it is here).
PLAIN_KEYS = frozenset(
    {
        "external_id",
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "fb_login_id",
        "lead_id",
        "madid",
        "anon_id",
        "ctwa_clid",
        "page_id",
        "f5first",
        "f5last",
        "fi",
        "dobd",
        "dobm",
        "doby",
    }
)
#: The TikTok (or spelled-out) names people send to Meta by mistake.
USER_KEY_HINTS: dict[str, str] = {
    "email": "em",
    "phone": "ph",
    "phone_number": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "zip": "zp",
    "zip_code": "zp",
    "city": "ct",
    "state": "st",
    "ip": "client_ip_address",
    "user_agent": "client_user_agent",
}
HASH_REASON = "must be a SHA-256 hash: 64 lowercase hex characters of the normalized value"


class MetaError(Exception):
    """A Graph API refusal: the HTTP status and the ``error`` object to send."""

    def __init__(
        self, status: int, error: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(str(error.get("message")))
        self.status = status
        self.error = error
        self.headers = headers or {}


@dataclass(slots=True)
class Accepted:
    """A request that passed every check. ``raw_data`` is the ``data`` JSON as received."""

    pixel: str
    test_event_code: str | None
    events: list[dict[str, Any]]
    raw_data: bytes


def error_body(error: dict[str, Any], trace: str) -> bytes:
    """``{"error": {...}}`` with an ``fbtrace_id``, as every Graph error carries one."""
    return orjson.dumps({"error": {**error, "fbtrace_id": trace}})


def success_body(received: int, trace: str) -> bytes:
    """The CAPI success shape (SDK ``EventResponse``)."""
    return orjson.dumps({"events_received": received, "messages": [], "fbtrace_id": trace})


def invalid(detail: str, title: str = "Invalid parameter") -> MetaError:
    """A code-100 refusal naming the field in ``error_user_msg`` (which our client reads)."""
    return MetaError(
        400,
        {
            "message": "Invalid parameter",
            "type": "OAuthException",
            "code": INVALID_PARAMETER,
            "is_transient": False,
            "error_user_title": title,
            "error_user_msg": detail,
        },
    )


def param_error(detail: str) -> MetaError:
    """A request-parameter refusal in Graph's ``(#100) …`` form (assumption on exact wording)."""
    return MetaError(
        400, {"message": f"(#100) {detail}", "type": "OAuthException", "code": INVALID_PARAMETER}
    )


def rate_limit_error() -> tuple[int, dict[str, Any]]:
    """Graph's app-level throttle. Seen in the wild as HTTP **403** with code 4 and
    ``is_transient: true`` (a Facebook SDK log shows "HttpStatus: 403, errorCode: 4"), not 429;
    a client that retries only on 429 would give up here, which is the point of emulating it.
    """
    return 403, {
        "message": "(#4) Application request limit reached",
        "type": "OAuthException",
        "is_transient": True,
        "code": RATE_LIMITED,
    }


def transient_error() -> dict[str, Any]:
    """Graph's "service temporarily unavailable" (code 2), sent with an injected 5xx status.

    Assumption: code 2 with ``is_transient`` is Graph's usual transient error; its exact text
    here is not from the stored material.
    """
    return {
        "message": "An unexpected error has occurred. Please retry your request later.",
        "type": "OAuthException",
        "is_transient": True,
        "code": TRANSIENT,
    }


def parse_params(raw: bytes, content_type: str, query: dict[str, str]) -> dict[str, Any]:
    """The request parameters: the body's (a form, as the SDK and our client send, or a JSON
    object) over the query string's (where ``access_token`` may also travel).
    """
    params: dict[str, Any] = dict(query)
    if content_type.startswith("application/json"):
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise param_error("Request body is not valid JSON") from None
        if type(body) is not dict:
            raise param_error("Request body must be a JSON object")
        params.update(body)
        return params
    # application/x-www-form-urlencoded, or no content type at all (curl -d sends the former).
    params.update(parse_form(raw))
    return params


def parse_form(raw: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body; the last value of a key wins.

    Why not ``urllib.parse.parse_qsl``: it percent-decodes in Python, ~40 µs per Meta event
    (a 1000-event ``data`` field is ~1.4 MB with ~200 escapes per event), twice the sandbox's
    whole budget. Percent-encoding is quoted-printable with ``%`` for ``=``, so after escaping
    literal ``=`` and mapping ``+`` to space, C's ``binascii.a2b_qp`` decodes it ~15x faster.
    Where the two encodings differ (raw line breaks, malformed ``%`` escapes) the stdlib
    decodes instead; a test checks both paths agree.
    """
    params: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        params[_unquote_plus(key)] = _unquote_plus(value)
    return params


def _unquote_plus(value: bytes) -> str:
    escapes = value.count(b"%")
    if not escapes and b"+" not in value:
        return value.decode("utf-8", "replace")
    if b"\n" not in value and b"\r" not in value:  # raw line breaks are QP soft breaks
        qp = value.replace(b"=", b"=3D").replace(b"+", b" ").replace(b"%", b"=")
        decoded = binascii.a2b_qp(qp)
        # Every valid %XX shrinks by exactly 2 bytes; a malformed one shrinks less, which
        # the length gives away without a second scan.
        if len(decoded) == len(value) - 2 * escapes:
            return decoded.decode("utf-8", "replace")
    return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")


def check_token(token: Any, config: SandboxConfig) -> None:
    if token is None or token == "":
        raise MetaError(
            400,
            {
                "message": "An access token is required to request this resource.",
                "type": "OAuthException",
                "code": NO_TOKEN,
            },
        )
    if type(token) is not str or (config.token is not None and token != config.token):
        message = "Invalid OAuth access token - Cannot parse access token"
        raise MetaError(
            400,
            {"message": message, "type": "OAuthException", "code": BAD_TOKEN},
            {"WWW-Authenticate": f'OAuth "Facebook Platform" "invalid_token" "{message}"'},
        )


def check(
    version: str,
    pixel: str,
    params: dict[str, Any],
    config: SandboxConfig,
    now: float,
) -> Accepted:
    """Validate one request as Meta would; raise :class:`MetaError` on the first problem."""
    check_token(params.get("access_token"), config)
    if not (version.startswith("v") and version[1:].replace(".", "", 1).isdigit()):
        # Assumption on wording: Graph's text for an unknown version is not in stored material.
        raise param_error(f"Unknown API version '{version}' (expected e.g. v25.0)")
    owner = config.pixel_tokens.get(pixel)
    if (config.meta_pixel is not None and pixel != config.meta_pixel) or (
        owner is not None and params.get("access_token") != owner
    ):
        raise MetaError(
            400,
            {
                "message": f"Unsupported post request. Object with ID '{pixel}' does not exist,"
                " cannot be loaded due to missing permissions, or does not support this"
                " operation. Please read the Graph API documentation at"
                " https://developers.facebook.com/docs/graph-api",
                "type": "GraphMethodException",
                "code": INVALID_PARAMETER,
                "error_subcode": 33,
            },
        )
    test_event_code = params.get("test_event_code")
    if test_event_code is not None and type(test_event_code) is not str:
        raise param_error("Param test_event_code must be a string")
    if test_event_code == "":
        test_event_code = None

    data = params.get("data")
    if data is None or data == "":
        raise param_error("The parameter data is required")
    if type(data) is str:
        raw_data = data.encode()
        try:
            data = orjson.loads(raw_data)
        except orjson.JSONDecodeError:
            raise param_error("Param data must be a JSON array of events") from None
    else:
        raw_data = orjson.dumps(data)
    if type(data) is not list:
        raise param_error("Param data must be a JSON array of events")
    if not 1 <= len(data) <= MAX_EVENTS:
        raise param_error(
            f"Param data must contain between 1 and {MAX_EVENTS} events (got {len(data)})"
        )
    max_age = config.max_age_seconds
    for index, event in enumerate(data):
        _check_event(index, event, now, max_age)
    return Accepted(pixel, test_event_code, data, raw_data)


def _check_event(index: int, event: Any, now: float, max_age: int) -> None:
    at = f"data[{index}]"
    if type(event) is not dict:
        raise invalid(f"{at}: each event must be a JSON object")
    if not EVENT_KEYS.issuperset(event):
        key = next(k for k in event if k not in EVENT_KEYS)
        raise invalid(f"{at}.{key}: unknown parameter", "Unknown Event Parameter")

    name = event.get("event_name")
    if type(name) is not str or not name.strip():
        raise invalid(f"{at}.event_name: required, a non-empty string", "Missing Event Name")

    event_time = event.get("event_time")
    if type(event_time) is not int:
        raise invalid(
            f"{at}.event_time: required, an integer unix timestamp in seconds",
            "Invalid Event Timestamp",
        )
    if event_time >= MILLISECONDS_FLOOR:
        raise invalid(
            f"{at}.event_time: must be in seconds (this looks like milliseconds)",
            "Invalid Event Timestamp",
        )
    source = event.get("action_source")
    if source is None:
        raise invalid(f"{at}.action_source: required", "Missing Action Source")
    if type(source) is not str or source not in ACTION_SOURCES:
        raise invalid(
            f"{at}.action_source: must be one of {', '.join(sorted(ACTION_SOURCES))}",
            "Invalid Action Source",
        )
    limit = MAX_AGE_PHYSICAL_STORE if source == "physical_store" else max_age
    if event_time < now - limit:
        raise invalid(
            f"{at}.event_time: more than {limit // 86400} days in the past. If any event is"
            " too old, Meta refuses the whole request and processes no events",
            "Event Timestamp Too Old",
        )
    if event_time > now + MAX_FUTURE_SKEW:
        raise invalid(f"{at}.event_time: in the future", "Event Timestamp In The Future")

    event_id = event.get("event_id")
    if event_id is not None and type(event_id) is not str:
        raise invalid(f"{at}.event_id: must be a string")
    for key in ("event_source_url", "referrer_url"):
        value = event.get(key)
        if value is not None and type(value) is not str:
            raise invalid(f"{at}.{key}: must be a string")

    user = event.get("user_data")
    if user is None:
        raise invalid(f"{at}.user_data: required", "Missing User Data")
    if type(user) is not dict:
        raise invalid(f"{at}.user_data: must be a JSON object")
    _check_user(at, user)
    if source == "website":
        # Required for website events (Meta's server-event parameter docs; reference §7).
        if not event.get("event_source_url"):
            raise invalid(
                f"{at}.event_source_url: required when action_source is website",
                "Missing Event Source URL",
            )
        agent = user.get("client_user_agent")
        if type(agent) is not str or not agent:
            raise invalid(
                f"{at}.user_data.client_user_agent: required when action_source is website",
                "Missing Client User Agent",
            )

    custom = event.get("custom_data")
    if custom is not None:
        _check_custom(at, custom)
    opt_out = event.get("opt_out")
    if opt_out is not None and type(opt_out) is not bool:
        raise invalid(f"{at}.opt_out: must be a boolean")
    options = event.get("data_processing_options")
    if options is not None and (
        type(options) is not list or any(type(o) is not str for o in options)
    ):
        raise invalid(f"{at}.data_processing_options: must be a list of strings")
    for key in ("data_processing_options_country", "data_processing_options_state"):
        value = event.get(key)
        if value is not None and type(value) is not int:
            raise invalid(f"{at}.{key}: must be an integer")


def _check_user(at: str, user: dict[str, Any]) -> None:
    for key, value in user.items():
        if key in HASHED_KEYS:
            # The SDK always sends these as lists; the brief of this sandbox requires lists.
            # (Meta's docs also show single strings; a list is what both clients send.)
            if type(value) is not list:
                raise invalid(
                    f"{at}.user_data.{key}: must be a list of SHA-256 hashes", "Invalid User Data"
                )
            for position, one in enumerate(value):
                if type(one) is not str or is_sha256(one) is None:
                    raise invalid(
                        f"{at}.user_data.{key}[{position}]: {HASH_REASON}", "Unhashed User Data"
                    )
        elif key in PLAIN_KEYS:
            if key == "external_id" and type(value) is list:
                if any(type(one) is not str for one in value):
                    raise invalid(f"{at}.user_data.external_id: must be strings")
            elif type(value) is not str and not (
                key in ("fb_login_id", "lead_id", "page_id") and type(value) is int
            ):
                raise invalid(f"{at}.user_data.{key}: must be a string")
        else:
            # Assumption: Meta may ignore unknown user_data keys; the sandbox refuses them,
            # because a TikTok name sent to Meta means that identifier never matches anyone.
            hint = USER_KEY_HINTS.get(key)
            detail = f"{at}.user_data.{key}: unknown parameter"
            if hint is not None:
                detail += f" (Meta's name for it is '{hint}')"
            raise invalid(detail, "Unknown User Data Parameter")


#: Meta's DeliveryCategory values (facebook-php-business-sdk ServerSide/DeliveryCategory.php)
DELIVERY_CATEGORIES = ("in_store", "curbside", "home_delivery")


def _check_custom(at: str, custom: Any) -> None:
    if type(custom) is not dict:
        raise invalid(f"{at}.custom_data: must be a JSON object")
    value = custom.get("value")
    if value is not None and not is_number(value):
        raise invalid(f"{at}.custom_data.value: must be a number")
    currency = custom.get("currency")
    if currency is not None and (
        type(currency) is not str or len(currency) != 3 or not currency.isalpha()
    ):
        raise invalid(f"{at}.custom_data.currency: must be a 3-letter ISO 4217 code")
    contents = custom.get("contents")
    if contents is not None and (
        type(contents) is not list or any(type(c) is not dict for c in contents)
    ):
        raise invalid(f"{at}.custom_data.contents: must be a list of objects")
    content_ids = custom.get("content_ids")
    if content_ids is not None and (
        type(content_ids) is not list or any(type(c) is not str for c in content_ids)
    ):
        raise invalid(f"{at}.custom_data.content_ids: must be a list of strings")
    # Types from Meta's SDK (custom_data.py param_types; DeliveryCategory enum)
    num_items = custom.get("num_items")
    if num_items is not None and type(num_items) is not int:
        raise invalid(f"{at}.custom_data.num_items: must be an integer")
    predicted_ltv = custom.get("predicted_ltv")
    if predicted_ltv is not None and not is_number(predicted_ltv):
        raise invalid(f"{at}.custom_data.predicted_ltv: must be a number")
    search_string = custom.get("search_string")
    if search_string is not None and type(search_string) is not str:
        raise invalid(f"{at}.custom_data.search_string: must be a string")
    category = custom.get("delivery_category")
    if category is not None and category not in DELIVERY_CATEGORIES:
        raise invalid(
            f"{at}.custom_data.delivery_category: must be one of {', '.join(DELIVERY_CATEGORIES)}"
        )


# --- the HTTP endpoint --------------------------------------------------------------------


async def handle(request: Request, ctx: Context) -> Response:
    """``POST /{version}/{pixel_id}/events`` as Graph answers it."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    trace = fbtrace_id()
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        body = error_body(transient_error(), trace)
        return _reply(decision.status, body, trace)
    if decision.action is Action.RATE_LIMIT:
        status, error = rate_limit_error()
        log.count(str(error["code"]))
        return _reply(status, error_body(error, trace), trace)
    version = request.path_params["version"]
    pixel = request.path_params["pixel_id"]
    try:
        params = parse_params(
            raw, request.headers.get("content-type", ""), dict(request.query_params)
        )
        accepted = check(version, pixel, params, config, config.clock())
        bad = first_rejected(accepted.events, decision.reject_event_ids)
        if bad is not None and decision.without_row:
            raise invalid(FAULT_REJECTION_NO_ROW, "Rejected By Sandbox")
        if bad is not None:
            raise invalid(f"data[{bad}].event_id: {FAULT_REJECTION}", "Rejected By Sandbox")
    except MetaError as exc:
        log.count(str(exc.error.get("code")))
        return _reply(exc.status, error_body(exc.error, trace), trace, exc.headers)
    log.store(
        accepted.events,
        raw=accepted.raw_data,
        field=None,
        pixel=accepted.pixel,
        test_event_code=accepted.test_event_code,
        received_at=config.clock(),
        request_id=trace,
    )
    log.count("0")
    response = _reply(200, success_body(len(accepted.events), trace), trace)
    if decision.action is Action.TIMEOUT:  # after_accept
        await hang(request, decision.hang)
    return response


def _reply(
    status: int, body: bytes, trace: str, headers: Mapping[str, str] | None = None
) -> Response:
    # Graph repeats the trace id in a header, which is what proxies and logs keep.
    all_headers = {"x-fb-trace-id": trace, **(headers or {})}
    return Response(body, status, all_headers, media_type="application/json")


EMULATOR = Emulator(
    name="meta",
    routes=((PATH, ("POST",)),),
    event_field="event_name",
    handle=handle,
    sample_credentials={"pixel": "1234567890123", "token": "sandbox-access-token"},
)
