"""Run a synchronous :class:`Store` off the event loop, grouping concurrent ingests.

Why group commit: a durable commit costs an fsync (milliseconds), and every acknowledged
event needs one. Requests that arrive while a commit is in progress wait for the next one and
share it, so 500 concurrent single-event requests cost a handful of fsyncs, not 500 — and a
request is still only answered after *its* rows are on disk.

Why, on SQLite, a group's COMMIT runs on a thread of its own (:meth:`AsyncStore.write`,
``SqliteStore.write_deferred``): the statements run on the event loop (see
:class:`AsyncStore`), but the COMMIT, which writes the WAL and waits for its fsync, is one
call with the GIL released. On the loop it held every request of the process for its whole
duration; on a thread the loop keeps reading, validating and answering requests meanwhile,
and those that arrive join the next group, which starts as soon as the COMMIT returns. A
request is still answered only after that COMMIT returned.

Why a group waits :data:`COMMIT_WINDOW` before it is taken (SQLite; PostgreSQL's
``commit_delay`` is the same idea): with the COMMIT off the loop, a new group would start the
moment the last COMMIT returned, holding whoever happened to be queued, often one request.
Each commit costs its statements, its WAL writes and fsync, and two handovers between the
loop and the commit thread, so more requests per commit is less work per request; a short
wait lets the requests the loop is reading meanwhile join. It adds about that much to each
request's time. Measured against no wait in paired runs (README, Benchmarks).

Why a failed group is retried member by member (:func:`settle_group`): one request whose rows
the database refuses (validation missed something, a constraint, a driver that cannot bind a
value) must fail alone. The group's transaction rolled back as a whole, so nothing of it was
stored and each member can be committed on its own; the cost (one commit per member) is paid
only when a group fails, which should be never.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from backchannel.store.base import NewConversion, Store

if TYPE_CHECKING:
    from backchannel.store.sqlite import PendingCommit

T = TypeVar("T")


class Deferred(Protocol):
    """``SqliteStore.write_deferred``: run a write, hand back its result and its open COMMIT."""

    def __call__(self, fn: Callable[..., T], *args: object) -> tuple[T, PendingCommit | None]: ...


def for_store(store: Store) -> AsyncStore:
    """The right facade for a backend: inline for SQLite, a small pool for PostgreSQL."""
    from backchannel.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return AsyncStore(store, inline=True, deferred=store.write_deferred, window=COMMIT_WINDOW)
    return AsyncStore(store, threads=4)


#: most rows one group commit takes; larger groups wait for the next commit
MAX_GROUP = 5000
#: seconds a SQLite group waits for more requests before it is taken (module docstring)
COMMIT_WINDOW = 0.001

R = TypeVar("R")


async def settle_group(
    run: Callable[..., Any],
    write: Callable[[Sequence[Any]], Any],
    members: Sequence[tuple[Sequence[Any], asyncio.Future[R]]],
    split: Callable[[Any, int, int], R],
) -> bool:
    """Commit ``members`` together; when that fails, each alone, so only a bad one fails.

    ``members`` are (items, future) pairs; ``write(all_items)`` is the store call (run through
    ``run``); ``split(result, start, stop)`` is a member's share of the result. Returns True
    when anything was committed.
    """
    flat = [item for items, _ in members for item in items]
    try:
        result = await run(write, flat)
    except Exception as exc:
        if len(members) == 1:
            _fail(members[0][1], exc)
            return False
        committed = False
        for items, future in members:  # the group rolled back: nothing of it is stored
            try:
                alone = await run(write, list(items))
            except Exception as own:
                _fail(future, own)
                continue
            committed = True
            if not future.done():
                future.set_result(split(alone, 0, len(items)))
        return committed
    offset = 0
    for items, future in members:
        if not future.done():
            future.set_result(split(result, offset, offset + len(items)))
        offset += len(items)
    return True


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class AsyncStore:
    """Async facade over a synchronous store.

    ``inline=True`` (SQLite) runs each call on the event loop's own thread, after yielding
    once so concurrent requests can join the next group commit. Why not a thread: sqlite3
    releases the GIL around every row it steps, and a busy event loop then hands it back only
    every switch interval (5 ms), so a 1000-row statement on a helper thread crawled (a GIL
    convoy: delivery ran ~35% faster inline). Local SQLite calls are short; network databases
    (PostgreSQL) use a thread pool, where waiting on the server releases the GIL for real.
    """

    def __init__(
        self,
        store: Store,
        *,
        threads: int = 1,
        inline: bool = False,
        deferred: Deferred | None = None,
        window: float = 0.0,
    ) -> None:
        self.store = store
        self.inline = inline
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="store"
        )
        #: inline SQLite: the store's write_deferred, and the thread its COMMITs run on
        self._deferred = deferred if inline else None
        self._committer = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
            if self._deferred is not None
            else None
        )
        #: seconds each group waits for more requests before it is taken
        self.window = window
        #: resolved when the COMMIT in progress on that thread has returned
        self._committing: asyncio.Future[None] | None = None
        #: told of every group commit: (writer, requests, seconds) — the app's metrics
        self.on_group: Callable[[str, int, float], None] | None = None
        self._pending: deque[tuple[Sequence[NewConversion], asyncio.Future[list[bool]]]] = deque()
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        #: set whenever new rows were committed, so in-process workers wake at once
        self.committed = asyncio.Event()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.inline:
            await asyncio.sleep(0)
            await self._commit_done()  # its transaction holds the connection until then
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def write(self, fn: Callable[..., T], *args: object) -> T:
        """A group commit's write: :meth:`run`, with two waits taken off the event loop on
        SQLite. In a process group, while another process has the turn to write
        (store/turns.py), wait for it on a thread. Then run the statements here, and their
        COMMIT (the fsync) on the commit thread (module docstring); returns once committed."""
        turn = getattr(self.store, "turn", None) if self.inline else None
        if turn is not None and not turn.free():
            await asyncio.to_thread(turn.wait)
        if self._deferred is None or self._committer is None:
            return await self.run(fn, *args)
        await asyncio.sleep(0)
        await self._commit_done()
        result, pending = self._deferred(fn, *args)
        if pending is None:
            return result
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._committing = done
        try:
            # shielded: a cancelled caller must not end the wait while the COMMIT still holds
            # the connection; the commit thread always finishes (and releases) it
            await asyncio.shield(loop.run_in_executor(self._committer, pending.commit))
        finally:
            self._committing = None
            done.set_result(None)
        return result

    async def _commit_done(self) -> None:
        """Wait, without blocking the loop, until no COMMIT is in progress on the thread."""
        while self._committing is not None:
            await asyncio.shield(self._committing)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """A short read or write from a request handler (key lookup, session, audit row).

        SQLite: inline, without :meth:`run`'s yield (nothing to group; an indexed read takes
        ~20 µs). PostgreSQL: on the pool, never on the loop: a lock or a slow server must
        hold up only the requests that need the answer, not ``/healthz`` and everyone else.
        """
        if self.inline:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def ingest(self, items: Sequence[NewConversion]) -> list[bool]:
        """Store ``items`` durably; resolves only after the commit that holds them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._pending.append((items, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_loop())
        return await future

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                if self.window:
                    await asyncio.sleep(self.window)  # more requests join (module docstring)
                group: list[tuple[Sequence[NewConversion], asyncio.Future[list[bool]]]] = []
                rows = 0
                while self._pending and (not group or rows + len(self._pending[0][0]) <= MAX_GROUP):
                    entry = self._pending.popleft()
                    group.append(entry)
                    rows += len(entry[0])
                began = time.perf_counter()
                if await settle_group(
                    self.write,
                    lambda rows: self.store.insert_conversions(rows, time.time()),
                    group,
                    lambda result, start, stop: result[start:stop],
                ):
                    self.committed.set()
                if self.on_group is not None:
                    self.on_group("ingest", len(group), time.perf_counter() - began)
        finally:
            self._flushing = False

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        self.store.close()
