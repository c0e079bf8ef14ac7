"""GA4 Measurement Protocol (``POST /mp/collect``): body, request, verdicts.

The contract is ``docs/platforms/ga4.md`` (cited below as §n). What shapes this module:

- **One client per request.** The body carries ``client_id`` (the ``_ga`` cookie's id, §3,
  §11), ``user_id``, ``user_data`` and ``consent`` once, at the top, for all of its up to 25
  ``events`` (§3, §7). A batch can therefore only hold conversions that share all of those:
  :func:`batch_key` says which do (the worker groups by it) and :func:`build_body` refuses a
  batch that mixes them.
- **The secret rides in the URL.** ``measurement_id`` and ``api_secret`` are query parameters,
  no header carries auth (§2). :class:`PreparedRequest` ``body`` (what users see) never holds
  the secret; only ``url`` does.
- **GA4 answers 2xx to everything** (§10: "doesn't return an error code if the payload is
  malformed, or if the data is incorrect or not processed"). A 2xx means "received", never
  "recorded": an event with a reserved name, a wrong secret or a measurement id of another
  stream is dropped without a word. So this module refuses locally what GA4 would drop
  (:func:`refusals`), says in :func:`notes` what it cannot check, and sends test conversions
  to the validation server, the only place GA4 says what is wrong.

Choices where the contract leaves room, and why:

- **Test conversions** go to ``/debug/mp/collect`` (§1: the validation server; "the only
  difference … is the URL", nothing is processed or reported) with ``validation_behavior:
  ENFORCE_RECOMMENDATIONS`` (§3, §10: recommended during development). MP has no test-event
  code; its answer lists what GA4 would have dropped, which :func:`classify` reads.
- **Event names**: the catalog's standard events map to GA4's recommended events (§4,
  :data:`EVENT_NAMES`); any other name is sent in snake_case (``StartTrial`` ->
  ``start_trial``), GA4's own style, when it obeys the naming rules (§7: at most 40
  characters, letters, digits and underscores, a letter first) and is not reserved (§12).
  One that cannot is refused (:func:`refusals`) rather than renamed behind the user's back.
- **Params**: ``transaction_id`` (the order id: GA4 dedups purchases on it, §9), ``value``,
  ``currency``, ``items`` (§4 item fields), ``search_term`` on ``search`` (§4), and our
  ``event_id`` as a custom parameter (the one Backchannel id: it joins GA4's export to our
  store, and lets the sandbox count a resent event, GA4 having no idempotency key, §9).
- **No session_id / engagement_time_msec.** §3 asks for them only "for user activity to show
  in Realtime", not for the event to be taken, and ``session_id`` must be GA's own session
  id (the ``_ga_<id>`` cookie), which we do not collect: sending ours would open a fake
  session (§3: "creating a new session_id creates a new session"). Both are also listed as
  reserved parameter names (§12, Still unsure 2).
- **user_id** is the (hashed) ``external_id``. §5: "The ``user_id`` parameter must be present
  whenever ``user_data`` is provided", so hashed email and phone are sent only with one. A
  site that wants GA4 to join these events to its own user id must give gtag the same value
  (SHA-256 of the trimmed, lowercased id).
- **Consent** is sent as GA4 spells it (§8: ``ad_user_data`` / ``ad_personalization``,
  ``GRANTED`` / ``DENIED``), only the signals that were given. When ``ad_user_data`` is
  denied, ``user_data`` is not sent at all: that signal means "no user data for advertising"
  (§8), and holding back costs nothing GA4 needs to take the event.
- **Email** under Google's rule (§5: dots before the ``@`` of gmail.com and googlemail.com
  removed), computed at ingest into ``email_forms["google"]``; **phone** is SHA-256 of E.164
  *with* ``+`` (§5: "remove all non digit characters; add + prefix; hash"), which is the
  stored ``user.phone`` (TikTok's form), not Meta's digits-only ``phone_digits``.
- ``user_data.address`` (names, street) is not sent: its sub-fields and their normalization
  are cut off in every source (§5, Still unsure 3).

Deduplication with the browser: GA4 dedups only ``purchase`` on ``transaction_id`` (§9); any
other event sent by both gtag and this module is counted twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

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
from backchannel.identity import normalize_email_google
from backchannel.notes import Note

name = "ga4"
display_name = "GA4"
ORDER = 30
ON_BY_DEFAULT = False  # off until connected: GA4 needs the _ga client id, which not every shop has
CREDENTIALS = (
    Credential(
        "pixel",
        "Measurement ID",
        pattern=r"G-[A-Z0-9]{4,20}",
        hint="G-XXXXXXX",
    ),
    Credential("token", "Measurement Protocol API secret", secret=True),
)
#: §5: Google's email rule (gmail/googlemail dots removed), kept at ingest under this key
EMAIL_FORM = "google"
EMAIL_NORMALIZER = normalize_email_google
IDENTIFIERS = (Identifier("ga_client_id", "browser", cookie="_ga", max_length=128),)
#: quality.py weights (sum 10). GA4 is not an ad network matching people: it files an event
#: under the browser that the GA tag knows by ``client_id`` (§3, §11), so the client id (our
#: ``browser_id``) carries half the score: without it there is no event at all. ``user_id``
#: (our ``external_id``) joins devices and is what ``user_data`` needs (§5); hashed email and
#: phone are user-provided data GA4 matches with, sent only alongside a user id. GA4 takes no
#: click id over MP (``gclid`` is a reserved parameter, §11, §12) and we send no IP or user
#: agent (``ip_override`` is known only from a third-party schema, §3): both weigh nothing.
QUALITY_WEIGHTS = {
    "email": 1.5,
    "phone": 1.5,
    "click_id": 0.0,
    "external_id": 2.0,
    "browser_id": 5.0,
    "ip_user_agent": 0.0,
}
IDENTIFIER_SECTION = "user_data"
TEST_EVENT_CODES = False
#: Google's tag (gtag('event', 'purchase', {transaction_id})), which GA4 and Google Ads share:
#: its mirror rows go under "google", and the id both legs carry is the order id (GA4 dedups
#: purchases on transaction_id, §9)
PIXEL_CALL = "gtag"
PIXEL_MIRROR = "google"
DEDUP_ID = "order_id"
#: utm_source values that attribute an order to it in the gap report (a shop's own tagging
#: convention, not a platform field; its click ids count too)
UTM_SOURCES = ("google",)
#: GA4 takes no click id here (``gclid`` is a reserved parameter name, ga4.md §12); its
#: browser id is the ``_ga`` client id, which every event needs
CLICK_IDS: tuple[str, ...] = ()
CLICK_ID_LABEL = "none"
BROWSER_IDS = ("ga_client_id",)
BROWSER_ID_LABEL = "_ga client id"
OAUTH = None
DEFAULT_BASE_URL = "https://www.google-analytics.com"
PATH = "/mp/collect"
#: the validation server (§1): test conversions go here
DEBUG_PATH = "/debug/mp/collect"
#: §7: "Requests: max 25 events"
max_batch = 25
#: §6: "backdated up to 72 hours" (older wording: 3 calendar days in the property's timezone;
#: 72 h is the stricter reading and the one the ads-export requirement table states)
MAX_AGE = 72 * 3600  # seconds
#: §7: "The post body must be smaller than 130kB" (read as 130 000 bytes, the stricter reading)
MAX_BODY = 130_000
#: §7: event names at most 40 characters; parameter values at most 100
MAX_NAME = 40
MAX_VALUE = 100

#: the catalog's standard events -> GA4 recommended events (§4)
EVENT_NAMES: dict[str, str] = {
    "CompletePayment": "purchase",
    "Purchase": "purchase",
    "AddToCart": "add_to_cart",
    "InitiateCheckout": "begin_checkout",
    "AddPaymentInfo": "add_payment_info",
    "ViewContent": "view_item",
    "CompleteRegistration": "sign_up",
    "Lead": "generate_lead",
    "SubmitForm": "generate_lead",
    "Search": "search",
    "AddToWishlist": "add_to_wishlist",
}
#: §12: web reserved event names, RudderStack's extra one, and the MP reference's list
RESERVED_EVENT_NAMES = frozenset(
    {
        "app_remove",
        "app_store_refund",
        "app_store_subscription_cancel",
        "app_store_subscription_convert",
        "app_store_subscription_renew",
        "click",
        "error",
        "file_download",
        "first_open",
        "first_visit",
        "form_start",
        "form_submit",
        "in_app_purchase",
        "page_view",
        "scroll",
        "session_start",
        "user_engagement",
        "view_complete",
        "video_progress",
        "video_start",
        "view_search_results",
        "ad_activeview",
        "ad_click",
        "ad_exposure",
        "ad_impression",
        "ad_query",
        "adunit_exposure",
        "app_clear_data",
        "app_install",
        "app_update",
        "notification_dismiss",
        "notification_foreground",
        "notification_open",
        "notification_receive",
        "os_update",
        "screen_view",
    }
)
#: §12: reserved prefixes of event and parameter names
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CAMEL_LOWER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CAMEL_ACRONYM = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s_]+")
#: "Event at index: [3] …": how the validation server names an event (§10)
_EVENT_INDEX = re.compile(r"Event at index: \[(\d+)\]")


def body_items(body: Mapping[str, Any]) -> list[Any]:
    """The body's ``events[]``."""
    items = body.get("events")
    return items if isinstance(items, list) else []


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    """GA4 takes every source under the stream (no event source ids)."""
    return None


def max_age(conversion: Conversion) -> int:
    return MAX_AGE


def pixel_events(event: str) -> tuple[str, ...]:
    """gtag fires GA4's name for the event (CompletePayment -> purchase), as we send it."""
    return (EVENT_NAMES.get(event) or snake_case(event),)


def snake_case(event: str) -> str:
    """``StartTrial`` -> ``start_trial``, ``Watch Video`` -> ``watch_video``,
    ``HTTPCheck`` -> ``http_check``: GA4's own naming style for a custom event."""
    text = _CAMEL_ACRONYM.sub("_", _CAMEL_LOWER.sub("_", event.strip()))
    return _SEPARATORS.sub("_", text).strip("_").lower()


def event_name(conversion: Conversion) -> str:
    """The GA4 event name: the recommended event, else the name in snake_case."""
    return EVENT_NAMES.get(conversion.event) or snake_case(conversion.event)


def name_problem(ga_name: str) -> str | None:
    """Why GA4 would drop an event called ``ga_name`` (§7, §12), or None."""
    if not ga_name:
        return "empty"
    if len(ga_name) > MAX_NAME:
        return f"longer than GA4's {MAX_NAME} characters"
    if _NAME.fullmatch(ga_name) is None:
        return "GA4 names take letters, digits and underscores, a letter first"
    if ga_name in RESERVED_EVENT_NAMES or ga_name.startswith(RESERVED_PREFIXES):
        return "a name GA4 reserves for its own events"
    return None


def _text(value: str) -> str:
    """A descriptive parameter value within §7's 100 characters (GA4 keeps no more)."""
    return value[:MAX_VALUE]


def _items(conversion: Conversion) -> list[dict[str, Any]]:
    """``items[]`` with §4's item fields, in the order the GA4 reference lists them."""
    items = []
    for c in conversion.contents:
        item: dict[str, Any] = {"item_id": c.id}
        if c.name is not None:
            item["item_name"] = _text(c.name)
        if c.brand is not None:
            item["item_brand"] = _text(c.brand)
        if c.category is not None:
            item["item_category"] = _text(c.category)
        item["quantity"] = c.quantity
        if c.price is not None:
            item["price"] = c.price
        items.append(item)
    return items


def _params(conversion: Conversion, ga_name: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if conversion.order_id is not None:
        params["transaction_id"] = conversion.order_id
    if conversion.value is not None:
        params["value"] = conversion.value
    if conversion.currency is not None:
        params["currency"] = conversion.currency
    if conversion.contents:
        params["items"] = _items(conversion)
    if ga_name == "search" and conversion.query is not None:
        params["search_term"] = _text(conversion.query)
    if len(conversion.event_id) <= MAX_VALUE:  # ours, so left out rather than cut
        params["event_id"] = conversion.event_id
    return params


def event(conversion: Conversion) -> dict[str, Any]:
    """One ``events[]`` item. ``timestamp_micros`` is per event ("can be overridden by …
    event timestamps", §3): a batch holds events of different times."""
    ga_name = event_name(conversion)
    return {
        "name": ga_name,
        "params": _params(conversion, ga_name),
        "timestamp_micros": conversion.event_time * 1_000_000,
    }


def _consent(conversion: Conversion) -> dict[str, str]:
    consent = conversion.consent
    if consent is None:
        return {}
    found = {}
    for key, said in (
        ("ad_user_data", consent.ad_user_data),
        ("ad_personalization", consent.ad_personalization),
    ):
        if said is not None:
            found[key] = said.upper()  # §8: "GRANTED" / "DENIED"
    return found


def _denied(conversion: Conversion) -> bool:
    """The person refused ``ad_user_data``: no user data for advertising (§8)."""
    return conversion.consent is not None and conversion.consent.ad_user_data == "denied"


def _user_data(conversion: Conversion) -> dict[str, list[str]]:
    """§5's hashed user-provided data; empty when GA4 may not or cannot take it."""
    u = conversion.user
    if not u.external_id:
        return {}  # §5: user_data only with a user_id
    if _denied(conversion):
        return {}
    data: dict[str, list[str]] = {}
    emails = u.email_forms.get(EMAIL_FORM, u.email)
    if emails:
        data["sha256_email_address"] = list(emails)
    if u.phone:
        data["sha256_phone_number"] = list(u.phone)  # SHA-256 of "+<E.164 digits>" (§5)
    return data


def request_fields(conversion: Conversion) -> dict[str, Any]:
    """What GA4 takes once per request for this conversion (§3): every conversion of a
    request must have the same. Raises ValueError without a client id."""
    client_id = conversion.user.ga_client_id
    if not client_id:
        raise ValueError("no GA client id (user.ga_client_id): GA4 cannot take the event")
    fields: dict[str, Any] = {"client_id": client_id}
    if conversion.user.external_id:
        fields["user_id"] = conversion.user.external_id[0]
    consent = _consent(conversion)
    if consent:
        fields["consent"] = consent
    user_data = _user_data(conversion)
    if user_data:
        fields["user_data"] = user_data
    return fields


def batch_key(conversion: Conversion) -> str:
    """Which conversions may share one request: the same key, the same request.

    GA4 takes one ``client_id`` per request (§3), and with it one ``user_id``, ``user_data``
    and ``consent``; a test conversion goes to another URL. The key is the client id, then a
    digest of the rest, so conversions of one browser share a request unless the person's
    data or consent differ between them. The delivery worker groups a destination's rows by
    it (when the destination declares it) before cutting batches of ``max_batch``. A
    conversion without a client id gets ``""``: it is refused (:func:`refusals`), never sent.
    """
    try:
        fields = request_fields(conversion)
    except ValueError:
        return ""
    rest = {k: v for k, v in fields.items() if k != "client_id"}
    rest["test"] = conversion.test_event_code is not None
    digest = hashlib.sha256(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{fields['client_id']} {digest}"


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    """The request body for ``batch``, secret excluded (it travels in the URL).

    The batch must share :func:`batch_key`: a batch mixing client ids (or the person's data,
    consent, or test and production) raises ValueError, since GA4 would file every event
    under the first browser.
    """
    if not batch:
        raise ValueError("empty batch")
    if len(batch) > max_batch:
        raise ValueError(f"at most {max_batch} events per request")
    fields = request_fields(batch[0])
    test = batch[0].test_event_code is not None
    for conversion in batch[1:]:
        other = request_fields(conversion)
        if other["client_id"] != fields["client_id"]:
            raise ValueError("a GA4 request takes one client_id: group the batch by batch_key")
        if other != fields or (conversion.test_event_code is not None) != test:
            raise ValueError(
                "a GA4 request takes one user_id, user_data and consent, and is all test or"
                " all production: group the batch by batch_key"
            )
    events = []
    for conversion in batch:
        item = event(conversion)
        problem = name_problem(item["name"])
        if problem is not None:
            raise ValueError(f"event {conversion.event!r} as GA4 {item['name']!r}: {problem}")
        events.append(item)
    body: dict[str, Any] = dict(fields)
    if test:
        body["validation_behavior"] = "ENFORCE_RECOMMENDATIONS"
    body["events"] = events
    return body


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    """``POST {base}/mp/collect?measurement_id=…&api_secret=…`` (§1, §2), or the validation
    server's ``/debug/mp/collect`` for a test batch. Raises ValueError past 130 kB (§7): the
    worker then sends the rows one by one."""
    body = build_body(batch, target)
    content = orjson.dumps(body)
    if len(content) >= MAX_BODY:
        raise ValueError(
            f"the GA4 request body is {len(content)} bytes; GA4 takes less than {MAX_BODY}"
        )
    path = DEBUG_PATH if batch[0].test_event_code is not None else PATH
    query = urlencode({"measurement_id": target.pixel, "api_secret": target.token})
    return PreparedRequest(
        url=f"{target.base_url.rstrip('/')}{path}?{query}",
        headers={"Content-Type": "application/json"},
        content=content,
        body=body,
        count=len(batch),
    )


#: what ``backchannel doctor`` asks GA4's validation server about (a fake client id and order)
PROBE_EVENT: dict[str, Any] = {
    "event": "CompletePayment",
    "order_id": "backchannel-doctor",
    "value": 1.0,
    "currency": "USD",
    "test_event_code": "DOCTOR",
    "user": {"ga_client_id": "1000000000.1000000000"},
}


def validation_probe(target: Target, sample: Conversion) -> PreparedRequest:
    """A test request to the validation server (``/debug/mp/collect``, §10) with this
    connection's measurement id and secret: GA4 answers 2xx to everything on ``/mp/collect``,
    so this is the only way to learn what it would silently drop. ``sample`` must be a test
    conversion (``PROBE_EVENT`` normalized)."""
    return prepare([sample], target)


def validation_findings(status: int, body: bytes) -> list[str]:
    """What the validation server objected to (empty: it takes the sample as sent)."""
    if not 200 <= status < 300:
        return [f"HTTP {status} from the validation server"]
    messages = _validation_messages(body)
    if messages is None:
        return ["the validation server did not answer with validationMessages"]
    return [_describe(m) for m in messages]


def _validation_messages(body: bytes) -> list[Any] | None:
    """The validation server's ``validationMessages`` (§10), or None for any other body."""
    if not body.strip():
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    messages = payload.get("validationMessages")
    return messages if isinstance(messages, list) else None


def _describe(message: Any) -> str:
    if not isinstance(message, dict):
        return str(message)
    code = message.get("validationCode") or "?"
    where = message.get("fieldPath") or ""
    text = message.get("description") or ""
    return f"{code} {where}: {text}" if where else f"{code}: {text}"


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """Read GA4's answer.

    - 2xx from ``/mp/collect`` (204, empty body, §10) is DELIVERED, meaning *received*: GA4
      says nothing about dropped events. A 2xx with some other body (a proxy's page) is taken
      as delivered too: nothing in GA4's answer could prove otherwise, and a resent request
      is counted twice (no idempotency key, §9).
    - 2xx from the validation server (test conversions) carries ``validationMessages`` (§10):
      empty is DELIVERED (valid; GA4 records nothing from this server), otherwise PERMANENT
      with the messages, naming the row when a message says "Event at index: [i]".
    - 429, 408 and 5xx: RETRY (GA4 documents no rate limit, Still unsure 8; a front end can
      still answer so). Any other status: PERMANENT. §10 says MP returns no error codes for
      bad payloads, so a 4xx comes from Google's front end or a proxy (e.g. 413 for a body
      over 130 kB, §7: the worker splits the batch); 401/403/404 mean the URL or account,
      not the events.
    """
    text = shorten(body)
    if 200 <= status < 300:
        messages = _validation_messages(body)
        if messages is None:
            return Outcome(
                Verdict.DELIVERED,
                f"HTTP {status}: received (GA4 does not say whether it recorded the events)",
                response=text,
            )
        if not messages:
            return Outcome(
                Verdict.DELIVERED,
                "GA4 validation server: no validation messages (not recorded: test conversion)",
                response=text,
            )
        reason = "GA4 validation: " + "; ".join(_describe(m) for m in messages)
        indices = {
            int(match.group(1))
            for m in messages
            if isinstance(m, dict)
            for match in [_EVENT_INDEX.search(str(m.get("description") or ""))]
            if match is not None
        }
        return Outcome(
            Verdict.PERMANENT,
            reason,
            response=text,
            bad_index=indices.pop() if len(indices) == 1 else None,
        )
    wait = retry_after_seconds(headers)
    if status >= 500 or status in (408, 429):
        return Outcome(Verdict.RETRY, f"HTTP {status}", retry_after=wait, response=text)
    return Outcome(
        Verdict.PERMANENT,
        f"HTTP {status}",
        response=text,
        whole_request=status in (401, 403, 404),
    )


def refusals(conversion: Conversion) -> list[Note]:
    """What GA4 cannot take, whatever the connection: checked here because GA4 itself
    would answer 2xx and drop the event without a word (§10)."""
    found: list[Note] = []
    if not conversion.user.ga_client_id:
        found.append(
            Note("user.ga_client_id", "missing: GA4 cannot take an event without the _ga client id")
        )
    ga_name = event_name(conversion)
    problem = name_problem(ga_name)
    if problem is not None:
        found.append(Note("event", f"sent to GA4 as {ga_name!r}: {problem}"))
    if conversion.order_id is not None and len(conversion.order_id) > MAX_VALUE:
        found.append(Note("order_id", f"longer than GA4's {MAX_VALUE}-character parameter values"))
    for index, content in enumerate(conversion.contents):
        if len(content.id) > MAX_VALUE:
            found.append(
                Note(
                    f"contents[{index}].id",
                    f"longer than GA4's {MAX_VALUE}-character parameter values",
                )
            )
    if not found:
        size = len(orjson.dumps({"client_id": conversion.user.ga_client_id, **_alone(conversion)}))
        if size >= MAX_BODY:
            found.append(
                Note("contents", f"the GA4 request would be {size} bytes; GA4 takes < {MAX_BODY}")
            )
    return found


def _alone(conversion: Conversion) -> dict[str, Any]:
    fields = request_fields(conversion)
    return {**fields, "events": [event(conversion)]}


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    """What would make GA4 drop or poorly use this event. GA4 answers 2xx either way (§10),
    so these are the only warnings anyone gets."""
    found = age_note(conversion, MAX_AGE, now, "GA4")
    silent = "GA4 answers 2xx and drops every event without saying so"
    if not target.pixel:
        found.append(Note("ga4.pixel", f"no GA4 measurement id configured: {silent}"))
    elif re.fullmatch(CREDENTIALS[0].pattern or "", target.pixel) is None:
        found.append(
            Note("ga4.pixel", f"{target.pixel!r} is not a measurement id (G-XXXXXXX): {silent}")
        )
    if not target.token:
        found.append(Note("ga4.token", f"no Measurement Protocol API secret: {silent}"))
    found.extend(refusals(conversion))
    u = conversion.user
    if (u.email or u.phone) and not u.external_id:
        found.append(
            Note(
                "user.external_id",
                "GA4 takes hashed email and phone only with a user_id: without external_id"
                " they are not sent to GA4",
            )
        )
    elif (
        (u.email or u.phone) and conversion.consent and conversion.consent.ad_user_data == "denied"
    ):
        found.append(
            Note("consent.ad_user_data", "denied: hashed email and phone are not sent to GA4")
        )
    if event_name(conversion) == "purchase":
        if conversion.order_id is None:
            found.append(
                Note(
                    "order_id",
                    "GA4 dedups purchases on transaction_id: without an order id a purchase"
                    " also tracked by gtag counts twice",
                )
            )
        if not conversion.contents:
            found.append(Note("contents", "GA4 expects items on a purchase"))
    if conversion.value is not None and conversion.currency is None:
        found.append(Note("currency", "GA4 computes no revenue from a value without currency"))
    return found
