"""Scheduled EventBridge rules in the schedules' loop with an injected clock (no sleeping): a rate counts from
the rule's creation (no run at creation), a cron runs in UTC, each run sends every target the Scheduled Event
(or its Input, InputPath, InputTransformer), a disabled rule does not run, a long stop gives one catch-up run,
and schedules and rules share the one loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from selfless.events.rules import RuleTimetable, target_input
from selfless.events.schedules import Scheduler, ScheduleTimetable
from selfless.services.eventbridge.service import Rules
from selfless.services.eventbridge.sqlite import SqliteRuleStore
from selfless.services.scheduler.service import Schedules
from selfless.services.scheduler.sqlite import SqliteScheduleStore
from selfless.store.sqlite import SqliteStore
from tests.unit.test_scheduler_loop import Clock, Recorder, advance, params, utc

ACCOUNT = "123456789012"
FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:job"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:jobs.fifo"


async def setup(tmp: Path, start: str) -> tuple[SqliteStore, Rules, Schedules, Scheduler, Clock, Recorder]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    rule_store, schedule_store = SqliteRuleStore(base), SqliteScheduleStore(base)
    await rule_store.open()
    await schedule_store.open()
    clock, recorder = Clock(start), Recorder()
    timetables = [ScheduleTimetable(schedule_store), RuleTimetable(rule_store, None, ACCOUNT, "us-east-1")]
    return (
        base,
        Rules(rule_store, ACCOUNT, "us-east-1", clock),
        Schedules(schedule_store, ACCOUNT, "us-east-1", clock),
        Scheduler(timetables, recorder, clock),
        clock,
        recorder,
    )


def run(scenario: Any) -> None:
    asyncio.run(scenario())


def test_a_rate_rule_runs_every_period_from_its_creation(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, rules, _, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:30+00:00")
        await rules.put_rule({"Name": "sweep", "ScheduleExpression": "rate(5 minutes)"})
        await rules.put_targets({"Rule": "sweep", "Targets": [{"Id": "fn", "Arn": FN}]})
        start = clock.now
        runs = await advance(scheduler, clock, start + 16 * 60, recorder)
        assert [when for when, _ in runs] == ["2026-05-01T10:05:30", "2026-05-01T10:10:30", "2026-05-01T10:15:30"]
        event = json.loads(runs[0][1])
        assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
        assert event["time"] == "2026-05-01T10:05:30Z" and event["detail"] == {}
        assert event["resources"] == [f"arn:aws:events:us-east-1:{ACCOUNT}:rule/sweep"]
        assert (event["account"], event["region"], event["version"]) == (ACCOUNT, "us-east-1", "0")
        assert {(e.function_name, e.qualifier) for e in recorder.events} == {("job", None)}
        assert len(await base.list_events()) == 3  # each run stored with the rule's move
        await base.close()

    run(scenario)


def test_a_cron_rule_runs_in_utc_and_each_target_gets_its_input(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, rules, _, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T00:00:00+00:00")
        await rules.put_rule({"Name": "noon", "ScheduleExpression": "cron(0 12 ? * MON-FRI *)"})
        await rules.put_targets(
            {
                "Rule": "noon",
                "Targets": [
                    {"Id": "a", "Arn": FN, "Input": '{"job": "report"}'},
                    {"Id": "b", "Arn": FN, "InputPath": "$.resources[0]"},
                    {"Id": "c", "Arn": QUEUE, "SqsParameters": {"MessageGroupId": "g"},
                     "InputTransformer": {"InputPathsMap": {"t": "$.time"},
                                          "InputTemplate": '{"at": "<t>", "rule": "<aws.events.rule-name>"}'}},
                ],
            }
        )  # fmt: skip
        runs = await advance(scheduler, clock, clock.now + 4 * 86400, recorder)
        # 2026-05-01 is a Friday: that day and Monday the 4th.
        assert sorted({when for when, _ in runs}) == ["2026-05-01T12:00:00", "2026-05-04T12:00:00"]
        first = recorder.events[:3]
        assert first[0].payload == b'{"job": "report"}'
        assert json.loads(first[1].payload) == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/noon"
        assert json.loads(first[2].payload) == {"at": "2026-05-01T12:00:00Z", "rule": "noon"}
        assert first[2].target == QUEUE and '"@fifo":["g"' in (first[2].attributes or "")
        await base.close()

    run(scenario)


def test_disabled_rules_wait_and_a_long_stop_gives_one_catch_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, rules, _, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        await rules.put_rule({"Name": "often", "ScheduleExpression": "rate(1 minute)", "State": "DISABLED"})
        await rules.put_targets({"Rule": "often", "Targets": [{"Id": "fn", "Arn": FN}]})
        start = clock.now
        assert await advance(scheduler, clock, start + 600, recorder) == []
        await rules.enable_rule({"Name": "often"})
        runs = await advance(scheduler, clock, start + 720, recorder)
        assert [when for when, _ in runs] == ["2026-05-01T10:11:00", "2026-05-01T10:12:00"]
        clock.now = start + 3600 + 20  # down for most of an hour
        runs = await advance(scheduler, clock, start + 3600 + 90, recorder)
        assert [when for when, _ in runs] == ["2026-05-01T11:00:20", "2026-05-01T11:01:00"]
        await base.close()

    run(scenario)


def test_schedules_and_rules_share_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, rules, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        await schedules.create(params("s", "at(2026-05-01T10:02:30)"))
        await rules.put_rule({"Name": "r", "ScheduleExpression": "cron(0/2 * * * ? *)"})
        await rules.put_targets({"Rule": "r", "Targets": [{"Id": "fn", "Arn": FN, "Input": '{"from": "r"}'}]})
        runs = await advance(scheduler, clock, clock.now + 300, recorder)
        assert runs == [
            ("2026-05-01T10:02:00", '{"from": "r"}'),
            ("2026-05-01T10:02:30", '{"from": "s"}'),
            ("2026-05-01T10:04:00", '{"from": "r"}'),
        ]
        assert utc(clock.now) == "2026-05-01T10:05:00"
        await base.close()

    run(scenario)


def test_a_target_without_input_gets_the_whole_event() -> None:
    event = {"a": 1}
    assert json.loads(target_input({"Id": "x", "Arn": FN}, event, "r", "arn")) == event
    assert json.loads(target_input({"InputPath": "$.missing"}, event, "r", "arn")) is None
    transformed = target_input({"InputTransformer": {"InputTemplate": "<aws.events.event>"}}, event, "r", "arn")
    assert json.loads(transformed) == event
