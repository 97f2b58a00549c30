"""Lambda event filtering without a server: every operator keeps and drops what AWS's documentation says (the
examples of "Control which events Lambda sends to your function" and EventBridge's comparison operators),
patterns AWS refuses, the SQS body rules, and properties of the matcher (Hypothesis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfless.errors import InvalidParameterValue
from selfless.events.filtering import (
    INVALID,
    InvalidPattern,
    compile_pattern,
    criteria,
    criteria_doc,
    loads,
    sqs_accepts,
)
from selfless.invocation.inflight import Outcome, OutcomeKind
from tests.unit.test_poller import FakeQueue, poller, until


def matches(pattern: dict[str, Any] | str, event: dict[str, Any] | str) -> bool:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    doc = loads(event if isinstance(event, str) else json.dumps(event))
    return compile_pattern(text).matches(doc)


# (operator, pattern, events it keeps, events it drops)
OPERATORS: list[tuple[str, dict[str, Any], list[Any], list[Any]]] = [
    ("null", {"UserID": [None]}, [{"UserID": None}], [{"UserID": "x"}, {"UserID": ""}, {}]),
    ("empty", {"LastName": [""]}, [{"LastName": ""}], [{"LastName": "x"}, {"LastName": None}, {}]),
    ("equals", {"Name": ["Alice"]}, [{"Name": "Alice"}], [{"Name": "alice"}, {"Name": "Alice "}, {}]),
    ("equals number", {"Price": [100]}, [{"Price": 100}], [{"Price": "100"}, {"Price": 100.0}, {"Price": 1e2}]),
    ("equals boolean", {"Ok": [True]}, [{"Ok": True}], [{"Ok": False}, {"Ok": "true"}, {"Ok": 1}]),
    ("equals-ignore-case", {"Name": [{"equals-ignore-case": "alice"}]}, [{"Name": "ALICE"}, {"Name": "Alice"}],
     [{"Name": "Alicia"}, {"Name": 1}]),
    ("and", {"Location": ["New York"], "Day": ["Monday"]}, [{"Location": "New York", "Day": "Monday"}],
     [{"Location": "New York", "Day": "Tuesday"}, {"Location": "New York"}]),
    ("or", {"PaymentType": ["Credit", "Debit"]}, [{"PaymentType": "Credit"}, {"PaymentType": "Debit"}],
     [{"PaymentType": "Cash"}]),
    ("$or", {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
     [{"Location": "New York", "Day": "Friday"}, {"Location": "Paris", "Day": "Monday"}],
     [{"Location": "Paris", "Day": "Friday"}, {}]),
    ("anything-but list", {"Weather": [{"anything-but": ["Raining"]}]}, [{"Weather": "Sunny"}, {"Weather": 5}],
     [{"Weather": "Raining"}, {}]),
    ("anything-but string", {"state": [{"anything-but": "initializing"}]}, [{"state": "running"}],
     [{"state": "initializing"}]),
    ("anything-but numbers", {"limit": [{"anything-but": [100, 200]}]}, [{"limit": 150}, {"limit": "100"}],
     [{"limit": 100}, {"limit": 200.0}]),
    ("anything-but prefix", {"Region": [{"anything-but": {"prefix": "us-"}}]}, [{"Region": "eu-west-1"}],
     [{"Region": "us-east-1"}, {}]),
    ("anything-but suffix", {"FileName": [{"anything-but": {"suffix": ".png"}}]}, [{"FileName": "a.jpg"}],
     [{"FileName": "a.png"}]),
    ("anything-but equals-ignore-case", {"state": [{"anything-but": {"equals-ignore-case": ["initializing"]}}]},
     [{"state": "running"}], [{"state": "INITIALIZING"}, {"state": "Initializing"}]),
    ("numeric =", {"Price": [{"numeric": ["=", 100]}]}, [{"Price": 100}, {"Price": 100.0}, {"Price": 1e2}],
     [{"Price": 101}, {"Price": "100"}]),
    ("numeric range", {"Price": [{"numeric": [">", 10, "<=", 20]}]}, [{"Price": 10.5}, {"Price": 20}],
     [{"Price": 10}, {"Price": 20.01}, {"Price": "15"}]),
    ("numeric <", {"n": [{"numeric": ["<", 0]}]}, [{"n": -1}], [{"n": 0}]),
    ("numeric <=", {"n": [{"numeric": ["<=", 0]}]}, [{"n": 0}], [{"n": 0.1}]),
    ("numeric >=", {"n": [{"numeric": [">=", 9999]}]}, [{"n": 9999}], [{"n": 9998}]),
    ("numeric >= <", {"n": [{"numeric": [">=", 0, "<", 1]}]}, [{"n": 0}, {"n": 0.5}], [{"n": 1}]),
    ("exists", {"ProductName": [{"exists": True}]}, [{"ProductName": "x"}, {"ProductName": None}],
     [{}, {"ProductName": {"nested": 1}}, {"ProductName": []}]),
    ("does not exist", {"ProductName": [{"exists": False}]}, [{}, {"Other": 1}], [{"ProductName": "x"}]),
    ("prefix", {"Region": [{"prefix": "us-"}]}, [{"Region": "us-east-1"}], [{"Region": "eu-west-1"},
     {"Region": "US-east-1"}]),
    ("prefix equals-ignore-case", {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]},
     [{"service": "EventBridge"}, {"service": "eventbus"}], [{"service": "events"}]),
    ("suffix", {"FileName": [{"suffix": ".png"}]}, [{"FileName": "cat.png"}], [{"FileName": "cat.PNG"}]),
    ("suffix equals-ignore-case", {"service": [{"suffix": {"equals-ignore-case": "tBridge"}}]},
     [{"service": "EventBridge"}, {"service": "TBRIDGE"}], [{"service": "bridges"}]),
    ("cidr", {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}, [{"sourceIPAddress": "10.0.0.255"}],
     [{"sourceIPAddress": "10.0.1.0"}, {"sourceIPAddress": "not-an-ip"}, {"sourceIPAddress": "2001:db8::1"}]),
    ("cidr ipv6", {"ip": [{"cidr": "2001:db8::/32"}]}, [{"ip": "2001:db8::1"}], [{"ip": "2001:db9::1"}]),
    ("nested", {"dynamodb": {"Keys": {"Number": {"N": ["4567"]}}}},
     [{"dynamodb": {"Keys": {"Number": {"N": "4567"}, "ID": {"S": "ABCD"}}}}],
     [{"dynamodb": {"Keys": {"Number": {"N": "1234"}}}}, {"dynamodb": "4567"}]),
    ("array in the event", {"tags": ["b"]}, [{"tags": ["a", "b"]}, {"tags": [["b"]]}], [{"tags": ["a"]},
     {"tags": []}]),
    ("array of objects", {"items": {"kind": ["book"], "price": [{"numeric": ["<", 10]}]}},
     [{"items": [{"kind": "pen", "price": 20}, {"kind": "book", "price": 5}]}],
     [{"items": [{"kind": "book", "price": 20}, {"kind": "pen", "price": 5}]}]),
    ("exists is a leaf", {"person": {"address": [{"exists": True}]}}, [{"person": {"address": "1 Main St"}}],
     [{"person": {"address": {"street": "123 Main St"}}}]),
    ("several rules OR-ed", {"n": [{"numeric": ["<", 0]}, {"prefix": "x"}, 7]}, [{"n": -3}, {"n": "xy"}, {"n": 7}],
     [{"n": 3}, {"n": "y"}]),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "keeps", "drops"), [o[1:] for o in OPERATORS], ids=[o[0] for o in OPERATORS])
def test_every_operator_keeps_and_drops_as_aws_documents(
    pattern: dict[str, Any], keeps: list[Any], drops: list[Any]
) -> None:
    for event in keeps:
        assert matches(pattern, event), event
    for event in drops:
        assert not matches(pattern, event), event


@pytest.mark.parametrize(
    "pattern",
    [
        "not json",
        "[]",
        '"body"',
        "{}",
        '{"a": []}',
        '{"a": "x"}',
        '{"a": 1}',
        '{"a": {}}',
        '{"a": [{"prefix": 1}]}',
        '{"a": [{"prefix": "x", "suffix": "y"}]}',
        '{"a": [{"contains": "x"}]}',
        '{"a": [{"wildcard": "*.png"}]}',
        '{"a": [{"anything-but": {"wildcard": "*/lib/*"}}]}',
        '{"a": [{"anything-but": []}]}',
        '{"a": [{"anything-but": ["x", 1]}]}',
        '{"a": [{"anything-but": {"prefix": ""}}]}',
        '{"a": [{"anything-but": {"contains": "x"}}]}',
        '{"a": [{"exists": "yes"}]}',
        '{"a": [{"numeric": [">"]}]}',
        '{"a": [{"numeric": ["!=", 1]}]}',
        '{"a": [{"numeric": ["<", 1, ">", 0]}]}',
        '{"a": [{"numeric": [">", 5, "<", 1]}]}',
        '{"a": [{"numeric": ["=", "1"]}]}',
        '{"a": [{"numeric": [">", 6e9]}]}',
        '{"a": [{"cidr": "10.0.0.0/33"}]}',
        '{"a": [{"cidr": 10}]}',
        '{"a": [{"equals-ignore-case": 1}]}',
        '{"a": [NaN]}',
        '{"$or": [{"a": ["x"]}]}',
        '{"$or": {"a": ["x"]}}',
        '{"a": [["x"]]}',
        '{"a": ["' + "x" * 4096 + '"]}',
    ],
)
def test_patterns_aws_refuses(pattern: str) -> None:
    with pytest.raises(InvalidPattern):
        compile_pattern(pattern)
    with pytest.raises(InvalidParameterValue) as raised:
        criteria({"Filters": [{"Pattern": pattern}]})
    assert str(raised.value) == INVALID


def test_filter_criteria_on_the_api() -> None:
    pattern = '{ "body" : { "RequestCode" : [ "BBBB" ] } }'
    assert criteria({"Filters": [{"Pattern": pattern}]}) == (pattern,)  # kept as given
    assert criteria_doc((pattern,)) == {"Filters": [{"Pattern": pattern}]}
    assert criteria({}) == () and criteria({"Filters": []}) == () and criteria(None) == ()
    assert len(criteria({"Filters": [{"Pattern": pattern}] * 5})) == 5
    with pytest.raises(InvalidParameterValue):
        criteria({"Filters": [{"Pattern": pattern}] * 6})
    for bad in ({"Filters": [{}]}, {"Filters": "x"}, "x", {"Filters": [{"Pattern": 1}]}):
        with pytest.raises(InvalidParameterValue):
            criteria(bad)


def record(body: str, **more: Any) -> dict[str, Any]:
    return {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SenderId": "AIDAIENQZJOLO23YVJ4VO"},
        "messageAttributes": {"kind": {"stringValue": "order", "dataType": "String"}},
        "eventSource": "aws:sqs",
        "awsRegion": "us-east-1",
        **more,
    }


def test_sqs_body_rules() -> None:
    json_body = '{\n "RecordNumber": 1234,\n "TimeStamp": "yyyy-mm-ddThh:mm:ss",\n "RequestCode": "AAAA"\n}'
    code = sqs_accepts(['{ "body" : { "RequestCode" : [ "AAAA" ] } }'])
    assert code(record(json_body))
    assert not code(record(json_body.replace("AAAA", "BBBB")))
    assert not code(record("RequestCode AAAA"))  # a JSON pattern never matches a plain string body
    big = sqs_accepts(['{ "body" : { "RecordNumber" : [ { "numeric": [ ">", 9999 ] } ] } }'])
    assert not big(record(json_body)) and big(record(json_body.replace("1234", "12345")))

    plain = sqs_accepts(['{ "body" : [ { "prefix": "Result: " } ] }'])
    assert plain(record("Result: ok")) and not plain(record("Other"))
    assert not plain(record('{"Result: ": 1}'))  # a plain string pattern never matches a JSON body

    # The other members: attributes and message attributes, whatever the body.
    metadata = sqs_accepts(['{"attributes": {"SenderId": [{"prefix": "AIDA"}]}}'])
    assert metadata(record("plain")) and metadata(record('{"a": 1}'))
    assert sqs_accepts(['{"messageAttributes": {"kind": {"stringValue": ["order"]}}}'])(record("x"))
    assert not sqs_accepts(['{"messageAttributes": {"kind": {"stringValue": ["refund"]}}}'])(record("x"))

    # Filters are OR-ed.
    either = sqs_accepts(['{"body": {"a": [1]}}', '{"body": {"b": [2]}}'])
    assert either(record('{"a": 1}')) and either(record('{"b": 2}')) and not either(record('{"a": 2}'))


# -- properties ----------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.text(max_size=8),
)
events = st.dictionaries(st.text(min_size=1, max_size=4), scalars | st.lists(scalars, max_size=3), max_size=4)


@given(event=events)
def test_a_pattern_of_the_event_own_values_matches_it(event: dict[str, Any]) -> None:
    pattern = {}
    for key, value in event.items():
        values = value if isinstance(value, list) else [value]
        if values:
            pattern[key] = values
    if pattern:
        assert matches(pattern, event)


@given(value=st.text(max_size=10), other=st.text(max_size=10))
def test_string_operators_agree_with_python(value: str, other: str) -> None:
    event = {"k": value}
    assert matches({"k": [other]}, event) == (value == other)
    assert matches({"k": [{"anything-but": [other]}]}, event) == (value != other)
    assert matches({"k": [{"equals-ignore-case": other}]}, event) == (value.casefold() == other.casefold())
    assert matches({"k": [{"suffix": other}]}, event) == value.endswith(other)
    assert matches({"k": [{"prefix": other}]}, event) == value.startswith(other)
    assert matches({"k": [{"prefix": value[: len(other)]}]}, event)


@given(
    value=st.floats(-5e9, 5e9, allow_nan=False),
    low=st.integers(-(5 * 10**9), 5 * 10**9),
    width=st.integers(0, 10**6),
)
def test_numeric_ranges_agree_with_python(value: float, low: int, width: int) -> None:
    high = min(low + width, 5 * 10**9)
    event = {"n": value}
    assert matches({"n": [{"numeric": [">=", low, "<", high]}]}, event) == (low <= value < high)
    assert matches({"n": [{"numeric": [">", low, "<=", high]}]}, event) == (low < value <= high)
    assert matches({"n": [{"numeric": ["=", low]}]}, event) == (value == low)


json_docs = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
rules = st.sampled_from(
    [
        {"prefix": "a"},
        {"exists": True},
        {"exists": False},
        {"numeric": [">", 0]},
        {"anything-but": ["a"]},
        {"cidr": "10.0.0.0/8"},
        {"equals-ignore-case": "A"},
    ]
)


@given(doc=json_docs | st.dictionaries(st.text(max_size=3), st.lists(scalars | rules, max_size=3), max_size=3))
def test_any_json_is_either_a_pattern_or_refused(doc: Any) -> None:
    try:
        compiled = compile_pattern(json.dumps(doc))
    except InvalidPattern:
        return
    compiled.matches(loads(json.dumps(doc)))  # never raises


def test_filtered_messages_are_deleted_and_never_sent() -> None:
    """The poller's hook: what no filter accepts is deleted at once; the rest is batched as usual."""

    async def scenario() -> None:
        queue = FakeQueue(["keep-1", "drop-1", "keep-2", "drop-2", "keep-3"])
        sent: list[str] = []

        async def invoke(payload: bytes) -> Outcome:
            sent.extend(r["body"] for r in json.loads(payload)["Records"])
            return Outcome(OutcomeKind.RESPONSE, b"null")

        p = poller(queue, invoke, accepts=sqs_accepts(['{"body": [{"prefix": "keep"}]}']))
        p.start()
        await until(lambda: len(queue.deleted) == 5)
        await p.stop(5.0)
        assert sorted(sent) == ["keep-1", "keep-2", "keep-3"]
        assert not queue.visible and not queue.hidden

    asyncio.run(scenario())
