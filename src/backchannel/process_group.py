"""``serve --workers N``: N server processes answering on one port.

Why processes: the work of a request before its commit (parsing, validation, normalizing,
hashing, rendering) is Python, and one process runs Python on one core at a time. On SQLite
the writes still serialize in the database, but each process has its own group commit
(store/runner.py), so one process's commit (and its fsync) overlaps another's CPU work. On
PostgreSQL the processes are simply more ingest nodes, as several ``serve --no-worker``
already were.

How:

- the parent binds host:port itself (so "address already in use" fails at once, as it does
  for one process) and starts N children, ``python -m backchannel.process_group``, that
  inherit the listening socket and run uvicorn on it: the kernel hands each new connection
  to one of them;
- child 0 runs the delivery worker (unless ``--no-worker``), and the chores one process per
  database should run (SQLite's WAL checkpointer thread, the retention purge); children
  1..N-1 only answer HTTP (ingest, collect, webhooks, dashboard). Exactly one delivery
  worker, as one ``serve`` has today; more can run apart (``backchannel worker``) on
  PostgreSQL, as before;
- SIGTERM or SIGINT to the parent: it sends SIGTERM to every child, each stops as a single
  ``serve`` does (serving.py: requests in flight finish, the worker releases its leases),
  and the parent exits 0 once every child has exited 0 (1 otherwise, or when a child had to
  be killed after ``shutdown_grace`` + 10 s). Children are in a process group of their own,
  so a terminal's Ctrl-C reaches them once, through the parent;
- a child that dies (``kill -9``, the OOM killer) is started again with the same index after
  a pause (1 s, doubling while it keeps dying young, at most 30 s). Nothing acknowledged is
  lost with it: a 202 is sent only after the commit that holds the event; its requests in
  flight are cut off unanswered, and rows its worker had leased wait for their lease to run
  out (120 s by default) like those of a crashed single ``serve``. A child whose start-up
  itself failed (uvicorn's exit status 3: the app could not start) is not restarted: the
  group stops and the parent exits 1;
- the parent's own death (even ``kill -9``): each child watches a pipe whose write end only
  the parent holds; at end-of-file it stops itself as on SIGTERM (and exits for good
  ``shutdown_grace`` + 10 s later if that stop hangs);
- ``/metrics``: aggregated over the group (backchannel.metrics: each child gets the same
  ``PROMETHEUS_MULTIPROC_DIR``, a directory the parent creates and removes); ``/readyz`` is
  each process's own (web/ops.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from backchannel.metrics import MULTIPROCESS_ENV
from backchannel.serving import STARTUP_FAILURE

if TYPE_CHECKING:  # the parent never imports the app: its children do
    from backchannel.config import Settings
    from backchannel.web.app import Options

log = logging.getLogger("backchannel.serve")

BACKLOG = 2048  # connections the kernel queues for the group (uvicorn's default)
POLL = 0.2  # seconds between looks at the children
RESTART_PAUSE = 1.0  # seconds before a dead child is started again (doubling, see below)
RESTART_PAUSE_MAX = 30.0
YOUNG = 10.0  # a child that dies younger than this was not fixed by the last restart
STOP_MARGIN = 10.0  # seconds past shutdown_grace before a child that does not stop is killed
CHILD_COMMAND = (sys.executable, "-m", "backchannel.process_group")


@dataclass
class _Child:
    index: int
    popen: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


def listen(host: str, port: int) -> socket.socket:
    """The group's listening socket, bound and listening, inheritable by the children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ProcessGroup:
    """The parent: starts, watches, restarts and stops the children (see module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        count: int,
        grace: float,
        worker: bool,
        sandbox: bool,
        self_url: str,
        command: Sequence[str] = CHILD_COMMAND,
    ) -> None:
        self.sock = sock
        #: how a child starts (its arguments follow); benchmarks start their own app's
        self.command = list(command)
        self.count = count
        self.grace = grace
        self.worker = worker
        self.sandbox = sandbox
        self.self_url = self_url
        self.children: dict[int, _Child] = {}
        self._stop = threading.Event()
        self._failed = False
        self._pause = dict.fromkeys(range(count), RESTART_PAUSE)
        self._due: dict[int, float] = {}
        self.metrics_dir = tempfile.mkdtemp(prefix="backchannel-metrics-")
        # children read this pipe's end; at EOF (the parent is gone) they stop themselves
        self._alive_r, self._alive_w = os.pipe()

    # -- children -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Child:
        args = [
            *self.command,
            "--fd",
            str(self.sock.fileno()),
            "--parent-fd",
            str(self._alive_r),
            "--index",
            str(index),
            "--of",
            str(self.count),
            "--self-url",
            self.self_url,
        ]
        if self.worker and index == 0:
            args.append("--worker")
        if self.sandbox:
            args.append("--sandbox")
        env = {**os.environ, MULTIPROCESS_ENV: self.metrics_dir}
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args,
            env=env,
            pass_fds=(self.sock.fileno(), self._alive_r),
            process_group=0,  # a terminal's Ctrl-C reaches the parent only (it relays)
        )
        return _Child(index, popen)

    def _reap(self) -> None:
        """Note dead children: restart them later, or stop the group on a failed start-up."""
        from prometheus_client import multiprocess

        now = time.monotonic()
        for index, child in list(self.children.items()):
            code = child.popen.poll()
            if code is None:
                continue
            del self.children[index]
            multiprocess.mark_process_dead(child.popen.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if code == STARTUP_FAILURE:
                log.error(
                    "serve process %d (pid %d) could not start; stopping the others",
                    index,
                    child.popen.pid,
                )
                self._failed = True
                self._stop.set()
                return
            if now - child.started >= YOUNG:
                self._pause[index] = RESTART_PAUSE
            pause = self._pause[index]
            self._pause[index] = min(RESTART_PAUSE_MAX, pause * 2)
            self._due[index] = now + pause
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log.warning(
                "serve process %d (pid %d) exited with %s; starting it again in %.0f s",
                index,
                child.popen.pid,
                how,
                pause,
            )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, due in list(self._due.items()):
            if now >= due and not self._stop.is_set():
                del self._due[index]
                self.children[index] = self._spawn(index)

    # -- the parent's life ----------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status for the parent (0: all stopped cleanly)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                self.children[index] = self._spawn(index)
            while not self._stop.wait(POLL):
                self._reap()
                self._restart_due()
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close()

    def _stop_all(self) -> int:
        """SIGTERM to every child, wait for all; 0 when each exited 0."""
        clean = not self._failed
        # No restart any more: give the socket up, so that once every child has closed its
        # copy a connection is refused at once instead of waiting in a backlog nobody
        # accepts from (the delivery worker posting to the embedded sandbox, for one).
        self.sock.close()
        children = list(self.children.values())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + STOP_MARGIN
        for child in children:
            try:
                code = child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "serve process %d (pid %d) did not stop in time; killing it",
                    child.index,
                    child.popen.pid,
                )
                child.popen.kill()
                child.popen.wait()
                clean = False
                continue
            if code != 0:
                log.error(
                    "serve process %d (pid %d) stopped with status %d",
                    child.index,
                    child.popen.pid,
                    code,
                )
                clean = False
        return 0 if clean else 1

    def _close(self) -> None:
        for fd in (self._alive_r, self._alive_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def run_group(
    *,
    host: str,
    port: int,
    count: int,
    grace: float,
    worker: bool,
    sandbox: bool,
    self_url: str,
) -> int:
    """Bind host:port, run ``count`` server processes on it until stopped; the exit status."""
    group = ProcessGroup(
        listen(host, port),
        count=count,
        grace=grace,
        worker=worker,
        sandbox=sandbox,
        self_url=self_url,
    )
    return group.run()


# -- a child ------------------------------------------------------------------------------------
def _watch_parent(fd: int, grace: float) -> None:
    """Stop this process (as on SIGTERM) once the parent has gone: its pipe reads EOF. If it
    has not stopped ``grace`` + 10 s later, end it: no parent is left to do so."""

    def wait() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace + STOP_MARGIN)
        os._exit(1)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def child_main(
    argv: Sequence[str] | None = None,
    make_app: Callable[[Settings, Options], Any] | None = None,
) -> None:
    """One process of the group: the app on the inherited socket (see module docstring).

    ``make_app``: the app to serve (default :func:`backchannel.web.app.create_app`); the
    benchmarks add their reference endpoints with it."""
    parser = argparse.ArgumentParser(prog="backchannel.process_group")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--of", type=int, required=True)
    parser.add_argument("--self-url", required=True)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--sandbox", action="store_true")
    args = parser.parse_args(None if argv is None else list(argv))

    from backchannel import config, logs, serving
    from backchannel.web.app import Options, create_app

    settings = config.load()
    _watch_parent(args.parent_fd, settings.shutdown_grace)
    handler = logs.configure(settings.log_level, settings.log_format)
    index = args.index

    def tag(record: logging.LogRecord) -> bool:
        record.serve_process = index  # which process of the group logged it
        return True

    handler.addFilter(tag)
    options = Options(
        worker=args.worker,
        sandbox=args.sandbox,
        self_url=args.self_url,
        group=(index, args.of),
    )
    sock = socket.socket(fileno=args.fd)
    serving.run(
        (make_app or create_app)(settings, options),
        host=settings.host,
        port=settings.port,
        grace=settings.shutdown_grace,
        sock=sock,
        **serving.UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    child_main()
