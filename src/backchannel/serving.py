"""Running the HTTP server so that SIGTERM and SIGINT stop it cleanly, with exit status 0.

What a stop does, in order (``serve``):

1. uvicorn stops accepting connections and lets requests in flight finish, for at most half
   of ``shutdown_grace``: each is either committed and answered, or (cut off) not answered,
   never answered without its commit (ingest answers 202 only after the commit);
2. the app's lifespan ends: the delivery worker lets its cycles in flight finish for the
   other half, cancels what is left and releases every row it still leases, so another
   worker takes them at once instead of when the lease runs out (120 s by default);
3. the logs are flushed and the process exits 0.

Why the signal handlers below: uvicorn re-raises the signal it caught once it has shut down
(so that a default handler kills the process), which makes a clean stop exit with status
-15; supervisors (systemd, compose restart policies) then log a failure for every deploy.
uvicorn restores the handlers that were installed before it ran, then re-raises: with a
handler that does nothing, the re-raised signal is absorbed and ``run`` simply returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from types import FrameType
from typing import Any

#: uvicorn's exit status for a server that never started (the app's start-up failed): a
#: process group (process_group.py) stops instead of restarting such a process again and again
STARTUP_FAILURE = 3

#: how ``serve`` runs uvicorn, alone or as one process of a group
UVICORN_OPTIONS: dict[str, Any] = {
    "log_level": "warning",
    "access_log": False,
    "log_config": None,  # logs.configure: JSON or text, redacted
    # browser leg: X-Forwarded-For is believed only from `trusted_proxies` (web/collect.py);
    # uvicorn's own handling would trust 127.0.0.1 and rewrite the client address first
    "proxy_headers": False,
}


def _absorb(signum: int, frame: FrameType | None) -> None:
    """The re-raised signal after a graceful stop: nothing left to do."""


def run(
    app: Any,
    *,
    host: str,
    port: int,
    grace: float,
    sock: socket.socket | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then stop within about ``grace`` seconds.

    ``sock``: accept on this already listening socket (one of ``serve --workers N``'s
    processes, which share the socket their parent bound) instead of binding host:port.
    """
    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _absorb)
    timeout = max(1, int(grace / 2))
    if sock is None:
        uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=timeout, **options)
    else:
        config = uvicorn.Config(
            app, host=host, port=port, timeout_graceful_shutdown=timeout, **options
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            logging.shutdown()
            sys.exit(STARTUP_FAILURE)
    logging.shutdown()
