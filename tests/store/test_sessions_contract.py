"""The browser-leg part of the Store contract, on SQLite and PostgreSQL alike.

Why a contract: the session merge rules (newest click wins, landing page kept, strongest Pixel
state kept) are written as SQL twice, once per dialect; stitching and the gap report read them
back through the protocol, so both backends must merge identically.
"""

from __future__ import annotations

import orjson
import pytest

from backchannel.store.base import BrowserEvent, SessionUpdate, Store

from .conftest import Database
from .helpers import NOW, conversion
from .test_contract import WRITE_ERRORS

EMAIL_A = "a" * 64
EMAIL_B = "b" * 64


def page(session_id: str = "sess-0001", at: float = NOW, **fields: object) -> SessionUpdate:
    return SessionUpdate(session_id=session_id, at=at, **fields)  # type: ignore[arg-type]


class TestPlatformIds:
    """The other platforms' ids (``landing_sessions.ids``, a JSON object): a message's value
    replaces the session's for the same field, other fields are kept, none leaves it as is."""

    def test_ids_merge_field_by_field(self, store: Store) -> None:
        store.record_collect([page(ids={"sc_click_id": "S1", "xx_cookie": "c1"})], [])
        store.record_collect([page(at=NOW + 1, ids={"sc_click_id": "S2", "epik": "E"})], [])
        store.record_collect([page(at=NOW + 2)], [])  # carries none: keeps what there is
        s = store.get_session("sess-0001")
        assert s is not None
        assert s.ids == {"sc_click_id": "S2", "xx_cookie": "c1", "epik": "E"}
        assert s.page_views == 3

    def test_a_session_without_ids_reads_as_empty(self, store: Store) -> None:
        store.record_collect([page(ttclid="T")], [])
        s = store.get_session("sess-0001")
        assert s is not None
        assert s.ids == {}

    def test_stitching_lookups_return_them(self, store: Store) -> None:
        store.record_collect([page(ttclid="T", ids={"sc_click_id": "S1"})], [])
        [match] = store.find_sessions(ttclids=["T"])
        assert match.session.ids == {"sc_click_id": "S1"}


class TestSessionMerge:
    def test_first_page_view_creates_the_session(self, store: Store) -> None:
        """A first message stores every field it carries, with one page view counted."""
        store.record_collect(
            [
                page(
                    url="https://shop.example/?ttclid=T1&utm_source=tiktok",
                    referrer="https://www.tiktok.com/",
                    landing=True,
                    ttclid="T1",
                    ttp="ttp-1",
                    fbp="fb.1.1.1",
                    utm_source="tiktok",
                    utm_campaign="spring",
                    ip="81.2.69.160",
                    user_agent="UA/1",
                    browser="Chrome",
                    browser_version="126",
                    os="Linux",
                    load_time_ms=812,
                    pixel_status="loaded",
                )
            ],
            [],
        )
        s = store.get_session("sess-0001")
        assert s is not None
        assert (s.first_seen, s.last_seen, s.page_views) == (NOW, NOW, 1)
        assert (s.ttclid, s.ttp, s.fbp, s.fbc) == ("T1", "ttp-1", "fb.1.1.1", None)
        assert (s.utm_source, s.utm_medium, s.utm_campaign) == ("tiktok", None, "spring")
        assert s.landing_url == "https://shop.example/?ttclid=T1&utm_source=tiktok"
        assert s.referrer == "https://www.tiktok.com/"
        assert (s.ip, s.user_agent, s.browser, s.browser_version, s.os) == (
            "81.2.69.160",
            "UA/1",
            "Chrome",
            "126",
            "Linux",
        )
        assert (s.load_time_ms, s.pixel_status) == (812, "loaded")

    def test_later_pages_keep_the_landing_and_take_new_identifiers(self, store: Store) -> None:
        """Later pages widen last_seen, add cookies, keep landing URL, referrer and load time."""
        store.record_collect(
            [
                page(
                    url="https://shop.example/?ttclid=T1",
                    landing=True,
                    ttclid="T1",
                    referrer="https://t.co/",
                    load_time_ms=900,
                )
            ],
            [],
        )
        store.record_collect(
            [
                page(
                    at=NOW + 60,
                    url="https://shop.example/product",
                    referrer="https://shop.example/",
                    ttp="ttp-late",
                    load_time_ms=100,
                )
            ],
            [],
        )
        s = store.get_session("sess-0001")
        assert s is not None
        assert (s.first_seen, s.last_seen, s.page_views) == (NOW, NOW + 60, 2)
        assert (s.ttclid, s.ttp) == ("T1", "ttp-late")
        assert s.landing_url == "https://shop.example/?ttclid=T1"
        assert s.referrer == "https://t.co/"
        assert s.last_url == "https://shop.example/product"
        assert s.load_time_ms == 900

    def test_a_landing_message_arriving_late_still_sets_the_landing(self, store: Store) -> None:
        """Beacons race: the page flagged landing wins even when its message comes second."""
        store.record_collect([page(at=NOW + 5, url="https://shop.example/p2", load_time_ms=50)], [])
        store.record_collect(
            [
                page(
                    url="https://shop.example/?ttclid=T9",
                    landing=True,
                    referrer="https://x.example/",
                    load_time_ms=700,
                )
            ],
            [],
        )
        s = store.get_session("sess-0001")
        assert s is not None
        assert s.first_seen == NOW
        assert s.landing_url == "https://shop.example/?ttclid=T9"
        assert s.referrer == "https://x.example/"
        assert s.load_time_ms == 700

    def test_a_new_click_replaces_the_old_one_and_utms_move_together(self, store: Store) -> None:
        """Last click wins; a message with UTMs replaces all five, one without keeps them."""
        store.record_collect(
            [page(ttclid="T1", utm_source="tiktok", utm_medium="paid", utm_term="shoes")], []
        )
        store.record_collect([page(at=NOW + 1, utm_source="newsletter")], [])
        store.record_collect([page(at=NOW + 2, ttclid="T2")], [])
        s = store.get_session("sess-0001")
        assert s is not None
        assert s.ttclid == "T2"
        assert (s.utm_source, s.utm_medium, s.utm_term) == ("newsletter", None, None)

    def test_the_strongest_pixel_state_is_kept(self, store: Store) -> None:
        """loaded beats blocked beats absent, whatever the order of the messages."""
        store.record_collect([page(pixel_status="blocked")], [])
        assert (s := store.get_session("sess-0001")) is not None
        assert s.pixel_status == "blocked"
        store.record_collect([page(at=NOW + 1, pixel_status="absent")], [])
        assert (s := store.get_session("sess-0001")) is not None
        assert s.pixel_status == "blocked"
        store.record_collect([page(at=NOW + 2, pixel_status="loaded")], [])
        store.record_collect([page(at=NOW + 3, pixel_status="blocked")], [])
        assert (s := store.get_session("sess-0001")) is not None
        assert s.pixel_status == "loaded"

    def test_one_batch_merges_several_updates_of_one_session_in_order(self, store: Store) -> None:
        """A group commit may hold many messages of one session; all of them count."""
        store.record_collect(
            [page(at=NOW + i, url=f"https://shop.example/{i}", landing=i == 0) for i in range(5)],
            [],
        )
        s = store.get_session("sess-0001")
        assert s is not None
        assert (s.page_views, s.last_seen, s.last_url) == (5, NOW + 4, "https://shop.example/4")
        assert s.landing_url == "https://shop.example/0"

    def test_event_only_messages_do_not_count_page_views(self, store: Store) -> None:
        """A mirrored Pixel call refreshes the session without counting a page view."""
        store.record_collect([page(), page(at=NOW + 1, page_view=False)], [])
        s = store.get_session("sess-0001")
        assert s is not None
        assert (s.page_views, s.last_seen) == (1, NOW + 1)

    def test_unknown_session_is_none(self, store: Store) -> None:
        """get_session of an id never seen returns None."""
        assert store.get_session("never-seen") is None


class TestBrowserEvents:
    def test_events_are_recorded_and_found_by_session_and_event_id(self, store: Store) -> None:
        """Mirrored Pixel calls come back by session and by event_id, oldest first."""
        events = [
            BrowserEvent("sess-0001", "AddToCart", "AddToCart-1", NOW + 2, "https://s/p", "loaded"),
            BrowserEvent("sess-0001", "CompletePayment", "CompletePayment-1", NOW + 5, None, None),
            BrowserEvent("sess-0002", "CompletePayment", "CompletePayment-2", NOW + 1, None, None),
        ]
        store.record_collect([page(), page("sess-0002")], events)
        assert store.browser_events(session_id="sess-0001") == events[:2]
        assert store.browser_events(event_id="CompletePayment-2") == [events[2]]
        assert store.browser_events(session_id="sess-0002", event_id="CompletePayment-1") == []

    def test_a_failed_batch_writes_nothing(self, store: Store, database: Database) -> None:
        """Sessions and events of one call commit together or not at all."""
        bad = BrowserEvent("sess-0001", None, None, NOW)  # type: ignore[arg-type]
        with pytest.raises(WRITE_ERRORS):  # either backend's NOT NULL error
            store.record_collect([page()], [bad])
        assert database.rows("SELECT COUNT(*) FROM landing_sessions") == [(0,)]
        assert store.get_session("sess-0001") is None


class TestFindSessions:
    def test_finds_by_id_ttclid_and_email_in_one_call(self, store: Store) -> None:
        """Each key kind finds its session; unknown keys find nothing."""
        store.record_collect(
            [page("s-by-id"), page("s-by-click", ttclid="CLICK"), page("s-by-mail")], []
        )
        store.attach_emails([("s-by-mail", EMAIL_A)], NOW)
        found = store.find_sessions(
            session_ids=["s-by-id", "nope"],
            ttclids=["CLICK", "nope"],
            email_hashes=[EMAIL_A, EMAIL_B],
        )
        got = sorted((m.kind, m.key, m.session.session_id) for m in found)
        assert got == [
            ("email", EMAIL_A, "s-by-mail"),
            ("session_id", "s-by-id", "s-by-id"),
            ("ttclid", "CLICK", "s-by-click"),
        ]

    def test_ttclid_and_email_pick_the_most_recently_seen_session(self, store: Store) -> None:
        """One click id opened in two browsers: the later-seen session is returned, once."""
        store.record_collect(
            [
                page("s-old", at=NOW, ttclid="CLICK"),
                page("s-new", at=NOW + 100, ttclid="CLICK"),
                page("s-mid", at=NOW + 50),
            ],
            [],
        )
        store.attach_emails([("s-old", EMAIL_A), ("s-mid", EMAIL_A)], NOW)
        found = store.find_sessions(ttclids=["CLICK"], email_hashes=[EMAIL_A])
        assert sorted((m.kind, m.session.session_id) for m in found) == [
            ("email", "s-mid"),
            ("ttclid", "s-new"),
        ]

    def test_no_keys_no_query(self, store: Store) -> None:
        """An empty lookup returns nothing."""
        assert store.find_sessions() == []

    def test_attach_emails_is_idempotent(self, store: Store) -> None:
        """Attaching a known (session, email) pair again changes nothing."""
        store.record_collect([page()], [])
        store.attach_emails([("sess-0001", EMAIL_B), ("sess-0001", EMAIL_A)], NOW)
        store.attach_emails([("sess-0001", EMAIL_A)], NOW + 10)
        assert store.session_emails("sess-0001") == [EMAIL_A, EMAIL_B]


class TestCheckoutSessions:
    """The Shopify custom pixel's report of a completed checkout: token -> session."""

    def test_a_reported_checkout_finds_its_session(self, store: Store) -> None:
        """A message carrying a checkout token maps it to its session, in the same commit."""
        store.record_collect(
            [page("sess-land", ttclid="T1"), page("sess-land", NOW + 60, checkout_token="tok-1")],
            [BrowserEvent("sess-land", "CompletePayment", "CompletePayment-5", NOW + 60)],
        )
        assert store.checkout_session("tok-1") == "sess-land"
        assert store.checkout_session("tok-2") is None
        session = store.get_session("sess-land")
        assert session is not None
        assert session.ttclid == "T1"

    def test_the_first_report_of_a_checkout_wins(self, store: Store) -> None:
        """A later message naming the same checkout from another session changes nothing:
        the pixel fires once per checkout, so a second claim is not believed over the first."""
        store.record_collect([page("sess-first", checkout_token="tok-1")], [])
        store.record_collect([page("sess-other", NOW + 5, checkout_token="tok-1")], [])
        store.record_collect(
            [
                page("sess-x", NOW + 9, checkout_token="tok-9"),
                page("sess-y", checkout_token="tok-9"),
            ],
            [],
        )
        assert store.checkout_session("tok-1") == "sess-first"
        assert store.checkout_session("tok-9") == "sess-x"  # first in the batch's order


class TestStitchedColumn:
    def test_insert_stores_the_provenance(self, store: Store, database: Database) -> None:
        """insert_conversions fills conversions.stitched (NULL when not given)."""
        provenance = orjson.dumps({"matched_by": "session_id", "fields": {"ttclid": "session"}})
        store.insert_conversions([conversion(1, stitched=provenance.decode()), conversion(2)], NOW)
        rows = database.rows("SELECT order_id, stitched FROM conversions ORDER BY order_id")
        assert rows == [("1", provenance.decode()), ("2", None)]
