"""GA4 Measurement Protocol builder and response classifier (docs/platforms/ga4.md).

Golden bodies are literal JSON; their hashes are hashlib over literal strings written here,
never our normalizer's or builder's output.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from backchannel.destinations import ga4
from backchannel.destinations.base import Target, Verdict
from backchannel.events import Conversion, normalize
from backchannel.notes import Note
from backchannel.quality import LABELS

NOW = 1_795_600_000
WHEN = NOW - 3600
SECRET = "Mp-Secret_0123456789"
TARGET = Target(base_url="https://www.google-analytics.com", pixel="G-TEST1234", token=SECRET)
CLIENT = "GA1.1.123456789.1700000000"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    user = {"ga_client_id": CLIENT, **fields.pop("user", {})}
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", "event_time": WHEN, **fields}
    data["user"] = {k: v for k, v in user.items() if v is not None}
    return normalize(data, now=NOW).conversion


def body(*conversions: Conversion) -> dict[str, Any]:
    return ga4.build_body(list(conversions), TARGET)


class TestGoldenBodies:
    def test_purchase(self) -> None:
        """A full purchase: identifiers once per request, the event with its items."""
        conversion = conv(
            event="CompletePayment",
            event_id=None,  # derived from the order: CompletePayment-1001
            order_id=1001,
            value=59.9,
            currency="USD",
            contents=[
                {
                    "id": "SKU-1",
                    "name": "Tee",
                    "brand": "Acme",
                    "category": "Shirts",
                    "quantity": 2,
                    "price": 29.95,
                }
            ],
            user={
                "email": " Jo.Hn.Doe@GMail.com ",
                "phone": "+1 (415) 555-2671",
                "external_id": "Cust-42",
            },
            consent={"ad_user_data": "granted", "ad_personalization": "denied"},
        )
        assert body(conversion) == {
            "client_id": "123456789.1700000000",
            "user_id": sha("cust-42"),
            "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
            "user_data": {
                "sha256_email_address": [sha("johndoe@gmail.com")],
                "sha256_phone_number": [sha("+14155552671")],
            },
            "events": [
                {
                    "name": "purchase",
                    "params": {
                        "transaction_id": "1001",
                        "value": 59.9,
                        "currency": "USD",
                        "items": [
                            {
                                "item_id": "SKU-1",
                                "item_name": "Tee",
                                "item_brand": "Acme",
                                "item_category": "Shirts",
                                "quantity": 2,
                                "price": 29.95,
                            }
                        ],
                        "event_id": "CompletePayment-1001",
                    },
                    "timestamp_micros": 1_795_596_400_000_000,
                }
            ],
        }

    def test_a_non_gmail_address_keeps_its_dots(self) -> None:
        """Google's rule removes dots only at gmail.com and googlemail.com (ga4.md §5)."""
        data = body(conv(user={"email": "Jo.Hn@Example.com", "external_id": "c-1"}))["user_data"]
        assert data == {"sha256_email_address": [sha("jo.hn@example.com")]}

    def test_googlemail_dots_are_removed_too(self) -> None:
        data = body(conv(user={"email": "a.b.c@googlemail.com", "external_id": "c-1"}))
        assert data["user_data"] == {"sha256_email_address": [sha("abc@googlemail.com")]}

    def test_phone_is_e164_with_plus(self) -> None:
        """§5: "remove all non digit characters; add + prefix": not Meta's digits only."""
        data = body(conv(user={"phone": "+44 20 7946 0000", "external_id": "c-1"}))["user_data"]
        assert data == {"sha256_phone_number": [sha("+442079460000")]}

    def test_a_lead_without_identifiers(self) -> None:
        """Only the client id: no user_id, user_data or consent keys at all."""
        assert body(conv(event="Lead", event_id="lead-7")) == {
            "client_id": "123456789.1700000000",
            "events": [
                {
                    "name": "generate_lead",
                    "params": {"event_id": "lead-7"},
                    "timestamp_micros": 1_795_596_400_000_000,
                }
            ],
        }

    def test_search_sends_search_term(self) -> None:
        event = body(conv(event="Search", query="red shoes"))["events"][0]
        assert event["name"] == "search"
        assert event["params"] == {"search_term": "red shoes", "event_id": "evt-1"}

    def test_query_is_not_sent_on_other_events(self) -> None:
        assert (
            "search_term" not in body(conv(event="ViewContent", query="x"))["events"][0]["params"]
        )

    def test_descriptive_values_are_cut_to_100_characters(self) -> None:
        """§7: parameter values of at most 100 characters."""
        item = body(conv(contents=[{"id": "s", "name": "n" * 150}]))["events"][0]["params"]
        assert item["items"][0]["item_name"] == "n" * 100

    def test_a_long_event_id_is_left_out(self) -> None:
        """Our event_id is a custom parameter: over 100 characters it is omitted, not cut."""
        params = body(conv(event_id="e" * 101))["events"][0]["params"]
        assert "event_id" not in params


class TestEventNames:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            ("CompletePayment", "purchase"),
            ("Purchase", "purchase"),
            ("AddToCart", "add_to_cart"),
            ("InitiateCheckout", "begin_checkout"),
            ("AddPaymentInfo", "add_payment_info"),
            ("ViewContent", "view_item"),
            ("CompleteRegistration", "sign_up"),
            ("Lead", "generate_lead"),
            ("SubmitForm", "generate_lead"),
            ("Search", "search"),
            ("AddToWishlist", "add_to_wishlist"),
            # others: snake_case custom names
            ("StartTrial", "start_trial"),
            ("PlaceAnOrder", "place_an_order"),
            ("ClickButton", "click_button"),
            ("Watch Video", "watch_video"),
            ("HTTPCheck", "http_check"),
            ("level_up", "level_up"),
        ],
    )
    def test_mapping(self, event: str, expected: str) -> None:
        conversion = conv(event=event, value=1.0, currency="USD")
        assert body(conversion)["events"][0]["name"] == expected

    @pytest.mark.parametrize(
        ("event", "reason"),
        [
            ("Page View", "reserves"),  # page_view (§12)
            ("session start", "reserves"),
            ("GA Import", "reserves"),  # the ga_ prefix (§12)
            ("Firebase Thing", "reserves"),
            ("A" + "b" * 40, "40 characters"),  # §7
        ],
    )
    def test_names_ga4_would_drop_are_refused(self, event: str, reason: str) -> None:
        conversion = conv(event=event)
        [note] = ga4.refusals(conversion)
        assert note.path == "event"
        assert reason in note.reason
        with pytest.raises(ValueError, match=reason):
            body(conversion)


class TestConsentAndUserData:
    def test_only_the_signals_given_are_sent(self) -> None:
        assert body(conv(consent={"ad_personalization": "granted"}))["consent"] == {
            "ad_personalization": "GRANTED"
        }
        assert "consent" not in body(conv(consent={}))

    def test_denied_ad_user_data_withholds_user_data(self) -> None:
        """§8: ad_user_data is consent for sending user data for advertising."""
        sent = body(
            conv(
                user={"email": "a@b.co", "external_id": "c-1"},
                consent={"ad_user_data": "denied"},
            )
        )
        assert "user_data" not in sent
        assert sent["user_id"] == sha("c-1")
        assert sent["consent"] == {"ad_user_data": "DENIED"}

    def test_user_data_needs_a_user_id(self) -> None:
        """§5: "The user_id parameter must be present whenever user_data is provided"."""
        conversion = conv(user={"email": "a@b.co", "phone": "+14155552671"})
        sent = body(conversion)
        assert "user_data" not in sent
        assert "user_id" not in sent
        paths = [n.path for n in ga4.notes(conversion, TARGET, NOW)]
        assert "user.external_id" in paths


class TestBatching:
    def test_a_batch_mixing_client_ids_is_refused(self) -> None:
        one = conv(event_id="a")
        other = conv(event_id="b", user={"ga_client_id": "GA1.1.999.1700000000"})
        assert ga4.batch_key(one) != ga4.batch_key(other)
        with pytest.raises(ValueError, match="client_id"):
            body(one, other)

    def test_one_client_shares_a_request(self) -> None:
        one, two = conv(event_id="a"), conv(event="AddToCart", event_id="b")
        assert ga4.batch_key(one) == ga4.batch_key(two)
        assert ga4.batch_key(one).startswith("123456789.1700000000")
        sent = body(one, two)
        assert [e["name"] for e in sent["events"]] == ["generate_lead", "add_to_cart"]

    @pytest.mark.parametrize(
        "change",
        [
            {"user": {"external_id": "c-2"}},
            {"consent": {"ad_user_data": "denied"}},
            {"test_event_code": "TEST1"},
        ],
    )
    def test_one_client_with_other_request_fields_is_another_batch(
        self, change: dict[str, Any]
    ) -> None:
        one, two = conv(event_id="a"), conv(event_id="b", **change)
        assert ga4.batch_key(one) != ga4.batch_key(two)
        with pytest.raises(ValueError, match="batch_key"):
            body(one, two)

    def test_no_client_id_has_an_empty_key_and_cannot_be_built(self) -> None:
        conversion = conv(user={"ga_client_id": None})
        assert ga4.batch_key(conversion) == ""
        with pytest.raises(ValueError, match="client id"):
            body(conversion)

    def test_25_events_per_request(self) -> None:
        """§7: a request carries at most 25 events."""
        assert ga4.max_batch == 25
        batch = [conv(event_id=f"e{i}") for i in range(26)]
        assert len(body(*batch[:25])["events"]) == 25
        with pytest.raises(ValueError, match="25"):
            body(*batch)


class TestRequest:
    def test_the_secret_is_in_the_url_only(self) -> None:
        """§2: measurement_id and api_secret are query parameters; what users see (body)
        and the bytes sent never hold the secret."""
        request = ga4.prepare([conv(user={"email": "a@b.co", "external_id": "c"})], TARGET)
        parts = urlsplit(request.url)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https",
            "www.google-analytics.com",
            "/mp/collect",
        )
        assert parse_qs(parts.query) == {"measurement_id": ["G-TEST1234"], "api_secret": [SECRET]}
        assert SECRET not in orjson.dumps(request.body).decode()
        assert SECRET.encode() not in request.content
        assert SECRET not in str(request.headers)
        assert orjson.loads(request.content) == request.body
        assert request.headers == {"Content-Type": "application/json"}
        assert request.count == 1

    def test_test_conversions_go_to_the_validation_server(self) -> None:
        """GA4 has no test-event code: the validation server (§1), with recommendations
        enforced (§10), records nothing and says what is wrong."""
        request = ga4.prepare([conv(test_event_code="TEST9")], TARGET)
        assert urlsplit(request.url).path == "/debug/mp/collect"
        assert request.body["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
        assert "TEST9" not in request.content.decode()

    def test_a_body_over_130_kb_is_not_built(self) -> None:
        """§7: "The post body must be smaller than 130kB"."""
        contents = [{"id": f"SKU-{i:05d}", "name": "x" * 100} for i in range(1000)]
        conversion = conv(contents=contents)
        with pytest.raises(ValueError, match="130000"):
            ga4.prepare([conversion], TARGET)
        assert [n.path for n in ga4.refusals(conversion)] == ["contents"]


class TestRefusals:
    def test_without_client_id(self) -> None:
        assert ga4.refusals(conv(user={"ga_client_id": None})) == [
            Note("user.ga_client_id", "missing: GA4 cannot take an event without the _ga client id")
        ]

    def test_a_complete_conversion_has_none(self) -> None:
        assert (
            ga4.refusals(conv(event="CompletePayment", order_id=1, value=1, currency="EUR")) == []
        )

    def test_ids_over_100_characters(self) -> None:
        conversion = conv(order_id="o" * 101, contents=[{"id": "i" * 101}])
        assert [n.path for n in ga4.refusals(conversion)] == ["order_id", "contents[0].id"]


class TestNotes:
    def test_older_than_72_hours(self) -> None:
        """§6: events can be backdated up to 72 hours."""
        assert ga4.max_age(conv()) == 72 * 3600
        old = conv(event_time=NOW - 73 * 3600)
        assert [n.path for n in ga4.notes(old, TARGET, NOW + 3600)] == ["event_time"]
        assert ga4.notes(conv(event_time=NOW - 71 * 3600), TARGET, NOW) == []

    def test_missing_credentials_explain_the_silent_2xx(self) -> None:
        notes = ga4.notes(conv(), Target(base_url="x", pixel=""), NOW)
        assert [n.path for n in notes] == ["ga4.pixel", "ga4.token"]
        assert all("2xx" in n.reason for n in notes)

    def test_a_pixel_that_is_not_a_measurement_id(self) -> None:
        target = Target(base_url="x", pixel="123456789", token="s")
        [note] = ga4.notes(conv(), target, NOW)
        assert note.path == "ga4.pixel"
        assert "G-XXXXXXX" in note.reason

    def test_purchase_without_order_id_or_items(self) -> None:
        notes = ga4.notes(conv(event="Purchase", value=1, currency="USD"), TARGET, NOW)
        assert [n.path for n in notes] == ["order_id", "contents"]


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "body", "verdict", "whole"),
        [
            (204, b"", Verdict.DELIVERED, False),
            (200, b"", Verdict.DELIVERED, False),
            (200, b"<html>proxy</html>", Verdict.DELIVERED, False),
            (200, b'{"validationMessages": []}', Verdict.DELIVERED, False),
            (429, b"", Verdict.RETRY, False),
            (408, b"", Verdict.RETRY, False),
            (500, b"<html>", Verdict.RETRY, False),
            (503, b"", Verdict.RETRY, False),
            (400, b"", Verdict.PERMANENT, False),
            (413, b"", Verdict.PERMANENT, False),
            (401, b"", Verdict.PERMANENT, True),
            (403, b"", Verdict.PERMANENT, True),
            (404, b"", Verdict.PERMANENT, True),
        ],
    )
    def test_table(self, status: int, body: bytes, verdict: Verdict, whole: bool) -> None:
        outcome = ga4.classify(status, {}, body)
        assert outcome.verdict is verdict
        assert outcome.whole_request is whole
        assert outcome.bad_index is None

    def test_the_2xx_reason_says_received_not_recorded(self) -> None:
        assert "does not say" in ga4.classify(204, {}, b"").reason

    def test_retry_after_is_read(self) -> None:
        assert ga4.classify(429, {"retry-after": "7"}, b"").retry_after == 7.0

    def test_validation_messages_are_a_refusal_naming_the_event(self) -> None:
        """§10's message shape; "Event at index: [1]" names the row."""
        answer = {
            "validationMessages": [
                {
                    "fieldPath": "events",
                    "description": "Event at index: [1] has invalid name [_x]. Names must start"
                    " with an alphabetic character.",
                    "validationCode": "NAME_INVALID",
                }
            ]
        }
        outcome = ga4.classify(200, {}, orjson.dumps(answer))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 1
        assert "NAME_INVALID events: Event at index: [1]" in outcome.reason

    def test_a_request_level_validation_message_names_no_row(self) -> None:
        answer = {
            "validationMessages": [
                {"fieldPath": "client_id", "description": "x", "validationCode": "VALUE_REQUIRED"}
            ]
        }
        outcome = ga4.classify(200, {}, orjson.dumps(answer))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index is None


class TestDeclaration:
    def test_every_attribute_of_the_protocol(self) -> None:
        assert (ga4.name, ga4.display_name, ga4.ORDER) == ("ga4", "GA4", 30)
        assert ga4.ON_BY_DEFAULT is False
        assert ga4.EMAIL_FORM == "google"
        assert ga4.IDENTIFIER_SECTION == "user_data"
        assert ga4.PIXEL_CALL == "gtag"
        assert ga4.OAUTH is None
        assert ga4.DEFAULT_BASE_URL == "https://www.google-analytics.com"
        pixel, token = ga4.CREDENTIALS
        assert (pixel.key, pixel.label, pixel.pattern, pixel.hint) == (
            "pixel",
            "Measurement ID",
            r"G-[A-Z0-9]{4,20}",
            "G-XXXXXXX",
        )
        assert (token.key, token.label, token.secret) == (
            "token",
            "Measurement Protocol API secret",
            True,
        )

    def test_quality_weights(self) -> None:
        assert set(ga4.QUALITY_WEIGHTS) == set(LABELS)
        assert sum(ga4.QUALITY_WEIGHTS.values()) == pytest.approx(10.0)
        assert max(ga4.QUALITY_WEIGHTS, key=ga4.QUALITY_WEIGHTS.__getitem__) == "browser_id"
