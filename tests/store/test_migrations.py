"""Migrations: an empty database ends up with exactly the documented schema, on both backends.

Why spell the schema out here: the two migration folders are separate files written in two SQL
dialects, and nothing else checks that they describe the same tables. Each backend's catalog
is read back and normalized to one vocabulary (int/text/real/blob, NOT NULL, defaults, keys,
indexes), then compared with the single description below — so a column added to one
backend's migration and forgotten in the other fails here, not in production.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from backchannel.store import migrations
from backchannel.store.base import Grant
from backchannel.store.postgres import PostgresStore

from .conftest import Database, PostgresDatabase

Column = tuple[str, str, bool, str | None]  # name, type family, NOT NULL, default

EXPECTED_COLUMNS: dict[str, list[Column]] = {
    "conversions": [
        ("id", "int", True, None),
        ("event", "text", True, None),
        ("event_id", "text", True, None),
        ("event_time", "int", True, None),
        ("received_at", "real", True, None),
        ("origin", "text", True, "'api'"),
        ("order_id", "text", False, None),
        ("session_id", "text", False, None),
        ("test_event_code", "text", False, None),
        ("payload", "blob", True, None),
        ("warnings", "blob", False, None),
        ("stitched", "text", False, None),  # browser leg (0002)
        ("scrubbed_at", "real", False, None),  # retention (0005)
    ],
    "outbox": [
        ("id", "int", True, None),
        ("conversion_id", "int", True, None),
        ("destination", "text", True, None),
        ("status", "text", True, "'pending'"),
        ("due_at", "real", True, None),
        ("lease_until", "real", False, None),
        ("attempts", "int", True, "0"),
        ("last_error", "text", False, None),
        ("last_response", "text", False, None),
        ("platform_ref", "text", False, None),
        ("sent_body", "blob", False, None),
        ("created_at", "real", True, None),
        ("delivered_at", "real", False, None),
    ],
    "api_keys": [
        ("id", "int", True, None),
        ("name", "text", True, None),
        ("scope", "text", True, "'ingest'"),
        ("prefix", "text", True, None),
        ("key_hash", "text", True, None),
        ("created_at", "real", True, None),
        ("revoked_at", "real", False, None),
    ],
    "connections": [
        ("destination", "text", True, None),
        ("pixel", "text", True, None),
        ("token_encrypted", "blob", False, None),
        ("token_last4", "text", False, None),
        ("test_event_code", "text", False, None),
        ("updated_at", "real", True, None),
    ],
    "audit_log": [
        ("id", "int", True, None),
        ("at", "real", True, None),
        ("actor", "text", True, None),
        ("action", "text", True, None),
        ("detail", "text", False, None),
    ],
    "schema_migrations": [
        ("version", "int", True, None),
        ("applied_at", "real", True, "<now>"),
    ],
}
# browser leg (0002): landing sessions, their email hashes, the Pixel mirror
EXPECTED_COLUMNS.update(
    {
        "landing_sessions": [
            ("session_id", "text", True, None),
            ("first_seen", "real", True, None),
            ("last_seen", "real", True, None),
            *[
                (name, "text", False, None)
                for name in (
                    "ttclid ttp fbclid fbp fbc utm_source utm_medium utm_campaign utm_content"
                    " utm_term landing_url referrer last_url ip user_agent browser"
                    " browser_version os os_version"
                ).split()
            ],
            ("load_time_ms", "int", False, None),
            ("pixel_status", "text", True, "'absent'"),
            ("page_views", "int", True, "0"),
        ],
        "session_emails": [
            ("email_hash", "text", True, None),
            ("session_id", "text", True, None),
            ("seen_at", "real", True, None),
        ],
        "browser_events": [
            ("id", "int", True, None),
            ("session_id", "text", True, None),
            ("event", "text", True, None),
            ("event_id", "text", False, None),
            ("at", "real", True, None),
            ("page_url", "text", False, None),
            ("pixel_status", "text", False, None),
        ],
    }
)
EXPECTED_PRIMARY_KEYS = {
    "conversions": ("id",),
    "outbox": ("id",),
    "api_keys": ("id",),
    "connections": ("destination",),
    "audit_log": ("id",),
    "schema_migrations": ("version",),
}
EXPECTED_PRIMARY_KEYS.update(  # browser leg (0002)
    {
        "landing_sessions": ("session_id",),
        "session_emails": ("email_hash", "session_id"),
        "browser_events": ("id",),
    }
)
EXPECTED_UNIQUE = {
    ("conversions", ("event", "event_id")),
    ("outbox", ("conversion_id", "destination")),
    ("api_keys", ("key_hash",)),
}
EXPECTED_FOREIGN_KEYS = {("outbox", ("conversion_id",), "conversions", ("id",))}
#: name -> (table, columns, partial-index predicate)
EXPECTED_INDEXES = {
    "conversions_received": ("conversions", ("received_at",), None),
    "conversions_order": ("conversions", ("order_id",), "order_id IS NOT NULL"),
    "outbox_due": ("outbox", ("destination", "status", "due_at"), None),
}
EXPECTED_INDEXES.update(  # browser leg (0002): what stitching and the Pixel mirror look up
    {
        "landing_sessions_ttclid": ("landing_sessions", ("ttclid",), "ttclid IS NOT NULL"),
        "landing_sessions_last_seen": ("landing_sessions", ("last_seen",), None),
        "browser_events_event_id": ("browser_events", ("event_id",), "event_id IS NOT NULL"),
        "browser_events_session": ("browser_events", ("session_id",), None),
    }
)

# sources and ledger (0003): webhook secrets, the order ledger, webhook dedup, rejections
EXPECTED_COLUMNS.update(
    {
        "source_secrets": [
            ("source", "text", True, None),
            ("secret_encrypted", "blob", True, None),
            ("updated_at", "real", True, None),
        ],
        "orders": [
            ("id", "int", True, None),
            ("source", "text", True, None),
            ("order_id", "text", True, None),
            ("order_time", "int", True, None),
            ("value", "real", False, None),
            ("currency", "text", False, None),
            ("event", "text", False, None),
            ("event_id", "text", False, None),
            ("session_id", "text", False, None),
            ("attributed_tiktok", "int", True, "0"),
            ("evidence", "blob", False, None),
            ("recorded_at", "real", True, None),
        ],
        "source_deliveries": [
            ("id", "int", True, None),
            ("source", "text", True, None),
            ("delivery_id", "text", True, None),
            ("received_at", "real", True, None),
            ("status", "text", True, None),
        ],
        "ingest_rejections": [
            ("id", "int", True, None),
            ("at", "real", True, None),
            ("source", "text", True, None),
            ("delivery_id", "text", False, None),
            ("reason", "blob", True, None),
        ],
    }
)
EXPECTED_PRIMARY_KEYS.update(  # sources and ledger (0003)
    {
        "source_secrets": ("source",),
        "orders": ("id",),
        "source_deliveries": ("id",),
        "ingest_rejections": ("id",),
    }
)
EXPECTED_UNIQUE |= {  # sources and ledger (0003)
    ("orders", ("source", "order_id")),
    ("source_deliveries", ("source", "delivery_id")),
}
EXPECTED_INDEXES.update(  # sources and ledger (0003)
    {
        "orders_time": ("orders", ("order_time",), None),
        "ingest_rejections_at": ("ingest_rejections", ("at",), None),
    }
)

# hardening (0004): the admin password hash and server-side admin sessions
EXPECTED_COLUMNS.update(
    {
        "admin_settings": [
            ("name", "text", True, None),
            ("value", "text", True, None),
            ("updated_at", "real", True, None),
        ],
        "admin_sessions": [
            ("token_hash", "text", True, None),
            ("csrf_token", "text", True, None),
            ("created_at", "real", True, None),
            ("expires_at", "real", True, None),
        ],
    }
)
EXPECTED_PRIMARY_KEYS.update(  # hardening (0004)
    {"admin_settings": ("name",), "admin_sessions": ("token_hash",)}
)
EXPECTED_INDEXES.update(  # hardening (0004): expired sessions are swept at each login
    {"admin_sessions_expires": ("admin_sessions", ("expires_at",), None)}
)

# retention (0005): counts kept from purged landing sessions; which conversions were scrubbed
_ROLLUP_KEY = (
    "day",
    "browser_family",
    "os",
    "os_version_major",
    "load_bucket",
    "pixel_status",
    "had_ttclid",
)
EXPECTED_COLUMNS["session_rollups"] = [
    *[(name, "text", True, None) for name in _ROLLUP_KEY[:-1]],
    ("had_ttclid", "int", True, None),
    ("sessions", "int", True, None),
]
EXPECTED_PRIMARY_KEYS["session_rollups"] = _ROLLUP_KEY
EXPECTED_INDEXES["conversions_unscrubbed"] = (
    "conversions",
    ("received_at",),
    "scrubbed_at IS NULL",
)

# Events Manager counts (0006): daily Pixel counts imported from an export, one per day and event
EXPECTED_COLUMNS["pixel_counts"] = [
    ("day", "text", True, None),
    ("event", "text", True, None),
    ("count", "int", True, None),
    ("imported_at", "real", True, None),
]
EXPECTED_PRIMARY_KEYS["pixel_counts"] = ("day", "event")

# Diagnostics (0007): delivered rows by delivered_at range (the overview's figures)
EXPECTED_INDEXES["outbox_delivered"] = ("outbox", ("delivered_at",), "delivered_at IS NOT NULL")

# Diagnostics (0008): when an attempt last failed
EXPECTED_COLUMNS["outbox"].append(("failed_at", "real", False, None))

# Delivery (0009): the token of the claim holding an in-flight row; marks are guarded by it
EXPECTED_COLUMNS["outbox"].append(("lease_token", "text", False, None))

# Destinations as plug-ins (0010): a connection's other declared values
EXPECTED_COLUMNS["connections"] += [
    ("settings", "text", False, None),
    ("secrets_encrypted", "blob", False, None),
]

# Google's ids on the browser leg (0011): the session's GA client id and Ads click ids, whose
# tag a mirrored call was, and purged sessions with a Google Ads click counted apart
EXPECTED_COLUMNS["landing_sessions"] += [
    (name, "text", False, None) for name in ("ga_client_id", "gclid", "gbraid", "wbraid")
]
EXPECTED_COLUMNS["browser_events"].append(("platform", "text", True, "'tiktok'"))
EXPECTED_COLUMNS["session_rollups"].append(("had_google_click", "int", True, None))
EXPECTED_PRIMARY_KEYS["session_rollups"] = (*_ROLLUP_KEY, "had_google_click")

# Generic platform ids (0012): the other platforms' ids of a session, as a JSON object (TEXT
# in SQLite, JSONB in PostgreSQL so the upsert can merge them with ||)
EXPECTED_COLUMNS["landing_sessions"].append(("ids", "text", False, None))

# Properties (0013): several shops in one install. Every row says whose it is; keys that made a
# row unique gain the property; connections get an id, a label, their routes and suspension.
EXPECTED_COLUMNS["properties"] = [
    ("id", "int", True, None),
    ("name", "text", True, None),
    ("default_region", "text", False, None),
    ("tiktok_utm_sources", "text", False, None),
    ("created_at", "real", True, None),
]
EXPECTED_COLUMNS["property_bindings"] = [
    ("kind", "text", True, None),
    ("value", "text", True, None),
    ("property_id", "int", True, None),
]
EXPECTED_PRIMARY_KEYS["properties"] = ("id",)
EXPECTED_PRIMARY_KEYS["property_bindings"] = ("kind", "value")
EXPECTED_UNIQUE.add(("properties", ("name",)))
EXPECTED_COLUMNS["connections"] += [
    ("id", "int", True, None),
    ("property_id", "int", True, None),
    ("label", "text", True, None),
    ("routes", "text", False, None),
    ("suspension", "text", False, None),
]
EXPECTED_PRIMARY_KEYS["connections"] = ("id",)
EXPECTED_UNIQUE.add(("connections", ("property_id", "label")))
EXPECTED_COLUMNS["outbox"].append(("connection_id", "int", True, None))
EXPECTED_UNIQUE.discard(("outbox", ("conversion_id", "destination")))
EXPECTED_UNIQUE.add(("outbox", ("conversion_id", "connection_id")))
EXPECTED_INDEXES["outbox_due"] = ("outbox", ("connection_id", "status", "due_at"), None)
for _table in ("conversions", "orders", "session_rollups", "pixel_counts"):
    EXPECTED_COLUMNS[_table].append(("property_id", "int", True, None))
for _table in (
    "landing_sessions",
    "browser_events",
    "api_keys",
    "audit_log",
    "ingest_rejections",
    "source_deliveries",
):
    EXPECTED_COLUMNS[_table].append(("property_id", "int", False, None))
EXPECTED_UNIQUE.discard(("conversions", ("event", "event_id")))
EXPECTED_UNIQUE.add(("conversions", ("property_id", "event", "event_id")))
EXPECTED_UNIQUE.discard(("orders", ("source", "order_id")))
EXPECTED_UNIQUE.add(("orders", ("property_id", "source", "order_id")))
EXPECTED_PRIMARY_KEYS["session_rollups"] = ("property_id", *_ROLLUP_KEY, "had_google_click")
EXPECTED_PRIMARY_KEYS["pixel_counts"] = ("property_id", "day", "event")
EXPECTED_FOREIGN_KEYS |= {
    ("property_bindings", ("property_id",), "properties", ("id",)),
    ("outbox", ("connection_id",), "connections", ("id",)),
    *(
        (table, ("property_id",), "properties", ("id",))
        for table in (
            "connections",
            "conversions",
            "orders",
            "session_rollups",
            "pixel_counts",
            "landing_sessions",
            "browser_events",
            "api_keys",
            "audit_log",
            "ingest_rejections",
            "source_deliveries",
        )
    ),
}

# Team members (0014): members, their role per property (NULL: every property), whose session
# it is, an admin key's role.
EXPECTED_COLUMNS["members"] = [
    ("id", "int", True, None),
    ("name", "text", True, None),
    ("password_hash", "text", True, None),
    ("created_at", "real", True, None),
    ("disabled_at", "real", False, None),
]
EXPECTED_COLUMNS["member_roles"] = [
    ("id", "int", True, None),
    ("member_id", "int", True, None),
    ("property_id", "int", False, None),
    ("role", "text", True, None),
]
EXPECTED_COLUMNS["admin_sessions"].append(("member_id", "int", False, None))
EXPECTED_COLUMNS["api_keys"].append(("role", "text", False, None))
EXPECTED_PRIMARY_KEYS.update({"members": ("id",), "member_roles": ("id",)})
EXPECTED_UNIQUE |= {("members", ("name",)), ("member_roles", ("member_id", "property_id"))}
EXPECTED_FOREIGN_KEYS |= {
    ("member_roles", ("member_id",), "members", ("id",)),
    ("admin_sessions", ("member_id",), "members", ("id",)),
}

# WooCommerce source (0015): the shop (X-WC-Webhook-Source) a source's webhooks must come from
EXPECTED_COLUMNS["source_secrets"].append(("store_url", "text", False, None))

# The Shopify custom pixel (0016): site keys that may post from an opaque origin, and which
# landing session completed which checkout (the webhook's checkout_token finds it)
EXPECTED_COLUMNS["api_keys"].append(("allow_null_origin", "int", True, "0"))
EXPECTED_COLUMNS["checkout_sessions"] = [
    ("checkout_token", "text", True, None),
    ("session_id", "text", True, None),
    ("seen_at", "real", True, None),
]
EXPECTED_PRIMARY_KEYS["checkout_sessions"] = ("checkout_token",)
EXPECTED_INDEXES["checkout_sessions_session"] = ("checkout_sessions", ("session_id",), None)

# Webhook secrets per property (0017, after 0015 extended the table): (property, source)
EXPECTED_COLUMNS["source_secrets"].append(("property_id", "int", True, None))
EXPECTED_PRIMARY_KEYS["source_secrets"] = ("property_id", "source")
EXPECTED_FOREIGN_KEYS.add(("source_secrets", ("property_id",), "properties", ("id",)))

# Dedup page (0018): a mirrored Pixel call's id looked up among its property's conversions'
# event_ids (the other Pixels name events their own way, so the (property, event, event_id)
# key cannot serve)
EXPECTED_INDEXES["conversions_event_id"] = ("conversions", ("property_id", "event_id"), None)

# Daily rollups (0019): marks appended by every write that changes a day's figures, each
# day's version, the kept partials; and the indexes the marks are found by
EXPECTED_COLUMNS["rollup_marks"] = [
    ("id", "int", True, None),
    ("property_id", "int", True, None),
    ("day", "int", True, None),
]
EXPECTED_COLUMNS["rollup_days"] = [
    ("property_id", "int", True, None),
    ("day", "int", True, None),
    ("version", "int", True, None),
]
EXPECTED_COLUMNS["rollups"] = [
    ("name", "text", True, None),
    ("property_id", "int", True, None),
    ("day", "int", True, None),
    ("version", "int", True, None),
    ("computed_at", "real", True, None),
    ("data", "blob", True, None),
    ("seconds", "real", True, "0"),  # 0021
]
EXPECTED_PRIMARY_KEYS.update(
    {
        "rollup_marks": ("id",),
        "rollup_days": ("property_id", "day"),
        "rollups": ("name", "property_id", "day"),
    }
)
EXPECTED_INDEXES.update(
    {
        "orders_event_id": ("orders", ("property_id", "event_id"), "event_id IS NOT NULL"),
        "orders_order_id": ("orders", ("property_id", "order_id"), None),
        "orders_session": ("orders", ("session_id",), "session_id IS NOT NULL"),
        "conversions_session": ("conversions", ("session_id",), "session_id IS NOT NULL"),
        "orders_property_time": ("orders", ("property_id", "order_time"), None),
        "conversions_property_received": ("conversions", ("property_id", "received_at"), None),
        "outbox_state": (
            "outbox",
            ("connection_id", "status", "attempts"),
            "status <> 'delivered'",
        ),
        "conversions_test": ("conversions", ("property_id",), "test_event_code IS NOT NULL"),
        # an expression column reads as None on both (SQLite's index_info, PostgreSQL's 0)
        "outbox_errors": ("outbox", ("connection_id", None, "id"), "last_error IS NOT NULL"),
    }
)

# Member roles (0020): the foreign key to properties 0014 left out
EXPECTED_FOREIGN_KEYS.add(("member_roles", ("property_id",), "properties", ("id",)))

SQLITE_TYPES = {"INTEGER": "int", "TEXT": "text", "REAL": "real", "BLOB": "blob"}
POSTGRES_TYPES = {
    "bigint": "int",
    "integer": "int",
    "text": "text",
    "double precision": "real",
    "bytea": "blob",
    "jsonb": "text",  # JSON text on both: landing_sessions.ids
}


@dataclass
class Schema:
    columns: dict[str, list[Column]]
    primary_keys: dict[str, tuple[str, ...]]
    unique: set[tuple[str, tuple[str, ...]]]
    foreign_keys: set[tuple[str, tuple[str, ...], str, tuple[str, ...]]]
    indexes: dict[str, tuple[str, tuple[str, ...], str | None]]


def _default(text: str | None) -> str | None:
    """One spelling per default: ``'x'::text`` -> ``'x'``; the clock -> ``<now>``."""
    if text is None:
        return None
    if "now()" in text or "unixepoch" in text:
        return "<now>"
    return re.sub(r"::[a-z ]+$", "", text)


def _sqlite_schema(database: Database) -> Schema:
    tables = [
        row[0]
        for row in database.rows(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    schema = Schema({}, {}, set(), set(), {})
    for table in tables:
        info = database.rows("SELECT * FROM pragma_table_info(?)", table)
        schema.columns[table] = [
            (
                name,
                SQLITE_TYPES[kind],
                bool(notnull or pk),  # a PRIMARY KEY column is never NULL
                None if pk else _default(default),  # INTEGER PRIMARY KEY: the rowid
            )
            for _, name, kind, notnull, default, pk in info
        ]
        schema.primary_keys[table] = tuple(
            name for _, name, *_, pk in sorted(info, key=lambda r: r[5]) if pk
        )
        for _, index, unique, origin, partial in database.rows(
            "SELECT * FROM pragma_index_list(?)", table
        ):
            columns = tuple(
                row[2] for row in database.rows("SELECT * FROM pragma_index_info(?)", index)
            )
            if origin == "u":
                schema.unique.add((table, columns))
            elif origin == "c":
                assert not unique, "unique indexes are declared as constraints"
                predicate = None
                if partial:
                    (ddl,) = database.rows(
                        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", index
                    )[0]
                    predicate = ddl.split(" WHERE ", 1)[1].strip()
                schema.indexes[index] = (table, columns, predicate)
        foreign: dict[int, list[tuple[str, str, str]]] = {}
        for fk_id, _, parent, column, parent_column, *_ in database.rows(
            "SELECT * FROM pragma_foreign_key_list(?)", table
        ):
            foreign.setdefault(fk_id, []).append((parent, column, parent_column))
        for parts in foreign.values():
            schema.foreign_keys.add(
                (table, tuple(p[1] for p in parts), parts[0][0], tuple(p[2] for p in parts))
            )
    return schema


def _postgres_schema(database: Database) -> Schema:
    schema = Schema({}, {}, set(), set(), {})
    for table, name, kind, nullable, default in database.rows(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " ORDER BY table_name, ordinal_position"
    ):
        if default is not None and default.startswith("nextval("):
            default = None  # BIGSERIAL: the counterpart of SQLite's INTEGER PRIMARY KEY
        schema.columns.setdefault(table, []).append(
            (name, POSTGRES_TYPES[kind], nullable == "NO", _default(default))
        )

    def columns(table: str, numbers: list[int]) -> tuple[str, ...]:
        by_number = dict(
            database.rows(
                "SELECT attnum, attname FROM pg_attribute WHERE attrelid = ?::regclass",
                table,
            )
        )
        return tuple(by_number.get(n) for n in numbers)  # 0: an expression (None)

    for kind, table, keys, parent, parent_keys in database.rows(
        "SELECT c.contype::text, c.conrelid::regclass::text, c.conkey,"
        " c.confrelid::regclass::text, c.confkey FROM pg_constraint c"
        " JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'"
    ):
        if kind == "p":
            schema.primary_keys[table] = columns(table, keys)
        elif kind == "u":
            schema.unique.add((table, columns(table, keys)))
        elif kind == "f":
            schema.foreign_keys.add(
                (table, columns(table, keys), parent, columns(parent, parent_keys))
            )
        else:
            raise AssertionError(f"unexpected constraint type {kind!r} on {table}")
    for index, table, keys, predicate in database.rows(
        "SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text,"
        " i.indkey::int2[]::int4[], pg_get_expr(i.indpred, i.indrelid)"
        " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
    ):
        if predicate is not None:  # PostgreSQL's rendering: (x <> 'a'::text) is x <> 'a'
            predicate = predicate.removeprefix("(").removesuffix(")").replace("'::text", "'")
        schema.indexes[index] = (table, columns(table, list(keys)), predicate)
    return schema


def read_schema(database: Database) -> Schema:
    return _sqlite_schema(database) if database.kind == "sqlite" else _postgres_schema(database)


def applied(database: Database) -> list[tuple[Any, ...]]:
    return database.rows("SELECT version, applied_at FROM schema_migrations ORDER BY version")


def test_migrations_create_exactly_the_documented_schema(empty_database: Database) -> None:
    if empty_database.kind == "postgres":
        assert (
            empty_database.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
        )
    empty_database.open()  # opening an empty database applies every migration
    schema = read_schema(empty_database)
    assert schema.columns == EXPECTED_COLUMNS
    assert schema.primary_keys == EXPECTED_PRIMARY_KEYS
    assert schema.unique == EXPECTED_UNIQUE
    assert schema.foreign_keys == EXPECTED_FOREIGN_KEYS
    assert schema.indexes == EXPECTED_INDEXES
    versions = [version for version, _ in migrations.load("sqlite")]
    assert [row[0] for row in applied(empty_database)] == versions


def test_migrate_twice_is_a_no_op(empty_database: Database) -> None:
    store = empty_database.open()
    schema, versions = read_schema(empty_database), applied(empty_database)
    store.migrate()
    store.migrate()
    empty_database.open()  # and so is opening the migrated database again
    assert read_schema(empty_database) == schema
    assert applied(empty_database) == versions


def test_both_backends_ship_the_same_migration_versions() -> None:
    sqlite = [version for version, _ in migrations.load("sqlite")]
    postgres = [version for version, _ in migrations.load("postgres")]
    assert sqlite == postgres
    assert sqlite == sorted(set(sqlite))
    assert sqlite[0] == 1


@pytest.mark.postgres
@pytest.mark.parametrize("empty_database", ["postgres"], indirect=True)
def test_processes_starting_together_migrate_once(empty_database: Database) -> None:
    """The advisory lock: without it both would try to CREATE TABLE and one would fail."""
    assert isinstance(empty_database, PostgresDatabase)
    conninfo = empty_database.conninfo
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        PostgresStore(conninfo).close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(open_store) for _ in range(4)]:
            future.result(timeout=60)
    versions = [version for version, _ in migrations.load("postgres")]
    assert [row[0] for row in applied(empty_database)] == versions
    assert read_schema(empty_database).columns == EXPECTED_COLUMNS


def test_0011_keeps_the_rows_it_rebuilds_or_extends(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading a store at 0010: rollup counts survive SQLite's table rebuild (no Google click),
    mirrored Pixel calls become TikTok's, sessions gain empty Google columns."""
    from backchannel.store import postgres, sqlite

    def up_to_10(backend: migrations.Backend) -> list[tuple[int, str]]:
        return [(v, text) for v, text in migrations.load(backend) if v <= 10]

    monkeypatch.setattr(sqlite, "load", up_to_10)
    monkeypatch.setattr(postgres, "load", up_to_10)
    empty_database.open().close()
    empty_database.execute(
        "INSERT INTO session_rollups (day, browser_family, os, os_version_major, load_bucket,"
        " pixel_status, had_ttclid, sessions) VALUES ('2026-01-02', 'Safari', 'iOS', '17',"
        " '<1s', 'loaded', 1, 41)"
    )
    empty_database.execute(
        "INSERT INTO browser_events (session_id, event, event_id, at)"
        " VALUES ('s-1', 'CompletePayment', 'CompletePayment-1', 1.0)"
    )
    empty_database.execute(
        "INSERT INTO landing_sessions (session_id, first_seen, last_seen, ttclid)"
        " VALUES ('s-1', 1.0, 2.0, 'E.C.P.1')"
    )
    monkeypatch.undo()
    store = empty_database.open()
    latest = max(version for version, _ in migrations.load(empty_database.kind))
    assert [row[0] for row in applied(empty_database)][-1] == latest
    [rollup] = store.session_rollups()
    assert (rollup.sessions, rollup.had_ttclid, rollup.had_google_click) == (41, True, False)
    [event] = store.browser_events(session_id="s-1")
    assert event.platform == "tiktok"
    session = store.get_session("s-1")
    assert session is not None
    assert session.ttclid == "E.C.P.1"
    assert (session.ga_client_id, session.gclid, session.gbraid, session.wbraid) == (None,) * 4


def test_0013_and_0017_upgrade_a_store_that_got_0015_and_0016_first(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of a build that had 0012, 0015 and 0016 but not properties (the migrations
    landed apart): 0013 then 0017 apply after them and keep what they added (the WooCommerce
    store URL of source_secrets, which SQLite's 0017 rebuilds)."""
    from backchannel.store import postgres, sqlite

    def before_properties(backend: migrations.Backend) -> list[tuple[int, str]]:
        # that build had nothing after 0016 either (0018, the dedup page's index, came later)
        return [(v, text) for v, text in migrations.load(backend) if v not in (13, 17) and v < 18]

    monkeypatch.setattr(sqlite, "load", before_properties)
    monkeypatch.setattr(postgres, "load", before_properties)
    empty_database.open().close()
    empty_database.execute(
        "INSERT INTO source_secrets (source, secret_encrypted, updated_at, store_url)"
        " VALUES ('woocommerce', ?, 1.0, 'https://shop.example.com/')",
        b"cipher",
    )
    monkeypatch.undo()
    store = empty_database.open()
    assert store.get_source_store_url("woocommerce") == "https://shop.example.com/"
    assert store.source_secrets("woocommerce") == {1: b"cipher"}
    assert {13, 17} <= {row[0] for row in applied(empty_database)}
    # the same columns as a fresh store (in another order where 0016 came before 0013)
    found = read_schema(empty_database).columns
    assert {t: sorted(c) for t, c in found.items()} == {
        t: sorted(c) for t, c in EXPECTED_COLUMNS.items()
    }


def test_a_rebuild_never_drops_a_column_a_later_migration_added(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite rebuilds tables to change their keys, copying the columns the migration names;
    should a table have another (a later migration applied first), the migration is refused
    naming it. PostgreSQL alters in place, so there the column is kept."""
    from backchannel.store import postgres, sqlite

    def before_properties(backend: migrations.Backend) -> list[tuple[int, str]]:
        return [(v, text) for v, text in migrations.load(backend) if v < 13]

    monkeypatch.setattr(sqlite, "load", before_properties)
    monkeypatch.setattr(postgres, "load", before_properties)
    empty_database.open().close()
    empty_database.execute("ALTER TABLE orders ADD COLUMN later_column TEXT")
    monkeypatch.undo()
    if empty_database.kind == "sqlite":
        with pytest.raises(RuntimeError, match="0013 rebuilds orders and would drop its"):
            empty_database.open()
        assert 13 not in [row[0] for row in applied(empty_database)]  # nothing half-done
        return
    empty_database.open()
    columns = [c[0] for c in read_schema(empty_database).columns["orders"]]
    assert "later_column" in columns


def test_0020_keeps_every_grant_but_those_on_no_property(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading a store at 0019 with members: every grant on an existing property, and every
    host-wide one, survives with its id (SQLite rebuilds the table); a grant on an id no
    property has is removed and named in the audit log; afterwards the database refuses one."""
    from backchannel.store import postgres, sqlite

    def up_to_19(backend: migrations.Backend) -> list[tuple[int, str]]:
        return [(v, text) for v, text in migrations.load(backend) if v <= 19]

    monkeypatch.setattr(sqlite, "load", up_to_19)
    monkeypatch.setattr(postgres, "load", up_to_19)
    empty_database.open().close()
    empty_database.execute("INSERT INTO properties (id, name, created_at) VALUES (2, 'eu', 1.0)")
    for member_id, name in ((1, "admin"), (2, "olga"), (3, "ghost")):
        empty_database.execute(
            "INSERT INTO members (id, name, password_hash, created_at) VALUES (?, ?, 'h', 1.0)",
            member_id,
            name,
        )
    rows = [(10, 1, None, "owner"), (11, 2, 1, "viewer"), (12, 2, 2, "owner"), (13, 3, 9, "editor")]
    for row in rows:
        empty_database.execute(
            "INSERT INTO member_roles (id, member_id, property_id, role) VALUES (?, ?, ?, ?)", *row
        )
    monkeypatch.undo()
    store = empty_database.open()
    assert 20 in {version for version, *_ in applied(empty_database)}
    assert (
        empty_database.rows("SELECT id, member_id, property_id, role FROM member_roles ORDER BY id")
        == rows[:3]
    )
    assert empty_database.rows(
        "SELECT actor, action, detail, property_id FROM audit_log ORDER BY id"
    ) == [("migration 0020", "member.role", "ghost: editor of #9 removed (no such property)", None)]
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        store.set_member_grant(2, Grant(9, "viewer"))
