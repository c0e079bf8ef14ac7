"""Reddit through the real worker, over loopback, with its own keys.

The gateway's worker delivers to a separately running sandbox whose Reddit emulator checks
the Pixel ID, the Bearer token and the User-Agent (a library default is throttled). The
connection is stored as the Connections page stores it (token encrypted). Golden values are
written here: hashes by hashlib over literal strings.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import httpx
import orjson
import pytest

from backchannel import credentials
from backchannel.destinations import reddit
from backchannel.sandbox import SandboxConfig
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import (
    META_PIXEL,
    TIKTOK_PIXEL,
    Deployment,
    Gateway,
    StartDeployment,
    add_key,
    wait_for,
)

PIXEL = "a2_servepixel01"
SHOP = "https://shop.example"
SESSION = "Sess-Reddit-0123456789"
TOKEN = "rdt-conv-token-SECRET-98765"
UUID = "1677712978045.b8f7eb7d-b357-437b-8bd3-e1c8166c7132"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reddit_sandbox() -> SandboxConfig:
    return SandboxConfig(
        tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL, reddit_pixel=PIXEL, reddit_token=TOKEN
    )


def connect_reddit(gateway: Gateway, token: str = TOKEN, test_code: str | None = None) -> None:
    """Store Reddit's connection, token encrypted, as the Connections page does."""
    cipher = credentials.load_cipher(gateway.settings)
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                "reddit",
                PIXEL,
                credentials.encrypt(cipher, token),
                token[-4:],
                test_code,
                time.time(),
            )
        )
    finally:
        store.close()


def order(n: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": f"R{n}",
        "value": 42.5,
        "currency": "USD",
        "contents": [{"id": "SKU-1", "quantity": 2, "price": 21.25}],
        "user": {
            "email": " Jo.Hn+Deals@Example.com ",
            "phone": "+1 415 555 2671",
            "ip": "81.2.69.160",
            "user_agent": "Mozilla/5.0 Reddit",
            "rdt_uuid": UUID,
        },
        "page": {"url": f"https://shop.example/thanks?order={n}&rdt_cid=click-{n}"},
    }
    item.update(overrides)
    return item


def settled(gateway: Gateway, destination: str, expected: dict[str, int]) -> None:
    wait_for(
        lambda: gateway.counts(destination) == expected,
        timeout=30,
        what=f"{destination} outbox {expected} (now {gateway.counts(destination)})",
    )


def started(deploy: StartDeployment, **options: Any) -> Deployment:
    return deploy(sandbox_config=reddit_sandbox(), **options)


class TestDelivery:
    def test_a_connected_reddit_gets_the_order_with_its_own_keys(
        self, deploy: StartDeployment
    ) -> None:
        """Connected after start: Reddit gets the order at its pixel, with our User-Agent,
        Reddit's email form, the click id from the landing URL and the _rdt_uuid cookie;
        TikTok gets the common email form of the same address."""
        d = started(deploy)
        connect_reddit(d.gateway)
        time.sleep(5.5)  # routes and the worker's lanes pick the new connection up (5 s)
        posted = int(time.time())
        response = d.gateway.post(order(1))
        assert response.status_code == 202, response.text
        settled(d.gateway, "reddit", {"delivered": 1})
        [event] = d.sandbox.events("reddit")
        assert event["_pixel"] == PIXEL
        assert event["_user_agent"] == reddit.USER_AGENT
        assert event["_user_agent"].startswith("Backchannel/")
        assert event["type"] == {"tracking_type": "PURCHASE"}
        assert event["metadata"]["conversion_id"] == "CompletePayment-R1"
        assert event["metadata"]["value"] == 42.5
        assert event["metadata"]["item_count"] == 2
        assert event["click_id"] == "click-1"
        assert event["user"]["email"] == sha("john@example.com")
        assert event["user"]["phone_number"] == sha("+14155552671")
        assert event["user"]["uuid"] == UUID
        assert posted * 1000 <= event["event_at"] <= (posted + 5) * 1000  # milliseconds
        assert d.sandbox.stats("reddit")["by_code"] == {"0": 1}
        [row] = d.gateway.outbox("reddit")
        assert row["status"] == "delivered"
        settled(d.gateway, "tiktok", {"delivered": 1})
        [tiktok] = d.sandbox.events("tiktok")
        assert tiktok["user"]["email"] == sha("jo.hn+deals@example.com")

    def test_an_unconnected_reddit_gets_no_rows(self, deploy: StartDeployment) -> None:
        d = started(deploy)
        assert d.gateway.post(order(2)).status_code == 202
        settled(d.gateway, "tiktok", {"delivered": 1})
        assert d.gateway.counts("reddit") == {}
        assert d.sandbox.stats("reddit")["requests"] == 0

    def test_test_events_go_one_per_request_under_the_connections_test_id(
        self, deploy: StartDeployment
    ) -> None:
        """Event Testing shows one event per request: three test conversions are three
        requests, each filed under the connection's own test_id."""
        d = started(deploy)
        connect_reddit(d.gateway, test_code="RDT-EVENT-TESTING-1")
        time.sleep(5.5)
        tests = [order(10 + i, test_event_code="OTHER-CODE") for i in range(3)]
        assert d.gateway.post({"events": tests}).status_code == 202
        settled(d.gateway, "reddit", {"delivered": 3})
        events = d.sandbox.events("reddit")
        assert sorted(e["metadata"]["conversion_id"] for e in events) == [
            "CompletePayment-R10",
            "CompletePayment-R11",
            "CompletePayment-R12",
        ]
        assert {e["_test_event_code"] for e in events} == {"RDT-EVENT-TESTING-1"}
        assert d.sandbox.stats("reddit")["requests"] == 3

    def test_a_refused_row_is_dead_lettered_alone(self, deploy: StartDeployment) -> None:
        """Reddit refuses the whole request ("None were processed") naming the row: that row
        is a dead letter with Reddit's message, the others are resent and delivered."""
        d = started(deploy, faults={"reddit": {"reject_event_ids": ["CompletePayment-R21"]}})
        connect_reddit(d.gateway)
        time.sleep(5.5)
        assert d.gateway.post({"events": [order(20), order(21), order(22)]}).status_code == 202
        settled(d.gateway, "reddit", {"delivered": 2, "dead": 1})
        [dead] = [r for r in d.gateway.outbox("reddit") if r["status"] == "dead"]
        assert dead["event_id"] == "CompletePayment-R21"
        assert "None were processed" in dead["last_error"]
        assert "events[1]" in dead["last_error"]
        assert orjson.loads(dead["sent_body"])["metadata"]["conversion_id"] == dead["event_id"]
        stats = d.sandbox.stats("reddit")
        assert stats["by_code"] == {"400": 1, "0": 1}
        assert (stats["accepted_events"], stats["duplicates"]) == (2, 0)
        ids = sorted(e["event_id"] for e in d.sandbox.events("reddit"))
        assert ids == ["CompletePayment-R20", "CompletePayment-R22"]


class TestBrowserLeg:
    def test_the_landing_sessions_click_id_and_cookie_reach_reddit(
        self, deploy: StartDeployment
    ) -> None:
        """bc.js reports the landing page's rdt_cid and the _rdt_uuid cookie under ``ids``;
        the order names the session and carries neither: stitching gives them to it and
        Reddit receives them as click_id and user.uuid."""
        d = started(deploy, collect_origins=(SHOP,))
        site_key = add_key(d.gateway.settings, "site", "collect")
        connect_reddit(d.gateway)
        time.sleep(5.5)
        landing = {
            "key": site_key,
            "session_id": SESSION,
            "url": SHOP + "/?rdt_cid=landing-click-1",
            "landing": True,
            "ids": {"rdt_cid": "landing-click-1", "rdt_uuid": UUID},
        }
        collected = httpx.post(
            d.gateway.url + "/v1/collect",
            content=orjson.dumps(landing),
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP},
        )
        assert collected.status_code == 204, collected.text
        item = order(40, session_id=SESSION, page={"url": SHOP + "/thanks"})
        del item["user"]["rdt_uuid"]
        assert d.gateway.post(item).status_code == 202
        settled(d.gateway, "reddit", {"delivered": 1})
        [event] = d.sandbox.events("reddit")
        assert event["click_id"] == "landing-click-1"
        assert event["user"]["uuid"] == UUID


class TestCredentials:
    def test_a_refused_token_pauses_reddit_until_replaced_and_never_shows(
        self, deploy: StartDeployment, caplog: pytest.LogCaptureFixture
    ) -> None:
        """401 UNAUTHORIZED pauses the destination (one request, rows pending, /readyz says
        so); the right token resumes it. Neither token is in a log record, an outbox row,
        /readyz or what the sandbox received."""
        wrong = "rdt-WRONG-token-55555"
        caplog.set_level(logging.DEBUG)
        d = started(deploy)
        connect_reddit(d.gateway, token=wrong)
        time.sleep(5.5)
        assert d.gateway.post({"events": [order(30), order(31)]}).status_code == 202
        wait_for(lambda: d.sandbox.stats("reddit")["requests"] >= 1, what="reddit to be tried")
        settled(d.gateway, "reddit", {"pending": 2})
        assert d.sandbox.stats("reddit")["by_code"] == {"401": 1}
        time.sleep(1.0)  # two worker poll intervals: nothing more may be sent while paused
        assert d.sandbox.stats("reddit")["requests"] == 1
        ready = d.gateway.http.get("/readyz")
        assert "UNAUTHORIZED" in ready.json()["destinations"]["reddit"]
        connect_reddit(d.gateway, token=TOKEN)
        settled(d.gateway, "reddit", {"delivered": 2})
        stats = d.sandbox.stats("reddit")
        assert (stats["unique_event_ids"], stats["duplicates"]) == (2, 0)

        seen = [
            ready.text,
            d.gateway.http.get("/readyz").text,
            orjson.dumps(d.sandbox.events("reddit")).decode(),
            orjson.dumps(d.gateway.outbox()).decode(),
        ]
        seen.extend(repr(r.__dict__) for r in caplog.records)
        assert any("reddit" in text for text in seen[4:])  # the worker did log about it
        for secret in (wrong, TOKEN):
            for text in seen:
                assert secret not in text
            assert secret.encode() not in d.gateway.raw_bytes()
