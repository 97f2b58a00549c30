"""``MappingStore`` on the server's SQLite database (its one connection and thread, ``synchronous=FULL``)."""

from __future__ import annotations

import sqlite3

from selfless.events.mapping_store import EventSourceMapping
from selfless.store.sqlite import SqliteStore, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_source_mappings (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    doc  TEXT NOT NULL
);
"""


class SqliteMappingStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        await self._store.call(lambda db: db.executescript(_SCHEMA) and None)

    async def list_mappings(self) -> list[EventSourceMapping]:
        def q(db: sqlite3.Connection) -> list[EventSourceMapping]:
            rows = db.execute("SELECT doc FROM event_source_mappings ORDER BY seq").fetchall()
            return [EventSourceMapping.from_json(doc) for (doc,) in rows]

        return await self._store.call(q)

    async def put_mapping(self, mapping: EventSourceMapping) -> None:
        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    "INSERT INTO event_source_mappings(uuid, doc) VALUES (?, ?) "
                    "ON CONFLICT(uuid) DO UPDATE SET doc = excluded.doc",
                    (mapping.uuid, mapping.to_json()),
                )

        await self._store.call(q)

    async def delete_mapping(self, uuid: str) -> None:
        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("DELETE FROM event_source_mappings WHERE uuid = ?", (uuid,))

        await self._store.call(q)
