"""Shared pieces of the benchmarks: processes, ports, readiness, sample data, percentiles."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def bench_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BACKCHANNEL_DATABASE_URL=f"sqlite:///{workdir}/bench.db",
        BACKCHANNEL_SECRET_KEY=Fernet.generate_key().decode(),
        # The per-key rate limit protects production; here it would measure itself.
        BACKCHANNEL_INGEST_RATE="1000000",
        BACKCHANNEL_INGEST_BURST="1000000",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], cwd: Path, stderr: Any = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, cwd=cwd, stderr=stderr)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def create_key(env: dict[str, str], cwd: Path, *options: str) -> str:
    """A new API key (``options``: e.g. ``--scope collect`` for a site key)."""
    out = subprocess.run(
        python("-m", "backchannel.cli", "keys", "create", "--name", "bench", *options),
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def conversion(i: int, run: str = "r") -> dict[str, Any]:
    """A realistic DTC purchase: email, phone, external id, ip/ua, ttclid, two line items."""
    return {
        "event": "CompletePayment",
        "order_id": f"{run}-{i}",
        "value": 59.9,
        "currency": "USD",
        "contents": [
            {"id": "SKU-1", "quantity": 1, "price": 29.95},
            {"id": "SKU-2", "quantity": 1, "price": 29.95},
        ],
        "user": {
            "email": f"customer.{i}@example.com",
            "phone": f"+1415{i % 10_000_000:07d}",
            "external_id": f"user-{i}",
            "ip": "81.2.69.160",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
            "ttp": f"ttp.{i}",
        },
        "page": {"url": f"https://shop.example/thanks?ttclid=E.C.P.{i}"},
    }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
