"""Make the modules named in ``$BLOCKED_MODULES`` unimportable in this interpreter.

Put this directory first on ``PYTHONPATH`` and Python imports it at start-up (the ``site``
module imports ``sitecustomize``), before any of our code: the subprocess then behaves like
an install where the test-only and extra-only libraries were never installed, although they
are in the virtualenv. An import of a blocked name (or anything under it) raises
ModuleNotFoundError with ``name`` set, as a real absence does.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset(filter(None, os.environ.get("BLOCKED_MODULES", "").split(",")))


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses every blocked top-level package and its submodules."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


if BLOCKED:
    for loaded in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
        del sys.modules[loaded]
    sys.meta_path.insert(0, Blocker())
