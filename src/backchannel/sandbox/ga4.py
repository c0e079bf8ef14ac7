"""Emulation of the GA4 Measurement Protocol: ``POST /mp/collect`` and the validation server
``POST /debug/mp/collect``.

The contract is ``docs/platforms/ga4.md`` (cited as §n). The point of this emulator is GA4's
trap: **production answers 2xx to everything** (§10: "doesn't return an error code if the
payload is malformed, or if the data is incorrect or not processed"). So, like GA4:

- ``/mp/collect`` always answers ``204`` with an empty body (§10, RudderStack's "always
  returns a 204"). Valid events are stored; invalid ones are dropped without a word, and the
  request is counted in ``by_code`` as ``"dropped"`` (``"0"`` when every event was kept).
- ``/debug/mp/collect`` checks the same rules and answers ``200 {"validationMessages": […]}``
  in §10's shape (``fieldPath``, ``description``, ``validationCode``); it stores nothing
  (§1: events sent there are not processed) and is counted as ``"debug"``.

What is checked, all from ga4.md: ``measurement_id`` and ``api_secret`` in the query (§2;
:class:`SandboxConfig` ``ga4_measurement_id`` / ``ga4_api_secret``, None = any non-empty);
a body under 130 kB (§7); the top-level keys of §3; ``client_id`` (§3); ``user_id`` whenever
``user_data`` is sent (§5); hashes of 64 lowercase hex (§5); ``consent`` values (§8);
``timestamp_micros`` no older than 72 h and not in the future (§6); 1 to 25 events (§7);
event and parameter names (§7: at most 40 characters, letters, digits and underscores, a
letter first; §12 reserved names and prefixes); at most 25 parameters; string values of at
most 100 characters; ``value`` a number, ``currency`` ISO 4217 (§4); ``items`` objects with
``item_id`` or ``item_name``, an integer ``quantity``, a numeric ``price`` and at most 10
custom item parameters (§4); user properties (§7, §12).

Assumptions, where ga4.md is silent:

- Request-level problems drop the whole request, event-level ones only that event.
- ``validationCode`` values beyond §10's three (``NAME_INVALID``, ``VALUE_REQUIRED``,
  ``VALUE_OUT_OF_BOUNDS``) are ``NAME_RESERVED``, ``VALUE_INVALID`` and
  ``EXCEEDED_MAX_ENTITIES``, written from memory of Google's enum, not from ga4.md (Still
  unsure 7). ``fieldPath`` is ``events`` for event names (as in §10's example) and a dotted
  path elsewhere; descriptions start ``Event at index: [i]`` for event problems, as §10's do.
- ``engagement_time_msec`` and ``session_id`` are accepted as parameters: §3 tells MP
  senders to put them in ``params`` although §12 lists them as reserved (Still unsure 2).
- No check of ``Content-Type``: Google's own samples post JSON without one.

A stored event is one GA4 hit: the request's ``client_id``, ``user_id``, ``user_data``,
``consent`` (what GA4 applies to every event of the request) followed by the event's own
``name``, ``params`` and ``timestamp_micros``, with ``_pixel`` the measurement id. Duplicates
and ``?event_id=`` use ``params.event_id`` (Backchannel's id; GA4 itself has none, §9), and
``reject_event_ids`` faults match it: such an event is dropped silently on ``/mp/collect``
(as GA4 drops what it refuses) and reported on ``/debug/mp/collect``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.catalog import ISO_4217
from backchannel.sandbox.common import is_number, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW, SandboxConfig
from backchannel.sandbox.emulator import FAULT_REJECTION, Context, Emulator, hang, json_response
from backchannel.sandbox.faults import Action
from backchannel.sandbox.state import http_code

PATH = "/mp/collect"
DEBUG_PATH = "/debug/mp/collect"
MAX_EVENTS = 25  # §7
MAX_BODY = 130_000  # §7: "smaller than 130kB" (bytes, the stricter reading)
MAX_AGE = 72 * 3600  # §6
MAX_PARAMS = 25  # §7
MAX_NAME = 40  # §7: event and parameter names
MAX_VALUE = 100  # §7: parameter values
MAX_ITEM_CUSTOM = 10  # §4, §7
MAX_USER_PROPERTIES = 25  # §7
MAX_USER_PROPERTY_NAME = 24  # §7
MAX_USER_PROPERTY_VALUE = 36  # §7
#: a timestamp_micros below this is milliseconds (micros would be before 1973)
_MICROS_FLOOR = 10**14

#: by_code keys
ACCEPTED = "0"
DROPPED = "dropped"
DEBUG = "debug"
RATE_LIMITED = "429"

NAME_INVALID = "NAME_INVALID"
NAME_RESERVED = "NAME_RESERVED"
VALUE_REQUIRED = "VALUE_REQUIRED"
VALUE_INVALID = "VALUE_INVALID"
VALUE_OUT_OF_BOUNDS = "VALUE_OUT_OF_BOUNDS"
EXCEEDED_MAX_ENTITIES = "EXCEEDED_MAX_ENTITIES"

#: §3's top-level keys (web streams: ``client_id``, not ``app_instance_id``)
TOP_KEYS = frozenset(
    {
        "client_id",
        "user_id",
        "timestamp_micros",
        "user_properties",
        "user_data",
        "consent",
        "non_personalized_ads",
        "user_location",
        "ip_override",
        "device",
        "validation_behavior",
        "events",
    }
)
#: the request keys a stored hit repeats from its request
HIT_KEYS = ("client_id", "user_id", "timestamp_micros", "user_properties", "user_data", "consent")
EVENT_KEYS = frozenset({"name", "params", "timestamp_micros"})
VALIDATION_BEHAVIORS = frozenset({"RELAXED", "ENFORCE_RECOMMENDATIONS"})
CONSENT_KEYS = frozenset({"ad_user_data", "ad_personalization"})
CONSENT_VALUES = frozenset({"GRANTED", "DENIED"})
#: §5: hashed user_data lists, and the documented hashed address fields
HASHED_LISTS = ("sha256_email_address", "sha256_phone_number")
ADDRESS_KEYS = frozenset({"sha256_first_name", "sha256_last_name", "sha256_street"})
#: §12: web reserved event names (with RudderStack's extra) and the MP reference's list
RESERVED_EVENTS = frozenset(
    """
    app_remove app_store_refund app_store_subscription_cancel app_store_subscription_convert
    app_store_subscription_renew click error file_download first_open first_visit form_start
    form_submit in_app_purchase page_view scroll session_start user_engagement view_complete
    video_progress video_start view_search_results ad_activeview ad_click ad_exposure
    ad_impression ad_query adunit_exposure app_clear_data app_install app_update
    notification_dismiss notification_foreground notification_open notification_receive
    os_update screen_view
    """.split()
)
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
#: §12 reserved parameter names, less the two §3 requires in params (see the module doc)
RESERVED_PARAMS = frozenset({"gclid", "session_number", "firebase_conversion"})
RESERVED_USER_PROPERTIES = frozenset(
    {
        "first_open_time",
        "first_visit_time",
        "last_deep_link_referrer",
        "user_id",
        "first_open_after_install",
    }
)
#: §4's item fields; any other item key is a custom item parameter
ITEM_KEYS = frozenset(
    """
    item_id item_name item_brand item_category item_category2 item_category3 item_category4
    item_category5 quantity price affiliation coupon discount index item_list_id
    item_list_name item_variant location_id
    """.split()
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*").fullmatch
_FIRST_ALPHA = re.compile(r"[A-Za-z]").match


def message(path: str, description: str, code: str) -> dict[str, str]:
    """One ``ValidationMessage`` (§10)."""
    return {"fieldPath": path, "description": description, "validationCode": code}


@dataclass(slots=True)
class Checked:
    """What the validation found: every message, and what GA4 would keep."""

    measurement_id: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    #: False: a request-level problem, GA4 keeps nothing
    request_ok: bool = True
    #: indices of events dropped for a problem of their own
    bad_events: set[int] = field(default_factory=set)
    body: dict[str, Any] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)

    def request(self, path: str, description: str, code: str) -> None:
        self.request_ok = False
        self.messages.append(message(path, description, code))

    def event(self, index: int, path: str, description: str, code: str) -> None:
        self.bad_events.add(index)
        self.messages.append(message(path, f"Event at index: [{index}] {description}", code))


def name_problem(name: str, limit: int = MAX_NAME) -> tuple[str, str] | None:
    """(description, code) of what is wrong with an event or parameter name, or None."""
    if not name:
        return "is empty.", VALUE_REQUIRED
    if len(name) > limit:
        return f"is longer than {limit} characters.", VALUE_OUT_OF_BOUNDS
    if _FIRST_ALPHA(name) is None:
        return "Names must start with an alphabetic character.", NAME_INVALID
    if _NAME(name) is None:
        return "Only alphanumeric characters and underscores are allowed.", NAME_INVALID
    if name.startswith(RESERVED_PREFIXES):
        return "uses a reserved prefix.", NAME_RESERVED
    return None


def check(query: dict[str, str], raw: bytes, config: SandboxConfig, now: float) -> Checked:
    """Validate one request as GA4's validation server would; never raises."""
    result = Checked()
    measurement_id = query.get("measurement_id", "")
    result.measurement_id = measurement_id
    if not measurement_id:
        result.request("measurement_id", "Measurement ID is required.", VALUE_REQUIRED)
    elif config.ga4_measurement_id is not None and measurement_id != config.ga4_measurement_id:
        result.request(
            "measurement_id",
            f"Measurement ID [{measurement_id}] is not a stream of this property.",
            VALUE_INVALID,
        )
    secret = query.get("api_secret", "")
    if not secret:
        result.request("api_secret", "API secret is required.", VALUE_REQUIRED)
    elif config.ga4_api_secret is not None and secret != config.ga4_api_secret:
        result.request("api_secret", "API secret is not valid for this stream.", VALUE_INVALID)
    if len(raw) >= MAX_BODY:
        result.request(
            "", f"The post body must be smaller than 130kB (got {len(raw)} bytes).", VALUE_INVALID
        )
        return result
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        result.request("", "Unable to parse the request body as JSON.", VALUE_INVALID)
        return result
    if type(body) is not dict:
        result.request("", "The request body must be a JSON object.", VALUE_INVALID)
        return result
    result.body = body
    _check_request(result, body, now)
    return result


def _check_request(result: Checked, body: dict[str, Any], now: float) -> None:
    for key in body:
        if key not in TOP_KEYS:
            hint = " Web streams send client_id." if key == "app_instance_id" else ""
            result.request(key, f"Unknown field [{key}].{hint}", VALUE_INVALID)
    client_id = body.get("client_id")
    if client_id is None or client_id == "":
        result.request("client_id", "client_id is required.", VALUE_REQUIRED)
    elif type(client_id) is not str:
        result.request("client_id", "client_id must be a string.", VALUE_INVALID)
    user_id = body.get("user_id")
    if user_id is not None and (type(user_id) is not str or not user_id):
        result.request("user_id", "user_id must be a non-empty string.", VALUE_INVALID)
    if "timestamp_micros" in body:
        problem = _timestamp_problem(body["timestamp_micros"], now)
        if problem is not None:
            result.request("timestamp_micros", f"timestamp_micros {problem[0]}", problem[1])
    user_data = body.get("user_data")
    if user_data is not None:
        if user_id is None:
            result.request(
                "user_id", "user_id must be present whenever user_data is provided.", VALUE_REQUIRED
            )
        _check_user_data(result, user_data)
    consent = body.get("consent")
    if consent is not None:
        _check_consent(result, consent)
    behavior = body.get("validation_behavior")
    if behavior is not None and behavior not in VALIDATION_BEHAVIORS:
        result.request(
            "validation_behavior",
            "validation_behavior must be RELAXED or ENFORCE_RECOMMENDATIONS.",
            VALUE_INVALID,
        )
    npa = body.get("non_personalized_ads")
    if npa is not None and type(npa) is not bool:
        result.request(
            "non_personalized_ads", "non_personalized_ads must be a boolean.", VALUE_INVALID
        )
    for key, kind, label in (
        ("user_location", dict, "an object"),
        ("device", dict, "an object"),
        ("ip_override", str, "a string"),
    ):
        value = body.get(key)
        if value is not None and type(value) is not kind:
            result.request(key, f"{key} must be {label}.", VALUE_INVALID)
    properties = body.get("user_properties")
    if properties is not None:
        _check_user_properties(result, properties)
    events = body.get("events")
    if events is None or events == []:
        result.request("events", "At least one event is required.", VALUE_REQUIRED)
        return
    if type(events) is not list:
        result.request("events", "events must be an array.", VALUE_INVALID)
        return
    if len(events) > MAX_EVENTS:
        result.request(
            "events",
            f"A request can have at most {MAX_EVENTS} events (got {len(events)}).",
            EXCEEDED_MAX_ENTITIES,
        )
        return
    result.events = events
    for index, item in enumerate(events):
        _check_event(result, index, item, now)


def _timestamp_problem(value: Any, now: float) -> tuple[str, str] | None:
    if type(value) is not int:
        return "must be an integer number of microseconds.", VALUE_INVALID
    if 0 < value < _MICROS_FLOOR:
        return "must be in microseconds, not milliseconds or seconds.", VALUE_OUT_OF_BOUNDS
    seconds = value / 1_000_000
    if seconds < now - MAX_AGE:
        return "is more than 72 hours in the past.", VALUE_OUT_OF_BOUNDS
    if seconds > now + MAX_FUTURE_SKEW:
        return "is in the future.", VALUE_OUT_OF_BOUNDS
    return None


def _check_hash(result: Checked, path: str, value: Any) -> None:
    if type(value) is not str or is_sha256(value) is None:
        result.request(
            path,
            f"{path} must be a SHA-256 hash in lowercase hex (64 characters).",
            VALUE_INVALID,
        )


def _check_user_data(result: Checked, user_data: Any) -> None:
    if type(user_data) is not dict:
        result.request("user_data", "user_data must be an object.", VALUE_INVALID)
        return
    for key, value in user_data.items():
        path = f"user_data.{key}"
        if key in HASHED_LISTS:
            if type(value) is not list:
                result.request(path, f"{path} must be an array of hashes.", VALUE_INVALID)
                continue
            for position, one in enumerate(value):
                _check_hash(result, f"{path}[{position}]", one)
        elif key == "address":
            if type(value) is not list or any(type(a) is not dict for a in value):
                result.request(path, f"{path} must be an array of objects.", VALUE_INVALID)
                continue
            for position, address in enumerate(value):
                for sub, one in address.items():
                    at = f"{path}[{position}].{sub}"
                    if sub in ADDRESS_KEYS:
                        _check_hash(result, at, one)
                    else:
                        result.request(at, f"Unknown field [{sub}].", VALUE_INVALID)
        else:
            result.request(path, f"Unknown field [{key}].", VALUE_INVALID)


def _check_consent(result: Checked, consent: Any) -> None:
    if type(consent) is not dict:
        result.request("consent", "consent must be an object.", VALUE_INVALID)
        return
    for key, value in consent.items():
        if key not in CONSENT_KEYS:
            result.request(f"consent.{key}", f"Unknown field [{key}].", VALUE_INVALID)
        elif value not in CONSENT_VALUES:
            result.request(
                f"consent.{key}", f"consent.{key} must be GRANTED or DENIED.", VALUE_INVALID
            )


def _check_user_properties(result: Checked, properties: Any) -> None:
    if type(properties) is not dict:
        result.request("user_properties", "user_properties must be an object.", VALUE_INVALID)
        return
    if len(properties) > MAX_USER_PROPERTIES:
        result.request(
            "user_properties",
            f"At most {MAX_USER_PROPERTIES} user properties are allowed.",
            EXCEEDED_MAX_ENTITIES,
        )
    for key, wrapped in properties.items():
        path = f"user_properties.{key}"
        problem = name_problem(key, MAX_USER_PROPERTY_NAME)
        if problem is None and key in RESERVED_USER_PROPERTIES:
            problem = "is a reserved name.", NAME_RESERVED
        if problem is not None:
            result.request(path, f"User property [{key}] {problem[0]}", problem[1])
        value = wrapped.get("value") if type(wrapped) is dict else None
        if type(wrapped) is not dict or not (type(value) is str or is_number(value)):
            result.request(path, f'{path} must be {{"value": <string or number>}}.', VALUE_INVALID)
        elif type(value) is str and len(value) > MAX_USER_PROPERTY_VALUE:
            result.request(
                path,
                f"User property values are at most {MAX_USER_PROPERTY_VALUE} characters.",
                VALUE_OUT_OF_BOUNDS,
            )


def _check_event(result: Checked, index: int, item: Any, now: float) -> None:
    at = f"events[{index}]"
    if type(item) is not dict:
        result.event(index, at, "must be an object.", VALUE_INVALID)
        return
    for key in item:
        if key not in EVENT_KEYS:
            result.event(index, f"{at}.{key}", f"has unknown field [{key}].", VALUE_INVALID)
    name = item.get("name")
    if type(name) is not str or not name:
        result.event(index, "events", "has no name.", VALUE_REQUIRED)
    else:
        problem = name_problem(name)
        if problem is None and name in RESERVED_EVENTS:
            problem = "The name is reserved.", NAME_RESERVED
        if problem is not None:
            result.event(index, "events", f"has invalid name [{name}]. {problem[0]}", problem[1])
    if "timestamp_micros" in item:
        problem = _timestamp_problem(item["timestamp_micros"], now)
        if problem is not None:
            path = f"{at}.timestamp_micros"
            stamp = item["timestamp_micros"]
            result.event(index, path, f"has timestamp_micros [{stamp}]: {problem[0]}", problem[1])
    params = item.get("params")
    if params is None:
        return
    if type(params) is not dict:
        result.event(index, f"{at}.params", "has params that are not an object.", VALUE_INVALID)
        return
    if len(params) > MAX_PARAMS:
        result.event(
            index,
            f"{at}.params",
            f"has more than {MAX_PARAMS} parameters.",
            EXCEEDED_MAX_ENTITIES,
        )
    for key, value in params.items():
        _check_param(result, index, f"{at}.params.{key}", key, value)


def _check_param(result: Checked, index: int, path: str, key: str, value: Any) -> None:
    problem = name_problem(key)
    if problem is None and key in RESERVED_PARAMS:
        problem = "The name is reserved.", NAME_RESERVED
    if problem is not None:
        result.event(index, path, f"has invalid parameter name [{key}]. {problem[0]}", problem[1])
        return
    if key == "items":
        _check_items(result, index, path, value)
    elif key == "value" and not is_number(value):
        result.event(index, path, "has a value that is not a number.", VALUE_INVALID)
    elif key == "currency" and (type(value) is not str or value not in ISO_4217):
        result.event(
            index, path, f"has currency [{value}], not an ISO 4217 code (USD).", VALUE_INVALID
        )
    elif key == "engagement_time_msec" and (not is_number(value) or value < 0):
        result.event(index, path, "has engagement_time_msec that is not a number.", VALUE_INVALID)
    else:
        _check_scalar(result, index, path, key, value)


def _check_scalar(result: Checked, index: int, path: str, key: str, value: Any) -> None:
    if type(value) is str:
        if len(value) > MAX_VALUE:
            result.event(
                index,
                path,
                f"has parameter [{key}] longer than {MAX_VALUE} characters.",
                VALUE_OUT_OF_BOUNDS,
            )
    elif not is_number(value):
        result.event(
            index, path, f"has parameter [{key}] that is not a string or number.", VALUE_INVALID
        )


def _check_items(result: Checked, index: int, path: str, items: Any) -> None:
    if type(items) is not list:
        result.event(index, path, "has items that are not an array.", VALUE_INVALID)
        return
    for position, item in enumerate(items):
        at = f"{path}[{position}]"
        if type(item) is not dict:
            result.event(index, at, f"has item [{position}] that is not an object.", VALUE_INVALID)
            continue
        if not item.get("item_id") and not item.get("item_name"):
            result.event(
                index, at, f"has item [{position}] without item_id or item_name.", VALUE_REQUIRED
            )
        custom = [k for k in item if k not in ITEM_KEYS]
        if len(custom) > MAX_ITEM_CUSTOM:
            result.event(
                index,
                at,
                f"has item [{position}] with more than {MAX_ITEM_CUSTOM} custom parameters.",
                EXCEEDED_MAX_ENTITIES,
            )
        for key, value in item.items():
            here = f"{at}.{key}"
            problem = name_problem(key)
            if problem is not None:
                result.event(
                    index,
                    here,
                    f"has invalid item parameter name [{key}]. {problem[0]}",
                    problem[1],
                )
            elif key in ("quantity", "index") and type(value) is not int:
                result.event(index, here, f"has item {key} that is not an integer.", VALUE_INVALID)
            elif key in ("price", "discount") and not is_number(value):
                result.event(index, here, f"has item {key} that is not a number.", VALUE_INVALID)
            else:
                _check_scalar(result, index, here, key, value)


# --- the HTTP endpoints -------------------------------------------------------------------


def _event_id(item: Any) -> Any:
    params = item.get("params") if type(item) is dict else None
    return params.get("event_id") if type(params) is dict else None


def google_error_page(status: int) -> Response:
    """The bare HTML page Google's front end answers a failure with."""
    body = (
        f"<!DOCTYPE html><html lang=en><title>Error {status}</title>"
        f"<p><b>{status}.</b> <ins>That's an error.</ins>"
    )
    return Response(body, status, media_type="text/html")


async def handle(request: Request, ctx: Context) -> Response:
    """Both endpoints; ``/debug/mp/collect`` answers messages, ``/mp/collect`` 204."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        return google_error_page(decision.status)
    if decision.action is Action.RATE_LIMIT:
        log.count(RATE_LIMITED)
        return google_error_page(429)
    debug = request.url.path.endswith(DEBUG_PATH)
    result = check(dict(request.query_params), raw, config, config.clock())
    rejected = decision.reject_event_ids
    if rejected and result.request_ok:
        hits = [i for i, e in enumerate(result.events) if _event_id(e) in rejected]
        if hits and decision.without_row:
            result.request("events", f"Invalid events: {FAULT_REJECTION}", VALUE_INVALID)
        else:
            for i in hits:
                path = f"events[{i}].params.event_id"
                result.event(i, path, f"was {FAULT_REJECTION}.", VALUE_INVALID)
    if debug:
        log.count(DEBUG)
        return json_response({"validationMessages": result.messages})
    kept = (
        [i for i in range(len(result.events)) if i not in result.bad_events]
        if result.request_ok
        else []
    )
    log.count(ACCEPTED if result.request_ok and not result.bad_events else DROPPED)
    if kept:
        shared = {k: result.body[k] for k in HIT_KEYS if k in result.body}
        hits_kept = [{**shared, **result.events[i]} for i in kept]
        log.store(
            [{"name": hit["name"], "event_id": _event_id(hit)} for hit in hits_kept],
            raw=orjson.dumps(hits_kept),
            field=None,
            pixel=result.measurement_id,
            test_event_code=None,
            received_at=config.clock(),
            request_id=secrets.token_hex(8),
        )
    response = Response(status_code=204)
    if decision.action is Action.TIMEOUT:  # after_accept: the answer is what gets lost
        await hang(request, decision.hang)
    return response


EMULATOR = Emulator(
    name="ga4",
    routes=((PATH, ("POST",)), (DEBUG_PATH, ("POST",))),
    event_field="name",
    handle=handle,
    dedup_key=lambda item: str(item["params"]["event_id"]),
    sample_credentials={"pixel": "G-SANDBOX123", "token": "sandbox-api-secret"},
)
