"""Real processes over loopback: a `backchannel sandbox` and a `backchannel serve` that sends to it.

Why processes and not threads: the point is what survives ``kill -9`` — committed SQLite pages,
leased outbox rows, a batch the platform took whose answer never arrived. Only a real process
dies like that. Every wait is bounded by a deadline, and every child is killed in teardown,
even when the test failed, so a broken build cannot hang CI.

The tests read the gateway's SQLite file directly (WAL lets them read while it writes): that is
where "acknowledged means committed" can be checked without trusting the gateway's own answers.

Tuning: when ``config.Settings`` knows ``retry_base`` / ``retry_cap`` / ``lease_seconds``
(``BACKCHANNEL_RETRY_BASE`` …), the tests shorten them so the suite fits its time budget; on a
build without them they run with the product's defaults and fast-forward leases in the file
(see :meth:`Stack.expire_leases`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from backchannel import destinations as registry
from backchannel.config import Settings
from backchannel.sandbox.app import emulators

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0  # seconds for a process to answer its readiness probe
SETTINGS = {f.name for f in fields(Settings)}
#: the product exposes these knobs (they are being added to config.py while these tests exist)
HAS_RETRY_KNOBS = {"retry_base", "retry_cap"} <= SETTINGS
HAS_LEASE_KNOB = "lease_seconds" in SETTINGS

#: figures printed at the end of the run (pytest_terminal_summary below)
FIGURES: list[tuple[str, dict[str, Any]]] = []


def report(test: str, **figures: Any) -> None:
    """Keep figures observed by a test; they are printed in the terminal summary."""
    FIGURES.append((test, figures))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    knobs = f"retry knobs: {HAS_RETRY_KNOBS}, lease knob: {HAS_LEASE_KNOB}"
    terminalreporter.write_line(knobs)
    for test, figures in FIGURES:
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{test}: {shown}")


def free_port() -> int:
    """A port the OS just handed out (closed again: a small race, acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` s. Returns the
    seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """One child process with its output in a log file (read back when it misbehaves)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log_path = cwd / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest must not reach it first
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, then reap: no handler, no flush, no lifespan shutdown."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()

    def terminate(self) -> None:
        """SIGTERM with a short grace, then SIGKILL."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        self.kill()


def event(order_id: str, *, value: float = 10.5) -> dict[str, Any]:
    """A realistic CompletePayment; its event_id is ``CompletePayment-{order_id}``."""
    return {
        "event": "CompletePayment",
        "order_id": order_id,
        "value": value,
        "currency": "USD",
        "contents": [{"id": "SKU-1", "quantity": 1, "price": value}],
        "user": {
            "email": f"{order_id}@example.com",
            "ip": "81.2.69.160",
            "user_agent": "Mozilla/5.0 (reliability test)",
            # GA4 needs the _ga client id, Google Ads a click id
            "ga_client_id": "GA1.1.1000000001.1700000000",
            "gclid": f"Cj0-{order_id}",
        },
        "page": {"url": "https://shop.example/thanks"},
    }


def event_id(order_id: str) -> str:
    return f"CompletePayment-{order_id}"


#: every destination the suite delivers to: the registry's, the ones off by default connected
#: with their emulator's sample credentials (see Stack.connect_all)
DESTINATIONS = registry.NAMES


def _our_event_id(destination: str, item: dict[str, Any]) -> str:
    """Backchannel's event_id of an event a platform stored, from the key the emulator says
    the platform deduplicates on: the event_id itself, or (Google Ads) the order id, from
    which this suite's event ids are derived (every event is a CompletePayment)."""
    key = emulators()[destination].dedup_key(item)
    return key if key.startswith("CompletePayment-") else event_id(key)


@dataclass
class Ledger:
    """What clients learned: ids acknowledged (202), and ids whose request got no answer."""

    acked: set[str] = field(default_factory=set)
    #: sent (at least partly) but no answer came: may or may not be stored
    unanswered: set[str] = field(default_factory=set)
    #: the connection was refused: never reached the gateway
    not_sent: set[str] = field(default_factory=set)
    #: answered with something other than 202: must not be stored
    refused_ids: set[str] = field(default_factory=set)
    refused: dict[int, int] = field(default_factory=dict)  # status -> requests
    #: anything else a client thread ran into (must stay empty)
    anomalies: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Stack:
    """A sandbox process and a gateway process sharing a temporary directory."""

    def __init__(self, tmp: Path, *, lease: float | None, retry: tuple[float, float] | None):
        self.tmp = tmp
        self.db_path = tmp / "bc.db"
        self.env = {
            **os.environ,
            "BACKCHANNEL_DATABASE_URL": f"sqlite:///{self.db_path}",
            "BACKCHANNEL_SECRET_KEY": Fernet.generate_key().decode(),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("BACKCHANNEL_CONFIG", None)
        if lease is not None and HAS_LEASE_KNOB:
            self.env["BACKCHANNEL_LEASE_SECONDS"] = str(lease)
        if retry is not None and HAS_RETRY_KNOBS:
            self.env["BACKCHANNEL_RETRY_BASE"] = str(retry[0])
            self.env["BACKCHANNEL_RETRY_CAP"] = str(retry[1])
        self.sandbox_port = free_port()
        self.sandbox_url = f"http://{HOST}:{self.sandbox_port}"
        # every destination at the one sandbox (those off by default are connected by
        # connect_all: the suite runs with all of them)
        for name in DESTINATIONS:
            self.env[f"BACKCHANNEL_{name.upper()}_BASE_URL"] = self.sandbox_url
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.sandbox: Proc | None = None
        self.gateway: Proc | None = None
        self.key = ""
        self.http = httpx.Client(timeout=10.0)
        self._procs: list[Proc] = []
        #: the destinations that get rows: those on by default (TikTok and Meta), and all
        #: once connect_all has connected the others
        self.destinations: tuple[str, ...] = registry.ON_BY_DEFAULT

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "backchannel.cli", *args], self.env, self.tmp)
        self._procs.append(proc)
        return proc

    def _wait_ready(self, proc: Proc, url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if not proc.alive():
                pytest.fail(f"{proc.name} exited during startup:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get(url, timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"{proc.name} not ready in {STARTUP_TIMEOUT} s:\n{proc.log_tail()}")
            time.sleep(0.1)

    def start_sandbox(self) -> None:
        self.sandbox = self._spawn("sandbox", "sandbox", "--port", str(self.sandbox_port))
        self._wait_ready(self.sandbox, self.sandbox_url + "/_sandbox/faults")

    def create_key(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "keys", "create", "--name", "t"],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.key = done.stdout.strip().splitlines()[-1]

    def connect_all(self) -> None:
        """Connect every destination that is off until connected, with the credentials its
        emulator offers (``token set NAME --pixel … --set K=V --secret K``, the token and the
        secrets on stdin), so the suite delivers to all of them."""
        for name in DESTINATIONS:
            destination = registry.get(name)
            if destination.ON_BY_DEFAULT:
                continue
            sample = emulators()[name].sample_credentials
            args = [name, "--pixel", sample["pixel"]]
            stdin = [sample["token"]]
            for credential in destination.CREDENTIALS:
                if credential.key in ("pixel", "token") or credential.key not in sample:
                    continue
                if credential.secret:
                    args += ["--secret", credential.key]
                    stdin.append(sample[credential.key])
                else:
                    args += ["--set", f"{credential.key}={sample[credential.key]}"]
            done = subprocess.run(
                [sys.executable, "-m", "backchannel.cli", "token", "set", *args],
                env=self.env,
                cwd=self.tmp,
                input="\n".join(stdin) + "\n",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        self.destinations = DESTINATIONS

    def start_gateway(self, *extra: str) -> None:
        self.gateway = self._spawn(
            "gateway", "serve", "--port", str(self.port), "--no-sandbox", *extra
        )
        self._wait_ready(self.gateway, self.url + "/healthz")

    def kill_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.kill()

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
        self.http.close()

    # -- the sandbox ------------------------------------------------------------------------
    def faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(self.sandbox_url + "/_sandbox/faults", json=payload)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def clear_faults(self) -> None:
        assert self.http.delete(self.sandbox_url + "/_sandbox/faults").status_code == 200

    def stats(self, destination: str) -> dict[str, Any]:
        response = self.http.get(f"{self.sandbox_url}/_sandbox/{destination}/stats")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def received_ids(self, destination: str) -> list[str]:
        """Every event_id the platform accepted, repeats included, oldest first."""
        ids: list[str] = []
        offset = 0
        while True:
            response = self.http.get(
                f"{self.sandbox_url}/_sandbox/{destination}/events",
                params={"offset": offset, "limit": 10_000},
                timeout=60.0,
            )
            assert response.status_code == 200, response.text
            page = response.json()
            ids.extend(_our_event_id(destination, e) for e in page["events"])
            offset += len(page["events"])
            if not page["events"] or offset >= page["count"]:
                return ids

    # -- the gateway ------------------------------------------------------------------------
    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, body: dict[str, Any], client: httpx.Client | None = None) -> httpx.Response:
        return (client or self.http).post(self.url + "/v1/events", json=body, headers=self.auth)

    def status(self, eid: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/v1/events/{eid}", headers=self.auth)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    # -- the SQLite file --------------------------------------------------------------------
    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()

    def outbox(self) -> dict[tuple[str, str], int]:
        """(destination, status) -> rows."""
        with self.db() as db:
            rows = db.execute(
                "SELECT destination, status, COUNT(*) FROM outbox GROUP BY destination, status"
            ).fetchall()
        return {(d, s): n for d, s, n in rows}

    def stored_ids(self) -> set[str]:
        with self.db() as db:
            return {r[0] for r in db.execute("SELECT event_id FROM conversions")}

    def incomplete(self) -> list[tuple[str, int]]:
        """Conversions without exactly one outbox row per destination (must be none)."""
        with self.db() as db:
            return db.execute(
                "SELECT c.event_id, COUNT(o.id) FROM conversions c"
                " LEFT JOIN outbox o ON o.conversion_id = c.id"
                " GROUP BY c.id HAVING COUNT(o.id) != ?"
                " OR COUNT(DISTINCT o.destination) != ?",
                (len(self.destinations), len(self.destinations)),
            ).fetchall()

    def undelivered(self) -> int:
        with self.db() as db:
            return int(
                db.execute("SELECT COUNT(*) FROM outbox WHERE status != 'delivered'").fetchone()[0]
            )

    def leased(self) -> list[tuple[str, float]]:
        """(destination, seconds left on the lease) of rows in flight."""
        now = time.time()
        with self.db() as db:
            rows = db.execute(
                "SELECT destination, lease_until FROM outbox WHERE status = 'in_flight'"
            ).fetchall()
        return [(d, (lease or 0.0) - now) for d, lease in rows]

    def expire_leases(self) -> int:
        """Make every lease run out now, as if its full length had passed with the gateway down.

        Only used when the product offers no shorter lease (no ``lease_seconds`` setting):
        waiting out the 120 s default would not fit the suite's time budget. It changes only
        ``lease_until``, which is exactly what time passing would change.
        """
        with self.db() as db:
            return int(
                db.execute(
                    "UPDATE outbox SET lease_until = ? WHERE status = 'in_flight'",
                    (time.time() - 1.0,),
                ).rowcount
            )


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make_stack(lease=..., retry=(base, cap))``: sandbox up, key created, gateway not
    started. All processes are killed at teardown, whatever happened."""
    stacks: list[Stack] = []

    def make(*, lease: float | None = None, retry: tuple[float, float] | None = None) -> Stack:
        stack = Stack(tmp_path, lease=lease, retry=retry)
        stacks.append(stack)
        stack.start_sandbox()
        stack.create_key()
        stack.connect_all()
        return stack

    yield make
    for stack in stacks:
        stack.close()


_run = itertools.count()


def order_ids(prefix: str | None = None) -> Iterator[str]:
    """Endless unique order ids (unique across tests and runs)."""
    tag = prefix or f"r{next(_run)}-{uuid.uuid4().hex[:8]}"
    return (f"{tag}-{n}" for n in itertools.count())


class Ingestor:
    """Client threads posting single events and batches until stopped; the :class:`Ledger`
    says which ids were acknowledged and which requests got no answer."""

    def __init__(
        self,
        stack: Stack,
        *,
        threads: int,
        batch_every: int = 3,
        batch_size: int = 50,
        pause: float = 0.0,
        clients: list[httpx.Client] | None = None,
    ) -> None:
        """``clients``: one per thread (then ``threads`` is their number), already connected
        where the test wants the load (a process of a ``serve --workers N`` group); each is
        closed when its thread ends."""
        self.stack = stack
        self._clients = clients
        if clients is not None:
            threads = len(clients)
        self.ledger = Ledger()
        self._ids = order_ids()
        self._id_lock = threading.Lock()
        self._stop = threading.Event()
        self._batch_every = batch_every
        self._batch_size = batch_size
        self._pause = pause
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def _next_ids(self, n: int) -> list[str]:
        with self._id_lock:
            return [next(self._ids) for _ in range(n)]

    def _run(self, number: int) -> None:
        ledger = self.ledger
        given = self._clients[number] if self._clients is not None else None
        with contextlib.closing(
            given or httpx.Client(timeout=httpx.Timeout(20.0, connect=2.0))
        ) as client:
            for step in itertools.count():
                if self._stop.is_set():
                    return
                batch = step % self._batch_every == self._batch_every - 1
                orders = self._next_ids(self._batch_size if batch else 1)
                ids = [event_id(o) for o in orders]
                body = {"events": [event(o) for o in orders]} if batch else event(orders[0])
                try:
                    response = self.stack.post(body, client)
                except httpx.ConnectError:
                    with ledger.lock:
                        ledger.not_sent.update(ids)
                    if self._stop.is_set():
                        return
                    time.sleep(0.05)  # the gateway is down: do not spin
                    continue
                except httpx.TransportError:
                    with ledger.lock:
                        ledger.requests += 1
                        ledger.unanswered.update(ids)
                    if self._stop.is_set():
                        return
                    continue
                except Exception as exc:  # reported by the test (ledger.anomalies), not lost
                    with ledger.lock:
                        ledger.anomalies.append(repr(exc))
                    return
                with ledger.lock:
                    ledger.requests += 1
                    if response.status_code == 202:
                        results = response.json()["events"]
                        if [r["status"] for r in results] != ["accepted"] * len(ids):
                            ledger.anomalies.append(f"202 not all accepted: {results[:3]}")
                        ledger.acked.update(r["event_id"] for r in results)
                    else:
                        ledger.refused_ids.update(ids)
                        ledger.refused[response.status_code] = (
                            ledger.refused.get(response.status_code, 0) + 1
                        )
                if self._pause:
                    time.sleep(self._pause)

    def start(self) -> Ingestor:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> Ledger:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "client threads did not stop"
        return self.ledger

    def acked_count(self) -> int:
        with self.ledger.lock:
            return len(self.ledger.acked)


# -- serve --workers N ---------------------------------------------------------------------------
def which_process(url: str, client: httpx.Client) -> dict[str, Any]:
    """``/readyz``'s ``process`` (index, of, pid, delivery_worker): the process of a
    ``serve --workers N`` group that holds this client's connection."""
    response = client.get(url + "/readyz")
    assert response.status_code == 200, response.text
    process: dict[str, Any] = response.json()["process"]
    return process


def pinned_clients(url: str, count: int, per_process: int) -> dict[int, list[httpx.Client]]:
    """index -> ``per_process`` clients whose connection is held by that process of the
    group (the caller closes them).

    Why this way: a keep-alive connection stays with the process that accepted it, so a
    client that asked ``/readyz`` once knows where its later requests go. The processes share
    one listening socket and a new connection goes to whichever accepts first: an idle group
    gives connections opened one after the other to the same process again and again, so
    they are opened 16 at a time, and each process's share kept.
    """
    kept: dict[int, list[httpx.Client]] = {i: [] for i in range(count)}
    deadline = time.monotonic() + 60

    def connect(_: int) -> tuple[int, httpx.Client]:
        client = httpx.Client(timeout=httpx.Timeout(20.0, connect=2.0))
        process = which_process(url, client)
        assert process["of"] == count
        return process["index"], client

    with ThreadPoolExecutor(16) as pool:
        while any(len(clients) < per_process for clients in kept.values()):
            if time.monotonic() > deadline:
                for clients in kept.values():
                    for client in clients:
                        client.close()
                pytest.fail(f"connections per process: { {i: len(c) for i, c in kept.items()} }")
            for index, client in pool.map(connect, range(16)):
                if len(kept[index]) < per_process:
                    kept[index].append(client)
                else:
                    client.close()
    return kept


def group_processes(url: str, count: int) -> dict[int, dict[str, Any]]:
    """index -> ``process`` of every process of the group."""
    seen: dict[int, dict[str, Any]] = {}
    for index, clients in pinned_clients(url, count, 1).items():
        with contextlib.closing(clients[0]) as client:
            seen[index] = which_process(url, client)
    return seen
