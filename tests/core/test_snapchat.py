"""The Snapchat destination: golden bodies, event names, test events, the token's place,
refusals and verdicts (docs/platforms/snapchat.md).

Golden bodies are literal JSON written here; hashes are hashlib over literal strings written
here, never our normalizer's or builder's output. Two of them are Snap's own worked examples
(§3.2), whose digests the docs print.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from backchannel import connect
from backchannel.destinations import DESTINATIONS
from backchannel.destinations import snapchat as snap
from backchannel.destinations.base import Identifier, Target, Verdict
from backchannel.events import Conversion, normalize
from backchannel.quality import LABELS

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
WHEN = 1_799_996_400  # an hour earlier
PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
TOKEN = "snap-capi-token/with+odd&chars=1"
TARGET = Target(base_url="https://tr.snapchat.com", pixel=PIXEL, token=TOKEN)
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {
        "event": "ViewContent",
        "event_id": "evt-1",
        "event_time": WHEN,
        "page": {"url": "https://shop.example/p/1"},
        "user": {"email": "ann@example.com"},
        **fields,
    }
    return normalize(data, now=NOW).conversion


def target(**settings: str) -> Target:
    return Target(base_url=TARGET.base_url, pixel=PIXEL, token=TOKEN, settings=settings)


def body(*conversions: Conversion, **settings: str) -> dict[str, Any]:
    return snap.build_body(list(conversions), target(**settings))


class TestDeclaration:
    def test_registered_off_until_connected(self) -> None:
        assert DESTINATIONS["snapchat"] is snap
        assert snap.display_name == "Snapchat"
        assert snap.ORDER == 50
        assert snap.ON_BY_DEFAULT is False
        assert snap.DEFAULT_BASE_URL == "https://tr.snapchat.com"
        assert snap.max_batch == 2000
        assert snap.TEST_EVENT_CODES is False
        assert snap.PIXEL_CALL == "snaptr"
        assert snap.IDENTIFIER_SECTION == "user_data"
        assert snap.OAUTH is None
        assert (snap.EMAIL_FORM, snap.EMAIL_NORMALIZER) == ("", None)
        assert [c.key for c in snap.CREDENTIALS] == ["pixel", "token", "custom_events"]
        assert [c.key for c in snap.CREDENTIALS if c.secret] == ["token"]
        assert [c.key for c in snap.CREDENTIALS if not c.required] == ["custom_events"]

    def test_identifiers_are_scclid_from_the_url_and_the_scid_cookie(self) -> None:
        click, cookie = snap.IDENTIFIERS
        assert click == Identifier("sc_click_id", "click", url_param="ScCid")
        assert cookie == Identifier("sc_cookie1", "browser", cookie="_scid")
        assert snap.CLICK_IDS == ("sc_click_id",)
        assert snap.BROWSER_IDS == ("sc_cookie1",)

    def test_quality_weights(self) -> None:
        assert set(snap.QUALITY_WEIGHTS) <= set(LABELS)
        assert sum(snap.QUALITY_WEIGHTS.values()) == pytest.approx(10.0)
        assert "external_id" not in snap.QUALITY_WEIGHTS  # not sent to Snap

    def test_window_is_37_days(self) -> None:
        assert snap.max_age(conv()) == 37 * 86400

    def test_pixel_is_a_uuid(self) -> None:
        pixel = snap.CREDENTIALS[0]
        assert connect.check(pixel, f" {PIXEL} ") == PIXEL
        for bad in ("123456789", "5bf81ee1-15b1-4dc1-b636", PIXEL + "0", "G-TEST1234"):
            with pytest.raises(connect.CredentialError, match="pixel: a Snap Pixel ID is a UUID"):
                connect.check(pixel, bad)


class TestGoldenBodies:
    def test_snaps_own_hash_vectors(self) -> None:
        """§3.2: Snap prints these digests (start and end) for its normalization examples."""
        assert sha("person@example.com").startswith("542d2401")
        assert sha("person@example.com").endswith("3345")
        assert sha("448444124653").startswith("dc008fda")
        assert sha("448444124653").endswith("6383")

    def test_purchase_with_every_mapped_field(self) -> None:
        conversion = conv(
            event="CompletePayment",
            event_id=None,  # derived from the order: CompletePayment-1001
            order_id=1001,
            value=59.9,
            currency="usd",
            content_type="product",
            contents=[
                {"id": "SKU-1", "quantity": 2, "price": 29.95, "brand": "Acme", "name": "Tee"},
                {"id": "SKU-2", "price": 5.0},
            ],
            page={"url": "https://shop.example/thanks"},
            user={
                "email": " Person@Example.com ",
                "phone": "+44 844 412 4653",
                "first_name": "Ann",
                "last_name": "Lee",
                "zip": "94035-1234",
                "city": "San Francisco",
                "state": "CA",
                "country": "US",
                "external_id": "cust-7",
                "ip": "81.2.69.160",
                "user_agent": UA,
                "sc_click_id": "6d1a6b87-click",
                "sc_cookie1": "a1b2c3d4-cookie",
            },
        )
        expected = orjson.loads(
            """
            {"data": [{
              "event_name": "PURCHASE",
              "event_time": 1799996400,
              "event_id": "CompletePayment-1001",
              "action_source": "WEB",
              "event_source_url": "https://shop.example/thanks",
              "user_data": {
                "em": ["EMAIL"],
                "ph": ["PHONE"],
                "fn": ["FN"], "ln": ["LN"], "zp": ["ZP"],
                "ct": ["CT"], "st": ["ST"], "country": ["COUNTRY"],
                "client_ip_address": "81.2.69.160",
                "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                "sc_click_id": "6d1a6b87-click",
                "sc_cookie1": "a1b2c3d4-cookie"
              },
              "custom_data": {
                "value": 59.9,
                "currency": "USD",
                "contents": [
                  {"id": "SKU-1", "quantity": "2", "item_price": "29.95", "brand": "Acme"},
                  {"id": "SKU-2", "quantity": "1", "item_price": "5"}
                ],
                "content_ids": ["SKU-1", "SKU-2"],
                "num_items": 3,
                "content_type": "product",
                "order_id": "1001"
              }
            }]}
            """.replace("EMAIL", sha("person@example.com"))
            .replace("PHONE", sha("448444124653"))  # digits, country code, no '+' (§3.2)
            .replace('"FN"', f'"{sha("ann")}"')
            .replace('"LN"', f'"{sha("lee")}"')
            .replace('"ZP"', f'"{sha("94035")}"')
            .replace('"CT"', f'"{sha("sanfrancisco")}"')
            .replace('"ST"', f'"{sha("ca")}"')
            .replace('"COUNTRY"', f'"{sha("us")}"')
        )
        assert body(conversion) == expected

    def test_the_click_id_comes_from_the_landing_urls_scclid(self) -> None:
        """§6: ScCid in the landing URL is sc_click_id, when the user object has none."""
        conversion = conv(page={"url": "https://shop.example/p?utm_source=snap&ScCid=abc-123"})
        user_data = body(conversion)["data"][0]["user_data"]
        assert user_data == {"em": [sha("ann@example.com")], "sc_click_id": "abc-123"}

    def test_the_parameter_name_is_exact_case(self) -> None:
        conversion = conv(page={"url": "https://shop.example/p?sccid=abc-123"})
        assert "sc_click_id" not in body(conversion)["data"][0]["user_data"]

    def test_a_view_without_custom_data_or_extras(self) -> None:
        assert body(conv(user={"ip": "81.2.69.160", "user_agent": UA})) == {
            "data": [
                {
                    "event_name": "VIEW_CONTENT",
                    "event_time": WHEN,
                    "event_id": "evt-1",
                    "action_source": "WEB",
                    "event_source_url": "https://shop.example/p/1",
                    "user_data": {"client_ip_address": "81.2.69.160", "client_user_agent": UA},
                }
            ]
        }

    def test_email_is_the_common_form_gmail_dots_kept(self) -> None:
        """Snap's rule is trim + lowercase (§3.2): unlike Google's, dots stay."""
        user_data = body(conv(user={"email": "Jo.Hn@GMail.com"}))["data"][0]["user_data"]
        assert user_data == {"em": [sha("jo.hn@gmail.com")]}

    def test_a_national_phone_gets_its_country_code(self) -> None:
        """§3.2: drop the trunk 0, add the country code, no '+'."""
        conversion = conv(user={"phone": "020 7946 0000", "country": "GB"})
        user_data = body(conversion)["data"][0]["user_data"]
        assert user_data["ph"] == [sha("442079460000")]

    def test_search_string(self) -> None:
        custom = body(conv(event="Search", query="red shoes"))["data"][0]["custom_data"]
        assert custom == {"search_string": "red shoes"}

    def test_offline_and_crm_events_are_offline_without_a_page(self) -> None:
        for source in ("offline", "crm"):
            item = body(conv(source=source, page=None))["data"][0]
            assert item["action_source"] == "OFFLINE"
            assert "event_source_url" not in item

    def test_a_batch(self) -> None:
        sent = body(conv(event_id="a"), conv(event="AddToCart", event_id="b"))
        assert [(e["event_name"], e["event_id"]) for e in sent["data"]] == [
            ("VIEW_CONTENT", "a"),
            ("ADD_CART", "b"),
        ]

    def test_a_batch_must_share_test_event_code(self) -> None:
        with pytest.raises(ValueError, match="test_event_code"):
            body(conv(event_id="a"), conv(event_id="b", test_event_code="T1"))


class TestEventNames:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            ("CompletePayment", "PURCHASE"),
            ("Purchase", "PURCHASE"),
            ("AddToCart", "ADD_CART"),
            ("InitiateCheckout", "START_CHECKOUT"),
            ("AddPaymentInfo", "ADD_BILLING"),
            ("ViewContent", "VIEW_CONTENT"),
            ("Search", "SEARCH"),
            ("AddToWishlist", "ADD_TO_WISHLIST"),
            ("CompleteRegistration", "SIGN_UP"),
            ("Subscribe", "SUBSCRIBE"),
            ("StartTrial", "START_TRIAL"),
            ("Schedule", "RESERVE"),
            # already Snap names: sent as they are
            ("PAGE_VIEW", "PAGE_VIEW"),
            ("LIST_VIEW", "LIST_VIEW"),
            ("CUSTOM_EVENT_3", "CUSTOM_EVENT_3"),
        ],
    )
    def test_mapping(self, event: str, expected: str) -> None:
        conversion = conv(event=event, value=1.0, currency="USD")
        assert body(conversion)["data"][0]["event_name"] == expected

    @pytest.mark.parametrize("event", ["PlaceAnOrder", "Lead", "Contact", "Download", "level up"])
    def test_events_snap_has_no_name_for_are_not_sent(self, event: str) -> None:
        conversion = conv(event=event, value=1.0, currency="USD")
        with pytest.raises(snap.UnmappedEvent, match=f"{event}=CUSTOM_EVENT_1"):
            body(conversion)
        [note] = [n for n in snap.notes(conversion, TARGET, NOW) if n.path == "event"]
        assert "takes no custom names" in note.reason

    def test_the_connection_maps_custom_events(self) -> None:
        mapping = "PlaceAnOrder=CUSTOM_EVENT_1; Lead = SIGN_UP\nlevel up=CUSTOM_EVENT_5"
        sent = body(
            conv(event="PlaceAnOrder", event_id="a", value=5.0, currency="USD"),
            conv(event="Lead", event_id="b"),
            conv(event="level up", event_id="c"),
            custom_events=mapping,
        )
        assert [e["event_name"] for e in sent["data"]] == [
            "CUSTOM_EVENT_1",
            "SIGN_UP",
            "CUSTOM_EVENT_5",
        ]
        notes = snap.notes(conv(event="Lead"), target(custom_events=mapping), NOW)
        assert "event" not in [n.path for n in notes]

    def test_a_purchase_by_mapping_needs_value_and_currency(self) -> None:
        """§9: "Missing price and/or currency in Purchase events"."""
        with pytest.raises(ValueError, match="needs value and currency"):
            body(conv(event="Lead"), custom_events="Lead=PURCHASE")

    def test_the_setting_is_checked_when_stored(self) -> None:
        setting = snap.CREDENTIALS[2]
        assert (
            connect.check(setting, "A=CUSTOM_EVENT_1;\nB = SAVE\n") == "A=CUSTOM_EVENT_1;\nB = SAVE"
        )
        for bad in ("A=CUSTOM_EVENT_6", "A=purchase", "A", "=SAVE", "A=SAVE B=SAVE"):
            with pytest.raises(connect.CredentialError, match="custom_events: Event="):
                connect.check(setting, bad)

    @pytest.mark.parametrize(
        ("text", "error"),
        [
            ("Lead", "expected Event=CUSTOM_EVENT_1"),
            ("Lead=LEAD", "'LEAD' is not a Snap event name"),
            ("Lead=CUSTOM_EVENT_1;Lead=CUSTOM_EVENT_2", "Lead already has a Snap event"),
        ],
    )
    def test_parse_errors_name_the_entry(self, text: str, error: str) -> None:
        with pytest.raises(snap.CustomEventsError, match=error):
            snap.parse_custom_events(text)
        notes = snap.notes(conv(), target(custom_events=text), NOW)
        assert "snapchat.custom_events" in [n.path for n in notes]


class TestRequest:
    def test_the_token_is_in_the_query_only(self) -> None:
        """§2: ?access_token=…; what users see (body) and the bytes sent never hold it."""
        request = snap.prepare([conv()], TARGET)
        parts = urlsplit(request.url)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https",
            "tr.snapchat.com",
            f"/v3/{PIXEL}/events",
        )
        assert parse_qs(parts.query) == {"access_token": [TOKEN]}
        assert TOKEN not in request.content.decode()
        assert TOKEN not in orjson.dumps(request.body).decode()
        assert request.headers == {"Content-Type": "application/json"}
        assert orjson.loads(request.content) == request.body
        assert request.count == 1

    def test_test_conversions_go_to_the_test_event_tool(self) -> None:
        """§1: /events/validate validates without recording; the body is the same, and no
        test_event_code is sent (Snap has no code to copy from a console)."""
        test = conv(test_event_code="TEST123")
        request = snap.prepare([test], TARGET)
        parts = urlsplit(request.url)
        assert parts.path == f"/v3/{PIXEL}/events/validate"
        assert parse_qs(parts.query) == {"access_token": [TOKEN]}
        assert request.body == snap.build_body([conv()], TARGET)
        assert "test_event_code" not in request.body


class TestRefusals:
    def test_a_web_event_without_its_page(self) -> None:
        [note] = snap.refusals(conv(page=None))
        assert note.path == "page.url"
        assert "event_source_url" in note.reason

    @pytest.mark.parametrize(
        "user",
        [
            {"user_agent": UA},
            {"ip": "81.2.69.160"},
            {"external_id": "c-1", "sc_click_id": "x", "sc_cookie1": "y"},
        ],
    )
    def test_without_a_matching_key(self, user: dict[str, str]) -> None:
        [note] = snap.refusals(conv(user=user))
        assert note.path == "user"
        assert "Insufficient PII" in note.reason

    @pytest.mark.parametrize(
        "user",
        [{"email": "a@b.co"}, {"phone": "+14155552671"}, {"ip": "81.2.69.160", "user_agent": UA}],
    )
    def test_any_matching_key_is_enough(self, user: dict[str, str]) -> None:
        assert snap.refusals(conv(user=user)) == []

    def test_app_events_cannot_go_to_a_pixel(self) -> None:
        app = conv(source="app", page=None)
        reason = snap.unsendable(app, {})
        assert reason is not None
        assert "Snap App ID" in reason
        assert snap.unsendable(conv(), {}) is None
        with pytest.raises(ValueError, match="Snap App ID"):
            body(app)

    def test_notes(self) -> None:
        old = conv(event_time=int(NOW) - 38 * 86400)
        paths = [n.path for n in snap.notes(old, Target(base_url="", pixel=""), NOW)]
        assert paths[:2] == ["event_time", "snapchat.pixel"]
        assert "37-day" in snap.notes(old, TARGET, NOW)[0].reason
        [hint] = [n for n in snap.notes(conv(), TARGET, NOW) if n.path == "user"]
        assert "ScCid" in hint.reason
        with_click = conv(user={"email": "a@b.co", "sc_click_id": "c"})
        assert [n.path for n in snap.notes(with_click, TARGET, NOW)] == []


def answer(status: int, payload: Any, **headers: str) -> Any:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return snap.classify(status, headers, raw)


class TestClassify:
    def test_valid_is_delivered(self) -> None:
        outcome = answer(200, {"status": "VALID", "reason": "Events have been processed."})
        assert outcome.verdict is Verdict.DELIVERED
        assert "Events have been processed." in outcome.reason

    def test_an_invalid_event_names_its_row(self) -> None:
        """§9: ``event`` is "the event identifier, only present in error responses"."""
        outcome = answer(
            400,
            {
                "status": "INVALID",
                "reason": "At least one of the events is invalid.",
                "event": 2,
                "errors": {"codes": ["X"], "error_msgs": ["Unhashed PII: data[2].user_data.em"]},
            },
        )
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 2
        assert not outcome.whole_request
        assert "Unhashed PII: data[2].user_data.em" in outcome.reason

    def test_a_refusal_naming_no_event_lets_the_worker_split(self) -> None:
        outcome = answer(400, {"status": "INVALID", "reason": "Invalid request"})
        assert (outcome.verdict, outcome.bad_index, outcome.whole_request) == (
            Verdict.PERMANENT,
            None,
            False,
        )

    @pytest.mark.parametrize("status", [401, 403, 404, 400])
    def test_credentials_pause_the_destination(self, status: int) -> None:
        outcome = answer(status, {"status": "INVALID", "reason": "Unauthorized resources"})
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request
        assert outcome.bad_index is None

    def test_rate_limit_and_server_errors_are_retried(self) -> None:
        limited = answer(
            429, {"status": "INVALID", "reason": "Too many requests"}, **{"Retry-After": "30"}
        )
        assert (limited.verdict, limited.retry_after) == (Verdict.RETRY, 30.0)
        for status in (500, 502, 503, 504, 408):
            assert answer(status, b"<html>nginx</html>").verdict is Verdict.RETRY

    @pytest.mark.parametrize(
        "payload", [b"<html>Welcome</html>", b"", b'{"status": "VA', b'{"ok": true}', b"[]"]
    )
    def test_a_2xx_that_is_not_snaps_answer_is_retried(self, payload: bytes) -> None:
        assert answer(200, payload).verdict is Verdict.RETRY

    def test_a_2xx_invalid_is_a_refusal(self) -> None:
        outcome = answer(200, {"status": "INVALID", "reason": "bad", "event": 0})
        assert (outcome.verdict, outcome.bad_index) == (Verdict.PERMANENT, 0)

    def test_the_test_event_tool_names_each_invalid_event(self) -> None:
        """§9 ValidateResponse: per-event ``event_logs``; a test event is validated, never
        recorded, so the valid ones are done and the invalid ones refused for good."""
        outcome = answer(
            400,
            {
                "status": "INVALID",
                "test_event": True,
                "reason": "At least one of the events is invalid.",
                "event_logs": [
                    {"event": 0, "status": "VALID", "errors": {"codes": [], "error_msgs": []}},
                    {
                        "event": 1,
                        "status": "INVALID",
                        "errors": {"codes": ["T"], "error_msgs": ["Timestamp invalid"]},
                    },
                ],
            },
        )
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {1: "Snapchat test event INVALID: Timestamp invalid"}
        assert outcome.partial

    def test_the_test_event_tool_all_valid(self) -> None:
        outcome = answer(
            200,
            {
                "status": "VALID",
                "test_event": True,
                "event_logs": [{"event": 0, "status": "VALID", "errors": {}}],
            },
        )
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {}
        assert "not recorded" in outcome.reason
