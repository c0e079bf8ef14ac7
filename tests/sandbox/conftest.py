"""One sandbox server for the whole suite, reset before every test that uses it.

Why one server: starting uvicorn per test would dominate the suite's time; a reset (events,
counters, faults) and a rewound clock give each test the same clean slate.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import META_PIXEL, START, TIKTOK_PIXEL, TOKEN, FakeClock


@pytest.fixture(scope="session")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def server(clock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(
        token=TOKEN, tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL, clock=clock, seed=1
    )
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="session")
def _client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def http(_client: httpx.Client, clock: FakeClock) -> httpx.Client:
    """A client of the shared sandbox, freshly reset, with the clock back at START."""
    clock.now = float(START)
    response = _client.post("/_sandbox/reset")
    assert response.status_code == 200
    return _client
