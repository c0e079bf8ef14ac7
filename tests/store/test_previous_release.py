"""Upgrading a database written by the previous release (migration 0013, properties).

The database is built by the previous release's own code, taken from git history
(``git archive`` of :data:`PREVIOUS_RELEASE`) and run in a subprocess whose ``backchannel`` is
that code: its migrations, its ingest path (stitching, event routing, the order ledger), its
keys, its connections with an encrypted token, a route, a webhook secret, a landing session and
its Pixel mirror; some rows delivered, one dead-lettered, the rest pending. Then this release
opens it, which migrates it in place, and a real gateway with a worker runs on it against a
sandbox that takes the TikTok pixel only with the stored token:

- one property ``default`` holds everything: every row says so, the connections (with their
  token, pixel, route and suspension record) are its, and no route or suspension is left in
  the admin settings;
- the pending deliveries continue and reach the sandbox, each once, with the migrated token;
  the delivered ones are not sent again; the dead letter stays dead;
- the old ingest key still works (its events go to the same connections).

On SQLite (whose migration rebuilds tables) and PostgreSQL (which alters them in place).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from backchannel import credentials
from backchannel.config import Settings
from backchannel.delivery import RetryPolicy
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store.base import DEFAULT_PROPERTY, Store
from backchannel.web.app import Options, create_app
from serve.helpers import conversion, wait_for
from support.server import ServerThread

from .conftest import Database, PostgresDatabase, SqliteDatabase

#: the releases a user upgrades from: main's last commit before this work on properties began
#: (migrations up to 0011), and main as it was when properties were merged into it (0012,
#: 0015 and 0016 landed meanwhile: 0013 and 0017 apply after them)
PREVIOUS_RELEASES = {
    "0011": "d45814b0e2a646099a1aa65b711496d973992a8e",
    "0016": "5a4940bee1bb54b346fb95eea758b9681ee2132a",
}
REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtbG9uZy0xMjM="  # a Fernet key (32 bytes, b64)
TOKEN = "PREV-RELEASE-TOKEN-6c1d0a9b8e7f"
GA4_SECRET = "prevReleaseApiSecret42"
TIKTOK_PIXEL, META_PIXEL, GA4_ID = "CPREVPIXEL01", "556677889900", "G-PREV1234"
ORDERS = 6

#: what the previous release does, run with ITS code (argv: database URL, output file)
BUILD = f"""
import asyncio, json, sys, time
import backchannel
from backchannel import credentials, routing
from backchannel.config import Settings
from backchannel.ingest import ingest
from backchannel.routing import Routes
from backchannel.store import open_store
from backchannel.store.base import BrowserEvent, Connection, Dead, SessionUpdate
from backchannel.store.runner import AsyncStore
from backchannel.web.sources import api_ledger

url, out, where = sys.argv[1:4]
assert backchannel.__file__.startswith(where), backchannel.__file__
settings = Settings(database_url=url, secret_key={SECRET_KEY!r})
cipher = credentials.load_cipher(settings)
store = open_store(url)
now = time.time()
keys = {{}}
for name, scope in (("shop", "ingest"), ("site", "collect"), ("ops", "admin")):
    key = credentials.new_api_key(scope)
    store.add_key(name, scope, credentials.key_display_prefix(key), credentials.key_hash(key), now)
    keys[scope] = key
store.set_connection(Connection("tiktok", {TIKTOK_PIXEL!r},
    credentials.encrypt(cipher, {TOKEN!r}), {TOKEN[-4:]!r}, None, now))
store.set_connection(Connection("ga4", {GA4_ID!r},
    credentials.encrypt(cipher, {GA4_SECRET!r}), {GA4_SECRET[-4:]!r}, None, now))
store.set_connection(Connection("meta", {META_PIXEL!r}, None, None, "TEST123", now))
routing.store_route(store, "meta", ["CompletePayment"], now)
# GA4 paused for credentials it refused; these are not the ones stored now (replaced since)
store.set_admin_setting("suspended:ga4", json.dumps(
    {{"reason": "GA4 refused the secret", "since": now, "fingerprint": "not-these-ones"}}), now)
store.set_source_secret("shopify", credentials.encrypt(cipher, "shpss_previous_release"), now)
store.record_collect(
    [SessionUpdate("prev-session-1", now - 60, url="https://shop.example/?ttclid=E.C.P.prev",
                   landing=True, ttclid="E.C.P.prev", browser="Chrome")],
    [BrowserEvent("prev-session-1", "CompletePayment", "CompletePayment-prev-1", now - 30)],
)
items = json.loads(sys.stdin.read())
result = asyncio.run(ingest(
    items, AsyncStore(store, inline=True), now=now, default_region=None,
    destinations=("tiktok", "meta"), routes=Routes(("tiktok", "meta")),
    ledger=api_ledger(settings), stitch_window=7 * 86400.0,
))
assert result.accepted == len(items), result.as_dict()
tiktok = store.claim("tiktok", 3, now + 1, 120.0)
store.mark_delivered([c.outbox_id for c in tiktok[:2]], now + 2, "prev-ref")
store.mark_dead([Dead(tiktok[2].outbox_id, b'{{"sent": 1}}')], "refused by TikTok", None, None)
meta = store.claim("meta", 1, now + 1, 120.0)
store.mark_delivered([meta[0].outbox_id], now + 2, "prev-ref")
store.audit(now, "cli", "token.set", "tiktok pixel {TIKTOK_PIXEL}")
store.record_rejection("shopify", b'{{"error": "bad_signature"}}', now)
store.set_pixel_counts([("2026-01-01", "CompletePayment", 5)], now)
done = {{
    "keys": keys,
    "delivered": [c.outbox_id for c in tiktok[:2]] + [meta[0].outbox_id],
    "dead": tiktok[2].outbox_id,
    "conversions": store.conversion_count(),
    "outbox": store.outbox_counts(),
}}
store.close()
json.dump(done, open(out, "w"))
"""


def previous_release(tmp_path: Path, commit: str) -> Path:
    """A previous release's source tree, from git history."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src/backchannel"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert archive.returncode == 0, archive.stderr.decode()
    where = tmp_path / "previous"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(where, filter="data")
    return where / "src"


def database_url(database: Database) -> str:
    if isinstance(database, SqliteDatabase):
        return f"sqlite:///{database.path}"
    assert isinstance(database, PostgresDatabase)
    info = psycopg.conninfo.conninfo_to_dict(database.conninfo)
    user = info.get("user", "postgres")
    return f"postgresql://{user}@{info['host']}:{info['port']}/{info['dbname']}"


def build(tmp_path: Path, url: str, commit: str) -> dict[str, Any]:
    """Run a previous release on the database; what it reports it did."""
    source = previous_release(tmp_path, commit)
    out = tmp_path / "built.json"
    items = [
        conversion(
            f"prev-{n}",
            session_id="prev-session-1" if n == 1 else None,
            user={
                **conversion(0)["user"],
                "ga_client_id": f"{1000 + n}.1700000000",
            },
        )
        for n in range(1, ORDERS + 1)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env["PYTHONPATH"] = str(source)
    done = subprocess.run(
        [sys.executable, "-c", BUILD, url, str(out), str(source)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    built: dict[str, Any] = json.loads(out.read_text())
    return built


@pytest.mark.parametrize("release", sorted(PREVIOUS_RELEASES))
def test_a_previous_release_database_migrates_into_the_default_property(
    empty_database: Database, tmp_path: Path, release: str
) -> None:
    url = database_url(empty_database)
    built = build(tmp_path, url, PREVIOUS_RELEASES[release])
    assert built["conversions"] == ORDERS
    # the old schema had no properties
    assert ("properties",) not in [
        tuple(r)
        for r in empty_database.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            if empty_database.kind == "postgres"
            else "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    ]

    store: Store = empty_database.open()  # this release: migrates in place
    [default] = store.properties()
    assert (default.id, default.name) == (DEFAULT_PROPERTY, "default")
    for table in (
        "conversions",
        "orders",
        "landing_sessions",
        "browser_events",
        "ingest_rejections",
        "audit_log",
        "pixel_counts",
        "source_secrets",
        "connections",
    ):
        assert empty_database.rows(f"SELECT DISTINCT property_id FROM {table}") == [(1,)], table  # noqa: S608
    assert empty_database.rows("SELECT scope, property_id FROM api_keys ORDER BY id") == [
        ("ingest", 1),
        ("collect", 1),
        ("admin", None),
    ]
    assert empty_database.rows(
        "SELECT COUNT(*) FROM admin_settings WHERE name LIKE ? OR name LIKE ?",
        "route.%",
        "suspended:%",
    ) == [(0,)]
    # every outbox row names the default property's connection of its destination
    assert empty_database.rows(
        "SELECT COUNT(*) FROM outbox o JOIN connections c ON c.id = o.connection_id"
        " WHERE c.destination = o.destination AND c.property_id = 1 AND c.label = o.destination"
    ) == [(built["conversions"] * 3,)]
    tiktok = store.get_connection("tiktok")
    assert tiktok is not None
    assert tiktok.pixel == TIKTOK_PIXEL
    assert tiktok.token_encrypted is not None
    cipher = credentials.load_cipher(Settings(secret_key=SECRET_KEY))
    assert credentials.decrypt(cipher, tiktok.token_encrypted) == TOKEN
    meta = store.get_connection("meta")
    assert meta is not None
    assert (meta.routes, meta.test_event_code) == ('["CompletePayment"]', "TEST123")
    assert store.get_source_secret("shopify") is not None
    ga4 = store.get_connection("ga4")
    assert ga4 is not None
    assert ga4.suspension is not None
    assert json.loads(ga4.suspension)["reason"] == "GA4 refused the secret"
    # the old keys are the default property's
    for scope in ("ingest", "collect"):
        record = store.find_key(credentials.key_hash(built["keys"][scope]))
        assert record is not None
        assert record.property_id == DEFAULT_PROPERTY
    pending = {d: counts.get("pending", 0) for d, counts in store.outbox_counts().items()}
    assert pending == {"tiktok": ORDERS - 3, "meta": ORDERS - 1, "ga4": ORDERS}
    delivered_before = {
        str(r[0])
        for r in empty_database.rows(
            "SELECT c.event_id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE o.status = 'delivered' AND o.destination = 'tiktok'"
        )
    }
    assert len(delivered_before) == 2

    # a real gateway and worker on the migrated database
    sandbox_config = SandboxConfig(pixel_tokens={TIKTOK_PIXEL: TOKEN})
    with ServerThread(create_sandbox(sandbox_config)) as sandbox:
        settings = Settings(
            database_url=url,
            secret_key=SECRET_KEY,
            tiktok_base_url=sandbox.url,
            meta_base_url=sandbox.url,
            destination_urls={"ga4": sandbox.url},
        )
        options = Options(worker=True, sandbox=False, retry=RetryPolicy(base=0.05, cap=0.5))
        with ServerThread(create_app(settings, options)) as gateway:
            # the old ingest key still works, into the default property
            response = httpx.post(
                gateway.url + "/v1/events",
                json=conversion("after-upgrade"),
                headers={"Authorization": f"Bearer {built['keys']['ingest']}"},
                timeout=30,
            )
            assert response.status_code == 202, response.text

            def final() -> bool:
                counts = store.outbox_counts()
                return all(not c.get("pending") and not c.get("in_flight") for c in counts.values())

            wait_for(final, timeout=60, what="every pending row delivered")
        stats = {
            name: httpx.get(f"{sandbox.url}/_sandbox/{name}/stats").json()
            for name in ("tiktok", "meta", "ga4")
        }
        events = httpx.get(f"{sandbox.url}/_sandbox/tiktok/events", params={"limit": 100}).json()[
            "events"
        ]
    sent = sorted(e["event_id"] for e in events)
    dead = {
        str(r[0])
        for r in empty_database.rows(
            "SELECT c.event_id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE o.status = 'dead' AND o.destination = 'tiktok'"
        )
    }
    assert len(dead) == 1
    expected = {f"CompletePayment-prev-{n}" for n in range(1, ORDERS + 1)}
    # pending rows reached the sandbox once (with the migrated token), delivered ones not again
    assert sent == sorted(expected - delivered_before - dead | {"CompletePayment-after-upgrade"})
    assert stats["tiktok"]["by_pixel"] == {TIKTOK_PIXEL: ORDERS - 3 + 1}
    assert stats["tiktok"]["duplicates"] == 0
    assert stats["meta"]["accepted_events"] == ORDERS - 1 + 1
    assert stats["ga4"]["by_pixel"] == {GA4_ID: ORDERS}  # the new order has no GA client id
    assert empty_database.rows("SELECT status FROM outbox WHERE id = ?", built["dead"]) == [
        ("dead",)
    ]
    # the worker read the migrated suspension, saw the credentials replaced, resumed GA4
    resumed = store.get_connection("ga4")
    assert resumed is not None
    assert resumed.suspension is None
    # the new order without a GA client id is dead for GA4 at once (not sendable there)
    assert store.outbox_counts() == {
        "tiktok": {"delivered": ORDERS - 1 + 1, "dead": 1},
        "meta": {"delivered": ORDERS + 1},
        "ga4": {"delivered": ORDERS, "dead": 1},
    }
