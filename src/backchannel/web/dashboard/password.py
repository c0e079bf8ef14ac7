"""A member changes their own password: ``GET/POST /admin/password``.

Before this page only an owner (members page) or the CLI (``admin set-password --member``)
could set a member's password, so a member handed a password in person kept it. Here the
signed-in member sets a new one:

- the current password is asked for (a browser left logged in is not enough to take the
  account over), checked with the same scrypt work as a login;
- a wrong current password is a failed login: it counts toward the login throttle (the
  per-IP limit and the install-wide failure limit, :class:`backchannel.web.auth.AdminAuth`;
  past them the answer is a 429, here and on ``/login``) and is audited as
  ``admin.login_failed``;
- the new password twice, with the rules of every other way of setting one
  (:func:`backchannel.passwords.check_new_password`: 12 to 1024 characters);
- the form carries the session's CSRF token (``require_role`` checks it on the POST);
- the change is audited (``member.password``, actor the member) and ends the member's other
  sessions — a browser someone else may have logged in with — while this one goes on.

Any role on the request's property will do (viewer): the page is the member's own, not the
property's; a member of another property only is sent to theirs, like on every page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backchannel import members
from backchannel.config import Settings
from backchannel.members import VIEWER, MemberError
from backchannel.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from backchannel.store.base import Store
from backchannel.web.access import require_role
from backchannel.web.auth import Admin, AdminAuth, csrf_field, read_form
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import ParamError, esc
from backchannel.web.ratelimit import client_ip, limited_response

PATH = layout.ACCOUNT_PATH
DONE = "Password changed. Your other sessions were logged out; this one goes on."


def form(admin: Admin) -> str:
    def field(name: str, label: str, autocomplete: str) -> str:
        return (
            f"<label>{esc(label)} <input type=password name={name} required"
            f" maxlength={MAX_PASSWORD_LENGTH} autocomplete={autocomplete}></label>"
        )

    return (
        f'<form method="post" action="{esc(PATH)}" class="stacked" data-testid="password-form">'
        f"{csrf_field(admin)}"
        + field("current_password", "Current password", "current-password")
        + field(
            "new_password",
            f"New password (at least {MIN_PASSWORD_LENGTH} characters)",
            "new-password",
        )
        + field("new_password_again", "New password again", "new-password")
        + "<button type=submit>Change password</button></form>"
    )


def page(
    admin: Admin, *, message: str | None = None, kind: str = "info", status: int = 200
) -> HTMLResponse:
    body = (
        layout.notice(message, kind=kind)
        + f"<p>Signed in as <strong>{esc(admin.name)}</strong>. Changing your password logs"
        " out your other sessions (other browsers); this one stays.</p>" + form(admin)
    )
    return layout.render("Your password", body, admin, active="password", status=status)


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    def refuse(admin: Admin, error: ValueError, status: int = 400) -> Response:
        if admin.via == "key":
            return layout.bad_request(error, status)
        return page(admin, message=str(error), kind="error", status=status)

    async def show(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> Response:
        if admin.via == "key":
            return refuse(admin, ParamError("Authorization: an admin API key has no password"))
        done = request.query_params.get("done") == "1"
        return page(admin, message=DONE if done else None, kind="ok")

    async def change(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> Response:
        if admin.via == "key" or admin.member_id is None:
            return refuse(admin, ParamError("Authorization: an admin API key has no password"))
        auth: AdminAuth = request.app.state.admin_auth
        store: Store = state["store"]
        ip = client_ip(request)
        # every attempt counts toward the login throttle, like a login attempt does
        wait = auth.login_limiter.hit(ip)
        if wait:
            return limited_response(wait, "current_password", "to log in")
        fields = await read_form(request)
        current = fields.get("current_password", "")
        new = fields.get("new_password", "")
        again = fields.get("new_password_again", "")
        member = await auth.call(store.member_by_id, admin.member_id)
        if member is None or member.disabled_at is not None:
            return refuse(admin, ParamError("name: this member was removed"), 403)
        if not (current and await auth.verify(member, current)):
            why = f"wrong current password for {member.name} (password change)"
            limited = await auth.failed(ip, why, "current_password")
            if limited is not None:
                return limited
            return refuse(admin, ParamError("current_password: wrong password"))
        if new != again:
            return refuse(admin, ParamError("new_password_again: does not match new_password"))
        try:
            await auth.call(
                lambda: members.set_password(
                    store,
                    member.name,
                    new,
                    auth.clock(),
                    admin.actor,
                    keep_session=admin.token_hash,
                    field="new_password",
                )
            )
        except MemberError as exc:
            return refuse(admin, ParamError(str(exc)))
        auth.login_limiter.reset(ip)
        return RedirectResponse(layout.on_property(admin, PATH, done="1"), status_code=303)

    app.add_api_route(PATH, show, methods=["GET"], include_in_schema=False)
    app.add_api_route(PATH, change, methods=["POST"], include_in_schema=False)
