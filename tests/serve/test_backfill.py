"""``backchannel backfill DEST --since …``: the past, queued on request for a destination
connected later; never on its own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from backchannel import credentials
from backchannel.store import open_store
from backchannel.store.base import Connection

from .helpers import Gateway
from .test_cli import Cli

HOUR = 3600


@pytest.fixture
def cli(gateway: Gateway, tmp_path: Path) -> Cli:
    """The CLI on the gateway's database and key."""
    assert gateway.settings.secret_key is not None
    return Cli(tmp_path, gateway.settings.database_url, gateway.settings.secret_key)


def connect_ga4(gateway: Gateway) -> None:
    cipher = credentials.load_cipher(gateway.settings)
    store = open_store(gateway.settings.database_url)
    try:
        store.set_connection(
            Connection(
                "ga4",
                "G-BACK1234",
                credentials.encrypt(cipher, "secret"),
                "cret",
                None,
                time.time(),
            )
        )
    finally:
        store.close()


def lead(n: int, age_hours: float, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event": "Lead",
        "event_id": f"lead-{n}",
        "event_time": int(time.time() - age_hours * HOUR),
        "user": {"ga_client_id": "111.222", "email": f"p{n}@example.com"},
    }
    item.update(overrides)
    return item


def test_backfill_queues_only_what_the_destination_still_takes(gateway: Gateway, cli: Cli) -> None:
    """Stored before GA4 was connected: inside GA4's 72 h window and not opted out or test,
    they are queued once; the older one is counted, not queued; a second run queues none."""
    events = [
        lead(1, 1),
        lead(2, 48),
        lead(3, 100),  # older than GA4's 72 h window
        lead(4, 2, opt_out=True),
        lead(5, 2, test_event_code="TEST1"),
    ]
    assert gateway.post({"events": events}).status_code == 202
    connect_ga4(gateway)
    assert gateway.counts("ga4") == {}  # connecting sends nothing by itself
    dry = cli("backfill", "ga4", "--since", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would queue 2" in dry.stdout
    assert "older than its window 1" in dry.stdout
    assert gateway.counts("ga4") == {}
    done = cli("backfill", "ga4", "--since", "7d")
    assert done.returncode == 0, done.stderr
    assert "queued 2" in done.stdout
    queued = sorted(r["event_id"] for r in gateway.outbox("ga4"))
    assert queued == ["lead-1", "lead-2"]
    assert gateway.counts("ga4") == {"pending": 2}
    again = cli("backfill", "ga4", "--since", "7d")
    assert "queued 0" in again.stdout
    assert gateway.counts("ga4") == {"pending": 2}


def test_backfill_since_bounds_what_is_read(gateway: Gateway, cli: Cli) -> None:
    """--since counts from when conversions were received: 30m after they arrived, all of
    them are inside; a bad duration or destination is a clear error."""
    assert gateway.post({"events": [lead(1, 1)]}).status_code == 202
    connect_ga4(gateway)
    assert "queued 1" in cli("backfill", "ga4", "--since", "30m").stdout
    bad = cli("backfill", "ga4", "--since", "two days")
    assert bad.returncode != 0
    assert "since" in bad.stderr
    assert "2d" in bad.stderr
    unknown = cli("backfill", "myspace")
    assert unknown.returncode != 0
    assert "known: tiktok, meta" in unknown.stderr
