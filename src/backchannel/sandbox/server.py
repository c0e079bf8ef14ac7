"""Run the sandbox as a process: what ``backchannel sandbox`` calls."""

from __future__ import annotations

import uvicorn

from backchannel.sandbox.app import create_app
from backchannel.sandbox.config import SandboxConfig
from backchannel.sandbox.faults import Faults


def run(
    host: str,
    port: int,
    config: SandboxConfig | None = None,
    faults: Faults | None = None,
) -> None:
    """Serve the sandbox until interrupted. Logs only warnings: a benchmark sends thousands of
    requests per second, and an access log line each would cost more than validating them.
    Requests deliberately left hanging (timeout faults) are cut after 2 s on Ctrl-C instead of
    holding the shutdown for their whole ``hang_seconds``."""
    app = create_app(config or SandboxConfig(), faults)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        log_config=None,  # logging is configured by the caller (backchannel.logs)
    )
