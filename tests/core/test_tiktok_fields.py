"""The TikTok fields issue 16 added: the CRM ``lead``, ``search_string``, ``num_items``,
``delivery_category``, ``predicted_ltv`` and the travel and vehicle property sets.

Golden bodies are written out by hand from docs/platforms/tiktok-crm.md (TikTok's Segment
integration and help centre), digests computed here with ``hashlib``. Also: the canonical
validation that stands before them (a 422 naming the field), the stored round trip, Meta's
documented counterparts, and the destinations that must ignore them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from backchannel.destinations import ga4, meta, tiktok
from backchannel.destinations import google_ads as gads
from backchannel.destinations.base import Target
from backchannel.events import Conversion, Lead, normalize
from backchannel.notes import InvalidConversion

NOW = 1_795_600_000
TARGET = Target(
    base_url="https://business-api.tiktok.com",
    pixel="CPIXEL123",
    token="tt-secret",
    source_ids={"crm": "CRMSET9"},
)
META = Target(base_url="https://graph.facebook.com", pixel="123456789", token="EAAB-secret")

TRAVEL = {
    "city": "Lisbon",
    "region": "Lisboa",
    "country": "PT",
    "checkin_date": "2026-06-01",
    "checkout_date": "2026-06-05",
    "num_adults": 2,
    "num_children": 1,
    "num_infants": 0,
    "suggested_hotels": ["hotel-17", "hotel-23"],
    "departing_departure_date": "20260601",
    "returning_departure_date": "2026-06-05",
    "departing_arrival_date": "2026-06-01T13:40+01:00",
    "returning_arrival_date": "2026-06-05T22:05:00Z",
    "origin_airport": "BER",
    "destination_airport": "LIS",
    "destination_ids": "dest-lisbon",
    "travel_class": "eco",
    "user_score": 7.5,
    "preferred_num_stops": 0,
    "travel_start": "2026-06-01",
    "travel_end": "2026-06-05",
    "suggested_destinations": ["dest-porto"],
}
VEHICLE = {
    "postal_code": "94035",
    "make": "Volvo",
    "model": "EX30",
    "year": 2025,
    "state_of_vehicle": "Used",
    "mileage": {"value": 12345, "unit": "KM"},
    "exterior_color": "Moss Yellow",
    "interior_color": "Black",
    "transmission": "Automatic",
    "body_style": "SUV",
    "fuel_type": "Electric",
    "drivetrain": "AWD",
    "preferred_price_range": [30000, 40000],
    "trim": "Ultra",
    "vin": "YV1XZK9V0R2000001",
    "condition_of_vehicle": "Excellent",
    "viewcontent_type": "test-drive",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", **fields}
    return normalize(data, now=NOW).conversion


def item(**fields: Any) -> dict[str, Any]:
    body = tiktok.build_body([conv(**fields)], TARGET)
    return body["data"][0]  # type: ignore[no-any-return]


def refused_paths(**fields: Any) -> list[str]:
    with pytest.raises(InvalidConversion) as caught:
        conv(**fields)
    return [n.path for n in caught.value.notes]


class TestCrmLead:
    def test_crm_lead_stage_body(self) -> None:
        """A CRM lead stage sent back for lead quality optimisation: this exact request."""
        conversion = conv(
            event="SubmitApplication",
            event_id="application-L-1001",
            event_time=NOW - 3600,
            source="crm",
            value=250,
            currency="EUR",
            lead={"id": "7301234567890123456", "source": "HubSpot"},
            user={"email": "Lead@Example.com", "phone": "+49 30 1234567"},
        )
        assert tiktok.build_body([conversion], TARGET) == {
            "event_source": "crm",
            "event_source_id": "CRMSET9",
            "data": [
                {
                    "event": "SubmitApplication",
                    "event_time": NOW - 3600,
                    "event_id": "application-L-1001",
                    "user": {"email": sha("lead@example.com"), "phone": sha("+49301234567")},
                    "properties": {"value": 250.0, "currency": "EUR"},
                    "limited_data_use": False,
                    "lead": {
                        "lead_id": "7301234567890123456",
                        "lead_event_source": "HubSpot",
                    },
                }
            ],
        }

    def test_lead_without_source_sends_lead_id_only(self) -> None:
        """No lead.source: the lead object holds lead_id alone (no null key)."""
        assert item(source="crm", lead={"id": "L-9"})["lead"] == {"lead_id": "L-9"}

    def test_numeric_lead_id_is_sent_as_a_string(self) -> None:
        """A lead id given as a number goes as its decimal string."""
        sent = item(source="crm", lead={"id": 7301234567890123456})
        assert sent["lead"] == {"lead_id": "7301234567890123456"}

    def test_lead_on_a_web_event_is_sent_too(self) -> None:
        """The lead id is a signal for Pixel and CRM postback alike (TikTok help): a web
        event that has one carries it (our documented choice; Segment gates it on crm)."""
        sent = item(lead={"id": "L-9", "source": "Stripe"}, page={"url": "https://s.example/"})
        assert sent["lead"] == {"lead_id": "L-9", "lead_event_source": "Stripe"}

    def test_no_lead_no_key(self) -> None:
        """Without a lead there is no lead key at all."""
        assert "lead" not in item(source="crm")

    def test_custom_crm_stage_gets_the_mapping_note(self) -> None:
        """A custom CRM stage name is accepted with a note about Events Manager mapping, not
        the web note that TikTok never optimises on custom events."""
        result = normalize(
            {"event": "Qualified", "event_id": "q-1", "source": "crm", "lead": {"id": "L-1"}},
            now=NOW,
        )
        [note] = result.warnings
        assert note.path == "event"
        assert "map it to a standard event in TikTok Events Manager" in note.reason
        web = normalize({"event": "Qualified", "event_id": "q-1"}, now=NOW).warnings
        assert "does not optimise" in web[0].reason

    def test_crm_event_with_nothing_to_match_gets_a_note(self) -> None:
        """A crm event with no lead id, email or phone draws a 'lead' note; one with a lead
        id does not."""
        bare = tiktok.notes(conv(source="crm"), TARGET, NOW)
        assert [n.path for n in bare] == ["lead"]
        assert tiktok.notes(conv(source="crm", lead={"id": "L-1"}), TARGET, NOW) == []


class TestProperties:
    def test_search_sends_query_and_search_string(self) -> None:
        """Search text goes as query and as search_string (the help centre's name)."""
        assert item(event="Search", query="red shoes")["properties"] == {
            "query": "red shoes",
            "search_string": "red shoes",
        }

    def test_checkout_and_delivery_fields(self) -> None:
        """num_items, delivery_category and predicted_ltv are sent under TikTok's names."""
        props = item(
            event="InitiateCheckout",
            value=40,
            currency="USD",
            num_items=3,
            delivery_category="curbside",
            predicted_ltv=420.5,
        )["properties"]
        assert props == {
            "value": 40.0,
            "currency": "USD",
            "num_items": 3,
            "delivery_category": "curbside",
            "predicted_ltv": 420.5,
        }

    @pytest.mark.parametrize("category", ["in_store", "curbside", "home_delivery"])
    def test_every_documented_delivery_category(self, category: str) -> None:
        """The three documented values pass and are sent as given."""
        assert item(delivery_category=category)["properties"] == {"delivery_category": category}

    def test_travel_set_is_passed_through_flat(self) -> None:
        """Every travel property lands in properties under its documented key; a single
        destination id is sent as a one-element list."""
        props = item(event="Purchase", value=980, currency="EUR", travel=TRAVEL)["properties"]
        assert props == {
            "value": 980.0,
            "currency": "EUR",
            "city": "Lisbon",
            "region": "Lisboa",
            "country": "PT",
            "checkin_date": "2026-06-01",
            "checkout_date": "2026-06-05",
            "num_adults": 2,
            "num_children": 1,
            "num_infants": 0,
            "suggested_hotels": ["hotel-17", "hotel-23"],
            "departing_departure_date": "20260601",
            "returning_departure_date": "2026-06-05",
            "departing_arrival_date": "2026-06-01T13:40+01:00",
            "returning_arrival_date": "2026-06-05T22:05:00Z",
            "origin_airport": "BER",
            "destination_airport": "LIS",
            "destination_ids": ["dest-lisbon"],
            "travel_class": "eco",
            "user_score": 7.5,
            "preferred_num_stops": 0,
            "travel_start": "2026-06-01",
            "travel_end": "2026-06-05",
            "suggested_destinations": ["dest-porto"],
        }

    def test_vehicle_set_is_passed_through_flat(self) -> None:
        """Every vehicle property lands in properties, mileage as {value, unit} and the price
        range as [min, max]."""
        props = item(event="ViewContent", vehicle=VEHICLE)["properties"]
        assert props == {
            "postal_code": "94035",
            "make": "Volvo",
            "model": "EX30",
            "year": 2025,
            "state_of_vehicle": "Used",
            "mileage": {"value": 12345, "unit": "KM"},
            "exterior_color": "Moss Yellow",
            "interior_color": "Black",
            "transmission": "Automatic",
            "body_style": "SUV",
            "fuel_type": "Electric",
            "drivetrain": "AWD",
            "preferred_price_range": [30000, 40000],
            "trim": "Ultra",
            "vin": "YV1XZK9V0R2000001",
            "condition_of_vehicle": "Excellent",
            "viewcontent_type": "test-drive",
        }

    def test_travel_on_a_non_web_event_is_sent_with_a_note(self) -> None:
        """Travel properties on a crm event are sent as given, with a dry-run note."""
        c = conv(source="crm", lead={"id": "L-1"}, travel={"num_adults": 2})
        assert tiktok.event(c)["properties"] == {"num_adults": 2}
        assert [n.path for n in tiktok.notes(c, TARGET, NOW)] == ["travel"]

    def test_nothing_new_when_nothing_given(self) -> None:
        """A plain Lead sends none of the new keys."""
        sent = item()
        assert sent["properties"] == {}
        assert "lead" not in sent


class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"num_items": "3"}, "num_items"),
            ({"num_items": True}, "num_items"),
            ({"num_items": 2.5}, "num_items"),
            ({"num_items": -1}, "num_items"),
            ({"delivery_category": "pickup"}, "delivery_category"),
            ({"predicted_ltv": "100"}, "predicted_ltv"),
            ({"predicted_ltv": False}, "predicted_ltv"),
            ({"predicted_ltv": -5}, "predicted_ltv"),
            ({"lead": {}}, "lead.id"),
            ({"lead": {"id": "  "}}, "lead.id"),
            ({"lead": {"id": "L-1", "crm": "HubSpot"}}, "lead.crm"),
            ({"lead": {"id": "L-1", "source": 7}}, "lead.source"),
            ({"lead": "L-1"}, "lead"),
            ({"lead": {"id": "L\x001"}}, "lead.id"),
            ({"travel": {"num_adults": "2"}}, "travel.num_adults"),
            ({"travel": {"num_adults": 1.5}}, "travel.num_adults"),
            ({"travel": {"travel_class": "economy"}}, "travel.travel_class"),
            ({"travel": {"departing_departure_date": "June 1"}}, "travel.departing_departure_date"),
            ({"travel": {"travel_start": "2026-02-30"}}, "travel.travel_start"),
            ({"travel": {"travel_end": "2026-06-05T25:00Z"}}, "travel.travel_end"),
            ({"travel": {"suggested_hotels": 5}}, "travel.suggested_hotels"),
            ({"travel": {"suggested_hotels": []}}, "travel.suggested_hotels"),
            ({"travel": {"user_score": "high"}}, "travel.user_score"),
            ({"travel": {"hotel": "x"}}, "travel.hotel"),
            ({"travel": {"city": "Lis\x00bon"}}, "travel.city"),
            ({"vehicle": {"year": "2025"}}, "vehicle.year"),
            ({"vehicle": {"state_of_vehicle": "new"}}, "vehicle.state_of_vehicle"),
            ({"vehicle": {"mileage": {"value": 10}}}, "vehicle.mileage.unit"),
            ({"vehicle": {"mileage": {"value": "10", "unit": "KM"}}}, "vehicle.mileage.value"),
            ({"vehicle": {"preferred_price_range": [1]}}, "vehicle.preferred_price_range"),
            ({"vehicle": {"preferred_price_range": [9, 1]}}, "vehicle.preferred_price_range"),
            ({"vehicle": {"vin": "Y" * 18}}, "vehicle.vin"),
            ({"vehicle": {"drivetrain": "4WD"}}, "vehicle.drivetrain"),
        ],
    )
    def test_wrong_type_or_value_is_refused_naming_the_field(
        self, fields: dict[str, Any], path: str
    ) -> None:
        """Each bad new field is refused (a 422 at the API) with exactly its own path."""
        assert refused_paths(**fields) == [path]

    def test_reasons_say_what_is_wrong(self) -> None:
        """The reasons are readable: the allowed values, the accepted date formats."""
        with pytest.raises(InvalidConversion) as caught:
            conv(delivery_category="pickup", travel={"travel_start": "June"})
        reasons = {n.path: n.reason for n in caught.value.notes}
        assert "'in_store', 'curbside' or 'home_delivery'" in reasons["delivery_category"]
        assert "YYYY-MM-DDThh:mm:ssTZD" in reasons["travel.travel_start"]


class TestStoredShape:
    def test_round_trip(self) -> None:
        """to_dict / from_dict keep the lead, the numbers and both sets exactly."""
        c = conv(
            source="crm",
            lead={"id": "L-1", "source": "HubSpot"},
            num_items=2,
            delivery_category="home_delivery",
            predicted_ltv=99.5,
            travel=TRAVEL,
            vehicle=VEHICLE,
        )
        assert c.lead == Lead("L-1", "HubSpot")
        assert Conversion.from_dict(c.to_dict()) == c

    def test_rows_stored_before_these_fields_still_load(self) -> None:
        """A payload from the previous release (none of the six keys) loads with them empty."""
        stored = conv().to_dict()
        for key in (
            "lead",
            "num_items",
            "delivery_category",
            "predicted_ltv",
            "travel",
            "vehicle",
        ):
            del stored[key]
        loaded = Conversion.from_dict(stored)
        assert loaded == conv()
        assert loaded.lead is None
        assert loaded.travel is None


class TestOtherDestinations:
    def test_meta_sends_its_documented_counterparts(self) -> None:
        """Meta: custom_data num_items (the given one, not the contents' sum),
        delivery_category, predicted_ltv and search_string; no lead, travel or vehicle."""
        c = conv(
            event="Purchase",
            source="crm",
            value=30,
            currency="USD",
            contents=[{"id": "A", "quantity": 1}],
            num_items=4,
            delivery_category="in_store",
            predicted_ltv=310,
            query="tents",
            lead={"id": "L-1", "source": "HubSpot"},
            travel={"num_adults": 2},
            vehicle={"make": "Volvo"},
        )
        sent = meta.build_body([c], META)["data"][0]
        assert sent["custom_data"] == {
            "value": 30.0,
            "currency": "usd",
            "contents": [{"id": "A", "quantity": 1}],
            "content_ids": ["A"],
            "num_items": 4,
            "content_type": "product",
            "search_string": "tents",
            "delivery_category": "in_store",
            "predicted_ltv": 310.0,
        }
        assert "lead_id" not in sent["user_data"]
        assert "L-1" not in str(sent)

    def test_google_destinations_ignore_the_new_fields(self) -> None:
        """GA4 and Google Ads bodies are the same with and without the new fields."""
        base = conv(
            event="Purchase",
            value=30,
            currency="USD",
            user={"ga_client_id": "GA1.1.1.2", "gclid": "Cj0-click", "email": "a@b.co"},
        )
        rich = dataclasses.replace(
            base,
            lead=Lead("L-1", "HubSpot"),
            num_items=4,
            delivery_category="in_store",
            predicted_ltv=310.0,
            travel={"num_adults": 2},
            vehicle={"make": "Volvo"},
        )
        ga = Target(base_url="https://www.google-analytics.com", pixel="G-TEST1234", token="s")
        assert ga4.build_body([rich], ga) == ga4.build_body([base], ga)
        ads = Target(
            base_url="https://googleads.googleapis.com",
            pixel="1234567890",
            token="dev",
            settings={"conversion_actions": "Purchase=customers/1234567890/conversionActions/1"},
            access_token="ya29.x",
        )
        assert gads.build_body([rich], ads) == gads.build_body([base], ads)
