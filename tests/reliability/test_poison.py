"""One poisoned event in a batch of 1000: it dies alone, with TikTok's message; the 999 go.

TikTok refuses a whole request for one bad row and names it (``Batch.{i}.…``, code 40002). The
worker must dead-letter that row and resend the others at once, not bisect its way through
the batch (ten requests) nor retry the whole batch forever.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import DESTINATIONS, Stack, event, event_id, order_ids, report, wait_until

POISON_INDEX = 500


@pytest.mark.slow
def test_poison_event_in_a_batch_of_1000(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_gateway()
    orders = [o for o, _ in zip(order_ids(), range(1000), strict=False)]
    ids = [event_id(o) for o in orders]
    poison = ids[POISON_INDEX]
    stack.faults({"tiktok": {"reject_event_ids": [poison]}})

    response = stack.post({"events": [event(o) for o in orders]})
    assert response.status_code == 202, response.text[:500]
    assert response.json()["accepted"] == 1000

    wait_until(
        lambda: (
            stack.outbox()
            == {
                ("tiktok", "delivered"): 999,
                ("tiktok", "dead"): 1,
                **{(d, "delivered"): 1000 for d in DESTINATIONS if d != "tiktok"},
            }
        ),
        60,
        "999 + 1 dead on TikTok and 1000 on each other destination",
    )

    tiktok = stack.stats("tiktok")
    assert tiktok["accepted_events"] == 999
    assert tiktok["unique_event_ids"] == 999
    assert tiktok["duplicates"] == 0
    assert tiktok["requests"] <= 3, tiktok  # the refused one, then the 999
    assert tiktok["by_code"].get("40002") == 1, tiktok["by_code"]
    assert set(stack.received_ids("tiktok")) == set(ids) - {poison}
    meta = stack.stats("meta")
    assert meta["accepted_events"] == 1000
    assert meta["duplicates"] == 0

    deliveries = {d["destination"]: d for d in stack.status(poison)["deliveries"]}
    dead = deliveries["tiktok"]
    assert dead["status"] == "dead"
    assert "40002" in dead["last_error"]
    assert "rejected by sandbox fault injection" in dead["last_error"]
    assert f"Batch.{POISON_INDEX}.event_id" in dead["last_error"]
    assert deliveries["meta"]["status"] == "delivered"
    neighbour = {d["destination"]: d["status"] for d in stack.status(ids[0])["deliveries"]}
    assert neighbour == dict.fromkeys(DESTINATIONS, "delivered")

    report(
        "poison in 1000",
        tiktok_requests=tiktok["requests"],
        tiktok_delivered=tiktok["accepted_events"],
        meta_requests=meta["requests"],
        meta_delivered=meta["accepted_events"],
        last_error=dead["last_error"],
    )
