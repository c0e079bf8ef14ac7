"""TikTok Events API 2.0 (``POST /open_api/v1.3/event/track/``): body, headers, verdicts.

Field names follow ``../shared/reference/tiktok-events-api.md`` §2 (``phone``, not Meta's ``ph``
or the legacy ``phone_number``; ``zip_code``; ``ttp`` from the ``_ttp`` cookie). Business errors
arrive as HTTP 200 with a non-zero ``code`` (§4), so the status alone decides nothing.

Where the reference is unsure we choose and say so:
- email/phone/external_id go as a string when there is one value and as an array when there
  are several (RudderStack sends strings; Segment always arrays; arrays are not proven in
  TikTok's docs, so we use them only when a single string would lose information).
- the age limit of ``event_time`` is not documented; we apply Meta's 7 days (§3 suggestion).
- ``20001`` is taken as delivered (RudderStack does so), with TikTok's message kept.
- the search text goes as both ``query`` (legacy SDK docs, Segment) and ``search_string`` (the
  help centre's recommended parameter for Search since 2025; RudderStack sends both).
- ``lead`` goes with any event source that has one: Segment (maintained by TikTok) offers it
  for ``crm`` only, RudderStack maps it for every source, and TikTok's help lists the lead id
  as a signal for Pixel and CRM postback alike (docs/platforms/tiktok-crm.md §2.2, §6).
- travel and vehicle properties are flat ``properties`` keys (Segment's documented sets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from backchannel.catalog import EVENTS
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
from backchannel.notes import Note

name = "tiktok"
display_name = "TikTok"
ORDER = 10
ON_BY_DEFAULT = True  # delivered to the sandbox until a token is set
CREDENTIALS = (
    Credential(
        "pixel",
        "Pixel code",
        pattern=r"[A-Z0-9]{6,64}",
        hint="a TikTok pixel code is 6 to 64 upper-case letters and digits (e.g. C4ABCD…)",
    ),
    Credential("token", "Events API access token", secret=True),
)
EMAIL_FORM = ""  # the common rule: trim, lowercase
EMAIL_NORMALIZER = None
IDENTIFIERS = (
    Identifier("ttclid", "click", url_param="ttclid"),
    Identifier("ttp", "browser", cookie="_ttp"),
)
#: quality.py: what it matches on, weighted (sum 10)
QUALITY_WEIGHTS = {
    "email": 3.0,
    "phone": 3.0,
    "click_id": 2.0,
    "external_id": 1.0,
    "browser_id": 0.5,
    "ip_user_agent": 0.5,
}
IDENTIFIER_SECTION = "user"
CLICK_IDS = ("ttclid",)
CLICK_ID_LABEL = "ttclid"
BROWSER_IDS = ("ttp",)
BROWSER_ID_LABEL = "_ttp cookie"
TEST_EVENT_CODES = True
#: ttq.track(event, props, {event_id}): its event_id is ours (the Events API's event_id)
PIXEL_CALL = "ttq.track"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
#: the ledger's default TikTok sources (sources.ledger.DEFAULT_UTM_SOURCES; the installation's
#: ``tiktok_utm_sources`` setting replaces them there)
UTM_SOURCES = ("tiktok", "tt", "tiktokads")
OAUTH = None
PATH = "/open_api/v1.3/event/track/"
DEFAULT_BASE_URL = "https://business-api.tiktok.com"
#: events per request on event/track (RudderStack maxBatchSizeV2, citing TikTok's docs)
max_batch = 1000
#: not documented by TikTok: we apply Meta's rule until it is (reference §3, §9)
MAX_AGE = 7 * 86400  # seconds

DELIVERED_CODES = frozenset({0, 20001})
#: rate limit (40100) and platform-side transient failures
RETRY_CODES = frozenset({40100, 50000, 50002, 51010})
#: configuration or payload errors: resending the same request cannot help
PERMANENT_CODES = frozenset({40001, 40002, 40101, 40105, 40110})
#: refusals about the token, pixel or account rather than the events
ACCOUNT_CODES = frozenset({40001, 40101, 40105, 40110})


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``data[]`` items."""
    items = body.get("data")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Nothing beyond source and test code: any events share a request."""
    return ""


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """ttq.track fires our own names: the catalog's standard events are TikTok's."""
    return (event,)


def _one_or_many(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


def _user(conversion: Conversion) -> dict[str, Any]:
    u = conversion.user
    user: dict[str, Any] = {}
    if u.email:
        user["email"] = _one_or_many(u.email)
    if u.phone:
        user["phone"] = _one_or_many(u.phone)
    if u.external_id:
        user["external_id"] = _one_or_many(u.external_id)
    for key, value in (
        ("ttclid", u.ttclid),
        ("ttp", u.ttp),
        ("ip", u.ip),
        ("user_agent", u.user_agent),
        ("locale", u.locale),
        ("first_name", u.first_name),
        ("last_name", u.last_name),
        ("zip_code", u.zip),
        ("city", u.city),
        ("state", u.state),
        ("country", u.country),
    ):
        if value is not None:
            user[key] = value
    return user


#: canonical travel / vehicle keys -> TikTok ``properties`` keys (the same words: TikTok's
#: documented sets are passed through; docs/platforms/tiktok-crm.md §3.1-3.2)
TRAVEL_PROPERTIES = {
    key: key
    for key in (
        "city",
        "region",
        "country",
        "checkin_date",
        "checkout_date",
        "num_adults",
        "num_children",
        "num_infants",
        "suggested_hotels",
        "departing_departure_date",
        "returning_departure_date",
        "origin_airport",
        "destination_airport",
        "destination_ids",
        "departing_arrival_date",
        "returning_arrival_date",
        "travel_class",
        "user_score",
        "preferred_num_stops",
        "travel_start",
        "travel_end",
        "suggested_destinations",
    )
}
VEHICLE_PROPERTIES = {
    key: key
    for key in (
        "postal_code",
        "make",
        "model",
        "year",
        "state_of_vehicle",
        "mileage",  # {"value": number, "unit": "MI" | "KM"}
        "exterior_color",
        "transmission",
        "body_style",
        "fuel_type",
        "drivetrain",
        "preferred_price_range",  # [min, max]
        "trim",
        "vin",
        "interior_color",
        "condition_of_vehicle",
        "viewcontent_type",
        "search_type",
        "registration_type",
    )
}


def _vertical(props: dict[str, Any], given: Mapping[str, Any], names: dict[str, str]) -> None:
    for key, value in given.items():
        wire = names.get(key)
        if wire is not None:
            props[wire] = list(value) if isinstance(value, list) else value


def _properties(conversion: Conversion) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if conversion.contents:
        contents = []
        for c in conversion.contents:
            item: dict[str, Any] = {"content_id": c.id, "quantity": c.quantity}
            if c.price is not None:
                item["price"] = c.price
            if c.name is not None:
                item["content_name"] = c.name
            if c.category is not None:
                item["content_category"] = c.category
            if c.brand is not None:
                item["brand"] = c.brand
            contents.append(item)
        props["contents"] = contents
        props["content_ids"] = [c.id for c in conversion.contents]
    if conversion.content_type is not None:
        props["content_type"] = conversion.content_type
    if conversion.value is not None:
        props["value"] = conversion.value
    if conversion.currency is not None:
        props["currency"] = conversion.currency
    if conversion.order_id is not None:
        props["order_id"] = conversion.order_id
    if conversion.shop_id is not None:
        props["shop_id"] = conversion.shop_id
    if conversion.query is not None:
        props["query"] = conversion.query
        props["search_string"] = conversion.query
    if conversion.description is not None:
        props["description"] = conversion.description
    if conversion.num_items is not None:
        props["num_items"] = conversion.num_items
    if conversion.delivery_category is not None:
        props["delivery_category"] = conversion.delivery_category
    if conversion.predicted_ltv is not None:
        props["predicted_ltv"] = conversion.predicted_ltv
    if conversion.travel:
        _vertical(props, conversion.travel, TRAVEL_PROPERTIES)
    if conversion.vehicle:
        _vertical(props, conversion.vehicle, VEHICLE_PROPERTIES)
    return props


def event(conversion: Conversion) -> dict[str, Any]:
    """One ``data[]`` item."""
    item: dict[str, Any] = {
        "event": conversion.event,
        "event_time": conversion.event_time,
        "event_id": conversion.event_id,
        "user": _user(conversion),
        "properties": _properties(conversion),
        "limited_data_use": conversion.limited_data_use,
    }
    if conversion.page_url is not None or conversion.page_referrer is not None:
        page: dict[str, str] = {}
        if conversion.page_url is not None:
            page["url"] = conversion.page_url
        if conversion.page_referrer is not None:
            page["referrer"] = conversion.page_referrer
        item["page"] = page
    if conversion.lead is not None:
        lead = {"lead_id": conversion.lead.id}
        if conversion.lead.source is not None:
            lead["lead_event_source"] = conversion.lead.source
        item["lead"] = lead
    return item


#: the setting that holds each non-web source's event_source_id (reference §2.1: offline
#: event set, CRM event set, TikTok app id)
SOURCE_SETTINGS = {
    "offline": "BACKCHANNEL_TIKTOK_OFFLINE_EVENT_SET",
    "crm": "BACKCHANNEL_TIKTOK_CRM_EVENT_SET",
    "app": "BACKCHANNEL_TIKTOK_APP_ID",
}


class MissingEventSource(ValueError):
    """A non-web event whose event_source_id is not configured: it cannot be sent."""


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """See :func:`missing_source_id`."""
    return missing_source_id(conversion, source_ids)


def missing_source_id(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """Why TikTok cannot take this conversion here (no id for its source), or None.

    Why never the pixel code instead: TikTok files an event under ``event_source_id``
    (reference §2.1: the pixel for web; the offline or CRM event set, or the app id,
    otherwise). A CRM sign-up sent with the web pixel is mis-filed, and TikTok reports no
    error for it, so it could only be found in the platform's figures.

    Ingest checks this and gives such a conversion a dead TikTok outbox row at once, with
    this reason (and a warning in the 202), rather than refusing it with a 422 or letting
    delivery fail later: the other destinations still get it, the caller learns at once,
    and ``backchannel replay --all-dead`` sends it once the setting exists (a refused event
    would come back as a duplicate of nothing; a row left pending could only fail or stall).
    """
    if conversion.source == "web" or source_ids.get(conversion.source):
        return None
    setting = SOURCE_SETTINGS.get(conversion.source, "the event source id")
    return (
        f"TikTok needs the {conversion.source} event source id for source"
        f" {conversion.source!r} (set {setting}); never sent with the web pixel code"
    )


def event_source_id(source: str, target: Target) -> str:
    """Pixel code for web; the configured event set / app id for other sources (no
    fallback to the pixel: see :func:`missing_source_id`)."""
    if source == "web":
        return target.pixel
    found = target.source_ids.get(source)
    if not found:
        setting = SOURCE_SETTINGS.get(source, "the event source id")
        raise MissingEventSource(f"no TikTok event source id for {source!r}: set {setting}")
    return found


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """One request body for ``batch``, which must share ``source`` and ``test_event_code``.

    TikTok applies ``event_source`` and ``test_event_code`` to the whole request, so mixing
    them would silently send production events as test events (or the reverse).
    """
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    first = batch[0]
    for conversion in batch:
        if conversion.source != first.source or conversion.test_event_code != first.test_event_code:
            raise ValueError("a batch must share source and test_event_code")
    body: dict[str, Any] = {
        "event_source": first.source,
        "event_source_id": event_source_id(first.source, target),
        "data": [event(c) for c in batch],
    }
    if first.test_event_code is not None:
        body["test_event_code"] = first.test_event_code
    return body


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    body = build_body(batch, target)
    return PreparedRequest(
        url=target.base_url.rstrip("/") + PATH,
        # The raw token: a "Bearer " prefix is a known cause of 40105 (reference §1).
        headers={"Access-Token": target.token, "Content-Type": "application/json"},
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read TikTok's answer: the JSON ``code`` decides, except for real HTTP failures."""
    text = shorten(body)
    if status == 429:
        return Outcome(
            Verdict.RETRY,
            "HTTP 429 Too Many Requests",
            retry_after=retry_after_seconds(headers),
            response=text,
        )
    if status >= 500 or status in (408, 425):
        return Outcome(
            Verdict.RETRY, f"HTTP {status}", retry_after=retry_after_seconds(headers), response=text
        )
    if status != 200:
        return Outcome(
            Verdict.PERMANENT,
            f"HTTP {status}",
            response=text,
            whole_request=status in (401, 403, 404),
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        # A proxy's HTML page with a 200: nothing says the events were taken.
        return Outcome(Verdict.RETRY, "HTTP 200 without a JSON body", response=text)
    if not isinstance(payload, dict) or not isinstance(payload.get("code"), int):
        return Outcome(Verdict.RETRY, "HTTP 200 without a TikTok code", response=text)
    code: int = payload["code"]
    message = str(payload.get("message") or "")
    ref = payload.get("request_id")
    ref = str(ref) if ref is not None else None
    reason = f"TikTok {code}: {message}" if message else f"TikTok {code}"
    if code in DELIVERED_CODES:
        # 20001: RudderStack counts it as success; reportedly a partial success (reference
        # §4), and TikTok names no rows. Delivered (resending would duplicate the events
        # that were taken), with the answer kept and flagged for the dashboard.
        return Outcome(
            Verdict.DELIVERED, reason, platform_ref=ref, response=text, partial=code != 0
        )
    if code in RETRY_CODES or 50000 <= code < 60000:
        return Outcome(
            Verdict.RETRY,
            reason,
            platform_ref=ref,
            retry_after=retry_after_seconds(headers),
            response=text,
        )
    return Outcome(
        Verdict.PERMANENT,
        reason,
        platform_ref=ref,
        bad_index=None if code in ACCOUNT_CODES else row_index(message),
        response=text,
        whole_request=code in ACCOUNT_CODES,
    )


def refusals(conversion: Conversion) -> list[Note]:
    """What TikTok refuses outright that ingest cannot already catch: nothing known (the
    core's validation covers TikTok's required fields)."""
    return []


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    """What would make TikTok drop, mis-file or poorly match this event."""
    found = age_note(conversion, MAX_AGE, now, "TikTok")
    if not target.pixel:
        found.append(Note("tiktok.pixel", "no TikTok pixel code configured"))
    spec = EVENTS.get(conversion.event)
    if spec is not None and spec.payment and not conversion.contents:
        found.append(
            Note("contents", f"TikTok recommends contents (content_ids) on {conversion.event}")
        )
    missing = missing_source_id(conversion, target.source_ids)
    if missing is not None:
        found.append(Note("source", missing))
    if conversion.source == "web" and conversion.page_url is None:
        found.append(Note("page.url", "TikTok recommends page.url on web events"))
    if conversion.source == "crm" and not (
        conversion.lead or conversion.user.email or conversion.user.phone
    ):
        found.append(
            Note(
                "lead",
                "TikTok matches CRM events on the lead id, email or phone; this one has none",
            )
        )
    for name in ("travel", "vehicle"):
        if conversion.source != "web" and getattr(conversion, name):
            found.append(
                Note(name, f"TikTok documents {name} properties for web events; sent as given")
            )
    u = conversion.user
    if (u.ip is None) != (u.user_agent is None):
        found.append(Note("user", "TikTok matches best with ip and user_agent together"))
    return found
