"""Industry property sets a conversion may carry: ``travel`` (hotels, flights) and ``vehicle``.

Why a module of their own: they are long, optional and read by one destination today (TikTok,
whose Events API 2.0 takes them as flat ``properties``). Keeping them here keeps
``events.py`` about the conversion itself.

Field names, types and allowed values are the sets TikTok documents for travel and vehicle
events (docs/platforms/tiktok-crm.md §3.1-3.2: TikTok's own Segment integration,
``tiktok-conversions/reportWebEvent/fields/{travel,vehicle}_fields.ts``). Where TikTok says
"number" for a count (adults, stops) we take whole numbers only; where it lists accepted date
formats we check them; everything else is checked by type. Limits on lengths and list sizes
are ours (no row should carry a megabyte of hotel names).

Validation happens here, at ingest, so a wrong type is a 422 naming ``travel.num_adults``,
never a refusal from TikTok hours later. The stored form is a plain dict of the given keys
(lists always lists), which :mod:`backchannel.destinations.tiktok` maps to the wire.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

#: travel date formats TikTok documents: YYYYMMDD, YYYY-MM-DD, YYYY-MM-DDThh:mmTZD and
#: YYYY-MM-DDThh:mm:ssTZD (TZD: ``Z`` or ``±hh:mm``, W3C date-time)
TRAVEL_DATE_FORMATS = "YYYYMMDD, YYYY-MM-DD, YYYY-MM-DDThh:mmTZD or YYYY-MM-DDThh:mm:ssTZD"
_TRAVEL_DATE = re.compile(
    r"(?P<y>\d{4})(?:(?P<m>\d{2})(?P<d>\d{2})"
    r"|-(?P<m2>\d{2})-(?P<d2>\d{2})"
    r"(?:T(?P<hh>\d{2}):(?P<mm>\d{2})(?::(?P<ss>\d{2}))?(?:Z|[+-]\d{2}:\d{2}))?)"
)
MAX_LIST = 50


def _travel_date(value: str) -> str:
    """A travel date in one of TikTok's documented formats, and a real calendar date."""
    match = _TRAVEL_DATE.fullmatch(value)
    if match is None:
        raise ValueError(f"must be a date as {TRAVEL_DATE_FORMATS}")
    parts = match.groupdict()
    try:
        date(int(parts["y"]), int(parts["m"] or parts["m2"]), int(parts["d"] or parts["d2"]))
    except ValueError:
        raise ValueError("not a calendar date") from None
    if parts["hh"] is not None and (
        int(parts["hh"]) > 23 or int(parts["mm"]) > 59 or int(parts["ss"] or 0) > 59
    ):
        raise ValueError("not a time of day")
    return value


Text = Annotated[str, Field(min_length=1, max_length=256)]
TravelDate = Annotated[str, Field(max_length=40), AfterValidator(_travel_date)]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


#: "a single string value or an array of string values" (TikTok); stored as a list
Texts = Annotated[
    Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_LIST)],
    AfterValidator(_as_list),
]
Count = Annotated[StrictInt, Field(ge=0, le=1000)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Price = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TravelIn(_Strict):
    """Hotel and flight properties (TikTok's travel set)."""

    city: Text | None = Field(default=None, description="Hotel city.")
    region: Text | None = Field(default=None, description="Hotel region.")
    country: Text | None = Field(default=None, description="Hotel country.")
    checkin_date: Text | None = Field(default=None, description="Hotel check-in date.")
    checkout_date: Text | None = Field(default=None, description="Hotel check-out date.")
    num_adults: Count | None = None
    num_children: Count | None = None
    num_infants: Count | None = None
    suggested_hotels: Texts | None = Field(default=None, description="One or a list.")
    departing_departure_date: TravelDate | None = None
    returning_departure_date: TravelDate | None = None
    departing_arrival_date: TravelDate | None = None
    returning_arrival_date: TravelDate | None = None
    origin_airport: Text | None = None
    destination_airport: Text | None = None
    destination_ids: Texts | None = Field(
        default=None, description="Destination catalog ids linked to this flight (one or a list)."
    )
    travel_class: Literal["eco", "prem", "bus", "first"] | None = None
    user_score: Number | None = Field(
        default=None, description="The relative value of this potential customer to you."
    )
    preferred_num_stops: Count | None = Field(default=None, description="0: a direct flight.")
    travel_start: TravelDate | None = None
    travel_end: TravelDate | None = None
    suggested_destinations: Texts | None = Field(
        default=None, description="Suggested destination ids (one or a list); not on Search."
    )


class MileageIn(_Strict):
    """The vehicle's mileage: 0 for a new vehicle."""

    value: Price
    unit: Literal["MI", "KM"]


def _price_range(value: list[float]) -> list[float]:
    if value[0] > value[1]:
        raise ValueError("the minimum (first) must not exceed the maximum (second)")
    return value


class VehicleIn(_Strict):
    """Vehicle properties (TikTok's automotive set)."""

    postal_code: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Where the vehicle is."
    )
    make: Text | None = None
    model: Text | None = None
    year: Annotated[StrictInt, Field(ge=1000, le=9999)] | None = Field(
        default=None, description="Model year, yyyy."
    )
    state_of_vehicle: Literal["New", "Used", "CPO"] | None = None
    mileage: MileageIn | None = None
    exterior_color: Text | None = None
    interior_color: Text | None = None
    transmission: Literal["Automatic", "Manual", "Other"] | None = None
    body_style: (
        Literal[
            "Convertible",
            "Coupe",
            "Hatchback",
            "Minivan",
            "Truck",
            "SUV",
            "Sedan",
            "Van",
            "Wagon",
            "Crossover",
            "Other",
        ]
        | None
    ) = None
    fuel_type: Literal["Diesel", "Electric", "Flex", "Gasoline", "Hybrid", "Other"] | None = None
    drivetrain: Literal["AWD", "FOUR_WD", "FWD", "RWD", "TWO_WD", "Other"] | None = None
    preferred_price_range: (
        Annotated[list[Price], Field(min_length=2, max_length=2), AfterValidator(_price_range)]
        | None
    ) = Field(default=None, description="[minimum, maximum] price.")
    trim: Text | None = None
    vin: Annotated[str, Field(min_length=1, max_length=17)] | None = Field(
        default=None, description="Vehicle identification number, at most 17 characters."
    )
    condition_of_vehicle: Literal["Excellent", "Good", "Fair", "Poor", "Other"] | None = None
    viewcontent_type: Text | None = Field(
        default=None, description="ViewContent: which kind of soft-lead landing page."
    )
    search_type: Text | None = Field(
        default=None, description="Search: another search (a dealer lookup) vs inventory."
    )
    registration_type: Text | None = Field(
        default=None, description="CompleteRegistration: which kind of registration."
    )


def stored(model: BaseModel | None) -> dict[str, Any] | None:
    """The stored form: the keys given (lists as lists), or None when nothing was given."""
    if model is None:
        return None
    data = model.model_dump(exclude_none=True)
    return data or None


def strings(data: dict[str, Any] | None, prefix: str) -> list[tuple[str, str]]:
    """Every string of a stored set with its path (``travel.suggested_hotels[1]``), for the
    control-character checks ingest applies to all text."""
    found: list[tuple[str, str]] = []
    for key, value in (data or {}).items():
        if isinstance(value, str):
            found.append((f"{prefix}.{key}", value))
        elif isinstance(value, list):
            found.extend(
                (f"{prefix}.{key}[{i}]", one) for i, one in enumerate(value) if isinstance(one, str)
            )
        elif isinstance(value, dict):
            found.extend(strings(value, f"{prefix}.{key}"))
    return found
