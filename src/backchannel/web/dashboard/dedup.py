"""The Dedup page (``/admin/dedup``) and its JSON twin (``/admin/api/dedup``).

Per order: did the Pixel fire, did the server leg deliver, and did both use the same
event_id? The figures come from :func:`backchannel.diagnostics.dedup.dedup_report`; the page
lays out its summary (each share with its base) and one page of orders, and flags event_id
mismatches loudly — the orders the platform counts twice.

Query parameters: ``from``/``to`` (UTC days), ``status`` (``all`` or a verdict),
``page`` (1-based). A bad one answers 400 naming it (HTML page or JSON error).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from backchannel.config import Settings
from backchannel.destinations import display_name, tiktok
from backchannel.diagnostics.dedup import (
    LABELS,
    MAX_PAGE,
    MISMATCH,
    VERDICTS,
    DedupReport,
    DedupRow,
    dedup_report,
)
from backchannel.members import VIEWER
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard.layout import (
    ParamError,
    RangeError,
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

#: the verdict is TikTok's (the Pixel mirror watches its Pixel); others are listed under it
TIKTOK = tiktok.name
PATH = "/admin/dedup"
API_PATH = "/admin/api/dedup"
TITLE = "Dedup"
ALL = "all"


def parse_params(request: Request) -> tuple[str | None, int]:
    """``(status or None for all, page)`` from the query string; raises :class:`ParamError`."""
    raw_status = request.query_params.get("status", "").strip() or ALL
    if raw_status != ALL and raw_status not in VERDICTS:
        raise ParamError(f"status: must be one of {ALL}, {', '.join(VERDICTS)}")
    raw_page = request.query_params.get("page", "").strip() or "1"
    # isascii: str.isdigit() accepts "²", which int() refuses; len: no 5000-digit int()
    if not (raw_page.isascii() and raw_page.isdigit() and len(raw_page) <= 6) or not (
        1 <= int(raw_page) <= MAX_PAGE
    ):
        raise ParamError(f"page: must be a whole number from 1 to {MAX_PAGE}")
    return (None if raw_status == ALL else raw_status), int(raw_page)


# --- the page -----------------------------------------------------------------------------------
def _summary(report: DedupReport) -> str:
    cards = []
    for verdict in VERDICTS:
        share = report.share(verdict)
        css = "card bad" if verdict == MISMATCH and report.counts[verdict] else "card"
        cards.append(
            f'<div class="{css}"><span class="headline">'
            + figure(f"dedup.{verdict}", share, suffix="%" if share is not None else "")
            + f"</span><small>{esc(LABELS[verdict])}: "
            + figure(f"dedup.{verdict}.count", report.counts[verdict])
            + f" of {report.orders}</small></div>"
        )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _row(row: DedupRow) -> list[str]:
    tiktok = row.tiktok or "not sent"
    others = "".join(
        f'<br><small class="muted">{esc(display_name(d))}: {esc(state)}</small>'
        for d, state in row.statuses.items()
        if d != TIKTOK
    )
    verdict = esc(row.advice)
    if row.verdict == MISMATCH:
        verdict = f'<strong class="bad">{verdict}</strong>'
    browser = esc(row.browser_leg)
    if row.mismatch:
        browser = f'<span class="bad">{browser}</span>'
    return [
        esc(row.order_id),
        esc(row.event),
        f"<code>{esc(row.event_id)}</code>",
        browser,
        f'<span class="status-{esc(tiktok.replace(" ", "_"))}">TikTok: {esc(tiktok)}</span>'
        + others,
        f'<span data-verdict="{esc(row.verdict)}">{verdict}</span>',
        esc(when(row.received_at)),
    ]


def _link(report: DedupReport, page: int) -> str:
    query = {"from": report.start.isoformat(), "to": report.end.isoformat(), "page": str(page)}
    if report.status is not None:
        query["status"] = report.status
    return f"{PATH}?{urlencode(query)}"


def _pager(report: DedupReport) -> str:
    links = []
    if report.page > 1:
        links.append(f'<a href="{esc(_link(report, report.page - 1))}" rel="prev">Newer</a>')
    links.append("page " + figure("page", report.page) + " of " + figure("pages", report.pages))
    if report.page < report.pages:
        links.append(f'<a href="{esc(_link(report, report.page + 1))}" rel="next">Older</a>')
    return '<p class="pager">' + " · ".join(links) + "</p>"


def _status_select(current: str | None) -> str:
    options = "".join(
        f'<option value="{v}"{" selected" if v == (current or ALL) else ""}>'
        f"{esc(LABELS.get(v, 'all orders'))}</option>"
        for v in (ALL, *VERDICTS)
    )
    return f'<label>Show <select name="status">{options}</select></label> '


def page_body(report: DedupReport) -> str:
    """The page's HTML (without the shell): summary, mismatch alarm, the table of orders."""
    parts = [range_form(PATH, report.start, report.end, _status_select(report.status))]
    if report.capped:
        parts.append(
            notice(
                f"The range holds more than {report.cap} orders: these figures are based on the"
                f" latest {report.cap} of them only. Pick a shorter range for all of them."
            )
        )
    mismatches = report.counts[MISMATCH]
    if mismatches:
        parts.append(
            notice(
                f"{mismatches} order(s) had a Pixel event with a DIFFERENT event_id than the server"
                " leg: the platform cannot pair them and counts those orders twice. Make the"
                " Pixel's ttq.track use the event_id Backchannel derives ({event}-{order_id},"
                " bc.eventId in bc.js).",
                kind="error",
            )
        )
    parts.append(
        '<p class="base">Based on '
        + figure("orders", report.orders)
        + " production orders received in the range (conversions with an order_id; test"
        " events are not counted; "
        + figure("unsent", report.unsent)
        + " sent to no platform, opted out or routed nowhere, are counted apart). Both legs:"
        " the Pixel fired with the same event_id and the server leg was delivered to"
        " TikTok.</p>"
    )
    parts.append(_summary(report))
    shown = LABELS[report.status] if report.status else "all orders"
    parts.append(f"<h2>Orders: {esc(shown)}</h2>")
    parts.append(
        '<p class="base">'
        + figure("matching", report.matching)
        + " order(s) match, newest first.</p>"
    )
    parts.append(
        table(
            ["order", "event", "event_id", "browser leg", "server leg", "verdict", "received"],
            (_row(r) for r in report.rows),
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
            status, page = parse_params(request)
        except (RangeError, ParamError) as exc:
            return error_page(TITLE, PATH, exc, admin, "dedup")
        report = await asyncio.to_thread(
            functools.partial(
                dedup_report,
                state["store"],
                start,
                end,
                status=status,
                page=page,
                property_id=admin.property_id,
            )
        )
        return render(TITLE, page_body(report), admin, active="dedup")

    async def dedup_api(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        try:
            start, end = parse_range(request)
            status, page = parse_params(request)
        except (RangeError, ParamError) as exc:
            return bad_request(exc)
        report = await asyncio.to_thread(
            functools.partial(
                dedup_report,
                state["store"],
                start,
                end,
                status=status,
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
        summary="Browser and server legs per order, and their event_ids (admin)",
    )
