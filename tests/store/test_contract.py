"""The Store contract, run against SQLite and PostgreSQL alike (fixture ``store``/``database``).

Why one suite: the ingest API, the worker and the CLI only ever see the protocol, so a backend
that differs in any observable way (a duplicate enqueued twice, an attempt counted on release,
a lease boundary off by one) is a bug in production that the other backend's tests would not
catch. Observations go through the protocol where it can tell; where it cannot (the body kept
for a dead letter, the audit log) the test reads the database directly.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from backchannel.store.base import (
    DEAD,
    DELIVERED,
    EXPIRED,
    IN_FLIGHT,
    PENDING,
    Claimed,
    Connection,
    Dead,
    DeliveryRow,
    KeyRecord,
    NewConversion,
    Store,
    UnknownConnection,
)

from .conftest import Database, PostgresDatabase
from .helpers import BOTH, LEASE, NOW, conversion

#: errors a failed write may raise, per backend
WRITE_ERRORS = (sqlite3.Error, psycopg.Error, UnknownConnection)


OUTBOX_COLUMNS = (
    "conversion_id destination status due_at lease_until attempts last_error last_response"
    " platform_ref sent_body created_at delivered_at failed_at"
).split()


def outbox_row(database: Database, outbox_id: int) -> dict[str, Any]:
    rows = database.rows(
        "SELECT conversion_id, destination, status, due_at, lease_until, attempts, last_error,"
        " last_response, platform_ref, sent_body, created_at, delivered_at, failed_at"
        " FROM outbox WHERE id = ?",
        outbox_id,
    )
    assert len(rows) == 1
    row = dict(zip(OUTBOX_COLUMNS, rows[0], strict=True))
    if row["sent_body"] is not None:
        row["sent_body"] = bytes(row["sent_body"])
    return row


def outbox_ids(database: Database, destination: str) -> list[int]:
    return [
        row[0]
        for row in database.rows(
            "SELECT id FROM outbox WHERE destination = ? ORDER BY id", destination
        )
    ]


def claim_ids(store: Store, destination: str, limit: int = 100, now: float = NOW) -> list[int]:
    return [c.outbox_id for c in store.claim(destination, limit, now, LEASE)]


def ids_of(claimed: Sequence[Claimed]) -> list[int]:
    return [c.outbox_id for c in claimed]


# -- ingest ---------------------------------------------------------------------------------------
def test_insert_reports_new_and_duplicate_per_item_in_order(store: Store) -> None:
    a, b, c, d = (conversion(n) for n in "abcd")
    assert store.insert_conversions([a, b, a, c], NOW) == [True, True, False, True]
    assert store.insert_conversions([c, d, a], NOW + 1) == [False, True, False]
    assert store.conversion_count() == 4


def test_same_event_id_under_another_event_is_not_a_duplicate(store: Store) -> None:
    first = conversion(1, event="CompletePayment", event_id="order-1")
    second = conversion(1, event="Purchase", event_id="order-1")
    assert store.insert_conversions([first, second], NOW) == [True, True]
    assert store.conversion_count() == 2


def test_insert_enqueues_one_outbox_row_per_destination(store: Store, database: Database) -> None:
    items = [
        conversion(1, destinations=BOTH),
        conversion(2, destinations=("tiktok",)),
        conversion(3, destinations=()),
    ]
    store.insert_conversions(items, NOW)
    assert store.outbox_counts() == {"tiktok": {PENDING: 2}, "meta": {PENDING: 1}}
    # a duplicate enqueues nothing, even when it names other destinations
    store.insert_conversions([conversion(2, destinations=("meta",))], NOW + 5)
    assert store.outbox_counts() == {"tiktok": {PENDING: 2}, "meta": {PENDING: 1}}
    for outbox_id in outbox_ids(database, "tiktok") + outbox_ids(database, "meta"):
        row = outbox_row(database, outbox_id)
        assert row["status"] == PENDING
        assert row["due_at"] == NOW
        assert row["created_at"] == NOW
        assert row["attempts"] == 0
        assert row["lease_until"] is None


def test_refused_destinations_get_a_dead_row_with_the_reason(
    store: Store, database: Database
) -> None:
    """A destination that cannot take a conversion (TikTok without the event set of its
    source) gets its outbox row dead at once, reason kept, never claimed; replay re-queues
    it once the setting exists. The other destinations are pending as usual."""
    reason = "no TikTok CRM event set configured"
    item = conversion(1, destinations=("meta",), refused={"tiktok": reason})
    assert store.insert_conversions([item], NOW) == [True]
    assert store.outbox_counts() == {"tiktok": {DEAD: 1}, "meta": {PENDING: 1}}
    dead = outbox_row(database, outbox_ids(database, "tiktok")[0])
    assert dead["last_error"] == reason
    assert dead["failed_at"] == NOW
    assert store.claim("tiktok", 10, NOW, LEASE) == []
    assert store.replay(NOW + 1, destination="tiktok") == 1
    assert [c.conversion_id for c in store.claim("tiktok", 10, NOW + 1, LEASE)] != []


def test_ids_follow_the_batch_order(store: Store, database: Database) -> None:
    """Equal due times are claimed by id: the batch order must be the delivery order."""
    items = [conversion(n) for n in (5, 3, 9, 1, 7, 0, 8, 2, 6, 4)] * 2
    store.insert_conversions(items, NOW)
    items = items[:10]
    stored = [row[0] for row in database.rows("SELECT event_id FROM conversions ORDER BY id")]
    assert stored == [item.event_id for item in items]
    for destination in BOTH:
        conversion_ids = [
            row[0]
            for row in database.rows(
                "SELECT conversion_id FROM outbox WHERE destination = ? ORDER BY id", destination
            )
        ]
        event_ids = [
            database.rows("SELECT event_id FROM conversions WHERE id = ?", cid)[0][0]
            for cid in conversion_ids
        ]
        assert event_ids == [item.event_id for item in items]


def test_insert_stores_every_field_as_given(store: Store, database: Database) -> None:
    payload = b'{"user": {"email": "' + bytes(range(256)) + b'"}}'  # not even UTF-8
    item = conversion(
        7,
        payload=payload,
        warnings=b'[{"path": "user.phone", "reason": "dropped"}]',
        session_id="sess-1",
        test_event_code="TEST123",
        origin="shopify",
        event_time=1_799_000_123,
    )
    store.insert_conversions([item], NOW + 0.25)
    rows = database.rows(
        "SELECT event, event_id, event_time, received_at, origin, order_id, session_id,"
        " test_event_code, payload, warnings FROM conversions"
    )
    assert len(rows) == 1
    stored = list(rows[0])
    stored[8], stored[9] = bytes(stored[8]), bytes(stored[9])
    assert stored == [
        item.event,
        item.event_id,
        1_799_000_123,
        NOW + 0.25,
        "shopify",
        "7",
        "sess-1",
        "TEST123",
        payload,
        item.warnings,
    ]


def test_empty_insert_writes_nothing(store: Store) -> None:
    assert store.insert_conversions([], NOW) == []
    assert store.conversion_count() == 0
    assert store.outbox_counts() == {}


@pytest.mark.parametrize(
    "broken",
    [
        # a value the driver cannot bind: fails on that row, after the rows before it
        pytest.param(conversion("bad", payload=object()), id="bad-conversion-mid-batch"),
        # NOT NULL violated in the outbox: fails after every conversion row was written
        pytest.param(conversion("bad", destinations=("tiktok", None)), id="bad-outbox-row"),
    ],
)
def test_failed_insert_leaves_nothing_behind(store: Store, broken: NewConversion) -> None:
    """All or nothing: a batch that fails after some rows were written commits none of them."""
    good = [conversion(n) for n in range(5)]
    with pytest.raises(WRITE_ERRORS):
        store.insert_conversions([*good[:3], broken, *good[3:]], NOW)
    assert store.conversion_count() == 0
    assert store.outbox_counts() == {}
    # the store is still usable and the good items were never seen
    assert store.insert_conversions(good, NOW) == [True] * 5
    assert store.outbox_counts() == {"tiktok": {PENDING: 5}, "meta": {PENDING: 5}}


def test_concurrent_inserts_of_the_same_events_store_each_once(database: Database) -> None:
    """Two ingest nodes racing on the same keys: every event is new for exactly one of them.

    The second batch holds the shared keys in the opposite order: a backend that locks keys
    in batch order deadlocks here (and fails one of the batches).
    """
    stores = [database.open(), database.open()]
    batches = [
        [conversion(n) for n in range(300)],
        [conversion(n) for n in reversed(range(150, 450))],
    ]
    start = threading.Barrier(2)

    def ingest(index: int) -> list[bool]:
        start.wait()
        return stores[index].insert_conversions(batches[index], NOW)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(ingest, [0, 1]))
    new_per_key: dict[str, int] = {}
    for items, flags in zip(batches, results, strict=True):
        for item, is_new in zip(items, flags, strict=True):
            new_per_key[item.event_id] = new_per_key.get(item.event_id, 0) + is_new
    assert len(new_per_key) == 450
    assert set(new_per_key.values()) == {1}
    assert stores[0].outbox_counts() == {"tiktok": {PENDING: 450}, "meta": {PENDING: 450}}


# -- claim ----------------------------------------------------------------------------------------
def test_claim_leases_due_rows_with_their_payload(store: Store, database: Database) -> None:
    items = [conversion(n) for n in range(3)]
    store.insert_conversions(items, NOW)
    claimed = store.claim("tiktok", 10, NOW, LEASE)
    assert ids_of(claimed) == outbox_ids(database, "tiktok")
    assert [c.payload for c in claimed] == [item.payload for item in items]
    assert all(c.attempts == 1 for c in claimed)
    for c in claimed:
        row = outbox_row(database, c.outbox_id)
        assert row["conversion_id"] == c.conversion_id
        assert row["status"] == IN_FLIGHT
        assert row["lease_until"] == NOW + LEASE
        assert row["attempts"] == 1
    # leased rows are not handed out again while the lease runs; the other destination is intact
    assert store.claim("tiktok", 10, NOW + 1, LEASE) == []
    assert store.outbox_counts() == {"tiktok": {IN_FLIGHT: 3}, "meta": {PENDING: 3}}


def test_claim_takes_only_its_destination(store: Store, database: Database) -> None:
    store.insert_conversions(
        [conversion(1, destinations=("meta",)), conversion(2, destinations=BOTH)], NOW
    )
    assert claim_ids(store, "tiktok") == outbox_ids(database, "tiktok")
    assert len(outbox_ids(database, "tiktok")) == 1
    assert claim_ids(store, "meta") == outbox_ids(database, "meta")
    with pytest.raises(UnknownConnection):
        claim_ids(store, "nowhere")


def test_claim_respects_due_at(store: Store) -> None:
    store.insert_conversions([conversion(n) for n in range(2)], NOW)
    assert store.claim("tiktok", 10, NOW - 0.001, LEASE) == []  # not due yet
    first, second = claim_ids(store, "tiktok")  # due exactly now: due
    store.mark_retry([first], NOW + 30, "HTTP 503", None)
    store.release([second], NOW + 60)
    assert claim_ids(store, "tiktok", now=NOW + 29.999) == []
    assert claim_ids(store, "tiktok", now=NOW + 30) == [first]
    assert claim_ids(store, "tiktok", now=NOW + 59) == []
    assert claim_ids(store, "tiktok", now=NOW + 60) == [second]


def test_claim_respects_limit_and_takes_earliest_due_first(
    store: Store, database: Database
) -> None:
    store.insert_conversions([conversion(n) for n in range(6)], NOW)
    ids = outbox_ids(database, "tiktok")
    assert claim_ids(store, "tiktok", limit=2) == ids[:2]
    assert claim_ids(store, "tiktok", limit=3) == ids[2:5]
    assert claim_ids(store, "tiktok", limit=0) == []
    assert claim_ids(store, "tiktok", limit=100) == ids[5:]
    # due order across retries: the row due earliest goes first, whatever its id
    store.mark_retry(ids[:3], NOW + 50, "later", None)
    store.mark_retry(ids[3:], NOW + 10, "sooner", None)
    assert claim_ids(store, "tiktok", limit=3, now=NOW + 100) == ids[3:]
    assert claim_ids(store, "tiktok", limit=3, now=NOW + 100) == ids[:3]


def test_expired_lease_is_claimed_again_and_counts_an_attempt(store: Store) -> None:
    store.insert_conversions([conversion(1)], NOW)
    (first,) = store.claim("tiktok", 10, NOW, LEASE)
    assert first.attempts == 1
    assert store.claim("tiktok", 10, NOW + LEASE, LEASE) == []  # lease_until is not < now yet
    (again,) = store.claim("tiktok", 10, NOW + LEASE + 0.5, LEASE)
    assert (again.outbox_id, again.attempts, again.payload) == (
        first.outbox_id,
        2,
        first.payload,
    )
    (third,) = store.claim("tiktok", 10, NOW + 2 * LEASE + 1, LEASE)
    assert third.attempts == 3


def test_expired_leases_come_first_then_due_rows_in_claim_order(
    store: Store, database: Database
) -> None:
    """A dead worker's rows (expired leases, oldest lease first) go before due rows.

    The claim returns the rows in that order too, whatever their ids.
    """
    store.insert_conversions([conversion(n) for n in ("x", "y", "p")], NOW)
    x, y, p = outbox_ids(database, "tiktok")
    assert claim_ids(store, "tiktok", limit=1, now=NOW + 10) == [x]  # lease ends NOW + 130
    assert claim_ids(store, "tiktok", limit=1, now=NOW + 5) == [y]  # lease ends NOW + 125
    assert claim_ids(store, "tiktok", limit=2, now=NOW + 200) == [y, x]
    assert claim_ids(store, "tiktok", limit=2, now=NOW + 200) == [p]
    # all three leases now end at NOW + 320: equal leases go by id
    assert claim_ids(store, "tiktok", limit=3, now=NOW + 400) == [x, y, p]


def test_release_gives_rows_back_without_counting_the_attempt(
    store: Store, database: Database
) -> None:
    store.insert_conversions([conversion(1)], NOW)
    (outbox_id,) = claim_ids(store, "tiktok")
    store.release([outbox_id], NOW + 1)
    row = outbox_row(database, outbox_id)
    assert (row["status"], row["attempts"], row["lease_until"], row["due_at"]) == (
        PENDING,
        0,
        None,
        NOW + 1,
    )
    (again,) = store.claim("tiktok", 10, NOW + 1, LEASE)
    assert again.attempts == 1
    # the count never goes below zero, even for a row released without a claim
    store.release([outbox_id], NOW + 2)
    store.release([outbox_id], NOW + 2)
    assert outbox_row(database, outbox_id)["attempts"] == 0


def test_enqueue_adds_a_pending_row_once_per_destination(store: Store, database: Database) -> None:
    """Backfill: conversions stored without a GA4 row get one, due now; a second call, or a
    conversion that already has a row, adds nothing; unknown ids are ignored."""
    store.insert_conversions([conversion(n, destinations=("tiktok",)) for n in range(3)], NOW)
    ids = [int(r[0]) for r in database.rows("SELECT id FROM conversions ORDER BY id")]
    store.set_connection(Connection("ga4", "G-TEST1234", b"ciphertext", "1234", None, NOW))
    assert store.enqueue("ga4", ids[:2], NOW + 5) == 2
    assert store.enqueue("ga4", [*ids, 999_999], NOW + 6) == 1
    assert store.enqueue("tiktok", ids, NOW + 7) == 0
    rows = database.rows(
        "SELECT conversion_id, status, due_at, attempts FROM outbox"
        " WHERE destination = 'ga4' ORDER BY conversion_id"
    )
    assert rows == [
        (ids[0], PENDING, NOW + 5, 0),
        (ids[1], PENDING, NOW + 5, 0),
        (ids[2], PENDING, NOW + 6, 0),
    ]
    assert [c.outbox_id for c in store.claim("ga4", 10, NOW + 6, LEASE)] != []


# -- lease tokens: a late worker never overwrites a newer worker's outcome -----------------------
def test_claims_carry_one_fresh_token_each(store: Store) -> None:
    """All rows of one claim share a token; two claims never do."""
    store.insert_conversions([conversion(n) for n in range(4)], NOW)
    first = store.claim("tiktok", 2, NOW, LEASE)
    second = store.claim("tiktok", 2, NOW, LEASE)
    assert len({c.lease for c in first}) == 1
    assert len({c.lease for c in second}) == 1
    assert first[0].lease
    assert second[0].lease
    assert first[0].lease != second[0].lease


@pytest.mark.parametrize(
    "mark", ["delivered", "delivered_sent", "retry", "dead", "expired", "release"]
)
def test_a_mark_with_a_stale_lease_changes_nothing(
    store: Store, database: Database, mark: str
) -> None:
    """Worker A's lease runs out, worker B claims and delivers: A's late mark is refused.

    This is the duplicate-send bug of issue 18: without the guard A's late ``mark_retry``
    returned B's delivered row to pending (sent again), and its late ``mark_delivered``
    overwrote a row B was still sending.
    """
    store.insert_conversions([conversion(1)], NOW)
    (a,) = store.claim("tiktok", 10, NOW, LEASE)
    (b,) = store.claim("tiktok", 10, NOW + LEASE + 1, LEASE)  # A's lease ran out
    assert (a.outbox_id, b.outbox_id) == (a.outbox_id, a.outbox_id)
    assert store.mark_delivered([b.outbox_id], NOW + LEASE + 2, "ref-b", lease=b.lease) == 1
    before = outbox_row(database, a.outbox_id)
    late = NOW + LEASE + 3
    changed = {
        "delivered": lambda: store.mark_delivered([a.outbox_id], late, "ref-a", lease=a.lease),
        "delivered_sent": lambda: store.mark_delivered(
            [a.outbox_id], late, "ref-a", sent=[b"{}"], response="{}", lease=a.lease
        ),
        "retry": lambda: store.mark_retry([a.outbox_id], late, "HTTP 503", None, lease=a.lease),
        "dead": lambda: store.mark_dead(
            [Dead(a.outbox_id, b"{}")], "refused", None, None, lease=a.lease
        ),
        "expired": lambda: store.mark_expired([a.outbox_id], "too old", lease=a.lease),
        "release": lambda: store.release([a.outbox_id], late, lease=a.lease),
    }[mark]()
    assert changed == 0
    assert outbox_row(database, a.outbox_id) == before
    assert before["status"] == DELIVERED
    assert before["platform_ref"] == "ref-b"


def test_a_mark_with_a_stale_lease_cannot_touch_a_row_still_in_flight(
    store: Store, database: Database
) -> None:
    """B holds the row now and is still sending: A's late retry must not make it pending."""
    store.insert_conversions([conversion(1)], NOW)
    (a,) = store.claim("tiktok", 10, NOW, LEASE)
    (b,) = store.claim("tiktok", 10, NOW + LEASE + 1, LEASE)
    assert store.mark_retry([a.outbox_id], NOW + 500, "late", None, lease=a.lease) == 0
    row = outbox_row(database, b.outbox_id)
    assert (row["status"], row["attempts"]) == (IN_FLIGHT, 2)
    assert store.mark_retry([b.outbox_id], NOW + 500, "HTTP 503", None, lease=b.lease) == 1
    assert outbox_row(database, b.outbox_id)["status"] == PENDING


def test_guarded_marks_count_only_their_own_rows(store: Store) -> None:
    """A mark over several rows changes those still under its token and says how many."""
    store.insert_conversions([conversion(n) for n in range(3)], NOW)
    claimed = store.claim("tiktok", 10, NOW, LEASE)
    ids = [c.outbox_id for c in claimed]
    # one row's lease runs out and another worker takes it
    store.release([ids[0]], NOW, lease=claimed[0].lease)
    (taken,) = store.claim("tiktok", 1, NOW, LEASE)
    assert taken.outbox_id == ids[0]
    assert store.mark_delivered(ids, NOW + 1, None, lease=claimed[0].lease) == 2
    assert store.mark_delivered([taken.outbox_id], NOW + 1, None, lease=taken.lease) == 1


# -- outcomes -------------------------------------------------------------------------------------
def test_mark_retry_requeues_with_the_error(store: Store, database: Database) -> None:
    store.insert_conversions([conversion(1)], NOW)
    (outbox_id,) = claim_ids(store, "tiktok")
    store.mark_retry([outbox_id], NOW + 8, "HTTP 429", '{"code": 51010}')
    row = outbox_row(database, outbox_id)
    assert row["status"] == PENDING
    assert row["due_at"] == NOW + 8
    assert row["lease_until"] is None
    assert row["attempts"] == 1
    assert (row["last_error"], row["last_response"]) == ("HTTP 429", '{"code": 51010}')
    (again,) = store.claim("tiktok", 10, NOW + 8, LEASE)
    assert again.attempts == 2


def test_mark_delivered_is_final(store: Store, database: Database) -> None:
    store.insert_conversions([conversion(1), conversion(2)], NOW)
    ids = claim_ids(store, "tiktok")
    store.mark_retry(ids, NOW, "timed out", None)
    ids = claim_ids(store, "tiktok")
    store.mark_delivered(ids, NOW + 3, "req-123")
    for outbox_id in ids:
        row = outbox_row(database, outbox_id)
        assert row["status"] == DELIVERED
        assert row["delivered_at"] == NOW + 3
        assert row["platform_ref"] == "req-123"
        assert row["last_error"] is None
        assert row["lease_until"] is None
        assert row["attempts"] == 2
    assert store.claim("tiktok", 10, NOW + 10 * LEASE, LEASE) == []
    assert store.outbox_counts()["tiktok"] == {DELIVERED: 2}
    store.mark_delivered([], NOW, None)  # nothing to do is fine


def test_mark_dead_keeps_reason_response_and_each_body(store: Store, database: Database) -> None:
    store.insert_conversions([conversion(n) for n in range(3)], NOW)
    ids = claim_ids(store, "tiktok")
    bodies = [b'{"event": "CompletePayment", "n": %d}' % n for n in range(2)]
    store.mark_dead(
        [Dead(ids[0], bodies[0]), Dead(ids[1], bodies[1])],
        "40002 invalid email",
        '{"code": 40002}',
        "req-9",
    )
    for outbox_id, body in zip(ids[:2], bodies, strict=True):
        row = outbox_row(database, outbox_id)
        assert row["status"] == DEAD
        assert row["sent_body"] == body
        assert row["last_error"] == "40002 invalid email"
        assert row["last_response"] == '{"code": 40002}'
        assert row["platform_ref"] == "req-9"
        assert row["lease_until"] is None
    assert outbox_row(database, ids[2])["status"] == IN_FLIGHT
    assert store.claim("tiktok", 10, NOW + 10 * LEASE, LEASE)[0].outbox_id == ids[2]
    assert store.outbox_counts()["tiktok"] == {DEAD: 2, IN_FLIGHT: 1}


def test_mark_expired_is_final(store: Store, database: Database) -> None:
    store.insert_conversions([conversion(1)], NOW)
    (outbox_id,) = claim_ids(store, "tiktok")
    store.mark_expired([outbox_id], "older than 7 days")
    row = outbox_row(database, outbox_id)
    assert (row["status"], row["last_error"], row["lease_until"]) == (
        EXPIRED,
        "older than 7 days",
        None,
    )
    assert store.claim("tiktok", 10, NOW + 10 * LEASE, LEASE) == []
    assert store.replay(NOW) == 0  # only dead rows are replayed


def test_failures_record_when_they_happened(store: Store, database: Database) -> None:
    """failed_at: set by retry, dead and expired when given, kept when not (the dashboard
    orders last errors and dead letters by it)."""
    store.insert_conversions([conversion(n) for n in range(3)], NOW)
    a, b, c = claim_ids(store, "tiktok")
    assert outbox_row(database, a)["failed_at"] is None
    store.mark_retry([a], NOW + 60, "HTTP 503", None, failed_at=NOW + 1)
    assert outbox_row(database, a)["failed_at"] == NOW + 1
    store.mark_retry([a], NOW + 90, "HTTP 503", None)  # no time given: the stored one stays
    assert outbox_row(database, a)["failed_at"] == NOW + 1
    store.mark_dead([Dead(b, b"{}")], "40002", None, None, failed_at=NOW + 2)
    store.mark_expired([c], "too old", failed_at=NOW + 3)
    assert [outbox_row(database, i)["failed_at"] for i in (b, c)] == [NOW + 2, NOW + 3]
    store.mark_dead([Dead(a, b"{}")], "gave up", None, None, failed_at=NOW + 4)
    assert outbox_row(database, a)["failed_at"] == NOW + 4


# -- replay ---------------------------------------------------------------------------------------
def _dead_letters(store: Store, database: Database, n: int) -> None:
    """n conversions, both destinations dead-lettered; one more delivered on both."""
    store.insert_conversions([conversion(i) for i in range(n + 1)], NOW)
    for destination in BOTH:
        ids = claim_ids(store, destination)
        store.mark_dead([Dead(i, b"{}") for i in ids[:n]], "refused", None, None)
        store.mark_delivered(ids[n:], NOW, None)


def test_replay_one_event(store: Store, database: Database) -> None:
    _dead_letters(store, database, 3)
    assert store.replay(NOW + 100, event_id="CompletePayment-1") == 2  # both destinations
    assert store.replay(NOW + 100, event_id="CompletePayment-1") == 0  # no longer dead
    assert store.replay(NOW + 100, event_id="no-such-event") == 0
    (row,) = store.claim("tiktok", 10, NOW + 100, LEASE)
    assert row.attempts == 1  # replay starts the count afresh
    deliveries = {d.destination: d for d in store.deliveries("CompletePayment-1")}
    assert deliveries["meta"].status == PENDING
    assert deliveries["meta"].attempts == 0
    assert deliveries["tiktok"].status == IN_FLIGHT


def test_replay_by_destination_and_all(store: Store, database: Database) -> None:
    _dead_letters(store, database, 3)
    assert store.replay(NOW + 100, destination="meta") == 3
    assert store.outbox_counts()["meta"] == {PENDING: 3, DELIVERED: 1}
    assert store.outbox_counts()["tiktok"] == {DEAD: 3, DELIVERED: 1}
    assert store.replay(NOW + 100, event_id="CompletePayment-0", destination="tiktok") == 1
    assert store.replay(NOW + 100) == 2
    assert store.outbox_counts() == {
        "tiktok": {PENDING: 3, DELIVERED: 1},
        "meta": {PENDING: 3, DELIVERED: 1},
    }
    assert store.claim("tiktok", 10, NOW + 99, LEASE) == []  # due at the replay time
    claimed = store.claim("tiktok", 10, NOW + 100, LEASE)
    assert len(claimed) == 3
    assert {c.attempts for c in claimed} == {1}
    assert store.replay(NOW + 200) == 0


# -- reading --------------------------------------------------------------------------------------
def test_outbox_counts_by_destination_and_status(store: Store) -> None:
    store.insert_conversions([conversion(n) for n in range(5)], NOW)
    ids = claim_ids(store, "tiktok", limit=4)
    store.mark_delivered(ids[:1], NOW, None)
    store.mark_dead([Dead(ids[1], b"{}")], "x", None, None)
    store.mark_expired(ids[2:3], "old")
    assert store.outbox_counts() == {
        "tiktok": {DELIVERED: 1, DEAD: 1, EXPIRED: 1, IN_FLIGHT: 1, PENDING: 1},
        "meta": {PENDING: 5},
    }


def test_deliveries_of_one_event_id(store: Store) -> None:
    store.insert_conversions(
        [
            conversion(1, event="Purchase", event_id="order-1", destinations=("meta",)),
            conversion(1, event="CompletePayment", event_id="order-1"),
            conversion(2, event="CompletePayment", event_id="order-2"),
        ],
        NOW,
    )
    claimed = store.claim("tiktok", 10, NOW, LEASE)  # order-1 and order-2
    [tiktok_id] = [c.outbox_id for c in claimed if c.payload == b'{"n": "1"}']
    store.mark_delivered([tiktok_id], NOW + 2, "ref-1")
    assert store.deliveries("order-1") == [
        DeliveryRow("CompletePayment", "order-1", "meta", PENDING, 0, None, None, None, "meta"),
        DeliveryRow(
            "CompletePayment", "order-1", "tiktok", DELIVERED, 1, None, "ref-1", NOW + 2, "tiktok"
        ),
        DeliveryRow("Purchase", "order-1", "meta", PENDING, 0, None, None, None, "meta"),
    ]
    assert store.deliveries("unknown") == []


def test_wake_hint_moves_when_another_store_commits(store: Store, database: Database) -> None:
    other = database.open()
    before = store.wake_hint()
    assert isinstance(before, int)
    other.insert_conversions([conversion(1)], NOW)
    after = store.wake_hint()
    assert after != before
    other.replay(NOW)  # nothing to replay: a no-op transaction
    other.mark_retry(claim_ids(other, "tiktok"), NOW + 1, "e", None)
    assert store.wake_hint() != after


# -- keys, connections, audit ---------------------------------------------------------------------
def test_api_keys(store: Store) -> None:
    first = store.add_key("shop", "ingest", "bc_abc", "hash-1", NOW)
    second = store.add_key("browser", "collect", "bc_def", "hash-2", NOW + 1)
    third = store.add_key("shop", "admin", "bc_ghi", "hash-3", NOW + 2)
    assert first < second < third
    assert store.find_key("hash-2") == KeyRecord(
        second, "browser", "collect", "bc_def", NOW + 1, None
    )
    assert store.find_key("nope") is None
    assert [k.id for k in store.list_keys()] == [first, second, third]
    assert store.revoke_key("shop", NOW + 5) == 2  # by name: every key of that name
    assert store.revoke_key("shop", NOW + 6) == 0  # already revoked
    assert store.revoke_key("bc_def", NOW + 7) == 1  # by prefix
    assert store.revoke_key("nobody", NOW + 8) == 0
    revoked = store.find_key("hash-1")
    assert revoked is not None
    assert revoked.revoked_at == NOW + 5
    assert [k.revoked_at for k in store.list_keys()] == [NOW + 5, NOW + 7, NOW + 5]


def test_a_site_key_may_allow_null_origin(store: Store) -> None:
    """allow_null_origin is stored as given and read back by find_key and list_keys."""
    plain = store.add_key("site", "collect", "bc_pub_a", "hash-a", NOW)
    sandboxed = store.add_key(
        "shopify-pixel", "collect", "bc_pub_b", "hash-b", NOW + 1, allow_null_origin=True
    )
    assert store.find_key("hash-b") == KeyRecord(
        sandboxed, "shopify-pixel", "collect", "bc_pub_b", NOW + 1, None, True
    )
    found = store.find_key("hash-a")
    assert found is not None
    assert found.allow_null_origin is False
    assert [(k.id, k.allow_null_origin) for k in store.list_keys()] == [
        (plain, False),
        (sandboxed, True),
    ]


def test_a_key_hash_is_unique(store: Store) -> None:
    store.add_key("shop", "ingest", "bc_abc", "same-hash", NOW)
    with pytest.raises(WRITE_ERRORS):
        store.add_key("other", "ingest", "bc_xyz", "same-hash", NOW)
    assert len(store.list_keys()) == 1


def credentials_of(connection: Connection | None) -> tuple[Any, ...] | None:
    """What set_connection writes (not the id, routes and suspension the store adds)."""
    if connection is None:
        return None
    c = connection
    return (c.destination, c.pixel, c.token_encrypted, c.token_last4, c.test_event_code)


def test_connections(store: Store) -> None:
    ciphertext = bytes(range(256)) + b"\x00gAAAAA"  # stored as given, byte for byte
    # the default property's TikTok and Meta exist from the start: sandbox, no credentials
    sandbox = store.get_connection("tiktok")
    assert credentials_of(sandbox) == ("tiktok", "", None, None, None)
    assert sandbox is not None
    assert (sandbox.property_id, sandbox.label) == (1, "tiktok")
    tiktok = Connection("tiktok", "PIXEL1", ciphertext, "wxyz", None, NOW)
    assert store.set_connection(tiktok) == sandbox.id
    assert credentials_of(store.get_connection("tiktok")) == credentials_of(tiktok)
    replaced = Connection("tiktok", "PIXEL2", b"other", "abcd", "TEST42", NOW + 1)
    store.set_connection(replaced)
    stored = store.get_connection("tiktok")
    assert stored is not None
    assert stored.id == sandbox.id
    assert stored.updated_at == NOW + 1
    assert credentials_of(stored) == credentials_of(replaced)
    store.set_connection(Connection("meta", "123", None, None, None, NOW + 2))
    assert credentials_of(store.get_connection("meta")) == ("meta", "123", None, None, None)
    assert sorted(store.all_token_ciphertexts()) == [("tiktok", b"other")]
    store.set_connection(Connection("meta", "123", ciphertext, "1234", None, NOW + 3))
    assert sorted(store.all_token_ciphertexts()) == [("meta", ciphertext), ("tiktok", b"other")]
    # forgetting a connection keeps its row (outbox rows name it) without its credentials
    assert store.delete_connection("tiktok") is True
    assert credentials_of(store.get_connection("tiktok")) == ("tiktok", "", None, None, None)
    assert store.delete_connection("nothing") is False
    assert store.all_token_ciphertexts() == [("meta", ciphertext)]
    assert store.get_connection("tiktok", property_id=99) is None


def test_connections_keep_a_destinations_other_settings_and_secrets(store: Store) -> None:
    """Destinations as plug-ins: the values a destination declares besides pixel and token
    are stored, plain ones as they are and secret ones as the one ciphertext given; both
    are replaced with the connection, and rotation sees the secrets' ciphertext."""
    secrets = b"gAAAAA-secrets\x00\xff"
    google = Connection(
        "google_ads",
        "1234567890",
        b"developer",
        "oper",
        None,
        NOW,
        {"client_id": "cid.apps", "conversion_actions": "Purchase=customers/1/conversionActions/2"},
        secrets,
    )
    store.set_connection(google)
    again = store.get_connection("google_ads")
    assert again is not None
    assert credentials_of(again) == credentials_of(google)
    assert (again.settings, again.secrets_encrypted, again.label) == (
        google.settings,
        secrets,
        "google_ads",
    )
    assert ("secrets google_ads", secrets) in store.all_ciphertexts()
    assert store.reencrypt_secrets(lambda c: c + b"!") == 2  # token and secrets
    again = store.get_connection("google_ads")
    assert again is not None
    assert (again.token_encrypted, again.secrets_encrypted) == (b"developer!", secrets + b"!")
    store.set_connection(Connection("google_ads", "1234567890", None, None, None, NOW + 1))
    bare = store.get_connection("google_ads")
    assert bare is not None
    assert (bare.settings, bare.secrets_encrypted) == ({}, None)


def test_audit_log(store: Store, database: Database) -> None:
    store.audit(NOW, "cli", "key.create", "shop (ingest)")
    store.audit(NOW + 1, "api", "token.set", "tiktok")
    assert database.rows("SELECT at, actor, action, detail FROM audit_log ORDER BY id") == [
        (NOW, "cli", "key.create", "shop (ingest)"),
        (NOW + 1, "api", "token.set", "tiktok"),
    ]


def test_migrate_on_an_open_store_keeps_the_data(store: Store) -> None:
    store.insert_conversions([conversion(1)], NOW)
    store.migrate()
    assert store.conversion_count() == 1
    assert store.insert_conversions([conversion(1)], NOW) == [False]


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_claimers_never_share_a_row_and_miss_none(database: Database) -> None:
    """Two workers (two stores, as two processes would have) drain 2000 due rows together."""
    seed = database.open()
    for offset in range(0, 2000, 500):
        seed.insert_conversions(
            [conversion(n, destinations=("tiktok",)) for n in range(offset, offset + 500)], NOW
        )
    workers = [database.open(), database.open()]
    start = threading.Barrier(2)

    def drain(worker: Store) -> list[int]:
        got: list[int] = []
        start.wait()
        while batch := worker.claim("tiktok", 25, NOW, LEASE):
            got += ids_of(batch)
        return got

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(drain, workers)
    assert not set(first) & set(second)
    assert len(first) + len(second) == 2000
    assert sorted(first + second) == outbox_ids(database, "tiktok")
    assert seed.outbox_counts() == {"tiktok": {IN_FLIGHT: 2000}}
    if database.kind == "postgres":  # SQLite serializes writers; PostgreSQL runs both at once
        assert first
        assert second


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_claim_skips_rows_another_transaction_holds(database: Database, store: Store) -> None:
    """SKIP LOCKED: a claim neither waits for nor takes rows locked by another worker."""
    assert isinstance(database, PostgresDatabase)
    store.insert_conversions([conversion(n, destinations=("tiktok",)) for n in range(20)], NOW)
    ids = outbox_ids(database, "tiktok")
    holder = psycopg.connect(database.conninfo)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        holder.execute("SELECT id FROM outbox WHERE id = ANY(%s) FOR UPDATE", (ids[:10],))
        claim = pool.submit(claim_ids, store, "tiktok", 10)
        try:
            claimed = claim.result(timeout=20)
        finally:
            holder.rollback()  # frees a claim that waited for the locks (the bug under test)
        assert claimed == ids[10:]
    finally:
        pool.shutdown()
        holder.close()
    assert claim_ids(store, "tiktok", limit=10) == ids[:10]
