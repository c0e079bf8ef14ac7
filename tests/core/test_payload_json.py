"""The stored payload is written by msgspec (issue 17): it reads back as orjson's did.

ingest.to_record used ``orjson.dumps(conversion)``; msgspec writes the same dataclass about
twice as fast. The two differ only in how they spell exponents, so the stored JSON must
parse to the same data for any conversion normalize makes, and give the same Conversion.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backchannel.events import Conversion, normalize
from backchannel.ingest import to_record
from backchannel.notes import InvalidConversion

NOW = 1_795_600_000.0

numbers = st.one_of(
    st.floats(min_value=0, max_value=1e300, allow_nan=False),
    st.sampled_from([0.0, 1e16, 1e21, 1e-7, 29.95, 0.1 + 0.2, 123456789012345678.0]),
    st.integers(0, 10**15),
)

conversions = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["CompletePayment", "AddToCart", "Lead"]),
        "order_id": st.one_of(st.integers(1, 10**15), st.text(min_size=1, max_size=10)),
        "value": numbers,
        "currency": st.just("USD"),
    },
    optional={
        "contents": st.lists(
            st.fixed_dictionaries(
                {"id": st.text(min_size=1, max_size=5)}, optional={"price": numbers}
            ),
            max_size=3,
        ),
        "predicted_ltv": st.floats(min_value=0, max_value=1e20, allow_nan=False),
        "user": st.fixed_dictionaries(
            {},
            optional={
                "email": st.emails(),
                "phone": st.just("+14155552671"),
                "city": st.text(max_size=10),
                "user_agent": st.text(max_size=20),
            },
        ),
        "description": st.text(max_size=30),
        "travel": st.fixed_dictionaries(
            {}, optional={"user_score": st.floats(-1e18, 1e18), "num_adults": st.integers(0, 9)}
        ),
        "vehicle": st.fixed_dictionaries(
            {}, optional={"mileage": st.just({"value": 1e16, "unit": "KM"})}
        ),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=conversions)
def test_payload_reads_back_as_orjson_wrote_it(data: dict[str, Any]) -> None:
    try:
        conversion = normalize(data, now=NOW).conversion
    except InvalidConversion:
        event("refused")
        return
    event("accepted")
    payload = to_record(conversion, [], "api", ("tiktok",)).payload
    assert orjson.loads(payload) == orjson.loads(orjson.dumps(conversion))
    assert Conversion.from_dict(orjson.loads(payload)) == conversion
