"""Meta Conversions API builder and response classifier."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson
import pytest

from backchannel.destinations import meta
from backchannel.destinations.base import Target, Verdict
from backchannel.events import Conversion, normalize

NOW = 1_795_600_000
TARGET = Target(base_url="https://graph.facebook.com", pixel="123456789", token="EAAB-secret")
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", **fields}
    return normalize(data, now=NOW).conversion


def event(**fields: Any) -> dict[str, Any]:
    body = meta.build_body([conv(**fields)], TARGET)
    assert len(body["data"]) == 1
    return body["data"][0]  # type: ignore[no-any-return]


def user_data(**user_fields: Any) -> dict[str, Any]:
    return event(user=user_fields)["user_data"]  # type: ignore[no-any-return]


class TestUserData:
    def test_hashed_keys_are_lists_of_digests(self) -> None:
        """em/ph/fn/ln/zp/ct/st/country/external_id are lists of normalized digests."""
        data = user_data(
            email=" Jane@Example.com",
            phone="+1 (415) 555-2671",
            first_name="Jane ",
            last_name=" Doe",
            zip="94035-1234",
            city="Mountain View",
            state="CA",
            country="US",
            external_id="Cust-42",
        )
        assert data == {
            "em": [sha("jane@example.com")],
            "ph": [sha("14155552671")],
            "fn": [sha("jane")],
            "ln": [sha("doe")],
            "zp": [sha("94035")],
            "ct": [sha("mountainview")],
            "st": [sha("ca")],
            "country": [sha("us")],
            "external_id": [sha("cust-42")],
        }

    def test_ph_has_no_plus_while_tiktok_phone_has(self) -> None:
        """Meta ph hashes the E.164 digits; the stored TikTok form hashes '+digits'."""
        conversion = conv(user={"phone": "+44 20 7946 0000"})
        data = meta.event(conversion)["user_data"]
        assert data["ph"] == [sha("442079460000")]
        assert conversion.user.phone == [sha("+442079460000")]

    def test_multiple_values_stay_lists(self) -> None:
        """Several emails and phones are all sent, in order."""
        data = user_data(email=["a@x.com", "b@x.com"], phone=["+14155552671", "+49301234567"])
        assert data["em"] == [sha("a@x.com"), sha("b@x.com")]
        assert data["ph"] == [sha("14155552671"), sha("49301234567")]

    def test_raw_keys(self) -> None:
        """client_ip_address, client_user_agent and fbp are sent raw."""
        data = user_data(ip="2001:4860:4860::8888", user_agent=UA, fbp="fb.1.1700000000000.42")
        assert data == {
            "client_ip_address": "2001:4860:4860::8888",
            "client_user_agent": UA,
            "fbp": "fb.1.1700000000000.42",
        }

    def test_empty_user(self) -> None:
        """Nothing known: empty user_data, no null keys."""
        assert user_data() == {}


class TestFbc:
    def test_built_from_fbclid(self) -> None:
        """Only fbclid known: fbc = fb.1.{event_time*1000}.{fbclid}."""
        sent = event(event_time=NOW - 100, user={"fbclid": "IwAR0xYz"})
        assert sent["user_data"]["fbc"] == f"fb.1.{(NOW - 100) * 1000}.IwAR0xYz"

    def test_built_from_fbclid_in_page_url(self) -> None:
        """fbclid found in page.url feeds fbc; the URL is event_source_url."""
        url = "https://shop.example/landing?utm=x&fbclid=IwAR_Case_Sensitive"
        sent = event(event_time=NOW - 5, page={"url": url})
        assert sent["user_data"]["fbc"] == f"fb.1.{(NOW - 5) * 1000}.IwAR_Case_Sensitive"
        assert sent["event_source_url"] == url

    def test_given_fbc_wins(self) -> None:
        """A given fbc cookie is sent as is, even when an fbclid is known."""
        sent = event(
            user={"fbc": "fb.1.1690000000000.OLD", "fbclid": "NEW"},
            page={"url": "https://s.example/?fbclid=NEWER"},
        )
        assert sent["user_data"]["fbc"] == "fb.1.1690000000000.OLD"

    def test_no_click_id_no_fbc(self) -> None:
        """Without fbc or fbclid no fbc key is sent."""
        assert "fbc" not in user_data(email="a@x.com")


class TestEventFields:
    @pytest.mark.parametrize(
        ("source", "action_source"),
        [
            ("web", "website"),
            ("offline", "physical_store"),
            ("crm", "system_generated"),
            ("app", "app"),
        ],
    )
    def test_action_source(self, source: str, action_source: str) -> None:
        """source maps to Meta's action_source."""
        assert event(source=source)["action_source"] == action_source

    @pytest.mark.parametrize(
        ("name", "meta_name"),
        [
            ("CompletePayment", "Purchase"),
            ("SubmitForm", "Lead"),
            ("ViewContent", "ViewContent"),
            ("PlaceAnOrder", "PlaceAnOrder"),
            ("MyCustomThing", "MyCustomThing"),
        ],
    )
    def test_event_name(self, name: str, meta_name: str) -> None:
        """TikTok-style names are sent under their Meta name; custom names as given."""
        extra: dict[str, Any] = {}
        if name in ("CompletePayment", "PlaceAnOrder"):
            extra = {"value": 1, "currency": "USD"}
        assert event(event=name, **extra)["event_name"] == meta_name

    def test_time_and_id(self) -> None:
        """event_time is unix seconds and event_id is the derived dedup id."""
        sent = event(
            event="CompletePayment",
            event_id=None,
            order_id="A-9",
            value=3,
            currency="EUR",
            event_time="2026-11-25T09:00:00Z",
        )
        assert sent["event_time"] == 1795597200
        assert sent["event_id"] == "CompletePayment-A-9"

    def test_custom_data(self) -> None:
        """custom_data: value, lowercase currency, contents(id, quantity, item_price), order_id."""
        sent = event(
            event="CompletePayment",
            order_id=1001,
            value=59.9,
            currency=" USD ",
            contents=[
                {"id": 123, "quantity": 2, "price": 19.95, "name": "Mug"},
                {"id": "SKU-9", "price": 20},
            ],
        )
        assert sent["custom_data"] == {
            "value": 59.9,
            "currency": "usd",
            "contents": [
                {"id": "123", "quantity": 2, "item_price": 19.95, "title": "Mug"},
                {"id": "SKU-9", "quantity": 1, "item_price": 20.0},
            ],
            "content_ids": ["123", "SKU-9"],
            "num_items": 3,
            "content_type": "product",
            "order_id": "1001",
        }

    def test_no_custom_data_when_nothing_to_say(self) -> None:
        """A bare Lead has no custom_data key."""
        assert "custom_data" not in event()

    def test_search_string(self) -> None:
        """query is sent as search_string."""
        assert event(event="Search", query="red shoes")["custom_data"] == {
            "search_string": "red shoes"
        }

    def test_limited_data_use(self) -> None:
        """limited_data_use sets LDU with geolocation by Meta (country 0, state 0)."""
        sent = event(limited_data_use=True)
        assert sent["data_processing_options"] == ["LDU"]
        assert sent["data_processing_options_country"] == 0
        assert sent["data_processing_options_state"] == 0

    def test_no_ldu_by_default(self) -> None:
        """Without limited_data_use no data_processing_options are sent."""
        assert "data_processing_options" not in event()

    def test_referrer(self) -> None:
        """page.referrer is sent as referrer_url."""
        sent = event(page={"url": "https://a.example/x", "referrer": "https://b.example/"})
        assert sent["referrer_url"] == "https://b.example/"


class TestBatch:
    def test_test_event_code_top_level(self) -> None:
        """test_event_code is a request parameter, not an event field."""
        body = meta.build_body([conv(test_event_code="TEST42")], TARGET)
        assert body["test_event_code"] == "TEST42"
        assert "test_event_code" not in body["data"][0]

    def test_mixed_test_codes_rejected(self) -> None:
        """A batch mixing test and production events raises ValueError."""
        with pytest.raises(ValueError, match="test_event_code"):
            meta.build_body([conv(), conv(test_event_code="T")], TARGET)

    def test_size_limits(self) -> None:
        """1000 events fit; 1001 and 0 raise ValueError."""
        one = conv()
        assert len(meta.build_body([one] * 1000, TARGET)["data"]) == 1000
        with pytest.raises(ValueError, match="1000"):
            meta.build_body([one] * 1001, TARGET)
        with pytest.raises(ValueError, match="empty"):
            meta.build_body([], TARGET)


class TestPrepare:
    def test_json_body_with_data_test_code_and_token(self) -> None:
        """The request is JSON: data = the events, test_event_code, access_token = the token."""
        batch = [conv(test_event_code="T1"), conv(event_id="e2", test_event_code="T1")]
        request = meta.prepare(batch, TARGET)
        assert request.headers["Content-Type"] == "application/json"
        sent = orjson.loads(request.content)
        assert set(sent) == {"data", "test_event_code", "access_token"}
        assert sent["access_token"] == "EAAB-secret"
        assert sent["test_event_code"] == "T1"
        assert sent["data"] == request.body["data"]
        assert request.count == 2

    def test_token_not_in_body_or_url(self) -> None:
        """The token appears neither in the user-visible body nor in the URL."""
        request = meta.prepare([conv()], TARGET)
        assert "access_token" not in request.body
        assert "EAAB-secret" not in orjson.dumps(request.body).decode()
        assert "EAAB-secret" not in request.url
        assert "access_token" not in request.url

    def test_url(self) -> None:
        """POST {base}/{version}/{pixel}/events."""
        request = meta.prepare([conv()], dataclasses.replace(TARGET, api_version="v24.0"))
        assert request.url == "https://graph.facebook.com/v24.0/123456789/events"


def classify(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return meta.classify(status, headers or {}, raw)


class TestClassify:
    def test_delivered(self) -> None:
        """2xx with events_received is delivered; fbtrace_id kept as platform_ref."""
        outcome = classify(200, {"events_received": 2, "messages": [], "fbtrace_id": "AbC1"})
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.platform_ref == "AbC1"

    def test_2xx_without_events_received_not_delivered(self) -> None:
        """A 200 that does not say events_received is not taken as delivered."""
        assert classify(200, {"success": True}).verdict is Verdict.RETRY

    def test_invalid_parameter_is_permanent(self) -> None:
        """HTTP 400 with Graph code 100 is permanent; the error's fbtrace_id is kept."""
        body = {
            "error": {
                "message": "Invalid parameter",
                "type": "OAuthException",
                "code": 100,
                "error_user_msg": "event_time is too far in the past",
                "fbtrace_id": "Trace9",
            }
        }
        outcome = classify(400, body)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.platform_ref == "Trace9"
        assert "event_time is too far in the past" in outcome.reason

    @pytest.mark.parametrize(("status", "code", "whole"), [(400, 190, True), (400, 100, False)])
    def test_token_errors_concern_whole_request(self, status: int, code: int, whole: bool) -> None:
        """An invalid-token refusal (190) is whole_request; invalid parameter (100) is not."""
        outcome = classify(status, {"error": {"message": "m", "code": code}})
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request is whole

    @pytest.mark.parametrize("code", [4, 17, 32, 613])
    def test_rate_limit_codes_retried(self, code: int) -> None:
        """Graph rate-limit codes are retried even though the status is 400."""
        body = {"error": {"message": "limit", "code": code, "fbtrace_id": "t"}}
        assert classify(400, body).verdict is Verdict.RETRY

    def test_429_retried_with_retry_after(self) -> None:
        """HTTP 429 is retried and Retry-After is read."""
        outcome = classify(429, b"", {"retry-after": "30"})
        assert outcome.verdict is Verdict.RETRY
        assert outcome.retry_after == 30.0

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx_retried(self, status: int) -> None:
        """Server errors are retried, HTML bodies included."""
        assert classify(status, b"<html>oops</html>").verdict is Verdict.RETRY

    def test_is_transient_retried(self) -> None:
        """A 400 error flagged is_transient is retried."""
        body = {"error": {"message": "try again", "code": 2, "is_transient": True}}
        assert classify(400, body).verdict is Verdict.RETRY

    def test_is_transient_false_permanent(self) -> None:
        """A 400 error with is_transient false and a non-rate-limit code is permanent."""
        body = {"error": {"message": "bad", "code": 190, "is_transient": False}}
        assert classify(400, body).verdict is Verdict.PERMANENT


class TestNotes:
    def test_clean_web_event_has_no_notes(self) -> None:
        """A web event with page.url and user agent draws no Meta notes."""
        c = conv(page={"url": "https://s.example/"}, user={"user_agent": UA})
        assert meta.notes(c, TARGET, NOW) == []

    def test_website_needs_url_and_user_agent(self) -> None:
        """Website events without event_source_url and client_user_agent are flagged."""
        assert {n.path for n in meta.notes(conv(), TARGET, NOW)} == {"page.url", "user.user_agent"}

    def test_seven_day_window(self) -> None:
        """A CRM event older than 7 days is flagged; an offline one only after 62 days."""
        crm = conv(source="crm", event_time=NOW - 8 * 86400)
        store = conv(source="offline", event_time=NOW - 8 * 86400)
        old_store = conv(source="offline", event_time=NOW - 63 * 86400)
        assert [n.path for n in meta.notes(crm, TARGET, NOW)] == ["event_time"]
        assert meta.notes(store, TARGET, NOW) == []
        assert [n.path for n in meta.notes(old_store, TARGET, NOW)] == ["event_time"]
        assert meta.max_age(store) == 62 * 86400

    def test_missing_pixel(self) -> None:
        """No pixel id configured is flagged."""
        found = meta.notes(conv(source="app"), dataclasses.replace(TARGET, pixel=""), NOW)
        assert [n.path for n in found] == ["meta.pixel"]
