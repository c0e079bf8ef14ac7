"""The Identifiers and Dedup pages as a person sees them: Debian's Chromium over loopback.

A real gateway (password set), a store seeded with both suites' seeds, a login through the
form, then every figure read off each page with ``[data-figure=…]`` and compared with the
JSON twin of the same range; screenshots land in ``tmp_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from backchannel.store import open_store
from dashboard.test_dedup import seed_dedup
from dashboard.test_identifiers import seed_identifiers
from hardening import conftest as hardening
from hardening.conftest import PASSWORD, StartApp

# fixtures: a gateway with a password set (hardening), Chromium with a fresh profile (browser)
start_app = hardening.start_app
stack = hardening.stack

pytestmark = pytest.mark.browser
QUERY = "from=2027-01-10&to=2027-01-15"


def shown(value: Any) -> str:
    """How the page prints a JSON number: bare, an em dash for None."""
    return "—" if value is None else str(value)


def read(page: Any, key: str) -> str:
    locator = page.locator(f'[data-figure="{key}"]')
    assert locator.count() == 1, key
    text: str = locator.inner_text()
    return text


def twin(app: hardening.App, path: str) -> dict[str, Any]:
    response = httpx.get(
        f"{app.url}{path}?{QUERY}",
        headers={"Authorization": f"Bearer {app.admin_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture
def app(start_app: StartApp) -> hardening.App:
    running = start_app()
    store = open_store(running.settings.database_url)
    try:
        seed_dedup(store)  # first: it drives every outbox row it finds
        seed_identifiers(store)
    finally:
        store.close()
    return running


def log_in(page: Any, app: hardening.App, path: str) -> None:
    """Open ``path`` logged out, land on the login form, log in, come back to ``path``.

    Nothing is rewritten on the way: the form's POST carries whatever Origin Chromium sends
    (under ``Referrer-Policy: no-referrer`` that was ``null``, and the login was refused).
    """
    page.goto(f"{app.url}{path}?{QUERY}")
    assert "/login" in page.url
    page.fill('input[name="name"]', "admin")
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(re.compile(re.escape(f"{path}?{QUERY}") + "$"))


def test_identifiers_page_matches_its_json(
    app: hardening.App, browser: Any, tmp_path: Path
) -> None:
    """Every share, score and advice gain on the page is the JSON twin's figure."""
    page = browser.new_page()
    failed: list[str] = []  # every resource the page needed loaded (favicon aside)
    page.on(
        "response",
        lambda r: failed.append(r.url) if r.status >= 400 and "favicon" not in r.url else None,
    )
    log_in(page, app, "/admin/identifiers")
    data = twin(app, "/admin/api/identifiers")
    assert data["conversions"] > 0
    checked = 0
    assert read(page, "conversions") == str(data["conversions"])
    assert read(page, "opted_out") == str(data["opted_out"])
    for event in data["events"]:
        name = event["event"]
        for key, value in event["identifiers"].items():
            text = read(page, f"share.{name}.{key}")
            assert text.rstrip("%") == shown(value["percent"]), (name, key)
            checked += 1
        assert read(page, f"stitched.{name}").rstrip("%") == shown(event["stitched"]["percent"])
        for destination, estimate in event["quality"].items():
            score = read(page, f"score.{destination}.{name}")
            assert score == shown(estimate["score"]), (name, destination)
            if estimate["advice"]:
                gain = read(page, f"gain.{destination}.{name}")
                assert gain == f"{estimate['advice'][0]['gain']:.1f}"
            checked += 2
    assert checked >= 30
    assert page.get_by_text("add click id (ttclid): +").count() >= 1
    # the stylesheet loaded (the CSP allows no inline style): the header is a flex row
    assert page.locator("header").evaluate("e => getComputedStyle(e).display") == "flex"
    page.screenshot(path=str(tmp_path / "identifiers.png"), full_page=True)
    assert (tmp_path / "identifiers.png").stat().st_size > 10_000
    assert failed == []


def test_dedup_page_matches_its_json(app: hardening.App, browser: Any, tmp_path: Path) -> None:
    """Each destination's summary figures and each order's verdict at each destination are
    the JSON twin's; mismatches alarm."""
    page = browser.new_page()
    log_in(page, app, "/admin/dedup")
    data = twin(app, "/admin/api/dedup")
    assert read(page, "orders") == str(data["orders"])
    assert data["destinations"] == ["tiktok", "meta"]
    for destination, summary in data["summary"].items():
        for verdict, figures in summary.items():
            key = f"dedup.{destination}.{verdict}"
            assert read(page, f"{key}.count") == str(figures["count"]), key
            assert read(page, key).rstrip("%") == shown(figures["percent"]), key
    assert data["summary"]["tiktok"]["mismatch"]["count"] == 2
    cells = page.locator("[data-testid=dedup] [data-verdict]")
    shown_cells = [
        (cells.nth(i).get_attribute("data-destination"), cells.nth(i).get_attribute("data-verdict"))
        for i in range(cells.count())
    ]
    assert shown_cells == [
        (d, r["verdicts"][d]) for r in data["rows"] for d in data["destinations"]
    ]
    alarm = page.get_by_role("alert")
    assert alarm.is_visible()
    assert "DIFFERENT id than the server leg at TikTok (2)" in alarm.inner_text()
    page.screenshot(path=str(tmp_path / "dedup.png"), full_page=True)
    # the filter form: pick "id mismatch" at TikTok and submit, as a person would
    page.select_option('select[name="status"]', "mismatch")
    page.select_option('select[name="destination"]', "tiktok")
    page.click('form.range button[type="submit"]')
    page.wait_for_url(re.compile(r"[?&]status=mismatch"))
    assert read(page, "matching") == "2"
    assert page.locator("[data-testid=dedup] [data-destination=tiktok]").count() == 2
    page.screenshot(path=str(tmp_path / "dedup-mismatch.png"), full_page=True)
    assert (tmp_path / "dedup.png").stat().st_size > 10_000
