"""Run a subprocess as if some installed libraries were not installed.

Why: the test virtualenv has every extra (psycopg, resvg-py) and every test library, which
would hide a product module that imports one of them unconditionally, or an error message for
a missing extra that nobody ever saw. ``blocked_site/sitecustomize.py`` makes the named
top-level modules raise ModuleNotFoundError in any Python process started with
:func:`blocked_env` (``python -m backchannel.cli`` included).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

SITE = Path(__file__).parent / "blocked_site"


def blocked_env(modules: Iterable[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this environment without BACKCHANNEL_*) with ``modules`` blocked."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if base is not None or not k.startswith("BACKCHANNEL_")}
    paths = [str(SITE), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["BLOCKED_MODULES"] = ",".join(modules)
    return env
