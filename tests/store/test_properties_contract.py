"""Properties in the store (migration 0013): the same contract on SQLite and PostgreSQL.

Every row says whose it is, and nothing one property writes or reads reaches another's: dedup
keys are (property, event, event_id), outbox rows belong to one connection, landing sessions
to the property that made them; reads take a property scope (what the dashboard and the gap
report of one property see).
"""

from __future__ import annotations

import pytest

from backchannel.store.base import (
    DEFAULT_PROPERTY,
    PENDING,
    BrowserEvent,
    Connection,
    Dead,
    ForeignSession,
    LedgerEntry,
    SessionUpdate,
    Store,
    UnknownConnection,
)

from .conftest import Database
from .helpers import LEASE, NOW, conversion

ON_BY_DEFAULT = ("tiktok", "meta")


def second(store: Store, name: str = "eu") -> int:
    created = store.create_property(name, NOW, destinations=ON_BY_DEFAULT)
    assert created is not None
    return created


def entry(order: str, property_id: int, **fields: object) -> LedgerEntry:
    values: dict[str, object] = {
        "source": "shopify",
        "order_id": order,
        "order_time": int(NOW) - 100,
        "value": 10.0,
        "currency": "USD",
        "event": "CompletePayment",
        "event_id": f"CompletePayment-{order}",
        "session_id": None,
        "attributed_tiktok": True,
        "evidence": b'{"ttclid": "landing_site"}',
        "property_id": property_id,
    }
    values.update(fields)
    return LedgerEntry(**values)  # type: ignore[arg-type]


class TestProperties:
    def test_create_list_bind(self, store: Store) -> None:
        """A property gets an id and the sandbox connections of the destinations named; a name
        is taken once; a binding belongs to one property (the other keeps it)."""
        [default] = store.properties()
        assert (default.id, default.name) == (DEFAULT_PROPERTY, "default")
        eu = second(store)
        assert store.create_property("eu", NOW) is None
        assert [c.destination for c in store.list_connections(eu)] == list(ON_BY_DEFAULT)
        assert all(not c.live and c.pixel == "" for c in store.list_connections(eu))
        assert store.bind(eu, "shopify", "eu-shop.myshopify.com") == eu
        assert store.bind(DEFAULT_PROPERTY, "shopify", "eu-shop.myshopify.com") == eu  # kept
        assert store.bind(eu, "origin", "https://eu.shop.example") == eu
        assert store.bind(DEFAULT_PROPERTY, "stripe", "acct_1Default") == DEFAULT_PROPERTY
        found = store.get_property("eu")
        assert found is not None
        assert (found.id, found.shopify_shops, found.origins) == (
            eu,
            ("eu-shop.myshopify.com",),
            ("https://eu.shop.example",),
        )
        assert store.get_property(eu) == found
        assert store.bound_property("shopify", "eu-shop.myshopify.com") == eu
        assert store.bound_property("shopify", "other.myshopify.com") is None
        store.update_property(eu, default_region="DE", tiktok_utm_sources="tt")
        changed = store.get_property("eu")
        assert changed is not None
        assert (changed.default_region, changed.tiktok_utm_sources) == ("DE", "tt")
        assert store.unbind(eu, "origin") == 1
        assert store.unbind(eu, "shopify", "eu-shop.myshopify.com") == 1
        assert store.bound_property("shopify", "eu-shop.myshopify.com") is None
        with pytest.raises(ValueError, match="kind"):
            store.bind(eu, "woocommerce", "x")

    def test_ensure_connections_fills_only_what_is_missing(self, store: Store) -> None:
        """Each property without a connection of a destination gets one labelled with its name;
        a property with a differently labelled one of it gets none."""
        eu = store.create_property("eu", NOW)  # no connections at all
        assert eu is not None
        store.set_connection(
            Connection("ga4", "G-EU12345", b"c", "1234", None, NOW, property_id=eu, label="eu-ga")
        )
        # eu's TikTok, the default property's GA4 (not eu's: it has one, labelled otherwise)
        assert store.ensure_connections(["tiktok", "ga4"], NOW) == 2
        default_ga = store.get_connection("ga4")
        assert default_ga is not None
        assert not default_ga.live
        assert [(c.label, c.destination) for c in store.list_connections(eu)] == [
            ("eu-ga", "ga4"),
            ("tiktok", "tiktok"),
        ]
        assert store.ensure_connections(["tiktok", "ga4"], NOW) == 0

    def test_a_label_is_one_destination_s(self, store: Store) -> None:
        with pytest.raises(ValueError, match="label: 'tiktok' is already a tiktok connection"):
            store.set_connection(
                Connection("meta", "123456", None, None, None, NOW, label="tiktok")
            )


class TestIsolation:
    def test_same_event_id_in_two_properties_is_two_conversions(
        self, store: Store, database: Database
    ) -> None:
        """The event_id is the one the browser derives ({event}-{order_id}); the dedup key
        adds the property, so two shops' order 1001 are two conversions, each deduplicated in
        its own property."""
        eu = second(store)
        assert store.insert_conversions([conversion(1001)], NOW) == [True]
        assert store.insert_conversions([conversion(1001, property_id=eu)], NOW) == [True]
        assert store.insert_conversions(
            [conversion(1001), conversion(1001, property_id=eu)], NOW
        ) == [False, False]
        assert database.rows(
            "SELECT property_id, event_id FROM conversions ORDER BY property_id"
        ) == [(1, "CompletePayment-1001"), (eu, "CompletePayment-1001")]
        assert store.conversion_count(eu) == 1
        assert store.outbox_counts(eu) == {"tiktok": {PENDING: 1}, "meta": {PENDING: 1}}

    def test_an_event_gets_a_row_per_connection_and_claims_never_mix_them(
        self, store: Store, database: Database
    ) -> None:
        """Two TikTok pixels in one property: a row each; each claim takes one connection's
        rows; the other property's connection claims only its own."""
        eu = second(store)
        extra = store.set_connection(
            Connection("tiktok", "CEUSECOND01", None, None, None, NOW, property_id=eu, label="tt2")
        )
        eu_tiktok = store.get_connection("tiktok", eu)
        assert eu_tiktok is not None and eu_tiktok.id is not None  # noqa: PT018
        store.insert_conversions(
            [conversion(1), conversion(2, property_id=eu, connections=(eu_tiktok.id, "tt2"))],
            NOW,
        )
        rows = database.rows(
            "SELECT o.connection_id, c.property_id FROM outbox o"
            " JOIN conversions c ON c.id = o.conversion_id ORDER BY o.id"
        )
        default_ids = {
            c.id for c in store.list_connections(DEFAULT_PROPERTY) if c.destination in ON_BY_DEFAULT
        }
        assert sorted(rows) == sorted(
            [(i, 1) for i in default_ids] + [(eu_tiktok.id, eu), (extra, eu)]
        )
        first = store.claim(eu_tiktok.id, 10, NOW, LEASE)
        assert len(first) == 1
        assert store.claim(eu_tiktok.id, 10, NOW, LEASE) == []
        assert len(store.claim(extra, 10, NOW, LEASE)) == 1
        assert len(store.claim("tiktok", 10, NOW, LEASE)) == 1  # the default property's
        assert store.connection_counts(eu) == {
            eu_tiktok.id: {"in_flight": 1},
            extra: {"in_flight": 1},
        }

    def test_a_connection_of_another_property_is_refused(
        self, store: Store, database: Database
    ) -> None:
        """A conversion of the default property naming the other property's connection (or a
        label it does not have) stores nothing."""
        eu = second(store)
        eu_tiktok = store.get_connection("tiktok", eu)
        assert eu_tiktok is not None
        for named in (eu_tiktok.id, "nowhere"):
            with pytest.raises(UnknownConnection):
                store.insert_conversions([conversion(1, connections=(named,))], NOW)
        assert database.rows("SELECT COUNT(*) FROM conversions") == [(0,)]

    def test_enqueue_takes_only_the_connection_s_property_s_conversions(self, store: Store) -> None:
        eu = second(store)
        store.insert_conversions(
            [conversion(1, connections=()), conversion(2, connections=(), property_id=eu)], NOW
        )
        ga = store.set_connection(
            Connection("ga4", "G-EU12345", b"c", "1234", None, NOW, property_id=eu)
        )
        ids = [int(r[0]) for r in store.read("SELECT id FROM conversions ORDER BY id")]
        assert store.enqueue(ga, ids, NOW) == 1
        assert store.outbox_counts(eu) == {"ga4": {PENDING: 1}}
        assert store.outbox_counts(DEFAULT_PROPERTY) == {}

    def test_replay_and_deliveries_of_one_property(self, store: Store) -> None:
        eu = second(store)
        store.insert_conversions([conversion(7), conversion(7, property_id=eu)], NOW)
        eu_tiktok = store.get_connection("tiktok", eu)
        assert eu_tiktok is not None and eu_tiktok.id is not None  # noqa: PT018
        for connection in ("tiktok", eu_tiktok.id):
            (row,) = store.claim(connection, 10, NOW, LEASE)
            store.mark_dead([Dead(row.outbox_id, b"{}")], "refused", None, None)
        assert [d.connection for d in store.deliveries("CompletePayment-7", eu)] == [
            "meta",
            "tiktok",
        ]
        assert len(store.deliveries("CompletePayment-7")) == 4
        assert store.replay(NOW, property_id=eu) == 1
        assert store.outbox_counts(DEFAULT_PROPERTY)["tiktok"] == {"dead": 1}
        assert store.replay(NOW, event_id="CompletePayment-7", property_id=DEFAULT_PROPERTY) == 1

    def test_the_ledger_keys_orders_per_property(self, store: Store) -> None:
        eu = second(store)
        assert store.record_orders(
            [entry("1001", DEFAULT_PROPERTY), entry("1001", eu), entry("1001", eu)], NOW
        ) == [True, True, False]
        assert [o.property_id for o in store.orders(property_id=eu)] == [eu]
        assert store.ledger_counts(eu) == {"shopify": {"orders": 1, "attributed_tiktok": 1}}
        assert store.ledger_counts() == {"shopify": {"orders": 2, "attributed_tiktok": 2}}

    def test_gap_rows_and_pixel_counts_are_per_property(self, store: Store) -> None:
        """One property's gap rows join only its own Pixel mirror and its own deliveries."""
        eu = second(store)
        store.record_collect(
            [SessionUpdate("s-eu", NOW - 50, property_id=eu, browser="Safari")],
            [BrowserEvent("s-eu", "CompletePayment", "CompletePayment-1001", NOW, property_id=eu)],
        )
        store.record_orders(
            [entry("1001", DEFAULT_PROPERTY), entry("1001", eu, session_id="s-eu")], NOW
        )
        low, high = int(NOW) - 1000, int(NOW) + 1000
        [mine] = store.gap_rows(low, high, eu)
        assert (mine.property_id, mine.pixel_fired, mine.has_session, mine.browser) == (
            eu,
            True,
            True,
            "Safari",
        )
        [theirs] = store.gap_rows(low, high, DEFAULT_PROPERTY)
        assert (theirs.pixel_fired, theirs.has_session) == (False, False)  # not eu's mirror
        assert len(store.gap_rows(low, high)) == 2
        store.set_pixel_counts([("2026-01-01", "CompletePayment", 5)], NOW, eu)
        store.set_pixel_counts([("2026-01-01", "CompletePayment", 3)], NOW)
        assert store.pixel_counts("2026-01-01", "2026-01-01", "CompletePayment", eu) == {
            "2026-01-01": 5
        }
        assert store.pixel_counts("2026-01-01", "2026-01-01", "CompletePayment") == {
            "2026-01-01": 8
        }


class TestSessions:
    def test_a_session_belongs_to_the_property_that_made_it(
        self, store: Store, database: Database
    ) -> None:
        """Another property's message naming the session (an update or a mirrored call) is
        refused whole; two properties naming a new session in one write too."""
        eu = second(store)
        store.record_collect([SessionUpdate("s-1", NOW, ttclid="E.C.P.1")], [])
        with pytest.raises(ForeignSession) as refused:
            store.record_collect(
                [SessionUpdate("s-2", NOW, property_id=eu)],
                [BrowserEvent("s-1", "CompletePayment", "x", NOW, property_id=eu)],
            )
        assert refused.value.session_ids == ["s-1"]
        with pytest.raises(ForeignSession):
            store.record_collect(
                [SessionUpdate("s-3", NOW), SessionUpdate("s-3", NOW, property_id=eu)], []
            )
        assert database.rows("SELECT session_id, property_id FROM landing_sessions") == [("s-1", 1)]
        assert database.rows("SELECT COUNT(*) FROM browser_events") == [(0,)]

    def test_stitching_finds_only_the_property_s_sessions(self, store: Store) -> None:
        """By ttclid or email: the property's own sessions only; by id: any property's, with
        its property (the caller refuses another's)."""
        eu = second(store)
        store.record_collect([SessionUpdate("s-default", NOW, ttclid="E.C.P.1")], [])
        store.record_collect(
            [SessionUpdate("s-eu", NOW - 10, ttclid="E.C.P.1", property_id=eu)], []
        )
        store.attach_emails([("s-default", "a" * 64)], NOW)
        found = store.find_sessions(ttclids=["E.C.P.1"], email_hashes=["a" * 64], property_id=eu)
        assert [(m.kind, m.session.session_id) for m in found] == [("ttclid", "s-eu")]
        named = store.find_sessions(session_ids=["s-default"], property_id=eu)
        assert [(m.session.session_id, m.session.property_id) for m in named] == [
            ("s-default", DEFAULT_PROPERTY)
        ]
        assert [e.property_id for e in store.browser_events(property_id=eu)] == []


class TestKeysAndSecrets:
    def test_keys_belong_to_a_property(self, store: Store) -> None:
        eu = second(store)
        store.add_key("shop", "ingest", "bc_live_aa", "hash-a", NOW)
        store.add_key("shop", "ingest", "bc_live_bb", "hash-b", NOW, eu)
        store.add_key("ops", "admin", "bc_admin_cc", "hash-c", NOW, None)
        found = store.find_key("hash-b")
        assert found is not None
        assert found.property_id == eu
        admin = store.find_key("hash-c")
        assert admin is not None
        assert admin.property_id is None
        assert [k.prefix for k in store.list_keys(eu)] == ["bc_live_bb"]
        assert store.revoke_key("shop", NOW, eu) == 1  # the other property's "shop" stays
        still = store.find_key("hash-a")
        assert still is not None
        assert still.revoked_at is None

    def test_webhook_secrets_and_tokens_per_property(self, store: Store) -> None:
        eu = second(store)
        store.set_source_secret("stripe", b"secret-default", NOW)
        store.set_source_secret("stripe", b"secret-eu", NOW, property_id=eu)
        assert store.get_source_secret("stripe", eu) == b"secret-eu"
        assert store.source_secrets("stripe") == {
            DEFAULT_PROPERTY: b"secret-default",
            eu: b"secret-eu",
        }
        store.set_connection(
            Connection("tiktok", "CEU0000001", b"token-eu", "n-eu", None, NOW, property_id=eu)
        )
        store.set_connection(
            Connection("tiktok", "CDEF000001", b"token-default", "ault", None, NOW)
        )
        assert store.all_token_ciphertexts() == [
            ("tiktok", b"token-default"),
            ("eu/tiktok", b"token-eu"),
        ]
        labels = [label for label, _ in store.all_ciphertexts()]
        assert labels == ["token tiktok", "token eu/tiktok", "source stripe", "source eu/stripe"]
        assert store.reencrypt_secrets(lambda c: c + b"!") == 4
        assert store.source_secrets("stripe")[eu] == b"secret-eu!"
        assert store.delete_source_secret("stripe", eu) is True
        assert store.get_source_secret("stripe") == b"secret-default!"

    def test_rejections_and_audit_say_whose_they_are(
        self, store: Store, database: Database
    ) -> None:
        eu = second(store)
        store.record_rejection("shopify", b'{"error": "unknown_shop"}', NOW, None, None)
        store.record_rejection("stripe", b'{"error": "bad_signature"}', NOW + 1, "evt_1", eu)
        assert [r.property_id for r in store.rejections()] == [eu, None]
        assert [r.source for r in store.rejections(property_id=eu)] == ["stripe"]
        store.audit(NOW, "cli", "property.create", "eu", eu)
        store.audit(NOW, "cli", "key.rotate", "2 re-encrypted")
        assert database.rows("SELECT action, property_id FROM audit_log ORDER BY id") == [
            ("property.create", eu),
            ("key.rotate", None),
        ]


def test_retention_rolls_sessions_up_per_property(store: Store) -> None:
    eu = second(store)
    store.record_collect(
        [
            SessionUpdate("old-1", NOW - 100, browser="Chrome"),
            SessionUpdate("old-2", NOW - 100, browser="Chrome", property_id=eu),
        ],
        [],
    )
    assert store.purge_sessions(NOW, 100).sessions == 2
    assert [(r.property_id, r.sessions) for r in store.session_rollups()] == [(1, 1), (eu, 1)]
    assert [r.property_id for r in store.session_rollups(eu)] == [eu]
