"""The overview and dead letters as a person sees them: Debian's Chromium, a real login.

A real gateway (uvicorn on loopback, no worker: replayed rows stay pending for the check) on
the store seeded by :func:`dashboard.test_overview.seed`. The browser logs in through the
form, reads every ``[data-figure]`` of the overview and compares it with the JSON twin
fetched with an admin API key; then opens a dead letter, clicks Replay, reads the message and
checks the row in the store. Screenshots land in ``tmp_path``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backchannel.store import open_store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from browser.conftest import CHROMIUM, CHROMIUM_ARGS
from dashboard.test_overview import PASSWORD, seed
from serve.helpers import add_key, make_settings
from support.server import ServerThread

pytestmark = pytest.mark.browser

RANGE = "from=2027-01-13&to=2027-01-14"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def expected_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON twin's totals and latencies under the page's ``data-figure`` keys."""
    totals = doc["totals"]
    keys: dict[str, Any] = {"received": totals["received"], "test_events": totals["test_events"]}
    for d in doc["destinations"]:
        for name in ("delivered", "queue", "retrying", "dead", "expired"):
            keys[f"{name}.{d}"] = totals[name][d]
        for name, value in doc["latency"][d].items():
            keys[f"latency.{d}.{name}"] = value
    for event, counts in doc["received"].items():
        for label, n in zip(doc["buckets"], counts, strict=True):
            keys[f"received.{event}.{label}"] = n
    for d, per_event in doc["delivered"].items():
        for event, counts in per_event.items():
            for label, n in zip(doc["buckets"], counts, strict=True):
                keys[f"delivered.{d}.{event}.{label}"] = n
    return keys


def as_number(text: str) -> int | float | None:
    if text == "—":
        return None
    return float(text) if "." in text else int(text)


def test_overview_figures_match_the_json_and_replay_works(
    playwright_driver: Any, tmp_path: Path
) -> None:
    """Logged in through the form: page figures equal the JSON twin; Replay re-queues."""
    settings = make_settings(tmp_path)
    admin_key = add_key(settings, "ops", scope="admin")
    store = open_store(settings.database_url)
    try:
        seed(store)
        set_password(store, PASSWORD, time.time())
        ((dead_id,),) = store.read(
            "SELECT o.id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE c.event_id = 'CompletePayment-2' AND o.destination = 'meta'"
        )
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        doc = http.get(
            f"/admin/api/overview?{RANGE}", headers={"Authorization": f"Bearer {admin_key}"}
        ).json()
        context = playwright_driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=False,  # --headless=new is in CHROMIUM_ARGS
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

            page.goto(f"{server.url}/admin?{RANGE}")
            assert page.url.startswith(f"{server.url}/login")
            page.fill('input[name="name"]', "admin")
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            page.wait_for_load_state()
            assert page.url == f"{server.url}/admin?{RANGE}", (page.url, page.content()[:3000])

            shown = {
                element.get_attribute("data-figure"): element.inner_text()
                for element in page.locator("[data-figure]").all()
            }
            wanted = expected_figures(doc)
            assert len(wanted) > 30
            for key, value in wanted.items():
                assert as_number(shown[key]) == value, key
            assert shown["received"] == "5"
            assert shown["latency.tiktok.p90"] == "60.0"
            assert page.locator('a[href="/admin/test-events"]').count() >= 1
            overview_png = tmp_path / "overview.png"
            page.screenshot(path=str(overview_png), full_page=True)

            page.click('nav a[href="/admin/dead-letters"]')
            page.wait_for_url(f"{server.url}/admin/dead-letters")
            page.click(f'a[href="/admin/dead-letters/{dead_id}"]')
            page.wait_for_url(f"{server.url}/admin/dead-letters/{dead_id}")
            assert (
                '"event_id": "CompletePayment-2"'
                in page.locator('[data-testid="sent-body"]').inner_text()
            )
            assert "<script>" in page.locator('[data-testid="response"]').inner_text()
            detail_png = tmp_path / "dead-letter.png"
            page.screenshot(path=str(detail_png), full_page=True)

            page.click('main form[action="/admin/dead-letters/replay"] button')
            page.wait_for_url(f"{server.url}/admin/dead-letters?replayed=1&destination=meta")
            assert page.locator('[role="status"]').first.inner_text() == "Re-queued 1 delivery."
        finally:
            context.close()

    store = open_store(settings.database_url)
    try:
        rows = store.read(
            "SELECT o.status, o.attempts FROM outbox o WHERE o.id = ?", (int(dead_id),)
        )
        audit = store.read("SELECT actor, action FROM audit_log WHERE action = 'replay'")
    finally:
        store.close()
    assert rows == [("pending", 0)]
    assert audit == [("member admin", "replay")]
    for png in (overview_png, detail_png):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000
    assert not [line for line in console if "Content Security Policy" in line], console
