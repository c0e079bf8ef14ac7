"""The Pinterest emulator over real HTTP: the golden body accepted, each kind of bad input
refused the way docs/platforms/pinterest.md says Pinterest refuses it, per-event answers,
test mode, faults, and our own builder's requests taken end to end.

Each strictness test starts from a body the emulator accepts and breaks one thing. Its own
server (the shared one in conftest.py emulates no Pinterest account).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backchannel.destinations import pinterest as destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import START, FakeClock, eventually, listed, stats

ACCOUNT = "549755885175"
TOKEN = "pina_sandbox-conversion-token"
PATH = f"/v5/ad_accounts/{ACCOUNT}/events"
UA = "Mozilla/5.0 (X11; Linux x86_64) PinSandbox/1.0"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def pclock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def pserver(pclock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(
        pinterest_ad_account_id=ACCOUNT, pinterest_token=TOKEN, clock=pclock, seed=1
    )
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture
def http(pserver: ServerThread, pclock: FakeClock) -> Iterator[httpx.Client]:
    pclock.now = float(START)
    with httpx.Client(base_url=pserver.url, timeout=5.0) as client:
        assert client.post("/_sandbox/reset").status_code == 200
        yield client


def golden_event(**overrides: Any) -> dict[str, Any]:
    """The spec's own example event (§10), made web and recent: the emulator takes it."""
    item: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": START - 60,
        "event_id": "eventId0001",
        "event_source_url": "https://www.my-clothing-shop.org/",
        "user_data": {
            "em": [sha("jane@example.com")],
            "ph": [sha("14155552671")],
            "external_id": [sha("cust-42")],
            "client_ip_address": "216.3.128.12",
            "client_user_agent": UA,
            "click_id": "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0y",
        },
        "custom_data": {
            "currency": "USD",
            "value": "72.39",
            "content_ids": ["product-id-001", "product-id-002"],
            "contents": [
                {"id": "product-id-001", "item_price": "14.99", "quantity": 3},
                {"id": "product-id-002", "item_price": "13.71", "quantity": 2},
            ],
            "num_items": 5,
            "order_id": "my_order_id",
        },
    }
    item.update(overrides)
    return item


def send(
    http: httpx.Client,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    path: str = PATH,
    content: bytes | None = None,
    test: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}".strip()
    params = {"test": test} if test is not None else None
    if content is None:
        return http.post(
            path,
            json=body if body is not None else {"data": [golden_event()]},
            headers=headers,
            params=params,
        )
    return http.post(path, content=content, headers=headers, params=params)


def refused(response: httpx.Response, status: int, code: int, *fragments: str) -> None:
    """Pinterest's ``Error`` shape: exactly ``{"code", "message"}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def answers(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"num_events_received", "num_events_processed", "events"}
    events: list[dict[str, Any]] = body["events"]
    assert body["num_events_received"] == len(events)
    assert body["num_events_processed"] == sum(e["status"] == "processed" for e in events)
    return events


class TestAccepted:
    def test_the_golden_body_is_processed_and_recorded(self, http: httpx.Client) -> None:
        [answer] = answers(send(http))
        assert answer == {"status": "processed", "error_message": None, "warning_message": None}
        [kept] = listed(http, "pinterest")["events"]
        assert kept["_pixel"] == ACCOUNT
        assert kept["_test_event_code"] is None
        assert kept["event_id"] == "eventId0001"
        assert kept["custom_data"]["value"] == "72.39"
        assert stats(http, "pinterest")["by_code"] == {"0": 1}

    def test_a_resent_event_counts_as_a_duplicate(self, http: httpx.Client) -> None:
        send(http)
        send(http)
        assert stats(http, "pinterest")["duplicates"] == 1

    def test_ip_and_user_agent_alone_are_enough(self, http: httpx.Client) -> None:
        user = {"client_ip_address": "2001:4860:4860::8888", "client_user_agent": UA}
        [answer] = answers(send(http, {"data": [golden_event(user_data=user)]}))
        assert answer["status"] == "processed"

    def test_test_mode_answers_alike_and_is_marked(self, http: httpx.Client) -> None:
        [answer] = answers(send(http, test="true"))
        assert answer["status"] == "processed"
        [kept] = listed(http, "pinterest")["events"]
        assert kept["_test_event_code"] == "test"

    def test_unknown_user_data_keys_are_a_warning_not_a_refusal(self, http: httpx.Client) -> None:
        event = golden_event()
        event["user_data"]["email"] = "jane@example.com"
        [answer] = answers(send(http, {"data": [event]}))
        assert answer["status"] == "processed"
        assert "user_data.email" in answer["warning_message"]


class TestAuthAndAccount:
    @pytest.mark.parametrize("token", [None, "", "wrong-token"])
    def test_a_missing_or_wrong_token_is_401_code_2(
        self, http: httpx.Client, token: str | None
    ) -> None:
        refused(send(http, token=token), 401, 2, "Authentication failed.")
        assert listed(http, "pinterest")["count"] == 0

    def test_the_token_in_another_scheme_is_refused(self, http: httpx.Client) -> None:
        response = http.post(
            PATH, json={"data": [golden_event()]}, headers={"Authorization": TOKEN}
        )
        refused(response, 401, 2)

    def test_another_ad_account_is_403_code_29(self, http: httpx.Client) -> None:
        response = send(http, path="/v5/ad_accounts/549755885176/events")
        refused(response, 403, 29, "not permitted")

    def test_an_ad_account_id_that_is_not_digits_is_400(self, http: httpx.Client) -> None:
        refused(send(http, path="/v5/ad_accounts/SANDBOX_PIXEL/events"), 400, 4196, "ad_account")


def broken(mutate: Any) -> dict[str, Any]:
    event = golden_event()
    mutate(event)
    return {"data": [event]}


class TestSchemaRefusals:
    """A schema violation refuses the whole request: 400, code 4196, jsonschema's words."""

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({}, "'data' is a required property"),
            ({"data": []}, "is too short"),
            ({"data": [golden_event()], "test": True}, "('test' was unexpected)"),
            (broken(lambda e: e.pop("event_id")), "'event_id' is a required property"),
            (broken(lambda e: e.pop("user_data")), "'user_data' is a required property"),
            (broken(lambda e: e.update(partner="x")), "('partner' was unexpected)"),
            (broken(lambda e: e.update(event_time="1750000000")), "is not of type 'integer'"),
            (broken(lambda e: e.update(event_time=1.75e9)), "is not of type 'integer'"),
            (broken(lambda e: e.update(event_id=42)), "is not of type 'string'"),
            (broken(lambda e: e.update(opt_out="no")), "is not of type 'boolean'"),
            (
                broken(lambda e: e["custom_data"].update(value=72.39)),
                "72.39 is not of type 'string'",
            ),
            (
                broken(lambda e: e["custom_data"]["contents"][0].update(item_price=14.99)),
                "14.99 is not of type 'string'",
            ),
            (
                broken(lambda e: e["custom_data"].update(category_name="Shirts")),
                "Additional properties are not allowed ('category_name' was unexpected)",
            ),
            (
                broken(lambda e: e["custom_data"]["contents"][0].update(price="1")),
                "('price' was unexpected)",
            ),
            (broken(lambda e: e["custom_data"].update(num_items="5")), "is not of type"),
            (
                broken(lambda e: e["user_data"].update(em=sha("jane@example.com"))),
                "is not of type 'array'",
            ),
            (broken(lambda e: e["user_data"].update(ph=[15555555555])), "is not of type 'string'"),
            (
                broken(lambda e: e.update(user_data={"ph": [sha("14155552671")]})),
                "is not valid under any of the given schemas",
            ),
            (
                broken(lambda e: e.update(user_data={"client_ip_address": "216.3.128.12"})),
                "is not valid under any of the given schemas",
            ),
        ],
    )
    def test_refused(self, http: httpx.Client, body: dict[str, Any], fragment: str) -> None:
        refused(send(http, body), 400, 4196, "Invalid request: ", fragment)
        assert listed(http, "pinterest")["count"] == 0

    def test_the_path_of_the_field_follows_the_message(self, http: httpx.Client) -> None:
        second = golden_event(event_id="two")
        second["custom_data"]["value"] = 1
        response = send(http, {"data": [golden_event(), second]})
        refused(response, 400, 4196, "(data[1].custom_data.value)")

    def test_not_json(self, http: httpx.Client) -> None:
        refused(send(http, content=b"data=[]"), 400, 4196, "not valid JSON")

    def test_more_than_1000_events(self, http: httpx.Client) -> None:
        events = [golden_event(event_id=f"e{i}") for i in range(1001)]
        refused(send(http, {"data": events}), 400, 4196, "too long")
        answers(send(http, {"data": events[:1000]}))
        assert stats(http, "pinterest")["accepted_events"] == 1000

    def test_test_must_be_a_boolean(self, http: httpx.Client) -> None:
        refused(send(http, test="yes"), 400, 4196, "'boolean'")


class TestPerEventFailures:
    """An event Pinterest cannot take fails alone, named by its place (§9)."""

    @pytest.mark.parametrize(
        ("change", "fragment"),
        [
            ({"event_name": "purchase"}, "not a Pinterest event name"),
            ({"event_name": "contact"}, "not a Pinterest event name"),
            ({"action_source": "website"}, "action_source"),
            ({"event_time": (START - 60) * 1000}, "milliseconds"),
            ({"event_time": START - 8 * 86400}, "more than 7 days"),
            ({"event_time": START + 3600}, "future"),
            ({"event_id": " "}, "event_id"),
            ({"language": "english"}, "ISO-639-1"),
        ],
    )
    def test_event_fields(self, http: httpx.Client, change: dict[str, Any], fragment: str) -> None:
        self.check(http, golden_event(**change), fragment)

    @pytest.mark.parametrize(
        ("key", "value", "fragment"),
        [
            ("em", ["jane@example.com"], "user_data.em[0] must be a SHA-256 hash"),
            ("em", [sha("jane@example.com").upper()], "user_data.em[0]"),
            ("ph", [sha("1") + "0"], "user_data.ph[0]"),
            ("client_ip_address", "not-an-ip", "client_ip_address"),
        ],
    )
    def test_user_data(self, http: httpx.Client, key: str, value: Any, fragment: str) -> None:
        event = golden_event()
        event["user_data"][key] = value
        self.check(http, event, fragment)

    @pytest.mark.parametrize(
        ("key", "value", "fragment"),
        [
            ("value", "72,39", "custom_data.value"),
            ("value", "nan", "custom_data.value"),
            ("currency", "usd", "currency"),
            ("currency", "XYZ", "currency"),
        ],
    )
    def test_custom_data(self, http: httpx.Client, key: str, value: Any, fragment: str) -> None:
        event = golden_event()
        event["custom_data"][key] = value
        self.check(http, event, fragment)

    def test_item_price(self, http: httpx.Client) -> None:
        event = golden_event()
        event["custom_data"]["contents"][1]["item_price"] = "$13.71"
        self.check(http, event, "contents[1].item_price")

    @staticmethod
    def check(http: httpx.Client, bad: dict[str, Any], fragment: str) -> None:
        """The bad event sits between two good ones: only it fails, the others are kept."""
        first, last = golden_event(event_id="first"), golden_event(event_id="last")
        events = answers(send(http, {"data": [first, bad, last]}))
        assert [e["status"] for e in events] == ["processed", "failed", "processed"]
        assert fragment in events[1]["error_message"]
        assert events[0]["error_message"] is None
        kept = listed(http, "pinterest")["events"]
        assert [e["event_id"] for e in kept] == ["first", "last"]


class TestFaults:
    def set_faults(self, http: httpx.Client, faults: dict[str, Any]) -> None:
        response = http.post("/_sandbox/faults", json={"pinterest": faults})
        assert response.status_code == 200, response.text

    def test_rate_limit_is_429_code_8(self, http: httpx.Client) -> None:
        self.set_faults(http, {"rate_limit_next": 1})
        refused(send(http), 429, 8, "rate limit")
        answers(send(http))
        assert stats(http, "pinterest")["by_code"] == {"8": 1, "0": 1}

    def test_an_injected_503_is_ramped_down(self, http: httpx.Client) -> None:
        self.set_faults(http, {"error_rate": 1.0, "status": 503})
        refused(send(http), 503, 4197, "ramped down")

    def test_an_injected_502_is_an_nginx_page(self, http: httpx.Client) -> None:
        self.set_faults(http, {"error_rate": 1.0, "status": 502})
        response = send(http)
        assert response.status_code == 502
        assert "nginx" in response.text

    def test_rejected_ids_fail_alone(self, http: httpx.Client) -> None:
        self.set_faults(http, {"reject_event_ids": ["bad"]})
        body = {"data": [golden_event(event_id="ok"), golden_event(event_id="bad")]}
        events = answers(send(http, body))
        assert [e["status"] for e in events] == ["processed", "failed"]

    def test_rejected_without_row_refuses_the_request(self, http: httpx.Client) -> None:
        self.set_faults(http, {"reject_event_ids": ["bad"], "reject_without_row": True})
        body = {"data": [golden_event(event_id="ok"), golden_event(event_id="bad")]}
        refused(send(http, body), 400, 4196)
        assert listed(http, "pinterest")["count"] == 0

    def test_timeout_after_accept_keeps_the_events(self, http: httpx.Client) -> None:
        self.set_faults(
            http, {"timeout_rate": 1.0, "timeout_after_accept": True, "hang_seconds": 5.0}
        )
        with pytest.raises(httpx.ReadTimeout):
            http.post(
                PATH,
                json={"data": [golden_event()]},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=0.3,
            )
        eventually(lambda: listed(http, "pinterest")["count"] == 1)


class TestOurBuilder:
    """What backchannel.destinations.pinterest builds is what the emulator takes."""

    def test_a_full_order_and_a_test_order_are_processed(self, http: httpx.Client) -> None:
        target = Target(base_url=str(http.base_url), pixel=ACCOUNT, token=TOKEN)
        common: dict[str, Any] = {
            "event": "CompletePayment",
            "event_time": START - 120,
            "value": 25.5,
            "currency": "USD",
            "contents": [{"id": "SKU-1", "quantity": 2, "price": 12.75, "name": "Tee"}],
            "limited_data_use": True,
            "num_items": 2,
            "predicted_ltv": 80.25,
            "user": {
                "email": "Jane@Example.com",
                "phone": "+1 415 555 2671",
                "first_name": "Jane",
                "city": "San Francisco",
                "state": "CA",
                "zip": "94107",
                "country": "US",
                "external_id": "c-1",
                "ip": "81.2.69.160",
                "user_agent": UA,
                "locale": "en-US",
                "pin_epik": "epik-value-1",
            },
            "page": {"url": "https://shop.example/thanks"},
        }
        orders = [
            normalize({**common, "order_id": "1"}, now=START).conversion,
            normalize({**common, "order_id": "2", "event": "Download"}, now=START).conversion,
            normalize({**common, "order_id": "3", "source": "crm"}, now=START).conversion,
        ]
        prepared = destination.prepare(orders, target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED, response.text
        assert outcome.failed_rows == {}
        assert outcome.received == 3
        assert all(e["warning_message"] is None for e in answers(response))

        test = normalize({**common, "order_id": "4", "test_event_code": "T"}, now=START)
        prepared = destination.prepare([test.conversion], target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        verdict = destination.classify(response.status_code, response.headers, response.content)
        assert verdict.verdict is Verdict.DELIVERED
        kept = listed(http, "pinterest")["events"]
        assert [e["_test_event_code"] for e in kept] == [None, None, None, "test"]
        assert [e["event_name"] for e in kept] == ["checkout", "custom", "checkout", "checkout"]
        assert kept[0]["user_data"]["click_id"] == "epik-value-1"
        assert kept[0]["custom_data"]["predicted_ltv"] == "80.25"

    def test_an_old_event_comes_back_as_the_failed_row(self, http: httpx.Client) -> None:
        target = Target(base_url=str(http.base_url), pixel=ACCOUNT, token=TOKEN)
        fresh = normalize(
            {"event": "Lead", "event_id": "fresh", "user": {"email": "a@b.co"}}, now=START
        )
        old = normalize(
            {
                "event": "Lead",
                "event_id": "old",
                "event_time": START - 8 * 86400,
                "user": {"email": "a@b.co"},
            },
            now=START,
        )
        prepared = destination.prepare([fresh.conversion, old.conversion], target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert list(outcome.failed_rows) == [1]
        assert "7 days" in outcome.failed_rows[1]

    def test_a_wrong_token_is_a_whole_request_refusal(self, http: httpx.Client) -> None:
        target = Target(base_url=str(http.base_url), pixel=ACCOUNT, token="revoked")
        conversion = normalize({"event": "Lead", "user": {"email": "a@b.co"}}, now=START)
        prepared = destination.prepare([conversion.conversion], target)
        response = http.post(prepared.url, content=prepared.content, headers=prepared.headers)
        outcome = destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request
