"""Event routing: the settings (both backends), the cached Routes, ingest, the CLI, a real app."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel import routing
from backchannel.ingest import UNROUTED, ingest
from backchannel.routing import RouteError, Routes
from backchannel.store.base import Connection, Store
from backchannel.store.runner import AsyncStore
from hardening import conftest as hardening
from hardening.conftest import StartApp
from serve.helpers import conversion, wait_for

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

BOTH = ("tiktok", "meta")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connection(
    destination: str,
    connection_id: int,
    routes: list[str] | None = None,
    *,
    property_id: int = 1,
    label: str = "",
) -> Connection:
    """An active (sandbox) connection as the store hands it to Routes."""
    return Connection(
        destination,
        "",
        None,
        None,
        None,
        0.0,
        property_id=property_id,
        label=label or destination,
        id=connection_id,
        routes=None if routes is None else orjson.dumps(routes).decode(),
    )


class TestRules:
    def test_absent_route_means_every_event(self) -> None:
        """With nothing stored, every event goes to every destination, in configured order."""
        routes = Routes(BOTH)
        routes.apply([connection("tiktok", 1), connection("meta", 2)])
        assert routes.destinations_for("Lead") == BOTH
        assert routes.destinations_for("MyCustomThing") == BOTH

    def test_allow_list_restricts_one_destination(self) -> None:
        """A list for Meta restricts Meta only; an event in no list goes nowhere."""
        routes = Routes(BOTH)
        routes.apply(
            [connection("tiktok", 1, ["Purchase", "Lead"]), connection("meta", 2, ["Purchase"])]
        )
        assert routes.destinations_for("Purchase") == BOTH
        assert routes.destinations_for("Lead") == ("tiktok",)
        assert routes.destinations_for("AddToCart") == ()

    def test_every_connection_of_the_events_property_that_takes_it(self) -> None:
        """Two TikTok pixels and a Meta pixel in one property, another property's pixel: an
        event goes to each of its own property's connections its routes allow, never to
        another property's."""
        routes = Routes(BOTH)
        routes.apply(
            [
                connection("tiktok", 1),
                connection("tiktok", 2, ["Purchase"], label="tiktok-eu"),
                connection("meta", 3, ["Lead"]),
                connection("tiktok", 4, property_id=2),
            ]
        )
        assert [t.connection_id for t in routes.connections_for("Purchase", 1)] == [1, 2]
        assert [t.connection_id for t in routes.connections_for("Lead", 1)] == [1, 3]
        assert [t.connection_id for t in routes.connections_for("Lead", 2)] == [4]
        assert routes.connections_for("Lead", 3) == ()
        assert routes.destinations_for("Lead", 2) == ("tiktok",)

    def test_names_are_checked(self) -> None:
        """Standard and custom names pass (de-duplicated); mis-cased standard ones, invalid
        names, empty lists and unknown destinations are refused naming the field."""
        assert routing.check_events(["Purchase", " Lead ", "Purchase", "Webinar_Signup"]) == [
            "Purchase",
            "Lead",
            "Webinar_Signup",
        ]
        cases = [
            (["purchase"], "did you mean 'Purchase'"),
            (["9lives"], "not a valid event name"),
            ([], "name at least one event"),
            ([""], "empty"),
        ]
        for names, reason in cases:
            with pytest.raises(RouteError, match="events: ") as info:
                routing.check_events(names)
            assert reason in str(info.value)
        with pytest.raises(RouteError, match="destination: unknown destination 'friendster'"):
            routing.check_destination("friendster")

    def test_damaged_setting_falls_back_to_all_events(self) -> None:
        """A setting that is not a JSON list never stops delivery: it reads as all events."""
        assert routing.parse(None) is None
        assert routing.parse("null") is None
        assert routing.parse("{not json") is None
        assert routing.parse('{"a": 1}') is None
        assert routing.parse('["Lead", 3]') == frozenset({"Lead"})


class TestStored:
    def test_round_trip_and_clear(self, store: Store) -> None:
        """store_route writes the connection's routes; read and Routes.load see them; None
        clears; a route for a destination not connected yet makes its (empty) connection."""
        assert routing.read(store, ("tiktok", "meta")) == {"tiktok": None, "meta": None}
        routing.store_route(store, "meta", ["Purchase", "CompletePayment"], 1.0)
        meta = store.get_connection("meta")
        assert meta is not None
        assert meta.routes == '["Purchase","CompletePayment"]'
        assert routing.read(store, ("tiktok", "meta")) == {
            "tiktok": None,
            "meta": ["CompletePayment", "Purchase"],
        }
        routes = Routes(BOTH)
        routes.load(store)
        assert routes.destinations_for("Lead") == ("tiktok",)
        routing.store_route(store, "meta", None, 2.0)
        again = store.get_connection("meta")
        assert again is not None
        assert again.routes is None
        assert routing.read(store)["meta"] is None
        routing.store_route(store, "ga4", ["Purchase"], 3.0)
        ga4 = store.get_connection("ga4")
        assert ga4 is not None
        assert (ga4.routes, ga4.live) == ('["Purchase"]', False)
        with pytest.raises(RouteError, match="connection: no connection 'eu'"):
            routing.store_route(store, "tiktok", ["Lead"], 4.0, label="eu")

    def test_other_process_change_applies_after_refresh(self, store: Store) -> None:
        """A change written elsewhere is used once the 5 s cache is stale, at once after
        invalidate(), and not before."""
        clock = FakeClock()
        routes = Routes(BOTH, clock=clock)
        runner = AsyncStore(store, inline=True)
        asyncio.run(routes.ensure_fresh(runner))
        assert routes.destinations_for("Lead") == BOTH
        routing.store_route(store, "meta", ["Purchase"], 1.0)  # "another process"
        clock.now += routing.REFRESH - 0.1
        asyncio.run(routes.ensure_fresh(runner))
        assert routes.destinations_for("Lead") == BOTH  # still cached
        clock.now += 0.2
        asyncio.run(routes.ensure_fresh(runner))
        assert routes.destinations_for("Lead") == ("tiktok",)
        routing.store_route(store, "meta", None, 2.0)
        routes.invalidate()
        asyncio.run(routes.ensure_fresh(runner))
        assert routes.destinations_for("Lead") == BOTH


class TestIngest:
    async def test_outbox_rows_only_for_routed_destinations(self, store: Store) -> None:
        """Meta routed to Purchase only: a Lead gets a TikTok row, a Purchase both; a
        conversion routed nowhere is stored, has no row and carries the warning."""
        routing.store_route(store, "meta", ["Purchase"], 1.0)
        routes = Routes(BOTH)
        runner = AsyncStore(store, inline=True)
        items = [
            conversion(1, event="Lead"),
            conversion(2, event="Purchase"),
            conversion(3, event="AddToCart"),
        ]
        routing.store_route(store, "tiktok", ["Purchase", "Lead"], 1.0)
        result = await ingest(
            items,
            runner,
            now=time.time(),
            default_region=None,
            destinations=BOTH,
            routes=routes,
            stitch_window=None,
        )
        assert [r.status for r in result.results] == ["accepted"] * 3
        rows = store.read(
            "SELECT c.event, o.destination FROM conversions c LEFT JOIN outbox o"
            " ON o.conversion_id = c.id ORDER BY c.id, o.destination"
        )
        assert rows == [
            ("Lead", "tiktok"),
            ("Purchase", "meta"),
            ("Purchase", "tiktok"),
            ("AddToCart", None),
        ]
        unrouted = result.as_dict()["events"][2]["warnings"]
        assert {"path": "event", "reason": UNROUTED} in unrouted
        assert UNROUTED == "routed to no destination (see Connections)"
        assert UNROUTED not in orjson.dumps(result.as_dict()["events"][:2]).decode()


# -- the CLI ----------------------------------------------------------------------------------
def cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env["BACKCHANNEL_DATABASE_URL"] = settings.database_url
    env["BACKCHANNEL_SECRET_KEY"] = settings.secret_key or ""
    path = Path(settings.database_url.removeprefix("sqlite:///")).parent
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        capture_output=True,
        text=True,
        cwd=path,
        env=env,
        timeout=60,
        check=False,
    )


class TestCli:
    def test_set_show_clear_and_refusals(self, start_app: StartApp) -> None:
        """`route set|show|clear` write the setting the app reads and audit; bad input exits 2
        naming the field."""
        app = start_app()
        done = cli(app.settings, "route", "set", "meta", "Purchase", "CompletePayment")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("meta: Purchase, CompletePayment")
        shown = cli(app.settings, "route", "show")
        assert shown.stdout.splitlines() == [
            "tiktok\tall events",
            "meta\tCompletePayment, Purchase",
        ]
        assert app.sql("SELECT routes FROM connections WHERE label = 'meta'") == [
            ('["Purchase","CompletePayment"]',)
        ]
        cleared = cli(app.settings, "route", "clear", "meta")
        assert cleared.returncode == 0, cleared.stderr
        assert cli(app.settings, "route", "show").stdout.splitlines()[1] == "meta\tall events"
        audits = app.sql(
            "SELECT actor, action, detail FROM audit_log WHERE action LIKE 'route.%' ORDER BY id"
        )
        assert audits == [
            ("cli", "route.set", "meta: Purchase, CompletePayment"),
            ("cli", "route.clear", "meta: all events"),
        ]
        for args, message in [
            (("route", "set", "friendster", "Purchase"), "unknown destination 'friendster'"),
            (("route", "clear", "friendster"), "unknown destination 'friendster'"),
            (("route", "set", "meta", "purchase"), "did you mean 'Purchase'"),
        ]:
            refused = cli(app.settings, *args)
            assert refused.returncode == 2, refused
            assert refused.stderr.startswith("error: ")
            assert message in refused.stderr
            assert "Traceback" not in refused.stderr


class TestRealApp:
    def test_lead_reaches_only_tiktok(self, start_app: StartApp) -> None:
        """Meta routed (by the CLI) to Purchase only: over real HTTP a Lead gets a TikTok outbox
        row only and reaches the sandbox only there; the Purchase reaches both."""
        app = start_app(sandbox=True, worker=True)
        assert cli(app.settings, "route", "set", "meta", "Purchase").returncode == 0
        auth = {"Authorization": f"Bearer {app.key}"}
        for item in (conversion(11, event="Lead"), conversion(12, event="Purchase")):
            response = app.http.post("/v1/events", json=item, headers=auth)
            assert response.status_code == 202, response.text
            assert UNROUTED not in response.text
        rows = app.sql(
            "SELECT c.event, o.destination FROM outbox o JOIN conversions c"
            " ON c.id = o.conversion_id ORDER BY c.id, o.destination"
        )
        assert rows == [("Lead", "tiktok"), ("Purchase", "meta"), ("Purchase", "tiktok")]
        with httpx.Client(base_url=app.sandbox_url or "", timeout=30) as sandbox:

            def events(destination: str) -> list[str]:
                found = sandbox.get(f"/_sandbox/{destination}/events").json()["events"]
                return sorted(e["event_id"] for e in found)

            wait_for(lambda: len(events("tiktok")) == 2, what="TikTok deliveries")
            wait_for(lambda: len(events("meta")) == 1, what="Meta delivery")
            assert events("tiktok") == ["Lead-11", "Purchase-12"]
            assert events("meta") == ["Purchase-12"]

    def test_unrouted_conversion_is_stored_with_a_warning(self, start_app: StartApp) -> None:
        """Both destinations routed to Purchase only: a Lead answers 202 with the warning note,
        is stored, and has no outbox row."""
        app = start_app()
        assert cli(app.settings, "route", "set", "meta", "Purchase").returncode == 0
        assert cli(app.settings, "route", "set", "tiktok", "Purchase").returncode == 0
        response = app.http.post(
            "/v1/events",
            json=conversion(21, event="Lead"),
            headers={"Authorization": f"Bearer {app.key}"},
        )
        assert response.status_code == 202, response.text
        (event,) = response.json()["events"]
        assert event["status"] == "accepted"
        assert {"path": "event", "reason": UNROUTED} in event["warnings"]
        assert app.sql("SELECT event, event_id FROM conversions") == [("Lead", "Lead-21")]
        assert app.sql("SELECT COUNT(*) FROM outbox") == [(0,)]
        stored = orjson.loads(app.sql("SELECT warnings FROM conversions")[0][0])
        assert {"path": "event", "reason": UNROUTED} in stored


class TestRefusalsAtIngest:
    """A web event Meta will refuse (no page URL, no user agent) is accepted with warnings
    that say so — only when it is routed to Meta, and only for what stitching left missing."""

    async def test_warned_only_for_meta_bound_web_events(self, store: Store) -> None:
        routing.store_route(store, "meta", ["Purchase"], 1.0)
        bare = {"email": "a@example.com"}
        items = [
            conversion(1, event="Purchase", page=None, user=bare),  # to Meta: warned
            conversion(2, event="Lead", page=None, user=bare),  # TikTok only: not warned
            conversion(3, event="Purchase"),  # has both: not warned
            conversion(4, event="Purchase", page=None, user=bare, source="crm"),  # not web
        ]
        result = await ingest(
            items,
            AsyncStore(store, inline=True),
            now=time.time(),
            default_region=None,
            destinations=BOTH,
            routes=Routes(BOTH),
            stitch_window=None,
        )
        events = result.as_dict()["events"]
        meta_paths = [
            [w["path"] for w in e.get("warnings", []) if "Meta refuses" in w["reason"]]
            for e in events
        ]
        assert meta_paths == [["page.url", "user.user_agent"], [], [], []]
        stored = orjson.loads(store.read("SELECT warnings FROM conversions WHERE id = 1")[0][0])
        assert {
            "path": "page.url",
            "reason": "missing: Meta refuses website events without event_source_url",
        } in stored
