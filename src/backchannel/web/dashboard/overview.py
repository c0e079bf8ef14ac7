"""The Overview page (``GET /admin``) and its JSON twin (``GET /admin/api/overview``).

Both render :func:`backchannel.diagnostics.overview.overview` for the ``?from&to`` day range,
so a script reading the JSON and a person reading the page see the same figures. Every number
on the page is a :func:`layout.figure` (``data-figure`` keys listed in :func:`figure_keys`),
which is how the browser test compares the two.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse

from backchannel import charts, rollups
from backchannel.config import Settings
from backchannel.diagnostics.overview import ErrorRow, Latency, Overview, overview
from backchannel.members import VIEWER
from backchannel.routing import active_destinations
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc, figure, table, when

PATH = "/admin"
API_PATH = "/admin/api/overview"
TEST_EVENTS_PATH = "/admin/test-events"


def _card(label: str, key: str, value: int | float | None, note: str = "") -> str:
    small = f"<small>{esc(note)}</small>" if note else ""
    return f'<div class="card">{esc(label)}{figure(key, value)}{small}</div>'


def _cards(data: Overview) -> str:
    cards = [_card("Received", "received", data.received_total, "production, in range")]
    for d in data.destinations:
        cards.append(_card(f"Delivered · {d}", f"delivered.{d}", data.delivered_total(d)))
    rows = [
        [
            f"<strong>{esc(d)}</strong>",
            figure(f"queue.{d}", data.queue.get(d, 0)),
            figure(f"retrying.{d}", data.retrying.get(d, 0)),
            figure(f"dead.{d}", data.dead.get(d, 0))
            + (
                f' <a href="/admin/dead-letters?destination={esc(d)}">list</a>'
                if data.dead.get(d, 0)
                else ""
            ),
            figure(f"expired.{d}", data.expired.get(d, 0)),
        ]
        for d in data.destinations
    ]
    state = table(
        [
            "destination",
            "queue (pending + in flight)",
            "retrying (pending, tried)",
            "dead",
            "expired",
        ],
        rows,
        test_id="outbox-now",
    )
    return (
        f'<h2>Totals</h2><div class="cards" data-testid="totals">{"".join(cards)}</div>'
        "<h2>Outbox now</h2>"
        '<p class="muted">The current state of the outbox, whatever the range.</p>' + state
    )


def _series_table(
    prefix: str, labels: list[str], series: dict[str, list[int]], caption: str, test_id: str
) -> str:
    """Rows are buckets, columns event names (a long range adds rows, not columns)."""
    names = list(series)
    rows = [
        [esc(label)] + [figure(f"{prefix}.{name}.{label}", series[name][i]) for name in names]
        for i, label in enumerate(labels)
    ]
    if names:
        rows.append(
            ["<strong>total</strong>"]
            + [figure(f"{prefix}.{name}.total", sum(series[name])) for name in names]
        )
    else:
        rows = []
    return table(
        ["bucket", *names], rows, caption=caption, empty="No events in this range.", test_id=test_id
    )


def _chart(data: Overview) -> str:
    """Received and delivered per day, one strip per leg on one scale, every bar labelled
    (:func:`backchannel.charts.timeseries_svg`, the gap report's chart). Hour buckets (a
    one-day range) are read from the tables instead: 24 labelled bars say no more."""
    if data.bucket != "day" or not data.buckets:
        return ""
    days = [date.fromisoformat(label) for label in data.buckets]

    def per_day(counts: dict[str, list[int]]) -> list[tuple[date, int]]:
        return [(day, sum(c[i] for c in counts.values())) for i, day in enumerate(days)]

    series = {"Received": per_day(data.received)}
    for d in data.destinations:
        series[f"Delivered to {d}"] = per_day(data.delivered.get(d, {}))
    svg = charts.timeseries_svg(series, "Production conversions per day (UTC)")
    return f'<figure class="chart" data-testid="overview-chart">{svg}</figure>'


def _latency(data: Overview) -> str:
    rows = []
    for d in data.destinations:
        lat: Latency = data.latency[d]
        rows.append(
            [
                esc(d),
                figure(f"latency.{d}.base", lat.base),
                figure(f"latency.{d}.p50", lat.p50),
                figure(f"latency.{d}.p90", lat.p90),
                figure(f"latency.{d}.p99", lat.p99),
                figure(f"latency.{d}.max", lat.max),
            ]
        )
    notes = "; ".join(
        f"{d}: based on all {data.latency[d].base} deliveries" for d in data.destinations
    )
    return (
        "<h2>Delivery latency</h2>"
        '<p class="muted">Seconds from received to delivered, each delivery to the millisecond;'
        " nearest-rank percentiles over every production delivery in the range (a value that"
        f" was observed, never an interpolation). {esc(notes)}.</p>"
        + table(
            ["destination", "deliveries", "p50 (s)", "p90 (s)", "p99 (s)", "max (s)"],
            rows,
            test_id="latency",
        )
    )


def _errors(rows: list[ErrorRow]) -> str:
    cells = [
        [
            esc(e.destination),
            esc(e.event),
            f'<a href="/admin/dead-letters/{e.outbox_id}">{esc(e.event_id)}</a>'
            if e.status == "dead"
            else esc(e.event_id),
            f'<span class="status-{esc(e.status)}">{esc(e.status)}</span>',
            str(e.attempts),
            esc(when(e.due_at)),
            esc(e.error),
            f"<details><summary>answer</summary><code>{esc(e.response)}</code></details>"
            if e.response
            else "",
        ]
        for e in rows
    ]
    return (
        "<h2>Last errors</h2>"
        '<p class="muted">The platform\'s own message, newest first by when the attempt'
        " failed.</p>"
        + table(
            ["destination", "event", "event_id", "status", "attempts", "failed", "error", "answer"],
            cells,
            empty="No errors.",
            test_id="last-errors",
        )
    )


def _refused(data: Overview) -> str:
    cells = [
        [
            esc(when(r.at)),
            esc(r.source),
            f"<code>{esc(r.delivery_id)}</code>" if r.delivery_id else "—",
            esc(r.error),
            esc(r.summary),
        ]
        for r in data.last_refused
    ]
    return (
        "<h2>Refused input</h2>"
        f'<p class="muted">{figure("refused", data.refused)} webhook deliveries or imports'
        " refused in this range (bad signature, unmappable order, invalid CSV rows); the"
        " sender was told why, nothing of them was stored. Newest first.</p>"
        + table(
            ["when", "source", "delivery", "error", "first reason"],
            cells,
            empty="Nothing refused.",
            test_id="refused",
        )
    )


def sandbox_notice(sandboxed: list[str]) -> str:
    """Said first when a destination sends to the local sandbox: nothing reaches it."""
    if not sandboxed:
        return ""
    names = " and ".join(sandboxed)
    verb, whose = ("has", "its") if len(sandboxed) == 1 else ("have", "their")
    return layout.notice(
        f"SANDBOX MODE: {names} {verb} no token, so {whose} events go to the built-in"
        " emulator and never reach the platform. Paste the token on the Connections page.",
        kind="error",
    )


def render_overview(data: Overview, sandboxed: list[str] | None = None) -> str:
    """The page body (everything under the title)."""
    tests = (
        f'<p class="notice info" role="status">Production events only. '
        f"{figure('test_events', data.test_events)}"
        f" test event{'' if data.test_events == 1 else 's'} in this range — see "
        f'<a href="{TEST_EVENTS_PATH}">Test events</a>.</p>'
    )
    received = _series_table(
        "received",
        data.buckets,
        data.received,
        f"Received per event name, per {data.bucket} (UTC)",
        "received",
    )
    delivered = "".join(
        _series_table(
            f"delivered.{d}",
            data.buckets,
            data.delivered.get(d, {}),
            f"Delivered to {d} per event name, per {data.bucket} (UTC)",
            f"delivered-{d}",
        )
        for d in data.destinations
    )
    return (
        sandbox_notice(sandboxed or [])
        + layout.range_form(PATH, data.start, data.end)
        + layout.as_of_notice(data.as_of)
        + tests
        + _cards(data)
        + _latency(data)
        + _chart(data)
        + "<h2>Received</h2>"
        + received
        + "<h2>Delivered</h2>"
        + delivered
        + _errors(data.last_errors)
        + _refused(data)
    )


def figure_keys(data: Overview) -> dict[str, Any]:
    """The ``data-figure`` key of every total and latency figure, with the value it shows
    (the JSON twin's numbers under the page's keys: what the browser test compares)."""
    keys: dict[str, Any] = {
        "received": data.received_total,
        "test_events": data.test_events,
        "refused": data.refused,
    }
    for d in data.destinations:
        keys[f"delivered.{d}"] = data.delivered_total(d)
        keys[f"queue.{d}"] = data.queue.get(d, 0)
        keys[f"retrying.{d}"] = data.retrying.get(d, 0)
        keys[f"dead.{d}"] = data.dead.get(d, 0)
        keys[f"expired.{d}"] = data.expired.get(d, 0)
        lat = data.latency[d]
        for name in ("base", "p50", "p90", "p99", "max"):
            keys[f"latency.{d}.{name}"] = getattr(lat, name)
    return keys


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    def active() -> tuple[str, ...]:
        """The destinations getting rows now: the setting's and every connected one."""
        return active_destinations(state["store"], settings.destinations)

    def sandboxed() -> list[str]:
        """The destinations sending to the sandbox now (no token), as delivery decides."""
        found = []
        for name in active():
            try:
                if state["targets"].resolve(name).sandbox:
                    found.append(name)
            except RuntimeError:  # no token and no sandbox: nothing is delivered at all
                found.append(name)
        return found

    async def load(
        start: date, end: date, property_id: int | None, max_stale: float = 0.0
    ) -> Overview:
        """The figures of the request's property (its own rows only); ``max_stale``: the
        page's (rollups.DASHBOARD_STALE), the JSON twin's is exact (0)."""
        return await asyncio.to_thread(
            lambda: overview(state["store"], start, end, active(), property_id, max_stale=max_stale)
        )

    @app.get(PATH, include_in_schema=False, response_class=HTMLResponse)
    async def overview_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        try:
            start, end = layout.parse_range(request)
        except layout.RangeError as exc:
            return layout.error_page("Overview", PATH, exc, admin, "overview")
        data = await load(start, end, admin.property_id, rollups.DASHBOARD_STALE)
        body = render_overview(data, sandboxed())
        return layout.render("Overview", body, admin, active="overview")

    @app.get(API_PATH, summary="Overview figures (admin session or admin API key)")
    async def overview_json(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> JSONResponse:
        try:
            start, end = layout.parse_range(request)
        except layout.RangeError as exc:
            return layout.bad_request(exc)
        return JSONResponse((await load(start, end, admin.property_id)).to_json())
