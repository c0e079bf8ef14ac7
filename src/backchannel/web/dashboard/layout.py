"""The dashboard's page shell: navigation, the stylesheet, and small HTML building blocks.

Why server-rendered HTML with no script: the Content-Security-Policy (``web/security.py``)
forbids inline script and inline style, a dashboard that shows counts needs neither, and a
page that works with JavaScript off is one less thing to break. Charts are inline SVG built
on the server (:mod:`backchannel.charts`); the stylesheet is one static file.

**Reading numbers off a page.** Every figure a test (or a user's script) may want to read is
rendered as ``<span data-figure="key">123</span>`` with the bare number as its text (no
thousands separator, no unit): :func:`figure`. The Playwright tests read them with
``page.locator('[data-figure="key"]')`` and compare with the CLI and the store.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from backchannel.members import DEFAULT_PROPERTY_ID, OWNER, VIEWER
from backchannel.web.access import PROPERTY_PARAM
from backchannel.web.auth import Admin, csrf_field

STYLESHEET_PATH = "/static/dashboard.css"
#: the signed-in member's own password page (backchannel.web.dashboard.password)
ACCOUNT_PATH = "/admin/password"

#: (key, path, label) of every dashboard page, in menu order
NAV: tuple[tuple[str, str, str], ...] = (
    ("overview", "/admin", "Overview"),
    ("identifiers", "/admin/identifiers", "Identifiers"),
    ("dedup", "/admin/dedup", "Dedup"),
    ("dead", "/admin/dead-letters", "Dead letters"),
    ("tests", "/admin/test-events", "Test events"),
    ("gap", "/reports/gap", "Gap report"),
    ("connections", "/admin/connections", "Connections"),
    ("members", "/admin/members", "Members"),
    ("properties", "/admin/properties", "All properties"),
)
#: the role a menu entry needs (others: viewer); a member without it does not see the entry
NAV_ROLES = {"members": OWNER}
#: menu entries for members with a host-wide grant only
HOST_NAV = frozenset({"properties"})


def esc(value: object) -> str:
    """HTML-escape anything (None renders as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def figure(key: str, value: int | float | str | None, *, suffix: str = "") -> str:
    """A number a reader or a test can find: ``<span data-figure="key">value</span>``.

    None renders as an em dash (no number to invent) with ``data-figure`` still present.
    """
    text = "—" if value is None else str(value)
    return f'<span class="figure" data-figure="{esc(key)}">{esc(text)}</span>{esc(suffix)}'


def percent(value: float | None) -> str:
    """``0.625`` -> ``62.5%``; None -> an em dash."""
    return "—" if value is None else f"{value:.1%}"


def when(unix: float | None) -> str:
    """A unix time as ``2026-11-25 12:00:00 UTC`` (the dashboard speaks UTC, like the CLI)."""
    if unix is None:
        return "—"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    caption: str | None = None,
    empty: str = "Nothing yet.",
    test_id: str | None = None,
) -> str:
    """A table whose cells are ALREADY-ESCAPED HTML (so cells may hold figures and links)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{esc(empty)}</td></tr>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    tid = f' data-testid="{esc(test_id)}"' if test_id else ""
    return f"<table{tid}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def post_button(admin: Admin, action: str, label: str, **fields: str) -> str:
    """A one-button form that POSTs to ``action`` with the session's CSRF token."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items()
    )
    return (
        f'<form method="post" action="{esc(action)}" class="inline">{csrf_field(admin)}{hidden}'
        f'<button type="submit">{esc(label)}</button></form>'
    )


def notice(text: str | None, *, kind: str = "info") -> str:
    """A message box; ``kind`` is info, ok or error (error is announced to screen readers)."""
    if not text:
        return ""
    role = ' role="alert"' if kind == "error" else ' role="status"'
    return f'<p class="notice {esc(kind)}"{role}>{esc(text)}</p>'


def as_of_notice(as_of: float | None) -> str:
    """Said when a page's figures include a day's partial computed before that day's latest
    change (``max_stale``, backchannel.rollups): from when they are. Nothing when exact."""
    if as_of is None:
        return ""
    return notice(
        f"Some figures are from {when(as_of)}: a day that changed since is recomputed in the"
        " background within a minute or two (reload then). The JSON twin is always exact."
    )


# --- date ranges ----------------------------------------------------------------------------------
DEFAULT_DAYS = 7


class ParamError(ValueError):
    """A bad query parameter or form field. The message reads ``"name: reason"``, which is
    how every dashboard error names what to fix (:func:`bad_request` splits it)."""


class RangeError(ParamError):
    """A bad ``from``/``to`` query parameter; the message names it and says why."""


def bad_request(error: ValueError, status: int = 400) -> JSONResponse:
    """The dashboard's JSON error: ``{"error", "errors": [{path, reason}]}`` with the
    parameter named (``not_found`` for a 404, ``forbidden`` for a 403)."""
    message = str(error)
    path, _, reason = message.partition(": ")
    return JSONResponse(
        {
            "error": {403: "forbidden", 404: "not_found"}.get(status, "bad_request"),
            "errors": [{"path": path, "reason": reason or message}],
        },
        status_code=status,
    )


def error_page(title: str, path: str, error: ValueError, admin: Admin, active: str) -> HTMLResponse:
    """A range page refused: the error named, and a fresh form with the default range."""
    today = datetime.now(UTC).date()
    body = notice(str(error), kind="error") + range_form(
        path, today - timedelta(days=DEFAULT_DAYS - 1), today
    )
    return render(title, body, admin, active=active, status=400)


def parse_range(request: Request, *, today: date | None = None) -> tuple[date, date]:
    """The inclusive UTC day range of ``?from=YYYY-MM-DD&to=YYYY-MM-DD`` (default: last 7
    days, today included). Raises :class:`RangeError` naming the bad parameter."""
    today = today or datetime.now(UTC).date()
    values: dict[str, date] = {}
    for name in ("from", "to"):
        raw = request.query_params.get(name, "").strip()
        if not raw:
            continue
        try:
            values[name] = date.fromisoformat(raw)
        except ValueError:
            raise RangeError(f"{name}: not a date; use YYYY-MM-DD") from None
    end = values.get("to", today)
    start = values.get("from", end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise RangeError("from: after to")
    if (end - start).days > 366:
        raise RangeError("from: the range is longer than 366 days")
    return start, end


def range_form(action: str, start: date, end: date, extra: str = "") -> str:
    """The GET form that picks a day range (``extra``: more already-escaped inputs)."""
    return (
        f'<form method="get" action="{esc(action)}" class="range">'
        f'<label>From <input type="date" name="from" value="{start.isoformat()}"></label> '
        f'<label>To <input type="date" name="to" value="{end.isoformat()}"></label> '
        f'{extra}<button type="submit">Show</button></form>'
    )


# --- the page -----------------------------------------------------------------------------------
_GET_FORM = re.compile(r'(<form method="get"[^>]*>)')
#: a same-site dashboard URL in a link or a POST form's action (as rendered: HTML-escaped);
#: a GET form's action is left alone (a browser replaces its query by the form's fields)
_DASHBOARD_URL = re.compile(
    r'(?<!<form method="get" )\b(href|action)="(/(?:admin|reports)(?:[/?#][^"]*)?)"'
)


def keeps_property(admin: Admin) -> bool:
    """Whether the page's links must name its property: when the request named it, and
    always for a property other than the default (a link without ``?property=`` means the
    default property, where the member may have no role)."""
    return admin.property_named or admin.property_id != DEFAULT_PROPERTY_ID


def on_property(admin: Admin, url: str, **params: str) -> str:
    """``url`` with ``params`` and, when the page is about a property other than the default
    (or the request named it), ``property=NAME``: every link, form action and redirect of a
    page stays on the property it shows (require_role reads it from there). ``url`` may
    already hold a query string and a ``#fragment``. The one place that builds such a URL;
    :func:`render` passes each page's body through :func:`keep_property`, which calls it
    for every dashboard link a page rendered without it."""
    base, hashmark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    pairs += list(params.items())
    if keeps_property(admin) and not any(k == PROPERTY_PARAM for k, _ in pairs):
        pairs.append((PROPERTY_PARAM, admin.property_name))
    built = f"{path}?{urlencode(pairs)}" if pairs else path
    return built + (hashmark + fragment if hashmark else "")


def keep_property(body: str, admin: Admin) -> str:
    """Every dashboard link and form of the page stays on the page's property: each
    ``href``/``action`` to /admin or /reports gets ``property=NAME`` (unless it names a
    property already, as the "All properties" page's do) and every GET form (the range
    pickers, filters) a hidden ``property`` field, so picking a range on property eu stays
    on eu. Done here once, for every page :func:`render` shows, rather than in each page:
    a page added later cannot forget it."""
    if not keeps_property(admin):
        return body
    hidden = f'<input type="hidden" name="{PROPERTY_PARAM}" value="{esc(admin.property_name)}">'

    def link(match: re.Match[str]) -> str:
        url = html.unescape(match.group(2))
        return f'{match.group(1)}="{esc(on_property(admin, url))}"'

    body = _DASHBOARD_URL.sub(link, body)
    return _GET_FORM.sub(lambda m: m.group(1) + hidden, body)


def switch_link(admin: Admin, name: str) -> str:
    """The URL of the page being shown, on property ``name``: the same path and the same
    query parameters, ``property`` replaced."""
    query = [(k, v) for k, v in admin.query if k != PROPERTY_PARAM]
    return f"{admin.path}?{urlencode([*query, (PROPERTY_PARAM, name)])}"


def property_switcher(admin: Admin) -> str:
    """The current property's name and a link to this page on each other property the
    member has a role on; nothing when there is only one. Only properties in
    ``admin.properties`` (those the member holds a role on) are ever named."""
    if len(admin.properties) < 2:
        return ""
    others = "".join(
        f'<li><a href="{esc(switch_link(admin, name))}" data-property="{esc(name)}">'
        f"{esc(name)}</a></li>"
        for pid, name in admin.properties
        if pid != admin.property_id
    )
    return (
        '<nav class="properties" aria-label="Property" data-testid="property-switcher">'
        f'Property: <strong data-testid="current-property">{esc(admin.property_name)}</strong>'
        f"<ul>{others}</ul></nav>"
    )


def render(
    title: str,
    body: str,
    admin: Admin,
    *,
    active: str,
    status: int = 200,
    refresh: int | None = None,
) -> HTMLResponse:
    """A whole dashboard page: head, menu (``active`` is a :data:`NAV` key), body, log out.

    ``refresh``: seconds after which the browser reloads the page (a ``<meta>`` refresh:
    allowed by the CSP, unlike a script), for pages that wait for a delivery.
    """
    links = "".join(
        f'<a href="{esc(on_property(admin, path))}"{" aria-current=page" if key == active else ""}>'
        f"{esc(label)}</a>"
        for key, path, label in NAV
        if admin.may(NAV_ROLES.get(key, VIEWER)) and (key not in HOST_NAV or admin.host_wide)
    )
    who = (
        f'<span class="muted" data-testid="who">{esc(admin.name)}'
        f' <span data-testid="role">({esc(admin.role or "no role")})</span></span>'
    )
    logout = (
        f'<a href="{esc(on_property(admin, ACCOUNT_PATH))}" data-testid="change-password"'
        f"{' aria-current=page' if active == 'password' else ''}>Password</a> "
        f'<form method="post" action="/logout" class="inline">{csrf_field(admin)}'
        '<button type="submit">Log out</button></form>'
        if admin.via == "session"
        else ""
    )
    body = keep_property(body, admin)
    meta_refresh = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta_refresh}<title>{esc(title)} · Backchannel</title>"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}"></head><body>'
        f'<header><strong class="brand">Backchannel</strong><nav>{links}</nav>'
        f"{property_switcher(admin)}{who}{logout}"
        "</header>"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status)


def stylesheet() -> Response:
    css = (resources.files("backchannel.web") / "static" / "dashboard.css").read_text("utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
