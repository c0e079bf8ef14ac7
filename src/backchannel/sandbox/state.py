"""What one emulated platform received: accepted events, counters, and duplicate detection.

Why it is shaped this way: reliability tests push a million events through the sandbox and then
ask two questions, "did every event arrive?" and "did any arrive twice?". So:

- Duplicates are counted on the platform's own dedup key, ``(pixel, event name, event_id)``
  (TikTok's rule, reference §6; Meta's is the same), with one set of tuples: O(1) per event.
- Event bodies are kept per *request*, as the zlib-compressed bytes that arrived (level 1:
  ~4 µs per event, about 6x smaller than the JSON and far smaller than Python dicts). They are
  decoded only when someone lists them, which is rare and may be slow.
- An index ``event_id -> positions`` answers ``?event_id=`` without decoding everything.
- Every event is kept with the pixel (account) it was sent to, and counted per pixel
  (``by_pixel`` in the stats, ``?pixel=`` on the list): several properties or connections
  send to one sandbox, and each must be seen to reach only its own pixel.

State lives in memory for the life of the process, by design: the sandbox is a test double.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

#: by_code key of a request that hung until the client gave up
TIMEOUT = "timeout"
#: by_code key of a request answered with a useless 200 (fault injection: malformed)
MALFORMED = "malformed"


def http_code(status: int) -> str:
    """by_code key of an injected HTTP failure (5xx page, outage)."""
    return f"http_{status}"


@dataclass(slots=True)
class _Batch:
    """One accepted request: where its events sit in the log and how to get them back."""

    start: int
    count: int
    blob: bytes
    #: key of the events array in the decoded JSON (TikTok: "data"); None: the JSON *is* it
    field: str | None
    pixel: str
    test_event_code: str | None
    received_at: float
    request_id: str


class EventLog:
    """The accepted events and request counters of one emulated platform."""

    def __init__(self, name_key: str) -> None:
        #: the event-name key of this platform's events ("event" or "event_name")
        self.name_key = name_key
        self.clear()

    def clear(self) -> None:
        self.requests = 0
        self.rejected_requests = 0
        self.accepted_events = 0
        self.duplicates = 0
        self.without_event_id = 0
        self.by_code: Counter[str] = Counter()
        #: accepted events per pixel (TikTok pixel code, Meta pixel id, GA4 measurement id…)
        self.by_pixel: Counter[str] = Counter()
        self._keys: set[tuple[str, str, str]] = set()
        self._by_event_id: dict[str, int | list[int]] = {}
        self._names: dict[str, str] = {}
        self._batches: list[_Batch] = []
        self._starts: list[int] = []
        self._cached: tuple[int, list[Any]] | None = None

    def count(self, code: str) -> None:
        """Count one request and how it ended (``"0"`` accepted, else the refusal's code)."""
        self.requests += 1
        self.by_code[code] += 1
        if code != "0":
            self.rejected_requests += 1

    def store(
        self,
        events: list[dict[str, Any]],
        *,
        raw: bytes,
        field: str | None,
        pixel: str,
        test_event_code: str | None,
        received_at: float,
        request_id: str,
    ) -> None:
        """Keep an accepted request's events and update the dedup counters."""
        start = self.accepted_events
        names = self._names
        keys = self._keys
        index = self._by_event_id
        name_key = self.name_key
        duplicates = 0
        without_id = 0
        for position, item in enumerate(events, start):
            event_id = item.get("event_id")
            if type(event_id) is not str or not event_id:
                without_id += 1
                continue
            name: str = item[name_key]  # validated: a non-empty string
            name = names.setdefault(name, name)  # one str object per distinct event name
            key = (pixel, name, event_id)
            if key in keys:
                duplicates += 1
            else:
                keys.add(key)
            seen = index.get(event_id)
            if seen is None:
                index[event_id] = position
            elif isinstance(seen, int):
                index[event_id] = [seen, position]
            else:
                seen.append(position)
        self.duplicates += duplicates
        self.without_event_id += without_id
        self.accepted_events += len(events)
        self.by_pixel[pixel] += len(events)
        self._starts.append(start)
        self._batches.append(
            _Batch(
                start=start,
                count=len(events),
                blob=zlib.compress(raw, 1),
                field=field,
                pixel=pixel,
                test_event_code=test_event_code,
                received_at=received_at,
                request_id=request_id,
            )
        )

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted_events": self.accepted_events,
            "unique_event_ids": len(self._keys),
            "duplicates": self.duplicates,
            "without_event_id": self.without_event_id,
            "rejected_requests": self.rejected_requests,
            "by_code": dict(self.by_code),
            "by_pixel": dict(self.by_pixel),
        }

    def page(
        self,
        *,
        event_id: str | None = None,
        offset: int = 0,
        limit: int = 100,
        pixel: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(how many match, the events from ``offset``), oldest first, with their metadata;
        ``pixel``: only the events sent to that pixel."""
        positions: list[int] | range
        if event_id is None and pixel is None:
            total = self.accepted_events
            positions = range(min(offset, total), min(offset + limit, total))
            return total, [self._event_at(p) for p in positions]
        if event_id is not None:
            seen = self._by_event_id.get(event_id)
            found = [] if seen is None else [seen] if isinstance(seen, int) else seen
        else:
            found = [
                p
                for b in self._batches
                if b.pixel == pixel
                for p in range(b.start, b.start + b.count)
            ]
        if pixel is not None and event_id is not None:
            found = [p for p in found if self._batch_of(p).pixel == pixel]
        total = len(found)
        return total, [self._event_at(p) for p in found[offset : offset + limit]]

    def _batch_of(self, position: int) -> _Batch:
        return self._batches[bisect_right(self._starts, position) - 1]

    def _event_at(self, position: int) -> dict[str, Any]:
        batch = self._batch_of(position)
        items = self._decode(batch)
        event: dict[str, Any] = dict(items[position - batch.start])
        event["_pixel"] = batch.pixel
        event["_test_event_code"] = batch.test_event_code
        event["_received_at"] = batch.received_at
        event["_request_id"] = batch.request_id
        return event

    def _decode(self, batch: _Batch) -> list[Any]:
        """The events of one batch; the last one decoded is cached, as pages walk in order."""
        if self._cached is not None and self._cached[0] == batch.start:
            return self._cached[1]
        decoded = orjson.loads(zlib.decompress(batch.blob))
        items: list[Any] = decoded[batch.field] if batch.field is not None else decoded
        self._cached = (batch.start, items)
        return items
