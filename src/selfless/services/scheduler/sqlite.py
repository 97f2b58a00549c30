"""``ScheduleStore`` on the server's SQLite database (its one connection and thread, ``synchronous=FULL``):
every method is one transaction, committed before it returns; a run's events commit with the schedule."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from selfless.services.scheduler.store import Group, Schedule
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore, insert_events, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scheduler_schedules (
    grp      TEXT NOT NULL,
    name     TEXT NOT NULL,
    created  REAL NOT NULL,
    modified REAL NOT NULL,
    doc      TEXT NOT NULL,
    next_due REAL,
    PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS scheduler_groups (
    name     TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    modified REAL NOT NULL,
    tags     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduler_schedules_by_due ON scheduler_schedules(next_due) WHERE next_due IS NOT NULL;
"""
_COLUMNS = "grp, name, created, modified, doc, next_due"


def _schedule_of(row: tuple[Any, ...]) -> Schedule:
    group, name, created, modified, doc, next_due = row
    return Schedule(group, name, created, modified, json.loads(doc), next_due)


def _row(s: Schedule) -> tuple[Any, ...]:
    return (s.group, s.name, s.created, s.modified, json.dumps(s.doc), s.next_due)


class SqliteScheduleStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        await self._store.call(lambda db: db.executescript(_SCHEMA) and None)

    async def create_group(self, group: Group) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO scheduler_groups(name, created, modified, tags) VALUES (?,?,?,?)",
                (group.name, group.created, group.modified, json.dumps(dict(group.tags))),
            )
            return cur.rowcount == 1

        return await self._store.call(q)

    async def get_group(self, name: str) -> Group | None:
        def q(db: sqlite3.Connection) -> Group | None:
            row = db.execute(
                "SELECT name, created, modified, tags FROM scheduler_groups WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else Group(row[0], row[1], row[2], json.loads(row[3]))

        return await self._store.call(q)

    async def delete_group(self, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                if db.execute("DELETE FROM scheduler_groups WHERE name = ?", (name,)).rowcount != 1:
                    return False
                db.execute("DELETE FROM scheduler_schedules WHERE grp = ?", (name,))
                return True

        return await self._store.call(q)

    async def list_groups(self, prefix: str, after: str | None, limit: int) -> list[Group]:
        def q(db: sqlite3.Connection) -> list[Group]:
            rows = db.execute(
                "SELECT name, created, modified, tags FROM scheduler_groups "
                "WHERE substr(name, 1, ?) = ? AND name > ? ORDER BY name LIMIT ?",
                (len(prefix), prefix, after or "", limit),
            )
            return [Group(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

        return await self._store.call(q)

    async def set_group_tags(self, name: str, tags: Mapping[str, str], modified: float) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE scheduler_groups SET tags = ?, modified = ? WHERE name = ?",
                (json.dumps(dict(tags)), modified, name),
            )
            return cur.rowcount == 1

        return await self._store.call(q)

    async def create(self, schedule: Schedule) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            sql = f"INSERT OR IGNORE INTO scheduler_schedules({_COLUMNS}) VALUES (?,?,?,?,?,?)"
            cur = db.execute(sql, _row(schedule))
            return cur.rowcount == 1

        return await self._store.call(q)

    async def get(self, group: str, name: str) -> Schedule | None:
        def q(db: sqlite3.Connection) -> Schedule | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM scheduler_schedules WHERE grp = ? AND name = ?", (group, name)
            ).fetchone()
            return None if row is None else _schedule_of(row)

        return await self._store.call(q)

    async def update(self, schedule: Schedule) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE scheduler_schedules SET modified = ?, doc = ?, next_due = ? WHERE grp = ? AND name = ?",
                (schedule.modified, json.dumps(schedule.doc), schedule.next_due, schedule.group, schedule.name),
            )
            return cur.rowcount == 1

        return await self._store.call(q)

    async def delete(self, group: str, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM scheduler_schedules WHERE grp = ? AND name = ?", (group, name))
            return cur.rowcount == 1

        return await self._store.call(q)

    async def list_schedules(
        self, group: str | None, prefix: str, after: tuple[str, str] | None, limit: int
    ) -> list[Schedule]:
        def q(db: sqlite3.Connection) -> list[Schedule]:
            sql = f"SELECT {_COLUMNS} FROM scheduler_schedules WHERE substr(name, 1, ?) = ? AND (grp, name) > (?, ?)"
            args: list[Any] = [len(prefix), prefix, *(after or ("", ""))]
            if group is not None:
                sql += " AND grp = ?"
                args.append(group)
            rows = db.execute(sql + " ORDER BY grp, name LIMIT ?", (*args, limit))
            return [_schedule_of(row) for row in rows]

        return await self._store.call(q)

    async def due(self, now: float, limit: int) -> list[Schedule]:
        def q(db: sqlite3.Connection) -> list[Schedule]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM scheduler_schedules WHERE next_due IS NOT NULL AND next_due <= ?"
                " ORDER BY next_due LIMIT ?",
                (now, limit),
            )
            return [_schedule_of(row) for row in rows]

        return await self._store.call(q)

    async def earliest(self) -> float | None:
        def q(db: sqlite3.Connection) -> float | None:
            row = db.execute("SELECT min(next_due) FROM scheduler_schedules WHERE next_due IS NOT NULL").fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._store.call(q)

    async def fire(self, schedule: Schedule, expected_due: float, events: Sequence[StoredEvent], delete: bool) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                key = (schedule.group, schedule.name, expected_due)
                if delete:
                    cur = db.execute("DELETE FROM scheduler_schedules WHERE grp = ? AND name = ? AND next_due = ?", key)
                else:
                    cur = db.execute(
                        "UPDATE scheduler_schedules SET next_due = ? WHERE grp = ? AND name = ? AND next_due = ?",
                        (schedule.next_due, *key),
                    )
                if cur.rowcount != 1:
                    return False
                if events:
                    insert_events(db, list(events))
                return True

        return await self._store.call(q)
