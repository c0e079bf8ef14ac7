"""The Identifiers page (``/admin/identifiers``) and its JSON twin (``/admin/api/identifiers``).

What a shop asks before trusting the server leg: which identifiers do my conversions really
carry, per event name, and which one should I add first? The figures come from
:func:`backchannel.diagnostics.identifiers.identifiers_report`; the page only lays them out,
and the JSON twin returns the same report, so a script and a person read the same numbers.
Only hashes ever reach the report, and the page shows shares and scores, never a value.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from backchannel import quality, rollups
from backchannel.config import Settings
from backchannel.destinations import display_name
from backchannel.diagnostics.identifiers import (
    EventIdentifiers,
    IdentifiersReport,
    identifiers_report,
)
from backchannel.members import VIEWER
from backchannel.routing import active_destinations
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard.layout import (
    RangeError,
    as_of_notice,
    bad_request,
    error_page,
    esc,
    figure,
    parse_range,
    range_form,
    render,
    table,
)

PATH = "/admin/identifiers"
API_PATH = "/admin/api/identifiers"
TITLE = "Identifiers"


def _share_cell(entry: EventIdentifiers, key: str) -> str:
    share = entry.share(key)
    return figure(f"share.{entry.event}.{key}", share, suffix="%" if share is not None else "")


def _quality_cells(entry: EventIdentifiers, destination: str) -> list[str]:
    estimate = entry.quality.get(destination)
    if estimate is None:
        return [figure(f"score.{destination}.{entry.event}", None), "—"]
    score = figure(f"score.{destination}.{entry.event}", estimate.score, suffix=" / 10")
    if not estimate.advice:
        return [score, '<span class="ok">carries every identifier</span>']
    best = estimate.advice[0]
    advice = esc(f"add {best.label}: +") + figure(
        f"gain.{destination}.{entry.event}", f"{best.gain:.1f}"
    )
    if len(estimate.advice) > 1:
        runner_up = estimate.advice[1]
        advice += f'<br><small class="muted">then {esc(str(runner_up))}</small>'
    return [score, advice]


def _weights_table(destinations: tuple[str, ...]) -> str:
    rows = [
        [esc(quality.LABELS[k]), *(esc(quality.WEIGHTS[d].get(k, 0.0)) for d in destinations)]
        for k in quality.LABELS
    ]
    return table(
        ["identifier", *(display_name(d) for d in destinations)],
        rows,
        caption="Weights (each column adds up to 10)",
    )


def page_body(report: IdentifiersReport) -> str:
    """The page's HTML (without the shell): counts first, then quality, then the method."""
    parts = [range_form(PATH, report.start, report.end), as_of_notice(report.as_of)]
    parts.append(
        '<p class="base">Based on '
        + figure("conversions", report.conversions)
        + " production conversions received in the range (test events are not counted; "
        + figure("opted_out", report.opted_out)
        + " opted-out conversions are counted apart: they are never sent).</p>"
    )
    columns = report.identifiers
    headers = ["event", "conversions", *(i.label for i in columns), "stitched from session"]
    rows = [
        [
            esc(e.event),
            figure(f"conversions.{e.event}", e.conversions)
            + (f' <small class="muted">+{e.opted_out} opted out</small>' if e.opted_out else ""),
            *(_share_cell(e, i.key) for i in columns),
            figure(
                f"stitched.{e.event}",
                e.share_stitched(),
                suffix="%" if e.conversions else "",
            ),
        ]
        for e in report.events
    ]
    parts.append("<h2>Identifiers carried</h2>")
    parts.append(
        table(
            headers,
            rows,
            caption="Share of each event name's conversions carrying the identifier ("
            + "; ".join(
                f"{i.label} matters to {display_name(i.platforms)}"
                for i in columns
                if i.platforms != "all"
            )
            + ")",
            empty="No production conversions in this range.",
            test_id="identifiers",
        )
    )
    parts.append("<h2>Match quality (local estimate, 0–10)</h2>")
    quality_rows = [
        [
            esc(e.event),
            *(cell for d in report.destinations for cell in _quality_cells(e, d)),
        ]
        for e in report.events
        if e.conversions
    ]
    parts.append(
        table(
            [
                "event",
                *(h for d in report.destinations for h in (display_name(d), "what raises it most")),
            ],
            quality_rows,
            empty="No production conversions in this range.",
            test_id="quality",
        )
    )
    parts.append(
        "<p class=\"muted\">Our own heuristic, not TikTok's or Meta's formula (neither publishes"
        " one): an event's score is the sum of the weights of the identifiers it carries, an"
        " event name's score the mean over its conversions. The advice for an identifier is its"
        " weight times the share of conversions lacking it: what the score would gain if every"
        " conversion carried it. IP and user agent count only together.</p>"
    )
    parts.append(_weights_table(report.destinations))
    return "".join(parts)


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    """Add the Identifiers page and its JSON twin."""

    def _report(
        start: date, end: date, property_id: int | None, max_stale: float = 0.0
    ) -> IdentifiersReport:
        """The page passes rollups.DASHBOARD_STALE; the JSON twin is exact (0)."""
        store = state["store"]
        active = active_destinations(store, settings.destinations)
        return identifiers_report(
            store,
            start,
            end,
            destinations=active,
            property_id=property_id,
            max_stale=max_stale,
        )

    async def identifiers_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> Response:
        try:
            start, end = parse_range(request)
        except RangeError as exc:
            return error_page(TITLE, PATH, exc, admin, "identifiers")
        report = await asyncio.to_thread(
            _report, start, end, admin.property_id, rollups.DASHBOARD_STALE
        )
        return render(TITLE, page_body(report), admin, active="identifiers")

    async def identifiers_api(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        try:
            start, end = parse_range(request)
        except RangeError as exc:
            return bad_request(exc)
        report = await asyncio.to_thread(_report, start, end, admin.property_id)
        return JSONResponse(report.to_dict())

    app.add_api_route(
        PATH,
        identifiers_page,
        methods=["GET"],
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    app.add_api_route(
        API_PATH,
        identifiers_api,
        methods=["GET"],
        summary="Identifiers carried and match quality per event name (admin)",
    )
