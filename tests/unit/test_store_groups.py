"""Grouped calls on the embedded store (``SqliteStore.grouped``): calls waiting together share one commit, each
stands or falls on its own, and a failed commit fails every call of its group."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from selfless.store.sqlite import SqliteStore, transaction


def run(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "store.db")
        await store.open()
        try:
            await store.call(lambda db: db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)") and None)
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


async def together(store: SqliteStore, *calls: Any) -> list[Any]:
    """``calls`` made grouped while the store's thread is held busy, so that they all wait and form one group;
    their results or exceptions."""
    entered, gate = threading.Event(), threading.Event()
    busy = asyncio.ensure_future(store.call(lambda db: entered.set() or gate.wait(10)))
    for _ in range(2000):
        if entered.is_set():
            break
        await asyncio.sleep(0.005)
    waiting = asyncio.gather(*(store.grouped(c) for c in calls), return_exceptions=True)
    await asyncio.sleep(0.05)  # every call is queued
    gate.set()
    await busy
    return list(await waiting)


def rows(db: sqlite3.Connection) -> list[tuple[str, int]]:
    return [(str(k), int(v)) for k, v in db.execute("SELECT k, v FROM t ORDER BY k")]


def test_a_failing_call_undoes_only_its_own_writes(tmp_path: Path) -> None:
    def insert(key: str, fail: bool = False) -> Any:
        def q(db: sqlite3.Connection) -> str:
            with transaction(db):  # a savepoint inside the group's transaction
                db.execute("INSERT INTO t VALUES (?, 1)", (key,))
                db.execute("INSERT INTO t VALUES (?, 2)", (key + "-second",))
                if fail:
                    raise ValueError(key)
            return key

        return q

    async def scenario(store: SqliteStore) -> None:
        commits = []
        await store.call(lambda db: db.set_trace_callback(lambda s: commits.append(s) if s == "COMMIT" else None))
        results = await together(
            store,
            insert("a"),
            insert("b", fail=True),
            insert("c"),
            lambda db: db.execute("INSERT INTO t VALUES ('a', 9)"),  # a duplicate key
        )
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], ValueError) and isinstance(results[3], sqlite3.IntegrityError)
        assert await store.call(rows) == [("a", 1), ("a-second", 2), ("c", 1), ("c-second", 2)]
        assert len(commits) == 1  # the four calls waited together and shared one commit

    run(tmp_path, scenario)


def test_a_failed_commit_fails_every_call_of_the_group(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore) -> None:
        # A deferred foreign key breaks only at COMMIT: the whole group's commit fails.
        def schema(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            db.execute("CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")

        await store.call(schema)
        results = await together(
            store,
            lambda db: db.execute("INSERT INTO t VALUES ('kept?', 1)") and "ok",
            lambda db: db.execute("INSERT INTO child VALUES (42)") and "ok",
        )
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        assert await store.call(rows) == []
        assert await store.grouped(lambda db: db.execute("INSERT INTO t VALUES ('after', 1)") and "ok") == "ok"
        assert await store.call(rows) == [("after", 1)]

    run(tmp_path, scenario)


def test_groups_are_bounded_and_none_is_stranded(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore) -> None:
        keys = [f"k{i:04d}" for i in range(500)]
        done = await asyncio.gather(
            *(store.grouped(lambda db, k=k: db.execute("INSERT INTO t VALUES (?, 0)", (k,)) and k) for k in keys)
        )
        assert done == keys
        assert [k for k, _ in await store.call(rows)] == keys

    run(tmp_path, scenario)


@pytest.mark.parametrize("grouped", [False, True])
def test_transaction_outside_a_group_still_commits_alone(tmp_path: Path, grouped: bool) -> None:
    def q(db: sqlite3.Connection) -> None:
        with transaction(db):
            db.execute("INSERT INTO t VALUES ('x', 1)")

    async def scenario(store: SqliteStore) -> None:
        await (store.grouped(q) if grouped else store.call(q))
        assert not await store.call(lambda db: db.in_transaction)
        assert await store.call(rows) == [("x", 1)]

    run(tmp_path, scenario)
