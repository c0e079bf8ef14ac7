"""Admin access: password, login, logout, session expiry, CSRF, throttling, admin API keys."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from backchannel.store import open_store
from backchannel.store.base import Grant
from backchannel.web import auth
from serve.helpers import make_settings

from .conftest import PASSWORD, StartApp, csrf_from


class TestPasswordHash:
    def test_scrypt_hash_verifies_only_the_password(self) -> None:
        """The stored hash is scrypt with a random salt and verifies only the right password."""
        encoded = auth.hash_password(PASSWORD)
        assert encoded.startswith("scrypt$16384$8$1$")
        assert PASSWORD not in encoded
        assert auth.verify_password(PASSWORD, encoded)
        assert not auth.verify_password(PASSWORD + "x", encoded)
        assert auth.hash_password(PASSWORD) != encoded  # salted

    def test_malformed_hash_verifies_nothing(self) -> None:
        """A damaged stored hash never lets anyone in (and never raises)."""
        for bad in ("", "scrypt$1$2", "md5$x$y$z$a$b", "scrypt$16384$8$1$!!$!!"):
            assert not auth.verify_password(PASSWORD, bad)

    def test_short_password_refused(self) -> None:
        """Passwords under 12 characters are refused."""
        with pytest.raises(auth.PasswordError):
            auth.check_new_password("short")


class TestSetPasswordCommand:
    def test_reads_stdin_and_stores_a_hash(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """`admin set-password` reads stdin and stores only a hash: the first password makes
        the member `admin`, owner of every property."""
        settings = make_settings(tmp_path)
        env = {
            "BACKCHANNEL_DATABASE_URL": settings.database_url,
            "BACKCHANNEL_SECRET_KEY": settings.secret_key or "",
            "PATH": "/usr/bin:/bin",
        }
        run = [sys.executable, "-m", "backchannel.cli", "admin", "set-password"]
        short = subprocess.run(
            run, input="too short\n", env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert short.returncode == 2
        assert "at least 12" in short.stderr
        done = subprocess.run(
            run, input=PASSWORD + "\n", env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "password of admin set; 0 session(s) logged out\n"
        store = open_store(settings.database_url)
        try:
            member = store.member_by_name("admin")
        finally:
            store.close()
        assert member is not None
        assert member.grants == (Grant(None, "owner"),)
        assert auth.verify_password(PASSWORD, member.password_hash)
        assert PASSWORD not in (tmp_path / "bc.db").read_bytes().decode("latin-1")


class TestLogin:
    def test_admin_page_redirects_to_login_when_logged_out(self, start_app: StartApp) -> None:
        """GET /admin without a session goes to the login page."""
        app = start_app()
        response = app.http.get("/admin", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=/admin")

    def test_login_sets_a_hardened_cookie_and_shows_admin(self, start_app: StartApp) -> None:
        """A right password gives an HttpOnly SameSite=Strict cookie and the admin page."""
        app = start_app()
        with app.client() as client:
            response = app.login(client)
            assert response.status_code == 303
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("bc_session=")
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
            assert "Secure" not in cookie  # plain http: browsers would drop a Secure cookie
            page = client.get("/admin")
            assert page.status_code == 200
            assert 'data-figure="received"' in page.text  # the overview's figures

    def test_https_public_url_gives_host_prefixed_secure_cookie(self, start_app: StartApp) -> None:
        """With an https public_url the cookie is __Host-bc_session and Secure."""
        app = start_app(public_url="https://track.example")
        with app.client() as client:
            form = client.get("/login")
            assert "__Host-bc_login=" in form.headers["set-cookie"]
            # httpx will not send a Secure cookie over http; hand it over as a browser would.
            token = form.headers["set-cookie"].split(";")[0].split("=", 1)[1]
            response = client.post(
                "/login",
                data={"csrf_token": csrf_from(form.text), "name": "admin", "password": PASSWORD},
                headers={"Cookie": f"__Host-bc_login={token}"},
            )
            assert response.status_code == 303, response.text
            cookie = response.headers["set-cookie"]
            assert cookie.startswith("__Host-bc_session=")
            assert "Secure" in cookie
            assert "Path=/" in cookie
            assert "Domain" not in cookie

    def test_wrong_password_is_refused(self, start_app: StartApp) -> None:
        """A wrong password answers 401 and sets no session."""
        app = start_app()
        with app.client() as client:
            response = app.login(client, "not the password at all")
            assert response.status_code == 401
            assert "Wrong name or password." in response.text
            assert client.get("/admin", follow_redirects=False).status_code == 303

    def test_login_without_form_token_is_refused(self, start_app: StartApp) -> None:
        """A login POST without the login form's token (login CSRF) is refused."""
        app = start_app()
        with app.client() as client:
            response = client.post("/login", data={"name": "admin", "password": PASSWORD})
            assert response.status_code == 403
            assert "set-cookie" not in response.headers or "bc_session" not in str(
                response.headers.get_list("set-cookie")
            )

    def test_next_only_goes_to_local_paths(self, start_app: StartApp) -> None:
        """After login, ?next= never sends the browser to another site."""
        app = start_app()
        with app.client() as client:
            form = client.get("/login")
            response = client.post(
                "/login?next=//evil.example/x",
                data={"csrf_token": csrf_from(form.text), "name": "admin", "password": PASSWORD},
            )
            assert response.headers["location"] == "/admin"


class TestSession:
    def test_logout_ends_the_session_server_side(self, start_app: StartApp) -> None:
        """After logout the old cookie no longer opens the admin page."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            page = client.get("/admin")
            stolen = dict(client.cookies)
            response = client.post("/logout", data={"csrf_token": csrf_from(page.text)})
            assert response.status_code == 303
        with app.client(cookies=stolen) as replay:
            assert replay.get("/admin", follow_redirects=False).status_code == 303
        assert app.sql("SELECT COUNT(*) FROM admin_sessions") == [(0,)]

    def test_expired_session_is_refused(self, start_app: StartApp) -> None:
        """A session past its expiry time is treated as logged out."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            assert client.get("/admin").status_code == 200
            app.sql("UPDATE admin_sessions SET expires_at = ?", time.time() - 1)
            assert client.get("/admin", follow_redirects=False).status_code == 303

    def test_session_cookie_is_stored_only_as_a_hash(self, start_app: StartApp) -> None:
        """The database holds the SHA-256 of the session token, never the token."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            token = client.cookies["bc_session"]
        (stored,) = app.sql("SELECT token_hash FROM admin_sessions")[0]
        assert stored != token
        assert len(stored) == 64

    def test_password_change_logs_the_member_out(self, start_app: StartApp) -> None:
        """Setting a new password ends the member's existing sessions."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            store = open_store(app.settings.database_url)
            try:
                auth.set_password(store, "another long password", time.time())
            finally:
                store.close()
            assert client.get("/admin", follow_redirects=False).status_code == 303


class TestCsrf:
    def test_logout_without_token_is_refused(self, start_app: StartApp) -> None:
        """A state-changing POST with the session cookie but no CSRF token answers 403."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            response = client.post("/logout")
            assert response.status_code == 403
            assert response.json()["errors"][0]["path"] == "csrf_token"
            assert client.get("/admin").status_code == 200  # still logged in

    def test_wrong_token_is_refused(self, start_app: StartApp) -> None:
        """A forged CSRF token answers 403."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            response = client.post("/logout", data={"csrf_token": "forged"})
            assert response.status_code == 403

    def test_cross_site_origin_is_refused(self, start_app: StartApp) -> None:
        """Even with the right token, a cross-site Origin is refused."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            token = csrf_from(client.get("/admin").text)
            response = client.post(
                "/logout",
                data={"csrf_token": token},
                headers={"Origin": "https://evil.example"},
            )
            assert response.status_code == 403

    def test_header_token_is_accepted(self, start_app: StartApp) -> None:
        """Scripts may send the token as X-CSRF-Token instead of a form field."""
        app = start_app()
        with app.client() as client:
            app.login(client)
            token = csrf_from(client.get("/admin").text)
            response = client.post("/logout", headers={"X-CSRF-Token": token})
            assert response.status_code == 303


class TestThrottling:
    def test_login_attempts_are_throttled_per_ip(self, start_app: StartApp) -> None:
        """Past 10 quick attempts from one IP, login answers 429 with Retry-After."""
        app = start_app()
        statuses = []
        with app.client() as client:
            for _ in range(12):
                statuses.append(app.login(client, "wrong password guess").status_code)
            assert statuses[:10] == [401] * 10
            assert statuses[-1] == 429
            last = client.post("/login", data={"name": "admin", "password": PASSWORD})
            assert last.status_code == 429
            assert int(last.headers["retry-after"]) >= 1
            assert last.json()["errors"][0]["path"] == "password"


class TestApiKeys:
    def test_admin_key_is_accepted_for_admin_json(self, start_app: StartApp) -> None:
        """A bc_admin_ key reads admin JSON endpoints; ingest keys and no key are refused."""
        app = start_app()
        ok = app.http.get("/admin/api/status", headers={"Authorization": f"Bearer {app.admin_key}"})
        assert ok.status_code == 200
        assert "outbox" in ok.json()
        ingest = app.http.get("/admin/api/status", headers={"Authorization": f"Bearer {app.key}"})
        assert ingest.status_code == 401
        assert app.http.get("/admin/api/status").status_code == 401

    def test_admin_key_is_not_an_ingest_key(self, start_app: StartApp) -> None:
        """Keys are scoped: an admin key cannot ingest (403)."""
        app = start_app()
        response = app.http.post(
            "/v1/events", json={}, headers={"Authorization": f"Bearer {app.admin_key}"}
        )
        assert response.status_code == 403

    def test_revocation_is_effective_at_once(self, start_app: StartApp) -> None:
        """A revoked admin key is refused on the very next request."""
        app = start_app()
        headers = {"Authorization": f"Bearer {app.admin_key}"}
        assert app.http.get("/admin/api/status", headers=headers).status_code == 200
        store = open_store(app.settings.database_url)
        try:
            assert store.revoke_key("ops", time.time()) == 1
        finally:
            store.close()
        assert app.http.get("/admin/api/status", headers=headers).status_code == 401
