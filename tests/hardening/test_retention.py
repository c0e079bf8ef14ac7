"""Retention: `backchannel purge` and `serve`'s hourly purge, on real SQLite and PostgreSQL.

The CLI runs as a subprocess against a database seeded through the store (old landing
sessions, old conversions in several delivery states, new ones of each); the tests then read
the database back through the store and, for payloads, behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from backchannel import retention
from backchannel.config import ConfigError, load
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.store import open_store
from backchannel.store.base import BrowserEvent, SessionRollup, SessionUpdate, Store
from backchannel.store.runner import for_store
from backchannel.web.app import Options, create_app
from serve.helpers import add_key, conversion, make_settings, wait_for
from support.server import ServerThread

DAY = 86400.0
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
EMAIL_HASH = "e" * 64


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (PostgreSQL: a fresh database on the test cluster)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/bc.db"
        return
    base = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("BACKCHANNEL_TEST_POSTGRES_URL is not set: run the suite with ./dev test")
    name = f"bc_retention_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the database behind the store's back (``?`` placeholders on both backends)."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query.replace("?", "%s"), params).fetchall()


def user_of(url: str, event_id: str) -> dict[str, Any]:
    [(payload,)] = rows(url, "SELECT payload FROM conversions WHERE event_id = ?", event_id)
    user: dict[str, Any] = orjson.loads(bytes(payload))["user"]
    return user


def cli(url: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    environ["BACKCHANNEL_DATABASE_URL"] = url
    environ.update({f"BACKCHANNEL_{k.upper()}": v for k, v in env.items()})
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=60,
        check=False,
    )


def record(order: int, destinations: tuple[str, ...]) -> Any:
    """A conversion exactly as ingest stores it (IP and user agent in the payload)."""
    normalized = normalize(conversion(order), now=time.time())
    return to_record(normalized.conversion, [], "api", destinations)


def seed(store: Store, now: float) -> None:
    """Two landing sessions and three conversions 40 days old; one of each from today."""
    old = now - 40 * DAY
    safari = {"ip": "81.2.69.160", "user_agent": IPHONE, "browser": "Safari", "os": "iOS"}
    store.record_collect(
        [
            SessionUpdate(
                "s-old-safari",
                old,
                ttclid="E.C.P.1",
                os_version="17.4",
                load_time_ms=3400,
                pixel_status="blocked",
                **safari,
            ),
            SessionUpdate(
                "s-old-chrome",
                old - 3600,
                gclid="Cj0KCQ-old-click",  # a Google Ads click: counted apart, like a ttclid
                ga_client_id="1234567890.1700000000",
                ip="81.2.69.161",
                user_agent="Mozilla/5.0 Chrome/126",
                browser="Chrome",
                os="Android",
                os_version="14",
                load_time_ms=700,
                pixel_status="loaded",
            ),
            SessionUpdate("s-today", now, ttclid="E.C.P.2", **safari),
        ],
        [
            BrowserEvent("s-old-safari", "CompletePayment", "CompletePayment-1", old),
            BrowserEvent("s-today", "CompletePayment", "CompletePayment-9", now),
        ],
    )
    store.attach_emails([("s-old-safari", EMAIL_HASH)], old)
    # 1: delivered; 2: still pending (held); 3: sent nowhere (opted out); 9: today
    store.insert_conversions([record(1, ("tiktok",)), record(3, ())], old)
    [claimed] = store.claim("tiktok", 1, old, 120.0)
    store.mark_delivered([claimed.outbox_id], old, "ref-1")
    store.insert_conversions([record(2, ("meta",))], old)
    store.insert_conversions([record(9, ("tiktok", "meta"))], now)


@pytest.fixture
def seeded(database_url: str) -> str:
    store = open_store(database_url)
    try:
        seed(store, time.time())
    finally:
        store.close()
    return database_url


class TestPurgeCommand:
    def test_dry_run_reports_and_removes_nothing(self, seeded: str, tmp_path: Path) -> None:
        """--dry-run prints the counts, including the held conversion, and changes nothing."""
        done = cli(seeded, tmp_path, "purge", "--older-than", "30d", "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "would purge 2 landing session(s)" in done.stdout
        assert "would scrub ip and user agent from 2 conversion(s)" in done.stdout
        assert "would delete 0 refused-input record(s) and remove the client ip from" in done.stdout
        assert "1 conversion(s) still waiting for delivery" in done.stdout
        store = open_store(seeded)
        try:
            assert store.get_session("s-old-safari") is not None
            assert store.session_rollups() == []
        finally:
            store.close()
        assert user_of(seeded, "CompletePayment-1")["ip"] == "81.2.69.160"

    def test_purge_removes_sessions_scrubs_conversions_and_keeps_counts(
        self, seeded: str, tmp_path: Path
    ) -> None:
        """Old sessions go (counted into rollups); old delivered/unsent conversions lose ip/ua."""
        done = cli(seeded, tmp_path, "purge", "--older-than", "30d")
        assert done.returncode == 0, done.stderr
        assert "purged 2 landing session(s)" in done.stdout
        assert "1 email hash(es) and 1 browser event(s)" in done.stdout
        assert "scrubbed ip and user agent from 2 conversion(s)" in done.stdout
        assert "deleted 0 refused-input record(s) and removed the client ip" in done.stdout
        store = open_store(seeded)
        try:
            assert store.get_session("s-old-safari") is None
            assert store.get_session("s-old-chrome") is None
            assert store.get_session("s-today") is not None
            assert store.session_emails("s-old-safari") == []
            assert store.browser_events(session_id="s-old-safari") == []
            assert len(store.browser_events(session_id="s-today")) == 1
            rollups = store.session_rollups()
        finally:
            store.close()
        assert {r.property_id for r in rollups} == {1}  # the default property's sessions
        assert [r.key[2:] for r in rollups] == [
            ("Chrome", "Android", "14", "<1s", "loaded", False, True),
            ("Safari", "iOS", "17", "2.5-5s", "blocked", True, False),
        ]
        # the click ids went with their sessions: only the yes/no of the rollup is left
        assert rows(seeded, "SELECT COUNT(*) FROM landing_sessions WHERE gclid IS NOT NULL") == [
            (0,)
        ]
        assert all(isinstance(r, SessionRollup) and r.sessions == 1 for r in rollups)
        for event_id in ("CompletePayment-1", "CompletePayment-3"):
            user = user_of(seeded, event_id)
            assert (user["ip"], user["user_agent"]) == (None, None)
            assert user["email"]
            assert user["ttclid"] == "E.C.P.123"
        assert user_of(seeded, "CompletePayment-9")["ip"] == "81.2.69.160"
        assert rows(seeded, "SELECT action FROM audit_log WHERE actor = 'cli'") == [("purge",)]

    def test_pending_conversions_keep_ip_until_delivered(self, seeded: str, tmp_path: Path) -> None:
        """A conversion still to deliver keeps ip/ua (the output says why) until delivered."""
        done = cli(seeded, tmp_path, "purge", "--older-than", "30d")
        assert "kept ip and user agent of 1 conversion(s) still waiting for delivery" in (
            done.stdout
        )
        assert user_of(seeded, "CompletePayment-2")["ip"] == "81.2.69.160"
        store = open_store(seeded)
        try:
            [claimed] = store.claim("meta", 1, time.time(), 120.0)  # the oldest: conversion 2
            store.mark_delivered([claimed.outbox_id], time.time(), "ref-2")
        finally:
            store.close()
        again = cli(seeded, tmp_path, "purge", "--older-than", "30d")
        assert again.returncode == 0, again.stderr
        assert "scrubbed ip and user agent from 1 conversion(s)" in again.stdout
        assert "still waiting" not in again.stdout
        assert user_of(seeded, "CompletePayment-2")["user_agent"] is None

    def test_window_defaults_to_the_setting_and_bad_windows_are_refused(
        self, seeded: str, tmp_path: Path
    ) -> None:
        """No --older-than uses retention_days; 0 days or a bad window exits 2 with the reason."""
        bad = cli(seeded, tmp_path, "purge", "--older-than", "30 weeks")
        assert bad.returncode == 2
        assert "--older-than" in bad.stderr
        assert "30d" in bad.stderr
        forever = cli(seeded, tmp_path, "purge", retention_days="0")
        assert forever.returncode == 2
        assert "keep forever" in forever.stderr
        wide = cli(seeded, tmp_path, "purge", "--dry-run", retention_days="60")
        assert wide.returncode == 0, wide.stderr
        assert "would purge 0 landing session(s)" in wide.stdout
        hours = cli(seeded, tmp_path, "purge", "--dry-run", "--older-than", "12h")
        assert "would purge 2 landing session(s)" in hours.stdout


class TestSetting:
    def test_retention_days_defaults_to_30_and_refuses_negatives(self) -> None:
        """The setting: 30 by default, 0 allowed (keep forever), negative refused."""
        assert load(env={}, config_path="/nonexistent.toml").retention_days == 30
        assert (
            load(env={"BACKCHANNEL_RETENTION_DAYS": "0"}, config_path="/none").retention_days == 0
        )
        with pytest.raises(ConfigError, match="retention_days"):
            load(env={"BACKCHANNEL_RETENTION_DAYS": "-1"}, config_path="/nonexistent.toml")

    def test_windows(self) -> None:
        """30d and 12h parse; zero and other units do not."""
        assert retention.parse_window("30d") == 30 * DAY
        assert retention.parse_window(" 12H ") == 12 * 3600
        for text in ("0d", "30", "2w", "-1d", "d"):
            with pytest.raises(ValueError, match="not a window"):
                retention.parse_window(text)


class TestServePurge:
    def _serve(self, tmp_path: Path, stack: ExitStack, **settings: Any) -> tuple[httpx.Client, str]:
        config = make_settings(tmp_path, **settings)
        key = add_key(config, "shop")
        store = open_store(config.database_url)
        try:
            seed(store, time.time())
        finally:
            store.close()
        app = create_app(config, Options(worker=False, sandbox=False, retention_every=0.2))
        server = stack.enter_context(ServerThread(app))
        http = stack.enter_context(
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
        )
        return http, config.database_url

    def test_serve_purges_in_the_background_and_keeps_ingesting(
        self, tmp_path: Path, stack: ExitStack
    ) -> None:
        """With retention_days set, serve purges on its own while ingest keeps answering."""
        http, url = self._serve(tmp_path, stack, retention_days=30)
        wait_for(
            lambda: rows(url, "SELECT COUNT(*) FROM landing_sessions")[0][0] == 1,
            what="the background purge",
        )
        assert rows(url, "SELECT SUM(sessions) FROM session_rollups") == [(2,)]
        wait_for(
            lambda: user_of(url, "CompletePayment-1")["ip"] is None, what="the conversion scrub"
        )
        assert http.post("/v1/events", json=conversion(77)).status_code == 202
        assert user_of(url, "CompletePayment-77")["ip"] == "81.2.69.160"  # new: kept
        assert ("retention", "purge") in rows(url, "SELECT actor, action FROM audit_log")

    def test_zero_days_keeps_everything(self, tmp_path: Path, stack: ExitStack) -> None:
        """retention_days = 0: no background purge at all."""
        _, url = self._serve(tmp_path, stack, retention_days=0)
        time.sleep(1.0)
        assert rows(url, "SELECT COUNT(*) FROM landing_sessions") == [(3,)]
        assert user_of(url, "CompletePayment-1")["ip"] == "81.2.69.160"


class TestChunks:
    async def test_purge_yields_to_the_loop_between_chunks(self, tmp_path: Path) -> None:
        """In chunks on serve's loop (SQLite runs inline): other tasks run between chunks."""
        store = open_store(f"sqlite:///{tmp_path}/bc.db")
        now = time.time()
        store.record_collect([SessionUpdate(f"s-{i:04}", now - 40 * DAY) for i in range(1000)], [])
        runner = for_store(store)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            report = await retention.purge(store, now - 30 * DAY, now, call=runner.run, chunk=100)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            runner.close()
        assert report.sessions == 1000
        assert ticks >= 10  # at least one turn of the loop per chunk
