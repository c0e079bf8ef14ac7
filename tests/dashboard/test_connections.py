"""The Connections page over real HTTP: pixel, write-only token, test code, routes, audit.

Every response of every test is collected and searched for the token: it must never come
back, whatever the form did (saved, refused, replaced, removed).
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from backchannel import credentials
from backchannel import destinations as registry
from backchannel.catalog import EVENTS
from backchannel.store import open_store
from dashboard import standin_destination as standin
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
    """What the default property's connection of ``destination`` stores; None: nothing (no
    row, or the empty one every property has of TikTok and Meta from the start)."""
    rows = app.sql(
        "SELECT pixel, token_encrypted, token_last4, test_event_code FROM connections"
        " WHERE destination = ? AND property_id = 1 AND label = ?",
        destination,
        destination,
    )
    if not rows or rows[0] == ("", None, None, None):
        return None
    return rows[0]


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
            ("member admin", "token.set", f"tiktok pixel {TIKTOK_PIXEL}"),
            (
                "member admin",
                "connection.update",
                f"tiktok pixel {TIKTOK_PIXEL} test_event_code TEST222",
            ),
            ("member admin", "token.replace", f"tiktok pixel {TIKTOK_PIXEL}"),
            ("member admin", "token.remove", "tiktok"),
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
        response = browser.post(PATH + "/friendster", {"pixel": "123456"})
        assert response.status_code == 404
        assert "destination: unknown destination" in response.text
        browser.close()


class TestRoutesForm:
    def test_routes_form_writes_the_cli_setting(self, running: App) -> None:
        """Ticked events (and custom names) become the Meta connection's routes; "All events"
        clears them; a form with every standard event ticked (more than 20 fields) is taken;
        audited."""
        browser = Browser(running)
        response = browser.post(
            PATH + "/meta/routes", [("event", "Purchase"), ("custom", "Webinar_Signup")]
        )
        assert response.status_code == 303
        assert running.sql(
            "SELECT routes FROM connections WHERE label = 'meta' AND property_id = 1"
        ) == [('["Purchase","Webinar_Signup"]',)]
        page = browser.get()
        assert text_of(page.text, "routes-meta") == "Purchase, Webinar_Signup"
        assert text_of(page.text, "routes-tiktok") == "all events"
        assert 'value="Purchase" checked' in page.text

        every = [("event", name) for name in EVENTS]
        assert len(every) > 20
        assert browser.post(PATH + "/tiktok/routes", every).status_code == 303
        stored = running.sql(
            "SELECT routes FROM connections WHERE label = 'tiktok' AND property_id = 1"
        )
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


# -- forms generated from what each destination declares ----------------------------------------
def form_of(html: str, destination: str) -> str:
    match = re.search(
        rf'<form[^>]*data-testid="connection-{re.escape(destination)}">(.*?)</form>', html, re.S
    )
    assert match, destination
    return match.group(1)


@pytest.fixture(params=standin.with_extras())
def extras_destination(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A destination with more than pixel and token: Google Ads once registered, else the
    test-only stand-in (registered for the one test)."""
    return standin.use(monkeypatch, request.param)


def unescape(text: str) -> str:
    return html.unescape(text)


class TestDeclaredForms:
    def test_every_registered_destination_has_its_generated_form(
        self, monkeypatch: pytest.MonkeyPatch, running: App
    ) -> None:
        """One form per registered destination (the stand-in too: iterating the registry
        covers destinations added later), one field per credential with its declared label
        and hint; secrets are password inputs that are never pre-filled; others say "off"."""
        standin.register(monkeypatch)
        browser = Browser(running)
        page = browser.get()
        assert page.status_code == 200
        for name, spec in registry.DESTINATIONS.items():
            form = unescape(form_of(page.text, name))
            assert f'data-testid="routes-form-{name}"' in page.text
            assert "name=test_event_code" in form
            for credential in spec.CREDENTIALS:
                assert credential.label in form, (name, credential.key)
                assert credential.hint in form, (name, credential.key)
                if credential.secret:
                    assert f'type=password name={credential.key} value=""' in form
                else:
                    assert re.search(rf"name={credential.key}[ >]", form), (name, credential.key)
            mode = text_of(page.text, f"mode-{name}")
            expected = "sandbox" if spec.ON_BY_DEFAULT else "off — not connected"
            assert mode == expected, name
        browser.close()

    def test_extras_are_stored_plain_and_encrypted_and_kept_when_left_empty(
        self, extras_destination: Any, running: App, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Saving a destination with extras: plain ones in settings, secret ones in ONE
        encrypted JSON blob (no secret anywhere in the SQLite files, the audit log, the
        logs or a response); saving again with the secret fields empty keeps them; replacing
        one keeps the others; Disconnect forgets everything and turns it off."""
        caplog.set_level(logging.DEBUG)
        spec = extras_destination
        name = spec.name
        browser = Browser(running)
        values = {c.key: standin.sample(c) for c in spec.CREDENTIALS}
        secrets = {k: v for k, v in values.items() if spec_credential(spec, k).secret}
        plain = {
            k: v for k, v in values.items() if not spec_credential(spec, k).secret and k != "pixel"
        }
        saved = browser.post(f"{PATH}/{name}", {**values, "test_event_code": "X_CODE"})
        assert saved.status_code == 303, unescape(saved.text)
        page = browser.get()
        assert text_of(page.text, f"mode-{name}") == "live"
        assert text_of(page.text, f"token-{name}") == "…" + values["token"][-4:]
        for key, value in plain.items():
            assert text_of(page.text, f"setting-{name}-{key}") == value
            assert f'name={key} value="{value}"' in page.text  # plain values pre-filled
        for key in secrets:
            if key != "token":
                assert text_of(page.text, f"setting-{name}-{key}") == "set"
        [(pixel, token_ct, settings_json, blob, code)] = running.sql(
            "SELECT pixel, token_encrypted, settings, secrets_encrypted, test_event_code"
            " FROM connections WHERE destination = ?",
            name,
        )
        assert (pixel, code) == (values["pixel"], "X_CODE")
        assert orjson.loads(settings_json) == plain
        cipher = credentials.load_cipher(running.settings)
        assert credentials.decrypt(cipher, bytes(token_ct)) == values["token"]
        extra_secrets = {k: v for k, v in secrets.items() if k != "token"}
        assert orjson.loads(credentials.decrypt(cipher, bytes(blob))) == extra_secrets
        target = running.asgi.state.backchannel["targets"].resolve(name).target
        assert dict(target.secrets) == extra_secrets
        assert {k: target.settings[k] for k in plain} == plain

        # again, every secret field empty: all kept (the same ciphertexts)
        kept = browser.post(
            f"{PATH}/{name}", {**values, **dict.fromkeys(secrets, ""), "test_event_code": ""}
        )
        assert kept.status_code == 303, unescape(kept.text)
        [(token_ct2, blob2)] = running.sql(
            "SELECT token_encrypted, secrets_encrypted FROM connections WHERE destination = ?",
            name,
        )
        assert (bytes(token_ct2), bytes(blob2)) == (bytes(token_ct), bytes(blob))

        # one secret replaced: the others kept
        first = next(iter(extra_secrets))
        new_value = standin.sample(spec_credential(spec, first), salt="2")
        replaced = browser.post(
            f"{PATH}/{name}", {**values, **dict.fromkeys(secrets, ""), first: new_value}
        )
        assert replaced.status_code == 303, unescape(replaced.text)
        [(blob3,)] = running.sql(
            "SELECT secrets_encrypted FROM connections WHERE destination = ?", name
        )
        assert orjson.loads(credentials.decrypt(cipher, bytes(blob3))) == {
            **extra_secrets,
            first: new_value,
        }

        audits = running.sql(
            "SELECT action, detail FROM audit_log WHERE detail LIKE ? ORDER BY id", name + "%"
        )
        assert [a for a, _ in audits] == ["token.set", "connection.update", "connection.update"]
        assert audits[2][1].endswith(f"secrets {first}")
        disconnect = browser.post(f"{PATH}/{name}/remove-token", {})
        assert disconnect.status_code == 303
        page = browser.get()
        assert text_of(page.text, f"mode-{name}") == "off — not connected"
        # forgotten: the row stays (outbox rows may name it) without credentials or settings
        assert running.sql(
            "SELECT pixel, token_encrypted, settings, secrets_encrypted FROM connections"
            " WHERE destination = ?",
            name,
        ) == [("", None, None, None)]
        assert running.sql("SELECT action FROM audit_log ORDER BY id DESC LIMIT 1") == [
            ("token.remove",)
        ]

        every_row = repr(running.sql("SELECT * FROM audit_log"))
        raw = b"".join(p.read_bytes() for p in running_files(running))
        for secret in [*secrets.values(), new_value]:
            assert not browser.leaked(secret), secret
            assert secret not in every_row
            assert secret not in caplog.text
            assert secret.encode() not in raw
        browser.close()

    def test_required_pattern_and_secret_errors_name_the_field(
        self, extras_destination: Any, running: App
    ) -> None:
        """A destination that is off until connected needs every required value (the error
        names the first missing one); a value not matching its pattern is refused with the
        declared hint; nothing is stored, nothing audited, never a 500."""
        spec = extras_destination
        name = spec.name
        browser = Browser(running)
        values = {c.key: standin.sample(c) for c in spec.CREDENTIALS}
        only_pixel = browser.post(f"{PATH}/{name}", {"pixel": values["pixel"]})
        assert only_pixel.status_code == 400
        assert "token: required" in unescape(only_pixel.text)
        for credential in spec.CREDENTIALS:
            if credential.pattern is None:
                continue
            bad = browser.post(f"{PATH}/{name}", {**values, credential.key: "?no-match?"})
            assert bad.status_code == 400, credential.key
            assert f"{credential.key}: {credential.hint}" in unescape(bad.text)
        for credential in spec.CREDENTIALS:
            if credential.required and credential.key not in ("pixel", "token"):
                missing = browser.post(f"{PATH}/{name}", {**values, credential.key: ""})
                assert missing.status_code == 400, credential.key
                assert f"{credential.key}: required" in unescape(missing.text)
        assert connection(running, name) is None
        assert running.sql("SELECT COUNT(*) FROM audit_log WHERE detail LIKE ?", name + "%") == [
            (0,)
        ]
        assert not any(browser.leaked(v) for k, v in values.items() if k != "pixel")
        browser.close()


def spec_credential(spec: Any, key: str) -> Any:
    return next(c for c in spec.CREDENTIALS if c.key == key)
