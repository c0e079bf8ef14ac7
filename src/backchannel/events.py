"""The canonical conversion: its public input shape, its normalized stored shape, its event_id.

Why two shapes: ``ConversionIn`` is what shops send us (lenient where shops are sloppy in
harmless ways, e.g. ids as numbers, and strict where a mistake would corrupt data, e.g. unknown
fields or a price that is not a number). ``Conversion`` is what we keep and what destinations
read: identifiers hashed, time in unix seconds, ids as strings, an event_id always present.
Nothing with a raw email or phone survives past :func:`normalize`.

event_id formula (the browser snippet's ``bc.eventId`` computes the same)::

    event_id = f"{event}-{order_id}"        # e.g. "CompletePayment-1001"

with ``order_id`` converted to a string and trimmed. Deterministic, so the Pixel on the thank-you
page and the server send the same id for the same conversion and the platform counts it once;
the event name is part of it, so ``AddToCart`` and ``CompletePayment`` of one order stay apart.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import unquote_plus

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from backchannel import catalog, conversion_structs, identifiers, verticals
from backchannel.conversion_structs import (
    ConsentStruct,
    ContentStruct,
    ConversionStruct,
    LeadStruct,
    UserStruct,
)
from backchannel.identity import HashedUser, hash_user
from backchannel.notes import InvalidConversion, Note
from backchannel.urls import DEFAULT_STRIP_PARAMS, strip_note, strip_pii

#: query parameter names removed from page URLs unless configured otherwise (urls.py)
DEFAULT_STRIP = frozenset(DEFAULT_STRIP_PARAMS)

EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]{0,99}$")
#: Conversions dated further ahead than this are refused: clocks drift, time travel does not.
MAX_CLOCK_SKEW = 300  # seconds
#: A unix time larger than this is in milliseconds (it would be the year 33658 in seconds).
_MILLISECONDS_FLOOR = 10**12
#: ... and past these, in microseconds or nanoseconds (both would be after the year 5000 in
#: the next coarser unit). Those are refused with their unit named, not converted: nothing
#: sends them on purpose, and "in the future" would send the sender looking for a clock bug.
_MICROSECONDS_FLOOR = 10**14
_NANOSECONDS_FLOOR = 10**17
#: C0 controls and DEL: never part of an id, a code, a click id or a URL. PostgreSQL text
#: cannot hold U+0000 at all (a 500 before this check, and a failed group commit for every
#: request sharing it); the others make ids that print differently from what they match.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_REASON = "must not contain control characters (U+0000-U+001F, U+007F)"
NUL_REASON = "must not contain U+0000 (NUL)"
#: Nothing before 2015 is a conversion anyone can still attribute.
_EARLIEST = 1_420_070_400  # 2015-01-01T00:00:00Z
MAX_CONTENTS = 1000
MAX_ID_LENGTH = 256
#: consent: the warning an opted-out conversion is accepted with. Why not send it with Meta's
#: ``opt_out: true``: Meta would still receive the event (it only stops using it for ads
#: delivery optimisation) and TikTok has no such flag; not sending at all is the stricter
#: reading of a person's opt-out, and the conversion still counts in our own measurement.
OPT_OUT_REASON = "recorded for measurement; not sent to any platform"


# Ids and identifiers: strings or whole numbers (platforms want strings; :func:`normalize`
# converts). Plain unions on purpose: pydantic validates them in Rust, while a Python
# BeforeValidator per field made validation 2.5x slower (20 µs -> 8 µs per conversion).
IdText = Annotated[str, Field(max_length=MAX_ID_LENGTH, pattern=r"\S")]
AnyId = IdText | StrictInt
# Identifiers are checked by identity.py, which drops an unusable one with a warning instead of
# refusing the conversion: a blank email from a checkout form must not lose the order.
Ident = Annotated[str, Field(max_length=4096)] | StrictInt
Ids = Annotated[
    Ident | Annotated[list[Ident], Field(max_length=10)] | None,
    Field(description="One value or a list of up to 10."),
]
ShortText = Annotated[str, Field(max_length=1024)]


def id_text(value: str | int) -> str:
    """An id as the platforms want it: a trimmed string."""
    return value.strip() if isinstance(value, str) else str(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentIn(_Strict):
    """One line item. ``price`` is the unit price; the order total goes in ``value``."""

    id: AnyId
    name: ShortText | None = None
    category: ShortText | None = None
    brand: ShortText | None = None
    quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class UserIn(_Strict):
    """Who converted. Raw values are accepted here and hashed by :func:`normalize`."""

    email: Ids = None
    phone: Ids = None
    external_id: Ids = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    zip: Annotated[str, Field(max_length=64)] | StrictInt | None = None
    city: ShortText | None = None
    state: ShortText | None = None
    country: Annotated[str, Field(max_length=64)] | None = None
    ip: Annotated[str, Field(max_length=64)] | None = None
    user_agent: Annotated[str, Field(max_length=2048)] | None = None
    locale: Annotated[str, Field(max_length=64)] | None = None
    ttclid: Annotated[str, Field(max_length=1024)] | None = None
    ttp: Annotated[str, Field(max_length=1024)] | None = None
    fbclid: Annotated[str, Field(max_length=1024)] | None = None
    fbc: Annotated[str, Field(max_length=1024)] | None = None
    fbp: Annotated[str, Field(max_length=1024)] | None = None
    ga_client_id: Annotated[str, Field(max_length=128)] | None = Field(
        default=None,
        description="GA4 client id: the _ga cookie (GA1.1.123.456) or the id itself (123.456).",
    )
    gclid: Annotated[str, Field(max_length=1024)] | None = None
    gbraid: Annotated[str, Field(max_length=1024)] | None = None
    wbraid: Annotated[str, Field(max_length=1024)] | None = None


ConsentState = Literal["granted", "denied"]


class ConsentIn(_Strict):
    """What the person agreed to (Google's consent signals; EU user consent policy)."""

    ad_user_data: ConsentState | None = None
    ad_personalization: ConsentState | None = None


class PageIn(_Strict):
    url: Annotated[str, Field(max_length=4096)] | None = None
    referrer: Annotated[str, Field(max_length=4096)] | None = None


Source = Literal["web", "app", "offline", "crm"]

DeliveryCategory = Literal["in_store", "curbside", "home_delivery"]


class LeadIn(_Strict):
    """The ad platform's lead this conversion follows up (lead-generation forms, CRM).

    ``id`` is the lead id the platform gave the lead when it was exported (TikTok Lead
    Generation); ``source`` names the system the event comes from, e.g. your CRM
    ("HubSpot", "Salesforce"). It belongs to lead-stage events sent back for lead quality
    optimisation, usually ``source: crm`` (docs/platforms/tiktok-crm.md §2.2). The id is the
    issuing platform's own: destinations without a matching field ignore it.
    """

    id: AnyId = Field(description="The platform's lead id (a string; long numbers lose digits).")
    source: ShortText | None = Field(
        default=None, description="The system the lead event comes from (e.g. your CRM's name)."
    )


class ConversionIn(_Strict):
    """The canonical conversion, as sent to ``POST /v1/events`` and ``backchannel send``."""

    event: Annotated[str, Field(min_length=1, max_length=100)]
    event_time: int | float | str | None = Field(
        default=None,
        description="Unix seconds or ISO-8601 with a timezone; default: when received.",
    )
    event_id: AnyId | None = None
    order_id: AnyId | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    currency: Annotated[str, Field(max_length=8)] | None = None
    contents: Annotated[list[ContentIn], Field(max_length=MAX_CONTENTS)] = []
    content_type: Literal["product", "product_group"] | None = None
    source: Source = "web"
    test_event_code: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Test Events code; blank or whitespace means none."
    )
    limited_data_use: bool = False
    opt_out: bool = Field(
        default=False,
        description="The person opted out of sharing: the conversion is recorded for"
        " measurement (and the order ledger) but sent to no platform.",
    )
    user: UserIn = UserIn()
    consent: ConsentIn | None = None
    page: PageIn | None = None
    session_id: Annotated[str, Field(max_length=128)] | None = None
    shop_id: AnyId | None = None
    query: ShortText | None = Field(default=None, description="Search text, for Search events.")
    description: ShortText | None = None
    lead: LeadIn | None = None
    num_items: Annotated[StrictInt, Field(ge=0, le=1_000_000_000)] | None = Field(
        default=None, description="Number of items at checkout (InitiateCheckout)."
    )
    delivery_category: DeliveryCategory | None = Field(
        default=None, description="How a purchase reaches the customer."
    )
    predicted_ltv: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="Your predicted lifetime value of this customer."
    )
    travel: verticals.TravelIn | None = None
    vehicle: verticals.VehicleIn | None = None


# --- the normalized, storable conversion ---------------------------------------------------------


@dataclass(slots=True)
class Content:
    id: str
    quantity: int = 1
    price: float | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None


@dataclass(slots=True)
class Consent:
    """``granted``, ``denied`` or None (not said) per signal; destinations that take consent
    (Google Ads' ``consent``) send what was said and nothing when nothing was."""

    ad_user_data: str | None = None
    ad_personalization: str | None = None


@dataclass(slots=True)
class Lead:
    """The platform's lead id and the system the lead event comes from (see :class:`LeadIn`)."""

    id: str
    source: str | None = None


@dataclass(slots=True)
class Conversion:
    """A conversion ready to deliver: hashed identity, unix time, string ids, an event_id.

    This is the record kept in the store (serialized with :meth:`to_dict`) and the only input of
    the destination builders. It contains no plaintext email, phone, name, zip or external id.
    """

    event: str
    event_time: int
    event_id: str
    #: how the event_id came to be: "given", "derived" (from order_id) or "random"
    event_id_source: Literal["given", "derived", "random"]
    user: HashedUser
    source: Source = "web"
    order_id: str | None = None
    value: float | None = None
    currency: str | None = None
    contents: list[Content] = field(default_factory=list)
    content_type: str | None = None
    test_event_code: str | None = None
    limited_data_use: bool = False
    #: consent: recorded for measurement, never sent (ingest gives it no outbox rows)
    opt_out: bool = False
    page_url: str | None = None
    page_referrer: str | None = None
    session_id: str | None = None
    shop_id: str | None = None
    query: str | None = None
    description: str | None = None
    consent: Consent | None = None
    lead: Lead | None = None
    num_items: int | None = None
    delivery_category: str | None = None
    predicted_ltv: float | None = None
    #: the travel and vehicle property sets as given (:mod:`backchannel.verticals`)
    travel: dict[str, Any] | None = None
    vehicle: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversion:
        values = dict(data)
        values["user"] = HashedUser(**values["user"])
        values["contents"] = [Content(**c) for c in values.get("contents") or []]
        consent = values.get("consent")
        values["consent"] = Consent(**consent) if consent else None
        lead = values.get("lead")  # absent from rows stored before leads existed
        values["lead"] = Lead(**lead) if lead else None
        return cls(**values)

    @property
    def spec(self) -> catalog.EventSpec | None:
        return catalog.lookup(self.event)


@dataclass(slots=True)
class Normalized:
    """The result of :func:`normalize`: the conversion and the warnings worth showing."""

    conversion: Conversion
    warnings: list[Note]


# --- normalization -------------------------------------------------------------------------


def derive_event_id(order_id: str | int, event: str) -> str:
    """The deterministic event_id of an order's event; ``bc.eventId`` in bc.js is its twin."""
    return f"{event}-{str(order_id).strip()}"


_FRIENDLY = {
    "extra_forbidden": "unknown field",
    "string_pattern_mismatch": "must not be blank",
    "missing": "required",
}


def _is_union_tag(part: str) -> bool:
    """Pydantic names the branch of a union it tried (``int``, ``constrained-str``, ``list[…]``)."""
    return "[" in part or "-" in part or part in ("int", "float", "str", "bool", "none")


def validation_notes(error: ValidationError, prefix: str = "") -> list[Note]:
    """Pydantic's errors as (path, reason) notes, with paths like ``contents[0].price``.

    When a value fails every branch of a union (``str | int``), pydantic reports one error per
    branch; they are merged into one note on the field's own path.
    """
    merged: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif _is_union_tag(part):
                continue
            else:
                path += f".{part}" if path else str(part)
        reason = _FRIENDLY.get(item["type"], item["msg"])
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        reasons = merged.setdefault(path or "(body)", [])
        if reason not in reasons:
            reasons.append(reason)
    return [Note(path, " or ".join(reasons)) for path, reasons in merged.items()]


#: the longest raw value of a generic identifier (as for the named click ids)
MAX_IDENT_INPUT = 1024


def _take_ids(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[Note]]:
    """Take the generic platform identifiers (:func:`backchannel.identifiers.generic`) out
    of ``data["user"]``: the model's fields are the named ones, these are declared by the
    destination modules. Returns the rest of the data (a copy when anything was taken),
    the ids, and what is wrong with them (a 422 naming ``user.<field>``)."""
    user = data.get("user")
    if not isinstance(user, dict):
        return data, {}, []
    known = identifiers.generic()
    found = [name for name in user if name in known]
    if not found:
        return data, {}, []
    rest = {k: v for k, v in user.items() if k not in known}
    ids: dict[str, str] = {}
    errors: list[Note] = []
    for name in found:
        raw = user[name]
        if raw is None:
            continue
        if not isinstance(raw, str):
            errors.append(Note(f"user.{name}", "must be a string"))
        elif len(raw) > MAX_IDENT_INPUT:
            errors.append(Note(f"user.{name}", f"at most {MAX_IDENT_INPUT} characters"))
        elif has_control(raw):
            errors.append(Note(f"user.{name}", CONTROL_REASON))
        else:
            ids[name] = raw
    return {**data, "user": rest}, ids, errors


def parse_input(
    data: Any, *, fast: bool = False
) -> tuple[ConversionIn | ConversionStruct, dict[str, str]]:
    """Validate raw JSON-ish data into a :class:`ConversionIn` (or its msgspec twin) and the
    other platforms' ids of its ``user`` (not model fields: the destinations declare them),
    or raise InvalidConversion naming every bad field.

    The msgspec structs (:mod:`backchannel.conversion_structs`) answer first: ~1 µs instead
    of pydantic's ~6.5. They accept only what the model accepts, with the same values; what
    they refuse goes to the model, which accepts it (lax coercions, travel, vehicle) or
    names every bad field, so the 422 contract is the model's. ``fast``: the caller knows
    orjson can write ``data`` (:func:`_as_json`), i.e. every string is valid UTF-8, the one
    thing about strings pydantic checks and msgspec does not."""
    if isinstance(data, ConversionIn):
        return data, {}
    if not isinstance(data, dict):
        raise InvalidConversion([Note("(body)", "must be a JSON object")])
    data, ids, id_errors = _take_ids(data)
    if fast and not id_errors:
        decoded = conversion_structs.decode(data)
        if decoded is not None:
            return decoded, ids
    try:
        conv_in = ConversionIn.model_validate(data)
    except ValidationError as exc:
        raise InvalidConversion(validation_notes(exc) + id_errors) from None
    if id_errors:
        raise InvalidConversion(id_errors)
    return conv_in, ids


def _event_time(raw: int | float | str | None, now: float, notes: list[Note]) -> int:
    if raw is None:
        return int(now)
    if isinstance(raw, str):
        text = raw.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidConversion(
                    [Note("event_time", "not unix seconds or an ISO-8601 date-time")]
                ) from None
            if parsed.tzinfo is None:
                raise InvalidConversion(
                    [Note("event_time", "ISO-8601 time needs a timezone (e.g. Z or +02:00)")]
                )
            seconds = parsed.timestamp()
    else:
        seconds = float(raw)
    if not math.isfinite(seconds):
        raise InvalidConversion([Note("event_time", "not a finite number")])
    if seconds >= _NANOSECONDS_FLOOR:
        raise InvalidConversion([Note("event_time", "looks like nanoseconds; send unix seconds")])
    if seconds >= _MICROSECONDS_FLOOR:
        raise InvalidConversion([Note("event_time", "looks like microseconds; send unix seconds")])
    if seconds >= _MILLISECONDS_FLOOR:
        seconds /= 1000.0
        notes.append(Note("event_time", "looked like milliseconds; converted to seconds"))
    if seconds < _EARLIEST:
        raise InvalidConversion(
            [Note("event_time", "before 2015-01-01; not a real conversion time")]
        )
    if seconds > now + MAX_CLOCK_SKEW:
        raise InvalidConversion([Note("event_time", f"more than {MAX_CLOCK_SKEW} s in the future")])
    return int(seconds)  # floor: both platforms take whole unix seconds


@cache
def _needle(name: str) -> str:
    """``name=``, built once per name: the cheap test before the regex."""
    return name + "="


#: click ids a landing URL carries, read into ``user`` when the caller did not send them
URL_CLICK_IDS = ("ttclid", "fbclid", "gclid", "gbraid", "wbraid")
_QUERY_PARAM = {name: re.compile(rf"[?&]{name}=([^&#]+)") for name in URL_CLICK_IDS}


def _query_param(url: str | None, name: str) -> str | None:
    """A query parameter of the page URL (``ttclid``/``fbclid``), percent-decoded."""
    if not url or _needle(name) not in url:
        return None
    pattern = _QUERY_PARAM.get(name)
    if pattern is None:  # a generic identifier's parameter (identifiers.url_params)
        pattern = _QUERY_PARAM[name] = re.compile(rf"[?&]{re.escape(name)}=([^&#]+)")
    match = pattern.search(url.split("#", 1)[0])
    if match is None:
        return None
    return unquote_plus(match.group(1)) or None


def _stripped(path: str, url: str | None, names: frozenset[str], notes: list[Note]) -> str | None:
    if url is None:
        return None
    cleaned, removed = strip_pii(url, names)
    if removed:
        notes.append(Note(path, strip_note(removed)))
    return cleaned


@dataclass(slots=True)
class _Checked:
    event: str
    spec: catalog.EventSpec | None
    currency: str | None
    event_time: int


def _check_fields(
    event: str | None,
    currency_raw: str | None,
    value: float | None,
    event_time_raw: int | float | str | None,
    *,
    now: float,
    notes: list[Note],
    errors: list[Note],
    source: str = "web",
) -> _Checked:
    """The rules beyond types: event name, catalog, currency, value, time.

    Runs on validated input, and also on the raw input when type validation failed, so a 422
    lists every bad field at once instead of revealing them one fix at a time.
    """
    name = (event or "").strip()
    spec = catalog.lookup(name) if event is not None else None
    if event is not None and EVENT_NAME.match(name) is None:
        errors.append(
            Note("event", "must start with a letter and hold letters, digits, _ or spaces")
        )
    elif event is not None and spec is None:
        hint = catalog.suggest(name)
        if hint:
            notes.append(
                Note(
                    "event",
                    f"custom event {name!r}; did you mean the standard {hint!r}?"
                    " Standard names are case-sensitive",
                )
            )
        elif source == "crm":
            # CRM lead stages are custom by nature: TikTok has them mapped to standard
            # events in Events Manager (docs/platforms/tiktok-crm.md §2.1)
            notes.append(
                Note(
                    "event",
                    f"custom CRM event {name!r}: accepted; map it to a standard event in"
                    " TikTok Events Manager (your CRM event set) so TikTok can optimise on it",
                )
            )
        else:
            notes.append(
                Note(
                    "event",
                    f"custom event {name!r}: accepted, but TikTok does not optimise"
                    " ad delivery on custom events",
                )
            )

    currency: str | None = None
    if currency_raw is not None:
        currency = currency_raw.strip().upper()
        if currency not in catalog.ISO_4217:
            errors.append(Note("currency", "not an ISO 4217 currency code"))
            currency = None
        elif currency not in catalog.TIKTOK_CURRENCIES:
            notes.append(
                Note(
                    "currency",
                    f"{currency} is not on TikTok's documented currency list;"
                    " TikTok may not report its value",
                )
            )
    if value is not None and value < 0:
        errors.append(Note("value", "must not be negative"))
    if spec is not None and spec.payment:
        if value is None:
            errors.append(Note("value", f"required for {name}: a number (the order total)"))
        if currency_raw is None:
            errors.append(Note("currency", f"required for {name}: an ISO 4217 code"))
    elif value is not None and currency_raw is None:
        errors.append(Note("currency", "required when value is given"))

    try:
        event_time = _event_time(event_time_raw, now, notes)
    except InvalidConversion as exc:
        errors.extend(exc.notes)
        event_time = int(now)
    return _Checked(name, spec, currency, event_time)


def _raw_field_errors(data: Any, now: float) -> list[Note]:
    """:func:`_check_fields` on raw input whose types did not validate (well-typed parts only)."""
    if not isinstance(data, dict):
        return []

    def typed(key: str, *kinds: type) -> Any:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return None
        return value

    errors: list[Note] = []
    _check_fields(
        typed("event", str),
        typed("currency", str),
        typed("value", int, float),
        typed("event_time", int, float, str),
        now=now,
        notes=[],
        errors=errors,
    )
    return errors


_NUMBERS = ("value", "event_time")


def _boolean_numbers(data: Any) -> list[Note]:
    """``true``/``false`` where a number belongs. Pydantic's lax mode reads them as 1/0, which
    would store a 1.00 order or a conversion in January 1970; one dict lookup per field."""
    if not isinstance(data, dict):
        return []
    return [
        Note(name, "must be a number, not true/false")
        for name in _NUMBERS
        if isinstance(data.get(name), bool)
    ]


def has_control(value: object) -> bool:
    """Does this string hold a C0 control character or DEL (see :data:`_CONTROL`)?"""
    return isinstance(value, str) and _CONTROL.search(value) is not None


def is_web_url(value: str) -> bool:
    """An absolute http(s) URL: what a page URL or referrer can be (not ``javascript:``).

    By hand rather than ``urlsplit`` (which cost ~8 µs of every conversion): the scheme,
    case-insensitive, then a non-empty host before the first ``/``, ``?`` or ``#``."""
    head = value[:8].lower()
    if head.startswith("https://"):
        rest = value[8:]
    elif head.startswith("http://"):
        rest = value[7:]
    else:
        return False
    return _HOST_END.split(rest, 1)[0] != ""


_HOST_END = re.compile(r"[/?#]")


def _as_json(data: Any) -> bytes | None:
    """The raw input as JSON, or None when orjson cannot write it: a lone surrogate in a
    string (which pydantic refuses and msgspec would not), an integer past 64 bits, a key
    that is not a string, an object that is not JSON."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return None


def _plainly_clean(blob: bytes | None) -> bool:
    """True when no string of the raw input (``blob``: :func:`_as_json`) can hold a control
    character: its JSON has no escape at all (JSON escapes every C0 character, and a
    backslash or quote) and no DEL. The common case costs one orjson call instead of a check
    per field; anything else (an escape, an object orjson cannot write) goes through the
    field-by-field check."""
    return blob is not None and b"\\" not in blob and b"\x7f" not in blob


def _text_errors(conv_in: ConversionIn | ConversionStruct, clean: bool = False) -> list[Note]:
    """Control characters in ids, codes, click ids and URLs; NUL in free text; URL schemes.

    Why here and not in the store: every input path (API, webhooks, CSV, ``send``) ends in
    :func:`normalize`, and a 422 naming the field beats a database error for the whole group.
    """
    errors: list[Note] = []
    if clean:  # no control character anywhere: only the URL schemes are left to check
        if conv_in.page is not None:
            for name in ("url", "referrer"):
                value = getattr(conv_in.page, name)
                if value is not None and not is_web_url(value):
                    errors.append(Note(f"page.{name}", "must be an http(s) URL"))
        return errors

    def strict(path: str, value: object) -> None:
        # what is stored is stripped (ids are trimmed, as bc.eventId trims): a tab or newline
        # around an id is whitespace, not a control character inside it
        if has_control(value.strip() if isinstance(value, str) else value):
            errors.append(Note(path, CONTROL_REASON))

    def text(path: str, value: str | None) -> None:
        if value is not None and "\x00" in value:
            errors.append(Note(path, NUL_REASON))

    for name in ("event_id", "order_id", "session_id", "shop_id", "currency"):
        strict(name, getattr(conv_in, name))
    strict("test_event_code", (conv_in.test_event_code or "").strip())  # blank is no code
    text("query", conv_in.query)
    text("description", conv_in.description)
    contents: Sequence[ContentIn | ContentStruct] = conv_in.contents
    for index, item in enumerate(contents):
        strict(f"contents[{index}].id", item.id)
        for name in ("name", "category", "brand"):
            text(f"contents[{index}].{name}", getattr(item, name))
    if conv_in.lead is not None:
        strict("lead.id", conv_in.lead.id)
        text("lead.source", conv_in.lead.source)
    for name in ("travel", "vehicle"):
        for path, value in verticals.strings(verticals.stored(getattr(conv_in, name)), name):
            text(path, value)
    user = conv_in.user
    for name in (
        "ip", "locale", "ttclid", "ttp", "fbclid", "fbc", "fbp", "country", "zip",
        "ga_client_id", "gclid", "gbraid", "wbraid",
    ):  # fmt: skip
        strict(f"user.{name}", getattr(user, name))
    for name in ("email", "phone", "external_id"):
        value = getattr(user, name)
        for item in value if isinstance(value, list) else [value]:
            text(f"user.{name}", item if isinstance(item, str) else None)
    for name in ("first_name", "last_name", "city", "state", "user_agent"):
        text(f"user.{name}", getattr(user, name))
    if conv_in.page is not None:
        for name in ("url", "referrer"):
            value = getattr(conv_in.page, name)
            if value is None:
                continue
            strict(f"page.{name}", value)
            if not is_web_url(value):
                errors.append(Note(f"page.{name}", "must be an http(s) URL"))
    return errors


def _present(user: UserIn | UserStruct) -> dict[str, Any]:
    """The fields of ``user`` that hold a value (what the identity step reads)."""
    if isinstance(user, UserStruct):
        return conversion_structs.present(user)
    return {k: v for k, v in user.__dict__.items() if v is not None}


def _consent(given: ConsentIn | ConsentStruct | None) -> Consent | None:
    if given is None or (given.ad_user_data is None and given.ad_personalization is None):
        return None
    return Consent(given.ad_user_data, given.ad_personalization)


def _lead(given: LeadIn | LeadStruct | None) -> Lead | None:
    if given is None:
        return None
    return Lead(id_text(given.id), given.source)


def normalize(
    data: Any,
    *,
    now: float,
    default_region: str | None = None,
    strip_params: frozenset[str] = DEFAULT_STRIP,
) -> Normalized:
    """Validate, normalize and hash one conversion.

    ``now`` is passed in (the core reads no clock) and is the receive time. Raises
    :class:`InvalidConversion` listing every fatal problem; returns warnings for the rest.
    ``strip_params``: parameter names removed from ``page.url``/``page.referrer`` besides
    those whose value is an email or phone (:mod:`backchannel.urls`).
    """
    booleans = _boolean_numbers(data)
    blob = _as_json(data)
    try:
        conv_in, given_ids = parse_input(data, fast=blob is not None)
    except InvalidConversion as exc:
        reported = {n.path for n in exc.notes}
        more = [n for n in booleans + _raw_field_errors(data, now) if n.path not in reported]
        raise InvalidConversion(exc.notes + more) from None
    notes: list[Note] = []
    errors: list[Note] = booleans + _text_errors(conv_in, _plainly_clean(blob))
    checked = _check_fields(
        conv_in.event,
        conv_in.currency,
        conv_in.value,
        conv_in.event_time,
        now=now,
        notes=notes,
        errors=errors,
        source=conv_in.source,
    )
    if booleans:  # one note per field: "not true/false" says all there is to say
        named = {n.path for n in booleans}
        errors = booleans + [n for n in errors[len(booleans) :] if n.path not in named]
    if errors:
        raise InvalidConversion(errors)
    event, spec, currency, event_time = (
        checked.event,
        checked.spec,
        checked.currency,
        checked.event_time,
    )
    value = conv_in.value

    order_id = id_text(conv_in.order_id) if conv_in.order_id is not None else None
    if conv_in.event_id is not None:
        event_id, id_source = id_text(conv_in.event_id), "given"
    elif order_id is not None:
        event_id, id_source = derive_event_id(order_id, event), "derived"
    else:
        event_id, id_source = uuid.uuid4().hex, "random"
        notes.append(
            Note(
                "event_id",
                "no event_id and no order_id: a random id was used, so the"
                " platform cannot deduplicate this event with the browser pixel",
            )
        )

    user_raw = _present(conv_in.user)
    page_url = conv_in.page.url if conv_in.page else None
    for click_id in URL_CLICK_IDS:
        if not user_raw.get(click_id):
            found = _query_param(page_url, click_id)
            if found:
                user_raw[click_id] = found
    generic = identifiers.generic()
    ids = {name: (v, generic[name].max_length) for name, v in given_ids.items()}
    if page_url:
        for name, param in identifiers.url_params().items():
            if name not in ids:
                found = _query_param(page_url, param)
                if found:
                    ids[name] = (found, generic[name].max_length)
    user = hash_user(user_raw, default_region, notes, identifiers.email_forms(), ids)
    # after the click ids were read: personal data in the URLs never goes further
    page_url = _stripped("page.url", page_url, strip_params, notes)
    page_referrer = _stripped(
        "page.referrer", conv_in.page.referrer if conv_in.page else None, strip_params, notes
    )

    contents = [
        Content(id_text(c.id), c.quantity, c.price, c.name, c.category, c.brand)
        for c in conv_in.contents
    ]
    content_type: str | None = conv_in.content_type
    if content_type is None and contents and spec is not None:
        content_type = spec.default_content_type

    conversion = Conversion(
        event=event,
        event_time=event_time,
        event_id=event_id,
        event_id_source=id_source,  # type: ignore[arg-type]
        user=user,
        contents=contents,
    )
    # the rest only where it differs from the default: a 28-keyword dataclass call cost
    # ~2 µs of every conversion
    for name, given in (
        ("order_id", order_id),
        ("value", value),
        ("currency", currency),
        ("content_type", content_type),
        # blank or whitespace: no code (a test event would never reach production figures)
        ("test_event_code", (conv_in.test_event_code or "").strip() or None),
        ("page_url", page_url),
        ("page_referrer", page_referrer),
        ("session_id", conv_in.session_id),
        ("shop_id", id_text(conv_in.shop_id) if conv_in.shop_id is not None else None),
        ("query", conv_in.query),
        ("description", conv_in.description),
        ("consent", _consent(conv_in.consent)),
        ("lead", _lead(conv_in.lead)),
        ("num_items", conv_in.num_items),
        ("delivery_category", conv_in.delivery_category),
        ("predicted_ltv", conv_in.predicted_ltv),
        ("travel", verticals.stored(conv_in.travel)),
        ("vehicle", verticals.stored(conv_in.vehicle)),
    ):
        if given is not None:
            setattr(conversion, name, given)
    if conv_in.source != "web":
        conversion.source = conv_in.source
    if conv_in.limited_data_use:
        conversion.limited_data_use = True
    if conv_in.opt_out:
        conversion.opt_out = True
    if conv_in.opt_out:  # consent: say so on the 202 and in `send --dry-run`
        notes.append(Note("opt_out", OPT_OUT_REASON))
    return Normalized(conversion, notes)
