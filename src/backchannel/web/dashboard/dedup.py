"""The Dedup page (``/admin/dedup``) and its JSON twin (``/admin/api/dedup``).

Per order and per platform: did its Pixel fire, did its server leg deliver, and did both use
the same id (in the platform's key: our event_id, or the order id for Google's tag)? The
figures come from :func:`backchannel.diagnostics.dedup.dedup_report`; the page lays out, per
destination, its summary (each share with its base), then one page of orders with one verdict
per destination, and flags id mismatches loudly — the orders a platform counts twice.

Query parameters: ``from``/``to`` (UTC days), ``status`` (``all`` or a verdict),
``destination`` (``all`` or a destination's name: the one ``status`` is about; at any
destination when ``all``), ``page`` (1-based). A bad one answers 400 naming it (HTML page or
JSON error).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from backchannel import rollups
from backchannel.config import Settings
from backchannel.destinations import DESTINATIONS, display_name
from backchannel.diagnostics.dedup import (
    LABELS,
    MAX_PAGE,
    MISMATCH,
    SHORT,
    VERDICTS,
    DedupReport,
    DedupRow,
    Leg,
    dedup_report,
)
from backchannel.members import VIEWER
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard.layout import (
    ParamError,
    RangeError,
    as_of_notice,
    bad_request,
    error_page,
    esc,
    figure,
    notice,
    parse_range,
    range_form,
    render,
    table,
    when,
)

PATH = "/admin/dedup"
API_PATH = "/admin/api/dedup"
TITLE = "Dedup"
ALL = "all"


def parse_params(request: Request) -> tuple[str | None, str | None, int]:
    """``(status, destination, page)`` from the query string (None: all); raises
    :class:`ParamError` naming the bad one."""
    raw_status = request.query_params.get("status", "").strip() or ALL
    if raw_status != ALL and raw_status not in VERDICTS:
        raise ParamError(f"status: must be one of {ALL}, {', '.join(VERDICTS)}")
    raw_destination = request.query_params.get("destination", "").strip() or ALL
    if raw_destination != ALL and raw_destination not in DESTINATIONS:
        raise ParamError(f"destination: must be one of {ALL}, {', '.join(DESTINATIONS)}")
    raw_page = request.query_params.get("page", "").strip() or "1"
    # isascii: str.isdigit() accepts "²", which int() refuses; len: no 5000-digit int()
    if not (raw_page.isascii() and raw_page.isdigit() and len(raw_page) <= 6) or not (
        1 <= int(raw_page) <= MAX_PAGE
    ):
        raise ParamError(f"page: must be a whole number from 1 to {MAX_PAGE}")
    return (
        None if raw_status == ALL else raw_status,
        None if raw_destination == ALL else raw_destination,
        int(raw_page),
    )


# --- the page -----------------------------------------------------------------------------------
def _summary(report: DedupReport) -> str:
    """One line per destination: each verdict's share of the base, and its count."""
    rows = []
    for d in report.destinations:
        cells = [esc(display_name(d))]
        for verdict in VERDICTS:
            share = report.share(d, verdict)
            count = report.counts[d][verdict]
            cell = (
                figure(f"dedup.{d}.{verdict}", share, suffix="%" if share is not None else "")
                + " <small>("
                + figure(f"dedup.{d}.{verdict}.count", count)
                + ")</small>"
            )
            if verdict == MISMATCH and count:
                cell = f'<strong class="bad">{cell}</strong>'
            cells.append(cell)
        rows.append(cells)
    return table(
        ["destination", *(LABELS[v] for v in VERDICTS)],
        rows,
        caption="Each destination's verdicts, as a share of the orders (and how many)",
        empty="No destination received or was shown any of these orders.",
        test_id="dedup-summary",
    )


def _leg(leg: Leg) -> str:
    verdict = esc(SHORT[leg.verdict])
    if leg.verdict == MISMATCH:
        verdict = f'<strong class="bad">{verdict}</strong>'
    browser = esc(leg.browser_leg)
    if leg.mismatch:
        browser = f'<span class="bad">{browser}</span>'
    return (
        f'<span data-destination="{esc(leg.destination)}" data-verdict="{esc(leg.verdict)}"'
        f' title="{esc(leg.advice)}">{verdict}</span>'
        f'<br><small class="muted">browser: {browser}'
        f' · <span class="status-{esc(leg.server_leg.replace(" ", "_"))}">server:'
        f" {esc(leg.server_leg)}</span></small>"
    )


def _row(report: DedupReport, row: DedupRow) -> list[str]:
    return [
        esc(row.order_id),
        esc(row.event),
        f"<code>{esc(row.event_id)}</code>",
        *(_leg(row.legs[d]) for d in report.destinations),
        esc(when(row.received_at)),
    ]


def _link(report: DedupReport, page: int) -> str:
    query = {"from": report.start.isoformat(), "to": report.end.isoformat(), "page": str(page)}
    if report.status is not None:
        query["status"] = report.status
    if report.destination is not None:
        query["destination"] = report.destination
    return f"{PATH}?{urlencode(query)}"


def _pager(report: DedupReport) -> str:
    links = []
    if report.page > 1:
        links.append(f'<a href="{esc(_link(report, report.page - 1))}" rel="prev">Newer</a>')
    links.append("page " + figure("page", report.page) + " of " + figure("pages", report.pages))
    if report.page < report.pages:
        links.append(f'<a href="{esc(_link(report, report.page + 1))}" rel="next">Older</a>')
    return '<p class="pager">' + " · ".join(links) + "</p>"


def _filters(report: DedupReport) -> str:
    statuses = "".join(
        f'<option value="{v}"{" selected" if v == (report.status or ALL) else ""}>'
        f"{esc(LABELS.get(v, 'all orders'))}</option>"
        for v in (ALL, *VERDICTS)
    )
    destinations = "".join(
        f'<option value="{esc(d)}"{" selected" if d == (report.destination or ALL) else ""}>'
        f"{esc('any destination' if d == ALL else display_name(d))}</option>"
        for d in (ALL, *DESTINATIONS)
    )
    return (
        f'<label>Show <select name="status">{statuses}</select></label> '
        f'<label>at <select name="destination">{destinations}</select></label> '
    )


def page_body(report: DedupReport) -> str:
    """The page's HTML (without the shell): summary, mismatch alarm, the table of orders."""
    parts = [
        range_form(PATH, report.start, report.end, _filters(report)),
        as_of_notice(report.as_of),
    ]
    mismatches = report.mismatches
    if mismatches:
        where = ", ".join(f"{display_name(d)} ({n})" for d, n in mismatches.items())
        parts.append(
            notice(
                f"Orders had a Pixel call with a DIFFERENT id than the server leg at {where}:"
                " the platform cannot pair them and counts those orders twice. Give each"
                " Pixel's call the id Backchannel derives ({event}-{order_id}, bc.eventId in"
                " bc.js): ttq.track's event_id, fbq's eventID, snaptr's client_dedup_id,"
                " pintrk's event_id, rdt's conversionId; gtag's transaction_id is the order"
                " id itself.",
                kind="error",
            )
        )
    parts.append(
        '<p class="base">Based on '
        + figure("orders", report.orders)
        + " production orders received in the range (conversions with an order_id; test"
        " events are not counted; "
        + figure("unsent", report.unsent)
        + " sent to no platform, opted out or routed nowhere, are counted apart). Per"
        " destination, both legs: its Pixel fired with the id the platform pairs on (the"
        " event_id; Google's tag: the order id as transaction_id) and the server leg was"
        " delivered there.</p>"
    )
    parts.append(_summary(report))
    shown = LABELS[report.status] if report.status else "all orders"
    if report.status and report.destination:
        shown += f" at {display_name(report.destination)}"
    elif report.status:
        shown += " at any destination"
    parts.append(f"<h2>Orders: {esc(shown)}</h2>")
    parts.append(
        '<p class="base">'
        + figure("matching", report.matching)
        + " order(s) match, newest first.</p>"
    )
    parts.append(
        table(
            [
                "order",
                "event",
                "event_id",
                *(display_name(d) for d in report.destinations),
                "received",
            ],
            (_row(report, r) for r in report.rows),
            empty="No orders here.",
            test_id="dedup",
        )
    )
    parts.append(_pager(report))
    return "".join(parts)


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    """Add the Dedup page and its JSON twin."""

    async def dedup_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> Response:
        try:
            start, end = parse_range(request)
            status, destination, page = parse_params(request)
        except (RangeError, ParamError) as exc:
            return error_page(TITLE, PATH, exc, admin, "dedup")
        report = await asyncio.to_thread(
            functools.partial(
                dedup_report,
                state["store"],
                start,
                end,
                status=status,
                destination=destination,
                page=page,
                property_id=admin.property_id,
                max_stale=rollups.DASHBOARD_STALE,
            )
        )
        return render(TITLE, page_body(report), admin, active="dedup")

    async def dedup_api(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        try:
            start, end = parse_range(request)
            status, destination, page = parse_params(request)
        except (RangeError, ParamError) as exc:
            return bad_request(exc)
        report = await asyncio.to_thread(
            functools.partial(
                dedup_report,
                state["store"],
                start,
                end,
                status=status,
                destination=destination,
                page=page,
                property_id=admin.property_id,
            )
        )
        return JSONResponse(report.to_dict())

    app.add_api_route(
        PATH, dedup_page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
    )
    app.add_api_route(
        API_PATH,
        dedup_api,
        methods=["GET"],
        summary="Browser and server legs per order and per destination, and their ids (admin)",
    )
