"""The gap report page (``/reports/gap``) and its downloads: JSON, CSV and the charts as SVG.

The page shows exactly what ``backchannel report gap --format json`` prints for the same
range (both call :func:`backchannel.report.from_store`): every number is a
``data-figure`` whose key is its path in that JSON (``total.orders``,
``breakdowns.browser.Safari.orders``, ``daily.2026-11-05.deduplicated``…), so a test or a
script can check the page against the CLI figure by figure. Every group says how many orders
it is based on, and the charts (:mod:`backchannel.charts`) are inline SVG, which the CSP
allows (presentation attributes, no inline style, no script).

Query parameters (page and downloads alike): ``from``/``to`` (UTC days, default the last 30
days), ``switch_on`` (the day the server leg was switched on; optional), ``pixel_event``
(whose imported Events Manager counts to show; default CompletePayment) and ``destination``
(the platform the report is about, as ``report gap --destination``; default TikTok's). A bad
one answers 400 naming it: an HTML page for the page, a JSON error for the downloads.

Downloads: ``/reports/gap.json``, ``/reports/gap.csv``, ``/reports/gap/charts/{name}.svg``
(names: :func:`backchannel.charts.chart_names`). They need an admin session or admin API key.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from backchannel import charts, report, rollups
from backchannel.config import Settings
from backchannel.destinations import NAMES, display_name
from backchannel.destinations import get as get_destination
from backchannel.members import VIEWER
from backchannel.report import SECTION_TITLES, GapReport, Tally
from backchannel.sources.ledger import PLATFORM as LEDGER_PLATFORM
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard.layout import (
    ParamError,
    RangeError,
    as_of_notice,
    bad_request,
    esc,
    figure,
    notice,
    parse_range,
    percent,
    range_form,
    render,
    table,
)

PATH = "/reports/gap"
JSON_PATH = "/reports/gap.json"
CSV_PATH = "/reports/gap.csv"
CHART_PATH = "/reports/gap/charts/{name}.svg"
TITLE = "Gap report"
DEFAULT_DAYS = report.DEFAULT_DAYS  # `backchannel report gap` has the same default
#: TikTok event names are identifiers (CompletePayment, PlaceAnOrder, ...)
EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: an SVG download is a document of its own: nothing in it may load or run anything
SVG_HEADERS = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Query:
    start: date
    end: date
    switch_on: date | None
    pixel_event: str
    destination: str = LEDGER_PLATFORM

    def string(self) -> str:
        """The query string that asks for this same report (for the download links)."""
        params = {"from": self.start.isoformat(), "to": self.end.isoformat()}
        if self.switch_on is not None:
            params["switch_on"] = self.switch_on.isoformat()
        if self.pixel_event != report.PIXEL_EVENT:
            params["pixel_event"] = self.pixel_event
        if self.destination != LEDGER_PLATFORM:
            params["destination"] = self.destination
        return urlencode(params)


def parse_query(request: Request, *, today: date | None = None) -> Query:
    """The report's parameters; raises RangeError/ParamError naming the bad one."""
    today = today or datetime.now(UTC).date()
    start, end = parse_range(request, today=today)
    if not request.query_params.get("from", "").strip():
        start = end - timedelta(days=DEFAULT_DAYS - 1)  # this page's default is 30 days
    raw_switch = request.query_params.get("switch_on", "").strip()
    switch_on = None
    if raw_switch:
        try:
            switch_on = date.fromisoformat(raw_switch)
        except ValueError:
            raise ParamError("switch_on: not a date; use YYYY-MM-DD") from None
    event = request.query_params.get("pixel_event", "").strip() or report.PIXEL_EVENT
    if not EVENT_NAME.fullmatch(event):
        raise ParamError(
            "pixel_event: not an event name (letters, digits, _; e.g. CompletePayment)"
        )
    destination = request.query_params.get("destination", "").strip() or LEDGER_PLATFORM
    if destination not in NAMES:
        raise ParamError(f"destination: must be one of {', '.join(NAMES)}")
    return Query(start, end, switch_on, event, destination)


def build(
    store: Any, query: Query, property_id: int | None = None, max_stale: float = 0.0
) -> GapReport:
    """The report of the request's property (its own orders only; None: every property's).
    ``max_stale``: the page's (rollups.DASHBOARD_STALE, and it says from when); the
    downloads are exact (0)."""
    return report.from_store(
        store,
        query.start,
        query.end,
        query.switch_on,
        pixel_event=query.pixel_event,
        destination=query.destination,
        property_id=property_id,
        max_stale=max_stale,
    )


# --- the page -----------------------------------------------------------------------------------
METHOD = (
    "The truth set is every order in the ledger attributed to TikTok (a ttclid or TikTok UTM"
    " on its landing); an order counts as reported by the Pixel when the Pixel mirror saw an"
    " event with its event_id, and as delivered when its conversion reached TikTok's Events"
    " API. TikTok counts an order once when either leg reported it (the deduplicated total,"
    " joined by event_id), so recovered = deduplicated − Pixel only, and coverage ="
    " deduplicated ÷ truth set."
)


def method(destination: str) -> str:
    """How the report counts, in words, for the platform it is about."""
    if destination == LEDGER_PLATFORM:
        return METHOD
    d = get_destination(destination)
    name = d.display_name
    clicks = ", ".join(d.CLICK_IDS) or "none"
    key = "the order id (its transaction_id)" if d.DEDUP_ID == "order_id" else "its event_id"
    return (
        f"The truth set is every order in the ledger attributed to {name}: one of its click"
        f" ids ({clicks}) on the order or its landing session, or a landing utm_source of"
        f" {', '.join(d.UTM_SOURCES)}. An order counts as reported by the Pixel when the"
        f" mirror of {name}'s Pixel ({d.PIXEL_CALL}) saw a call carrying {key}, and as"
        f" delivered when its conversion reached {name}. {name} counts an order once when"
        " either leg reported it (the deduplicated total), so recovered = deduplicated −"
        " Pixel only, and coverage = deduplicated ÷ truth set."
    )


#: (Tally.as_dict key, column heading) of the tables, in order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("orders", "orders (base)"),
    ("pixel_only", "Pixel only"),
    ("server_delivered", "server delivered"),
    ("deduplicated", "deduplicated"),
    ("recovered", "recovered"),
    ("pixel_gap", "Pixel gap"),
    ("coverage", "coverage"),
    ("pixel_coverage", "Pixel coverage"),
)
RATIOS = ("coverage", "pixel_coverage")


def _cell(prefix: str, key: str, value: Any) -> str:
    """A figure; ratios keep the JSON's number as the figure and show a percentage beside."""
    if key in RATIOS:
        return figure(f"{prefix}.{key}", value) + f' <small class="muted">{percent(value)}</small>'
    return figure(f"{prefix}.{key}", value)


def _row(prefix: str, label: str, tally: Tally) -> list[str]:
    values = tally.as_dict()
    return [esc(label), *(_cell(prefix, key, values[key]) for key, _ in COLUMNS)]


def _card(key: str, value: Any, label: str) -> str:
    return f'<div class="card"><small>{esc(label)}</small>{figure(key, value)}</div>'


def _ratio_card(key: str, value: float | None, label: str) -> str:
    """The percentage big, the exact ratio (the figure, as in the JSON) small beside it."""
    return (
        f'<div class="card ratio"><small>{esc(label)}</small>'
        f'<span class="share">{esc(percent(value))}</span><small>ratio {figure(key, value)}'
        "</small></div>"
    )


def _headline(result: GapReport) -> str:
    total = result.total.as_dict()
    platform = display_name(result.destination)
    cards = [
        _card("total.orders", total["orders"], f"Truth set ({platform}-attributed)"),
        _card("total.pixel_only", total["pixel_only"], "Reported by the Pixel"),
        _card("total.server_delivered", total["server_delivered"], "Delivered by the server"),
        _card("total.deduplicated", total["deduplicated"], "Counted once (deduplicated)"),
        _card("total.recovered", total["recovered"], "Recovered by the server leg"),
        _card("total.pixel_gap", total["pixel_gap"], "Missed by the Pixel"),
        _ratio_card("total.coverage", total["coverage"], "Coverage (deduplicated)"),
        _ratio_card("total.pixel_coverage", total["pixel_coverage"], "Pixel coverage"),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _periods(result: GapReport) -> str:
    if result.switch_on is None or result.before is None or result.after is None:
        return (
            '<p class="muted">Give the day the server leg was switched on to compare coverage'
            " before and after it.</p>"
        )
    on = result.switch_on.isoformat()
    return f"<h2>Before and after the switch-on ({esc(on)})</h2>" + table(
        ["period", *(h for _, h in COLUMNS)],
        [
            _row("before", f"before {on} (based on {result.before.orders} orders)", result.before),
            _row("after", f"from {on} (based on {result.after.orders} orders)", result.after),
        ],
        test_id="periods",
    )


def _delivered_by(result: GapReport) -> str:
    """What the same truth-set orders reached at every destination (TikTok's report only)."""
    if not result.server_delivered_by:
        return ""
    rows = [
        [esc(display_name(d)), figure(f"server_delivered_by.{d}", n)]
        for d, n in result.server_delivered_by.items()
    ]
    return "<h2>Server leg, per destination</h2>" + table(
        ["destination", "truth-set orders delivered"],
        rows,
        caption="The same TikTok-attributed orders, as each configured destination received them",
        test_id="delivered-by",
    )


def _imported(result: GapReport, query: Query) -> str:
    imported = result.pixel_import
    if query.destination != LEDGER_PLATFORM:
        return (
            '<p class="muted" data-testid="no-import">Pixel count reported by Events Manager: '
            + figure("pixel_reported", None)
            + "; recovered vs reported: "
            + figure("recovered_vs_reported", None)
            + ". Imported Events Manager counts are TikTok's Pixel's: they are shown on"
            " TikTok's report only.</p>"
        )
    if imported is None:
        return (
            '<p class="muted" data-testid="no-import">Pixel count reported by Events Manager: '
            + figure("pixel_reported", None)
            + "; recovered vs reported: "
            + figure("recovered_vs_reported", None)
            + f". No Events Manager counts of {esc(query.pixel_event)} are imported for this"
            " range; to compare with TikTok's own Pixel count, export the daily counts and run"
            " <code>backchannel report import-pixel export.csv</code>.</p>"
        )
    return (
        "<h2>Events Manager's own Pixel count</h2>"
        '<p data-testid="import">Events Manager reported '
        + figure("pixel_reported", imported.count)
        + f" {esc(imported.event)} Pixel events (days covered "
        + figure("pixel_import.days_covered", imported.days_covered)
        + " of "
        + figure("pixel_import.days_in_range", imported.days_in_range)
        + f"), next to the Pixel mirror's {result.total.pixel_only} orders."
        " Deduplicated − reported: "
        + figure("recovered_vs_reported", result.recovered_vs_reported)
        + ".</p>"
    )


def _chart(svg: str, caption: str, name: str, query: Query) -> str:
    link = CHART_PATH.format(name=name) + "?" + query.string()
    return (
        f'<figure class="chart" data-chart="{esc(name)}">{svg}<figcaption>{esc(caption)}'
        f' <a href="{esc(link)}" download="{esc(name)}.svg">SVG</a></figcaption></figure>'
    )


def _breakdowns(result: GapReport, svgs: dict[str, str], query: Query) -> str:
    parts = []
    for section, buckets in result.breakdowns.items():
        base = sum(t.orders for t in buckets.values())
        parts.append(f"<h2>{esc(SECTION_TITLES.get(section, section))}</h2>")
        parts.append(
            f'<p class="base">Based on {base} orders; each row says'
            " how many orders it is based on.</p>"
        )
        parts.append(
            table(
                ["bucket", *(h for _, h in COLUMNS)],
                (
                    _row(f"breakdowns.{section}.{k}", k, t)
                    for k, t in report.reading_order(section, buckets).items()
                ),
                empty="No orders in this range.",
                test_id=f"breakdown-{section}",
            )
        )
        name = f"breakdown-{section}"
        parts.append(
            _chart(svgs[name], f"Orders, Pixel and deduplicated per {section}.", name, query)
        )
    return "".join(parts)


def _daily(result: GapReport) -> str:
    keys = ("orders", "pixel_only", "server_delivered", "deduplicated")
    rows = (
        [
            esc(day.isoformat()),
            *(figure(f"daily.{day.isoformat()}.{k}", getattr(t, k)) for k in keys),
        ]
        for day, t in result.daily
    )
    return (
        "<details><summary>Per day (UTC)</summary>"
        + table(
            ["day", "orders", "Pixel only", "server delivered", "deduplicated"],
            rows,
            test_id="daily",
        )
        + "</details>"
    )


def _downloads(query: Query) -> str:
    qs = query.string()
    links = [
        f'<a href="{esc(JSON_PATH + "?" + qs)}">JSON</a>',
        f'<a href="{esc(CSV_PATH + "?" + qs)}">CSV</a>',
        *(
            f'<a href="{esc(CHART_PATH.format(name=n) + "?" + qs)}" download="{esc(n)}.svg">'
            f"{esc(n)}.svg</a>"
            for n in charts.chart_names(_sections(query))
        ),
    ]
    return '<p class="downloads" data-testid="downloads">Download: ' + " · ".join(links) + "</p>"


def _sections(query: Query) -> tuple[str, ...]:
    """The breakdowns of the report asked for (another platform's has no Pixel state)."""
    return report.SECTIONS if query.destination == LEDGER_PLATFORM else report.OTHER_SECTIONS


def _form(query: Query) -> str:
    switch = query.switch_on.isoformat() if query.switch_on else ""
    options = "".join(
        f'<option value="{esc(n)}"{" selected" if n == query.destination else ""}>'
        f"{esc(display_name(n))}</option>"
        for n in NAMES
    )
    extra = (
        f'<label>Platform <select name="destination">{options}</select></label> '
        f'<label>Server leg on since <input type="date" name="switch_on" value="{switch}"></label> '
    )
    if query.pixel_event != report.PIXEL_EVENT:
        extra += f'<input type="hidden" name="pixel_event" value="{esc(query.pixel_event)}">'
    return range_form(PATH, query.start, query.end, extra)


def page_body(result: GapReport, query: Query) -> str:
    """The page's HTML (without the shell)."""
    svgs = charts.gap_charts(result)
    return "".join(
        [
            _form(query),
            as_of_notice(result.as_of),
            f'<p class="base" data-testid="method">{esc(method(query.destination))}</p>',
            f'<p class="base">Based on {figure("truth_set", result.total.orders)}'
            f" {esc(display_name(result.destination))}-attributed orders of"
            f" {figure('ledger_orders', result.ledger_orders)}"
            " in the ledger, placed"
            f" {esc(query.start.isoformat())} to {esc(query.end.isoformat())} (UTC).</p>",
            _headline(result),
            _chart(
                svgs["gap"], "The gap bar: truth set, Pixel, server, deduplicated.", "gap", query
            ),
            _periods(result),
            _delivered_by(result),
            _imported(result, query),
            "<h2>Over time</h2>",
            _chart(svgs["timeseries"], "Orders per leg over time.", "timeseries", query),
            _daily(result),
            _breakdowns(result, svgs, query),
            '<p class="muted">"unknown": orders whose landing session is not stored (never'
            " seen, or purged by retention).</p>",
            _downloads(query),
        ]
    )


def error_page(error: ValueError, admin: Admin) -> Response:
    today = datetime.now(UTC).date()
    query = Query(today - timedelta(days=DEFAULT_DAYS - 1), today, None, report.PIXEL_EVENT)
    return render(
        TITLE, notice(str(error), kind="error") + _form(query), admin, active="gap", status=400
    )


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    """Add the gap report page and its downloads."""

    async def gap_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> Response:
        try:
            query = parse_query(request)
        except (RangeError, ParamError) as exc:
            return error_page(exc, admin)
        result = await asyncio.to_thread(
            build, state["store"], query, admin.property_id, rollups.DASHBOARD_STALE
        )
        return render(TITLE, page_body(result, query), admin, active="gap")

    async def gap_json(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        try:
            query = parse_query(request)
        except (RangeError, ParamError) as exc:
            return bad_request(exc)
        result = await asyncio.to_thread(build, state["store"], query, admin.property_id)
        return JSONResponse(result.as_dict())

    async def gap_csv(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        try:
            query = parse_query(request)
        except (RangeError, ParamError) as exc:
            return bad_request(exc)
        result = await asyncio.to_thread(build, state["store"], query, admin.property_id)
        who = "" if query.destination == LEDGER_PLATFORM else f"{query.destination}-"
        filename = f"gap-{who}{query.start.isoformat()}-{query.end.isoformat()}.csv"
        return Response(
            report.to_csv(result),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def gap_chart(
        request: Request, name: str, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        names = charts.chart_names(report.SECTIONS)  # TikTok's report has every chart
        if name not in names:
            return JSONResponse(
                {
                    "error": "not_found",
                    "errors": [
                        {
                            "path": "name",
                            "reason": f"no chart named that; one of {', '.join(names)}",
                        }
                    ],
                },
                status_code=404,
            )
        try:
            query = parse_query(request)
        except (RangeError, ParamError) as exc:
            return bad_request(exc)
        result = await asyncio.to_thread(build, state["store"], query, admin.property_id)
        svg = charts.gap_charts(result).get(name)
        if svg is None:
            return JSONResponse(
                {
                    "error": "not_found",
                    "errors": [
                        {
                            "path": "name",
                            "reason": f"{display_name(query.destination)}'s report has no"
                            f" chart {name} (it has no Pixel state breakdown)",
                        }
                    ],
                },
                status_code=404,
            )
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)

    app.add_api_route(
        PATH, gap_page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
    )
    app.add_api_route(JSON_PATH, gap_json, methods=["GET"], summary="The gap report (admin)")
    app.add_api_route(CSV_PATH, gap_csv, methods=["GET"], summary="The gap report as CSV (admin)")
    app.add_api_route(
        CHART_PATH, gap_chart, methods=["GET"], summary="A chart of the gap report as SVG (admin)"
    )
