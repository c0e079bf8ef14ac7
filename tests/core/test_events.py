"""The canonical conversion (``backchannel.events``) and the event catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from backchannel import catalog
from backchannel.events import Normalized, derive_event_id, normalize
from backchannel.notes import InvalidConversion, Note

NOW = 1_795_600_000  # 2026-11-25T09:46:40Z
EARLIEST = 1_420_070_400  # 2015-01-01T00:00:00Z

REQUIRED_EVENTS = {
    # TikTok name -> Meta name
    "ViewContent": "ViewContent",
    "AddToCart": "AddToCart",
    "InitiateCheckout": "InitiateCheckout",
    "AddPaymentInfo": "AddPaymentInfo",
    "PlaceAnOrder": "PlaceAnOrder",
    "CompletePayment": "Purchase",
    "Purchase": "Purchase",
    "CompleteRegistration": "CompleteRegistration",
    "Subscribe": "Subscribe",
    "StartTrial": "StartTrial",
    "Lead": "Lead",
    "SubmitForm": "Lead",
    "Contact": "Contact",
    "Search": "Search",
    "AddToWishlist": "AddToWishlist",
    "Download": "Download",
}
PAYMENT_EVENTS = ["CompletePayment", "Purchase", "PlaceAnOrder", "Subscribe"]


def norm(**fields: Any) -> Normalized:
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", **fields}
    return normalize(data, now=NOW)


def rejection(**fields: Any) -> list[Note]:
    """The notes of the InvalidConversion that normalizing ``fields`` must raise."""
    with pytest.raises(InvalidConversion) as info:
        normalize(fields, now=NOW)
    return info.value.notes


def paths(notes: list[Note]) -> list[str]:
    return [n.path for n in notes]


class TestCatalog:
    @pytest.mark.parametrize(("tiktok", "meta"), sorted(REQUIRED_EVENTS.items()))
    def test_required_standard_event_and_meta_name(self, tiktok: str, meta: str) -> None:
        """Each required standard event is in the catalog with its Meta counterpart name."""
        spec = catalog.lookup(tiktok)
        assert spec is not None
        assert spec.name == tiktok
        assert spec.meta_name == meta

    @pytest.mark.parametrize("name", sorted(REQUIRED_EVENTS))
    def test_standard_event_normalizes_without_warning(self, name: str) -> None:
        """A standard name passes normalize without a custom-event warning."""
        fields: dict[str, Any] = {"event": name, "event_id": "e"}
        if name in PAYMENT_EVENTS:
            fields |= {"value": 1, "currency": "USD"}
        result = normalize(fields, now=NOW)
        assert result.conversion.event == name
        assert result.warnings == []

    def test_payment_flags(self) -> None:
        """Exactly the payment-like events require value and currency."""
        flagged = {name for name, spec in catalog.EVENTS.items() if spec.payment}
        assert flagged == set(PAYMENT_EVENTS)

    def test_lookup_is_case_sensitive(self) -> None:
        """lookup() matches exact case only; suggest() finds the intended name."""
        assert catalog.lookup("purchase") is None
        assert catalog.suggest("purchase") == "Purchase"
        assert catalog.suggest("NoSuchThing") is None


class TestEventName:
    def test_custom_event_accepted_with_warning(self) -> None:
        """An unknown name is sent as given, with an 'event' warning about optimisation."""
        result = norm(event="VideoWatched75")
        assert result.conversion.event == "VideoWatched75"
        assert paths(result.warnings) == ["event"]
        assert "custom event" in result.warnings[0].reason

    def test_miscased_standard_name_gets_did_you_mean(self) -> None:
        """'completepayment' is accepted as custom with a 'did you mean' the standard name."""
        result = norm(event="completepayment")
        assert result.conversion.event == "completepayment"
        assert paths(result.warnings) == ["event"]
        assert "did you mean" in result.warnings[0].reason
        assert "'CompletePayment'" in result.warnings[0].reason

    def test_surrounding_whitespace_is_trimmed(self) -> None:
        """' Lead ' is the standard Lead."""
        result = norm(event=" Lead ")
        assert result.conversion.event == "Lead"
        assert result.warnings == []

    @pytest.mark.parametrize("bad", ["1stVisit", "add-to-cart", "Lead!", "_x"])
    def test_malformed_name_rejected(self, bad: str) -> None:
        """Names not starting with a letter or holding punctuation are refused."""
        assert paths(rejection(event=bad)) == ["event"]


class TestPaymentEvents:
    @pytest.mark.parametrize("event", PAYMENT_EVENTS)
    def test_missing_value_rejected(self, event: str) -> None:
        """A payment-like event without value is refused with a note naming value."""
        assert paths(rejection(event=event, currency="USD")) == ["value"]

    @pytest.mark.parametrize("event", PAYMENT_EVENTS)
    def test_missing_currency_rejected(self, event: str) -> None:
        """A payment-like event without currency is refused with a note naming currency."""
        assert paths(rejection(event=event, value=10)) == ["currency"]

    @pytest.mark.parametrize("event", PAYMENT_EVENTS)
    @pytest.mark.parametrize("currency", ["XYZ", "dollars", "US", "$"])
    def test_non_iso_currency_rejected(self, event: str, currency: str) -> None:
        """A currency that is not an ISO 4217 code is refused with a note naming currency."""
        notes = rejection(event=event, value=10, currency=currency)
        assert paths(notes) == ["currency"]
        assert "ISO 4217" in notes[0].reason

    def test_missing_both_lists_both(self) -> None:
        """Every fatal problem is listed at once: value and currency."""
        assert sorted(paths(rejection(event="Purchase"))) == ["currency", "value"]

    def test_currency_uppercased(self) -> None:
        """' usd ' is stored as 'USD'."""
        result = norm(event="Purchase", value=10, currency=" usd ")
        assert result.conversion.currency == "USD"

    def test_negative_value_rejected(self) -> None:
        """A negative order value is refused."""
        assert paths(rejection(event="Purchase", value=-1, currency="USD")) == ["value"]

    def test_value_without_currency_rejected_on_any_event(self) -> None:
        """A value means nothing without a currency, even on a non-payment event."""
        assert paths(rejection(event="AddToCart", value=5)) == ["currency"]

    def test_iso_currency_off_tiktok_list_warns(self) -> None:
        """A real ISO code missing from TikTok's documented list is accepted with a warning."""
        result = norm(event="Purchase", value=5, currency="GEL")
        assert result.conversion.currency == "GEL"
        assert paths(result.warnings) == ["currency"]


class TestEventId:
    def test_formula(self) -> None:
        """event_id = '{event}-{order_id}'."""
        assert derive_event_id(1001, "CompletePayment") == "CompletePayment-1001"
        assert derive_event_id(" A-7 ", "Purchase") == "Purchase-A-7"

    def test_same_order_same_event_same_id(self) -> None:
        """Two sends of one order's event get the same derived id, number or string."""
        first = normalize(
            {"event": "CompletePayment", "order_id": 1001, "value": 5, "currency": "USD"},
            now=NOW,
        )
        second = normalize(
            {"event": "CompletePayment", "order_id": " 1001 ", "value": 5, "currency": "USD"},
            now=NOW + 60,
        )
        assert first.conversion.event_id == second.conversion.event_id == "CompletePayment-1001"
        assert first.conversion.event_id_source == "derived"
        assert first.warnings == []

    def test_same_order_different_event_different_id(self) -> None:
        """AddToCart and CompletePayment of one order get different ids."""
        cart = normalize({"event": "AddToCart", "order_id": "1001"}, now=NOW)
        paid = normalize(
            {"event": "CompletePayment", "order_id": "1001", "value": 5, "currency": "USD"},
            now=NOW,
        )
        assert cart.conversion.event_id != paid.conversion.event_id

    def test_explicit_event_id_wins(self) -> None:
        """A given event_id is used over the order-derived one."""
        result = normalize({"event": "AddToCart", "order_id": "1001", "event_id": "px-9"}, now=NOW)
        assert result.conversion.event_id == "px-9"
        assert result.conversion.event_id_source == "given"
        assert result.conversion.order_id == "1001"

    def test_numeric_event_id_becomes_string(self) -> None:
        """An integer event_id is stored as its decimal string."""
        result = normalize({"event": "Lead", "event_id": 77}, now=NOW)
        assert result.conversion.event_id == "77"

    def test_random_id_when_nothing_to_derive_from(self) -> None:
        """No event_id and no order_id: a random 32-hex id and a warning naming event_id."""
        first = normalize({"event": "Lead"}, now=NOW)
        second = normalize({"event": "Lead"}, now=NOW)
        assert re.fullmatch(r"[0-9a-f]{32}", first.conversion.event_id)
        assert first.conversion.event_id != second.conversion.event_id
        assert first.conversion.event_id_source == "random"
        assert paths(first.warnings) == ["event_id"]

    def test_blank_order_id_is_not_turned_into_a_shared_id(self) -> None:
        """A whitespace-only order_id is refused rather than deriving 'AddToCart-' for all."""
        assert paths(rejection(event="AddToCart", order_id="   ")) == ["order_id"]

    def test_blank_content_id_is_refused(self) -> None:
        """A whitespace-only content id is refused rather than sent as content_id ''."""
        notes = rejection(event="AddToCart", order_id="1", contents=[{"id": " "}])
        assert set(paths(notes)) == {"contents[0].id"}

    def test_blank_event_id_is_refused(self) -> None:
        """A whitespace-only event_id is refused: an empty id deduplicates nothing."""
        assert paths(rejection(event="Lead", event_id="  ")) == ["event_id"]


class TestEventTime:
    def test_missing_means_now(self) -> None:
        """No event_time: the receive time."""
        assert (
            normalize({"event": "Lead", "event_id": "e"}, now=NOW + 0.9).conversion.event_time
            == NOW
        )

    def test_int_seconds(self) -> None:
        """Unix seconds are kept."""
        assert norm(event_time=NOW - 3600).conversion.event_time == NOW - 3600

    def test_float_seconds_floored(self) -> None:
        """Fractional seconds are floored."""
        assert norm(event_time=NOW - 3600 + 0.999).conversion.event_time == NOW - 3600

    def test_numeric_string(self) -> None:
        """A decimal string of seconds is accepted."""
        assert norm(event_time=str(NOW - 10)).conversion.event_time == NOW - 10

    def test_iso_with_z(self) -> None:
        """ISO-8601 with Z converts to unix seconds (reference vector 4)."""
        assert norm(event_time="2024-01-08T13:52:50.212Z").conversion.event_time == 1704721970

    def test_iso_with_offset(self) -> None:
        """ISO-8601 with +02:00 is read in that offset."""
        expected = int(datetime(2026, 11, 25, 7, 0, tzinfo=UTC).timestamp())
        assert norm(event_time="2026-11-25T09:00:00+02:00").conversion.event_time == expected

    def test_naive_iso_rejected(self) -> None:
        """ISO-8601 without a timezone is ambiguous and refused."""
        notes = rejection(event="Lead", event_time="2026-11-25T09:00:00")
        assert paths(notes) == ["event_time"]
        assert "timezone" in notes[0].reason

    def test_garbage_rejected(self) -> None:
        """A non-date string is refused with an event_time note."""
        assert paths(rejection(event="Lead", event_time="yesterday")) == ["event_time"]

    def test_milliseconds_converted_with_note(self) -> None:
        """A millisecond timestamp becomes seconds, with an event_time warning."""
        result = norm(event_time=(NOW - 60) * 1000 + 789)
        assert result.conversion.event_time == NOW - 60
        assert paths(result.warnings) == ["event_time"]
        assert "milliseconds" in result.warnings[0].reason

    def test_up_to_300_seconds_ahead_accepted(self) -> None:
        """Clock skew of exactly 300 s is tolerated."""
        assert norm(event_time=NOW + 300).conversion.event_time == NOW + 300

    def test_future_beyond_skew_rejected(self) -> None:
        """More than 300 s in the future is refused."""
        notes = rejection(event="Lead", event_time=NOW + 301)
        assert paths(notes) == ["event_time"]
        assert "future" in notes[0].reason

    def test_before_2015_rejected(self) -> None:
        """A time before 2015-01-01 is refused; 2015-01-01 itself is accepted."""
        assert paths(rejection(event="Lead", event_time=EARLIEST - 1)) == ["event_time"]
        assert norm(event_time=EARLIEST).conversion.event_time == EARLIEST

    def test_errors_are_collected_together(self) -> None:
        """A bad time and a missing value are reported in one InvalidConversion."""
        notes = rejection(event="Purchase", currency="USD", event_time="nope")
        assert sorted(paths(notes)) == ["event_time", "value"]


class TestValidation:
    def test_unknown_user_field(self) -> None:
        """A misspelt user field is refused as 'unknown field' at user.emial."""
        notes = rejection(event="Lead", user={"emial": "a@b.com"})
        assert notes == [Note("user.emial", "unknown field")]

    def test_unknown_top_level_field(self) -> None:
        """A misspelt top-level field is refused at its own path."""
        assert rejection(event="Lead", valeu=3) == [Note("valeu", "unknown field")]

    def test_unknown_content_field(self) -> None:
        """An unknown key inside a line item is named contents[i].key."""
        notes = rejection(event="Lead", contents=[{"id": "a"}, {"id": "b", "sku": "x"}])
        assert notes == [Note("contents[1].sku", "unknown field")]

    def test_wrong_type_in_contents(self) -> None:
        """A non-numeric price is named contents[0].price."""
        notes = rejection(event="Lead", contents=[{"id": "a", "price": "cheap"}])
        assert paths(notes) == ["contents[0].price"]

    def test_zero_quantity_rejected(self) -> None:
        """quantity must be at least 1."""
        assert paths(rejection(event="Lead", contents=[{"id": "a", "quantity": 0}])) == [
            "contents[0].quantity"
        ]

    def test_boolean_id_rejected(self) -> None:
        """true is not an order id; the note names order_id itself."""
        assert set(paths(rejection(event="Lead", order_id=True))) == {"order_id"}

    def test_wrong_type_in_union_field_named_by_field_path(self) -> None:
        """A wrong type in a str-or-int field is named contents[0].id, not a union branch."""
        assert set(paths(rejection(event="Lead", contents=[{"id": True}]))) == {"contents[0].id"}

    def test_wrong_event_time_type_named_event_time(self) -> None:
        """event_time given as a list is named event_time, without pydantic's type tags."""
        assert set(paths(rejection(event="Lead", event_time=[1]))) == {"event_time"}

    def test_wrong_type_in_identifier_list_uses_field_paths(self) -> None:
        """A bad item in user.email is reported with dotted/[i] field paths only."""
        notes = rejection(event="Lead", user={"email": ["a@b.com", {"x": 1}]})
        assert notes
        for note in notes:
            assert note.path in ("user.email", "user.email[1]"), note.path

    def test_not_an_object(self) -> None:
        """A JSON array body is refused as a whole."""
        with pytest.raises(InvalidConversion) as info:
            normalize([{"event": "Lead"}], now=NOW)
        assert paths(info.value.notes) == ["(body)"]

    def test_missing_event(self) -> None:
        """event is required."""
        assert paths(rejection(user={})) == ["event"]

    def test_invalid_source(self) -> None:
        """source must be one of web, app, offline, crm."""
        assert paths(rejection(event="Lead", source="email")) == ["source"]


class TestClickIdsFromPage:
    def test_ttclid_from_page_url(self) -> None:
        """ttclid is read from page.url when the user object lacks it; the URL is kept."""
        url = "https://shop.example/p?utm_source=tt&ttclid=E.C.P.abc123&x=1"
        result = norm(page={"url": url})
        assert result.conversion.user.ttclid == "E.C.P.abc123"
        assert result.conversion.page_url == url

    def test_explicit_ttclid_wins(self) -> None:
        """user.ttclid, when given, is not replaced by the URL's."""
        result = norm(user={"ttclid": "given"}, page={"url": "https://s.example/?ttclid=url"})
        assert result.conversion.user.ttclid == "given"

    def test_fbclid_from_page_url_percent_decoded(self) -> None:
        """fbclid is read from page.url and percent-decoded."""
        result = norm(page={"url": "https://s.example/?fbclid=IwAR%2DabC#top"})
        assert result.conversion.user.fbclid == "IwAR-abC"

    def test_lookalike_parameter_ignored(self) -> None:
        """'xttclid=' is not the ttclid parameter."""
        result = norm(page={"url": "https://s.example/?xttclid=nope"})
        assert result.conversion.user.ttclid is None


class TestStoredShape:
    def test_round_trip_through_dict(self) -> None:
        """Conversion.to_dict / from_dict preserve the conversion exactly."""
        from backchannel.events import Conversion

        result = normalize(
            {
                "event": "CompletePayment",
                "order_id": 5,
                "value": 12.5,
                "currency": "EUR",
                "contents": [{"id": 9, "quantity": 2, "price": 6.25}],
                "user": {"email": "a@b.co", "phone": "+49301234567", "ip": "8.8.8.8"},
            },
            now=NOW,
        )
        conversion = result.conversion
        assert Conversion.from_dict(conversion.to_dict()) == conversion

    def test_default_content_type_for_product_events(self) -> None:
        """CompletePayment with contents and no content_type gets 'product'."""
        result = normalize(
            {
                "event": "CompletePayment",
                "order_id": 5,
                "value": 1,
                "currency": "USD",
                "contents": [{"id": "a"}],
            },
            now=NOW,
        )
        assert result.conversion.content_type == "product"

    def test_no_default_content_type_without_contents(self) -> None:
        """No contents, no content_type invented."""
        result = norm(event="Purchase", value=1, currency="USD")
        assert result.conversion.content_type is None


class TestInputHardening:
    """Issue 18 items 2 and 11: input the API used to take in a misleading way."""

    def test_boolean_value_refused(self) -> None:
        """``"value": true`` is not the number 1: refused at value."""
        notes = rejection(event="Purchase", event_id="e", value=True, currency="USD")
        assert paths(notes) == ["value"]
        assert "number" in notes[0].reason

    def test_boolean_event_time_refused(self) -> None:
        """``"event_time": true`` is not 1 s after the epoch: refused at event_time."""
        notes = rejection(event="Lead", event_id="e", event_time=True)
        assert paths(notes) == ["event_time"]
        assert "number" in notes[0].reason

    def test_boolean_refusals_join_type_errors(self) -> None:
        """A boolean value is listed with the other bad fields of the same conversion."""
        notes = rejection(event="Lead", event_id="e", value=False, currency="USD", source="moon")
        assert sorted(paths(notes)) == ["source", "value"]

    def test_microseconds_named_as_such(self) -> None:
        """A microsecond timestamp is refused saying so, not 'in the future'."""
        notes = rejection(event="Lead", event_id="e", event_time=(NOW - 60) * 1_000_000)
        assert paths(notes) == ["event_time"]
        assert "looks like microseconds; send unix seconds" in notes[0].reason

    def test_nanoseconds_named_as_such(self) -> None:
        """A nanosecond timestamp is refused saying so."""
        notes = rejection(event="Lead", event_id="e", event_time=(NOW - 60) * 10**9)
        assert "looks like nanoseconds; send unix seconds" in notes[0].reason

    @pytest.mark.parametrize("field", ["url", "referrer"])
    @pytest.mark.parametrize(
        "bad", ["javascript:alert(1)", "data:text/html,x", "shop.example/thanks", "ftp://x/y"]
    )
    def test_page_urls_must_be_http(self, field: str, bad: str) -> None:
        """page.url and page.referrer must be http(s) URLs, as collect requires."""
        notes = rejection(event="Lead", event_id="e", page={field: bad})
        assert notes == [Note(f"page.{field}", "must be an http(s) URL")]

    @pytest.mark.parametrize("blank", ["", "   ", "\t"])
    def test_blank_test_event_code_is_absent(self, blank: str) -> None:
        """A blank test_event_code is no test code: the conversion is production."""
        assert norm(test_event_code=blank).conversion.test_event_code is None

    def test_test_event_code_trimmed(self) -> None:
        """A test code with stray spaces is trimmed."""
        assert norm(test_event_code=" TEST123 ").conversion.test_event_code == "TEST123"

    @pytest.mark.parametrize(
        "field", ["event_id", "order_id", "session_id", "test_event_code", "shop_id"]
    )
    @pytest.mark.parametrize("char", ["\x00", "\x1f", "\n", "\x7f"])
    def test_control_characters_refused_in_ids(self, field: str, char: str) -> None:
        """U+0000 and other control characters in an id are a 422 naming the field."""
        notes = rejection(event="Lead", **{field: f"abc{char}def"})
        assert paths(notes) == [field]
        assert "control character" in notes[0].reason

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({"contents": [{"id": "S\x00"}]}, "contents[0].id"),
            ({"user": {"ttclid": "T\x00"}}, "user.ttclid"),
            ({"page": {"url": "https://shop.example/\x00"}}, "page.url"),
            ({"description": "nul \x00 inside"}, "description"),
            ({"contents": [{"id": "S", "name": "Tee\x00"}]}, "contents[0].name"),
        ],
    )
    def test_control_characters_refused_elsewhere(self, data: dict[str, Any], path: str) -> None:
        """Nested ids, click ids, URLs and free text refuse U+0000 too, by path."""
        notes = rejection(event="Lead", event_id="e", **data)
        assert path in paths(notes)

    def test_tab_in_free_text_is_fine(self) -> None:
        """Free text may hold tabs and newlines; only NUL is refused there."""
        assert norm(description="line one\nline\ttwo").conversion.description is not None
