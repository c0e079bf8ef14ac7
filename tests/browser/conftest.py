"""Real Chromium, a real shop, a real gateway, a real sandbox: all on 127.0.0.1.

Why this wiring: the browser leg only works if cookies are first-party, beacons survive page
changes and the Pixel's script is watched as a browser loads it; none of that exists without
a browser. Debian's ``chromium`` is driven through Playwright's pip wheel (its driver only:
``executable_path``, no browser download, never ``playwright install``). A missing chromium
FAILS the suite instead of skipping it: an untested browser leg must not pass CI.

The shop (examples/shop) proxies ``/bc.js`` and ``/v1/collect`` to the gateway, as a real
shop's reverse proxy would, so bc.js and its cookies are first-party to the shop's origin;
the gateway trusts 127.0.0.1 as that proxy (X-Forwarded-For).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from backchannel import destinations as registry
from backchannel.cli import app as cli
from backchannel.config import Settings
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.sandbox.app import emulators
from backchannel.web.app import Options, create_app
from serve.helpers import (
    FAST_RETRY,
    META_PIXEL,
    TIKTOK_PIXEL,
    Sandbox,
    add_key,
    db_path,
    make_settings,
)
from support.server import ServerThread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from shop.app import create_shop

CHROMIUM = os.environ.get("BACKCHANNEL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Stack:
    """The running shop, gateway and sandbox, with handles to read what each one saw."""

    shop_url: str
    gateway_url: str
    db: Path
    sandbox: Sandbox
    site_key: str
    shop_http: httpx.Client
    settings: Settings | None = None

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def session(self, session_id: str) -> dict[str, Any] | None:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            row = db.execute(
                "SELECT * FROM landing_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
        finally:
            db.close()
        return dict(row) if row else None

    def conversion(self, event_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(stored payload, stitched provenance) of a conversion, or None."""
        rows = self.rows("SELECT payload, stitched FROM conversions WHERE event_id = ?", event_id)
        if not rows:
            return None
        return orjson.loads(rows[0][0]), orjson.loads(rows[0][1] or "{}")

    def pixel_hits(self) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = self.shop_http.get("/_pixel/hits").json()["hits"]
        return hits

    def gtag_hits(self) -> list[dict[str, Any]]:
        """What the shop's gtag.js stand-in "sent to Google"."""
        hits: list[dict[str, Any]] = self.shop_http.get("/_gtag/hits").json()["hits"]
        return hits

    def standin_hits(self, name: str) -> list[dict[str, Any]]:
        """What the shop's stand-in of another Pixel (meta, snapchat, pinterest, reddit) was
        asked to send."""
        hits: list[dict[str, Any]] = self.shop_http.get(f"/_standin/{name}/hits").json()["hits"]
        return hits


def _cli(settings: Settings, args: list[str], stdin: str) -> None:
    """``backchannel ARGS`` against the stack's database, in process (typer's runner)."""
    env = {
        "BACKCHANNEL_DATABASE_URL": settings.database_url,
        "BACKCHANNEL_SECRET_KEY": settings.secret_key or "",
    }
    done = CliRunner().invoke(cli, args, input=stdin, env=env)
    assert done.exit_code == 0, done.output


def set_admin_password(settings: Settings, password: str) -> None:
    """``backchannel admin set-password`` (one line on stdin), as an operator would: with no
    member yet, the password is the member ``admin``'s."""
    _cli(settings, ["admin", "set-password"], password + "\n")


def connect_all(settings: Settings) -> None:
    """Connect every destination that is off until connected, with its emulator's sample
    credentials, through ``backchannel token set`` as a user would (in process: typer's
    runner), so the stack delivers to all of them (as tests/reliability's connect_all)."""
    for name, destination in registry.DESTINATIONS.items():
        if destination.ON_BY_DEFAULT:
            continue
        sample = emulators()[name].sample_credentials
        args = ["token", "set", name, "--pixel", sample["pixel"]]
        stdin = [sample["token"]]
        for credential in destination.CREDENTIALS:
            if credential.key in ("pixel", "token") or credential.key not in sample:
                continue
            if credential.secret:
                args += ["--secret", credential.key]
                stdin.append(sample[credential.key])
            else:
                args += ["--set", f"{credential.key}={sample[credential.key]}"]
        _cli(settings, args, "\n".join(stdin) + "\n")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Sandbox, then gateway (worker delivering to the sandbox), then the shop in front."""
    with _stack(tmp_path, every_destination=False) as built:
        yield built


@pytest.fixture
def stack_all(tmp_path: Path) -> Iterator[Stack]:
    """The same, with every destination of the registry connected (the ones off by default
    with their emulator's sample credentials) and delivering to the one sandbox."""
    with _stack(tmp_path, every_destination=True) as built:
        yield built


@contextlib.contextmanager
def _stack(tmp_path: Path, *, every_destination: bool) -> Iterator[Stack]:
    with ExitStack() as s:
        sandbox_server = s.enter_context(
            ServerThread(
                create_sandbox(SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL))
            )
        )
        sandbox = Sandbox(
            sandbox_server.url, s.enter_context(httpx.Client(base_url=sandbox_server.url))
        )
        settings = make_settings(
            tmp_path,
            tiktok_base_url=sandbox_server.url,
            meta_base_url=sandbox_server.url,
            tiktok_pixel=TIKTOK_PIXEL,
            meta_pixel=META_PIXEL,
            trusted_proxies=("127.0.0.1/32",),
            destination_urls=dict.fromkeys(registry.NAMES, sandbox_server.url),
        )
        ingest_key = add_key(settings, "shop")
        site_key = add_key(settings, "site", "collect")
        if every_destination:
            connect_all(settings)
        gateway = s.enter_context(
            ServerThread(
                create_app(settings, Options(worker=True, sandbox=False, retry=FAST_RETRY))
            )
        )
        shop = s.enter_context(
            ServerThread(
                create_shop(
                    gateway.url, ingest_key=ingest_key, site_key=site_key, pixel=TIKTOK_PIXEL
                )
            )
        )
        shop_http = s.enter_context(httpx.Client(base_url=shop.url, timeout=30))
        yield Stack(
            shop.url, gateway.url, db_path(settings), sandbox, site_key, shop_http, settings
        )


# Module scope, not session: Playwright's sync API keeps an event loop running on this thread
# while it is started, which would break every asyncio test collected after the browser tests.
@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: the browser tests need Debian's chromium"
            " (`apt-get install chromium`; ./dev test installs it) or"
            " BACKCHANNEL_TEST_CHROMIUM pointing at a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (no cookies, no cache) per test; yields its context."""
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=False,  # --headless=new below: Playwright must not add its own mode flag
        args=CHROMIUM_ARGS,
    )
    try:
        yield context
    finally:
        context.close()
