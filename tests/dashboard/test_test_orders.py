"""Test events and "Fire a test order": the store contract, the code rules, the dashboard
action over real HTTP against the sandbox, and `backchannel send --test` against a running
gateway."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel import credentials, testorder
from backchannel.store import open_store
from backchannel.store.base import Connection, Store
from backchannel.testorder import SANDBOX_CODE, FireError, resolve_code
from hardening import conftest as hardening
from hardening.conftest import App, StartApp, csrf_from
from serve.helpers import META_PIXEL, TIKTOK_PIXEL, conversion, wait_for
from store.helpers import LEASE, NOW
from store.helpers import conversion as stored_conversion

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

TT_CODE, META_CODE = "TEST_TT_111", "TEST_META_222"
TOKEN = "liveTokenForTheTestOrder0123ABCD"
EMAIL_HASH = hashlib.sha256(b"test@example.com").hexdigest()


# -- the store contract (both backends) -------------------------------------------------------
class TestMarkDeliveredContract:
    def test_test_batches_keep_what_was_sent_and_answered(self, store: Store) -> None:
        """mark_delivered(sent=, response=) stores each row's body and the answer; without
        them (production) both stay NULL."""
        store.insert_conversions(
            [stored_conversion(1, test_event_code="T1"), stored_conversion(2)], NOW
        )
        claimed = {c.conversion_id: c.outbox_id for c in store.claim("tiktok", 10, NOW, LEASE)}
        test_id, prod_id = claimed[1], claimed[2]
        store.mark_delivered(
            [test_id], NOW + 1, "req-1", sent=[b'{"event":"E1"}'], response='{"code":0}'
        )
        store.mark_delivered([prod_id], NOW + 2, "req-2")
        rows = store.read(
            "SELECT id, status, platform_ref, sent_body, last_response, delivered_at FROM outbox"
            " WHERE destination = ? ORDER BY id",
            ("tiktok",),
        )
        assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
            ("delivered", "req-1", b'{"event":"E1"}', '{"code":0}', NOW + 1),
            ("delivered", "req-2", None, None, NOW + 2),
        ]
        with pytest.raises(ValueError, match="one body per id"):
            store.mark_delivered([test_id, prod_id], NOW, None, sent=[b"{}"])

    def test_retention_scrubs_delivered_test_bodies(self, store: Store) -> None:
        """The retention scrub removes ip and user agent from a delivered test row's body."""
        store.insert_conversions([stored_conversion(1, test_event_code="T1")], NOW)
        (row,) = store.claim("tiktok", 10, NOW, LEASE)
        body = {"event": "X", "user": {"email": ["h"], "ip": "81.2.69.160", "user_agent": "UA"}}
        store.mark_delivered([row.outbox_id], NOW, "r", sent=[orjson.dumps(body)], response="{}")
        (meta,) = store.claim("meta", 10, NOW, LEASE)
        store.mark_delivered([meta.outbox_id], NOW, "r")
        assert store.scrub_conversions(NOW + 10, 100, NOW + 20) == 1
        (sent,) = store.read("SELECT sent_body FROM outbox WHERE id = ?", (row.outbox_id,))
        assert orjson.loads(sent[0]) == {"event": "X", "user": {"email": ["h"]}}


# -- the rules ----------------------------------------------------------------------------------
def conn(destination: str, code: str | None, token: bool) -> Connection:
    return Connection(destination, "PIXEL", b"x" if token else None, "abcd", code, 1.0)


class TestCodeRules:
    @pytest.mark.parametrize(
        ("given", "connections", "expected"),
        [
            ("MINE", {}, "MINE"),
            (None, {}, SANDBOX_CODE),
            (None, {"tiktok": conn("tiktok", None, False)}, SANDBOX_CODE),
            (None, {"meta": conn("meta", "M1", True)}, "M1"),
            (
                None,
                {"tiktok": conn("tiktok", "T1", True), "meta": conn("meta", "M1", True)},
                "T1",
            ),
            ("OVERRIDE", {"meta": conn("meta", None, True)}, "OVERRIDE"),
        ],
    )
    def test_resolution(
        self, given: str | None, connections: dict[str, Connection], expected: str
    ) -> None:
        """--code, else a connection's code, else the sandbox default."""
        assert resolve_code(given, connections, ("tiktok", "meta")) == expected

    def test_live_destination_without_code_is_refused(self) -> None:
        """A live destination with no code of its own and no --code: an error naming
        test_event_code and the destination."""
        with pytest.raises(FireError, match="test_event_code: meta is live and has none"):
            resolve_code(None, {"meta": conn("meta", None, True)}, ("tiktok", "meta"))
        with pytest.raises(FireError, match="test_event_code: must be 1 to 64"):
            resolve_code("x" * 65, {}, ("tiktok",))

    def test_identifiers_show_hash_tails_only(self) -> None:
        """Hashed values are shown as 'sha256 …' and their last 6 characters."""
        sent = orjson.dumps({"user": {"email": [EMAIL_HASH], "user_agent": "UA/1", "ip": None}})
        found = testorder.identifiers("tiktok", sent)
        assert [(i.key, i.shown) for i in found] == [
            ("email", f"sha256 …{EMAIL_HASH[-6:]}"),
            ("user_agent", "UA/1"),
        ]
        meta = orjson.dumps({"user_data": {"em": [EMAIL_HASH]}})
        assert [(i.key, i.shown) for i in testorder.identifiers("meta", meta)] == [
            ("em", f"sha256 …{EMAIL_HASH[-6:]}")
        ]

    def test_sample_order_is_clearly_fake(self) -> None:
        """The built-in order: test identifiers, order_id test-<random>, 1.00 USD."""
        one, two = testorder.sample_order("C"), testorder.sample_order("C")
        assert one["order_id"].startswith("test-")
        assert one["order_id"] != two["order_id"]
        assert (one["value"], one["currency"], one["test_event_code"]) == (1.0, "USD", "C")
        assert one["user"]["email"] == "test@example.com"


# -- over real HTTP -----------------------------------------------------------------------------
def configure(app: App, *, token: bool) -> None:
    """Each destination its own test code (and, with ``token``, a token: live mode, still
    pointed at the sandbox by the configured base URLs)."""
    store = open_store(app.settings.database_url)
    cipher = credentials.load_cipher(app.settings)
    try:
        for destination, pixel, code in (
            ("tiktok", TIKTOK_PIXEL, TT_CODE),
            ("meta", META_PIXEL, META_CODE),
        ):
            ciphertext = credentials.encrypt(cipher, TOKEN) if token else None
            store.set_connection(
                Connection(destination, pixel, ciphertext, TOKEN[-4:] if token else None, code, 1.0)
            )
    finally:
        store.close()


def sandbox_events(app: App, destination: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=app.sandbox_url or "", timeout=30) as client:
        events: list[dict[str, Any]] = client.get(f"/_sandbox/{destination}/events").json()[
            "events"
        ]
    return events


def fire_from_dashboard(app: App, client: httpx.Client) -> httpx.Response:
    page = client.get("/admin/test-events")
    assert page.status_code == 200
    return client.post(
        "/admin/test-events/fire",
        data={"csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )


class TestDashboard:
    def test_fire_a_test_order(self, start_app: StartApp) -> None:
        """The button ingests the sample, 303s to its page; each platform gets exactly one
        request carrying ITS OWN code; the page shows sent / answered / identifiers side by
        side and stops refreshing once final; no ledger row; the token never comes back."""
        app = start_app(sandbox=True, worker=True)
        configure(app, token=True)
        bodies: list[str] = []
        with app.client() as client:
            app.login(client)
            fired = fire_from_dashboard(app, client)
            bodies.append(fired.text)
            assert fired.status_code == 303, fired.text
            location = fired.headers["location"]
            assert re.fullmatch(r"/admin/test-events/\d+", location)

            def final_page() -> str | None:
                page = client.get(location)
                bodies.append(page.text)
                assert page.status_code == 200
                return page.text if "Every destination is done" in page.text else None

            page = wait_for(final_page, timeout=20, interval=0.2, what="final test page")
            listing = client.get("/admin/test-events")
            bodies.append(listing.text)
        tiktok, meta = sandbox_events(app, "tiktok"), sandbox_events(app, "meta")
        assert len(tiktok) == 1
        assert len(meta) == 1
        assert tiktok[0]["_test_event_code"] == TT_CODE
        assert meta[0]["_test_event_code"] == META_CODE
        event_id = tiktok[0]["event_id"]
        assert event_id == meta[0]["event_id"]
        assert event_id.startswith("CompletePayment-test-")

        assert 'http-equiv="refresh"' not in page
        for destination in ("tiktok", "meta"):
            status = re.search(rf'data-testid="status-{destination}"><span[^>]*>(\w+)<', page)
            assert status is not None
            assert status.group(1) == "delivered"
        sent = re.search(r'data-testid="sent-tiktok">(.*?)</pre>', page, re.S)
        assert sent is not None
        assert event_id in sent.group(1)
        assert EMAIL_HASH in sent.group(1)  # the exact body sent
        answered = re.search(r'data-testid="answered-tiktok">(.*?)</pre>', page, re.S)
        assert answered is not None
        assert "&quot;code&quot;:0" in answered.group(1).replace(" ", "")
        idents = re.search(r'data-testid="identifiers-meta">(.*?)</div>', page, re.S)
        assert idents is not None
        assert f"<code>em</code> sha256 …{EMAIL_HASH[-6:]}" in idents.group(1)
        assert f"test_event_code sent: <code>{TT_CODE}</code>" in page
        assert f"test_event_code sent: <code>{META_CODE}</code>" in page

        assert event_id in listing.text
        assert re.search(r'data-figure="test_conversions">1<', listing.text)
        assert re.search(r'data-figure="production_conversions">0<', listing.text)
        # the stored conversion keeps the resolved code; each platform got its own
        assert app.sql("SELECT test_event_code, origin FROM conversions") == [(TT_CODE, "test")]
        assert app.sql("SELECT COUNT(*) FROM orders") == [(0,)]
        stored = app.sql("SELECT destination, sent_body, last_response FROM outbox ORDER BY id")
        assert all(body is not None and answer for _, body, answer in stored)
        assert app.sql("SELECT actor, action FROM audit_log WHERE action = 'test.fire'") == [
            ("member admin", "test.fire")
        ]
        assert not any(TOKEN in body for body in bodies)

    def test_production_events_are_not_listed_and_pending_page_refreshes(
        self, start_app: StartApp
    ) -> None:
        """Production conversions stay off the list; with no worker the test order's page
        says it waits and carries a 2 s refresh; its rows are pending."""
        app = start_app(sandbox=True, worker=False)
        response = app.http.post(
            "/v1/events",
            json=conversion(5),
            headers={"Authorization": f"Bearer {app.key}"},
        )
        assert response.status_code == 202
        with app.client() as client:
            app.login(client)
            fired = fire_from_dashboard(app, client)
            assert fired.status_code == 303
            page = client.get(fired.headers["location"])
            assert '<meta http-equiv="refresh" content="2">' in page.text
            assert "Waiting for delivery" in page.text
            listing = client.get("/admin/test-events")
            missing = client.get("/admin/test-events/999999")
            bad = client.get("/admin/test-events/abc")
        assert "CompletePayment-5" not in listing.text
        assert re.search(r'data-figure="production_conversions">1<', listing.text)
        assert app.sql(
            "SELECT status FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE c.test_event_code IS NOT NULL"
        ) == [("pending",), ("pending",)]
        assert missing.status_code == 404
        assert "is not a stored test conversion" in missing.text
        assert bad.status_code == 404
        assert "conversion_id: not a conversion number" in bad.text

    def test_live_destination_without_code_is_a_400(self, start_app: StartApp) -> None:
        """Firing with a live destination that has no code: 400 naming test_event_code,
        nothing stored."""
        app = start_app(sandbox=True)
        store = open_store(app.settings.database_url)
        try:
            cipher = credentials.load_cipher(app.settings)
            store.set_connection(
                Connection("meta", META_PIXEL, credentials.encrypt(cipher, TOKEN), "ABCD", None, 1)
            )
        finally:
            store.close()
        with app.client() as client:
            app.login(client)
            response = fire_from_dashboard(app, client)
        assert response.status_code == 400
        assert "test_event_code: meta is live and has none" in response.text
        assert app.sql("SELECT COUNT(*) FROM conversions") == [(0,)]
        assert TOKEN not in response.text


class TestPerProperty:
    def test_each_property_fires_to_and_sees_only_its_own(self, start_app: StartApp) -> None:
        """On ``?property=eu`` the button fires into eu (eu's connections and code, the audit
        row eu's); each property's list and counts hold only its own test events; the detail
        page of eu's conversion is a 404 on the default property, not a view of it."""
        app = start_app(sandbox=True, worker=True)
        configure(app, token=False)  # the default property: TikTok and Meta, their own codes
        eu_code = "TEST_EU_333"
        store = open_store(app.settings.database_url)
        try:
            eu = store.create_property("eu", time.time(), destinations=("tiktok",))
            assert eu is not None
            store.set_connection(
                Connection("tiktok", TIKTOK_PIXEL, None, None, eu_code, 1.0, property_id=eu)
            )
        finally:
            store.close()
        with app.client() as client:
            app.login(client)
            home = fire_from_dashboard(app, client)
            assert home.status_code == 303, home.text
            page = client.get("/admin/test-events?property=eu")
            assert page.status_code == 200
            fired = client.post(
                "/admin/test-events/fire?property=eu",
                data={"csrf_token": csrf_from(page.text)},
                follow_redirects=False,
            )
            assert fired.status_code == 303, fired.text
            location = fired.headers["location"]
            assert re.fullmatch(r"/admin/test-events/\d+\?property=eu", location)
            eu_id = location.split("/")[-1].split("?")[0]
            wait_for(
                lambda: len(sandbox_events(app, "tiktok")) == 2 or None,
                timeout=20,
                interval=0.2,
                what="both test orders at TikTok",
            )
            default_list = client.get("/admin/test-events")
            eu_list = client.get("/admin/test-events?property=eu")
            eu_detail = client.get(location)
            eu_on_default = client.get(f"/admin/test-events/{eu_id}")
        stored = app.sql(
            "SELECT c.property_id, c.test_event_code, c.event_id, o.destination, n.property_id"
            " FROM conversions c JOIN outbox o ON o.conversion_id = c.id"
            " JOIN connections n ON n.id = o.connection_id ORDER BY c.id, o.id"
        )
        (default_event,) = {r[2] for r in stored if r[0] == 1}
        (eu_event,) = {r[2] for r in stored if r[0] == eu}
        # eu's order went to eu's TikTok connection only, with eu's code
        assert [(r[1], r[3], r[4]) for r in stored if r[0] == eu] == [(eu_code, "tiktok", eu)]
        # the default's: its two connections (the conversion keeps the resolved code; each
        # platform gets its own at delivery, checked at the sandbox below)
        assert sorted((r[1], r[3], r[4]) for r in stored if r[0] == 1) == [
            (TT_CODE, "meta", 1),
            (TT_CODE, "tiktok", 1),
        ]
        codes = sorted(e["_test_event_code"] for e in sandbox_events(app, "tiktok"))
        assert codes == sorted([TT_CODE, eu_code])
        assert [e["_test_event_code"] for e in sandbox_events(app, "meta")] == [META_CODE]
        assert app.sql(
            "SELECT property_id FROM audit_log WHERE action = 'test.fire' ORDER BY id"
        ) == [(1,), (eu,)]
        # each list: its own event only, its own counts, its own destinations' columns
        assert default_event in default_list.text
        assert eu_event not in default_list.text
        assert re.search(r'data-figure="test_conversions">1<', default_list.text)
        assert eu_event in eu_list.text
        assert default_event not in eu_list.text
        assert re.search(r'data-figure="test_conversions">1<', eu_list.text)
        assert "<th>meta</th>" not in eu_list.text.replace(' scope="col"', "")
        assert eu_detail.status_code == 200
        assert eu_event in eu_detail.text
        assert eu_on_default.status_code == 404
        assert eu_event not in eu_on_default.text


# -- the CLI ----------------------------------------------------------------------------------
def cli(app: App, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env["BACKCHANNEL_DATABASE_URL"] = app.settings.database_url
    env["BACKCHANNEL_SECRET_KEY"] = app.settings.secret_key or ""
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=Path(app.settings.database_url.removeprefix("sqlite:///")).parent,
        env=env,
        timeout=90,
        check=False,
    )


class TestSendTestCli:
    def test_sample_through_a_running_gateway(self, start_app: StartApp) -> None:
        """`send --test --json` stores the sample, the running worker delivers it with each
        destination's code, and the JSON shows both sides; the token never appears."""
        app = start_app(sandbox=True, worker=True)
        configure(app, token=True)
        done = cli(app, "send", "--test", "--json", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert TOKEN not in done.stdout + done.stderr
        view = orjson.loads(done.stdout)
        assert view["final"] is True
        assert view["test_event_code"] == TT_CODE
        by = {d["destination"]: d for d in view["destinations"]}
        assert by["tiktok"]["status"] == "delivered"
        assert by["meta"]["status"] == "delivered"
        assert by["tiktok"]["test_event_code"] == TT_CODE
        assert by["meta"]["test_event_code"] == META_CODE
        assert by["tiktok"]["sent"]["event_id"] == view["event_id"]
        assert by["tiktok"]["answered"]["code"] == 0
        assert by["meta"]["identifiers"]["em"] == f"sha256 …{EMAIL_HASH[-6:]}"
        assert [e["_test_event_code"] for e in sandbox_events(app, "meta")] == [META_CODE]
        assert app.sql("SELECT COUNT(*) FROM orders") == [(0,)]
        table = cli(app, "send", "--test", "--timeout", "30")
        assert table.returncode == 0, table.stderr
        assert "tiktok: delivered" in table.stdout
        assert "meta: delivered" in table.stdout

    def test_given_file_and_code(self, start_app: StartApp, tmp_path: Path) -> None:
        """`send --test FILE --code X`: that conversion, with X (sandbox mode: no connection)."""
        app = start_app(sandbox=True, worker=True)
        path = tmp_path / "order.json"
        path.write_bytes(orjson.dumps(conversion("file-1")))
        done = cli(app, "send", "--test", str(path), "--code", "MYCODE", "--json")
        assert done.returncode == 0, done.stderr
        view = orjson.loads(done.stdout)
        assert view["event_id"] == "CompletePayment-file-1"
        assert [e["_test_event_code"] for e in sandbox_events(app, "tiktok")] == ["MYCODE"]
        again = cli(app, "send", "--test", str(path), "--code", "MYCODE")
        assert again.returncode == 2
        assert "already stored" in again.stderr

    def test_nothing_running_exits_1(self, start_app: StartApp) -> None:
        """No worker delivering: exit 1 after --timeout, asking whether serve/worker runs."""
        app = start_app(sandbox=True, worker=False)
        started = time.monotonic()
        done = cli(app, "send", "--test", "--timeout", "1")
        assert done.returncode == 1
        assert time.monotonic() - started < 30
        assert "is `backchannel serve` or `backchannel worker` running" in done.stderr
        assert "Traceback" not in done.stderr

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("send", "--test", "--dry-run"), "--test and --dry-run"),
            (("send", "--test", "--timeout", "0"), "--timeout: "),
            (("send", "--code", "X", "--dry-run", "-"), "--code: only with --test"),
            (("send", "--test", "--code", ""), "test_event_code: must be 1 to 64"),
        ],
    )
    def test_bad_usage_exits_2(
        self, start_app: StartApp, args: tuple[str, ...], message: str
    ) -> None:
        """Bad flag combinations: exit 2 with a message naming the flag, no traceback."""
        app = start_app()
        done = cli(app, *args)
        assert done.returncode == 2, done
        assert done.stderr.startswith("error: ")
        assert message in done.stderr
        assert "Traceback" not in done.stderr
