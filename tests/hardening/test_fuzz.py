"""Bad input: hand-made nasties, schemathesis against /openapi.json, hypothesis on identity.

schemathesis generates thousands of requests from the live app's own OpenAPI document (valid
and invalid bodies, odd query strings and path parameters) and sends them with a valid ingest
key: none may answer 5xx and none may hang (each request has a 10 s timeout).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from backchannel import identity
from backchannel.notes import Note
from backchannel.web.app import Options, create_app
from serve.helpers import add_key, conversion, make_settings
from support.server import ServerThread

from .conftest import StartApp

#: examples per operation and generation mode (valid-shaped, then deliberately invalid)
HEX = set("0123456789abcdef")
IDENTITY_SOURCE = inspect.getsource(identity)
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 900, schemathesis.GenerationMode.NEGATIVE: 600}


@dataclass
class Live:
    url: str
    key: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    app_settings = make_settings(tmp)
    key = add_key(app_settings, "fuzz")
    with ExitStack() as stack:
        server = stack.enter_context(
            ServerThread(create_app(app_settings, Options(worker=False, sandbox=False)))
        )
        yield Live(server.url, key)


@pytest.mark.slow
def test_api_never_answers_5xx(live: Live) -> None:
    """Every operation of /openapi.json, fuzzed with a valid key: no 5xx, no hang."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert any(op.path == "/v1/events" and op.method.upper() == "POST" for op in operations)
    sent: dict[str, int] = {}
    failures: list[str] = []

    def fuzzer(
        operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: schemathesis.GenerationMode
    ) -> Callable[[], None]:
        label = f"{operation.method.upper()} {operation.path}"

        @given(operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call(
                base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=10
            )
            sent[label] = sent.get(label, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{label}: {response.status_code} {response.text[:300]}")

        return fuzz

    started = time.monotonic()
    for operation in operations:
        for mode in EXAMPLES:
            try:
                fuzzer(operation, mode)()
            except Unsatisfiable:
                # No invalid variant exists (an operation without parameters or body).
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path
    elapsed = time.monotonic() - started
    assert failures == []
    assert sum(sent.values()) >= 2000, sent
    print(f"schemathesis: {sum(sent.values())} requests in {elapsed:.1f} s: {sent}")


class TestNastyBodies:
    def post(self, app_url: str, key: str, content: bytes) -> httpx.Response:
        return httpx.post(
            app_url + "/v1/events",
            content=content,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )

    def test_deep_json_is_refused_cleanly(self, start_app: StartApp) -> None:
        """100 000 nested arrays: a 422, not a stack overflow or a 500."""
        app = start_app(password=False)
        response = self.post(app.url, app.key, b"[" * 100_000 + b"]" * 100_000)
        assert response.status_code == 422

    def test_oversized_body_is_refused(self, start_app: StartApp) -> None:
        """Over 8 MiB: 413, read no further."""
        app = start_app(password=False)
        response = self.post(app.url, app.key, b'{"event": "' + b"x" * (9 * 1024 * 1024) + b'"}')
        assert response.status_code == 413

    def test_too_many_events_is_refused(self, start_app: StartApp) -> None:
        """A batch of 1001 events: 413."""
        app = start_app(password=False)
        body = orjson.dumps({"events": [conversion(i) for i in range(1001)]})
        assert self.post(app.url, app.key, body).status_code == 413

    def test_wrong_types_answer_422(self, start_app: StartApp) -> None:
        """Wrong types anywhere give 422 with {path, reason}."""
        app = start_app(password=False)
        bodies: tuple[Any, ...] = (
            {"events": "nope"},
            {"events": [1, "x", None]},
            {**conversion(1), "value": "ten"},
            {**conversion(1), "user": []},
            {**conversion(1), "contents": [{"id": {"a": 1}}]},
            [],
            "string",
            12,
        )
        for body in bodies:
            response = self.post(app.url, app.key, orjson.dumps(body))
            assert response.status_code == 422, (body, response.text)

    def test_bad_utf8_and_unicode_oddities(self, start_app: StartApp) -> None:
        """Invalid UTF-8, lone surrogates, NUL, RTL overrides, zero-width: never a 5xx."""
        app = start_app(password=False)
        bodies = [
            b'{"event": "CompletePayment", "order_id": "\xff\xfe"}',
            b'{"event": "CompletePayment", "order_id": "\\ud800"}',
            orjson.dumps({**conversion("nul\x00id"), "description": "\u202eevil\u200b"}),
            orjson.dumps(
                {
                    **conversion(2),
                    "user": {
                        "email": "ja\u200bne@exa\u0301mple.com",
                        "phone": "\u0661\u0662\u0663",
                    },
                }
            ),
            orjson.dumps({**conversion(3), "event": "Ｃｏｍｐｌｅｔｅ"}),
        ]
        for body in bodies:
            response = self.post(app.url, app.key, body)
            assert response.status_code < 500, (body[:80], response.text)


class TestIdentityProperties:
    normalizers: ClassVar = [
        identity.normalize_email,
        identity.normalize_external_id,
        identity.normalize_name,
        identity.normalize_zip,
        identity.normalize_location,
        identity.normalize_country,
    ]

    @given(st.text(max_size=300))
    @settings(max_examples=1500, deadline=None)
    def test_normalizers_raise_only_unusable(self, raw: str) -> None:
        """Every normalize_* accepts any string or raises Unusable, nothing else."""
        for normalize in self.normalizers:
            with contextlib.suppress(identity.Unusable):
                normalize(raw)
        for region in (None, "US", "de", "ZZ"):
            with contextlib.suppress(identity.Unusable):
                identity.normalize_phone(raw, region)

    @given(
        st.dictionaries(
            st.sampled_from(
                [
                    "email",
                    "phone",
                    "external_id",
                    "first_name",
                    "last_name",
                    "zip",
                    "city",
                    "state",
                    "country",
                    "ip",
                    "user_agent",
                    "locale",
                    "ttclid",
                ]
            ),
            st.one_of(
                st.text(min_size=1, max_size=80),
                st.integers(),
                st.lists(st.text(min_size=1, max_size=40), max_size=3),
            ),
        ),
        st.sampled_from([None, "US", "GB"]),
    )
    @settings(max_examples=1500, deadline=None)
    def test_hash_user_never_raises_and_never_emits_plaintext(
        self, raw: dict[str, object], region: str | None
    ) -> None:
        """hash_user takes anything; hashed fields hold only 64-hex digests, never the input."""
        notes: list[Note] = []
        user = identity.hash_user(raw, region, notes)  # type: ignore[arg-type]
        for value in user.hashed_values():
            assert identity.is_sha256_hex(value)
        secret_fields = ("email", "phone", "external_id", "first_name", "last_name", "zip")
        values: list[str] = []
        for name in secret_fields:
            given_value = raw.get(name)
            items = given_value if isinstance(given_value, list) else [given_value]
            values.extend(str(v).strip() for v in items if v is not None)
        # Text a 64-hex digest could contain by chance, or that the fixed reasons contain, says
        # nothing; anything else found in the output would be leaked plaintext.
        plaintext = [
            v
            for v in values
            if len(v) >= 6 and not set(v.lower()) <= HEX and v not in IDENTITY_SOURCE
        ]
        shown = repr(user.hashed_values()) + repr([n.as_dict() for n in notes])
        for text in plaintext:
            assert text not in shown
            assert text.lower() not in shown

    @given(st.emails(), st.from_regex(r"\+1 [2-9]\d\d [2-9]\d\d \d{4}", fullmatch=True))
    @settings(max_examples=500, deadline=None)
    def test_real_identifiers_come_out_hashed(self, email: str, phone: str) -> None:
        """Real emails and phones always come out as digests, and the notes never quote them."""
        notes: list[Note] = []
        user = identity.hash_user({"email": email, "phone": phone}, None, notes)
        everything = repr(user) + repr([n.as_dict() for n in notes])
        assert email not in everything
        assert phone not in everything
        assert "+" + "".join(c for c in phone if c.isdigit()) not in everything
