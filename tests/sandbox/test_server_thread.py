"""The ServerThread test helper: a real server on a free loopback port, gone after exit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from support.server import ServerThread


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


class TestServerThread:
    def test_serves_on_loopback(self) -> None:
        """Inside the block the app answers on 127.0.0.1 at .url."""
        with ServerThread(_app()) as server:
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert httpx.get(server.url + "/").text == "hello"

    def test_two_servers_get_different_ports(self) -> None:
        """Two servers at once never share a port."""
        with ServerThread(_app()) as one, ServerThread(_app()) as two:
            assert one.port != two.port
            assert httpx.get(two.url + "/").status_code == 200

    def test_stops_on_exit(self) -> None:
        """After the block the port no longer accepts connections."""
        with ServerThread(_app()) as server:
            url = server.url
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/", timeout=1.0)

    def test_startup_failure_is_raised(self) -> None:
        """An app whose startup fails makes start() raise instead of hanging."""

        async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": "boom"})

        with pytest.raises(RuntimeError, match="startup"), ServerThread(broken):
            pass
