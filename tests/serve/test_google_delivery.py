"""GA4 and Google Ads through the real worker, over loopback, with each platform's own keys.

The gateway's worker delivers to a separately running sandbox whose GA4 and Google Ads
emulators check the measurement id and API secret, the developer token, the OAuth client and
refresh token (a real ``POST /token`` exchange) and the bearer access token. Connections are
stored as the Connections page stores them (token and secrets encrypted). Golden values are
written here: hashes by hashlib over literal strings.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from backchannel import credentials, testorder
from backchannel.sandbox import SandboxConfig
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import META_PIXEL, TIKTOK_PIXEL, Gateway, StartDeployment, wait_for

MEASUREMENT_ID = "G-TEST12345"
API_SECRET = "ga4-api-secret-1"
CUSTOMER = "1234567890"
DEVELOPER_TOKEN = "dev-token-abc"
CLIENT_ID = "client-1.apps.googleusercontent.com"
CLIENT_SECRET = "client-secret-xyz"
REFRESH_TOKEN = "1//refresh-token-987"
ACTION = f"customers/{CUSTOMER}/conversionActions/4242"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def google_sandbox(**overrides: Any) -> SandboxConfig:
    values: dict[str, Any] = {
        "tiktok_pixel": TIKTOK_PIXEL,
        "meta_pixel": META_PIXEL,
        "ga4_measurement_id": MEASUREMENT_ID,
        "ga4_api_secret": API_SECRET,
        "google_ads_customer_id": CUSTOMER,
        "google_ads_developer_token": DEVELOPER_TOKEN,
        "google_ads_client_id": CLIENT_ID,
        "google_ads_client_secret": CLIENT_SECRET,
        "google_ads_refresh_token": REFRESH_TOKEN,
    }
    values.update(overrides)
    return SandboxConfig(**values)


def connect_google(gateway: Gateway) -> None:
    """Store GA4's and Google Ads' connections, encrypted, as the Connections page does."""
    cipher = credentials.load_cipher(gateway.settings)
    secrets = orjson.dumps({"client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN})
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                "ga4",
                MEASUREMENT_ID,
                credentials.encrypt(cipher, API_SECRET),
                API_SECRET[-4:],
                None,
                time.time(),
            )
        )
        store.set_connection(
            Connection(
                "google_ads",
                CUSTOMER,
                credentials.encrypt(cipher, DEVELOPER_TOKEN),
                DEVELOPER_TOKEN[-4:],
                None,
                time.time(),
                {"client_id": CLIENT_ID, "conversion_actions": f"CompletePayment={ACTION}"},
                credentials.encrypt(cipher, secrets.decode()),
            )
        )
    finally:
        store.close()


def order(n: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": f"G{n}",
        "value": 25.5,
        "currency": "USD",
        "user": {
            "email": "Jo.Hn.Doe@GMail.com",
            "phone": "+1 415 555 2671",
            "external_id": "Customer-7",  # GA4 sends user_data only with a user_id (ga4.md §5)
            "ga_client_id": "GA1.1.1111111111.1700000000",
            "gclid": f"Cj0KCQ-{n}",
            "user_agent": "Mozilla/5.0 Google",
            "ip": "81.2.69.160",
        },
        "page": {"url": "https://shop.example/thanks"},
    }
    item.update(overrides)
    return item


def wait_delivered(gateway: Gateway, destination: str, n: int) -> None:
    wait_for(
        lambda: gateway.counts(destination) == {"delivered": n},
        timeout=30,
        what=f"{destination}: {n} delivered (now {gateway.counts(destination)})",
    )


class TestFourDestinations:
    def test_a_conversion_reaches_four_sandboxes_with_each_platforms_keys(
        self, deploy: StartDeployment
    ) -> None:
        """Connected after start, GA4 and Google Ads get the order with their own keys and
        their own email rule (gmail dots removed), as TikTok and Meta get theirs."""
        d = deploy(sandbox_config=google_sandbox())
        connect_google(d.gateway)
        time.sleep(5.5)  # routes and the worker's lanes pick the new connections up (5 s)
        response = d.gateway.post(order(1))
        assert response.status_code == 202, response.text
        for destination in ("tiktok", "meta", "ga4", "google_ads"):
            wait_delivered(d.gateway, destination, 1)
        [ga4] = d.sandbox.events("ga4")
        assert ga4["_pixel"] == MEASUREMENT_ID
        assert ga4["client_id"] == "1111111111.1700000000"
        assert ga4["name"] == "purchase"
        assert ga4["params"]["transaction_id"] == "G1"
        assert ga4["user_id"] == sha("customer-7")
        assert ga4["user_data"]["sha256_email_address"] == [sha("johndoe@gmail.com")]
        assert ga4["user_data"]["sha256_phone_number"] == [sha("+14155552671")]
        [ads] = d.sandbox.events("google_ads")
        assert ads["_pixel"] == CUSTOMER
        assert ads["conversionAction"] == ACTION
        assert ads["gclid"] == "Cj0KCQ-1"
        assert ads["orderId"] == "G1"
        assert {"hashedEmail": sha("johndoe@gmail.com")} in ads["userIdentifiers"]
        [tiktok] = d.sandbox.events("tiktok")
        assert tiktok["user"]["email"] == sha("jo.hn.doe@gmail.com")  # TikTok keeps the dots

    def test_an_unconnected_google_destination_gets_no_rows(self, deploy: StartDeployment) -> None:
        """GA4 and Google Ads are off until connected: no outbox rows, nothing sent."""
        d = deploy(sandbox_config=google_sandbox())
        assert d.gateway.post(order(2)).status_code == 202
        wait_delivered(d.gateway, "tiktok", 1)
        assert d.gateway.counts("ga4") == {}
        assert d.gateway.counts("google_ads") == {}


class TestGoogleAdsDelivery:
    def test_a_refused_access_token_is_renewed_once_and_the_batch_goes(
        self, deploy: StartDeployment
    ) -> None:
        """The sandbox forgets every access token it issued (as a revocation would): the next
        upload is a 401, the worker exchanges the refresh token again and resends."""
        d = deploy(sandbox_config=google_sandbox())
        connect_google(d.gateway)
        time.sleep(5.5)
        assert d.gateway.post(order(3)).status_code == 202
        wait_delivered(d.gateway, "google_ads", 1)
        assert d.sandbox.http.post("/_sandbox/reset").status_code == 200  # tokens forgotten
        assert d.gateway.post(order(4)).status_code == 202
        wait_delivered(d.gateway, "google_ads", 2)
        stats = d.sandbox.stats("google_ads")
        assert stats["by_code"] == {"UNAUTHENTICATED": 1, "0": 1}, stats
        [row] = d.sandbox.events("google_ads")  # the reset emptied the log: only G4
        assert row["orderId"] == "G4"

    def test_a_partial_failure_dead_letters_only_the_named_row(
        self, deploy: StartDeployment
    ) -> None:
        """Google names the failed row by index: that row is a dead letter with Google's
        message, the other rows of the same request are delivered."""
        d = deploy(
            sandbox_config=google_sandbox(),
            faults={"google_ads": {"reject_event_ids": ["G6"]}},
        )
        connect_google(d.gateway)
        time.sleep(5.5)
        body = {"events": [order(5), order(6), order(7)]}
        assert d.gateway.post(body).status_code == 202
        wait_for(
            lambda: d.gateway.counts("google_ads") == {"delivered": 2, "dead": 1},
            timeout=30,
            what=f"google_ads split (now {d.gateway.counts('google_ads')})",
        )
        dead = [r for r in d.gateway.outbox("google_ads") if r["status"] == "dead"]
        assert [r["event_id"] for r in dead] == ["CompletePayment-G6"]
        assert dead[0]["last_error"]
        assert orjson.loads(dead[0]["sent_body"])["orderId"] == "G6"
        assert d.sandbox.stats("google_ads")["requests"] == 1
        assert sorted(r["orderId"] for r in d.sandbox.events("google_ads")) == ["G5", "G7"]


class TestTestOrders:
    def test_a_test_order_reaches_four_destinations_each_its_own_way(
        self, deploy: StartDeployment
    ) -> None:
        """The sample test order: TikTok and Meta file it under the test code; GA4 takes it
        at its validation endpoint (nothing reaches its reports) and Google Ads with
        validateOnly. Each row keeps what was sent and answered, for the Test events page."""
        d = deploy(sandbox_config=google_sandbox())
        connect_google(d.gateway)
        time.sleep(5.5)
        sample = testorder.sample_order("TEST_FOUR_1")
        sample["user"]["gclid"] = "Cj0KCQ-test"
        assert d.gateway.post(sample).status_code == 202
        for destination in ("tiktok", "meta", "ga4", "google_ads"):
            wait_delivered(d.gateway, destination, 1)
        assert d.sandbox.events("tiktok")[0]["_test_event_code"] == "TEST_FOUR_1"
        assert d.sandbox.events("ga4") == []  # validation only: GA4 keeps nothing
        assert d.sandbox.stats("ga4")["by_code"] == {"debug": 1}
        [ads] = d.sandbox.events("google_ads")
        assert ads["_test_event_code"] == "validateOnly"
        for row in d.gateway.outbox():
            assert row["sent_body"] is not None, row["destination"]
        sent = {r["destination"]: orjson.loads(r["sent_body"]) for r in d.gateway.outbox()}
        assert sent["ga4"]["name"] == "purchase"
        assert sent["google_ads"]["conversionAction"] == ACTION
