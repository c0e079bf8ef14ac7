"""The delivery worker: claim due outbox rows, send them, record what the platform said.

One :class:`DestinationWorker` per connection (a destination account of a property: two TikTok
pixels are two), each with its own HTTP client and its own loop, so a connection that is down,
slow, rate-limiting or suspended never delays another, and a batch never mixes connections. Rows are
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
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import httpx
import orjson

from backchannel import logs
from backchannel.destinations import (
    DESTINATIONS,
    Destination,
    OAuthError,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
)
from backchannel.events import Conversion
from backchannel.preview import batches
from backchannel.routing import Lane
from backchannel.store.base import Claimed, ConnectionKey, Dead
from backchannel.store.runner import AsyncStore
from backchannel.suspension import (
    PROBE_AFTER,
    Suspension,
    credentials_fingerprint,
    stored,
)

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

    from backchannel.metrics import Metrics
    from backchannel.wakeup import OutboxListener

log = logging.getLogger("backchannel.delivery")

POLL_INTERVAL = 0.5  # seconds between looks at the outbox when nothing woke us
LEASE = 120.0  # seconds a claimed row stays ours before another worker may take it
REQUEST_TIMEOUT_SECONDS = 15.0  # at most; never more than half the lease
DEADLINE_SHARE = 0.5  # of the lease: a cycle's sends end by then (the rest is margin for
#                       the marks and for clock skew between workers' wall clocks)
MIN_SEND_BUDGET = 1.0  # seconds (at most a quarter of the cycle): with less left in the
#                       cycle a request is not started
PAUSE_RECHECK = 5.0  # seconds between looks at a suspended destination's credentials
PAUSE_PROBE = PROBE_AFTER  # seconds after which a suspended destination is probed anyway
MARK_SHARE = 0.9  # of the lease: until then a mark that failed (database restarting) is retried
WATCH_EVERY = 5.0  # seconds between looks for newly connected destinations
GRACE = 20.0  # seconds a stopping worker waits for cycles in flight before releasing rows


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
    #: rows whose outcome was not recorded because another worker had taken them over
    lease_lost: int = 0
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


@dataclass(slots=True)
class _Cycle:
    """One claim's rows on their way: the claim's lease token and the cycle's deadline.

    Why a deadline: a lease is a promise that this worker is done with its rows before
    ``lease`` seconds pass. httpx's timeouts are per operation (a server that sends a header
    and then one byte a second never trips them), and bisecting a refused batch sends many
    requests, so without one deadline for the whole cycle a worker could still be sending
    after another worker had claimed the same rows. Sends that would end past the deadline
    are not made: their rows go back untried. The deadline is monotonic, so a wall-clock
    jump neither shortens nor extends it.
    """

    lease: str
    deadline: float
    #: monotonic time until which a failed mark is retried: close to the lease's end, after
    #: which another worker may hold the rows and the guarded mark could not land anyway
    mark_by: float = 0.0


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
        monotonic: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        metrics: Metrics | None = None,
        connection: ConnectionKey | None = None,
        connection_name: str | None = None,
        extra_lanes: asyncio.Semaphore | None = None,
    ) -> None:
        #: the destination's name (its messages say "older than tiktok's window"...)
        self.name = destination
        #: the connection it claims for: an id, or a label of the default property (the
        #: destination's name by default: that property's first connection of it)
        self.connection: ConnectionKey = connection if connection is not None else destination
        #: how logs and the paused gauge name the connection (label, or property/label)
        self.connection_name = connection_name or str(self.connection)
        #: what every log line of this worker names
        self._where = {"destination": destination, "connection": self.connection_name}
        #: Prometheus children bound to this destination once (a label lookup per batch saved)
        self._counters: dict[str, Counter] = {}
        self._latency: Histogram | None = None
        self._paused_gauge: Gauge | None = None
        if metrics is not None:
            self._counters = {
                kind: getattr(metrics, kind).labels(destination)
                for kind in ("delivered", "retried", "dead", "expired", "lease_lost")
            }
            self._latency = metrics.latency.labels(destination)
            self._paused_gauge = metrics.paused.labels(destination, self.connection_name)
        self.destination: Destination = DESTINATIONS[destination]
        self.store = store
        self.target = target
        # A request must end well within the lease, or a live worker's rows could be claimed
        # again (and sent twice) while it still waits for the answer; the cycle deadline
        # (see _Cycle) bounds the whole cycle, this bounds each wait for bytes.
        self.client = client or new_client(lease)
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        #: the process's pool of extra cycles in flight, shared by every connection (see
        #: :func:`build_worker`): this connection's first lane never waits for it, its other
        #: ``concurrency - 1`` lanes take a slot for each cycle. None: every lane is its own.
        self.extra_lanes = extra_lanes
        self.lease = lease
        self.min_send_budget = min(MIN_SEND_BUDGET, lease * DEADLINE_SHARE / 4)
        self.cache = cache or ParsedCache()
        self.poll_interval = poll_interval
        self.batch_size = min(batch_size or self.destination.max_batch, self.destination.max_batch)
        #: wall clock: what is stored (due_at, lease_until) and compared with event times
        self.clock = clock
        #: monotonic clock: durations inside this process (cycle deadlines, pauses)
        self.monotonic = monotonic
        self.rng = random.Random(seed)
        self.stats = DestinationStats()
        self.wake = asyncio.Event()
        self._stopping = False
        #: consecutive requests answered "retry": while > 0 the destination is failing, and
        #: only one lane at a time probes it, after the pause below (a circuit breaker)
        self.failures = 0
        #: monotonic time before which no lane sends (backoff, or the platform's Retry-After)
        self.paused_until = 0.0
        #: monotonic time the pause was last extended: a success ends the pause only if its
        #: request started after that, so a lane whose request was already on its way when
        #: another lane got a 429 does not clear the platform's Retry-After
        self._paused_at = 0.0
        self._probe = asyncio.Lock()
        #: rows claimed and not yet marked, with their lease token: released at shutdown
        self.held: dict[int, str] = {}
        #: the OAuth access token in use: (credentials fingerprint, token, monotonic expiry)
        self._access: tuple[str, str, float] | None = None
        #: the platform refused our credentials (see :class:`Suspension`); None when sending
        self.suspended: Suspension | None = None
        self._suspension_checked = -1e18

    async def run(self) -> None:
        """Loop until :meth:`stop`: several lanes claim and send concurrently."""
        await self._load_suspension()
        lanes = [
            asyncio.create_task(self._lane(self.extra_lanes if i else None))
            for i in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()

    def stop(self) -> None:
        """Ask the lanes to finish: each ends its current cycle (marks included), then stops."""
        self._stopping = True
        self.wake.set()

    async def release_held(self) -> int:
        """Give every row still leased by this worker back at once (shutdown): another worker
        takes them now instead of after the lease. Guarded by each row's token, so a row whose
        mark did commit is left alone."""
        by_lease: dict[str, list[int]] = {}
        for outbox_id, token in self.held.items():
            by_lease.setdefault(token, []).append(outbox_id)
        released = 0
        now = self.clock()
        for token, ids in by_lease.items():
            released += await self.store.run(
                functools.partial(self.store.store.release, ids, now, lease=token)
            )
        self.held.clear()
        return released

    async def _lane(self, pool: asyncio.Semaphore | None = None) -> None:
        """Claim and send until stopped. With ``pool`` (an extra lane), each cycle first takes
        a slot of the process's pool and holds it while its rows are in flight; an extra lane
        leaves a failing connection to its first lane's probes rather than hold a slot."""
        while not self._stopping:
            if self.suspended is not None and not await self._resume_if_fixed():
                await self._sleep(PAUSE_RECHECK)
                continue
            pause = self.paused_until - self.monotonic()
            if pause > 0:
                # The destination is failing: new rows wait for the backoff too, instead of
                # hammering a platform that is down (or rate-limiting) with fresh requests.
                await self._sleep(pause)
                continue
            try:
                if pool is not None:
                    worked = await self._pooled_once(pool)
                elif self.failures:
                    async with self._probe:
                        worked = (
                            await self.run_once()
                            if self.monotonic() >= self.paused_until and self.suspended is None
                            else True
                        )
                else:
                    worked = await self.run_once()
            except Exception:  # a bug or a store outage must not kill delivery for good
                log.exception("delivery cycle failed", extra=self._where)
                worked = False
            if not worked and not self._stopping:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_interval)

    async def _pooled_once(self, pool: asyncio.Semaphore) -> bool:
        """One cycle of an extra lane, inside a slot of ``pool``; False (nothing done) while
        the connection fails, is paused or suspended, also when that began during the wait."""
        if self.failures:
            return False
        async with pool:
            if (
                self.failures
                or self._stopping
                or self.suspended is not None
                or self.paused_until > self.monotonic()
            ):
                return False
            return await self.run_once()

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the worker is stopped."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped(), seconds)

    async def _stopped(self) -> None:
        while not self._stopping:
            await self.wake.wait()
            self.wake.clear()

    # -- suspension: the platform refused our credentials --------------------------------------
    async def _load_suspension(self) -> None:
        """Pick up a suspension another process (or a previous run) recorded."""
        raw = await self.store.run(stored, self.store.store, self.connection)
        self.suspended = Suspension.parse(raw)
        self._gauge_paused()

    async def _resume_if_fixed(self) -> bool:
        """True when the credentials changed since they were refused (resume), or when it is
        time to probe again; the check reads the target, which re-reads the store every 5 s."""
        suspended = self.suspended
        if suspended is None:
            return True
        try:
            fingerprint = credentials_fingerprint(self.target())
        except Exception:  # no target at all: stay suspended
            return False
        wall = self.clock()
        if fingerprint != suspended.fingerprint or wall - suspended.since >= PAUSE_PROBE:
            why = "credentials replaced" if fingerprint != suspended.fingerprint else "probe"
            log.warning(
                "destination resumed",
                extra={**self._where, "connection": self.connection_name, "reason": why},
            )
            self.suspended = None
            self.failures = 0
            await self.store.run(self.store.store.set_suspension, self.connection, None)
            self._gauge_paused()
            return True
        # Another process may have resumed it (its lanes saw the new token first).
        now = self.monotonic()
        if now - self._suspension_checked >= PAUSE_RECHECK:
            self._suspension_checked = now
            raw = await self.store.run(stored, self.store.store, self.connection)
            if Suspension.parse(raw) is None:
                self.suspended = None
                self._gauge_paused()
                return True
        return False

    async def _suspend(self, target: Target, outcome: Outcome) -> None:
        suspension = Suspension(
            reason=outcome.reason, since=self.clock(), fingerprint=credentials_fingerprint(target)
        )
        self.suspended = suspension
        await self.store.run(self.store.store.set_suspension, self.connection, suspension.dump())
        self._gauge_paused()
        log.error(
            "destination paused: the platform refused the credentials; events wait until the"
            " token is replaced",
            extra={
                "destination": self.name,
                "connection": self.connection_name,
                "reason": outcome.reason,
            },
        )

    def _gauge_paused(self) -> None:
        if self._paused_gauge is not None:
            self._paused_gauge.set(1 if self.suspended is not None else 0)

    # -- one cycle -------------------------------------------------------------------------------
    async def run_once(self) -> bool:
        """Claim one batch and deliver it. Returns False when nothing was due."""
        now = self.clock()
        claimed = await self.store.run(
            self.store.store.claim, self.connection, self.batch_size, now, self.lease
        )
        if not claimed:
            return False
        started = self.monotonic()
        cycle = _Cycle(
            claimed[0].lease,
            started + self.lease * DEADLINE_SHARE,
            started + self.lease * MARK_SHARE,
        )
        for c in claimed:
            self.held[c.outbox_id] = c.lease
        try:
            await self._cycle(claimed, cycle, now)
        finally:
            # whatever was not marked (a bug, a store error) is given back now, not in 120 s
            left = [c.outbox_id for c in claimed if c.outbox_id in self.held]
            if left and not self._stopping:
                for outbox_id in left:
                    self.held.pop(outbox_id, None)
                with contextlib.suppress(Exception):
                    await self.store.run(
                        functools.partial(
                            self.store.store.release,
                            left,
                            self.clock() + self.poll_interval,
                            lease=cycle.lease,
                        )
                    )
        return True

    async def _cycle(self, claimed: Sequence[Claimed], cycle: _Cycle, now: float) -> None:
        rows: list[_Row] = []
        unreadable: list[tuple[Claimed, str]] = []
        for c in claimed:
            try:
                rows.append(_Row(c, self.cache.get(c.conversion_id, c.payload)))
            except Exception as exc:  # a stored payload this version cannot read
                unreadable.append((c, f"{type(exc).__name__}: {exc}"[:300]))
        for c, why in unreadable:
            # Isolated: the other rows of the claim go on; this one can never be sent.
            await self._mark_dead_local(
                [c], f"stored event could not be read ({why}); not sent", b"{}", cycle
            )
        fresh: list[_Row] = []
        expired: dict[int, list[int]] = {}  # window (s) -> outbox ids
        refused: list[tuple[_Row, str]] = []
        for row in rows:
            window = self.destination.max_age(row.conversion)
            if now - row.conversion.event_time > window:
                expired.setdefault(window, []).append(row.claimed.outbox_id)
                continue
            known = self.destination.refusals(row.conversion)
            if known:
                refused.append((row, "; ".join(f"{n.path}: {n.reason}" for n in known)))
                continue
            fresh.append(row)
        for window, ids in expired.items():
            changed = await self._mark(
                cycle,
                functools.partial(
                    self.store.store.mark_expired,
                    ids,
                    f"older than {self.name}'s {window // 86400}-day window; not sent",
                    failed_at=now,
                    lease=cycle.lease,
                ),
            )
            self._done(ids, changed, "expired")
        if refused:
            await self._refuse_locally(refused, cycle)
        by_id = {id(r.conversion): r for r in fresh}
        key = self.destination.batch_key
        for group in batches((r.conversion for r in fresh), self.batch_size, key):
            await self._deliver([by_id[id(c)] for c in group], cycle)

    async def _refuse_locally(self, refused: Sequence[tuple[_Row, str]], cycle: _Cycle) -> None:
        """Events the platform is known to refuse whatever we do (Meta: a web event without
        event_source_url or user agent) go to the dead letters without a request: sending
        them would only cost requests (bisection) and the platform's patience."""
        target = self.target()
        for row, why in refused:
            try:
                body = self.destination.build_body([row.conversion], target)
                items = self.destination.body_items(body)
                sent = orjson.dumps(items[0]) if isinstance(items, list) and items else b"{}"
            except Exception:
                sent = b"{}"
            await self._mark_dead_local(
                [row.claimed], f"not sent: {self.name} refuses this event ({why})", sent, cycle
            )

    async def _mark_dead_local(
        self, claimed: Sequence[Claimed], reason: str, body: bytes, cycle: _Cycle
    ) -> None:
        ids = [c.outbox_id for c in claimed]
        changed = await self._mark(
            cycle,
            functools.partial(
                self.store.store.mark_dead,
                [Dead(i, body) for i in ids],
                reason,
                None,
                None,
                failed_at=self.clock(),
                lease=cycle.lease,
            ),
        )
        self._done(ids, changed, "dead")
        log.warning(
            "events dead-lettered without sending",
            extra={**self._where, "events": changed, "reason": reason},
        )

    async def _deliver(self, rows: Sequence[_Row], cycle: _Cycle) -> None:
        attempt = await self._attempt(rows, cycle)
        if attempt is None:
            return
        request, outcome, started = attempt
        await self._settle(rows, request, outcome, started, cycle)

    async def _attempt(
        self, rows: Sequence[_Row], cycle: _Cycle
    ) -> tuple[PreparedRequest, Outcome, float] | None:
        """Send ``rows`` as one request; None when the cycle has no time left for it (the
        rows go back untried) or the destination was suspended meanwhile."""
        budget = cycle.deadline - self.monotonic()
        if budget < self.min_send_budget or self.suspended is not None or self._stopping:
            await self._release(rows, cycle)
            return None
        target = self.target()
        conversions = [r.conversion for r in rows]
        # Test events: a batch is all-test or all-production (preview.batches groups by
        # test_event_code). A test batch goes with THIS destination's own code when its
        # connection has one; production batches are left alone (no copy, no cost).
        given = conversions[0].test_event_code
        if given is not None and target.test_event_code and target.test_event_code != given:
            conversions = [replace(c, test_event_code=target.test_event_code) for c in conversions]
        if self.destination.OAUTH is not None:
            authorized = await self._authorize(target, cycle)
            if authorized is None:
                await self._release(rows, cycle)
                return None
            target = authorized
        try:
            request = self.destination.prepare(conversions, target)
        except Exception as exc:  # a row the platform's body cannot express (configuration)
            await self._unbuildable(rows, conversions, target, cycle, exc)
            return None
        started = self.monotonic()
        outcome = await self._send(request.url, request.headers, request.content, budget)
        if outcome.reauthorize and self.destination.OAUTH is not None:
            # The access token was refused (expired early, revoked): one new token, one more
            # try, before the refusal counts as a failure.
            self._access = None
            authorized = await self._authorize(target, cycle)
            budget = cycle.deadline - self.monotonic()
            if authorized is not None and budget >= self.min_send_budget:
                request = self.destination.prepare(conversions, authorized)
                started = self.monotonic()
                outcome = await self._send(request.url, request.headers, request.content, budget)
        if outcome.whole_request and outcome.verdict is Verdict.PERMANENT:
            await self._suspend(target, outcome)
        return request, outcome, started

    async def _authorize(self, target: Target, cycle: _Cycle) -> Target | None:
        """``target`` with a live OAuth access token: the cached one while it lives (until
        a minute before it expires), else a new one from the token endpoint. None when none
        could be had now (the rows wait); a refused refresh token suspends the destination."""
        oauth = self.destination.OAUTH
        assert oauth is not None
        fingerprint = credentials_fingerprint(target)
        now = self.monotonic()
        cached = self._access
        if cached is not None and cached[0] == fingerprint and cached[2] > now:
            return replace(target, access_token=cached[1])
        budget = cycle.deadline - now
        if budget < self.min_send_budget:
            return None
        request = oauth.request(target)
        try:
            async with asyncio.timeout(budget):
                response = await self.client.post(
                    request.url, content=request.content, headers=request.headers
                )
            token, lifetime = oauth.parse(response.status_code, response.content)
        except OAuthError as exc:
            outcome = Outcome(Verdict.PERMANENT, f"OAuth: {exc}", whole_request=True)
            if exc.permanent:
                await self._suspend(target, outcome)
            else:
                self.stats.last_error = outcome.reason
            log.warning(
                "could not get an access token",
                extra={**self._where, "reason": str(exc)},
            )
            return None
        except (TimeoutError, httpx.TransportError) as exc:
            self.stats.last_error = f"OAuth: {type(exc).__name__}"
            return None
        logs.register_secret(token)  # never in a log line of this process
        self._access = (fingerprint, token, now + max(0.0, lifetime - 60.0))
        return replace(target, access_token=token)

    async def _unbuildable(
        self,
        rows: Sequence[_Row],
        conversions: Sequence[Conversion],
        target: Target,
        cycle: _Cycle,
        error: Exception,
    ) -> None:
        """The request could not be built (e.g. a TikTok CRM event while no CRM event set id
        is configured): the rows that cannot be built alone are dead letters with the reason,
        so ``replay`` sends them once the configuration is fixed; the others go on. Before,
        the error left the whole claim leased and retried every lease, forever."""
        good: list[_Row] = []
        for row, conversion in zip(rows, conversions, strict=True):
            try:
                self.destination.prepare([conversion], target)
            except Exception as exc:
                await self._mark_dead_local(
                    [row.claimed],
                    f"not sent: the {self.name} request cannot be built ({exc})",
                    b"{}",
                    cycle,
                )
            else:
                good.append(row)
        if len(good) == len(rows):  # each row builds alone: send them one by one
            log.error(
                "a batch could not be built though each row can",
                extra={**self._where, "reason": str(error)},
            )
            for row in good:
                await self._deliver([row], cycle)
            return
        if good:
            await self._deliver(good, cycle)

    async def _release(self, rows: Sequence[_Row], cycle: _Cycle) -> None:
        ids = [r.claimed.outbox_id for r in rows]
        changed = await self._mark(
            cycle, functools.partial(self.store.store.release, ids, self.clock(), lease=cycle.lease)
        )
        self._done(ids, changed, expected_changed=False)

    async def _settle(
        self,
        rows: Sequence[_Row],
        request: PreparedRequest,
        outcome: Outcome,
        started: float,
        cycle: _Cycle,
    ) -> None:
        """Record what the platform said about ``rows`` (sent as ``request``)."""
        ids = [r.claimed.outbox_id for r in rows]
        now = self.clock()
        positions = list(range(len(rows)))  # each row's place in the request's items
        if outcome.verdict is Verdict.DELIVERED and outcome.failed_rows:
            # Partial failure (Google Ads): the named rows are refused for good, the rest
            # were taken; both are recorded now, nothing is sent again.
            failed = [i for i in sorted(outcome.failed_rows) if 0 <= i < len(rows)]
            for index in failed:
                await self._dead(
                    [rows[index]],
                    request.body,
                    replace(outcome, verdict=Verdict.PERMANENT, reason=outcome.failed_rows[index]),
                    cycle,
                    index_map=[index],
                )
            positions = [i for i in positions if i not in set(failed)]
            if not positions:
                return
            rows = [rows[i] for i in positions]
            ids = [r.claimed.outbox_id for r in rows]
            outcome = replace(outcome, failed_rows={})
        if outcome.verdict is Verdict.DELIVERED:
            self.failures = 0
            if started >= self._paused_at:
                self.paused_until = 0.0
            sent = None
            response = None
            short = outcome.received is not None and outcome.received < len(rows)
            if outcome.partial or short:
                response = outcome.response  # kept: the platform did not take everything
                log.warning(
                    "platform reported a partial success; its answer is kept on the rows",
                    extra={**self._where, "events": len(rows), "reason": outcome.reason},
                )
            if rows[0].conversion.test_event_code is not None:
                # what was sent and answered, for the Test events page
                items = self.destination.body_items(request.body)
                sent = [orjson.dumps(items[i]) for i in positions] if items else None
                response = outcome.response
            changed = await self._mark(
                cycle,
                functools.partial(
                    self.store.store.mark_delivered,
                    ids,
                    now,
                    outcome.platform_ref,
                    sent=sent,
                    response=response,
                    lease=cycle.lease,
                ),
            )
            self._done(ids, changed, "delivered")
            return
        self.stats.last_error = outcome.reason
        if outcome.verdict is Verdict.RETRY:
            await self._retry(rows, request, outcome, cycle, now)
            return
        if outcome.whole_request:
            # Our credentials or account, not the events: the destination is suspended and
            # the rows wait, untried, for a new token (issue: a revoked token used to
            # dead-letter the whole queue in seconds).
            await self._release(rows, cycle)
            return
        # Permanent: find the rows at fault, keep the others going.
        if len(rows) == 1:
            await self._dead(rows, request.body, outcome, cycle)
            return
        if outcome.bad_index is not None and 0 <= outcome.bad_index < len(rows):
            bad = rows[outcome.bad_index]
            await self._dead([bad], request.body, outcome, cycle, index_map=[outcome.bad_index])
            await self._deliver([r for r in rows if r is not bad], cycle)
            return
        # The platform did not say which row: bisect, but stop as soon as both halves get the
        # same row-less refusal: then it is about the request (or every row), and splitting
        # further would cost 2n-1 requests for nothing.
        middle = len(rows) // 2
        left, right = rows[:middle], rows[middle:]
        first = await self._attempt(left, cycle)
        if first is None:
            await self._release(right, cycle)
            return
        second = await self._attempt(right, cycle)
        if second is None:
            await self._settle(left, *first, cycle)
            return
        if _same_refusal(outcome, first[1]) and _same_refusal(outcome, second[1]):
            await self._dead(
                left, first[0].body, first[1], cycle, "the same refusal for every part"
            )
            await self._dead(
                right, second[0].body, second[1], cycle, "the same refusal for every part"
            )
            return
        await self._settle(left, *first, cycle)
        await self._settle(right, *second, cycle)

    async def _retry(
        self,
        rows: Sequence[_Row],
        request: PreparedRequest,
        outcome: Outcome,
        cycle: _Cycle,
        now: float,
    ) -> None:
        # The attempt limit is per row: one row that has failed many times must not take
        # fresh rows of the same batch to the dead letters with it.
        spent = [r for r in rows if r.claimed.attempts >= self.policy.max_attempts]
        again = [r for r in rows if r.claimed.attempts < self.policy.max_attempts]
        if spent:
            positions = {id(r): i for i, r in enumerate(rows)}
            await self._dead(
                spent,
                request.body,
                outcome,
                cycle,
                f"gave up after {self.policy.max_attempts} attempts",
                index_map=[positions[id(r)] for r in spent],
            )
        self.failures += 1
        pause = self.policy.delay(self.failures, outcome.retry_after, self.rng)
        self.paused_until = max(self.paused_until, self.monotonic() + pause)
        self._paused_at = self.monotonic()
        if not again:
            return
        ids = [r.claimed.outbox_id for r in again]
        # rows of one batch share their backoff: the most-tried row sets it
        attempts = max(r.claimed.attempts for r in again)
        due = now + self.policy.delay(attempts, outcome.retry_after, self.rng)
        changed = await self._mark(
            cycle,
            functools.partial(
                self.store.store.mark_retry,
                ids,
                due,
                outcome.reason,
                outcome.response,
                failed_at=now,
                lease=cycle.lease,
            ),
        )
        self._done(ids, changed, "retried")
        log.warning(
            "delivery will be retried",
            extra={**self._where, "events": changed, "reason": outcome.reason},
        )

    async def _dead(
        self,
        rows: Sequence[_Row],
        body: dict[str, object],
        outcome: Outcome,
        cycle: _Cycle,
        note: str | None = None,
        index_map: list[int] | None = None,
    ) -> None:
        data = self.destination.body_items(body)
        items = data if isinstance(data, list) else []
        indexes = index_map or list(range(len(rows)))
        dead = [
            Dead(row.claimed.outbox_id, orjson.dumps(items[i]) if i < len(items) else b"{}")
            for row, i in zip(rows, indexes, strict=True)
        ]
        reason = outcome.reason if note is None else f"{outcome.reason} ({note})"
        changed = await self._mark(
            cycle,
            functools.partial(
                self.store.store.mark_dead,
                dead,
                reason,
                outcome.response,
                outcome.platform_ref,
                failed_at=self.clock(),
                lease=cycle.lease,
            ),
        )
        self._done([d.outbox_id for d in dead], changed, "dead")
        log.warning(
            "events dead-lettered",
            extra={**self._where, "events": changed, "reason": reason},
        )

    async def _mark(self, cycle: _Cycle, mark: Callable[[], int]) -> int:
        """Record an outcome, retrying while the database is unreachable.

        Why: the platform has answered; if the mark is lost (PostgreSQL restarting, a full
        disk) the rows stay leased and the whole batch is sent again once the lease runs out
        (a restart test saw thousands of duplicates). The mark is retried with a short backoff
        until it lands or the lease is nearly over; it is guarded by the lease token, so a
        retry after another worker took the rows changes nothing.
        """
        pause = 0.1
        while True:
            try:
                return await self.store.run(mark)
            except Exception:
                if self.monotonic() + pause >= cycle.mark_by:
                    raise
                log.warning(
                    "could not record a delivery outcome; retrying",
                    extra=self._where,
                    exc_info=True,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _done(
        self,
        ids: Sequence[int],
        changed: int,
        kind: str | None = None,
        *,
        expected_changed: bool = True,
    ) -> None:
        """Forget rows that were marked; count ``changed`` as ``kind`` (delivered, retried,
        dead, expired: the stats field and the metric) and the rows whose lease was lost."""
        if kind is not None:
            setattr(self.stats, kind, getattr(self.stats, kind) + changed)
            self._count(kind, changed)
        for outbox_id in ids:
            self.held.pop(outbox_id, None)
        lost = len(ids) - changed
        if lost > 0 and expected_changed:
            self.stats.lease_lost += lost
            self._count("lease_lost", lost)
            log.warning(
                "lease lost: another worker took these rows over; our outcome was not recorded",
                extra={**self._where, "events": lost},
            )

    def _count(self, kind: str, n: int) -> None:
        counter = self._counters.get(kind)
        if counter is not None and n:
            counter.inc(n)

    async def _send(
        self, url: str, headers: dict[str, str], content: bytes, budget: float
    ) -> Outcome:
        """POST and classify. ``budget``: seconds left in the cycle, a TOTAL bound on the
        request (httpx's own timeouts are per read, not per request)."""
        self.stats.requests += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(budget):
                response = await self.client.post(url, content=content, headers=headers)
        except TimeoutError:
            return Outcome(Verdict.RETRY, "the platform did not answer within the cycle deadline")
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


def new_client(lease: float, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A lane set's own HTTP client (its own connection pool: a slow platform never holds
    another connection's sockets). Its timeouts bound each wait for bytes well within the lease:
    a request must end before another worker may claim its rows again (the cycle deadline,
    see _Cycle, bounds the whole cycle). ``verify``: one SSL context shared by every client of
    a process (building one reads the CA bundle: tens of ms and memory, per connection)."""
    timeout = min(REQUEST_TIMEOUT_SECONDS, lease / 2)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)), verify=verify
    )


def _same_refusal(parent: Outcome, half: Outcome) -> bool:
    """Both permanent, neither naming a row, with the same reason: a request-level refusal."""
    return (
        half.verdict is Verdict.PERMANENT
        and half.bad_index is None
        and not half.whole_request
        and half.reason == parent.reason
    )


class Worker:
    """All connection workers of one process.

    With ``active`` (the lanes of the connections that get rows now) and ``spawn``, a
    connection made while the process runs gets its lanes within ``watch_every`` seconds;
    lanes are not kept for connections that are off (each idle lane claims on every commit).
    """

    def __init__(
        self,
        workers: list[DestinationWorker],
        store: AsyncStore,
        listen_url: str | None = None,
        *,
        spawn: Callable[[Lane], DestinationWorker] | None = None,
        active: Callable[[], Sequence[Lane]] | None = None,
        watch_every: float = WATCH_EVERY,
    ) -> None:
        self.workers = workers
        self.store = store
        #: a PostgreSQL URL: listen for enqueue notifications from other processes
        self.listen_url = listen_url
        self.spawn = spawn
        self.active = active
        self.watch_every = watch_every
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._others: list[asyncio.Task[None]] = []
        self._listener: OutboxListener | None = None

    @property
    def _tasks(self) -> list[asyncio.Task[None]]:
        return [*self._lanes.values(), *self._others]

    def start(self) -> None:
        self._lanes = {str(w.connection): asyncio.create_task(w.run()) for w in self.workers}
        self._others = [asyncio.create_task(self._relay_wakeups())]
        if self.spawn is not None and self.active is not None:
            self._others.append(asyncio.create_task(self._watch()))
        channel = getattr(self.store.store, "notify_channel", None)
        if self.listen_url and channel:
            # PostgreSQL only: imported here so the embedded default never needs psycopg
            from backchannel.wakeup import OutboxListener

            loop = asyncio.get_running_loop()

            def notified(connection: str) -> None:
                loop.call_soon_threadsafe(self.wake, connection)

            self._listener = OutboxListener(self.listen_url, channel, notified)
            self._listener.start()

    async def _watch(self) -> None:
        """Start lanes for connections made since (every ``watch_every`` seconds)."""
        spawn, active = self.spawn, self.active
        if spawn is None or active is None:
            return
        while True:
            await asyncio.sleep(self.watch_every)
            try:
                lanes = await self.store.run(active)
            except Exception:  # the store is away: look again next time
                log.warning("could not read the active connections", exc_info=True)
                continue
            for lane in lanes:
                if str(lane.connection_id) not in self._lanes:
                    worker = spawn(lane)
                    self.workers.append(worker)
                    self._lanes[str(lane.connection_id)] = asyncio.create_task(worker.run())
                    log.info(
                        "delivery started for a newly connected destination",
                        extra={"destination": lane.destination, "connection": lane.name},
                    )

    def wake(self, connection: str = "*") -> None:
        """Wake the lanes of ``connection`` (its id, as NOTIFY sends it; ``*``: all)."""
        for worker in self.workers:
            if connection in ("*", str(worker.connection)):
                worker.wake.set()

    def alive(self) -> bool:
        """True while every loop of this worker runs (asked by the readiness probe)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def _relay_wakeups(self) -> None:
        """Wake the connection workers when ingest commits, instead of waiting for a poll."""
        while True:
            await self.store.committed.wait()
            self.store.committed.clear()
            for worker in self.workers:
                worker.wake.set()

    async def stop(self, grace: float = GRACE) -> None:
        """Stop delivering: let each lane finish its cycle in flight for up to ``grace``
        seconds (sends are bounded by their cycle's deadline), then cancel what is left and
        give every row still leased back at once, so another worker (or the next start)
        takes it now rather than when its lease runs out."""
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        for worker in self.workers:
            worker.stop()
        lanes = list(self._lanes.values())
        for task in self._others:
            task.cancel()
        if lanes:
            _, pending = await asyncio.wait(lanes, timeout=max(0.0, grace))
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            try:
                released = await worker.release_held()
            except Exception:  # the store is gone: the leases will run out instead
                log.exception(
                    "could not release leased rows",
                    extra={"destination": worker.name, "connection": worker.connection_name},
                )
                continue
            if released:
                log.info(
                    "released leased rows at shutdown",
                    extra={
                        "destination": worker.name,
                        "connection": worker.connection_name,
                        "events": released,
                    },
                )
            await worker.client.aclose()


def build_worker(
    lanes: Sequence[Lane],
    store: AsyncStore,
    target_for: Callable[[int], Callable[[], Target]],
    *,
    policy: RetryPolicy,
    concurrency: int,
    lease: float,
    listen_url: str | None = None,
    poll_interval: float = POLL_INTERVAL,
    metrics: Metrics | None = None,
    active: Callable[[], Sequence[Lane]] | None = None,
) -> Worker:
    """The worker for ``serve`` and for ``backchannel worker``: one lane set per connection
    in ``lanes``, and more as ``active`` names newly made ones. ``target_for`` gives, for a
    connection id, where and as whom its rows go (:meth:`Targets.getter`)."""
    cache = ParsedCache()
    tls = httpx.create_ssl_context()
    # Rows in flight cost memory (a cycle holds up to a batch of rows, parsed, and its body):
    # each connection keeps one lane of its own (a slow or failing connection never takes
    # another's), and the other ``concurrency - 1`` lanes of every connection share a pool as
    # large as one property with one connection of each registered destination uses, so an
    # install of one property runs as before and forty connections hold 40 + that, not 160.
    extra = (
        asyncio.Semaphore(max(concurrency - 1, 0) * len(DESTINATIONS)) if concurrency > 1 else None
    )

    def spawn(lane: Lane) -> DestinationWorker:
        return DestinationWorker(
            lane.destination,
            store,
            target_for(lane.connection_id),
            client=new_client(lease, tls),
            policy=policy,
            concurrency=concurrency,
            lease=lease,
            cache=cache,
            poll_interval=poll_interval,
            metrics=metrics,
            connection=lane.connection_id,
            connection_name=lane.name,
            extra_lanes=extra,
        )

    return Worker(
        [spawn(lane) for lane in lanes],
        store,
        listen_url=listen_url,
        spawn=spawn,
        active=active,
    )
