"""The disk under the SQLite store fills up while ``serve`` ingests, then gets room again.

What must hold: while full, ingest answers ``503`` with ``Retry-After`` (never a 202 for an
event that was not committed, never a 500); once there is room, the same process takes events
again by itself; every event acknowledged before, during or after is stored and delivered.

How the disk fills: a small tmpfs mounted for the test holds only the store (the processes'
logs stay on the ordinary disk), and a filler file takes all its free space. Where mounting is
refused (not root, no CAP_SYS_ADMIN), a file-size limit (RLIMIT_FSIZE, set on the running
gateway with prlimit) stands in: writes past it fail with EFBIG as SQLite would see ENOSPC;
CPython ignores SIGXFSZ, so the process is not killed by it.
"""

from __future__ import annotations

import errno
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backchannel.store.sqlite import CHECKPOINT_BOUND

from .conftest import Ingestor, Stack, event, report, wait_until

pytestmark = pytest.mark.slow

#: Room for the database and a WAL at its designed bound (the checkpointer lets the WAL grow
#: to CHECKPOINT_BOUND before it blocks writers to empty it; under continuous readers a
#: passive checkpoint cannot restart it, and it did reach 13 MB within a second here). A
#: smaller disk fills from the WAL alone before the filler runs, and freeing the filler then
#: frees nothing: the test would measure its own disk size, not the gateway.
TMPFS_SIZE = f"{2 * CHECKPOINT_BOUND // (1024 * 1024) + 16}m"


class Disk:
    """Fill and free the store's disk (a tmpfs), or, failing a mount, a file-size limit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        self.mounted = mounted.returncode == 0
        self.filler = folder / "filler"
        self.pid: int | None = None

    def watch(self, pid: int) -> None:
        self.pid = pid  # for the RLIMIT_FSIZE fallback

    def fill(self) -> int:
        """Take every free byte; returns how many were taken."""
        if not self.mounted:
            assert self.pid is not None
            largest = max(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (largest, largest))
            return 0
        taken = 0
        chunk = b"\0" * 65536
        with self.filler.open("wb", buffering=0) as handle:
            while True:
                try:
                    taken += handle.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return taken
                    chunk = chunk[: len(chunk) // 2]

    def free(self) -> None:
        if not self.mounted:
            assert self.pid is not None
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, unlimited)
            return
        self.filler.unlink()

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], capture_output=True, check=False)


@pytest.fixture
def full_disk_stack(tmp_path: Path) -> Iterator[Callable[[], tuple[Stack, Disk]]]:
    made: list[tuple[Stack, Disk]] = []

    def make() -> tuple[Stack, Disk]:
        disk = Disk(tmp_path / "disk")
        stack = Stack(tmp_path, lease=6.0, retry=(0.2, 2.0))
        made.append((stack, disk))
        stack.db_path = disk.folder / "bc.db"  # only the store lives on the small disk
        stack.env["BACKCHANNEL_DATABASE_URL"] = f"sqlite:///{stack.db_path}"
        stack.start_sandbox()
        stack.create_key()
        return stack, disk

    yield make
    for stack, disk in made:
        stack.close()
        disk.close()


def test_disk_full_answers_503_then_recovers_without_losing_an_acknowledged_event(
    full_disk_stack: Callable[[], tuple[Stack, Disk]],
) -> None:
    stack, disk = full_disk_stack()
    stack.start_gateway()
    assert stack.gateway is not None
    disk.watch(stack.gateway.pid)
    ingestor = Ingestor(stack, threads=3, batch_every=3, batch_size=40, pause=0.01).start()
    probes = (f"full-probe-{n}" for n in range(100_000))
    try:
        wait_until(lambda: ingestor.acked_count() >= 300, 30, "the first acknowledgements")
        disk.fill()
        acked_when_full = ingestor.acked_count()
        # A full disk shows once the WAL must grow past the space it already had.
        wait_until(lambda: 503 in ingestor.ledger.refused, 60, "a 503 while the disk is full")
        full = stack.post(event(next(probes)))
        while full.status_code == 202:  # the odd commit can still fit in a freed WAL page
            full = stack.post(event(next(probes)))
        assert full.status_code == 503, full.text
        assert full.headers.get("retry-after") == "5"
        assert full.json()["error"] == "unavailable"
        assert "full" in full.json()["errors"][0]["reason"]
        assert stack.gateway.alive()
        disk.free()
        # The same process takes events again, without a restart.
        wait_until(
            lambda: stack.post(event(next(probes))).status_code == 202, 30, "a 202 after freeing"
        )
        recovered_at = ingestor.acked_count()
        wait_until(lambda: ingestor.acked_count() >= recovered_at + 300, 30, "ingest resumed")
    finally:
        ledger = ingestor.stop()
    assert ledger.anomalies == []
    assert set(ledger.refused) == {503}, f"only 503s while full: {ledger.refused}"
    wait_until(lambda: stack.undelivered() == 0, 90, "every outbox row delivered")
    stored = stack.stored_ids()
    assert ledger.acked <= stored, f"{len(ledger.acked - stored)} acknowledged events lost"
    assert not (ledger.refused_ids & stored), "an event answered 503 was committed"
    assert stack.incomplete() == []
    for destination in ("tiktok", "meta"):
        sent = set(stack.received_ids(destination))
        assert ledger.acked <= sent, f"{destination}: {len(ledger.acked - sent)} not delivered"
    report(
        "disk full",
        mounted_tmpfs=disk.mounted,
        acked=len(ledger.acked),
        acked_when_filled=acked_when_full,
        refused_503_requests=ledger.refused.get(503, 0),
        tiktok_duplicates=stack.stats("tiktok")["duplicates"],
        meta_duplicates=stack.stats("meta")["duplicates"],
    )
