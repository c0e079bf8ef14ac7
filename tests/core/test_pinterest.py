"""Pinterest Conversions API v5: golden bodies, the request, and the answer's verdicts.

Golden values are written here by hand (docs/platforms/pinterest.md): hashes by hashlib over
literal normalized strings, never through backchannel.identity.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar

import orjson
import pytest

from backchannel import catalog
from backchannel.destinations import pinterest
from backchannel.destinations.base import Target, Verdict
from backchannel.events import Conversion, normalize

NOW = 1_795_600_000
ACCOUNT = "549755885175"
TOKEN = "pina_conversion-token-XYZ"
TARGET = Target(base_url="https://api.pinterest.com", pixel=ACCOUNT, token=TOKEN)
UA = "Mozilla/5.0 (X11; Linux x86_64) PinTest/1.0"
#: the spec's own click_id example
EPIK = (
    "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBX"
    "WWhkWklrUGxBUSZ0PUFBQUFBR1BaY3Bv"
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", "event_time": NOW - 60}
    data.update(fields)
    return normalize(data, now=NOW).conversion


def event(**fields: Any) -> dict[str, Any]:
    body = pinterest.build_body([conv(**fields)], TARGET)
    assert list(body) == ["data"]
    [item] = body["data"]
    return item  # type: ignore[no-any-return]


class TestGoldenBody:
    def test_a_checkout_with_every_mapped_field(self) -> None:
        """Every field Backchannel maps, against a body written by hand."""
        url = f"https://shop.example/thanks?order=1001&epik={EPIK}"
        c = conv(
            event="CompletePayment",
            event_id="CompletePayment-1001",
            order_id="1001",
            value=59.9,
            currency="EUR",
            contents=[
                {
                    "id": "SKU-1",
                    "quantity": 2,
                    "price": 29.95,
                    "name": "Tee",
                    "category": "Shirts",
                    "brand": "Acme",
                },
                {"id": "SKU-2"},
            ],
            limited_data_use=True,
            user={
                "email": " Jo.Hn@GMail.com ",
                "phone": "+49 30 1234567",
                "first_name": " Jane",
                "last_name": "Doe ",
                "zip": "10115",
                "city": "Berlin",
                "state": "BE",
                "country": "DE",
                "external_id": "Cust-42",
                "ip": "81.2.69.160",
                "user_agent": UA,
                "locale": "de-DE",
            },
            page={"url": url},
        )
        golden = {
            "data": [
                {
                    "event_name": "checkout",
                    "action_source": "web",
                    "event_time": NOW - 60,
                    "event_id": "CompletePayment-1001",
                    "event_source_url": url,
                    "user_data": {
                        # the common rule: trim, lowercase; gmail dots kept (not Google's)
                        "em": [sha("jo.hn@gmail.com")],
                        # E.164 digits without "+"
                        "ph": [sha("49301234567")],
                        "fn": [sha("jane")],
                        "ln": [sha("doe")],
                        "zp": [sha("10115")],
                        "ct": [sha("berlin")],
                        "st": [sha("be")],
                        "country": [sha("de")],
                        "external_id": [sha("cust-42")],
                        "client_ip_address": "81.2.69.160",
                        "client_user_agent": UA,
                        "click_id": EPIK,
                    },
                    "custom_data": {
                        "value": "59.9",
                        "currency": "EUR",
                        "content_ids": ["SKU-1", "SKU-2"],
                        "contents": [
                            {
                                "id": "SKU-1",
                                "item_price": "29.95",
                                "quantity": 2,
                                "item_name": "Tee",
                                "item_category": "Shirts",
                                "item_brand": "Acme",
                            },
                            {"id": "SKU-2", "quantity": 1},
                        ],
                        "num_items": 3,
                        "order_id": "1001",
                        "opt_out_type": "LDP",
                    },
                    "language": "de",
                }
            ]
        }
        assert pinterest.build_body([c], TARGET) == golden
        prepared = pinterest.prepare([c], TARGET)
        assert orjson.loads(prepared.content) == golden
        assert prepared.body == golden

    def test_a_minimal_lead_has_no_empty_parts(self) -> None:
        """IP and user agent alone are enough for Pinterest (§3.2); nothing null is sent."""
        assert event(user={"ip": "2001:4860:4860::8888", "user_agent": UA}) == {
            "event_name": "lead",
            "action_source": "web",
            "event_time": NOW - 60,
            "event_id": "evt-1",
            "user_data": {"client_ip_address": "2001:4860:4860::8888", "client_user_agent": UA},
        }

    def test_a_search_carries_its_string(self) -> None:
        sent = event(event="Search", query="red shoes", user={"email": "a@b.co"})
        assert sent["event_name"] == "search"
        assert sent["custom_data"] == {"search_string": "red shoes"}

    def test_several_emails_and_phones_stay_lists(self) -> None:
        data = event(user={"email": ["a@x.com", "B@x.com"], "phone": ["+14155552671"]})["user_data"]
        assert data == {"em": [sha("a@x.com"), sha("b@x.com")], "ph": [sha("14155552671")]}


class TestClickId:
    def test_from_the_landing_url_epik(self) -> None:
        sent = event(user={"email": "a@b.co"}, page={"url": "https://s.example/p?epik=abc.123"})
        assert sent["user_data"]["click_id"] == "abc.123"

    def test_the_user_object_wins_over_the_url(self) -> None:
        """``user.pin_epik`` (from the _epik cookie, or stitched from the landing session)
        is what the canonical object says; the URL fills it only when absent."""
        c = conv(
            user={"email": "a@b.co", "pin_epik": "from-cookie"},
            page={"url": "https://s.example/p?epik=from-url"},
        )
        assert c.user.ids == {"pin_epik": "from-cookie"}
        assert pinterest.event(c)["user_data"]["click_id"] == "from-cookie"

    def test_none_known_none_sent(self) -> None:
        assert "click_id" not in event(user={"email": "a@b.co"})["user_data"]

    def test_the_declaration(self) -> None:
        [identifier] = pinterest.IDENTIFIERS
        assert (identifier.field, identifier.kind) == ("pin_epik", "click")
        assert (identifier.url_param, identifier.cookie) == ("epik", "_epik")
        assert pinterest.CLICK_IDS == ("pin_epik",)
        assert pinterest.BROWSER_IDS == ()


class TestEventNames:
    EXPECTED: ClassVar[dict[str, str]] = {
        "ViewContent": "page_visit",
        "Search": "search",
        "AddToWishlist": "add_to_wishlist",
        "AddToCart": "add_to_cart",
        "InitiateCheckout": "initiate_checkout",
        "AddPaymentInfo": "add_payment_info",
        "PlaceAnOrder": "custom",  # not a payment: never a second checkout
        "CompletePayment": "checkout",
        "Purchase": "checkout",
        "CustomizeProduct": "custom",
        "FindLocation": "custom",
        "Schedule": "custom",
        "CompleteRegistration": "signup",
        "Subscribe": "subscribe",
        "StartTrial": "custom",
        "Lead": "lead",
        "SubmitForm": "lead",
        "SubmitApplication": "custom",
        "ApplicationApproval": "custom",
        "Contact": "custom",
        "Download": "custom",
        "ClickButton": "custom",
    }

    def test_every_catalog_event_is_mapped(self) -> None:
        assert set(self.EXPECTED) == set(catalog.EVENTS)

    @pytest.mark.parametrize(("ours", "theirs"), sorted(EXPECTED.items()))
    def test_standard_events(self, ours: str, theirs: str) -> None:
        fields: dict[str, Any] = {"event": ours, "user": {"email": "a@b.co"}}
        if catalog.EVENTS[ours].payment:
            fields.update(value=1.0, currency="USD")
        assert event(**fields)["event_name"] == theirs

    def test_place_an_order_says_why_it_is_not_a_checkout(self) -> None:
        c = conv(event="PlaceAnOrder", value=5.0, currency="USD", user={"email": "a@b.co"})
        [note] = pinterest.notes(c, TARGET, NOW)
        assert note.path == "event"
        assert "not 'checkout'" in note.reason

    def test_a_custom_name_is_sent_as_custom_with_a_note(self) -> None:
        c = conv(event="LoyaltySignup", user={"email": "a@b.co"})
        assert pinterest.event(c)["event_name"] == "custom"
        notes = pinterest.notes(c, TARGET, NOW)
        assert [n.path for n in notes] == ["event"]
        assert "'custom'" in notes[0].reason
        assert "LoyaltySignup" in notes[0].reason


class TestActionSource:
    @pytest.mark.parametrize(
        ("source", "agent", "expected"),
        [
            ("web", UA, "web"),
            ("offline", UA, "offline"),
            ("crm", UA, "offline"),
            ("app", "MyShop/3.1 (iPhone; iOS 17.2; Scale/3.00)", "app_ios"),
            ("app", "MyShop/3.1 CFNetwork/1490.0.4 Darwin/23.2.0", "app_ios"),
            ("app", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)", "app_android"),
        ],
    )
    def test_mapped(self, source: str, agent: str, expected: str) -> None:
        sent = event(source=source, user={"email": "a@b.co", "user_agent": agent})
        assert sent["action_source"] == expected

    def test_an_app_event_of_unknown_store_is_refused_not_guessed(self) -> None:
        c = conv(source="app", user={"email": "a@b.co", "user_agent": "MyShop/3.1"})
        assert [n.path for n in pinterest.refusals(c)] == ["user.user_agent"]
        with pytest.raises(ValueError, match="app_ios or app_android"):
            pinterest.build_body([c], TARGET)


class TestValues:
    @pytest.mark.parametrize(
        ("number", "text"),
        [
            (20.0, "20.0"),
            (59.9, "59.9"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "10000000000000000"),
            (1.5e-7, "0.00000015"),
            (0.0, "0.0"),
        ],
    )
    def test_decimal_strings_have_no_exponent(self, number: float, text: str) -> None:
        assert pinterest.decimal_string(number) == text

    def test_value_and_item_price_are_strings(self) -> None:
        custom = event(
            event="AddToCart",
            value=10,
            currency="USD",
            contents=[{"id": "A", "price": 10, "quantity": 1}],
            user={"email": "a@b.co"},
        )["custom_data"]
        assert custom["value"] == "10.0"
        assert custom["contents"][0]["item_price"] == "10.0"
        assert custom["num_items"] == 1

    def test_num_items_given_wins_and_predicted_ltv_is_a_string(self) -> None:
        custom = event(
            event="Subscribe",
            value=9.99,
            currency="USD",
            num_items=4,
            predicted_ltv=120.5,
            contents=[{"id": "A", "quantity": 1}],
            user={"email": "a@b.co"},
        )["custom_data"]
        assert custom == {
            "value": "9.99",
            "currency": "USD",
            "content_ids": ["A"],
            "contents": [{"id": "A", "quantity": 1}],
            "num_items": 4,
            "predicted_ltv": "120.5",
        }

    def test_no_ldp_by_default(self) -> None:
        assert "custom_data" not in event(user={"email": "a@b.co"})

    @pytest.mark.parametrize(
        ("locale", "language"), [("en_US", "en"), ("FR", "fr"), ("english", None), ("e", None)]
    )
    def test_language_from_locale(self, locale: str, language: str | None) -> None:
        assert event(user={"email": "a@b.co", "locale": locale}).get("language") == language


class TestRequest:
    def test_production_url_and_bearer_token(self) -> None:
        prepared = pinterest.prepare([conv(user={"email": "a@b.co"})], TARGET)
        assert prepared.url == f"https://api.pinterest.com/v5/ad_accounts/{ACCOUNT}/events"
        assert prepared.headers == {
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
        }
        assert prepared.count == 1

    def test_a_test_conversion_goes_with_test_true(self) -> None:
        """Pinterest has no test code (§1): any test_event_code means ?test=true, and the
        body is the same as in production."""
        test = conv(user={"email": "a@b.co"}, test_event_code="TEST123")
        prepared = pinterest.prepare([test], TARGET)
        assert prepared.url.endswith(f"/v5/ad_accounts/{ACCOUNT}/events?test=true")
        assert prepared.body == pinterest.build_body([conv(user={"email": "a@b.co"})], TARGET)
        assert pinterest.TEST_EVENT_CODES is False

    def test_test_and_production_never_share_a_request(self) -> None:
        batch = [conv(user={"email": "a@b.co"}), conv(test_event_code="T", user={"email": "x@y.z"})]
        with pytest.raises(ValueError, match="all test"):
            pinterest.build_body(batch, TARGET)

    def test_the_token_is_in_no_url_and_no_body(self) -> None:
        prepared = pinterest.prepare([conv(user={"email": "a@b.co"})], TARGET)
        assert TOKEN not in prepared.url
        assert TOKEN not in prepared.content.decode()
        assert TOKEN not in orjson.dumps(prepared.body).decode()

    def test_size_limits(self) -> None:
        one = conv(user={"email": "a@b.co"})
        assert len(pinterest.build_body([one] * 1000, TARGET)["data"]) == 1000
        with pytest.raises(ValueError, match="at most 1000"):
            pinterest.build_body([one] * 1001, TARGET)
        with pytest.raises(ValueError, match="empty"):
            pinterest.build_body([], TARGET)


def answer(*statuses: tuple[str, str | None], **extra: Any) -> bytes:
    events = [{"status": s, "error_message": m, "warning_message": None} for s, m in statuses]
    processed = sum(s == "processed" for s, _ in statuses)
    body = {"num_events_received": len(events), "num_events_processed": processed}
    return orjson.dumps({**body, "events": events, **extra})


class TestClassify:
    def test_all_processed(self) -> None:
        out = pinterest.classify(200, {}, answer(("processed", None), ("processed", None)))
        assert out.verdict is Verdict.DELIVERED
        assert out.failed_rows == {}
        assert out.received == 2
        assert not out.partial

    def test_failed_events_are_the_failed_rows(self) -> None:
        """Pinterest answers each event in request order (§9): the failed ones are refused
        for good with Pinterest's message, the others delivered."""
        body = answer(
            ("processed", None),
            ("failed", "event_time is more than 7 days in the past"),
            ("processed", None),
        )
        out = pinterest.classify(200, {}, body)
        assert out.verdict is Verdict.DELIVERED
        assert out.failed_rows == {1: "Pinterest: event_time is more than 7 days in the past"}
        assert out.received == 2
        assert out.partial

    def test_a_warning_is_kept_in_the_reason(self) -> None:
        body = orjson.dumps(
            {
                "num_events_received": 1,
                "num_events_processed": 1,
                "events": [
                    {"status": "processed", "error_message": None, "warning_message": "odd"}
                ],
            }
        )
        out = pinterest.classify(200, {}, body)
        assert out.verdict is Verdict.DELIVERED
        assert not out.failed_rows
        assert "odd" in out.reason

    @pytest.mark.parametrize("body", [b"", b"<html>ok</html>", b'{"num_events_received": 1'])
    def test_a_2xx_without_answers_is_retried(self, body: bytes) -> None:
        assert pinterest.classify(200, {}, body).verdict is Verdict.RETRY

    def test_422_with_per_event_answers_splits_rows(self) -> None:
        body = orjson.dumps(
            {
                "code": 4,
                "message": "Not all events were successfully processed.",
                "details": {"events": [{"status": "failed", "error_message": "bad em"}]},
            }
        )
        out = pinterest.classify(422, {}, body)
        assert out.verdict is Verdict.DELIVERED
        assert out.failed_rows == {0: "Pinterest: bad em"}

    def test_422_naming_no_row_is_permanent_for_the_batch(self) -> None:
        body = (
            b'{"code": 4, "message": "Not all events were successfully processed.", "details": {}}'
        )
        out = pinterest.classify(422, {}, body)
        assert out.verdict is Verdict.PERMANENT
        assert out.bad_index is None
        assert not out.whole_request

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (401, b'{"code": 2, "message": "Authentication failed."}'),
            (403, b'{"code": 29, "message": "You are not permitted to access that resource."}'),
            (404, b"{}"),
        ],
    )
    def test_credentials_and_account_refusals_concern_the_whole_request(
        self, status: int, body: bytes
    ) -> None:
        out = pinterest.classify(status, {}, body)
        assert out.verdict is Verdict.PERMANENT
        assert out.whole_request
        assert out.bad_index is None

    def test_rate_limit_is_retried_after_what_it_asks(self) -> None:
        body = b'{"code": 8, "message": "This request exceeded a rate limit."}'
        out = pinterest.classify(429, {"retry-after": "7"}, body)
        assert out.verdict is Verdict.RETRY
        assert out.retry_after == 7.0
        assert "Pinterest 8" in out.reason

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_retried(self, status: int) -> None:
        assert pinterest.classify(status, {}, b"<html>nginx</html>").verdict is Verdict.RETRY

    def test_ramped_down_retried(self) -> None:
        body = b'{"code": 4197, "message": "The endpoint has been ramped down"}'
        assert pinterest.classify(503, {}, body).verdict is Verdict.RETRY

    def test_schema_refusal_is_permanent_naming_the_row_when_it_can(self) -> None:
        body = orjson.dumps(
            {"code": 4196, "message": "Invalid request: 20.0 is not of type 'string' (data[2].x)"}
        )
        out = pinterest.classify(400, {}, body)
        assert out.verdict is Verdict.PERMANENT
        assert out.bad_index == 2
        assert not out.whole_request
        plain = pinterest.classify(
            400, {}, b'{"code": 4196, "message": "The request was invalid."}'
        )
        assert plain.bad_index is None


class TestNotesAndRefusals:
    def test_a_clean_order_has_no_notes(self) -> None:
        c = conv(event="CompletePayment", value=5.0, currency="USD", user={"email": "a@b.co"})
        assert pinterest.notes(c, TARGET, NOW) == []

    def test_no_email_and_no_ip_pair_is_refused(self) -> None:
        for user in ({}, {"ip": "81.2.69.160"}, {"phone": "+14155552671", "user_agent": UA}):
            c = conv(user=user)
            assert [n.path for n in pinterest.refusals(c)] == ["user"], user
        assert pinterest.refusals(conv(user={"ip": "81.2.69.160", "user_agent": UA})) == []

    def test_seven_day_window(self) -> None:
        c = conv(user={"email": "a@b.co"}, event_time=NOW - 8 * 86400)
        assert pinterest.max_age(c) == 7 * 86400
        notes = pinterest.notes(c, TARGET, NOW)
        assert [n.path for n in notes] == ["event_time"]
        assert "7-day" in notes[0].reason

    def test_offline_events_are_not_deduplicated(self) -> None:
        c = conv(source="crm", user={"email": "a@b.co"})
        assert [n.path for n in pinterest.notes(c, TARGET, NOW)] == ["source"]

    def test_missing_account(self) -> None:
        c = conv(user={"email": "a@b.co"})
        empty = Target(base_url="https://api.pinterest.com", pixel="", token=TOKEN)
        assert [n.path for n in pinterest.notes(c, empty, NOW)] == ["pinterest.pixel"]


class TestDeclarations:
    def test_off_until_connected_at_order_60(self) -> None:
        assert pinterest.name == "pinterest"
        assert pinterest.display_name == "Pinterest"
        assert pinterest.ORDER == 60
        assert pinterest.ON_BY_DEFAULT is False
        assert pinterest.PIXEL_CALL == "pintrk"
        assert pinterest.DEFAULT_BASE_URL == "https://api.pinterest.com"
        assert pinterest.max_batch == 1000
        assert (pinterest.EMAIL_FORM, pinterest.EMAIL_NORMALIZER) == ("", None)

    def test_the_ad_account_id_is_digits(self) -> None:
        pixel, token = pinterest.CREDENTIALS
        assert (pixel.key, token.key, token.secret) == ("pixel", "token", True)
        pattern = pixel.pattern or ""
        assert re.fullmatch(pattern, "549755885175")
        for bad in ("abc", "5497-5588", "1" * 19, ""):
            assert re.fullmatch(pattern, bad) is None
