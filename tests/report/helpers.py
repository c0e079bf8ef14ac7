"""What the report tests share: the real CLI as a subprocess, and the seeded range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: the range and switch-on date of the seed in test_gap.py
RANGE = ("--from", "2026-11-01", "--to", "2026-11-30", "--switch-on", "2026-11-15")


def report_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``backchannel report ARGS`` on the SQLite file ``db``, with no other configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env["BACKCHANNEL_DATABASE_URL"] = f"sqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", "report", *args],
        capture_output=True,
        text=True,
        cwd=db.parent,
        env=env,
        timeout=120,
        check=False,
    )
