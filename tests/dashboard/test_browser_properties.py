"""Another property and one's own password as a person meets them: Debian's Chromium.

The gateway and members of tests/dashboard/test_property_links.py (SQLite here; the HTTP
tests run both backends). otto (viewer of eu and beta, nothing on default) logs in through
the form and lands on beta, switches to eu and clicks through the links that used to drop
the property: the overview's dead-letter "list", the dead-letter pager, the Dedup pager, the
gap report's downloads. vera changes her password through the form. Screenshots land in
``tmp_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dashboard import test_property_links as links_suite
from dashboard.test_browser_connections import PNG_MAGIC, chromium
from dashboard.test_members import log_in as http_log_in
from dashboard.test_property_links import EU_DEAD, PASSWORDS, Site

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("database", ["sqlite"], indirect=True)]

site = links_suite.site  # the fixture


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def log_in(page: Any, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/admin")
    assert page.url.startswith(f"{url}/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def current(page: Any) -> str:
    text: str = page.locator('[data-testid="current-property"]').inner_text()
    return text


def test_a_member_of_other_properties_lands_on_theirs_and_stays(
    playwright_driver: Any, site: Site, tmp_path: Path
) -> None:
    context = chromium(playwright_driver, tmp_path)
    try:
        page = context.new_page()
        log_in(page, site.url, "otto", PASSWORDS["otto"])
        page.wait_for_url(f"{site.url}/admin?property=beta")  # first by name, no 403
        assert current(page) == "beta"

        page.locator('[data-testid="property-switcher"] a[data-property="eu"]').click()
        page.wait_for_url(re.compile(r".*/admin\?property=eu$"))
        assert current(page) == "eu"

        page.get_by_role("link", name="list").click()  # the overview's dead Meta letters
        page.wait_for_url(re.compile(r".*/admin/dead-letters\?.*"))
        assert query(page.url) == {"destination": ["meta"], "property": ["eu"]}
        assert page.locator('[data-figure="dead_total"]').inner_text() == str(EU_DEAD)
        page.get_by_role("link", name="older →").click()
        page.wait_for_url(re.compile(r".*/admin/dead-letters\?.*page=2.*"))
        assert query(page.url)["property"] == ["eu"]
        assert current(page) == "eu"
        assert page.locator('[data-testid="dead-letters"] tbody tr').count() == EU_DEAD - 50

        page.locator("header nav").get_by_role("link", name="Dedup").click()
        page.wait_for_url(re.compile(r".*/admin/dedup\?property=eu$"))
        page.get_by_role("link", name="Older").click()
        page.wait_for_url(re.compile(r".*/admin/dedup\?.*page=2.*"))
        assert query(page.url)["property"] == ["eu"]
        assert page.locator('[data-figure="page"]').inner_text() == "2"
        assert current(page) == "eu"

        page.locator("header nav").get_by_role("link", name="Gap report").click()
        page.wait_for_url(re.compile(r".*/reports/gap\?property=eu$"))
        downloads = page.locator('main a[href^="/reports/gap"]')
        hrefs = [downloads.nth(i).get_attribute("href") for i in range(downloads.count())]
        assert len(hrefs) >= 3, hrefs  # JSON, CSV and at least one chart
        assert all(query(str(h))["property"] == ["eu"] for h in hrefs), hrefs
        page.get_by_role("link", name="JSON", exact=True).click()
        assert query(page.url)["property"] == ["eu"]
        shot = tmp_path / "gap-json-eu.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(PNG_MAGIC)
    finally:
        context.close()


def test_a_member_changes_their_password_in_the_form(
    playwright_driver: Any, site: Site, tmp_path: Path
) -> None:
    """vera opens "Password" from the header; a wrong current password is an alert naming
    it; the right one changes it (the page says so, she stays logged in); after logging out
    only the new password logs in."""
    new = "vera's password from the browser"
    context = chromium(playwright_driver, tmp_path)
    try:
        page = context.new_page()
        log_in(page, site.url, "vera", PASSWORDS["vera"])
        page.wait_for_url(f"{site.url}/admin")
        page.get_by_test_id("change-password").click()
        page.wait_for_url(f"{site.url}/admin/password")
        page.get_by_label("Current password").fill("not my password at all")
        page.get_by_label("New password (at least 12 characters)").fill(new)
        page.get_by_label("New password again").fill(new)
        page.get_by_role("button", name="Change password").click()
        alert = page.get_by_role("alert")
        assert alert.inner_text() == "current_password: wrong password"

        page.get_by_label("Current password").fill(PASSWORDS["vera"])
        page.get_by_label("New password (at least 12 characters)").fill(new)
        page.get_by_label("New password again").fill(new)
        page.get_by_role("button", name="Change password").click()
        page.wait_for_url(f"{site.url}/admin/password?done=1")
        assert page.get_by_role("status").first.inner_text().startswith("Password changed.")
        shot = tmp_path / "password-changed.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(PNG_MAGIC)
        page.get_by_role("link", name="Overview").click()  # still logged in
        page.wait_for_url(f"{site.url}/admin")
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(re.compile(r".*/login.*"))
        log_in(page, site.url, "vera", new)
        page.wait_for_url(f"{site.url}/admin")
        assert page.locator('[data-testid="who"]').inner_text() == "vera (viewer)"
    finally:
        context.close()
    with httpx.Client(base_url=site.url) as client:
        assert http_log_in(client, "vera", PASSWORDS["vera"]).status_code == 401
