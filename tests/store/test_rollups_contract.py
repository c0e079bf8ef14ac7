"""Daily rollups in the store (migration 0019): the same contract on SQLite and PostgreSQL.

Every write that can change a report's figure of a UTC day leaves a mark for (property, day)
in its own transaction; taking the marks bumps each day's version; a kept partial is valid
only at the version it was computed at (backchannel.rollups). These tests check each kind of
write marks exactly the days whose figures it can change, and that the cache recomputes a
day when, and only when, it changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date

import pytest

from backchannel import rollups
from backchannel.store.base import (
    DEFAULT_PROPERTY,
    BrowserEvent,
    Dead,
    LedgerEntry,
    RollupRow,
    SessionUpdate,
    Store,
)

from .conftest import Database
from .helpers import LEASE, NOW, conversion

DAY = 86_400
TODAY = int(NOW // DAY)  # the day of NOW (received_at of every insert)
EVENT_DAY = TODAY - 3  # the event (and order) time of the conversions below
EVENT_TIME = EVENT_DAY * DAY + 4_000


def versions(db: Database) -> dict[tuple[int, int], int]:
    return {(int(p), int(d)): int(v) for p, d, v in db.rows("SELECT * FROM rollup_days")}


def marked(store: Store, db: Database, action: Callable[[], object]) -> set[tuple[int, int]]:
    """The (property, day) pairs whose version ``action`` bumped."""
    store.take_rollup_marks()
    before = versions(db)
    action()
    store.take_rollup_marks()
    after = versions(db)
    return {key for key, v in after.items() if v != before.get(key, 0)}


def ledger(order: str, day: int, **fields: object) -> LedgerEntry:
    values: dict[str, object] = {
        "source": "shopify",
        "order_id": order,
        "order_time": day * DAY + 600,
        "value": 10.0,
        "currency": "USD",
        "event": "CompletePayment",
        "event_id": f"CompletePayment-{order}",
        "session_id": None,
        "attributed_tiktok": True,
        "evidence": b"{}",
        "property_id": DEFAULT_PROPERTY,
    }
    values.update(fields)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def p(day: int) -> tuple[int, int]:
    return (DEFAULT_PROPERTY, day)


class TestMarks:
    def test_a_new_conversion_marks_its_received_and_event_days(
        self, store: Store, database: Database
    ) -> None:
        got = marked(
            store,
            database,
            lambda: store.insert_conversions([conversion(1, event_time=EVENT_TIME)], NOW),
        )
        assert got == {p(TODAY), p(EVENT_DAY)}
        # a duplicate without a ledger row changes nothing a report counts
        again = marked(
            store,
            database,
            lambda: store.insert_conversions([conversion(1, event_time=EVENT_TIME)], NOW),
        )
        assert again == set()

    def test_a_delivery_marks_the_conversion_days_and_its_own_day_and_nothing_else_does(
        self, store: Store, database: Database
    ) -> None:
        """Every report counts an outbox row as delivered or not: a delivery changes a kept
        figure, a claim, a retry, a dead letter, a replay (all "not delivered") do not."""
        store.insert_conversions([conversion(1, event_time=EVENT_TIME)], NOW)
        claimed: list[int] = []
        assert (
            marked(
                store,
                database,
                lambda: claimed.extend(c.outbox_id for c in store.claim("tiktok", 10, NOW, LEASE)),
            )
            == set()
        )
        later = NOW + 2 * DAY  # delivered two days after it was received
        assert marked(store, database, lambda: store.mark_delivered(claimed, later, "ref")) == {
            p(TODAY),
            p(EVENT_DAY),
            p(TODAY + 2),
        }
        [meta] = store.claim("meta", 10, NOW, LEASE)
        assert (
            marked(store, database, lambda: store.mark_retry([meta.outbox_id], NOW + 5, "x", None))
            == set()
        )
        [meta] = store.claim("meta", 10, NOW + 10, LEASE)
        assert (
            marked(
                store,
                database,
                lambda: store.mark_dead([Dead(meta.outbox_id, b"{}")], "bad", None, None),
            )
            == set()
        )
        assert marked(store, database, lambda: store.replay(NOW + 20)) == set()
        [meta] = store.claim("meta", 10, NOW + 30, LEASE)
        assert marked(  # delivered after a replay: counted then, on its day
            store, database, lambda: store.mark_delivered([meta.outbox_id], NOW + 40, "ref")
        ) == {p(TODAY), p(EVENT_DAY)}
        # a write that changes no row marks nothing
        assert marked(store, database, lambda: store.mark_delivered([999_999], later, "x")) == set()

    def test_ledger_rows_mark_their_order_days_and_a_completed_rows_old_day(
        self, store: Store, database: Database
    ) -> None:
        assert marked(
            store,
            database,
            lambda: store.record_orders([ledger("A", TODAY - 5, event_id=None, event=None)], NOW),
        ) == {p(TODAY - 5)}
        # a conversion's ledger row completes the ledger-only row: its old day changes too
        completing = conversion(
            "A", event_time=EVENT_TIME, ledger=ledger("A", EVENT_DAY), order_id="A"
        )
        assert marked(store, database, lambda: store.insert_conversions([completing], NOW)) == {
            p(TODAY),
            p(EVENT_DAY),
            p(TODAY - 5),
        }

    def test_a_repeated_order_from_another_source_marks_the_first_orders_day(
        self, store: Store, database: Database
    ) -> None:
        first = conversion("B", event_time=EVENT_TIME, ledger=ledger("B", EVENT_DAY))
        store.insert_conversions([first], NOW)
        # the same order again (same event_id) from the API, dated the next day: the
        # deduplicated count of EVENT_DAY may change (the event id now spans two days)
        repeat = conversion(
            "B",
            event_time=EVENT_TIME + DAY,
            ledger=ledger("B", EVENT_DAY + 1, source="api"),
        )
        assert marked(store, database, lambda: store.insert_conversions([repeat], NOW)) == {
            p(EVENT_DAY),
            p(EVENT_DAY + 1),
        }

    def test_a_delivery_marks_every_day_its_event_has_an_order_on(
        self, store: Store, database: Database
    ) -> None:
        first = conversion("E", event_time=EVENT_TIME, ledger=ledger("E", EVENT_DAY))
        store.insert_conversions([first], NOW)
        # the same order from the API dated two days later: a ledger row on another day
        repeat = conversion(
            "E", event_time=EVENT_TIME + 2 * DAY, ledger=ledger("E", EVENT_DAY + 2, source="api")
        )
        store.insert_conversions([repeat], NOW)
        [claimed] = store.claim("tiktok", 10, NOW, LEASE)
        # the stored conversion's days, the delivery's, and the other order's day: its
        # "server delivered" flag is the event's
        assert marked(
            store, database, lambda: store.mark_delivered([claimed.outbox_id], NOW, "ref")
        ) == {p(TODAY), p(EVENT_DAY), p(EVENT_DAY + 2)}

    def test_ledger_rows_with_an_event_id_mark_the_other_orders_of_it(
        self, store: Store, database: Database
    ) -> None:
        store.record_orders([ledger("F", TODAY - 6)], NOW)
        assert marked(
            store,
            database,
            lambda: store.record_orders([ledger("F", TODAY - 8, source="csv")], NOW),
        ) == {p(TODAY - 6), p(TODAY - 8)}

    def test_browser_writes_mark_the_days_of_the_orders_they_touch(
        self, store: Store, database: Database
    ) -> None:
        order = conversion(
            "C",
            event_time=EVENT_TIME,
            session_id="s-c",
            ledger=ledger("C", EVENT_DAY, session_id="s-c"),
        )
        store.insert_conversions([order], NOW)
        # a landing session's facts (the gap report's breakdowns) change
        update = SessionUpdate("s-c", NOW + 60, browser="Safari", pixel_status="blocked")
        assert marked(store, database, lambda: store.record_collect([update], [])) == {
            p(TODAY),
            p(EVENT_DAY),
        }
        # a session no order names: nothing a report counts changes
        other = SessionUpdate("s-none", NOW + 60, browser="Safari")
        assert marked(store, database, lambda: store.record_collect([other], [])) == set()
        # a Pixel mirror row by event id, from another session (bc.js on another tab)
        mirror = BrowserEvent("s-none", "CompletePayment", "CompletePayment-C", NOW + 61)
        assert marked(store, database, lambda: store.record_collect([], [mirror])) == {
            p(TODAY),
            p(EVENT_DAY),
        }
        # Google's tag mirrors the order id instead
        gtag = BrowserEvent("s-none", "purchase", "C", NOW + 62, platform="google")
        assert marked(store, database, lambda: store.record_collect([], [gtag])) == {
            p(TODAY),
            p(EVENT_DAY),
        }

    def test_a_new_conversion_marks_the_orders_whose_mirror_rows_carry_its_id(
        self, store: Store, database: Database
    ) -> None:
        # order o1 of EVENT_DAY in session S; the visit's Pixel also fired o2's id, before o2
        # was stored: on the dedup page that call is o1's "mismatch" until o2 exists
        first = conversion("o1", event_time=EVENT_TIME, session_id="S")
        store.insert_conversions([first], NOW)
        mirror = BrowserEvent("S", "CompletePayment", "CompletePayment-o2", NOW + 5)
        store.record_collect([], [mirror])
        later = conversion("o2", event_time=EVENT_TIME + 2 * DAY, session_id="T")
        assert marked(store, database, lambda: store.insert_conversions([later], NOW)) == {
            p(TODAY),
            p(EVENT_DAY + 2),
            p(EVENT_DAY),  # o1's day, through its session's mirror row
        }

    def test_retention_marks_what_it_purges_and_scrubs(
        self, store: Store, database: Database
    ) -> None:
        order = conversion(
            "D",
            event_time=EVENT_TIME,
            session_id="s-d",
            ledger=ledger("D", EVENT_DAY, session_id="s-d"),
        )
        store.insert_conversions([order], NOW)
        store.record_collect([SessionUpdate("s-d", NOW - 10, landing=True)], [])
        for c in store.claim("tiktok", 10, NOW, LEASE) + store.claim("meta", 10, NOW, LEASE):
            store.mark_delivered([c.outbox_id], NOW + 1, "ref")
        assert marked(store, database, lambda: store.purge_sessions(NOW + 100, 10)) == {
            p(TODAY),
            p(EVENT_DAY),
        }
        assert marked(
            store, database, lambda: store.scrub_conversions(NOW + 100, 10, NOW + 100)
        ) == {
            p(TODAY),
            p(EVENT_DAY),
        }


class TestCache:
    def test_put_never_replaces_a_newer_partial(self, store: Store, database: Database) -> None:
        store.put_rollups("t/1", [RollupRow(1, TODAY, 3, NOW, b'{"v": 3}')])
        store.put_rollups("t/1", [RollupRow(1, TODAY, 2, NOW + 1, b'{"v": 2}')])
        assert database.rows("SELECT version, data FROM rollups") == [(3, b'{"v": 3}')]
        store.put_rollups("t/1", [RollupRow(1, TODAY, 4, NOW + 2, b'{"v": 4}')])
        assert [tuple(r) for r in database.rows("SELECT version FROM rollups")] == [(4,)]

    def test_a_partial_keeps_what_computing_it_took(self, store: Store, database: Database) -> None:
        store.put_rollups("t/1", [RollupRow(1, TODAY, 1, NOW, b"{}", 12.5)])
        assert database.rows("SELECT seconds FROM rollups") == [(12.5,)]
        store.put_rollups("t/1", [RollupRow(1, TODAY, 2, NOW + 1, b"{}", 0.25)])
        assert database.rows("SELECT version, seconds FROM rollups") == [(2, 0.25)]

    def test_a_costly_partial_is_refreshed_and_accepted_stale_in_proportion(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A partial that took ``s`` seconds is recomputed by the refresh at most every
        COST_SHARE * s, and a page (max_stale) takes it up to that much older than its
        max_stale instead of computing it on the request."""
        calls: list[int] = []

        def received(s: Store, property_id: int, low: int, high: int) -> dict[str, int]:
            calls.append(low // DAY)
            return {"n": 1}

        monkeypatch.setattr(rollups, "_REGISTRY", {"test.cost/1": received})
        today = date.fromordinal(date(1970, 1, 1).toordinal() + TODAY)
        store.insert_conversions([conversion(1)], NOW)
        store.take_rollup_marks()
        ((version,),) = store.read("SELECT version FROM rollup_days WHERE day = ?", (TODAY,))
        took = 30.0  # a huge day: the refresh waits COST_SHARE * 30 s between recomputes
        since = rollups.COST_SHARE * took
        store.put_rollups(
            "test.cost/1", [RollupRow(1, TODAY, version, NOW - since + 5, b'{"n": 7}', took)]
        )
        store.insert_conversions([conversion(2)], NOW)  # the day changes
        assert rollups.refresh(store, now=NOW) == 0  # computed only since - 5 s ago
        assert calls == []

        def page() -> list[rollups.DayPartial]:
            """Today's partial as a dashboard page asks for it (120 s of staleness)."""
            return rollups.partials(
                store,
                "test.cost/1",
                received,
                today,
                today,
                DEFAULT_PROPERTY,
                max_stale=120.0,
                now=NOW,
            )

        # a page allowing 120 s takes the kept (stale) partial: 120 + COST_SHARE * 30 s
        got = page()
        assert [(d.data["n"], d.stale) for d in got] == [(7, True)]
        assert calls == []
        # past the allowance the refresh recomputes it
        assert rollups.refresh(store, now=NOW + 10) == 1
        assert calls == [TODAY]
        # a cheap partial (0 s) gets no allowance: a page past max_stale computes it
        store.put_rollups("test.cost/1", [RollupRow(1, TODAY, version + 99, NOW - 200, b"{}", 0.0)])
        calls.clear()
        store.insert_conversions([conversion(3)], NOW)
        page()
        assert calls == [TODAY]

    def test_a_day_is_recomputed_when_and_only_when_it_changed(self, store: Store) -> None:
        calls: list[tuple[int, int]] = []

        def received(s: Store, property_id: int, low: int, high: int) -> dict[str, int]:
            calls.append((property_id, low))
            ((n,),) = s.read(
                "SELECT COUNT(*) FROM conversions WHERE property_id = ?"
                " AND received_at >= ? AND received_at < ?",
                (property_id, low, high),
            )
            return {"n": int(n)}

        first = date.fromordinal(date(1970, 1, 1).toordinal() + TODAY - 2)
        last = date.fromordinal(date(1970, 1, 1).toordinal() + TODAY)

        def counts(max_stale: float = 0.0) -> list[int]:
            got = rollups.partials(
                store, "test.received/1", received, first, last, None, max_stale=max_stale
            )
            return [d.data["n"] for d in got]

        store.insert_conversions([conversion(1)], NOW - DAY)  # yesterday
        assert counts() == [0, 1, 0]
        assert len(calls) == 3  # one property, three days
        calls.clear()
        assert counts() == [0, 1, 0]
        assert calls == []  # nothing changed: every day from the cache
        store.insert_conversions([conversion(2)], NOW)  # today changes, the others do not
        assert counts() == [0, 1, 1]
        assert [low // DAY for _, low in calls] == [TODAY]
        calls.clear()
        store.insert_conversions([conversion(3)], NOW)
        # the dashboard may take a partial computed moments ago, flagged stale
        stale = rollups.partials(
            store, "test.received/1", received, first, last, None, max_stale=3600.0
        )
        assert [d.data["n"] for d in stale] == [0, 1, 1]
        assert [d.stale for d in stale] == [False, False, True]
        assert calls == []
        # the background refresh recomputes it; the exact read then needs no computing
        assert rollups.refresh(store, now=NOW) == 1
        calls.clear()
        assert counts() == [0, 1, 2]
        assert calls == []

    def test_each_property_has_its_own_days(self, store: Store) -> None:
        other = store.create_property("eu", NOW, destinations=("tiktok",))
        assert other is not None

        def received(s: Store, property_id: int, low: int, high: int) -> dict[str, int]:
            ((n,),) = s.read(
                "SELECT COUNT(*) FROM conversions WHERE property_id = ?"
                " AND received_at >= ? AND received_at < ?",
                (property_id, low, high),
            )
            return {"n": int(n)}

        today = date.fromordinal(date(1970, 1, 1).toordinal() + TODAY)
        store.insert_conversions([conversion(1)], NOW)
        before = rollups.partials(store, "test.p/1", received, today, today, None)
        assert {(d.property_id, d.data["n"]) for d in before} == {(DEFAULT_PROPERTY, 1), (other, 0)}
        store.insert_conversions([conversion(2, property_id=other, destinations=("tiktok",))], NOW)
        after = rollups.partials(store, "test.p/1", received, today, today, other)
        assert [(d.property_id, d.data["n"]) for d in after] == [(other, 1)]
        both = rollups.partials(store, "test.p/1", received, today, today, None)
        assert {(d.property_id, d.data["n"]) for d in both} == {(DEFAULT_PROPERTY, 1), (other, 1)}


@pytest.mark.parametrize("n", [1])
def test_the_marks_table_is_emptied_by_taking(store: Store, database: Database, n: int) -> None:
    store.insert_conversions([conversion(n)], NOW)
    assert database.rows("SELECT COUNT(*) FROM rollup_marks")[0][0] > 0
    assert store.take_rollup_marks() > 0
    assert database.rows("SELECT COUNT(*) FROM rollup_marks")[0][0] == 0


class TestWarmUp:
    """serve's start-up warm-up computes the partials not kept yet (after an upgrade, or an
    import), so the first page view of a month at a million orders reads kept partials."""

    @staticmethod
    def counting(calls: list[tuple[int, int]]) -> rollups.Compute:
        def received(s: Store, property_id: int, low: int, high: int) -> dict[str, int]:
            calls.append((property_id, low // DAY))
            ((n,),) = s.read(
                "SELECT COUNT(*) FROM conversions WHERE property_id = ?"
                " AND received_at >= ? AND received_at < ?",
                (property_id, low, high),
            )
            return {"n": int(n)}

        return received

    @staticmethod
    def day(number: int) -> date:
        return date.fromordinal(date(1970, 1, 1).toordinal() + number)

    def test_it_computes_every_day_from_the_first_row_then_nothing(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[int, int]] = []
        compute = self.counting(calls)
        monkeypatch.setattr(rollups, "_REGISTRY", {"test.warm/1": compute})
        assert rollups.warm_steps(store, now=NOW) == []  # an empty store: nothing to warm
        other = store.create_property("eu", NOW, destinations=("tiktok",))
        assert other is not None
        old = NOW - 3 * DAY
        store.insert_conversions([conversion(1, event_time=int(old))], old)
        store.insert_conversions([conversion(2)], NOW)
        steps = rollups.warm_steps(store, now=NOW)
        # newest day first, every property, from the first day with a row to today
        assert steps == [
            ("test.warm/1", p, self.day(TODAY - back))
            for back in range(4)
            for p in sorted((DEFAULT_PROPERTY, other))
        ]

        async def call(fn: Callable[..., object], *args: object) -> object:
            return fn(*args)

        assert asyncio.run(rollups.warm(store, call, now=NOW)) == 8
        assert sorted(calls) == sorted(
            (p, TODAY - back) for back in range(4) for p in (DEFAULT_PROPERTY, other)
        )
        assert rollups.warm_steps(store, now=NOW) == []
        # the page's read of those days computes nothing, and answers the rows' counts
        calls.clear()
        got = rollups.partials(
            store, "test.warm/1", compute, self.day(TODAY - 3), self.day(TODAY), DEFAULT_PROPERTY
        )
        assert calls == []
        assert [d.data["n"] for d in got] == [1, 0, 0, 1]

    def test_a_kept_day_that_changed_is_left_to_the_refresh(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[int, int]] = []
        monkeypatch.setattr(rollups, "_REGISTRY", {"test.warm/1": self.counting(calls)})
        store.insert_conversions([conversion(1)], NOW)

        async def call(fn: Callable[..., object], *args: object) -> object:
            return fn(*args)

        assert asyncio.run(rollups.warm(store, call, now=NOW)) == 1
        store.insert_conversions([conversion(2)], NOW)  # today changes after it was kept
        assert rollups.warm_steps(store, now=NOW) == []
        assert rollups.refresh(store, now=NOW) == 1

    def test_it_looks_back_at_most_warm_days(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(rollups, "_REGISTRY", {"test.warm/1": self.counting([])})
        long_ago = NOW - 90 * DAY
        store.insert_conversions([conversion(1, event_time=int(long_ago))], long_ago)
        days = [d for _, _, d in rollups.warm_steps(store, now=NOW)]
        assert days == [self.day(TODAY - back) for back in range(rollups.WARM_DAYS)]

    def test_a_report_warms_only_the_properties_it_names(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        other = store.create_property("eu", NOW, destinations=("tiktok",))
        assert other is not None
        monkeypatch.setattr(rollups, "_REGISTRY", {})
        monkeypatch.setattr(rollups, "_WARM_FOR", {})
        rollups.register("test.all/1", self.counting([]))
        rollups.register("test.eu/1", self.counting([]), warm_for=lambda s: {other})
        store.insert_conversions([conversion(1)], NOW)
        steps = {(name, p) for name, p, _ in rollups.warm_steps(store, now=NOW)}
        assert steps == {
            ("test.all/1", DEFAULT_PROPERTY),
            ("test.all/1", other),
            ("test.eu/1", other),
        }

    def test_a_crowded_day_is_not_warmed(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A property's day with more than WARM_MAX_ROWS conversions (an import, a backlog) is
        left to its page: computing it at start-up would hold its rows in the server."""
        monkeypatch.setattr(rollups, "_REGISTRY", {"test.warm/1": self.counting([])})
        monkeypatch.setattr(rollups, "WARM_MAX_ROWS", 2)
        yesterday = NOW - DAY
        store.insert_conversions([conversion(1, event_time=int(yesterday))], yesterday)
        store.insert_conversions([conversion(n) for n in (2, 3, 4)], NOW)  # 3 > 2 today
        days = [d for _, _, d in rollups.warm_steps(store, now=NOW)]
        assert days == [self.day(TODAY - 1)]
        monkeypatch.setattr(rollups, "WARM_MAX_ROWS", 3)  # at the bound: warmed
        days = [d for _, _, d in rollups.warm_steps(store, now=NOW)]
        assert days == [self.day(TODAY), self.day(TODAY - 1)]
