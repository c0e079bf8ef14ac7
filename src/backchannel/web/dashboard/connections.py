"""The Connections page: pixel, token, Test Events code and event routing per destination.

The same settings ``backchannel token set|remove`` and ``backchannel route`` write, so either
may change what the other shows.

**The token is write-only.** It is typed into a password input that is never pre-filled;
once stored (Fernet-encrypted, :func:`backchannel.credentials.encrypt`) the page shows only
its last four characters and when it was set. No response, log line, audit entry or error
message ever holds it: a refused form is answered with the page as it was, naming the field
and the reason, never echoing what was typed. Setting, replacing and removing it are audited
(``token.set`` / ``token.replace`` / ``token.remove``).

A change is applied at once in this process (the cached target and routes are dropped) and
within 5 s in others (``Targets`` and ``Routes`` reload that often).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backchannel import credentials, logs, routing
from backchannel.catalog import EVENTS
from backchannel.config import Settings
from backchannel.store.base import Connection, Store
from backchannel.web.auth import (
    Admin,
    FormError,
    csrf_field,
    read_form_fields,
    require_admin_page,
    require_csrf,
)
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc

PATH = "/admin/connections"
LABELS = {"tiktok": "TikTok", "meta": "Meta"}
PIXEL_LABELS = {"tiktok": "Pixel code", "meta": "Pixel (dataset) ID"}
#: pixel shapes. The reference does not spell them out; these are the shapes both platforms
#: show in their Events Managers: TikTok pixel codes are upper-case letters and digits
#: ("C4ABCDEF…", about 20), Meta pixel (dataset) ids are digits (15-16 today).
PIXEL_RULES = {
    "tiktok": (
        re.compile(r"[A-Z0-9]{6,64}"),
        "a TikTok pixel code is 6 to 64 upper-case letters and digits (e.g. C4ABCD…)",
    ),
    "meta": (re.compile(r"[0-9]{6,20}"), "a Meta pixel (dataset) id is 6 to 20 digits"),
}
TEST_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN_MIN, TOKEN_MAX = 8, 4096  # characters: both platforms' tokens fit well inside


class FieldError(ValueError):
    """A refused form field; ``str()`` names it and says why (never quoting a secret)."""


async def read_fields(request: Request) -> dict[str, list[str]]:
    """The form's fields, every value of each (checkboxes repeat a name). Bounded."""
    try:
        return await read_form_fields(request)
    except FormError as exc:
        raise FieldError(f"(form): {exc}") from None


def one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0].strip()


def check_pixel(destination: str, pixel: str) -> str:
    pattern, rule = PIXEL_RULES[destination]
    if not pixel:
        raise FieldError("pixel: required")
    if pattern.fullmatch(pixel) is None:
        raise FieldError(f"pixel: {rule}")
    return pixel


def check_test_code(code: str) -> str | None:
    if not code:
        return None
    if TEST_CODE.fullmatch(code) is None:
        raise FieldError("test_event_code: 1 to 64 letters, digits, '_' or '-'")
    return code


def check_token(token: str) -> str | None:
    """None when left empty (keep the stored one). Messages never include the token."""
    if not token:
        return None
    if token.lower().startswith("bearer "):
        raise FieldError(
            "token: paste the raw token without 'Bearer ' (TikTok answers 40105 to that)"
        )
    if any(ch.isspace() for ch in token):
        raise FieldError("token: must not contain spaces or line breaks")
    if not TOKEN_MIN <= len(token) <= TOKEN_MAX:
        raise FieldError(f"token: must be {TOKEN_MIN} to {TOKEN_MAX} characters")
    return token


def token_set_at(store: Store, destination: str) -> float | None:
    """When the stored token was last set or replaced (from the audit log)."""
    rows = store.read(
        "SELECT MAX(at) FROM audit_log WHERE action IN (?, ?) AND detail LIKE ?",
        ("token.set", "token.replace", destination + " %"),
    )
    return None if not rows or rows[0][0] is None else float(rows[0][0])


# -- the page ---------------------------------------------------------------------------------
def mode_of(state: dict[str, Any], destination: str) -> str:
    try:
        return "sandbox" if state["targets"].resolve(destination).sandbox else "live"
    except Exception as exc:  # no sandbox and no token, or a key that does not decrypt
        return f"unavailable ({type(exc).__name__})"


def section(
    state: dict[str, Any],
    admin: Admin,
    destination: str,
    routes: list[str] | None,
    default_pixel: str | None = None,
) -> str:
    store: Store = state["store"]
    label = LABELS[destination]
    connection = store.get_connection(destination)
    mode = mode_of(state, destination)
    has_token = connection is not None and connection.token_encrypted is not None
    if has_token and connection is not None:
        set_at = token_set_at(store, destination) or connection.updated_at
        token_text = (
            f'<span data-testid="token-{destination}">…{esc(connection.token_last4)}</span>'
            f" <span class=muted>set {esc(layout.when(set_at))}</span>"
        )
    else:
        token_text = f'<span data-testid="token-{destination}">not set</span>'
    # no connection yet: the pixel from the configuration (BACKCHANNEL_*_PIXEL), as Targets uses
    pixel = connection.pixel if connection is not None else (default_pixel or "")
    code = (connection.test_event_code if connection is not None else None) or ""
    mode_class = "ok" if mode == "live" else "warn"
    summary = (
        "<dl class=facts>"
        f'<dt>Mode</dt><dd><strong class="{mode_class}" data-testid="mode-{destination}">'
        f"{esc(mode)}</strong>"
        + (
            " <span class=muted>(no token: events go to the local sandbox, not to"
            f" {esc(label)})</span>"
            if mode == "sandbox"
            else ""
        )
        + "</dd>"
        f"<dt>{esc(PIXEL_LABELS[destination])}</dt>"
        f'<dd data-testid="pixel-{destination}">{esc(pixel) or "—"}</dd>'
        f"<dt>Access token</dt><dd>{token_text}</dd>"
        f'<dt>Test event code</dt><dd data-testid="code-{destination}">{esc(code) or "—"}</dd>'
        f'<dt>Events sent</dt><dd data-testid="routes-{destination}">'
        f"{esc(routing.describe(routes))}</dd></dl>"
    )
    save = (
        f'<form method="post" action="{PATH}/{destination}" class="stacked"'
        f' data-testid="connection-{destination}">{csrf_field(admin)}'
        f"<label>{esc(PIXEL_LABELS[destination])} <input type=text name=pixel"
        f' value="{esc(pixel)}" required maxlength=64 autocomplete=off></label>'
        "<label>Test event code <span class=muted>(from Events Manager → Test Events;"
        " sent instead of the conversion's code for test events)</span>"
        f' <input type=text name=test_event_code value="{esc(code)}" maxlength=64'
        " autocomplete=off></label>"
        "<label>Events API access token <span class=muted>("
        + ("leave empty to keep the stored one" if has_token else "none stored yet")
        + ')</span> <input type=password name=token value="" autocomplete=new-password'
        f" maxlength={TOKEN_MAX}></label>"
        f"<button type=submit>Save {esc(label)}</button></form>"
    )
    remove = (
        layout.post_button(admin, f"{PATH}/{destination}/remove-token", "Remove the token")
        + " <span class=muted>(keeps pixel and code; back to sandbox mode)</span>"
        if has_token
        else ""
    )
    chosen = set(routes or ())
    boxes = "".join(
        f'<label><input type=checkbox name=event value="{esc(name)}"'
        f"{' checked' if name in chosen else ''}> {esc(name)}</label>"
        for name in EVENTS
    )
    custom = ", ".join(sorted(chosen - set(EVENTS)))
    route_form = (
        f'<form method="post" action="{PATH}/{destination}/routes" class="routes"'
        f' data-testid="routes-form-{destination}">{csrf_field(admin)}'
        f"<fieldset><legend>Events sent to {esc(label)}</legend>"
        f"<label class=all><input type=checkbox name=all value=1"
        f"{' checked' if routes is None else ''}> All events</label>"
        f"<div class=events>{boxes}</div>"
        "<label>Custom events <span class=muted>(comma-separated)</span>"
        f' <input type=text name=custom value="{esc(custom)}" maxlength=2000></label>'
        "</fieldset>"
        f"<button type=submit>Save events for {esc(label)}</button></form>"
    )
    return (
        f'<section class=connection id="{destination}"><h2>{esc(label)}</h2>'
        f"{summary}{save}<p>{remove}</p>{route_form}</section>"
    )


def page(
    state: dict[str, Any],
    settings: Settings,
    admin: Admin,
    *,
    message: str | None = None,
    kind: str = "info",
    status: int = 200,
) -> HTMLResponse:
    store: Store = state["store"]
    routes = routing.read(store)
    intro = (
        "<p class=muted>Paste the pixel and the Events API token from each platform's Events"
        " Manager. The token is stored encrypted and never shown again (only its last four"
        " characters). Without a token a destination is in <strong>sandbox mode</strong>:"
        " events go to the built-in emulator. The CLI sets the same things:"
        " <code>backchannel token set</code>, <code>backchannel route set</code>.</p>"
    )
    destinations = [d for d in routing.KNOWN_DESTINATIONS if d in settings.destinations] or list(
        routing.KNOWN_DESTINATIONS
    )
    body = (
        layout.notice(message, kind=kind)
        + intro
        + "".join(
            section(state, admin, d, routes.get(d), getattr(settings, f"{d}_pixel", None))
            for d in destinations
        )
    )
    return layout.render("Connections", body, admin, active="connections", status=status)


# -- the actions ------------------------------------------------------------------------------
def save_connection(
    state: dict[str, Any],
    settings: Settings,
    destination: str,
    fields: dict[str, list[str]],
    who: str,
) -> str:
    """Validate everything first, then write; returns the message to show."""
    pixel = check_pixel(destination, one(fields, "pixel"))
    code = check_test_code(one(fields, "test_event_code"))
    token = check_token(one(fields, "token"))
    store: Store = state["store"]
    existing = store.get_connection(destination)
    now = time.time()
    if token is not None:
        logs.register_secret(token)  # never in a log line of this process, whatever happens
        ciphertext: bytes | None = credentials.encrypt(credentials.load_cipher(settings), token)
        last4: str | None = token[-4:]
    else:
        ciphertext = existing.token_encrypted if existing is not None else None
        last4 = existing.token_last4 if existing is not None else None
    store.set_connection(Connection(destination, pixel, ciphertext, last4, code, now))
    detail = f"{destination} pixel {pixel}"
    if token is not None:
        replaced = existing is not None and existing.token_encrypted is not None
        store.audit(now, who, "token.replace" if replaced else "token.set", detail)
    else:
        store.audit(now, who, "connection.update", detail + f" test_event_code {code or '-'}")
    state["targets"].invalidate(destination)
    return f"{LABELS[destination]} saved" + (f" (token …{last4} stored encrypted)" if token else "")


def remove_token(state: dict[str, Any], destination: str, who: str) -> str:
    store: Store = state["store"]
    existing = store.get_connection(destination)
    if existing is None or existing.token_encrypted is None:
        raise FieldError("token: none stored")
    now = time.time()
    store.set_connection(
        Connection(destination, existing.pixel, None, None, existing.test_event_code, now)
    )
    store.audit(now, who, "token.remove", destination)
    state["targets"].invalidate(destination)
    return f"{LABELS[destination]}: token removed; back to sandbox mode"


def save_routes(
    state: dict[str, Any], destination: str, fields: dict[str, list[str]], who: str
) -> str:
    store: Store = state["store"]
    now = time.time()
    if one(fields, "all"):
        routing.store_route(store, destination, None, now)
        store.audit(now, who, "route.clear", f"{destination}: all events")
        names: list[str] | None = None
    else:
        picked = [v for v in fields.get("event", []) if v.strip()]
        picked += [v for v in one(fields, "custom").split(",") if v.strip()]
        if not picked:
            raise FieldError("events: tick at least one event, or All events")
        try:
            names = routing.check_events(picked)
        except routing.RouteError as exc:
            raise FieldError(str(exc)) from None
        routing.store_route(store, destination, names, now)
        store.audit(now, who, "route.set", f"{destination}: {routing.describe(names)}")
    state["routes"].invalidate()
    return f"{LABELS[destination]}: {routing.describe(names)}"


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    def known(destination: str) -> bool:
        return destination in LABELS

    async def show(
        request: Request, admin: Annotated[Admin, Depends(require_admin_page)]
    ) -> HTMLResponse:
        saved = request.query_params.get("saved", "")
        message = f"{LABELS[saved]}: saved." if saved in LABELS else None
        return page(state, settings, admin, message=message, kind="ok")

    async def act(request: Request, destination: str, admin: Admin, action: str) -> Response:
        if not known(destination):
            return page(
                state,
                settings,
                admin,
                message=f"destination: unknown destination {destination!r} (tiktok or meta)",
                kind="error",
                status=404,
            )
        try:
            fields = await read_fields(request)
            who = admin.actor
            if action == "save":
                save_connection(state, settings, destination, fields, who)
            elif action == "remove":
                remove_token(state, destination, who)
            else:
                save_routes(state, destination, fields, who)
        except FieldError as exc:
            return page(state, settings, admin, message=str(exc), kind="error", status=400)
        return RedirectResponse(f"{PATH}?saved={destination}#{destination}", status_code=303)

    async def save(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_csrf)]
    ) -> Response:
        return await act(request, destination, admin, "save")

    async def remove(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_csrf)]
    ) -> Response:
        return await act(request, destination, admin, "remove")

    async def set_routes(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_csrf)]
    ) -> Response:
        return await act(request, destination, admin, "routes")

    app.add_api_route(PATH, show, methods=["GET"], include_in_schema=False)
    app.add_api_route(PATH + "/{destination}", save, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        PATH + "/{destination}/remove-token", remove, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        PATH + "/{destination}/routes", set_routes, methods=["POST"], include_in_schema=False
    )
