"""What only the PostgreSQL store does: LISTEN/NOTIFY wake-ups, opening by URL, its errors.

The behaviour both backends share is in test_contract.py; these tests cover the promises the
PostgreSQL store makes on top (see the module docstring of ``backchannel.store.postgres``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from backchannel.store import open_store
from backchannel.store.base import DEFAULT_PROPERTY, Connection, Dead, LedgerEntry, Store
from backchannel.store.postgres import NOTIFY_CHANNEL, PostgresStore

from .conftest import Database, PostgresDatabase, PostgresServer
from .helpers import LEASE, NOW, conversion

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgres"], indirect=True),
]


def _listen(database: Database) -> psycopg.Connection[tuple[Any, ...]]:
    assert isinstance(database, PostgresDatabase)
    listener = psycopg.connect(database.conninfo, autocommit=True)
    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return listener


def _heard(listener: psycopg.Connection[tuple[Any, ...]], expected: int = 0) -> list[str]:
    """Payloads of the notifications that arrive: ``expected`` of them, or none in 0.3 s."""
    if expected:
        heard = listener.notifies(timeout=5, stop_after=expected)
    else:
        heard = listener.notifies(timeout=0.3)
    return sorted(n.payload for n in heard)


def test_notify_channel_is_public(database: Database) -> None:
    assert PostgresStore.notify_channel == NOTIFY_CHANNEL == "backchannel_outbox"


def _id(store: Store, label: str, property_id: int = DEFAULT_PROPERTY) -> str:
    """The notification payload of a connection: its id."""
    connection = store.get_connection(label, property_id)
    assert connection is not None
    return str(connection.id)


def test_ingest_notifies_once_per_connection_at_commit(database: Database, store: Store) -> None:
    with _listen(database) as listener:
        store.insert_conversions([conversion(n) for n in range(50)], NOW)
        assert _heard(listener, 2) == sorted([_id(store, "meta"), _id(store, "tiktok")])
        store.insert_conversions([conversion(1), conversion(2)], NOW)  # duplicates only
        store.insert_conversions([conversion(99, destinations=())], NOW)  # nothing to send
        store.insert_conversions([conversion(100, destinations=("meta",))], NOW)
        assert _heard(listener, 1) == [_id(store, "meta")]
        assert _heard(listener) == []  # and nothing for the duplicates or the empty one
        # a second TikTok pixel of the same property is its own lane: its own notification
        store.set_connection(Connection("tiktok", "PIXEL2", None, None, None, NOW, label="eu"))
        store.insert_conversions([conversion(101, destinations=("eu",))], NOW)
        assert _heard(listener, 1) == [_id(store, "eu")]


def test_failed_ingest_notifies_nobody(database: Database, store: Store) -> None:
    with _listen(database) as listener:
        broken = conversion(2)  # its ledger row fails on the server, after the rows and NOTIFY
        broken.ledger = LedgerEntry("api", "2", None, None, None, None, None, None, False, b"{}")  # type: ignore[arg-type]
        with pytest.raises(psycopg.Error):
            store.insert_conversions([conversion(1), broken], NOW)
        assert _heard(listener) == []


def test_replay_notifies_the_destinations_it_requeued(database: Database, store: Store) -> None:
    store.insert_conversions([conversion(1)], NOW)
    (claimed,) = store.claim("meta", 10, NOW, LEASE)
    store.mark_dead([Dead(claimed.outbox_id, b"{}")], "refused", None, None)
    with _listen(database) as listener:
        assert store.replay(NOW, destination="tiktok") == 0
        assert _heard(listener) == []
        assert store.replay(NOW) == 1
        assert _heard(listener, 1) == [_id(store, "meta")]


def test_open_store_accepts_postgresql_urls(database: Database, pg_server: PostgresServer) -> None:
    assert isinstance(database, PostgresDatabase)
    name = psycopg.conninfo.conninfo_to_dict(database.conninfo)["dbname"]
    for scheme in ("postgresql", "postgres"):
        url = urlsplit(pg_server.url)._replace(scheme=scheme, path=f"/{name}").geturl()
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert store.conversion_count() == 0
        finally:
            store.close()


def test_an_unreachable_server_fails_fast_without_the_password(database: Database) -> None:
    secret = "s3cret-Passw0rd"
    with pytest.raises(psycopg.OperationalError) as failure:
        PostgresStore(f"postgresql://backchannel:{secret}@127.0.0.1:1/backchannel")
    assert secret not in str(failure.value)
