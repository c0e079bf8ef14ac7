"""The gap report page and its downloads over real HTTP, on both backends, against the CLI.

The store is the gap report's seed (tests/report/test_gap.py: 8 TikTok-attributed orders in
November 2026, switch-on the 15th). Every ``data-figure`` on the page must equal the number at
the same path of ``backchannel report gap --format json`` run on the same database, and every
number of that JSON must be on the page.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from psycopg.conninfo import conninfo_to_dict

from backchannel import charts
from backchannel.report import SECTIONS, time_range
from backchannel.store import open_store
from backchannel.store.base import LedgerEntry, SessionUpdate, Store
from dashboard.helpers import seeded_gateway
from report.test_gap import seed
from store.conftest import BACKENDS
from store.helpers import NOW, conversion

RANGE = {"from": "2026-11-01", "to": "2026-11-30", "switch_on": "2026-11-15"}
CLI_RANGE = ("--from", "2026-11-01", "--to", "2026-11-30", "--switch-on", "2026-11-15")
FIGURE = re.compile(r'<span class="figure" data-figure="([^"]+)">([^<]*)</span>')
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each backend, as a URL the app and the CLI open."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/bc.db"
        return
    server = request.getfixturevalue("pg_server")
    conninfo = server.create(request.getfixturevalue("pg_template"))
    try:
        yield server.url.rsplit("/", 1)[0] + "/" + conninfo_to_dict(conninfo)["dbname"]
    finally:
        server.drop(conninfo)


@dataclass
class Running:
    url: str
    database_url: str
    admin_key: str
    http: httpx.Client

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.admin)

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        env["BACKCHANNEL_DATABASE_URL"] = self.database_url
        done = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "report", "gap", *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def store(self) -> Store:
        return open_store(self.database_url)


def start(tmp_path: Path, database_url: str, seeder: Any = seed) -> Iterator[Running]:
    with seeded_gateway(tmp_path, seeder, database_url=database_url) as gw:
        yield Running(gw.url, database_url, gw.admin_key, gw.http)


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Running]:
    """A gateway (no worker) on the seeded store, with an admin key and a password."""
    yield from start(tmp_path, database_url)


def figures(page: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in FIGURE.findall(page):
        key = html.unescape(key)
        assert key not in found, f"figure {key} twice on the page"
        found[key] = html.unescape(value)
    return found


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: the JSON's fields that are not numbers (the platform, dates, names; null objects)
NOT_FIGURES = {"destination", "from", "to", "switch_on", "pixel_import", "pixel_import.event"}


def expected_figures(data: dict[str, Any]) -> dict[str, str]:
    """Every number of the CLI's JSON, by path, as the page writes it (None: an em dash)."""
    flat = flatten(data)
    return {
        key: "—" if value is None else str(value)
        for key, value in flat.items()
        if key not in NOT_FIGURES
    }


class TestAccess:
    def test_page_and_downloads_need_an_admin(self, running: Running) -> None:
        """Logged out: the page redirects to /login; JSON, CSV and SVG answer 401."""
        page = running.http.get("/reports/gap", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=/reports/gap")
        for path in ("/reports/gap.json", "/reports/gap.csv", "/reports/gap/charts/gap.svg"):
            assert running.http.get(path).status_code == 401, path


class TestPage:
    def test_every_figure_equals_the_cli_json(self, running: Running) -> None:
        """Each data-figure is the number at its path in `report gap --format json`, and every
        number of that JSON is on the page (both backends)."""
        page = running.get("/reports/gap", **RANGE)
        assert page.status_code == 200, page.text
        data = orjson.loads(running.cli(*CLI_RANGE, "--format", "json"))
        assert figures(page.text) == expected_figures(data)
        found = figures(page.text)  # and the seed's figures, spelled out
        assert (found["ledger_orders"], found["truth_set"]) == ("9", "8")
        assert (found["total.orders"], found["total.pixel_only"]) == ("8", "3")
        assert (found["total.server_delivered"], found["total.deduplicated"]) == ("3", "5")
        # per destination, by its own query: TikTok's agrees with the headline's server leg
        assert found["server_delivered_by.tiktok"] == found["total.server_delivered"]
        assert (found["total.recovered"], found["total.coverage"]) == ("2", "0.625")
        assert (found["before.coverage"], found["after.coverage"]) == ("0.3333", "0.8")
        assert found["breakdowns.browser.Safari.orders"] == "3"
        assert found["breakdowns.pixel_status.blocked.recovered"] == "1"
        assert found["breakdowns.load_time.<1s.orders"] == "2"
        assert found["daily.2026-11-17.server_delivered"] == "1"
        assert (found["pixel_reported"], found["recovered_vs_reported"]) == ("—", "—")

    def test_bases_method_charts_and_links(self, running: Running) -> None:
        """Each group says its base; the method is explained; the charts are inline SVG with
        the report's figures; the downloads carry the same query string."""
        page = running.get("/reports/gap", **RANGE).text
        text = re.sub(r"<[^>]+>", "", page)
        assert "Based on 8 TikTok-attributed orders of 9 in the ledger" in text
        assert "before 2026-11-15 (based on 3 orders)" in page
        assert "from 2026-11-15 (based on 5 orders)" in page
        assert page.count("Based on 8 orders; each row says") == 3  # iOS: only iOS orders
        assert "Based on 6 orders; each row says" in page
        assert "recovered = deduplicated − Pixel only" in page
        svgs = re.findall(r"<svg .*?</svg>", page, re.S)
        assert len(svgs) == len(charts.chart_names(SECTIONS))
        gap = ET.fromstring(svgs[0])  # noqa: S314 - our own page
        values = [r.get("data-value") for r in gap.iter(f"{SVG_NS}rect") if r.get("class") == "bar"]
        assert values == ["8", "3", "3", "5"]
        qs = "from=2026-11-01&amp;to=2026-11-30&amp;switch_on=2026-11-15"
        for path in ("/reports/gap.json", "/reports/gap.csv", "/reports/gap/charts/gap.svg",
                     "/reports/gap/charts/breakdown-browser.svg"):  # fmt: skip
            assert f'href="{path}?{qs}"' in page, path
        assert 'href="/reports/gap" aria-current=page>Gap report' in page

    def test_without_switch_on_no_periods(self, running: Running) -> None:
        """No switch_on: no before/after figures (the JSON's are null), the rest equal."""
        page = running.get("/reports/gap", **{"from": RANGE["from"], "to": RANGE["to"]})
        assert page.status_code == 200
        data = orjson.loads(running.cli(*CLI_RANGE[:4], "--format", "json"))
        assert (data["before"], data["after"]) == (None, None)
        wanted = {k: v for k, v in expected_figures(data).items() if k not in ("before", "after")}
        assert figures(page.text) == wanted
        assert "Give the day the server leg was switched on" in page.text

    def test_default_range_is_the_last_30_days(self, running: Running) -> None:
        """No from/to: the last 30 days, today included (and no switch-on)."""
        page = running.get("/reports/gap").text
        today = datetime.now(UTC).date()
        assert f'name="from" value="{(today - timedelta(days=29)).isoformat()}"' in page
        assert f'name="to" value="{today.isoformat()}"' in page
        assert 'name="switch_on" value=""' in page

    def test_imported_counts_are_shown_next_to_the_mirror(self, running: Running) -> None:
        """With Events Manager counts imported: pixel_reported, days covered X of Y and
        recovered_vs_reported, equal to the CLI's."""
        store = running.store()
        try:
            store.set_pixel_counts(
                [("2026-11-05", "CompletePayment", 1), ("2026-11-16", "CompletePayment", 2)],
                NOW,
            )
        finally:
            store.close()
        page = running.get("/reports/gap", **RANGE).text
        found = figures(page)
        assert found == expected_figures(orjson.loads(running.cli(*CLI_RANGE, "--format", "json")))
        assert found["pixel_reported"] == "3"
        assert (found["pixel_import.days_covered"], found["pixel_import.days_in_range"]) == (
            "2",
            "30",
        )
        assert found["recovered_vs_reported"] == "2"
        assert "next to the Pixel mirror's 3 orders" in page


class TestDownloads:
    def test_json_and_csv_equal_the_cli(self, running: Running) -> None:
        """gap.json is the CLI's JSON; gap.csv is the CLI's CSV, as an attachment."""
        api = running.get("/reports/gap.json", **RANGE)
        assert api.status_code == 200
        assert api.json() == orjson.loads(running.cli(*CLI_RANGE, "--format", "json"))
        csv = running.get("/reports/gap.csv", **RANGE)
        assert csv.status_code == 200
        assert csv.headers["content-type"].startswith("text/csv")
        assert 'filename="gap-2026-11-01-2026-11-30.csv"' in csv.headers["content-disposition"]
        assert csv.text == running.cli(*CLI_RANGE, "--format", "csv")

    def test_chart_downloads(self, running: Running, tmp_path: Path) -> None:
        """Every chart downloads as SVG, identical to the CLI's --chart-dir file; a CSP that
        allows nothing covers it; an unknown name is a 404 naming the choices."""
        out = tmp_path / "charts"
        running.cli(*CLI_RANGE, "--chart-dir", str(out))
        for name in charts.chart_names(SECTIONS):
            response = running.get(f"/reports/gap/charts/{name}.svg", **RANGE)
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith("image/svg+xml")
            assert response.headers["content-security-policy"] == "default-src 'none'"
            assert response.text == (out / f"{name}.svg").read_text("utf-8"), name
        missing = running.get("/reports/gap/charts/pie.svg", **RANGE)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["path"] == "name"
        assert "breakdown-browser" in missing.json()["errors"][0]["reason"]


@pytest.mark.parametrize(
    ("query", "path", "reason"),
    [
        ({"from": "2026-13-01"}, "from", "not a date"),
        ({"to": "soon"}, "to", "not a date"),
        ({"from": "2026-11-30", "to": "2026-11-01"}, "from", "after to"),
        ({"from": "2020-01-01", "to": "2026-11-30"}, "from", "longer than 366 days"),
        ({"switch_on": "tomorrow"}, "switch_on", "not a date"),
        ({"pixel_event": "<script>"}, "pixel_event", "not an event name"),
        ({"destination": "friendster"}, "destination", "must be one of tiktok, meta"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(
    running: Running, query: dict[str, str], path: str, reason: str
) -> None:
    """A bad parameter answers 400 naming it: the page (escaped), JSON, CSV and SVG alike."""
    page = running.get("/reports/gap", **query)
    assert page.status_code == 400
    assert f"{path}: " in page.text
    assert reason in page.text
    assert "<script>" not in page.text.split("<main>", 1)[1]
    for download in ("/reports/gap.json", "/reports/gap.csv", "/reports/gap/charts/gap.svg"):
        response = running.get(download, **query)
        assert response.status_code == 400, download
        error = response.json()["errors"][0]
        assert error["path"] == path
        assert reason in error["reason"]


HOSTILE = '<img src=x onerror="alert(1)">'


def seed_hostile(store: Store) -> None:
    """One attributed order whose landing session names a hostile browser family."""
    day = date(2026, 11, 10)
    item = conversion(1, session_id="h", event_time=time_range(day, day)[0])
    item.ledger = LedgerEntry(
        source="shopify", order_id="1", order_time=time_range(day, day)[0] + 3600,
        value=1.0, currency="USD", event="CompletePayment", event_id="CompletePayment-1",
        session_id="h", attributed_tiktok=True, evidence=b"{}",
    )  # fmt: skip
    assert store.insert_conversions([item], NOW) == [True]
    store.record_collect([SessionUpdate(session_id="h", at=NOW, landing=True, browser=HOSTILE)], [])


def test_hostile_bucket_names_are_escaped(tmp_path: Path) -> None:
    """A browser family full of markup is text in the tables, the figures' keys and the SVG."""
    for server in start(tmp_path, f"sqlite:///{tmp_path}/hostile.db", seed_hostile):
        page = server.get("/reports/gap", **RANGE).text
        assert HOSTILE not in page
        assert html.escape(HOSTILE, quote=True) in page
        assert figures(page)[f"breakdowns.browser.{HOSTILE}.orders"] == "1"
        svg = server.get("/reports/gap/charts/breakdown-browser.svg", **RANGE).text
        assert HOSTILE not in svg
        labels = {
            r.get("data-label")
            for r in ET.fromstring(svg).iter(f"{SVG_NS}rect")  # noqa: S314
            if r.get("class") == "bar"
        }
        assert labels == {HOSTILE}


class TestAnotherPlatform:
    """``destination=``: the report of another platform, as ``report gap --destination``."""

    @pytest.fixture
    def snap(self, tmp_path: Path, database_url: str) -> Iterator[Running]:
        from report.test_gap_destination import seed as seed_platforms

        yield from start(tmp_path, database_url, seed_platforms)

    def test_every_figure_equals_the_cli_json(self, snap: Running) -> None:
        query = {**RANGE, "destination": "snapchat"}
        page = snap.get("/reports/gap", **query)
        assert page.status_code == 200, page.text
        data = orjson.loads(snap.cli(*CLI_RANGE, "--destination", "snapchat", "--format", "json"))
        assert figures(page.text) == expected_figures(data)
        found = figures(page.text)
        assert (found["truth_set"], found["total.recovered"]) == ("4", "1")
        assert "Snapchat-attributed" in page.text
        assert '<option value="snapchat" selected>Snapchat</option>' in page.text
        assert "mirror of Snapchat&#x27;s Pixel (snaptr)" in page.text
        assert "breakdown-pixel_status" not in page.text  # TikTok's Pixel's state only
        downloaded = snap.get("/reports/gap.json", **query)
        assert downloaded.json() == data
        csv = snap.get("/reports/gap.csv", **query)
        assert (
            'filename="gap-snapchat-2026-11-01-2026-11-30.csv"'
            in csv.headers["content-disposition"]
        )
        assert snap.get("/reports/gap/charts/gap.svg", **query).status_code == 200
        missing = snap.get("/reports/gap/charts/breakdown-pixel_status.svg", **query)
        assert missing.status_code == 404
        assert "no Pixel state breakdown" in missing.json()["errors"][0]["reason"]
