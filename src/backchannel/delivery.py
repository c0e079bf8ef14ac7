"""The delivery worker: claim due outbox rows, send them, record what the platform said.

One :class:`DestinationWorker` per destination, each with its own HTTP client and its own
loop, so a destination that is down, slow or rate-limiting never delays another. Rows are
leased, not locked: a worker that dies leaves rows whose lease runs out, and any worker picks
them up again. A platform that took a batch but whose answer never arrived gets it again; both
platforms deduplicate on event_id, which is why every event carries one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import httpx
import orjson

from backchannel.destinations import DESTINATIONS, Destination, Outcome, Target, Verdict
from backchannel.events import Conversion
from backchannel.preview import batches
from backchannel.store.base import Claimed, Dead
from backchannel.store.runner import AsyncStore
from backchannel.wakeup import OutboxListener

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from backchannel.metrics import Metrics

log = logging.getLogger("backchannel.delivery")

POLL_INTERVAL = 0.5  # seconds between looks at the outbox when nothing woke us
LEASE = 120.0  # seconds a claimed row stays ours before another worker may take it
REQUEST_TIMEOUT_SECONDS = 15.0  # at most; never more than half the lease


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap; Retry-After wins when it asks for more.

    ``delay(n)`` for the n-th failed attempt is ``min(cap, base * 2**(n-1))`` scaled by a
    random factor in [0.5, 1] (so a fleet of workers does not retry in lockstep).
    """

    base: float = 1.0  # seconds
    cap: float = 300.0  # seconds
    max_attempts: int = 30

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        exponential: float = min(self.cap, self.base * 2.0 ** max(0, attempts - 1))
        jittered: float = exponential * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            return max(jittered, retry_after)
        return jittered


@dataclass(slots=True)
class DestinationStats:
    requests: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    expired: int = 0
    last_error: str | None = None
    latencies: list[float] = field(default_factory=list)


class ParsedCache:
    """Conversions parsed from their stored JSON, shared by the destinations of a process.

    Draining a backlog, TikTok's and Meta's lanes claim the same conversions moments apart;
    parsing each once instead of once per destination saves a quarter of delivery's CPU.
    Bounded FIFO: entries are only useful for those few moments.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._items: dict[int, Conversion] = {}

    def get(self, conversion_id: int, payload: bytes) -> Conversion:
        found = self._items.get(conversion_id)
        if found is not None:
            return found
        conversion = Conversion.from_dict(orjson.loads(payload))
        if len(self._items) >= self.size:
            del self._items[next(iter(self._items))]
        self._items[conversion_id] = conversion
        return conversion


@dataclass(slots=True)
class _Row:
    claimed: Claimed
    conversion: Conversion


class DestinationWorker:
    def __init__(
        self,
        destination: str,
        store: AsyncStore,
        target: Callable[[], Target],
        *,
        client: httpx.AsyncClient | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = 2,
        batch_size: int | None = None,
        lease: float = LEASE,
        cache: ParsedCache | None = None,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = destination
        #: Prometheus children bound to this destination once (a label lookup per batch saved)
        self._counters: dict[str, Counter] = {}
        self._latency: Histogram | None = None
        if metrics is not None:
            self._counters = {
                kind: getattr(metrics, kind).labels(destination)
                for kind in ("delivered", "retried", "dead", "expired")
            }
            self._latency = metrics.latency.labels(destination)
        self.destination: Destination = DESTINATIONS[destination]
        self.store = store
        self.target = target
        # A request must end well within the lease, or a live worker's rows could be claimed
        # again (and sent twice) while it still waits for the answer.
        timeout = min(REQUEST_TIMEOUT_SECONDS, lease / 2)
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout))
        )
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.lease = lease
        self.cache = cache or ParsedCache()
        self.poll_interval = poll_interval
        self.batch_size = min(batch_size or self.destination.max_batch, self.destination.max_batch)
        self.clock = clock
        self.rng = random.Random(seed)
        self.stats = DestinationStats()
        self.wake = asyncio.Event()
        self._stopping = False
        #: consecutive requests answered "retry": while > 0 the destination is failing, and
        #: only one lane at a time probes it, after the pause below (a circuit breaker)
        self.failures = 0
        self.paused_until = 0.0
        self._probe = asyncio.Lock()

    async def run(self) -> None:
        """Loop until :meth:`stop`: several lanes claim and send concurrently."""
        lanes = [asyncio.create_task(self._lane()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def _lane(self) -> None:
        while not self._stopping:
            pause = self.paused_until - self.clock()
            if pause > 0:
                # The destination is failing: new rows wait for the backoff too, instead of
                # hammering a platform that is down (or rate-limiting) with fresh requests.
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped(), pause)
                continue
            try:
                if self.failures:
                    async with self._probe:
                        worked = (
                            await self.run_once() if self.clock() >= self.paused_until else True
                        )
                else:
                    worked = await self.run_once()
            except Exception:  # a bug or a store outage must not kill delivery for good
                log.exception("delivery cycle failed", extra={"destination": self.name})
                worked = False
            if not worked:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_interval)

    async def _stopped(self) -> None:
        while not self._stopping:
            await self.wake.wait()
            self.wake.clear()

    async def run_once(self) -> bool:
        """Claim one batch and deliver it. Returns False when nothing was due."""
        now = self.clock()
        claimed = await self.store.run(
            self.store.store.claim, self.name, self.batch_size, now, self.lease
        )
        if not claimed:
            return False
        rows = [_Row(c, self.cache.get(c.conversion_id, c.payload)) for c in claimed]
        fresh: list[_Row] = []
        expired: dict[int, list[int]] = {}  # window (s) -> outbox ids
        for row in rows:
            window = self.destination.max_age(row.conversion)
            if now - row.conversion.event_time > window:
                expired.setdefault(window, []).append(row.claimed.outbox_id)
            else:
                fresh.append(row)
        for window, ids in expired.items():
            await self.store.run(
                functools.partial(
                    self.store.store.mark_expired,
                    ids,
                    f"older than {self.name}'s {window // 86400}-day window; not sent",
                    failed_at=now,
                )
            )
            self.stats.expired += len(ids)
            self._count("expired", len(ids))
        by_id = {id(r.conversion): r for r in fresh}
        for group in batches((r.conversion for r in fresh), self.batch_size):
            await self._deliver([by_id[id(c)] for c in group])
        return True

    async def _deliver(self, rows: Sequence[_Row]) -> None:
        target = self.target()
        conversions = [r.conversion for r in rows]
        # Test events: a batch is all-test or all-production (preview.batches groups by
        # test_event_code). A test batch goes with THIS destination's own code when its
        # connection has one; production batches are left alone (no copy, no cost).
        given = conversions[0].test_event_code
        test = given is not None
        if test and target.test_event_code and target.test_event_code != given:
            conversions = [replace(c, test_event_code=target.test_event_code) for c in conversions]
        request = self.destination.prepare(conversions, target)
        outcome = await self._send(request.url, request.headers, request.content)
        ids = [r.claimed.outbox_id for r in rows]
        now = self.clock()
        if outcome.verdict is Verdict.DELIVERED:
            self.failures = 0
            self.paused_until = 0.0
            if test:  # what was sent and answered, for the Test events page
                items = request.body.get("data")
                sent = [orjson.dumps(item) for item in items] if isinstance(items, list) else None
                await self.store.run(
                    functools.partial(
                        self.store.store.mark_delivered,
                        ids,
                        now,
                        outcome.platform_ref,
                        sent=sent,
                        response=outcome.response,
                    )
                )
            else:
                await self.store.run(
                    self.store.store.mark_delivered, ids, now, outcome.platform_ref
                )
            self.stats.delivered += len(ids)
            self._count("delivered", len(ids))
            return
        self.stats.last_error = outcome.reason
        if outcome.verdict is Verdict.RETRY:
            attempts = max(r.claimed.attempts for r in rows)
            if attempts >= self.policy.max_attempts:
                await self._dead(rows, request.body, outcome, f"gave up after {attempts} attempts")
                return
            due = now + self.policy.delay(attempts, outcome.retry_after, self.rng)
            self.failures += 1
            self.paused_until = max(
                self.paused_until,
                now + self.policy.delay(self.failures, outcome.retry_after, self.rng),
            )
            await self.store.run(
                functools.partial(
                    self.store.store.mark_retry,
                    ids,
                    due,
                    outcome.reason,
                    outcome.response,
                    failed_at=now,
                )
            )
            self.stats.retried += len(ids)
            self._count("retried", len(ids))
            log.warning(
                "delivery will be retried",
                extra={"destination": self.name, "events": len(ids), "reason": outcome.reason},
            )
            return
        # Permanent: find the rows at fault, keep the others going.
        if outcome.whole_request or len(rows) == 1:
            await self._dead(rows, request.body, outcome)
            return
        if outcome.bad_index is not None and 0 <= outcome.bad_index < len(rows):
            bad = rows[outcome.bad_index]
            await self._dead([bad], request.body, outcome, index_map=[outcome.bad_index])
            await self._deliver([r for r in rows if r is not bad])
            return
        middle = len(rows) // 2  # the platform did not say which row: bisect
        await self._deliver(rows[:middle])
        await self._deliver(rows[middle:])

    async def _dead(
        self,
        rows: Sequence[_Row],
        body: dict[str, object],
        outcome: Outcome,
        note: str | None = None,
        index_map: list[int] | None = None,
    ) -> None:
        data = body.get("data")
        items = data if isinstance(data, list) else []
        indexes = index_map or list(range(len(rows)))
        dead = [
            Dead(row.claimed.outbox_id, orjson.dumps(items[i]) if i < len(items) else b"{}")
            for row, i in zip(rows, indexes, strict=True)
        ]
        reason = outcome.reason if note is None else f"{outcome.reason} ({note})"
        await self.store.run(
            functools.partial(
                self.store.store.mark_dead,
                dead,
                reason,
                outcome.response,
                outcome.platform_ref,
                failed_at=self.clock(),
            )
        )
        self.stats.dead += len(dead)
        self._count("dead", len(dead))
        log.warning(
            "events dead-lettered",
            extra={"destination": self.name, "events": len(dead), "reason": reason},
        )

    def _count(self, kind: str, n: int) -> None:
        counter = self._counters.get(kind)
        if counter is not None:
            counter.inc(n)

    async def _send(self, url: str, headers: dict[str, str], content: bytes) -> Outcome:
        self.stats.requests += 1
        started = time.perf_counter()
        try:
            response = await self.client.post(url, content=content, headers=headers)
        except httpx.TimeoutException:
            return Outcome(Verdict.RETRY, "timed out waiting for the platform")
        except httpx.TransportError as exc:
            return Outcome(Verdict.RETRY, f"connection failed: {type(exc).__name__}")
        finally:
            latencies = self.stats.latencies
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)
            if self._latency is not None:
                self._latency.observe(elapsed)
            if len(latencies) > 1000:
                del latencies[:500]
        return self.destination.classify(response.status_code, response.headers, response.content)


class Worker:
    """All destination workers of one process."""

    def __init__(
        self, workers: list[DestinationWorker], store: AsyncStore, listen_url: str | None = None
    ) -> None:
        self.workers = workers
        self.store = store
        #: a PostgreSQL URL: listen for enqueue notifications from other processes
        self.listen_url = listen_url
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: OutboxListener | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(w.run()) for w in self.workers]
        self._tasks.append(asyncio.create_task(self._relay_wakeups()))
        channel = getattr(self.store.store, "notify_channel", None)
        if self.listen_url and channel:
            loop = asyncio.get_running_loop()

            def notified(destination: str) -> None:
                loop.call_soon_threadsafe(self.wake, destination)

            self._listener = OutboxListener(self.listen_url, channel, notified)
            self._listener.start()

    def wake(self, destination: str = "*") -> None:
        """Wake the lanes of ``destination`` (``*``: all) to claim at once."""
        for worker in self.workers:
            if destination in ("*", worker.name):
                worker.wake.set()

    def alive(self) -> bool:
        """True while every loop of this worker runs (asked by the readiness probe)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def _relay_wakeups(self) -> None:
        """Wake the destination workers when ingest commits, instead of waiting for a poll."""
        while True:
            await self.store.committed.wait()
            self.store.committed.clear()
            for worker in self.workers:
                worker.wake.set()

    async def stop(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        for worker in self.workers:
            worker.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            await worker.client.aclose()


def build_worker(
    destinations: Sequence[str],
    store: AsyncStore,
    target_for: Callable[[str], Callable[[], Target]],
    *,
    policy: RetryPolicy,
    concurrency: int,
    lease: float,
    listen_url: str | None = None,
    poll_interval: float = POLL_INTERVAL,
    metrics: Metrics | None = None,
) -> Worker:
    """The worker for ``serve`` and for ``backchannel worker``: one lane set per destination."""
    cache = ParsedCache()
    return Worker(
        [
            DestinationWorker(
                name,
                store,
                target_for(name),
                policy=policy,
                concurrency=concurrency,
                lease=lease,
                cache=cache,
                poll_interval=poll_interval,
                metrics=metrics,
            )
            for name in destinations
        ],
        store,
        listen_url=listen_url,
    )
