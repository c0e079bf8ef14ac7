"""Fault injection: each fault fails requests the way production does, and only when asked."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from backchannel.destinations import meta as meta_destination
from backchannel.destinations import tiktok as tiktok_destination
from backchannel.destinations.base import Verdict
from backchannel.sandbox import Faults, SandboxConfig, create_app, faults_from_options
from support.server import ServerThread

from .helpers import (
    TOKEN,
    FakeClock,
    eventually,
    listed,
    meta_event,
    post_meta,
    post_tiktok,
    stats,
    tiktok_body,
    tiktok_event,
)


def set_faults(http: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/_sandbox/faults", json=payload)
    assert response.status_code == 200, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


def tiktok_verdict(response: httpx.Response) -> Verdict:
    return tiktok_destination.classify(
        response.status_code, response.headers, response.content
    ).verdict


def meta_verdict(response: httpx.Response) -> Verdict:
    return meta_destination.classify(
        response.status_code, response.headers, response.content
    ).verdict


class TestFaultControl:
    def test_no_faults_by_default(self, http: httpx.Client) -> None:
        """GET /_sandbox/faults shows both destinations with every fault off."""
        snapshot = http.get("/_sandbox/faults").json()
        for destination in ("tiktok", "meta"):
            assert snapshot[destination]["error_rate"] == 0.0
            assert snapshot[destination]["rate_limit_left"] == 0
            assert snapshot[destination]["reject_event_ids"] == []

    def test_configure_one_destination(self, http: httpx.Client) -> None:
        """Faults set for tiktok leave meta untouched."""
        snapshot = set_faults(http, {"tiktok": {"latency_ms": 5, "rate_limit_next": 2}})
        assert snapshot["tiktok"]["latency_ms"] == 5.0
        assert snapshot["tiktok"]["rate_limit_left"] == 2
        assert snapshot["meta"]["latency_ms"] == 0.0

    def test_all_then_override(self, http: httpx.Client) -> None:
        """'all' sets both; a destination key in the same body overrides it for that one."""
        snapshot = set_faults(http, {"meta": {"error_rate": 0.5}, "all": {"error_rate": 0.1}})
        assert snapshot["tiktok"]["error_rate"] == 0.1
        assert snapshot["meta"]["error_rate"] == 0.5

    def test_post_replaces_previous_faults(self, http: httpx.Client) -> None:
        """A new POST for a destination replaces its faults instead of merging."""
        set_faults(http, {"tiktok": {"error_rate": 1.0}})
        snapshot = set_faults(http, {"tiktok": {"latency_ms": 1}})
        assert snapshot["tiktok"]["error_rate"] == 0.0

    def test_delete_clears(self, http: httpx.Client) -> None:
        """DELETE /_sandbox/faults turns every fault off."""
        set_faults(http, {"all": {"error_rate": 1.0}})
        assert http.delete("/_sandbox/faults").json()["meta"]["error_rate"] == 0.0
        assert post_tiktok(http).json()["code"] == 0

    @pytest.mark.parametrize(
        ("payload", "named"),
        [
            ({"tiktok": {"eror_rate": 0.5}}, "eror_rate"),
            ({"tiktok": {"error_rate": 1.5}}, "error_rate"),
            ({"meta": {"status": 404}}, "status"),
            ({"meta": {"latency_ms": "slow"}}, "latency_ms"),
            ({"meta": {"reject_event_ids": "e1"}}, "reject_event_ids"),
            ({"google": {}}, "google"),
            ({"seed": "x"}, "seed"),
            ([1], "JSON object"),
        ],
    )
    def test_invalid_config_is_400_and_changes_nothing(
        self, http: httpx.Client, payload: Any, named: str
    ) -> None:
        """A bad fault config is a 400 naming the problem, and no fault is applied."""
        body = {"all": {"error_rate": 1.0}, **payload} if isinstance(payload, dict) else payload
        response = http.post("/_sandbox/faults", json=body)
        assert response.status_code == 400
        assert named in response.json()["error"]
        assert http.get("/_sandbox/faults").json()["tiktok"]["error_rate"] == 0.0

    def test_same_seed_same_failures(self, http: httpx.Client) -> None:
        """A seeded error_rate fails the same requests each time it is replayed."""
        runs = []
        for _ in range(2):
            set_faults(http, {"seed": 7, "tiktok": {"error_rate": 0.5}})
            runs.append([post_tiktok(http).status_code for _ in range(20)])
        assert runs[0] == runs[1]
        assert set(runs[0]) == {200, 503}


class TestTikTokFaults:
    def test_error_rate_gives_nginx_5xx(self, http: httpx.Client) -> None:
        """error_rate 1 with status 502: an nginx HTML 502, retryable, nothing stored."""
        set_faults(http, {"tiktok": {"error_rate": 1.0, "status": 502}})
        response = post_tiktok(http)
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert "502 Bad Gateway" in response.text
        assert "nginx" in response.text
        assert tiktok_verdict(response) is Verdict.RETRY
        counters = stats(http, "tiktok")
        assert counters["by_code"] == {"http_502": 1}
        assert counters["accepted_events"] == 0

    def test_rate_limit_storm(self, http: httpx.Client) -> None:
        """rate_limit_next 3: three HTTP 200 code 40100 answers, then success."""
        set_faults(http, {"tiktok": {"rate_limit_next": 3}})
        answers = [post_tiktok(http) for _ in range(4)]
        for response in answers[:3]:
            assert response.status_code == 200
            assert response.json()["code"] == 40100
            assert response.json()["message"] == "Too many requests. Please retry in some time."
            assert tiktok_verdict(response) is Verdict.RETRY
        assert answers[3].json()["code"] == 0
        assert stats(http, "tiktok")["by_code"] == {"40100": 3, "0": 1}

    def test_rate_limit_rate(self, http: httpx.Client) -> None:
        """rate_limit_rate 1 rate-limits every request."""
        set_faults(http, {"tiktok": {"rate_limit_rate": 1.0}})
        assert {post_tiktok(http).json()["code"] for _ in range(3)} == {40100}

    def test_latency(self, http: httpx.Client) -> None:
        """latency_ms 150 delays the answer by at least 150 ms, and it still succeeds."""
        set_faults(http, {"tiktok": {"latency_ms": 150}})
        started = time.monotonic()
        response = post_tiktok(http)
        assert time.monotonic() - started >= 0.15
        assert response.json()["code"] == 0

    def test_timeout(self, http: httpx.Client) -> None:
        """timeout_rate 1: the request hangs past the client's timeout; nothing is stored."""
        set_faults(http, {"tiktok": {"timeout_rate": 1.0, "hang_seconds": 0.5}})
        with pytest.raises(httpx.ReadTimeout):
            http.post("/open_api/v1.3/event/track/", content=b"{}", timeout=0.1)
        eventually(lambda: stats(http, "tiktok")["by_code"] == {"timeout": 1})
        assert stats(http, "tiktok")["accepted_events"] == 0

    def test_patient_client_gets_a_504_after_the_hang(self, http: httpx.Client) -> None:
        """A client that waits longer than hang_seconds gets an nginx 504 after the hang."""
        set_faults(http, {"tiktok": {"timeout_rate": 1.0, "hang_seconds": 0.3}})
        started = time.monotonic()
        response = post_tiktok(http)
        assert time.monotonic() - started >= 0.3
        assert response.status_code == 504
        assert tiktok_verdict(response) is Verdict.RETRY

    def test_timeout_after_accept_creates_a_duplicate_on_retry(self, http: httpx.Client) -> None:
        """timeout_after_accept: the events are stored though the client timed out, so a
        naive retry shows up as a duplicate."""
        set_faults(
            http,
            {"tiktok": {"timeout_rate": 1.0, "hang_seconds": 0.5, "timeout_after_accept": True}},
        )
        with pytest.raises(httpx.ReadTimeout):
            http.post(
                "/open_api/v1.3/event/track/",
                content=orjson.dumps(tiktok_body()),
                headers={"Access-Token": TOKEN},
                timeout=0.1,
            )
        eventually(lambda: stats(http, "tiktok")["accepted_events"] == 1)
        http.delete("/_sandbox/faults")
        assert post_tiktok(http).json()["code"] == 0
        counters = stats(http, "tiktok")
        assert (counters["accepted_events"], counters["duplicates"]) == (2, 1)

    def test_outage(self, http: httpx.Client, clock: FakeClock) -> None:
        """outage_seconds 60: nginx 503 pages until the clock passes the end, then success."""
        set_faults(http, {"tiktok": {"outage_seconds": 60}})
        response = post_tiktok(http)
        assert response.status_code == 503
        assert "503 Service Temporarily Unavailable" in response.text
        assert tiktok_verdict(response) is Verdict.RETRY
        assert http.get("/_sandbox/faults").json()["tiktok"]["outage_remaining"] == 60.0
        clock.advance(59)
        assert post_tiktok(http).status_code == 503
        clock.advance(2)
        assert post_tiktok(http).json()["code"] == 0
        assert stats(http, "tiktok")["by_code"] == {"http_503": 2, "0": 1}

    def test_reject_event_ids(self, http: httpx.Client) -> None:
        """A batch holding a listed event_id is a 40002 naming its row; others pass."""
        set_faults(http, {"tiktok": {"reject_event_ids": ["poison"]}})
        events = [tiktok_event(event_id="ok-1"), tiktok_event(event_id="poison")]
        message = post_tiktok(http, tiktok_body(events)).json()["message"]
        assert message == "Batch.1.event_id: rejected by sandbox fault injection"
        assert stats(http, "tiktok")["accepted_events"] == 0
        assert post_tiktok(http, tiktok_body(events[:1])).json()["code"] == 0

    def test_faults_do_not_leak_to_the_other_platform(self, http: httpx.Client) -> None:
        """TikTok's outage leaves Meta working."""
        set_faults(http, {"tiktok": {"outage_seconds": 60}})
        assert post_meta(http).status_code == 200


class TestMetaFaults:
    def test_rate_limit_is_403_code_4(self, http: httpx.Client) -> None:
        """Meta's throttle: HTTP 403, code 4, is_transient; our classifier retries it."""
        set_faults(http, {"meta": {"rate_limit_next": 1}})
        response = post_meta(http)
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], error["is_transient"]) == (4, True)
        assert error["fbtrace_id"]
        assert meta_verdict(response) is Verdict.RETRY
        assert post_meta(http).status_code == 200

    def test_error_rate_gives_transient_graph_error(self, http: httpx.Client) -> None:
        """error_rate: the configured 5xx with Graph's transient code 2, retryable."""
        set_faults(http, {"meta": {"error_rate": 1.0, "status": 500}})
        response = post_meta(http)
        assert response.status_code == 500
        assert response.json()["error"]["code"] == 2
        assert meta_verdict(response) is Verdict.RETRY
        assert stats(http, "meta")["by_code"] == {"http_500": 1}

    def test_outage(self, http: httpx.Client) -> None:
        """An outage answers Meta requests with an HTML 503 as well."""
        set_faults(http, {"meta": {"outage_seconds": 30}})
        response = post_meta(http)
        assert response.status_code == 503
        assert meta_verdict(response) is Verdict.RETRY

    def test_reject_event_ids(self, http: httpx.Client) -> None:
        """A listed event_id refuses the request with code 100 naming data[i].event_id."""
        set_faults(http, {"meta": {"reject_event_ids": ["poison"]}})
        response = post_meta(http, [meta_event(event_id="a"), meta_event(event_id="poison")])
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == 100
        assert error["error_user_msg"].startswith("data[1].event_id: ")
        assert meta_verdict(response) is Verdict.PERMANENT
        assert listed(http, "meta")["count"] == 0

    def test_timeout(self, http: httpx.Client) -> None:
        """timeout_rate 1 hangs Meta requests past the client's timeout."""
        set_faults(http, {"meta": {"timeout_rate": 1.0, "hang_seconds": 0.5}})
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v25.0/1234567890/events", content=b"", timeout=0.1)
        eventually(lambda: stats(http, "meta")["by_code"] == {"timeout": 1})


class TestStartupFaults:
    def test_cli_faults_apply_and_survive_reset(self) -> None:
        """Faults given at startup (the CLI's flags) apply to both, and reset restores them."""
        faults = faults_from_options(rate_limit_next=1, latency_ms=1)
        app = create_app(SandboxConfig(clock=FakeClock()), faults)
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
            assert post_tiktok(client).json()["code"] == 40100
            assert post_tiktok(client).json()["code"] == 0
            assert post_meta(client).status_code == 403
            client.post("/_sandbox/reset")
            assert post_tiktok(client).json()["code"] == 40100

    def test_per_destination_startup_faults(self) -> None:
        """create_app also takes faults per destination."""
        app = create_app(
            SandboxConfig(clock=FakeClock()), {"meta": Faults(error_rate=1.0, status=502)}
        )
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
            assert post_tiktok(client).json()["code"] == 0
            assert post_meta(client).status_code == 502

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"error_rate": 2.0}, "error_rate"),
            ({"status": 200}, "status"),
            ({"rate_limit_next": -1}, "rate_limit_next"),
            ({"hang_seconds": 0}, "hang_seconds"),
        ],
    )
    def test_out_of_range_options_are_refused(self, options: dict[str, Any], named: str) -> None:
        """faults_from_options refuses out-of-range values, naming the option."""
        with pytest.raises(ValueError, match=named):
            faults_from_options(**options)
