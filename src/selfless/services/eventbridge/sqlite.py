"""``RuleStore`` on the server's SQLite database (its one connection and thread, ``synchronous=FULL``): every
method is one transaction, committed before it returns; a run's events commit with the rule's next due time."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from selfless.services.eventbridge.store import Rule
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore, insert_events, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events_rules (
    bus      TEXT NOT NULL,
    name     TEXT NOT NULL,
    created  REAL NOT NULL,
    doc      TEXT NOT NULL,
    targets  TEXT NOT NULL,
    tags     TEXT NOT NULL,
    next_due REAL,
    PRIMARY KEY (bus, name)
);
CREATE INDEX IF NOT EXISTS events_rules_by_due ON events_rules(next_due) WHERE next_due IS NOT NULL;
"""
_COLUMNS = "bus, name, created, doc, targets, tags, next_due"


def _rule_of(row: tuple[Any, ...]) -> Rule:
    bus, name, created, doc, targets, tags, next_due = row
    return Rule(bus, name, created, json.loads(doc), tuple(json.loads(targets)), json.loads(tags), next_due)


class SqliteRuleStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        await self._store.call(lambda db: db.executescript(_SCHEMA) and None)

    async def put(self, rule: Rule, max_rules: int) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                doc = json.dumps(dict(rule.doc))
                cur = db.execute(
                    "UPDATE events_rules SET doc = ?, next_due = ? WHERE bus = ? AND name = ?",
                    (doc, rule.next_due, rule.bus, rule.name),
                )
                if cur.rowcount == 1:
                    return True
                (count,) = db.execute("SELECT count(*) FROM events_rules WHERE bus = ?", (rule.bus,)).fetchone()
                if count >= max_rules:
                    return False
                db.execute(
                    f"INSERT INTO events_rules({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                    (rule.bus, rule.name, rule.created, doc, json.dumps(list(rule.targets)),
                     json.dumps(dict(rule.tags)), rule.next_due),
                )  # fmt: skip
                return True

        return await self._store.call(q)

    async def get(self, bus: str, name: str) -> Rule | None:
        def q(db: sqlite3.Connection) -> Rule | None:
            row = db.execute(f"SELECT {_COLUMNS} FROM events_rules WHERE bus = ? AND name = ?", (bus, name)).fetchone()
            return None if row is None else _rule_of(row)

        return await self._store.call(q)

    async def delete(self, bus: str, name: str, force: bool) -> bool | None:
        def q(db: sqlite3.Connection) -> bool | None:
            with transaction(db):
                row = db.execute("SELECT targets FROM events_rules WHERE bus = ? AND name = ?", (bus, name)).fetchone()
                if row is None:
                    return None
                if json.loads(row[0]) and not force:
                    return False
                db.execute("DELETE FROM events_rules WHERE bus = ? AND name = ?", (bus, name))
                return True

        return await self._store.call(q)

    async def _set(self, column: str, value: str, bus: str, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cur = db.execute(f"UPDATE events_rules SET {column} = ? WHERE bus = ? AND name = ?", (value, bus, name))
            return cur.rowcount == 1

        return await self._store.call(q)

    async def set_targets(self, bus: str, name: str, targets: Sequence[Mapping[str, Any]]) -> bool:
        return await self._set("targets", json.dumps([dict(t) for t in targets]), bus, name)

    async def set_tags(self, bus: str, name: str, tags: Mapping[str, str]) -> bool:
        return await self._set("tags", json.dumps(dict(tags)), bus, name)

    async def list_rules(self, bus: str, prefix: str, after: str | None, limit: int) -> list[Rule]:
        def q(db: sqlite3.Connection) -> list[Rule]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM events_rules WHERE bus = ? AND substr(name, 1, ?) = ? AND name > ?"
                " ORDER BY name LIMIT ?",
                (bus, len(prefix), prefix, after or "", limit),
            )
            return [_rule_of(row) for row in rows]

        return await self._store.call(q)

    async def due(self, now: float, limit: int) -> list[Rule]:
        def q(db: sqlite3.Connection) -> list[Rule]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM events_rules WHERE next_due IS NOT NULL AND next_due <= ?"
                " ORDER BY next_due LIMIT ?",
                (now, limit),
            )
            return [_rule_of(row) for row in rows]

        return await self._store.call(q)

    async def earliest(self) -> float | None:
        def q(db: sqlite3.Connection) -> float | None:
            row = db.execute("SELECT min(next_due) FROM events_rules WHERE next_due IS NOT NULL").fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await self._store.call(q)

    async def fire(self, rule: Rule, expected_due: float, events: Sequence[StoredEvent]) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                cur = db.execute(
                    "UPDATE events_rules SET next_due = ? WHERE bus = ? AND name = ? AND next_due = ?",
                    (rule.next_due, rule.bus, rule.name, expected_due),
                )
                if cur.rowcount != 1:
                    return False
                if events:
                    insert_events(db, list(events))
                return True

        return await self._store.call(q)
