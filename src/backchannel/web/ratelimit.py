"""Token-bucket rate limiting, in memory, per process.

Why a token bucket: it allows bursts (a shop flushing a queue after a restart) up to
``burst`` requests while holding the long-run average to ``rate`` per second, and a refusal can
say exactly when the next request will be admitted (``Retry-After``).

Why in memory and per process: the limiter protects *this* process (its event loop, its
database writer) from one key or one IP taking all of it; it is not a billing quota. With N
ingest nodes behind a load balancer the effective limit is N times the configured one, which
is documented with the settings (``ingest_rate`` / ``collect_rate``). No shared store means no
extra round trip on the ingest hot path: a check is one dict lookup and a few float
operations (well under a microsecond).

Memory is bounded: past ``max_keys`` buckets, the buckets that are full again (idle keys,
which hold no information) are dropped, and if that is not enough the oldest half goes.

Usage (the collect endpoint, per client IP)::

    denied = too_many(limiter, client_ip(request), "(request)")
    if denied is not None:
        return denied
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

DEFAULT_MAX_KEYS = 100_000


class RateLimiter:
    """``rate`` tokens per second refill buckets of ``burst`` tokens, one bucket per key."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate")

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        #: key -> [tokens left, time of the last refill]
        self._buckets: dict[Hashable, list[float]] = {}

    def hit(self, key: Hashable, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``key``: 0.0 if allowed, else seconds until it would be."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        return (cost - bucket[0]) / self.rate

    def reset(self, key: Hashable) -> None:
        """Forget ``key`` (e.g. after a successful login, its failures no longer count)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            oldest = sorted(self._buckets.items(), key=lambda item: item[1][1])
            for k, _ in oldest[: len(oldest) // 2 + 1]:
                del self._buckets[k]


def retry_after_header(wait: float) -> str:
    """Whole seconds, rounded up, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(wait)))


def limited_response(wait: float, path: str, what: str) -> JSONResponse:
    """The 429 answer: ``Retry-After`` and the API's usual ``{path, reason}`` error body."""
    seconds = retry_after_header(wait)
    body = {
        "error": "rate_limited",
        "errors": [{"path": path, "reason": f"too many requests {what}; retry in {seconds} s"}],
    }
    return JSONResponse(body, status_code=429, headers={"Retry-After": seconds})


def too_many(
    limiter: RateLimiter, key: Hashable, path: str = "(request)", what: str = ""
) -> Response | None:
    """None when ``key`` may proceed, else the ready-made 429 response."""
    wait = limiter.hit(key)
    if wait == 0.0:
        return None
    return limited_response(wait, path, what or "from this client")


def client_ip(request: Request) -> str:
    """The peer address as uvicorn reports it.

    Behind a reverse proxy, run uvicorn with ``--forwarded-allow-ips`` set to the proxy so
    this is the visitor's address (uvicorn then takes it from ``X-Forwarded-For``); this
    function never reads forwarding headers itself, which any client could forge.
    """
    client = request.client
    return client.host if client is not None else "unknown"
