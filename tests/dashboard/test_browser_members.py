"""Team members as people meet them: Debian's Chromium, the login form, the dead-letters page.

The gateway of the members suite (tests/dashboard/test_members.py: two dead letters, a viewer
``vera`` and an editor ``ed`` of the default property). Each logs in through the visible form
(name and password) in a fresh profile: vera sees the dead letters and no replay button at
all; ed sees one per letter plus "Replay all", and replaying works. Screenshots land in
``tmp_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dashboard import test_members as members_suite
from dashboard.test_browser_connections import PNG_MAGIC, chromium
from dashboard.test_members import PASSWORDS, Team

pytestmark = pytest.mark.browser

team = members_suite.team  # the members suite's gateway (fixture)


def log_in(page: Any, url: str, name: str, path: str) -> None:
    """Open ``path``: the login form comes first (the page needs a member), then the page."""
    page.goto(f"{url}{path}")
    assert page.url.startswith(f"{url}/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}{path}")


@pytest.mark.parametrize(
    ("name", "role", "buttons"),
    [("vera", "viewer", 0), ("ed", "editor", 3)],  # ed: one per letter and "Replay all 2"
)
def test_the_replay_button_exists_for_an_editor_only(
    playwright_driver: Any, team: Team, tmp_path: Path, name: str, role: str, buttons: int
) -> None:
    """A viewer's dead-letters page has no replay button (none in the page at all); an
    editor's has them, and its replay re-queues the letter."""
    context = chromium(playwright_driver, tmp_path)
    try:
        page = context.new_page()
        log_in(page, team.url, name, "/admin/dead-letters")
        assert page.locator('[data-testid="who"]').inner_text() == f"{name} ({role})"
        assert page.locator('[data-figure="dead_total"]').inner_text() == "2"
        assert page.locator('[data-testid="dead-letters"] tbody tr').count() == 2
        replay = page.get_by_role("button", name=re.compile(r"^Replay"))
        assert replay.count() == buttons
        assert page.locator('form[action="/admin/dead-letters/replay"]').count() == buttons
        assert page.get_by_role("link", name="Members").count() == 0
        shot = tmp_path / f"dead-letters-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes().startswith(PNG_MAGIC)

        page.locator('[data-testid="dead-letters"] a').first.click()  # one letter in full
        page.wait_for_url(re.compile(r".*/admin/dead-letters/\d+$"))
        assert page.get_by_role("button", name="Replay").count() == (1 if buttons else 0)
        if buttons:
            page.get_by_role("button", name="Replay").click()
            page.wait_for_url(re.compile(r".*/admin/dead-letters\?replayed=1.*"))
            assert page.get_by_role("status").first.inner_text() == "Re-queued 1 delivery."
    finally:
        context.close()
    replays = team.rows("SELECT actor FROM audit_log WHERE action = 'replay'")
    assert replays == ([(f"member {name}",)] if buttons else [])
