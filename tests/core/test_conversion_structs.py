"""The msgspec structs of the hot path agree with the pydantic models (issue 17).

The models are the one source of truth (OpenAPI, the 422 contract); the structs only make
accepting fast. What must hold, checked here:

1. the same fields, in the same order, with the same defaults, limits and types (each
   struct's JSON schema equals its model's, titles and descriptions aside);
2. on generated documents (every field of the model's own JSON schema, valid values at and
   around each limit, and invalid ones: too long, out of range, wrong type, infinite,
   unknown field, lone surrogate), the fast path accepts exactly the documents the model
   accepts, with the same values, and where both refuse, the field msgspec names is one of
   the fields pydantic names;
3. what the model accepts only by a lax coercion, and travel/vehicle, go through the model
   (the fast path refuses them) and give the same conversion as before;
4. normalize gives the same conversion and the same warnings by either path.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from backchannel import conversion_structs, events
from backchannel.conversion_structs import STRUCTS, ConversionStruct
from backchannel.events import ConversionIn, normalize, validation_notes
from backchannel.notes import InvalidConversion

NOW = 1_795_600_000.0
FLOAT_MAX = sys.float_info.max
SORTED = orjson.OPT_SORT_KEYS
#: the industry sets: validated by the models' own validators, never by the structs
MODEL_ONLY = {"travel", "vehicle"}
MODEL_SCHEMA = ConversionIn.model_json_schema()
DEFS: dict[str, Any] = MODEL_SCHEMA["$defs"]


def models() -> dict[str, type[BaseModel]]:
    return {name: getattr(events, name) for name in STRUCTS}


# --- 1. the same fields, defaults, limits and types ------------------------------------------


def canonical(schema: Any, rename: dict[str, str]) -> Any:
    """A JSON schema without what may differ in wording: titles, descriptions, defaults
    (compared on their own), the ±float max bounds that spell ``allow_inf_nan=False`` in
    msgspec, an empty ``required``, ``type: string`` beside a string enum, and the order of
    ``anyOf`` alternatives, enum values and required names; ``$ref`` names mapped by
    ``rename``."""
    if isinstance(schema, list):
        return [canonical(item, rename) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "description", "default"):
            continue
        if key in ("minimum", "maximum") and abs(value) == FLOAT_MAX:
            continue
        if key == "required" and not value:
            continue  # msgspec writes an empty list, pydantic none
        if key in ("enum", "required"):
            out[key] = sorted(value)
            if key == "enum" and all(isinstance(v, str) for v in value):
                out["type"] = "string"  # pydantic says it, msgspec leaves it implied
        elif key == "$ref":
            name = value.rsplit("/", 1)[1]
            out[key] = rename.get(name, name)
        elif key == "anyOf":
            alternatives = [canonical(item, rename) for item in value]
            out[key] = sorted(alternatives, key=lambda s: orjson.dumps(s, option=SORTED))
        else:
            out[key] = canonical(value, rename)
    return out


class TestSameShape:
    @pytest.mark.parametrize("name", sorted(STRUCTS))
    def test_json_schema_equals_the_models(self, name: str) -> None:
        """Per property: types, lengths, bounds, patterns, enums, required, extra=forbid."""
        model, struct = models()[name], STRUCTS[name]
        rename = {s.__name__: m for m, s in STRUCTS.items()}
        _, struct_defs = msgspec.json.schema_components([struct])
        mine = canonical(struct_defs[struct.__name__], rename)
        theirs = canonical(model.model_json_schema(), rename)
        theirs.pop("$defs", None)
        for prop in MODEL_ONLY & set(theirs["properties"]):
            assert mine["properties"].pop(prop) == {"type": "null"}
            del theirs["properties"][prop]
        assert mine == theirs

    @pytest.mark.parametrize("name", sorted(STRUCTS))
    def test_same_fields_in_order_with_the_same_defaults(self, name: str) -> None:
        model, struct = models()[name], STRUCTS[name]
        assert list(struct.__struct_fields__) == list(model.model_fields)
        for info in msgspec.structs.fields(struct):
            field = model.model_fields[info.name]
            if field.is_required():
                assert info.required, info.name
                continue
            default = field.get_default(call_default_factory=True)
            mine = info.default_factory() if info.default is msgspec.NODEFAULT else info.default
            if isinstance(default, BaseModel):
                assert msgspec.structs.asdict(mine) == default.model_dump(), info.name
            else:
                assert mine == default, info.name

    def test_limits_are_the_models(self) -> None:
        assert conversion_structs.MAX_ID_LENGTH == events.MAX_ID_LENGTH
        assert conversion_structs.MAX_CONTENTS == events.MAX_CONTENTS


# --- 2. generated documents: the same verdicts, the same values, the same fields -------------

WORDS = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=12,
)
NOT_A_NUMBER = st.sampled_from(["abc", "", [1], {"a": 1}])


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return DEFS[ref.rsplit("/", 1)[1]] if ref else schema


def valid(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the schema admits with no coercion, often at a limit."""
    schema = resolve(schema)
    if "anyOf" in schema:
        return st.one_of([valid(alt, depth) for alt in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
        text = st.one_of(
            WORDS.filter(lambda s: low <= len(s) <= high),
            st.just("é" * high),
            st.just("a" * max(low, 1)),
            st.sampled_from(["Purchase", "CompletePayment", "USD", "eur", " 42 ", "x@y.co"]),
        )
        if "pattern" in schema:
            pattern = re.compile(schema["pattern"])
            text = text.filter(lambda s: pattern.search(s) is not None)
        return text
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1)
        return st.one_of(st.integers(low, high), st.sampled_from([low, high]))
    if kind == "number":
        low, high = schema.get("minimum", -1e12), schema.get("maximum", 1e12)
        return st.one_of(
            st.floats(low, high, allow_nan=False, allow_infinity=False),
            st.integers(math.ceil(low), math.floor(high)),
        )
    if kind == "array":
        size = min(schema.get("maxItems", 3), 3)
        return st.lists(valid(schema["items"], depth + 1), max_size=size)
    if kind == "object":
        if depth > 0 and "TravelIn" in schema.get("title", "") + schema.get("$ref", ""):
            return st.just({})
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: valid(v, depth + 1) for k, v in props.items() if k in required},
            optional={
                k: valid(v, depth + 1)
                for k, v in props.items()
                if k not in required and k not in MODEL_ONLY
            },
        )
    raise AssertionError(f"no strategy for {schema}")


def invalid(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the schema refuses (or, inside a union, another branch may take): never a
    value pydantic's lax mode would coerce (a numeric string, 2.0 for an int, 1 for true)."""
    schema = resolve(schema)
    if "anyOf" in schema:
        return st.one_of([invalid(alt, depth) for alt in schema["anyOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(["not-a-choice", "WEB", 3])
    if kind == "null":
        return st.sampled_from([[], {}])
    if kind == "boolean":
        return st.sampled_from(["maybe", 5, [True]])
    if kind == "string":
        options: list[Any] = [5.5, [], {"a": "b"}, "\ud800", "a\ud800b"]
        if "maxLength" in schema:
            options.append("x" * (schema["maxLength"] + 1))
        if schema.get("minLength"):
            options.append("")
        if "pattern" in schema:
            options += ["   ", "\t"]
        return st.sampled_from(options)
    if kind == "integer":
        options = [2.5, float("inf"), *[[], {}]]
        if "minimum" in schema:
            options.append(schema["minimum"] - 1)
        if "maximum" in schema:
            options.append(schema["maximum"] + 1)
        return st.one_of(st.sampled_from(options), NOT_A_NUMBER)
    if kind == "number":
        options = [float("inf"), float("-inf"), float("nan")]
        if "minimum" in schema:
            options.append(schema["minimum"] - 0.5)
        return st.one_of(st.sampled_from(options), NOT_A_NUMBER)
    if kind == "array":
        size = schema.get("maxItems", 3)
        return st.one_of(
            st.lists(invalid(schema["items"], depth + 1), min_size=1, max_size=2),
            st.just([None] * (size + 1)) if size <= 12 else st.just("not a list"),
            st.just({"a": 1}),
        )
    if kind == "object":
        props = schema.get("properties", {})
        keys = [k for k in props if k not in MODEL_ONLY]
        return st.one_of(
            st.just({"unknown_field": 1}),
            st.just("not an object"),
            st.sampled_from(keys).flatmap(
                lambda k: invalid(props[k], depth + 1).map(lambda v, k=k: {k: v})
            )
            if keys
            else st.just([]),
        )
    raise AssertionError(f"no strategy for {schema}")


PROPS = {k: v for k, v in MODEL_SCHEMA["properties"].items() if k not in MODEL_ONLY}
VALID_DOCUMENT = valid(MODEL_SCHEMA)
INVALID = {name: invalid(schema) for name, schema in PROPS.items()}


def _nested(schema: dict[str, Any]) -> dict[str, st.SearchStrategy[Any]]:
    """Bad values for the fields of an object-valued property, by field."""
    target = resolve(schema)
    objects = [resolve(c) for c in target.get("anyOf", [target]) if resolve(c).get("type")]
    objects = [c for c in objects if c["type"] == "object"]
    if not objects:
        return {}
    return {field: invalid(inner) for field, inner in objects[0]["properties"].items()}


NESTED = {name: found for name, schema in PROPS.items() if (found := _nested(schema))}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid conversion, then up to two fields replaced by a bad value or dropped, or an
    unknown field added; half of the documents stay valid."""
    doc: dict[str, Any] = draw(VALID_DOCUMENT)
    if draw(st.booleans()):
        return doc
    for _ in range(draw(st.integers(1, 2))):
        what = draw(st.sampled_from(["field", "field", "nested", "unknown", "drop"]))
        if what == "field":
            name = draw(st.sampled_from(sorted(PROPS)))
            doc[name] = draw(INVALID[name])
        elif what == "nested":
            name = draw(st.sampled_from(sorted(NESTED)))
            field = draw(st.sampled_from(sorted(NESTED[name])))
            # the object as drawn (a "field" step may have made it a bad scalar already)
            inner = doc.get(name)
            doc[name] = {
                **(inner if isinstance(inner, dict) else {}),
                field: draw(NESTED[name][field]),
            }
        elif what == "unknown":
            doc["unknown_" + draw(st.sampled_from(sorted(PROPS)))] = 1
        else:
            doc.pop("event", None)
    return doc


def plain(value: Any) -> Any:
    """A struct as plain data, every field included (``to_builtins`` leaves defaults out of
    the user struct)."""
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def fast_path(doc: dict[str, Any]) -> ConversionStruct | None:
    """What parse_input's fast path returns: a struct only when orjson can write the input."""
    if events._as_json(doc) is None:
        return None
    return conversion_structs.decode(doc)


def msgspec_path(doc: dict[str, Any]) -> str | None:
    """The field msgspec's refusal names, in the notes' spelling (``contents[0].price``)."""
    reason = conversion_structs.refusal(doc)
    if reason is None:
        return None
    where = re.search(r" - at `\$\.?([^`]*)`$", reason)
    path = where.group(1) if where else ""
    field = re.search(r"(?:unknown|required) field `([^`]+)`", reason)
    if field:
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    return path or "(body)"


class TestSameVerdicts:
    @settings(
        max_examples=1000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(doc=documents())
    def test_fast_path_accepts_what_the_model_accepts(self, doc: dict[str, Any]) -> None:
        if events._as_json(doc) is None:
            # a lone surrogate (or another value orjson cannot write): the fast path never
            # runs, whatever the model says (it takes one in an unconstrained str field)
            assert fast_path(doc) is None
            event("not JSON-writable: the model decides")
            return
        fast = fast_path(doc)
        try:
            model: ConversionIn | None = ConversionIn.model_validate(doc)
            error: ValidationError | None = None
        except ValidationError as exc:
            model, error = None, exc
        event("accepted" if model is not None else "refused")
        if model is not None:
            assert fast is not None, (doc, conversion_structs.refusal(doc))
            # the same values, types included (59 stays an int, 59.0 a float)
            assert orjson.dumps(plain(fast)) == orjson.dumps(model.model_dump(mode="python"))
            return
        assert fast is None, doc
        assert error is not None
        named = {note.path for note in validation_notes(error)}
        where = msgspec_path(doc)
        assert where in named, (where, named, doc)


#: edge values tried in every field, alone: no lax coercion among them (no numeric string,
#: no 2.0 for an int, no 0/1 for a bool), so the model and the fast path must agree
EDGES: list[Any] = [
    None,
    "",
    " ",
    "\t",
    "x",
    "é" * 8,
    "x" * 9,
    "x" * 65,
    "x" * 101,
    "x" * 129,
    "x" * 257,
    "x" * 1025,
    "x" * 2049,
    "x" * 4097,
    0,
    -1,
    1,
    1_000_001,
    1_000_000_001,
    2**63,
    2.5,
    -0.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    [],
    ["a"],
    ["a"] * 11,
    {},
    "granted",
    "product",
    "crm",
    "curbside",
]


def coerced(given: Any, kept: Any) -> bool:
    """Did the model change a value's type (lax mode: true -> 1, 1 -> True)? Only an int
    becoming a float is not counted: msgspec does that too."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return any(coerced(v, kept.get(k)) for k, v in given.items())
    if isinstance(given, list) and isinstance(kept, list):
        return any(coerced(g, k) for g, k in zip(given, kept, strict=False))
    if type(given) is int and type(kept) is float:
        return False
    return type(given) is not type(kept) and not isinstance(kept, list)


def _base(name: str) -> dict[str, Any]:
    """The least a nested object needs besides the field under test (its required id)."""
    return {"id": "x"} if name in ("contents", "lead") else {}


def test_every_field_alone_gets_the_same_verdict() -> None:
    """Each edge value in each field, top-level and nested: the fast path takes the
    document exactly when the model does, with the same values, except where the model
    took it only by changing its type (``true`` for a number, ``1`` for a boolean), which
    the fast path leaves to the model."""
    cases: list[dict[str, Any]] = []
    for name in PROPS:
        cases += [{"event": "Purchase", name: value} for value in EDGES]
    for name, fields in NESTED.items():
        for field in fields:
            for value in EDGES:
                inner = {**_base(name), field: value}
                wrapped = [inner] if name == "contents" else inner
                cases.append({"event": "Purchase", name: wrapped})
    wrong = []
    for doc in cases:
        if events._as_json(doc) is None:
            continue
        fast = fast_path(doc)
        try:
            model = ConversionIn.model_validate(doc)
        except ValidationError:
            if fast is not None:
                wrong.append(("fast accepts, model refuses", doc))
            continue
        if fast is None:
            if not coerced(doc, model.model_dump()):
                wrong.append(("model accepts, fast refuses", doc))
        elif orjson.dumps(plain(fast)) != orjson.dumps(model.model_dump()):
            wrong.append(("different values", doc))
    assert len(cases) > 1000
    assert not wrong, wrong[:5]


# --- 3. lax coercions and the industry sets go through the model -----------------------------

BASE: dict[str, Any] = {"event": "CompletePayment", "order_id": "A1", "value": 5, "currency": "USD"}


@pytest.mark.parametrize(
    "extra",
    [
        {"value": "59.90"},
        {"contents": [{"id": "s", "quantity": "2"}]},
        {"contents": [{"id": "s", "quantity": 2.0}]},
        {"limited_data_use": 1},
        {"opt_out": "false"},
        {"travel": {"city": "Lisbon", "num_adults": 2}},
        {"vehicle": {"make": "Volvo", "year": 2020}},
        {"user": {"email": "a@b.co", "phone": 14155552671}, "event_time": 2**70},
    ],
)
def test_what_only_the_model_accepts_goes_through_it(
    extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path refuses it; the model accepts it; normalize gives the same result as
    with the fast path switched off (pydantic alone, as before issue 17)."""
    doc = {**BASE, **extra}
    assert fast_path(doc) is None
    try:
        ConversionIn.model_validate(doc)
    except ValidationError as exc:
        pytest.fail(f"the model refuses {extra}: {exc}")
    got = outcome(doc)
    monkeypatch.setattr(conversion_structs, "decode", lambda data: None)
    assert got == outcome(doc)


# --- 4. normalize: the same conversion and notes by either path ------------------------------


def outcome(doc: dict[str, Any]) -> Any:
    try:
        result = normalize(doc, now=NOW, default_region="US")
    except InvalidConversion as exc:
        return ("refused", [n.as_dict() for n in exc.notes])
    conversion = result.conversion.to_dict()
    if conversion["event_id_source"] == "random":
        conversion["event_id"] = "random"
    return ("accepted", conversion, [n.as_dict() for n in result.warnings])


realistic = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["CompletePayment", "Purchase", "AddToCart", "Lead", "Custom x"]),
        "order_id": st.one_of(st.integers(1, 10**12), st.text(min_size=1, max_size=12)),
    },
    optional={
        "value": st.floats(0, 1e6),
        "currency": st.sampled_from(["USD", "eur", "XXX", "JPY"]),
        "event_time": st.sampled_from([1_795_599_000, 1_795_599_000.5, "2026-11-30T10:00:00Z"]),
        "contents": st.lists(
            st.fixed_dictionaries(
                {"id": st.one_of(st.integers(0, 10**6), st.text(min_size=1, max_size=8))},
                optional={"quantity": st.integers(1, 5), "price": st.floats(0, 100)},
            ),
            max_size=3,
        ),
        "user": st.fixed_dictionaries(
            {},
            optional={
                "email": st.one_of(st.emails(), st.lists(st.emails(), max_size=3)),
                "phone": st.sampled_from(["+14155552671", "(415) 555-2671", "+4402079460000"]),
                "external_id": st.text(max_size=10),
                "ip": st.sampled_from(["81.2.69.160", "10.0.0.1"]),
                "country": st.sampled_from(["US", "gb", "zz"]),
                "ttclid": st.text(max_size=10),
                "zip": st.one_of(st.integers(0, 99999), st.text(max_size=8)),
            },
        ),
        "page": st.fixed_dictionaries(
            {},
            optional={
                "url": st.sampled_from(
                    [
                        "https://shop.example/thanks?ttclid=E.1&fbclid=F&email=a%40b.co",
                        "https://shop.example/?ScCid=S1&epik=P2#x",
                        "javascript:alert(1)",
                    ]
                ),
                "referrer": st.sampled_from(["https://ref.example/", "ftp://x"]),
            },
        ),
        "consent": st.fixed_dictionaries(
            {}, optional={"ad_user_data": st.sampled_from(["granted", "denied"])}
        ),
        "lead": st.fixed_dictionaries({"id": st.text(min_size=1, max_size=6)}),
        "opt_out": st.booleans(),
        "num_items": st.integers(0, 10),
        "test_event_code": st.sampled_from(["TEST1", "  ", "T\x01"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(realistic, documents()))
def test_normalize_is_the_same_by_either_path(doc: dict[str, Any]) -> None:
    fast = outcome(doc)
    original = conversion_structs.decode
    conversion_structs.decode = lambda data: None  # type: ignore[assignment]
    try:
        slow = outcome(doc)
    finally:
        conversion_structs.decode = original
    event(fast[0])
    assert fast == slow
