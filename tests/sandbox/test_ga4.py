"""The GA4 emulator over real HTTP: /mp/collect answers 204 whatever it got and keeps only
valid events; /debug/mp/collect says what is wrong (docs/platforms/ga4.md §10).

Each strictness test starts from a request the emulator accepts and breaks one thing, then
checks both endpoints: the validation server names the problem, production still answers
2xx and stores nothing (the trap a 2xx-trusting client falls into).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from backchannel.destinations import ga4 as ga4_destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import START, FakeClock, eventually, listed, stats

MEASUREMENT_ID = "G-SANDBOX01"
SECRET = "ga4-sandbox-secret"
COLLECT = "/mp/collect"
DEBUG = "/debug/mp/collect"
MICROS = (START - 60) * 1_000_000


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def ga4_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def ga4_server(ga4_clock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(
        ga4_measurement_id=MEASUREMENT_ID, ga4_api_secret=SECRET, clock=ga4_clock, seed=1
    )
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def _ga4_client(ga4_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ga4_server.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def ga(_ga4_client: httpx.Client, ga4_clock: FakeClock) -> httpx.Client:
    """A client of a sandbox whose GA4 stream is MEASUREMENT_ID/SECRET, freshly reset."""
    ga4_clock.now = float(START)
    assert _ga4_client.post("/_sandbox/reset").status_code == 200
    return _ga4_client


def hit(**params: Any) -> dict[str, Any]:
    """One valid events[] item."""
    return {
        "name": "purchase",
        "params": {
            "transaction_id": "1001",
            "value": 20.0,
            "currency": "USD",
            "items": [{"item_id": "SKU-1", "item_name": "Tee", "quantity": 2, "price": 10.0}],
            "event_id": "CompletePayment-1001",
            **params,
        },
        "timestamp_micros": MICROS,
    }


def request_body(events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A valid request body."""
    return {
        "client_id": "123456789.1700000000",
        "user_id": sha("cust-42"),
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "user_data": {
            "sha256_email_address": [sha("johndoe@gmail.com")],
            "sha256_phone_number": [sha("+14155552671")],
        },
        "events": events if events is not None else [hit()],
    }


def post(
    http: httpx.Client,
    body: Any = None,
    *,
    path: str = COLLECT,
    query: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    params = (
        query if query is not None else {"measurement_id": MEASUREMENT_ID, "api_secret": SECRET}
    )
    payload = content if content is not None else orjson.dumps(body or request_body())
    return http.post(
        path, params=params, content=payload, headers={"Content-Type": "application/json"}
    )


def set_faults(http: httpx.Client, payload: dict[str, Any]) -> None:
    response = http.post("/_sandbox/faults", json=payload)
    assert response.status_code == 200, response.text


def verdict(response: httpx.Response) -> Verdict:
    return ga4_destination.classify(
        response.status_code, response.headers, response.content
    ).verdict


class TestValidRequest:
    def test_stored_as_one_hit_per_event(self, ga: httpx.Client) -> None:
        """204 with no body; the stored event is the request's shared fields then the
        event's own, under the measurement id."""
        body = request_body()
        response = post(ga, body)
        assert response.status_code == 204
        assert response.content == b""
        [stored] = listed(ga, "ga4")["events"]
        assert stored["_pixel"] == MEASUREMENT_ID
        assert stored["_test_event_code"] is None
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == {
            "client_id": body["client_id"],
            "user_id": body["user_id"],
            "user_data": body["user_data"],
            "consent": body["consent"],
            **body["events"][0],
        }
        counters = stats(ga, "ga4")
        assert counters["by_code"] == {"0": 1}
        assert counters["accepted_events"] == 1

    def test_the_validation_server_says_valid_and_stores_nothing(self, ga: httpx.Client) -> None:
        response = post(ga, path=DEBUG)
        assert response.status_code == 200
        assert response.json() == {"validationMessages": []}
        assert listed(ga, "ga4")["count"] == 0
        assert stats(ga, "ga4")["by_code"] == {"debug": 1}

    def test_25_events(self, ga: httpx.Client) -> None:
        events = [hit(event_id=f"e{i}") for i in range(25)]
        assert post(ga, request_body(events)).status_code == 204
        assert listed(ga, "ga4")["count"] == 25

    def test_resent_events_are_counted_as_duplicates(self, ga: httpx.Client) -> None:
        """GA4 has no idempotency key (§9): the sandbox counts a resent event_id."""
        post(ga)
        post(ga)
        counters = stats(ga, "ga4")
        assert (counters["accepted_events"], counters["duplicates"]) == (2, 1)
        assert listed(ga, "ga4", event_id="CompletePayment-1001")["count"] == 2

    def test_any_secret_when_none_is_configured(self, http: httpx.Client) -> None:
        """The shared sandbox has no GA4 stream configured: any non-empty values pass."""
        response = post(http, query={"measurement_id": "G-ANY", "api_secret": "x"})
        assert response.status_code == 204
        assert listed(http, "ga4")["events"][0]["_pixel"] == "G-ANY"


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


def _event(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["events"][0].update(changes)

    return change


def _param(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["events"][0]["params"].update(changes)

    return change


def _item(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["events"][0]["params"]["items"][0].update(changes)

    return change


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body[key] = value

    return change


_HOURS_73 = 73 * 3600 * 1_000_000

#: (what breaks, fieldPath, validationCode, a piece of the description)
BODY_RULES: list[tuple[str, Callable[[dict[str, Any]], None], str, str, str]] = [
    ("no client_id", _without("client_id"), "client_id", "VALUE_REQUIRED", "client_id"),
    (
        "user_data without user_id",
        _without("user_id"),
        "user_id",
        "VALUE_REQUIRED",
        "whenever user_data",
    ),
    ("unknown top-level key", _set("app_instance_id", "x"), "app_instance_id", "VALUE_INVALID", ""),
    ("no events", _set("events", []), "events", "VALUE_REQUIRED", ""),
    (
        "26 events",
        _set("events", [hit(event_id=f"e{i}") for i in range(26)]),
        "events",
        "EXCEEDED_MAX_ENTITIES",
        "25",
    ),
    (
        "plaintext email",
        _set("user_data", {"sha256_email_address": ["john@gmail.com"]}),
        "user_data.sha256_email_address[0]",
        "VALUE_INVALID",
        "lowercase hex",
    ),
    (
        "uppercase hash",
        _set("user_data", {"sha256_phone_number": [sha("+14155552671").upper()]}),
        "user_data.sha256_phone_number[0]",
        "VALUE_INVALID",
        "SHA-256",
    ),
    (
        "hash not in a list",
        _set("user_data", {"sha256_email_address": sha("a@b.co")}),
        "user_data.sha256_email_address",
        "VALUE_INVALID",
        "array",
    ),
    (
        "consent value",
        _set("consent", {"ad_user_data": "granted"}),
        "consent.ad_user_data",
        "VALUE_INVALID",
        "GRANTED or DENIED",
    ),
    (
        "request timestamp 73 h old",
        _set("timestamp_micros", MICROS - _HOURS_73),
        "timestamp_micros",
        "VALUE_OUT_OF_BOUNDS",
        "72 hours",
    ),
    (
        "event timestamp 73 h old",
        _event(timestamp_micros=MICROS - _HOURS_73),
        "events[0].timestamp_micros",
        "VALUE_OUT_OF_BOUNDS",
        "72 hours",
    ),
    (
        "timestamp in milliseconds",
        _event(timestamp_micros=MICROS // 1000),
        "events[0].timestamp_micros",
        "VALUE_OUT_OF_BOUNDS",
        "microseconds",
    ),
    (
        "timestamp in the future",
        _event(timestamp_micros=MICROS + 3600 * 1_000_000),
        "events[0].timestamp_micros",
        "VALUE_OUT_OF_BOUNDS",
        "future",
    ),
    (
        "name starting with _",
        _event(name="_badEventName"),
        "events",
        "NAME_INVALID",
        "Event at index: [0] has invalid name [_badEventName]. Names must start with an"
        " alphabetic character.",
    ),
    (
        "name with @",
        _event(name="campaign@details"),
        "events",
        "NAME_INVALID",
        "Event at index: [0] has invalid name [campaign@details]. Only alphanumeric characters"
        " and underscores are allowed.",
    ),
    ("reserved name", _event(name="page_view"), "events", "NAME_RESERVED", "[page_view]"),
    ("reserved prefix", _event(name="google_thing"), "events", "NAME_RESERVED", "prefix"),
    ("name over 40", _event(name="a" * 41), "events", "VALUE_OUT_OF_BOUNDS", "40"),
    ("event without a name", _event(name=""), "events", "VALUE_REQUIRED", "no name"),
    (
        "reserved parameter",
        _param(gclid="abc"),
        "events[0].params.gclid",
        "NAME_RESERVED",
        "[gclid]",
    ),
    (
        "parameter prefix",
        _param(ga_campaign="x"),
        "events[0].params.ga_campaign",
        "NAME_RESERVED",
        "prefix",
    ),
    (
        "parameter name with -",
        _param(**{"bad-name": "x"}),
        "events[0].params.bad-name",
        "NAME_INVALID",
        "alphanumeric",
    ),
    (
        "parameter value over 100",
        _param(coupon="c" * 101),
        "events[0].params.coupon",
        "VALUE_OUT_OF_BOUNDS",
        "100",
    ),
    (
        "26 parameters",
        _param(**{f"p{i}": i for i in range(21)}),
        "events[0].params",
        "EXCEEDED_MAX_ENTITIES",
        "25",
    ),
    ("value as text", _param(value="20"), "events[0].params.value", "VALUE_INVALID", "number"),
    (
        "currency lowercase",
        _param(currency="usd"),
        "events[0].params.currency",
        "VALUE_INVALID",
        "",
    ),
    ("currency unknown", _param(currency="XYZ"), "events[0].params.currency", "VALUE_INVALID", ""),
    (
        "item without id or name",
        _param(items=[{"quantity": 1}]),
        "events[0].params.items[0]",
        "VALUE_REQUIRED",
        "item_id or item_name",
    ),
    (
        "item price as text",
        _item(price="$19"),
        "events[0].params.items[0].price",
        "VALUE_INVALID",
        "",
    ),
    (
        "item quantity as text",
        _item(quantity="2"),
        "events[0].params.items[0].quantity",
        "VALUE_INVALID",
        "integer",
    ),
    (
        "11 custom item parameters",
        _item(**{f"custom_{i}": "x" for i in range(11)}),
        "events[0].params.items[0]",
        "EXCEEDED_MAX_ENTITIES",
        "10",
    ),
    (
        "unknown event key",
        _event(event_id="x"),
        "events[0].event_id",
        "VALUE_INVALID",
        "",
    ),
]


class TestStrictness:
    @pytest.mark.parametrize(
        ("change", "path", "code", "text"),
        [rule[1:] for rule in BODY_RULES],
        ids=[rule[0] for rule in BODY_RULES],
    )
    def test_body_rules(
        self,
        ga: httpx.Client,
        change: Callable[[dict[str, Any]], None],
        path: str,
        code: str,
        text: str,
    ) -> None:
        body = copy.deepcopy(request_body())
        change(body)
        self._refused(ga, {"content": orjson.dumps(body)}, path, code, text)

    @pytest.mark.parametrize(
        ("query", "path", "code"),
        [
            ({"api_secret": SECRET}, "measurement_id", "VALUE_REQUIRED"),
            (
                {"measurement_id": "G-OTHER", "api_secret": SECRET},
                "measurement_id",
                "VALUE_INVALID",
            ),
            ({"measurement_id": MEASUREMENT_ID}, "api_secret", "VALUE_REQUIRED"),
            (
                {"measurement_id": MEASUREMENT_ID, "api_secret": "wrong"},
                "api_secret",
                "VALUE_INVALID",
            ),
        ],
    )
    def test_query_rules(
        self, ga: httpx.Client, query: dict[str, str], path: str, code: str
    ) -> None:
        """§2: the measurement id and the secret, in the query string."""
        self._refused(ga, {"query": query}, path, code, "")

    @pytest.mark.parametrize(
        ("content", "text"),
        [
            (b"{not json", "JSON"),
            (b"[]", "object"),
            (b'{"client_id": "' + b"x" * 130_000 + b'"}', "130kB"),
        ],
    )
    def test_unreadable_bodies(self, ga: httpx.Client, content: bytes, text: str) -> None:
        self._refused(ga, {"content": content}, "", "VALUE_INVALID", text)

    @staticmethod
    def _refused(
        http: httpx.Client, request: dict[str, Any], path: str, code: str, text: str
    ) -> None:
        debug = post(http, path=DEBUG, **request)
        assert debug.status_code == 200
        messages = debug.json()["validationMessages"]
        assert len(messages) == 1, messages
        [found] = messages
        assert set(found) == {"fieldPath", "description", "validationCode"}
        assert (found["fieldPath"], found["validationCode"]) == (path, code), found
        assert text in found["description"], found
        production = post(http, **request)
        assert production.status_code == 204
        assert production.content == b""
        assert verdict(production) is Verdict.DELIVERED  # the trap: GA4 says nothing
        assert listed(http, "ga4")["count"] == 0
        assert stats(http, "ga4")["by_code"] == {"debug": 1, "dropped": 1}

    def test_one_bad_event_drops_only_itself(self, ga: httpx.Client) -> None:
        body = request_body([hit(event_id="good"), {**hit(event_id="bad"), "name": "1st"}])
        assert post(ga, body).status_code == 204
        assert [e["params"]["event_id"] for e in listed(ga, "ga4")["events"]] == ["good"]
        assert stats(ga, "ga4")["by_code"] == {"dropped": 1}
        [message] = post(ga, body, path=DEBUG).json()["validationMessages"]
        assert message["description"].startswith("Event at index: [1] ")

    def test_session_id_and_engagement_time_are_accepted(self, ga: httpx.Client) -> None:
        """§3 asks for them in params although §12 lists them as reserved."""
        body = request_body([hit(session_id="1750000000", engagement_time_msec=100)])
        assert post(ga, body, path=DEBUG).json() == {"validationMessages": []}


class TestOurBuilder:
    @staticmethod
    def _prepared(ga4_server: ServerThread, **fields: Any) -> Any:
        data: dict[str, Any] = {
            "event": "CompletePayment",
            "order_id": 1001,
            "event_time": START - 60,
            "value": 59.9,
            "currency": "EUR",
            "contents": [
                {"id": "SKU-1", "name": "Tee", "brand": "Acme", "category": "Shirts", "price": 1}
            ],
            "user": {
                "email": "Jo.Hn@gmail.com",
                "phone": "+1 415 555 2671",
                "external_id": "Cust-42",
                "ga_client_id": "GA1.1.123456789.1700000000",
            },
            "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
            **fields,
        }
        conversion = normalize(data, now=START).conversion
        target = Target(base_url=ga4_server.url, pixel=MEASUREMENT_ID, token=SECRET)
        return ga4_destination.prepare([conversion], target)

    def test_prepare_post_stored(self, ga: httpx.Client, ga4_server: ServerThread) -> None:
        """prepare -> POST -> the stored hit is the body's request fields and event."""
        request = self._prepared(ga4_server)
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 204
        outcome = ga4_destination.classify(response.status_code, response.headers, b"")
        assert outcome.verdict is Verdict.DELIVERED
        [stored] = listed(ga, "ga4")["events"]
        shared = {k: v for k, v in request.body.items() if k != "events"}
        assert {k: v for k, v in stored.items() if not k.startswith("_")} == {
            **shared,
            **request.body["events"][0],
        }
        assert stored["_pixel"] == MEASUREMENT_ID
        assert stats(ga, "ga4")["by_code"] == {"0": 1}

    def test_a_test_conversion_is_validated(
        self, ga: httpx.Client, ga4_server: ServerThread
    ) -> None:
        request = self._prepared(ga4_server, test_event_code="TEST1")
        assert urlsplit(request.url).path == DEBUG
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.json() == {"validationMessages": []}
        outcome = ga4_destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert listed(ga, "ga4")["count"] == 0

    def test_a_full_batch(self, ga: httpx.Client, ga4_server: ServerThread) -> None:
        target = Target(base_url=ga4_server.url, pixel=MEASUREMENT_ID, token=SECRET)
        batch = [
            normalize(
                {
                    "event": event,
                    "event_id": f"e{i}",
                    "event_time": START - i,
                    "query": "shoes",
                    "user": {"ga_client_id": "42.1700000000"},
                },
                now=START,
            ).conversion
            for i, event in enumerate(["Search", "ViewContent", "Lead", "StartTrial"] * 6 + ["X"])
        ]
        request = ga4_destination.prepare(batch, target)
        response = httpx.post(request.url, content=request.content, headers=request.headers)
        assert response.status_code == 204
        assert stats(ga, "ga4")["by_code"] == {"0": 1}
        assert listed(ga, "ga4")["count"] == 25


class TestFaults:
    def test_error(self, ga: httpx.Client) -> None:
        set_faults(ga, {"ga4": {"error_rate": 1.0, "status": 500}})
        response = post(ga)
        assert response.status_code == 500
        assert verdict(response) is Verdict.RETRY
        assert stats(ga, "ga4")["by_code"] == {"http_500": 1}
        assert listed(ga, "ga4")["count"] == 0

    def test_rate_limit(self, ga: httpx.Client) -> None:
        set_faults(ga, {"ga4": {"rate_limit_next": 1}})
        response = post(ga)
        assert response.status_code == 429
        assert verdict(response) is Verdict.RETRY
        assert post(ga).status_code == 204
        assert stats(ga, "ga4")["by_code"] == {"429": 1, "0": 1}

    def test_outage(self, ga: httpx.Client) -> None:
        set_faults(ga, {"ga4": {"outage_seconds": 30}})
        response = post(ga)
        assert response.status_code == 503
        assert verdict(response) is Verdict.RETRY

    def test_reject_event_ids_drop_silently(self, ga: httpx.Client) -> None:
        """Like anything GA4 refuses: 204, the event is gone, the validation server says so."""
        set_faults(ga, {"ga4": {"reject_event_ids": ["poison"]}})
        body = request_body([hit(event_id="a"), hit(event_id="poison")])
        response = post(ga, body)
        assert response.status_code == 204
        assert verdict(response) is Verdict.DELIVERED
        assert [e["params"]["event_id"] for e in listed(ga, "ga4")["events"]] == ["a"]
        assert stats(ga, "ga4")["by_code"] == {"dropped": 1}
        [message] = post(ga, body, path=DEBUG).json()["validationMessages"]
        assert message["fieldPath"] == "events[1].params.event_id"
        assert message["description"].startswith("Event at index: [1] ")
        outcome = ga4_destination.classify(200, {}, orjson.dumps({"validationMessages": [message]}))
        assert (outcome.verdict, outcome.bad_index) == (Verdict.PERMANENT, 1)

    def test_reject_without_row_drops_the_request(self, ga: httpx.Client) -> None:
        set_faults(ga, {"ga4": {"reject_event_ids": ["poison"], "reject_without_row": True}})
        assert (
            post(ga, request_body([hit(event_id="a"), hit(event_id="poison")])).status_code == 204
        )
        assert listed(ga, "ga4")["count"] == 0

    def test_timeout_before_accept(self, ga: httpx.Client) -> None:
        set_faults(ga, {"ga4": {"timeout_rate": 1.0, "hang_seconds": 0.5}})
        with pytest.raises(httpx.ReadTimeout):
            ga.post(COLLECT, content=orjson.dumps(request_body()), timeout=0.1)
        eventually(lambda: stats(ga, "ga4")["by_code"] == {"timeout": 1})
        assert listed(ga, "ga4")["count"] == 0

    def test_timeout_after_accept(self, ga: httpx.Client) -> None:
        """The events are stored, the answer is lost: a resend would count them twice."""
        set_faults(
            ga, {"ga4": {"timeout_rate": 1.0, "hang_seconds": 0.5, "timeout_after_accept": True}}
        )
        with pytest.raises(httpx.ReadTimeout):
            ga.post(
                COLLECT,
                params={"measurement_id": MEASUREMENT_ID, "api_secret": SECRET},
                content=orjson.dumps(request_body()),
                timeout=0.1,
            )
        eventually(lambda: listed(ga, "ga4")["count"] == 1)
        assert stats(ga, "ga4")["by_code"] == {"0": 1}
