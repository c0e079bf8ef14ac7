"""The property switcher in the page shell, over real HTTP: a member with roles on two
properties sees both and each link shows that property's figures; a member of one property
never sees the other's name, and asking for it is refused.

Then the "All properties" page, for host-wide members only.

The store: property ``default`` (id 1) with 3 production conversions received today (one Meta
row dead), property ``eu`` with 1 (delivered to TikTok, pending for Meta, whose connection is
paused); ``both`` is viewer of each, ``solo`` viewer of ``default`` only, ``admin`` the host
owner (the first password).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from backchannel import members
from backchannel.store import open_store
from backchannel.store.base import Dead, Grant, Store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from dashboard.helpers import PASSWORD, Gateway
from dashboard.test_members import log_in
from serve.helpers import add_key, make_settings
from store.helpers import LEASE, conversion
from support.server import ServerThread

PASSWORDS = {"both": "both's long password", "solo": "solo's long password"}


def seed(store: Store) -> None:
    now = time.time()
    eu = store.create_property("eu", now, destinations=("tiktok", "meta"))
    assert eu is not None
    store.insert_conversions([conversion(n) for n in (1, 2, 3)], now)
    store.insert_conversions([conversion(9, property_id=eu)], now)
    by_label = {c.label or c.destination: c.id for c in store.list_connections(eu)}
    (delivered,) = store.claim(by_label["tiktok"], 10, now, LEASE)
    store.mark_delivered([delivered.outbox_id], now + 1, "ref")
    store.set_suspension(by_label["meta"], '{"reason": "token revoked"}')
    dead = store.claim("meta", 1, now, LEASE)  # one of default's Meta rows
    store.mark_dead([Dead(dead[0].outbox_id, b"{}")], "refused", "{}", None)
    members.add_member(store, "both", PASSWORDS["both"], Grant(1, "viewer"), now, "cli")
    members.set_role(store, "both", "viewer", eu, now, "cli")
    members.add_member(store, "solo", PASSWORDS["solo"], Grant(1, "viewer"), now, "cli")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    settings = make_settings(tmp_path)
    admin_key = add_key(settings, "ops", scope="admin")
    store = open_store(settings.database_url)
    try:
        set_password(store, PASSWORD, time.time())  # the first password: host owner admin
        seed(store)
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(server.url, settings, admin_key, http)


@contextmanager
def logged_in(gw: Gateway, name: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        response = log_in(client, name, PASSWORDS[name])
        assert response.status_code == 303, response.text
        yield client


def switcher(page: str) -> str:
    found = re.search(r'<nav class="properties".*?</nav>', page, re.S)
    return found.group(0) if found else ""


def received(page: str) -> int:
    found = re.search(r'data-figure="received">(\d+)<', page)
    assert found, page
    return int(found.group(1))


def links(page: str) -> dict[str, str]:
    """property name -> href of each switcher entry (HTML-unescaped)."""
    return {
        name: href.replace("&amp;", "&")
        for href, name in re.findall(r'<a href="([^"]+)" data-property="([^"]+)">', page)
    }


def test_a_member_of_both_switches_between_their_figures(gateway: Gateway) -> None:
    """The switcher names the current property and links to the other; following the link
    shows that property's own figures, and the way back shows the first one's."""
    with logged_in(gateway, "both") as client:
        page = client.get("/admin").text
        shell = switcher(page)
        assert 'data-testid="current-property">default<' in shell
        assert links(shell) == {"eu": "/admin?property=eu"}
        assert received(page) == 3
        eu = client.get(links(shell)["eu"]).text
        assert 'data-testid="current-property">eu<' in switcher(eu)
        assert received(eu) == 1
        assert links(switcher(eu)) == {"default": "/admin?property=default"}
        assert received(client.get(links(switcher(eu))["default"]).text) == 3


def test_the_links_keep_the_other_query_parameters(gateway: Gateway) -> None:
    """A range picked on one property is kept when switching; ``property`` is replaced."""
    with logged_in(gateway, "both") as client:
        page = client.get("/admin/identifiers?from=2027-01-01&to=2027-01-05&property=default")
        assert links(switcher(page.text)) == {
            "eu": "/admin/identifiers?from=2027-01-01&to=2027-01-05&property=eu"
        }


def test_menu_links_keep_the_named_property(gateway: Gateway) -> None:
    """On ``?property=eu`` every menu link stays on eu, and so does the range form; without
    the parameter they carry none (the default property, as before)."""
    with logged_in(gateway, "both") as client:
        eu = client.get("/admin?property=eu").text
        nav = re.search(r"<nav>(.*?)</nav>", eu, re.S)
        assert nav
        hrefs = re.findall(r'href="([^"]+)"', nav.group(1))
        assert hrefs
        assert all(h.endswith("?property=eu") for h in hrefs), hrefs
        form = re.search(r'<form method="get" action="/admin" class="range">(.*?)</form>', eu)
        assert form
        assert '<input type="hidden" name="property" value="eu">' in form.group(1)
        plain = re.search(r"<nav>(.*?)</nav>", client.get("/admin").text, re.S)
        assert plain
        assert "property=" not in plain.group(1)


def test_a_member_of_one_property_never_sees_the_other(gateway: Gateway) -> None:
    """No switcher (one property to see), the name ``eu`` nowhere on any page, and asking for
    eu — page or JSON twin — is 403; an unknown property is 404 naming only their own."""
    with logged_in(gateway, "solo") as client:
        for path in ("/admin", "/admin/identifiers", "/reports/gap", "/admin/dead-letters"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert switcher(page.text) == ""
            for trace in (">eu<", "property=eu", '"eu"', "'eu'", " eu "):
                assert trace not in page.text, (path, trace)
        assert client.get("/admin?property=eu").status_code == 403
        assert client.get("/admin/api/overview?property=eu").status_code == 403
        missing = client.get("/admin/api/overview?property=nope")
        assert missing.status_code == 404
        assert missing.json()["errors"] == [
            {"path": "property", "reason": "no property named 'nope' (yours: default)"}
        ]


def test_the_host_owner_sees_every_property(gateway: Gateway) -> None:
    """A host-wide grant covers every property: both are in the switcher."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert log_in(client, "admin", PASSWORD).status_code == 303
        assert links(switcher(client.get("/admin").text)) == {"eu": "/admin?property=eu"}


#: the figures of the seed, counted by hand from the docstring's story
EXPECTED = [
    {
        "id": 1,
        "name": "default",
        "conversions": 3,
        "delivered": 0,
        "pending": 5,  # 3 TikTok + 3 Meta rows, one of them dead
        "dead": 1,
        "connections": 2,
        "paused": 0,
    },
    {
        "id": 2,
        "name": "eu",
        "conversions": 1,
        "delivered": 1,
        "pending": 1,
        "dead": 0,
        "connections": 2,
        "paused": 1,
    },
]


def test_all_properties_for_the_host(gateway: Gateway) -> None:
    """A host-wide member sees every property's figures, each linking to that property's
    overview; the page shows what the JSON twin says; the menu has the entry."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert log_in(client, "admin", PASSWORD).status_code == 303
        assert client.get("/admin/api/properties").json()["properties"] == EXPECTED
        page = client.get("/admin/properties")
        assert page.status_code == 200
        assert '<a href="/admin/properties">All properties</a>' in client.get("/admin").text
        for row in EXPECTED:
            for key, value in row.items():
                if key not in ("id", "name"):
                    assert f'data-figure="{row["name"]}.{key}">{value}<' in page.text, key
        hrefs = re.findall(r'<td><a href="([^"]+)">', page.text)
        assert [h.replace("&amp;", "&").split("&property=")[1] for h in hrefs] == [
            "default",
            "eu",
        ]
        eu = client.get(hrefs[1].replace("&amp;", "&")).text
        assert received(eu) == 1


def test_the_admin_key_sees_it_too(gateway: Gateway) -> None:
    """An admin API key holds its role host-wide: the JSON twin answers it."""
    answer = gateway.http.get("/admin/api/properties", headers=gateway.admin)
    assert answer.status_code == 200
    assert answer.json()["properties"] == EXPECTED


@pytest.mark.parametrize("name", ["both", "solo"])
def test_all_properties_is_refused_to_others(gateway: Gateway, name: str) -> None:
    """Roles on single properties, even on all of them one by one, are not host-wide: no menu
    entry, and 403 on the page and its JSON twin."""
    with logged_in(gateway, name) as client:
        assert "/admin/properties" not in client.get("/admin").text
        assert client.get("/admin/properties").status_code == 403
        refused = client.get("/admin/api/properties")
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["path"] == "role"


def test_a_bad_range_is_a_400_naming_it(gateway: Gateway) -> None:
    answer = gateway.http.get("/admin/api/properties?from=yesterday", headers=gateway.admin)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"path": "from", "reason": "not a date; use YYYY-MM-DD"}]
