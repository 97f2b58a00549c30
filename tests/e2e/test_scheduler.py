"""EventBridge Scheduler with the unchanged boto3 ``scheduler`` client: the schedule API and its errors, and an
at() schedule a few seconds ahead invoking a function asynchronously with the schedule's Input."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_awscli import aws
from tests.e2e.test_s3_notifications import records, wait_records

RECORDER = """import json


def handler(event, context):
    print("RECORD " + json.dumps(event))
"""
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/scheduler"


@pytest.fixture(scope="module")
def sch(server: Server) -> Any:
    return server.client("scheduler")


def fn_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def create(sch: Any, name: str, expression: str, **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = sch.create_schedule(
        Name=name,
        ScheduleExpression=expression,
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": fn_arn("nothing"), "RoleArn": ROLE_ARN},
        **extra,
    )
    return answer


def test_create_get_update_list_delete(sch: Any) -> None:
    name = unique("sched")
    arn = create(sch, name, "cron(0 9 ? * MON-FRI *)", ScheduleExpressionTimezone="Europe/Berlin", Description="d")
    assert arn["ScheduleArn"].startswith("arn:aws:scheduler:us-east-1:")
    assert arn["ScheduleArn"].endswith(f":schedule/default/{name}")
    got = sch.get_schedule(Name=name)
    assert got["Arn"] == arn["ScheduleArn"]
    assert (got["Name"], got["GroupName"], got["State"]) == (name, "default", "ENABLED")
    assert got["ScheduleExpression"] == "cron(0 9 ? * MON-FRI *)"
    assert got["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert got["Description"] == "d"
    assert got["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert got["Target"] == {"Arn": fn_arn("nothing"), "RoleArn": ROLE_ARN}
    assert isinstance(got["CreationDate"], dt.datetime)
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    sch.update_schedule(
        Name=name,
        ScheduleExpression="rate(5 minutes)",
        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 10},
        Target={"Arn": fn_arn("other"), "RoleArn": ROLE_ARN, "Input": '{"a": 1}'},
        State="DISABLED",
        StartDate=start,
    )
    got = sch.get_schedule(Name=name, GroupName="default")
    assert got["ScheduleExpression"] == "rate(5 minutes)"
    assert got["State"] == "DISABLED"
    assert got["StartDate"] == start
    assert got["Target"]["Input"] == '{"a": 1}'
    assert "Description" not in got  # an update replaces the whole schedule
    listed = sch.list_schedules(NamePrefix=name)["Schedules"]
    assert [(s["Name"], s["State"], s["Target"]["Arn"]) for s in listed] == [(name, "DISABLED", fn_arn("other"))]
    assert sch.list_schedules(NamePrefix=name, State="ENABLED")["Schedules"] == []
    sch.delete_schedule(Name=name)
    with pytest.raises(ClientError) as exc:
        sch.get_schedule(Name=name)
    assert code_of(exc) == (404, "ResourceNotFoundException", f"Schedule {name} does not exist.")


def test_list_pages(sch: Any) -> None:
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        create(sch, name, "rate(1 day)")
    seen, token = [], None
    while True:
        page = sch.list_schedules(NamePrefix=prefix, MaxResults=2, **({"NextToken": token} if token else {}))
        assert len(page["Schedules"]) <= 2
        seen += [s["Name"] for s in page["Schedules"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == names
    for name in names:
        sch.delete_schedule(Name=name)


def test_errors(sch: Any) -> None:
    name = unique("sched")
    create(sch, name, "rate(1 hour)")
    with pytest.raises(ClientError) as exc:
        create(sch, name, "rate(1 hour)")
    assert code_of(exc) == (409, "ConflictException", f"Schedule {name} already exists.")
    for missing in (sch.delete_schedule, sch.get_schedule):
        with pytest.raises(ClientError) as exc:
            missing(Name=unique("none"))
        assert code_of(exc)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        sch.update_schedule(
            Name=unique("none"),
            ScheduleExpression="rate(1 hour)",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": fn_arn("x"), "RoleArn": ROLE_ARN},
        )
    assert code_of(exc)[:2] == (404, "ResourceNotFoundException")
    for bad in ("rate(1 minutes)", "cron(0 12 * * * *)", "cron(0 12 * * ?)", "at(2026-13-01T00:00:00)"):
        with pytest.raises(ClientError) as exc:
            create(sch, unique("bad"), bad)
        assert code_of(exc) == (400, "ValidationException", f"Invalid Schedule Expression {bad}.")
    with pytest.raises(ClientError) as exc:
        create(sch, unique("bad"), "rate(1 hour)", ScheduleExpressionTimezone="Mars/Olympus")
    assert code_of(exc)[:2] == (400, "ValidationException")
    with pytest.raises(ClientError) as exc:
        create(sch, unique("bad"), "rate(1 hour)", GroupName="nope")
    assert code_of(exc) == (404, "ResourceNotFoundException", "Schedule group nope does not exist.")
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(ClientError) as exc:
        create(sch, unique("bad"), "rate(1 hour)", StartDate=now + dt.timedelta(days=2), EndDate=now)
    assert code_of(exc)[:2] == (400, "ValidationException")
    sch.delete_schedule(Name=name)


def test_modelled_constraints(server: Server) -> None:
    raw = server.client("scheduler", parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        raw.create_schedule(
            Name="bad name!",
            ScheduleExpression="rate(1 hour)",
            FlexibleTimeWindow={"Mode": "SOMETIMES"},
            Target={"Arn": fn_arn("x"), "RoleArn": ROLE_ARN},
        )
    status, code, message = code_of(exc)
    assert (status, code) == (400, "ValidationException")
    assert "failed to satisfy constraint" in message
    assert "'name'" in message and "flexibleTimeWindow.mode" in message


def ahead(seconds: float) -> dt.datetime:
    """A whole second at least ``seconds`` from now (at() has whole seconds), in UTC."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds + 1)).replace(microsecond=0)


def in_time(when: dt.datetime) -> bool:
    """Whether a schedule made now for ``when`` was made early enough (a loaded machine may be slow)."""
    return dt.datetime.now(dt.UTC) < when - dt.timedelta(seconds=0.5)


def test_an_at_schedule_invokes_the_function_with_its_input(sch: Any, lam: Any, server: Server) -> None:
    function = deploy(lam, RECORDER)
    account = lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"].split(":")[4]
    for attempt, margin in enumerate((3, 8, 20)):
        when, name = ahead(margin), unique("once")
        sch.create_schedule(
            Name=name,
            ScheduleExpression=f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": f"arn:aws:lambda:us-east-1:{account}:function:{function}",
                "RoleArn": ROLE_ARN,
                "Input": json.dumps({"job": "nightly", "n": attempt}),
            },
            ActionAfterCompletion="DELETE",
        )
        if in_time(when):
            break
        sch.delete_schedule(Name=name)  # made too late to tell early from on time: again, further ahead
    else:
        pytest.fail("the server was too slow to make a schedule a few seconds ahead")
    assert [r for r in records(server, function) if r["n"] == attempt] == []  # not before its time
    found = wait_records(server, function, 1, timeout=60)
    assert [r for r in found if r["n"] == attempt] == [{"job": "nightly", "n": attempt}]
    assert dt.datetime.now(dt.UTC) >= when
    deadline = time.monotonic() + 10
    while True:  # the run and the schedule's deletion commit together
        try:
            sch.get_schedule(Name=name)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)
    assert len([r for r in records(server, function) if r["n"] == attempt]) == 1  # once


def test_the_readme_cron_example_with_the_aws_cli(server: Server, sch: Any) -> None:
    name = unique("nightly-report")
    target = {
        "Arn": "arn:aws:lambda:us-east-1:000000000000:function:report",
        "RoleArn": "arn:aws:iam::000000000000:role/scheduler",
        "Input": json.dumps({"kind": "nightly"}),
    }
    created = aws(
        server,
        "scheduler",
        "create-schedule",
        "--name",
        name,
        "--schedule-expression",
        "cron(30 2 ? * MON-FRI *)",
        "--schedule-expression-timezone",
        "Europe/Berlin",
        "--flexible-time-window",
        "Mode=OFF",
        "--target",
        json.dumps(target),
    )
    assert json.loads(created.stdout)["ScheduleArn"].endswith(f":schedule/default/{name}")
    got = json.loads(aws(server, "scheduler", "get-schedule", "--name", name).stdout)
    assert got["ScheduleExpression"] == "cron(30 2 ? * MON-FRI *)"
    assert got["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert got["Target"] == target
    refused = aws(server, "scheduler", "get-schedule", "--name", unique("none"), check=False)
    assert refused.returncode != 0 and "ResourceNotFoundException" in refused.stderr
    sch.delete_schedule(Name=name)


def test_schedule_groups_and_their_tags(sch: Any) -> None:
    group = unique("group")
    arn = sch.create_schedule_group(Name=group, Tags=[{"Key": "team", "Value": "data"}])["ScheduleGroupArn"]
    assert arn.startswith("arn:aws:scheduler:us-east-1:") and arn.endswith(f":schedule-group/{group}")
    with pytest.raises(ClientError) as exc:
        sch.create_schedule_group(Name=group)
    assert code_of(exc) == (409, "ConflictException", f"Schedule group {group} already exists.")
    got = sch.get_schedule_group(Name=group)
    assert (got["Arn"], got["Name"], got["State"]) == (arn, group, "ACTIVE")
    assert sch.get_schedule_group(Name="default")["State"] == "ACTIVE"
    names = [g["Name"] for g in sch.list_schedule_groups()["ScheduleGroups"]]
    assert names[0] == "default" and group in names
    assert [g["Name"] for g in sch.list_schedule_groups(NamePrefix=group)["ScheduleGroups"]] == [group]
    sch.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "prod"}])
    sch.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert sch.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    # A schedule in the group: its ARN names the group; the same name may exist in another group.
    name = unique("in-group")
    created = create(sch, name, "rate(1 day)", GroupName=group)
    assert created["ScheduleArn"].endswith(f":schedule/{group}/{name}")
    create(sch, name, "rate(1 day)")
    assert sch.get_schedule(Name=name, GroupName=group)["GroupName"] == group
    listed = sch.list_schedules(GroupName=group)["Schedules"]
    assert [(s["Name"], s["GroupName"]) for s in listed] == [(name, group)]
    # Deleting the group deletes its schedules, and only those.
    sch.delete_schedule_group(Name=group)
    with pytest.raises(ClientError) as exc:
        sch.get_schedule(Name=name, GroupName=group)
    assert code_of(exc) == (404, "ResourceNotFoundException", f"Schedule group {group} does not exist.")
    with pytest.raises(ClientError) as exc:
        sch.get_schedule_group(Name=group)
    assert code_of(exc) == (404, "ResourceNotFoundException", f"Schedule group {group} does not exist.")
    assert sch.get_schedule(Name=name)["GroupName"] == "default"
    sch.delete_schedule(Name=name)
    with pytest.raises(ClientError) as exc:
        sch.delete_schedule_group(Name="default")
    assert code_of(exc)[:2] == (400, "ValidationException")


def test_runs_missed_while_down_run_once_after_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        lam, sch = srv.client(), srv.client("scheduler")
        function = deploy(lam, RECORDER)
        arn = lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"]
        target = {"Arn": arn, "RoleArn": ROLE_ARN}
        for attempt, margin in enumerate((3, 8, 20)):
            soon = ahead(margin)
            sch.create_schedule(
                Name="once",
                ScheduleExpression=f"at({soon.strftime('%Y-%m-%dT%H:%M:%S')})",
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={**target, "Input": json.dumps({"from": "at", "attempt": attempt})},
            )
            sch.create_schedule(
                Name="every-minute",
                ScheduleExpression="rate(1 minute)",
                StartDate=soon,
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={**target, "Input": json.dumps({"from": "rate", "attempt": attempt})},
            )
            if in_time(soon):
                break
            sch.delete_schedule(Name="once")  # too late to be sure neither ran before the kill: again
            sch.delete_schedule(Name="every-minute")
        else:
            pytest.fail("the server was too slow to make a schedule a few seconds ahead")
        srv.stop(signal.SIGKILL)  # both schedules were committed before they were answered
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)  # both runs fall while down
    again = start_server(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(ours := [r["from"] for r in records(again, function) if r["attempt"] == attempt]) < 2:
            assert time.monotonic() < deadline, f"only {ours} ran"
            time.sleep(0.2)
        assert sorted(ours) == ["at", "rate"]
        time.sleep(2.0)
        assert len([r for r in records(again, function) if r["attempt"] == attempt]) == 2  # not repeated
        sch = again.client("scheduler")
        assert sch.get_schedule(Name="once")["State"] == "ENABLED"  # ActionAfterCompletion NONE: kept
    finally:
        assert again.stop() == 0, again.log()


SCHEDULE_READER = """import boto3


def handler(event, context):
    sch = boto3.client("scheduler")
    refused = {}
    for what, call in (
        ("list", lambda: sch.list_schedules(NamePrefix=event["name"])),
        ("get", lambda: sch.get_schedule(Name=event["name"])),
        ("groups", lambda: sch.list_schedule_groups()),
        ("create", lambda: sch.create_schedule(
            Name="made-by-a-function", ScheduleExpression="rate(1 day)", FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": event["arn"], "RoleArn": event["role"]})),
        ("delete", lambda: sch.delete_schedule(Name=event["name"])),
    ):
        try:
            call()
            refused[what] = "allowed"
        except Exception as exc:
            refused[what] = exc.response["Error"]["Code"]
    return refused
"""


def test_function_credentials_neither_read_nor_change_schedules(sch: Any, lam: Any) -> None:
    """A schedule's target carries its Input, which may hold another function's data: a function's own
    credentials get AccessDeniedException for every operation."""
    name = unique("read-only")
    create(sch, name, "rate(7 days)")
    fn = deploy(lam, SCHEDULE_READER, Timeout=30)
    event = {"name": name, "arn": fn_arn(fn), "role": ROLE_ARN}
    result = json.loads(lam.invoke(FunctionName=fn, Payload=json.dumps(event))["Payload"].read())
    assert result == {what: "AccessDeniedException" for what in ("list", "get", "groups", "create", "delete")}
    sch.get_schedule(Name=name)  # still there
    sch.delete_schedule(Name=name)


def test_create_is_idempotent_for_the_same_client_token(sch: Any) -> None:
    name = unique("token")
    first = create(sch, name, "rate(1 day)", ClientToken="retry-1")
    again = create(sch, name, "rate(1 day)", ClientToken="retry-1")  # a retried request
    assert again["ScheduleArn"] == first["ScheduleArn"]
    with pytest.raises(ClientError) as exc:
        create(sch, name, "rate(1 day)", ClientToken="another")
    assert code_of(exc)[:2] == (409, "ConflictException")
    assert "ClientToken" not in sch.get_schedule(Name=name) and "_ClientToken" not in sch.get_schedule(Name=name)
    sch.delete_schedule(Name=name)


def test_list_schedule_groups_pages_past_the_default_group(sch: Any) -> None:
    made = sorted([f"a{unique('g')}", f"z{unique('g')}"])
    for name in made:
        sch.create_schedule_group(Name=name)
    seen, token = [], None
    while True:
        page = sch.list_schedule_groups(MaxResults=1, **({"NextToken": token} if token else {}))
        assert len(page["ScheduleGroups"]) <= 1
        seen += [g["Name"] for g in page["ScheduleGroups"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen[0] == "default" and len(seen) == len(set(seen))
    assert set(made) <= set(seen)  # a group named before "default" is not skipped
    for name in made:
        sch.delete_schedule_group(Name=name)
