"""``/bc.js`` and ``/v1/collect`` over real HTTP, and stitching through ``/v1/events``.

The gateway runs without worker or sandbox (nothing is delivered); the SQLite file is read
directly to see exactly what a 204 or a 202 committed.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest

from backchannel.web.app import Options, create_app
from serve.helpers import add_key, db_path, make_settings, sha
from support.server import ServerThread

SID = "Sess-AbCdEfGhIjKlMnOp"
SHOP = "https://shop.example"
CLIENT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Mobile/1 Safari/604.1"
)


@dataclass
class Gateway:
    url: str
    db: Path
    site_key: str
    ingest_key: str

    def collect(
        self,
        body: Any = None,
        *,
        origin: str | None = SHOP,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"Content-Type": "text/plain;charset=UTF-8", "User-Agent": CLIENT_UA}
        if origin is not None:
            sent["Origin"] = origin
        sent.update(headers or {})
        content = raw if raw is not None else orjson.dumps(body)
        return httpx.post(self.url + "/v1/collect", content=content, headers=sent, params=params)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def session(self, column: str, sid: str = SID) -> Any:
        query = f"SELECT {column} FROM landing_sessions WHERE session_id = ?"  # noqa: S608
        rows = self.rows(query, sid)
        return rows[0][0] if rows else None

    def ingest(self, body: Any) -> httpx.Response:
        return httpx.post(
            self.url + "/v1/events",
            json=body,
            headers={"Authorization": f"Bearer {self.ingest_key}"},
        )


StartGateway = Callable[..., Gateway]


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartGateway]:
    # As `backchannel serve` runs uvicorn (proxy_headers=False): only the gateway's own
    # trusted_proxies setting may turn X-Forwarded-For into the client address.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    with ExitStack() as stack:

        def run(**overrides: Any) -> Gateway:
            overrides.setdefault("collect_origins", (SHOP,))
            settings = make_settings(tmp_path, **overrides)
            site = add_key(settings, "site", "collect")
            ingest = add_key(settings, "shop", "ingest")
            server = stack.enter_context(
                ServerThread(create_app(settings, Options(worker=False, sandbox=False)))
            )
            return Gateway(server.url, db_path(settings), site, ingest)

        yield run


@pytest.fixture
def gateway(start: StartGateway) -> Gateway:
    return start()


def page(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"key": gateway.site_key, "session_id": SID, "url": SHOP + "/"}
    body.update(fields)
    return body


class TestScript:
    def test_bc_js_is_served_with_the_click_window(self, start: StartGateway) -> None:
        """/bc.js is JavaScript, cacheable, with click_cookie_days and the declared platform
        ids filled in; under 32 kB unminified (it loads on every page of a shop: the budget
        holds every platform's id capture and Pixel mirror)."""
        gateway = start(click_cookie_days=3)
        response = httpx.get(gateway.url + "/bc.js")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/javascript")
        assert "max-age" in response.headers["cache-control"]
        assert 'Number("3")' in response.text
        assert "__BC_CLICK_DAYS__" not in response.text
        assert "/*__BC_IDS__*/" not in response.text
        assert "eventId" in response.text
        assert len(response.content) < 32_000

    def test_bc_js_is_told_which_pixel_calls_to_mirror(self, start: StartGateway) -> None:
        """The served script's MIRRORS is every declared Pixel call and the platform its rows
        go under (written out here, so a destination losing its mirror shows)."""
        response = httpx.get(start().url + "/bc.js")
        found = re.search(r"var MIRRORS = (\{[^\n]*\});", response.text)
        assert found is not None
        assert orjson.loads(found.group(1)) == {
            "ttq.track": "tiktok",
            "fbq": "meta",
            "gtag": "google",
            "snaptr": "snapchat",
            "pintrk": "pinterest",
            "rdt": "reddit",
        }
        assert "__BC_MIRRORS__" not in response.text


class TestCollect:
    def test_page_view_is_stored_with_the_visitors_ip_and_agent(self, gateway: Gateway) -> None:
        """204; the session has the message's identifiers and the request's IP and UA."""
        response = gateway.collect(page(gateway, landing=True, ttclid="T1", pixel="loaded"))
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == SHOP
        row = gateway.rows(
            "SELECT ttclid, ip, user_agent, browser, os, os_version, pixel_status, page_views"
            " FROM landing_sessions WHERE session_id = ?",
            SID,
        )
        assert row == [("T1", "127.0.0.1", CLIENT_UA, "Safari", "iOS", "17.4", "loaded", 1)]

    def test_key_in_query_or_header(self, gateway: Gateway) -> None:
        """sendBeacon cannot set headers: the key may come as ?key= or X-Backchannel-Key too."""
        body = page(gateway)
        del body["key"]
        assert gateway.collect(body, params={"key": gateway.site_key}).status_code == 204
        headers = {"X-Backchannel-Key": gateway.site_key}
        assert gateway.collect(body, headers=headers).status_code == 204
        assert gateway.session("page_views") == 2

    def test_concurrent_page_views_share_commits_and_all_count(self, gateway: Gateway) -> None:
        """50 page views of one session at once: all 204, all counted."""

        async def burst() -> list[int]:
            async with httpx.AsyncClient() as client:
                responses = await asyncio.gather(
                    *[
                        client.post(
                            gateway.url + "/v1/collect",
                            content=orjson.dumps(page(gateway)),
                            headers={"Origin": SHOP},
                        )
                        for _ in range(50)
                    ]
                )
            return [r.status_code for r in responses]

        assert asyncio.run(burst()) == [204] * 50
        assert gateway.session("page_views") == 50

    def test_mirrored_pixel_calls_are_recorded(self, gateway: Gateway) -> None:
        """events[] become browser_events rows; page_view false counts no page view."""
        body = page(
            gateway,
            page_view=False,
            events=[{"event": "CompletePayment", "event_id": "CompletePayment-1001"}],
        )
        assert gateway.collect(body).status_code == 204
        assert gateway.rows("SELECT session_id, event, event_id FROM browser_events") == [
            (SID, "CompletePayment", "CompletePayment-1001")
        ]
        assert gateway.session("page_views") == 0


class TestRefusals:
    def test_missing_key_is_401(self, gateway: Gateway) -> None:
        """No key anywhere: 401, nothing stored."""
        body = page(gateway)
        del body["key"]
        response = gateway.collect(body)
        assert response.status_code == 401
        assert response.json()["errors"][0]["path"] == "key"
        assert gateway.rows("SELECT COUNT(*) FROM landing_sessions") == [(0,)]

    def test_unknown_key_is_401(self, gateway: Gateway) -> None:
        """A made-up site key is refused."""
        assert gateway.collect(page(gateway, key="bc_pub_made_up")).status_code == 401

    def test_ingest_key_is_not_a_site_key(self, gateway: Gateway) -> None:
        """The secret ingest key is refused on collect (it must never sit in a page)."""
        response = gateway.collect(page(gateway, key=gateway.ingest_key))
        assert response.status_code == 401
        assert "not a site key" in response.json()["errors"][0]["reason"]

    def test_site_key_cannot_ingest(self, gateway: Gateway) -> None:
        """The publishable key does not open /v1/events."""
        response = httpx.post(
            gateway.url + "/v1/events",
            json={"event": "Lead"},
            headers={"Authorization": f"Bearer {gateway.site_key}"},
        )
        assert response.status_code == 403

    def test_foreign_origin_is_403_without_cors(self, gateway: Gateway) -> None:
        """A page of another site gets 403 and no Access-Control-Allow-Origin."""
        response = gateway.collect(page(gateway), origin="https://evil.example")
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
        assert gateway.rows("SELECT COUNT(*) FROM landing_sessions") == [(0,)]

    def test_no_origin_and_no_referer_is_403(self, gateway: Gateway) -> None:
        """A request that names no page is not a browser's beacon."""
        assert gateway.collect(page(gateway), origin=None).status_code == 403

    def test_referer_stands_in_for_a_missing_origin(self, gateway: Gateway) -> None:
        """Without Origin, the Referer's origin is checked."""
        response = gateway.collect(page(gateway), origin=None, headers={"Referer": SHOP + "/p?x=1"})
        assert response.status_code == 204

    def test_empty_list_means_same_origin(self, start: StartGateway) -> None:
        """With no collect_origins, a page on the gateway's own host may post; others may not."""
        gateway = start(collect_origins=())
        own = gateway.url  # http://127.0.0.1:PORT, the Host the request is sent to
        assert gateway.collect(page(gateway), origin=own).status_code == 204
        assert gateway.collect(page(gateway), origin=SHOP).status_code == 403

    def test_over_16_kib_is_413(self, gateway: Gateway) -> None:
        """A body over 16 KiB is refused before it is read in full."""
        big = orjson.dumps(page(gateway, url=SHOP + "/?" + "x" * 17_000))
        assert gateway.collect(raw=big).status_code == 413

    def test_bad_payload_is_422_with_paths(self, gateway: Gateway) -> None:
        """Every bad field is reported as {path, reason}; nothing is stored."""
        response = gateway.collect(page(gateway, session_id="x", pixel="maybe", email="a@b.co"))
        assert response.status_code == 422
        assert {e["path"] for e in response.json()["errors"]} == {"session_id", "pixel", "email"}
        assert gateway.rows("SELECT COUNT(*) FROM landing_sessions") == [(0,)]

    def test_not_json_is_422(self, gateway: Gateway) -> None:
        """A body that is not JSON (with a valid key in the query) is 422, never 500."""
        response = gateway.collect(raw=b"{nope", params={"key": gateway.site_key})
        assert response.status_code == 422

    def test_preflight(self, gateway: Gateway) -> None:
        """OPTIONS answers 204 with CORS headers for an allowed origin, 403 otherwise."""
        ok = httpx.options(
            gateway.url + "/v1/collect",
            headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"},
        )
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == SHOP
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "X-Backchannel-Key" in ok.headers["access-control-allow-headers"]
        bad = httpx.options(gateway.url + "/v1/collect", headers={"Origin": "https://evil.example"})
        assert bad.status_code == 403


class TestNullOrigin:
    """``Origin: null``: a sandboxed iframe (a Shopify custom pixel). The site key decides."""

    @pytest.fixture
    def sandboxed_key(self, gateway: Gateway) -> str:
        settings = make_settings(gateway.db.parent)  # the same database file
        return add_key(settings, "shopify-pixel", "collect", allow_null_origin=True)

    def test_a_key_allowing_null_origin_is_accepted_with_cors_null(
        self, gateway: Gateway, sandboxed_key: str
    ) -> None:
        """204 and Access-Control-Allow-Origin: null; the page view and checkout are stored."""
        body = page(gateway, key=sandboxed_key, ttclid="T1", checkout_token="c0ffee" * 5 + "ab")
        response = gateway.collect(body, origin="null")
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == "null"
        assert "access-control-allow-credentials" not in response.headers
        assert gateway.session("ttclid") == "T1"
        assert gateway.rows("SELECT checkout_token, session_id FROM checkout_sessions") == [
            ("c0ffee" * 5 + "ab", SID)
        ]

    def test_a_plain_site_key_is_refused_from_null(self, gateway: Gateway) -> None:
        """A site key made without the flag: 403 naming Origin and the flag; nothing stored."""
        response = gateway.collect(page(gateway), origin="null")
        assert response.status_code == 403
        [error] = response.json()["errors"]
        assert error["path"] == "Origin"
        assert "--allow-null-origin" in error["reason"]
        assert "access-control-allow-origin" not in response.headers
        assert gateway.rows("SELECT COUNT(*) FROM landing_sessions") == [(0,)]

    def test_null_with_no_or_a_bad_key_is_401(self, gateway: Gateway) -> None:
        """From null the key is checked first: missing or unknown is 401, as anywhere."""
        body = page(gateway)
        del body["key"]
        assert gateway.collect(body, origin="null").status_code == 401
        assert gateway.collect(page(gateway, key="bc_pub_nope"), origin="null").status_code == 401

    def test_an_allowed_referer_still_stands_in_for_null(self, gateway: Gateway) -> None:
        """Origin null with the shop's page as Referer is that page's post, flag or not; the
        CORS answer names "null", the origin the browser compares it with."""
        response = gateway.collect(page(gateway), origin="null", headers={"Referer": SHOP + "/"})
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "null"

    def test_the_flag_does_not_open_other_origins(
        self, gateway: Gateway, sandboxed_key: str
    ) -> None:
        """A key allowing null is still refused from a foreign origin (only null is opened)."""
        response = gateway.collect(page(gateway, key=sandboxed_key), origin="https://evil.example")
        assert response.status_code == 403

    def test_a_preflight_from_null_is_refused(self, gateway: Gateway) -> None:
        """A preflight carries no key, so null gets none: the pixel sends a simple request."""
        response = httpx.options(
            gateway.url + "/v1/collect",
            headers={"Origin": "null", "Access-Control-Request-Method": "POST"},
        )
        assert response.status_code == 403


class TestForwardedFor:
    def test_trusted_proxy_forwarded_for_names_the_visitor(self, start: StartGateway) -> None:
        """From a trusted proxy, the first untrusted X-Forwarded-For hop is stored."""
        gateway = start(trusted_proxies=("127.0.0.1/32",))
        xff = {"X-Forwarded-For": "6.6.6.6, 81.2.69.160"}
        assert gateway.collect(page(gateway), headers=xff).status_code == 204
        assert gateway.session("ip") == "81.2.69.160"

    def test_untrusted_forwarded_for_is_ignored(self, gateway: Gateway) -> None:
        """Without trusted proxies, a claimed X-Forwarded-For changes nothing."""
        headers = {"X-Forwarded-For": "81.2.69.160"}
        assert gateway.collect(page(gateway), headers=headers).status_code == 204
        assert gateway.session("ip") == "127.0.0.1"


class TestPersonalDataInUrls:
    def test_landing_url_and_referrer_lose_emails_and_phones(self, gateway: Gateway) -> None:
        """Issue 18.9: the stored landing URL, referrer and mirrored-event URL keep the click
        id and UTMs but no email or phone from the query."""
        url = SHOP + "/?email=jane%40example.com&phone=%2B14155552671&ttclid=T1&utm_source=tt"
        body = page(
            gateway,
            url=url,
            landing=True,
            referrer="https://mail.example/open?to=jane@example.com",
            events=[{"event": "Lead", "event_id": "L-1"}],
        )
        assert gateway.collect(body).status_code == 204
        assert gateway.session("landing_url") == SHOP + "/?ttclid=T1&utm_source=tt"
        assert gateway.session("referrer") == "https://mail.example/open"
        assert gateway.rows("SELECT page_url FROM browser_events") == [
            (SHOP + "/?ttclid=T1&utm_source=tt",)
        ]


class TestTlsProxy:
    """Behind a TLS-terminating proxy (the documented setup) the page is https://shop while
    the proxy speaks http to the gateway: the same-origin check must read the proxy's
    X-Forwarded-Proto (and X-Forwarded-Host), but only from a trusted proxy (issue 18.3)."""

    PROXY: ClassVar[dict[str, str]] = {"Host": "shop.example", "X-Forwarded-Proto": "https"}

    def test_trusted_proxy_https_page_is_same_origin(self, start: StartGateway) -> None:
        """Origin https://shop.example, Host shop.example, X-Forwarded-Proto https: 204."""
        gateway = start(collect_origins=(), trusted_proxies=("127.0.0.1/32",))
        response = gateway.collect(page(gateway), origin=SHOP, headers=self.PROXY)
        assert response.status_code == 204, response.text
        assert response.headers["access-control-allow-origin"] == SHOP

    def test_trusted_proxy_forwarded_host(self, start: StartGateway) -> None:
        """A proxy that rewrote Host names the page's host in X-Forwarded-Host: 204."""
        gateway = start(collect_origins=(), trusted_proxies=("127.0.0.1/32",))
        headers = {
            "Host": "backchannel:8000",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "shop.example",
        }
        assert gateway.collect(page(gateway), origin=SHOP, headers=headers).status_code == 204

    def test_untrusted_peer_forwarded_headers_are_ignored(self, start: StartGateway) -> None:
        """From a peer outside trusted_proxies the headers are ignored: still 403."""
        gateway = start(collect_origins=(), trusted_proxies=("10.0.0.0/8",))
        assert gateway.collect(page(gateway), origin=SHOP, headers=self.PROXY).status_code == 403
        forged = {**self.PROXY, "Host": "127.0.0.1", "X-Forwarded-Host": "shop.example"}
        assert gateway.collect(page(gateway), origin=SHOP, headers=forged).status_code == 403

    def test_proxy_saying_http_keeps_an_https_page_out(self, start: StartGateway) -> None:
        """The trusted proxy's own word wins: X-Forwarded-Proto http is not https."""
        gateway = start(collect_origins=(), trusted_proxies=("127.0.0.1/32",))
        headers = {"Host": "shop.example", "X-Forwarded-Proto": "http"}
        assert gateway.collect(page(gateway), origin=SHOP, headers=headers).status_code == 403


def order(n: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": n,
        "value": 10,
        "currency": "USD",
        "user": {"email": "Jane@Example.com"},
    }
    body.update(fields)
    return body


class TestStitchingThroughIngest:
    def test_session_id_joins_the_landing_session(self, start: StartGateway) -> None:
        """A conversion naming its session is stored with the session's identifiers."""
        gateway = start(trusted_proxies=("127.0.0.1/32",))
        landing = page(
            gateway,
            landing=True,
            ttclid="T-1",
            ttp="ttp-1",
            fbp="fb.1.1.1",
            url=SHOP + "/?ttclid=T-1",
        )
        assert (
            gateway.collect(landing, headers={"X-Forwarded-For": "81.2.69.160"}).status_code == 204
        )
        response = gateway.ingest(order(1, session_id=SID))
        assert response.status_code == 202, response.text
        payload, stitched = gateway.rows("SELECT payload, stitched FROM conversions")[0]
        user = orjson.loads(payload)["user"]
        assert (user["ttclid"], user["ttp"], user["fbp"], user["ip"], user["user_agent"]) == (
            "T-1",
            "ttp-1",
            "fb.1.1.1",
            "81.2.69.160",
            CLIENT_UA,
        )
        assert orjson.loads(payload)["page_url"] == SHOP + "/?ttclid=T-1"
        provenance = orjson.loads(stitched)
        assert provenance["matched_by"] == "session_id"
        assert provenance["fields"]["ip"] == "session"
        # the session now knows the email: a later email-only conversion joins it too
        assert gateway.rows("SELECT session_id, email_hash FROM session_emails") == [
            (SID, sha("jane@example.com"))
        ]
        assert gateway.ingest(order(2)).status_code == 202
        later = gateway.rows("SELECT payload, stitched FROM conversions WHERE order_id = '2'")[0]
        assert orjson.loads(later[0])["user"]["ttclid"] == "T-1"
        assert orjson.loads(later[1])["matched_by"] == "email"

    def test_ttclid_alone_joins_the_session_that_saw_the_click(self, gateway: Gateway) -> None:
        """A conversion with only the click id (e.g. from page.url) gets the _ttp and UA."""
        assert gateway.collect(page(gateway, ttclid="T-9", ttp="ttp-9")).status_code == 204
        body = order(3, user={}, page={"url": "https://shop.example/thanks?ttclid=T-9"})
        assert gateway.ingest(body).status_code == 202
        payload, stitched = gateway.rows("SELECT payload, stitched FROM conversions")[0]
        assert orjson.loads(payload)["user"]["ttp"] == "ttp-9"
        assert orjson.loads(payload)["session_id"] == SID
        assert orjson.loads(stitched)["fields"]["ttclid"] == "request"

    def test_no_session_never_fails_ingest(self, gateway: Gateway) -> None:
        """An unknown session id is accepted as is, provenance says 'request' only."""
        response = gateway.ingest(order(4, session_id="Nobody-Knows-This", user={"ip": "8.8.8.8"}))
        assert response.status_code == 202
        stitched = orjson.loads(gateway.rows("SELECT stitched FROM conversions")[0][0])
        assert stitched == {
            "session_id": "Nobody-Knows-This",
            "matched_by": None,
            "fields": {"ip": "request"},
        }

    def test_outbox_rows_deliver_the_stitched_payload(self, gateway: Gateway) -> None:
        """What the worker will claim (the outbox's conversion payload) is the stitched one."""
        assert gateway.collect(page(gateway, ttclid="T-5")).status_code == 204
        assert gateway.ingest(order(5, session_id=SID)).status_code == 202
        payloads = gateway.rows(
            "SELECT c.payload FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        )
        assert len(payloads) == 2
        assert all(orjson.loads(p[0])["user"]["ttclid"] == "T-5" for p in payloads)


class TestRateLimit:
    def test_one_address_over_its_budget_gets_429_with_retry_after(
        self, start: StartGateway
    ) -> None:
        """Past the per-address burst, collect answers 429 + Retry-After; others still pass."""
        gateway = start(collect_rate=1.0, collect_burst=3.0, trusted_proxies=("127.0.0.1/32",))
        flooder = {"X-Forwarded-For": "81.2.69.160"}
        answers = [gateway.collect(page(gateway), headers=flooder).status_code for _ in range(5)]
        assert answers[:3] == [204, 204, 204]
        limited = gateway.collect(page(gateway), headers=flooder)
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["errors"][0]["path"] == "(request)"
        other = {"X-Forwarded-For": "81.2.69.161"}
        assert gateway.collect(page(gateway), headers=other).status_code == 204

    def test_one_site_key_over_its_budget_gets_429_from_any_address(
        self, start: StartGateway
    ) -> None:
        """A site key replayed from many addresses is bounded by its own bucket."""
        gateway = start(
            collect_key_rate=1.0, collect_key_burst=2.0, trusted_proxies=("127.0.0.1/32",)
        )
        answers = [
            gateway.collect(page(gateway), headers={"X-Forwarded-For": f"81.2.69.{n}"}).status_code
            for n in range(10, 14)
        ]
        assert answers[:2] == [204, 204]
        assert 429 in answers[2:]


class TestRevocation:
    def test_revoked_site_key_is_refused_on_the_next_message(self, gateway: Gateway) -> None:
        """Site keys are not cached: a revocation takes effect at once."""
        assert gateway.collect(page(gateway)).status_code == 204
        from backchannel.store.sqlite import SqliteStore

        store = SqliteStore(gateway.db)
        try:
            assert store.revoke_key("site", 1.0) == 1
        finally:
            store.close()
        assert gateway.collect(page(gateway)).status_code == 401
