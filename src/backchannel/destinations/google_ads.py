"""Google Ads API click conversions (``POST /{version}/customers/{id}:uploadClickConversions``).

The wire contract is ``docs/platforms/google_ads.md`` (cited below as §n). In short: one JSON
request of up to 2,000 ``ClickConversion`` rows with ``"partialFailure": true`` (§3), sent with
a short-lived OAuth access token, the developer token and, through a manager account, the
``login-customer-id`` header (§2). Google answers 200 even when some rows fail, naming each
failed row in ``partialFailureError`` (§10.1); request-level problems are the Google JSON error
envelope (§10.2).

Choices where the document leaves room (each is repeated where it is made):

- ``orderId`` is the order id, else our ``event_id``: Google deduplicates on it per conversion
  action (§9), so a row resent after a lost answer or a retry comes back
  ``ORDER_ID_ALREADY_IN_USE`` (counted as delivered) instead of being counted twice.
- ``consent`` carries ``adUserData`` only: ``adPersonalization`` "can only be set for
  OfflineUserDataJobService and UserDataService" (§8), not for click conversions.
- with a gbraid/wbraid and no gclid the user identifiers are left out: a peer (RudderStack)
  drops them there, Google's pages say nothing either way (§3). A gclid travels with them
  (enhanced conversions for leads: the click id is optional beside identifiers, §3).
- a test conversion (``test_event_code`` set) is sent with ``"validateOnly": true``: Google has
  no test-events console, and validateOnly checks a request without recording it (§1, §11.2).
- ``TOO_RECENT_*`` rows (the click is under 6 hours old, §7) make the whole request a RETRY
  after 6 hours; see :func:`classify` for why resending the taken rows is safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from backchannel.destinations.base import (
    Credential,
    Identifier,
    OAuth,
    OAuthError,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
    age_note,
    retry_after_seconds,
    shorten,
)
from backchannel.events import Conversion
from backchannel.identity import normalize_email_google
from backchannel.notes import Note

name = "google_ads"
display_name = "Google Ads"
ORDER = 40
ON_BY_DEFAULT = False  # needs an account, a developer token and OAuth: off until connected
CREDENTIALS = (
    Credential("pixel", "Customer ID", pattern=r"\d{10}", hint="10 digits, without dashes"),
    Credential("token", "Developer token", secret=True),
    Credential("client_id", "OAuth client ID"),
    Credential("client_secret", "OAuth client secret", secret=True),
    Credential("refresh_token", "OAuth refresh token", secret=True),
    Credential(
        "login_customer_id",
        "Login (manager) customer ID",
        pattern=r"\d{10}",
        hint="10 digits, without dashes; only when you sign in through a manager account",
        required=False,
    ),
    Credential(
        "conversion_actions",
        "Conversion action per event",
        hint="Event=customers/123/conversionActions/456, one per line or ';'-separated",
    ),
)
#: Google's email form: gmail.com/googlemail.com dots removed (identity.py, §4)
EMAIL_FORM = "google"
EMAIL_NORMALIZER = normalize_email_google
IDENTIFIERS = (
    # the gclid's cookie is the Conversion Linker's _gcl_aw ("GCL.<time>.<gclid>"), which
    # bc.js parses itself (docs/platforms/google_ads.md section 5)
    Identifier("gclid", "click", url_param="gclid"),
    Identifier("gbraid", "click", url_param="gbraid"),
    Identifier("wbraid", "click", url_param="wbraid"),
)
#: quality.py weights (sum 10). A click conversion matches on its click id first: a gclid
#: names the very click (§3, §5); without one Google can only try to find the click from the
#: hashed email and phone (enhanced conversions for leads, §3), email being the identifier
#: most people sign in with. Nothing else is matched on: "Only hashed_email and
#: hashed_phone_number are supported for conversion uploads" (§3), and the IP address is for
#: allowlisted accounts only; external ids, browser ids and user agents are not sent at all.
QUALITY_WEIGHTS = {"click_id": 6.0, "email": 2.5, "phone": 1.5}
#: each conversions[] row keeps its identifiers in this list
IDENTIFIER_SECTION = "userIdentifiers"
TEST_EVENT_CODES = False
#: Google's tag (gtag('event', 'conversion', {transaction_id})), which GA4 and Google Ads share:
#: its mirror rows go under "google", and the id both legs carry is the order id (our orderId,
#: Google's dedup key per conversion action, §9)
PIXEL_CALL = "gtag"
PIXEL_MIRROR = "google"
DEDUP_ID = "order_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("google",)
#: user fields of its click ids (gclid from the URL or the _gcl_aw cookie; iOS braids) and
#: browser id: Google Ads takes no first-party cookie value
CLICK_IDS = ("gclid", "gbraid", "wbraid")
CLICK_ID_LABEL = "gclid / gbraid / wbraid"
BROWSER_IDS: tuple[str, ...] = ()
BROWSER_ID_LABEL = "none"
DEFAULT_BASE_URL = "https://googleads.googleapis.com"
#: "start with v26" (§1); a connection may set ``api_version`` in its settings
API_VERSION = "v26"
#: the OAuth token endpoint (§2; Still unsure #4: google-ads-python still defaults to
#: https://accounts.google.com/o/oauth2/token, which serves the same grant). A connection's
#: ``token_url`` setting replaces it (the sandbox serves ``{base_url}/token``).
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL, not a secret)
#: "Upload fewer than 2001 events in a single request" (§6)
max_batch = 2000
#: Google takes a click for the conversion action's click-through window, 1 to 90 days,
#: default 30 (§7). The window is the action's setting, unknown here, and it runs from the
#: *click*, which is before the conversion; so 90 days after the conversion no window can
#: still be open. Shorter windows are refused by Google per row (EXPIRED_EVENT, permanent).
#: Unsure (§ Still unsure #3): the 1-90 range comes from third-party glossaries.
MAX_AGE = 90 * 86400  # seconds
#: "The maximum number of user identifiers for each conversion is 5." (§3)
MAX_USER_IDENTIFIERS = 5
#: TOO_RECENT_EVENT: "Retry after 6 hours have passed" (§7)
TOO_RECENT_WAIT = 6 * 3600  # seconds

#: row errors meaning Google already holds this conversion (§9): the row is delivered
ALREADY_RECORDED = frozenset({"ORDER_ID_ALREADY_IN_USE", "CLICK_CONVERSION_ALREADY_EXISTS"})
#: row errors meaning "the same row will be taken later" (§7)
RETRY_LATER = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"})
#: 401 authenticationError codes a new access token fixes; any other (a developer token
#: that is not valid, an account without 2-step verification…) needs a person (§2)
TOKEN_ERRORS = frozenset(
    {
        "OAUTH_TOKEN_EXPIRED",
        "OAUTH_TOKEN_INVALID",
        "OAUTH_TOKEN_REVOKED",
        "OAUTH_TOKEN_DISABLED",
        "OAUTH_TOKEN_HEADER_INVALID",
    }
)
#: error families about the account or the credentials, never about one row
ACCOUNT_FAMILIES = frozenset({"authenticationError", "authorizationError"})
#: request errors that concern the headers or the account, not a row
ACCOUNT_REQUEST_ERRORS = frozenset(
    {
        "DEVELOPER_TOKEN_PARAMETER_MISSING",
        "LOGIN_CUSTOMER_ID_PARAMETER_MISSING",
        "INVALID_CUSTOMER_ID",
        "UNSUPPORTED_VERSION",
        "CLOUD_PROJECT_NOT_FOUND",
    }
)
#: Google's consent enum (§8)
CONSENT_VALUES = {"granted": "GRANTED", "denied": "DENIED"}

_RESOURCE = re.compile(r"customers/(\d{10})/conversionActions/(\d+)")
_ACTION_ID = re.compile(r"\d+")
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ ]{0,99}")  # events.py's EVENT_NAME


class ConversionActionsError(ValueError):
    """The ``conversion_actions`` setting cannot be read; the message says where."""


class MissingConversionAction(ValueError):
    """An event with no conversion action configured: Google cannot take it (delivery
    dead-letters just that row with this reason; ``replay`` sends it once configured)."""


# --- conversion actions -------------------------------------------------------------------


def parse_conversion_actions(text: str, customer_id: str = "") -> dict[str, str]:
    """``Event=customers/123/conversionActions/456`` entries, one per line or ';'-separated,
    as {event name: resource name}. A bare action id (``Purchase=456``) is completed with
    ``customer_id``. Raises :class:`ConversionActionsError` naming the first bad entry."""
    actions: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split(";")]
    for position, entry in enumerate((e for e in entries if e), start=1):
        where = f"conversion_actions entry {position} ({entry!r})"
        event, sep, action = (part.strip() for part in entry.partition("="))
        if not sep:
            raise ConversionActionsError(
                f"{where}: expected Event=customers/<customer id>/conversionActions/<id>"
            )
        if not _EVENT_NAME.fullmatch(event):
            raise ConversionActionsError(f"{where}: {event!r} is not an event name")
        if _ACTION_ID.fullmatch(action) and customer_id:
            action = f"customers/{customer_id}/conversionActions/{action}"
        match = _RESOURCE.fullmatch(action)
        if match is None:
            raise ConversionActionsError(
                f"{where}: the action must be customers/<10-digit customer id>/"
                "conversionActions/<id> (Google Ads > Goals > Conversions > the action's"
                " ctId), or the bare action id"
            )
        if customer_id and match.group(1) != customer_id:
            # Google looks actions up by id alone (§3), but an action of another account is
            # not found in this one: a copy-paste from another account is the likely cause.
            raise ConversionActionsError(
                f"{where}: the action belongs to customer {match.group(1)}, not to the"
                f" connected customer {customer_id}"
            )
        if actions.get(event, action) != action:
            raise ConversionActionsError(f"{where}: {event} already has an action")
        actions[event] = action
    return actions


def conversion_actions(target: Target) -> dict[str, str]:
    """The target's conversion action per event name (see :func:`parse_conversion_actions`);
    an empty dict when none is configured."""
    return parse_conversion_actions(target.settings.get("conversion_actions", ""), target.pixel)


def missing_action(conversion: Conversion, actions: Mapping[str, str]) -> str | None:
    """Why Google cannot take this conversion under these actions, or None."""
    if conversion.event in actions:
        return None
    return (
        f"no Google Ads conversion action for event {conversion.event!r}: add"
        f" {conversion.event}=customers/<id>/conversionActions/<id> to the connection's"
        " conversion actions; not sent to Google Ads"
    )


# --- the body -----------------------------------------------------------------------------


def conversion_date_time(unix: int) -> str:
    """``yyyy-mm-dd hh:mm:ss+|-hh:mm`` with the timezone required by Google (§3), in UTC."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def click_id(conversion: Conversion) -> tuple[str, str] | None:
    """The one click id sent, as (field, value): exactly one of gclid, gbraid, wbraid (§3).

    gclid first (it names the click itself); else the braid of the conversion's kind
    (gbraid: app conversions, wbraid: web conversions, §5), else the other one.
    """
    u = conversion.user
    if u.gclid:
        return ("gclid", u.gclid)
    braids = [("gbraid", u.gbraid), ("wbraid", u.wbraid)]
    if conversion.source != "app":
        braids.reverse()
    for key, value in braids:
        if value:
            return (key, value)
    return None


def _identifiers(conversion: Conversion) -> tuple[list[dict[str, str]], int]:
    """(userIdentifiers, how many were left out for the limit of 5, §3).

    hashedEmail is Google's email form (gmail dots removed) computed at ingest from the raw
    address (``HashedUser.email_forms``), or the common form where Google's is the same; it
    is never re-hashed here. hashedPhoneNumber is the SHA-256 of E.164 with '+' (§4), which
    is ``user.phone``. Both kinds get a place before the limit cuts.
    """
    u = conversion.user
    emails = list(u.email_forms.get("google", u.email))
    phones = list(u.phone)
    room = MAX_USER_IDENTIFIERS
    n_phones = min(len(phones), max(1 if phones else 0, room - len(emails)))
    n_emails = min(len(emails), room - n_phones)
    found = [{"hashedEmail": e} for e in emails[:n_emails]]
    found += [{"hashedPhoneNumber": p} for p in phones[:n_phones]]
    return found, len(emails) + len(phones) - len(found)


def conversion_row(conversion: Conversion, action: str) -> dict[str, Any]:
    """One ``conversions[]`` item (``ClickConversion``, §3)."""
    row: dict[str, Any] = {}
    click = click_id(conversion)
    if click is not None:
        row[click[0]] = click[1]
    row["conversionAction"] = action
    row["conversionDateTime"] = conversion_date_time(conversion.event_time)
    if conversion.value is not None:
        row["conversionValue"] = conversion.value
    if conversion.currency is not None:
        row["currencyCode"] = conversion.currency.upper()
    # Google's dedup key (§9): one conversion per order id per action. Without an order id
    # our event_id stands in, so a resent row is recognised instead of counted twice.
    row["orderId"] = conversion.order_id or conversion.event_id
    if click is None or click[0] == "gclid":  # braids travel alone (§3, peer practice)
        identifiers, _ = _identifiers(conversion)
        if identifiers:
            row["userIdentifiers"] = identifiers
    consent = conversion.consent
    if consent is not None and consent.ad_user_data in CONSENT_VALUES:
        # adUserData only: adPersonalization "can only be set for OfflineUserDataJobService
        # and UserDataService" (§8), and the official examples set ad_user_data alone.
        row["consent"] = {"adUserData": CONSENT_VALUES[consent.ad_user_data]}
    return row


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """The ``UploadClickConversionsRequest`` for ``batch`` (sharing ``test_event_code``).

    Raises :class:`MissingConversionAction` when an event has no configured action and
    :class:`ConversionActionsError` when the setting cannot be read.
    """
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} conversions per request")
    code = batch[0].test_event_code
    if any(c.test_event_code != code for c in batch):
        raise ValueError("a batch must share test_event_code")
    actions = conversion_actions(target)
    rows = []
    for conversion in batch:
        missing = missing_action(conversion, actions)
        if missing is not None:
            raise MissingConversionAction(missing)
        rows.append(conversion_row(conversion, actions[conversion.event]))
    # "This should always be set to true" (§3): Google refuses the request without it.
    body: dict[str, Any] = {"conversions": rows, "partialFailure": True}
    if code is not None:
        # No test-events console at Google: validate without recording (§1, §11.2).
        body["validateOnly"] = True
    return body


def upload_url(target: Target) -> str:
    version = target.settings.get("api_version") or API_VERSION
    base = target.base_url.rstrip("/")
    return f"{base}/{version}/customers/{target.pixel}:uploadClickConversions"


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """The upload request (§1, §2). Secrets travel in headers only: the access token the
    worker obtained through :data:`OAUTH` and the developer token; ``body`` holds none."""
    body = build_body(batch, target)
    headers = {
        "Authorization": f"Bearer {target.access_token}",
        "developer-token": target.token,
        "Content-Type": "application/json",
    }
    login = target.settings.get("login_customer_id")
    if login:
        headers["login-customer-id"] = login
    return PreparedRequest(
        url=upload_url(target),
        headers=headers,
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


# --- OAuth --------------------------------------------------------------------------------


def token_request(target: Target) -> PreparedRequest:
    """The refresh-token grant (§2): a form POST to the token endpoint. ``body`` shows the
    grant and the client id only; the client secret and refresh token are in ``content``."""
    client_id = target.settings.get("client_id", "")
    form = {
        "grant_type": "refresh_token",
        "client_id": client_id,
        "client_secret": target.secrets.get("client_secret", ""),
        "refresh_token": target.secrets.get("refresh_token", ""),
    }
    return PreparedRequest(
        url=target.settings.get("token_url", DEFAULT_TOKEN_URL),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        content=urlencode(form).encode(),
        body={"grant_type": "refresh_token", "client_id": client_id},
    )


#: OAuth error codes (RFC 6749 §5.2) that only new credentials fix
PERMANENT_OAUTH_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_request"}
)


def token_response(status: int, body: bytes) -> tuple[str, float]:
    """(access token, seconds it lives) from the token endpoint's answer (§2: ``expires_in``
    3600), or :class:`OAuthError`: permanent for a revoked refresh token or a wrong client
    (``invalid_grant``, ``invalid_client``…), not for 5xx, 429 or a garbled answer."""
    try:
        payload = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if 200 <= status < 300:
        token = payload.get("access_token")
        lifetime = payload.get("expires_in", 3600)
        if not isinstance(token, str) or not token:
            raise OAuthError(
                f"HTTP {status} from the token endpoint without an access_token", permanent=False
            )
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = 3600
        return token, float(lifetime)
    error = payload.get("error")
    error = error if isinstance(error, str) else ""
    description = payload.get("error_description")
    reason = f"token endpoint HTTP {status}"
    if error:
        reason += f": {error}"
    if isinstance(description, str) and description:
        reason += f" ({description})"
    permanent = (
        status < 500
        and status not in (408, 429)
        and (error in PERMANENT_OAUTH_ERRORS or status in (400, 401, 403))
    )
    raise OAuthError(reason, permanent=permanent)


OAUTH = OAuth(request=token_request, parse=token_response)


# --- the answer ---------------------------------------------------------------------------


def _errors(status_obj: Any) -> list[dict[str, Any]]:
    """The GoogleAdsFailure errors of a google.rpc.Status (``details[*].errors[*]``)."""
    found: list[dict[str, Any]] = []
    if not isinstance(status_obj, dict):
        return found
    details = status_obj.get("details")
    for detail in details if isinstance(details, list) else []:
        errors = detail.get("errors") if isinstance(detail, dict) else None
        for error in errors if isinstance(errors, list) else []:
            if isinstance(error, dict):
                found.append(error)
    return found


def _request_id(status_obj: Any, headers: Mapping[str, str]) -> str | None:
    ref = headers.get("request-id")
    if ref:
        return ref
    if isinstance(status_obj, dict):
        for detail in status_obj.get("details") or []:
            if isinstance(detail, dict) and isinstance(detail.get("requestId"), str):
                return str(detail["requestId"])
    return None


def error_code(error: Mapping[str, Any]) -> tuple[str, str]:
    """(family, code) of one error: ``errorCode`` has exactly one key (§10.1)."""
    code = error.get("errorCode")
    if isinstance(code, dict) and code:
        family, value = next(iter(code.items()))
        return str(family), str(value)
    return "", ""


def error_row(error: Mapping[str, Any]) -> int | None:
    """The ``conversions[]`` index an error's location names (§10.1), or None."""
    location = error.get("location")
    elements = location.get("fieldPathElements") if isinstance(location, dict) else None
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, dict) and element.get("fieldName") == "conversions":
            index = element.get("index")
            if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
                return index
    return None


def _describe(error: Mapping[str, Any]) -> str:
    _, code = error_code(error)
    message = str(error.get("message") or "")
    if code and message:
        return f"{code}: {message}"
    return code or message or "refused without a message"


def _retry_delay(errors: list[dict[str, Any]]) -> float | None:
    """``quotaErrorDetails.retryDelay`` ("40591s"), the wait a 429 asks for (§10.2)."""
    for error in errors:
        details = error.get("details")
        quota = details.get("quotaErrorDetails") if isinstance(details, dict) else None
        delay = quota.get("retryDelay") if isinstance(quota, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, min(float(delay[:-1]), 86400.0))
            except ValueError:
                return None
    return None


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read Google's answer (§10).

    - 2xx without ``partialFailureError`` (or with code 0): every row taken.
    - 2xx with it: per row, grouped by ``fieldPathElements`` index. A row whose error says
      Google already holds it (ORDER_ID_ALREADY_IN_USE, CLICK_CONVERSION_ALREADY_EXISTS, §9)
      is delivered. A row failing only for TOO_RECENT_* (§7: retry after 6 hours) makes the
      whole request a RETRY in 6 hours: the seam has no "retry these rows", and resending
      the rows Google took is harmless, since every row carries an ``orderId`` and comes back
      ORDER_ID_ALREADY_IN_USE. Otherwise DELIVERED with ``failed_rows`` (each refused for
      good with Google's message). A row ``{}`` in ``results`` with no error naming it is
      failed too (RudderStack's rule, §10.1).
    - 401: RETRY, the access token (the worker fetches a new one once), unless the details
      name an authentication error a new token cannot fix (a developer token that is not
      valid, no 2-step verification, §2): PERMANENT for the whole request.
    - 403 (PERMISSION_DENIED, developer token not approved…): PERMANENT, whole request.
    - 429 RESOURCE_EXHAUSTED: RETRY after Retry-After or ``retryDelay`` (§10.2); 5xx: RETRY.
    - other 4xx: PERMANENT; ``bad_index`` when the error's location names a row, the whole
      request when it is about the credentials, the headers or the account.
    """
    text = shorten(body)
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if 200 <= status < 300:
        if not isinstance(payload, dict):
            # A proxy's page with a 200: nothing says Google took the rows.
            return Outcome(Verdict.RETRY, f"HTTP {status} without a JSON object", response=text)
        return _partial(payload, headers, text)
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    errors = _errors(error)
    ref = _request_id(error, headers)
    google_status = str(error.get("status") or "")
    message = str(error.get("message") or "")
    first = errors[0] if errors else None
    reason = f"HTTP {status}"
    if google_status:
        reason += f" {google_status}"
    if first is not None:
        reason += f": {_describe(first)}"
    elif message:
        reason += f": {message}"
    if status == 401:
        codes = {code for family, code in map(error_code, errors) if family}
        if codes and not codes <= TOKEN_ERRORS:
            return Outcome(
                Verdict.PERMANENT, reason, platform_ref=ref, response=text, whole_request=True
            )
        return Outcome(
            Verdict.RETRY,
            f"{reason} (the access token was refused: expired or revoked)",
            platform_ref=ref,
            response=text,
            reauthorize=True,
        )
    if status == 429 or status >= 500 or status == 408:
        wait = retry_after_seconds(headers)
        if wait is None:
            wait = _retry_delay(errors)
        return Outcome(Verdict.RETRY, reason, platform_ref=ref, retry_after=wait, response=text)
    families = {error_code(e) for e in errors}
    account = status in (403, 404) or any(
        family in ACCOUNT_FAMILIES or code in ACCOUNT_REQUEST_ERRORS for family, code in families
    )
    rows = [r for r in (error_row(e) for e in errors) if r is not None]
    return Outcome(
        Verdict.PERMANENT,
        reason,
        platform_ref=ref,
        response=text,
        bad_index=None if account or not rows else rows[0],
        whole_request=account,
    )


def _partial(payload: dict[str, Any], headers: Mapping[str, str], text: str) -> Outcome:
    failure = payload.get("partialFailureError")
    results = payload.get("results")
    results = results if isinstance(results, list) else []
    ref = _request_id(failure, headers)
    if not isinstance(failure, dict) or failure.get("code") in (0, None):
        return Outcome(
            Verdict.DELIVERED, f"{len(results)} conversions taken", platform_ref=ref, response=text
        )
    by_row: dict[int, list[dict[str, Any]]] = {}
    unplaced: list[dict[str, Any]] = []
    for error in _errors(failure):
        row = error_row(error)
        if row is None:
            unplaced.append(error)
        else:
            by_row.setdefault(row, []).append(error)
    for index, result in enumerate(results):
        if result == {} and index not in by_row:
            by_row[index] = [{"message": "no result and no error for this row"}]
    failed: dict[int, str] = {}
    later: list[int] = []
    already = 0
    for row, errors in sorted(by_row.items()):
        codes = {error_code(e)[1] for e in errors}
        if codes & ALREADY_RECORDED:
            already += 1
        elif codes <= RETRY_LATER:
            later.append(row)
        else:
            failed[row] = "; ".join(_describe(e) for e in errors)
    if later:
        return Outcome(
            Verdict.RETRY,
            f"Google Ads: rows {later} are too recent (TOO_RECENT_*): the whole request is"
            " sent again in 6 hours (rows already taken come back ORDER_ID_ALREADY_IN_USE)",
            platform_ref=ref,
            retry_after=float(TOO_RECENT_WAIT),
            response=text,
        )
    parts = [f"{len(results) - len(failed)} conversions taken" if results else "taken"]
    if already:
        parts.append(f"{already} already recorded")
    if failed:
        parts.append(f"{len(failed)} refused")
    if unplaced:
        parts.append("errors naming no row: " + "; ".join(_describe(e) for e in unplaced))
    return Outcome(
        Verdict.DELIVERED,
        "Google Ads partial failure: " + ", ".join(parts),
        platform_ref=ref,
        response=text,
        partial=bool(failed or unplaced),
        failed_rows=failed,
    )


# --- what users are told ------------------------------------------------------------------


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``conversions[]`` rows."""
    items = body.get("conversions")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Nothing beyond source and test code: any conversions share a request."""
    return ""


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """Google Ads takes every source under the customer (no event source ids)."""
    return None


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """The Google Ads conversion tag fires ``gtag('event', 'conversion', {send_to,
    transaction_id})`` whatever the conversion action counts (Google Ads help 6386790:
    the transaction ID on the conversion tag)."""
    return ("conversion",)


def refusals(conversion: Conversion) -> list[Note]:
    """Google cannot attribute a conversion with neither a click id nor a hashed email or
    phone (§3: a click id, or userIdentifiers for enhanced conversions for leads)."""
    u = conversion.user
    if u.gclid or u.gbraid or u.wbraid or u.email or u.phone:
        return []
    return [
        Note(
            "user",
            "Google Ads needs a click id (gclid, gbraid or wbraid) or an email or phone:"
            " not sent to Google Ads",
        )
    ]


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    found = age_note(conversion, MAX_AGE, now, "Google Ads")
    if not target.pixel:
        found.append(Note("google_ads.pixel", "no Google Ads customer id configured"))
    try:
        missing = missing_action(conversion, conversion_actions(target))
    except ConversionActionsError as exc:
        missing = str(exc)
    if missing is not None:
        found.append(Note("event", missing))
    found.extend(refusals(conversion))
    click = click_id(conversion)
    u = conversion.user
    if click is not None and click[0] != "gclid" and (u.email or u.phone):
        found.append(
            Note(
                "user",
                f"sent with its {click[0]} only: email and phone are not sent with a"
                " gbraid or wbraid",
            )
        )
    elif click is not None or u.email or u.phone:
        _, dropped = _identifiers(conversion)
        if dropped:
            found.append(
                Note(
                    "user",
                    f"Google Ads takes at most {MAX_USER_IDENTIFIERS} emails and"
                    f" phones per conversion: {dropped} not sent",
                )
            )
    if click is not None and sum(bool(v) for v in (u.gclid, u.gbraid, u.wbraid)) > 1:
        found.append(Note("user", f"several Google click ids: only the {click[0]} is sent"))
    return found
