"""Admin access: members' logins, sessions, CSRF, and the dependencies pages use.

**Members.** Whoever uses the dashboard is a team member (:mod:`backchannel.members`): a name
and a password (scrypt, :mod:`backchannel.passwords`; at least 12 characters, set from the CLI
— ``member add`` / ``admin set-password``, read from the terminal or stdin, never argv — or by
an owner on the members page, or by the member on their own password page,
:mod:`backchannel.web.dashboard.password`) and a role per property. The login form asks for
both; a wrong name and a wrong password get the same answer after the same scrypt work.
Changing a member's password logs that member's sessions out (but the one a member changes
their own password from); removing a member ends them all.

**Sessions are server-side rows, not signed cookies.** The cookie holds 256 random bits; the
store keeps only their SHA-256 with an absolute expiry (``admin_session_hours``), the
session's CSRF token and whose session it is. Why: logout, a password change and a removed
member take effect at once (a signed cookie stays valid until it expires unless we keep a
revocation list, which is a session table with extra steps), there is no signing key to
manage or rotate, and a copy of the database holds no usable session. The lookup (session,
then member and grants) is read on every admin request, not on the ingest path, so a changed
role applies to the very next request.

**Cookie.** ``HttpOnly``, ``SameSite=Strict``, ``Path=/``; ``Secure`` and named
``__Host-bc_session`` when the request is https or ``public_url`` is https (the ``__Host-``
prefix makes browsers refuse it unless Secure, host-only and Path=/), else ``bc_session``
(plain http on localhost, where browsers drop Secure cookies).

**CSRF.** A synchronizer token per session, required on every state-changing request made
with the session cookie: the ``csrf_token`` form field or the ``X-CSRF-Token`` header
(:func:`require_csrf`). Requests authenticated with an admin API key (``Authorization:
Bearer bc_admin_…``) need none: a browser never attaches that header on its own. A cross-site
``Origin`` is refused as well. The login form has its own token (a double-submit cookie), so
nobody can log a victim into the attacker's session either.

**Throttling.** Login attempts: 10 per client IP, then one every 6 s (a 429 with
Retry-After), and 100 failures per minute in total (a spread-out guesser). A member's own
password change draws on the same limits (a wrong current password is a failed login).

**Roles.** This module says *who* asks (:class:`Admin`); what they may do on the property a
request concerns is checked in one place, :func:`backchannel.web.access.require_role`, which
every dashboard route declares::

    @app.get("/admin/x", response_class=HTMLResponse)
    async def page(admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]) -> ...:

    @app.post("/admin/x")                # CSRF checked too
    async def act(admin: Annotated[Admin, Depends(require_role(EDITOR))]) -> Response:

    @app.get("/admin/api/x")             # JSON: session cookie or admin API key
    async def data(admin: Annotated[Admin, Depends(require_role(VIEWER))]) -> dict:

Forms must carry ``<input type="hidden" name="csrf_token" value="{admin.csrf_token}">``
(:func:`csrf_field` renders it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from backchannel import credentials, members
from backchannel.config import Settings
from backchannel.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordError,
    check_new_password,
    decoy_hash,
    hash_password,
    verify_password,
)
from backchannel.store.base import AdminSession, Grant, Member, Store
from backchannel.store.runner import AsyncStore
from backchannel.web.ratelimit import RateLimiter, client_ip, limited_response

MAX_FORM_BYTES = 16 * 1024
#: fields of one admin form (the routes form has a checkbox per standard event)
MAX_FORM_FIELDS = 64
LOGIN_PER_IP = (10 / 60, 10)  # rate per second, burst
LOGIN_FAILURES_TOTAL = (100 / 60, 100)

SESSION_COOKIE, SECURE_SESSION_COOKIE = "bc_session", "__Host-bc_session"
LOGIN_COOKIE, SECURE_LOGIN_COOKIE = "bc_login", "__Host-bc_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


# --- the password -------------------------------------------------------------------------------


T = TypeVar("T")


def set_password(store: Store, password: str, now: float) -> int:
    """``backchannel admin set-password`` with no ``--member``: the one member's password (with
    no member yet, the first password makes the host owner ``admin``); returns how many
    sessions ended. Raises :class:`PasswordError` for a password that may not be set."""
    check_new_password(password)
    try:
        _, ended = members.set_admin_password(store, password, now)
    except members.MemberError as exc:
        raise PasswordError(str(exc)) from None
    return ended


# --- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admin:
    """An authenticated caller: a member by session (a browser) or an admin API key (a script).

    ``property_id`` and ``role`` are the property the request concerns and the caller's role
    there; :func:`backchannel.web.access.require_role` fills them in after checking them.
    """

    via: str  # "session" | "key"
    #: the member's name, or the key's
    name: str
    #: the session's CSRF token (None for API-key callers, who need none)
    csrf_token: str | None = None
    token_hash: str | None = None
    member_id: int | None = None
    #: every grant the caller holds (a key: one, host-wide)
    grants: tuple[Grant, ...] = ()
    property_id: int = members.DEFAULT_PROPERTY_ID
    role: str | None = None
    #: ``(id, name)`` of every property the caller has a role on, by id (the switcher's
    #: entries; filled in by require_role, empty before)
    properties: tuple[tuple[int, str], ...] = ()
    #: whether the request named its property (``?property=``): the menu then keeps it
    property_named: bool = False
    #: the request's path and query parameters: the switcher links to the same page (with
    #: the same parameters) on another property
    path: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @property
    def actor(self) -> str:
        """Who the audit log names for this caller's changes: ``member alice`` or the key."""
        return f"member {self.name}" if self.via == "session" else f"admin key {self.name}"

    def may(self, needed: str) -> bool:
        """Whether the caller's role on this request's property allows ``needed``: what a
        page asks before rendering a control (a viewer gets no replay button)."""
        return members.allows(self.role, needed)

    @property
    def property_name(self) -> str:
        """The name of the request's property, as far as the caller may see it."""
        return dict(self.properties).get(self.property_id, "")

    @property
    def host_wide(self) -> bool:
        """Holds a role on every property (a host-wide grant): sees the host's pages."""
        return members.role_for(self.grants, members.HOST) is not None

    @property
    def host_owner(self) -> bool:
        """Owner of every property: may grant host-wide roles and remove members."""
        return members.is_host_owner(self.grants)


class NotAuthenticated(Exception):
    def __init__(self, html_page: bool, reason: str = "log in, or send an admin API key") -> None:
        self.html_page = html_page
        self.reason = reason
        super().__init__(reason)


class CsrfRejected(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminAuth:
    """Everything admin access needs; one per app (``request.app.state.admin_auth``)."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        clock: Callable[[], float] = time.time,
        runner: Callable[[], AsyncStore] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._runner = runner
        self.clock = clock
        self.session_seconds = settings.admin_session_hours * 3600.0
        self.https = bool(settings.public_url and settings.public_url.startswith("https://"))
        self.login_limiter = RateLimiter(*LOGIN_PER_IP)
        self.failure_limiter = RateLimiter(*LOGIN_FAILURES_TOTAL)

    @property
    def store(self) -> Store:
        return self._store()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """A store call from a request handler: through the runner when there is one, so a
        PostgreSQL lock or a slow server never blocks the event loop (SQLite stays inline)."""
        if self._runner is None:
            return fn(*args)
        return await self._runner().call(fn, *args)

    # -- cookies ----------------------------------------------------------------------------
    def secure(self, request: Request) -> bool:
        return self.https or request.url.scheme == "https"

    def session_cookie(self, request: Request) -> str:
        return SECURE_SESSION_COOKIE if self.secure(request) else SESSION_COOKIE

    def login_cookie(self, request: Request) -> str:
        return SECURE_LOGIN_COOKIE if self.secure(request) else LOGIN_COOKIE

    def _set_cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )

    # -- identifying the caller --------------------------------------------------------------
    async def current(self, request: Request) -> Admin | None:
        """The admin making this request, from an admin API key or a live session cookie."""
        header = request.headers.get("authorization")
        if header:
            kind, _, key = header.partition(" ")
            if kind.lower() != "bearer" or not key.strip():
                return None
            record = await self.call(self.store.find_key, credentials.key_hash(key.strip()))
            if record is None or record.revoked_at is not None or record.scope != "admin":
                return None
            grants = (Grant(members.HOST, record.role),) if record.role else ()
            return Admin("key", record.name, grants=grants)
        token = request.cookies.get(self.session_cookie(request))
        if not token:
            return None
        session = await self.call(self.store.get_admin_session, _token_hash(token), self.clock())
        if session is None or session.member_id is None:
            return None
        member = await self.call(self.store.member_by_id, session.member_id)
        if member is None or member.disabled_at is not None:
            return None
        return Admin(
            "session",
            member.name,
            session.csrf_token,
            session.token_hash,
            member_id=member.id,
            grants=member.grants,
        )

    async def has_members(self) -> bool:
        """Whether anyone can log in at all (an active member exists)."""
        found = await self.call(members.active_members, self.store)
        return bool(found)

    # -- the login flow ----------------------------------------------------------------------
    async def login_page(
        self, request: Request, *, error: str | None = None, status: int = 200
    ) -> HTMLResponse:
        token = secrets.token_urlsafe(32)
        next_path = safe_next(request.query_params.get("next"))
        if not await self.has_members():
            error = (
                "No member can log in yet. Run `backchannel admin set-password` (or"
                " `backchannel member add NAME --role owner --all`) on the server."
            )
        body = (
            "<h1>Backchannel admin</h1>"
            + (f'<p role="alert"><strong>{html.escape(error)}</strong></p>' if error else "")
            + f'<form method="post" action="/login?next={quote(next_path, safe="/")}">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{token}">'
            '<label>Name <input type="text" name="name" required autocomplete="username"'
            ' autocapitalize="none" spellcheck="false" maxlength="64" autofocus></label> '
            '<label>Password <input type="password" name="password" required'
            ' autocomplete="current-password"></label> '
            '<button type="submit">Log in</button></form>'
        )
        response = page("Log in", body, status=status)
        self._set_cookie(response, request, self.login_cookie(request), token, 600)
        return response

    async def verify(self, member: Member | None, password: str) -> bool:
        """Whether ``password`` is ``member``'s, off the loop; the same scrypt work whether
        there is a member or not (timing tells no names apart)."""
        encoded = member.password_hash if member is not None else None
        return len(password) <= MAX_PASSWORD_LENGTH and await asyncio.to_thread(
            lambda: verify_password(password, encoded or decoy_hash())
        )

    async def failed(self, ip: str, why: str, field: str) -> Response | None:
        """A failed password check (a login, or a member's own password change): the
        install-wide failure limit — its 429 naming ``field`` — else an
        ``admin.login_failed`` audit row and None."""
        wait = self.failure_limiter.hit("*")
        if wait:
            return limited_response(wait, field, "to log in")
        await self.call(self.store.audit, self.clock(), f"ip {ip}", "admin.login_failed", why)
        return None

    async def login(self, request: Request) -> Response:
        ip = client_ip(request)
        wait = self.login_limiter.hit(ip)
        if wait:
            return limited_response(wait, "password", "to log in")
        if not same_origin(request, self.settings):
            return page("Forbidden", "<p>Cross-site login refused.</p>", status=403)
        form = await read_form(request)
        cookie = request.cookies.get(self.login_cookie(request), "")
        given = form.get(CSRF_FIELD, "")
        if not cookie or not given or not hmac.compare_digest(cookie, given):
            return await self.login_page(
                request, error="The form expired; please try again.", status=403
            )
        name = form.get("name", "").strip().lower()
        password = form.get("password", "")
        if not name:
            return await self.login_page(request, error="Enter your member name.", status=401)
        member = None
        if len(name) <= 64 and members.NAME.fullmatch(name):
            member = await self.call(self.store.member_by_name, name)
        if member is not None and member.disabled_at is not None:
            member = None
        matches = await self.verify(member, password)
        if member is None or not matches:
            why = "unknown member name" if member is None else f"wrong password for {member.name}"
            limited = await self.failed(ip, why, "password")
            if limited is not None:
                return limited
            return await self.login_page(request, error="Wrong name or password.", status=401)
        self.login_limiter.reset(ip)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        await self.call(
            self.store.create_admin_session,
            AdminSession(
                _token_hash(token),
                secrets.token_urlsafe(32),
                now,
                now + self.session_seconds,
                member.id,
            ),
        )
        # the member's name, not the IP: retention purges IPs from actors only ("ip …"), and a
        # successful login is the member's action (failed ones keep "ip …" as the actor)
        await self.call(
            self.store.audit, now, f"member {member.name}", "admin.login", "session started"
        )
        response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        self._set_cookie(
            response, request, self.session_cookie(request), token, int(self.session_seconds)
        )
        response.delete_cookie(self.login_cookie(request), path="/")
        return response

    async def logout(self, request: Request, admin: Admin) -> Response:
        if admin.token_hash is not None:
            await self.call(self.store.delete_admin_session, admin.token_hash)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            self.session_cookie(request),
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )
        return response


# --- dependencies -------------------------------------------------------------------------------


def _auth(request: Request) -> AdminAuth:
    auth: AdminAuth = request.app.state.admin_auth
    return auth


async def require_admin(request: Request) -> Admin:
    """FastAPI dependency for admin JSON endpoints: a session cookie or an admin API key.

    Unauthenticated: 401 JSON. Safe (GET) requests only; state changes use
    :func:`require_csrf`.
    """
    admin = await _auth(request).current(request)
    if admin is None:
        raise NotAuthenticated(html_page=False)
    return admin


async def require_admin_page(request: Request) -> Admin:
    """FastAPI dependency for admin HTML pages: redirects to the login page when logged out."""
    admin = await _auth(request).current(request)
    if admin is None:
        raise NotAuthenticated(html_page=True)
    return admin


async def require_csrf(request: Request) -> Admin:
    """FastAPI dependency for every state-changing admin request (POST/PUT/PATCH/DELETE).

    Session callers must send the session's token (``csrf_token`` field or ``X-CSRF-Token``);
    a cross-site ``Origin`` is refused. Admin API keys need no token.
    """
    auth = _auth(request)
    admin = await auth.current(request)
    if admin is None:
        raise NotAuthenticated(html_page="text/html" in request.headers.get("accept", ""))
    if admin.via == "key":
        return admin
    if not same_origin(request, auth.settings):
        raise CsrfRejected("cross-site request refused")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        given = (await read_form(request)).get(CSRF_FIELD)
    if not given or admin.csrf_token is None or not hmac.compare_digest(given, admin.csrf_token):
        raise CsrfRejected("missing or wrong CSRF token; reload the page and try again")
    return admin


def csrf_field(admin: Admin) -> str:
    """The hidden input every admin form carries."""
    return (
        f'<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(admin.csrf_token or "")}">'
    )


async def not_authenticated(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotAuthenticated)
    if exc.html_page:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(safe_next(target), safe='/')}", 303)
    return JSONResponse(
        {"error": "unauthorized", "errors": [{"path": "Authorization", "reason": exc.reason}]},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def csrf_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfRejected)
    return JSONResponse(
        {"error": "forbidden", "errors": [{"path": CSRF_FIELD, "reason": exc.reason}]},
        status_code=403,
    )


# --- helpers ------------------------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else (``//evil``, ``https://…``) -> /admin."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/admin"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/admin"
    return target


def same_origin(request: Request, settings: Settings) -> bool:
    """False when the browser says the request comes from another site (``Origin``)."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser on same-origin POSTs; the token decides
        return True
    allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin in allowed


class FormError(ValueError):
    """An admin form that cannot be read; the message says why."""


async def read_form_fields(request: Request) -> dict[str, list[str]]:
    """A small ``application/x-www-form-urlencoded`` body, every value of each field
    (checkboxes repeat a name). At most :data:`MAX_FORM_BYTES` and :data:`MAX_FORM_FIELDS`;
    raises :class:`FormError` otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormError(f"larger than {MAX_FORM_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise FormError(f"larger than {MAX_FORM_BYTES} bytes")
    try:
        return parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("not a readable form") from None


async def read_form(request: Request) -> dict[str, str]:
    """The form as a dict, first value per field; empty when it cannot be read (so a CSRF
    check on it fails closed)."""
    try:
        fields = await read_form_fields(request)
    except FormError:
        return {}
    return {k: v[0] for k, v in fields.items() if v}


def page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    """A minimal server-rendered page (no script, no inline style: the CSP forbids both)."""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · Backchannel</title></head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status)


def install(
    app: Any,
    settings: Settings,
    store: Callable[[], Store],
    runner: Callable[[], AsyncStore] | None = None,
) -> AdminAuth:
    """Attach admin auth to a FastAPI app: state, exception handlers, /login and /logout.

    ``runner``: the app's store runner, through which every store call of a request goes
    (PostgreSQL on its pool, off the event loop)."""
    auth = AdminAuth(settings, store, runner=runner)
    app.state.admin_auth = auth
    app.add_exception_handler(NotAuthenticated, not_authenticated)
    app.add_exception_handler(CsrfRejected, csrf_rejected)

    async def login_form(request: Request) -> Response:
        if await auth.current(request) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return await auth.login_page(request)

    async def login(request: Request) -> Response:
        return await auth.login(request)

    async def logout(request: Request) -> Response:
        admin = await require_csrf(request)
        return await auth.logout(request, admin)

    app.add_api_route("/login", login_form, methods=["GET"], include_in_schema=False)
    app.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)
    return auth


__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "Admin",
    "AdminAuth",
    "CsrfRejected",
    "FormError",
    "NotAuthenticated",
    "PasswordError",
    "check_new_password",
    "csrf_field",
    "hash_password",
    "install",
    "page",
    "read_form",
    "read_form_fields",
    "require_admin",
    "require_admin_page",
    "require_csrf",
    "safe_next",
    "same_origin",
    "set_password",
    "verify_password",
]
