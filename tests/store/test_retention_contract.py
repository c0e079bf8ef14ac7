"""The retention part of the Store contract, on SQLite and PostgreSQL alike.

Why a contract: the purge deletes data for good, in two dialects. Both must roll a session up
exactly once before deleting it, delete its email hashes and browser events with it, and
scrub a conversion's IP and user agent only once nothing is left to deliver.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import orjson

from backchannel.store.base import (
    BrowserEvent,
    Dead,
    PurgeCounts,
    RetentionBacklog,
    SessionRollup,
    SessionUpdate,
    Store,
    load_bucket,
)

from .conftest import Database
from .helpers import LEASE, NOW, conversion

DAY = 86400.0
OLD = NOW - 40 * DAY  # past a 30-day window
CUTOFF = NOW - 30 * DAY
EMAIL = "e" * 64
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Mobile/15E148 Safari/604.1"
)
DAY_OF_OLD = "2026-12-06"  # UTC date of OLD


def visit(session_id: str, at: float, **fields: Any) -> SessionUpdate:
    return SessionUpdate(session_id=session_id, at=at, **fields)


def safari_visit(session_id: str, at: float = OLD, **fields: Any) -> SessionUpdate:
    values: dict[str, Any] = {
        "ip": "81.2.69.160",
        "user_agent": IPHONE,
        "browser": "Safari",
        "browser_version": "17",
        "os": "iOS",
        "os_version": "17.4",
        "load_time_ms": 3200,
        "pixel_status": "blocked",
        "ttclid": "E.C.P.1",
    }
    values.update(fields)
    return visit(session_id, at, **values)


def database_free_of_sessions(store: Store, *session_ids: str) -> bool:
    return all(store.get_session(sid) is None for sid in session_ids)


def payload(n: int, *, ip: str | None = "81.2.69.160", ua: str | None = "UA/1") -> bytes:
    """A stored conversion as ingest writes it (only the parts retention looks at)."""
    user = {
        "email": [EMAIL],
        "ip": ip,
        "user_agent": ua,
        "ttclid": "E.C.P.1",
        "gclid": "Cj0KCQ-1",
        "ga_client_id": "1234567890.1700000000",
    }
    document = {"event": "CompletePayment", "event_id": f"CompletePayment-{n}", "user": user}
    return orjson.dumps(document)


def stored(database: Database) -> dict[str, tuple[dict[str, Any], Any]]:
    """event_id -> (payload, scrubbed_at), read behind the store's back."""
    rows = database.rows("SELECT event_id, payload, scrubbed_at FROM conversions")
    return {event_id: (orjson.loads(bytes(body)), at) for event_id, body, at in rows}


class TestPurgeSessions:
    def test_old_sessions_are_rolled_up_then_deleted_with_their_emails_and_events(
        self, store: Store
    ) -> None:
        """Sessions last seen before the cutoff go, with their email hashes and events."""
        store.record_collect(
            [safari_visit("s-old-1"), safari_visit("s-old-2"), safari_visit("s-new", NOW)],
            [
                BrowserEvent("s-old-1", "ViewContent", "v-1", OLD),
                BrowserEvent("s-old-1", "CompletePayment", "CompletePayment-1", OLD),
                BrowserEvent("s-new", "ViewContent", "v-2", NOW),
            ],
        )
        store.attach_emails([("s-old-1", EMAIL), ("s-new", EMAIL)], NOW)
        counts = store.purge_sessions(CUTOFF, 100)
        assert counts == PurgeCounts(sessions=2, session_emails=1, browser_events=2)
        assert store.get_session("s-old-1") is None
        assert store.get_session("s-old-2") is None
        assert store.get_session("s-new") is not None
        assert store.session_emails("s-old-1") == []
        assert store.session_emails("s-new") == [EMAIL]
        assert store.browser_events(session_id="s-old-1") == []
        assert [e.event_id for e in store.browser_events(session_id="s-new")] == ["v-2"]
        assert store.session_rollups() == [
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "17", "2.5-5s", "blocked", True, 2)
        ]

    def test_a_purged_session_takes_its_shopify_checkouts_with_it(self, store: Store) -> None:
        """The checkout tokens a purged session reported go with it; a kept one's stay."""
        store.record_collect(
            [
                safari_visit("s-old", checkout_token="tok-old"),
                safari_visit("s-new", NOW, checkout_token="tok-new"),
            ],
            [],
        )
        assert store.purge_sessions(CUTOFF, 100).sessions == 1
        assert store.checkout_session("tok-old") is None
        assert store.checkout_session("tok-new") == "s-new"

    def test_rollup_keys_cover_every_cause_and_unknowns(self, store: Store) -> None:
        """Browser, OS major, load bucket, Pixel state and ttclid each split the counts."""
        store.record_collect(
            [
                safari_visit("a"),
                safari_visit("b", load_time_ms=400, pixel_status="loaded"),
                safari_visit("c", ttclid=None, os_version="16.7"),
                visit("d", OLD),  # nothing known but the time
            ],
            [],
        )
        store.purge_sessions(CUTOFF, 100)
        assert store.session_rollups() == [
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "16", "2.5-5s", "blocked", False, 1),
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "17", "2.5-5s", "blocked", True, 1),
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "17", "<1s", "loaded", True, 1),
            SessionRollup(
                DAY_OF_OLD, "unknown", "unknown", "unknown", "unknown", "absent", False, 1
            ),
        ]

    def test_a_google_ads_click_splits_the_counts_as_a_ttclid_does(self, store: Store) -> None:
        """gclid, gbraid or wbraid: had_google_click; a GA client id alone is no click."""
        store.record_collect(
            [
                safari_visit("g", gclid="Cj0KCQ-1"),
                safari_visit("b", wbraid="WB-1"),
                safari_visit("n", ga_client_id="1234567890.1700000000"),
            ],
            [],
        )
        assert store.purge_sessions(CUTOFF, 100).sessions == 3
        assert store.session_rollups() == [
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "17", "2.5-5s", "blocked", True, 1),
            SessionRollup(DAY_OF_OLD, "Safari", "iOS", "17", "2.5-5s", "blocked", True, 2, True),
        ]
        assert database_free_of_sessions(store, "g", "b", "n")

    def test_later_purges_add_to_the_same_rollup(self, store: Store) -> None:
        """A second purge of the same kind of session adds to the count (upsert-add)."""
        store.record_collect([safari_visit("s-1")], [])
        store.purge_sessions(CUTOFF, 100)
        store.record_collect([safari_visit("s-2"), safari_visit("s-3")], [])
        store.purge_sessions(CUTOFF, 100)
        [rollup] = store.session_rollups()
        assert rollup.sessions == 3

    def test_a_chunk_takes_the_oldest_sessions_up_to_the_limit(self, store: Store) -> None:
        """``limit`` bounds one call; the oldest go first; an empty call returns zeros."""
        store.record_collect([visit(f"s-{i}", OLD - i * 60) for i in range(5)], [])
        assert store.purge_sessions(CUTOFF, 2).sessions == 2
        assert store.get_session("s-4") is None
        assert store.get_session("s-3") is None
        assert store.get_session("s-0") is not None
        assert store.purge_sessions(CUTOFF, 2).sessions == 2
        assert store.purge_sessions(CUTOFF, 2).sessions == 1
        assert store.purge_sessions(CUTOFF, 2) == PurgeCounts()
        assert sum(r.sessions for r in store.session_rollups()) == 5

    def test_a_session_seen_after_the_cutoff_is_kept(self, store: Store) -> None:
        """last_seen decides: a session that started long ago but is still active stays."""
        store.record_collect([safari_visit("s-long"), safari_visit("s-long", NOW - DAY)], [])
        assert store.purge_sessions(CUTOFF, 100) == PurgeCounts()
        assert store.get_session("s-long") is not None

    def test_concurrent_purges_count_each_session_once(self, database: Database) -> None:
        """Two stores purging the same database at once roll up every session exactly once."""
        first, second = database.open(), database.open()
        first.record_collect([safari_visit(f"s-{i}", OLD - i) for i in range(300)], [])

        def drain(store: Store) -> int:
            total = 0
            while (n := store.purge_sessions(CUTOFF, 7).sessions) > 0:
                total += n
            return total

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = [pool.submit(drain, s) for s in (first, second)]
            purged = sum(f.result(timeout=60) for f in done)
        assert purged == 300
        assert sum(r.sessions for r in first.session_rollups()) == 300
        assert first.retention_backlog(CUTOFF).sessions == 0


class TestScrubConversions:
    def _history(self, store: Store) -> dict[str, int]:
        """Old conversions in every delivery state, and a new one; returns outbox ids."""
        store.insert_conversions(
            [
                conversion(1, payload=payload(1), destinations=("tiktok",)),  # delivered
                conversion(2, payload=payload(2), destinations=("tiktok",)),  # dead letter
                conversion(3, payload=payload(3), destinations=()),  # opted out: no rows
                conversion(4, payload=payload(4, ip=None, ua=None), destinations=()),
            ],
            OLD,
        )
        [c1, c2] = store.claim("tiktok", 10, OLD, LEASE)
        store.mark_delivered([c1.outbox_id], OLD, "ref")
        sent = {"event": "CompletePayment", "user": {"ip": "81.2.69.160", "user_agent": "UA/1"}}
        store.mark_dead([Dead(c2.outbox_id, orjson.dumps(sent))], "refused", None, None)
        store.insert_conversions(
            [conversion(5, payload=payload(5), destinations=("tiktok",))], OLD
        )  # still pending: held
        store.insert_conversions([conversion(6, payload=payload(6))], NOW)  # inside the window
        return {"dead": c2.outbox_id}

    def test_ip_and_user_agent_go_except_where_delivery_is_pending(
        self, store: Store, database: Database
    ) -> None:
        """Delivered, dead and unsent old conversions lose ip/ua; pending and new ones keep them."""
        ids = self._history(store)
        assert store.retention_backlog(CUTOFF) == RetentionBacklog(0, 4, 1)
        assert store.scrub_conversions(CUTOFF, 100, NOW) == 4
        rows = stored(database)
        for n in (1, 2, 3, 4):
            body, scrubbed_at = rows[f"CompletePayment-{n}"]
            assert (body["user"]["ip"], body["user"]["user_agent"]) == (None, None)
            assert body["user"]["email"] == [EMAIL]
            assert body["user"]["ttclid"] == "E.C.P.1"  # click ids stay, Google's too
            assert body["user"]["gclid"] == "Cj0KCQ-1"
            assert body["user"]["ga_client_id"] == "1234567890.1700000000"
            assert scrubbed_at == NOW
        for n in (5, 6):
            body, scrubbed_at = rows[f"CompletePayment-{n}"]
            assert body["user"]["ip"] == "81.2.69.160"
            assert body["user"]["user_agent"] == "UA/1"
            assert scrubbed_at is None
        [(sent_body,)] = database.rows("SELECT sent_body FROM outbox WHERE id = ?", ids["dead"])
        assert orjson.loads(bytes(sent_body)) == {"event": "CompletePayment", "user": {}}
        assert store.retention_backlog(CUTOFF) == RetentionBacklog(0, 0, 1)

    def test_a_held_conversion_is_scrubbed_once_delivered(
        self, store: Store, database: Database
    ) -> None:
        """The next purge after delivery takes the held one; a repeat scrubs nothing."""
        self._history(store)
        store.scrub_conversions(CUTOFF, 100, NOW)
        assert store.scrub_conversions(CUTOFF, 100, NOW) == 0
        [held] = store.claim("tiktok", 1, NOW, LEASE)  # the oldest due row: conversion 5
        assert store.scrub_conversions(CUTOFF, 100, NOW) == 0  # in flight: still held
        store.mark_delivered([held.outbox_id], NOW, None)
        assert store.scrub_conversions(CUTOFF, 100, NOW + 1) == 1
        body, scrubbed_at = stored(database)["CompletePayment-5"]
        assert body["user"]["ip"] is None
        assert scrubbed_at == NOW + 1
        assert store.retention_backlog(CUTOFF) == RetentionBacklog(0, 0, 0)

    def test_a_chunk_takes_at_most_limit_conversions(self, store: Store) -> None:
        """``limit`` bounds one call."""
        store.insert_conversions(
            [conversion(n, payload=payload(n), destinations=()) for n in range(7)], OLD
        )
        assert [store.scrub_conversions(CUTOFF, 3, NOW) for _ in range(4)] == [3, 3, 1, 0]

    def test_meta_dead_letters_lose_client_ip_and_user_agent(
        self, store: Store, database: Database
    ) -> None:
        """Meta's user_data.client_ip_address / client_user_agent are removed from sent_body."""
        store.insert_conversions([conversion(1, payload=payload(1), destinations=("meta",))], OLD)
        [claimed] = store.claim("meta", 10, OLD, LEASE)
        sent = {
            "user_data": {
                "em": [EMAIL],
                "client_ip_address": "81.2.69.160",
                "client_user_agent": "UA/1",
            }
        }
        store.mark_dead([Dead(claimed.outbox_id, orjson.dumps(sent))], "refused", None, None)
        assert store.scrub_conversions(CUTOFF, 100, NOW) == 1
        [(body,)] = database.rows("SELECT sent_body FROM outbox WHERE id = ?", claimed.outbox_id)
        assert orjson.loads(bytes(body)) == {"user_data": {"em": [EMAIL]}}


class TestRollupBuckets:
    def test_load_time_buckets(self) -> None:
        """Bucket edges: under 1 s, under 2.5 s, under 5 s, slower; None is unknown."""
        assert [load_bucket(ms) for ms in (None, 0, 999, 1000, 2499, 2500, 4999, 5000)] == [
            "unknown",
            "<1s",
            "<1s",
            "1-2.5s",
            "1-2.5s",
            "2.5-5s",
            "2.5-5s",
            "5s+",
        ]


class TestPurgeDiagnostics:
    def test_old_rejections_go_and_old_login_ips_are_removed(
        self, store: Store, database: Database
    ) -> None:
        """Past the cutoff: refused-input records deleted, the client IP of audit rows replaced
        (the action stays); newer rows and other actors untouched; a dry run only counts."""
        store.record_rejection("shopify", b'{"error": "unauthorized"}', OLD, delivery_id="old")
        store.record_rejection("stripe", b'{"error": "unauthorized"}', NOW, delivery_id="new")
        store.audit(OLD, "ip 203.0.113.9", "admin.login_failed", "wrong password")
        store.audit(OLD, "cli", "token.set", "tiktok pixel P")
        store.audit(NOW, "ip 203.0.113.10", "admin.login", "session started")
        assert store.purge_diagnostics(CUTOFF, dry_run=True) == (1, 1)
        assert len(database.rows("SELECT id FROM ingest_rejections")) == 2
        assert store.purge_diagnostics(CUTOFF) == (1, 1)
        assert database.rows("SELECT delivery_id FROM ingest_rejections") == [("new",)]
        assert database.rows("SELECT actor, action FROM audit_log ORDER BY id") == [
            ("ip (purged)", "admin.login_failed"),
            ("cli", "token.set"),
            ("ip 203.0.113.10", "admin.login"),
        ]
        assert store.purge_diagnostics(CUTOFF) == (0, 0)  # a second purge finds nothing
