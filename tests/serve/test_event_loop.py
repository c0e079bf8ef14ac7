"""PostgreSQL store calls never block the event loop (issue 18 item 8).

A locked ``api_keys`` table (another session's ``LOCK TABLE … ACCESS EXCLUSIVE``, as a
migration or a long admin transaction would hold) used to freeze the whole process: the
ingest key lookup ran synchronously on the loop, so even ``/healthz`` waited for the lock.
The lookups now run on the store runner's thread pool, and only the requests that need the
table wait.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from backchannel.web.app import Options

from .conftest import PostgresServer, _start_gateway, psycopg_url
from .helpers import conversion, make_settings

HOLD = 4.0  # seconds the lock is held; /healthz must answer far sooner


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["/v1/events", "/v1/collect", "/login"])
def test_locked_api_keys_do_not_freeze_healthz(
    tmp_path: Path, stack: ExitStack, pg_server: PostgresServer, pg_template: str, path: str
) -> None:
    """With api_keys locked, a request that needs it waits; /healthz answers at once."""
    conninfo = pg_server.create(pg_template)
    stack.callback(pg_server.drop, conninfo)
    settings = make_settings(tmp_path, database_url=psycopg_url(conninfo))
    gateway = _start_gateway(stack, settings, Options(worker=False, sandbox=False))
    assert gateway.http.get("/healthz").status_code == 200
    blocked: dict[str, int] = {}

    def stuck_request() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            if path == "/v1/events":
                headers = {"Authorization": f"Bearer {gateway.key}"}
                answer = client.post(path, json=conversion(1), headers=headers)
            elif path == "/v1/collect":
                body = {"key": "bc_pub_whatever", "session_id": "Sess-AbCdEfGhIjKl"}
                answer = client.post(path, json=body, headers={"Origin": gateway.url})
            else:  # an admin key on the login form: AdminAuth.current looks it up
                answer = client.get(path, headers={"Authorization": "Bearer bc_admin_x"})
            blocked["status"] = answer.status_code

    with psycopg.connect(conninfo) as locker:
        locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=stuck_request)
        thread.start()
        time.sleep(0.5)  # the request is now waiting for the lock
        started = time.monotonic()
        try:
            health = gateway.http.get("/healthz", timeout=HOLD / 2).status_code
        except httpx.TimeoutException:
            health = None  # frozen: the loop is waiting for the lock
        elapsed = time.monotonic() - started
        waiting = "status" not in blocked  # the request really was waiting on the lock
        time.sleep(max(0.0, HOLD - 0.5 - elapsed))
        locker.rollback()  # releases the lock
    thread.join(timeout=30)
    assert health == 200, f"/healthz did not answer in {HOLD / 2} s while api_keys was locked"
    assert elapsed < 1.0, f"/healthz took {elapsed:.1f} s while api_keys was locked"
    assert waiting
    assert blocked["status"] in (202, 401, 200)
