"""A member changes their own password (``/admin/password``), over real HTTP, both backends:
the current password is required, the new one twice with the CLI's rules, CSRF-protected,
audited; the member's other sessions end and this one goes on; a wrong current password is
a failed login (audited so, and counted by the login throttle).

The gateway and members of tests/dashboard/test_property_links.py (vera: viewer of default;
otto: viewer of eu and beta, nothing on default).
"""

from __future__ import annotations

import html
from typing import Any

import httpx

from backchannel.passwords import verify_password
from backchannel.store import open_store
from dashboard import test_property_links as links_suite
from dashboard.test_members import csrf, log_in
from dashboard.test_property_links import PASSWORDS, Site

site = links_suite.site  # the fixture: both backends
NEW = "vera's brand new password"


def rows(site: Site, sql: str) -> list[tuple[Any, ...]]:
    store = open_store(site.database_url)
    try:
        return store.read(sql, ())
    finally:
        store.close()


def password_hash(site: Site, name: str) -> str:
    store = open_store(site.database_url)
    try:
        member = store.member_by_name(name)
    finally:
        store.close()
    assert member is not None
    return member.password_hash


def change(client: httpx.Client, token: str, current: str, new: str, again: str) -> httpx.Response:
    return client.post(
        "/admin/password",
        data={
            "csrf_token": token,
            "current_password": current,
            "new_password": new,
            "new_password_again": again,
        },
    )


def test_the_change_keeps_this_session_and_ends_the_others(site: Site) -> None:
    """vera, logged in twice, changes her password from the first browser: 303 to the page
    saying so; the first browser goes on, the second is logged out; the old password no
    longer logs in, the new one does; one audit row names her and the sessions ended."""
    with site.client("vera") as here, site.client("vera") as there:
        page = here.get("/admin/password")
        assert page.status_code == 200
        assert 'data-testid="password-form"' in page.text
        done = change(here, csrf(page.text), PASSWORDS["vera"], NEW, NEW)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/admin/password?done=1"
        shown = here.get(done.headers["location"])
        assert "Password changed. Your other sessions were logged out" in shown.text
        assert here.get("/admin").status_code == 200
        gone = there.get("/admin")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/login")
        for response in (page, done, shown):
            assert PASSWORDS["vera"] not in response.text
            assert NEW not in response.text
    assert verify_password(NEW, password_hash(site, "vera"))
    with httpx.Client(base_url=site.url) as fresh:
        assert log_in(fresh, "vera", PASSWORDS["vera"]).status_code == 401
        assert log_in(fresh, "vera", NEW).status_code == 303
    assert rows(
        site, "SELECT actor, detail FROM audit_log WHERE action = 'member.password' ORDER BY id"
    ) == [("member vera", "vera: password changed; 1 other session(s) ended")]


def test_bad_forms_are_refused_naming_the_field(site: Site) -> None:
    """A wrong current password, two new ones that differ, a too short or too long one: 400
    naming the field; nothing typed is echoed; the password and sessions stay."""
    before = password_hash(site, "vera")
    cases = [
        ("not vera's password", NEW, NEW, "current_password: wrong password"),
        ("", NEW, NEW, "current_password: wrong password"),
        (PASSWORDS["vera"], NEW, NEW + "!", "new_password_again: does not match new_password"),
        (PASSWORDS["vera"], "short one", "short one", "new_password: must be at least 12"),
        (PASSWORDS["vera"], "x" * 1025, "x" * 1025, "new_password: must be at most 1024"),
    ]
    with site.client("vera") as client, site.client("vera") as other:
        token = csrf(client.get("/admin/password").text)
        for current, new, again, reason in cases:
            response = change(client, token, current, new, again)
            assert response.status_code == 400, (reason, response.text[-500:])
            assert reason in html.unescape(response.text), reason
            for typed in (current, new, again):
                if typed:
                    assert f'value="{typed}"' not in response.text
                    assert typed not in response.text.split("<main>", 1)[1]
        assert other.get("/admin").status_code == 200
    assert password_hash(site, "vera") == before
    failed = rows(
        site, "SELECT actor, detail FROM audit_log WHERE action = 'admin.login_failed' ORDER BY id"
    )
    assert failed == [("ip 127.0.0.1", "wrong current password for vera (password change)")] * 2


def test_csrf_and_credentials_are_required(site: Site) -> None:
    """No CSRF token: 403, nothing changes; logged out: to the login form; an admin key has
    no password to change (400 naming why)."""
    before = password_hash(site, "vera")
    with site.client("vera") as client:
        refused = change(client, "", PASSWORDS["vera"], NEW, NEW)
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["path"] == "csrf_token"
        forged = change(client, "not-the-token", PASSWORDS["vera"], NEW, NEW)
        assert forged.status_code == 403
    with httpx.Client(base_url=site.url) as anonymous:
        assert anonymous.get("/admin/password").status_code == 303
        assert change(anonymous, "x", PASSWORDS["vera"], NEW, NEW).status_code == 401
        key = {"Authorization": f"Bearer {site.admin_key}"}
        by_key = anonymous.post(
            "/admin/password",
            data={"current_password": "x", "new_password": NEW, "new_password_again": NEW},
            headers=key,
        )
        assert by_key.status_code == 400
        assert by_key.json()["errors"] == [
            {"path": "Authorization", "reason": "an admin API key has no password"}
        ]
    assert password_hash(site, "vera") == before


def test_wrong_current_passwords_count_toward_the_login_throttle(site: Site) -> None:
    """Ten wrong current passwords from one address use up its login attempts: the eleventh
    change and the next login from there are 429 with Retry-After."""
    with site.client("vera") as client:
        token = csrf(client.get("/admin/password").text)
        statuses = [change(client, token, f"guess number {i}", NEW, NEW) for i in range(11)]
        assert [r.status_code for r in statuses[:10]] == [400] * 10
        assert statuses[10].status_code == 429
        assert int(statuses[10].headers["retry-after"]) >= 1
        with httpx.Client(base_url=site.url) as again:
            login = log_in(again, "vera", PASSWORDS["vera"])
            assert login.status_code == 429
            assert int(login.headers["retry-after"]) >= 1


def test_a_member_of_another_property_changes_theirs_there(site: Site) -> None:
    """otto (no role on default) is sent to /admin/password?property=beta; the form posts
    there and the change works."""
    new = "otto's brand new password"
    with site.client("otto") as client:
        bare = client.get("/admin/password")
        assert bare.status_code == 303
        assert bare.headers["location"] == "/admin/password?property=beta"
        page = client.get(bare.headers["location"])
        assert 'action="/admin/password?property=beta"' in page.text
        done = client.post(
            "/admin/password?property=beta",
            data={
                "csrf_token": csrf(page.text),
                "current_password": PASSWORDS["otto"],
                "new_password": new,
                "new_password_again": new,
            },
        )
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/admin/password?done=1&property=beta"
    assert verify_password(new, password_hash(site, "otto"))
