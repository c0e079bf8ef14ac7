"""Delivery over real HTTP: the gateway's worker sends to a separately running sandbox.

Each test starts its own sandbox (so its counters and faults are its own) and a gateway whose
settings point both destinations at it with no token, which makes the worker send there with
the sandbox token. Retries use a fast policy (50 ms base, 0.5 s cap). Tests poll the sandbox's
stats and events and the SQLite file with a deadline instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from backchannel import credentials
from backchannel.delivery import RetryPolicy
from backchannel.sandbox import SandboxConfig
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import (
    EMAIL_NORMALIZED,
    META_PIXEL,
    PHONE_DIGITS,
    PHONE_E164,
    TIKTOK_PIXEL,
    Gateway,
    StartDeployment,
    conversion,
    sha,
    wait_for,
)

DAY = 86400


def lead(i: int, **overrides: Any) -> dict[str, Any]:
    """A small valid event (both sandboxes take it): for tests where the count is what matters."""
    item: dict[str, Any] = {
        "event": "Lead",
        "event_id": f"lead-{i}",
        "user": {"email": f"person{i}@example.com", "user_agent": "Mozilla/5.0 Serve"},
        "page": {"url": "https://shop.example/signup"},
    }
    item.update(overrides)
    return item


def post_all(gateway: Gateway, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        response = gateway.post({"events": events[start : start + 1000]})
        assert response.status_code == 202, response.text[:500]


def settled(gateway: Gateway, destination: str, expected: dict[str, int]) -> dict[str, int]:
    """Wait until the destination's outbox counts are exactly ``expected``."""
    return wait_for(
        lambda: (c := gateway.counts(destination)) == expected and c,
        what=f"{destination} outbox to become {expected} (now {gateway.counts(destination)})",
    )


def row_of(gateway: Gateway, destination: str, event_id: str) -> dict[str, Any]:
    [row] = [r for r in gateway.outbox(destination) if r["event_id"] == event_id]
    return row


class TestEndToEnd:
    def test_conversion_reaches_both_platforms_with_the_right_fields(
        self, deploy: StartDeployment
    ) -> None:
        """An accepted conversion arrives at TikTok and Meta hashed, and is marked delivered."""
        d = deploy()
        response = d.gateway.post(conversion(1001))
        assert response.status_code == 202
        settled(d.gateway, "tiktok", {"delivered": 1})
        settled(d.gateway, "meta", {"delivered": 1})

        [tiktok] = d.sandbox.events("tiktok", event_id="CompletePayment-1001")
        assert tiktok["_pixel"] == TIKTOK_PIXEL  # the request's event_source_id
        assert tiktok["event"] == "CompletePayment"
        assert tiktok["user"]["email"] == sha(EMAIL_NORMALIZED)
        assert tiktok["user"]["phone"] == sha(PHONE_E164)
        assert tiktok["user"]["ttclid"] == "E.C.P.123"
        assert tiktok["user"]["ip"] == "81.2.69.160"
        assert tiktok["properties"]["value"] == 59.9
        assert tiktok["properties"]["currency"] == "USD"
        assert tiktok["properties"]["contents"][0]["content_id"] == "SKU-1"
        assert tiktok["properties"]["order_id"] == "1001"
        assert isinstance(tiktok["event_time"], int)
        assert abs(tiktok["event_time"] - time.time()) < 120

        [meta] = d.sandbox.events("meta", event_id="CompletePayment-1001")
        assert meta["_pixel"] == META_PIXEL
        assert meta["event_name"] == "Purchase"
        assert meta["action_source"] == "website"
        assert meta["user_data"]["em"] == [sha(EMAIL_NORMALIZED)]
        assert meta["user_data"]["ph"] == [sha(PHONE_DIGITS)]
        assert meta["custom_data"]["currency"] == "usd"
        assert meta["event_source_url"].startswith("https://shop.example/thanks")

        assert (
            row_of(d.gateway, "tiktok", "CompletePayment-1001")["platform_ref"]
            == (tiktok["_request_id"])
        )
        assert (
            row_of(d.gateway, "meta", "CompletePayment-1001")["platform_ref"]
            == (meta["_request_id"])
        )
        for destination in ("tiktok", "meta"):
            stats = d.sandbox.stats(destination)
            assert (stats["accepted_events"], stats["duplicates"]) == (1, 0)

    def test_status_endpoint_reports_delivery(self, deploy: StartDeployment) -> None:
        """GET /v1/events/{id} shows 'delivered' with the platform reference per destination."""
        d = deploy()
        assert d.gateway.post(conversion(7)).status_code == 202

        def delivered() -> dict[str, Any] | None:
            answer = d.gateway.http.get("/v1/events/CompletePayment-7").json()
            statuses = {x["status"] for x in answer["deliveries"]}
            return answer if statuses == {"delivered"} else None

        answer = wait_for(delivered, what="both deliveries")
        by_destination = {x["destination"]: x for x in answer["deliveries"]}
        assert set(by_destination) == {"tiktok", "meta"}
        for x in by_destination.values():
            assert x["platform_ref"]
            assert x["delivered_at"] is not None
            assert x["attempts"] == 1
            assert x["last_error"] is None


class TestBatching:
    def test_2500_events_go_in_batches_of_at_most_1000(self, deploy: StartDeployment) -> None:
        """2500 events are delivered once each, in requests of at most 1000 events."""
        d = deploy()
        post_all(d.gateway, [lead(i) for i in range(2500)])
        for destination in ("tiktok", "meta"):
            settled(d.gateway, destination, {"delivered": 2500})
            stats = d.sandbox.stats(destination)
            assert stats["requests"] >= 3
            assert stats["unique_event_ids"] == 2500
            assert stats["accepted_events"] == 2500
            assert stats["duplicates"] == 0
            per_request: dict[str, int] = {}
            for event in d.sandbox.events(destination):
                per_request[event["_request_id"]] = per_request.get(event["_request_id"], 0) + 1
            assert max(per_request.values()) <= 1000
            assert sum(per_request.values()) == 2500

    def test_test_events_never_share_a_request_with_production(
        self, deploy: StartDeployment
    ) -> None:
        """Events with a test_event_code travel only with events of the same code."""
        d = deploy()
        codes = [None, "TEST111", None, "TEST222", "TEST111", None, "TEST222", None]
        events = []
        for i, code in enumerate(codes):
            item = lead(i)
            if code is not None:
                item["test_event_code"] = code
            events.append(item)
        post_all(d.gateway, events)
        expected = {f"lead-{i}": code for i, code in enumerate(codes)}
        for destination in ("tiktok", "meta"):
            settled(d.gateway, destination, {"delivered": len(codes)})
            received = d.sandbox.events(destination)
            assert {e["event_id"]: e["_test_event_code"] for e in received} == expected
            codes_per_request: dict[str, set[str | None]] = {}
            for e in received:
                codes_per_request.setdefault(e["_request_id"], set()).add(e["_test_event_code"])
            assert all(len(c) == 1 for c in codes_per_request.values()), codes_per_request
            assert len(codes_per_request) >= 3


class TestRetries:
    def test_5xx_is_retried_meta_is_isolated_then_delivered_once(
        self, deploy: StartDeployment
    ) -> None:
        """TikTok down: rows stay pending with attempts and last_error, Meta delivers meanwhile."""
        d = deploy(faults={"tiktok": {"error_rate": 1}})
        post_all(d.gateway, [lead(i) for i in range(5)])
        settled(d.gateway, "meta", {"delivered": 5})

        def retried() -> list[dict[str, Any]] | None:
            rows = d.gateway.outbox("tiktok")
            ok = all(r["status"] in ("pending", "in_flight") for r in rows) and all(
                r["attempts"] > 1 and r["last_error"] for r in rows
            )
            return rows if ok else None

        rows = wait_for(retried, what="tiktok rows retried at least twice")
        assert all("503" in r["last_error"] for r in rows)
        stats = d.sandbox.stats("tiktok")
        assert stats["accepted_events"] == 0
        assert stats["by_code"].get("http_503", 0) >= 2

        d.sandbox.clear_faults()
        settled(d.gateway, "tiktok", {"delivered": 5})
        stats = d.sandbox.stats("tiktok")
        assert (stats["accepted_events"], stats["unique_event_ids"], stats["duplicates"]) == (
            5,
            5,
            0,
        )
        assert all(r["last_error"] is None for r in d.gateway.outbox("tiktok"))
        meta = d.sandbox.stats("meta")
        assert (meta["accepted_events"], meta["duplicates"]) == (5, 0)

    def test_40100_storm_is_absorbed(self, deploy: StartDeployment) -> None:
        """Five 40100 answers in a row are retried until the batch is taken, exactly once."""
        d = deploy(faults={"tiktok": {"rate_limit_next": 5}})
        post_all(d.gateway, [lead(i) for i in range(3)])
        settled(d.gateway, "tiktok", {"delivered": 3})
        stats = d.sandbox.stats("tiktok")
        assert stats["by_code"] == {"40100": 5, "0": 1}
        assert (stats["accepted_events"], stats["duplicates"]) == (3, 0)
        assert {r["attempts"] for r in d.gateway.outbox("tiktok")} == {6}
        settled(d.gateway, "meta", {"delivered": 3})

    def test_meta_throttle_403_code_4_is_retried(self, deploy: StartDeployment) -> None:
        """Meta's throttle (HTTP 403, code 4, is_transient) is retried, not dead-lettered."""
        d = deploy(faults={"meta": {"rate_limit_next": 2}})
        post_all(d.gateway, [lead(i) for i in range(3)])
        settled(d.gateway, "meta", {"delivered": 3})
        stats = d.sandbox.stats("meta")
        assert stats["by_code"] == {"4": 2, "0": 1}
        assert (stats["accepted_events"], stats["duplicates"]) == (3, 0)

    def test_gives_up_after_max_attempts(self, deploy: StartDeployment) -> None:
        """A destination that never recovers dead-letters the rows after max_attempts tries."""
        policy = RetryPolicy(base=0.05, cap=0.2, max_attempts=3)
        d = deploy(faults={"tiktok": {"error_rate": 1}}, retry=policy)
        post_all(d.gateway, [lead(i) for i in range(2)])
        settled(d.gateway, "tiktok", {"dead": 2})
        for row in d.gateway.outbox("tiktok"):
            assert row["attempts"] == 3
            assert "gave up after 3 attempts" in row["last_error"]
            assert orjson.loads(row["sent_body"])["event_id"] == row["event_id"]
        assert d.sandbox.stats("tiktok")["requests"] == 3
        settled(d.gateway, "meta", {"delivered": 2})


class TestDeadLetters:
    def test_poison_event_in_1000_is_dead_lettered_alone(self, deploy: StartDeployment) -> None:
        """One refused row of 1000: 999 delivered, 1 dead with TikTok's message and its body."""
        poison = "lead-500"
        d = deploy(faults={"tiktok": {"reject_event_ids": [poison]}})
        started = time.time()
        post_all(d.gateway, [lead(i) for i in range(1000)])
        settled(d.gateway, "tiktok", {"delivered": 999, "dead": 1})
        dead = row_of(d.gateway, "tiktok", poison)
        assert dead["status"] == "dead"
        assert started <= dead["failed_at"] <= time.time()  # when the worker dead-lettered it
        assert "40002" in dead["last_error"]
        assert "rejected by sandbox fault injection" in dead["last_error"]
        assert "Batch." in dead["last_response"]
        sent = orjson.loads(dead["sent_body"])
        assert sent["event_id"] == poison
        assert sent["event"] == "Lead"
        assert sent["user"]["email"] == sha("person500@example.com")
        stats = d.sandbox.stats("tiktok")
        assert stats["by_code"] == {"40002": 1, "0": 1}  # refused once, the rest resent once
        assert stats["accepted_events"] == 999
        assert d.sandbox.events("tiktok", event_id=poison) == []
        settled(d.gateway, "meta", {"delivered": 1000})

    def test_two_poison_rows_are_each_dead_lettered(self, deploy: StartDeployment) -> None:
        """Two refused rows in one batch: each is dead-lettered in turn, the rest delivered."""
        d = deploy(faults={"tiktok": {"reject_event_ids": ["lead-2", "lead-17"]}})
        post_all(d.gateway, [lead(i) for i in range(20)])
        settled(d.gateway, "tiktok", {"delivered": 18, "dead": 2})
        dead = [r for r in d.gateway.outbox("tiktok") if r["status"] == "dead"]
        assert sorted(r["event_id"] for r in dead) == ["lead-17", "lead-2"]
        for row in dead:
            assert orjson.loads(row["sent_body"])["event_id"] == row["event_id"]
        assert d.sandbox.stats("tiktok")["by_code"] == {"40002": 2, "0": 1}

    def test_replay_requeues_the_dead_letter_with_its_event_id(
        self, deploy: StartDeployment
    ) -> None:
        """store.replay(event_id=...) re-queues a dead row; with the fault gone it is delivered."""
        poison = "lead-3"
        d = deploy(faults={"tiktok": {"reject_event_ids": [poison]}})
        post_all(d.gateway, [lead(i) for i in range(10)])
        settled(d.gateway, "tiktok", {"delivered": 9, "dead": 1})
        settled(d.gateway, "meta", {"delivered": 10})

        d.sandbox.clear_faults()
        store = open_store(d.gateway.settings.database_url)
        try:
            assert store.replay(time.time(), event_id="lead-4") == 0  # delivered, not dead
            assert store.replay(time.time(), event_id=poison) == 1
        finally:
            store.close()
        settled(d.gateway, "tiktok", {"delivered": 10})
        [received] = d.sandbox.events("tiktok", event_id=poison)
        assert received["event_id"] == poison
        stats = d.sandbox.stats("tiktok")
        assert (stats["unique_event_ids"], stats["duplicates"]) == (10, 0)
        assert d.sandbox.stats("meta")["accepted_events"] == 10  # Meta's row was not replayed
        row = row_of(d.gateway, "tiktok", poison)
        assert row["last_error"] is None
        assert row["platform_ref"] == received["_request_id"]

    def test_refusal_naming_no_row_is_bisected(self, deploy: StartDeployment) -> None:
        """A refusal that names no row is bisected down to the bad row, nothing more."""
        d = deploy(faults={"meta": {"reject_event_ids": ["lead-5"], "reject_without_row": True}})
        post_all(d.gateway, [lead(i) for i in range(8)])
        settled(d.gateway, "meta", {"delivered": 7, "dead": 1})
        settled(d.gateway, "tiktok", {"delivered": 8})
        dead = row_of(d.gateway, "meta", "lead-5")
        assert "rejected by sandbox" in dead["last_error"]
        assert orjson.loads(dead["sent_body"])["event_id"] == "lead-5"
        stats = d.sandbox.stats("meta")
        assert stats["accepted_events"] == 7
        assert stats["duplicates"] == 0
        # 8 rows, row 5 bad: [0..8) refused; [0..4) ok; [4..8) refused; [4..6) refused;
        # [6..8) ok; [4] ok; [5] refused and dead. Never more than 1 + 2 * log2(8) requests.
        assert stats["by_code"] == {"100": 4, "0": 3}

    def test_a_long_cycle_of_row_refusals_never_sends_an_event_twice(
        self, deploy: StartDeployment
    ) -> None:
        """Issue 18's reproduction: 1000 rows, 200 of them refused one by one by name, 50 ms
        a request, a 6 s lease, 4 lanes. The cycle outlived its lease, other lanes claimed
        the same rows, and the 800 good events were accepted twice. Now each cycle stops at
        its deadline and gives the rest back; every event is sent to completion once."""
        bad = [f"lead-{i}" for i in range(0, 1000, 5)]
        d = deploy(
            faults={"tiktok": {"reject_event_ids": bad, "latency_ms": 50}},
            lease_seconds=6.0,
            delivery_concurrency=4,
        )
        post_all(d.gateway, [lead(i) for i in range(1000)])
        wait_for(
            lambda: (c := d.gateway.counts("tiktok")) == {"delivered": 800, "dead": 200} and c,
            timeout=120,
            what=f"tiktok to settle (now {d.gateway.counts('tiktok')})",
        )
        stats = d.sandbox.stats("tiktok")
        assert (stats["accepted_events"], stats["duplicates"]) == (800, 0)

    def test_meta_refusal_naming_a_row_costs_two_requests(self, deploy: StartDeployment) -> None:
        """Meta's row path (``data[5].…``) is read: that row is dead, the rest go at once."""
        d = deploy(faults={"meta": {"reject_event_ids": ["lead-5"]}})
        post_all(d.gateway, [lead(i) for i in range(8)])
        settled(d.gateway, "meta", {"delivered": 7, "dead": 1})
        assert row_of(d.gateway, "meta", "lead-5")["status"] == "dead"
        assert d.sandbox.stats("meta")["by_code"] == {"100": 1, "0": 1}

    def test_the_same_rowless_refusal_from_both_halves_ends_the_split(
        self, deploy: StartDeployment
    ) -> None:
        """When both halves get the parent's row-less refusal, every row is dead after three
        requests, not 2n-1 (issue 18: 1000 rows took 1999 requests, each event sent 11 times)."""
        n = 64
        ids = [f"lead-{i}" for i in range(n)]
        d = deploy(faults={"tiktok": {"reject_event_ids": ids, "reject_without_row": True}})
        post_all(d.gateway, [lead(i) for i in range(n)])
        settled(d.gateway, "tiktok", {"dead": n})
        settled(d.gateway, "meta", {"delivered": n})
        assert d.sandbox.stats("tiktok")["by_code"] == {"40002": 3}
        reasons = {r["last_error"] for r in d.gateway.outbox("tiktok")}
        assert all("the same refusal for every part" in r for r in reasons), reasons

    def test_known_refusal_is_dead_lettered_without_a_request(
        self, deploy: StartDeployment
    ) -> None:
        """A web event without a user agent, which Meta refuses, never reaches Meta: it is a
        dead letter at once with the reason and the event as it would have been sent."""
        events = [lead(i) for i in range(8)]
        for event in events[:4]:
            del event["user"]["user_agent"]
        d = deploy()
        post_all(d.gateway, events)
        settled(d.gateway, "meta", {"delivered": 4, "dead": 4})
        settled(d.gateway, "tiktok", {"delivered": 8})  # TikTok does not require it
        dead = row_of(d.gateway, "meta", "lead-0")
        assert "client_user_agent" in dead["last_error"]
        assert "not sent" in dead["last_error"]
        assert orjson.loads(dead["sent_body"])["event_id"] == "lead-0"
        assert d.sandbox.stats("meta")["by_code"] == {"0": 1}

    def test_invalid_token_pauses_the_destination_until_it_is_replaced(
        self, deploy: StartDeployment
    ) -> None:
        """A refused token (TikTok 40105, Meta 190) pauses the destination: one request, the
        rows stay pending (none dead), /readyz and /metrics say so; a new token resumes it and
        every event is delivered once."""
        d = deploy(sandbox_config=SandboxConfig(token="right"))
        post_all(d.gateway, [lead(i) for i in range(10)])
        for destination, code in (("tiktok", "40105"), ("meta", "190")):
            wait_for(
                lambda dest=destination: d.sandbox.stats(dest)["requests"] >= 1,
                what=f"{destination} to be tried",
            )
            settled(d.gateway, destination, {"pending": 10})
            assert d.sandbox.stats(destination)["by_code"] == {code: 1}
        time.sleep(1.0)  # two worker poll intervals: nothing more may be sent while paused
        assert d.sandbox.stats("tiktok")["requests"] == 1
        assert d.sandbox.stats("meta")["requests"] == 1
        assert all(r["attempts"] == 0 for r in d.gateway.outbox())
        ready = d.gateway.http.get("/readyz").json()
        assert "40105" in ready["destinations"]["tiktok"]
        assert "190" in ready["destinations"]["meta"]
        set_token(d.gateway, "tiktok", TIKTOK_PIXEL, "right")
        set_token(d.gateway, "meta", META_PIXEL, "right")
        settled(d.gateway, "tiktok", {"delivered": 10})
        settled(d.gateway, "meta", {"delivered": 10})
        for destination in ("tiktok", "meta"):
            stats = d.sandbox.stats(destination)
            assert (stats["unique_event_ids"], stats["duplicates"]) == (10, 0)
        ready = d.gateway.http.get("/readyz").json()
        assert ready["destinations"] == {"tiktok": "ok", "meta": "ok"}


def set_token(gateway: Gateway, destination: str, pixel: str, token: str) -> None:
    """Replace a destination's token in the store, as `backchannel token set` does."""
    cipher = credentials.load_cipher(gateway.settings)
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                destination,
                pixel,
                credentials.encrypt(cipher, token),
                token[-4:],
                None,
                time.time(),
            )
        )
    finally:
        store.close()


class TestExpiry:
    def test_event_older_than_7_days_is_expired_not_sent(self, deploy: StartDeployment) -> None:
        """An 8-day-old event is accepted, then marked expired with a reason and never sent."""
        d = deploy()
        old = lead(1, event_time=int(time.time()) - 8 * DAY)
        response = d.gateway.post({"events": [lead(0), old]})
        assert response.status_code == 202
        assert [r["status"] for r in response.json()["events"]] == ["accepted", "accepted"]
        for destination in ("tiktok", "meta"):
            settled(d.gateway, destination, {"delivered": 1, "expired": 1})
            row = row_of(d.gateway, destination, "lead-1")
            assert row["status"] == "expired"
            assert "7-day" in row["last_error"]
            assert destination in row["last_error"]
            assert d.sandbox.events(destination, event_id="lead-1") == []
            stats = d.sandbox.stats(destination)
            assert (stats["requests"], stats["accepted_events"]) == (1, 1)
        answer = d.gateway.http.get("/v1/events/lead-1").json()
        assert {x["status"] for x in answer["deliveries"]} == {"expired"}

    def test_expiry_reason_names_the_window_of_the_expired_event(
        self, deploy: StartDeployment
    ) -> None:
        """A web event expired for Meta cites the 7-day window, even next to an offline event."""
        d = deploy()
        store_sale = {"event": "Purchase", "event_id": "store-1", "value": 5, "currency": "USD"}
        store_sale["source"] = "offline"  # Meta: physical_store, 62-day window
        old_web = lead(2, event_time=int(time.time()) - 8 * DAY)
        assert d.gateway.post({"events": [store_sale, old_web]}).status_code == 202
        settled(d.gateway, "meta", {"delivered": 1, "expired": 1})
        reason = row_of(d.gateway, "meta", "lead-2")["last_error"]
        assert "7-day" in reason, reason
