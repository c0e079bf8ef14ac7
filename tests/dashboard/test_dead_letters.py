"""Dead letters: the list, one letter, replay — from a seeded store on both backends, then over
real HTTP with a real login (CSRF, audit, the fixed "Re-queued N" message).

Seeded by :func:`dashboard.test_overview.seed`: two dead rows, both meta —
``CompletePayment-2`` (production, due A, an HTML answer) and ``CompletePayment-6`` (a test
event, due B, newer).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel.diagnostics import pretty
from backchannel.diagnostics.dead_letters import (
    PER_PAGE,
    dead_count,
    dead_letter,
    dead_page,
)
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store import open_store
from backchannel.store.base import Dead, Store
from backchannel.web.app import Options, create_app
from dashboard.helpers import Gateway, seeded_gateway
from dashboard.test_overview import DEAD_BODY, HOSTILE_ANSWER, PASSWORD, A, B, by_n, seed
from serve.helpers import (
    FAST_RETRY,
    META_PIXEL,
    TIKTOK_PIXEL,
    Sandbox,
    add_key,
    make_settings,
    wait_for,
)
from serve.helpers import conversion as serve_conversion
from store.helpers import LEASE, conversion
from support.server import ServerThread


def outbox_id(store: Store, event_id: str, destination: str) -> int:
    ((oid,),) = store.read(
        "SELECT o.id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        " WHERE c.event_id = ? AND o.destination = ?",
        (event_id, destination),
    )
    return int(oid)


# --- the data functions, on both backends --------------------------------------------------------
class TestDeadLetterData:
    def test_list_is_newest_first_with_test_flag(self, store: Store) -> None:
        """Dead rows, newest last try first; test events flagged; filter by destination."""
        seed(store)
        page = dead_page(store)
        assert (page.total, page.page, page.pages) == (2, 1, 1)
        assert [(r.event_id, r.destination, r.test, r.attempts) for r in page.rows] == [
            ("CompletePayment-6", "meta", True, 1),
            ("CompletePayment-2", "meta", False, 1),
        ]
        assert [r.died_at for r in page.rows] == [B, A]
        assert page.rows[1].reason == "Invalid parameter (#100): em is not a valid hash"
        assert dead_page(store, destination="tiktok").total == 0
        assert dead_page(store, destination="meta").total == 2

    def test_pages_hold_fifty_rows(self, store: Store) -> None:
        """55 dead letters: page 1 has the 50 newest, page 2 the 5 oldest, page 3 none."""
        for n in range(55):
            store.insert_conversions([conversion(n, destinations=("tiktok",))], 1000.0 + n)
        claimed = by_n(store.claim("tiktok", 100, 2000.0, LEASE))
        store.mark_dead([Dead(oid, b"{}") for oid in claimed.values()], "refused", None, None)
        first, second = dead_page(store, page=1), dead_page(store, page=2)
        assert (first.total, first.pages, len(first.rows)) == (55, 2, PER_PAGE)
        assert first.rows[0].event_id == "CompletePayment-54"
        assert [r.event_id for r in second.rows] == [
            f"CompletePayment-{n}" for n in range(4, -1, -1)
        ]
        assert dead_page(store, page=3).rows == []

    def test_one_letter_keeps_the_exact_body_sent(self, store: Store) -> None:
        """The detail holds the reason, the answer and the body exactly as sent."""
        seed(store)
        letter = dead_letter(store, outbox_id(store, "CompletePayment-2", "meta"))
        assert letter is not None
        assert letter.status == "dead"
        assert letter.sent_body == orjson.dumps(DEAD_BODY)
        assert letter.response == HOSTILE_ANSWER
        assert (letter.event, letter.event_id, letter.event_time) == (
            "CompletePayment",
            "CompletePayment-2",
            1_799_999_000,
        )
        assert letter.received_at == A
        assert letter.test_event_code is None
        assert (
            pretty(letter.sent_body) == orjson.dumps(DEAD_BODY, option=orjson.OPT_INDENT_2).decode()
        )
        assert dead_letter(store, 999_999) is None

    def test_dead_count_is_what_a_replay_takes(self, store: Store) -> None:
        """dead_count matches Store.replay's count for the same event_id and destination."""
        seed(store)
        assert dead_count(store, "CompletePayment-2") == 1
        assert dead_count(store, "CompletePayment-2", "tiktok") == 0
        assert dead_count(store, "CompletePayment-1") == 0  # delivered, not dead
        assert store.replay(A + 100, event_id="CompletePayment-2", destination="meta") == 1
        assert dead_count(store, "CompletePayment-2") == 0

    def test_pretty_shows_non_json_as_text(self) -> None:
        """A body that is not JSON is shown as it is, never dropped."""
        assert pretty(b"not json") == "not json"
        assert pretty(None) == ""


# --- over real HTTP -----------------------------------------------------------------------------
class Running(Gateway):
    """The seeded gateway, with what these tests read back."""

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        store = open_store(self.settings.database_url)
        try:
            return store.read(sql, params)
        finally:
            store.close()

    def status(self, event_id: str, destination: str) -> tuple[str, int]:
        ((status, attempts),) = self.rows(
            "SELECT o.status, o.attempts FROM outbox o JOIN conversions c"
            " ON c.id = o.conversion_id WHERE c.event_id = ? AND o.destination = ?",
            event_id,
            destination,
        )
        return status, attempts

    @contextmanager
    def login(self) -> Iterator[tuple[httpx.Client, str]]:
        """A logged-in client and its session's CSRF token (read off the dashboard)."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            form = client.get("/login")
            data = {"csrf_token": csrf(form.text), "name": "admin", "password": PASSWORD}
            done = client.post("/login", data=data)
            assert done.status_code == 303, done.text
            yield client, csrf(client.get("/admin/dead-letters").text)


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with seeded_gateway(tmp_path, seed) as gw:
        yield Running(gw.url, gw.settings, gw.admin_key, gw.http)


class TestDeadLetterPages:
    def test_pages_need_an_admin(self, running: Running) -> None:
        """Logged out: the pages redirect to /login; the JSON and replay answer 401."""
        for path in ("/admin/dead-letters", "/admin/dead-letters/1"):
            response = running.http.get(path, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=")
        assert running.http.get("/admin/api/dead-letters").status_code == 401
        anonymous = running.http.post("/admin/dead-letters/replay", data={"all": "1"})
        assert anonymous.status_code == 401
        assert running.status("CompletePayment-2", "meta") == ("dead", 1)

    def test_list_page_and_json(self, running: Running) -> None:
        """The list shows both dead letters (the test one badged), linked to their detail."""
        page = running.http.get("/admin/dead-letters", headers=running.admin)
        assert page.status_code == 200
        assert '<span class="figure" data-figure="dead_total">2</span>' in page.text
        table = page.text.split('data-testid="dead-letters"', 1)[1]
        assert table.index("CompletePayment-6") < table.index("CompletePayment-2")
        assert table.count('class="badge test"') == 1
        oid = running.rows(
            "SELECT o.id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE c.event_id = 'CompletePayment-2' AND o.destination = 'meta'"
        )[0][0]
        assert f'href="/admin/dead-letters/{oid}"' in page.text
        api = running.http.get("/admin/api/dead-letters?destination=meta", headers=running.admin)
        assert api.status_code == 200
        doc = api.json()
        assert (doc["total"], doc["page"], doc["pages"]) == (2, 1, 1)
        assert [r["event_id"] for r in doc["rows"]] == ["CompletePayment-6", "CompletePayment-2"]
        assert [r["test"] for r in doc["rows"]] == [True, False]
        none = running.http.get("/admin/dead-letters?destination=tiktok", headers=running.admin)
        assert '<span class="figure" data-figure="dead_total">0</span>' in none.text

    @pytest.mark.parametrize(
        ("query", "name"),
        [
            ("destination=friendster", "destination"),
            ("page=0", "page"),
            ("page=two", "page"),
            ("page=-1", "page"),
            ("replayed=%3Cb%3E", "replayed"),
        ],
    )
    def test_bad_query_is_a_400_naming_it(self, running: Running, query: str, name: str) -> None:
        """A bad filter, page or message count is a 400 that names the parameter."""
        page = running.http.get(f"/admin/dead-letters?{query}", headers=running.admin)
        assert page.status_code == 400
        assert f"{name}: " in page.text
        assert "<b>" not in page.text
        if name != "replayed":
            api = running.http.get(f"/admin/api/dead-letters?{query}", headers=running.admin)
            assert api.status_code == 400
            assert api.json()["errors"][0]["path"] == name

    def test_detail_shows_reason_answer_and_body_escaped(self, running: Running) -> None:
        """The detail page shows the reason, the escaped answer and the pretty body sent."""
        ((oid,),) = running.rows(
            "SELECT o.id FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE c.event_id = 'CompletePayment-2' AND o.destination = 'meta'"
        )
        page = running.http.get(f"/admin/dead-letters/{oid}", headers=running.admin)
        assert page.status_code == 200
        assert "Invalid parameter (#100): em is not a valid hash" in page.text
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        body = orjson.dumps(DEAD_BODY, option=orjson.OPT_INDENT_2).decode()
        assert body.replace('"', "&quot;") in page.text
        answer = orjson.dumps(orjson.loads(HOSTILE_ANSWER), option=orjson.OPT_INDENT_2).decode()
        shown = page.text.split('data-testid="response">', 1)[1].split("</pre>", 1)[0]
        assert shown == html.escape(answer)  # indented, escaped
        assert 'action="/admin/dead-letters/replay"' in page.text
        assert running.http.get("/admin/dead-letters/abc", headers=running.admin).status_code == 400
        missing = running.http.get("/admin/dead-letters/999999", headers=running.admin)
        assert missing.status_code == 404
        assert "outbox_id: " in missing.text


class TestReplay:
    def test_replay_without_csrf_token_is_refused(self, running: Running) -> None:
        """A logged-in POST without the CSRF token is a 403 and re-queues nothing."""
        with running.login() as (client, _):
            response = client.post(
                "/admin/dead-letters/replay", data={"event_id": "CompletePayment-2"}
            )
            assert response.status_code == 403
            assert response.json()["errors"][0]["path"] == "csrf_token"
            forged = client.post(
                "/admin/dead-letters/replay",
                data={"event_id": "CompletePayment-2", "csrf_token": "forged"},
            )
            assert forged.status_code == 403
        assert running.status("CompletePayment-2", "meta") == ("dead", 1)
        assert running.rows("SELECT COUNT(*) FROM audit_log WHERE action = 'replay'") == [(0,)]

    def test_replay_one_requeues_audits_and_says_so(self, running: Running) -> None:
        """With the token: the row is pending again (attempts reset), audited, and the list
        says "Re-queued 1 delivery"."""
        with running.login() as (client, token):
            response = client.post(
                "/admin/dead-letters/replay",
                data={"csrf_token": token, "event_id": "CompletePayment-2", "destination": "meta"},
            )
            assert response.status_code == 303
            assert response.headers["location"] == "/admin/dead-letters?replayed=1&destination=meta"
            page = client.get(response.headers["location"])
        assert "Re-queued " in page.text
        assert " delivery." in page.text
        assert '<span class="figure" data-figure="replayed">1</span>' in page.text
        assert running.status("CompletePayment-2", "meta") == ("pending", 0)
        assert running.status("CompletePayment-6", "meta") == ("dead", 1)  # untouched
        assert running.rows(
            "SELECT actor, action, detail FROM audit_log WHERE action = 'replay'"
        ) == [
            (
                "member admin",
                "replay",
                "event_id CompletePayment-2, destination meta: 1 re-queued",
            )
        ]

    def test_replay_all_with_an_admin_key(self, running: Running) -> None:
        """all=1 re-queues every dead letter; an admin key needs no CSRF token."""
        response = running.http.post(
            "/admin/dead-letters/replay", data={"all": "1"}, headers=running.admin
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/dead-letters?replayed=2"
        assert running.status("CompletePayment-2", "meta") == ("pending", 0)
        assert running.status("CompletePayment-6", "meta") == ("pending", 0)
        assert running.rows("SELECT actor, detail FROM audit_log WHERE action = 'replay'") == [
            ("admin key ops", "all dead, destination all: 2 re-queued")
        ]
        page = running.http.get(response.headers["location"], headers=running.admin)
        assert '<span class="figure" data-figure="replayed">2</span> deliveries.' in page.text

    @pytest.mark.parametrize(
        ("form", "status", "name"),
        [
            ({}, 400, "event_id"),
            ({"event_id": "   "}, 400, "event_id"),
            ({"event_id": "CompletePayment-999"}, 404, "event_id"),
            ({"event_id": "CompletePayment-1"}, 404, "event_id"),  # delivered, not dead
            ({"event_id": "CompletePayment-2", "destination": "tiktok"}, 404, "event_id"),
            ({"event_id": "CompletePayment-2", "destination": "x"}, 400, "destination"),
            ({"all": "yes"}, 400, "all"),
            ({"all": "1", "event_id": "CompletePayment-2"}, 400, "all"),
            ({"event_id": "e" * 300}, 400, "event_id"),
        ],
    )
    def test_bad_replay_names_the_field(
        self, running: Running, form: dict[str, str], status: int, name: str
    ) -> None:
        """Missing, unknown or contradictory fields: a 4xx naming the field, nothing re-queued."""
        api = running.http.post("/admin/dead-letters/replay", data=form, headers=running.admin)
        assert api.status_code == status
        assert api.json()["errors"][0]["path"] == name
        with running.login() as (client, token):
            page = client.post("/admin/dead-letters/replay", data={**form, "csrf_token": token})
        assert page.status_code == status
        assert f"{name}: " in page.text
        assert running.status("CompletePayment-2", "meta") == ("dead", 1)
        assert running.rows("SELECT COUNT(*) FROM audit_log WHERE action = 'replay'") == [(0,)]


class TestReplayWakesTheWorker:
    def test_replayed_letter_is_delivered_at_once(self, tmp_path: Path) -> None:
        """Replay wakes this process's worker: the row reaches the sandbox in seconds although
        the worker polls only once a minute."""
        config = SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL)
        with ServerThread(create_sandbox(config)) as sandbox_server:
            settings = make_settings(
                tmp_path,
                tiktok_base_url=sandbox_server.url,
                tiktok_pixel=TIKTOK_PIXEL,
                destinations=("tiktok",),
                poll_interval=60.0,
            )
            admin_key = add_key(settings, "ops", scope="admin")
            now = time.time()
            item = normalize(serve_conversion(4242), now=now).conversion
            store = open_store(settings.database_url)
            try:
                store.insert_conversions([to_record(item, [], "api", ("tiktok",))], now)
                (claimed,) = store.claim("tiktok", 10, now, LEASE)
                store.mark_dead([Dead(claimed.outbox_id, b"{}")], "refused once", None, None)
            finally:
                store.close()
            app = create_app(settings, Options(worker=True, sandbox=False, retry=FAST_RETRY))
            with (
                ServerThread(app) as server,
                httpx.Client(base_url=server.url, timeout=30) as http,
                httpx.Client(base_url=sandbox_server.url, timeout=30) as sandbox_http,
            ):
                sandbox = Sandbox(sandbox_server.url, sandbox_http)
                time.sleep(0.5)  # the worker's first look finds nothing due and starts waiting
                assert sandbox.events("tiktok") == []
                started = time.monotonic()
                response = http.post(
                    "/admin/dead-letters/replay",
                    data={"event_id": item.event_id},
                    headers={"Authorization": f"Bearer {admin_key}"},
                )
                assert response.status_code == 303
                events = wait_for(lambda: sandbox.events("tiktok"), timeout=10, what="delivery")
                assert time.monotonic() - started < 10  # far below the 60 s poll
                assert [e["event_id"] for e in events] == [item.event_id]
