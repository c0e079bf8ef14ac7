"""Fault injection: make the emulated platforms fail the ways real ones do, on demand.

Why: delivery is only trustworthy if it survives what production throws at it: 5xx from a proxy,
TikTok's 40100 storms, Meta's throttling, slow answers, requests that hang until the client
gives up, whole outages, and one poisoned row in a batch. Each is one field of :class:`Faults`.

Per request, the first fault that fires wins, in this order (latency is added to all of them)::

    outage_seconds   every request is a 503 nginx HTML page until the outage ends
    timeout_rate     hang for hang_seconds, so the client times out; with timeout_after_accept
                     the batch is accepted and stored *first* (the response is lost, not the
                     events, which is how duplicates are born)
    rate_limit_next  the next N requests are rate-limited (a "40100 storm")
    rate_limit_rate  random rate limits: TikTok HTTP 200 code 40100, Meta HTTP 403 code 4
    error_rate       random 5xx with ``status`` (TikTok: nginx HTML; Meta: Graph code 2 JSON)
    malformed_rate   answer HTTP 200 with a body that says nothing: ``malformed`` is
                     truncated_json, html (a proxy's page), empty, or stall (headers, then
                     one byte a second for hang_seconds); the events are not stored
    reject_event_ids applied after validation: a batch holding one of these ids is refused,
                     naming the row (TikTok 40002 ``Batch.i.event_id``; Meta 400 code 100
                     ``data[i]…``), or naming no row with ``reject_without_row``

Randomness comes from one ``random.Random`` that can be seeded, so a failing reliability run
can be replayed exactly.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: the platforms when no list is given (the sandbox app passes every emulator's name)
DESTINATIONS = ("tiktok", "meta")
MALFORMED_KINDS = ("truncated_json", "html", "empty", "stall")
ALL = "all"


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults of one destination. The defaults are "no fault at all"."""

    #: probability (0..1) that a request fails with HTTP ``status``
    error_rate: float = 0.0
    #: the 5xx status of ``error_rate`` failures
    status: int = 503
    #: probability (0..1) that a request is rate-limited
    rate_limit_rate: float = 0.0
    #: the next N requests are rate-limited, whatever the rates say
    rate_limit_next: int = 0
    #: delay added to every request
    latency_ms: float = 0.0
    #: probability (0..1) that a request hangs for ``hang_seconds``
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    #: hang *after* accepting and storing the batch, instead of before looking at it
    timeout_after_accept: bool = False
    #: every request fails with a 503 HTML page for this long, counted from when it is set
    outage_seconds: float = 0.0
    #: a batch containing any of these event_ids is refused as invalid
    reject_event_ids: frozenset[str] = field(default_factory=frozenset)
    #: refuse those batches with a message that names no row (real platforms do that too)
    reject_without_row: bool = False
    #: probability (0..1) that a request gets a 200 whose body says nothing (see ``malformed``)
    malformed_rate: float = 0.0
    #: the kind of useless 200: truncated_json, html, empty or stall
    malformed: str = "truncated_json"

    def __post_init__(self) -> None:
        if self.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed: one of {', '.join(MALFORMED_KINDS)}")
        for name in ("error_rate", "rate_limit_rate", "timeout_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}: must be between 0 and 1")
        if not 500 <= self.status <= 599:
            raise ValueError("status: must be a 5xx HTTP status")
        if self.rate_limit_next < 0:
            raise ValueError("rate_limit_next: must not be negative")
        for name in ("latency_ms", "outage_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        if self.hang_seconds <= 0:
            raise ValueError("hang_seconds: must be positive")

    @property
    def active(self) -> bool:
        """True when any fault is configured: the fast path skips everything otherwise."""
        return self != _NO_FAULTS

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Build from a JSON object, refusing unknown keys and wrong types with a clear reason."""
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{key}: unknown fault (known: {', '.join(sorted(known))})")
            values[key] = _coerce(key, value)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reject_event_ids"] = sorted(self.reject_event_ids)
        return data


_NO_FAULTS = Faults()
_INTS = frozenset({"status", "rate_limit_next"})
_BOOLS = frozenset({"timeout_after_accept", "reject_without_row"})


def _coerce(key: str, value: Any) -> Any:
    if key == "reject_event_ids":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: must be a list of strings")
        return frozenset(value)
    if key == "malformed":
        if not isinstance(value, str):
            raise ValueError(f"{key}: must be a string")
        return value
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: must be a number")
    if key in _INTS:
        if not float(value).is_integer():
            raise ValueError(f"{key}: must be an integer")
        return int(value)
    return float(value)


def faults_from_options(
    *,
    error_rate: float = 0.0,
    status: int = 503,
    rate_limit_rate: float = 0.0,
    rate_limit_next: int = 0,
    latency_ms: float = 0.0,
    timeout_rate: float = 0.0,
    hang_seconds: float = 30.0,
    timeout_after_accept: bool = False,
    outage_seconds: float = 0.0,
    reject_event_ids: Iterable[str] = (),
) -> Faults:
    """The faults the CLI's ``sandbox`` flags describe; they apply to both destinations.

    Raises ValueError (with the flag's name) on an out-of-range value.
    """
    return Faults(
        error_rate=error_rate,
        status=status,
        rate_limit_rate=rate_limit_rate,
        rate_limit_next=rate_limit_next,
        latency_ms=latency_ms,
        timeout_rate=timeout_rate,
        hang_seconds=hang_seconds,
        timeout_after_accept=timeout_after_accept,
        outage_seconds=outage_seconds,
        reject_event_ids=frozenset(reject_event_ids),
    )


class Action(enum.Enum):
    PROCEED = "proceed"
    OUTAGE = "outage"
    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    ERROR = "error"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request. ``delay`` (latency) comes first, whatever the action."""

    action: Action
    delay: float = 0.0
    hang: float = 0.0
    status: int = 503
    after_accept: bool = False
    reject_event_ids: frozenset[str] = frozenset()
    without_row: bool = False
    malformed: str = ""


_PASS = Decision(Action.PROCEED)


@dataclass(slots=True)
class _Slot:
    """Faults of one destination plus the state they consume (storm budget, outage end)."""

    faults: Faults = _NO_FAULTS
    rate_limit_left: int = 0
    outage_until: float = 0.0


class FaultInjector:
    """The live fault configuration of a sandbox, and the dice it rolls per request."""

    def __init__(
        self,
        initial: Mapping[str, Faults],
        clock: Callable[[], float],
        seed: int | None = None,
        destinations: tuple[str, ...] = DESTINATIONS,
    ) -> None:
        self.destinations = destinations
        self._clock = clock
        self._initial = dict(initial)
        self._seed = seed
        self._rng = random.Random(seed)
        self._slots: dict[str, _Slot] = {}
        self.restore()

    def restore(self) -> None:
        """Back to the faults the sandbox started with (e.g. the CLI's flags), RNG reseeded."""
        self._rng.seed(self._seed)
        self._slots = {name: _Slot() for name in self.destinations}
        for name, faults in self._initial.items():
            self.configure(name, faults)

    def clear(self) -> None:
        """No faults anywhere."""
        self._slots = {name: _Slot() for name in self.destinations}

    def configure(self, destination: str, faults: Faults) -> None:
        """Replace the faults of ``destination`` ("tiktok", "meta" or "all")."""
        names = self.destinations if destination == ALL else (destination,)
        faults = faults if faults.active else _NO_FAULTS  # keeps decide()'s fast path exact
        now = self._clock()
        for name in names:
            if name not in self._slots:
                raise ValueError(f"{name}: unknown destination (use tiktok, meta or all)")
            self._slots[name] = _Slot(
                faults=faults,
                rate_limit_left=faults.rate_limit_next,
                outage_until=now + faults.outage_seconds if faults.outage_seconds else 0.0,
            )

    def apply_json(self, payload: Any) -> None:
        """Apply ``{"tiktok"|"meta"|"all": {...faults}, "seed": n}``, all or nothing."""
        if not isinstance(payload, dict):
            raise ValueError('body must be a JSON object like {"tiktok": {"error_rate": 0.1}}')
        seed = payload.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed: must be an integer")
        parsed: list[tuple[str, Faults]] = []
        for key, value in payload.items():
            if key == "seed":
                continue
            if key != ALL and key not in self.destinations:
                raise ValueError(f"{key}: unknown destination (use tiktok, meta or all)")
            try:
                parsed.append((key, Faults.from_json(value)))
            except ValueError as exc:
                raise ValueError(f"{key}.{exc}") from None
        if seed is not None:
            self._seed = seed
            self._rng.seed(seed)
        # "all" first, so {"all": ..., "meta": ...} means "meta differs from the rest".
        for key, faults in sorted(parsed, key=lambda kv: kv[0] != ALL):
            self.configure(key, faults)

    def decide(self, destination: str) -> Decision:
        """Roll the dice for one request to ``destination``."""
        slot = self._slots[destination]
        faults = slot.faults
        if faults is _NO_FAULTS:
            return _PASS
        delay = faults.latency_ms / 1000.0
        rng = self._rng
        if slot.outage_until and self._clock() < slot.outage_until:
            return Decision(Action.OUTAGE, delay=delay, status=503)
        if faults.timeout_rate and rng.random() < faults.timeout_rate:
            return Decision(
                Action.TIMEOUT,
                delay=delay,
                hang=faults.hang_seconds,
                status=504,
                after_accept=faults.timeout_after_accept,
                reject_event_ids=faults.reject_event_ids,
            )
        if slot.rate_limit_left > 0:
            slot.rate_limit_left -= 1
            return Decision(Action.RATE_LIMIT, delay=delay)
        if faults.rate_limit_rate and rng.random() < faults.rate_limit_rate:
            return Decision(Action.RATE_LIMIT, delay=delay)
        if faults.error_rate and rng.random() < faults.error_rate:
            return Decision(Action.ERROR, delay=delay, status=faults.status)
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            return Decision(
                Action.MALFORMED, delay=delay, hang=faults.hang_seconds, malformed=faults.malformed
            )
        return Decision(
            Action.PROCEED,
            delay=delay,
            reject_event_ids=faults.reject_event_ids,
            without_row=faults.reject_without_row,
        )

    def snapshot(self) -> dict[str, Any]:
        """The live configuration, with what is left of storms and outages."""
        now = self._clock()
        view: dict[str, Any] = {"seed": self._seed}
        for name, slot in self._slots.items():
            view[name] = {
                **slot.faults.to_json(),
                "rate_limit_left": slot.rate_limit_left,
                "outage_remaining": max(0.0, slot.outage_until - now) if slot.outage_until else 0.0,
            }
        return view


def first_rejected(events: list[dict[str, Any]], event_ids: frozenset[str]) -> int | None:
    """Index of the first event whose event_id is listed in ``reject_event_ids``."""
    if not event_ids:
        return None
    for index, item in enumerate(events):
        if item.get("event_id") in event_ids:
            return index
    return None
