"""What the dashboard's HTTP and browser tests share: a real gateway on a seeded store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from backchannel.config import Settings
from backchannel.store import open_store
from backchannel.store.base import Store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from serve.helpers import add_key, make_settings
from support.server import ServerThread

PASSWORD = "correct horse battery staple"


@dataclass
class Gateway:
    """A running gateway (no worker, no sandbox) with an admin key and the password set."""

    url: str
    settings: Settings
    admin_key: str
    http: httpx.Client

    @property
    def admin(self) -> dict[str, str]:
        """Headers that authenticate as the admin key."""
        return {"Authorization": f"Bearer {self.admin_key}"}


@contextmanager
def seeded_gateway(
    tmp_path: Path, seed: Callable[[Store], object], *, database_url: str | None = None
) -> Iterator[Gateway]:
    """Seed the store (SQLite in ``tmp_path`` unless ``database_url``), then serve it."""
    settings = (
        make_settings(tmp_path)
        if database_url is None
        else make_settings(tmp_path, database_url=database_url)
    )
    admin_key = add_key(settings, "ops", scope="admin")
    store = open_store(settings.database_url)
    try:
        seed(store)
        set_password(store, PASSWORD, time.time())
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(server.url, settings, admin_key, http)
