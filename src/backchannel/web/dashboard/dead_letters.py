"""Dead letters: the list, one letter in full, and replay (``/admin/dead-letters``).

Replay is a POST that needs the session's CSRF token (or an admin API key): it re-queues
through :meth:`Store.replay`, the same call as ``backchannel replay``, writes an audit row,
wakes this process's worker, and redirects to the list with ``?replayed=N`` — an integer the
list renders into a fixed sentence, so no text a caller sent is ever reflected.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from backchannel.config import Settings
from backchannel.destinations import DESTINATIONS
from backchannel.diagnostics import pretty
from backchannel.diagnostics.dead_letters import (
    DeadLetter,
    DeadPage,
    dead_count,
    dead_letter,
    dead_page,
)
from backchannel.members import EDITOR, VIEWER
from backchannel.web.access import require_role
from backchannel.web.auth import Admin, read_form
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import ParamError, esc, figure, post_button, table, when

PATH = "/admin/dead-letters"
REPLAY_PATH = "/admin/dead-letters/replay"
API_PATH = "/admin/api/dead-letters"
MAX_EVENT_ID = 256  # characters; longer is no event_id we could have stored
MAX_PAGE = 1_000_000


def parse_destination(raw: str | None, known: tuple[str, ...]) -> str | None:
    value = (raw or "").strip()
    if not value:
        return None
    if value not in known:
        raise ParamError(f"destination: must be one of {', '.join(known)}")
    return value


def parse_count(name: str, raw: str | None, *, minimum: int, default: int | None) -> int | None:
    """A small non-negative integer parameter (``page``, ``replayed``)."""
    value = (raw or "").strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 7 or int(value) < minimum:
        raise ParamError(f"{name}: must be a whole number of at least {minimum}")
    return int(value)


def list_params(request: Request, known: tuple[str, ...]) -> tuple[int, str | None]:
    q = request.query_params
    page = parse_count("page", q.get("page"), minimum=1, default=1)
    assert page is not None
    return min(page, MAX_PAGE), parse_destination(q.get("destination"), known)


# --- rendering ---------------------------------------------------------------------------------
def _page_link(page: int, destination: str | None, label: str) -> str:
    query = {"page": str(page), **({"destination": destination} if destination else {})}
    return f'<a href="{PATH}?{esc(urlencode(query))}">{esc(label)}</a>'


def _filter_form(destination: str | None, known: tuple[str, ...]) -> str:
    options = '<option value="">all</option>' + "".join(
        f'<option value="{esc(d)}"{" selected" if d == destination else ""}>{esc(d)}</option>'
        for d in known
    )
    return (
        f'<form method="get" action="{PATH}" class="range"><label>Destination '
        f'<select name="destination">{options}</select></label>'
        '<button type="submit">Show</button></form>'
    )


def replayed_notice(n: int) -> str:
    word = "delivery" if n == 1 else "deliveries"
    return f'<p class="notice ok" role="status">Re-queued {figure("replayed", n)} {word}.</p>'


def render_list(data: DeadPage, admin: Admin, known: tuple[str, ...], replayed: int | None) -> str:
    # replay buttons only for those who may replay (an editor or owner): a viewer sees none
    can_replay = admin.may(EDITOR)
    rows = [
        [
            esc(r.destination),
            esc(r.event) + (' <span class="badge test">test</span>' if r.test else ""),
            f'<a href="{PATH}/{r.outbox_id}">{esc(r.event_id)}</a>',
            str(r.attempts),
            esc(r.reason),
            esc(when(r.died_at)),
            *(
                [
                    post_button(
                        admin, REPLAY_PATH, "Replay", event_id=r.event_id, destination=r.destination
                    )
                ]
                if can_replay
                else []
            ),
        ]
        for r in data.rows
    ]
    links = []
    if data.page > 1:
        links.append(_page_link(data.page - 1, data.destination, "← newer"))
    if data.page < data.pages:
        links.append(_page_link(data.page + 1, data.destination, "older →"))
    scope = f" to {data.destination}" if data.destination else ""
    replay_all = (
        post_button(
            admin,
            REPLAY_PATH,
            f"Replay all {data.total}{scope}",
            all="1",
            **({"destination": data.destination} if data.destination else {}),
        )
        if data.total and can_replay
        else ""
    )
    return (
        (replayed_notice(replayed) if replayed is not None else "")
        + _filter_form(data.destination, known)
        + f"<p>{figure('dead_total', data.total)} dead letters{esc(scope)}; page "
        f"{figure('page', data.page)} of {figure('pages', data.pages)}. {replay_all}</p>"
        + '<p class="muted">Newest first, by when the platform refused them.</p>'
        + table(
            ["destination", "event", "event_id", "attempts", "reason", "died"]
            + ([""] if can_replay else []),
            rows,
            empty="No dead letters.",
            test_id="dead-letters",
        )
        + (f'<p class="pager">{" ".join(links)}</p>' if links else "")
    )


def render_detail(letter: DeadLetter, admin: Admin) -> str:
    facts = [
        ["destination", esc(letter.destination)],
        ["status", f'<span class="status-{esc(letter.status)}">{esc(letter.status)}</span>'],
        ["attempts", figure("attempts", letter.attempts)],
        ["event", esc(letter.event)],
        ["event_id", f"<code>{esc(letter.event_id)}</code>"],
        ["event time", esc(when(letter.event_time))],
        ["received", esc(when(letter.received_at))],
        ["died", esc(when(letter.died_at))],
        ["test event", '<span class="badge test">test</span>' if letter.test_event_code else "no"],
    ]
    fact_rows = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in facts)
    if letter.status != "dead":
        replay = '<p class="muted">Not dead any more: nothing to replay.</p>'
    elif admin.may(EDITOR):
        replay = post_button(
            admin,
            REPLAY_PATH,
            "Replay",
            event_id=letter.event_id,
            destination=letter.destination,
        )
    else:
        replay = '<p class="muted">Replaying needs the editor role.</p>'

    body = (
        pretty(letter.sent_body)
        if letter.sent_body is not None
        else "(not recorded: the row was never dead-lettered)"
    )
    # the answer indented when it is JSON (both platforms answer JSON), else as it came
    answer = pretty(letter.response)
    return (
        f'<p><a href="{PATH}">← all dead letters</a></p>'
        f'<table data-testid="facts"><tbody>{fact_rows}</tbody></table>'
        f'<h2>Reason</h2><p data-testid="reason">{esc(letter.reason) or "—"}</p>'
        f'<h2>The platform\'s answer</h2><pre data-testid="response">{esc(answer)}</pre>'
        f'<h2>The body sent</h2><pre data-testid="sent-body">{esc(body)}</pre>'
        f"{replay}"
    )


# --- routes ------------------------------------------------------------------------------------
def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    known = tuple(dict.fromkeys((*settings.destinations, *DESTINATIONS)))

    def bad_page(admin: Admin, error: ParamError, status: int = 400) -> HTMLResponse:
        body = layout.notice(str(error), kind="error") + f'<p><a href="{PATH}">Dead letters</a></p>'
        return layout.render("Dead letters", body, admin, active="dead", status=status)

    @app.get(PATH, include_in_schema=False, response_class=HTMLResponse)
    async def list_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        try:
            page, destination = list_params(request, known)
            replayed = parse_count(
                "replayed", request.query_params.get("replayed"), minimum=0, default=None
            )
        except ParamError as exc:
            return bad_page(admin, exc)
        data = await asyncio.to_thread(
            functools.partial(
                dead_page,
                state["store"],
                page=page,
                destination=destination,
                property_id=admin.property_id,
            )
        )
        return layout.render(
            "Dead letters", render_list(data, admin, known, replayed), admin, active="dead"
        )

    @app.get(API_PATH, summary="Dead letters, newest first (admin session or admin API key)")
    async def list_json(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> JSONResponse:
        try:
            page, destination = list_params(request, known)
        except ParamError as exc:
            return layout.bad_request(exc)
        data = await asyncio.to_thread(
            functools.partial(
                dead_page,
                state["store"],
                page=page,
                destination=destination,
                property_id=admin.property_id,
            )
        )
        return JSONResponse(data.to_json())

    @app.get(PATH + "/{outbox_id}", include_in_schema=False, response_class=HTMLResponse)
    async def detail_page(
        outbox_id: str, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        if not outbox_id.isdigit() or len(outbox_id) > 18:
            return bad_page(admin, ParamError("outbox_id: must be a whole number"))
        letter = await asyncio.to_thread(
            dead_letter, state["store"], int(outbox_id), admin.property_id
        )
        if letter is None:
            return bad_page(admin, ParamError("outbox_id: no such outbox row"), 404)
        title = f"Dead letter {letter.outbox_id}"
        return layout.render(title, render_detail(letter, admin), admin, active="dead")

    @app.post(REPLAY_PATH, include_in_schema=False)
    async def replay(
        request: Request, admin: Annotated[Admin, Depends(require_role(EDITOR))]
    ) -> Response:
        form = await read_form(request)

        def refuse(error: ParamError, status: int = 400) -> Response:
            return (
                layout.bad_request(error, status)
                if admin.via == "key"
                else bad_page(admin, error, status)
            )

        store = state["store"]
        try:
            destination = parse_destination(form.get("destination"), known)
            everything = form.get("all", "").strip()
            event_id = form.get("event_id", "").strip()
            if everything not in ("", "1"):
                raise ParamError("all: must be 1 (replay every dead letter)")
            if everything and event_id:
                raise ParamError("all: give either event_id or all=1, not both")
            if not everything and not event_id:
                raise ParamError("event_id: required (or all=1 to replay every dead letter)")
            if len(event_id) > MAX_EVENT_ID:
                raise ParamError(f"event_id: longer than {MAX_EVENT_ID} characters")
        except ParamError as exc:
            return refuse(exc)
        if event_id and not await asyncio.to_thread(
            dead_count, store, event_id, destination, admin.property_id
        ):
            where = f" for {destination}" if destination else ""
            return refuse(ParamError(f"event_id: no dead letter with this event_id{where}"), 404)
        now = time.time()
        runner = state["runner"]
        count: int = await runner.run(
            functools.partial(
                store.replay,
                now,
                event_id=event_id or None,
                destination=destination,
                property_id=admin.property_id,  # the request's property's letters only
            )
        )
        what = f"event_id {event_id}" if event_id else "all dead"
        detail = f"{what}, destination {destination or 'all'}: {count} re-queued"
        await runner.run(store.audit, now, admin.actor, "replay", detail, admin.property_id)
        worker = state.get("worker")
        if worker is not None and count:
            worker.wake("*")  # lanes are per connection: each looks at its own rows
        query = {"replayed": str(count), **({"destination": destination} if destination else {})}
        return RedirectResponse(layout.on_property(admin, PATH, **query), status_code=303)
