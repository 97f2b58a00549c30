"""The contract every ScheduleStore implementation must keep (SQLite today; PostgreSQL for the cluster mode must
pass the same): schedules by (group, name), listing in order with a prefix and paging, due schedules earliest
first, and a run committed with the schedule's next due time only if that is still what the run expected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from selfless.services.scheduler.sqlite import SqliteScheduleStore
from selfless.services.scheduler.store import Group, Schedule, ScheduleStore
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore


async def _sqlite(tmp: Path) -> tuple[ScheduleStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteScheduleStore(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[ScheduleStore, SqliteStore]]]] = {"sqlite": _sqlite}
Make = Callable[[], Awaitable[tuple[ScheduleStore, SqliteStore]]]


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def schedule(name: str, due: float | None = None, group: str = "default") -> Schedule:
    return Schedule(group, name, 1.0, 1.0, {"ScheduleExpression": "rate(1 minute)", "Target": {"Arn": "x"}}, due)


def event(name: str) -> StoredEvent:
    return StoredEvent(f"ev-{name}", "fn", None, b"{}", None, 1.0)


def test_create_get_update_delete(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.create(schedule("a", 10.0))
        assert not await store.create(schedule("a", 99.0))  # the name is taken: nothing written
        got = await store.get("default", "a")
        assert got == schedule("a", 10.0)
        assert await store.get("other", "a") is None
        assert await store.update(got.replace(modified=2.0, doc={"State": "DISABLED"}, next_due=None))
        assert await store.get("default", "a") == Schedule("default", "a", 1.0, 2.0, {"State": "DISABLED"}, None)
        assert not await store.update(schedule("missing"))
        assert await store.delete("default", "a")
        assert not await store.delete("default", "a")
        assert await store.get("default", "a") is None
        await base.close()

    asyncio.run(scenario())


def test_list_orders_filters_and_pages(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        for name in ("b-2", "a-1", "b-1", "c"):
            await store.create(schedule(name))
        await store.create(schedule("b-0", group="g2"))
        names = [s.name for s in await store.list_schedules("default", "", None, 10)]
        assert names == ["a-1", "b-1", "b-2", "c"]
        assert [s.name for s in await store.list_schedules("default", "b-", None, 10)] == ["b-1", "b-2"]
        assert [s.name for s in await store.list_schedules("default", "", ("default", "b-1"), 2)] == ["b-2", "c"]
        assert [(s.group, s.name) for s in await store.list_schedules(None, "b-", None, 10)] == [
            ("default", "b-1"),
            ("default", "b-2"),
            ("g2", "b-0"),
        ]
        await base.close()

    asyncio.run(scenario())


def test_due_and_earliest(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.earliest() is None
        await store.create(schedule("late", 30.0))
        await store.create(schedule("never", None))
        await store.create(schedule("soon", 10.0))
        await store.create(schedule("mid", 20.0))
        assert await store.earliest() == 10.0
        assert [s.name for s in await store.due(25.0, 10)] == ["soon", "mid"]
        assert [s.name for s in await store.due(100.0, 2)] == ["soon", "mid"]
        assert await store.due(5.0, 10) == []
        await base.close()

    asyncio.run(scenario())


def test_fire_commits_the_run_with_the_next_due_time(make: Make, tmp_path: Path) -> None:
    async def scenario() -> None:
        store, base = await make()
        s = schedule("a", 10.0)
        await store.create(s)
        assert await store.fire(s.replace(next_due=70.0), 10.0, [event("1")], delete=False)
        assert (await store.get("default", "a")).next_due == 70.0  # type: ignore[union-attr]
        # A second fire that expected the old due time (a stale view) writes nothing.
        assert not await store.fire(s.replace(next_due=70.0), 10.0, [event("2")], delete=False)
        assert [e.id for e in await base.list_events()] == ["ev-1"]
        # The last run of an at() schedule with ActionAfterCompletion DELETE removes it, with the run.
        assert await store.fire(s.replace(next_due=None), 70.0, [event("3")], delete=True)
        assert await store.get("default", "a") is None
        assert sorted(e.id for e in await base.list_events()) == ["ev-1", "ev-3"]
        await base.close()
        # Durable: a reopened store has the same.
        reopened, base2 = await make()
        assert await reopened.get("default", "a") is None
        assert sorted(e.id for e in await base2.list_events()) == ["ev-1", "ev-3"]
        await base2.close()

    asyncio.run(scenario())


def test_groups_and_their_schedules(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.create_group(Group("g1", 1.0, 1.0, {"team": "a"}))
        assert not await store.create_group(Group("g1", 2.0, 2.0))
        assert await store.create_group(Group("g2", 1.0, 1.0))
        assert await store.get_group("g1") == Group("g1", 1.0, 1.0, {"team": "a"})
        assert await store.get_group("none") is None
        assert [g.name for g in await store.list_groups("", None, 10)] == ["g1", "g2"]
        assert [g.name for g in await store.list_groups("", "g1", 10)] == ["g2"]
        assert [g.name for g in await store.list_groups("g2", None, 10)] == ["g2"]
        assert await store.set_group_tags("g1", {"team": "b"}, 3.0)
        assert await store.get_group("g1") == Group("g1", 1.0, 3.0, {"team": "b"})
        assert not await store.set_group_tags("none", {}, 3.0)
        await store.create(schedule("s", 10.0, group="g1"))
        await store.create(schedule("s", 10.0, group="g2"))
        # Deleting a group deletes its schedules with it.
        assert await store.delete_group("g1")
        assert not await store.delete_group("g1")
        assert await store.get("g1", "s") is None
        assert await store.get("g2", "s") is not None
        await base.close()

    asyncio.run(scenario())
