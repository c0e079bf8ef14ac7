"""Install the built wheel into a fresh virtualenv with no extras, as a new user would.

Why: the development virtualenv has every extra and every test library, so it hides an import
of an optional library that ``pip install backchannel`` does not install (issue 12: ``serve``
crashed on ``import psycopg``). Here the wheel is built from a copy of the source, installed
into a virtualenv of its own (no ``--system-site-packages``: that would lend it this
interpreter's libraries), and its ``backchannel`` script runs in an empty folder: ``serve``
answers /healthz, takes an event with a key and delivers it to the embedded sandbox; ``send
--dry-run`` prints the bodies; a PostgreSQL URL or a PNG export stops with one line naming
the extra to install.

One virtualenv per session (a session fixture), dependencies from pip's cache when it has
them; marked slow (a cold cache downloads the dependencies).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Installed:
    """A virtualenv with only the wheel and its required dependencies."""

    venv: Path
    wheel: Path

    @property
    def backchannel(self) -> str:
        return str(self.venv / "bin" / "backchannel")

    def run(
        self, cwd: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [self.backchannel, *args],
            input=stdin,
            cwd=cwd,
            env=env or clean_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode(),
            completed.stderr.decode(),
        )


def clean_env() -> dict[str, str]:
    """This environment without our settings and without this virtualenv on the paths."""
    drop = ("BACKCHANNEL_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def pip(python: Path, *args: str, cwd: Path) -> None:
    completed = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the worktree
    source = base / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = base / "dist"
    pip(
        Path(sys.executable),
        "wheel",
        "--no-deps",
        "--quiet",
        "-w",
        str(dist),
        str(source),
        cwd=base,
    )
    (wheel,) = dist.glob("backchannel-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip(venv / "bin" / "python", "install", "--quiet", str(wheel), cwd=base)
    return Installed(venv, wheel)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(installed: Installed, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``backchannel serve`` from the fresh virtualenv, in an empty folder."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [installed.backchannel, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield url, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_the_venv_has_no_extra_and_no_test_library(installed: Installed) -> None:
    listed = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        env=clean_env(),
        timeout=120,
        check=True,
    )
    names = {p["name"].lower().replace("_", "-") for p in orjson.loads(listed.stdout)}
    assert "backchannel" in names
    assert "fastapi" in names
    for absent in ("psycopg", "psycopg-pool", "resvg-py", "pytest", "hypothesis", "playwright"):
        assert absent not in names
    # and it does not see this interpreter's packages either (no --system-site-packages)
    probe = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import psycopg"],
        capture_output=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert probe.returncode != 0


def test_serve_in_an_empty_folder_accepts_and_delivers_an_event(
    installed: Installed, served: tuple[str, Path]
) -> None:
    url, folder = served
    assert httpx.get(url + "/healthz", timeout=5).json()
    key = installed.run(folder, "keys", "create", "--name", "shop")
    assert key.returncode == 0, key.stderr
    event = {
        "event": "CompletePayment",
        "order_id": "w-1001",
        "value": 59.9,
        "currency": "USD",
        "user": {"email": "Jane@Example.com", "ip": "81.2.69.160", "user_agent": "Mozilla/5.0"},
    }
    headers = {"Authorization": f"Bearer {key.stdout.strip()}"}
    answer = httpx.post(url + "/v1/events", json=event, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text
    assert answer.json()["events"][0]["status"] == "accepted"
    refused = httpx.post(url + "/v1/events", json=event, timeout=10)  # no key
    assert refused.status_code == 401
    deadline = time.monotonic() + 30
    while True:
        seen = httpx.get(url + "/sandbox/_sandbox/tiktok/events", timeout=5).json()
        ids = [e.get("event_id") for e in seen["events"]]
        if "CompletePayment-w-1001" in ids:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.3)
    assert (folder / "backchannel.db").exists()
    assert (folder / "backchannel.key").exists()


def test_send_dry_run(installed: Installed, tmp_path: Path) -> None:
    body = orjson.dumps(
        {
            "event": "CompletePayment",
            "order_id": 7,
            "value": 5,
            "currency": "EUR",
            "user": {"email": "a@b.co"},
        }
    )
    completed = installed.run(tmp_path, "send", "--dry-run", "-", stdin=body)
    assert completed.returncode == 0, completed.stderr
    lines = [orjson.loads(line) for line in completed.stdout.splitlines()]
    assert [line["destination"] for line in lines] == ["tiktok", "meta"]
    tiktok = lines[0]["body"]["data"][0]
    assert tiktok["event_id"] == "CompletePayment-7"
    assert tiktok["user"]["email"] == hashlib.sha256(b"a@b.co").hexdigest()
    assert "a@b.co" not in completed.stdout


def test_a_postgres_url_names_the_extra(installed: Installed, tmp_path: Path) -> None:
    env = clean_env() | {"BACKCHANNEL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for command in ("serve", "migrate", "worker"):
        completed = installed.run(tmp_path, command, env=env)
        assert completed.returncode == 2, completed.stderr
        assert completed.stderr.count("\n") == 1, completed.stderr
        assert "pip install 'backchannel[postgres]'" in completed.stderr


def test_png_charts_name_the_extra(installed: Installed, tmp_path: Path) -> None:
    completed = installed.run(
        tmp_path, "report", "gap", "--chart-dir", "charts", "--chart-format", "png"
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert "pip install 'backchannel[png]'" in completed.stderr
    assert not (tmp_path / "charts").exists()
