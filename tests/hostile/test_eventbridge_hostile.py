"""Attacks on EventBridge rules: more rules than a bus holds, more targets than a rule holds, an Input past
8 KB, and bodies that are not JSON or are nested without end. Each is refused in EventBridge's words, changes
nothing, and the server stays healthy."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, start_server
from tests.hostile.test_api_hostile import signed

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("events-hostile"))
    yield srv
    assert srv.stop() == 0, srv.log()


def healthy(server: Server) -> bool:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        return bool(r.status == 200)


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def test_a_bus_holds_at_most_300_rules(own: Server) -> None:
    events: Any = own.client("events")
    for i in range(300):
        events.put_rule(Name=f"r{i:03d}", ScheduleExpression="rate(1 day)")
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name="one-too-many", ScheduleExpression="rate(1 day)")
    assert code_of(exc) == (400, "LimitExceededException")
    with pytest.raises(ClientError):
        events.describe_rule(Name="one-too-many")
    events.put_rule(Name="r000", ScheduleExpression="rate(2 days)")  # changing one is not adding one
    events.delete_rule(Name="r299")
    events.put_rule(Name="one-more", ScheduleExpression="rate(1 day)")  # room again
    names = [r["Name"] for page in events.get_paginator("list_rules").paginate() for r in page["Rules"]]
    assert len(names) == 300 and "one-more" in names
    for name in names:
        events.delete_rule(Name=name)
    assert healthy(own)


def test_a_rule_holds_at_most_5_targets_and_8_kb_inputs(own: Server) -> None:
    events: Any = own.client("events", parameter_validation=False)
    events.put_rule(Name="targets", ScheduleExpression="rate(1 day)")
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule="targets", Targets=[{"Id": f"t{i}", "Arn": ARN} for i in range(6)])
    assert code_of(exc) == (400, "LimitExceededException")
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule="targets", Targets=[{"Id": f"t{i}", "Arn": ARN} for i in range(101)])
    assert code_of(exc) == (400, "ValidationException")
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule="targets", Targets=[{"Id": "big", "Arn": ARN, "Input": json.dumps("x" * 8200)}])
    assert code_of(exc) == (400, "ValidationException")
    assert events.list_targets_by_rule(Rule="targets")["Targets"] == []
    assert healthy(own)


def test_bodies_that_are_not_json_or_nest_without_end(own: Server) -> None:
    headers = {"X-Amz-Target": "AWSEvents.ListRules", "Content-Type": "application/x-amz-json-1.1"}
    for body in (b"not json", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000):
        status, got, answer = signed(own, "POST", "/", body, headers, service="events")
        assert status == 400, answer
        assert json.loads(answer)["__type"] == "SerializationException"
        assert got["content-type"].startswith("application/x-amz-json-1.1")
    status, _, answer = signed(own, "POST", "/", b"{}", {**headers, "X-Amz-Target": "AWSEvents.Nope"}, "events")
    assert status == 400 and json.loads(answer)["__type"] == "UnknownOperationException"
    assert healthy(own)


def test_put_events_entries_are_bounded(own: Server) -> None:
    events: Any = own.client("events", parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        events.put_events(Entries=[{"Source": "s", "DetailType": "t", "Detail": "{}"}] * 11)
    assert code_of(exc) == (400, "ValidationException")
    big = {"Source": "s", "DetailType": "t", "Detail": json.dumps({"x": "y" * 300_000})}
    answer = events.put_events(Entries=[big, {"Source": "s", "DetailType": "t", "Detail": "{}"}])
    assert answer["FailedEntryCount"] == 1 and answer["Entries"][0]["ErrorCode"] == "InvalidArgument"
    assert "EventId" in answer["Entries"][1]
    nested = {"Source": "s", "DetailType": "t", "Detail": "[" * 50_000 + "]" * 50_000}
    assert events.put_events(Entries=[nested])["Entries"][0]["ErrorCode"] == "MalformedDetail"
    assert healthy(own)


def test_a_rule_holds_at_most_50_tags(own: Server) -> None:
    events: Any = own.client("events")
    arn = events.put_rule(Name="tagged", ScheduleExpression="rate(1 day)")["RuleArn"]
    events.tag_resource(ResourceARN=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    with pytest.raises(ClientError) as exc:
        events.tag_resource(ResourceARN=arn, Tags=[{"Key": "one-more", "Value": "v"}])
    assert code_of(exc) == (400, "LimitExceededException")
    assert len(events.list_tags_for_resource(ResourceARN=arn)["Tags"]) == 50
    events.delete_rule(Name="tagged")
