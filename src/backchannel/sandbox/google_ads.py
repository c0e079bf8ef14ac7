"""Emulation of the Google Ads API click conversion upload and of Google's OAuth token endpoint.

Routes::

    POST /{version}/customers/{customer_id}:uploadClickConversions   ConversionUploadService
    POST /token                                                       refresh_token grant

Starlette routes the upload path as written: its route compiler escapes the literal text
between parameters, so ``{customer_id}`` (``[^/]+``) backtracks to stop before
``:uploadClickConversions``; no path converter is needed (tests/sandbox/test_google_ads.py
checks it).

The contract is ``docs/platforms/google_ads.md`` (§n below). Strict where the document is:

- ``Authorization: Bearer`` with a token this sandbox issued at ``/token`` and that has not
  expired (``google_ads_token_lifetime``), else 401 UNAUTHENTICATED in Google's shape (§10.2);
  a ``developer-token`` header (missing: 400 DEVELOPER_TOKEN_PARAMETER_MISSING; wrong: 401
  ``authenticationError: DEVELOPER_TOKEN_INVALID``, the shape of a real answer reported by a
  user, see the destination's classify); the customer id in the path (10 digits; another
  account than ``google_ads_customer_id``: 403 USER_PERMISSION_DENIED) and ``login-customer-id``
  (10 digits when present; the sandbox has no manager hierarchy to check it against).
- ``partialFailure`` must be true (§3 [REQ]: "Required … This should always be set to true").
  With it false Google would run the upload as one transaction, all rows or none; the enum
  ``PartialFailureError.PARTIAL_FAILURE_MODE_REQUIRED`` exists for this service and a peer's
  test records Google refusing such a request outright, so the sandbox answers 400 with it.
- at most 2,000 conversions (TOO_MANY_CONVERSIONS_IN_REQUEST, §6); unknown fields are a 400
  "Invalid JSON payload received. Unknown name …" (how Google's JSON transcoding answers).
- per row (§3, §4, §7, §9), reported in ``partialFailureError`` with the row's index in
  ``fieldPathElements`` and ``{}`` in ``results`` (§10.1): exactly one of gclid/gbraid/wbraid
  or user identifiers (GBRAID_WBRAID_BOTH_SET; a gclid with a braid and a row with neither are
  ``fieldError`` answers, an assumption on the code); ``conversionAction`` as
  ``customers/{id}/conversionActions/{id}`` (RESOURCE_NAME_MALFORMED) of this customer
  (NO_CONVERSION_ACTION_FOUND: Google looks the action up by its id alone, §3; the sandbox
  has no list of actions and takes the name's customer id as the owner, so it is stricter
  than Google there); ``conversionDateTime`` as ``yyyy-mm-dd hh:mm:ss+|-hh:mm``
  (INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET), not older than 90 days (EXPIRED_EVENT: the
  sandbox knows no click times, and the click is before the conversion); ``currencyCode`` an
  ISO 4217 code in capitals (``currencyCodeError: UNSUPPORTED``, code assumed); at most 5 user
  identifiers, each exactly one of hashedEmail/hashedPhoneNumber as 64 lowercase hex
  (INVALID_USER_IDENTIFIER; any other kind UNSUPPORTED_USER_IDENTIFIER); consent values from
  the ConsentStatus enum, and no ``adPersonalization`` ("can only be set for
  OfflineUserDataJobService and UserDataService", §8; whether Google refuses or ignores it is
  Still unsure #2: the sandbox refuses, so a builder that sends it is caught); duplicate
  ``orderId`` in the request (DUPLICATE_ORDER_ID) or already recorded for the action
  (ORDER_ID_ALREADY_IN_USE), and without an order id the same click and date time
  (DUPLICATE_CLICK_CONVERSION_IN_REQUEST, CLICK_CONVERSION_ALREADY_EXISTS).
- ``validateOnly``: checked, never recorded in the dedup state, answered without ``results``
  (§1, §11.2). Its rows are kept in the inspection log with ``_test_event_code``
  ``"validateOnly"`` so a test order shows what Google was asked (real Google keeps nothing).

The inspection log (``GET /_sandbox/google_ads/events``) keeps each accepted row as received,
with ``_pixel`` = the customer id; its event name is ``conversionAction`` and the sandbox adds
``event_id``: Google's dedup key, the ``orderId``, else ``click id|conversionDateTime`` (our
builder always sends an orderId: the order id, else Backchannel's event_id).

Faults as the Meta emulator takes them; an injected 5xx is Google's JSON error envelope and a
rate limit the real 429 RESOURCE_EXHAUSTED with ``quotaErrorDetails.retryDelay`` "1s".
``reject_event_ids`` fails the matching rows in ``partialFailureError`` (Google reports per
row); a row matches by its ``orderId`` or by Backchannel's derived event_id
``<event>-<orderId>`` (events.py). With ``reject_without_row`` the request is a 400 naming no
row instead.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from backchannel.catalog import ISO_4217
from backchannel.sandbox.common import is_number, is_sha256
from backchannel.sandbox.config import MAX_FUTURE_SKEW
from backchannel.sandbox.emulator import (
    FAULT_REJECTION,
    FAULT_REJECTION_NO_ROW,
    Context,
    Emulator,
    hang,
    json_response,
)
from backchannel.sandbox.faults import Action
from backchannel.sandbox.state import http_code

PATH = "/{version}/customers/{customer_id}:uploadClickConversions"
TOKEN_PATH = "/token"  # noqa: S105 (a route, not a secret)
MAX_CONVERSIONS = 2000  # §6
MAX_USER_IDENTIFIERS = 5  # §3
#: the longest click-through window (§7: 1-90 days); measured here from the conversion
MAX_AGE = 90 * 86400  # seconds
SCOPE = "https://www.googleapis.com/auth/adwords"  # §2
#: what the inspection log marks a validateOnly request's rows with
VALIDATE_ONLY = "validateOnly"

REQUEST_KEYS = frozenset({"conversions", "partialFailure", "validateOnly", "jobId"})
#: ClickConversion's REST fields (§3)
CONVERSION_KEYS = frozenset(
    {
        "gclid",
        "gbraid",
        "wbraid",
        "conversionAction",
        "conversionDateTime",
        "conversionValue",
        "currencyCode",
        "orderId",
        "externalAttributionData",
        "customVariables",
        "cartData",
        "userIdentifiers",
        "conversionEnvironment",
        "consent",
        "customerType",
        "userIpAddress",
        "sessionAttributesEncoded",
        "sessionAttributesKeyValuePairs",
    }
)
#: "only available to allowlisted users" (§3)
ALLOWLISTED_KEYS = ("userIpAddress", "sessionAttributesEncoded", "sessionAttributesKeyValuePairs")
#: UserIdentifier: the oneof kinds Google has, of which uploads take only the first two (§3)
HASHED_KINDS = ("hashedEmail", "hashedPhoneNumber")
OTHER_KINDS = frozenset({"mobileId", "thirdPartyUserId", "addressInfo"})
IDENTIFIER_SOURCES = frozenset({"UNSPECIFIED", "UNKNOWN", "FIRST_PARTY", "THIRD_PARTY"})
CONSENT_STATUSES = frozenset({"UNSPECIFIED", "UNKNOWN", "GRANTED", "DENIED"})  # §8
_VERSION = re.compile(r"v(\d+)")
_CUSTOMER_ID = re.compile(r"\d{10}")
_ACTION = re.compile(r"customers/(\d+)/conversionActions/(\d+)")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")

MISSING_CREDENTIAL = (
    "Request is missing required authentication credential. Expected OAuth 2 access token,"
    " login cookie or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID_CREDENTIAL = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login"
    " cookie or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project."
)
#: ConversionUploadError texts (§7, §9; google-ads-python's enum docstrings)
MESSAGES = {
    "TOO_MANY_CONVERSIONS_IN_REQUEST": "Upload fewer than 2001 events in a single request.",
    "EXPIRED_EVENT": "The imported event can't be recorded because its click occurred before"
    " this conversion's click-through window. Make sure you import the most recent data.",
    "ORDER_ID_ALREADY_IN_USE": "The imported event includes an order ID that was previously"
    " recorded, so the event was not processed.",
    "DUPLICATE_ORDER_ID": "Imported events include multiple conversions with the same order ID"
    " and were not processed. Make sure order IDs are unique and try again.",
    "CLICK_CONVERSION_ALREADY_EXISTS": "The imported event has the same click and"
    " conversion_date_time as an existing conversion. Use a unique conversion_date_time or"
    " order ID for each unique event and try again.",
    "DUPLICATE_CLICK_CONVERSION_IN_REQUEST": "Multiple events have the same click and"
    " conversion_date_time. Make sure your conversion_date_time is correctly configured and"
    " try again.",
    "INVALID_USER_IDENTIFIER": "Make sure you hash user provided data using SHA-256 and ensure"
    " you are normalizing according to the guidelines.",
    "UNSUPPORTED_USER_IDENTIFIER": "The provided user identifiers are not supported. Use only"
    " hashed email or phone number and try again.",
    "GBRAID_WBRAID_BOTH_SET": "Can't use both gbraid and wbraid parameters. Use only 1 and try"
    " again.",
    "NO_CONVERSION_ACTION_FOUND": "The conversion action specified in the upload request cannot"
    " be found. Make sure it's available in this account.",
}


@dataclass
class GoogleError(Exception):
    """A request-level refusal: the HTTP status, Google's status name, the message and the
    GoogleAdsFailure errors (``details``), as the §10.2 envelope carries them."""

    status: int
    name: str
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: google.rpc.BadRequest field violations (JSON transcoding errors carry these instead)
    violations: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        """by_code key: the Google error code when there is one, else the status name."""
        for error in self.errors:
            for value in error.get("errorCode", {}).values():
                return str(value)
        return self.name


def request_id() -> str:
    """A Google-like request id (22 URL-safe characters, as in §10.2's examples)."""
    return secrets.token_urlsafe(16)[:22]


def envelope(error: GoogleError, version: str, rid: str) -> bytes:
    """``{"error": {"code", "message", "status", "details"}}`` (§10.2)."""
    body: dict[str, Any] = {"code": error.status, "message": error.message, "status": error.name}
    details: list[dict[str, Any]] = []
    if error.errors:
        details.append(
            {
                "@type": f"type.googleapis.com/google.ads.googleads.{version}.errors"
                ".GoogleAdsFailure",
                "errors": error.errors,
                "requestId": rid,
            }
        )
    if error.violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"description": v} for v in error.violations],
            }
        )
    if details:
        body["details"] = details
    return orjson.dumps({"error": body})


def ads_error(
    family: str, code: str, message: str, path: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One GoogleAdsError: ``{"errorCode": {family: code}, "message", "location"?}``."""
    error: dict[str, Any] = {"errorCode": {family: code}, "message": message}
    if path:
        error["location"] = {"fieldPathElements": path}
    return error


def invalid_argument(family: str, code: str, message: str) -> GoogleError:
    return GoogleError(
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        [ads_error(family, code, message)],
    )


def unknown_field(name: str, where: str | None = None) -> GoogleError:
    at = f" at '{where}'" if where else ""
    text = f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
    return GoogleError(400, "INVALID_ARGUMENT", text, violations=[text])


def bad_value(where: str, kind: str, value: Any) -> GoogleError:
    """JSON transcoding's refusal of a value of the wrong type or an unknown enum name."""
    text = f"Invalid value at '{where}' ({kind}), {orjson.dumps(value).decode()}"
    return GoogleError(400, "INVALID_ARGUMENT", text, violations=[text])


# --- OAuth: POST /token -------------------------------------------------------------------


async def token(request: Request, ctx: Context) -> Response:
    """Google's token endpoint for the refresh_token grant (§2): a form POST answered with
    ``{"access_token", "expires_in", "scope", "token_type": "Bearer"}``, or an OAuth error
    (``invalid_request``, ``unsupported_grant_type``, ``invalid_client``, ``invalid_grant``)."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    config = ctx.config
    grant = form.get("grant_type", "")
    if not grant:
        return _oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
    if grant != "refresh_token":
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
    for key in ("client_id", "client_secret", "refresh_token"):
        if not form.get(key):
            return _oauth_error(400, "invalid_request", f"Missing required parameter: {key}")
    if not _matches(form["client_id"], config.google_ads_client_id):
        return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if not _matches(form["client_secret"], config.google_ads_client_secret):
        return _oauth_error(401, "invalid_client", "Unauthorized")
    if not _matches(form["refresh_token"], config.google_ads_refresh_token):
        return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
    lifetime = config.google_ads_token_lifetime
    issued = "ya29.sandbox-" + secrets.token_urlsafe(24)
    tokens: dict[str, float] = ctx.state.setdefault("tokens", {})
    now = config.clock()
    for old in [t for t, until in tokens.items() if until <= now]:  # keep the map small
        del tokens[old]
    tokens[issued] = now + lifetime
    return json_response(
        {
            "access_token": issued,
            "expires_in": int(lifetime) if float(lifetime).is_integer() else lifetime,
            "scope": SCOPE,
            "token_type": "Bearer",
        }
    )


def _matches(value: str, expected: str | None) -> bool:
    return bool(value) and (expected is None or secrets.compare_digest(value, expected))


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


# --- the upload: checks -------------------------------------------------------------------


def check_headers(
    request: Request, version: str, customer_id: str, ctx: Context
) -> GoogleError | None:
    """Credentials, developer token, version and customer ids (§2), in that order."""
    config = ctx.config
    authorization = request.headers.get("authorization", "")
    scheme, _, bearer = authorization.partition(" ")
    bearer = bearer.strip()
    if scheme.lower() != "bearer" or not bearer:
        return _unauthenticated(MISSING_CREDENTIAL)
    until = ctx.state.get("tokens", {}).get(bearer)
    if until is None or until <= config.clock():
        return _unauthenticated(INVALID_CREDENTIAL)
    developer_token = request.headers.get("developer-token", "")
    if not developer_token:
        return invalid_argument(
            "requestError",
            "DEVELOPER_TOKEN_PARAMETER_MISSING",
            "The developer-token parameter is required for all requests.",
        )
    if not _matches(developer_token, config.google_ads_developer_token):
        return GoogleError(
            401,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access"
            " token, login cookie or other valid authentication credential.",
            [
                ads_error(
                    "authenticationError",
                    "DEVELOPER_TOKEN_INVALID",
                    "The developer token is not valid.",
                )
            ],
        )
    match = _VERSION.fullmatch(version)
    if match is None:
        return GoogleError(404, "NOT_FOUND", f"Method not found: {version}")
    if _CUSTOMER_ID.fullmatch(customer_id) is None:
        return invalid_argument(
            "requestError", "INVALID_CUSTOMER_ID", "Invalid customer ID '" + customer_id + "'."
        )
    login = request.headers.get("login-customer-id")
    if login is not None and _CUSTOMER_ID.fullmatch(login) is None:
        # Assumption on the code: Google's answer to a malformed login-customer-id is not in
        # the stored sources (§ Still unsure #5); 10 digits without dashes is the rule.
        return invalid_argument(
            "requestError",
            "INVALID_CUSTOMER_ID",
            f"Invalid login-customer-id '{login}': 10 digits, without dashes.",
        )
    if config.google_ads_customer_id is not None and customer_id != config.google_ads_customer_id:
        return GoogleError(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
            [
                ads_error(
                    "authorizationError",
                    "USER_PERMISSION_DENIED",
                    "User doesn't have permission to access customer. Note: If you're"
                    " accessing a client customer, the manager's customer id must be set in"
                    " the 'login-customer-id' header. See"
                    " https://developers.google.com/google-ads/api/docs/concepts/call-structure#cid",
                )
            ],
        )
    return None


def _unauthenticated(message: str) -> GoogleError:
    return GoogleError(
        401,
        "UNAUTHENTICATED",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


def parse_request(raw: bytes) -> dict[str, Any]:
    """The JSON body, with Google's transcoding refusals for what is not a request (§3)."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if type(body) is not dict:
        text = "Invalid JSON payload received. Expected an object."
        raise GoogleError(400, "INVALID_ARGUMENT", text, violations=[text])
    for key in body:
        if key not in REQUEST_KEYS:
            raise unknown_field(key)
    for key in ("partialFailure", "validateOnly"):
        if key in body and type(body[key]) is not bool:
            raise bad_value(key, "TYPE_BOOL", body[key])
    if body.get("partialFailure") is not True:
        raise invalid_argument(
            "partialFailureError",
            "PARTIAL_FAILURE_MODE_REQUIRED",
            "The partial failure field must be set to true.",
        )
    conversions = body.get("conversions")
    if type(conversions) is not list or not conversions:
        # Assumption on the code: "conversions" is Required (§3).
        raise invalid_argument(
            "fieldError", "REQUIRED", "The required field was not present: conversions."
        )
    if len(conversions) > MAX_CONVERSIONS:
        raise invalid_argument(
            "conversionUploadError",
            "TOO_MANY_CONVERSIONS_IN_REQUEST",
            MESSAGES["TOO_MANY_CONVERSIONS_IN_REQUEST"],
        )
    for index, row in enumerate(conversions):
        where = f"conversions[{index}]"
        if type(row) is not dict:
            raise bad_value(where, "type.googleapis.com/google.ads.googleads.ClickConversion", row)
        for key in row:
            if key not in CONVERSION_KEYS:
                raise unknown_field(key, where)
        _check_types(where, row)
    return body


def _check_types(where: str, row: dict[str, Any]) -> None:
    """What JSON transcoding refuses before any rule runs: wrong types and enum names."""
    for key in (
        "gclid",
        "gbraid",
        "wbraid",
        "conversionAction",
        "conversionDateTime",
        "currencyCode",
        "orderId",
    ):
        if key in row and type(row[key]) is not str:
            raise bad_value(f"{where}.{_snake(key)}", "TYPE_STRING", row[key])
    if "conversionValue" in row and not is_number(row["conversionValue"]):
        raise bad_value(f"{where}.conversion_value", "TYPE_DOUBLE", row["conversionValue"])
    identifiers = row.get("userIdentifiers")
    if identifiers is not None:
        if type(identifiers) is not list:
            raise bad_value(f"{where}.user_identifiers", "TYPE_MESSAGE", identifiers)
        for position, item in enumerate(identifiers):
            at = f"{where}.user_identifiers[{position}]"
            if type(item) is not dict:
                raise bad_value(at, "TYPE_MESSAGE", item)
            for key, value in item.items():
                if key in HASHED_KINDS:
                    if type(value) is not str:
                        raise bad_value(f"{at}.{_snake(key)}", "TYPE_STRING", value)
                elif key == "userIdentifierSource":
                    if value not in IDENTIFIER_SOURCES:
                        raise bad_value(f"{at}.user_identifier_source", "enum", value)
                elif key not in OTHER_KINDS:
                    raise unknown_field(key, at)
    consent = row.get("consent")
    if consent is not None:
        if type(consent) is not dict:
            raise bad_value(f"{where}.consent", "TYPE_MESSAGE", consent)
        for key, value in consent.items():
            if key not in ("adUserData", "adPersonalization"):
                raise unknown_field(key, f"{where}.consent")
            if value not in CONSENT_STATUSES:
                raise bad_value(
                    f"{where}.consent.{_snake(key)}",
                    "type.googleapis.com/google.ads.googleads.enums.ConsentStatusEnum"
                    ".ConsentStatus",
                    value,
                )


def _snake(name: str) -> str:
    """``conversionDateTime`` -> ``conversion_date_time``: error paths use proto names."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _path(index: int, *fields: str | tuple[str, int]) -> list[dict[str, Any]]:
    path: list[dict[str, Any]] = [{"fieldName": "conversions", "index": index}]
    for one in fields:
        if isinstance(one, tuple):
            path.append({"fieldName": one[0], "index": one[1]})
        else:
            path.append({"fieldName": one})
    return path


def _upload_error(index: int, code: str, *fields: str | tuple[str, int]) -> dict[str, Any]:
    return ads_error("conversionUploadError", code, MESSAGES[code], _path(index, *fields))


def click_of(row: Mapping[str, Any]) -> tuple[str, str] | None:
    for key in ("gclid", "gbraid", "wbraid"):
        value = row.get(key)
        if value:
            return key, value
    return None


def dedup_key(row: Mapping[str, Any]) -> str:
    """Google's dedup key of a row (§9): its orderId, else click id|conversionDateTime."""
    order = row.get("orderId")
    if order:
        return str(order)
    click = click_of(row)
    return f"{click[1] if click else ''}|{row.get('conversionDateTime', '')}"


def check_row(
    index: int, row: dict[str, Any], customer_id: str, now: float
) -> dict[str, Any] | None:
    """The first rule this row breaks, as a GoogleAdsError naming it, or None."""
    clicks = [k for k in ("gclid", "gbraid", "wbraid") if row.get(k)]
    identifiers = row.get("userIdentifiers") or []
    if "gbraid" in clicks and "wbraid" in clicks:
        return _upload_error(index, "GBRAID_WBRAID_BOTH_SET", "wbraid")
    if len(clicks) > 1:
        # "If set, the wbraid and gbraid parameters must be None" (§3); the code is assumed.
        return ads_error(
            "fieldError",
            "VALUE_MUST_BE_UNSET",
            "The field's value must be unset: set only one of gclid, gbraid and wbraid.",
            _path(index, clicks[1]),
        )
    if not clicks and not identifiers:
        # §3: a click id, or user identifiers (enhanced conversions for leads). Code assumed.
        return ads_error(
            "fieldError",
            "REQUIRED",
            "The required field was not present: one of gclid, gbraid, wbraid or user_identifiers.",
            _path(index, "gclid"),
        )
    action = row.get("conversionAction")
    if not action:
        return ads_error(
            "fieldError",
            "REQUIRED",
            "The required field was not present.",
            _path(index, "conversion_action"),
        )
    match = _ACTION.fullmatch(action)
    if match is None:
        return ads_error(
            "requestError",
            "RESOURCE_NAME_MALFORMED",
            "The resource name is malformed.",
            _path(index, "conversion_action"),
        )
    if match.group(1) != customer_id:
        return _upload_error(index, "NO_CONVERSION_ACTION_FOUND", "conversion_action")
    when = row.get("conversionDateTime")
    if not when:
        return ads_error(
            "fieldError",
            "REQUIRED",
            "The required field was not present.",
            _path(index, "conversion_date_time"),
        )
    moment = _date_time(when)
    if moment is None:
        return ads_error(
            "dateError",
            "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET",
            "The string date time's format should be yyyy-mm-dd hh:mm:ss+|-hh:mm.",
            _path(index, "conversion_date_time"),
        )
    if moment < now - MAX_AGE:
        return _upload_error(index, "EXPIRED_EVENT", "conversion_date_time")
    if moment > now + MAX_FUTURE_SKEW:
        return ads_error(  # code assumed: DateError's own "later than the maximum"
            "dateError",
            "LATER_THAN_MAXIMUM_DATE",
            "Date is after allowed maximum.",
            _path(index, "conversion_date_time"),
        )
    currency = row.get("currencyCode")
    if currency is not None and currency not in ISO_4217:
        return ads_error(
            "currencyCodeError",
            "UNSUPPORTED",
            "The currency code is not supported.",
            _path(index, "currency_code"),
        )
    if len(identifiers) > MAX_USER_IDENTIFIERS:
        return ads_error(  # code assumed; the limit of 5 is §3's
            "collectionSizeError",
            "TOO_MANY",
            "Too many elements.",
            _path(index, "user_identifiers"),
        )
    for position, item in enumerate(identifiers):
        kinds = [k for k in item if k != "userIdentifierSource"]
        if len(kinds) != 1 or kinds[0] not in HASHED_KINDS:
            return _upload_error(
                index, "UNSUPPORTED_USER_IDENTIFIER", ("user_identifiers", position)
            )
        if is_sha256(item[kinds[0]]) is None:
            return _upload_error(
                index,
                "INVALID_USER_IDENTIFIER",
                ("user_identifiers", position),
                _snake(kinds[0]),
            )
    consent = row.get("consent") or {}
    if "adPersonalization" in consent:
        return ads_error(
            "fieldError",
            "VALUE_MUST_BE_UNSET",
            "ad_personalization can only be set for OfflineUserDataJobService and UserDataService.",
            _path(index, "consent", "ad_personalization"),
        )
    for key in ALLOWLISTED_KEYS:
        if key in row:
            return ads_error(
                "notAllowlistedError",
                "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
                "Customer is not allowlisted for accessing this feature.",
                _path(index, _snake(key)),
            )
    return None


def _date_time(text: str) -> float | None:
    if _DATE_TIME.fullmatch(text) is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _action_id(row: Mapping[str, Any]) -> str:
    match = _ACTION.fullmatch(str(row.get("conversionAction", "")))
    return match.group(2) if match else ""


def check_dedup(
    rows: list[dict[str, Any]], failed: dict[int, dict[str, Any]], state: dict[str, Any]
) -> None:
    """Duplicates within the request and against what was recorded before (§9)."""
    orders: set[tuple[str, str]] = state.setdefault("orders", set())
    clicks: set[tuple[str, str, str]] = state.setdefault("clicks", set())
    seen_orders: dict[tuple[str, str], list[int]] = {}
    seen_clicks: dict[tuple[str, str, str], list[int]] = {}
    for index, row in enumerate(rows):
        if index in failed:
            continue
        action = _action_id(row)
        order = row.get("orderId")
        if order:
            seen_orders.setdefault((action, order), []).append(index)
            continue
        click = click_of(row)
        if click is not None:
            key = (action, click[1], row["conversionDateTime"])
            seen_clicks.setdefault(key, []).append(index)
    for (action, order), indexes in seen_orders.items():
        for index in indexes:
            if len(indexes) > 1:
                failed[index] = _upload_error(index, "DUPLICATE_ORDER_ID", "order_id")
            elif (action, order) in orders:
                failed[index] = _upload_error(index, "ORDER_ID_ALREADY_IN_USE", "order_id")
    for key, indexes in seen_clicks.items():
        for index in indexes:
            if len(indexes) > 1:
                failed[index] = _upload_error(
                    index, "DUPLICATE_CLICK_CONVERSION_IN_REQUEST", "conversion_date_time"
                )
            elif key in clicks:
                failed[index] = _upload_error(
                    index, "CLICK_CONVERSION_ALREADY_EXISTS", "conversion_date_time"
                )


def record(rows: list[dict[str, Any]], accepted: list[int], state: dict[str, Any]) -> None:
    """Remember what was taken, for later ORDER_ID_ALREADY_IN_USE / ALREADY_EXISTS."""
    orders: set[tuple[str, str]] = state.setdefault("orders", set())
    clicks: set[tuple[str, str, str]] = state.setdefault("clicks", set())
    for index in accepted:
        row = rows[index]
        action = _action_id(row)
        if row.get("orderId"):
            orders.add((action, row["orderId"]))
        else:
            click = click_of(row)
            if click is not None:
                clicks.add((action, click[1], row["conversionDateTime"]))


def rejected_by_fault(row: Mapping[str, Any], event_ids: frozenset[str]) -> bool:
    """reject_event_ids names a row by its orderId, or by Backchannel's derived event_id
    ``<event>-<orderId>`` (events.py), which is not in Google's body."""
    order = row.get("orderId")
    if not event_ids or not order:
        return False
    return order in event_ids or any(e.endswith("-" + order) for e in event_ids)


def result_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ClickConversionResult (§10.1): the row's click id, action, date time, identifiers."""
    result = {k: row[k] for k in ("gclid", "gbraid", "wbraid") if row.get(k)}
    result["conversionAction"] = row["conversionAction"]
    result["conversionDateTime"] = row["conversionDateTime"]
    if row.get("userIdentifiers"):
        result["userIdentifiers"] = [
            {k: v for k, v in item.items() if k in HASHED_KINDS} for item in row["userIdentifiers"]
        ]
    return result


def partial_failure(errors: list[dict[str, Any]], version: str, rid: str) -> dict[str, Any]:
    """The google.rpc.Status of ``partialFailureError`` (§10.1): code 3, a summary naming
    the first error's location, and the GoogleAdsFailure."""
    first = errors[0]
    location = "".join(
        f"[{e['index']}]" if "index" in e else f".{e['fieldName']}"
        for e in first["location"]["fieldPathElements"][1:]
    )
    index = first["location"]["fieldPathElements"][0]["index"]
    summary = f"{first['message']}, at conversions[{index}]{location}"
    if len(errors) > 1:
        summary = "Multiple errors in ‘details’. First error: " + summary
    return {
        "code": 3,
        "message": summary,
        "details": [
            {
                "@type": f"type.googleapis.com/google.ads.googleads.{version}.errors"
                ".GoogleAdsFailure",
                "errors": errors,
                "requestId": rid,
            }
        ],
    }


# --- the upload: the endpoint -------------------------------------------------------------


def _fault_error(status: int) -> GoogleError:
    if status == 500:
        return GoogleError(500, "INTERNAL", "Internal error encountered.")
    if status == 503:
        return GoogleError(503, "UNAVAILABLE", "The service is currently unavailable.")
    if status == 504:
        return GoogleError(
            504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
        )
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return GoogleError(status, "UNKNOWN", phrase)


def rate_limited(version: str) -> GoogleError:
    """The real 429 (§10.2), asking for a short wait so test storms end quickly."""
    error = ads_error("quotaError", "RESOURCE_EXHAUSTED", "Too many requests. Retry in 1 seconds.")
    error["details"] = {
        "quotaErrorDetails": {
            "rateScope": "DEVELOPER",
            "rateName": "Number of operations for basic access",
            "retryDelay": "1s",
        }
    }
    return GoogleError(
        429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", [error]
    )


async def handle(request: Request, ctx: Context) -> Response:
    """``POST /{version}/customers/{customer_id}:uploadClickConversions`` as Google answers."""
    raw = await request.body()
    log, decision, config = ctx.log, ctx.decision, ctx.config
    version = request.path_params["version"]
    customer_id = request.path_params["customer_id"]
    rid = request_id()
    if decision.action is Action.ERROR:
        log.count(http_code(decision.status))
        return _reply(_fault_error(decision.status), version, rid)
    if decision.action is Action.RATE_LIMIT:
        error = rate_limited(version)
        log.count(error.name)
        return _reply(error, version, rid)
    try:
        refused = check_headers(request, version, customer_id, ctx)
        if refused is not None:
            raise refused
        body = parse_request(raw)
    except GoogleError as exc:
        log.count(exc.code)
        return _reply(exc, version, rid)
    rows: list[dict[str, Any]] = body["conversions"]
    now = config.clock()
    failed: dict[int, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        problem = check_row(index, row, customer_id, now)
        if problem is not None:
            failed[index] = problem
    faulty = [
        i
        for i, row in enumerate(rows)
        if i not in failed and rejected_by_fault(row, decision.reject_event_ids)
    ]
    if faulty and decision.without_row:
        error = invalid_argument("requestError", "UNKNOWN", FAULT_REJECTION_NO_ROW)
        log.count(error.code)
        return _reply(error, version, rid)
    for index in faulty:
        failed[index] = ads_error(
            "conversionUploadError", "UNKNOWN", FAULT_REJECTION, _path(index, "order_id")
        )
    validate_only = body.get("validateOnly") is True
    check_dedup(rows, failed, ctx.state)
    accepted = [i for i in range(len(rows)) if i not in failed]
    answer: dict[str, Any] = {}
    if not validate_only:
        record(rows, accepted, ctx.state)
        answer["results"] = [{} if i in failed else result_of(r) for i, r in enumerate(rows)]
        answer["jobId"] = str(2**31 + secrets.randbelow(2**40))
    if failed:
        answer["partialFailureError"] = partial_failure(
            [failed[i] for i in sorted(failed)], version, rid
        )
    if accepted:
        taken = [{**rows[i], "event_id": dedup_key(rows[i])} for i in accepted]
        log.store(
            taken,
            raw=orjson.dumps(taken),
            field=None,
            pixel=customer_id,
            test_event_code=VALIDATE_ONLY if validate_only else None,
            received_at=now,
            request_id=rid,
        )
    log.count("0")
    response = json_response(answer, 200, {"request-id": rid})
    if decision.action is Action.TIMEOUT:  # after_accept
        await hang(request, decision.hang)
    return response


def _reply(error: GoogleError, version: str, rid: str) -> Response:
    headers = {"request-id": rid, **error.headers}
    return Response(
        envelope(error, version, rid), error.status, headers, media_type="application/json"
    )


EMULATOR = Emulator(
    name="google_ads",
    routes=((PATH, ("POST",)),),
    event_field="conversionAction",
    handle=handle,
    extra=((TOKEN_PATH, ("POST",), token),),
    # the default reads "event_id": what record() stores there is Google's dedup key (the
    # order id; a click conversion keeps no event id)
    sample_credentials={
        "pixel": "1234567890",
        "token": "sandbox-developer-token",
        "client_id": "sandbox.apps.googleusercontent.com",
        "client_secret": "sandbox-client-secret",
        "refresh_token": "sandbox-refresh-token",
        "conversion_actions": "CompletePayment=customers/1234567890/conversionActions/77",
    },
)
