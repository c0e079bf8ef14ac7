"""Security headers on every response, scoped by what the response is.

Every response: ``X-Content-Type-Options: nosniff`` (a JSON error is never run as a script)
and ``Referrer-Policy: same-origin`` (admin URLs never leak to other sites). Not
``no-referrer``: under it Chromium sends ``Origin: null`` on same-origin form POSTs, and the
login and every CSRF-checked dashboard form were refused as cross-site in a real browser.

HTML responses only (the login page and the dashboard): a strict
``Content-Security-Policy`` (``default-src 'self'``, no framing, no plugins, forms post only
to us) and ``X-Frame-Options: DENY`` for older browsers. They are *not* put on JSON or
JavaScript: ``/bc.js`` and ``/v1/collect`` are loaded and called cross-origin by shops' pages,
and a ``frame-ancestors``/CORP-style header there would break them for no gain.

Admin and login pages (``/admin…``, ``/login``, ``/logout``): ``Cache-Control: no-store`` so
neither a shared proxy nor the browser's back button shows them after logout.

HTTPS requests (or a ``public_url`` starting with https) also get
``Strict-Transport-Security``.

A pure ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: it only edits the header list
of ``http.response.start``, so it costs a few microseconds and never buffers a body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self';"
    " object-src 'none'"
)
_ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
_HTML = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY")]
_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
_HSTS = [(b"strict-transport-security", b"max-age=31536000")]
_PRIVATE_PREFIXES = ("/admin", "/reports", "/login", "/logout", "/metrics")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        #: the deployment is reached over https (public_url), whatever the proxy tells us
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        private = path.startswith(_PRIVATE_PREFIXES)
        secure = self.https or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                added = list(_ALWAYS)
                content_type = next(
                    (v for k, v in headers if k.lower() == b"content-type"), b""
                ).lower()
                if content_type.startswith(b"text/html"):
                    added += _HTML
                if private:
                    added += _NO_STORE
                if secure:
                    added += _HSTS
                headers.extend(h for h in added if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
