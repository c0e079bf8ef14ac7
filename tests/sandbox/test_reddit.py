"""The Reddit emulator over real HTTP (docs/platforms/reddit.md): the golden body is taken,
each kind of bad input is refused in Reddit's error shape, nothing of a refused request is kept.

Each strictness test starts from a body the emulator accepts and breaks one thing. The error
shape ``{"error": {"code", "message", "fields": [{"field", "message"}]}}`` and the messages
"There were N invalid conversion events. None were processed.", "Your user agent was
automatically ratelimited.", "UNAUTHORIZED" … are Reddit's (§9).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from backchannel.destinations import reddit as reddit_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import START, FakeClock, eventually, listed, stats

PIXEL = "a2_sandboxpixel"
TOKEN = "reddit-sandbox-token"
PATH = f"/api/v3/pixels/{PIXEL}/conversion_events"
AGENT = "Backchannel/0.1.0 (tests)"
UUID = "1677712978045.b8f7eb7d-b357-437b-8bd3-e1c8166c7132"
MS = (START - 60) * 1000
INVALID_ONE = "There were 1 invalid conversion events. None were processed."
OLD_MS = (START - 8 * 86400) * 1000


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def reddit_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def reddit_server(reddit_clock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(reddit_pixel=PIXEL, reddit_token=TOKEN, clock=reddit_clock, seed=1)
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def _client(reddit_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reddit_server.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def rd(_client: httpx.Client, reddit_clock: FakeClock) -> httpx.Client:
    """A client of a sandbox whose Reddit account is PIXEL/TOKEN, freshly reset."""
    reddit_clock.now = float(START)
    assert _client.post("/_sandbox/reset").status_code == 200
    return _client


def golden_event(**overrides: Any) -> dict[str, Any]:
    """One valid events[] item, as docs/platforms/reddit.md §10 shows it."""
    item: dict[str, Any] = {
        "event_at": MS,
        "event_source_url": "https://shop.example/checkout?rdt_cid=3184742045291813272",
        "action_source": "WEBSITE",
        "type": {"tracking_type": "PURCHASE"},
        "click_id": "3184742045291813272",
        "user": {
            "ip_address": "81.2.69.160",
            "user_agent": "Mozilla/5.0",
            "screen_dimensions": {"width": 1920, "height": 1080},
            "uuid": UUID,
            "email": sha("alice@example.com"),
            "phone_number": sha("+15554441234"),
            "external_id": "customer12345",
            "data_processing_options": {"modes": ["LDU"], "country": "US", "region": "US-CA"},
        },
        "metadata": {
            "item_count": 2,
            "currency": "USD",
            "value": 100.0,
            "conversion_id": "order-1",
            "products": [
                {
                    "id": "SKU",
                    "name": "Tee",
                    "category": "Shirts",
                    "quantity": 1,
                    "item_price": 50.0,
                }
            ],
        },
    }
    item.update(overrides)
    return item


def custom(name: str) -> dict[str, str]:
    return {"tracking_type": "CUSTOM", "custom_event_name": name}


def golden(events: list[dict[str, Any]] | None = None, **data: Any) -> dict[str, Any]:
    return {"data": {"events": events if events is not None else [golden_event()], **data}}


def post(
    http: httpx.Client,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    agent: str | None = AGENT,
    path: str = PATH,
    content: bytes | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if agent is not None:
        headers["User-Agent"] = agent
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = (
        content if content is not None else orjson.dumps(body if body is not None else golden())
    )
    return http.post(path, content=payload, headers=headers)


def error(response: httpx.Response) -> dict[str, Any]:
    found: dict[str, Any] = response.json()["error"]
    return found


def verdict(response: httpx.Response) -> Verdict:
    return reddit_destination.classify(
        response.status_code, response.headers, response.content
    ).verdict


def set_faults(http: httpx.Client, payload: dict[str, Any]) -> None:
    assert http.post("/_sandbox/faults", json=payload).status_code == 200


class TestAccepted:
    def test_the_golden_body(self, rd: httpx.Client) -> None:
        response = post(rd)
        assert response.status_code == 200
        assert response.json() == {
            "data": {"message": "Successfully processed 1 conversion events."}
        }
        [stored] = listed(rd, "reddit")["events"]
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == {
            **golden_event(),
            "event_id": "order-1",  # the sandbox adds Reddit's dedup key, conversion_id
        }
        assert stored["_pixel"] == PIXEL
        assert stored["_test_event_code"] is None
        assert stored["_user_agent"] == AGENT
        assert stats(rd, "reddit")["by_code"] == {"0": 1}

    def test_a_minimal_event(self, rd: httpx.Client) -> None:
        """event_at, action_source, type and one match key are all Reddit needs."""
        event = {
            "event_at": MS,
            "action_source": "APP",
            "type": {"tracking_type": "CUSTOM", "custom_event_name": "Promotion Event"},
            "click_id": "c-1",
        }
        assert post(rd, golden([event])).status_code == 200
        assert listed(rd, "reddit")["count"] == 1
        assert stats(rd, "reddit")["without_event_id"] == 1

    def test_1000_events(self, rd: httpx.Client) -> None:
        events = [golden_event(metadata={"conversion_id": f"o-{i}"}) for i in range(1000)]
        response = post(rd, golden(events))
        assert (
            response.json()["data"]["message"] == "Successfully processed 1000 conversion events."
        )
        assert stats(rd, "reddit")["unique_event_ids"] == 1000

    def test_resent_conversion_ids_are_duplicates_within_one_type(self, rd: httpx.Client) -> None:
        """§7: Reddit dedups on conversion_id within an event type (a custom one by name)."""
        assert post(rd).status_code == 200
        assert post(rd).status_code == 200
        custom = {"tracking_type": "CUSTOM", "custom_event_name": "A"}
        assert post(rd, golden([golden_event(type=custom)])).status_code == 200
        other = {"tracking_type": "CUSTOM", "custom_event_name": "B"}
        assert post(rd, golden([golden_event(type=other)])).status_code == 200
        assert (stats(rd, "reddit")["duplicates"], stats(rd, "reddit")["unique_event_ids"]) == (
            1,
            3,
        )
        assert len(listed(rd, "reddit", event_id="order-1")["events"]) == 4

    def test_the_partner_key_segment_sends_is_taken(self, rd: httpx.Client) -> None:
        assert post(rd, golden(partner="SEGMENT")).status_code == 200


class TestUserAgent:
    @pytest.mark.parametrize(
        "agent",
        [
            None,
            "",
            "python-httpx/0.28.1",
            "python-requests/2.32",
            "Go-http-client/1.1",
            "curl/8.5.0",
        ],
    )
    def test_default_agents_are_throttled(self, rd: httpx.Client, agent: str | None) -> None:
        """§2: "Default user agents get throttled" (429, Reddit's message), before auth."""
        response = post(rd, agent=agent, token=None)
        assert response.status_code == 429
        assert error(response) == {
            "code": 429,
            "message": "Your user agent was automatically ratelimited.",
        }
        assert verdict(response) is Verdict.RETRY
        assert listed(rd, "reddit")["count"] == 0

    def test_a_plain_httpx_client_is_throttled(
        self, rd: httpx.Client, reddit_server: ServerThread
    ) -> None:
        """No User-Agent set: httpx sends its own default, which Reddit throttles."""
        request = reddit_destination.prepare([_conversion()], _target(reddit_server))
        headers = {k: v for k, v in request.headers.items() if k != "User-Agent"}
        response = httpx.post(request.url, content=request.content, headers=headers)
        assert response.request.headers["user-agent"].startswith("python-httpx/")
        assert response.status_code == 429

    def test_ours_is_taken(self, rd: httpx.Client) -> None:
        assert post(rd, agent=reddit_destination.USER_AGENT).status_code == 200
        [stored] = listed(rd, "reddit")["events"]
        assert stored["_user_agent"] == reddit_destination.USER_AGENT


class TestAuth:
    def test_no_bearer_token(self, rd: httpx.Client) -> None:
        response = post(rd, token=None)
        assert response.status_code == 401
        assert error(response) == {"code": 401, "message": "No bearer token provided"}

    def test_a_wrong_token(self, rd: httpx.Client) -> None:
        response = post(rd, token="wrong")
        assert response.status_code == 401
        assert error(response)["message"] == "UNAUTHORIZED"
        outcome = reddit_destination.classify(401, response.headers, response.content)
        assert (outcome.verdict, outcome.whole_request) == (Verdict.PERMANENT, True)

    def test_a_pixel_the_token_may_not_post_to(self, rd: httpx.Client) -> None:
        response = post(rd, path="/api/v3/pixels/a2_other/conversion_events")
        assert response.status_code == 403
        assert error(response)["message"] == (
            "You're not authorized to post conversions to Pixel ID a2_other."
        )
        assert reddit_destination.classify(403, {}, response.content).whole_request
        assert stats(rd, "reddit")["by_code"] == {"403": 1}


def _broken(path: str, value: Any) -> dict[str, Any]:
    """The golden event with the value at a dotted path replaced (``...`` removes it)."""
    event = copy.deepcopy(golden_event())
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return event


class TestEventRules:
    @pytest.mark.parametrize(
        ("path", "value", "field", "text"),
        [
            ("event_at", START - 60, "event_at", "less than 168h0m0s old (v3 takes milliseconds"),
            ("event_at", float(MS), "event_at", "must be an integer"),
            ("event_at", "2025-06-15T15:05:40Z", "event_at", "must be an integer"),
            ("event_at", ..., "event_at", "required"),
            ("event_at", OLD_MS, "event_at", "event_at timestamp must be less than 168h0m0s old"),
            ("event_at", (START + 3600) * 1000, "event_at", "in the future"),
            ("action_source", ..., "action_source", "required"),
            ("action_source", "website", "action_source", "must be one of"),
            ("type", ..., "type", "required"),
            ("type", {"tracking_type": "Purchase"}, "type.tracking_type", "must be one of"),
            ("type", {"tracking_type": "CUSTOM"}, "type.custom_event_name", "required with"),
            ("type", custom("x" * 65), "type.custom_event_name", "at most 64"),
            ("type", {**custom("x"), "tracking_type": "PURCHASE"}, "type.custom_event_name",
             "only with"),
            ("event_type", {"tracking_type": "Purchase"}, "event_type", "v3 name is type"),
            ("metadata.value", "100.00", "metadata.value", "must be a number"),
            ("metadata.value_decimal", 100.0, "metadata.value_decimal", "v3 name is value"),
            ("metadata.currency", "usd", "metadata.currency", "ISO 4217"),
            ("metadata.item_count", 2.0, "metadata.item_count", "integer"),
            ("metadata.conversion_id", 17, "metadata.conversion_id", "string"),
            ("metadata.products", [{"name": "Tee"}], "metadata.products[0].id", "required"),
            ("user.email", "alice@example.com", "user.email", "SHA-256"),
            ("user.phone_number", sha("+15554441234").upper(), "user.phone_number", "SHA-256"),
            ("user.uuid", "1700000000.abcd-uuid", "user.UUID", "RFC-4122 compliant"),
            ("user.em", sha("a@b.co"), "user.em", "v3 name is email"),
            ("user.ip_address", "not-an-ip", "user.ip_address", "IP address"),
            ("user.opt_out", True, "user.opt_out", "data_processing_options"),
            ("user.data_processing_options", {"modes": ["XYZ"]},
             "user.data_processing_options.modes", "LDU"),
            ("user.screen_dimensions", {"width": "1920"}, "user.screen_dimensions", "positive"),
            ("click_id", "", "click_id", "non-empty"),
        ],
    )  # fmt: skip
    def test_one_bad_field(
        self, rd: httpx.Client, path: str, value: Any, field: str, text: str
    ) -> None:
        response = post(rd, golden([_broken(path, value)]))
        assert response.status_code == 400, response.text
        found = error(response)
        assert found["code"] == 400
        assert found["message"] == INVALID_ONE
        paths = [f["field"] for f in found["fields"]]
        assert f"$.data.events[0].{field}" in paths, found
        [message] = [f["message"] for f in found["fields"] if f["field"].endswith(f"].{field}")]
        assert text in message
        assert listed(rd, "reddit")["count"] == 0
        assert stats(rd, "reddit")["by_code"] == {"400": 1}
        outcome = reddit_destination.classify(400, response.headers, response.content)
        assert (outcome.verdict, outcome.bad_index) == (Verdict.PERMANENT, 0)

    def test_an_event_without_any_match_key(self, rd: httpx.Client) -> None:
        event = {"event_at": MS, "action_source": "WEBSITE", "type": {"tracking_type": "LEAD"}}
        response = post(rd, golden([event]))
        assert response.status_code == 400
        assert error(response)["fields"][0]["field"] == "$.data.events[0].user"
        event["user"] = {"ip_address": "81.2.69.160"}  # ip alone is not enough
        assert post(rd, golden([event])).status_code == 400
        event["user"]["user_agent"] = "UA"  # with the user agent it is
        assert post(rd, golden([event])).status_code == 200

    def test_every_invalid_event_is_counted_and_named(self, rd: httpx.Client) -> None:
        """One bad event refuses the request; the message counts them, fields name each row."""
        events = [
            _broken("event_at", START - 60),
            golden_event(),
            _broken("action_source", "web"),
        ]
        response = post(rd, golden(events))
        found = error(response)
        assert found["message"] == "There were 2 invalid conversion events. None were processed."
        assert [f["field"] for f in found["fields"]] == [
            "$.data.events[0].event_at",
            "$.data.events[2].action_source",
        ]
        assert listed(rd, "reddit")["count"] == 0
        assert reddit_destination.classify(400, {}, response.content).bad_index == 0


class TestRequestRules:
    def test_more_than_1000_events_is_a_bad_request(self, rd: httpx.Client) -> None:
        """§9: 400 "Bad Request", naming no row (the client must split)."""
        response = post(rd, golden([golden_event()] * 1001))
        assert response.status_code == 400
        assert error(response) == {"code": 400, "message": "Bad Request"}
        assert reddit_destination.classify(400, {}, response.content).bad_index is None

    @pytest.mark.parametrize(
        ("content", "field", "text"),
        [
            (b"{", "$", "not valid JSON"),
            (b"[]", "$", "a JSON object"),
            (b'{"events": []}', "$.events", "wraps the events in data"),
            (b'{"data": {"events": []}}', "$.data.events", "1 to 1000"),
            (b'{"data": {"events": [], "test_mode": true}}', "$.data.test_mode", "test_id"),
            (b'{"data": {"events": [{}], "test_id": ""}}', "$.data.test_id", "non-empty"),
        ],
    )
    def test_unreadable_bodies(
        self, rd: httpx.Client, content: bytes, field: str, text: str
    ) -> None:
        response = post(rd, content=content)
        assert response.status_code == 400
        found = error(response)
        assert found["message"] == "Bad Request"
        [entry] = found["fields"]
        assert entry["field"] == field
        assert text in entry["message"]


class TestTestEvents:
    def test_only_the_first_event_of_a_test_request_is_shown(self, rd: httpx.Client) -> None:
        """§1: Event Testing displays one event per request; the rest are not listed."""
        events = [golden_event(metadata={"conversion_id": f"t-{i}"}) for i in range(3)]
        response = post(rd, golden(events, test_id="T-42"))
        assert response.json()["data"]["message"] == "Successfully processed 3 conversion events."
        [shown] = listed(rd, "reddit")["events"]
        assert shown["event_id"] == "t-0"
        assert shown["_test_event_code"] == "T-42"

    def test_ten_test_events_a_second(self, rd: httpx.Client, reddit_clock: FakeClock) -> None:
        """§8: the eleventh test event within a second is a 429; a second later it goes."""
        for i in range(10):
            event = golden_event(metadata={"conversion_id": f"t-{i}"})
            assert post(rd, golden([event], test_id="T")).status_code == 200
        response = post(rd, golden(test_id="T"))
        assert response.status_code == 429
        assert error(response)["message"] == "Too many requests/events within timeframe."
        assert post(rd).status_code == 200  # production is not limited so
        reddit_clock.advance(1.0)
        assert post(rd, golden(test_id="T")).status_code == 200


def _conversion(**fields: Any) -> Any:
    data: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": "1001",
        "value": 59.9,
        "currency": "USD",
        "event_time": START - 60,
        "contents": [{"id": "SKU-1", "quantity": 2, "price": 29.95}],
        "user": {
            "email": "Al.ice$+Apple@Example.Com",
            "phone": "+1 415 555 2671",
            "ip": "81.2.69.160",
            "user_agent": "Mozilla/5.0",
            "rdt_uuid": UUID,
        },
        "page": {"url": "https://shop.example/thanks?rdt_cid=click-77"},
        **fields,
    }
    return normalize(data, now=START).conversion


def _target(server: ServerThread, token: str = TOKEN) -> Target:
    return Target(base_url=server.url, pixel=PIXEL, token=token)


class TestOurRequests:
    def test_prepare_post_stored(self, rd: httpx.Client, reddit_server: ServerThread) -> None:
        """prepare -> POST -> the stored event is the body's, classified delivered."""
        request = reddit_destination.prepare([_conversion()], _target(reddit_server))
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 200, response.text
        outcome = reddit_destination.classify(200, response.headers, response.content)
        assert (outcome.verdict, outcome.received) == (Verdict.DELIVERED, 1)
        [stored] = listed(rd, "reddit")["events"]
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == {
            **request.body["data"]["events"][0],
            "event_id": "CompletePayment-1001",
        }
        assert stored["user"]["email"] == sha("alice@example.com")
        assert stored["click_id"] == "click-77"

    def test_a_test_conversion(self, rd: httpx.Client, reddit_server: ServerThread) -> None:
        conversion = _conversion(test_event_code="EVT-TEST-1")
        request = reddit_destination.prepare([conversion], _target(reddit_server))
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 200
        [stored] = listed(rd, "reddit")["events"]
        assert stored["_test_event_code"] == "EVT-TEST-1"

    def test_every_catalog_event_is_taken(
        self, rd: httpx.Client, reddit_server: ServerThread
    ) -> None:
        from backchannel.catalog import EVENTS

        batch = [
            _conversion(event=name, event_id=f"e-{i}", order_id=None)
            for i, name in enumerate([*EVENTS, "My Custom Event"])
        ]
        request = reddit_destination.prepare(batch, _target(reddit_server))
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 200, response.text
        assert listed(rd, "reddit")["count"] == len(batch)


class TestFaults:
    def test_error(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"error_rate": 1.0, "status": 500}})
        response = post(rd)
        assert response.status_code == 500
        assert error(response)["message"] == (
            "The service is currently unavailable. No conversion events were processed."
        )
        assert verdict(response) is Verdict.RETRY
        assert stats(rd, "reddit")["by_code"] == {"http_500": 1}

    def test_rate_limit(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"rate_limit_next": 1}})
        response = post(rd)
        assert response.status_code == 429
        assert error(response)["message"] == "Too many requests/events within timeframe."
        assert verdict(response) is Verdict.RETRY
        assert post(rd).status_code == 200
        assert stats(rd, "reddit")["by_code"] == {"429": 1, "0": 1}

    def test_outage(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"outage_seconds": 30}})
        response = post(rd)
        assert response.status_code == 503
        assert verdict(response) is Verdict.RETRY

    def test_malformed_200_is_not_a_delivery(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"malformed_rate": 1.0, "malformed": "html"}})
        response = post(rd)
        assert response.status_code == 200
        assert verdict(response) is Verdict.RETRY

    def test_reject_event_ids_names_the_row(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"reject_event_ids": ["poison"]}})
        events = [golden_event(), golden_event(metadata={"conversion_id": "poison"})]
        response = post(rd, golden(events))
        assert response.status_code == 400
        found = error(response)
        assert found["message"] == INVALID_ONE
        assert found["fields"][0]["field"] == "$.data.events[1].metadata.conversion_id"
        outcome = reddit_destination.classify(400, {}, response.content)
        assert (outcome.verdict, outcome.bad_index) == (Verdict.PERMANENT, 1)
        assert listed(rd, "reddit")["count"] == 0

    def test_reject_without_row(self, rd: httpx.Client) -> None:
        set_faults(rd, {"reddit": {"reject_event_ids": ["poison"], "reject_without_row": True}})
        response = post(rd, golden([golden_event(metadata={"conversion_id": "poison"})]))
        assert response.status_code == 400
        assert "fields" not in error(response)
        assert reddit_destination.classify(400, {}, response.content).bad_index is None

    def test_timeout_after_accept(self, rd: httpx.Client) -> None:
        """The events are stored, the answer is lost."""
        set_faults(
            rd, {"reddit": {"timeout_rate": 1.0, "hang_seconds": 0.5, "timeout_after_accept": True}}
        )
        with pytest.raises(httpx.ReadTimeout):
            rd.post(
                PATH,
                content=orjson.dumps(golden()),
                headers={"Authorization": f"Bearer {TOKEN}", "User-Agent": AGENT},
                timeout=0.1,
            )
        eventually(lambda: listed(rd, "reddit")["count"] == 1)
        assert stats(rd, "reddit")["by_code"] == {"0": 1}
