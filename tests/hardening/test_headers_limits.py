"""Security headers, request ids and rate limits, over real HTTP."""

from __future__ import annotations

import pytest

from backchannel import logs
from backchannel.web.ratelimit import RateLimiter, retry_after_header
from serve.helpers import conversion

from .conftest import StartApp


class TestSecurityHeaders:
    def test_html_pages_get_csp_and_no_framing(self, start_app: StartApp) -> None:
        """The login page carries a strict CSP, DENY framing, nosniff and no-store."""
        app = start_app()
        response = app.http.get("/login")
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"  # see web/security.py
        assert response.headers["cache-control"] == "no-store"

    def test_json_api_gets_nosniff_but_no_framing_policy(self, start_app: StartApp) -> None:
        """JSON (and so cross-origin API use) is not burdened with HTML-only headers."""
        app = start_app()
        response = app.http.post(
            "/v1/events", json=conversion(1), headers={"Authorization": f"Bearer {app.key}"}
        )
        assert response.status_code == 202
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in response.headers
        assert "x-frame-options" not in response.headers
        assert "cache-control" not in response.headers

    def test_admin_pages_are_not_cached(self, start_app: StartApp) -> None:
        """Admin JSON is marked no-store too."""
        app = start_app()
        response = app.http.get(
            "/admin/api/status", headers={"Authorization": f"Bearer {app.admin_key}"}
        )
        assert response.headers["cache-control"] == "no-store"

    def test_https_deployment_sends_hsts(self, start_app: StartApp) -> None:
        """With an https public_url every response carries Strict-Transport-Security."""
        app = start_app(public_url="https://track.example")
        assert "max-age=" in app.http.get("/healthz").headers["strict-transport-security"]


class TestRequestId:
    def test_request_id_is_generated(self, start_app: StartApp) -> None:
        """Every response carries an X-Request-ID."""
        app = start_app()
        assert len(app.http.get("/healthz").headers["x-request-id"]) >= 8

    def test_generated_ids_are_16_random_hex_digits_and_never_repeat(self) -> None:
        """Ids come from blocks of 512 (one getrandom call each): across several refills
        every id is 16 hex digits, all distinct, and about half of their bits are set."""
        ids = [logs.new_request_id() for _ in range(5000)]
        assert all(len(i) == 16 and set(i) <= set("0123456789abcdef") for i in ids)
        assert len(set(ids)) == len(ids)
        ones = sum(bin(int(i, 16)).count("1") for i in ids) / (64 * len(ids))
        assert 0.48 < ones < 0.52

    def test_well_formed_request_id_is_echoed(self, start_app: StartApp) -> None:
        """A client's well-formed X-Request-ID is kept; a malformed one is replaced."""
        app = start_app()
        kept = app.http.get("/healthz", headers={"X-Request-ID": "abc-123.DEF_4"})
        assert kept.headers["x-request-id"] == "abc-123.DEF_4"
        replaced = app.http.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
        assert replaced.headers["x-request-id"] != "bad id <script>"


class TestTokenBucket:
    def test_burst_then_refill(self) -> None:
        """A bucket admits its burst, then one request per 1/rate seconds."""
        now = [0.0]
        limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
        assert [limiter.hit("k") for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limiter.hit("k") == pytest.approx(0.5)
        now[0] += 0.5
        assert limiter.hit("k") == 0.0
        assert limiter.hit("other") == 0.0  # keys are independent

    def test_memory_is_bounded(self) -> None:
        """Past max_keys, idle buckets are dropped."""
        now = [0.0]
        limiter = RateLimiter(1.0, 1, max_keys=100, clock=lambda: now[0])
        for i in range(1000):
            limiter.hit(i)
            now[0] += 0.01
        assert len(limiter) <= 100

    def test_retry_after_is_whole_seconds_at_least_one(self) -> None:
        """Retry-After is rounded up and never 0."""
        assert retry_after_header(0.01) == "1"
        assert retry_after_header(1.2) == "2"


class TestIngestRateLimit:
    def test_over_the_limit_answers_429_with_retry_after(self, start_app: StartApp) -> None:
        """Past its burst, a key gets 429 + Retry-After + a {path, reason} body; others don't."""
        app = start_app(ingest_rate=1.0, ingest_burst=3.0)
        headers = {"Authorization": f"Bearer {app.key}"}
        statuses = [
            app.http.post("/v1/events", json=conversion(i), headers=headers).status_code
            for i in range(5)
        ]
        assert statuses[:3] == [202, 202, 202]
        assert statuses[3:] == [429, 429]
        response = app.http.post("/v1/events", json=conversion(9), headers=headers)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        body = response.json()
        assert body["error"] == "rate_limited"
        assert body["errors"][0]["path"] == "Authorization"
        assert "reason" in body["errors"][0]
        # A refused request stored nothing.
        assert app.sql("SELECT COUNT(*) FROM conversions") == [(3,)]

    def test_unauthenticated_requests_do_not_use_a_keys_budget(self, start_app: StartApp) -> None:
        """Requests with a bad key are refused before the limiter (401, not 429)."""
        app = start_app(ingest_rate=1.0, ingest_burst=1.0)
        for _ in range(3):
            response = app.http.post(
                "/v1/events", json=conversion(1), headers={"Authorization": "Bearer bc_live_x"}
            )
            assert response.status_code == 401
        ok = app.http.post(
            "/v1/events", json=conversion(1), headers={"Authorization": f"Bearer {app.key}"}
        )
        assert ok.status_code == 202
