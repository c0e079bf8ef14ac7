"""Optional parts: import a library that only an extra installs, or stop with one line.

Why: ``pip install backchannel`` must serve the embedded default (SQLite, the sandbox) without
the PostgreSQL driver or a rasterizer; those come with ``backchannel[postgres]`` and
``backchannel[png]``. Code that needs one imports it through :func:`require` at the moment it
is needed, so a missing extra is a sentence naming the pip command, not a traceback at start-up.
Modules that cannot work at all without an extra say "Needs the ``NAME`` extra" in their
docstring (``tests/install/test_optional_imports.py`` holds every other module to importing
without any extra).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ValueError):
    """An optional library is not installed; the message names the pip command to add it.

    A ValueError so callers that already turn bad configuration (a database URL) into a
    one-line error handle this one the same way.
    """

    def __init__(self, extra: str, what: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{what} needs the {extra} extra (module {module!r} is not installed):"
            f" pip install 'backchannel[{extra}]'"
        )


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (installed by ``backchannel[extra]``) or raise :class:`MissingExtra`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # only the library's own absence is a missing extra; a broken install says more
        if exc.name is not None and module.split(".")[0] == exc.name.split(".")[0]:
            raise MissingExtra(extra, what, module) from None
        raise
