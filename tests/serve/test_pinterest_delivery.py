"""Pinterest through the real worker, over loopback, with its own ad account and token.

The gateway's worker delivers to a separately running sandbox whose Pinterest emulator takes
one ad account and one conversion token (Bearer). The connection is stored as the Connections
page stores it (token encrypted). Golden values are written here: hashes by hashlib over
literal strings. Every test also checks that the token is in no log record (captured before
redaction, so the check is on what the code wrote), no outbox column and no readiness answer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest

from backchannel import credentials, testorder
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox.emulator import FAULT_REJECTION
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import META_PIXEL, TIKTOK_PIXEL, Gateway, StartDeployment, sha, wait_for

ACCOUNT = "549755885175"
TOKEN = "pina-conv-token-7f3e9a1c"
EPIK = "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0y"
UA = "Mozilla/5.0 (X11; Linux x86_64) PinServe/1.0"


def pinterest_sandbox(token: str = TOKEN) -> SandboxConfig:
    return SandboxConfig(
        tiktok_pixel=TIKTOK_PIXEL,
        meta_pixel=META_PIXEL,
        pinterest_ad_account_id=ACCOUNT,
        pinterest_token=token,
    )


def connect_pinterest(gateway: Gateway, token: str = TOKEN) -> None:
    """Store Pinterest's connection, the token encrypted, as the Connections page does."""
    cipher = credentials.load_cipher(gateway.settings)
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                "pinterest",
                ACCOUNT,
                credentials.encrypt(cipher, token),
                token[-4:],
                None,
                time.time(),
            )
        )
    finally:
        store.close()


def order(n: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": f"P{n}",
        "value": 25.5,
        "currency": "USD",
        "contents": [{"id": "SKU-1", "quantity": 2, "price": 12.75}],
        "user": {
            "email": " Jane.Doe@Example.com ",
            "phone": "+1 415 555 2671",
            "ip": "81.2.69.160",
            "user_agent": UA,
        },
        "page": {"url": f"https://shop.example/thanks?order=P{n}&epik={EPIK}"},
    }
    item.update(overrides)
    return item


def settled(gateway: Gateway, destination: str, expected: dict[str, int]) -> None:
    wait_for(
        lambda: gateway.counts(destination) == expected,
        timeout=30,
        what=f"{destination} outbox to become {expected} (now {gateway.counts(destination)})",
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record at debug level, httpx's request lines included: the product's logging
    setup (run by earlier tests in this process) holds httpx at WARNING, so it is lowered
    here explicitly, and restored after the test."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def token_nowhere(gateway: Gateway, logs: pytest.LogCaptureFixture, token: str) -> None:
    """The token is in no log record and no outbox column; the logs did record the requests
    (so "nowhere" is not an empty capture)."""
    assert any("/v5/ad_accounts/" in r.getMessage() for r in logs.records)
    assert token not in logs.text
    for record in logs.records:
        assert token not in repr(record.__dict__)
    for row in gateway.outbox():
        assert token not in repr(row), row


class TestConnectedPinterest:
    def test_an_order_reaches_pinterest_with_its_own_keys(
        self, deploy: StartDeployment, logs: pytest.LogCaptureFixture
    ) -> None:
        """Connected after start, Pinterest gets the order under its ad account: its event
        name, its phone form (digits, no +), the epik of the landing URL, value as a string."""
        d = deploy(sandbox_config=pinterest_sandbox())
        assert d.gateway.post(order(0)).status_code == 202
        settled(d.gateway, "tiktok", {"delivered": 1})
        assert d.gateway.counts("pinterest") == {}  # off until connected
        connect_pinterest(d.gateway)
        time.sleep(5.5)  # routes and the worker's lanes pick the new connection up (5 s)
        assert d.gateway.post(order(1)).status_code == 202
        settled(d.gateway, "pinterest", {"delivered": 1})
        [sent] = d.sandbox.events("pinterest")
        assert sent["_pixel"] == ACCOUNT
        assert sent["_test_event_code"] is None
        assert sent["event_name"] == "checkout"
        assert sent["event_id"] == "CompletePayment-P1"
        assert sent["action_source"] == "web"
        assert sent["user_data"] == {
            "em": [sha("jane.doe@example.com")],
            "ph": [sha("14155552671")],
            "client_ip_address": "81.2.69.160",
            "client_user_agent": UA,
            "click_id": EPIK,
        }
        assert sent["custom_data"] == {
            "value": "25.5",
            "currency": "USD",
            "content_ids": ["SKU-1"],
            "contents": [{"id": "SKU-1", "item_price": "12.75", "quantity": 2}],
            "num_items": 2,
            "order_id": "P1",
        }
        token_nowhere(d.gateway, logs, TOKEN)

    def test_a_test_order_goes_with_test_true(
        self, deploy: StartDeployment, logs: pytest.LogCaptureFixture
    ) -> None:
        """The sample test order reaches Pinterest's test mode; the row keeps what was sent
        and answered, for the Test events page."""
        d = deploy(sandbox_config=pinterest_sandbox())
        connect_pinterest(d.gateway)
        time.sleep(5.5)
        assert d.gateway.post(testorder.sample_order("TEST_PIN_1")).status_code == 202
        settled(d.gateway, "pinterest", {"delivered": 1})
        [sent] = d.sandbox.events("pinterest")
        assert sent["_test_event_code"] == "test"
        [row] = d.gateway.outbox("pinterest")
        assert orjson.loads(row["sent_body"])["event_name"] == "checkout"
        assert orjson.loads(row["last_response"])["events"][0]["status"] == "processed"
        token_nowhere(d.gateway, logs, TOKEN)


class TestRefusals:
    def test_a_failed_event_is_dead_lettered_alone(
        self, deploy: StartDeployment, logs: pytest.LogCaptureFixture
    ) -> None:
        """Pinterest names the failed event by its place in events[]: that row is a dead
        letter with Pinterest's message; the others of the same request are delivered, in
        one request."""
        d = deploy(
            sandbox_config=pinterest_sandbox(),
            faults={"pinterest": {"reject_event_ids": ["CompletePayment-P6"]}},
        )
        connect_pinterest(d.gateway)
        time.sleep(5.5)
        assert d.gateway.post({"events": [order(5), order(6), order(7)]}).status_code == 202
        settled(d.gateway, "pinterest", {"delivered": 2, "dead": 1})
        dead = [r for r in d.gateway.outbox("pinterest") if r["status"] == "dead"]
        assert [r["event_id"] for r in dead] == ["CompletePayment-P6"]
        assert FAULT_REJECTION in dead[0]["last_error"]
        assert orjson.loads(dead[0]["sent_body"])["custom_data"]["order_id"] == "P6"
        assert d.sandbox.stats("pinterest")["requests"] == 1
        ids = sorted(e["event_id"] for e in d.sandbox.events("pinterest"))
        assert ids == ["CompletePayment-P5", "CompletePayment-P7"]
        token_nowhere(d.gateway, logs, TOKEN)

    def test_a_refused_token_pauses_pinterest_until_it_is_replaced(
        self, deploy: StartDeployment, logs: pytest.LogCaptureFixture
    ) -> None:
        """401 code 2 concerns the credentials, not the events: one request, the rows stay
        pending (none dead), /readyz says why; the right token resumes it and every event
        is delivered once. Neither token is ever written anywhere."""
        wrong = "pina-revoked-token-0d1e"
        d = deploy(sandbox_config=pinterest_sandbox())
        connect_pinterest(d.gateway, wrong)
        time.sleep(5.5)
        assert d.gateway.post({"events": [order(i) for i in range(10, 15)]}).status_code == 202
        wait_for(lambda: d.sandbox.stats("pinterest")["requests"] >= 1, what="pinterest tried")
        settled(d.gateway, "pinterest", {"pending": 5})
        assert d.sandbox.stats("pinterest")["by_code"] == {"2": 1}
        time.sleep(1.0)  # two worker poll intervals: nothing more may be sent while paused
        assert d.sandbox.stats("pinterest")["requests"] == 1
        assert all(r["attempts"] == 0 for r in d.gateway.outbox("pinterest"))
        ready = d.gateway.http.get("/readyz").json()
        assert "Authentication failed" in ready["destinations"]["pinterest"]
        assert wrong not in repr(ready)
        connect_pinterest(d.gateway, TOKEN)
        settled(d.gateway, "pinterest", {"delivered": 5})
        stats = d.sandbox.stats("pinterest")
        assert (stats["unique_event_ids"], stats["duplicates"]) == (5, 0)
        token_nowhere(d.gateway, logs, wrong)
        token_nowhere(d.gateway, logs, TOKEN)
