"""Fixtures for the sources suite: a real gateway (uvicorn on loopback) with webhook secrets.

The gateway is the real app from ``create_app`` on a SQLite file in ``tmp_path``; no worker
and no sandbox, so stored rows stay exactly as ingest wrote them for the tests to read.
Delivery tests use the Serve suite's ``deploy`` (a worker sending to a separately running
sandbox) with its ``database_url`` (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from backchannel.web.app import Options, create_app
from serve.conftest import database_url, deploy, pg_server, pg_template, stack
from serve.helpers import add_key, db_path, make_settings
from support.server import ServerThread

from .helpers import SHOPIFY_SECRET, STRIPE_SECRET, WOO_SECRET, Gateway

StartGateway = Callable[..., Gateway]

# re-exported: the Serve suite's worker + sandbox deployment, on each backend
__all__ = ["database_url", "deploy", "pg_server", "pg_template", "stack"]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """``start_gateway(**settings)``: a gateway whose settings default to the env secrets."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Gateway:
            values: dict[str, Any] = {
                "shopify_webhook_secret": SHOPIFY_SECRET,
                "stripe_webhook_secret": STRIPE_SECRET,
                "woocommerce_webhook_secret": WOO_SECRET,
            }
            values.update(overrides)
            settings = make_settings(tmp_path, **values)
            key = add_key(settings, "shop")
            server = stack.enter_context(
                ServerThread(create_app(settings, Options(worker=False, sandbox=False)))
            )
            http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30.0))
            return Gateway(server.url, settings, db_path(settings), http, key)

        yield start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Gateway:
    return start_gateway()
