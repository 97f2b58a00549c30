"""``TopicStore`` on the server's SQLite database (its one connection and thread, ``synchronous=FULL``): every
method is one transaction, committed before it returns; a publish's Lambda events commit with its message."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from selfless.services.sns.store import Delivery, Message, Outgoing, Published, Subscription, Topic
from selfless.store.sqlite import SqliteStore, insert_events, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sns_topics (
    arn        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created    REAL NOT NULL,
    attributes TEXT NOT NULL,
    tags       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sns_subscriptions (
    arn        TEXT PRIMARY KEY,
    topic_arn  TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created    REAL NOT NULL,
    attributes TEXT NOT NULL,
    pending    INTEGER NOT NULL,
    token      TEXT
);
CREATE INDEX IF NOT EXISTS sns_subscriptions_by_topic ON sns_subscriptions(topic_arn, arn);
CREATE TABLE IF NOT EXISTS sns_messages (
    message_id TEXT PRIMARY KEY,
    topic_arn  TEXT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sns_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    subscription_arn TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    accepted_at      REAL NOT NULL,
    attempts         INTEGER NOT NULL,
    next_at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sns_deliveries_by_subscription ON sns_deliveries(subscription_arn);
CREATE INDEX IF NOT EXISTS sns_deliveries_by_message ON sns_deliveries(message_id);
-- A FIFO topic's deduplication ids, kept for their window.
CREATE TABLE IF NOT EXISTS sns_dedup (
    topic_arn  TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    sent       REAL NOT NULL,
    PRIMARY KEY (topic_arn, dedup_id)
);
-- Each topic's sequence (a FIFO topic's SequenceNumber).
CREATE TABLE IF NOT EXISTS sns_sequences (
    topic_arn TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL
);
"""
_TOPIC = "arn, name, created, attributes, tags"
_SUBSCRIPTION = "arn, topic_arn, protocol, endpoint, owner, created, attributes, pending, token"
_DELIVERY = "id, subscription_arn, message_id, kind, accepted_at, attempts, next_at, seq"


def _topic_of(row: tuple[Any, ...]) -> Topic:
    arn, name, created, attributes, tags = row
    return Topic(arn, name, created, json.loads(attributes), json.loads(tags))


def _subscription_of(row: tuple[Any, ...]) -> Subscription:
    arn, topic_arn, protocol, endpoint, owner, created, attributes, pending, token = row
    return Subscription(
        arn, topic_arn, protocol, endpoint, owner, created, json.loads(attributes), bool(pending), token
    )


def _subscription_row(s: Subscription) -> tuple[Any, ...]:
    return (s.arn, s.topic_arn, s.protocol, s.endpoint, s.owner, s.created, json.dumps(dict(s.attributes)),
            int(s.pending), s.token)  # fmt: skip


def _delivery_of(row: tuple[Any, ...]) -> Delivery:
    return Delivery(*row)


def _insert_deliveries(db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    db.executemany(
        "INSERT INTO sns_deliveries(id, subscription_arn, message_id, kind, accepted_at, attempts, next_at)"
        " VALUES (?,?,?,?,?,?,?)",
        [(d.id, d.subscription_arn, d.message_id, d.kind, d.accepted_at, d.attempts, d.next_at) for d in deliveries],
    )


class SqliteTopicStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        await self._store.call(lambda db: db.executescript(_SCHEMA) and None)

    async def create_topic(self, topic: Topic, limit: int) -> Topic | None:
        def q(db: sqlite3.Connection) -> Topic | None:
            with transaction(db):
                row = db.execute(f"SELECT {_TOPIC} FROM sns_topics WHERE arn = ?", (topic.arn,)).fetchone()
                if row is not None:
                    return _topic_of(row)
                if db.execute("SELECT COUNT(*) FROM sns_topics").fetchone()[0] >= limit:
                    return None
                db.execute(
                    f"INSERT INTO sns_topics({_TOPIC}) VALUES (?,?,?,?,?)",
                    (topic.arn, topic.name, topic.created, json.dumps(dict(topic.attributes)),
                     json.dumps(dict(topic.tags))),
                )  # fmt: skip
                return topic

        return await self._store.call(q)

    async def get_topic(self, arn: str) -> Topic | None:
        def q(db: sqlite3.Connection) -> Topic | None:
            row = db.execute(f"SELECT {_TOPIC} FROM sns_topics WHERE arn = ?", (arn,)).fetchone()
            return None if row is None else _topic_of(row)

        return await self._store.call(q)

    async def list_topics(self, after: str | None, limit: int) -> list[Topic]:
        def q(db: sqlite3.Connection) -> list[Topic]:
            rows = db.execute(
                f"SELECT {_TOPIC} FROM sns_topics WHERE arn > ? ORDER BY arn LIMIT ?", (after or "", limit)
            )
            return [_topic_of(row) for row in rows]

        return await self._store.call(q)

    async def update_topic(self, topic: Topic) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE sns_topics SET attributes = ?, tags = ? WHERE arn = ?",
                (json.dumps(dict(topic.attributes)), json.dumps(dict(topic.tags)), topic.arn),
            )
            return cursor.rowcount == 1

        return await self._store.call(q)

    async def delete_topic(self, arn: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                db.execute(
                    "DELETE FROM sns_deliveries WHERE subscription_arn IN "
                    "(SELECT arn FROM sns_subscriptions WHERE topic_arn = ?)",
                    (arn,),
                )
                db.execute("DELETE FROM sns_subscriptions WHERE topic_arn = ?", (arn,))
                db.execute("DELETE FROM sns_messages WHERE topic_arn = ?", (arn,))
                db.execute("DELETE FROM sns_dedup WHERE topic_arn = ?", (arn,))
                db.execute("DELETE FROM sns_sequences WHERE topic_arn = ?", (arn,))
                return db.execute("DELETE FROM sns_topics WHERE arn = ?", (arn,)).rowcount == 1

        return await self._store.call(q)

    async def add_subscription(
        self, subscription: Subscription, deliveries: Sequence[Delivery], limit: int
    ) -> tuple[Subscription, bool] | None:
        def q(db: sqlite3.Connection) -> tuple[Subscription, bool] | None:
            with transaction(db):
                if db.execute("SELECT 1 FROM sns_topics WHERE arn = ?", (subscription.topic_arn,)).fetchone() is None:
                    return None
                row = db.execute(
                    f"SELECT {_SUBSCRIPTION} FROM sns_subscriptions WHERE topic_arn = ? AND protocol = ? "
                    "AND endpoint = ?",
                    (subscription.topic_arn, subscription.protocol, subscription.endpoint),
                ).fetchone()
                if row is not None:
                    return _subscription_of(row), False
                count = db.execute(
                    "SELECT COUNT(*) FROM sns_subscriptions WHERE topic_arn = ?", (subscription.topic_arn,)
                ).fetchone()[0]
                if count >= limit:
                    return None
                db.execute(
                    f"INSERT INTO sns_subscriptions({_SUBSCRIPTION}) VALUES (?,?,?,?,?,?,?,?,?)",
                    _subscription_row(subscription),
                )
                _insert_deliveries(db, deliveries)
                return subscription, True

        return await self._store.call(q)

    async def get_subscription(self, arn: str) -> Subscription | None:
        def q(db: sqlite3.Connection) -> Subscription | None:
            row = db.execute(f"SELECT {_SUBSCRIPTION} FROM sns_subscriptions WHERE arn = ?", (arn,)).fetchone()
            return None if row is None else _subscription_of(row)

        return await self._store.call(q)

    async def list_subscriptions(self, topic_arn: str | None, after: str | None, limit: int) -> list[Subscription]:
        def q(db: sqlite3.Connection) -> list[Subscription]:
            if topic_arn is None:
                rows = db.execute(
                    f"SELECT {_SUBSCRIPTION} FROM sns_subscriptions WHERE arn > ? ORDER BY arn LIMIT ?",
                    (after or "", limit),
                )
            else:
                rows = db.execute(
                    f"SELECT {_SUBSCRIPTION} FROM sns_subscriptions WHERE topic_arn = ? AND arn > ? "
                    "ORDER BY arn LIMIT ?",
                    (topic_arn, after or "", limit),
                )
            return [_subscription_of(row) for row in rows]

        return await self._store.call(q)

    async def topic_subscriptions(self, topic_arn: str) -> list[Subscription]:
        def q(db: sqlite3.Connection) -> list[Subscription]:
            rows = db.execute(
                f"SELECT {_SUBSCRIPTION} FROM sns_subscriptions WHERE topic_arn = ? ORDER BY arn", (topic_arn,)
            )
            return [_subscription_of(row) for row in rows]

        return await self._store.call(q)

    async def update_subscription(self, subscription: Subscription) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE sns_subscriptions SET attributes = ?, pending = ?, token = ? WHERE arn = ?",
                (json.dumps(dict(subscription.attributes)), int(subscription.pending), subscription.token,
                 subscription.arn),
            )  # fmt: skip
            return cursor.rowcount == 1

        return await self._store.call(q)

    async def delete_subscription(self, arn: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                messages = {
                    row[0]
                    for row in db.execute(
                        "SELECT message_id FROM sns_deliveries WHERE subscription_arn = ?", (arn,)
                    ).fetchall()
                }
                db.execute("DELETE FROM sns_deliveries WHERE subscription_arn = ?", (arn,))
                for message_id in messages:  # the messages no other subscription's delivery needs
                    if (
                        db.execute(
                            "SELECT 1 FROM sns_deliveries WHERE message_id = ? LIMIT 1", (message_id,)
                        ).fetchone()
                        is None
                    ):
                        db.execute("DELETE FROM sns_messages WHERE message_id = ?", (message_id,))
                return db.execute("DELETE FROM sns_subscriptions WHERE arn = ?", (arn,)).rowcount == 1

        return await self._store.call(q)

    async def publish(self, topic_arn: str, outgoing: Sequence[Outgoing], dedup_since: float) -> list[Published]:
        def q(db: sqlite3.Connection) -> list[Published]:
            out: list[Published] = []
            with transaction(db):
                if db.execute("SELECT 1 FROM sns_topics WHERE arn = ?", (topic_arn,)).fetchone() is None:
                    return []
                if any(o.dedup_id is not None for o in outgoing):
                    db.execute("DELETE FROM sns_dedup WHERE topic_arn = ? AND sent < ?", (topic_arn, dedup_since))
                row = db.execute("SELECT seq FROM sns_sequences WHERE topic_arn = ?", (topic_arn,)).fetchone()
                seq = row[0] if row else 0
                for o in outgoing:
                    m = o.message
                    if o.dedup_id is not None:
                        found = db.execute(
                            "SELECT message_id, seq FROM sns_dedup WHERE topic_arn = ? AND dedup_id = ?",
                            (topic_arn, o.dedup_id),
                        ).fetchone()
                        if found is not None:
                            out.append(Published(found[0], found[1], True))
                            continue
                    seq += 1
                    if o.dedup_id is not None:
                        db.execute(
                            "INSERT INTO sns_dedup(topic_arn, dedup_id, message_id, seq, sent) VALUES (?,?,?,?,?)",
                            (topic_arn, o.dedup_id, m.message_id, seq, float(m.doc.get("sent", 0.0))),
                        )
                    if o.deliveries:
                        doc = {**m.doc, "seq": seq}
                        db.execute(
                            "INSERT INTO sns_messages(message_id, topic_arn, doc) VALUES (?,?,?)",
                            (m.message_id, topic_arn, json.dumps(doc, separators=(",", ":"))),
                        )
                        _insert_deliveries(db, o.deliveries)
                    if o.events:
                        insert_events(db, list(o.events))
                    out.append(Published(m.message_id, seq, False))
                db.execute(
                    "INSERT INTO sns_sequences(topic_arn, seq) VALUES (?, ?) "
                    "ON CONFLICT(topic_arn) DO UPDATE SET seq = excluded.seq",
                    (topic_arn, seq),
                )
            return out

        return await self._store.call(q)

    async def pending(self) -> list[Delivery]:
        def q(db: sqlite3.Connection) -> list[Delivery]:
            return [_delivery_of(r) for r in db.execute(f"SELECT {_DELIVERY} FROM sns_deliveries ORDER BY seq")]

        return await self._store.call(q)

    async def message(self, message_id: str) -> Message | None:
        def q(db: sqlite3.Connection) -> Message | None:
            row = db.execute(
                "SELECT message_id, topic_arn, doc FROM sns_messages WHERE message_id = ?", (message_id,)
            ).fetchone()
            return None if row is None else Message(row[0], row[1], json.loads(row[2]))

        return await self._store.call(q)

    async def retry(self, delivery: Delivery) -> None:
        await self._store.call(
            lambda db: (
                db.execute(
                    "UPDATE sns_deliveries SET attempts = ?, next_at = ? WHERE id = ?",
                    (delivery.attempts, delivery.next_at, delivery.id),
                )
                and None
            )
        )

    async def done(self, delivery: Delivery) -> None:
        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("DELETE FROM sns_deliveries WHERE id = ?", (delivery.id,))
                if (
                    delivery.message_id
                    and db.execute(
                        "SELECT 1 FROM sns_deliveries WHERE message_id = ? LIMIT 1", (delivery.message_id,)
                    ).fetchone()
                    is None
                ):
                    db.execute("DELETE FROM sns_messages WHERE message_id = ?", (delivery.message_id,))

        await self._store.call(q)

    async def count_pending(self) -> int:
        return int(await self._store.call(lambda db: db.execute("SELECT COUNT(*) FROM sns_deliveries").fetchone()[0]))
