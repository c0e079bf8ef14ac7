"""The gap report as a person sees it in Debian's Chromium: log in through the form, open
/reports/gap, read every number off the rendered page and compare it with the CLI's
``--format json`` on the same database; the charts render, the CSP blocks nothing, and a
screenshot is kept.

Two tests, so that a broken login and a wrong figure fail apart: the first drives the login
form itself; the second gets its session from the same login over HTTP (no Origin header) and
hands the cookie to Chromium, then checks everything a reader sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel import charts
from backchannel.report import SECTIONS
from dashboard.helpers import PASSWORD, seeded_gateway
from dashboard.test_gap_page import CLI_RANGE, Running, expected_figures
from report.test_gap import seed

pytestmark = pytest.mark.browser

QUERY = "from=2026-11-01&to=2026-11-30&switch_on=2026-11-15"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Running]:
    """The gap report's seeded SQLite store behind a real gateway, password set."""
    with seeded_gateway(tmp_path, seed) as gw:
        yield Running(gw.url, gw.settings.database_url, gw.admin_key, gw.http)


def test_form_login_opens_the_gap_report(browser: Any, gateway: Running) -> None:
    """Logged out, /reports/gap goes to the login form; the password brings Chromium back to
    the report with the same range."""
    page = browser.new_page()
    page.goto(f"{gateway.url}/reports/gap?{QUERY}")
    assert page.url.startswith(f"{gateway.url}/login")
    page.fill('input[name="name"]', "admin")
    page.fill('input[name="password"]', PASSWORD)
    with page.expect_navigation():
        page.click('button[type="submit"]')
    assert page.url == f"{gateway.url}/reports/gap?{QUERY}", page.content()[-600:]
    assert page.locator('[data-figure="total.orders"]').inner_text() == "8"


def session_cookie(gateway: Running) -> str:
    """Log in over HTTP exactly as the form does (form token + password)."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token, form.text
        done = client.post(
            "/login", data={"csrf_token": token[1], "name": "admin", "password": PASSWORD}
        )
        assert done.status_code == 303, done.text
        cookie = client.cookies.get("bc_session")
    assert cookie
    return cookie


def test_page_numbers_match_the_cli(browser: Any, gateway: Running, tmp_path: Path) -> None:
    """Every data-figure on the rendered page equals the CLI's JSON at its path; the six
    charts render at a readable size; no CSP violation; a full-page screenshot is saved."""
    browser.add_cookies([{"name": "bc_session", "value": session_cookie(gateway),
                          "url": gateway.url}])  # fmt: skip
    page = browser.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{gateway.url}/reports/gap?{QUERY}")
    assert page.title() == "Gap report · Backchannel"

    figures: dict[str, str] = {}
    for element in page.locator("[data-figure]").all():
        key = element.get_attribute("data-figure")
        assert key is not None
        assert key not in figures, key
        figures[key] = (element.text_content() or "").strip()
    data = orjson.loads(gateway.cli(*CLI_RANGE, "--format", "json"))
    assert figures == expected_figures(data)
    assert len(figures) > 250
    assert figures["total.recovered"] == "2"
    assert figures["after.coverage"] == "0.8"
    assert figures["breakdowns.pixel_status.blocked.orders"] == "2"
    # what a person reads in the headline: the percentage, next to the exact ratio
    card = page.locator(".card", has=page.locator('[data-figure="total.coverage"]'))
    assert "62.5%" in card.inner_text()

    names = charts.chart_names(SECTIONS)
    assert page.locator("figure.chart svg").count() == len(names)
    for name in names:
        box = page.locator(f'figure.chart[data-chart="{name}"] svg').bounding_box()
        assert box is not None, name
        assert box["width"] > 300, name
        assert box["height"] > 50, name
    bars = page.locator('figure.chart[data-chart="gap"] rect.bar')
    assert [bars.nth(i).get_attribute("data-value") for i in range(bars.count())] == [
        "8",
        "3",
        "3",
        "5",
    ]
    assert page.locator("details summary").inner_text() == "Per day (UTC)"
    assert violations == []
    shot = tmp_path / "gap-report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
