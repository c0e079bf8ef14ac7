"""The Connections page per property, over real HTTP: one section per connection, and an
"add another connection" form per destination that adds a labelled connection to the
request's property only.

The store: properties ``default`` and ``eu`` (TikTok and Meta in sandbox mode each), an ingest
key of each; ``admin`` is the host owner.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backchannel import credentials
from backchannel.config import Settings
from backchannel.store import open_store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from dashboard.helpers import PASSWORD
from dashboard.test_members import csrf, log_in
from serve.helpers import conversion, make_settings
from support.server import ServerThread

TOKEN = "a-second-tiktok-token-never-shown-9876"
PIXEL = "C4US0000000000000002"


@dataclass
class Install:
    url: str
    settings: Settings
    keys: dict[str, str]

    def connections(self, property_name: str) -> list[tuple[str, str, str, bool]]:
        """(destination, label, pixel, has a token) of a property's connections, by id."""
        store = open_store(self.settings.database_url)
        try:
            prop = store.get_property(property_name)
            assert prop is not None
            return [
                (c.destination, c.name, c.pixel, c.token_encrypted is not None)
                for c in store.list_connections(prop.id)
            ]
        finally:
            store.close()

    def outbox(self, event_id: str) -> list[tuple[str, str]]:
        """(property, connection label) of each outbox row of a conversion."""
        store = open_store(self.settings.database_url)
        try:
            rows = store.read(
                "SELECT p.name, k.label, k.destination FROM outbox o"
                " JOIN conversions c ON c.id = o.conversion_id"
                " JOIN connections k ON k.id = o.connection_id"
                " JOIN properties p ON p.id = c.property_id"
                " WHERE c.event_id = ? ORDER BY k.id",
                (event_id,),
            )
            return [(str(p), str(label or dest)) for p, label, dest in rows]
        finally:
            store.close()


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    settings = make_settings(tmp_path)
    store = open_store(settings.database_url)
    keys = {}
    try:
        now = time.time()
        set_password(store, PASSWORD, now)
        assert store.create_property("eu", now, destinations=("tiktok", "meta")) is not None
        for name in ("default", "eu"):
            prop = store.get_property(name)
            assert prop is not None
            key = credentials.new_api_key("ingest")
            store.add_key(
                f"shop-{name}",
                "ingest",
                credentials.key_display_prefix(key),
                credentials.key_hash(key),
                now,
                prop.id,
            )
            keys[name] = key
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server:
        yield Install(server.url, settings, keys)


@pytest.fixture
def client(install: Install) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=install.url, timeout=30) as http:
        assert log_in(http, "admin", PASSWORD).status_code == 303
        yield http


def add(client: httpx.Client, prop: str, **fields: str) -> httpx.Response:
    page = client.get(f"/admin/connections?property={prop}").text
    form = {"csrf_token": csrf(page), "new": "1", **fields}
    return client.post(f"/admin/connections/tiktok?property={prop}", data=form)


def test_add_a_second_tiktok_connection_to_one_property(
    install: Install, client: httpx.Client
) -> None:
    """Added from eu's page: it gets its own section there, eu's events get a row for both
    TikTok connections (and Meta), default's events do not, and default's page and
    connections are as they were."""
    before_default = install.connections("default")
    page = client.get("/admin/connections?property=eu").text
    form = re.search(r'<form[^>]+data-testid="add-form-tiktok".*?</form>', page, re.S)
    assert form
    assert 'action="/admin/connections/tiktok?property=eu"' in form.group(0)
    added = add(client, "eu", connection="us-pixel", pixel=PIXEL, token=TOKEN)
    assert added.status_code == 303, added.text
    assert added.headers["location"] == (
        "/admin/connections?saved=tiktok&property=eu#tiktok-us-pixel"
    )
    assert install.connections("eu") == [
        ("tiktok", "tiktok", "", False),
        ("meta", "meta", "", False),
        ("tiktok", "us-pixel", PIXEL, True),
    ]
    assert install.connections("default") == before_default
    eu = client.get("/admin/connections?property=eu").text
    assert '<section class=connection id="tiktok-us-pixel"><h2>TikTok — us-pixel</h2>' in eu
    assert f'data-testid="pixel-tiktok-us-pixel">{PIXEL}<' in eu
    assert 'data-testid="token-tiktok-us-pixel">…9876<' in eu
    assert TOKEN not in eu
    default_page = client.get("/admin/connections").text
    assert 'id="tiktok-us-pixel"' not in default_page
    assert PIXEL not in default_page

    for prop, n in (("eu", 1), ("default", 2)):
        sent = httpx.post(
            f"{install.url}/v1/events",
            json=conversion(n),
            headers={"Authorization": f"Bearer {install.keys[prop]}"},
        )
        assert sent.status_code == 202, sent.text
    assert sorted(install.outbox("CompletePayment-1")) == [
        ("eu", "meta"),
        ("eu", "tiktok"),
        ("eu", "us-pixel"),
    ]
    assert sorted(install.outbox("CompletePayment-2")) == [
        ("default", "meta"),
        ("default", "tiktok"),
    ]


def test_routes_and_removal_act_on_that_connection(install: Install, client: httpx.Client) -> None:
    """The section's own forms change that connection in that property only."""
    assert add(client, "eu", connection="us-pixel", pixel=PIXEL, token=TOKEN).status_code == 303
    page = client.get("/admin/connections?property=eu").text
    token = csrf(page)
    routed = client.post(
        "/admin/connections/tiktok/routes?property=eu",
        data={"csrf_token": token, "connection": "us-pixel", "event": "Purchase"},
    )
    assert routed.status_code == 303, routed.text
    eu = client.get("/admin/connections?property=eu").text
    assert 'data-testid="routes-tiktok-us-pixel">Purchase<' in eu
    assert 'data-testid="routes-tiktok">all events<' in eu
    removed = client.post(
        "/admin/connections/tiktok/remove-token?property=eu",
        data={"csrf_token": token, "connection": "us-pixel"},
    )
    assert removed.status_code == 303, removed.text
    assert ("tiktok", "us-pixel", PIXEL, False) in install.connections("eu")


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("Bad label!", "connection: 'Bad label!' must start with a letter"),
        ("meta", "connection: 'meta' is the name of another destination"),
        ("tiktok", "connection: 'tiktok' exists already in this property"),
    ],
)
def test_a_bad_label_is_refused_naming_it(
    install: Install, client: httpx.Client, label: str, reason: str
) -> None:
    """The label is checked as ``token set --connection`` checks it, and an existing label is
    not overwritten from the add form; nothing is stored, the token is not echoed."""
    before = install.connections("eu")
    refused = add(client, "eu", connection=label, pixel=PIXEL, token=TOKEN)
    assert refused.status_code == 400
    assert reason.replace("'", "&#x27;") in refused.text
    assert TOKEN not in refused.text
    assert install.connections("eu") == before
