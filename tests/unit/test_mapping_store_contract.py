"""The contract every MappingStore implementation must keep (SQLite today; PostgreSQL for the cluster mode must
pass the same): mappings by UUID in creation order, replaced whole, deleted idempotently, durable across a
reopen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from selfless.events.mapping_sqlite import SqliteMappingStore
from selfless.events.mapping_store import EventSourceMapping, MappingStore
from selfless.store.sqlite import SqliteStore


async def _sqlite(tmp: Path) -> tuple[MappingStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteMappingStore(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[MappingStore, SqliteStore]]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[tuple[MappingStore, SqliteStore]]]:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def mapping(uuid: str, **changes: object) -> EventSourceMapping:
    base = EventSourceMapping(
        uuid=uuid,
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        event_source_arn="arn:aws:sqs:us-east-1:000000000000:q",
        batch_size=10,
        window_s=0,
        enabled=True,
        state="Enabled",
        reason="USER_INITIATED",
        last_modified=1.5,
        last_result="No records processed",
        response_types=("ReportBatchItemFailures",),
        max_concurrency=7,
        filters=('{"body": {"kind": ["order"]}}',),
        tags={"team": "a"},
    )
    return base.replace(**changes)


def test_put_list_replace_delete_and_reopen(make: Callable[[], Awaitable[tuple[MappingStore, SqliteStore]]]) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.list_mappings() == []
        await store.put_mapping(mapping("a"))
        await store.put_mapping(mapping("b", response_types=(), max_concurrency=None))
        await store.put_mapping(mapping("a", state="Disabled", enabled=False, batch_size=3))
        found = await store.list_mappings()
        assert [m.uuid for m in found] == ["a", "b"]  # creation order, a replace keeps the place
        assert found[0] == mapping("a", state="Disabled", enabled=False, batch_size=3)
        assert found[1] == mapping("b", response_types=(), max_concurrency=None)
        await store.delete_mapping("b")
        await store.delete_mapping("b")  # idempotent
        await store.delete_mapping("never")
        await base.close()
        again, base = await make()
        assert await again.list_mappings() == [mapping("a", state="Disabled", enabled=False, batch_size=3)]
        await base.close()

    asyncio.run(scenario())


def test_an_amazon_mq_mapping_keeps_its_queue_and_access_configurations(
    make: Callable[[], Awaitable[tuple[MappingStore, SqliteStore]]],
) -> None:
    mq = mapping(
        "mq",
        event_source_arn="arn:aws:mq:us-east-1:000000000000:broker:b:b-1234",
        response_types=(),
        max_concurrency=None,
        queues=("orders",),
        access=(("BASIC_AUTH", "arn:aws:secretsmanager:us-east-1:000000000000:secret:s"), ("VIRTUAL_HOST", "/v")),
    )

    async def scenario() -> None:
        store, base = await make()
        await store.put_mapping(mq)
        await base.close()
        again, base = await make()
        assert await again.list_mappings() == [mq]
        await base.close()

    asyncio.run(scenario())
