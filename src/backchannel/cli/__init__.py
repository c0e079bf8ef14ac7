"""The ``backchannel`` command line (``backchannel = "backchannel.cli:main"``).

One module per command group (serve, send, keys, token, route, sources, admin, outbox, upkeep,
report, snippet), what they share in ``common``, and ``app`` assembling them.
"""

from __future__ import annotations

from backchannel.cli.app import app, main

__all__ = ["app", "main"]
