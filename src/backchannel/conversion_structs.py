"""The canonical conversion as msgspec structs: the ingest hot path's validator.

Why a second shape of :class:`backchannel.events.ConversionIn`: validating a conversion with
pydantic costs ~6.5 µs, with these structs ~1 µs, out of a per-conversion budget of 20 µs
(issue 17). The pydantic models stay the one source of truth for everything a caller sees:
the OpenAPI schema is generated from them, and every refused input is refused *by them*, so
the 422 error contract (field paths, reasons, every error at once) is pydantic's, unchanged.

How the two are kept equal: :func:`decode` either returns a struct or None. A struct is
returned only for input the pydantic model accepts with the same values; anything else,
including everything the model would accept only through a lax-mode coercion (``"2"`` for a
quantity, ``1`` for a boolean) and the ``travel``/``vehicle`` sets (whose validators have no
msgspec form), comes back None and goes through pydantic. tests/core/test_conversion_structs.py
checks the field lists, defaults and constraints against the models and, on generated
documents, that a struct is returned only where the model agrees, with the same values.

Differences kept on purpose (each makes :func:`decode` refuse more, never less):

- no lax coercions (msgspec takes ``int`` only as an int, ``bool`` only as a bool);
- ``allow_inf_nan=False`` is written as bounds of ±``sys.float_info.max``: an infinity or NaN
  fails them;
- a whitespace-only id is judged by Python's ``\\s`` (which also counts U+001C-U+001F as
  whitespace) rather than pydantic's Rust one.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

_MAX = sys.float_info.max
#: events.MAX_ID_LENGTH and events.MAX_CONTENTS (events imports this module; the tests compare)
MAX_ID_LENGTH = 256
MAX_CONTENTS = 1000

#: a float pydantic declares ``allow_inf_nan=False``
Finite = Annotated[float, Meta(ge=-_MAX, le=_MAX)]
NonNegative = Annotated[float, Meta(ge=0, le=_MAX)]
IdText = Annotated[str, Meta(max_length=MAX_ID_LENGTH, pattern=r"\S")]
AnyId = IdText | int
Ident = Annotated[str, Meta(max_length=4096)] | int
Ids = Ident | Annotated[list[Ident], Meta(max_length=10)] | None
ShortText = Annotated[str, Meta(max_length=1024)]
Text64 = Annotated[str, Meta(max_length=64)]
ClickId = Annotated[str, Meta(max_length=1024)]
ConsentState = Literal["granted", "denied"]


class _Strict(Struct, forbid_unknown_fields=True):
    """``extra="forbid"``, as the models."""


class ContentStruct(_Strict):
    id: AnyId
    name: ShortText | None = None
    category: ShortText | None = None
    brand: ShortText | None = None
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    price: NonNegative | None = None


class UserStruct(_Strict, omit_defaults=True):
    """(``omit_defaults``: :func:`present` is msgspec's own walk, every default being None.)"""

    email: Ids = None
    phone: Ids = None
    external_id: Ids = None
    first_name: ShortText | None = None
    last_name: ShortText | None = None
    zip: Text64 | int | None = None
    city: ShortText | None = None
    state: ShortText | None = None
    country: Text64 | None = None
    ip: Text64 | None = None
    user_agent: Annotated[str, Meta(max_length=2048)] | None = None
    locale: Text64 | None = None
    ttclid: ClickId | None = None
    ttp: ClickId | None = None
    fbclid: ClickId | None = None
    fbc: ClickId | None = None
    fbp: ClickId | None = None
    ga_client_id: Annotated[str, Meta(max_length=128)] | None = None
    gclid: ClickId | None = None
    gbraid: ClickId | None = None
    wbraid: ClickId | None = None


class ConsentStruct(_Strict):
    ad_user_data: ConsentState | None = None
    ad_personalization: ConsentState | None = None


class PageStruct(_Strict):
    url: Annotated[str, Meta(max_length=4096)] | None = None
    referrer: Annotated[str, Meta(max_length=4096)] | None = None


class LeadStruct(_Strict):
    id: AnyId
    source: ShortText | None = None


class ConversionStruct(_Strict):
    event: Annotated[str, Meta(min_length=1, max_length=100)]
    event_time: int | float | str | None = None
    event_id: AnyId | None = None
    order_id: AnyId | None = None
    value: Finite | None = None
    currency: Annotated[str, Meta(max_length=8)] | None = None
    contents: Annotated[list[ContentStruct], Meta(max_length=MAX_CONTENTS)] = []
    content_type: Literal["product", "product_group"] | None = None
    source: Literal["web", "app", "offline", "crm"] = "web"
    test_event_code: Text64 | None = None
    limited_data_use: bool = False
    opt_out: bool = False
    user: UserStruct = field(default_factory=UserStruct)
    consent: ConsentStruct | None = None
    page: PageStruct | None = None
    session_id: Annotated[str, Meta(max_length=128)] | None = None
    shop_id: AnyId | None = None
    query: ShortText | None = None
    description: ShortText | None = None
    lead: LeadStruct | None = None
    num_items: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    delivery_category: Literal["in_store", "curbside", "home_delivery"] | None = None
    predicted_ltv: NonNegative | None = None
    #: the industry sets: only absent or null here (pydantic validates them, see above)
    travel: None = None
    vehicle: None = None


#: the struct of each pydantic model of the canonical conversion, by the model's name
STRUCTS: dict[str, type[Struct]] = {
    "ConversionIn": ConversionStruct,
    "UserIn": UserStruct,
    "ContentIn": ContentStruct,
    "ConsentIn": ConsentStruct,
    "PageIn": PageStruct,
    "LeadIn": LeadStruct,
}


def decode(data: dict[str, Any]) -> ConversionStruct | None:
    """The conversion as a struct, or None: then ask the pydantic model (see above)."""
    try:
        return msgspec.convert(data, ConversionStruct)
    except msgspec.ValidationError:
        return None


def refusal(data: dict[str, Any]) -> str | None:
    """msgspec's reason for refusing ``data`` (for the tests), or None when it accepts."""
    try:
        msgspec.convert(data, ConversionStruct)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def present(user: UserStruct) -> dict[str, Any]:
    """The fields of ``user`` that hold a value (what the identity step reads): msgspec
    leaves out the fields at their default, None for every field of the struct."""
    found: dict[str, Any] = msgspec.to_builtins(user)
    return found
