"""Run any ASGI app on a real loopback port for the duration of a test.

Why a real server and not an in-process transport: the point of these tests is the wire
(headers, status codes, timeouts, connection handling), and only a real socket shows it.

Usage::

    from support.server import ServerThread

    with ServerThread(app) as server:
        httpx.get(server.url + "/path")

The whole API is ``ServerThread(app, ...)``, ``.url``, ``.port`` and the context manager
(or ``start()`` / ``stop()`` for fixtures that need them separately).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

HOST = "127.0.0.1"


class ServerThread:
    """An ASGI app served by uvicorn in a background thread on ``127.0.0.1:<free port>``.

    The port is chosen by the OS (a socket bound to port 0 is handed to uvicorn), so tests
    running in parallel never collide and no port is ever guessed.

    ``graceful_timeout``: on exit, requests still in flight (e.g. a deliberately hanging
    one) get this many seconds before they are cancelled, so teardown never waits long.
    """

    def __init__(
        self,
        app: Any,
        *,
        startup_timeout: float = 10.0,
        graceful_timeout: int = 1,
    ) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._startup_timeout = startup_timeout
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="auto",
            timeout_graceful_shutdown=graceful_timeout,
        )
        self._server = uvicorn.Server(config)
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        # uvicorn ends a failed startup with sys.exit(); in a thread that would surface as an
        # unhandled-thread-exception warning, so it is caught and reported by start().
        try:
            self._server.run(sockets=[self._socket])
        except SystemExit as exc:
            self._failure = f"exit code {exc.code}"
        except Exception as exc:
            self._failure = repr(exc)

    def start(self) -> None:
        """Start serving; return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._socket.close()
                reason = self._failure or "see its log"
                raise RuntimeError(f"the ASGI server exited during startup ({reason})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the ASGI server did not start in {self._startup_timeout} s")
            time.sleep(0.005)

    def stop(self) -> None:
        """Ask the server to exit, wait for its thread, release the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
