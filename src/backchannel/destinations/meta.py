"""Meta Conversions API (``POST /{version}/{pixel_id}/events``): body, request, verdicts.

Field names and rules from ``../shared/reference/tiktok-events-api.md`` §7 and Meta's Python
SDK: ``user_data`` keys ``em``/``ph``/``fn``/``ln``/``zp``/``ct``/``st``/``country`` hashed, as
lists; ``ph`` is the E.164 digits *without* ``+``; ``client_ip_address``, ``client_user_agent``,
``fbc``, ``fbp`` raw. The token travels in the JSON body, never in a URL that proxies log.

Meta refuses the *whole request* when any event is older than 7 days (62 for physical_store),
so the worker expires such events before they reach a batch.

Not sent: the canonical ``lead`` (its id is the issuing platform's, e.g. TikTok's; Meta's
``user_data.lead_id`` is Meta's own Lead Ads id, so another platform's id would match no one)
and the ``travel``/``vehicle`` sets (TikTok's; Meta's hotel and vehicle parameters belong to
its catalog ads and are not researched here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from backchannel import catalog
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

name = "meta"
display_name = "Meta"
ORDER = 20
ON_BY_DEFAULT = True  # delivered to the sandbox until a token is set
CREDENTIALS = (
    Credential(
        "pixel",
        "Pixel (dataset) ID",
        pattern=r"[0-9]{6,20}",
        hint="a Meta pixel (dataset) id is 6 to 20 digits",
    ),
    Credential("token", "Conversions API access token", secret=True),
)
EMAIL_FORM = ""  # the common rule: trim, lowercase
EMAIL_NORMALIZER = None
IDENTIFIERS = (
    Identifier("fbclid", "click", url_param="fbclid"),
    Identifier("fbc", "click", cookie="_fbc"),
    Identifier("fbp", "browser", cookie="_fbp"),
)
#: quality.py: what it matches on, weighted (sum 10)
QUALITY_WEIGHTS = {
    "email": 3.0,
    "phone": 3.0,
    "click_id": 1.5,
    "external_id": 1.0,
    "browser_id": 0.5,
    "ip_user_agent": 1.0,
}
IDENTIFIER_SECTION = "user_data"
CLICK_IDS = ("fbc", "fbclid")
CLICK_ID_LABEL = "fbc or fbclid"
BROWSER_IDS = ("fbp",)
BROWSER_ID_LABEL = "_fbp cookie"
TEST_EVENT_CODES = True
#: fbq('track', name, data, {eventID}): Meta pairs eventID with the server event's event_id
#: (and the event names), docs/platforms/meta-pixel.md
PIXEL_CALL = "fbq"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("facebook", "fb", "instagram", "ig", "meta")
OAUTH = None
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v25.0"
max_batch = 1000
MAX_AGE = 7 * 86400  # seconds
MAX_AGE_PHYSICAL_STORE = 62 * 86400  # seconds

ACTION_SOURCE = {
    "web": "website",
    "app": "app",
    "offline": "physical_store",
    "crm": "system_generated",
}
#: Graph API error codes that mean "slow down", not "you are wrong"
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80004})
#: token, permission and pixel errors: about the account, not the events
ACCOUNT_CODES = frozenset({10, 102, 190, 200, 803})


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``data[]`` items."""
    items = body.get("data")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Nothing beyond source and test code: any events share a request."""
    return ""


def max_age(conversion: Conversion) -> int:
    return MAX_AGE_PHYSICAL_STORE if conversion.source == "offline" else MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """fbq fires Meta's name for the event (CompletePayment -> Purchase), as the server leg
    sends it: Meta pairs the two legs on eventID *and* the event name."""
    spec = catalog.lookup(event)
    return (spec.meta_name if spec is not None else event,)


def event_name(conversion: Conversion) -> str:
    spec = conversion.spec
    return spec.meta_name if spec is not None else conversion.event


def fbc(conversion: Conversion) -> str | None:
    """The ``_fbc`` value, built from fbclid when only the click id is known.

    Format ``fb.{subdomainIndex}.{creationTimeMs}.{fbclid}``, subdomainIndex 1 for values made
    on a server; the click time is unknown here, so the event time stands in for it.
    """
    u = conversion.user
    if u.fbc:
        return u.fbc
    if u.fbclid:
        return f"fb.1.{conversion.event_time * 1000}.{u.fbclid}"
    return None


def _user_data(conversion: Conversion) -> dict[str, Any]:
    u = conversion.user
    data: dict[str, Any] = {}
    if u.email:
        data["em"] = list(u.email)
    if u.phone_digits:
        data["ph"] = list(u.phone_digits)
    for key, hashed in (("fn", u.first_name), ("ln", u.last_name), ("zp", u.zip)):
        if hashed is not None:
            data[key] = [hashed]
    for key, plain in (("ct", u.city), ("st", u.state), ("country", u.country)):
        if plain is not None:
            data[key] = [sha256_hex(plain)]
    if u.external_id:
        data["external_id"] = list(u.external_id)
    for key, raw in (
        ("client_ip_address", u.ip),
        ("client_user_agent", u.user_agent),
        ("fbc", fbc(conversion)),
        ("fbp", u.fbp),
    ):
        if raw is not None:
            data[key] = raw
    return data


def _custom_data(conversion: Conversion) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if conversion.value is not None:
        data["value"] = conversion.value
    if conversion.currency is not None:
        data["currency"] = conversion.currency.lower()  # the SDK's normalization
    if conversion.contents:
        contents = []
        for c in conversion.contents:
            item: dict[str, Any] = {"id": c.id, "quantity": c.quantity}
            if c.price is not None:
                item["item_price"] = c.price
            if c.name is not None:
                item["title"] = c.name
            if c.category is not None:
                item["category"] = c.category
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
    # the canonical fields Meta documents under the same names (FBSDK custom_data.py,
    # DeliveryCategory); a num_items given wins over the sum of the contents' quantities
    if conversion.num_items is not None:
        data["num_items"] = conversion.num_items
    if conversion.delivery_category is not None:
        data["delivery_category"] = conversion.delivery_category
    if conversion.predicted_ltv is not None:
        data["predicted_ltv"] = conversion.predicted_ltv
    return data


def event(conversion: Conversion) -> dict[str, Any]:
    """One element of the ``data`` array."""
    item: dict[str, Any] = {
        "event_name": event_name(conversion),
        "event_time": conversion.event_time,
        "event_id": conversion.event_id,
        "action_source": ACTION_SOURCE[conversion.source],
        "user_data": _user_data(conversion),
    }
    custom = _custom_data(conversion)
    if custom:
        item["custom_data"] = custom
    if conversion.page_url is not None:
        item["event_source_url"] = conversion.page_url
    if conversion.page_referrer is not None:
        item["referrer_url"] = conversion.page_referrer
    if conversion.limited_data_use:
        # Limited Data Use with geolocation by Meta (country 0, state 0).
        item["data_processing_options"] = ["LDU"]
        item["data_processing_options_country"] = 0
        item["data_processing_options_state"] = 0
    return item


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """The request parameters for ``batch`` (sharing one ``test_event_code``), token excluded."""
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    code = batch[0].test_event_code
    if any(c.test_event_code != code for c in batch):
        raise ValueError("a batch must share test_event_code")
    body: dict[str, Any] = {"data": [event(c) for c in batch]}
    if code is not None:
        body["test_event_code"] = code
    return body


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """A JSON request whose body carries ``data``, ``test_event_code`` and ``access_token``.

    Meta's "Using the API" page shows the request body as JSON and its curl example sends the
    same parameters as form fields; Graph accepts either. JSON keeps the token out of the URL
    (proxies log URLs) and costs a fraction of form-encoding: percent-encoding a 1000-event
    batch in Python took longer than building it.
    """
    body = build_body(batch, target)
    url = f"{target.base_url.rstrip('/')}/{target.api_version}/{target.pixel}/events"
    return PreparedRequest(
        url=url,
        headers={"Content-Type": "application/json"},
        content=orjson.dumps({**body, "access_token": target.token}),
        body=body,
        count=len(batch),
    )


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Meta speaks HTTP: 2xx taken, 5xx retry, 4xx refused unless it is a rate limit."""
    text = shorten(body)
    try:
        payload = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    error = payload.get("error") if isinstance(payload.get("error"), dict) else None
    ref = payload.get("fbtrace_id") or (error or {}).get("fbtrace_id")
    ref = str(ref) if ref is not None else None
    if 200 <= status < 300:
        received = payload.get("events_received")
        if isinstance(received, bool) or not isinstance(received, int):
            return Outcome(
                Verdict.RETRY,
                f"HTTP {status} without events_received",
                platform_ref=ref,
                response=text,
            )
        # The worker compares ``received`` with the batch size: Meta is all-or-nothing for
        # invalid events (reference §7), so fewer is unexpected; it is delivered (resending
        # would duplicate what was taken) and flagged.
        return Outcome(
            Verdict.DELIVERED,
            f"events_received={received}",
            platform_ref=ref,
            response=text,
            received=received,
        )
    message = f"HTTP {status}"
    code = None
    subcode = None
    detail = ""
    if error is not None:
        code = error.get("code")
        subcode = error.get("error_subcode")
        detail = str(error.get("error_user_msg") or error.get("message") or "")
        message = f"Meta {code}: {detail}" if detail else f"Meta {code}"
    wait = retry_after_seconds(headers)
    if status >= 500 or status in (408, 429) or code in RATE_LIMIT_CODES:
        return Outcome(Verdict.RETRY, message, platform_ref=ref, retry_after=wait, response=text)
    if error is not None and error.get("is_transient") is True:
        return Outcome(Verdict.RETRY, message, platform_ref=ref, retry_after=wait, response=text)
    # 100/33: "Object with ID … does not exist, cannot be loaded due to missing permissions":
    # the pixel, not an event. Splitting the batch used to cost 2n-1 requests for nothing.
    whole = status in (401, 403, 404) or code in ACCOUNT_CODES or (code, subcode) == (100, 33)
    return Outcome(
        Verdict.PERMANENT,
        message,
        platform_ref=ref,
        response=text,
        bad_index=None if whole else row_index(detail),
        whole_request=whole,
    )


def refusals(conversion: Conversion) -> list[Note]:
    """What Meta refuses outright in this event (reference §7: website events need
    event_source_url and client_user_agent). Ingest checks it after stitching (the landing
    session may supply both) so the 202 says the event will be a dead letter at Meta."""
    if conversion.source != "web":
        return []
    found = []
    if conversion.page_url is None:
        found.append(
            Note("page.url", "missing: Meta refuses website events without event_source_url")
        )
    if conversion.user.user_agent is None:
        found.append(
            Note(
                "user.user_agent",
                "missing: Meta refuses website events without client_user_agent",
            )
        )
    return found


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """Meta takes every source under the one pixel (action_source says which)."""
    return None


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    found = age_note(conversion, max_age(conversion), now, "Meta")
    if not target.pixel:
        found.append(Note("meta.pixel", "no Meta pixel id configured"))
    found.extend(refusals(conversion))
    return found
