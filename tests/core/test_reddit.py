"""Reddit Conversions API v3 builder, email rule and response classifier (docs/platforms/reddit.md).

Golden bodies are literal JSON; their hashes are hashlib over literal strings written here,
never our normalizer's or builder's output. Reddit's own example digest of
``alice@example.com`` (its Manual Advanced Matching page) is written out as Reddit prints it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from backchannel import identifiers
from backchannel.destinations import meta, reddit, tiktok
from backchannel.destinations.base import Target, Verdict
from backchannel.events import Conversion, normalize
from backchannel.identity import Unusable

NOW = 1_795_600_000
WHEN = NOW - 3600
WHEN_MS = 1_795_596_400_000
TOKEN = "rdt-conversion-token-0123456789"
TARGET = Target(base_url="https://ads-api.reddit.com", pixel="a2_testpixel01", token=TOKEN)
UUID = "1677712978045.b8f7eb7d-b357-437b-8bd3-e1c8166c7132"
#: Reddit's documented digest of alice@example.com (and of Al.ice$+Apple@Example.Com)
ALICE = "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {
        "event": "Lead",
        "event_id": "evt-1",
        "event_time": WHEN,
        "user": {"email": "ann@example.com"},
        **fields,
    }
    return normalize(data, now=NOW).conversion


def body(*conversions: Conversion) -> dict[str, Any]:
    return reddit.build_body(list(conversions), TARGET)


def one(conversion: Conversion) -> dict[str, Any]:
    [item] = body(conversion)["data"]["events"]
    return item


class TestGoldenBodies:
    def test_purchase(self) -> None:
        """Every mapped field: ms time, type, source URL, click id from the landing URL,
        the _rdt_uuid cookie, Reddit's email form, +E.164 phone, metadata with products."""
        conversion = conv(
            event="CompletePayment",
            event_id=None,  # derived from the order: CompletePayment-1001
            order_id=1001,
            value=59.9,
            currency="usd",
            contents=[
                {"id": "SKU-1", "name": "Tee", "category": "Shirts", "quantity": 2, "price": 20.0},
                {"id": "SKU-2", "quantity": 1, "price": 19.9},
            ],
            user={
                "email": " Al.ice$+Apple@Example.Com ",
                "phone": "+1 (415) 555-2671",
                "external_id": "Cust-42",
                "ip": "81.2.69.160",
                "user_agent": "Mozilla/5.0 Test",
                "rdt_uuid": UUID,
            },
            page={"url": "https://shop.example/thanks?rdt_cid=3184742045291813272"},
        )
        assert body(conversion) == {
            "data": {
                "events": [
                    {
                        "event_at": WHEN_MS,
                        "action_source": "WEBSITE",
                        "type": {"tracking_type": "PURCHASE"},
                        "event_source_url": "https://shop.example/thanks?rdt_cid=3184742045291813272",
                        "click_id": "3184742045291813272",
                        "metadata": {
                            "conversion_id": "CompletePayment-1001",
                            "value": 59.9,
                            "currency": "USD",
                            "item_count": 3,
                            "products": [
                                {
                                    "id": "SKU-1",
                                    "name": "Tee",
                                    "category": "Shirts",
                                    "quantity": 2,
                                    "item_price": 20.0,
                                },
                                {"id": "SKU-2", "quantity": 1, "item_price": 19.9},
                            ],
                        },
                        "user": {
                            "email": ALICE,
                            "phone_number": sha("+14155552671"),
                            "external_id": sha("cust-42"),
                            "ip_address": "81.2.69.160",
                            "user_agent": "Mozilla/5.0 Test",
                            "uuid": UUID,
                        },
                    }
                ]
            }
        }

    def test_a_lead_with_only_an_email(self) -> None:
        """No page, no contents: no event_source_url, products or item_count keys at all."""
        assert one(conv(event="Lead", event_id="lead-7")) == {
            "event_at": WHEN_MS,
            "action_source": "WEBSITE",
            "type": {"tracking_type": "LEAD"},
            "metadata": {"conversion_id": "lead-7"},
            "user": {"email": sha("ann@example.com")},
        }

    def test_a_custom_event_carries_its_name_in_type(self) -> None:
        item = one(conv(event="StartTrial", value=9.0, currency="EUR"))
        assert item["type"] == {"tracking_type": "CUSTOM", "custom_event_name": "StartTrial"}
        assert item["metadata"] == {"conversion_id": "evt-1", "value": 9.0, "currency": "EUR"}

    def test_event_at_is_in_milliseconds(self) -> None:
        assert one(conv(event_time=1_795_000_123))["event_at"] == 1_795_000_123_000

    def test_limited_data_use(self) -> None:
        user = one(conv(limited_data_use=True))["user"]
        assert user["data_processing_options"] == {"modes": ["LDU"]}

    def test_one_value_per_match_key(self) -> None:
        """Reddit's email, phone_number and external_id are strings: the first is sent."""
        user = one(conv(user={"email": ["b@example.com", "c@example.com"]}))["user"]
        assert user == {"email": sha("b@example.com")}

    @pytest.mark.parametrize(
        ("source", "action_source"),
        [("web", "WEBSITE"), ("app", "APP"), ("offline", "PHYSICAL_STORE"), ("crm", "OTHER")],
    )
    def test_action_source(self, source: str, action_source: str) -> None:
        assert one(conv(source=source))["action_source"] == action_source

    def test_offline_events_carry_no_device_identifiers(self) -> None:
        """§3.2: offline events send hashed email/phone, no click id, UUID or device data."""
        item = one(
            conv(
                source="offline",
                user={
                    "email": "ann@example.com",
                    "rdt_cid": "click-1",
                    "rdt_uuid": UUID,
                    "ip": "81.2.69.160",
                    "user_agent": "UA",
                },
                page={"url": "https://shop.example/p"},
            )
        )
        assert "click_id" not in item
        assert "event_source_url" not in item
        assert item["user"] == {"email": sha("ann@example.com")}


class TestEventNames:
    @pytest.mark.parametrize(
        ("event", "tracking_type"),
        [
            ("ViewContent", "VIEW_CONTENT"),
            ("Search", "SEARCH"),
            ("AddToWishlist", "ADD_TO_WISHLIST"),
            ("AddToCart", "ADD_TO_CART"),
            ("CompletePayment", "PURCHASE"),
            ("Purchase", "PURCHASE"),
            ("CompleteRegistration", "SIGN_UP"),
            ("Lead", "LEAD"),
            ("SubmitForm", "LEAD"),
        ],
    )
    def test_standard_events(self, event: str, tracking_type: str) -> None:
        extra = (
            {"value": 1.0, "currency": "USD"} if event in ("CompletePayment", "Purchase") else {}
        )
        assert one(conv(event=event, **extra))["type"] == {"tracking_type": tracking_type}

    @pytest.mark.parametrize(
        "event", ["InitiateCheckout", "AddPaymentInfo", "PlaceAnOrder", "Subscribe", "Contact"]
    )
    def test_other_catalog_events_are_custom_under_their_own_name(self, event: str) -> None:
        """PlaceAnOrder is not a second PURCHASE next to CompletePayment (counted twice)."""
        extra = {"value": 1.0, "currency": "USD"} if event in ("PlaceAnOrder", "Subscribe") else {}
        kind = one(conv(event=event, **extra))["type"]
        assert kind == {"tracking_type": "CUSTOM", "custom_event_name": event}

    def test_a_custom_name_over_64_characters_is_refused(self) -> None:
        long_name = "A" + "b" * 64
        notes = reddit.refusals(conv(event=long_name))
        assert [n.path for n in notes] == ["event"]
        assert "64" in notes[0].reason
        assert reddit.refusals(conv(event="A" + "b" * 63)) == []


class TestMetadataByType:
    def test_value_is_not_sent_on_types_that_do_not_take_it(self) -> None:
        """§3.3: value/currency only on carts, wishlists, purchases, leads, sign-ups, custom."""
        conversion = conv(
            event="ViewContent", value=5.0, currency="USD", contents=[{"id": "S", "quantity": 2}]
        )
        assert one(conversion)["metadata"] == {
            "conversion_id": "evt-1",
            "products": [{"id": "S", "quantity": 2}],
        }
        assert any(n.path == "value" for n in reddit.notes(conversion, TARGET, NOW))

    def test_item_count_only_on_types_that_take_it(self) -> None:
        """A lead takes value but not item_count; an add-to-cart takes both."""
        contents = [{"id": "S", "quantity": 2, "price": 2.5}]
        lead = one(conv(event="Lead", value=5.0, currency="USD", contents=contents))
        assert "item_count" not in lead["metadata"]
        assert lead["metadata"]["value"] == 5.0
        cart = one(conv(event="AddToCart", value=5.0, currency="USD", contents=contents))
        assert cart["metadata"]["item_count"] == 2


class TestEmailForm:
    @pytest.mark.parametrize(
        ("raw", "reddit_form"),
        [
            ("Al.ice$+Apple@Example.Com", "alice@example.com"),
            (" jo.hn_doe-1@Shop.example ", "johndoe1@shop.example"),
            ("Jo.Hn.Doe@GMail.com", "johndoe@gmail.com"),
            ("a+b+c@example.org", "a@example.org"),
        ],
    )
    def test_reddit_rule(self, raw: str, reddit_form: str) -> None:
        assert reddit.normalize_email(raw) == reddit_form

    def test_reddits_documented_example_hash(self) -> None:
        """Both of Reddit's example addresses hash to its documented digest."""
        for raw in ("alice@example.com", "Al.ice$+Apple@Example.Com"):
            assert one(conv(user={"email": raw}))["user"]["email"] == ALICE

    @pytest.mark.parametrize("raw", ["+tag@example.com", "...@example.com", "not-an-address"])
    def test_nothing_left_is_unusable(self, raw: str) -> None:
        with pytest.raises(Unusable):
            reddit.normalize_email(raw)

    def test_an_address_empty_under_reddits_rule_goes_to_the_others_only(self) -> None:
        """``+tag@example.com`` is an address under the common rule but nothing under
        Reddit's: Meta and TikTok get it, Reddit gets no email rather than a wrong one."""
        conversion = conv(user={"email": "+tag@example.com", "external_id": "c-1"})
        assert conversion.user.email == [sha("+tag@example.com")]
        assert "email" not in one(conversion)["user"]

    def test_meta_and_tiktok_keep_the_common_form_for_the_same_address(self) -> None:
        """One conversion, three bodies: only Reddit's email is Reddit's form."""
        conversion = conv(
            event="Lead",
            user={"email": " Jo.Hn+News@Example.com ", "user_agent": "UA"},
            page={"url": "https://shop.example/signup"},
        )
        common = sha("jo.hn+news@example.com")
        assert conversion.user.email_forms["reddit"] == [sha("john@example.com")]
        assert one(conversion)["user"]["email"] == sha("john@example.com")
        [meta_event] = meta.build_body([conversion], TARGET)["data"]
        assert meta_event["user_data"]["em"] == [common]
        [tiktok_event] = tiktok.build_body([conversion], TARGET)["data"]
        assert tiktok_event["user"]["email"] == common

    def test_the_form_is_declared_on_the_seam(self) -> None:
        assert reddit.EMAIL_FORM == "reddit"
        assert identifiers.email_forms()["reddit"] is reddit.normalize_email

    def test_a_pre_hashed_address_is_sent_as_given(self) -> None:
        digest = sha("someone@example.com")
        assert one(conv(user={"email": digest.upper()}))["user"]["email"] == digest

    def test_the_reddit_form_is_among_the_hashed_values(self) -> None:
        """The PII audit checks every hashed value: Reddit's form is one of them."""
        user = conv(user={"email": "x.y@example.com"}).user
        assert sha("xy@example.com") in user.hashed_values()


class TestClickIdAndCookie:
    def test_from_the_canonical_user_object(self) -> None:
        item = one(conv(user={"email": "ann@example.com", "rdt_cid": "c-9", "rdt_uuid": UUID}))
        assert item["click_id"] == "c-9"
        assert item["user"]["uuid"] == UUID

    def test_the_click_id_from_the_landing_url(self) -> None:
        url = "https://shop.example/p?utm_source=reddit&rdt_cid=t3_abc%2B1#top"
        assert one(conv(page={"url": url}))["click_id"] == "t3_abc+1"

    def test_the_given_click_id_wins_over_the_url(self) -> None:
        conversion = conv(
            user={"email": "a@example.com", "rdt_cid": "given"},
            page={"url": "https://shop.example/p?rdt_cid=from-url"},
        )
        assert one(conversion)["click_id"] == "given"

    def test_a_bare_uuid_is_taken(self) -> None:
        bare = "b8f7eb7d-b357-437b-8bd3-e1c8166c7132"
        assert one(conv(user={"email": "a@example.com", "rdt_uuid": bare}))["user"]["uuid"] == bare

    @pytest.mark.parametrize(
        "bad",
        [
            "1700000000.abcd-uuid",
            "not a uuid",
            "1677712978045.b8f7eb7d-b357-437b-7bd3-e1c8166c7132",
        ],
    )
    def test_a_malformed_uuid_is_left_out_with_a_warning(self, bad: str) -> None:
        """Reddit refuses the whole request over a non-RFC-4122 uuid (§9)."""
        conversion = conv(user={"email": "a@example.com", "rdt_uuid": bad})
        assert "uuid" not in one(conversion)["user"]
        notes = reddit.notes(conversion, TARGET, NOW)
        assert any(n.path == "user.rdt_uuid" for n in notes)

    def test_declared_on_the_seam(self) -> None:
        declared = {i.field: i for i in reddit.IDENTIFIERS}
        assert declared["rdt_cid"].url_param == "rdt_cid"
        assert declared["rdt_cid"].kind == "click"
        assert declared["rdt_uuid"].cookie == "_rdt_uuid"
        assert declared["rdt_uuid"].kind == "browser"


class TestTestEvents:
    def test_the_test_id_rides_in_data(self) -> None:
        assert body(conv(test_event_code="T-123"))["data"]["test_id"] == "T-123"
        assert "test_id" not in body(conv())["data"]

    def test_each_test_event_has_a_request_of_its_own(self) -> None:
        """Event Testing shows one event per request (§1): distinct keys per test event,
        one shared key for production."""
        first = conv(event_id="a", test_event_code="T")
        second = conv(event_id="b", test_event_code="T")
        assert reddit.batch_key(first) != reddit.batch_key(second)
        assert reddit.batch_key(conv(event_id="a")) == reddit.batch_key(conv(event_id="b")) == ""

    def test_a_batch_of_two_test_events_is_not_built(self) -> None:
        with pytest.raises(ValueError, match="one event per request"):
            body(conv(event_id="a", test_event_code="T"), conv(event_id="b", test_event_code="T"))

    def test_test_and_production_never_share_a_request(self) -> None:
        with pytest.raises(ValueError, match="share test_event_code"):
            body(conv(event_id="a"), conv(event_id="b", test_event_code="T"))


class TestRequest:
    def test_url_headers_and_no_token_in_url_or_body(self) -> None:
        request = reddit.prepare([conv(), conv(event_id="evt-2")], TARGET)
        assert (
            request.url
            == "https://ads-api.reddit.com/api/v3/pixels/a2_testpixel01/conversion_events"
        )
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
        agent = request.headers["User-Agent"]
        assert agent.startswith("Backchannel/")
        assert "httpx" not in agent.lower()
        assert TOKEN not in request.url
        assert TOKEN.encode() not in request.content
        assert TOKEN not in orjson.dumps(request.body).decode()
        assert orjson.loads(request.content) == request.body
        assert request.count == 2

    def test_1000_events_per_request(self) -> None:
        assert reddit.max_batch == 1000
        with pytest.raises(ValueError, match="at most 1000"):
            body(*[conv(event_id=f"e{i}") for i in range(1001)])

    def test_the_seven_day_window(self) -> None:
        assert reddit.max_age(conv()) == 7 * 86400
        old = conv(event_time=NOW - 8 * 86400)
        assert any(n.path == "event_time" for n in reddit.notes(old, TARGET, NOW + 0))


class TestRefusals:
    def test_an_event_without_any_match_key_is_refused(self) -> None:
        notes = reddit.refusals(conv(user={"country": "us"}))
        assert [n.path for n in notes] == ["user"]

    @pytest.mark.parametrize(
        "user",
        [
            {"email": "a@example.com"},
            {"phone": "+14155552671"},
            {"external_id": "c-1"},
            {"rdt_cid": "click"},
            {"rdt_uuid": UUID},
            {"ip": "81.2.69.160", "user_agent": "UA"},
        ],
    )
    def test_any_one_match_key_is_enough(self, user: dict[str, str]) -> None:
        assert reddit.refusals(conv(user=user)) == []

    def test_ip_without_user_agent_is_not_a_match_key(self) -> None:
        assert reddit.refusals(conv(user={"ip": "81.2.69.160"})) != []


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "body", "verdict", "whole"),
        [
            (200, b'{"data": {"message": "Successfully processed 2 conversion events."}}',
             Verdict.DELIVERED, False),
            (200, b"", Verdict.RETRY, False),
            (200, b"<html>proxy</html>", Verdict.RETRY, False),
            (200, b'{"code": 0, "message": "O', Verdict.RETRY, False),
            (400, b'{"error": {"code": 400, "message": "Bad Request"}}', Verdict.PERMANENT, False),
            (401, b'{"error": {"code": 401, "message": "UNAUTHORIZED"}}', Verdict.PERMANENT, True),
            (401, b"", Verdict.PERMANENT, True),
            (403, b'{"error": {"code": 403, "message": "You\'re not authorized"}}',
             Verdict.PERMANENT, True),
            (404, b"", Verdict.PERMANENT, True),
            (429, b'{"error": {"code": 429, "message": "Too many requests/events"}}',
             Verdict.RETRY, False),
            (408, b"", Verdict.RETRY, False),
            (500, b"", Verdict.RETRY, False),
            (503, b"<html>", Verdict.RETRY, False),
        ],
    )  # fmt: skip
    def test_table(self, status: int, body: bytes, verdict: Verdict, whole: bool) -> None:
        outcome = reddit.classify(status, {}, body)
        assert outcome.verdict is verdict
        assert outcome.whole_request is whole
        assert outcome.bad_index is None

    def test_success_counts_the_events_taken(self) -> None:
        answer = b'{"data": {"message": "Successfully processed 2 conversion events."}}'
        outcome = reddit.classify(200, {}, answer)
        assert outcome.received == 2
        assert outcome.reason == "Successfully processed 2 conversion events."

    def test_the_row_a_field_error_names(self) -> None:
        """The real v3 answer Segment recorded (§9): the row is read from the JSONPath."""
        answer = {
            "error": {
                "code": 400,
                "message": "There were 1 invalid conversion events. None were processed.",
                "fields": [
                    {
                        "field": "$.data.events[3].user.UUID",
                        "message": "user.UUID: ... invalid UUID: UUID must be RFC-4122 compliant",
                    }
                ],
            }
        }
        outcome = reddit.classify(400, {}, orjson.dumps(answer))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 3
        assert not outcome.whole_request
        assert "None were processed" in outcome.reason
        assert "RFC-4122" in outcome.reason

    def test_several_rows_named_the_first_is_blamed(self) -> None:
        """The worker dead-letters it and resends the rest, which names the next."""
        fields = [
            {"field": "$.data.events[7].event_at", "message": "too old"},
            {"field": "$.data.events[2].type.tracking_type", "message": "bad"},
        ]
        answer = {"error": {"code": 400, "message": "There were 2 …", "fields": fields}}
        assert reddit.classify(400, {}, orjson.dumps(answer)).bad_index == 2

    def test_retry_after_is_read(self) -> None:
        assert reddit.classify(429, {"retry-after": "7"}, b"").retry_after == 7.0

    def test_the_user_agent_throttle_is_retried_with_its_message(self) -> None:
        answer = (
            b'{"error": {"code": 429, "message": "Your user agent was automatically ratelimited."}}'
        )
        outcome = reddit.classify(429, {}, answer)
        assert outcome.verdict is Verdict.RETRY
        assert "user agent" in outcome.reason
