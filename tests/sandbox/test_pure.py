"""The sandbox's pure pieces: its public surface and its fast form decoder."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from hypothesis import given
from hypothesis import strategies as st

import backchannel.sandbox
from backchannel.sandbox.meta import parse_form

#: text heavy in the characters where percent- and QP-encoding could disagree
_tricky = st.text(
    alphabet=st.one_of(
        st.sampled_from("=%+& _\r\n\t%41=41é😀"), st.characters(exclude_categories=("Cs",))
    ),
    max_size=40,
)


class TestPublicApi:
    def test_exports(self) -> None:
        """The package exports exactly what the CLI and tests import."""
        assert sorted(backchannel.sandbox.__all__) == [
            "Faults",
            "SandboxConfig",
            "create_app",
            "faults_from_options",
        ]


class TestFormDecoding:
    @given(st.dictionaries(_tricky.filter(bool), _tricky, max_size=4))
    def test_matches_the_stdlib_on_encoded_forms(self, form: dict[str, str]) -> None:
        """parse_form decodes anything urlencode produces exactly as parse_qsl does."""
        encoded = urlencode(form).encode()
        assert parse_form(encoded) == dict(parse_qsl(encoded.decode(), keep_blank_values=True))

    @given(
        st.lists(
            st.sampled_from(
                ["%", "%4", "%G1", "%41", "%e9", "=", "+", "&", "a", "\n", "\r", "%C3%A9", " "]
            ),
            max_size=20,
        )
    )
    def test_matches_the_stdlib_on_malformed_bodies(self, pieces: list[str]) -> None:
        """Malformed escapes and raw line breaks fall back to the stdlib's decoding."""
        body = "".join(pieces).encode()
        expected = dict(parse_qsl(body.decode(), keep_blank_values=True, errors="replace"))
        assert parse_form(body) == expected
