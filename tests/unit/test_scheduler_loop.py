"""The scheduler's loop with an injected clock (no sleeping): runs at the right instants across a daylight-saving
change, each run stored with the schedule's next due time, at most one catch-up run after a long stop, and an
at() schedule that deletes itself after its run."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from selfless.events.schedules import MAX_WAIT_S, Scheduler, ScheduleTimetable
from selfless.services.scheduler.service import Schedules
from selfless.services.scheduler.sqlite import SqliteScheduleStore
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore

FN = "arn:aws:lambda:us-east-1:123456789012:function:job"


class Clock:
    def __init__(self, start: str) -> None:
        self.now = dt.datetime.fromisoformat(start).timestamp()

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.room = True
        self.arrived = asyncio.Event()

    def has_room(self, count: int) -> bool:
        return self.room

    def adopt(self, events: list[StoredEvent]) -> None:
        self.events += events
        self.arrived.set()


def utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def setup(tmp: Path, start: str) -> tuple[SqliteStore, Schedules, Scheduler, Clock, Recorder]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteScheduleStore(base)
    await store.open()
    clock, recorder = Clock(start), Recorder()
    return (
        base,
        Schedules(store, "123456789012", "us-east-1", clock),
        Scheduler([ScheduleTimetable(store)], recorder, clock),
        clock,
        recorder,
    )


def params(name: str, expression: str, **extra: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "ScheduleExpression": expression,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {"Arn": FN, "RoleArn": "arn:aws:iam::123456789012:role/r", "Input": f'{{"from": "{name}"}}'},
        **extra,
    }


async def advance(scheduler: Scheduler, clock: Clock, until: float, recorder: Recorder) -> list[tuple[str, str]]:
    """Wake the loop as it asks (each wait moves the clock on) until ``until``; (UTC time, payload) per run."""
    seen = len(recorder.events)
    for _ in range(10_000):
        wait = await scheduler.tick()
        assert 0 < wait <= MAX_WAIT_S  # never a busy loop, never an unbounded sleep
        if clock.now >= until:
            break
        clock.now = min(clock.now + wait, until)
    return [(utc(e.accepted_at), e.payload.decode()) for e in recorder.events[seen:]]


def test_runs_across_fall_back_in_new_york(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-10-31T00:00:00+00:00")
        await schedules.create(params("nightly", "cron(30 1 * * ? *)", ScheduleExpressionTimezone="America/New_York"))
        runs = await advance(scheduler, clock, dt.datetime(2026, 11, 3, tzinfo=dt.UTC).timestamp(), recorder)
        assert runs == [
            ("2026-10-31T05:30:00", '{"from": "nightly"}'),  # 01:30 EDT
            ("2026-11-01T05:30:00", '{"from": "nightly"}'),  # 01:30 EDT: the repeated 01:30 runs once
            ("2026-11-02T06:30:00", '{"from": "nightly"}'),  # 01:30 EST
        ]
        assert {(e.function_name, e.qualifier) for e in recorder.events} == {("job", None)}
        # Each run was stored with the schedule's move (the durable async queue has them).
        assert len(await base.list_events()) == 3
        await base.close()

    asyncio.run(scenario())


def test_runs_across_spring_forward_in_berlin(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-03-27T12:00:00+00:00")
        await schedules.create(params("early", "cron(30 2 * * ? *)", ScheduleExpressionTimezone="Europe/Berlin"))
        runs = await advance(scheduler, clock, dt.datetime(2026, 3, 31, tzinfo=dt.UTC).timestamp(), recorder)
        assert [when for when, _ in runs] == [
            "2026-03-28T01:30:00",  # 02:30 CET
            "2026-03-30T00:30:00",  # 02:30 CEST; on the 29th 02:30 does not exist
        ]
        await base.close()

    asyncio.run(scenario())


def test_rate_runs_every_period_and_a_long_stop_gives_one_catch_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        await schedules.create(params("often", "rate(1 minute)"))
        start = clock.now
        runs = await advance(scheduler, clock, start + 180, recorder)
        # The first run at once (no StartDate), then every minute.
        assert [when for when, _ in runs] == [
            "2026-05-01T10:00:00",
            "2026-05-01T10:01:00",
            "2026-05-01T10:02:00",
            "2026-05-01T10:03:00",
        ]
        # The server is down for an hour: one catch-up run (when it is back), then the rate's own times again.
        clock.now = start + 3600 + 20
        runs = await advance(scheduler, clock, start + 3600 + 150, recorder)
        assert [when for when, _ in runs] == ["2026-05-01T11:00:20", "2026-05-01T11:01:00", "2026-05-01T11:02:00"]
        await base.close()

    asyncio.run(scenario())


def test_at_runs_once_and_deletes_itself(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        await schedules.create(params("once", "at(2026-05-01T12:00:05)", ActionAfterCompletion="DELETE"))
        await schedules.create(params("kept", "at(2026-05-01T12:00:05)"))
        await schedules.create(params("off", "rate(1 minute)", State="DISABLED"))
        runs = await advance(scheduler, clock, clock.now + 86400, recorder)
        assert runs == [("2026-05-01T12:00:05", '{"from": "once"}'), ("2026-05-01T12:00:05", '{"from": "kept"}')]
        listed = await schedules.list_all({})
        assert [s["Name"] for s in listed["Schedules"]] == ["kept", "off"]
        await base.close()

    asyncio.run(scenario())


def test_a_full_async_queue_holds_runs_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        await schedules.create(params("often", "rate(1 minute)"))
        recorder.room = False
        clock.now += 61
        await scheduler.tick()
        assert recorder.events == []
        recorder.room = True
        await scheduler.tick()
        assert [utc(e.accepted_at) for e in recorder.events] == ["2026-05-01T10:01:01"]
        await base.close()

    asyncio.run(scenario())


def test_the_running_loop_wakes_on_a_change_and_stops_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        base, schedules, scheduler, clock, recorder = await setup(tmp_path, "2026-05-01T10:00:00+00:00")
        schedules.on_change = scheduler.changed
        scheduler.start()
        await schedules.create(params("often", "rate(1 minute)", StartDate=clock.now + 60))
        await asyncio.sleep(0.2)
        assert recorder.events == []  # due in a minute of the injected clock: the loop waits
        clock.now += 60
        scheduler.changed()  # as any change does, it makes the loop look again now
        async with asyncio.timeout(10):
            await recorder.arrived.wait()
        assert [utc(e.accepted_at) for e in recorder.events] == ["2026-05-01T10:01:00"]
        started = asyncio.get_running_loop().time()
        await scheduler.close()
        assert asyncio.get_running_loop().time() - started < 1.0
        await base.close()

    asyncio.run(scenario())
