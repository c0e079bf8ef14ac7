"""The Members page (owners only): who may log in, with which role on which property.

``GET /admin/members`` lists the members with a role on the request's property (their own or
one on every property) and ``GET /admin/api/members`` is its JSON twin; names, roles and
dates only, never a password or its hash. Three POSTs, each needing the owner role on the
property and the session's CSRF token, each audited with the acting member's name:

- ``/admin/members/add``: name, password (typed by the owner, never shown again), role, and
  ``scope`` = ``property`` (this property) or ``all`` (every property: a host owner only);
- ``/admin/members/role``: name, role (or ``none`` to take the grant away), scope;
- ``/admin/members/remove``: name — the member's access altogether (a host owner only).

The rules (the last host owner, who may grant what) are :mod:`backchannel.members`', shared
with ``backchannel member``. A refused form is answered with the page and the reason (the
password is never echoed); a done one redirects to the list with ``?done=add|role|remove``, a
fixed sentence, so no text a caller sent is reflected.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from backchannel import members
from backchannel.config import Settings
from backchannel.members import OWNER, ROLES, MemberError, NotAllowed, UnknownMember
from backchannel.store.base import Grant, Member, Store
from backchannel.web.access import require_role
from backchannel.web.auth import Admin, csrf_field, read_form
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc, when

PATH = "/admin/members"
API_PATH = "/admin/api/members"
DONE = {
    "add": "Member added.",
    "role": "Role changed.",
    "remove": "Member removed: their sessions ended and they can no longer log in.",
}


def listed(store: Store, admin: Admin) -> list[Member]:
    return members.visible_to(store.list_members(), admin.property_id)


def role_options(selected: str | None, *, none: bool = False) -> str:
    choices = [*reversed(ROLES), *(["none"] if none else [])]
    return "".join(
        f'<option value="{c}"{" selected" if c == selected else ""}>{c}</option>' for c in choices
    )


def scope_select(admin: Admin, name: str = "scope") -> str:
    """This property, or every property (offered to host owners only)."""
    options = '<option value="property">this property</option>'
    if admin.host_owner:
        options += '<option value="all">every property (host-wide)</option>'
    return f'<select name="{name}">{options}</select>'


def render_row(store: Store, admin: Admin, member: Member) -> list[str]:
    grants = (
        "<ul class=plain>"
        + "".join(
            f'<li data-testid="grant">{esc(members.describe(store, g))}</li>' for g in member.grants
        )
        + "</ul>"
    )
    action = esc(layout.on_property(admin, PATH + "/role"))
    here = members.role_for(member.grants, admin.property_id)
    change = (
        f'<form method="post" action="{action}" class="inline"'
        f' data-testid="role-{esc(member.name)}">{csrf_field(admin)}'
        f'<input type="hidden" name="name" value="{esc(member.name)}">'
        f'<label>Role <select name="role">{role_options(here, none=True)}</select></label> '
        f"{scope_select(admin)} <button type=submit>Change</button></form>"
    )
    remove = (
        layout.post_button(
            admin, layout.on_property(admin, PATH + "/remove"), "Remove", name=member.name
        )
        if admin.host_owner
        else ""
    )
    you = ' <span class="badge">you</span>' if member.id == admin.member_id else ""
    return [
        f'<span data-testid="member">{esc(member.name)}</span>{you}',
        grants,
        esc(when(member.created_at)),
        change + remove,
    ]


def add_form(store: Store, admin: Admin) -> str:
    return (
        f'<form method="post" action="{esc(layout.on_property(admin, PATH + "/add"))}"'
        ' class="stacked"'
        f' data-testid="add-member">{csrf_field(admin)}'
        "<h2>Add a member</h2>"
        "<label>Name <span class=muted>(letters, digits, . _ @ + -)</span> <input type=text"
        " name=name required maxlength=64 autocomplete=off autocapitalize=none></label>"
        "<label>Password <span class=muted>(at least 12 characters; give it to them in"
        " person; they change it on their Password page)</span>"
        " <input type=password name=password required"
        " minlength=12 maxlength=1024 autocomplete=new-password></label>"
        f'<label>Role <select name="role">{role_options("viewer")}</select></label>'
        f"<label>On {scope_select(admin)}</label>"
        "<button type=submit>Add member</button></form>"
    )


def page(
    store: Store,
    admin: Admin,
    *,
    message: str | None = None,
    kind: str = "info",
    status: int = 200,
) -> HTMLResponse:
    rows = [render_row(store, admin, m) for m in listed(store, admin)]
    body = (
        layout.notice(message, kind=kind)
        + "<p class=muted>Owners manage members, connections, keys and settings; editors"
        " change connections, routes, replays and test orders; viewers read figures only."
        " A role on every property (host-wide) covers properties added later too.</p>"
        + layout.table(
            ["Member", "Roles", "Added", ""], rows, empty="No members.", test_id="members"
        )
        + add_form(store, admin)
    )
    return layout.render("Members", body, admin, active="members", status=status)


def scope_of(admin: Admin, raw: str) -> int | None:
    value = raw.strip() or "property"
    if value == "all":
        return members.HOST
    if value != "property":
        raise MemberError("scope: must be property (this property) or all (every property)")
    return admin.property_id


def as_json(store: Store, found: list[Member]) -> dict[str, Any]:
    return {
        "members": [
            {
                "name": m.name,
                "created_at": m.created_at,
                "roles": [
                    {"property": members.property_name(store, g.property_id), "role": g.role}
                    for g in m.grants
                ],
            }
            for m in found
        ]
    }


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    def refuse(admin: Admin, error: MemberError) -> Response:
        store: Store = state["store"]
        status = (
            403
            if isinstance(error, NotAllowed)
            else 404
            if isinstance(error, UnknownMember)
            else 400
        )
        if admin.via == "key":
            return layout.bad_request(error, status)
        return page(store, admin, message=str(error), kind="error", status=status)

    def done(store: Store, admin: Admin, what: str) -> Response:
        return RedirectResponse(layout.on_property(admin, PATH, done=what), status_code=303)

    async def show(
        request: Request, admin: Annotated[Admin, Depends(require_role(OWNER, page=True))]
    ) -> HTMLResponse:
        what = request.query_params.get("done", "")
        return page(state["store"], admin, message=DONE.get(what), kind="ok")

    async def show_json(admin: Annotated[Admin, Depends(require_role(OWNER))]) -> JSONResponse:
        store: Store = state["store"]
        return JSONResponse(as_json(store, listed(store, admin)))

    async def add(
        request: Request, admin: Annotated[Admin, Depends(require_role(OWNER))]
    ) -> Response:
        store: Store = state["store"]
        form = await read_form(request)

        def change() -> None:
            property_id = scope_of(admin, form.get("scope", ""))
            members.check_may_manage(admin.grants, property_id)
            grant = Grant(property_id, members.check_role(form.get("role", "")))
            name, password = form.get("name", ""), form.get("password", "")
            members.add_member(store, name, password, grant, time.time(), admin.actor)

        try:
            await asyncio.to_thread(change)  # scrypt: tens of milliseconds, off the loop
        except MemberError as exc:
            return refuse(admin, exc)
        return done(store, admin, "add")

    async def role(
        request: Request, admin: Annotated[Admin, Depends(require_role(OWNER))]
    ) -> Response:
        store: Store = state["store"]
        form = await read_form(request)

        def change() -> None:
            property_id = scope_of(admin, form.get("scope", ""))
            members.check_may_manage(admin.grants, property_id)
            new_role = members.check_role_or_none(form.get("role", ""))
            name = form.get("name", "")
            target = members.active(store, name)
            if members.role_for(target.grants, admin.property_id) is None:
                # a member of other properties only: not one this page may see or change
                raise UnknownMember(f"name: no member named {name.strip()!r}")
            members.set_role(store, name, new_role, property_id, time.time(), admin.actor)

        try:
            await asyncio.to_thread(change)
        except MemberError as exc:
            return refuse(admin, exc)
        return done(store, admin, "role")

    async def remove(
        request: Request, admin: Annotated[Admin, Depends(require_role(OWNER))]
    ) -> Response:
        store: Store = state["store"]
        form = await read_form(request)

        def change() -> None:
            members.check_may_manage(admin.grants, members.HOST)
            members.remove_member(store, form.get("name", ""), time.time(), admin.actor)

        try:
            await asyncio.to_thread(change)
        except MemberError as exc:
            return refuse(admin, exc)
        return done(store, admin, "remove")

    app.add_api_route(PATH, show, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        API_PATH, show_json, methods=["GET"], summary="Members and their roles (owners)"
    )
    app.add_api_route(PATH + "/add", add, methods=["POST"], include_in_schema=False)
    app.add_api_route(PATH + "/role", role, methods=["POST"], include_in_schema=False)
    app.add_api_route(PATH + "/remove", remove, methods=["POST"], include_in_schema=False)
