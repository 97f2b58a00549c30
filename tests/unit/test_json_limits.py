"""JSON with a nesting limit: exact at the limit, blind to brackets inside strings, linear in time."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfless import json_limits
from selfless.json_limits import MAX_DEPTH, TooDeep

TOO_DEEP = (
    "Document nesting depth (1001) exceeds the maximum allowed (1000, "
    "from `StreamReadConstraints.getMaxNestingDepth()`)"
)


@pytest.fixture(autouse=True, scope="module")
def _stack() -> None:
    json_limits.reserve_stack()  # as the server does at start


def nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def test_the_limit_is_exact() -> None:
    assert json_limits.loads(nested(MAX_DEPTH)) is not None
    with pytest.raises(TooDeep) as info:
        json_limits.loads(nested(MAX_DEPTH + 1))
    assert str(info.value) == TOO_DEEP
    objects = '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(TooDeep):
        json_limits.loads(objects)
    assert isinstance(TooDeep(1), ValueError)  # callers that catch ValueError need nothing more


def test_many_shallow_containers_are_not_deep() -> None:
    wide = json.dumps([{"a": [1, {"b": "[[[{{{"}]} for _ in range(5000)])
    assert len(json_limits.loads(wide)) == 5000


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 5000, "{" * 5000, 'quote \\" [[[', "\\\\", "\\u005b" * 3000])
    assert json_limits.loads(text)[0] == "[" * 5000
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    assert json_limits.loads(b'["\\\\", ' + nested(999) + b"]")[0] == "\\"
    with pytest.raises(TooDeep):
        json_limits.loads(b'["\\\\", ' + nested(1000) + b"]")


def test_not_json_is_a_value_error() -> None:
    for bad in (b"{", b"[1,]", b"\xff\xfe", b'"open string' + b"[" * 5000, b'"' + b'\\"' * 50_000):
        with pytest.raises(ValueError):
            json_limits.loads(bad)


def test_text_and_bytes() -> None:
    assert json_limits.loads('{"k": "é"}') == {"k": "é"}
    with pytest.raises(TooDeep):
        json_limits.loads("[" * 2000)


@pytest.mark.parametrize(
    "attack",
    [
        b"[" * 6_000_000,
        b"{" * 6_000_000,
        b'{"a":' * 1_000_000,
        b"[" * 1000 + b'"' + b'\\"' * 3_000_000,  # an unterminated string of escaped quotes
        b'"' * 6_000_000,
        nested(999, "[]," * 1_900_000 + "1"),  # 6 MB of valid brackets just under the limit
    ],
)
def test_cost_is_linear(attack: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(ValueError):
        json_limits.loads(attack + b"x")
    # ~20-250 ms on a quiet machine; a quadratic scan would take minutes.
    assert time.perf_counter() - started < 5.0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a'), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON, limit=st.integers(min_value=1, max_value=8))
def test_accepts_exactly_what_is_within_the_limit(value: Any, limit: int) -> None:
    text = json.dumps(value)
    if depth_of(value) <= limit:
        assert json_limits.loads(text, max_depth=limit) == value
    else:
        with pytest.raises(TooDeep):
            json_limits.loads(text, max_depth=limit)
