"""The emulators check the fields issue 16 added as strictly as the rest: TikTok's ``lead``
object and its documented ``properties`` (types, enums, date formats, unknown keys), and
Meta's ``custom_data`` counterparts. Each test breaks one thing in a body that passes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from backchannel.destinations import meta as meta_destination
from backchannel.destinations import tiktok as tiktok_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from support.server import ServerThread

from .helpers import (
    META_PIXEL,
    START,
    TIKTOK_PIXEL,
    TOKEN,
    listed,
    meta_event,
    post_meta,
    post_tiktok,
    tiktok_body,
    tiktok_event,
)
from .test_meta import invalid as meta_invalid
from .test_tiktok import invalid_row

CRM_SET = "CRM-EVENT-SET-1"


def crm_body(**lead: Any) -> dict[str, Any]:
    """A crm request whose one event carries ``lead`` (as given)."""
    event = tiktok_event(lead=lead)
    return tiktok_body([event], event_source="crm", event_source_id=CRM_SET)


def with_properties(**properties: Any) -> dict[str, Any]:
    event = tiktok_event()
    event["properties"].update(properties)
    return tiktok_body([event])


class TestLead:
    def test_lead_object_is_accepted(self, http: httpx.Client) -> None:
        """{lead_id, lead_event_source} on a crm event: accepted."""
        body = crm_body(lead_id="7301234567890123456", lead_event_source="HubSpot")
        assert post_tiktok(http, body).json()["code"] == 0

    def test_lead_id_alone_is_accepted(self, http: httpx.Client) -> None:
        """lead_event_source is optional."""
        assert post_tiktok(http, crm_body(lead_id="L-1")).json()["code"] == 0

    @pytest.mark.parametrize(
        ("lead", "path", "reason"),
        [
            ({}, "lead.lead_id", "Missing data for required field"),
            ({"lead_id": None}, "lead.lead_id", "Field may not be null"),
            ({"lead_id": 7301234567890123456}, "lead.lead_id", "Not a valid string"),
            ({"lead_id": " "}, "lead.lead_id", "Shorter than minimum length 1"),
            ({"lead_id": "L-1", "lead_event_source": 3}, "lead.lead_event_source", "Not a valid"),
            ({"lead_id": "L-1", "lead_source": "HubSpot"}, "lead.lead_source", "Unknown field"),
            ({"id": "L-1"}, "lead.id", "Unknown field"),
        ],
    )
    def test_lead_shape_is_checked(
        self, http: httpx.Client, lead: dict[str, Any], path: str, reason: str
    ) -> None:
        """Each wrong lead shape is a 40002 naming the row and the lead field."""
        message = invalid_row(post_tiktok(http, crm_body(**lead)), 0, path)
        assert reason in message

    def test_lead_must_be_an_object(self, http: httpx.Client) -> None:
        """lead as a string is refused."""
        event = tiktok_event(lead="L-1")
        body = tiktok_body([event], event_source="crm", event_source_id=CRM_SET)
        invalid_row(post_tiktok(http, body), 0, "lead")


class TestProperties:
    def test_unknown_property_is_refused(self, http: httpx.Client) -> None:
        """A misspelt key (num_item) is an unknown field, as unknown item and user keys are."""
        message = invalid_row(
            post_tiktok(http, with_properties(num_item=3)), 0, "properties.num_item"
        )
        assert message == "Batch.0.properties.num_item: Unknown field"

    def test_null_property_is_refused(self, http: httpx.Client) -> None:
        """A documented key sent as null is refused."""
        message = invalid_row(
            post_tiktok(http, with_properties(num_items=None)), 0, "properties.num_items"
        )
        assert message.endswith("Field may not be null")

    @pytest.mark.parametrize(
        ("properties", "path", "reason"),
        [
            ({"num_items": "3"}, "properties.num_items", "Not a valid number"),
            ({"num_items": True}, "properties.num_items", "Not a valid number"),
            ({"predicted_ltv": "99"}, "properties.predicted_ltv", "Not a valid number"),
            ({"search_string": 5}, "properties.search_string", "Not a valid string"),
            ({"query": ["a"]}, "properties.query", "Not a valid string"),
            ({"order_id": 1001}, "properties.order_id", "Not a valid string"),
            ({"delivery_category": "pickup"}, "properties.delivery_category", "in_store"),
            ({"delivery_category": 1}, "properties.delivery_category", "Not a valid string"),
            ({"num_adults": "2"}, "properties.num_adults", "Not a valid number"),
            ({"preferred_num_stops": 1.5}, "properties.preferred_num_stops", "integer"),
            ({"travel_class": "economy"}, "properties.travel_class", "eco, prem, bus, first"),
            ({"travel_start": "June 1"}, "properties.travel_start", "Not a valid date"),
            (
                {"departing_arrival_date": "2026-06-01 10:00"},
                "properties.departing_arrival_date",
                "Not a valid date",
            ),
            ({"suggested_hotels": "h1"}, "properties.suggested_hotels", "Not a valid list"),
            ({"destination_ids": ["a", 2]}, "properties.destination_ids.1", "Not a valid"),
            ({"year": "2025"}, "properties.year", "Not a valid number"),
            ({"state_of_vehicle": "new"}, "properties.state_of_vehicle", "New, Used, CPO"),
            ({"body_style": "suv"}, "properties.body_style", "Must be one of"),
            ({"fuel_type": "Petrol"}, "properties.fuel_type", "Must be one of"),
            ({"drivetrain": "4WD"}, "properties.drivetrain", "Must be one of"),
            ({"transmission": "CVT"}, "properties.transmission", "Must be one of"),
            ({"condition_of_vehicle": "Mint"}, "properties.condition_of_vehicle", "Must be one"),
            ({"vin": "Y" * 18}, "properties.vin", "Longer than maximum length 17"),
            ({"mileage": 12345}, "properties.mileage", "Invalid input type"),
            ({"mileage": {"value": 1}}, "properties.mileage.unit", "Missing data"),
            ({"mileage": {"value": "1", "unit": "KM"}}, "properties.mileage.value", "number"),
            ({"mileage": {"value": 1, "unit": "km"}}, "properties.mileage.unit", "MI, KM"),
            ({"mileage": {"value": 1, "unit": "KM", "x": 1}}, "properties.mileage.x", "Unknown"),
            ({"preferred_price_range": [1]}, "properties.preferred_price_range", "two numbers"),
            ({"preferred_price_range": [1, "2"]}, "properties.preferred_price_range.1", "number"),
        ],
    )
    def test_documented_types_are_checked(
        self, http: httpx.Client, properties: dict[str, Any], path: str, reason: str
    ) -> None:
        """Each documented property with a wrong type or value is a 40002 naming it."""
        message = invalid_row(post_tiktok(http, with_properties(**properties)), 0, path)
        assert reason in message

    def test_documented_values_pass(self, http: httpx.Client) -> None:
        """Every documented date form, an integer num_items and each enum's edge values pass."""
        body = with_properties(
            num_items=2,
            delivery_category="home_delivery",
            predicted_ltv=10,
            departing_departure_date="20260601",
            returning_departure_date="2026-06-05",
            departing_arrival_date="2026-06-01T13:40+01:00",
            returning_arrival_date="2026-06-05T22:05:00Z",
            travel_class="first",
            drivetrain="FOUR_WD",
            mileage={"value": 0, "unit": "MI"},
            preferred_price_range=[1000, 2000.5],
        )
        assert post_tiktok(http, body).json()["code"] == 0


class TestOurBuilder:
    def test_every_new_field_from_our_builder_is_accepted(
        self, http: httpx.Client, server: ServerThread
    ) -> None:
        """A web event with every new property, and a crm lead event, built by tiktok.prepare,
        are accepted (DELIVERED) and stored exactly as sent."""
        web = normalize(
            {
                "event": "Purchase",
                "order_id": "T-1",
                "value": 980,
                "currency": "EUR",
                "query": "lisbon",
                "num_items": 2,
                "delivery_category": "in_store",
                "predicted_ltv": 1200.5,
                "travel": {
                    "city": "Lisbon",
                    "num_adults": 2,
                    "suggested_hotels": "hotel-17",
                    "departing_departure_date": "2026-06-01",
                    "travel_class": "bus",
                    "preferred_num_stops": 0,
                },
                "vehicle": {
                    "make": "Volvo",
                    "year": 2025,
                    "mileage": {"value": 10, "unit": "KM"},
                    "preferred_price_range": [30000, 40000],
                    "vin": "YV1XZK9V0R2000001",
                },
            },
            now=START,
        ).conversion
        crm = normalize(
            {
                "event": "Qualified",
                "event_id": "q-1",
                "source": "crm",
                "lead": {"id": "7301234567890123456", "source": "HubSpot"},
            },
            now=START,
        ).conversion
        for conversion, source_ids in ((web, {}), (crm, {"crm": CRM_SET})):
            target = Target(
                base_url=server.url, pixel=TIKTOK_PIXEL, token=TOKEN, source_ids=source_ids
            )
            prepared = tiktok_destination.prepare([conversion], target)
            response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
            outcome = tiktok_destination.classify(
                response.status_code, response.headers, response.content
            )
            assert outcome.verdict is Verdict.DELIVERED, response.json()
        stored = [
            {k: v for k, v in e.items() if not k.startswith("_")}
            for e in listed(http, "tiktok")["events"]
        ]
        assert {"lead_id": "7301234567890123456", "lead_event_source": "HubSpot"} in [
            e.get("lead") for e in stored
        ]
        assert any(e["properties"].get("vin") == "YV1XZK9V0R2000001" for e in stored)


class TestMetaCustomData:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("num_items", "3"),
            ("num_items", 2.5),
            ("predicted_ltv", "99"),
            ("search_string", 7),
            ("delivery_category", "pickup"),
        ],
    )
    def test_types_are_checked(self, http: httpx.Client, field: str, value: Any) -> None:
        """Meta's documented custom_data types: a wrong one is refused naming the field."""
        event = meta_event()
        event["custom_data"][field] = value
        meta_invalid(post_meta(http, [event]), f"data[0].custom_data.{field}")

    def test_our_builder_output_is_accepted(self, http: httpx.Client, server: ServerThread) -> None:
        """meta.prepare's body with num_items, delivery_category, predicted_ltv passes."""
        conversion = normalize(
            {
                "event": "Purchase",
                "order_id": "T-2",
                "value": 30,
                "currency": "USD",
                "num_items": 4,
                "delivery_category": "curbside",
                "predicted_ltv": 310,
                "user": {"email": "a@example.com", "user_agent": "Mozilla/5.0"},
                "page": {"url": "https://shop.example/thanks"},
            },
            now=START,
        ).conversion
        target = Target(base_url=server.url, pixel=META_PIXEL, token=TOKEN)
        prepared = meta_destination.prepare([conversion], target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = meta_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.DELIVERED, response.text
