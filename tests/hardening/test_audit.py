"""The PII and token audit: a real gateway process, then grep everything it left behind.

Two properties (``default`` and ``eu``), each with its own recognisable access token stored
with `backchannel token set --property`, and the sandbox started with ``--pixel-token`` so
that a delivery only succeeds if each connection's own stored token was really decrypted and
sent to its own pixels (the other property's token is refused there).
Conversions carry recognisable emails and phone numbers. After they are delivered, every API
endpoint and the admin page are fetched; then the gateway's captured stdout and stderr (JSON
logs at debug level), every response (headers and body) and the raw SQLite files (db, -wal,
-shm, read while it runs and after it stopped) are searched: neither token nor any email or
phone number, in any form it was sent, may appear.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest

from .conftest import PASSWORD, csrf_from

TOKEN = "AUDIT-TOKEN-7f3a9c1e5b2d4f6a8c0e"
#: the second property's token, and its pixels
TOKEN2 = "AUDIT-TOKEN-EU-0d9e8c7b6a5f4e3d2c1b"
EU_TIKTOK_PIXEL, EU_META_PIXEL = "CAUDITPIXELEU", "998877665544"
N = 6
EMAILS = [f"Audit.Person{i}@Recognisable-Example.com" for i in range(N)]
PHONES = [f"+1 415 555 {2610 + i}" for i in range(N)]
TIKTOK_PIXEL, META_PIXEL = "CAUDITPIXEL", "112233445566"
#: identifiers that arrive only inside URLs (a thank-you page linked with ?email=…&phone=…)
URL_EMAIL, URL_PHONE = "Url.Person@Recognisable-Example.com", "+1 415 555 2699"
URL_QUERY = f"email={quote(URL_EMAIL)}&phone={quote(URL_PHONE)}&ttclid=E.C.P.9&gclid=Cj0KCQ-9"


def forms_of(email: str, phone: str) -> list[str]:
    """Every spelling of an identifier that must not be found anywhere."""
    e164 = "+" + re.sub(r"\D", "", phone)
    return [email, email.lower(), phone, e164, e164[1:], e164[2:]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.out = cwd / f"{name}.out"
        self.err = cwd / f"{name}.err"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "backchannel.cli", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            start_new_session=True,
        )

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def wait_http(url: str, proc: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(f"process exited:\n{proc.output()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} not ready:\n{proc.output()[-3000:]}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def cli(env: dict[str, str], cwd: Path, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
class TestAudit:
    def test_no_token_and_no_plaintext_pii_anywhere(self, workdir: Path) -> None:
        """Logs, responses, admin HTML and raw SQLite files hold no token, email or phone."""
        sandbox_port, port = free_port(), free_port()
        sandbox_url, url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{port}"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "BACKCHANNEL_DATABASE_URL": f"sqlite:///{workdir}/bc.db",
            "BACKCHANNEL_TIKTOK_BASE_URL": sandbox_url,
            "BACKCHANNEL_META_BASE_URL": sandbox_url,
            "BACKCHANNEL_RETRY_BASE": "0.05",
            "BACKCHANNEL_RETRY_CAP": "0.5",
            "BACKCHANNEL_LOG_LEVEL": "debug",
        }
        processes: list[Process] = []
        transcript: list[str] = []  # everything the gateway said to any client
        try:
            owners = [
                f"{TIKTOK_PIXEL}={TOKEN}",
                f"{META_PIXEL}={TOKEN}",
                f"{EU_TIKTOK_PIXEL}={TOKEN2}",
                f"{EU_META_PIXEL}={TOKEN2}",
            ]
            sandbox = Process(
                "sandbox",
                ["sandbox", "--port", str(sandbox_port)]
                + [arg for owner in owners for arg in ("--pixel-token", owner)],
                env,
                workdir,
            )
            processes.append(sandbox)
            wait_http(sandbox_url + "/_sandbox/faults", sandbox)
            transcript.append(
                cli(
                    env,
                    workdir,
                    *("token", "set", "tiktok", "--pixel", TIKTOK_PIXEL),
                    *("--test-event-code", "AUDIT_TEST"),
                    stdin=TOKEN,
                )
            )
            transcript.append(
                cli(
                    env,
                    workdir,
                    *("token", "set", "meta", "--pixel", META_PIXEL),
                    *("--test-event-code", "AUDIT_TEST"),
                    stdin=TOKEN,
                )
            )
            cli(env, workdir, "property", "create", "eu", "--origin", "https://eu.shop.example")
            for destination, pixel in (("tiktok", EU_TIKTOK_PIXEL), ("meta", EU_META_PIXEL)):
                transcript.append(
                    cli(
                        env,
                        workdir,
                        *("token", "set", destination, "--pixel", pixel, "--property", "eu"),
                        *("--test-event-code", "AUDIT_TEST"),
                        stdin=TOKEN2,
                    )
                )
            key = (
                cli(env, workdir, "keys", "create", "--name", "shop", "--property", "default")
                .strip()
                .splitlines()[-1]
            )
            eu_key = (
                cli(env, workdir, "keys", "create", "--name", "eu", "--property", "eu")
                .strip()
                .splitlines()[-1]
            )
            admin_key = (
                cli(env, workdir, "keys", "create", "--name", "ops", "--scope", "admin")
                .strip()
                .splitlines()[-1]
            )
            cli(env, workdir, "admin", "set-password", stdin=PASSWORD + "\n")
            gateway = Process(
                "gateway", ["serve", "--port", str(port), "--no-sandbox"], env, workdir
            )
            processes.append(gateway)
            wait_http(url + "/healthz", gateway)

            http = httpx.Client(base_url=url, timeout=30)
            auth = {"Authorization": f"Bearer {key}"}

            def record(response: httpx.Response) -> httpx.Response:
                transcript.append(str(response.headers))
                transcript.append(response.text)
                return response

            events = [
                {
                    "event": "CompletePayment",
                    "order_id": f"audit-{i}",
                    "value": 10.0 + i,
                    "currency": "USD",
                    "user": {
                        "email": EMAILS[i],
                        "phone": PHONES[i],
                        "ip": "81.2.69.160",
                        "user_agent": "Mozilla/5.0 (audit)",
                    },
                    "page": {"url": "https://shop.example/thanks"},
                }
                for i in range(N)
            ]
            # personal data inside URLs: page.url and page.referrer at ingest, the landing
            # URL and referrer of a page view at collect
            events[0]["page"] = {
                "url": f"https://shop.example/thanks?{URL_QUERY}",
                "referrer": f"https://mail.example/open?to={quote(URL_EMAIL)}",
            }
            site_key = (
                cli(
                    env,
                    workdir,
                    *("keys", "create", "--name", "site", "--scope", "collect"),
                    *("--property", "default"),
                )
                .strip()
                .splitlines()[-1]
            )
            page_view = {
                "key": site_key,
                "session_id": "AuditSession-0001",
                "url": f"{url}/landing?{URL_QUERY}",
                "referrer": f"https://mail.example/?tel={quote(URL_PHONE)}",
                "landing": True,
                # Google's ids and a mirrored gtag call take the same path (migration 0011)
                "gclid": "Cj0KCQ-9",
                "ga_client_id": "GA1.1.1234567890.1700000000",
                "events": [{"event": "purchase", "event_id": "audit-0", "platform": "google"}],
            }
            collected = record(
                http.post(
                    "/v1/collect",
                    content=orjson.dumps(page_view),
                    headers={"Origin": url, "Content-Type": "text/plain"},
                )
            )
            assert collected.status_code == 204, collected.text
            accepted = record(http.post("/v1/events", json={"events": events[:3]}, headers=auth))
            assert accepted.status_code == 202, accepted.text
            eu_auth = {"Authorization": f"Bearer {eu_key}"}
            for index, item in enumerate(events[3:], start=3):
                # the second property's orders go with its own key, to its own pixels
                headers = eu_auth if index % 2 else auth
                assert (
                    record(http.post("/v1/events", json=item, headers=headers)).status_code == 202
                )
            # Refusals and warnings must not echo the identifiers either.
            record(http.post("/v1/events", json={**events[0], "oops": EMAILS[0]}, headers=auth))
            bad_user = {**events[0], "order_id": "x", "user": {"emial": EMAILS[1]}}
            record(http.post("/v1/events", json=bad_user, headers=auth))
            bad_phone = {
                **events[0],
                "order_id": "y",
                "user": {"email": EMAILS[2] + " x", "phone": PHONES[2] + "999999"},
            }
            record(http.post("/v1/events", json=bad_phone, headers=auth))
            record(http.post("/v1/events", content=b"\xff" + EMAILS[3].encode(), headers=auth))

            def owner(i: int) -> dict[str, str]:
                return eu_auth if i >= 3 and i % 2 else auth

            deadline = time.monotonic() + 60
            while True:
                stats = httpx.get(f"{url}/readyz").json()
                delivered = [
                    httpx.get(f"{url}/v1/events/CompletePayment-audit-{i}", headers=owner(i)).json()
                    for i in range(N)
                ]
                statuses = {d["status"] for r in delivered for d in r["deliveries"]}
                if statuses == {"delivered"}:
                    break
                assert time.monotonic() < deadline, f"not delivered: {statuses} {stats}"
                time.sleep(0.2)
            by_pixel = httpx.get(f"{sandbox_url}/_sandbox/tiktok/stats").json()["by_pixel"]
            # each property's orders reached its own pixel, with its own token
            assert by_pixel[EU_TIKTOK_PIXEL] == 2
            assert by_pixel[TIKTOK_PIXEL] >= 4

            for i in range(N):
                record(http.get(f"/v1/events/CompletePayment-audit-{i}", headers=owner(i)))
            for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/login"):
                record(http.get(path))
            admin = {"Authorization": f"Bearer {admin_key}"}
            record(http.get("/metrics", headers=admin))
            record(http.get("/admin/api/status", headers=admin))
            record(http.get("/admin/api/overview", headers=admin))
            record(http.get("/admin/api/dead-letters", headers=admin))
            with httpx.Client(base_url=url, timeout=30) as browser:
                form = browser.get("/login")
                record(form)
                record(
                    browser.post(
                        "/login",
                        data={
                            "csrf_token": csrf_from(form.text),
                            "name": "admin",
                            "password": PASSWORD,
                        },
                    )
                )
                page = record(browser.get("/admin"))
                assert 'data-figure="received"' in page.text  # the overview rendered
                # every dashboard page and JSON twin a person or a script can open
                for path in (
                    "/admin/identifiers",
                    "/admin/dedup",
                    "/admin/dead-letters",
                    "/admin/test-events",
                    "/admin/connections",
                    "/reports/gap",
                    "/reports/gap.json",
                    "/reports/gap.csv",
                    "/reports/gap/charts/gap.svg",
                    "/admin/api/identifiers",
                    "/admin/api/dedup",
                ):
                    assert record(browser.get(path)).status_code == 200, path
                fired = record(
                    browser.post(
                        "/admin/test-events/fire",
                        data={"csrf_token": csrf_from(page.text)},
                        follow_redirects=True,
                    )
                )
                assert fired.status_code == 200  # followed to the side-by-side page
                assert "/admin/test-events/" in str(fired.url)
                seen = fired
                for _ in range(100):  # until both destinations answered (no meta refresh)
                    if 'http-equiv="refresh"' not in seen.text:
                        break
                    time.sleep(0.2)
                    seen = record(browser.get(str(fired.url)))
                assert 'http-equiv="refresh"' not in seen.text
                record(browser.post("/logout", data={"csrf_token": csrf_from(page.text)}))
            http.close()

            live_files = raw_files(workdir)
            gateway.stop()
            logs = gateway.output()
            assert '"level"' in logs or logs == ""  # JSON lines (stderr is not a terminal)
        finally:
            for proc in processes:
                proc.stop()
        stored = live_files + raw_files(workdir)
        haystacks = {
            "gateway logs": logs,
            "responses": "\n".join(transcript),
            "database files": stored.decode("latin-1"),
        }
        needles = [TOKEN, TOKEN2]
        for email, phone in zip([*EMAILS, URL_EMAIL], [*PHONES, URL_PHONE], strict=True):
            needles.extend(forms_of(email, phone))
            needles.extend({quote(email), quote(phone), quote(email.lower())})
        found = [
            f"{needle!r} in {where}"
            for where, text in haystacks.items()
            for needle in needles
            if needle in text
        ]
        assert found == []
        assert len(stored) > 10_000  # the database really was read


def raw_files(directory: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = directory / f"bc.db{suffix}"
        if path.exists():
            data += path.read_bytes()
    return data
