"""The contract every TopicStore implementation must keep (SQLite today; PostgreSQL for the cluster mode must
pass the same): topics by ARN with a bound, subscriptions unique per endpoint with a per-topic bound, a publish
that commits messages, deliveries and Lambda events together (FIFO deduplication within its window, a
sequence per topic), deliveries that keep their message alive, and durability across a reopen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from selfless.services.sns.sqlite import SqliteTopicStore
from selfless.services.sns.store import Delivery, Message, Outgoing, Subscription, Topic, TopicStore
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore

ARN = "arn:aws:sns:us-east-1:000000000000:"


async def _sqlite(tmp: Path) -> tuple[TopicStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteTopicStore(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[TopicStore, SqliteStore]]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[tuple[TopicStore, SqliteStore]]]:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def topic(name: str = "t", **attributes: str) -> Topic:
    return Topic(ARN + name, name, 1.0, attributes)


def subscription(topic_name: str, n: int, protocol: str = "sqs", pending: bool = False) -> Subscription:
    return Subscription(
        f"{ARN}{topic_name}:00000000-0000-0000-0000-{n:012d}", ARN + topic_name, protocol, f"endpoint-{n}",
        "000000000000", 1.0, {}, pending=pending, token="tok" if pending else None,
    )  # fmt: skip


def outgoing(n: int, topic_name: str, subs: list[Subscription], dedup: str | None = None, events: int = 0) -> Outgoing:
    message = Message(f"m{n}", ARN + topic_name, {"message_id": f"m{n}", "message": f"body{n}", "sent": 100.0 + n})
    deliveries = [Delivery(f"d{n}-{i}", s.arn, f"m{n}", "notification", 100.0) for i, s in enumerate(subs)]
    stored = [StoredEvent(f"e{n}-{i}", "fn", None, b"{}", None, 100.0) for i in range(events)]
    return Outgoing(message, deliveries, stored, dedup)


def test_topics(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        t = topic(DisplayName="a")
        assert await store.create_topic(t, 10) is t
        again = await store.create_topic(topic(DisplayName="b"), 10)
        assert again is not None and again.attributes["DisplayName"] == "a"  # the first one stays
        for i in range(9):
            assert await store.create_topic(topic(f"x{i}"), 10) is not None
        assert await store.create_topic(topic("one-too-many"), 10) is None
        listed = await store.list_topics(None, 4)
        assert [x.name for x in listed] == sorted(x.name for x in listed) and len(listed) == 4
        rest = await store.list_topics(listed[-1].arn, 100)
        assert len(listed) + len(rest) == 10 and not {x.arn for x in listed} & {x.arn for x in rest}
        changed = Topic(t.arn, t.name, t.created, {"DisplayName": "c"}, {"k": "v"})
        assert await store.update_topic(changed)
        found = await store.get_topic(t.arn)
        assert found is not None and found.attributes == {"DisplayName": "c"} and found.tags == {"k": "v"}
        assert await store.delete_topic(t.arn) and not await store.delete_topic(t.arn)
        assert await store.get_topic(t.arn) is None
        assert not await store.update_topic(changed)
        await base.close()

    run(scenario)


def test_subscriptions(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_topic(topic(), 10)
        first = subscription("t", 1, "http", pending=True)
        confirm = Delivery("c1", first.arn, "", "confirmation", 1.0)
        assert await store.add_subscription(first, [confirm], 2) == (first, True)
        duplicate = subscription("t", 9, "http")
        duplicate = Subscription(duplicate.arn, duplicate.topic_arn, "http", first.endpoint, "o", 2.0)
        assert await store.add_subscription(duplicate, [], 2) == (first, False)  # same protocol and endpoint
        assert await store.add_subscription(subscription("t", 2), [], 2) is not None
        assert await store.add_subscription(subscription("t", 3), [], 2) is None  # the bound
        assert await store.add_subscription(subscription("gone", 4), [], 2) is None  # no such topic
        assert [d.id for d in await store.pending()] == ["c1"]
        listed = await store.list_subscriptions(ARN + "t", None, 1)
        assert len(listed) == 1
        assert len(await store.list_subscriptions(ARN + "t", listed[0].arn, 10)) == 1
        assert len(await store.list_subscriptions(None, None, 10)) == 2
        confirmed = Subscription(**{**first.__dict__, "pending": False, "attributes": {"RawMessageDelivery": "true"}})
        assert await store.update_subscription(confirmed)
        found = await store.get_subscription(first.arn)
        assert found is not None and not found.pending and found.attributes == {"RawMessageDelivery": "true"}
        assert await store.delete_subscription(first.arn)
        assert await store.pending() == []  # its confirmation went with it
        assert await store.get_subscription(first.arn) is None
        await store.delete_topic(ARN + "t")
        assert await store.list_subscriptions(None, None, 10) == []
        await base.close()

    run(scenario)


def test_publish_commits_messages_deliveries_and_events(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_topic(topic("f.fifo", FifoTopic="true"), 10)
        subs = [subscription("f.fifo", 1), subscription("f.fifo", 2)]
        for s in subs:
            await store.add_subscription(s, [], 10)
        published = await store.publish(
            ARN + "f.fifo",
            [outgoing(1, "f.fifo", subs, "a", events=1), outgoing(2, "f.fifo", subs, "b"),
             outgoing(3, "f.fifo", subs, "a", events=1)],
            dedup_since=0.0,
        )  # fmt: skip
        assert [(p.message_id, p.duplicate) for p in published] == [("m1", False), ("m2", False), ("m1", True)]
        assert published[0].seq < published[1].seq and published[2].seq == published[0].seq
        pending = await store.pending()
        assert [d.id for d in pending] == ["d1-0", "d1-1", "d2-0", "d2-1"]  # in publish order; m3's are not kept
        assert await store.count_pending() == 4
        assert [e.id for e in await base.list_events()] == ["e1-0"]
        later = await store.publish(ARN + "f.fifo", [outgoing(4, "f.fifo", subs, "a")], dedup_since=200.0)
        assert not later[0].duplicate and later[0].seq > published[1].seq  # "a" left the window

        message = await store.message("m1")
        assert message is not None and message.doc["message"] == "body1"
        await store.done(pending[0])
        assert await store.message("m1") is not None  # its other delivery still needs it
        retried = Delivery(**{**pending[1].__dict__, "attempts": 3, "next_at": 500.0})
        await store.retry(retried)
        assert next(d for d in await store.pending() if d.id == "d1-1").attempts == 3
        await store.done(pending[1])
        assert await store.message("m1") is None
        assert await store.publish(ARN + "none", [outgoing(9, "none", [])], 0.0) == []
        await base.close()

        store, base = await make()  # reopened: what was committed is there
        assert [d.id for d in await store.pending()] == ["d2-0", "d2-1", "d4-0", "d4-1"]
        assert await store.message("m2") is not None
        await store.delete_topic(ARN + "f.fifo")
        assert await store.pending() == [] and await store.message("m2") is None
        await base.close()

    run(scenario)
