"""``backchannel backup`` of a live SQLite store, and ``restore`` into a new folder.

Real processes: one sandbox that outlives both gateways (so its counts span both runs), a
``serve`` ingesting and delivering while the backup is taken, then a second ``serve`` on the
restored copy. What must hold:

- every event acknowledged before the backup started is in the copy;
- what the copy says was delivered is not sent again by the restored gateway;
- what the copy says was not yet delivered (pending, retrying or leased) is sent exactly once
  more by the restored gateway, whatever the first gateway did with it after the backup;
- ``restore`` refuses a store that a running process has open, and works once it died.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import DESTINATIONS, HOST, Ingestor, Stack, event, order_ids, report, wait_until

LEASE = 6.0


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class LatencyProbe:
    """One client posting single events back to back, timing each answer: how long ingest
    stalls while the backup runs is the longest answer inside the backup's window."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[tuple[float, float, int]] = []  # (started, seconds, status)
        self._stop = threading.Event()
        self._ids = order_ids("probe")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                response = self.stack.post(event(next(self._ids)), client)
                self.samples.append((started, time.monotonic() - started, response.status_code))
                time.sleep(0.01)

    def start(self) -> LatencyProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def worst(self, start: float, end: float) -> float:
        inside = [s for t, s, _ in self.samples if t + s >= start and t <= end]
        return max(inside, default=0.0)


def received(stack: Stack) -> dict[str, Counter[str]]:
    return {d: Counter(stack.received_ids(d)) for d in DESTINATIONS}


def copy_state(path: Path) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """From a backup file: event_ids, and per destination the delivered / undelivered ones."""
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        ids = {r[0] for r in db.execute("SELECT event_id FROM conversions")}
        delivered: dict[str, set[str]] = {d: set() for d in DESTINATIONS}
        undelivered: dict[str, set[str]] = {d: set() for d in DESTINATIONS}
        rows = db.execute(
            "SELECT o.destination, o.status, c.event_id FROM outbox o"
            " JOIN conversions c ON c.id = o.conversion_id"
        )
        for destination, status, eid in rows:
            (delivered if status == "delivered" else undelivered)[destination].add(eid)
    finally:
        db.close()
    return ids, delivered, undelivered


@pytest.fixture
def second_stack(tmp_path: Path) -> Iterator[Callable[[Stack], Stack]]:
    """A gateway in a new folder that sends to the first stack's sandbox, with its key."""
    made: list[Stack] = []

    def make(first: Stack) -> Stack:
        folder = tmp_path / "restored"
        folder.mkdir()
        stack = Stack(folder, lease=LEASE, retry=(0.2, 2.0))
        stack.env["BACKCHANNEL_SECRET_KEY"] = first.env["BACKCHANNEL_SECRET_KEY"]
        for destination in DESTINATIONS:  # the restored store holds every connection
            name = f"BACKCHANNEL_{destination.upper()}_BASE_URL"
            stack.env[name] = first.env[name]
        stack.sandbox_url = first.sandbox_url
        stack.destinations = first.destinations
        stack.key = first.key  # the API key is a row of the restored store
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()


@pytest.mark.slow
def test_backup_under_load_restore_elsewhere_delivers_only_what_was_pending(
    make_stack: Callable[..., Stack], second_stack: Callable[[Stack], Stack], tmp_path: Path
) -> None:
    first = make_stack(lease=LEASE, retry=(0.2, 2.0))
    # Slow platforms keep a backlog, so the copy holds delivered, leased and pending rows.
    first.faults({"all": {"latency_ms": 150}})
    first.start_gateway()
    ingestor = Ingestor(first, threads=3, batch_every=3, batch_size=40).start()
    probe = LatencyProbe(first).start()
    backup_file = tmp_path / "copy.db"
    try:
        wait_until(lambda: ingestor.acked_count() >= 1500, 60, "1,500 acknowledged events")
        wait_until(lambda: first.stats("tiktok")["accepted_events"] > 0, 30, "first deliveries")
        with ingestor.ledger.lock:
            acked_before = set(ingestor.ledger.acked)
        started = time.monotonic()
        done = cli(first.env, first.tmp, "backup", str(backup_file))
        ended = time.monotonic()
        assert done.returncode == 0, done.stderr
        # The store is live: restore over it is refused, naming the running process.
        refused = cli(first.env, first.tmp, "restore", "--force", str(backup_file))
        time.sleep(1.0)  # ingest and delivery go on after the backup
    finally:
        probe.stop()
        ledger = ingestor.stop()
    assert ledger.anomalies == []
    assert ledger.refused == {}, f"non-202 answers while the backup ran: {ledger.refused}"
    assert "integrity ok" in done.stdout, done.stdout
    assert "key: NOT in" in done.stdout  # says the Fernet key is not in the copy
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    assert refused.returncode == 1
    assert "in use by a running process" in refused.stderr, refused.stderr
    assert first.gateway is not None
    assert str(first.gateway.pid) in refused.stderr
    with first.db() as db:  # the refused restore left the live store alone
        assert db.execute("SELECT COUNT(*) FROM conversions").fetchone()[0] >= len(ledger.acked)

    first.kill_gateway()
    # Requests the dead gateway had in flight still complete at the (slow) sandbox: count
    # only once its figures stand still.
    before_restore = received(first)

    def settled() -> bool:
        nonlocal before_restore
        time.sleep(0.5)
        now, before_restore = before_restore, received(first)
        return now == before_restore

    wait_until(settled, 30, "the sandbox to finish the dead gateway's requests")
    copied, delivered, undelivered = copy_state(backup_file)
    assert acked_before <= copied, f"{len(acked_before - copied)} acknowledged events missing"
    for destination in DESTINATIONS:  # the copy caught delivery mid-way
        assert delivered[destination], f"{destination}: nothing delivered in the copy"
        assert undelivered[destination], f"{destination}: no backlog in the copy"
    first.clear_faults()

    second = second_stack(first)
    restored = cli(second.env, second.tmp, "restore", str(tmp_path / "copy.db"))
    assert restored.returncode == 0, restored.stderr
    assert second.stored_ids() == copied
    second.start_gateway()
    wait_until(lambda: second.undelivered() == 0, 90, "the restored backlog delivered")
    after = received(first)
    for destination in DESTINATIONS:
        if destination == "google_ads":
            # Google Ads deduplicates on orderId itself: a pending row of the copy that the
            # first gateway had already sent after the backup is answered "already in use"
            # (delivered) and not recorded twice. What must hold: each order there once,
            # every pending one among them.
            assert undelivered[destination] <= set(after[destination])
            assert set(after[destination].values()) == {1}
            continue
        sent_again = after[destination] - before_restore[destination]
        assert set(sent_again) == undelivered[destination], (
            f"{destination}: resent {len(set(sent_again) & delivered[destination])} delivered,"
            f" missed {len(undelivered[destination] - set(sent_again))} pending"
        )
        assert set(sent_again.values()) == {1}, f"{destination}: a pending event sent twice"
    report(
        "backup under load",
        acked=len(ledger.acked),
        backup_s=round(ended - started, 2),
        backup_bytes=backup_file.stat().st_size,
        ingest_worst_during_backup_ms=round(probe.worst(started, ended) * 1000),
        ingest_worst_before_ms=round(probe.worst(0, started) * 1000),
        pending_in_copy=len(undelivered["tiktok"]),
    )


def test_restore_refuses_a_live_store_until_its_process_dies(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    stack.start_gateway()
    assert stack.post(event("live-1")).status_code == 202
    copy = tmp_path / "live.db"
    assert cli(stack.env, stack.tmp, "backup", str(copy)).returncode == 0
    refused = cli(stack.env, stack.tmp, "restore", "--force", str(copy))
    assert refused.returncode == 1
    assert "stop `serve` and every `worker` on it first" in refused.stderr
    assert stack.post(event("live-2")).status_code == 202  # untouched, still serving
    stack.kill_gateway()  # kill -9: the kernel drops its lock, nothing stale is left
    done = cli(stack.env, stack.tmp, "restore", "--force", str(copy))
    assert done.returncode == 0, done.stderr
    assert stack.stored_ids() == {"CompletePayment-live-1"}
    aside = [p.name for p in stack.tmp.iterdir() if ".replaced-" in p.name]
    assert any(name.startswith("bc.db.replaced-") for name in aside), aside


def test_backup_and_restore_refuse_bad_input_with_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "BACKCHANNEL_DATABASE_URL": f"sqlite:///{tmp_path / 'bc.db'}"}
    env.pop("BACKCHANNEL_SECRET_KEY", None)
    env.pop("BACKCHANNEL_CONFIG", None)
    assert cli(env, tmp_path, "keys", "create", "--name", "k").returncode == 0

    missing = cli(
        {**env, "BACKCHANNEL_DATABASE_URL": "sqlite:///nowhere.db"}, tmp_path, "backup", "x.db"
    )
    assert missing.returncode == 1
    assert "no store at nowhere.db" in missing.stderr

    existing = tmp_path / "exists.db"
    existing.write_bytes(b"keep me")
    refused = cli(env, tmp_path, "backup", str(existing))
    assert refused.returncode == 1
    assert "exists; add --force" in refused.stderr
    assert existing.read_bytes() == b"keep me"
    forced = cli(env, tmp_path, "backup", "--force", str(existing))
    assert forced.returncode == 0, forced.stderr

    pg = cli(
        {**env, "BACKCHANNEL_DATABASE_URL": f"postgresql://u@{HOST}:1/db"},
        tmp_path,
        "backup",
        "y.db",
    )
    assert pg.returncode == 1
    assert "pg_dump" in pg.stderr
    assert "pg_basebackup" in pg.stderr
    assert not (tmp_path / "y.db").exists()

    broken = tmp_path / "broken.db"
    broken.write_bytes(existing.read_bytes()[: existing.stat().st_size // 2])
    new_home = tmp_path / "new"
    new_home.mkdir()
    target_env = {**env, "BACKCHANNEL_DATABASE_URL": f"sqlite:///{new_home / 'bc.db'}"}
    bad = cli(target_env, new_home, "restore", str(broken))
    assert bad.returncode == 1
    assert str(broken) in bad.stderr
    assert not (new_home / "bc.db").exists()
    stopped = cli(env, tmp_path, "restore", str(existing))  # a store exists, no --force
    assert stopped.returncode == 1
    assert "a store exists at" in stopped.stderr
    assert "--force" in stopped.stderr


def test_with_key_keeps_the_fernet_key_beside_the_backup(tmp_path: Path) -> None:
    old_home, new_home = tmp_path / "old", tmp_path / "new"
    old_home.mkdir()
    new_home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BACKCHANNEL_SECRET_KEY", "BACKCHANNEL_CONFIG")
    }
    env["BACKCHANNEL_DATABASE_URL"] = "sqlite:///bc.db"
    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "backchannel.cli",
            *("token", "set", "tiktok", "--pixel", "CBACKUP001"),
        ],
        env=env,
        cwd=old_home,
        input="secret-token-1234\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert token.returncode == 0, token.stderr
    done = cli(env, old_home, "backup", "--with-key", str(tmp_path / "b.db"))
    assert done.returncode == 0, done.stderr
    key = tmp_path / "b.db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text() == (old_home / "backchannel.key").read_text()
    restored = cli(env, new_home, "restore", "--with-key", str(tmp_path / "b.db"))
    assert restored.returncode == 0, restored.stderr
    assert (new_home / "backchannel.key").read_text() == key.read_text()
    # The restored store's token decrypts with the restored key (and only with it).
    script = (
        "from backchannel import config, credentials\n"
        "from backchannel.store import open_store\n"
        "s = config.load()\n"
        "[(name, blob)] = open_store(s.database_url).all_token_ciphertexts()\n"
        "print(credentials.decrypt(credentials.load_cipher(s, create=False), blob))\n"
    )
    check = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=new_home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "secret-token-1234"
