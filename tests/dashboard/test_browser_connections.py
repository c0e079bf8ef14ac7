"""Connections and "Fire a test order" as a person does it: Debian's Chromium, a real login.

A real gateway with its worker delivering to a real sandbox (both uvicorn on loopback). The
browser logs in through the form, pastes a token into the TikTok connection, checks that the
page shows only its last four characters and that the token is nowhere in the page's HTML,
routes Meta to purchases only, fires a test order and waits on the auto-refreshing page until
both destinations say "delivered". Screenshots land in ``tmp_path``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from browser.conftest import CHROMIUM, CHROMIUM_ARGS
from dashboard import standin_destination as standin
from hardening import conftest as hardening
from hardening.conftest import PASSWORD, StartApp
from serve.helpers import META_PIXEL, TIKTOK_PIXEL

pytestmark = pytest.mark.browser

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

TOKEN = "browserPastedToken0123456789LAST"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def chromium(playwright_driver: Any, tmp_path: Path) -> Any:
    """Debian's Chromium with a fresh profile (never a downloaded browser)."""
    return playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=False,  # --headless=new is in CHROMIUM_ARGS
        args=CHROMIUM_ARGS,
    )


def log_in_to_connections(page: Any, url: str) -> None:
    """Open the Connections page: the login form first (the page needs an admin), then it."""
    page.goto(f"{url}/admin/connections")
    assert page.url.startswith(f"{url}/login")
    page.fill('input[name="name"]', "admin")
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{url}/admin/connections")


def test_connect_route_and_fire_a_test_order(
    playwright_driver: Any, start_app: StartApp, tmp_path: Path
) -> None:
    """Paste a token (only …LAST shown, never in the HTML), set codes and routes, fire a test
    order and watch the side-by-side page reach "delivered" for both destinations."""
    app = start_app(sandbox=True, worker=True)
    context = chromium(playwright_driver, tmp_path)
    htmls: list[str] = []
    try:
        page = context.new_page()
        failed: list[str] = []  # every 4xx/5xx the browser met, but the favicon it guesses
        page.on(
            "response",
            lambda r: (
                failed.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        log_in_to_connections(page, app.url)
        assert page.locator('[data-testid="mode-tiktok"]').inner_text() == "sandbox"

        tiktok = page.locator('[data-testid="connection-tiktok"]')
        tiktok.locator('input[name="pixel"]').fill(TIKTOK_PIXEL)
        tiktok.locator('input[name="test_event_code"]').fill("TT_BROWSER_1")
        tiktok.locator('input[name="token"]').fill(TOKEN)
        tiktok.locator('button[type="submit"]').click()
        page.wait_for_url(f"{app.url}/admin/connections?saved=tiktok*")
        assert page.locator('[data-testid="token-tiktok"]').inner_text() == "…LAST"
        assert page.locator('[data-testid="mode-tiktok"]').inner_text() == "live"
        assert (
            page.locator('[data-testid="connection-tiktok"] input[name="token"]').input_value()
            == ""
        )
        htmls.append(page.content())
        assert TOKEN not in htmls[-1]

        meta = page.locator('[data-testid="connection-meta"]')
        meta.locator('input[name="pixel"]').fill(META_PIXEL)
        meta.locator('input[name="test_event_code"]').fill("META_BROWSER_2")
        meta.locator('button[type="submit"]').click()
        page.wait_for_url(f"{app.url}/admin/connections?saved=meta*")

        routes = page.locator('[data-testid="routes-form-meta"]')
        routes.locator('input[name="all"]').uncheck()
        routes.locator('input[name="event"][value="CompletePayment"]').check()
        routes.locator('input[name="event"][value="Purchase"]').check()
        routes.locator('button[type="submit"]').click()
        page.wait_for_url(f"{app.url}/admin/connections?saved=meta*")
        assert (
            page.locator('[data-testid="routes-meta"]').inner_text() == "CompletePayment, Purchase"
        )
        assert page.locator('[data-testid="routes-tiktok"]').inner_text() == "all events"
        htmls.append(page.content())
        connections_png = tmp_path / "connections.png"
        page.screenshot(path=str(connections_png), full_page=True)
        assert connections_png.read_bytes().startswith(PNG_MAGIC)

        page.click('nav a[href="/admin/test-events"]')
        page.wait_for_url(f"{app.url}/admin/test-events")
        page.click('button:has-text("Fire a test order")')
        page.wait_for_url(f"{app.url}/admin/test-events/*")
        deadline = time.monotonic() + 30
        while True:  # the page reloads itself (meta refresh) until every row is final
            tiktok_status = page.locator('[data-testid="status-tiktok"]').inner_text()
            meta_status = page.locator('[data-testid="status-meta"]').inner_text()
            if tiktok_status == meta_status == "delivered":
                break
            assert time.monotonic() < deadline, (tiktok_status, meta_status)
            page.wait_for_timeout(500)
        assert "TT_BROWSER_1" in page.locator('[data-testid="result-tiktok"]').inner_text()
        assert "META_BROWSER_2" in page.locator('[data-testid="result-meta"]').inner_text()
        assert "sha256 …" in page.locator('[data-testid="identifiers-tiktok"]').inner_text()
        assert '"code": 0' in page.locator('[data-testid="answered-tiktok"]').inner_text()
        htmls.append(page.content())
        test_png = tmp_path / "test-order.png"
        page.screenshot(path=str(test_png), full_page=True)
        assert test_png.read_bytes().startswith(PNG_MAGIC)
        assert failed == []
    finally:
        context.close()
    assert not any(TOKEN in html for html in htmls)
    with httpx.Client(base_url=app.sandbox_url or "", timeout=30) as sandbox:
        tiktok_events = sandbox.get("/_sandbox/tiktok/events").json()["events"]
        meta_events = sandbox.get("/_sandbox/meta/events").json()["events"]
    assert [e["_test_event_code"] for e in tiktok_events] == ["TT_BROWSER_1"]
    assert [e["_test_event_code"] for e in meta_events] == ["META_BROWSER_2"]


@pytest.mark.parametrize("destination", standin.with_extras())
def test_fill_and_save_a_destination_with_extras(
    playwright_driver: Any,
    start_app: StartApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    destination: str,
) -> None:
    """The generated form of a destination with more than pixel and token (Google Ads once it
    is registered, else the test-only stand-in): fill every declared field, save, see it live
    with the plain values shown and the secrets only as "set", save again with the secret
    fields left empty (kept), and find no secret in any page."""
    spec = standin.use(monkeypatch, destination)
    app = start_app(sandbox=True)
    values = {c.key: standin.sample(c, salt="B") for c in spec.CREDENTIALS}
    secrets = [values[c.key] for c in spec.CREDENTIALS if c.secret]
    context = chromium(playwright_driver, tmp_path)
    htmls: list[str] = []
    try:
        page = context.new_page()
        log_in_to_connections(page, app.url)
        mode = page.locator(f'[data-testid="mode-{spec.name}"]')
        assert mode.inner_text() == "off — not connected"
        form = page.locator(f'[data-testid="connection-{spec.name}"]')
        for credential in spec.CREDENTIALS:
            field = form.locator(f'[name="{credential.key}"]')
            assert field.get_attribute("type") == ("password" if credential.secret else "text")
            field.fill(values[credential.key])
        form.locator('button[type="submit"]').click()
        page.wait_for_url(f"{app.url}/admin/connections?saved={spec.name}*")
        assert mode.inner_text() == "live"
        assert page.locator(f'[data-testid="token-{spec.name}"]').inner_text() == (
            "…" + values["token"][-4:]
        )
        for credential in spec.CREDENTIALS:
            if credential.key in ("pixel", "token"):
                continue
            shown = page.locator(f'[data-testid="setting-{spec.name}-{credential.key}"]')
            assert shown.inner_text() == ("set" if credential.secret else values[credential.key])
            field = form.locator(f'[name="{credential.key}"]')
            assert field.input_value() == ("" if credential.secret else values[credential.key])
        htmls.append(page.content())

        form.locator('button[type="submit"]').click()  # secrets left empty: kept
        page.wait_for_url(f"{app.url}/admin/connections?saved={spec.name}*")
        assert mode.inner_text() == "live"
        htmls.append(page.content())
        page.screenshot(path=str(tmp_path / "extras.png"), full_page=True)
    finally:
        context.close()
    for html in htmls:
        assert not any(secret in html for secret in secrets)
    target = app.asgi.state.backchannel["targets"].resolve(spec.name).target
    assert target.token == values["token"]
    assert dict(target.secrets) == {
        c.key: values[c.key] for c in spec.CREDENTIALS if c.secret and c.key != "token"
    }


GA4_ID, GA4_SECRET = "G-BROWSER123", "ga4-secret-in-the-browser"
ADS = {
    "pixel": "1234567890",
    "token": "developer-token-browser",
    "client_id": "browser-client.apps.googleusercontent.com",
    "client_secret": "client-secret-browser",
    "refresh_token": "1//refresh-browser",
    "conversion_actions": "CompletePayment=customers/1234567890/conversionActions/99",
}


def test_connect_ga4_and_google_ads_and_fire_a_test_order_to_four_sandboxes(
    playwright_driver: Any, start_app: StartApp, tmp_path: Path
) -> None:
    """Issue 13's done test, as a person does it: connect GA4 and Google Ads on the
    Connections page, fire a test order, see it reach all four sandboxes, each with its own
    keys (TikTok and Meta in sandbox mode, GA4 at its validation endpoint with the
    measurement id and secret, Google Ads with validateOnly under the customer id)."""
    app = start_app(sandbox=True, worker=True)
    context = chromium(playwright_driver, tmp_path)
    htmls: list[str] = []
    try:
        page = context.new_page()
        log_in_to_connections(page, app.url)
        for name, values in (("ga4", {"pixel": GA4_ID, "token": GA4_SECRET}), ("google_ads", ADS)):
            assert page.locator(f'[data-testid="mode-{name}"]').inner_text() == (
                "off — not connected"
            )
            form = page.locator(f'[data-testid="connection-{name}"]')
            for key, value in values.items():
                form.locator(f'[name="{key}"]').fill(value)
            form.locator('button[type="submit"]').click()
            page.wait_for_url(f"{app.url}/admin/connections?saved={name}*")
            assert page.locator(f'[data-testid="mode-{name}"]').inner_text() == "live"
            htmls.append(page.content())
        page.wait_for_timeout(5500)  # the worker starts lanes for new connections (5 s)
        page.click('nav a[href="/admin/test-events"]')
        page.wait_for_url(f"{app.url}/admin/test-events")
        page.click('button:has-text("Fire a test order")')
        page.wait_for_url(f"{app.url}/admin/test-events/*")
        deadline = time.monotonic() + 40
        names = ("tiktok", "meta", "ga4", "google_ads")
        while True:  # the page reloads itself (meta refresh) until every row is final
            statuses = {n: page.locator(f'[data-testid="status-{n}"]').inner_text() for n in names}
            if set(statuses.values()) == {"delivered"}:
                break
            assert time.monotonic() < deadline, statuses
            page.wait_for_timeout(500)
        htmls.append(page.content())
        page.screenshot(path=str(tmp_path / "four.png"), full_page=True)
    finally:
        context.close()
    secrets = [GA4_SECRET, ADS["token"], ADS["client_secret"], ADS["refresh_token"]]
    assert not any(secret in html for html in htmls for secret in secrets)
    with httpx.Client(base_url=app.sandbox_url or "", timeout=30) as sandbox:
        events = {n: sandbox.get(f"/_sandbox/{n}/events").json()["events"] for n in names}
        ga4_stats = sandbox.get("/_sandbox/ga4/stats").json()
    assert len(events["tiktok"]) == len(events["meta"]) == 1
    assert events["ga4"] == []  # a test order is only validated: GA4 keeps nothing
    assert ga4_stats["by_code"] == {"debug": 1}
    [ads] = events["google_ads"]
    assert ads["_pixel"] == ADS["pixel"]
    assert ads["_test_event_code"] == "validateOnly"
    assert ads["conversionAction"] == "customers/1234567890/conversionActions/99"
