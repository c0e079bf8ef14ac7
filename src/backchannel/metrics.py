"""Prometheus metrics: what was ingested, delivered, retried, dead; queue depth; latency.

Why one :class:`Metrics` object per app (its own ``CollectorRegistry``) instead of
prometheus-client's global default registry: importing this module registers nothing, two
apps in one test process do not share (or double-register) counters, and the registry holds
only our series. ``/metrics`` renders :meth:`Metrics.render`.

Series (all prefixed ``backchannel_``):

=====================================  =========================================================
ingested_total{origin}                 conversions stored (new, not duplicates), by origin
duplicates_total                       conversions refused as already stored (event, event_id)
rejected_total                         conversions refused as invalid
delivered_total{destination}           outbox rows the platform accepted (summed over the
                                       destination's connections: labels bounded by the
                                       registry, whatever the number of properties)
retried_total{destination}             outbox rows scheduled for another attempt
dead_total{destination}                outbox rows dead-lettered (permanent refusal, give-up)
expired_total{destination}             outbox rows too old for the destination's window
queue_depth{destination,status}        outbox rows per state, read from the store at scrape
                                       time (cached 2 s, so a scrape storm costs one query)
delivery_latency_seconds{destination}  time of one request to the platform (a histogram)
destination_paused{destination,        1 while the platform refuses that connection's
  connection}                          credentials (connection: its label, or
                                       ``property/label`` outside the default property; one
                                       series per connection, bounded by configuration)
request_duration_seconds{route}        time inside the app per HTTP request, from the ASGI call
                                       to the last body byte handed to the server (a histogram;
                                       route is the route's path template, so ids never make
                                       new series)
event_loop_lag_seconds                 how late the event loop woke a 10 ms timer (a histogram):
                                       the time a request may wait before the loop looks at it
event_loop_lag_max_seconds             the longest such lag since the process started
event_loop_stalls_total                lags over the stall threshold (100 ms; each is logged
                                       with the stack the loop was stuck in)
gc_pause_seconds{generation}           time of each garbage collection (a histogram)
=====================================  =========================================================

Counters count what *this process* did (Prometheus sums them over processes); the queue
depth is the database's, the same whichever process is scraped.

``serve --workers N`` (several processes behind one port, backchannel.process_group): a
scrape reaches whichever process accepted the connection, so each process's own figures
would be a random one's. There the series are aggregated over the whole group instead, by
prometheus-client's multiprocess mode: the group's parent gives every process one directory
(``PROMETHEUS_MULTIPROC_DIR``), each process keeps its values in a memory-mapped file there,
and ``/metrics`` from any of them merges the files: counters and histograms are summed over
the processes (those that died and were restarted included, so totals never go back),
``event_loop_lag_max_seconds`` is the largest of them, ``destination_paused`` the largest of
the live ones, ``queue_depth`` is read from the store as always. The directory is chosen by
the environment before ``prometheus_client`` is first imported (it picks its value store
then), which the parent's ``subprocess`` start guarantees.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: set (by serve --workers N) in the environment of each process of a group: aggregate there.
#: Read when this module is imported, like prometheus-client reads it when it is imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS_DIR = os.environ.get(MULTIPROCESS_ENV) or None
NAMESPACE = "backchannel"
QUEUE_DEPTH_CACHE = 2.0  # seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
#: request durations and loop lags: fine below 25 ms, where the latency targets are
FAST_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: requests per group commit: one alone, or how many shared it
GROUP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024)


class QueueDepth(Collector):
    """``queue_depth{destination,status}`` from ``counts()`` (e.g. ``store.outbox_counts``)."""

    def __init__(
        self,
        counts: Callable[[], dict[str, dict[str, int]]],
        *,
        cache: float = QUEUE_DEPTH_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts = counts
        self.cache = cache
        self.clock = clock
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._value: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth",
            "Outbox rows per destination and delivery state",
            labels=["destination", "status"],
        )
        for destination, statuses in sorted(self._current().items()):
            for status, count in sorted(statuses.items()):
                family.add_metric([destination, status], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        # Describing without collecting: registering must not query the store.
        yield GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth",
            "Outbox rows per destination and delivery state",
            labels=["destination", "status"],
        )

    def _current(self) -> dict[str, dict[str, int]]:
        with self._lock:
            now = self.clock()
            if now - self._at >= self.cache:
                self._value = self.counts()
                self._at = now
            return self._value


class Metrics:
    """The metrics of one app (or one worker process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingested = Counter(
            "ingested", "Conversions stored", ["origin"], namespace=NAMESPACE, registry=r
        )
        self.duplicates = Counter(
            "duplicates", "Conversions already stored", namespace=NAMESPACE, registry=r
        )
        self.rejected = Counter(
            "rejected", "Conversions refused as invalid", namespace=NAMESPACE, registry=r
        )
        self.delivered = Counter(
            "delivered", "Deliveries accepted", ["destination"], namespace=NAMESPACE, registry=r
        )
        self.retried = Counter(
            "retried",
            "Deliveries scheduled again",
            ["destination"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.dead = Counter(
            "dead", "Deliveries dead-lettered", ["destination"], namespace=NAMESPACE, registry=r
        )
        self.expired = Counter(
            "expired",
            "Deliveries too old to send",
            ["destination"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.lease_lost = Counter(
            "lease_lost",
            "Deliveries whose outcome was not recorded: another worker had taken the rows over",
            ["destination"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.paused = Gauge(
            "destination_paused",
            "1 while the platform refuses a connection's credentials and its delivery waits"
            " for a new token",
            ["destination", "connection"],
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.latency = Histogram(
            "delivery_latency_seconds",
            "Time of one request to the platform",
            ["destination"],
            namespace=NAMESPACE,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Time inside the app per HTTP request, to the last body byte",
            ["route"],
            namespace=NAMESPACE,
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self.loop_lag = Histogram(
            "event_loop_lag_seconds",
            "How late the event loop woke a periodic timer",
            namespace=NAMESPACE,
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self.loop_lag_max = Gauge(
            "event_loop_lag_max_seconds",
            "The longest event-loop lag since the process started",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="max",
        )
        self.loop_stalls = Counter(
            "event_loop_stalls",
            "Event-loop lags over the stall threshold (each is logged with its stack)",
            namespace=NAMESPACE,
            registry=r,
        )
        self.gc_pause = Histogram(
            "gc_pause_seconds",
            "Time of each garbage collection",
            ["generation"],
            namespace=NAMESPACE,
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self.group_requests = Histogram(
            "group_commit_requests",
            "Requests whose rows one group commit stored (its count: the commits)",
            ["writer"],
            namespace=NAMESPACE,
            registry=r,
            buckets=GROUP_BUCKETS,
        )
        self.group_seconds = Histogram(
            "group_commit_seconds",
            "Time of one group commit, its statements to its COMMIT's return (fsync included)",
            ["writer"],
            namespace=NAMESPACE,
            registry=r,
            buckets=FAST_BUCKETS,
        )
        self._queue_depth: QueueDepth | None = None
        #: what render() reads in a group: the merged files and the queue depth
        self._group: CollectorRegistry | None = None
        if MULTIPROCESS_DIR is not None:
            self._group = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self._group, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]

    def watch_queue(self, counts: Callable[[], dict[str, dict[str, int]]]) -> None:
        """Report ``queue_depth`` from ``counts`` (called at most every 2 s, at scrape time)."""
        rendered = self.registry if self._group is None else self._group
        if self._queue_depth is not None:
            rendered.unregister(self._queue_depth)
        self._queue_depth = QueueDepth(counts)
        rendered.register(self._queue_depth)

    def count_ingest(self, origin: str, new: int, duplicates: int, rejected: int) -> None:
        if new:
            self.ingested.labels(origin).inc(new)
        if duplicates:
            self.duplicates.inc(duplicates)
        if rejected:
            self.rejected.inc(rejected)

    def observe_group(self, writer: str, requests: int, seconds: float) -> None:
        """One group commit of ``writer`` (``ingest``, ``collect``): how many requests
        shared it, and how long it took."""
        self.group_requests.labels(writer).observe(requests)
        self.group_seconds.labels(writer).observe(seconds)

    def render(self) -> bytes:
        """This process's series, or in a process group the whole group's (see above)."""
        return generate_latest(self.registry if self._group is None else self._group)
