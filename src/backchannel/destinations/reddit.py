"""Reddit Conversions API v3 (``POST /api/v3/pixels/{pixel_id}/conversion_events``).

The contract is ``docs/platforms/reddit.md`` (cited below as §n). What shapes this module:

- **The body** is ``{"data": {"events": [...]}}`` (§3), each event with ``event_at`` in
  **milliseconds** (§3.1: v3 changed it from an ISO string), a required ``action_source``,
  ``type.tracking_type`` (upper snake case, §4), ``metadata`` and ``user`` (§3.2, §3.3).
- **Dedup key**: ``metadata.conversion_id`` is our ``event_id`` (§7); the Reddit Pixel sends
  the same id as ``conversionId``. Reddit dedups within one event type (a custom event's
  name must match too) and within two days.
- **Email under Reddit's own rule** (§5, Reddit's "Manual Advanced Matching" page): lowercase,
  cut the ``+alias``, and remove every non-alphanumeric character of the local part, for
  every domain (``Al.ice$+Apple@Example.Com`` -> ``alice@example.com``). It differs from the
  common rule (Meta, TikTok) and from Google's, so it is this module's
  :data:`EMAIL_NORMALIZER`: ingest computes it into ``email_forms["reddit"]`` (raw addresses
  are never stored) and only this builder reads that form. **Phone** is SHA-256 of the
  E.164 form *with* ``+`` (§5), the stored ``user.phone``.
- **Identifiers**: ``click_id`` (top level of the event) from the ``rdt_cid`` landing-URL
  parameter; ``user.uuid`` from the Pixel's ``_rdt_uuid`` cookie, sent whole
  (``<ms>.<uuid>``, as in Reddit's own example, §3.2, §6). Reddit refuses the whole request
  when the UUID part is not RFC 4122 (a real answer Segment recorded, §9), so a malformed
  cookie value is left out with a warning instead of costing the batch.
- **All or nothing**: one invalid event makes Reddit refuse the request ("There were N
  invalid conversion events. None were processed.", §9); its ``error.fields[].field`` names
  the row (``$.data.events[3]…``), which :func:`classify` reads so the worker dead-letters
  that row alone and resends the rest. :func:`refusals` catches locally what Reddit is known
  to refuse (a custom event name over 64 characters, an event with no match key at all).
- **Our own User-Agent** (:data:`USER_AGENT`): Reddit throttles default library agents with
  429 "Your user agent was automatically ratelimited." (§2).
- **Test events** carry ``data.test_id`` (a code copied from Events Manager → Event
  Testing, §1). Event Testing shows one event per request, so :func:`batch_key` gives every
  test conversion a request of its own (production batches take up to 1000 events).

Choices where the contract leaves room (see the Still unsure list of the document):

- Event names: the catalog's standard events map to Reddit's types (:data:`TRACKING_TYPES`);
  any other name is a ``CUSTOM`` event with ``custom_event_name`` as given (§4: free-form,
  case-sensitive, at most 64 characters). ``PlaceAnOrder`` is sent as a custom event, not as
  a second ``PURCHASE`` next to ``CompletePayment`` (it would be counted twice).
- ``value``/``currency`` go only on the types Reddit takes them on, ``item_count`` likewise
  (§3.3, Reddit's event metadata page); ``products`` on every event with contents.
- ``ip_address`` is sent raw (Reddit's example does; Segment hashes it; both are accepted).
- One value per match key: Reddit's ``email``, ``phone_number`` and ``external_id`` are
  strings; with several, the first is sent (and a warning says so).
- Offline events (``PHYSICAL_STORE``) carry no click id, uuid, IP or user agent: "offline
  events should send hashed email/phone but no device identifiers, click ID, UUID" (§3.2).
- Limited Data Use sends ``user.data_processing_options = {"modes": ["LDU"]}``; Reddit's
  example adds a country and region, which we do not know in Reddit's form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from backchannel import __version__
from backchannel.destinations.base import (
    Credential,
    Identifier,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
    age_note,
    retry_after_seconds,
    shorten,
)
from backchannel.events import Conversion
from backchannel.identity import Unusable
from backchannel.identity import normalize_email as common_email
from backchannel.notes import Note

name = "reddit"
display_name = "Reddit"
ORDER = 70
ON_BY_DEFAULT = False  # off until connected (a Pixel ID and a conversion access token)
CREDENTIALS = (
    Credential(
        "pixel",
        "Pixel ID",
        # Events Manager's Pixel IDs as the Pixel's own snippet shows them: rdt('init',
        # 'a2_…') for newer pixels, 't2_…' (the advertiser account) for older ones
        pattern=r"[at]2_[a-z0-9]{3,32}",
        hint="a Reddit Pixel ID from Events Manager, e.g. a2_abc123xyz or t2_abc123",
    ),
    Credential("token", "Conversions API access token", secret=True),
)
EMAIL_FORM = "reddit"
IDENTIFIERS = (
    Identifier("rdt_cid", "click", url_param="rdt_cid"),
    # <ms timestamp>.<uuid>: 50 characters; a little room for other shapes
    Identifier("rdt_uuid", "browser", cookie="_rdt_uuid", max_length=128),
)
#: quality.py weights (sum 10). Reddit "strongly recommend[s]" the email above all match keys
#: (§5, Manual Advanced Matching) and the click id is its strongest attribution signal (§6);
#: phone, external id, the _rdt_uuid cookie and IP + user agent complete the match.
QUALITY_WEIGHTS = {
    "email": 3.0,
    "phone": 1.5,
    "click_id": 2.5,
    "external_id": 1.0,
    "browser_id": 1.0,
    "ip_user_agent": 1.0,
}
IDENTIFIER_SECTION = "user"
CLICK_IDS = ("rdt_cid",)
CLICK_ID_LABEL = "rdt_cid"
BROWSER_IDS = ("rdt_uuid",)
BROWSER_ID_LABEL = "_rdt_uuid cookie"
#: test events go under a test_id copied from Events Manager → Event Testing (§1)
TEST_EVENT_CODES = True
#: rdt('track', name, {conversionId}): the Pixel's conversionId pairs with our
#: metadata.conversion_id, which is our event_id (§7)
PIXEL_CALL = "rdt"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("reddit",)
OAUTH = None
DEFAULT_BASE_URL = "https://ads-api.reddit.com"
PATH = "/api/v3/pixels/{pixel}/conversion_events"
#: §8: "1,000 events/request" (more is a 400 "Bad Request")
max_batch = 1000
#: §8: "Events must be sent within 7 days after they occur"
MAX_AGE = 7 * 86400  # seconds
#: §4: custom_event_name "≤ 64 chars"
MAX_CUSTOM_NAME = 64
#: §2: a default library agent (python-httpx/…) is throttled; this one says who we are
USER_AGENT = f"Backchannel/{__version__} (self-hosted server-side conversions gateway)"

#: the catalog's standard events -> Reddit's tracking types (§4); others are CUSTOM
TRACKING_TYPES: dict[str, str] = {
    "ViewContent": "VIEW_CONTENT",
    "Search": "SEARCH",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "AddToCart": "ADD_TO_CART",
    "CompletePayment": "PURCHASE",
    "Purchase": "PURCHASE",
    "CompleteRegistration": "SIGN_UP",
    "Lead": "LEAD",
    "SubmitForm": "LEAD",
}
#: §3.3 (Reddit's event metadata page): the types that take value and currency…
VALUE_TYPES = frozenset({"ADD_TO_CART", "ADD_TO_WISHLIST", "PURCHASE", "LEAD", "SIGN_UP", "CUSTOM"})
#: … and item_count
ITEM_COUNT_TYPES = frozenset({"ADD_TO_CART", "ADD_TO_WISHLIST", "PURCHASE", "CUSTOM"})
#: our source -> action_source (§3.1; PHYSICAL_STORE is inferred, Still unsure 4)
ACTION_SOURCE = {
    "web": "WEBSITE",
    "app": "APP",
    "offline": "PHYSICAL_STORE",
    "crm": "OTHER",
}
#: the Pixel's _rdt_uuid cookie: "<ms timestamp>.<RFC 4122 UUID>" (§6), or the bare UUID
_RDT_UUID = re.compile(
    r"(?:\d{1,16}\.)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    re.IGNORECASE,
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
#: "$.data.events[3].user.UUID": the row a field error names (§9)
_EVENT_INDEX = re.compile(r"events\[(\d+)\]")
_PROCESSED = re.compile(r"processed (\d+) conversion events")


def normalize_email(raw: str) -> str:
    """Reddit's email rule (§5): the common one (trim, lowercase, an address's shape), then
    the local part cut at its first ``+`` and stripped of every character that is not a
    letter or digit, whatever the domain. Letters and digits are ASCII ones (a peer reads the
    rule so; Reddit's text does not say, Still unsure 2). Raises :class:`Unusable` when
    nothing is left before the ``@``."""
    value = common_email(raw)
    local, _, domain = value.rpartition("@")
    local = _NOT_ALNUM.sub("", local.split("+", 1)[0])
    if not local:
        raise Unusable("nothing left before the @ under Reddit's email rule")
    return f"{local}@{domain}"


EMAIL_NORMALIZER = normalize_email


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``data.events[]``."""
    data = body.get("data")
    items = data.get("events") if isinstance(data, Mapping) else None
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    """Production events share any request. A test event gets one of its own: Event Testing
    shows only one event per request (§1: "Batch events NOT supported in Event Testing")."""
    if conversion.test_event_code is None:
        return ""
    return f"test {conversion.event_id}"


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """rdt fires the Pixel's names (Purchase, AddToCart, SignUp…), the API's tracking types
    in another case (PURCHASE, ADD_TO_CART, SIGN_UP): the dedup page compares names without
    case or separators. A custom event has no standard name."""
    name = TRACKING_TYPES.get(event)
    return (name,) if name is not None else ()


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """Reddit takes every source under the one pixel (action_source says which)."""
    return None


def tracking_type(conversion: Conversion) -> str:
    """Reddit's type for the event: the standard one, else ``CUSTOM``."""
    return TRACKING_TYPES.get(conversion.event, "CUSTOM")


def _type(conversion: Conversion) -> dict[str, str]:
    kind = tracking_type(conversion)
    if kind == "CUSTOM":
        return {"tracking_type": kind, "custom_event_name": conversion.event}
    return {"tracking_type": kind}


def rdt_uuid(conversion: Conversion) -> str | None:
    """The ``_rdt_uuid`` value when it has the shape Reddit takes, else None (see notes)."""
    value = conversion.user.ids.get("rdt_uuid")
    if value is None or _RDT_UUID.fullmatch(value) is None:
        return None
    return value


def _device_ids(conversion: Conversion) -> bool:
    """Offline events carry no click id, uuid or device data (§3.2)."""
    return conversion.source != "offline"


def _user(conversion: Conversion) -> dict[str, Any]:
    u = conversion.user
    user: dict[str, Any] = {}
    emails = u.email_forms.get(EMAIL_FORM, u.email)
    if emails:
        user["email"] = emails[0]
    if u.phone:
        user["phone_number"] = u.phone[0]  # SHA-256 of "+<E.164 digits>" (§5)
    if u.external_id:
        user["external_id"] = u.external_id[0]
    if _device_ids(conversion):
        if u.ip is not None:
            user["ip_address"] = u.ip
        if u.user_agent is not None:
            user["user_agent"] = u.user_agent
        uuid = rdt_uuid(conversion)
        if uuid is not None:
            user["uuid"] = uuid
    if conversion.limited_data_use:
        user["data_processing_options"] = {"modes": ["LDU"]}
    return user


def _metadata(conversion: Conversion, kind: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"conversion_id": conversion.event_id}
    if kind in VALUE_TYPES:
        if conversion.value is not None:
            metadata["value"] = float(conversion.value)
        if conversion.currency is not None:
            metadata["currency"] = conversion.currency
    if conversion.contents:
        if kind in ITEM_COUNT_TYPES:
            metadata["item_count"] = sum(c.quantity for c in conversion.contents)
        products = []
        for c in conversion.contents:
            product: dict[str, Any] = {"id": c.id}
            if c.name is not None:
                product["name"] = c.name
            if c.category is not None:
                product["category"] = c.category
            product["quantity"] = c.quantity
            if c.price is not None:
                product["item_price"] = c.price
            products.append(product)
        metadata["products"] = products
    return metadata


def event(conversion: Conversion) -> dict[str, Any]:
    """One ``data.events[]`` item."""
    kind = tracking_type(conversion)
    item: dict[str, Any] = {
        "event_at": conversion.event_time * 1000,
        "action_source": ACTION_SOURCE[conversion.source],
        "type": _type(conversion),
    }
    if conversion.source == "web" and conversion.page_url is not None:
        item["event_source_url"] = conversion.page_url
    click_id = conversion.user.ids.get("rdt_cid")
    if click_id is not None and _device_ids(conversion):
        item["click_id"] = click_id
    item["metadata"] = _metadata(conversion, kind)
    user = _user(conversion)
    if user:
        item["user"] = user
    return item


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """The request body for ``batch`` (sharing one ``test_event_code``), token excluded.

    A test batch holds one event (see :func:`batch_key`); one with more raises ValueError,
    and the worker then sends its rows one by one.
    """
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    code = batch[0].test_event_code
    if any(c.test_event_code != code for c in batch):
        raise ValueError("a batch must share test_event_code")
    if code is not None and len(batch) > 1:
        raise ValueError(
            "Reddit's Event Testing shows one event per request: send test events alone"
        )
    data: dict[str, Any] = {"events": [event(c) for c in batch]}
    if code is not None:
        data["test_id"] = code
    return {"data": data}


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """``POST {base}/api/v3/pixels/{pixel}/conversion_events`` with the token as Bearer (§2):
    never in the URL or the body, so no logged URL or stored body can hold it."""
    body = build_body(batch, target)
    url = target.base_url.rstrip("/") + PATH.format(pixel=quote(target.pixel, safe=""))
    return PreparedRequest(
        url=url,
        headers={
            "Authorization": f"Bearer {target.token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        },
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


def _error(body: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Reddit's error message and its field errors (``error.fields[]``: field, message), from
    ``{"error": {"code", "message", "fields"}}`` (§9); ("", []) for any other body."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return "", []
    if not isinstance(payload, dict):
        return "", []
    error = payload.get("error")
    if not isinstance(error, dict):
        message = payload.get("message")  # v2's shape: {"message", "invalid_events"}
        return (message if isinstance(message, str) else ""), []
    message = error.get("message")
    fields: list[tuple[str, str]] = []
    raw_fields = error.get("fields")
    if isinstance(raw_fields, list):
        for entry in raw_fields:
            if isinstance(entry, dict):
                fields.append((str(entry.get("field") or ""), str(entry.get("message") or "")))
    return (message if isinstance(message, str) else ""), fields


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read Reddit's answer (§9).

    - 2xx with ``{"data": {"message": "Successfully processed N conversion events."}}``:
      DELIVERED, with N as ``received``. A 2xx without that message (a proxy's page, a cut
      body) proves nothing was taken: RETRY.
    - 400 "There were N invalid conversion events. None were processed.": PERMANENT, naming
      the first row its ``fields`` point at (``$.data.events[i]…``): the worker dead-letters
      that row and resends the others, none of which Reddit processed. Without a row (the
      400 "Bad Request" of an oversized batch) the worker splits the batch.
    - 401 (no or bad token) and 403 (a pixel the token may not post to, a missing scope):
      the credentials, not the events: the destination is paused (``whole_request``); 404
      too (a wrong pixel path or base URL).
    - 429 (rate limit, or our user agent throttled), 408 and 5xx: RETRY, with Retry-After.
    """
    text = shorten(body)
    if 200 <= status < 300:
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        data = payload.get("data") if isinstance(payload, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, str):
            return Outcome(
                Verdict.RETRY,
                f"HTTP {status} without Reddit's success message",
                response=text,
            )
        match = _PROCESSED.search(message)
        return Outcome(
            Verdict.DELIVERED,
            message,
            response=text,
            received=int(match.group(1)) if match else None,
        )
    message, fields = _error(body)
    reason = f"Reddit {status}: {message}" if message else f"HTTP {status}"
    if fields:
        reason += " (" + "; ".join(f"{f}: {m}" if f else m for f, m in fields) + ")"
    wait = retry_after_seconds(headers)
    if status >= 500 or status in (408, 429):
        return Outcome(Verdict.RETRY, reason, retry_after=wait, response=text)
    indices = [
        int(match.group(1))
        for field, _ in fields
        for match in [_EVENT_INDEX.search(field)]
        if match is not None
    ]
    whole = status in (401, 403, 404)
    return Outcome(
        Verdict.PERMANENT,
        reason,
        response=text,
        bad_index=min(indices) if indices and not whole else None,
        whole_request=whole,
    )


def _match_keys(conversion: Conversion) -> bool:
    """Does the event carry any match key Reddit can attribute with (§3.2; "some match keys
    are required for each conversion event", Reddit's About CAPI page)?"""
    u = conversion.user
    if u.email or u.phone or u.external_id:
        return True
    if not _device_ids(conversion):
        return False
    return bool(
        conversion.user.ids.get("rdt_cid")
        or rdt_uuid(conversion)
        or (u.ip is not None and u.user_agent is not None)
    )


def refusals(conversion: Conversion) -> list[Note]:
    """What Reddit refuses in this event whatever the connection: the whole request with it
    ("None were processed", §9), so it is dead-lettered here instead of sent."""
    found: list[Note] = []
    if tracking_type(conversion) == "CUSTOM" and len(conversion.event) > MAX_CUSTOM_NAME:
        found.append(
            Note(
                "event",
                f"a Reddit custom event name is at most {MAX_CUSTOM_NAME} characters"
                f" ({len(conversion.event)} given)",
            )
        )
    if not _match_keys(conversion):
        found.append(
            Note(
                "user",
                "Reddit requires a match key: an email, phone, external_id, the rdt_cid click"
                " id, the _rdt_uuid cookie, or ip with user_agent",
            )
        )
    return found


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    """What would make Reddit drop, mis-file or poorly match this event."""
    found = age_note(conversion, MAX_AGE, now, "Reddit")
    if not target.pixel:
        found.append(Note("reddit.pixel", "no Reddit Pixel ID configured"))
    found.extend(refusals(conversion))
    u = conversion.user
    given = u.ids.get("rdt_uuid")
    if given is not None and rdt_uuid(conversion) is None:
        found.append(
            Note(
                "user.rdt_uuid",
                "not a _rdt_uuid value (<ms>.<RFC 4122 UUID>): not sent to Reddit, which"
                " refuses the whole request over it",
            )
        )
    kind = tracking_type(conversion)
    if conversion.value is not None and kind not in VALUE_TYPES:
        found.append(
            Note(
                "value",
                f"Reddit takes value and currency on purchases, carts, leads, sign-ups"
                f" and custom events, not on {kind}: not sent",
            )
        )
    for field, values in (("email", u.email), ("phone", u.phone), ("external_id", u.external_id)):
        if len(values) > 1:
            found.append(Note(f"user.{field}", f"Reddit takes one {field}: only the first is sent"))
    if conversion.source == "offline" and (u.ids.get("rdt_cid") or given or u.ip or u.user_agent):
        found.append(
            Note(
                "source",
                "Reddit takes no click id, cookie, IP or user agent on offline events: not sent",
            )
        )
    if conversion.source == "web" and conversion.page_url is None:
        found.append(Note("page.url", "Reddit uses event_source_url on website events"))
    return found
