"""Awkward stores for the rollup equality tests: what a per-day merge could get wrong.

:func:`seed` writes, through the Store API with chosen clock values, a few days of traffic of
three properties (the default one, ``eu`` with its own TikTok and Meta, ``quiet`` with
nothing) around :data:`DAY0` (2027-03-01 UTC):

- conversions at random times of days 0, 1, 3 and 4 (day 2 receives nothing, day 5 nothing at
  all), plus some exactly at a UTC midnight and some a millisecond before one;
- test events, opted-out ones, conversions without an order id, an unreadable payload;
  identifiers in every combination the report reads (hashed email, phone, external id, ip
  with or without a user agent, each platform's click id and browser id), stitched from the
  session or not;
- an outbox row per routed connection, driven to delivered (some exactly at a midnight, some
  on day 2, latencies from 0 to hours, some a fraction of a millisecond apart), retrying,
  dead, expired, pending never tried, in flight; a destination (Snapchat) not in the
  configured list the tests pass;
- Pixel mirror rows: the order's own id, another id, none, the id of another order of the
  session (on the other side of a midnight), the same id in another property;
- refused source input in each property and in none.

Every choice comes from ``random.Random(seed)``, so a failing seed reproduces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from backchannel.store.base import DEFAULT_PROPERTY, BrowserEvent, Dead, SessionUpdate, Store
from store.helpers import conversion

DAY0 = date(2027, 3, 1)
#: the days the tests ask about: an empty day before, days 0–4, an empty day after
DAYS = [DAY0 + timedelta(days=n) for n in range(-1, 6)]
#: the destinations the overview is told are configured (Snapchat is found in the outbox)
CONFIGURED = ("tiktok", "meta")
EVENTS = ("CompletePayment", "CompletePayment", "Lead", "ViewContent")
OUTCOMES = ("delivered",) * 6 + ("retry", "dead", "expired", "pending", "in_flight")


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass
class Seeded:
    """What the tests need to know of a seeded store."""

    properties: list[int]


@dataclass
class _Planned:
    key: str
    property_id: int
    event: str
    event_id: str
    received: float
    session: str | None
    #: connection label -> (outcome, when)
    outcomes: dict[str, tuple[str, float]]


def _user(rng: random.Random, n: int) -> dict[str, Any]:
    user: dict[str, Any] = {}
    for key in ("email", "phone", "external_id"):
        if rng.random() < 0.5:
            user[key] = [f"{key}-{n:064d}"[-64:]]
    if rng.random() < 0.6:
        user["ip"] = "81.2.69.160"
        if rng.random() < 0.7:
            user["user_agent"] = "Mozilla/5.0"
    for field in ("ttclid", "ttp", "fbc", "fbclid", "fbp", "sc_click_id", "gclid", "rdt_uuid"):
        if rng.random() < 0.25:
            user[field] = f"{field}-{n}"
    if rng.random() < 0.15:
        user["ids"] = {"ga_client_id": f"GA1.{n}", "pin_epik": f"epik-{n}", "ttp": f"t{n}"}
        # a field on the user that is not a string is looked up in ids; an empty string
        # is the user's answer (not carried), whatever ids says
        user["pin_epik"] = None
        user["ttp"] = rng.choice(("", None, f"ttp-{n}"))
    return user


def _received_at(rng: random.Random, n: int) -> float:
    """A receipt time: random in days 0, 1, 3, 4, or on a midnight's edge."""
    edge = n % 9
    if edge == 0:
        return midnight(DAY0 + timedelta(days=rng.choice((1, 4))))  # exactly at midnight
    if edge == 1:
        return midnight(DAY0 + timedelta(days=rng.choice((1, 2)))) - 0.001  # just before
    day = DAY0 + timedelta(days=rng.choice((0, 1, 3, 4)))
    return midnight(day) + rng.uniform(0, 86_399.999)


def _delivered_at(rng: random.Random, received: float, n: int) -> float:
    kind = n % 7
    if kind == 0:  # on the next midnight (a row received the day before)
        nxt = datetime.fromtimestamp(received, UTC).date() + timedelta(days=1)
        return midnight(nxt)
    if kind == 1:  # hours later, maybe on day 2 (which receives nothing)
        return received + rng.uniform(3600, 40_000)
    if kind == 2:  # a fraction of a millisecond past a whole one (rounding ties, nearly)
        return received + rng.choice((0.0005, 0.0015, 1.0025, 0.0))
    return received + rng.uniform(0.05, 30.0)


def seed(store: Store, rng: random.Random, n: int = 90) -> Seeded:
    """The store described in the module docstring, with ``n`` conversions."""
    setup = midnight(DAY0) - 86_400 * 3
    eu = store.create_property("eu", setup, destinations=CONFIGURED)
    quiet = store.create_property("quiet", setup, destinations=CONFIGURED)
    assert eu is not None
    assert quiet is not None
    store.ensure_connections(("snapchat",), setup, property_id=DEFAULT_PROPERTY)
    labels = {DEFAULT_PROPERTY: ("tiktok", "meta", "snapchat"), eu: ("tiktok", "meta")}

    planned: list[_Planned] = []
    sessions: dict[int, list[str]] = {DEFAULT_PROPERTY: [], eu: []}
    for i in range(n):
        prop = DEFAULT_PROPERTY if i % 3 else eu
        event = rng.choice(EVENTS)
        received = _received_at(rng, i)
        test = "TEST1" if i % 11 == 5 else None
        opt_out = i % 13 == 7
        if sessions[prop] and rng.random() < 0.3:
            session: str | None = rng.choice(sessions[prop])  # a visit with two orders
        elif rng.random() < 0.8:
            session = f"s{prop}-{i}"
            sessions[prop].append(session)
        else:
            session = None
        routed = () if opt_out else tuple(c for c in labels[prop] if rng.random() < 0.8)
        if i % 17 == 3:
            payload = b"{not json"
        else:
            doc: dict[str, Any] = {"event": event, "user": _user(rng, i)}
            if opt_out:
                doc["opt_out"] = True
            payload = orjson.dumps(doc)
        stitched = None
        if rng.random() < 0.4:
            fields = rng.choice(({"ttclid": "session"}, {"page_url": "session"}, {"ip": "request"}))
            stitched = orjson.dumps(
                {"session_id": session, "matched_by": "session_id", "fields": fields}
            ).decode()
        key = f"k{i}"
        item = conversion(
            key,
            event=event,
            payload=payload,
            session_id=session,
            order_id=None if i % 10 == 4 else f"o{i}",
            test_event_code=test,
            destinations=routed,
            stitched=stitched,
            property_id=prop,
        )
        assert store.insert_conversions([item], received) == [True]
        outcomes = {}
        for label in routed:
            outcome = rng.choice(OUTCOMES)
            outcomes[label] = (outcome, _delivered_at(rng, received, i + len(outcomes)))
        planned.append(_Planned(key, prop, event, f"{event}-{key}", received, session, outcomes))

    _drive(store, planned, labels)
    _mirror(store, rng, planned, eu)
    for i in range(8):
        at = _received_at(rng, i + 2)
        prop_or_none = (DEFAULT_PROPERTY, eu, None)[i % 3]
        store.record_rejection(
            "shopify",
            orjson.dumps({"error": "unauthorized", "errors": [{"path": "x", "reason": f"{i}"}]}),
            at,
            delivery_id=f"wh-{i}",
            property_id=prop_or_none,
        )
    return Seeded([DEFAULT_PROPERTY, eu, quiet])


def _drive(store: Store, planned: list[_Planned], labels: dict[int, tuple[str, ...]]) -> None:
    """Claim every row of each connection, then leave each in its planned state."""
    by_event_id = {(p.property_id, p.event_id): p for p in planned}
    later = midnight(DAY0 + timedelta(days=10))
    for prop, names in labels.items():
        ids = {c.label or c.destination: c.id for c in store.list_connections(prop)}
        for label in names:
            claimed = store.claim(ids[label], 10_000, later, 86_400 * 30)
            rows = {}
            for c in claimed:
                event_id = store.read(
                    "SELECT event_id FROM conversions WHERE id = ?", (c.conversion_id,)
                )[0][0]
                rows[c.outbox_id] = by_event_id[(prop, str(event_id))]
            for outbox_id, plan in sorted(rows.items()):
                outcome, when = plan.outcomes[label]
                if outcome == "delivered":
                    store.mark_delivered([outbox_id], when, "ref")
                elif outcome == "retry":
                    store.mark_retry([outbox_id], when + 600, "HTTP 503", "busy", failed_at=when)
                elif outcome == "dead":
                    store.mark_dead(
                        [Dead(outbox_id, b"{}")], "invalid", '{"e": 1}', None, failed_at=when
                    )
                elif outcome == "expired":
                    store.mark_expired([outbox_id], "too old", failed_at=when)
                elif outcome == "pending":
                    store.release([outbox_id], when)
                # in_flight: stays claimed


def _mirror(store: Store, rng: random.Random, planned: list[_Planned], eu: int) -> None:
    """Pixel mirror rows for the orders' sessions: same id, another id, none, a sibling
    order's id, another property's row with the same id; TikTok's, Meta's, Snapchat's."""
    updates: dict[str, SessionUpdate] = {}
    events: list[BrowserEvent] = []
    names = {"tiktok": "CompletePayment", "meta": "Purchase", "snapchat": "PURCHASE"}
    by_session: dict[str, list[_Planned]] = {}
    for plan in planned:
        if plan.session:
            by_session.setdefault(plan.session, []).append(plan)
    for i, plan in enumerate(planned):
        if plan.session is None:
            continue
        updates[plan.session] = SessionUpdate(
            plan.session, plan.received - 600, landing=True, property_id=plan.property_id
        )
        for platform, name in names.items():
            roll = rng.random()
            if roll < 0.35:
                event_id: str | None = plan.event_id
            elif roll < 0.45:
                event_id = f"other-{i}"
            elif roll < 0.5:
                event_id = None
            elif roll < 0.6:
                event_id = rng.choice(by_session[plan.session]).event_id  # a sibling's
            else:
                continue
            event = name if plan.event == "CompletePayment" else plan.event
            events.append(
                BrowserEvent(
                    plan.session,
                    event,
                    event_id,
                    plan.received - 5,
                    platform=platform,
                    property_id=plan.property_id,
                )
            )
        if i % 5 == 0:  # another property's visitor fired the same id: pairs with nothing
            other = eu if plan.property_id == DEFAULT_PROPERTY else DEFAULT_PROPERTY
            stray = f"stray-{i}"
            updates[stray] = SessionUpdate(stray, plan.received, landing=True, property_id=other)
            events.append(
                BrowserEvent(stray, "CompletePayment", plan.event_id, plan.received,
                             property_id=other)
            )  # fmt: skip
    store.record_collect(list(updates.values()), events)
