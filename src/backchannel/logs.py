"""Structured logs: JSON lines for machines, plain lines for people, secrets and PII redacted.

Why redact in the logging pipeline and not only at call sites: a log line is written by our
code, by uvicorn, by httpx and by any exception's message, and one careless ``f"{request}"``
is enough to put an access token or a customer's email in a log shipper for years. So one
filter on the handler scrubs *every* record: the message (after ``%`` formatting), every
``extra`` field (recursively) and the formatted traceback. What is removed:

* exact secrets the process knows: destination tokens register themselves when decrypted
  (:func:`register_secret`), so the real token never appears, whatever its shape;
* API keys by their prefixes (``bc_live_``, ``bc_pub_``, ``bc_admin_``);
* ``Authorization`` / ``Access-Token`` / ``Cookie`` header values, ``token=…``,
  ``password=…``, ``secret…``-style assignments, and extra fields with such names;
* email addresses and phone-like digit runs (7 to 15 digits, separators allowed). This also
  blanks other long numbers written into a message (a unix time, a long order id): a log
  line losing a number is the price of never holding a phone number. Numbers passed as
  ``int``/``float`` extras are kept: they are not text a phone number could hide in.

Format: ``json`` writes one object per line (``ts``, ``level``, ``logger``, ``msg``,
``request_id`` when inside a request, then the extras); ``text`` a readable line; ``auto`` (the
default) picks text when stderr is a terminal, JSON otherwise (a container, systemd, a pipe).

Request ids: :class:`RequestIdMiddleware` takes a well-formed ``X-Request-ID`` from the client
(or makes one), puts it in every log record of that request and echoes it in the response.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REDACTED = "[redacted]"

#: the id of the request being handled (empty outside a request)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_API_KEY = re.compile(r"\b(bc_(?:live|pub|admin)_)[A-Za-z0-9_\-]+")
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|access-token|x-api-key|cookie|set-cookie)"
    r"(\"?'?\s*[:=]\s*\"?'?)([^\"'\n]+)"
)
_ASSIGNMENT = re.compile(
    r"(?i)\b(access_token|token|secret|secret_key|password|passwd|api_key|metrics_token"
    r"|api_secret|client_secret|refresh_token|developer[_-]token)"
    r"(\"?'?\s*[:=]\s*\"?'?)([^\s\"'&,;}]+)"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]+:)[^@\s]+@")
_EMAIL = re.compile(r"[\w.+%\-]+@[\w\-]+(?:\.[\w\-]+)+")
# A '+' or digit, then 6-14 more digits, each after at most two separators; not inside a word.
_PHONE = re.compile(r"(?<![\w.+])\+?\d(?:[ ().\-/]{0,2}\d){6,14}(?!\w)")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_SENSITIVE_NAMES = frozenset(
    {
        "token",
        "access_token",
        "authorization",
        "password",
        "secret",
        "secret_key",
        "api_key",
        "key",
        "cookie",
        "metrics_token",
        "email",
        "phone",
    }
)

_known_secrets: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Never let ``value`` (a decrypted token, say) appear in a log line of this process."""
    global _known_pattern
    value = value.strip()
    if len(value) < 8 or value in _known_secrets:
        return  # too short to be a secret worth a pattern (and would blank ordinary words)
    _known_secrets.add(value)
    ordered = sorted(_known_secrets, key=len, reverse=True)
    _known_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    return text if _DECIMAL.match(text) else "[phone]"


def scrub(text: str) -> str:
    """``text`` with known secrets, API keys, credentials, emails and phone numbers removed."""
    if _known_pattern is not None:
        text = _known_pattern.sub(REDACTED, text)
    if "bc_" in text:
        text = _API_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)
        text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(_phone, text)


def safe_url(url: str) -> str:
    """A URL fit to print: the password of ``scheme://user:password@host`` removed."""
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", url)


def scrub_value(value: Any, name: str = "") -> Any:
    """An ``extra`` field made safe: sensitive names blanked, text scrubbed, containers walked."""
    if name.lower() in _SENSITIVE_NAMES and value is not None:
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {str(k): scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_value(v) for v in value]
    return scrub(str(value))


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "_bc_scrubbed",
}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class RedactionFilter(logging.Filter):
    """Scrubs a record in place (once, however many handlers it passes)."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_bc_scrubbed", False):
            return True
        record.msg = scrub(record.getMessage())
        record.args = None
        for name, value in extras(record).items():
            setattr(record, name, scrub_value(value, name))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        record.request_id = request_id.get()
        record._bc_scrubbed = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extras become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            out["request_id"] = rid
        for name, value in extras(record).items():
            out.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``12:00:00 warning backchannel.delivery: message key=value …`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = extras(record)
        rid = getattr(record, "request_id", "")
        if rid:
            fields = {"request_id": rid, **fields}
        if fields:
            line += "  " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None
) -> logging.Handler:
    """Send every logger's records (ours, uvicorn's, httpx's) through one redacting handler.

    Idempotent: a second call replaces the handler installed by the first.
    """
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if _isatty(stream) else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactionFilter())
    handler._bc_handler = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_bc_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # httpx logs every request URL at INFO; URLs hold pixel ids, not secrets, but are noise.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    return handler


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- request ids --------------------------------------------------------------------------------

_REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


_RANDOM_BLOCK = 4096  # bytes of randomness fetched at once: 512 request ids
_ids_lock = threading.Lock()
_ids: list[str] = []


def new_request_id() -> str:
    """16 random hex digits. Why not ``secrets.token_hex(8)`` per request: each is a
    ``getrandom`` system call, measured at ~11 µs on a busy 2-core machine, on every request;
    one call here serves 512 requests, the ids as random as before."""
    with _ids_lock:
        if not _ids:
            block = os.urandom(_RANDOM_BLOCK).hex()
            _ids.extend(block[i : i + 16] for i in range(0, len(block), 16))
        return _ids.pop()


class RequestIdMiddleware:
    """Pure ASGI (no per-request task or body copy): a few microseconds on the hot path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope["headers"], b"x-request-id")
        rid = incoming if incoming and _REQUEST_ID_SHAPE.match(incoming) else new_request_id()
        token = request_id.set(rid)
        encoded = rid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
