"""A signed WooCommerce order reaches TikTok's and Meta's sandboxes once, on both backends.

Everything is real: the gateway's worker sends over loopback HTTP to a separately running
sandbox (the Serve suite's ``deploy``), on SQLite and on PostgreSQL. State is read through
the gateway's status endpoint, the sandbox's inspection API and the store's own API (the
same calls on both backends).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from backchannel.store import open_store
from backchannel.store.base import OrderRow
from serve.helpers import Deployment, StartDeployment, add_key, sha, wait_for

from .helpers import WOO_SECRET, php_json, with_meta, woo_headers, woo_order

SHOP = "https://shop.example.com"
EVENT_ID = "CompletePayment-727"
SID = "WooLandingSession-01"
LANDED_TTCLID = "E.C.P.LandedOnWoo"
LANDED_TTP = "ttp.landed.on.woo"


@pytest.fixture
def woo(deploy: StartDeployment, database_url: str) -> Deployment:
    """A gateway with the WooCommerce secret and a worker, sending to its own sandbox."""
    return deploy(
        database_url=database_url,
        woocommerce_webhook_secret=WOO_SECRET,
        collect_origins=(SHOP,),
    )


def post(d: Deployment, order: dict[str, Any], **header_options: Any) -> httpx.Response:
    body = php_json(order)
    response = d.gateway.http.post(
        "/v1/sources/woocommerce", content=body, headers=woo_headers(body, **header_options)
    )
    assert response.status_code == 200, response.text
    return response


def deliveries(d: Deployment, event_id: str = EVENT_ID) -> list[dict[str, Any]]:
    response = d.gateway.http.get(f"/v1/events/{event_id}")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["deliveries"]
    return rows


def delivered(d: Deployment, event_id: str = EVENT_ID) -> list[dict[str, Any]]:
    """Wait until the event is delivered to both destinations; its two rows."""
    return wait_for(
        lambda: (
            (rows := deliveries(d, event_id))
            and {(r["destination"], r["status"]) for r in rows}
            == {("tiktok", "delivered"), ("meta", "delivered")}
            and rows
        ),
        timeout=30,
        what=f"{event_id} delivered to tiktok and meta",
    )


def ledger_rows(d: Deployment) -> list[OrderRow]:
    store = open_store(d.gateway.settings.database_url)
    try:
        return store.orders(source="woocommerce")
    finally:
        store.close()


def paid_time(order: dict[str, Any]) -> int:
    when = datetime.fromisoformat(order["date_paid_gmt"]).replace(tzinfo=UTC)
    return int(when.timestamp())


def test_paid_order_reaches_both_sandboxes_exactly_once(woo: Deployment) -> None:
    """order.created in processing: delivered to TikTok and Meta; the same order again
    (same delivery id, a new one, then order.updated to completed) adds nothing."""
    order = woo_order()
    assert post(woo, order, delivery_id="d-1").json()["status"] == "accepted"
    delivered(woo)
    assert post(woo, order, delivery_id="d-1").json()["status"] == "duplicate"
    assert post(woo, order, delivery_id="d-2").json()["status"] == "duplicate"
    completed = post(woo, woo_order("completed"), topic="order.updated", delivery_id="d-3")
    assert completed.json()["status"] == "duplicate"

    assert len(deliveries(woo)) == 2  # no new outbox row for any repeat
    for destination in ("tiktok", "meta"):
        stats = woo.sandbox.stats(destination)
        assert (stats["accepted_events"], stats["duplicates"]) == (1, 0), stats
    [tiktok] = woo.sandbox.events("tiktok", event_id=EVENT_ID)
    assert tiktok["event"] == "CompletePayment"
    assert tiktok["event_time"] == paid_time(order)
    assert tiktok["user"]["email"] == sha("john.doe@example.com")
    assert tiktok["user"]["phone"] == sha("+14155552671")
    assert tiktok["user"]["ttclid"] == "E.C.P.WooClick77"
    assert tiktok["user"]["ttp"] == "2Pj5ZxQWooTtpCookie.tt.1"
    assert tiktok["user"]["ip"] == "81.2.69.160"
    assert tiktok["properties"]["value"] == 29.35
    assert tiktok["properties"]["order_id"] == "727"
    assert [c["content_id"] for c in tiktok["properties"]["contents"]] == ["93", "23"]
    [meta] = woo.sandbox.events("meta", event_id=EVENT_ID)
    assert meta["event_name"] == "Purchase"
    assert meta["action_source"] == "website"
    assert meta["event_source_url"].startswith(SHOP + "/product/woo-single-1/?")
    assert meta["user_data"]["em"] == [sha("john.doe@example.com")]
    assert meta["user_data"]["fbp"] == "fb.1.1732811441000.1234567890"
    [row] = ledger_rows(woo)
    assert (row.order_id, row.event_id, row.value, row.attributed_tiktok) == (
        "727",
        EVENT_ID,
        29.35,
        True,
    )


def test_pending_then_processing_is_sent_once_at_processing(woo: Deployment) -> None:
    """pending sends nothing (the ledger has it); the update to processing sends it, with
    the payment time; completed afterwards adds nothing."""
    post(woo, woo_order("pending"), delivery_id="d-1")
    assert deliveries(woo) == []
    [pending] = ledger_rows(woo)
    assert (pending.order_id, pending.event_id) == ("727", None)

    paid = woo_order()
    assert post(woo, paid, topic="order.updated", delivery_id="d-2").json()["status"] == (
        "accepted"
    )
    delivered(woo)
    post(woo, woo_order("completed"), topic="order.updated", delivery_id="d-3")
    assert len(deliveries(woo)) == 2
    [tiktok] = woo.sandbox.events("tiktok", event_id=EVENT_ID)
    assert tiktok["event_time"] == paid_time(paid)
    assert woo.sandbox.stats("meta")["accepted_events"] == 1
    [row] = ledger_rows(woo)
    assert row.event_id == EVENT_ID


@pytest.mark.parametrize("status", ["cancelled", "refunded"])
def test_cancelled_or_refunded_before_paid_sends_nothing(woo: Deployment, status: str) -> None:
    """pending, then cancelled/refunded: never sent, in the ledger. A later paid order of
    the same shop is delivered, so the worker was running all along."""
    post(woo, woo_order("pending"), delivery_id="d-1")
    post(woo, woo_order(status), topic="order.updated", delivery_id="d-2")
    post(woo, woo_order(id=728), delivery_id="d-3")
    delivered(woo, "CompletePayment-728")
    assert deliveries(woo) == []
    for destination in ("tiktok", "meta"):
        assert woo.sandbox.events(destination, event_id=EVENT_ID) == []
        assert woo.sandbox.stats(destination)["accepted_events"] == 1
    assert {(r.order_id, r.event_id) for r in ledger_rows(woo)} == {
        ("727", None),
        ("728", "CompletePayment-728"),
    }


def test_meta_session_id_stitches_the_landing_click_into_tiktok(woo: Deployment) -> None:
    """bc.js recorded the landing (ttclid, _ttp); the order names only its session in
    meta_data: the delivered TikTok event carries the landing's ttclid and _ttp."""
    site = add_key(woo.gateway.settings, "site", "collect")
    landing_url = f"{SHOP}/?ttclid={LANDED_TTCLID}&utm_source=tiktok"
    landed = httpx.post(
        f"{woo.gateway.url}/v1/collect",
        content=orjson.dumps(
            {
                "key": site,
                "session_id": SID,
                "url": landing_url,
                "landing": True,
                "ttclid": LANDED_TTCLID,
                "ttp": LANDED_TTP,
                "utm": {"source": "tiktok", "medium": "paid"},
            }
        ),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP},
        timeout=30,
    )
    assert landed.status_code == 204, landed.text
    order = with_meta(
        woo_order(),
        _bc_session_id=SID,
        _bc_ttclid=None,
        _bc_ttp=None,
        _bc_fbp=None,
        _wc_order_attribution_session_entry=None,
        _wc_order_attribution_referrer=None,
        _wc_order_attribution_utm_source=None,
    )
    post(woo, order)
    delivered(woo)
    [tiktok] = woo.sandbox.events("tiktok", event_id=EVENT_ID)
    assert tiktok["user"]["ttclid"] == LANDED_TTCLID
    assert tiktok["user"]["ttp"] == LANDED_TTP
    assert tiktok["page"]["url"] == landing_url
    [meta] = woo.sandbox.events("meta", event_id=EVENT_ID)
    assert meta["event_source_url"] == landing_url
    [row] = ledger_rows(woo)
    assert (row.session_id, row.attributed_tiktok) == (SID, True)
    assert orjson.loads(row.evidence) == {
        "ttclid": "landing_session",
        "utm_source": "landing_session",
    }
    assert time.time() - row.recorded_at < 300
