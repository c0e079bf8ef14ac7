"""The Snapchat emulator over real HTTP (docs/platforms/snapchat.md).

Each strictness test starts from a request the emulator accepts (written out here, hashes by
hashlib) and breaks one thing, then checks Snap's answer: HTTP status, ``status: INVALID``,
the ``event`` index and the ``errors`` naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from backchannel.destinations import snapchat as snap_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import REMOVE, START, FakeClock, eventually, listed, stats

PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
TOKEN = "snap-sandbox-token-1"
EVENTS = f"/v3/{PIXEL}/events"
VALIDATE = f"/v3/{PIXEL}/events/validate"
WHEN = START - 60


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def snap_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def snap_server(snap_clock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(
        snapchat_pixel=PIXEL, snapchat_token=TOKEN, meta_pixel="1234567890", clock=snap_clock
    )
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def _snap_client(snap_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=snap_server.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def sc(_snap_client: httpx.Client, snap_clock: FakeClock) -> httpx.Client:
    """A client of a sandbox whose Snap pixel is PIXEL and token TOKEN, freshly reset."""
    snap_clock.now = float(START)
    assert _snap_client.post("/_sandbox/reset").status_code == 200
    return _snap_client


def event(**overrides: Any) -> dict[str, Any]:
    """One valid data[] item (the golden web purchase); overrides replace or REMOVE keys."""
    item: dict[str, Any] = {
        "event_name": "PURCHASE",
        "event_time": WHEN,
        "event_id": "CompletePayment-1001",
        "action_source": "WEB",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [sha("person@example.com")],
            "ph": [sha("448444124653")],
            "client_ip_address": "81.2.69.160",
            "client_user_agent": "Mozilla/5.0",
            "sc_click_id": "6d1a6b87-click",
            "sc_cookie1": "a1b2c3d4-cookie",
        },
        "custom_data": {
            "value": 59.9,
            "currency": "USD",
            "contents": [{"id": "SKU-1", "quantity": "2", "item_price": "29.95"}],
            "content_ids": ["SKU-1"],
            "num_items": 2,
            "order_id": "1001",
        },
    }
    for key, value in overrides.items():
        if value is REMOVE:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def post(
    http: httpx.Client,
    body: Any,
    *,
    path: str = EVENTS,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    params = {"access_token": token} if token is not None else {}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(
        path,
        params=params,
        content=content,
        headers={"Content-Type": "application/json", **(headers or {})},
        **kwargs,
    )


def set_faults(http: httpx.Client, payload: dict[str, Any]) -> None:
    assert http.post("/_sandbox/faults", json=payload).status_code == 200


class TestAccepted:
    def test_the_golden_body_is_taken_and_recorded_under_its_pixel(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()]})
        assert response.status_code == 200, response.text
        assert response.json() == {
            "status": "VALID",
            "reason": "Events have been processed successfully.",
        }
        [stored] = listed(sc, "snapchat")["events"]
        assert stored["_pixel"] == PIXEL
        assert stored["_test_event_code"] is None
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == event()
        assert stats(sc, "snapchat")["by_code"] == {"0": 1}

    def test_what_the_destination_builds_is_taken(self, sc: httpx.Client) -> None:
        conversion = normalize(
            {
                "event": "CompletePayment",
                "order_id": "A1",
                "event_time": WHEN,
                "value": 25.5,
                "currency": "usd",
                "contents": [{"id": "SKU", "quantity": 2, "price": 12.75, "brand": "Acme"}],
                "user": {
                    "email": "Person@Example.com",
                    "phone": "+44 844 412 4653",
                    "first_name": "Ann",
                    "city": "San Francisco",
                    "ip": "81.2.69.160",
                    "user_agent": "Mozilla/5.0",
                    "sc_cookie1": "cookie-1",
                },
                "page": {"url": "https://shop.example/thanks?ScCid=clk-9"},
            },
            now=START,
        ).conversion
        target = Target(base_url=str(sc.base_url), pixel=PIXEL, token=TOKEN)
        request = snap_destination.prepare([conversion], target)
        response = sc.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 200, response.text
        outcome = snap_destination.classify(
            response.status_code, response.headers, response.content
        )
        assert outcome.verdict is Verdict.DELIVERED
        [stored] = listed(sc, "snapchat")["events"]
        assert stored["user_data"]["sc_click_id"] == "clk-9"
        assert stored["event_id"] == "CompletePayment-A1"

    def test_a_string_value_and_a_single_hash_are_taken(self, sc: httpx.Client) -> None:
        """The docs' own example sends value as a string; em may be one hash (§3.2, §3.3)."""
        item = event()
        item["custom_data"]["value"] = "142.52"
        item["user_data"]["em"] = sha("person@example.com")
        assert post(sc, {"data": [item]}).status_code == 200

    def test_offline_events_need_no_page(self, sc: httpx.Client) -> None:
        item = event(action_source="OFFLINE", event_source_url=REMOVE)
        assert post(sc, {"data": [item]}).status_code == 200

    def test_ip_and_user_agent_together_are_a_matching_key(self, sc: httpx.Client) -> None:
        item = event()
        for key in ("em", "ph", "sc_click_id", "sc_cookie1"):
            del item["user_data"][key]
        assert post(sc, {"data": [item]}).status_code == 200

    def test_test_event_code_on_events_is_recorded(self, sc: httpx.Client) -> None:
        """Snap's SDK spec lets /events carry a test_event_code (§1)."""
        assert post(sc, {"data": [event()], "test_event_code": "T-1"}).status_code == 200
        assert listed(sc, "snapchat")["events"][0]["_test_event_code"] == "T-1"

    def test_duplicates_are_counted_per_pixel_name_and_event_id(self, sc: httpx.Client) -> None:
        for _ in range(2):
            assert post(sc, {"data": [event()]}).status_code == 200
        counted = stats(sc, "snapchat")
        assert (counted["accepted_events"], counted["duplicates"]) == (2, 1)

    def test_meta_still_answers_on_its_own_route(self, sc: httpx.Client) -> None:
        """Meta's /{version}/{pixel_id}/events must not swallow Snap's /v3/{pixel_id}/events."""
        response = sc.post("/v25.0/1234567890/events", json={"data": []})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 104  # Meta's "access token is required"
        assert stats(sc, "meta")["requests"] == 1
        assert stats(sc, "snapchat")["requests"] == 0


UNAUTHORIZED = {"status": "INVALID", "reason": "Unauthorized resources"}


class TestAuth:
    def test_no_token(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()]}, token=None)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)

    def test_a_token_in_a_header_does_not_count(self, sc: httpx.Client) -> None:
        """§2: the token goes in the query string."""
        response = post(
            sc, {"data": [event()]}, token=None, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 401

    def test_a_wrong_token(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()]}, token="not-the-token")
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)

    def test_a_pixel_the_token_may_not_write_to(self, sc: httpx.Client) -> None:
        other = "00000000-0000-0000-0000-000000000000"
        response = post(sc, {"data": [event()]}, path=f"/v3/{other}/events")
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert listed(sc, "snapchat")["count"] == 0
        assert stats(sc, "snapchat")["by_code"] == {"UNAUTHORIZED": 1}


class TestEnvelope:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{not json", "not valid JSON"),
            ([event()], "must be a JSON object"),
            ({"data": [event()], "pixel_id": PIXEL}, "Unknown field: pixel_id"),
            ({"data": []}, "Missing required fields: data"),
            ({}, "Missing required fields: data"),
            ({"data": [event()], "test_event_code": 7}, "test_event_code"),
        ],
    )
    def test_refused(self, sc: httpx.Client, body: Any, reason: str) -> None:
        response = post(sc, body)
        assert response.status_code == 400
        answer = response.json()
        assert answer["status"] == "INVALID"
        assert reason in answer["reason"]
        assert "event" not in answer  # about the request, not an event
        assert listed(sc, "snapchat")["count"] == 0

    def test_at_most_2000_events(self, sc: httpx.Client) -> None:
        """§8: 2,000 events per request."""
        items = [event(event_id=f"e{i}") for i in range(2001)]
        response = post(sc, {"data": items})
        assert response.status_code == 400
        assert "at most 2000 events" in response.json()["reason"]
        assert post(sc, {"data": items[:2000]}).status_code == 200

    def test_the_test_event_tool_takes_no_test_event_code(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()], "test_event_code": "T"}, path=VALIDATE)
        assert response.status_code == 400
        assert "Unknown field: test_event_code" in response.json()["reason"]


def _drop_user(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda item: item["user_data"].pop(key)


def _set_user(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda item: item["user_data"].__setitem__(key, value)


def _set_custom(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda item: item["custom_data"].__setitem__(key, value)


def _no_match(item: dict[str, Any]) -> None:
    for key in ("em", "ph", "client_ip_address"):
        item["user_data"].pop(key)


def _content(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda item: item["custom_data"]["contents"][0].__setitem__(key, value)


class TestEventRefusals:
    @pytest.mark.parametrize(
        ("breaks", "code", "message"),
        [
            (lambda e: e.__setitem__("pixel_id", PIXEL), "UNKNOWN_FIELD", "data[1].pixel_id"),
            (lambda e: e.pop("event_name"), "MISSING_REQUIRED_FIELD", "data[1].event_name"),
            (
                lambda e: e.__setitem__("event_name", "Purchase"),
                "INVALID_VALUE",
                "'Purchase' is not a Snap event",
            ),
            (
                lambda e: e.__setitem__("event_name", "ADD_TO_CART"),
                "INVALID_VALUE",
                "'ADD_TO_CART' is not a Snap event",
            ),
            (
                lambda e: e.__setitem__("event_time", WHEN * 1000),
                "INVALID_TIMESTAMP",
                "Timestamp invalid or out of range: data[1].event_time is in milliseconds",
            ),
            (
                lambda e: e.__setitem__("event_time", START - 38 * 86400),
                "INVALID_TIMESTAMP",
                "more than 37 days in the past",
            ),
            (
                lambda e: e.__setitem__("event_time", START + 3600),
                "INVALID_TIMESTAMP",
                "in the future",
            ),
            (
                lambda e: e.__setitem__("event_time", str(WHEN)),
                "INVALID_TIMESTAMP",
                "integer unix time in seconds",
            ),
            (lambda e: e.pop("action_source"), "MISSING_REQUIRED_FIELD", "action_source"),
            (
                lambda e: e.__setitem__("action_source", "website"),
                "INVALID_VALUE",
                "data[1].action_source must be one of",
            ),
            (
                lambda e: e.pop("event_source_url"),
                "MISSING_REQUIRED_FIELD",
                "data[1].event_source_url (web events)",
            ),
            (
                lambda e: e.__setitem__("action_source", "MOBILE_APP"),
                "MISSING_REQUIRED_FIELD",
                "app_data.extinfo",
            ),
            (lambda e: e.pop("user_data"), "MISSING_REQUIRED_FIELD", "data[1].user_data"),
            (
                _set_user("em", ["person@example.com"]),
                "UNHASHED_PII",
                "Unhashed PII: data[1].user_data.em",
            ),
            (
                _set_user("ph", [sha("448444124653").upper()]),
                "UNHASHED_PII",
                "data[1].user_data.ph must be SHA-256 (64 lowercase hex)",
            ),
            (
                _set_user("email", sha("a@b.co")),
                "UNKNOWN_FIELD",
                "data[1].user_data.email (Snap's name for it is 'em')",
            ),
            (
                _set_user("uuid_c1", "cookie"),
                "UNKNOWN_FIELD",
                "(Snap's name for it is 'sc_cookie1')",
            ),
            (
                _set_user("client_ip_address", sha("81.2.69.160")),
                "INVALID_IP_ADDRESS",
                "data[1].user_data.client_ip_address",
            ),
            (_set_user("sc_click_id", 42), "INVALID_VALUE", "sc_click_id must be a non-empty"),
            (_no_match, "INSUFFICIENT_PII", "Insufficient PII: data[1].user_data needs em"),
            (_set_custom("value", "ten"), "INVALID_VALUE", "custom_data.value must be a number"),
            (_set_custom("currency", "usd"), "INVALID_VALUE", "custom_data.currency"),
            (_set_custom("price", 5), "UNKNOWN_FIELD", "data[1].custom_data.price"),
            (_content("quantity", 2), "INVALID_VALUE", "contents[0].quantity must be a string"),
            (_content("item_price", 29.95), "INVALID_VALUE", "contents[0].item_price"),
            (_content("title", "Tee"), "UNKNOWN_FIELD", "contents[0].title"),
            (
                lambda e: e["custom_data"].pop("currency"),
                "MISSING_PRICE_OR_CURRENCY",
                "Missing price and/or currency in Purchase events",
            ),
            (
                lambda e: e.pop("custom_data"),
                "MISSING_PRICE_OR_CURRENCY",
                "data[1].custom_data.value and .currency",
            ),
        ],
    )
    def test_refused_naming_the_event(
        self,
        sc: httpx.Client,
        breaks: Callable[[dict[str, Any]], Any],
        code: str,
        message: str,
    ) -> None:
        """The bad event is the second of three: ``event`` names it and nothing is kept."""
        bad = event(event_id="bad")
        breaks(bad)
        response = post(sc, {"data": [event(event_id="a"), bad, event(event_id="c")]})
        assert response.status_code == 400, response.text
        answer = response.json()
        assert answer["status"] == "INVALID"
        assert answer["event"] == 1
        assert code in answer["errors"]["codes"]
        assert any(message in m for m in answer["errors"]["error_msgs"]), answer
        assert listed(sc, "snapchat")["count"] == 0
        outcome = snap_destination.classify(400, response.headers, response.content)
        assert (outcome.verdict, outcome.bad_index) == (Verdict.PERMANENT, 1)


class TestTestEventTool:
    def test_every_event_gets_a_log_and_the_valid_ones_are_kept_as_tests(
        self, sc: httpx.Client
    ) -> None:
        bad = event(event_id="bad", event_time=WHEN * 1000)
        response = post(sc, {"data": [event(event_id="ok"), bad]}, path=VALIDATE)
        assert response.status_code == 400
        answer = response.json()
        assert (answer["status"], answer["test_event"]) == ("INVALID", True)
        assert answer["reason"] == "At least one of the events is invalid."
        first, second = answer["event_logs"]
        assert (first["event"], first["status"], first["errors"]["codes"]) == (0, "VALID", [])
        assert (second["event"], second["status"]) == (1, "INVALID")
        assert second["errors"]["codes"] == ["INVALID_TIMESTAMP"]
        [kept] = listed(sc, "snapchat")["events"]
        assert (kept["event_id"], kept["_test_event_code"]) == ("ok", "validate")
        outcome = snap_destination.classify(400, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert list(outcome.failed_rows) == [1]

    def test_all_valid(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()]}, path=VALIDATE)
        assert response.status_code == 200
        answer = response.json()
        assert (answer["status"], answer["test_event"]) == ("VALID", True)
        assert [log["status"] for log in answer["event_logs"]] == ["VALID"]
        assert stats(sc, "snapchat")["by_code"] == {"validate": 1}

    def test_auth_is_checked_there_too(self, sc: httpx.Client) -> None:
        response = post(sc, {"data": [event()]}, path=VALIDATE, token="wrong")
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


class TestFaults:
    def test_a_rate_limit(self, sc: httpx.Client) -> None:
        set_faults(sc, {"snapchat": {"rate_limit_next": 1}})
        response = post(sc, {"data": [event()]})
        assert (response.status_code, response.json()["status"]) == (429, "INVALID")
        assert post(sc, {"data": [event()]}).status_code == 200
        assert stats(sc, "snapchat")["by_code"] == {"429": 1, "0": 1}

    def test_a_5xx_is_the_edges_page(self, sc: httpx.Client) -> None:
        set_faults(sc, {"snapchat": {"error_rate": 1.0, "status": 502}})
        response = post(sc, {"data": [event()]})
        assert response.status_code == 502
        assert "nginx" in response.text
        outcome = snap_destination.classify(502, response.headers, response.content)
        assert outcome.verdict is Verdict.RETRY

    def test_a_rejected_event_is_named(self, sc: httpx.Client) -> None:
        set_faults(sc, {"snapchat": {"reject_event_ids": ["poison"]}})
        response = post(sc, {"data": [event(event_id="a"), event(event_id="poison")]})
        assert response.status_code == 400
        assert response.json()["event"] == 1
        assert listed(sc, "snapchat")["count"] == 0

    def test_a_rejection_naming_no_event(self, sc: httpx.Client) -> None:
        set_faults(sc, {"snapchat": {"reject_event_ids": ["poison"], "reject_without_row": True}})
        response = post(sc, {"data": [event(event_id="a"), event(event_id="poison")]})
        assert response.status_code == 400
        answer = response.json()
        assert "event" not in answer
        assert not any("data[" in m for m in answer["errors"]["error_msgs"])

    def test_timeout_after_accept_keeps_the_events(self, sc: httpx.Client) -> None:
        set_faults(
            sc,
            {"snapchat": {"timeout_rate": 1.0, "hang_seconds": 0.5, "timeout_after_accept": True}},
        )
        with pytest.raises(httpx.ReadTimeout):
            post(sc, {"data": [event()]}, timeout=0.1)
        eventually(lambda: listed(sc, "snapchat")["count"] == 1)
        assert stats(sc, "snapchat")["by_code"] == {"0": 1}

    def test_faults_of_snapchat_leave_meta_alone(self, sc: httpx.Client) -> None:
        set_faults(sc, {"snapchat": {"error_rate": 1.0}})
        assert post(sc, {"data": [event()]}).status_code == 503
        response = sc.post("/v25.0/1234567890/events", json={"data": []})
        assert response.status_code == 400  # Meta's own refusal, no injected 503
