"""Two processes committing to one SQLite file: SQLite's busy handler vs writer turns.

What ``serve --workers 2`` does on SQLite, without the HTTP around it: two processes commit
single rows (synchronous=FULL, WAL) as fast as they can, with a short pause between commits
standing in for a request's CPU work. Printed per mode: commits per second and the wait for
the write lock (p50/p90/p99/max), for

- ``sqlite``: SQLite's own busy handler (it sleeps 1, 2, 5, 10 … ms and tries again);
- ``turns``: backchannel.store.turns.WriterTurn taken around each transaction, as the
  processes of a group do.

The modes alternate ``--rounds`` times (a shared machine drifts); /proc/loadavg beside each.

    ./dev bench write_turns [--commits 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from _common import percentile
from backchannel.store.turns import WriterTurn


def writer(path: str, mode: str, commits: int, out: mp.Queue[list[float]], go: Event) -> None:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    turn = WriterTurn(path) if mode == "turns" else None
    waits = []
    go.wait()
    for _ in range(commits):
        begin = time.perf_counter()
        if turn is not None:
            turn.take()
        db.execute("BEGIN IMMEDIATE")
        waits.append(time.perf_counter() - begin)
        db.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(200),))
        db.execute("COMMIT")
        if turn is not None:
            turn.give()
        time.sleep(0.0005)  # the request's other work
    out.put(sorted(waits))


def run(mode: str, commits: int, workdir: Path) -> str:
    path = str(workdir / f"{mode}-{time.monotonic_ns()}.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    db.close()
    out: mp.Queue[list[float]] = mp.Queue()
    go = mp.Event()
    procs = [mp.Process(target=writer, args=(path, mode, commits, out, go)) for _ in range(2)]
    for proc in procs:
        proc.start()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    began = time.perf_counter()
    go.set()
    waits = sorted(out.get() + out.get())
    for proc in procs:
        proc.join()
    took = time.perf_counter() - began

    def ms(q: float) -> float:
        return percentile(waits, q) * 1000

    return (
        f"{mode:6}: {2 * commits / took:,.0f} commits/s; wait for the write lock"
        f" p50 {ms(0.5):.2f}, p90 {ms(0.9):.2f}, p99 {ms(0.99):.2f},"
        f" max {waits[-1] * 1000:.2f} ms; load {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=1500, help="per process")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bc-turns-") as tmp:
        for _ in range(args.rounds):
            for mode in ("sqlite", "turns"):
                print(run(mode, args.commits, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
