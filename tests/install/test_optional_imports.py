"""Every module of the product imports without the test-only and extra-only libraries.

Why: ``pip install backchannel`` installs only the required dependencies. A module that
imports psycopg (the postgres extra), resvg_py (the png extra) or a test library at its top
crashes the embedded default at start-up for every user who did not install them (issue 12:
web/app.py -> delivery.py -> wakeup.py -> psycopg). The virtualenv the tests run in has all
of them, so a subprocess hides them (tests/support/blocked.py) and imports every module under
src/backchannel. The only modules allowed to fail are those whose docstring says "Needs the
``NAME`` extra", and they must fail on exactly such a blocked library.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import backchannel
from support.blocked import blocked_env

PACKAGE = Path(backchannel.__file__).parent

#: libraries only an extra or the test extra installs (top-level import names)
EXTRA_ONLY = ("psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c", "resvg_py")
TEST_ONLY = (
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "hypothesis",
    "playwright",
    "schemathesis",
    "stripe",
    "facebook_business",
    "yaml",
    "mypy",
    "ruff",
)
BLOCKED = EXTRA_ONLY + TEST_ONLY
NEEDS_EXTRA = re.compile(r"Needs the ``([a-z][a-z0-9_]*)`` extra")

IMPORT_ALL = """
import importlib, sys, traceback
import orjson
results = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        results[name] = {"type": type(exc).__name__, "missing": getattr(exc, "name", None),
                         "message": str(exc)}
print(orjson.dumps(results).decode())
"""


def blocked() -> dict[str, str]:
    """The environment of a subprocess where the blocked libraries cannot be imported."""
    return blocked_env(BLOCKED)


def all_modules() -> dict[str, str | None]:
    """Every module under src/backchannel -> the extra its docstring says it needs, if any."""
    modules: dict[str, str | None] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it is the CLI itself, covered by the CLI tests
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found = NEEDS_EXTRA.search(doc)
        modules[name] = found.group(1) if found else None
    return modules


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    """Without this, a broken blocker would make the next test pass for nothing."""
    probe = "import importlib.util, psycopg"
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env=blocked(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert "No module named 'psycopg' (blocked)" in completed.stderr
    unblocked = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    assert unblocked.returncode == 0, "psycopg should be installed in the test virtualenv"


def test_every_module_imports_without_optional_libraries(tmp_path: Path) -> None:
    modules = all_modules()
    assert len(modules) > 50
    assert {"backchannel.web.app", "backchannel.cli", "backchannel.delivery"} <= set(modules)
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *modules],
        env=blocked(),
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    failures = orjson.loads(completed.stdout)
    undocumented = {name: f for name, f in failures.items() if modules[name] is None}
    assert not undocumented, (
        "these modules need an optional or test-only library at import time; import it where"
        f" it is used (backchannel.extras.require), or document the extra: {undocumented}"
    )
    for name, failure in failures.items():
        assert failure["type"] == "ModuleNotFoundError", (name, failure)
        assert failure["missing"].split(".")[0] in EXTRA_ONLY, (name, failure)
    documented = {name for name, extra in modules.items() if extra is not None}
    assert documented == set(failures), "a module documented as needing an extra imports fine"
    assert "backchannel.store.postgres" in documented


@pytest.mark.parametrize("command", ["serve", "worker", "migrate", "doctor"])
def test_a_postgres_url_without_the_extra_is_one_line_naming_pip(
    tmp_path: Path, command: str
) -> None:
    env = blocked()
    env["BACKCHANNEL_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    completed = subprocess.run(
        [sys.executable, "-m", "backchannel.cli", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "Traceback" not in out
    assert "pip install 'backchannel[postgres]'" in out
    if command != "doctor":  # doctor lists every check, one line each
        assert completed.stderr.strip().count("\n") == 0, completed.stderr
        assert completed.stderr.startswith("error: database: ")
