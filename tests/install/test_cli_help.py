"""The help of every command is exactly what it was when the CLI was one module.

``cli_help.txt`` was written by ``dump_help.py`` from ``cli.py`` before it became the
``backchannel.cli`` package; the split was meant to move code, not to change a command, an
option, a default or a line of help. A wanted change of the CLI regenerates the fixture (see
``dump_help.py``) in the same commit, so the diff shows the change to the user interface.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_every_command_help_is_unchanged(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    completed = subprocess.run(
        [sys.executable, str(HERE / "dump_help.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    expected = (HERE / "cli_help.txt").read_text(encoding="utf-8")
    assert completed.stdout.count("=== backchannel") == expected.count("=== backchannel") >= 30
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            completed.stdout.splitlines(keepends=True),
            "cli_help.txt (saved)",
            "now",
        )
    )
    assert not diff, f"the CLI's help changed:\n{diff}"
