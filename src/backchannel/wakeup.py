"""Wake delivery workers in other processes the moment rows are enqueued (PostgreSQL).

Why: a worker that only polls adds up to a poll interval of latency to every event, and
polling faster costs the database a query per lane per interval whether there is work or not.
PostgreSQL's ``LISTEN``/``NOTIFY`` delivers the store's notification (sent in the enqueueing
transaction, so only after it commits) to every listening worker. Polling stays as the safety
net: a notification missed during a reconnect delays rows by one poll, never loses them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("backchannel.wakeup")

RECONNECT_DELAY = 2.0  # seconds between attempts after the listening connection drops


class OutboxListener:
    """A thread that LISTENs on ``channel`` and calls ``on_notify(connection id)``."""

    def __init__(self, url: str, channel: str, on_notify: Callable[[str], None]) -> None:
        self.url = url
        self.channel = channel
        self.on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        # imported here, not at the top: delivery imports this module on every install, and
        # the driver comes only with the postgres extra (a listener only runs on PostgreSQL)
        import psycopg
        from psycopg import sql

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.connected.set()
                    # Rows enqueued while we were not listening are found by the next poll.
                    self.on_notify("*")
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self.on_notify(notice.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("outbox listener lost its connection: %s", type(exc).__name__)
                self._stop.wait(RECONNECT_DELAY)
