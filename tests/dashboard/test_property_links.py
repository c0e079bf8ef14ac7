"""A dashboard on another property stays there, over real HTTP, on both backends: every link,
form and redirect keeps ``?property=``; a member of other properties only is sent to theirs
instead of being refused; ``/admin/api/status`` tells a member their property's counts only.

The store (received now; each conversion goes to TikTok and Meta):

=========  ======  ====================================================================
property   orders  outbox
=========  ======  ====================================================================
default    3       every row pending
eu (id 2)  60      TikTok: 60 delivered; Meta: 55 dead (refused), 5 pending
beta (3)   none    none (created after eu: by id eu comes first, by name beta does)
=========  ======  ====================================================================

60 orders make two Dedup pages (50 a page) and 55 dead letters two dead-letter pages (50).

Members: ``mia`` owner of eu and viewer of default (the switcher shows where she is);
``otto`` viewer of eu and of beta, nothing on default; ``nemo`` no role anywhere; ``vera``
viewer of default only; ``admin`` the host owner (the first password).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from backchannel import members
from backchannel.store import open_store
from backchannel.store.base import Dead, Grant, Store
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from dashboard.helpers import PASSWORD
from dashboard.test_members import csrf, log_in, postgres_url
from serve.helpers import add_key, make_settings
from store.conftest import Database, SqliteDatabase
from store.helpers import LEASE, conversion
from support.server import ServerThread

PASSWORDS = {
    "mia": "mia's long password",
    "otto": "otto's long password",
    "nemo": "nemo's long password",
    "vera": "vera's long password",
    "admin": PASSWORD,
}
EU_ORDERS, EU_DEAD = 60, 55


def seed(store: Store) -> None:
    now = time.time()
    eu = store.create_property("eu", now, destinations=("tiktok", "meta"))
    beta = store.create_property("beta", now, destinations=("tiktok", "meta"))
    assert (eu, beta) == (2, 3)
    store.insert_conversions([conversion(n) for n in (1, 2, 3)], now)
    store.insert_conversions(
        [conversion(100 + n, property_id=eu) for n in range(EU_ORDERS)], now - 60
    )
    ids = {c.name: c.id for c in store.list_connections(eu) if c.id is not None}
    delivered = store.claim(ids["tiktok"], EU_ORDERS, now, LEASE)
    store.mark_delivered([c.outbox_id for c in delivered], now + 1, "ref")
    dead = store.claim(ids["meta"], EU_DEAD, now, LEASE)
    store.mark_dead([Dead(c.outbox_id, b"{}") for c in dead], "refused", "{}", None)
    add = members.add_member
    add(store, "mia", PASSWORDS["mia"], Grant(eu, "owner"), now, "cli")
    members.set_role(store, "mia", "viewer", 1, now, "cli")
    add(store, "otto", PASSWORDS["otto"], Grant(eu, "viewer"), now, "cli")
    members.set_role(store, "otto", "viewer", beta, now, "cli")
    add(store, "nemo", PASSWORDS["nemo"], Grant(eu, "viewer"), now, "cli")
    members.set_role(store, "nemo", None, eu, now, "cli")  # a member with no role at all
    add(store, "vera", PASSWORDS["vera"], Grant(1, "viewer"), now, "cli")


class Site:
    def __init__(self, url: str, admin_key: str, database_url: str) -> None:
        self.url = url
        self.admin_key = admin_key
        self.database_url = database_url

    @contextmanager
    def client(self, name: str) -> Iterator[httpx.Client]:
        """A client logged in as ``name``."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            assert log_in(client, name, PASSWORDS[name]).status_code == 303
            yield client


@pytest.fixture
def site(database: Database, tmp_path: Path) -> Iterator[Site]:
    url = (
        f"sqlite:///{database.path}"
        if isinstance(database, SqliteDatabase)
        else postgres_url(database)
    )
    settings = make_settings(tmp_path, database_url=url)
    admin_key = add_key(settings, "ops", scope="admin")
    store = open_store(url)
    try:
        set_password(store, PASSWORD, time.time())  # the host owner admin
        seed(store)
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server:
        yield Site(server.url, admin_key, url)


# --- every link keeps the property --------------------------------------------------------------
DASHBOARD = ("/admin", "/reports")
LINK = re.compile(r'<a\b[^>]*\bhref="([^"]*)"')
POST_FORM = re.compile(r'<form method="post" action="([^"]*)"')
SWITCHER = re.compile(r'<nav class="properties".*?</nav>', re.S)
GET_FORM = re.compile(r'<form method="get" action="([^"]*)"[^>]*>(.*?)</form>', re.S)


def is_dashboard(url: str) -> bool:
    path = urlsplit(url).path
    return not urlsplit(url).netloc and path.startswith(DASHBOARD)


def property_of(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query).get("property", [])


def current_property(page: str) -> str:
    found = re.search(r'data-testid="current-property">([^<]*)<', page)
    assert found, page[:500]
    return found.group(1)


def test_every_link_form_and_redirect_stays_on_the_property(site: Site) -> None:
    """mia, on eu, crawls every dashboard page reachable from eu's overview (the dead-letter
    links, both Dedup and dead-letter pages, the gap report's downloads and charts, every
    detail page): each same-site link and POST form names ``property=eu``, each GET form
    carries it as a hidden field, and every page followed still shows eu's data."""
    with site.client("mia") as client:
        start = "/admin?property=eu"
        queue, seen = [start], {start}
        checked: dict[str, int] = {"links": 0, "post_forms": 0, "get_forms": 0}
        pages = 0
        while queue:
            url = queue.pop()
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:300])
            if not response.headers["content-type"].startswith("text/html"):
                continue
            pages += 1
            text = response.text
            assert current_property(text) == "eu", url
            # all but the switcher (whose links name the other property, on purpose)
            body = SWITCHER.sub("", text)
            for raw in LINK.findall(body):
                href = html.unescape(raw)
                if not is_dashboard(href):
                    continue
                checked["links"] += 1
                assert property_of(href) == ["eu"], (url, href)
                if href not in seen:
                    seen.add(href)
                    queue.append(href)
            for raw in POST_FORM.findall(body):
                if not is_dashboard(html.unescape(raw)):
                    continue  # /logout: the member's, not the property's
                checked["post_forms"] += 1
                assert property_of(html.unescape(raw)) == ["eu"], (url, raw)
            for action, inside in GET_FORM.findall(body):
                checked["get_forms"] += 1
                assert '<input type="hidden" name="property" value="eu">' in inside, (url, action)
            assert pages < 400, "the crawl does not end"
    # the pages whose links used to drop the property were among those crawled
    crawled = {urlsplit(u).path + "?" + urlsplit(u).query for u in seen}
    assert any("/admin/dead-letters?" in u and "destination=meta" in u for u in crawled)
    assert any(u.startswith("/admin/dedup?") and "page=2" in u for u in crawled)
    assert any(u.startswith("/admin/dead-letters?") and "page=2" in u for u in crawled)
    assert any(u.startswith("/reports/gap.csv?") for u in crawled)
    assert any(u.startswith("/reports/gap.json?") for u in crawled)
    assert any(u.startswith("/reports/gap/charts/") for u in crawled)
    assert min(checked.values()) > 0, checked


def test_the_links_lead_to_the_propertys_own_data(site: Site) -> None:
    """Following the overview's dead-letter link and the Dedup pager shows eu's figures: 55
    dead Meta letters (default has none) and page 2 of 2 of eu's 60 orders."""
    with site.client("mia") as client:
        overview = client.get("/admin?property=eu").text
        (listed,) = re.findall(r'href="(/admin/dead-letters\?[^"]*)">list<', overview)
        dead = client.get(html.unescape(listed)).text
        assert f'data-figure="dead_total">{EU_DEAD}<' in dead
        dedup = client.get("/admin/dedup?property=eu").text
        (older,) = re.findall(r'href="([^"]*)" rel="next"', dedup)
        second = client.get(html.unescape(older)).text
        assert 'data-figure="page">2<' in second
        assert 'data-figure="pages">2<' in second
        assert current_property(second) == "eu"
        # and the default property, for contrast: no dead letters, one page
        assert 'data-figure="dead_total">0<' in client.get("/admin/dead-letters").text


def test_redirects_after_a_change_stay_on_the_property(site: Site) -> None:
    """A replay and a role change made on eu answer 303 to eu's page, not the default's."""
    with site.client("mia") as client:
        token = csrf(client.get("/admin?property=eu").text)
        replay = client.post(
            "/admin/dead-letters/replay?property=eu",
            data={"csrf_token": token, "all": "1", "destination": "meta"},
        )
        assert replay.status_code == 303, replay.text
        assert property_of(replay.headers["location"]) == ["eu"]
        assert parse_qs(urlsplit(replay.headers["location"]).query)["replayed"] == ["55"]
        role = client.post(
            "/admin/members/role?property=eu",
            data={"csrf_token": token, "name": "otto", "role": "editor"},
        )
        assert role.status_code == 303, role.text
        assert role.headers["location"] == "/admin/members?done=role&property=eu"


# --- a member of other properties is sent to theirs ---------------------------------------------
def test_a_bare_admin_goes_to_the_first_property_by_name(site: Site) -> None:
    """otto (eu and beta, nothing on default): /admin answers 303 to beta (first by name,
    though eu has the smaller id), other pages keep their query parameters, and logging in
    lands on beta's overview. JSON twins are not redirected: a script names its property."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        form = client.get("/login?next=/admin")
        login = client.post(
            "/login?next=/admin",
            data={"csrf_token": csrf(form.text), "name": "otto", "password": PASSWORDS["otto"]},
        )
        assert login.headers["location"] == "/admin"
        bare = client.get("/admin")
        assert bare.status_code == 303
        assert bare.headers["location"] == "/admin?property=beta"
        landed = client.get("/admin", follow_redirects=True)
        assert landed.status_code == 200
        assert str(landed.url).endswith("/admin?property=beta")
        assert current_property(landed.text) == "beta"
        dedup = client.get("/admin/dedup?from=2027-01-01&to=2027-01-05")
        assert dedup.status_code == 303
        assert dedup.headers["location"] == (
            "/admin/dedup?from=2027-01-01&to=2027-01-05&property=beta"
        )
        assert client.get("/admin/api/overview").status_code == 403
        assert client.get("/admin?property=eu").status_code == 200  # named: no redirect
        assert client.get("/admin?property=default").status_code == 403


def test_a_member_with_no_role_anywhere_gets_a_clear_403(site: Site) -> None:
    with site.client("nemo") as client:
        page = client.get("/admin")
        assert page.status_code == 403
        assert "member nemo has no role on property default (nor on any other property" in (
            html.unescape(page.text)
        )


def test_a_member_of_the_default_property_is_not_redirected(site: Site) -> None:
    """vera (default only) and mia (default and eu) stay on the default property."""
    for name in ("vera", "mia"):
        with site.client(name) as client:
            page = client.get("/admin")
            assert page.status_code == 200, name
            nav = re.search(r"<nav>(.*?)</nav>", page.text, re.S)
            assert nav, name
            assert "property=" not in nav.group(1), name


# --- /admin/api/status -------------------------------------------------------------------------
DEFAULT_STATUS: dict[str, Any] = {
    "scope": "property",
    "property": "default",
    "conversions": 3,
    "outbox": {"tiktok": {"pending": 3}, "meta": {"pending": 3}},
    "connections": {"tiktok": {"pending": 3}, "meta": {"pending": 3}},
}
EU_STATUS: dict[str, Any] = {
    "scope": "property",
    "property": "eu",
    "conversions": 60,
    "outbox": {"tiktok": {"delivered": 60}, "meta": {"dead": 55, "pending": 5}},
    "connections": {"tiktok": {"delivered": 60}, "meta": {"dead": 55, "pending": 5}},
}
INSTALL_STATUS: dict[str, Any] = {
    "scope": "install",
    "conversions": 63,
    "outbox": {"tiktok": {"pending": 3, "delivered": 60}, "meta": {"pending": 8, "dead": 55}},
}


def test_status_counts_only_the_members_property(site: Site) -> None:
    """vera (default only) reads default's 3 orders, never eu's 60 or the install's 63; otto
    (eu, beta) reads eu's and beta's (empty), and the default's is refused."""
    with site.client("vera") as vera:
        assert vera.get("/admin/api/status").json() == DEFAULT_STATUS
        assert vera.get("/admin/api/status?property=eu").status_code == 403
    with site.client("otto") as otto:
        assert otto.get("/admin/api/status?property=eu").json() == EU_STATUS
        assert otto.get("/admin/api/status?property=beta").json() == {
            "scope": "property",
            "property": "beta",
            "conversions": 0,
            "outbox": {},
            "connections": {"tiktok": {}, "meta": {}},
        }
        assert otto.get("/admin/api/status").status_code == 403
    with site.client("mia") as mia:  # roles on both, but not host-wide: per property
        assert mia.get("/admin/api/status").json() == DEFAULT_STATUS
        assert mia.get("/admin/api/status?property=eu").json() == EU_STATUS


def test_status_is_install_wide_for_host_wide_callers_only(site: Site) -> None:
    """The host owner and the admin key (host-wide) get the install's figures when they name
    no property, and a property's when they do."""
    key = {"Authorization": f"Bearer {site.admin_key}"}
    with httpx.Client(base_url=site.url, timeout=30) as http:
        assert http.get("/admin/api/status", headers=key).json() == INSTALL_STATUS
        assert http.get("/admin/api/status?property=eu", headers=key).json() == EU_STATUS
    with site.client("admin") as admin:
        assert admin.get("/admin/api/status").json() == INSTALL_STATUS
        assert admin.get("/admin/api/status?property=default").json() == DEFAULT_STATUS
