"""Test events, shown apart from production, and "Fire a test order".

``GET /admin/test-events`` lists conversions carrying a ``test_event_code`` (production ones
are never listed here, and test ones never count as orders: see :mod:`backchannel.testorder`).
``POST /admin/test-events/fire`` ingests the built-in sample order through the real pipeline
and answers 303 to ``GET /admin/test-events/{conversion_id}``: per destination, side by side,
what was sent, what the platform answered and which identifiers it carried. That page reloads
itself every 2 s (a ``<meta>`` refresh: the CSP forbids script) until every row is final.

Everything is the request's property's (``?property=``), as ``backchannel send --test
--property`` is: the list and its counts, the connections a fired order goes to (and their
test event codes, and the property's default region), and the detail page, which answers 404
for another property's conversion id rather than show it.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backchannel import testorder
from backchannel.config import Settings
from backchannel.diagnostics import pretty
from backchannel.members import EDITOR, VIEWER
from backchannel.properties import context
from backchannel.routing import active_connections, active_destinations
from backchannel.store.base import Store
from backchannel.web.access import require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc

PATH = "/admin/test-events"
LIST_LIMIT = 100


def status_cell(status: str) -> str:
    return f'<span class="status-{esc(status.replace(" ", "_"))}">{esc(status)}</span>'


def list_page(
    store: Store,
    settings: Settings,
    admin: Admin,
    *,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    pid = admin.property_id
    rows = store.read(
        "SELECT id, received_at, event, event_id, test_event_code FROM conversions"
        " WHERE test_event_code IS NOT NULL AND property_id = ?"
        " ORDER BY received_at DESC, id DESC LIMIT ?",
        (pid, LIST_LIMIT),
    )
    counts = store.read(
        "SELECT COUNT(*), SUM(CASE WHEN test_event_code IS NULL THEN 0 ELSE 1 END)"
        " FROM conversions WHERE property_id = ?",
        (pid,),
    )
    total, tests = int(counts[0][0] or 0), int(counts[0][1] or 0)
    ids = [int(r[0]) for r in rows]
    per: dict[int, dict[str, str]] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        for cid, destination, state in store.read(
            f"SELECT conversion_id, destination, status FROM outbox"  # noqa: S608 - only ?s
            f" WHERE conversion_id IN ({marks})",
            ids,
        ):
            per.setdefault(int(cid), {})[str(destination)] = str(state)
    destinations = active_destinations(store, settings.destinations, pid)
    table_rows = []
    for cid, received_at, event, event_id, code in rows:
        found = per.get(int(cid), {})
        table_rows.append(
            [
                esc(layout.when(float(received_at))),
                esc(event),
                f"<code>{esc(event_id)}</code>",
                f'<span class="badge test">{esc(code)}</span>',
                *[status_cell(found.get(d, testorder.NOT_ROUTED)) for d in destinations],
                f'<a href="{PATH}/{int(cid)}">details</a>',  # render() adds ?property=
            ]
        )
    body = (
        layout.notice(message, kind="error")
        + "<p>A conversion is a <strong>test</strong> when it carries a"
        " <code>test_event_code</code>: the platforms show it under Events Manager → Test"
        " Events, not in reporting. Test orders never enter the order ledger or the gap"
        " report.</p>"
        + '<p class="cards">'
        + f'<span class="card">{layout.figure("test_conversions", tests)}<small>test'
        " conversions</small></span>"
        + f'<span class="card">{layout.figure("production_conversions", total - tests)}'
        "<small>production conversions (not listed here)</small></span></p>"
        + (
            layout.post_button(admin, PATH + "/fire", "Fire a test order")
            + " <span class=muted>A sample CompletePayment (1.00 USD, test@example.com) through"
            " the real pipeline, with each destination's test event code.</span>"
            if admin.may(EDITOR)
            else ""
        )
        + layout.table(
            ["Received", "Event", "event_id", "Code", *destinations, ""],
            table_rows,
            caption=f"Newest {LIST_LIMIT} test conversions",
            empty="No test event yet.",
            test_id="test-events",
        )
    )
    return layout.render("Test events", body, admin, active="tests", status=status)


def detail_body(view: testorder.SideBySide) -> str:
    columns = []
    for d in view.destinations:
        idents = (
            "<ul>"
            + "".join(f"<li><code>{esc(i.key)}</code> {esc(i.shown)}</li>" for i in d.identifiers)
            + "</ul>"
            if d.identifiers
            else "<p class=muted>none (nothing sent yet)</p>"
        )
        answered = pretty(d.answered) or d.last_error
        columns.append(
            f'<section class="destination" data-testid="result-{esc(d.destination)}">'
            f"<h2>{esc(d.destination)}: "
            f'<span data-testid="status-{esc(d.destination)}">{status_cell(d.status)}</span></h2>'
            f"<p>test_event_code sent: <code>{esc(d.code_sent or '—')}</code>"
            f" · attempts {layout.figure('attempts_' + d.destination, d.attempts)}"
            + (f" · platform ref <code>{esc(d.platform_ref)}</code>" if d.platform_ref else "")
            + "</p>"
            '<div class="side-by-side">'
            f'<div><h3>Sent</h3><pre data-testid="sent-{esc(d.destination)}">'
            f"{esc(d.sent or '—')}</pre></div>"
            f'<div><h3>Answered</h3><pre data-testid="answered-{esc(d.destination)}">'
            f"{esc(answered or '—')}</pre></div>"
            f'<div><h3>Identifiers</h3><div data-testid="identifiers-{esc(d.destination)}">'
            f"{idents}</div></div>"
            "</div></section>"
        )
    head = (
        f"<p>{esc(view.event)} <code>{esc(view.event_id)}</code>, received"
        f" {esc(layout.when(view.received_at))}, code"
        f' <span class="badge test">{esc(view.test_event_code)}</span>.'
        + (
            " <span class=warn>Waiting for delivery; this page reloads every 2 s.</span>"
            if not view.final
            else " <span class=ok>Every destination is done.</span>"
        )
        + f' <a href="{PATH}">All test events</a></p>'
    )
    return head + "".join(columns)


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    async def show_list(
        admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))],
    ) -> HTMLResponse:
        return list_page(state["store"], settings, admin)

    async def fire(
        request: Request, admin: Annotated[Admin, Depends(require_role(EDITOR))]
    ) -> Response:
        store: Store = state["store"]
        found = store.get_property(admin.property_id)
        if found is None:  # deleted since the page was shown
            return list_page(store, settings, admin, message="property: not found", status=404)
        owner = context(found, settings)
        try:
            own = active_connections(store, settings.destinations, owner.id)
            code = testorder.resolve_code(None, {c.name: c for c in own}, [c.name for c in own])
            fired = await testorder.fire(
                testorder.sample_order(code),
                state["runner"],
                now=time.time(),
                default_region=owner.default_region,  # the property's, else the install's
                destinations=settings.destinations,  # what routes were built for
                routes=state.get("routes"),
                stitch_window=settings.click_cookie_days * 86400.0,
                property_id=owner.id,
            )
        except testorder.FireError as exc:
            return list_page(store, settings, admin, message=str(exc), status=400)
        store.audit(
            time.time(), admin.actor, "test.fire", f"{fired.event} {fired.event_id}", owner.id
        )
        return RedirectResponse(
            layout.on_property(admin, f"{PATH}/{fired.conversion_id}"), status_code=303
        )

    async def show_one(
        conversion_id: str, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        store: Store = state["store"]
        if not conversion_id.isdigit() or len(conversion_id) > 18:
            return list_page(
                store,
                settings,
                admin,
                message="conversion_id: not a conversion number",
                status=404,
            )
        view = testorder.load_view(
            store,
            int(conversion_id),
            active_destinations(store, settings.destinations, admin.property_id),
            property_id=admin.property_id,
        )
        if view is None:
            return list_page(
                store,
                settings,
                admin,
                message=f"conversion_id: {conversion_id} is not a stored test conversion"
                " of this property",
                status=404,
            )
        return layout.render(
            "Test event",
            detail_body(view),
            admin,
            active="tests",
            refresh=None if view.final else 2,
        )

    app.add_api_route(PATH, show_list, methods=["GET"], include_in_schema=False)
    app.add_api_route(PATH + "/fire", fire, methods=["POST"], include_in_schema=False)
    app.add_api_route(PATH + "/{conversion_id}", show_one, methods=["GET"], include_in_schema=False)
