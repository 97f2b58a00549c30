"""The embedded metadata store: SQLite in WAL mode, one connection owned by one writer thread.

All statements run on that thread (``sqlite3`` connections are not shared across threads), so callers on the
event loop never block on disk. WAL with ``synchronous=FULL`` keeps every committed write across a crash of
this process (kill -9) and a power loss. A write that fails (a full disk:
``sqlite3.OperationalError``, SQLITE_FULL) changes nothing and leaves the connection ready for the next one.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from selfless.models import Alias, CodeSigningConfig, Function, LayerVersion
from selfless.store.base import StoredEvent

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name  TEXT NOT NULL,
    alias TEXT NOT NULL,
    doc   TEXT NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS provisioned (
    name      TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    doc       TEXT NOT NULL,
    PRIMARY KEY (name, qualifier)
);
CREATE TABLE IF NOT EXISTS layers (
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS layer_names (
    name         TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    resource TEXT PRIMARY KEY,
    doc      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id             TEXT PRIMARY KEY,
    function_name  TEXT NOT NULL,
    qualifier      TEXT,
    payload        BLOB NOT NULL,
    client_context TEXT,
    accepted_at    REAL NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS code_signing_configs (
    id  TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_triggers (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_invoke_configs (
    name      TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    doc       TEXT NOT NULL,
    PRIMARY KEY (name, qualifier)
);
CREATE TABLE IF NOT EXISTS function_url_configs (
    name      TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    doc       TEXT NOT NULL,
    PRIMARY KEY (name, qualifier)
);
"""


_EVENT_COLUMNS = (
    ("next_at", "REAL NOT NULL DEFAULT 0"),
    ("state", "TEXT NOT NULL DEFAULT 'queued'"),
    ("failure", "TEXT"),
    ("last_error", "TEXT"),
    ("lineage", "TEXT"),
    ("target", "TEXT"),
    ("attributes", "TEXT"),
    ("trace_id", "TEXT"),
)
# Every StoredEvent field, in its declaration order (a row of these makes a StoredEvent positionally).
_EVENT_NAMES = tuple(f.name for f in dataclasses.fields(StoredEvent))
_EVENT_FIELDS = ", ".join(_EVENT_NAMES)
_INSERT_EVENTS = f"INSERT INTO events({_EVENT_FIELDS}) VALUES ({', '.join('?' * len(_EVENT_NAMES))})"
_PAYLOAD = _EVENT_NAMES.index("payload")  # a BLOB: made bytes whatever buffer type it is read back as


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # its caller was cancelled meanwhile (what it wrote is committed all the same)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _event_row(e: StoredEvent) -> tuple[Any, ...]:
    return tuple(getattr(e, name) for name in _EVENT_NAMES)


def _event_of(row: tuple[Any, ...]) -> StoredEvent:
    values = list(row)
    values[_PAYLOAD] = bytes(values[_PAYLOAD])
    return StoredEvent(*values)


def insert_events(db: sqlite3.Connection, events: list[StoredEvent]) -> None:
    """Accepted events, inside the caller's transaction."""
    db.executemany(_INSERT_EVENTS, [_event_row(e) for e in events])


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Several statements committed together (BEGIN IMMEDIATE ... COMMIT), or none of them. Inside a
    transaction already open (a group of ``SqliteStore.grouped`` calls sharing one commit), a savepoint: the
    statements still stand or fall together, and are durable when the group's commit returns."""
    if db.in_transaction:
        with _savepoint(db, "nested"):
            yield
        return
    with _transaction(db):
        yield


@contextlib.contextmanager
def _savepoint(db: sqlite3.Connection, name: str) -> Iterator[None]:
    db.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute(f"ROLLBACK TO {name}")
                db.execute(f"RELEASE {name}")
        raise
    db.execute(f"RELEASE {name}")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # The connection is in autocommit mode (isolation_level=None): several statements commit together here.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # A full disk makes SQLite roll back by itself, or leaves a failed COMMIT's transaction open: either
        # way none remains after this, so the next write (once there is space) starts afresh.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


GROUP_MAX = 64  # grouped calls sharing one commit at most (a bound on the group's latency)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        # Grouped calls waiting for the store's thread (appended on the event loop, taken on the thread:
        # deque's append and popleft are atomic), and whether a drain of them is already on its way.
        self._grouped: collections.deque[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._drain_queued = False

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # Every commit is on disk when it returns (an accepted event survives a power cut too); accepted
        # events share commits (add_events), so this costs one fsync per group, not per event.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        # Columns added since the first schema (a data dir from before gets them, with their defaults).
        have = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        for column, decl in _EVENT_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE events ADD COLUMN {column} {decl}")
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the connection on the store's one thread: for another service's tables kept in
        this database, so that its changes and accepted events can commit together (``transaction``)."""
        return await self._run(lambda: fn(self._db()))

    async def grouped(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """As ``call``, for a short write on a hot path: calls that wait for the store's thread together run
        in one transaction, each in a savepoint of its own (its statements stand or fall together, and its
        exception is its own), and share one durable commit (one fsync for the group, not one per call).
        ``fn`` must not commit, roll back or run scripts; ``transaction`` inside it is a savepoint. Every
        call of a group whose commit fails gets that failure (nothing of the group is kept)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._grouped.append((fn, future))
        if not self._drain_queued:
            self._drain_queued = True
            self._executor.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        # Cleared before taking calls: one appended after this line queues another drain (which may find
        # none left), so none is ever stranded.
        self._drain_queued = False
        while self._grouped:
            group: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
            while self._grouped and len(group) < GROUP_MAX:
                group.append(self._grouped.popleft())
            outcomes = self._run_group(group)
            loop.call_soon_threadsafe(_settle_all, outcomes)

    def _run_group(
        self, group: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return [(future, False, exc) for _, future in group]
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        for fn, future in group:
            try:
                with _savepoint(db, "grouped"):
                    outcomes.append((future, True, fn(db)))
            except Exception as exc:
                outcomes.append((future, False, exc))
        try:
            db.execute("COMMIT")
        except Exception as exc:  # a full disk: nothing of the group is kept, and every call hears so
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return [(future, False, exc) for _, future in group]
        return outcomes

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def list_functions(self) -> list[Function]:
        def q() -> list[Function]:
            rows = self._db().execute("SELECT doc FROM functions ORDER BY name").fetchall()
            return [Function.from_doc(json.loads(doc)) for (doc,) in rows]

        return await self._run(q)

    async def put_function(self, function: Function) -> None:
        doc = json.dumps(function.to_doc(), separators=(",", ":"))

        def q() -> None:
            self._db().execute(
                "INSERT INTO functions(name, doc) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET doc=excluded.doc",
                (function.name, doc),
            )

        await self._run(q)

    async def delete_function(self, name: str) -> None:
        """The function, its versions and their provisioned concurrency configurations, in one transaction."""

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("DELETE FROM functions WHERE name = ?", (name,))
                db.execute("DELETE FROM versions WHERE name = ?", (name,))
                db.execute("DELETE FROM aliases WHERE name = ?", (name,))
                db.execute("DELETE FROM provisioned WHERE name = ?", (name,))
                db.execute("DELETE FROM event_invoke_configs WHERE name = ?", (name,))
                db.execute("DELETE FROM function_url_configs WHERE name = ?", (name,))
                # Its policies: "function:<name>" and "function:<name>:<qualifier>" (see selfless.permissions).
                db.execute(
                    "DELETE FROM policies WHERE resource = ? OR substr(resource, 1, ?) = ?",
                    (f"function:{name}", len(name) + 10, f"function:{name}:"),
                )

        await self._run(q)

    async def list_versions(self) -> list[Function]:
        def q() -> list[Function]:
            rows = self._db().execute("SELECT doc FROM versions ORDER BY name, version").fetchall()
            return [Function.from_doc(json.loads(doc)) for (doc,) in rows]

        return await self._run(q)

    async def publish_version(self, latest: Function, version: Function) -> None:
        """The new version and $LATEST's version counter, together."""
        latest_doc = json.dumps(latest.to_doc(), separators=(",", ":"))
        version_doc = json.dumps(version.to_doc(), separators=(",", ":"))

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("UPDATE functions SET doc = ? WHERE name = ?", (latest_doc, latest.name))
                db.execute(
                    "INSERT INTO versions(name, version, doc) VALUES (?, ?, ?)",
                    (version.name, int(version.version), version_doc),
                )

        await self._run(q)

    async def put_version(self, version: Function) -> None:
        doc = json.dumps(version.to_doc(), separators=(",", ":"))

        def q() -> None:
            self._db().execute(
                "UPDATE versions SET doc = ? WHERE name = ? AND version = ?", (doc, version.name, int(version.version))
            )

        await self._run(q)

    async def delete_version(self, name: str, version: str) -> None:
        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, int(version)))
                db.execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, version))
                db.execute("DELETE FROM policies WHERE resource = ?", (f"function:{name}:{version}",))
                db.execute("DELETE FROM event_invoke_configs WHERE name = ? AND qualifier = ?", (name, version))

        await self._run(q)

    async def list_aliases(self) -> list[Alias]:
        def q() -> list[Alias]:
            rows = self._db().execute("SELECT doc FROM aliases ORDER BY name, alias").fetchall()
            return [Alias.from_doc(json.loads(doc)) for (doc,) in rows]

        return await self._run(q)

    async def put_alias(self, alias: Alias) -> None:
        doc = json.dumps(alias.to_doc(), separators=(",", ":"))

        def q() -> None:
            self._db().execute(
                "INSERT INTO aliases(name, alias, doc) VALUES (?, ?, ?)"
                " ON CONFLICT(name, alias) DO UPDATE SET doc=excluded.doc",
                (alias.function_name, alias.name, doc),
            )

        await self._run(q)

    async def delete_alias(self, name: str, alias: str) -> None:
        """The alias with its provisioned concurrency configuration."""

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
                db.execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, alias))
                db.execute("DELETE FROM policies WHERE resource = ?", (f"function:{name}:{alias}",))
                db.execute("DELETE FROM event_invoke_configs WHERE name = ? AND qualifier = ?", (name, alias))
                db.execute("DELETE FROM function_url_configs WHERE name = ? AND qualifier = ?", (name, alias))

        await self._run(q)

    async def list_provisioned(self) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT doc FROM provisioned ORDER BY name, qualifier").fetchall()
            return [json.loads(doc) for (doc,) in rows]

        return await self._run(q)

    async def put_provisioned(self, name: str, qualifier: str, doc: dict[str, Any]) -> None:
        text = json.dumps(doc, separators=(",", ":"))

        def q() -> None:
            self._db().execute(
                "INSERT INTO provisioned(name, qualifier, doc) VALUES (?, ?, ?)"
                " ON CONFLICT(name, qualifier) DO UPDATE SET doc=excluded.doc",
                (name, qualifier, text),
            )

        await self._run(q)

    async def delete_provisioned(self, name: str, qualifier: str) -> None:
        await self._run(
            lambda: (
                self._db().execute("DELETE FROM provisioned WHERE name = ? AND qualifier = ?", (name, qualifier))
                and None
            )
        )

    async def list_layers(self) -> tuple[list[LayerVersion], dict[str, int]]:
        def q() -> tuple[list[LayerVersion], dict[str, int]]:
            db = self._db()
            rows = db.execute("SELECT doc FROM layers ORDER BY name, version").fetchall()
            last = dict(db.execute("SELECT name, last_version FROM layer_names").fetchall())
            return [LayerVersion.from_doc(json.loads(doc)) for (doc,) in rows], last

        return await self._run(q)

    async def put_layer(self, layer: LayerVersion) -> None:
        """The layer version, and its number as the layer's highest ever (numbers are never reused)."""
        doc = json.dumps(layer.to_doc(), separators=(",", ":"))

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("INSERT INTO layers(name, version, doc) VALUES (?, ?, ?)", (layer.name, layer.version, doc))
                db.execute(
                    "INSERT INTO layer_names(name, last_version) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET last_version=excluded.last_version",
                    (layer.name, layer.version),
                )

        await self._run(q)

    async def delete_layer(self, name: str, version: int, policy_resource: str) -> None:
        """The layer version with its policy (stored under ``policy_resource``)."""

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.execute("DELETE FROM layers WHERE name = ? AND version = ?", (name, version))
                db.execute("DELETE FROM policies WHERE resource = ?", (policy_resource,))

        await self._run(q)

    async def list_policies(self) -> dict[str, str]:
        def q() -> dict[str, str]:
            return dict(self._db().execute("SELECT resource, doc FROM policies").fetchall())

        return await self._run(q)

    async def put_policy(self, resource: str, doc: str | None) -> None:
        """A resource's policy document; None removes it."""

        def q() -> None:
            if doc is None:
                self._db().execute("DELETE FROM policies WHERE resource = ?", (resource,))
            else:
                self._db().execute(
                    "INSERT INTO policies(resource, doc) VALUES (?, ?)"
                    " ON CONFLICT(resource) DO UPDATE SET doc=excluded.doc",
                    (resource, doc),
                )

        await self._run(q)

    async def add_events(self, events: list[StoredEvent]) -> None:
        rows = [_event_row(e) for e in events]

        def q() -> None:
            db = self._db()
            with _transaction(db):
                db.executemany(_INSERT_EVENTS, rows)

        await self._run(q)

    async def update_event(self, event: StoredEvent) -> None:
        def q() -> None:
            self._db().execute(
                "UPDATE events SET attempts = ?, next_at = ?, state = ?, failure = ?, last_error = ?, accepted_at = ?"
                " WHERE id = ?",
                (
                    event.attempts,
                    event.next_at,
                    event.state,
                    event.failure,
                    event.last_error,
                    event.accepted_at,
                    event.id,
                ),
            )

        await self._run(q)

    async def settle_event(self, event: StoredEvent, then: list[StoredEvent]) -> None:
        rows = [_event_row(e) for e in then]

        def q() -> None:
            db = self._db()
            with _transaction(db):
                if event.state == "failed":
                    db.execute(
                        "UPDATE events SET attempts = ?, state = ?, failure = ?, last_error = ? WHERE id = ?",
                        (event.attempts, event.state, event.failure, event.last_error, event.id),
                    )
                else:
                    db.execute("DELETE FROM events WHERE id = ?", (event.id,))
                if rows:
                    db.executemany(_INSERT_EVENTS, rows)

        await self._run(q)

    async def delete_event(self, event_id: str) -> None:
        await self._run(lambda: self._db().execute("DELETE FROM events WHERE id = ?", (event_id,)) and None)

    async def list_events(self) -> list[StoredEvent]:
        def q() -> list[StoredEvent]:
            rows = self._db().execute(f"SELECT {_EVENT_FIELDS} FROM events ORDER BY accepted_at").fetchall()
            return [_event_of(r) for r in rows]

        return await self._run(q)

    async def list_event_invoke_configs(self) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT doc FROM event_invoke_configs ORDER BY name, qualifier").fetchall()
            return [json.loads(doc) for (doc,) in rows]

        return await self._run(q)

    async def put_event_invoke_config(self, name: str, qualifier: str, doc: dict[str, Any] | None) -> None:
        text = None if doc is None else json.dumps(doc, separators=(",", ":"))

        def q() -> None:
            db = self._db()
            if text is None:
                db.execute("DELETE FROM event_invoke_configs WHERE name = ? AND qualifier = ?", (name, qualifier))
            else:
                db.execute(
                    "INSERT INTO event_invoke_configs(name, qualifier, doc) VALUES (?, ?, ?)"
                    " ON CONFLICT(name, qualifier) DO UPDATE SET doc=excluded.doc",
                    (name, qualifier, text),
                )

        await self._run(q)

    async def list_code_signing_configs(self) -> list[CodeSigningConfig]:
        def q() -> list[CodeSigningConfig]:
            rows = self._db().execute("SELECT doc FROM code_signing_configs ORDER BY rowid").fetchall()
            return [CodeSigningConfig.from_doc(json.loads(doc)) for (doc,) in rows]

        return await self._run(q)

    async def put_code_signing_config(self, config: CodeSigningConfig) -> None:
        doc = json.dumps(config.to_doc(), separators=(",", ":"))

        def q() -> None:
            self._db().execute(
                "INSERT INTO code_signing_configs(id, doc) VALUES (?, ?)"
                " ON CONFLICT(id) DO UPDATE SET doc=excluded.doc",
                (config.id, doc),
            )

        await self._run(q)

    async def delete_code_signing_config(self, config_id: str) -> None:
        await self._run(
            lambda: self._db().execute("DELETE FROM code_signing_configs WHERE id = ?", (config_id,)) and None
        )

    async def list_function_url_configs(self) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT doc FROM function_url_configs ORDER BY name, qualifier").fetchall()
            return [json.loads(doc) for (doc,) in rows]

        return await self._run(q)

    async def put_function_url_config(self, name: str, qualifier: str, doc: dict[str, Any] | None) -> None:
        text = None if doc is None else json.dumps(doc, separators=(",", ":"))

        def q() -> None:
            db = self._db()
            if text is None:
                db.execute("DELETE FROM function_url_configs WHERE name = ? AND qualifier = ?", (name, qualifier))
            else:
                db.execute(
                    "INSERT INTO function_url_configs(name, qualifier, doc) VALUES (?, ?, ?)"
                    " ON CONFLICT(name, qualifier) DO UPDATE SET doc=excluded.doc",
                    (name, qualifier, text),
                )

        await self._run(q)

    async def list_webhook_triggers(self) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT doc FROM webhook_triggers ORDER BY name").fetchall()
            return [json.loads(doc) for (doc,) in rows]

        return await self._run(q)

    async def put_webhook_trigger(self, name: str, doc: dict[str, Any] | None) -> None:
        def q() -> None:
            if doc is None:
                self._db().execute("DELETE FROM webhook_triggers WHERE name = ?", (name,))
            else:
                self._db().execute(
                    "INSERT INTO webhook_triggers(name, doc) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET doc=excluded.doc",
                    (name, json.dumps(doc, separators=(",", ":"))),
                )

        await self._run(q)

    async def close(self) -> None:
        def q() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(q)
        self._executor.shutdown(wait=True)
