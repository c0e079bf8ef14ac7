"""TikTok Events API 2.0 builder and response classifier, plus the reference's golden vectors.

Golden vectors: ``/work/shared/reference/tiktok-events-api.md`` section 8. Digests the
reference prints are hard-coded; where it gives none, they are computed with ``hashlib``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import orjson
import pytest

from backchannel.destinations import tiktok
from backchannel.destinations.base import Target, Verdict
from backchannel.events import Conversion, normalize

NOW = 1_795_600_000
TARGET = Target(base_url="https://business-api.tiktok.com", pixel="CPIXEL123", token="tt-secret")
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_id": "evt-1", **fields}
    return normalize(data, now=NOW).conversion


def item(**fields: Any) -> dict[str, Any]:
    """The single data[] item TikTok would receive for one conversion."""
    body = tiktok.build_body([conv(**fields)], TARGET)
    assert len(body["data"]) == 1
    return body["data"][0]  # type: ignore[no-any-return]


def user(**user_fields: Any) -> dict[str, Any]:
    return item(user=user_fields)["user"]  # type: ignore[no-any-return]


class TestGoldenVectors:
    """Reference section 8, rows 1-16, as our documented rules apply them."""

    def test_row1_email(self) -> None:
        """Row 1: an email hashes to the reference digest (one value: sent as a string)."""
        assert user(email="coreytest1231@gmail.com")["email"] == (
            "eb9869a32b532840dd6aa714f7a872d21d6f650fc5aa933d9feefc64708969c7"
        )

    def test_row2_phone(self) -> None:
        """Row 2: '+1555-555-5555' hashes as '+15555555555'."""
        digest = "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0"
        assert digest == sha("+15555555555")
        assert user(phone="+1555-555-5555")["phone"] == digest

    def test_row3_external_id_lowercased(self) -> None:
        """Row 3: external_id 'testId123' hashes as 'testid123'."""
        assert user(external_id="testId123")["external_id"] == (
            "481f202262e9c5ccc48d24e60798fadaa5f6ff1f8369f7ab927c04c3aa682a7f"
        )

    def test_row4_iso_time_floored(self) -> None:
        """Row 4: '2024-01-08T13:52:50.212Z' becomes event_time 1704721970."""
        assert item(event_time="2024-01-08T13:52:50.212Z")["event_time"] == 1704721970

    def test_row5_ttclid_from_page_url(self) -> None:
        """Row 5: ttclid is taken from page.url and page.url is sent unchanged."""
        url = "http://demo.mywebsite.com?a=b&ttclid=123ATXSfe"
        sent = item(page={"url": url})
        assert sent["user"]["ttclid"] == "123ATXSfe"
        assert sent["page"] == {"url": url}

    def test_row6_two_emails(self) -> None:
        """Row 6: two emails give the two reference digests, in order, as a list."""
        sent = user(email=["bugsbunny@warnerbros.com", "daffyduck@warnerbros.com"])
        assert sent["email"] == [
            "67e28cdcc3e845d3a4da05ca9fe5ddb7320a83b4cc2167f0555a3b04f63511e3",
            "2d2fb2388f17f86affee71d632978425a3037fa8eed5b3f2baaa458c80d495ed",
        ]

    def test_row7_impossible_phone_dropped(self) -> None:
        """Row 7: Segment hashes '+12345678901234'; our phonenumbers rule drops it with a note.

        Documented divergence: +1 with 13 national digits cannot be a number, so its hash
        could match nobody; we refuse it instead of sending noise.
        """
        result = normalize(
            {"event": "Lead", "event_id": "e", "user": {"phone": "+12345678901234"}}, now=NOW
        )
        assert result.conversion.user.phone == []
        assert len(result.warnings) == 1
        assert result.warnings[0].path == "user.phone"
        assert "phone" not in tiktok.event(result.conversion)["user"]

    def test_row8_prehashed_passthrough(self) -> None:
        """Row 8: already-hashed 64-hex email and phone are returned unchanged."""
        email_digest = "eb9869a32b532840dd6aa714f7a872d21d6f650fc5aa933d9feefc64708969c7"
        phone_digest = "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0"
        sent = user(email=email_digest, phone=phone_digest)
        assert sent["email"] == email_digest
        assert sent["phone"] == phone_digest

    def test_row9_single_email_is_string(self) -> None:
        """Row 9: 'abc@xyz.com' gives the reference digest as a string, not a list."""
        assert user(email="abc@xyz.com")["email"] == (
            "ee278943de84e5d6243578ee1a1057bcce0e50daad9755f45dfa64b60b13bc5d"
        )

    def test_row10_names_trimmed_lowercased(self) -> None:
        """Row 10: ' test' / 'user ' hash to the reference digests."""
        sent = user(first_name=" test", last_name="user ")
        assert sent["first_name"] == (
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        )
        assert sent["last_name"] == (
            "04f8996da763b7a969b1028ee3007569eaf3a635486ddab211d512c85b9df8fb"
        )

    def test_row11_zip_follows_meta_rule(self) -> None:
        """Row 11: ' US - 1234-' hashes as 'us' under our (Meta SDK) zip rule.

        RudderStack removes spaces and dashes and keeps case, giving sha256('US1234') =
        2a29b91a…; we cut at the first '-' and lowercase so TikTok and Meta hashes agree.
        """
        sent = user(zip=" US - 1234-")
        assert sent["zip_code"] == sha("us")
        assert sent["zip_code"] != (
            "2a29b91aca86ff48c3defb1bbc2d33bf1da5ee5a235391322478fe7ff4503b77"
        )

    def test_row12_phone_list(self) -> None:
        """Row 12: '+12345432' gives the reference digest; '+134234325' is impossible, dropped.

        +1 with 7 national digits is a possible (local-only) NANP length, so it is hashed
        with its '+'; 8 national digits is not a NANP length, so our rule drops it.
        """
        result = normalize(
            {"event": "Lead", "event_id": "e", "user": {"phone": ["+12345432", "+134234325"]}},
            now=NOW,
        )
        sent = tiktok.event(result.conversion)["user"]
        assert sent["phone"] == "49a15e38bdc2572d362a924c2ddd100baed0fe29db44270d3700fcef03b18c39"
        assert [n.path for n in result.warnings] == ["user.phone[1]"]

    def test_row13_external_id_list(self) -> None:
        """Row 13: each external id (not 64-hex) is hashed; order kept."""
        sent = user(
            external_id=[
                "f0e388f53921a51f0bb0fc8a2944109ec188b5",
                "1f0bb0fc8a2944109ec188b59172935d8f23020b1614cc44bc",
            ]
        )
        assert sent["external_id"] == [
            "3e0c7a51acd326b87f29596e38c22cbeb732df37bc5c8f5f524c14b55d3472db",
            "f8be04e62f5a3eba31c8b9380843666f28f3ab5f44a380f47fac04e9ce7b2168",
        ]

    def test_row14_iso_time(self) -> None:
        """Row 14: '2020-09-17T19:49:27Z' becomes 1600372167."""
        assert item(event_time="2020-09-17T19:49:27Z")["event_time"] == 1600372167

    def test_row15_numbers_become_strings(self) -> None:
        """Row 15: order_id, shop_id and content ids given as numbers are sent as strings.

        RudderStack also sends ``contents_ids`` and a derived ``num_items``; we send
        TikTok's documented ``content_ids``, and the search text as ``query`` and
        ``search_string`` as RudderStack does (``num_items`` only when given).
        """
        props = item(
            event="Search",
            order_id=1234,
            shop_id=4567,
            query="shoes",
            contents=[{"id": 123}, {"id": 345}],
        )["properties"]
        assert props["order_id"] == "1234"
        assert props["shop_id"] == "4567"
        assert [c["content_id"] for c in props["contents"]] == ["123", "345"]
        assert props["content_ids"] == ["123", "345"]
        assert props["query"] == "shoes"
        assert props["search_string"] == "shoes"
        assert "num_items" not in props

    def test_row16_three_emails(self) -> None:
        """Row 16: three emails give the three reference digests."""
        sent = user(email=["user@sample.com", "sample@sample.com", "sample@rudder.com"])
        assert sent["email"] == [
            "a344da1fac6201ed1c1f20a07e1b55bb896a5ac0abd269c1e9daf1afbbffca3b",
            "774efc08cebab8c50c0f0eb2d3a2d2e560872a64f6c1617314c4f03b1c3d4dfa",
            "02e47a94635c1ffd6f6a69fe2c7a92dbfbb9d5e2ebddb54810520b34989b66a7",
        ]


class TestBody:
    def test_full_dtc_purchase(self) -> None:
        """A complete DTC CompletePayment produces exactly this request body."""
        conversion = normalize(
            {
                "event": "CompletePayment",
                "event_time": NOW - 600,
                "order_id": 1001,
                "value": 59.9,
                "currency": "usd",
                "description": "Spring order",
                "shop_id": "store-7",
                "contents": [
                    {
                        "id": 123,
                        "name": "Mug",
                        "category": "Kitchen",
                        "brand": "Acme",
                        "quantity": 2,
                        "price": 19.95,
                    },
                    {"id": "SKU-9", "price": 20.0},
                ],
                "user": {
                    "email": " Jane.Doe@Example.com ",
                    "phone": "+1 (415) 555-2671",
                    "external_id": "Cust-42",
                    "first_name": " Jane",
                    "last_name": "Doe ",
                    "zip": "94035-1234",
                    "city": "Mountain View",
                    "state": "CA",
                    "country": "US",
                    "ip": "93.184.216.34",
                    "user_agent": UA,
                    "locale": "en-US",
                    "ttp": "2Xa-ttp-cookie",
                    "ttclid": "E.C.P.clickid",
                },
                "page": {
                    "url": "https://shop.example/thanks?order=1001",
                    "referrer": "https://shop.example/checkout",
                },
            },
            now=NOW,
        ).conversion
        assert tiktok.build_body([conversion], TARGET) == {
            "event_source": "web",
            "event_source_id": "CPIXEL123",
            "data": [
                {
                    "event": "CompletePayment",
                    "event_time": NOW - 600,
                    "event_id": "CompletePayment-1001",
                    "user": {
                        "email": sha("jane.doe@example.com"),
                        "phone": sha("+14155552671"),
                        "external_id": sha("cust-42"),
                        "ttclid": "E.C.P.clickid",
                        "ttp": "2Xa-ttp-cookie",
                        "ip": "93.184.216.34",
                        "user_agent": UA,
                        "locale": "en-US",
                        "first_name": sha("jane"),
                        "last_name": sha("doe"),
                        "zip_code": sha("94035"),
                        "city": "mountainview",
                        "state": "ca",
                        "country": "us",
                    },
                    "properties": {
                        "contents": [
                            {
                                "content_id": "123",
                                "quantity": 2,
                                "price": 19.95,
                                "content_name": "Mug",
                                "content_category": "Kitchen",
                                "brand": "Acme",
                            },
                            {"content_id": "SKU-9", "quantity": 1, "price": 20.0},
                        ],
                        "content_ids": ["123", "SKU-9"],
                        "content_type": "product",
                        "value": 59.9,
                        "currency": "USD",
                        "order_id": "1001",
                        "shop_id": "store-7",
                        "description": "Spring order",
                    },
                    "limited_data_use": False,
                    "page": {
                        "url": "https://shop.example/thanks?order=1001",
                        "referrer": "https://shop.example/checkout",
                    },
                }
            ],
        }

    def test_saas_complete_registration(self) -> None:
        """A SaaS sign-up from the CRM produces exactly this request body."""
        conversion = normalize(
            {
                "event": "CompleteRegistration",
                "event_time": "2026-11-25T09:30:00Z",
                "event_id": "signup-u_42",
                "source": "crm",
                "limited_data_use": True,
                "user": {"email": "founder@startup.io", "external_id": "u_42"},
            },
            now=NOW,
        ).conversion
        target = dataclasses.replace(TARGET, source_ids={"crm": "CRMSET9"})
        assert tiktok.build_body([conversion], target) == {
            "event_source": "crm",
            "event_source_id": "CRMSET9",
            "data": [
                {
                    "event": "CompleteRegistration",
                    "event_time": 1795599000,
                    "event_id": "signup-u_42",
                    "user": {
                        "email": sha("founder@startup.io"),
                        "external_id": sha("u_42"),
                    },
                    "properties": {},
                    "limited_data_use": True,
                }
            ],
        }

    @pytest.mark.parametrize(
        ("source", "setting"),
        [
            ("offline", "BACKCHANNEL_TIKTOK_OFFLINE_EVENT_SET"),
            ("crm", "BACKCHANNEL_TIKTOK_CRM_EVENT_SET"),
            ("app", "BACKCHANNEL_TIKTOK_APP_ID"),
        ],
    )
    def test_source_without_configured_id_is_never_sent_with_the_pixel(
        self, source: str, setting: str
    ) -> None:
        """Issue 18.10: a non-web event with no configured id is not built with the web
        pixel code (TikTok would file it under the wrong event source); the reason names
        the setting, and notes() warns the same way (send --dry-run)."""
        assert tiktok.missing_source_id(conv(source=source), TARGET.source_ids) is not None
        with pytest.raises(tiktok.MissingEventSource) as info:
            tiktok.build_body([conv(source=source)], TARGET)
        assert setting in str(info.value)
        notes = tiktok.notes(conv(source=source), TARGET, NOW)
        assert any(n.path == "source" and setting in n.reason for n in notes)

    def test_web_needs_no_event_set(self) -> None:
        """Web events go with the pixel code; nothing is missing."""
        assert tiktok.missing_source_id(conv(source="web"), {}) is None

    def test_field_names(self) -> None:
        """User keys are phone (not phone_number), zip_code, ttp and ttclid."""
        sent = user(phone="+14155552671", zip="94035", ttp="ttp1", ttclid="click1")
        assert {"phone", "zip_code", "ttp", "ttclid"} <= sent.keys()
        assert not {"phone_number", "ph", "zip", "zp", "_ttp"} & sent.keys()

    @pytest.mark.parametrize("raw_id", [123, "123", " 123 "])
    def test_content_id_always_string(self, raw_id: Any) -> None:
        """content_id is the string '123' however the id was given."""
        props = item(contents=[{"id": raw_id}])["properties"]
        assert props["contents"][0]["content_id"] == "123"
        assert props["content_ids"] == ["123"]

    def test_single_value_is_string_multiple_is_list(self) -> None:
        """One email/phone/external_id goes as a string; several as a list."""
        one = user(email="a@x.com", phone="+14155552671", external_id="e1")
        assert one["email"] == sha("a@x.com")
        assert one["phone"] == sha("+14155552671")
        assert one["external_id"] == sha("e1")
        many = user(
            email=["a@x.com", "b@x.com"],
            phone=["+14155552671", "+442079460000"],
            external_id=["e1", "e2"],
        )
        assert many["email"] == [sha("a@x.com"), sha("b@x.com")]
        assert many["phone"] == [sha("+14155552671"), sha("+442079460000")]
        assert many["external_id"] == [sha("e1"), sha("e2")]

    def test_absent_identifiers_are_omitted(self) -> None:
        """A user with nothing known sends an empty user object, no null keys."""
        assert user() == {}

    def test_test_event_code_at_top_level(self) -> None:
        """test_event_code sits beside data[], not inside the events."""
        body = tiktok.build_body([conv(test_event_code="TEST123")], TARGET)
        assert body["test_event_code"] == "TEST123"
        assert "test_event_code" not in body["data"][0]

    def test_no_test_event_code_key_in_production(self) -> None:
        """Production batches carry no test_event_code key."""
        assert "test_event_code" not in tiktok.build_body([conv()], TARGET)


class TestBatch:
    def test_batch_keeps_order(self) -> None:
        """data[] holds the batch's events in order."""
        batch = [conv(event_id=f"e{i}") for i in range(3)]
        body = tiktok.build_body(batch, TARGET)
        assert [e["event_id"] for e in body["data"]] == ["e0", "e1", "e2"]

    def test_mixed_sources_rejected(self) -> None:
        """A batch mixing web and crm events raises ValueError."""
        with pytest.raises(ValueError, match="source"):
            tiktok.build_body([conv(), conv(source="crm")], TARGET)

    def test_mixed_test_codes_rejected(self) -> None:
        """A batch mixing test and production events raises ValueError."""
        with pytest.raises(ValueError, match="test_event_code"):
            tiktok.build_body([conv(test_event_code="T1"), conv()], TARGET)

    def test_1000_accepted_1001_rejected(self) -> None:
        """1000 events fit in a request; 1001 raise ValueError."""
        one = conv()
        assert len(tiktok.build_body([one] * 1000, TARGET)["data"]) == 1000
        with pytest.raises(ValueError, match="1000"):
            tiktok.build_body([one] * 1001, TARGET)

    def test_empty_batch_rejected(self) -> None:
        """An empty batch raises ValueError."""
        with pytest.raises(ValueError, match="empty"):
            tiktok.build_body([], TARGET)


class TestPrepare:
    def test_access_token_header_is_raw(self) -> None:
        """The token goes in Access-Token as-is, without 'Bearer'."""
        request = tiktok.prepare([conv()], TARGET)
        assert request.headers["Access-Token"] == "tt-secret"
        assert "Authorization" not in request.headers
        assert request.headers["Content-Type"] == "application/json"

    def test_url(self) -> None:
        """The URL is the base URL plus /open_api/v1.3/event/track/."""
        request = tiktok.prepare([conv()], dataclasses.replace(TARGET, base_url="http://mock:9/"))
        assert request.url == "http://mock:9/open_api/v1.3/event/track/"
        assert tiktok.prepare([conv()], TARGET).url.endswith("/open_api/v1.3/event/track/")

    def test_content_is_the_body_as_json(self) -> None:
        """The bytes sent are the JSON of body, and neither holds the token."""
        request = tiktok.prepare([conv(), conv(event_id="e2")], TARGET)
        assert orjson.loads(request.content) == request.body
        assert request.count == 2
        assert b"tt-secret" not in request.content
        assert "tt-secret" not in request.url


def classify(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return tiktok.classify(status, headers or {}, raw)


class TestClassify:
    @pytest.mark.parametrize("code", [0, 20001])
    def test_delivered_codes(self, code: int) -> None:
        """Codes 0 and 20001 mean delivered; request_id is kept as platform_ref."""
        outcome = classify(200, {"code": code, "message": "OK", "request_id": "req-1"})
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.platform_ref == "req-1"

    @pytest.mark.parametrize("code", [40100, 50000, 50002, 51010])
    def test_retry_codes(self, code: int) -> None:
        """Rate limit and platform-side transient codes are retried."""
        outcome = classify(200, {"code": code, "message": "later", "request_id": "r"})
        assert outcome.verdict is Verdict.RETRY
        assert outcome.platform_ref == "r"

    @pytest.mark.parametrize("code", [40001, 40002, 40105])
    def test_permanent_codes(self, code: int) -> None:
        """Permission, validation and token errors are permanent."""
        outcome = classify(200, {"code": code, "message": "nope", "request_id": "r"})
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index is None
        assert str(code) in outcome.reason

    @pytest.mark.parametrize(("code", "whole"), [(40001, True), (40105, True), (40002, False)])
    def test_account_refusals_concern_whole_request(self, code: int, whole: bool) -> None:
        """Permission/token refusals are flagged whole_request; a payload error is not."""
        outcome = classify(200, {"code": code, "message": "x", "request_id": "r"})
        assert outcome.whole_request is whole

    def test_40002_names_bad_row(self) -> None:
        """'Batch.7.properties…' in a 40002 message gives bad_index 7."""
        message = "Batch.7.properties.contents.0.content_id: Not a valid string"
        outcome = classify(200, {"code": 40002, "message": message, "request_id": "r"})
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 7
        assert message in outcome.reason

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_http_5xx_retried(self, status: int) -> None:
        """Real HTTP 5xx responses are retried."""
        assert classify(status, b"").verdict is Verdict.RETRY

    def test_html_502_retried(self) -> None:
        """An nginx HTML 502 page is retried, its text kept for diagnosis."""
        html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        outcome = classify(502, html)
        assert outcome.verdict is Verdict.RETRY
        assert "502 Bad Gateway" in outcome.response

    def test_429_retried_with_retry_after(self) -> None:
        """HTTP 429 is retried and its Retry-After seconds are read."""
        outcome = classify(429, b"", {"Retry-After": "17"})
        assert outcome.verdict is Verdict.RETRY
        assert outcome.retry_after == 17.0

    def test_200_html_is_not_delivered(self) -> None:
        """A 200 without TikTok's JSON envelope is not taken as delivered."""
        assert classify(200, b"<html>captive portal</html>").verdict is Verdict.RETRY

    def test_200_without_code_is_not_delivered(self) -> None:
        """A 200 JSON body without an integer code is not taken as delivered."""
        assert classify(200, {"message": "OK"}).verdict is Verdict.RETRY

    def test_other_4xx_is_permanent(self) -> None:
        """HTTP 401 is permanent."""
        assert classify(401, b"unauthorized").verdict is Verdict.PERMANENT


#: crm events (no page.url note) with their event set configured (no source note) and an
#: email (no note that TikTok has nothing to match a CRM event on)
CRM_TARGET = dataclasses.replace(TARGET, source_ids={"crm": "CRMSET9"})
CRM_USER = {"email": "lead@example.com"}


class TestNotes:
    def test_clean_web_event_has_no_notes(self) -> None:
        """A web Lead with page.url, ip and user_agent draws no TikTok notes."""
        c = conv(page={"url": "https://s.example/"}, user={"ip": "8.8.8.8", "user_agent": UA})
        assert tiktok.notes(c, TARGET, NOW) == []

    def test_older_than_seven_days(self) -> None:
        """An event more than 7 days old gets an event_time note; 7 days exactly does not."""
        page = {"url": "https://s.example/"}
        old = conv(event_time=NOW - 7 * 86400 - 1, page=page)
        edge = conv(event_time=NOW - 7 * 86400, page=page)
        assert [n.path for n in tiktok.notes(old, TARGET, NOW)] == ["event_time"]
        assert tiktok.notes(edge, TARGET, NOW) == []

    def test_missing_pixel_and_page_url(self) -> None:
        """No pixel configured and no page.url on a web event are both named."""
        found = tiktok.notes(conv(), dataclasses.replace(TARGET, pixel=""), NOW)
        assert {n.path for n in found} == {"tiktok.pixel", "page.url"}

    def test_payment_without_contents(self) -> None:
        """A payment event without contents gets a contents recommendation."""
        c = conv(event="Purchase", value=1, currency="USD", source="crm", user=CRM_USER)
        assert [n.path for n in tiktok.notes(c, CRM_TARGET, NOW)] == ["contents"]

    def test_ip_without_user_agent(self) -> None:
        """ip without user_agent draws a 'user' note."""
        c = conv(source="crm", user={**CRM_USER, "ip": "8.8.8.8"})
        assert [n.path for n in tiktok.notes(c, CRM_TARGET, NOW)] == ["user"]
