"""Fixtures for the Serve suite: a real gateway and a real sandbox, each on a loopback port.

Everything is the real thing: the SQLite file lives in ``tmp_path``, the FastAPI app from
``backchannel.web.app.create_app`` and the sandbox app from ``backchannel.sandbox.create_app``
each run under uvicorn in a :class:`ServerThread`, and tests speak HTTP to them with httpx.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from backchannel.config import Settings
from backchannel.delivery import RetryPolicy
from backchannel.destinations import NAMES
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.web.app import Options, create_app
from store.conftest import BACKENDS, POSTGRES_ENV, PostgresServer, pg_server, pg_template
from support.server import ServerThread

from .helpers import (
    FAST_RETRY,
    META_PIXEL,
    TIKTOK_PIXEL,
    Deployment,
    Gateway,
    Sandbox,
    StartDeployment,
    add_key,
    db_path,
    make_settings,
)

__all__ = ["pg_server", "pg_template"]  # re-exported: the store suite's PostgreSQL fixtures


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each backend, as a ``database_url`` setting."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/bc.db"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    conninfo = server.create(template)
    try:
        yield psycopg_url(conninfo)
    finally:
        server.drop(conninfo)


def psycopg_url(conninfo: str) -> str:
    """The server URL with this conninfo's database (open_store picks the backend by URL)."""
    from psycopg.conninfo import conninfo_to_dict

    return (
        os.environ[POSTGRES_ENV].rsplit("/", 1)[0] + "/" + str(conninfo_to_dict(conninfo)["dbname"])
    )


@pytest.fixture
def backend_gateway(tmp_path: Path, stack: ExitStack, database_url: str) -> Gateway:
    """The ingest API alone (no worker, no sandbox) on each backend; ``Gateway.query`` reads
    SQLite files only, so tests of both backends speak HTTP."""
    settings = make_settings(tmp_path, database_url=database_url)
    return _start_gateway(stack, settings, Options(worker=False, sandbox=False))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Servers started in a test stop in reverse order (the gateway before its sandbox)."""
    with ExitStack() as s:
        yield s


def _start_gateway(stack: ExitStack, settings: Settings, options: Options) -> Gateway:
    key = add_key(settings, "shop")
    server = stack.enter_context(ServerThread(create_app(settings, options)))
    http = stack.enter_context(
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0)
    )
    return Gateway(server.url, settings, db_path(settings), key, http)


@pytest.fixture
def gateway(tmp_path: Path, stack: ExitStack) -> Gateway:
    """The ingest API alone: no worker, no sandbox (rows stay pending, nothing is sent)."""
    settings = make_settings(tmp_path)
    return _start_gateway(stack, settings, Options(worker=False, sandbox=False))


@pytest.fixture
def deploy(tmp_path: Path, stack: ExitStack) -> StartDeployment:
    """Start a separate sandbox, then a gateway with its worker delivering to it.

    ``deploy(sandbox_config=..., faults=..., retry=..., **settings)``: faults (the sandbox's
    JSON shape) are set before the gateway starts, so the very first request meets them;
    ``settings`` override the gateway's (e.g. ``secret_key`` to share one with the CLI).
    """

    def start(
        *,
        sandbox_config: SandboxConfig | None = None,
        faults: dict[str, Any] | None = None,
        retry: RetryPolicy = FAST_RETRY,
        **settings_overrides: Any,
    ) -> Deployment:
        config = sandbox_config or SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL)
        server = stack.enter_context(ServerThread(create_sandbox(config)))
        http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
        sandbox = Sandbox(server.url, http)
        if faults:
            sandbox.faults(faults)
        values: dict[str, Any] = {
            "tiktok_base_url": server.url,
            "meta_base_url": server.url,
            "tiktok_pixel": TIKTOK_PIXEL,
            "meta_pixel": META_PIXEL,
            # every other destination too (they are off until connected)
            "destination_urls": {n: server.url for n in NAMES if n not in ("tiktok", "meta")},
        }
        values.update(settings_overrides)
        settings = make_settings(tmp_path, **values)
        options = Options(worker=True, sandbox=False, retry=retry)
        return Deployment(_start_gateway(stack, settings, options), sandbox)

    return start
