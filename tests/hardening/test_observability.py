"""/metrics after a real ingest and delivery, /readyz, and the redacting structured logs."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backchannel import logs
from backchannel.metrics import Metrics
from serve.helpers import conversion, wait_for

from .conftest import App, StartApp


def scrape(
    app: App, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = app.http.get(
        "/metrics", headers={"Authorization": f"Bearer {token or app.admin_key}"}
    )
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class TestMetrics:
    def test_counters_gauges_and_latency_after_real_delivery(self, start_app: StartApp) -> None:
        """Ingest 3 (+1 duplicate, +1 invalid), deliver to the sandbox: every series adds up."""
        app = start_app(sandbox=True, worker=True)
        headers = {"Authorization": f"Bearer {app.key}"}
        batch = {"events": [conversion(i) for i in range(3)]}
        assert app.http.post("/v1/events", json=batch, headers=headers).status_code == 202
        again = app.http.post("/v1/events", json=conversion(0), headers=headers)
        assert again.json()["events"][0]["status"] == "duplicate"
        bad = app.http.post("/v1/events", json={"event": "CompletePayment"}, headers=headers)
        assert bad.status_code == 422
        wait_for(
            lambda: app.sql("SELECT COUNT(*) FROM outbox WHERE status = 'delivered'") == [(6,)],
            what="6 deliveries",
        )
        time.sleep(2.1)  # the queue-depth gauge is cached for 2 s
        samples = scrape(app)
        assert samples[("backchannel_ingested_total", (("origin", "api"),))] == 3
        assert samples[("backchannel_duplicates_total", ())] == 1
        assert samples[("backchannel_rejected_total", ())] == 1
        for destination in ("tiktok", "meta"):
            label = (("destination", destination),)
            assert samples[("backchannel_delivered_total", label)] == 3
            assert samples.get(("backchannel_dead_total", label), 0) == 0
            assert samples[("backchannel_delivery_latency_seconds_count", label)] >= 1
            depth = (("destination", destination), ("status", "delivered"))
            assert samples[("backchannel_queue_depth", depth)] == 3

    def test_metrics_need_credentials(self, start_app: StartApp) -> None:
        """/metrics refuses anonymous and ingest-key callers; the metrics token works."""
        app = start_app(metrics_token="prometheus-scrape-token-42")
        assert app.http.get("/metrics").status_code == 401
        ingest = app.http.get("/metrics", headers={"Authorization": f"Bearer {app.key}"})
        assert ingest.status_code == 401
        wrong = app.http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert ("backchannel_duplicates_total", ()) in scrape(app, "prometheus-scrape-token-42")

    def test_each_app_has_its_own_registry(self) -> None:
        """Two Metrics objects never share series (no global registry)."""
        first, second = Metrics(), Metrics()
        first.count_ingest("api", 5, 0, 0)
        assert b'backchannel_ingested_total{origin="api"} 5.0' in first.render()
        assert b"backchannel_ingested_total{" not in second.render()


class TestReadiness:
    def test_ready_with_database_migrations_and_worker(self, start_app: StartApp) -> None:
        """/readyz is 200 when the database answers, migrations are current and the worker runs."""
        app = start_app(sandbox=True, worker=True)
        response = app.http.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {
            "database": "ok",
            "migrations": "ok",
            "worker": "ok",
        }

    def test_unreachable_database_gives_503(self, start_app: StartApp) -> None:
        """A database that stops answering: /readyz is 503 naming the check, /healthz 200."""
        app = start_app()
        assert app.http.get("/readyz").status_code == 200
        store = app.asgi.state.backchannel["store"]
        store.close()  # every further query fails, as with a lost database
        response = app.http.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unreachable")
        assert app.http.get("/healthz").status_code == 200

    def test_pending_migrations_give_503(self, start_app: StartApp) -> None:
        """A schema behind the shipped migrations is not ready."""
        app = start_app()
        app.sql(
            "DELETE FROM schema_migrations"
            " WHERE version = (SELECT MAX(version) FROM schema_migrations)"
        )
        response = app.http.get("/readyz")
        assert response.status_code == 503
        assert "run migrate" in response.json()["checks"]["migrations"]

    @pytest.mark.postgres
    def test_postgres_down_gives_503_quickly(self, start_app: StartApp) -> None:
        """PostgreSQL refusing connections: /readyz answers 503 within its 2 s budget."""
        import psycopg
        from psycopg import sql

        url = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
        if not url:
            pytest.fail("BACKCHANNEL_TEST_POSTGRES_URL is not set (run via ./dev test)")
        name = f"bc_ready_{os.getpid()}_{time.monotonic_ns()}"
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        target = url.rsplit("/", 1)[0] + "/" + name  # a URL: open_store picks the backend by it
        try:
            app = start_app(database_url=target)
            assert app.http.get("/readyz").status_code == 200
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                        sql.Identifier(name)
                    )
                )
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
            started = time.monotonic()
            response = app.http.get("/readyz")
            assert response.status_code == 503
            assert time.monotonic() - started < 5
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


TOKEN = "EAAB-very-secret-access-token-31337"
EMAIL = "Jane.Doe@Example.com"
PHONES = ["+1 415 555 2671", "+14155552671", "(415) 555-2671", "415.555.2671", "4155552671"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    with restored_levels():
        handler = logs.configure("debug", "json", stream)
        try:
            yield stream
        finally:
            logging.getLogger().removeHandler(handler)


@contextlib.contextmanager
def restored_levels() -> Iterator[None]:
    """The root's and httpx's levels as they were before :func:`logs.configure` (which sets
    httpx's to WARNING): a later test's caplog then still sees httpx's request lines."""
    loggers = [logging.getLogger(), logging.getLogger("httpx")]
    levels = [logger.level for logger in loggers]
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class TestLogs:
    def test_query_string_secrets_of_every_destination_are_redacted(self) -> None:
        """GA4's api_secret rides in the URL (ga4.md §2); OAuth secrets in form bodies: a
        logged URL or body keeps none of them, even one never registered."""
        line = (
            "POST https://www.google-analytics.com/mp/collect?measurement_id=G-ABC123"
            "&api_secret=SeCrEt123456 grant_type=refresh_token&client_secret=cs-98765"
            "&refresh_token=1//rt-abcdef developer-token: dt-123456"
        )
        text = logs.scrub(line)
        for secret in ("SeCrEt123456", "cs-98765", "1//rt-abcdef", "dt-123456"):
            assert secret not in text
        assert "measurement_id=G-ABC123" in text

    def test_secrets_and_pii_are_redacted_everywhere(self, captured: io.StringIO) -> None:
        """Tokens, keys, Authorization, emails and phones vanish from message, extras, traceback."""
        logs.register_secret(TOKEN)
        log = logging.getLogger("backchannel.test")
        key = "bc_live_" + "A1b2C3d4" * 5
        log.info("sending with token %s for %s", TOKEN, EMAIL)
        log.warning(
            "request failed",
            extra={
                "headers": {"Authorization": f"Bearer {key}", "Access-Token": TOKEN},
                "detail": f"user {EMAIL} phone {PHONES[0]} key {key}",
                "phones": PHONES,
                "email": EMAIL,
                "url": "postgresql://bc:hunter2hunter2@db/bc",
            },
        )
        for phone in PHONES:
            log.info(f"call {phone} now")
        log.info("Authorization: Bearer %s", "bc_admin_" + "x" * 40)
        log.info("access_token=%s&x=1", "abcdefgh12345678")
        try:
            raise ValueError(f"bad address {EMAIL} with token {TOKEN}")
        except ValueError:
            log.exception("boom")
        output = captured.getvalue()
        for secret in (
            TOKEN,
            EMAIL,
            EMAIL.lower(),
            key,
            "hunter2hunter2",
            "abcdefgh12345678",
            "x" * 40,
        ):
            assert secret not in output
        for phone in PHONES:
            assert phone not in output
        assert "4155552671" not in output
        assert "bc_live_[redacted]" in output  # the kind of key stays visible
        assert len(records(captured)) == 10

    def test_numbers_that_are_not_phones_survive(self, captured: io.StringIO) -> None:
        """Short numbers, decimals, hashes and numeric extras are kept."""
        digest = "3f" + "0" * 62
        logging.getLogger("backchannel.test").info(
            "delivered 1000 events in 0.123456789 s, hash %s",
            digest,
            extra={"order_id": 4155552671},
        )
        (record,) = records(captured)
        assert "1000 events" in record["msg"]
        assert "0.123456789" in record["msg"]
        assert digest in record["msg"]
        assert record["order_id"] == 4155552671

    def test_json_lines_carry_the_request_id(self, captured: io.StringIO) -> None:
        """Inside a request, every record has its request id; JSON has ts/level/logger/msg."""
        token = logs.request_id.set("req-42")
        try:
            logging.getLogger("backchannel.test").warning("inside", extra={"destination": "meta"})
        finally:
            logs.request_id.reset(token)
        (record,) = records(captured)
        assert record["request_id"] == "req-42"
        assert record["level"] == "warning"
        assert record["logger"] == "backchannel.test"
        assert record["msg"] == "inside"
        assert record["destination"] == "meta"
        assert "ts" in record

    def test_text_format_on_a_terminal(self) -> None:
        """auto picks plain text on a terminal, still redacted."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        stream = Tty()
        with restored_levels():
            handler = logs.configure("info", "auto", stream)
            try:
                logging.getLogger("backchannel.test").info("mail %s", EMAIL)
            finally:
                logging.getLogger().removeHandler(handler)
        line = stream.getvalue()
        assert not line.startswith("{")
        assert EMAIL not in line
        assert "[email]" in line
