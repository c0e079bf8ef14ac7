"""Shared by the Serve tests: valid conversions, a deadline poller, handles on the servers.

The handles are thin: :class:`Gateway` reads the SQLite file with :mod:`sqlite3` directly (so
tests see what is on disk, not what the store reports) and :class:`Sandbox` wraps the
emulator's inspection and fault API over HTTP.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.fernet import Fernet

from backchannel import credentials
from backchannel.config import Settings
from backchannel.delivery import RetryPolicy
from backchannel.store import open_store

T = TypeVar("T")

TIKTOK_PIXEL = "CSERVETESTPIXEL"
META_PIXEL = "998877665544"
EMAIL = " Jane.Doe@Example.com "
EMAIL_NORMALIZED = "jane.doe@example.com"
PHONE = "+1 415 555 2671"
PHONE_E164 = "+14155552671"
PHONE_DIGITS = "14155552671"  # Meta: E.164 digits without "+"
PHONE_NATIONAL = "4155552671"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) ServeSuite/1.0"
FAST_RETRY = RetryPolicy(base=0.05, cap=0.5)


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def wait_for(
    probe: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something truthy; fail with its last value on timeout."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
        last = probe()
    return last


def conversion(order: int | str, **overrides: Any) -> dict[str, Any]:
    """A valid CompletePayment that both sandboxes accept (web: page.url and user_agent set)."""
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": order,
        "value": 59.9,
        "currency": "USD",
        "contents": [{"id": "SKU-1", "quantity": 2, "price": 29.95}],
        "user": {
            "email": EMAIL,
            "phone": PHONE,
            "ip": "81.2.69.160",
            "user_agent": USER_AGENT,
        },
        "page": {"url": f"https://shop.example/thanks?order={order}&ttclid=E.C.P.123"},
    }
    item.update(overrides)
    return item


# --- the sandbox ----------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A running sandbox and a client of its inspection and fault API."""

    url: str
    http: httpx.Client

    def stats(self, destination: str) -> dict[str, Any]:
        response = self.http.get(f"/_sandbox/{destination}/stats")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def events(self, destination: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 10_000)
        response = self.http.get(f"/_sandbox/{destination}/events", params=params)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def faults(self, payload: dict[str, Any]) -> None:
        response = self.http.post("/_sandbox/faults", json=payload)
        assert response.status_code == 200, response.text

    def clear_faults(self) -> None:
        response = self.http.delete("/_sandbox/faults")
        assert response.status_code == 200, response.text


# --- the gateway ----------------------------------------------------------------------------


@dataclass
class Gateway:
    """A running Backchannel app, its database file and an authenticated client."""

    url: str
    settings: Settings
    db_path: Path
    key: str
    http: httpx.Client

    def post(self, body: Any, *, params: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post("/v1/events", json=body, params=params)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the SQLite file directly (a fresh connection: sees every commit)."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def outbox(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows joined with their conversion's event and event_id."""
        sql = (
            "SELECT o.id, c.event, c.event_id, o.destination, o.status, o.attempts,"
            " o.last_error, o.last_response, o.platform_ref, o.sent_body, o.failed_at"
            " FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        )
        params: tuple[Any, ...] = ()
        if destination is not None:
            sql += " WHERE o.destination = ?"
            params = (destination,)
        names = (
            "id",
            "event",
            "event_id",
            "destination",
            "status",
            "attempts",
            "last_error",
            "last_response",
            "platform_ref",
            "sent_body",
            "failed_at",
        )
        return [
            dict(zip(names, row, strict=True)) for row in self.query(sql + " ORDER BY o.id", params)
        ]

    def counts(self, destination: str) -> dict[str, int]:
        rows = self.query(
            "SELECT status, COUNT(*) FROM outbox WHERE destination = ? GROUP BY status",
            (destination,),
        )
        return dict(rows)

    def raw_bytes(self) -> bytes:
        """Every byte SQLite keeps for this database: the file, its WAL and shared memory."""
        data = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(str(self.db_path) + suffix)
            if path.exists():
                data += path.read_bytes()
        return data


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/bc.db",
        "secret_key": Fernet.generate_key().decode(),
    }
    values.update(overrides)
    return Settings(**values)


def add_key(
    settings: Settings,
    name: str,
    scope: str = "ingest",
    role: str | None = None,
    *,
    allow_null_origin: bool = False,
) -> str:
    """Create an API key straight in the store, as `backchannel keys create` does (an admin
    key is an owner of every property unless ``role`` says otherwise)."""
    key = credentials.new_api_key(scope)
    store = open_store(settings.database_url)
    try:
        store.add_key(
            name,
            scope,
            credentials.key_display_prefix(key),
            credentials.key_hash(key),
            time.time(),
            allow_null_origin=allow_null_origin,
            role=(role or "owner") if scope == "admin" else None,
        )
    finally:
        store.close()
    return key


def db_path(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


@dataclass
class Deployment:
    gateway: Gateway
    sandbox: Sandbox


StartDeployment = Callable[..., Deployment]
