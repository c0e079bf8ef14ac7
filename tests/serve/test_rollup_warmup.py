"""``serve`` warms the daily rollups at start-up (backchannel.rollups.warm).

After an upgrade nothing is kept, and the first page view of a month at a million orders
would compute every day of its range (10-60 s). The primary process computes them in the
background first; this checks that a real ``serve`` app does so for every report the
dashboard reads, on each backend, without being asked.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from backchannel import rollups
from backchannel.diagnostics import dedup, identifiers, overview
from backchannel.report import partial_name
from backchannel.store import open_store
from backchannel.web.app import Options
from store.helpers import conversion

from .conftest import _start_gateway
from .helpers import make_settings

DAY = 86_400


def test_serve_computes_the_partials_of_the_days_with_rows_at_start_up(
    tmp_path: Path, stack: ExitStack, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    now = time.time()
    store = open_store(settings.database_url)
    try:
        yesterday = now - DAY
        store.insert_conversions([conversion(1, event_time=int(yesterday))], yesterday)
        store.insert_conversions([conversion(2, event_time=int(now))], now)
        assert store.read("SELECT COUNT(*) FROM rollups") == [(0,)]
    finally:
        store.close()
    # the dashboard's reports: the overview, identifiers, dedup and every destination's gap
    wanted = {overview.PARTIAL, identifiers.PARTIAL, dedup.PARTIAL, partial_name("tiktok")}
    days = {rollups.day_of(yesterday), rollups.day_of(now)}
    _start_gateway(stack, settings, Options(worker=False, sandbox=False))
    reader = open_store(settings.database_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            kept = {(str(n), int(d)) for n, d in reader.read("SELECT name, day FROM rollups")}
            if {(n, d) for n in wanted for d in days} <= kept:
                # a destination no property connects has no gap page to warm
                assert not {n for n, _ in kept if n == partial_name("reddit")}
                break
            assert time.monotonic() < deadline, f"not warmed within 60 s: {sorted(kept)}"
            time.sleep(0.2)
    finally:
        reader.close()
