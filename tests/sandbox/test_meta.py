"""The Meta emulator refuses what the Conversions API refuses, in Graph's error shapes."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from backchannel.destinations import meta as meta_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from support.server import ServerThread

from .helpers import (
    META_PATH,
    META_PIXEL,
    REMOVE,
    START,
    TOKEN,
    FakeClock,
    listed,
    meta_event,
    post_meta,
    sha,
    stats,
)


def graph_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """Assert Graph's error shape with ``status`` and ``code``; return the error object."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["type"]
    assert error["message"]
    assert error["fbtrace_id"]
    assert response.headers["x-fb-trace-id"] == error["fbtrace_id"]
    return error


def invalid(response: httpx.Response, path: str) -> str:
    """Assert a code-100 refusal whose user message starts with ``path``; return it."""
    error = graph_error(response, 400, 100)
    assert error["is_transient"] is False
    message: str = error["error_user_msg"]
    assert message.startswith(f"{path}: "), message
    return message


def with_user_data(**fields: Any) -> list[dict[str, Any]]:
    event = meta_event()
    event["user_data"].update(fields)
    return [event]


class TestAccessToken:
    def test_missing_token_is_code_104(self, http: httpx.Client) -> None:
        """No access_token: HTTP 400, OAuthException code 104."""
        error = graph_error(post_meta(http, token=None), 400, 104)
        assert error["type"] == "OAuthException"
        assert "access token is required" in error["message"]

    def test_wrong_token_is_code_190(self, http: httpx.Client) -> None:
        """A wrong token: HTTP 400, OAuthException code 190, WWW-Authenticate set."""
        response = post_meta(http, token="wrong")
        error = graph_error(response, 400, 190)
        assert error["type"] == "OAuthException"
        assert "invalid_token" in response.headers["www-authenticate"]

    def test_token_in_query_string(self, http: httpx.Client) -> None:
        """access_token in the query string is accepted (Graph reads both places)."""
        response = post_meta(http, token=None, path=f"{META_PATH}?access_token={TOKEN}")
        assert response.status_code == 200, response.text

    def test_refused_token_stores_nothing(self, http: httpx.Client) -> None:
        """A refused token leaves no event behind and counts as rejected."""
        post_meta(http, token="wrong")
        counters = stats(http, "meta")
        assert counters["accepted_events"] == 0
        assert counters["rejected_requests"] == 1
        assert counters["by_code"] == {"190": 1}


class TestRequest:
    def test_valid_form_request_succeeds(self, http: httpx.Client) -> None:
        """A form-encoded body gets {events_received, messages, fbtrace_id}."""
        response = post_meta(http, [meta_event(event_id="a"), meta_event(event_id="b")])
        assert response.status_code == 200
        body = response.json()
        assert body["events_received"] == 2
        assert body["messages"] == []
        assert body["fbtrace_id"]

    def test_json_body_is_accepted(self, http: httpx.Client) -> None:
        """A JSON body with data as an array is accepted too."""
        body = {"data": [meta_event()], "access_token": TOKEN, "test_event_code": "TEST9"}
        response = http.post(
            META_PATH, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert response.json()["events_received"] == 1
        assert listed(http, "meta")["events"][0]["_test_event_code"] == "TEST9"

    def test_trace_ids_are_unique(self, http: httpx.Client) -> None:
        """Every response carries its own fbtrace_id."""
        assert len({post_meta(http).json()["fbtrace_id"] for _ in range(5)}) == 5

    def test_foreign_pixel_is_refused(self, http: httpx.Client) -> None:
        """A pixel the token may not write to: code 100, subcode 33, the id in the message."""
        error = graph_error(post_meta(http, path="/v25.0/999/events"), 400, 100)
        assert error["error_subcode"] == 33
        assert "'999'" in error["message"]

    def test_unknown_version_is_refused(self, http: httpx.Client) -> None:
        """A path version that is not vNN.N is a code 100."""
        graph_error(post_meta(http, path=f"/latest/{META_PIXEL}/events"), 400, 100)

    @pytest.mark.parametrize("data", [REMOVE, "", "{not json", '{"event_name": "x"}'])
    def test_data_must_be_a_json_array(self, http: httpx.Client, data: Any) -> None:
        """Missing, empty, unparsable or non-array data is a code 100 naming data."""
        error = graph_error(post_meta(http, data), 400, 100)
        assert "data" in error["message"]

    @pytest.mark.parametrize("count", [0, 1001])
    def test_data_length_is_1_to_1000(self, http: httpx.Client, count: int) -> None:
        """0 or 1001 events is a code 100 naming data."""
        events = [meta_event(event_id=f"e{i}") for i in range(count)]
        error = graph_error(post_meta(http, events), 400, 100)
        assert "data" in error["message"]

    def test_1000_events_are_accepted(self, http: httpx.Client) -> None:
        """A full batch of 1000 is accepted."""
        events = [meta_event(event_id=f"e{i}") for i in range(1000)]
        assert post_meta(http, events).json()["events_received"] == 1000


class TestEvents:
    def test_unknown_event_key_is_code_100(self, http: httpx.Client) -> None:
        """An unknown top-level event key (TikTok's 'event') is a code 100 naming it."""
        invalid(post_meta(http, [meta_event(event="Purchase")]), "data[0].event")

    @pytest.mark.parametrize("name", [REMOVE, "", 3])
    def test_event_name_required(self, http: httpx.Client, name: Any) -> None:
        """event_name must be a non-empty string."""
        invalid(post_meta(http, [meta_event(event_name=name)]), "data[0].event_name")

    @pytest.mark.parametrize(
        "event_time",
        [REMOVE, str(START), float(START), START * 1000],
        ids=["missing", "string", "float", "milliseconds"],
    )
    def test_event_time_integer_seconds(self, http: httpx.Client, event_time: Any) -> None:
        """event_time must be integer unix seconds."""
        invalid(post_meta(http, [meta_event(event_time=event_time)]), "data[0].event_time")

    def test_one_old_event_fails_the_whole_request(self, http: httpx.Client) -> None:
        """One event older than 7 days refuses the request; the fresh one is not stored (§7)."""
        events = [
            meta_event(event_id="fresh"),
            meta_event(event_id="old", event_time=START - 7 * 86400 - 1),
        ]
        message = invalid(post_meta(http, events), "data[1].event_time")
        assert "7 days" in message
        assert stats(http, "meta")["accepted_events"] == 0

    def test_physical_store_allows_62_days(self, http: httpx.Client) -> None:
        """physical_store events may be 62 days old, not 63."""
        ok = meta_event(action_source="physical_store", event_time=START - 62 * 86400)
        assert post_meta(http, [ok]).status_code == 200
        old = meta_event(action_source="physical_store", event_time=START - 63 * 86400)
        assert "62 days" in invalid(post_meta(http, [old]), "data[0].event_time")

    def test_future_event_time(self, http: httpx.Client) -> None:
        """An event_time more than 5 minutes ahead is refused."""
        invalid(post_meta(http, [meta_event(event_time=START + 301)]), "data[0].event_time")

    def test_age_follows_the_clock(self, http: httpx.Client, clock: FakeClock) -> None:
        """The same event is refused once the sandbox clock moves 8 days on."""
        clock.advance(8 * 86400)
        invalid(post_meta(http), "data[0].event_time")

    @pytest.mark.parametrize("source", [REMOVE, "web", "offline", 1])
    def test_action_source_in_allowed_set(self, http: httpx.Client, source: Any) -> None:
        """A missing action_source or one outside Meta's set is a code 100 naming it."""
        invalid(post_meta(http, [meta_event(action_source=source)]), "data[0].action_source")

    @pytest.mark.parametrize(
        "source", ["app", "email", "phone_call", "chat", "system_generated", "other"]
    )
    def test_non_website_needs_no_url(self, http: httpx.Client, source: str) -> None:
        """Only website events need event_source_url and client_user_agent."""
        event = meta_event(action_source=source, event_source_url=REMOVE)
        del event["user_data"]["client_user_agent"]
        assert post_meta(http, [event]).status_code == 200

    def test_website_needs_event_source_url(self, http: httpx.Client) -> None:
        """A website event without event_source_url is refused naming it."""
        invalid(post_meta(http, [meta_event(event_source_url=REMOVE)]), "data[0].event_source_url")

    def test_website_needs_client_user_agent(self, http: httpx.Client) -> None:
        """A website event without client_user_agent is refused naming it."""
        event = meta_event()
        del event["user_data"]["client_user_agent"]
        invalid(post_meta(http, [event]), "data[0].user_data.client_user_agent")

    def test_event_id_must_be_a_string(self, http: httpx.Client) -> None:
        """A numeric event_id is refused."""
        invalid(post_meta(http, [meta_event(event_id=1001)]), "data[0].event_id")

    def test_user_data_required(self, http: httpx.Client) -> None:
        """An event without user_data is refused."""
        invalid(post_meta(http, [meta_event(user_data=REMOVE)]), "data[0].user_data")

    def test_custom_data_value_must_be_a_number(self, http: httpx.Client) -> None:
        """custom_data.value as a string is refused."""
        event = meta_event()
        event["custom_data"]["value"] = "20"
        invalid(post_meta(http, [event]), "data[0].custom_data.value")


class TestUserData:
    @pytest.mark.parametrize("key", ["em", "ph", "fn", "ln", "zp", "ct", "st", "country"])
    def test_plaintext_is_refused(self, http: httpx.Client, key: str) -> None:
        """Each hashed key with a plaintext value is refused naming key and position."""
        message = invalid(
            post_meta(http, with_user_data(**{key: ["Ann"]})), f"data[0].user_data.{key}[0]"
        )
        assert "SHA-256" in message

    @pytest.mark.parametrize("key", ["em", "ph", "fn", "ln", "zp", "ct", "st", "country"])
    def test_hashed_lists_are_accepted(self, http: httpx.Client, key: str) -> None:
        """Each hashed key accepts a list of lowercase digests."""
        response = post_meta(http, with_user_data(**{key: [sha("a"), sha("b")]}))
        assert response.status_code == 200, response.text

    def test_hashed_value_must_be_a_list(self, http: httpx.Client) -> None:
        """A single digest string (not a list) is refused, naming the key."""
        invalid(post_meta(http, with_user_data(em=sha("a"))), "data[0].user_data.em")

    def test_uppercase_hash_is_refused(self, http: httpx.Client) -> None:
        """An uppercase digest is refused."""
        invalid(post_meta(http, with_user_data(em=[sha("a").upper()])), "data[0].user_data.em[0]")

    @pytest.mark.parametrize("value", ["user-1", ["user-1", sha("user-2")], sha("x")])
    def test_external_id_raw_or_hashed(self, http: httpx.Client, value: Any) -> None:
        """external_id may be raw or hashed, a string or a list."""
        assert post_meta(http, with_user_data(external_id=value)).status_code == 200

    def test_tiktok_key_is_refused_with_hint(self, http: httpx.Client) -> None:
        """TikTok's 'email' in user_data is refused and Meta's 'em' suggested."""
        message = invalid(
            post_meta(http, with_user_data(email=[sha("a")])), "data[0].user_data.email"
        )
        assert "'em'" in message


class TestOurBuilders:
    def test_builder_output_is_accepted_and_listed(
        self, http: httpx.Client, server: ServerThread
    ) -> None:
        """Bodies from meta.prepare are accepted, classified DELIVERED and listed as sent."""
        raw = [
            {
                "event": "CompletePayment",
                "order_id": 1001,
                "value": 59.9,
                "currency": "EUR",
                "contents": [{"id": 42, "quantity": 2, "price": 29.95}],
                "user": {
                    "email": "ann@example.com",
                    "phone": "+44 20 7946 0958",
                    "first_name": "Ann",
                    "last_name": "Lee",
                    "zip": "94035-1234",
                    "city": "Mountain View",
                    "state": "CA",
                    "country": "US",
                    "ip": "8.8.8.8",
                    "user_agent": "Mozilla/5.0",
                    "fbclid": "IwAR1",
                    "fbp": "fb.1.1.2",
                    "external_id": "u1",
                },
                "page": {"url": "https://shop.example/thanks", "referrer": "https://x.example"},
                "limited_data_use": True,
                "test_event_code": "TEST42",
            },
            {
                "event": "Lead",
                "order_id": "L1",
                "source": "crm",
                "test_event_code": "TEST42",
                "user": {"email": "b@example.com"},
            },
            {
                "event": "Purchase",
                "order_id": "S1",
                "source": "offline",
                "value": 5,
                "currency": "USD",
                "event_time": START - 30 * 86400,
                "test_event_code": "TEST42",
                "user": {"phone": "+15555555555"},
            },
        ]
        conversions = [normalize(item, now=START).conversion for item in raw]
        target = Target(base_url=server.url, pixel=META_PIXEL, token=TOKEN)
        prepared = meta_destination.prepare(conversions, target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = meta_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.DELIVERED, outcome
        page = listed(http, "meta")
        assert page["count"] == 3
        for stored, original in zip(page["events"], prepared.body["data"], strict=True):
            assert {k: v for k, v in stored.items() if not k.startswith("_")} == original
            assert stored["_pixel"] == META_PIXEL
            assert stored["_test_event_code"] == "TEST42"
            assert stored["_request_id"] == outcome.platform_ref

    def test_classifier_reads_refusals_as_permanent(self, http: httpx.Client) -> None:
        """A sandbox code-100 refusal is PERMANENT for our classifier, with the field named."""
        response = post_meta(http, [meta_event(event_name=REMOVE)])
        outcome = meta_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.PERMANENT
        assert "event_name" in outcome.reason
