"""The contract every RuleStore implementation must keep (SQLite today; PostgreSQL for the cluster mode must pass
the same): rules by (bus, name), a bus's quota, attributes, targets and tags changed apart, a rule with targets
kept unless forced, listing in order with a prefix and paging, due rules earliest first, and a run committed
with the rule's next due time only if that is still what the run expected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from selfless.services.eventbridge.sqlite import SqliteRuleStore
from selfless.services.eventbridge.store import Rule, RuleStore
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore


async def _sqlite(tmp: Path) -> tuple[RuleStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteRuleStore(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[RuleStore, SqliteStore]]]] = {"sqlite": _sqlite}
Make = Callable[[], Awaitable[tuple[RuleStore, SqliteStore]]]


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def rule(name: str, due: float | None = None, bus: str = "default", **doc: str) -> Rule:
    return Rule(bus, name, 1.0, {"ScheduleExpression": "rate(1 minute)", **doc}, next_due=due)


def test_put_get_and_the_parts_that_change_apart(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.put(rule("a", 10.0).replace(tags={"t": "1"}), 300)
        got = await store.get("default", "a")
        assert got == rule("a", 10.0).replace(tags={"t": "1"})
        assert await store.get("other", "a") is None
        assert await store.set_targets("default", "a", [{"Id": "x", "Arn": "arn"}])
        # PutRule again: new attributes and due time; created, targets and tags kept.
        assert await store.put(Rule("default", "a", 99.0, {"State": "DISABLED"}, next_due=None), 300)
        got = await store.get("default", "a")
        assert got == Rule("default", "a", 1.0, {"State": "DISABLED"}, ({"Id": "x", "Arn": "arn"},), {"t": "1"}, None)
        assert await store.set_tags("default", "a", {})
        assert (await store.get("default", "a")).tags == {}  # type: ignore[union-attr]
        assert not await store.set_targets("default", "missing", [])
        assert not await store.set_tags("default", "missing", {})
        await base.close()

    asyncio.run(scenario())


def test_a_bus_holds_at_most_its_quota(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.put(rule("a"), 2) and await store.put(rule("b"), 2)
        assert not await store.put(rule("c"), 2)
        assert await store.get("default", "c") is None
        assert await store.put(rule("a", 5.0), 2), "replacing one is not a new one"
        assert await store.put(rule("c", bus="other"), 2), "the quota is per bus"
        await base.close()

    asyncio.run(scenario())


def test_delete_keeps_a_rule_with_targets_unless_forced(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.put(rule("a"), 300)
        await store.set_targets("default", "a", [{"Id": "x", "Arn": "arn"}])
        assert await store.delete("default", "a", force=False) is False
        assert await store.get("default", "a") is not None
        assert await store.delete("default", "a", force=True) is True
        assert await store.delete("default", "a", force=True) is None
        await store.put(rule("b"), 300)
        assert await store.delete("default", "b", force=False) is True
        await base.close()

    asyncio.run(scenario())


def test_list_with_prefix_and_pages(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        for name in ("b-2", "a-1", "b-1", "b-3"):
            await store.put(rule(name), 300)
        await store.put(rule("b-0", bus="other"), 300)
        assert [r.name for r in await store.list_rules("default", "b-", None, 2)] == ["b-1", "b-2"]
        assert [r.name for r in await store.list_rules("default", "b-", "b-2", 2)] == ["b-3"]
        assert [r.name for r in await store.list_rules("default", "", None, 10)] == ["a-1", "b-1", "b-2", "b-3"]
        await base.close()

    asyncio.run(scenario())


def test_due_earliest_and_fire(make: Make) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.put(rule("late", 30.0), 300)
        await store.put(rule("early", 10.0), 300)
        await store.put(rule("off", None), 300)
        assert await store.earliest() == 10.0
        assert [r.name for r in await store.due(20.0, 10)] == ["early"]
        assert [r.name for r in await store.due(40.0, 1)] == ["early"]
        early = (await store.due(20.0, 10))[0]
        event = StoredEvent("ev-1", "fn", None, b"{}", None, 1.0)
        assert await store.fire(early.replace(next_due=70.0), 10.0, [event])
        assert (await store.get("default", "early")).next_due == 70.0  # type: ignore[union-attr]
        assert [e.id for e in await base.list_events()] == ["ev-1"]
        # A run that expected another due time (the rule changed meanwhile) writes nothing.
        assert not await store.fire(early.replace(next_due=99.0), 10.0, [event.replace(id="ev-2")])
        assert [e.id for e in await base.list_events()] == ["ev-1"]
        assert not await store.fire(rule("gone", 99.0), 10.0, [])
        await base.close()

    asyncio.run(scenario())
