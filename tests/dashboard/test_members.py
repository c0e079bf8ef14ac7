"""Team members on the dashboard, over real HTTP: login by name, the role every route needs,
pages without the controls a member cannot use, the Members page, and the audit trail.

The gateway serves the overview suite's seeded store (two dead letters, both Meta) with these
members, each with its own password:

========  ======================================  ==========================================
admin     owner of every property (host owner)    the first password (``set_password``)
olga      owner of ``default`` only                manages members of ``default``
ed        editor of ``default``                    replay, connections, routes, test orders
vera      viewer of ``default``                    reads
stranger  owner of property 2 (``other``) only      nothing on ``default``
========  ======================================  ==========================================

The route lists are read from the app itself (``app.routes``), so a route added later is
checked without anyone adding it here.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from backchannel import credentials, members
from backchannel.passwords import hash_password
from backchannel.store import migrations, open_store
from backchannel.store.base import Grant
from backchannel.web.access import RoleCheck
from backchannel.web.app import Options, create_app
from backchannel.web.auth import set_password
from dashboard.test_overview import PASSWORD, seed
from serve.helpers import add_key, make_settings
from store.conftest import Database, PostgresDatabase, SqliteDatabase
from support.server import ServerThread

PASSWORDS = {
    "olga": "olga's long password",
    "ed": "ed's long password!",
    "vera": "vera's long password",
    "stranger": "stranger's long password",
}
GRANTS = {
    "olga": Grant(1, "owner"),
    "ed": Grant(1, "editor"),
    "vera": Grant(1, "viewer"),
    "stranger": Grant(2, "owner"),
}
#: POST routes that are not the dashboard's: their own authentication, no member role
NOT_DASHBOARD_POSTS = {
    "/login",  # logging in: no one yet
    "/logout",  # ends one's own session: any member (CSRF still needed)
    "/v1/events",  # ingest key
    "/v1/collect",  # site key
    "/v1/sources/shopify",  # webhook signature
    "/v1/sources/stripe",  # webhook signature
    "/v1/sources/woocommerce",  # webhook signature
}
#: a form with something for every dashboard action, so that a missing check would act
EVERYTHING = {
    "all": "1",
    "event_id": "CompletePayment-2",
    "destination": "meta",
    "pixel": "C4A0000000000000TEST",
    "token": "a-token-that-must-never-be-stored-1234",
    "name": "ed",
    "password": "a long enough password",
    "role": "owner",
    "scope": "property",
}


@dataclass
class Team:
    url: str
    app: FastAPI
    database_url: str
    admin_key: str

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        store = open_store(self.database_url)
        try:
            return store.read(sql, params)
        finally:
            store.close()

    @contextmanager
    def login(self, name: str, password: str | None = None) -> Iterator[tuple[httpx.Client, str]]:
        """A client logged in as ``name`` and its session's CSRF token."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            response = log_in(client, name, password or PASSWORDS.get(name, PASSWORD))
            assert response.status_code == 303, response.text
            yield client, csrf(client.get("/admin", follow_redirects=True).text)


def postgres_url(database: Database) -> str:
    """The ``postgresql://`` URL of a test database (the store's settings take a URL)."""
    assert isinstance(database, PostgresDatabase)
    info = psycopg.conninfo.conninfo_to_dict(database.conninfo)
    return f"postgresql://{info['user']}@{info['host']}:{info['port']}/{info['dbname']}"


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def log_in(client: httpx.Client, name: str, password: str) -> httpx.Response:
    form = client.get("/login")
    return client.post(
        "/login", data={"csrf_token": csrf(form.text), "name": name, "password": password}
    )


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    settings = make_settings(tmp_path)
    admin_key = add_key(settings, "ops", scope="admin")
    store = open_store(settings.database_url)
    try:
        seed(store)
        assert store.create_property("other", time.time()) == 2  # stranger's
        set_password(store, PASSWORD, time.time())  # the first password: the host owner admin
        for name, grant in GRANTS.items():
            members.add_member(store, name, PASSWORDS[name], grant, time.time(), "cli")
    finally:
        store.close()
    app = create_app(settings, Options(worker=False, sandbox=False))
    with ServerThread(app) as server:
        yield Team(server.url, app, settings.database_url, admin_key)


# --- the routes, read from the app ---------------------------------------------------------------
def role_checks(route: APIRoute) -> list[RoleCheck]:
    found: list[RoleCheck] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if isinstance(dependency.call, RoleCheck):
            found.append(dependency.call)
        pending.extend(dependency.dependencies)
    return found


def dashboard_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, role needed) of every dashboard route: under /admin or /reports."""
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith(("/admin", "/reports")):
            checks = role_checks(route)
            assert len(checks) == 1, f"{route.path}: {len(checks)} role checks"
            for method in sorted(route.methods):
                found.append((method, route.path, checks[0].needed))
    return found


def concrete(path: str, team: Team) -> str:
    """A route path with its parameters filled with values that exist."""
    ((dead_id,),) = team.rows("SELECT MIN(id) FROM outbox WHERE status = 'dead'")
    ((test_id,),) = team.rows("SELECT MIN(id) FROM conversions WHERE test_event_code IS NOT NULL")
    return (
        path.replace("{outbox_id}", str(dead_id))
        .replace("{conversion_id}", str(test_id))
        .replace("{destination}", "tiktok")
        .replace("{name}", "gap")
    )


def changes(team: Team) -> tuple[Any, ...]:
    """Everything a dashboard POST could change, to compare before and after."""
    return (
        team.rows("SELECT id, status, attempts FROM outbox ORDER BY id"),
        team.rows("SELECT * FROM connections"),
        team.rows("SELECT COUNT(*) FROM conversions"),
        team.rows("SELECT id, name, password_hash, disabled_at FROM members ORDER BY id"),
        team.rows("SELECT member_id, property_id, role FROM member_roles ORDER BY id"),
        team.rows("SELECT name, value FROM admin_settings ORDER BY name"),
        team.rows("SELECT actor, action FROM audit_log WHERE action <> 'admin.login' ORDER BY id"),
    )


class TestRouteTable:
    def test_every_dashboard_route_declares_one_role(self, team: Team) -> None:
        """Each /admin and /reports route has exactly one role check: reading needs viewer,
        replay/connections/routes/test orders need editor, members need owner."""
        routes = dashboard_routes(team.app)
        posts = {(path, role) for method, path, role in routes if method == "POST"}
        assert posts == {
            ("/admin/dead-letters/replay", "editor"),
            ("/admin/connections/{destination}", "editor"),
            ("/admin/connections/{destination}/remove-token", "editor"),
            ("/admin/connections/{destination}/routes", "editor"),
            ("/admin/test-events/fire", "editor"),
            ("/admin/members/add", "owner"),
            ("/admin/members/role", "owner"),
            ("/admin/members/remove", "owner"),
            ("/admin/password", "viewer"),  # one's own password: any role
        }
        gets = {path: role for method, path, role in routes if method == "GET"}
        assert {p for p, role in gets.items() if role != "viewer"} == {
            "/admin/members",
            "/admin/api/members",
        }
        assert {  # pages, JSON twins, the CSV download and the SVG charts among them
            "/admin",
            "/admin/api/overview",
            "/admin/dead-letters/{outbox_id}",
            "/reports/gap.csv",
            "/reports/gap/charts/{name}.svg",
        } <= set(gets)

    def test_every_other_post_is_known(self, team: Team) -> None:
        """A POST route outside the dashboard is one of the known, otherwise authenticated
        ones: a new state-changing route cannot slip past the role check unnoticed."""
        posts = set()
        for route in team.app.routes:
            if (
                isinstance(route, Route)
                and "POST" in (route.methods or ())
                and not route.path.startswith(("/admin", "/reports"))
            ):
                posts.add(route.path)
        assert posts == NOT_DASHBOARD_POSTS


class TestLogin:
    def test_by_name_and_password(self, team: Team) -> None:
        """A member logs in with name and password; the header says who and with which role;
        the audit names the member."""
        with team.login("vera") as (client, _):
            header = client.get("/admin").text
            assert 'data-testid="who">vera <span data-testid="role">(viewer)</span>' in header
        assert team.rows(
            "SELECT actor, detail FROM audit_log WHERE action = 'admin.login' ORDER BY id"
        ) == [("member vera", "session started")]

    def test_the_name_is_not_case_sensitive(self, team: Team) -> None:
        """``  Vera `` is vera (names are stored lowercase)."""
        with httpx.Client(base_url=team.url) as client:
            assert log_in(client, "  Vera ", PASSWORDS["vera"]).status_code == 303

    def test_wrong_name_and_wrong_password_answer_alike(self, team: Team) -> None:
        """An unknown name and a wrong password get the same 401 and message; the audit
        tells them apart without echoing what was typed."""
        with httpx.Client(base_url=team.url) as client:
            unknown = log_in(client, "nobody", PASSWORDS["vera"])
            wrong = log_in(client, "vera", PASSWORDS["ed"])
            other = log_in(client, "ed", PASSWORDS["vera"])  # someone else's password
            missing = log_in(client, "", PASSWORDS["vera"])
        for response in (unknown, wrong, other):
            assert response.status_code == 401
            assert "Wrong name or password." in response.text
            assert "bc_session" not in str(response.headers.get_list("set-cookie"))
        assert missing.status_code == 401
        assert "Enter your member name." in missing.text
        assert team.rows(
            "SELECT actor, detail FROM audit_log WHERE action = 'admin.login_failed' ORDER BY id"
        ) == [
            ("ip 127.0.0.1", "unknown member name"),
            ("ip 127.0.0.1", "wrong password for vera"),
            ("ip 127.0.0.1", "wrong password for ed"),
        ]

    def test_a_removed_member_is_logged_out_and_cannot_log_in(self, team: Team) -> None:
        """Removing a member ends its sessions at once and its password stops working."""
        with team.login("vera") as (client, _):
            assert client.get("/admin").status_code == 200
            store = open_store(team.database_url)
            try:
                members.remove_member(store, "vera", time.time(), "cli")
            finally:
                store.close()
            assert client.get("/admin", follow_redirects=False).status_code == 303
            assert log_in(client, "vera", PASSWORDS["vera"]).status_code == 401


class TestRolesOnRoutes:
    def test_a_viewer_post_is_403_on_every_state_changing_route(self, team: Team) -> None:
        """vera (viewer), with a valid CSRF token, POSTs to every dashboard POST route read
        from the app: 403 naming her role and the role needed; nothing changes."""
        before = changes(team)
        posts = [
            (path, role)
            for m, path, role in dashboard_routes(team.app)
            if m == "POST" and role != "viewer"  # one's own password (test_own_password.py)
        ]
        assert len(posts) >= 8
        with team.login("vera") as (client, token):
            for path, role in posts:
                response = client.post(
                    concrete(path, team),
                    data={"csrf_token": token, **EVERYTHING},
                    headers={"Accept": "application/json"},
                )
                assert response.status_code == 403, (path, response.text)
                assert response.json() == {
                    "error": "forbidden",
                    "errors": [
                        {
                            "path": "role",
                            "reason": f"member vera is viewer on property default; "
                            f"{WHAT[role]} needs {role}",
                        }
                    ],
                }, path
            page = client.post(
                "/admin/dead-letters/replay",
                data={"csrf_token": token, **EVERYTHING},
                headers={"Accept": "text/html"},
            )
            assert page.status_code == 403
            assert "member vera is viewer on property default" in page.text
        assert changes(team) == before

    def test_an_editor_cannot_manage_members(self, team: Team) -> None:
        """ed (editor): the members page, its JSON and every owner POST are 403."""
        before = changes(team)
        with team.login("ed") as (client, token):
            page = client.get("/admin/members")
            assert page.status_code == 403
            assert "member ed is editor on property default" in page.text
            assert client.get("/admin/api/members").status_code == 403
            owner_posts = [
                p for m, p, r in dashboard_routes(team.app) if r == "owner" and m == "POST"
            ]
            assert len(owner_posts) == 3
            for path in owner_posts:
                response = client.post(
                    path, data={"csrf_token": token, **EVERYTHING, "name": "vera"}
                )
                assert response.status_code == 403, path
                assert response.json()["errors"][0]["reason"].endswith("needs owner")
        assert changes(team) == before

    def test_a_member_of_another_property_sees_nothing_here(self, team: Team) -> None:
        """stranger (owner of property 2 only): every dashboard GET — pages, JSON twins, the
        CSV and the SVGs — is 403 on the default property, and so are the install's metrics.
        Without ``?property=`` a page sends them to their own property instead (303)."""
        gets = [path for m, path, _ in dashboard_routes(team.app) if m == "GET"]
        pages = {
            route.path
            for route in team.app.routes
            if isinstance(route, APIRoute) and any(c.page for c in role_checks(route))
        }
        assert {"/admin", "/admin/dedup", "/reports/gap"} <= pages
        with team.login("stranger") as (client, _):
            for path in gets:
                url = concrete(path, team)
                response = client.get(url + "?property=default", follow_redirects=False)
                assert response.status_code == 403, path
                assert "stranger has no role on property default" in response.text, path
                bare = client.get(url, follow_redirects=False)
                if path in pages:
                    assert bare.status_code == 303, path
                    assert bare.headers["location"] == url + "?property=other", path
                else:
                    assert bare.status_code == 403, path
                    assert "stranger has no role on property default" in bare.text, path
            assert client.get("/metrics").status_code == 401

    def test_an_unknown_property_is_404(self, team: Team) -> None:
        """``?property=`` names the property; one that does not exist is a 404 naming it."""
        with team.login("vera") as (client, _):
            assert client.get("/admin/api/overview?property=default").status_code == 200
            response = client.get("/admin/api/overview?property=eu-shop")
            assert response.status_code == 404
            assert response.json()["errors"][0]["path"] == "property"
            assert "no property named 'eu-shop'" in response.json()["errors"][0]["reason"]

    def test_admin_keys_have_roles(self, team: Team, tmp_path: Path) -> None:
        """A viewer key reads but cannot replay; an owner key adds a member (audited as the
        key); a key without a role may do nothing."""
        settings = make_settings(tmp_path, database_url=team.database_url)
        viewer = {"Authorization": f"Bearer {add_key(settings, 'reader', 'admin', 'viewer')}"}
        owner = {"Authorization": f"Bearer {team.admin_key}"}
        with httpx.Client(base_url=team.url) as http:
            assert http.get("/admin/api/dead-letters", headers=viewer).status_code == 200
            refused = http.post("/admin/dead-letters/replay", data={"all": "1"}, headers=viewer)
            assert refused.status_code == 403
            assert refused.json()["errors"][0]["reason"] == (
                "admin key reader is viewer on property default; changing connections,"
                " routes, replays and test orders needs editor"
            )
            added = http.post(
                "/admin/members/add",
                data={"name": "kim", "password": "kim's long password", "role": "viewer"},
                headers=owner,
            )
            assert added.status_code == 303, added.text
            team_rows = team.rows("SELECT actor, detail FROM audit_log WHERE action = 'member.add'")
            assert team_rows[-1] == ("admin key ops", "kim: viewer of default")
            assert http.get("/metrics", headers=viewer).status_code == 200  # host-wide key
        # a key stored without a role (as a script writing the store directly could)
        store = open_store(team.database_url)
        try:
            raw = credentials.new_api_key("admin")
            store.add_key("bare", "admin", "bc_bare", credentials.key_hash(raw), time.time())
        finally:
            store.close()
        with httpx.Client(base_url=team.url) as http:
            bare = http.get("/admin/api/overview", headers={"Authorization": f"Bearer {raw}"})
            assert bare.status_code == 403
            assert bare.json()["errors"][0]["reason"].startswith("admin key bare has no role")


WHAT = {
    "editor": "changing connections, routes, replays and test orders",
    "owner": "managing members, keys and settings",
}


class TestPagesShowOnlyWhatOneMayDo:
    def test_a_viewer_reads_every_page_without_controls(self, team: Team) -> None:
        """vera gets every viewer route (pages, JSON, CSV, SVG) with 200, and no page has a
        form that POSTs anywhere but /logout: no replay, no connection edit, no test order,
        no Members menu entry."""
        gets = [path for m, path, role in dashboard_routes(team.app) if m == "GET"]
        with team.login("vera") as (client, _):
            for path in gets:
                response = client.get(concrete(path, team))
                if path in ("/admin/members", "/admin/api/members"):
                    assert response.status_code == 403, path
                    continue
                if path in ("/admin/properties", "/admin/api/properties"):  # host-wide only
                    assert response.status_code == 403, path
                    continue
                assert response.status_code == 200, (path, response.text[:300])
                if response.headers["content-type"].startswith("text/html"):
                    actions = re.findall(r'<form method="post" action="([^"]*)"', response.text)
                    own = ["/admin/password"] if path == "/admin/password" else []
                    assert actions == ["/logout", *own], (path, actions)
                    assert 'href="/admin/members"' not in response.text, path
            dead = client.get("/admin/dead-letters").text
            assert 'data-figure="dead_total">2<' in dead
            assert "Replay" not in dead
            assert "Fire a test order" not in client.get("/admin/test-events").text
            connections = client.get("/admin/connections").text
            assert 'data-testid="mode-tiktok"' in connections  # it still reads them
            assert 'name="token"' not in connections

    def test_an_editor_gets_replay_and_connection_forms_but_no_members(self, team: Team) -> None:
        """ed sees replay buttons (each letter and "Replay all"), the connection forms and
        the test order button; not the Members entry."""
        with team.login("ed") as (client, _):
            dead = client.get("/admin/dead-letters").text
            assert dead.count('action="/admin/dead-letters/replay"') == 3
            connections = client.get("/admin/connections").text
            assert 'data-testid="connection-tiktok"' in connections
            assert 'data-testid="routes-form-meta"' in connections
            assert "Fire a test order" in client.get("/admin/test-events").text
            assert 'href="/admin/members"' not in dead

    def test_an_owner_gets_the_members_entry(self, team: Team) -> None:
        with team.login("olga") as (client, _):
            assert 'href="/admin/members"' in client.get("/admin").text

    def test_an_editors_replay_is_audited_with_its_name(self, team: Team) -> None:
        """ed replays a dead letter: 303, re-queued, audit actor ``member ed``."""
        with team.login("ed") as (client, token):
            response = client.post(
                "/admin/dead-letters/replay",
                data={"csrf_token": token, "event_id": "CompletePayment-2", "destination": "meta"},
            )
            assert response.status_code == 303, response.text
        assert team.rows("SELECT actor, action FROM audit_log WHERE action = 'replay'") == [
            ("member ed", "replay")
        ]


class TestMembersPage:
    def test_owner_adds_changes_and_removes_a_member(self, team: Team) -> None:
        """admin adds nina (viewer), who logs in; makes her editor; removes her (her session
        ends). Every step is audited as ``member admin``; no page shows a password hash."""
        with team.login("admin") as (client, token):
            added = client.post(
                "/admin/members/add",
                data={
                    "csrf_token": token,
                    "name": "Nina",
                    "password": "nina's long password",
                    "role": "viewer",
                    "scope": "property",
                },
            )
            assert added.status_code == 303
            assert added.headers["location"] == "/admin/members?done=add"
            page = client.get(added.headers["location"]).text
            assert "Member added." in page
            assert re.findall(r'data-testid="member">([^<]+)<', page) == [
                "admin",
                "ed",
                "nina",
                "olga",
                "vera",
            ]  # stranger has no role here: not listed
            assert "scrypt$" not in page
            assert "nina's long password" not in page
            with team.login("nina", "nina's long password") as (nina, _):
                assert "(viewer)" in nina.get("/admin").text
                changed = client.post(
                    "/admin/members/role",
                    data={"csrf_token": token, "name": "nina", "role": "editor"},
                )
                assert changed.status_code == 303
                assert "(editor)" in nina.get("/admin").text  # the next request already
                listed = client.get("/admin/api/members").json()["members"]
                assert {m["name"]: m["roles"] for m in listed}["nina"] == [
                    {"property": "default", "role": "editor"}
                ]
                assert "password" not in str(listed)
                removed = client.post(
                    "/admin/members/remove", data={"csrf_token": token, "name": "nina"}
                )
                assert removed.status_code == 303
                assert nina.get("/admin", follow_redirects=False).status_code == 303
        assert team.rows(
            "SELECT actor, action, detail FROM audit_log WHERE action LIKE 'member.%'"
            " AND actor <> 'cli' ORDER BY id"
        ) == [
            ("member admin", "member.add", "nina: viewer of default"),
            ("member admin", "member.role", "nina: editor of default (was viewer)"),
            ("member admin", "member.remove", "nina (editor of default); 1 session(s) ended"),
        ]

    def test_an_owner_of_one_property_manages_only_that_one(self, team: Team) -> None:
        """olga (owner of default) changes ed's role there, but may neither grant a role on
        every property nor remove a member altogether (403 naming why)."""
        with team.login("olga") as (client, token):
            assert (
                client.post(
                    "/admin/members/role",
                    data={"csrf_token": token, "name": "ed", "role": "viewer"},
                ).status_code
                == 303
            )
            everywhere = client.post(
                "/admin/members/add",
                data={
                    "csrf_token": token,
                    "name": "max",
                    "password": "max's long password",
                    "role": "viewer",
                    "scope": "all",
                },
            )
            assert everywhere.status_code == 403
            assert "only an owner of every property" in everywhere.text
            remove = client.post(
                "/admin/members/remove", data={"csrf_token": token, "name": "vera"}
            )
            assert remove.status_code == 403
            hidden = client.post(
                "/admin/members/role",
                data={"csrf_token": token, "name": "stranger", "role": "none"},
            )
            assert hidden.status_code == 404  # a member of another property only: not hers
        assert team.rows(
            "SELECT r.role FROM member_roles r JOIN members m ON m.id = r.member_id"
            " WHERE m.name IN ('ed', 'vera', 'stranger') ORDER BY m.name"
        ) == [("viewer",), ("owner",), ("viewer",)]
        assert team.rows("SELECT COUNT(*) FROM members WHERE name = 'max'") == [(0,)]

    def test_the_last_host_owner_stays(self, team: Team) -> None:
        """admin, the only owner of every property, can neither remove nor demote itself."""
        with team.login("admin") as (client, token):
            for path, data in (
                ("/admin/members/remove", {"name": "admin"}),
                ("/admin/members/role", {"name": "admin", "role": "editor", "scope": "all"}),
                ("/admin/members/role", {"name": "admin", "role": "none", "scope": "all"}),
            ):
                response = client.post(path, data={"csrf_token": token, **data})
                assert response.status_code == 400, path
                assert "admin is the only owner of every property" in response.text
        assert team.rows(
            "SELECT property_id, role FROM member_roles r JOIN members m ON m.id = r.member_id"
            " WHERE m.name = 'admin'"
        ) == [(None, "owner")]

    def test_a_bad_form_names_the_field_and_echoes_no_password(self, team: Team) -> None:
        """A bad role, name or password is a 400 naming the field; the password typed is
        never in the answer; a name in use is refused."""
        cases = [
            ({"name": "kim", "role": "god"}, "role: must be owner, editor, viewer"),
            ({"name": "k i m", "role": "viewer"}, "name: letters, digits and"),
            ({"name": "kim", "role": "viewer", "password": "short pw"}, "password: must be at"),
            ({"name": "ed", "role": "viewer"}, "name: a member named &#x27;ed&#x27; exists"),
            ({"name": "kim", "role": "viewer", "scope": "planet"}, "scope: must be property"),
        ]
        with team.login("admin") as (client, token):
            for data, reason in cases:
                form = {"csrf_token": token, "password": "kim's secret long one", **data}
                response = client.post("/admin/members/add", data=form)
                assert response.status_code == 400, data
                assert reason in response.text, (data, response.text[-800:])
                assert form["password"] not in response.text
        assert team.rows("SELECT COUNT(*) FROM members WHERE name = 'kim'") == [(0,)]


class TestAnUpgradedInstall:
    def test_the_old_password_and_session_carry_on(
        self, empty_database: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A store of the release before members (at 0012) with an admin password and a
        logged-in browser: after the upgrade that browser is still logged in, as ``admin``
        (owner of every property), and the old password logs in with the name ``admin``."""
        from backchannel.store import postgres, sqlite

        def until_12(backend: migrations.Backend) -> list[tuple[int, str]]:
            return [(v, text) for v, text in migrations.load(backend) if v <= 12]

        monkeypatch.setattr(sqlite, "load", until_12)
        monkeypatch.setattr(postgres, "load", until_12)
        empty_database.open().close()
        monkeypatch.undo()
        cookie = "the-browsers-session-token"
        now = time.time()
        empty_database.execute(
            "INSERT INTO admin_settings (name, value, updated_at) VALUES ('password_hash', ?, ?)",
            hash_password(PASSWORD),
            now,
        )
        empty_database.execute(
            "INSERT INTO admin_sessions (token_hash, csrf_token, created_at, expires_at)"
            " VALUES (?, 'old-csrf', ?, ?)",
            hashlib.sha256(cookie.encode()).hexdigest(),
            now,
            now + 3600,
        )
        url = (
            f"sqlite:///{empty_database.path}"
            if isinstance(empty_database, SqliteDatabase)
            else postgres_url(empty_database)
        )
        settings = make_settings(tmp_path, database_url=url)
        app = create_app(settings, Options(worker=False, sandbox=False))
        with ServerThread(app) as server:
            with httpx.Client(base_url=server.url, cookies={"bc_session": cookie}) as old:
                page = old.get("/admin")
                assert page.status_code == 200
                assert (
                    'data-testid="who">admin <span data-testid="role">(owner)</span>' in page.text
                )
                assert 'name="csrf_token" value="old-csrf"' in page.text
            with httpx.Client(base_url=server.url) as fresh:
                assert log_in(fresh, "admin", PASSWORD).status_code == 303
                assert fresh.get("/admin/members").status_code == 200
