"""The TikTok emulator refuses what TikTok refuses, in TikTok's shapes (reference §1-§4)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from backchannel.destinations import tiktok as tiktok_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import (
    REMOVE,
    START,
    TIKTOK_PIXEL,
    TOKEN,
    FakeClock,
    listed,
    post_tiktok,
    sha,
    stats,
    tiktok_body,
    tiktok_event,
)


def refused(response: httpx.Response, code: int) -> str:
    """Assert a TikTok business error (always HTTP 200) and return its message."""
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == code, body
    assert body["request_id"]
    assert body["data"] == {}
    message: str = body["message"]
    return message


def invalid_row(response: httpx.Response, index: int, path: str) -> str:
    """Assert a 40002 naming row ``index`` and ``path``, in the form our worker parses."""
    message = refused(response, 40002)
    assert message.startswith(f"Batch.{index}.{path}: "), message
    return message


def with_user(**fields: Any) -> dict[str, Any]:
    user = tiktok_event()["user"]
    user.update(fields)
    return tiktok_body([tiktok_event(user=user)])


class TestAccessToken:
    def test_missing_token_is_40105(self, http: httpx.Client) -> None:
        """No Access-Token header: HTTP 200, code 40105."""
        assert "token" in refused(post_tiktok(http, token=None), 40105).lower()

    def test_wrong_token_is_40105(self, http: httpx.Client) -> None:
        """A token other than the configured one: code 40105."""
        refused(post_tiktok(http, token="someone-else"), 40105)

    def test_bearer_prefix_is_40105(self, http: httpx.Client) -> None:
        """The right token behind 'Bearer ' is refused, the known cause of 40105 (§1)."""
        refused(post_tiktok(http, token=f"Bearer {TOKEN}"), 40105)

    def test_refused_token_stores_nothing(self, http: httpx.Client) -> None:
        """A refused token leaves no event behind."""
        post_tiktok(http, token="wrong")
        assert stats(http, "tiktok")["accepted_events"] == 0

    def test_any_token_accepted_when_none_configured(self) -> None:
        """With token=None any non-empty token works, and an empty one still does not."""
        app = create_app(SandboxConfig(clock=FakeClock()))
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
            assert post_tiktok(client, token="anything").json()["code"] == 0
            refused(post_tiktok(client, token=""), 40105)


class TestRequest:
    def test_valid_request_succeeds(self, http: httpx.Client) -> None:
        """A valid body gets TikTok's success envelope with a request_id."""
        response = post_tiktok(http)
        assert response.status_code == 200
        body = response.json()
        assert body["code"] == 0
        assert body["message"] == "OK"
        assert body["data"] == {}
        assert body["request_id"]

    def test_request_ids_are_unique(self, http: httpx.Client) -> None:
        """Every response carries its own request_id."""
        ids = {post_tiktok(http).json()["request_id"] for _ in range(5)}
        assert len(ids) == 5

    def test_malformed_json_is_40002(self, http: httpx.Client) -> None:
        """Unparsable JSON: HTTP 200, code 40002, no row blamed."""
        message = refused(post_tiktok(http, content=b'{"event_source": "web",'), 40002)
        assert "JSON" in message
        assert not message.startswith("Batch.")

    def test_body_must_be_an_object(self, http: httpx.Client) -> None:
        """A JSON array as the body is a 40002."""
        refused(post_tiktok(http, content=b"[]"), 40002)

    @pytest.mark.parametrize("source", ["website", "WEB", "", 3, None])
    def test_event_source_must_be_known(self, http: httpx.Client, source: Any) -> None:
        """event_source outside web/app/offline/crm is a 40002 naming event_source."""
        body = tiktok_body(event_source=REMOVE if source is None else source)
        assert refused(post_tiktok(http, body), 40002).startswith("event_source: ")

    @pytest.mark.parametrize("source", ["web", "app", "offline", "crm"])
    def test_every_event_source_is_accepted(self, http: httpx.Client, source: str) -> None:
        """All four documented event sources are accepted."""
        assert post_tiktok(http, tiktok_body(event_source=source)).json()["code"] == 0

    @pytest.mark.parametrize("pixel", [REMOVE, "", 42])
    def test_event_source_id_required(self, http: httpx.Client, pixel: Any) -> None:
        """A missing, empty or non-string event_source_id is a 40002 naming it."""
        message = refused(post_tiktok(http, tiktok_body(event_source_id=pixel)), 40002)
        assert message.startswith("event_source_id: ")

    def test_foreign_pixel_is_40001(self, http: httpx.Client) -> None:
        """A pixel other than the configured one: 40001 with TikTok's wording and the code."""
        message = refused(post_tiktok(http, tiktok_body(event_source_id="CSOMEONEELSE")), 40001)
        assert message.startswith("No permission to operate pixel code: CSOMEONEELSE")

    @pytest.mark.parametrize("data", [REMOVE, {}, "[]"])
    def test_data_must_be_a_list(self, http: httpx.Client, data: Any) -> None:
        """A missing or non-list data is a 40002 naming data."""
        assert refused(post_tiktok(http, tiktok_body(data=data)), 40002).startswith("data: ")

    @pytest.mark.parametrize("count", [0, 1001])
    def test_data_length_is_1_to_1000(self, http: httpx.Client, count: int) -> None:
        """0 or 1001 events is a 40002 naming data, not any row."""
        events = [tiktok_event(event_id=f"e{i}") for i in range(count)]
        message = refused(post_tiktok(http, tiktok_body(events)), 40002)
        assert message.startswith("data: ")

    def test_1000_events_are_accepted(self, http: httpx.Client) -> None:
        """A full batch of 1000 is accepted and every event stored."""
        events = [tiktok_event(event_id=f"e{i}") for i in range(1000)]
        assert post_tiktok(http, tiktok_body(events)).json()["code"] == 0
        assert stats(http, "tiktok")["accepted_events"] == 1000

    def test_one_bad_row_refuses_the_whole_batch(self, http: httpx.Client) -> None:
        """Row 2 bad: the message names Batch.2 and none of the 3 rows is stored (§3)."""
        events = [tiktok_event(event_id=f"e{i}") for i in range(3)]
        events[2]["event_time"] = str(START)
        invalid_row(post_tiktok(http, tiktok_body(events)), 2, "event_time")
        assert stats(http, "tiktok")["accepted_events"] == 0

    def test_worker_parser_finds_the_bad_row(self, http: httpx.Client) -> None:
        """Our classifier reads the sandbox's 40002 as PERMANENT with the right bad_index."""
        events = [tiktok_event(event_id=f"e{i}") for i in range(5)]
        events[3]["properties"]["contents"][0]["content_id"] = 7
        response = post_tiktok(http, tiktok_body(events))
        outcome = tiktok_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 3

    def test_unknown_item_key_is_refused(self, http: httpx.Client) -> None:
        """A legacy Events 1.0 key such as 'timestamp' in a row is a 40002 naming it."""
        body = tiktok_body([tiktok_event(timestamp="2025-06-15T00:00:00Z")])
        assert "Unknown field" in invalid_row(post_tiktok(http, body), 0, "timestamp")

    def test_row_must_be_an_object(self, http: httpx.Client) -> None:
        """A row that is not an object is blamed by index."""
        rows: list[Any] = [tiktok_event(), "x"]
        invalid_row(post_tiktok(http, tiktok_body(rows)), 1, "_schema")


class TestEventFields:
    @pytest.mark.parametrize("event", [REMOVE, "", "   ", 5, None])
    def test_event_name_required(self, http: httpx.Client, event: Any) -> None:
        """event must be a non-empty string."""
        body = tiktok_body([tiktok_event(event=event)])
        invalid_row(post_tiktok(http, body), 0, "event")

    @pytest.mark.parametrize(
        "event_time",
        [REMOVE, str(START), float(START), START * 1000, True, None],
        ids=["missing", "string", "float", "milliseconds", "bool", "null"],
    )
    def test_event_time_must_be_integer_seconds(self, http: httpx.Client, event_time: Any) -> None:
        """event_time must be an integer of unix seconds: not a string, float or ms."""
        body = tiktok_body([tiktok_event(event_time=event_time)])
        invalid_row(post_tiktok(http, body), 0, "event_time")

    def test_event_time_older_than_max_age(self, http: httpx.Client) -> None:
        """An event older than max_age (7 days by default) is a 40002 naming event_time."""
        body = tiktok_body([tiktok_event(event_time=START - 7 * 86400 - 1)])
        assert "7 days" in invalid_row(post_tiktok(http, body), 0, "event_time")

    def test_event_time_just_inside_max_age(self, http: httpx.Client) -> None:
        """An event exactly 7 days old is still accepted."""
        body = tiktok_body([tiktok_event(event_time=START - 7 * 86400)])
        assert post_tiktok(http, body).json()["code"] == 0

    def test_event_time_in_the_future(self, http: httpx.Client) -> None:
        """More than 5 minutes ahead of the sandbox clock is refused; 5 minutes is not."""
        ahead = tiktok_body([tiktok_event(event_time=START + 301)])
        invalid_row(post_tiktok(http, ahead), 0, "event_time")
        near = tiktok_body([tiktok_event(event_time=START + 300)])
        assert post_tiktok(http, near).json()["code"] == 0

    def test_age_follows_the_clock(self, http: httpx.Client, clock: FakeClock) -> None:
        """The same event is refused once the sandbox clock moves 8 days on."""
        clock.advance(8 * 86400)
        invalid_row(post_tiktok(http), 0, "event_time")

    def test_event_id_must_be_a_string(self, http: httpx.Client) -> None:
        """An integer event_id is a 40002 'Not a valid string'."""
        body = tiktok_body([tiktok_event(event_id=1001)])
        assert invalid_row(post_tiktok(http, body), 0, "event_id").endswith("Not a valid string")

    def test_event_id_is_optional(self, http: httpx.Client) -> None:
        """A row without event_id is accepted (counted as without_event_id)."""
        assert post_tiktok(http, tiktok_body([tiktok_event(event_id=REMOVE)])).json()["code"] == 0
        assert stats(http, "tiktok")["without_event_id"] == 1

    def test_limited_data_use_must_be_boolean(self, http: httpx.Client) -> None:
        """limited_data_use 'false' (a string) is refused."""
        body = tiktok_body([tiktok_event(limited_data_use="false")])
        invalid_row(post_tiktok(http, body), 0, "limited_data_use")


class TestUser:
    @pytest.mark.parametrize(
        ("legacy", "meant"),
        [("phone_number", "phone"), ("em", "email"), ("ph", "phone"), ("zip", "zip_code")],
    )
    def test_legacy_and_meta_names_are_refused(
        self, http: httpx.Client, legacy: str, meant: str
    ) -> None:
        """A legacy/Meta key in user is a 40002 naming it and the v2 name meant."""
        response = post_tiktok(http, with_user(**{legacy: sha("x")}))
        message = invalid_row(response, 0, f"user.{legacy}")
        assert f"'{meant}'" in message

    @pytest.mark.parametrize(
        "field", ["email", "phone", "external_id", "first_name", "last_name", "zip_code"]
    )
    def test_plaintext_identifier_is_refused(self, http: httpx.Client, field: str) -> None:
        """Each hashed field sent in plaintext is a 40002 naming it."""
        message = invalid_row(
            post_tiktok(http, with_user(**{field: "Ann Example"})), 0, f"user.{field}"
        )
        assert "SHA-256" in message

    @pytest.mark.parametrize(
        "field", ["email", "phone", "external_id", "first_name", "last_name", "zip_code"]
    )
    def test_hashed_identifier_is_accepted(self, http: httpx.Client, field: str) -> None:
        """Each hashed field is accepted as one lowercase digest or a list of them."""
        assert post_tiktok(http, with_user(**{field: sha("a")})).json()["code"] == 0
        assert post_tiktok(http, with_user(**{field: [sha("a"), sha("b")]})).json()["code"] == 0

    def test_uppercase_hash_is_refused(self, http: httpx.Client) -> None:
        """An uppercase hex digest is not the lowercase hex both platforms expect."""
        invalid_row(post_tiktok(http, with_user(email=sha("a").upper())), 0, "user.email")

    def test_bad_list_element_is_located(self, http: httpx.Client) -> None:
        """In a list, the bad element's position is part of the path."""
        body = with_user(email=[sha("a"), "ann@example.com"])
        invalid_row(post_tiktok(http, body), 0, "user.email.1")

    @pytest.mark.parametrize("field", ["ip", "user_agent", "ttclid", "ttp", "country"])
    def test_plain_fields_must_be_strings(self, http: httpx.Client, field: str) -> None:
        """Unhashed user fields must be strings."""
        invalid_row(post_tiktok(http, with_user(**{field: 12})), 0, f"user.{field}")

    def test_user_must_be_an_object(self, http: httpx.Client) -> None:
        """user as a string is refused."""
        invalid_row(post_tiktok(http, tiktok_body([tiktok_event(user="ann")])), 0, "user")


class TestProperties:
    def test_numeric_content_id_gives_the_real_message(self, http: httpx.Client) -> None:
        """A numeric content_id produces TikTok's exact message (reference §4)."""
        events = [tiktok_event(event_id=f"e{i}") for i in range(2)]
        events[1]["properties"]["contents"] = [
            {"content_id": "a"},
            {"content_id": "b"},
            {"content_id": 123},
        ]
        message = refused(post_tiktok(http, tiktok_body(events)), 40002)
        assert message == "Batch.1.properties.contents.2.content_id: Not a valid string"

    @pytest.mark.parametrize("currency", ["XYZ", "usd", "BGN", 840])
    def test_currency_outside_tiktok_list(self, http: httpx.Client, currency: Any) -> None:
        """A currency not on TikTok's list (case-sensitive) is a 40002 naming currency."""
        event = tiktok_event()
        event["properties"]["currency"] = currency
        invalid_row(post_tiktok(http, tiktok_body([event])), 0, "properties.currency")

    @pytest.mark.parametrize("value", ["20.00", True, [20]])
    def test_value_must_be_a_number(self, http: httpx.Client, value: Any) -> None:
        """properties.value must be a JSON number."""
        event = tiktok_event()
        event["properties"]["value"] = value
        invalid_row(post_tiktok(http, tiktok_body([event])), 0, "properties.value")

    def test_integer_value_is_accepted(self, http: httpx.Client) -> None:
        """An integer value is a number too."""
        event = tiktok_event()
        event["properties"]["value"] = 20
        assert post_tiktok(http, tiktok_body([event])).json()["code"] == 0

    def test_content_type_is_product_or_group(self, http: httpx.Client) -> None:
        """content_type outside product/product_group is refused."""
        event = tiktok_event()
        event["properties"]["content_type"] = "sku"
        invalid_row(post_tiktok(http, tiktok_body([event])), 0, "properties.content_type")


class TestOurBuilders:
    def _conversions(self, now: float) -> list[Any]:
        raw = [
            {
                "event": "CompletePayment",
                "order_id": 1001,
                "value": 59.9,
                "currency": "eur",
                "contents": [{"id": 42, "quantity": 2, "price": 29.95, "name": "Mug"}],
                "user": {
                    "email": " Ann@Example.com ",
                    "phone": "+44 20 7946 0958",
                    "external_id": "User-1",
                    "first_name": "Ann",
                    "last_name": "Lee",
                    "zip": "SW1A 1AA",
                    "city": "London",
                    "country": "GB",
                    "ip": "8.8.8.8",
                    "user_agent": "Mozilla/5.0",
                    "ttp": "abc",
                },
                "page": {"url": "https://shop.example/thanks?ttclid=E.C.P.xyz"},
                "limited_data_use": True,
            },
            {
                "event": "CompleteRegistration",
                "event_id": "reg-7",
                "user": {"email": ["a@example.com", "b@example.com"]},
            },
            {"event": "Search", "query": "mugs", "event_time": now - 3600},
        ]
        return [normalize(item, now=now).conversion for item in raw]

    def test_builder_output_is_accepted_and_listed(
        self, http: httpx.Client, server: ServerThread
    ) -> None:
        """Bodies from tiktok.prepare are accepted, classified DELIVERED and listed as sent."""
        conversions = self._conversions(START)
        target = Target(base_url=server.url, pixel=TIKTOK_PIXEL, token=TOKEN)
        prepared = tiktok_destination.prepare(conversions, target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = tiktok_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.DELIVERED, outcome
        assert outcome.platform_ref == response.json()["request_id"]
        page = listed(http, "tiktok")
        assert page["count"] == 3
        sent = prepared.body["data"]
        for stored, original in zip(page["events"], sent, strict=True):
            assert {k: v for k, v in stored.items() if not k.startswith("_")} == original
            assert stored["_pixel"] == TIKTOK_PIXEL
            assert stored["_request_id"] == outcome.platform_ref

    @pytest.mark.parametrize("source", ["app", "offline", "crm"])
    def test_non_web_sources_are_accepted(
        self, http: httpx.Client, server: ServerThread, source: str
    ) -> None:
        """Builder output for app/offline/crm events is accepted too."""
        conversion = normalize(
            {
                "event": "Lead",
                "order_id": "L1",
                "source": source,
                "user": {"email": "a@example.com"},
            },
            now=START,
        ).conversion
        target = Target(
            base_url=server.url,
            pixel=TIKTOK_PIXEL,
            token=TOKEN,
            source_ids={source: f"{source.upper()}-EVENT-SET-1"},
        )
        prepared = tiktok_destination.prepare([conversion], target)
        assert prepared.body["event_source_id"] == f"{source.upper()}-EVENT-SET-1"
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        assert response.json()["code"] == 0, response.json()

    def test_test_event_code_is_kept(self, http: httpx.Client, server: ServerThread) -> None:
        """test_event_code from the builder is stored as _test_event_code."""
        conversion = normalize(
            {"event": "Lead", "order_id": "L2", "test_event_code": "TEST123"}, now=START
        ).conversion
        target = Target(base_url=server.url, pixel=TIKTOK_PIXEL, token=TOKEN)
        prepared = tiktok_destination.prepare([conversion], target)
        http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        assert listed(http, "tiktok")["events"][0]["_test_event_code"] == "TEST123"

    def test_raw_body_round_trips(self, http: httpx.Client) -> None:
        """What is listed equals what was sent, key for key."""
        event = tiktok_event()
        post_tiktok(http, content=orjson.dumps(tiktok_body([event])))
        stored = listed(http, "tiktok")["events"][0]
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == event
