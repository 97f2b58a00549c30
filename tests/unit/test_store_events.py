"""The SQLite store keeps every field of an accepted event across a reopen (a restart): its chain for loop
detection and, for a delivery, its target and dead-letter attributes included."""

from __future__ import annotations

import asyncio
from pathlib import Path

from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore


def test_every_field_of_an_event_survives_a_reopen(tmp_path: Path) -> None:
    events = [
        StoredEvent(
            "e-1",
            "f",
            "live",
            b"\x00{}",
            '{"custom": 1}',
            1.5,
            attempts=2,
            next_at=9.0,
            last_error="ValueError",
            lineage='{"f":3}',
        ),
        StoredEvent(
            "e-2",
            "f",
            None,
            b"body",
            None,
            2.5,
            state="failed",
            failure="DeliveryFailed",
            target="arn:aws:sqs:us-east-1:000000000000:dlq",
            attributes='{"RequestID":"e-1"}',
        ),
    ]

    async def write() -> None:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        await store.add_events(events)
        await store.close()

    async def read() -> list[StoredEvent]:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        try:
            return await store.list_events()
        finally:
            await store.close()

    asyncio.run(write())
    assert asyncio.run(read()) == events
