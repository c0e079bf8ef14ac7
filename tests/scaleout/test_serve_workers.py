"""``serve --workers N`` on PostgreSQL: one node of several processes, as on SQLite.

The processes are more ingest processes on one database, as several ``serve --no-worker``
nodes already were; the first of them runs the delivery worker, the others do not; events
taken by any of them reach each platform once; SIGTERM stops them all with status 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import pytest

from reliability.conftest import (
    HOST,
    event,
    free_port,
    group_processes,
    pinned_clients,
    wait_until,
    which_process,
)
from scaleout.test_workers import Cluster, cluster, database  # noqa: F401 - fixtures used below

pytestmark = pytest.mark.slow


def test_a_group_on_postgres_ingests_in_every_process_and_delivers_once(
    cluster: Any,  # noqa: F811 - the fixture imported above
) -> None:
    c: Cluster = cluster(lease_seconds="10", metrics_token="scrape-me")
    c.start(nodes=0, workers=0)
    url = f"http://{HOST}:{free_port()}"
    node = c.spawn(
        "group", "serve", "--port", url.rsplit(":", 1)[1], "--no-sandbox", "--workers", "2"
    )
    c.ready(node, url + "/healthz")
    processes = group_processes(url, 2)
    assert {i: p["delivery_worker"] for i, p in processes.items()} == {0: True, 1: False}

    posted = 0
    took: dict[int, int] = {}
    for index, clients in pinned_clients(url, 2, 2).items():
        for n, client in enumerate(clients):
            with contextlib.closing(client):
                orders = [f"pg-group-{index}-{n}-{i}" for i in range(150)]
                response = client.post(
                    url + "/v1/events",
                    json={"events": [event(o) for o in orders]},
                    headers={"Authorization": f"Bearer {c.key}"},
                )
                assert response.status_code == 202, response.text
                assert which_process(url, client)["index"] == index
                posted += len(orders)
                took[index] = took.get(index, 0) + len(orders)
    assert took == {0: 300, 1: 300}

    wait_until(
        lambda: all(c.stats(d)["unique_event_ids"] == posted for d in ("tiktok", "meta")),
        60,
        f"{posted} events at both destinations",
    )
    for destination in ("tiktok", "meta"):
        stats = c.stats(destination)
        assert (stats["accepted_events"], stats["duplicates"]) == (posted, 0), stats
    text = c.http.get(url + "/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    assert f'backchannel_ingested_total{{origin="api"}} {float(posted)}' in text

    started = time.monotonic()
    os.kill(node.pid, signal.SIGTERM)
    assert node.popen.wait(40) == 0, node.log_tail()
    assert time.monotonic() - started < 20
