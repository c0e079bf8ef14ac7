"""Authorization: the one check of what a member (or admin API key) may do on a property.

Every dashboard route — page, JSON twin, download, SVG and every POST — declares
``Depends(require_role(ROLE))``: the caller is authenticated (session cookie or admin API
key; a POST also needs the session's CSRF token), the property the request concerns is read
from the request (:func:`request_property`), and the caller's role there must allow ROLE
(owner > editor > viewer). Otherwise the answer is 403 naming the role needed and the role
held; the page behind it never runs. Pages then ask ``admin.may(EDITOR)`` before rendering a
control, so a viewer gets no replay button to press in the first place.

Why one dependency rather than an ``if`` in each handler: a new route cannot forget the
check without also forgetting its authentication, and the test suite enumerates the app's
routes and calls each as a member without the role it needs (tests/hardening/test_members.py).

Which property: ``?property=NAME`` (or a ``{property}`` path parameter), resolved by
:func:`backchannel.members.resolve_property`; without one, the default property (id 1). The
property switcher adds the parameter to its links and forms, and every link of a page on
another property carries it (``layout.keep_property``).

A page opened without a property by a member who holds no role on the default one (a member
of another shop only, who typed the bare ``/admin`` or came from the login form) is not
refused: it is redirected (303) to the same page on the first property, by name, they hold a
role on (:class:`GoToProperty`). A member with no role anywhere still gets the 403 page, which
says so. JSON twins are not redirected: a script names its property.
"""

from __future__ import annotations

import html
from dataclasses import replace
from urllib.parse import urlencode

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from backchannel import members
from backchannel.web.auth import (
    Admin,
    AdminAuth,
    NotAuthenticated,
    csrf_field,
    page,
    require_csrf,
)

#: methods that change nothing: authenticated, but no CSRF token needed
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: the query (or path) parameter naming the property a request concerns
PROPERTY_PARAM = "property"


class AccessRefused(Exception):
    """The caller may not do this here: 403 (a role too weak) or 404 (no such property)."""

    def __init__(
        self, status: int, path: str, reason: str, *, html_page: bool, admin: Admin | None = None
    ) -> None:
        self.status = status
        self.path = path
        self.reason = reason
        self.html_page = html_page
        #: who was refused (their page offers to log out, to log in as someone else)
        self.admin = admin
        super().__init__(reason)


class GoToProperty(Exception):
    """A page opened without ``?property=`` by a member without a role on the default
    property: the same page on a property they hold a role on (303 to ``location``)."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(location)


def _named(request: Request) -> str | None:
    """The property the request names (its path parameter, else its query parameter),
    stripped; None when it names none."""
    raw = request.path_params.get(PROPERTY_PARAM) or request.query_params.get(PROPERTY_PARAM)
    text = "" if raw is None else str(raw).strip()
    return text or None


def _elsewhere(request: Request, visible: list[tuple[int, str]]) -> str | None:
    """The URL of this page on the first property (by name) in ``visible``; None without
    one. The path and the other query parameters are kept."""
    if not visible:
        return None
    first = min(name for _, name in visible)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != PROPERTY_PARAM]
    return f"{request.url.path}?{urlencode([*query, (PROPERTY_PARAM, first)])}"


def _auth(request: Request) -> AdminAuth:
    auth: AdminAuth = request.app.state.admin_auth
    return auth


async def request_property(request: Request) -> int:
    """The id of the property this request concerns: its ``property`` path parameter or query
    parameter, else the default property. Raises :class:`ValueError` (message ``"property:
    reason"``) for a property that does not exist."""
    raw = _named(request)
    if raw is None:
        return members.DEFAULT_PROPERTY_ID
    auth = _auth(request)
    property_id: int = await auth.call(members.resolve_property, auth.store, raw)
    return property_id


def _what(needed: str) -> str:
    return {
        members.VIEWER: "reading it",
        members.EDITOR: "changing connections, routes, replays and test orders",
        members.OWNER: "managing members, keys and settings",
    }[needed]


class RoleCheck:
    """The dependency :func:`require_role` returns (a class so that the role it checks can be
    read back: the route audit test lists every route's)."""

    def __init__(self, needed: str, *, page: bool = False) -> None:
        if needed not in members.ROLES:
            raise ValueError(f"unknown role {needed!r}")
        self.needed = needed
        self.page = page

    async def __call__(self, request: Request) -> Admin:
        needed = self.needed
        wants_html = self.page or "text/html" in request.headers.get("accept", "")
        if request.method in SAFE_METHODS:
            admin = await _auth(request).current(request)
            if admin is None:
                raise NotAuthenticated(html_page=self.page)
        else:
            admin = await require_csrf(request)
        auth = _auth(request)
        visible = await auth.call(members.visible_properties, auth.store, admin.grants)
        try:
            property_id = await request_property(request)
        except members.MemberError:
            # the store's message lists every property; name only those the caller may see
            known = ", ".join(name for _, name in visible) or "none"
            raise AccessRefused(
                404,
                PROPERTY_PARAM,
                f"no property named {_named(request)!r} (yours: {known})",
                html_page=wants_html,
                admin=admin,
            ) from None
        role = members.role_for(admin.grants, property_id)
        bare = _named(request) is None
        if role is None and self.page and request.method in SAFE_METHODS and bare:
            # the bare /admin of a member of another property: take them to theirs
            location = _elsewhere(request, visible)
            if location is not None:
                raise GoToProperty(location)
        if not members.allows(role, needed):
            holds = f"is {role}" if role else "has no role"
            where = members.property_name(_auth(request).store, property_id)
            if not visible:
                holds = "has no role"
                where = f"{where} (nor on any other property: an owner can give one)"
            raise AccessRefused(
                403,
                "role",
                f"{admin.actor} {holds} on property {where}; {_what(needed)} needs {needed}",
                html_page=wants_html,
                admin=admin,
            )
        named = bool(str(request.query_params.get(PROPERTY_PARAM, "")).strip())
        return replace(
            admin,
            property_id=property_id,
            role=role,
            properties=tuple(visible),
            property_named=named,
            path=request.url.path,
            query=tuple(request.query_params.multi_items()),
        )


def require_role(needed: str, *, page: bool = False) -> RoleCheck:
    """A FastAPI dependency: the caller, who holds at least ``needed`` on the request's property.

    ``page``: an HTML page (logged-out callers are redirected to the login form, refusals
    are an HTML page); otherwise logged-out callers get 401 JSON. State-changing methods
    also need the session's CSRF token (:func:`backchannel.web.auth.require_csrf`).
    The returned :class:`Admin` carries ``property_id`` and ``role``.
    """
    return RoleCheck(needed, page=page)


async def access_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AccessRefused)
    code = "forbidden" if exc.status == 403 else "not_found"
    if exc.html_page:
        title = "Forbidden" if exc.status == 403 else "Not found"
        logout = (
            f'<form method="post" action="/logout">{csrf_field(exc.admin)}'
            "<button type=submit>Log out</button> (to log in as someone else)</form>"
            if exc.admin is not None and exc.admin.via == "session"
            else ""
        )
        return page(
            title,
            f'<h1>{title}</h1><p role="alert">{html.escape(exc.reason)}</p>'
            f'<p><a href="/admin">Back to the dashboard</a></p>{logout}',
            status=exc.status,
        )
    return JSONResponse(
        {"error": code, "errors": [{"path": exc.path, "reason": exc.reason}]},
        status_code=exc.status,
    )


async def go_to_property(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GoToProperty)
    return RedirectResponse(exc.location, status_code=303)


def install(app: FastAPI) -> None:
    """Answer :class:`AccessRefused` and :class:`GoToProperty` (call once per app, next to
    auth's handlers)."""
    app.add_exception_handler(AccessRefused, access_refused)
    app.add_exception_handler(GoToProperty, go_to_property)


__all__ = [
    "PROPERTY_PARAM",
    "AccessRefused",
    "GoToProperty",
    "RoleCheck",
    "access_refused",
    "install",
    "request_property",
    "require_role",
]
