"""``QueueStore`` on the server's SQLite database (its one connection and thread, ``synchronous=FULL``): every
method is one transaction, committed before it returns."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from selfless.services.sqs.store import InFlightLimit, Message, MoveTask, Outcome, Queue, Redrive, Sent, Step
from selfless.store.sqlite import SqliteStore, transaction

_MESSAGES_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    -- Messages are addressed by seq (receipt handles carry it): message ids are random UUIDs, and an index on
    -- them cost a random B-tree page per message sent (databases of earlier versions are rebuilt on open).
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    body           TEXT NOT NULL,
    sent           REAL NOT NULL,
    visible_at     REAL NOT NULL,
    doc            TEXT NOT NULL,
    group_id       TEXT,
    dedup_id       TEXT,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    first_received REAL,
    receipt        TEXT
);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sqs_queues (
    name       TEXT PRIMARY KEY,
    created    REAL NOT NULL,
    modified   REAL NOT NULL,
    attributes TEXT NOT NULL,
    tags       TEXT NOT NULL
);
{messages}
DROP INDEX IF EXISTS sqs_messages_by_visibility;
-- A FIFO queue's deduplication ids, kept for their window even after their message is deleted.
CREATE TABLE IF NOT EXISTS sqs_dedup (
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    sent       REAL NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
-- Message move tasks (StartMessageMoveTask), newest last by rowid. A table of its own: databases of earlier
-- versions gain it on open; dead-lettered messages carried their source queue's ARN (doc.source_arn) from the
-- first version, so nothing older needs rewriting.
CREATE TABLE IF NOT EXISTS sqs_move_tasks (
    task_id     TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    destination TEXT,
    rate        INTEGER,
    started     REAL NOT NULL,
    status      TEXT NOT NULL,
    to_move     INTEGER NOT NULL,
    moved       INTEGER NOT NULL,
    failure     TEXT,
    last_seq    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sqs_move_tasks_by_source ON sqs_move_tasks(source);
CREATE INDEX IF NOT EXISTS sqs_move_tasks_by_status ON sqs_move_tasks(status);
""".replace("{messages}", _MESSAGES_TABLE.format(name="sqs_messages"))
# The messages table's indexes, made after any rebuild of the table (``_rebuild_messages``).
_MESSAGE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS sqs_messages_by_queue ON sqs_messages(queue, seq)",
    # Messages received at least once, by when they are visible again: the in-flight ones are a range of it
    # (the in-flight quota, a FIFO queue's blocked groups) without the delayed or never-received ones, and a
    # send does not write to it.
    "CREATE INDEX IF NOT EXISTS sqs_messages_received ON sqs_messages(queue, visible_at) WHERE receive_count > 0",
    # Retention reads the (queue, seq) index (EXPIRE_SQL): an index by age cost every send and delete a write.
    "DROP INDEX IF EXISTS sqs_messages_by_age",
)
_MESSAGE_COLUMNS = (
    "seq, queue, message_id, body, sent, visible_at, doc, group_id, dedup_id, receive_count, first_received, receipt"
)
_TASK_COLUMNS = "task_id, source, destination, rate, started, status, to_move, moved, failure, last_seq"
_NO_QUEUE = "AWS.SimpleQueueService.NonExistentQueue"
_DEFAULT_RETENTION_S = 345_600

_COLUMNS = "seq, message_id, body, sent, visible_at, doc, group_id, dedup_id, receive_count, first_received, receipt"
# A receive's candidates: in sending order straight off the (queue, seq) index, read only as far as needed (by
# the visibility index the planner would sort every visible message of a deep queue first).
RECEIVE_SQL = (
    f"SELECT {_COLUMNS} FROM sqs_messages INDEXED BY sqs_messages_by_queue"
    " WHERE queue = ? AND visible_at <= ? ORDER BY seq"
)
# A move task's candidates: those a receive would see, of the ones in the queue when the task started.
MOVE_SQL = (
    f"SELECT {_COLUMNS} FROM sqs_messages INDEXED BY sqs_messages_by_queue"
    " WHERE queue = ? AND visible_at <= ? AND seq <= ? ORDER BY seq"
)
# In flight: received and not yet visible again (delayed messages are hidden too, but were never received),
# counted no further than the limit (the caller's third parameter), off the index of received messages.
IN_FLIGHT_SQL = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM sqs_messages INDEXED BY sqs_messages_received"
    " WHERE queue = ? AND visible_at > ? AND receive_count > 0 LIMIT ?)"
)
# Retention: the expired messages of a queue (parameters: the queue, the oldest ``sent`` kept), off the (queue,
# seq) index: seq grows with the time a message was sent, so the expired ones are the oldest seqs, up to the
# first one kept, and only those are read. A message sent a moment before one of a lower seq (or before a step
# back of the clock) is left, and dropped when a receive or a move reads it: no expired message is returned.
EXPIRE_SQL = (
    "DELETE FROM sqs_messages WHERE seq IN (SELECT seq FROM sqs_messages INDEXED BY sqs_messages_by_queue"
    " WHERE queue = ?1 AND sent < ?2 AND seq < COALESCE((SELECT seq FROM sqs_messages INDEXED BY"
    " sqs_messages_by_queue WHERE queue = ?1 AND sent >= ?2 ORDER BY seq LIMIT 1), 9223372036854775807))"
)


def _queue_of(row: tuple[Any, ...]) -> Queue:
    name, created, modified, attributes, tags = row
    return Queue(name, created, modified, json.loads(attributes), json.loads(tags))


def _message_of(row: tuple[Any, ...]) -> Message:
    seq, message_id, body, sent, visible_at, doc, group_id, dedup_id, count, first, receipt = row
    extra = json.loads(doc)
    return Message(
        message_id,
        body,
        sent,
        visible_at,
        extra.get("attributes", {}),
        extra.get("system", {}),
        extra.get("md5_body", ""),
        extra.get("md5_attributes"),
        extra.get("md5_system"),
        extra.get("sender", ""),
        group_id,
        dedup_id,
        seq,
        count,
        first,
        receipt,
        extra.get("source_arn"),
    )


def _doc(m: Message) -> str:
    doc: dict[str, Any] = {"md5_body": m.md5_body, "sender": m.sender}
    if m.attributes:
        doc["attributes"] = dict(m.attributes)
    if m.system:
        doc["system"] = dict(m.system)
    if m.md5_attributes is not None:
        doc["md5_attributes"] = m.md5_attributes
    if m.md5_system is not None:
        doc["md5_system"] = m.md5_system
    if m.source_arn is not None:
        doc["source_arn"] = m.source_arn
    return json.dumps(doc, separators=(",", ":"))


def _rebuild_messages(db: sqlite3.Connection) -> None:
    """A messages table of an earlier version (a UNIQUE message id, indexed) rebuilt without that index, in
    the caller's transaction: every message kept with its seq, and the seq counter kept where it was (FIFO
    sequence numbers and move tasks' ``last_seq`` stay valid; no seq is handed out twice)."""
    if not any(row[3] == "u" for row in db.execute("PRAGMA index_list(sqs_messages)")):
        return
    counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sqs_messages'").fetchone()
    db.execute("DROP TABLE IF EXISTS sqs_messages_rebuilt")
    db.execute(_MESSAGES_TABLE.format(name="sqs_messages_rebuilt"))
    db.execute(
        f"INSERT INTO sqs_messages_rebuilt({_MESSAGE_COLUMNS}) SELECT {_MESSAGE_COLUMNS} FROM sqs_messages ORDER BY seq"
    )
    db.execute("DROP TABLE sqs_messages")  # its indexes with it; the caller makes them again
    db.execute("ALTER TABLE sqs_messages_rebuilt RENAME TO sqs_messages")
    if counter is not None:
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'sqs_messages'")
        db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('sqs_messages', ?)", (counter[0],))


def _task_of(row: tuple[Any, ...]) -> MoveTask:
    return MoveTask(*row)


class SqliteQueueStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        def q(db: sqlite3.Connection) -> None:
            db.executescript(_SCHEMA)
            with transaction(db):
                _rebuild_messages(db)
                for statement in _MESSAGE_INDEXES:
                    db.execute(statement)

        await self._store.call(q)

    async def create_queue(self, queue: Queue) -> Queue:
        def q(db: sqlite3.Connection) -> Queue:
            with transaction(db):
                row = db.execute(
                    "SELECT name, created, modified, attributes, tags FROM sqs_queues WHERE name = ?", (queue.name,)
                ).fetchone()
                if row is not None:
                    return _queue_of(row)
                db.execute(
                    "INSERT INTO sqs_queues(name, created, modified, attributes, tags) VALUES (?,?,?,?,?)",
                    (queue.name, queue.created, queue.modified, json.dumps(queue.attributes), json.dumps(queue.tags)),
                )
                return queue

        return await self._store.call(q)

    async def get_queue(self, name: str) -> Queue | None:
        def q(db: sqlite3.Connection) -> Queue | None:
            row = db.execute(
                "SELECT name, created, modified, attributes, tags FROM sqs_queues WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else _queue_of(row)

        return await self._store.call(q)

    async def list_queues(self, prefix: str, after: str | None, limit: int) -> list[Queue]:
        def q(db: sqlite3.Connection) -> list[Queue]:
            rows = db.execute(
                "SELECT name, created, modified, attributes, tags FROM sqs_queues "
                "WHERE substr(name, 1, ?) = ? AND name > ? ORDER BY name LIMIT ?",
                (len(prefix), prefix, after or "", limit),
            )
            return [_queue_of(row) for row in rows]

        return await self._store.call(q)

    async def update_queue(self, queue: Queue) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE sqs_queues SET modified = ?, attributes = ?, tags = ? WHERE name = ?",
                (queue.modified, json.dumps(queue.attributes), json.dumps(queue.tags), queue.name),
            )
            return cursor.rowcount == 1

        return await self._store.call(q)

    async def delete_queue(self, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                db.execute("DELETE FROM sqs_messages WHERE queue = ?", (name,))
                db.execute("DELETE FROM sqs_dedup WHERE queue = ?", (name,))
                db.execute("DELETE FROM sqs_move_tasks WHERE source = ?", (name,))
                return db.execute("DELETE FROM sqs_queues WHERE name = ?", (name,)).rowcount == 1

        return await self._store.call(q)

    async def send(self, queue: str, messages: Sequence[Message], dedup_since: float) -> list[Sent]:
        def q(db: sqlite3.Connection) -> list[Sent]:
            sent: list[Sent] = []
            with transaction(db):
                if any(m.dedup_id is not None for m in messages):
                    db.execute("DELETE FROM sqs_dedup WHERE queue = ? AND sent < ?", (queue, dedup_since))
                for m in messages:
                    if m.dedup_id is not None:
                        row = db.execute(
                            "SELECT message_id, seq FROM sqs_dedup WHERE queue = ? AND dedup_id = ?",
                            (queue, m.dedup_id),
                        ).fetchone()
                        if row is not None:
                            sent.append(Sent(row[0], row[1], True))
                            continue
                    cursor = db.execute(
                        "INSERT INTO sqs_messages(queue, message_id, body, sent, visible_at, doc, group_id, dedup_id)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        (queue, m.message_id, m.body, m.sent, m.visible_at, _doc(m), m.group_id, m.dedup_id),
                    )
                    seq = int(cursor.lastrowid or 0)
                    if m.dedup_id is not None:
                        db.execute(
                            "INSERT INTO sqs_dedup(queue, dedup_id, message_id, seq, sent) VALUES (?,?,?,?,?)",
                            (queue, m.dedup_id, m.message_id, seq, m.sent),
                        )
                    sent.append(Sent(m.message_id, seq, False))
            return sent

        return await self._store.grouped(q)

    async def receive(
        self,
        queue: str,
        now: float,
        limit: int,
        visible_for: float,
        receipts: Sequence[str],
        fifo: bool,
        expire_before: float,
        redrive: Redrive | None = None,
        max_in_flight: int | None = None,
    ) -> list[Message]:
        def q(db: sqlite3.Connection) -> list[Message]:
            taken: list[Message] = []
            with transaction(db):
                db.execute(EXPIRE_SQL, (queue, expire_before))
                if max_in_flight is not None:
                    (count,) = db.execute(IN_FLIGHT_SQL, (queue, now, max_in_flight)).fetchone()
                    if count >= max_in_flight:
                        raise InFlightLimit(queue)
                blocked: set[str] = set()
                if fifo:
                    rows = db.execute(
                        "SELECT DISTINCT group_id FROM sqs_messages "
                        "WHERE queue = ? AND visible_at > ? AND receive_count > 0",
                        (queue, now),
                    )
                    blocked = {row[0] for row in rows}
                candidates = db.execute(RECEIVE_SQL, (queue, now))
                for row in candidates:  # read as far as needed: a deep queue's rows are not all converted
                    if len(taken) >= limit:
                        break
                    m = _message_of(row)
                    if m.sent < expire_before:  # one EXPIRE_SQL left behind a lower seq: dropped, never returned
                        db.execute("DELETE FROM sqs_messages WHERE seq = ?", (m.seq,))
                        continue
                    if fifo and m.group_id in blocked:
                        continue
                    if redrive is not None and m.receive_count >= redrive.max_receives:
                        self._move(db, m, redrive, now)
                        continue
                    receipt = receipts[len(taken)]
                    first = m.first_received if m.first_received is not None else now
                    db.execute(
                        "UPDATE sqs_messages SET visible_at = ?, receive_count = receive_count + 1, "
                        "first_received = ?, receipt = ? WHERE seq = ?",
                        (now + visible_for, first, receipt, m.seq),
                    )
                    taken.append(
                        dataclasses.replace(
                            m,
                            visible_at=now + visible_for,
                            receive_count=m.receive_count + 1,
                            first_received=first,
                            receipt=receipt,
                        )
                    )
            return taken

        return await self._store.grouped(q)

    @staticmethod
    def _move(db: sqlite3.Connection, m: Message, redrive: Redrive, now: float) -> None:
        """To the dead-letter queue, visible at once there (dropped when that queue no longer exists)."""
        if db.execute("SELECT 1 FROM sqs_queues WHERE name = ?", (redrive.target,)).fetchone() is None:
            db.execute("DELETE FROM sqs_messages WHERE seq = ?", (m.seq,))
            return
        moved = dataclasses.replace(m, source_arn=redrive.source_arn)
        # FIFO: the message's id becomes its deduplication id, as SQS does, so that two messages that shared
        # one in their source queue stay two wherever they go next.
        dedup = m.message_id if m.dedup_id is not None else None
        db.execute(
            "UPDATE sqs_messages SET queue = ?, visible_at = ?, receipt = NULL, doc = ?, dedup_id = ? WHERE seq = ?",
            (redrive.target, now, _doc(moved), dedup, m.seq),
        )

    async def delete(self, queue: str, handles: Sequence[tuple[int, str]]) -> list[Outcome]:
        def one(db: sqlite3.Connection, seq: int, receipt: str) -> Outcome:
            row = db.execute("SELECT receipt FROM sqs_messages WHERE seq = ? AND queue = ?", (seq, queue)).fetchone()
            if row is None:
                return Outcome.GONE
            if row[0] != receipt:
                return Outcome.STALE
            db.execute("DELETE FROM sqs_messages WHERE seq = ?", (seq,))
            return Outcome.DONE

        def q(db: sqlite3.Connection) -> list[Outcome]:
            with transaction(db):
                return [one(db, seq, receipt) for seq, receipt in handles]

        return await self._store.grouped(q)

    async def change_visibility(
        self, queue: str, changes: Sequence[tuple[int, str, float]], now: float
    ) -> list[Outcome]:
        def one(db: sqlite3.Connection, seq: int, receipt: str, visible_at: float) -> Outcome:
            row = db.execute(
                "SELECT receipt, visible_at, receive_count FROM sqs_messages WHERE seq = ? AND queue = ?",
                (seq, queue),
            ).fetchone()
            if row is None:
                return Outcome.GONE
            if row[0] != receipt:
                return Outcome.STALE
            if row[1] <= now or row[2] == 0:
                return Outcome.NOT_IN_FLIGHT
            db.execute("UPDATE sqs_messages SET visible_at = ? WHERE seq = ?", (visible_at, seq))
            return Outcome.DONE

        def q(db: sqlite3.Connection) -> list[Outcome]:
            with transaction(db):
                return [one(db, *change) for change in changes]

        return await self._store.grouped(q)

    async def purge(self, queue: str) -> int:
        return await self._store.call(
            lambda db: db.execute("DELETE FROM sqs_messages WHERE queue = ?", (queue,)).rowcount
        )

    async def counts(self, queue: str, now: float) -> tuple[int, int, int]:
        def q(db: sqlite3.Connection) -> tuple[int, int, int]:
            row = db.execute(
                "SELECT "
                "COALESCE(SUM(visible_at <= ?), 0), "
                "COALESCE(SUM(visible_at > ? AND receive_count > 0), 0), "
                "COALESCE(SUM(visible_at > ? AND receive_count = 0), 0) "
                "FROM sqs_messages WHERE queue = ?",
                (now, now, now, queue),
            ).fetchone()
            return int(row[0]), int(row[1]), int(row[2])

        return await self._store.call(q)

    # -- message move tasks ----------------------------------------------------------------------------------

    async def start_move(self, task: MoveTask, keep: int) -> MoveTask | None:
        def q(db: sqlite3.Connection) -> MoveTask | None:
            with transaction(db):
                running = db.execute(
                    "SELECT 1 FROM sqs_move_tasks WHERE source = ? AND status = 'RUNNING'", (task.source,)
                ).fetchone()
                if running is not None:
                    return None
                count, last = db.execute(
                    "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM sqs_messages WHERE queue = ?", (task.source,)
                ).fetchone()
                stored = dataclasses.replace(
                    task, status="RUNNING", to_move=int(count), moved=0, failure=None, last_seq=int(last)
                )
                db.execute(
                    f"INSERT INTO sqs_move_tasks({_TASK_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    dataclasses.astuple(stored),
                )
                db.execute(
                    "DELETE FROM sqs_move_tasks WHERE source = ? AND rowid NOT IN "
                    "(SELECT rowid FROM sqs_move_tasks WHERE source = ? ORDER BY rowid DESC LIMIT ?)",
                    (task.source, task.source, keep),
                )
                return stored

        return await self._store.call(q)

    async def move_task(self, task_id: str) -> MoveTask | None:
        def q(db: sqlite3.Connection) -> MoveTask | None:
            row = db.execute(f"SELECT {_TASK_COLUMNS} FROM sqs_move_tasks WHERE task_id = ?", (task_id,)).fetchone()
            return None if row is None else _task_of(row)

        return await self._store.call(q)

    async def move_tasks(self, source: str, limit: int) -> list[MoveTask]:
        def q(db: sqlite3.Connection) -> list[MoveTask]:
            rows = db.execute(
                f"SELECT {_TASK_COLUMNS} FROM sqs_move_tasks WHERE source = ? ORDER BY rowid DESC LIMIT ?",
                (source, limit),
            )
            return [_task_of(row) for row in rows]

        return await self._store.call(q)

    async def running_moves(self) -> list[MoveTask]:
        def q(db: sqlite3.Connection) -> list[MoveTask]:
            rows = db.execute(f"SELECT {_TASK_COLUMNS} FROM sqs_move_tasks WHERE status = 'RUNNING' ORDER BY rowid")
            return [_task_of(row) for row in rows]

        return await self._store.call(q)

    async def cancel_move(self, task_id: str) -> tuple[MoveTask | None, bool]:
        def q(db: sqlite3.Connection) -> tuple[MoveTask | None, bool]:
            with transaction(db):
                cancelled = db.execute(
                    "UPDATE sqs_move_tasks SET status = 'CANCELLED' WHERE task_id = ? AND status = 'RUNNING'",
                    (task_id,),
                ).rowcount
                row = db.execute(f"SELECT {_TASK_COLUMNS} FROM sqs_move_tasks WHERE task_id = ?", (task_id,)).fetchone()
                return (None if row is None else _task_of(row)), cancelled == 1

        return await self._store.call(q)

    async def move_one(self, task_id: str, now: float, new_id: str, arn_prefix: str) -> tuple[Step, str | None]:
        def q(db: sqlite3.Connection) -> tuple[Step, str | None]:
            with transaction(db):
                row = db.execute(f"SELECT {_TASK_COLUMNS} FROM sqs_move_tasks WHERE task_id = ?", (task_id,)).fetchone()
                if row is None or row[5] != "RUNNING":
                    return Step.STOPPED, None
                task = _task_of(row)

                def finish(status: str, failure: str | None) -> None:
                    db.execute(
                        "UPDATE sqs_move_tasks SET status = ?, failure = ? WHERE task_id = ?",
                        (status, failure, task_id),
                    )

                source = db.execute("SELECT attributes FROM sqs_queues WHERE name = ?", (task.source,)).fetchone()
                if source is None:
                    finish("FAILED", _NO_QUEUE)
                    return Step.FAILED, None
                attributes = json.loads(source[0])
                # Past their retention (kept from their first send): dropped, as a receive would, not moved
                # to live again.
                retention = float(attributes.get("MessageRetentionPeriod") or _DEFAULT_RETENTION_S)
                db.execute(EXPIRE_SQL, (task.source, now - retention))
                blocked: set[str] = set()
                if attributes.get("FifoQueue") == "true":
                    groups = db.execute(
                        "SELECT DISTINCT group_id FROM sqs_messages "
                        "WHERE queue = ? AND visible_at > ? AND receive_count > 0",
                        (task.source, now),
                    )
                    blocked = {g[0] for g in groups}
                found: Message | None = None
                for candidate in db.execute(MOVE_SQL, (task.source, now, task.last_seq)):  # as far as needed
                    m = _message_of(candidate)
                    if m.sent < now - retention:  # as in a receive: dropped, never moved
                        db.execute("DELETE FROM sqs_messages WHERE seq = ?", (m.seq,))
                        continue
                    if m.group_id is None or m.group_id not in blocked:
                        found = m
                        break
                if found is None:
                    finish("COMPLETED", None)
                    return Step.DONE, None
                target = task.destination
                if target is None and found.source_arn is not None and found.source_arn.startswith(arn_prefix):
                    target = found.source_arn[len(arn_prefix) :]
                if (
                    target is None
                    or db.execute("SELECT 1 FROM sqs_queues WHERE name = ?", (target,)).fetchone() is None
                ):
                    finish("FAILED", _NO_QUEUE)
                    return Step.FAILED, None
                moved = dataclasses.replace(found, message_id=new_id, source_arn=None)
                db.execute(
                    "INSERT INTO sqs_messages(queue, message_id, body, sent, visible_at, doc, group_id, dedup_id)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (target, new_id, found.body, now, now, _doc(moved), found.group_id, found.dedup_id),
                )
                db.execute("DELETE FROM sqs_messages WHERE seq = ?", (found.seq,))
                db.execute("UPDATE sqs_move_tasks SET moved = moved + 1 WHERE task_id = ?", (task_id,))
                return Step.MOVED, target

        return await self._store.call(q)
