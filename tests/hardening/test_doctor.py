"""`backchannel doctor` against a real sandbox (never --live): what passes, what it tells to fix."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, MultiFernet

from backchannel import credentials, doctor, routing
from backchannel.config import Settings
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store import open_store
from backchannel.store.base import Connection
from backchannel.web.auth import set_password
from support.server import ServerThread

TOKEN = "doctor-token-0123456789"


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with ServerThread(create_sandbox(SandboxConfig())) as server:
        yield server.url


def deployment(tmp_path: Path, sandbox_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path}/bc.db",
        "key_file": str(tmp_path / "backchannel.key"),
        "tiktok_base_url": sandbox_url,
        "meta_base_url": sandbox_url,
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    cipher = credentials.load_cipher(settings)
    store = open_store(settings.database_url)
    try:
        store.set_connection(
            Connection("tiktok", "PIX", credentials.encrypt(cipher, TOKEN), TOKEN[-4:], None, 0)
        )
    finally:
        store.close()
    return settings


def by_name(report: doctor.Report) -> dict[str, doctor.Check]:
    return {c.name: c for c in report.checks}


class TestDoctor:
    def test_healthy_deployment_passes(self, tmp_path: Path, sandbox_url: str) -> None:
        """Config, database, key, token, both destinations and the clock are all ✓."""
        settings = deployment(tmp_path, sandbox_url)
        report = doctor.run(load=lambda: settings)
        checks = by_name(report)
        assert not report.failed, report.lines()
        for name in ("configuration", "database", "encryption key", "token tiktok", "clock"):
            assert checks[name].ok is True, report.lines()
        assert checks["destination tiktok"].ok is True
        assert "HTTP" in checks["destination tiktok"].detail
        assert all(TOKEN not in line for line in report.lines())
        # informational: no member yet, every event to every destination
        assert checks["dashboard"].ok is None
        assert "backchannel admin set-password" in checks["dashboard"].detail
        assert checks["routing"].ok is True
        store = open_store(settings.database_url)
        try:
            set_password(store, "correct horse battery staple", time.time())
            routing.store_route(store, "meta", ["Purchase"], time.time())
        finally:
            store.close()
        checks = by_name(doctor.run(load=lambda: settings))
        assert (checks["dashboard"].ok, checks["dashboard"].detail) == (
            True,
            "1 member(s), 1 owner(s) of every property",  # the first password: admin
        )
        assert (checks["routing"].ok, checks["routing"].detail) == (None, "meta: only Purchase")

    def test_problems_are_named_with_their_fix(self, tmp_path: Path, sandbox_url: str) -> None:
        """Loose key file, undecryptable token, unreachable endpoint, skewed clock: ✗ + fix."""
        settings = deployment(tmp_path, sandbox_url)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        other = credentials.encrypt(MultiFernet([Fernet(Fernet.generate_key())]), "x" * 20)
        store = open_store(settings.database_url)
        try:
            store.set_connection(Connection("meta", "PIX", other, "xxxx", None, 0))
        finally:
            store.close()
        broken = replace(settings, meta_base_url=closed)
        report = doctor.run(load=lambda: broken, clock=lambda: time.time() + 3600)
        checks = by_name(report)
        assert report.failed
        assert checks["token meta"].ok is False
        assert "backchannel token set meta" in (checks["token meta"].fix or "")
        assert checks["destination meta"].ok is False
        assert checks["clock"].ok is False
        assert "NTP" in (checks["clock"].fix or "")
        (tmp_path / "backchannel.key").chmod(0o644)
        report = doctor.run(load=lambda: broken)
        assert by_name(report)["encryption key"].fix == f"chmod 600 {tmp_path / 'backchannel.key'}"
        assert any(line.lstrip().startswith("fix:") for line in report.lines())

    def test_pending_migrations_are_reported_without_migrating(
        self, tmp_path: Path, sandbox_url: str
    ) -> None:
        """A database behind the shipped migrations is ✗, and the doctor does not change it."""
        settings = deployment(tmp_path, sandbox_url)
        db = sqlite3.connect(tmp_path / "bc.db", isolation_level=None)
        db.execute(
            "DELETE FROM schema_migrations"
            " WHERE version = (SELECT MAX(version) FROM schema_migrations)"
        )
        before = db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
        db.close()
        report = doctor.run(load=lambda: settings)
        assert by_name(report)["database"].ok is False
        assert "backchannel migrate" in (by_name(report)["database"].fix or "")
        db = sqlite3.connect(tmp_path / "bc.db")
        assert db.execute("SELECT COUNT(*) FROM schema_migrations").fetchone() == before
        db.close()

    def test_real_endpoints_are_not_contacted_without_live(
        self, tmp_path: Path, sandbox_url: str
    ) -> None:
        """With a token and no base URL, the real platform is skipped unless --live."""
        settings = deployment(tmp_path, sandbox_url, tiktok_base_url=None)
        report = doctor.run(load=lambda: settings)
        check = by_name(report)["destination tiktok"]
        assert check.ok is None
        assert "--live" in check.detail

    def test_cli_exit_codes(self, tmp_path: Path, sandbox_url: str) -> None:
        """`backchannel doctor` prints the table and exits 0 when healthy, 1 otherwise."""
        deployment(tmp_path, sandbox_url)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "BACKCHANNEL_DATABASE_URL": f"sqlite:///{tmp_path}/bc.db",
            "BACKCHANNEL_TIKTOK_BASE_URL": sandbox_url,
            "BACKCHANNEL_META_BASE_URL": sandbox_url,
        }
        run = [sys.executable, "-m", "backchannel.cli", "doctor"]
        ok = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "✓ configuration" in ok.stdout
        (tmp_path / "backchannel.key").chmod(0o640)
        bad = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert "✗" in bad.stdout
        assert "fix: chmod 600" in bad.stdout


class TestValidationProbe:
    @pytest.mark.parametrize(("connected_id", "ok"), [("G-DOCTOR123", True), ("G-WRONG999", False)])
    def test_ga4_is_asked_at_its_validation_server(
        self, tmp_path: Path, connected_id: str, ok: bool
    ) -> None:
        """GA4 answers 2xx to everything, so doctor asks its validation server about a
        sample built with the connection's keys and says what GA4 would silently drop."""
        config = SandboxConfig(ga4_measurement_id="G-DOCTOR123", ga4_api_secret="ga4-secret")
        with ServerThread(create_sandbox(config)) as server:
            settings = deployment(tmp_path, server.url, destination_urls={"ga4": server.url})
            cipher = credentials.load_cipher(settings)
            store = open_store(settings.database_url)
            try:
                store.set_connection(
                    Connection(
                        "ga4",
                        connected_id,
                        credentials.encrypt(cipher, "ga4-secret"),
                        "cret",
                        None,
                        0,
                    )
                )
            finally:
                store.close()
            report = doctor.run(load=lambda: settings)
        check = by_name(report)["validation ga4"]
        assert check.ok is ok, report.lines()
        if not ok:
            assert "would drop" in check.detail
            assert check.fix
        assert all("ga4-secret" not in line for line in report.lines())
