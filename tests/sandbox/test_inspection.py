"""What the sandbox tells tests about what it received: events, filters, counters, reset."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import (
    META_PIXEL,
    TIKTOK_PIXEL,
    FakeClock,
    listed,
    meta_event,
    post_meta,
    post_tiktok,
    stats,
    tiktok_body,
    tiktok_event,
)


class TestEventListing:
    def test_events_carry_metadata(self, http: httpx.Client, clock: FakeClock) -> None:
        """Each listed event has _pixel, _test_event_code, _received_at and _request_id."""
        response = post_tiktok(http, tiktok_body(test_event_code="TEST1"))
        event = listed(http, "tiktok")["events"][0]
        assert event["_pixel"] == TIKTOK_PIXEL
        assert event["_test_event_code"] == "TEST1"
        assert event["_received_at"] == clock.now
        assert event["_request_id"] == response.json()["request_id"]

    def test_filter_by_event_id(self, http: httpx.Client) -> None:
        """?event_id= returns every copy of that event and nothing else."""
        post_tiktok(http, tiktok_body([tiktok_event(event_id=f"e{i}") for i in range(10)]))
        post_tiktok(http, tiktok_body([tiktok_event(event_id="e3")]))
        page = listed(http, "tiktok", event_id="e3")
        assert page["count"] == 2
        assert [e["event_id"] for e in page["events"]] == ["e3", "e3"]
        assert listed(http, "tiktok", event_id="nope") == {
            "count": 0,
            "offset": 0,
            "limit": 100,
            "events": [],
        }

    def test_limit_and_offset(self, http: httpx.Client) -> None:
        """limit/offset page through events in arrival order, across requests."""
        for batch in range(3):
            events = [tiktok_event(event_id=f"b{batch}-{i}") for i in range(4)]
            post_tiktok(http, tiktok_body(events))
        page = listed(http, "tiktok", offset=3, limit=3)
        assert page["count"] == 12
        assert [e["event_id"] for e in page["events"]] == ["b0-3", "b1-0", "b1-1"]
        assert listed(http, "tiktok", offset=11, limit=5)["events"][0]["event_id"] == "b2-3"
        assert listed(http, "tiktok", offset=50)["events"] == []

    def test_meta_events_are_listed_separately(self, http: httpx.Client) -> None:
        """Meta events appear under /_sandbox/meta only, with the pixel from the URL."""
        post_meta(http)
        assert listed(http, "tiktok")["count"] == 0
        event = listed(http, "meta")["events"][0]
        assert event["_pixel"] == META_PIXEL
        assert event["event_name"] == "Purchase"

    @pytest.mark.parametrize(
        "params", [{"limit": "x"}, {"limit": -1}, {"offset": "-2"}, {"limit": 10_001}]
    )
    def test_bad_paging_is_400(self, http: httpx.Client, params: dict[str, Any]) -> None:
        """Non-integer or out-of-range limit/offset is a 400 naming the parameter."""
        response = http.get("/_sandbox/tiktok/events", params=params)
        assert response.status_code == 400
        assert next(iter(params)) in response.json()["error"]

    def test_unknown_destination_is_404(self, http: httpx.Client) -> None:
        """/_sandbox/google/events and /stats are 404."""
        assert http.get("/_sandbox/google/events").status_code == 404
        assert http.get("/_sandbox/google/stats").status_code == 404


class TestStats:
    def test_counts_requests_events_and_codes(self, http: httpx.Client) -> None:
        """requests, accepted_events, rejected_requests and by_code add up."""
        post_tiktok(http, tiktok_body([tiktok_event(event_id=f"e{i}") for i in range(3)]))
        post_tiktok(http, token="wrong")
        post_tiktok(http, tiktok_body([tiktok_event(event="")]))
        assert stats(http, "tiktok") == {
            "requests": 3,
            "accepted_events": 3,
            "unique_event_ids": 3,
            "duplicates": 0,
            "without_event_id": 0,
            "rejected_requests": 2,
            "by_code": {"0": 1, "40105": 1, "40002": 1},
            "by_pixel": {TIKTOK_PIXEL: 3},
        }

    def test_events_are_kept_and_counted_per_pixel(self) -> None:
        """Two pixels (two properties' connections) sending to one sandbox that takes any
        pixel (as `serve` embeds it): by_pixel counts each, ?pixel= lists only its events,
        each event names the pixel it came to."""
        app = create_app(SandboxConfig(clock=FakeClock()))
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
            post_tiktok(http, tiktok_body([tiktok_event(event_id=f"a{i}") for i in range(2)]))
            other = "CSECONDPIXEL02"
            events = [tiktok_event(event_id=f"b{i}") for i in range(3)]
            post_tiktok(http, tiktok_body(events, event_source_id=other))
            assert stats(http, "tiktok")["by_pixel"] == {TIKTOK_PIXEL: 2, other: 3}
            listed = http.get("/_sandbox/tiktok/events", params={"pixel": other}).json()
            assert listed["count"] == 3
            assert [e["event_id"] for e in listed["events"]] == ["b0", "b1", "b2"]
            assert {e["_pixel"] for e in listed["events"]} == {other}
            none = http.get("/_sandbox/tiktok/events", params={"pixel": other, "event_id": "a1"})
            assert none.json()["count"] == 0
            mine = http.get(
                "/_sandbox/tiktok/events", params={"pixel": TIKTOK_PIXEL, "event_id": "a1"}
            )
            assert [e["_pixel"] for e in mine.json()["events"]] == [TIKTOK_PIXEL]

    def test_duplicates_across_requests(self, http: httpx.Client) -> None:
        """The same (pixel, event, event_id) twice counts one unique and one duplicate."""
        post_tiktok(http)
        post_tiktok(http)
        counters = stats(http, "tiktok")
        assert (
            counters["accepted_events"],
            counters["unique_event_ids"],
            counters["duplicates"],
        ) == (2, 1, 1)

    def test_duplicates_within_a_batch(self, http: httpx.Client) -> None:
        """A repeated event_id inside one batch is a duplicate too."""
        post_tiktok(http, tiktok_body([tiktok_event(), tiktok_event(), tiktok_event()]))
        assert stats(http, "tiktok")["duplicates"] == 2

    def test_dedup_key_includes_event_name(self, http: httpx.Client) -> None:
        """Same event_id under another event name is not a duplicate (TikTok's key, §6)."""
        post_tiktok(http, tiktok_body([tiktok_event(event="AddToCart"), tiktok_event()]))
        counters = stats(http, "tiktok")
        assert (counters["unique_event_ids"], counters["duplicates"]) == (2, 0)

    def test_meta_duplicates(self, http: httpx.Client) -> None:
        """Meta counts duplicates on (pixel, event_name, event_id) as well."""
        post_meta(http, [meta_event(), meta_event(event_name="Lead")])
        post_meta(http)
        counters = stats(http, "meta")
        assert (
            counters["requests"],
            counters["accepted_events"],
            counters["unique_event_ids"],
            counters["duplicates"],
        ) == (2, 3, 2, 1)
        assert counters["by_code"] == {"0": 2}

    def test_rejected_batches_do_not_count_events(self, http: httpx.Client) -> None:
        """A refused batch adds nothing to accepted, unique or duplicate counts."""
        post_tiktok(http)
        post_tiktok(http, tiktok_body([tiktok_event(), tiktok_event(event_time="x")]))
        counters = stats(http, "tiktok")
        assert (counters["accepted_events"], counters["duplicates"]) == (1, 0)


class TestReset:
    def test_reset_clears_events_counters_and_faults(self, http: httpx.Client) -> None:
        """POST /_sandbox/reset forgets events and counters of both platforms and faults."""
        post_tiktok(http)
        post_meta(http)
        http.post("/_sandbox/faults", json={"all": {"error_rate": 1.0}})
        assert http.post("/_sandbox/reset").json() == {"ok": True}
        for destination in ("tiktok", "meta"):
            assert stats(http, destination)["requests"] == 0
            assert listed(http, destination)["count"] == 0
        assert post_tiktok(http).json()["code"] == 0


class TestMounting:
    def test_works_under_a_prefix(self) -> None:
        """Mounted at /sandbox, every route works under the prefix."""
        clock = FakeClock()
        inner = create_app(SandboxConfig(clock=clock))
        app = Starlette(routes=[Mount("/sandbox", app=inner)])
        with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
            tiktok_path = "/sandbox/open_api/v1.3/event/track/"
            assert post_tiktok(client, path=tiktok_path).json()["code"] == 0
            meta_path = f"/sandbox/v25.0/{META_PIXEL}/events"
            assert post_meta(client, path=meta_path).status_code == 200
            page = client.get("/sandbox/_sandbox/tiktok/events").json()
            assert page["count"] == 1
            assert client.get("/sandbox/_sandbox/meta/stats").json()["accepted_events"] == 1
            assert client.get("/_sandbox/tiktok/events").status_code == 404
            assert client.post("/sandbox/_sandbox/reset").json() == {"ok": True}
