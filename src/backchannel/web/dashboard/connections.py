"""The Connections page: one section per registered destination, generated from what it
declares (``CREDENTIALS``: label, hint, pattern, required, secret), plus its Test Events code
and its event routing.

The same settings ``backchannel token set|remove`` and ``backchannel route`` write, so either
may change what the other shows; both check values with :mod:`backchannel.connect`.

**Secrets are write-only.** The token and every other secret a destination declares are
typed into password inputs that are never pre-filled; left empty, the stored value is kept.
Once stored (Fernet-encrypted: the token in its column, the other secrets as one ciphertext of
a JSON object) the page shows only the token's last four characters and when it was set, and
for the others only that they are set. No response, log line, audit entry or error message
ever holds one: a refused form is answered with the page as it was, naming the field and the
reason, never echoing what was typed. Setting, replacing and removing are audited
(``token.set`` / ``token.replace`` / ``connection.update`` / ``token.remove``; names only).

A change is applied at once in this process (the cached target and routes are dropped) and
within 5 s in others (``Targets`` and ``Routes`` reload that often).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backchannel import connect, credentials, routing
from backchannel import destinations as registry
from backchannel.catalog import EVENTS
from backchannel.config import Settings
from backchannel.connect import PIXEL, TOKEN, CredentialError
from backchannel.destinations import Credential, Destination
from backchannel.members import EDITOR, VIEWER
from backchannel.properties import PropertyError, check_name
from backchannel.store.base import DEFAULT_PROPERTY, Connection, Store
from backchannel.web.access import require_role
from backchannel.web.auth import Admin, FormError, csrf_field, read_form_fields
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc, on_property

PATH = "/admin/connections"
#: the form's own fields: a destination's credential keys must not be one of these
RESERVED_FIELDS = ("csrf_token", "test_event_code", "connection", "new")
PIXEL_MAXLENGTH = 64
OFF = "off — not connected"

#: a refused form field; ``str()`` names it and says why (never quoting a secret)
FieldError = CredentialError


async def read_fields(request: Request) -> dict[str, list[str]]:
    """The form's fields, every value of each (checkboxes repeat a name). Bounded."""
    try:
        return await read_form_fields(request)
    except FormError as exc:
        raise FieldError(f"(form): {exc}") from None


def one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0].strip()


def token_set_at(store: Store, destination: str) -> float | None:
    """When the stored token was last set or replaced (from the audit log)."""
    rows = store.read(
        "SELECT MAX(at) FROM audit_log WHERE action IN (?, ?) AND detail LIKE ?",
        ("token.set", "token.replace", destination + " %"),
    )
    return None if not rows or rows[0][0] is None else float(rows[0][0])


# -- which connection ---------------------------------------------------------------------------
def check_label(destination: str, raw: str) -> str:
    """A connection label from a form, as ``token set --connection`` checks it: a name, never
    another destination's name. Empty: the destination's first connection."""
    if not raw.strip():
        return destination
    try:
        label = check_name(raw, "connection")
    except PropertyError as exc:
        raise FieldError(str(exc)) from None
    if label != destination and label in registry.DESTINATIONS:
        raise FieldError(f"connection: {label!r} is the name of another destination")
    return label


def connection_of(
    store: Store, destination: str, label: str, property_id: int
) -> Connection | None:
    """The property's connection ``label``, which must be of ``destination`` if it exists."""
    found = store.get_connection(label, property_id)
    if found is not None and found.destination != destination:
        raise FieldError(f"connection: {label!r} is a {found.destination} connection")
    return found


def anchor(destination: str, label: str) -> str:
    """The section id and test-id suffix of a connection: the destination's name for its first
    connection (as before several were possible), ``destination-label`` for the others."""
    return destination if label == destination else f"{destination}-{label}"


# -- the page ---------------------------------------------------------------------------------
def mode_of(
    state: dict[str, Any], settings: Settings, destination: str, connection: Connection | None
) -> str:
    """sandbox / live while the connection gets rows; "off — not connected" otherwise."""
    if destination not in settings.destinations and (connection is None or not connection.live):
        return OFF
    key = connection.id if connection is not None and connection.id is not None else destination
    try:
        return "sandbox" if state["targets"].resolve(key).sandbox else "live"
    except Exception as exc:  # no sandbox and no token, or a key that does not decrypt
        return f"unavailable ({type(exc).__name__})"


def field_label(credential: Credential, note: str = "") -> str:
    """The label text, its hint and an optional note, escaped."""
    parts = [p for p in (credential.hint, note) if p]
    if not credential.required and credential.key != TOKEN:
        parts.append("optional")
    extra = f" <span class=muted>({esc('; '.join(parts))})</span>" if parts else ""
    return esc(credential.label) + extra


def credential_input(
    credential: Credential,
    destination: str,
    connection: Connection | None,
    pixel: str,
    secret_keys: tuple[str, ...],
) -> str:
    """One ``<label>`` with its input: secrets never pre-filled, plain values pre-filled."""
    key = credential.key
    if key == PIXEL:
        required = " required" if credential.required else ""
        return (
            f"<label>{field_label(credential)} <input type=text name={PIXEL}"
            f' value="{esc(pixel)}"{required} maxlength={PIXEL_MAXLENGTH} autocomplete=off>'
            "</label>"
        )
    if credential.secret:
        stored = (
            connection is not None and connection.token_encrypted is not None
            if key == TOKEN
            else key in secret_keys
        )
        note = "leave empty to keep the stored one" if stored else "none stored yet"
        return (
            f"<label>{field_label(credential, note)} <input type=password name={esc(key)}"
            f' value="" autocomplete=new-password maxlength={connect.SECRET_MAX}></label>'
        )
    value = connect.plain_values(connection).get(key, "")
    required = " required" if credential.required else ""
    if "\n" in value:  # a multi-line value (one item per line) would lose its breaks in <input>
        control = (
            f"<textarea name={esc(key)} rows=4 maxlength={connect.PLAIN_MAX}{required}>"
            f"{esc(value)}</textarea>"
        )
    else:
        control = (
            f'<input type=text name={esc(key)} value="{esc(value)}"{required}'
            f" maxlength={connect.PLAIN_MAX} autocomplete=off>"
        )
    return f"<label>{field_label(credential)} {control}</label>"


def known_secret_keys(settings: Settings, connection: Connection | None) -> tuple[str, ...]:
    """Which secret extras are stored (names only); empty when they do not decrypt."""
    if connection is None or not connection.secrets_encrypted:
        return ()
    try:
        return connect.secret_keys(credentials.load_cipher(settings, create=False), connection)
    except (CredentialError, credentials.SecretError):
        return ()


def section(
    state: dict[str, Any],
    settings: Settings,
    admin: Admin,
    spec: Destination,
    connection: Connection | None,
) -> str:
    """One connection of the request's property (None: the destination has none there yet;
    the section then sets up its first)."""
    store: Store = state["store"]
    destination = spec.name
    name = connection.name if connection is not None else destination
    tid = anchor(destination, name)
    label = spec.display_name if name == destination else f"{spec.display_name} — {name}"
    parsed = routing.parse(connection.routes if connection is not None else None)
    routes = None if parsed is None else sorted(parsed)
    first_of_default = name == destination and admin.property_id == DEFAULT_PROPERTY
    mode = mode_of(state, settings, destination, connection)
    has_token = connection is not None and connection.token_encrypted is not None
    secret_keys = known_secret_keys(settings, connection)
    if has_token and connection is not None:
        set_at = (
            token_set_at(store, destination) if first_of_default else None
        ) or connection.updated_at
        token_text = (
            f'<span data-testid="token-{tid}">…{esc(connection.token_last4)}</span>'
            f" <span class=muted>set {esc(layout.when(set_at))}</span>"
        )
    else:
        token_text = f'<span data-testid="token-{tid}">not set</span>'
    # no connection yet: the pixel from the configuration (BACKCHANNEL_*_PIXEL), as Targets uses
    pixel = (
        connection.pixel
        if connection is not None
        else ((settings.pixel_for(destination) or "") if first_of_default else "")
    )
    code = (connection.test_event_code if connection is not None else None) or ""
    mode_class = "ok" if mode == "live" else "warn"
    facts = []
    for credential in spec.CREDENTIALS:
        key = credential.key
        if key == PIXEL:
            facts.append(
                f"<dt>{esc(credential.label)}</dt>"
                f'<dd data-testid="pixel-{tid}">{esc(pixel) or "—"}</dd>'
            )
        elif key == TOKEN:
            facts.append(f"<dt>{esc(credential.label)}</dt><dd>{token_text}</dd>")
        else:
            if credential.secret:
                shown = "set" if key in secret_keys else "not set"
            else:
                shown = connect.plain_values(connection).get(key) or "—"
            facts.append(
                f"<dt>{esc(credential.label)}</dt>"
                f'<dd data-testid="setting-{tid}-{esc(key)}">{esc(shown)}</dd>'
            )
    if mode == "sandbox":
        note = (
            " <span class=muted>(no token: events go to the local sandbox, not to"
            f" {esc(label)})</span>"
        )
    elif mode == OFF:
        note = " <span class=muted>(save its values below to send to it)</span>"
    else:
        note = ""
    summary = (
        "<dl class=facts>"
        f'<dt>Mode</dt><dd><strong class="{mode_class}" data-testid="mode-{tid}">'
        f"{esc(mode)}</strong>{note}</dd>"
        + "".join(facts)
        + f'<dt>Test event code</dt><dd data-testid="code-{tid}">{esc(code) or "—"}</dd>'
        f'<dt>Events sent</dt><dd data-testid="routes-{tid}">'
        f"{esc(routing.describe(routes))}</dd></dl>"
    )
    inputs = []
    for credential in spec.CREDENTIALS:
        inputs.append(credential_input(credential, destination, connection, pixel, secret_keys))
        if credential.key == PIXEL:  # the test code right after the pixel, as always
            inputs.append(
                "<label>Test event code <span class=muted>(from Events Manager → Test Events;"
                " sent instead of the conversion's code for test events)</span>"
                f' <input type=text name=test_event_code value="{esc(code)}" maxlength=64'
                " autocomplete=off></label>"
            )
    which = f'<input type=hidden name=connection value="{esc(name)}">'
    remove_to = on_property(admin, f"{PATH}/{destination}/remove-token")
    save = (
        f'<form method="post" action="{esc(on_property(admin, f"{PATH}/{destination}"))}"'
        ' class="stacked"'
        f' data-testid="connection-{tid}">{csrf_field(admin)}{which}'
        + "".join(inputs)
        + f"<button type=submit>Save {esc(label)}</button></form>"
    )
    if spec.ON_BY_DEFAULT:
        remove = (
            layout.post_button(admin, remove_to, "Remove the token", connection=name)
            + " <span class=muted>(keeps pixel and code; back to sandbox mode)</span>"
            if has_token or secret_keys
            else ""
        )
    else:
        remove = (
            layout.post_button(admin, remove_to, "Disconnect", connection=name)
            + " <span class=muted>(forgets every value stored for it; it gets no events)</span>"
            if connection is not None
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
        f'<form method="post" action="{esc(on_property(admin, f"{PATH}/{destination}/routes"))}"'
        ' class="routes"'
        f' data-testid="routes-form-{tid}">{csrf_field(admin)}{which}'
        f"<fieldset><legend>Events sent to {esc(label)}</legend>"
        f"<label class=all><input type=checkbox name=all value=1"
        f"{' checked' if routes is None else ''}> All events</label>"
        f"<div class=events>{boxes}</div>"
        "<label>Custom events <span class=muted>(comma-separated)</span>"
        f' <input type=text name=custom value="{esc(custom)}" maxlength=2000></label>'
        "</fieldset>"
        f"<button type=submit>Save events for {esc(label)}</button></form>"
    )
    # the forms only for those who may change connections (editor, owner): a viewer reads
    controls = f"{save}<p>{remove}</p>{route_form}" if admin.may(EDITOR) else ""
    return (
        f'<section class=connection id="{tid}"><h2>{esc(label)}</h2>{summary}{controls}</section>'
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
    stored = store.list_connections(admin.property_id)
    intro = (
        "<p class=muted>Paste each platform's account id and secrets from its Events Manager"
        " or API settings. Secrets are stored encrypted and never shown again (the token's"
        " last four characters only). Without a token a destination that is on by default is in"
        " <strong>sandbox mode</strong>: events go to the built-in emulator; any other"
        " destination is off until connected. The CLI sets the same things:"
        " <code>backchannel token set</code>, <code>backchannel route set</code>"
        " (<code>--property</code>, <code>--connection</code>).</p>"
    )
    parts: list[str] = []
    for name, spec in registry.DESTINATIONS.items():
        # the property's connections of it, its first (labelled with its name) first
        mine = sorted((c for c in stored if c.destination == name), key=lambda c: c.name != name)
        shown: list[Connection | None] = [*mine] if mine else [None]
        parts.extend(section(state, settings, admin, spec, c) for c in shown)
        if admin.may(EDITOR):
            parts.append(add_form(admin, spec))
    body = layout.notice(message, kind=kind) + intro + "".join(parts)
    return layout.render("Connections", body, admin, active="connections", status=status)


def add_form(admin: Admin, spec: Destination) -> str:
    """ "Add another connection" of a destination to the request's property: a label and the
    destination's values (a second TikTok pixel with its own token)."""
    destination = spec.name
    inputs = "".join(credential_input(c, destination, None, "", ()) for c in spec.CREDENTIALS)
    return (
        f'<details class=add-connection data-testid="add-{destination}">'
        f"<summary>Add another {esc(spec.display_name)} connection</summary>"
        f'<form method="post" action="{esc(on_property(admin, f"{PATH}/{destination}"))}"'
        f' class="stacked" data-testid="add-form-{destination}">{csrf_field(admin)}'
        "<input type=hidden name=new value=1>"
        "<label>Label <span class=muted>(a name for this account, e.g. us-pixel: a letter,"
        " then letters, digits, '.', '_' or '-')</span> <input type=text name=connection"
        ' value="" required maxlength=64 autocomplete=off></label>'
        + inputs
        + "<label>Test event code <span class=muted>(optional)</span> <input type=text"
        ' name=test_event_code value="" maxlength=64 autocomplete=off></label>'
        f"<button type=submit>Add {esc(spec.display_name)} connection</button></form></details>"
    )


# -- the actions ------------------------------------------------------------------------------
def change_from_form(spec: Destination, fields: dict[str, list[str]]) -> connect.Change:
    """The form as a :class:`connect.Change`, every field checked (nothing written yet)."""
    change = connect.Change()
    for credential in spec.CREDENTIALS:
        key = credential.key
        raw = one(fields, key)
        if key == PIXEL:
            if raw or credential.required:
                change.pixel = connect.check(credential, raw)
        elif credential.secret:
            if raw:  # empty: keep the stored one (write-only field)
                value = connect.check(credential, raw)
                if key == TOKEN:
                    change.token = value
                else:
                    change.secrets[key] = value
        else:
            change.plain[key] = connect.check(credential, raw) if raw else None
    change.test_event_code = connect.check_test_code(one(fields, "test_event_code"))
    return change


def save_connection(
    state: dict[str, Any],
    settings: Settings,
    destination: str,
    fields: dict[str, list[str]],
    who: str,
    property_id: int = DEFAULT_PROPERTY,
) -> str:
    """Validate everything first, then write; returns the message to show. The form's
    ``connection`` names which of the property's connections (a new label adds one; with
    ``new`` set, the label must be new)."""
    spec = connect.spec(destination)
    label = check_label(destination, one(fields, "connection"))
    store: Store = state["store"]
    existing = connection_of(store, destination, label, property_id)
    if existing is not None and one(fields, "new"):
        raise FieldError(
            f"connection: {label!r} exists already in this property; change it in its section"
        )
    change = change_from_form(spec, fields)
    now = time.time()
    try:
        cipher = credentials.load_cipher(settings)
    except credentials.SecretError as exc:
        raise FieldError(f"(key): {exc}") from None
    saved = connect.merge(spec, existing, change, cipher, now, property_id=property_id, label=label)
    store.set_connection(saved.connection)
    store.audit(now, who, saved.action, saved.detail, property_id)
    state["targets"].invalidate()  # by id and by name: forget every cached target
    state["routes"].invalidate()  # a destination that is not on by default is on once stored
    last4 = saved.connection.token_last4
    return f"{spec.display_name} saved" + (
        f" (token …{last4} stored encrypted)" if change.token else ""
    )


def remove_token(
    state: dict[str, Any],
    destination: str,
    who: str,
    label: str | None = None,
    property_id: int = DEFAULT_PROPERTY,
) -> str:
    spec = connect.spec(destination)
    store: Store = state["store"]
    name = check_label(destination, label or "")
    existing = connection_of(store, destination, name, property_id)
    if existing is None or (
        spec.ON_BY_DEFAULT and existing.token_encrypted is None and not existing.secrets_encrypted
    ):
        raise FieldError("token: none stored")
    now = time.time()
    after = connect.without_secrets(spec, existing, now)
    if after is None:
        store.delete_connection(name, property_id)
    else:
        store.set_connection(after)
    store.audit(
        now,
        who,
        "token.remove",
        destination if name == destination else f"{destination} {name}",
        property_id,
    )
    state["targets"].invalidate()
    state["routes"].invalidate()
    if after is None:
        return f"{spec.display_name}: disconnected; it gets no events"
    return f"{spec.display_name}: token removed; back to sandbox mode"


def save_routes(
    state: dict[str, Any],
    destination: str,
    fields: dict[str, list[str]],
    who: str,
    property_id: int = DEFAULT_PROPERTY,
) -> str:
    store: Store = state["store"]
    now = time.time()
    label = check_label(destination, one(fields, "connection"))
    connection_of(store, destination, label, property_id)
    named = destination if label == destination else f"{destination} {label}"
    if one(fields, "all"):
        try:
            routing.store_route(store, destination, None, now, property_id=property_id, label=label)
        except routing.RouteError as exc:
            raise FieldError(str(exc)) from None
        store.audit(now, who, "route.clear", f"{named}: all events", property_id)
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
        routing.store_route(store, destination, names, now, property_id=property_id, label=label)
        store.audit(now, who, "route.set", f"{named}: {routing.describe(names)}", property_id)
    state["routes"].invalidate()
    return f"{registry.display_name(destination)}: {routing.describe(names)}"


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    def known(destination: str) -> bool:
        return destination in registry.DESTINATIONS

    async def show(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        saved = request.query_params.get("saved", "")
        message = f"{registry.display_name(saved)}: saved." if known(saved) else None
        return page(state, settings, admin, message=message, kind="ok")

    async def act(request: Request, destination: str, admin: Admin, action: str) -> Response:
        if not known(destination):
            return page(
                state,
                settings,
                admin,
                message=f"destination: unknown destination {destination!r}"
                f" (known: {', '.join(registry.NAMES)})",
                kind="error",
                status=404,
            )
        try:
            fields = await read_fields(request)
            who = admin.actor
            pid = admin.property_id
            label = check_label(destination, one(fields, "connection"))
            if action == "save":
                save_connection(state, settings, destination, fields, who, pid)
            elif action == "remove":
                remove_token(state, destination, who, label, pid)
            else:
                save_routes(state, destination, fields, who, pid)
        except FieldError as exc:
            return page(state, settings, admin, message=str(exc), kind="error", status=400)
        back = on_property(admin, PATH, saved=destination)
        return RedirectResponse(f"{back}#{anchor(destination, label)}", status_code=303)

    async def save(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_role(EDITOR))]
    ) -> Response:
        return await act(request, destination, admin, "save")

    async def remove(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_role(EDITOR))]
    ) -> Response:
        return await act(request, destination, admin, "remove")

    async def set_routes(
        request: Request, destination: str, admin: Annotated[Admin, Depends(require_role(EDITOR))]
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
