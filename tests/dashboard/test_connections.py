"""The Connections page over real HTTP: pixel, write-only token, test code, routes, audit.

Every response of every test is collected and searched for the token: it must never come
back, whatever the form did (saved, refused, replaced, removed).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from backchannel import credentials
from backchannel.catalog import EVENTS
from backchannel.store import open_store
from hardening import conftest as hardening
from hardening.conftest import App, StartApp, csrf_from
from serve.helpers import META_PIXEL, TIKTOK_PIXEL

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

TOKEN = "ttSecretToken0123456789abcdefWXYZ"
TOKEN2 = "ttOtherToken9876543210zyxwvuQRST"
PATH = "/admin/connections"


class Browser:
    """A logged-in client that remembers every response body it got."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.client = app.client()
        self.bodies: list[str] = []
        response = app.login(self.client)
        assert response.status_code == 303
        self.bodies.append(response.text)

    def get(self, path: str = PATH) -> httpx.Response:
        response = self.client.get(path)
        self.bodies.append(response.text + str(response.headers))
        return response

    def post(self, path: str, fields: dict[str, Any] | list[tuple[str, str]]) -> httpx.Response:
        page = self.get(PATH)
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        data = [("csrf_token", csrf_from(page.text)), *items]
        response = self.client.post(
            path,
            content=urlencode(data),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.bodies.append(response.text + str(response.headers))
        return response

    def close(self) -> None:
        self.client.close()

    def leaked(self, secret: str) -> bool:
        return any(secret in body for body in self.bodies)


@pytest.fixture
def running(start_app: StartApp) -> App:
    return start_app(sandbox=True)


def connection(app: App, destination: str) -> tuple[Any, ...] | None:
    rows = app.sql(
        "SELECT pixel, token_encrypted, token_last4, test_event_code FROM connections"
        " WHERE destination = ?",
        destination,
    )
    return rows[0] if rows else None


def text_of(html: str, test_id: str) -> str:
    match = re.search(rf'data-testid="{re.escape(test_id)}"[^>]*>(.*?)</', html, re.S)
    assert match, test_id
    return match.group(1)


class TestConnections:
    def test_logged_out_is_sent_to_login(self, running: App) -> None:
        """The page needs an admin session; its forms need the CSRF token."""
        response = running.http.get(PATH, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
        browser = Browser(running)
        refused = browser.client.post(PATH + "/tiktok", data={"pixel": TIKTOK_PIXEL})
        assert refused.status_code == 403
        assert connection(running, "tiktok") is None
        browser.close()

    def test_set_replace_keep_remove_token(
        self, running: App, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Setting a token switches to live at once and shows only its last 4; saving without
        a token keeps it; replacing and removing are audited; the token is never returned,
        logged, audited, or stored in clear."""
        caplog.set_level(logging.DEBUG)
        browser = Browser(running)
        page = browser.get()
        assert page.status_code == 200
        assert text_of(page.text, "mode-tiktok") == "sandbox"
        assert text_of(page.text, "token-tiktok") == "not set"
        assert 'aria-current=page href="/admin/connections"' in page.text or (
            '<a href="/admin/connections" aria-current=page>' in page.text
        )

        saved = browser.post(
            PATH + "/tiktok",
            {"pixel": TIKTOK_PIXEL, "test_event_code": "TEST111", "token": TOKEN},
        )
        assert saved.status_code == 303
        assert saved.headers["location"].startswith(PATH + "?saved=tiktok")
        page = browser.get()
        assert text_of(page.text, "mode-tiktok") == "live"  # the cached target was dropped
        assert text_of(page.text, "token-tiktok") == "…WXYZ"
        assert text_of(page.text, "pixel-tiktok") == TIKTOK_PIXEL
        assert text_of(page.text, "code-tiktok") == "TEST111"
        assert 'name=token value=""' in page.text  # never pre-filled
        assert text_of(page.text, "mode-meta") == "sandbox"
        overview = browser.get("/admin")  # the overview warns about meta only now
        assert "SANDBOX MODE: meta has no token" in overview.text
        assert "tiktok and meta" not in overview.text
        pixel, ciphertext, last4, code = connection(running, "tiktok") or ()
        assert (pixel, last4, code) == (TIKTOK_PIXEL, "WXYZ", "TEST111")
        cipher = credentials.load_cipher(running.settings)
        assert credentials.decrypt(cipher, bytes(ciphertext)) == TOKEN

        kept = browser.post(
            PATH + "/tiktok", {"pixel": TIKTOK_PIXEL, "test_event_code": "TEST222", "token": ""}
        )
        assert kept.status_code == 303
        after = connection(running, "tiktok") or ()
        assert after[1] == ciphertext  # the same ciphertext: the token was kept
        assert after[3] == "TEST222"

        replaced = browser.post(
            PATH + "/tiktok", {"pixel": TIKTOK_PIXEL, "test_event_code": "", "token": TOKEN2}
        )
        assert replaced.status_code == 303
        assert text_of(browser.get().text, "token-tiktok") == "…QRST"
        assert (connection(running, "tiktok") or ())[3] is None

        removed = browser.post(PATH + "/tiktok/remove-token", {})
        assert removed.status_code == 303
        page = browser.get()
        assert text_of(page.text, "mode-tiktok") == "sandbox"
        assert text_of(page.text, "token-tiktok") == "not set"
        assert connection(running, "tiktok") == (TIKTOK_PIXEL, None, None, None)
        again = browser.post(PATH + "/tiktok/remove-token", {})
        assert again.status_code == 400
        assert "token: none stored" in again.text

        audits = running.sql(
            "SELECT actor, action, detail FROM audit_log WHERE action LIKE 'token.%'"
            " OR action = 'connection.update' ORDER BY id"
        )
        assert audits == [
            ("admin session", "token.set", f"tiktok pixel {TIKTOK_PIXEL}"),
            (
                "admin session",
                "connection.update",
                f"tiktok pixel {TIKTOK_PIXEL} test_event_code TEST222",
            ),
            ("admin session", "token.replace", f"tiktok pixel {TIKTOK_PIXEL}"),
            ("admin session", "token.remove", "tiktok"),
        ]
        every_row = repr(running.sql("SELECT * FROM audit_log"))
        for secret in (TOKEN, TOKEN2):
            assert not browser.leaked(secret)
            assert secret not in every_row
            assert secret not in caplog.text
        raw = b"".join(p.read_bytes() for p in running_files(running))
        assert TOKEN.encode() not in raw
        assert TOKEN2.encode() not in raw
        browser.close()

    @pytest.mark.parametrize(
        ("destination", "fields", "message"),
        [
            ("tiktok", {"pixel": ""}, "pixel: required"),
            ("tiktok", {"pixel": "cservetest"}, "pixel: a TikTok pixel code is"),
            ("meta", {"pixel": "CSERVETESTPIXEL"}, "pixel: a Meta pixel (dataset) id is"),
            ("meta", {"pixel": META_PIXEL, "test_event_code": "TEST 1"}, "test_event_code: "),
            ("tiktok", {"pixel": TIKTOK_PIXEL, "token": "Bearer " + TOKEN}, "without 'Bearer '"),
            ("tiktok", {"pixel": TIKTOK_PIXEL, "token": "short"}, "token: must be 8 to"),
            ("tiktok", {"pixel": TIKTOK_PIXEL, "token": TOKEN + " x"}, "token: must not contain"),
            ("tiktok", {"pixel": TIKTOK_PIXEL, "token": TOKEN * 200}, "token: must be 8 to"),
        ],
    )
    def test_bad_field_is_a_400_naming_it_and_changes_nothing(
        self, running: App, destination: str, fields: dict[str, str], message: str
    ) -> None:
        """A refused field: 400, the page names the field and why, nothing is stored or
        audited, and the typed token is not echoed."""
        browser = Browser(running)
        response = browser.post(f"{PATH}/{destination}", fields)
        assert response.status_code == 400
        assert message in response.text.replace("&#x27;", "'")
        assert 'class="notice error"' in response.text
        assert connection(running, destination) is None
        assert running.sql("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'token.%'") == [(0,)]
        assert not browser.leaked(TOKEN)
        browser.close()

    def test_unknown_destination_is_404(self, running: App) -> None:
        """A destination that does not exist: 404 naming it."""
        browser = Browser(running)
        response = browser.post(PATH + "/snapchat", {"pixel": "123456"})
        assert response.status_code == 404
        assert "destination: unknown destination" in response.text
        browser.close()


class TestRoutesForm:
    def test_routes_form_writes_the_cli_setting(self, running: App) -> None:
        """Ticked events (and custom names) become route.meta; "All events" clears it; a form
        with every standard event ticked (more than 20 fields) is taken; audited."""
        browser = Browser(running)
        response = browser.post(
            PATH + "/meta/routes", [("event", "Purchase"), ("custom", "Webinar_Signup")]
        )
        assert response.status_code == 303
        assert running.sql("SELECT value FROM admin_settings WHERE name = 'route.meta'") == [
            ('["Purchase","Webinar_Signup"]',)
        ]
        page = browser.get()
        assert text_of(page.text, "routes-meta") == "Purchase, Webinar_Signup"
        assert text_of(page.text, "routes-tiktok") == "all events"
        assert 'value="Purchase" checked' in page.text

        every = [("event", name) for name in EVENTS]
        assert len(every) > 20
        assert browser.post(PATH + "/tiktok/routes", every).status_code == 303
        stored = running.sql("SELECT value FROM admin_settings WHERE name = 'route.tiktok'")
        assert stored == [("[" + ",".join(f'"{n}"' for n in EVENTS) + "]",)]

        cleared = browser.post(PATH + "/meta/routes", [("all", "1"), ("event", "Purchase")])
        assert cleared.status_code == 303
        assert text_of(browser.get().text, "routes-meta") == "all events"

        nothing = browser.post(PATH + "/meta/routes", [])
        assert nothing.status_code == 400
        assert "events: tick at least one event" in nothing.text
        wrong = browser.post(PATH + "/meta/routes", [("custom", "purchase")])
        assert wrong.status_code == 400
        assert "did you mean" in wrong.text
        audits = running.sql(
            "SELECT action, detail FROM audit_log WHERE action LIKE 'route.%' ORDER BY id"
        )
        assert [a for a, _ in audits] == ["route.set", "route.set", "route.clear"]
        assert audits[0][1] == "meta: Purchase, Webinar_Signup"
        browser.close()

    def test_cli_change_shows_on_the_page(self, running: App) -> None:
        """A route stored as the CLI stores it is what the page shows (one setting)."""
        from backchannel import routing

        store = open_store(running.settings.database_url)
        try:
            routing.store_route(store, "tiktok", ["CompletePayment"], 1.0)
        finally:
            store.close()
        browser = Browser(running)
        assert text_of(browser.get().text, "routes-tiktok") == "CompletePayment"
        browser.close()


def running_files(app: App) -> list[Any]:
    from pathlib import Path

    base = Path(app.settings.database_url.removeprefix("sqlite:///"))
    return [
        Path(str(base) + suffix)
        for suffix in ("", "-wal", "-shm")
        if Path(str(base) + suffix).exists()
    ]


class TestCliInterop:
    def test_cli_token_shows_on_the_page_and_remove_keeps_pixel_and_code(
        self, running: App
    ) -> None:
        """`token set` (stdin) shows as …last4 on the page; the page's code survives a later
        `token set` without --test-event-code; `token remove` keeps pixel and code."""
        import os
        import subprocess
        import sys

        def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
            env["BACKCHANNEL_DATABASE_URL"] = running.settings.database_url
            env["BACKCHANNEL_SECRET_KEY"] = running.settings.secret_key or ""
            return subprocess.run(
                [sys.executable, "-m", "backchannel.cli", *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )

        browser = Browser(running)
        saved = browser.post(PATH + "/meta", {"pixel": META_PIXEL, "test_event_code": "M_CODE"})
        assert saved.status_code == 303
        done = cli("token", "set", "meta", "--pixel", META_PIXEL, stdin=TOKEN + "\n")
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
        page = browser.get()
        assert text_of(page.text, "token-meta") == "…WXYZ"
        assert text_of(page.text, "code-meta") == "M_CODE"
        removed = cli("token", "remove", "meta")
        assert removed.returncode == 0, removed.stderr
        assert connection(running, "meta") == (META_PIXEL, None, None, "M_CODE")
        assert cli("token", "remove", "meta").returncode == 1
        assert running.sql(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'token.%' ORDER BY id"
        ) == [("cli", "token.set"), ("cli", "token.remove")]
        assert not browser.leaked(TOKEN)
        browser.close()
