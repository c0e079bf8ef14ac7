"""Retention: landing sessions, IPs and user agents are kept for a window, then removed.

Why: a landing session holds the visitor's IP, user agent and click ids, and a stored
conversion holds the IP and user agent it was sent with. They are needed to stitch and to
deliver (TikTok and Meta match on them), not forever. Past the window (``retention_days``,
default 30; 0 keeps everything):

- landing sessions last seen before the cutoff are deleted with their email hashes and
  mirrored Pixel calls, after being counted into ``session_rollups`` (day, browser family, OS
  and major version, page-load bucket, Pixel state, had a ttclid, had a Google Ads click id) so
  a gap report over a purged period still shows the per-cause breakdown; click ids (TikTok's
  and Google's) and the GA client id go with their sessions, and stay in stored conversions
  (only the IP and user agent are scrubbed from those);
- conversions received before the cutoff lose ``user.ip`` and ``user.user_agent`` (and a dead
  letter's copy of the event as sent loses them too) — except conversions with an outbox row
  still pending or in flight: they still need both to be delivered, and are scrubbed by the
  first purge after they are delivered, expire or die;
- refused-input records (``ingest_rejections``, shown on the dashboard) are deleted, and audit
  rows keep their action but lose the client IP of a login (``ip (purged)``).

Everything goes in chunks of :data:`CHUNK` rows, each chunk one transaction, yielding to the
event loop in between: on SQLite the store runs inline on ``serve``'s loop, so one big
transaction would stall ingest for as long as it took. ``serve`` runs :func:`run_periodically`
(hourly); ``backchannel purge --older-than 30d [--dry-run]`` runs :func:`purge` once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from backchannel.store.base import Store

log = logging.getLogger("backchannel.retention")

T = TypeVar("T")

#: rows per transaction (sessions, or conversions scrubbed)
CHUNK = 5000
HOUR = 3600.0
DAY = 86400.0
#: seconds after `serve` starts before its first purge (then every hour)
FIRST_DELAY = 60.0

#: runs a store method: directly (the CLI) or through the async runner (``serve``)
Call = Callable[..., Awaitable[Any]]

_WINDOW = re.compile(r"^\s*(\d{1,6})\s*([dh])\s*$", re.IGNORECASE)


def parse_window(text: str) -> float:
    """``30d`` or ``12h`` -> seconds; raises ValueError with the accepted forms."""
    match = _WINDOW.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a window such as 30d or 12h (a positive number)")
    return int(match.group(1)) * (DAY if match.group(2).lower() == "d" else HOUR)


@dataclass(slots=True)
class PurgeReport:
    """What one purge did (or, for a dry run, would do)."""

    cutoff: float
    dry_run: bool = False
    sessions: int = 0
    session_emails: int = 0
    browser_events: int = 0
    conversions_scrubbed: int = 0
    #: conversions past the cutoff still waiting for delivery: their IP and UA are kept
    conversions_held: int = 0
    #: refused-input records deleted, and audit rows whose client IP was removed
    rejections: int = 0
    audit_ips: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _direct(fn: Callable[..., T], *args: object) -> T:
    return fn(*args)


async def purge(
    store: Store,
    cutoff: float,
    now: float,
    *,
    call: Call = _direct,
    chunk: int = CHUNK,
    dry_run: bool = False,
) -> PurgeReport:
    """Purge sessions and scrub conversions older than ``cutoff`` (see the module docstring).

    ``call(fn, *args)`` runs one store method; pass ``AsyncStore.run`` on the event loop.
    """
    report = PurgeReport(cutoff, dry_run)
    if dry_run:
        backlog = await call(store.retention_backlog, cutoff)
        report.sessions = backlog.sessions
        report.conversions_scrubbed = backlog.conversions
        report.conversions_held = backlog.held
        report.rejections, report.audit_ips = await call(
            functools.partial(store.purge_diagnostics, cutoff, dry_run=True)
        )
        return report
    while True:
        counts = await call(store.purge_sessions, cutoff, chunk)
        report.sessions += counts.sessions
        report.session_emails += counts.session_emails
        report.browser_events += counts.browser_events
        await asyncio.sleep(0)  # let ingest and collect in between chunks
        if counts.sessions < chunk:
            break
    while True:
        scrubbed = await call(store.scrub_conversions, cutoff, chunk, now)
        report.conversions_scrubbed += scrubbed
        await asyncio.sleep(0)
        if scrubbed < chunk:
            break
    report.conversions_held = (await call(store.retention_backlog, cutoff)).held
    report.rejections, report.audit_ips = await call(store.purge_diagnostics, cutoff)
    return report


def purge_now(store: Store, cutoff: float, now: float, *, dry_run: bool = False) -> PurgeReport:
    """:func:`purge` for synchronous callers (the CLI)."""
    return asyncio.run(purge(store, cutoff, now, dry_run=dry_run))


async def run_periodically(
    store: Store,
    call: Call,
    days: int,
    *,
    every: float = HOUR,
    first_delay: float = FIRST_DELAY,
    clock: Callable[[], float] = time.time,
) -> None:
    """``serve``'s background purge: once after ``first_delay``, then every ``every`` seconds.

    Never raises (a failed purge is logged and tried again at the next run); cancel to stop.
    """
    await asyncio.sleep(min(first_delay, every))
    while True:
        now = clock()
        try:
            report = await purge(store, now - days * DAY, now, call=call)
        except Exception:
            log.exception("retention purge failed; retrying at the next run")
        else:
            if report.sessions or report.conversions_scrubbed or report.rejections:
                log.info("retention purge", extra={"retention": report.as_dict()})
                try:
                    detail = (
                        f"{report.sessions} sessions purged, {report.conversions_scrubbed}"
                        f" conversions scrubbed, {report.conversions_held} held"
                    )
                    await call(store.audit, now, "retention", "purge", detail)
                except Exception:
                    log.exception("could not write the retention purge to the audit log")
        await asyncio.sleep(every)
