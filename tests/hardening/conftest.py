"""Fixtures for the hardening suite: real gateways on loopback ports, an admin password set.

Everything runs over real HTTP (``ServerThread``) so cookies, headers and status codes are the
ones a browser or Prometheus would see.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backchannel.config import Settings
from backchannel.delivery import RetryPolicy
from backchannel.destinations import NAMES
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store import open_store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from serve.helpers import META_PIXEL, TIKTOK_PIXEL, add_key, make_settings
from support.server import ServerThread

PASSWORD = "correct horse battery staple"


@dataclass
class App:
    """A running gateway: its URL, settings, an ingest key, an admin key and a plain client."""

    url: str
    settings: Settings
    key: str
    admin_key: str
    http: httpx.Client
    sandbox_url: str | None = None
    #: the FastAPI app object (its state holds the store, the worker, the metrics)
    asgi: Any = None

    def client(self, **kwargs: Any) -> httpx.Client:
        """A fresh client (its own cookie jar), closed by the caller."""
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def login(
        self, client: httpx.Client, password: str = PASSWORD, name: str = "admin"
    ) -> httpx.Response:
        """Log in on the login form as member ``name`` (``admin``: the host owner the first
        password made)."""
        form = client.get("/login")
        assert form.status_code == 200, form.text
        token = csrf_from(form.text)
        return client.post("/login", data={"csrf_token": token, "name": name, "password": password})

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3

        path = self.settings.database_url.removeprefix("sqlite:///")
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


StartApp = Callable[..., App]


@pytest.fixture
def start_app(tmp_path: Path, stack: ExitStack) -> StartApp:
    """``start_app(sandbox=False, worker=False, **settings)``: a gateway with a password set.

    ``sandbox=True`` starts a separate sandbox and points both destinations at it.
    """

    def start(
        *, sandbox: bool = False, worker: bool = False, password: bool = True, **overrides: Any
    ) -> App:
        sandbox_url = None
        if sandbox:
            config = SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL)
            sandbox_url = stack.enter_context(ServerThread(create_sandbox(config))).url
            overrides = {
                "tiktok_base_url": sandbox_url,
                "meta_base_url": sandbox_url,
                # every other destination at the same sandbox (they are off until connected)
                "destination_urls": {
                    name: sandbox_url for name in NAMES if name not in ("tiktok", "meta")
                },
                "tiktok_pixel": TIKTOK_PIXEL,
                "meta_pixel": META_PIXEL,
                **overrides,
            }
        settings = make_settings(tmp_path, **overrides)
        key = add_key(settings, "shop")
        admin_key = add_key(settings, "ops", scope="admin")
        store = open_store(settings.database_url)
        try:
            if password:
                set_password(store, PASSWORD, time.time())
        finally:
            store.close()
        options = Options(worker=worker, sandbox=False, retry=RetryPolicy(base=0.05, cap=0.5))
        asgi = create_app(settings, options)
        server = stack.enter_context(ServerThread(asgi))
        http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
        return App(server.url, settings, key, admin_key, http, sandbox_url, asgi)

    return start
