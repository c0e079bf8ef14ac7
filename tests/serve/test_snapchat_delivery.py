"""Snapchat through the real worker, over loopback, with its own pixel and token.

The gateway's worker delivers to a separately running sandbox whose Snapchat emulator takes
only PIXEL and TOKEN (the token in the query string, docs/platforms/snapchat.md §2). The
connection is stored as the Connections page stores it (token encrypted). Golden values are
written here: hashes by hashlib over literal strings.

Because Snap takes its token in the URL, one test runs every path a URL could leak through
(a delivery, a refused row, a refused token, the logs at debug level with httpx's request
lines switched on) and then looks for the token everywhere it could have landed.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from backchannel import credentials, logs, testorder
from backchannel.sandbox import SandboxConfig
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import (
    META_PIXEL,
    TIKTOK_PIXEL,
    Gateway,
    StartDeployment,
    add_key,
    sha,
    wait_for,
)

PIXEL = "5bf81ee1-15b1-4dc1-b636-d7dae49b950e"
TOKEN = "snapCapiToken-7f3a9c-OnlyInTheQuery"
WRONG_TOKEN = "snapCapiToken-revoked-0b1d2e"
UA = "Mozilla/5.0 (X11; Linux x86_64) SnapSuite/1.0"
PICKUP = 5.5  # seconds: routes and the worker's lanes pick a new connection up within 5 s


def snap_sandbox(token: str = TOKEN) -> SandboxConfig:
    return SandboxConfig(
        tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL, snapchat_pixel=PIXEL, snapchat_token=token
    )


def connect_snapchat(gateway: Gateway, token: str = TOKEN, **settings: str) -> None:
    """Store Snapchat's connection, token encrypted, as the Connections page does."""
    cipher = credentials.load_cipher(gateway.settings)
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                "snapchat",
                PIXEL,
                credentials.encrypt(cipher, token),
                token[-4:],
                None,
                time.time(),
                dict(settings),
            )
        )
    finally:
        store.close()


def order(n: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": f"S{n}",
        "value": 25.5,
        "currency": "USD",
        "contents": [{"id": "SKU-1", "quantity": 2, "price": 12.75}],
        "user": {
            "email": " Person@Example.com ",
            "phone": "+44 844 412 4653",
            "sc_cookie1": f"scid-cookie-{n}",
            "user_agent": UA,
            "ip": "81.2.69.160",
        },
        "page": {"url": f"https://shop.example/thanks?ScCid=click-{n}"},
    }
    item.update(overrides)
    return item


def settled(gateway: Gateway, expected: dict[str, int]) -> None:
    wait_for(
        lambda: gateway.counts("snapchat") == expected,
        timeout=30,
        what=f"snapchat outbox {expected} (now {gateway.counts('snapchat')})",
    )


class TestDelivery:
    def test_a_connected_snapchat_gets_the_order_with_its_own_keys(
        self, deploy: StartDeployment
    ) -> None:
        """Connected after start, Snapchat gets the purchase: PURCHASE, the order's event_id
        (the Pixel's client_dedup_id), hashed email and phone in Snap's forms, the ScCid of
        the landing URL and the _scid cookie; TikTok and Meta get theirs as before."""
        d = deploy(sandbox_config=snap_sandbox())
        connect_snapchat(d.gateway)
        time.sleep(PICKUP)
        assert d.gateway.post(order(1)).status_code == 202
        settled(d.gateway, {"delivered": 1})
        [sent] = d.sandbox.events("snapchat")
        assert sent["_pixel"] == PIXEL
        assert sent["event_name"] == "PURCHASE"
        assert sent["event_id"] == "CompletePayment-S1"
        assert sent["action_source"] == "WEB"
        assert sent["user_data"]["em"] == [sha("person@example.com")]
        assert sent["user_data"]["ph"] == [sha("448444124653")]
        assert sent["user_data"]["sc_click_id"] == "click-1"
        assert sent["user_data"]["sc_cookie1"] == "scid-cookie-1"
        assert sent["custom_data"]["contents"] == [
            {"id": "SKU-1", "quantity": "2", "item_price": "12.75"}
        ]
        assert (sent["custom_data"]["value"], sent["custom_data"]["order_id"]) == (25.5, "S1")
        for other in ("tiktok", "meta"):
            wait_for(lambda o=other: d.gateway.counts(o) == {"delivered": 1}, what=other)

    def test_an_unconnected_snapchat_gets_no_rows(self, deploy: StartDeployment) -> None:
        d = deploy(sandbox_config=snap_sandbox())
        assert d.gateway.post(order(2)).status_code == 202
        wait_for(lambda: d.gateway.counts("tiktok") == {"delivered": 1}, what="tiktok")
        assert d.gateway.counts("snapchat") == {}
        assert d.sandbox.stats("snapchat")["requests"] == 0

    def test_a_refused_event_is_dead_lettered_alone(self, deploy: StartDeployment) -> None:
        """Snap names the refused event (``event``): that row is a dead letter with Snap's
        message, the others of the request are sent again and delivered."""
        d = deploy(
            sandbox_config=snap_sandbox(),
            faults={"snapchat": {"reject_event_ids": ["CompletePayment-S6"]}},
        )
        connect_snapchat(d.gateway)
        time.sleep(PICKUP)
        assert d.gateway.post({"events": [order(5), order(6), order(7)]}).status_code == 202
        settled(d.gateway, {"delivered": 2, "dead": 1})
        [dead] = [r for r in d.gateway.outbox("snapchat") if r["status"] == "dead"]
        assert dead["event_id"] == "CompletePayment-S6"
        assert "Snapchat INVALID" in dead["last_error"]
        assert "rejected by sandbox fault injection" in dead["last_error"]
        assert orjson.loads(dead["sent_body"])["event_id"] == "CompletePayment-S6"
        assert sorted(e["event_id"] for e in d.sandbox.events("snapchat")) == [
            "CompletePayment-S5",
            "CompletePayment-S7",
        ]
        assert d.sandbox.stats("snapchat")["requests"] == 2

    def test_an_unmapped_custom_event_waits_for_its_mapping(self, deploy: StartDeployment) -> None:
        """Snap takes no free-form names: PlaceAnOrder is a dead letter saying how to map it;
        mapped (custom_events) and replayed, it goes as CUSTOM_EVENT_1."""
        d = deploy(sandbox_config=snap_sandbox())
        connect_snapchat(d.gateway)
        time.sleep(PICKUP)
        assert d.gateway.post(order(8, event="PlaceAnOrder")).status_code == 202
        settled(d.gateway, {"dead": 1})
        [dead] = d.gateway.outbox("snapchat")
        assert "PlaceAnOrder=CUSTOM_EVENT_1" in dead["last_error"]
        assert d.sandbox.stats("snapchat")["requests"] == 0
        connect_snapchat(d.gateway, custom_events="PlaceAnOrder=CUSTOM_EVENT_1")
        time.sleep(PICKUP)
        store = open_store(d.gateway.settings.database_url)
        try:
            assert store.replay(time.time(), destination="snapchat") == 1
        finally:
            store.close()
        settled(d.gateway, {"delivered": 1})
        [sent] = d.sandbox.events("snapchat")
        assert (sent["event_name"], sent["event_id"]) == ("CUSTOM_EVENT_1", "PlaceAnOrder-S8")

    def test_a_test_order_goes_to_the_test_event_tool(self, deploy: StartDeployment) -> None:
        """Snap has no Test Events code: a test conversion is validated at
        /events/validate (recorded there as a test, never as a conversion)."""
        d = deploy(sandbox_config=snap_sandbox())
        connect_snapchat(d.gateway)
        time.sleep(PICKUP)
        assert d.gateway.post(testorder.sample_order("TEST_SNAP_1")).status_code == 202
        settled(d.gateway, {"delivered": 1})
        [sent] = d.sandbox.events("snapchat")
        assert sent["_test_event_code"] == "validate"
        assert sent["event_name"] == "PURCHASE"
        assert d.sandbox.stats("snapchat")["by_code"] == {"validate": 1}
        [row] = d.gateway.outbox("snapchat")
        assert orjson.loads(row["sent_body"])["event_name"] == "PURCHASE"
        assert orjson.loads(row["last_response"])["test_event"] is True


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log record of this process at debug level, httpx's request lines included
    (each holds the full request URL, the token with it), through the redacting handler."""
    stream = io.StringIO()
    # the levels as they were BEFORE configure (which sets httpx's to WARNING): restored after,
    # or a later test's caplog never sees httpx's request lines
    root = logging.getLogger()
    noisy = [logging.getLogger(n) for n in ("httpx", "httpcore")]
    levels = [n.level for n in (root, *noisy)]
    handler = logs.configure("debug", "json", stream)
    for logger in noisy:
        logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for logger, level in zip((root, *noisy), levels, strict=True):
            logger.setLevel(level)
        root.removeHandler(handler)


class TestTheTokenStaysOutOfSight:
    def test_a_refused_token_pauses_snapchat_and_no_token_leaks(
        self, deploy: StartDeployment, captured: io.StringIO
    ) -> None:
        """A token Snap refuses (401 Unauthorized resources) pauses the destination: one
        request, rows pending, /readyz says why; the right token resumes it. Neither token
        is in a log line, the database, an outbox row, a dead letter or an answer."""
        d = deploy(
            sandbox_config=snap_sandbox(),
            faults={"snapchat": {"reject_event_ids": ["CompletePayment-S12"]}},
        )
        connect_snapchat(d.gateway, WRONG_TOKEN)
        time.sleep(PICKUP)
        assert d.gateway.post({"events": [order(10), order(11)]}).status_code == 202
        wait_for(lambda: d.sandbox.stats("snapchat")["requests"] >= 1, what="a first request")
        settled(d.gateway, {"pending": 2})
        time.sleep(1.0)  # two worker polls: nothing more may be sent while paused
        assert d.sandbox.stats("snapchat")["requests"] == 1
        assert d.sandbox.stats("snapchat")["by_code"] == {"UNAUTHORIZED": 1}
        assert all(r["attempts"] == 0 for r in d.gateway.outbox("snapchat"))
        ready = d.gateway.http.get("/readyz")
        assert "Unauthorized resources" in ready.json()["destinations"]["snapchat"]

        connect_snapchat(d.gateway, TOKEN)  # replaced: the worker resumes by itself
        settled(d.gateway, {"delivered": 2})
        assert d.gateway.post(order(12)).status_code == 202  # refused by Snap: a dead letter
        settled(d.gateway, {"delivered": 2, "dead": 1})
        stats = d.sandbox.stats("snapchat")
        assert (stats["unique_event_ids"], stats["duplicates"]) == (2, 0)

        # every place a URL or an answer could have landed
        admin = {"Authorization": f"Bearer {add_key(d.gateway.settings, 'ops', 'admin')}"}
        responses = [
            d.gateway.http.get("/readyz"),
            d.gateway.http.get("/v1/events/CompletePayment-S12"),
            d.gateway.http.get("/admin/api/dead-letters", headers=admin),
            d.gateway.http.get("/admin/api/status", headers=admin),
            d.gateway.http.get("/admin/api/overview", headers=admin),
            d.gateway.http.get("/admin/connections", headers=admin),
        ]
        assert [r.status_code for r in responses] == [200] * len(responses)
        answers = [r.text for r in responses]
        assert "CompletePayment-S12" in answers[2]  # the dead letter is listed
        outbox = orjson.dumps(d.gateway.outbox(), default=bytes.decode).decode()
        log_text = captured.getvalue()
        assert "/v3/" in log_text  # httpx did log the request lines...
        assert "access_token=[redacted]" in log_text  # ...with the token scrubbed
        for token in (TOKEN, WRONG_TOKEN):
            assert token not in log_text
            assert token.encode() not in d.gateway.raw_bytes()  # encrypted at rest
            assert token not in outbox
            for text in answers:
                assert token not in text
        assert "rejected by sandbox fault injection" in outbox  # Snap's answer is kept
