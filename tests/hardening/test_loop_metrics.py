"""The request-duration histogram and the event-loop watchdog, on a real app and a real loop.

What is checked is behaviour (which requests are counted under which route, that a blocked
loop is seen, measured, counted and its stack named, that collections are timed), never speed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from backchannel.metrics import Metrics
from backchannel.watchdog import LoopWatchdog
from serve.helpers import conversion

from .conftest import StartApp
from .test_observability import scrape


def count(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str) -> float:
    return samples.get(("backchannel_request_duration_seconds_count", (("route", route),)), 0.0)


class TestRequestDuration:
    def test_each_request_is_counted_once_under_its_route_template(
        self, start_app: StartApp
    ) -> None:
        app = start_app()
        headers = {"Authorization": f"Bearer {app.key}"}
        for i in range(3):
            response = app.http.post("/v1/events", json=conversion(i), headers=headers)
            assert response.status_code == 202
        bad = app.http.post("/v1/events", json={"event": "CompletePayment"}, headers=headers)
        assert bad.status_code == 422
        event_id = response.json()["events"][0]["event_id"]
        assert app.http.get(f"/v1/events/{event_id}", headers=headers).status_code == 200
        assert app.http.get("/no/such/page").status_code == 404
        samples = scrape(app)
        assert count(samples, "/v1/events") == 4  # the 422 is time inside the app too
        assert count(samples, "/v1/events/{event_id:path}") == 1  # the template, not the id
        assert count(samples, "(unmatched)") == 1
        assert not any(event_id in str(labels) for _, labels in samples)
        total = samples[("backchannel_request_duration_seconds_sum", (("route", "/v1/events"),))]
        assert total > 0
        # every observation falls in some bucket: the +Inf bucket holds all of them
        inf = (("le", "+Inf"), ("route", "/v1/events"))
        assert samples[("backchannel_request_duration_seconds_bucket", inf)] == 4

    def test_a_slow_commit_shows_in_the_histogram(self, start_app: StartApp) -> None:
        """A request held up inside the app lands in a bucket above the hold-up."""
        app = start_app()
        runner = app.asgi.state.backchannel["runner"]
        insert = runner.store.insert_conversions

        def slow_insert(*args: object) -> list[bool]:
            time.sleep(0.06)
            return insert(*args)

        runner.store.insert_conversions = slow_insert
        headers = {"Authorization": f"Bearer {app.key}"}
        assert app.http.post("/v1/events", json=conversion(1), headers=headers).status_code == 202
        samples = scrape(app)
        at_50ms = (("le", "0.05"), ("route", "/v1/events"))
        at_100ms = (("le", "0.1"), ("route", "/v1/events"))
        assert samples[("backchannel_request_duration_seconds_bucket", at_50ms)] == 0
        assert samples[("backchannel_request_duration_seconds_bucket", at_100ms)] == 1


class TestGroupCommits:
    def test_each_group_commit_is_counted_with_its_requests_and_its_time(
        self, start_app: StartApp
    ) -> None:
        """Requests one after the other: one group commit each, of one request; the slow
        one's time lands above its hold-up, the others' below it."""
        app = start_app()
        runner = app.asgi.state.backchannel["runner"]
        insert = runner.store.insert_conversions
        calls = 0

        def second_is_slow(*args: object) -> list[bool]:
            nonlocal calls
            calls += 1
            if calls == 2:
                time.sleep(0.06)
            return insert(*args)

        runner.store.insert_conversions = second_is_slow
        headers = {"Authorization": f"Bearer {app.key}"}
        for i in range(3):
            response = app.http.post("/v1/events", json=conversion(i), headers=headers)
            assert response.status_code == 202
        samples = scrape(app)
        ingest = (("writer", "ingest"),)
        assert samples[("backchannel_group_commit_requests_count", ingest)] == 3
        assert samples[("backchannel_group_commit_requests_sum", ingest)] == 3
        one = (("le", "1.0"), ("writer", "ingest"))
        assert samples[("backchannel_group_commit_requests_bucket", one)] == 3
        at_50ms = (("le", "0.05"), ("writer", "ingest"))
        at_100ms = (("le", "0.1"), ("writer", "ingest"))
        assert samples[("backchannel_group_commit_seconds_bucket", at_50ms)] == 2
        assert samples[("backchannel_group_commit_seconds_bucket", at_100ms)] == 3


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a synchronous section on the event loop, as a slow fsync would be


class TestWatchdog:
    async def test_a_blocked_loop_is_measured_counted_and_its_stack_named(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        metrics = Metrics()
        watchdog = LoopWatchdog(metrics, interval=0.01, stall=0.1)
        watchdog.start()
        try:
            await asyncio.sleep(0.05)  # some ordinary heartbeats
            assert watchdog.max_lag < 0.1
            with caplog.at_level(logging.WARNING, logger="backchannel.watchdog"):
                _block_the_loop(0.3)
                await asyncio.sleep(0.05)  # the heartbeat wakes late and records it
        finally:
            await watchdog.stop()
        assert 0.25 <= watchdog.max_lag < 1.0
        render = metrics.render().decode()
        assert "backchannel_event_loop_stalls_total 1.0" in render
        assert f"backchannel_event_loop_lag_max_seconds {watchdog.max_lag}" in render
        assert len(watchdog.stalls) == 1  # logged once per stall, not once per check
        stuck, stack = watchdog.stalls[0]
        assert stuck >= 0.1
        assert "_block_the_loop" in stack[-1] or "_block_the_loop" in stack[-2]
        assert any("_block_the_loop" in r.getMessage() for r in caplog.records)

    async def test_short_pauses_are_lag_but_not_stalls(self) -> None:
        metrics = Metrics()
        watchdog = LoopWatchdog(metrics, interval=0.01, stall=0.1)
        watchdog.start()
        try:
            for _ in range(3):
                _block_the_loop(0.03)
                await asyncio.sleep(0.02)
        finally:
            await watchdog.stop()
        assert 0.02 <= watchdog.max_lag < 0.1
        assert watchdog.stalls == []
        assert "backchannel_event_loop_stalls_total 0.0" in metrics.render().decode()

    async def test_garbage_collections_are_timed_per_generation(self) -> None:
        metrics = Metrics()
        watchdog = LoopWatchdog(metrics)
        watchdog.start()
        try:
            gc.collect()
        finally:
            await watchdog.stop()
        gc.collect()  # after stop: no longer counted
        full = metrics.gc_pause.labels("2")._sum.get()  # seconds timed in generation 2
        assert full > 0
        render = metrics.render().decode()
        assert 'backchannel_gc_pause_seconds_count{generation="2"} 0.0' not in render

    def test_the_app_exports_the_watchdog(self, start_app: StartApp) -> None:
        app = start_app()
        time.sleep(0.1)
        samples = scrape(app)
        assert ("backchannel_event_loop_lag_max_seconds", ()) in samples
        assert samples[("backchannel_event_loop_lag_seconds_count", ())] >= 1
        assert ("backchannel_event_loop_stalls_total", ()) in samples
