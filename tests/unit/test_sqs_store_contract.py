"""The contract every QueueStore implementation must keep (SQLite today; PostgreSQL for the cluster mode must
pass the same): queues by name, messages in order, a receive that hides what it returns in the same commit,
FIFO groups blocked by a message in flight, deduplication within its window, redrive to a dead-letter queue,
receipt tokens that must be the latest, durability across a reopen, and message move tasks (one running per
queue, each message moved in one commit, cancel exact, the history bounded)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from selfless.services.sqs import sqlite as queue_sqlite
from selfless.services.sqs.sqlite import SqliteQueueStore
from selfless.services.sqs.store import InFlightLimit, Message, MoveTask, Outcome, Queue, QueueStore, Redrive, Step
from selfless.store.sqlite import SqliteStore


async def _sqlite(tmp: Path) -> tuple[QueueStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteQueueStore(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[QueueStore, SqliteStore]]]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[tuple[QueueStore, SqliteStore]]]:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def msg(n: int, sent: float = 100.0, group: str | None = None, dedup: str | None = None, delay: float = 0) -> Message:
    return Message(f"id{n}", f"body{n}", sent, sent + delay, group_id=group, dedup_id=dedup, md5_body="x")


def queue(name: str = "q", **attributes: str) -> Queue:
    return Queue(name, 1.0, 1.0, {"VisibilityTimeout": "30", **attributes})


def tokens(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_queues(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        q = queue()
        assert await store.create_queue(q) is q
        again = await store.create_queue(queue(VisibilityTimeout="5"))
        assert again.attributes["VisibilityTimeout"] == "30"  # the first one stays
        await store.create_queue(queue("q2"))
        await store.create_queue(queue("other"))
        assert [x.name for x in await store.list_queues("q", None, 10)] == ["q", "q2"]
        assert [x.name for x in await store.list_queues("", "other", 1)] == ["q"]
        assert await store.update_queue(Queue("q", 1.0, 2.0, {"VisibilityTimeout": "9"}, {"t": "v"}))
        got = await store.get_queue("q")
        assert got is not None and got.attributes["VisibilityTimeout"] == "9" and got.tags == {"t": "v"}
        await store.send("q", [msg(1)], 0)
        assert await store.delete_queue("q") and not await store.delete_queue("q")
        assert await store.get_queue("q") is None
        assert not await store.update_queue(queue())
        await base.close()

    run(scenario)


def test_receive_hides_in_order_and_counts(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        sent = await store.send("q", [msg(1), msg(2), msg(3, delay=50)], 0)
        assert [s.seq for s in sent] == sorted(s.seq for s in sent) and not any(s.duplicate for s in sent)
        assert await store.counts("q", 100) == (2, 0, 1)
        got = await store.receive("q", 100, 10, 30, tokens(10), False, 0)
        assert [m.message_id for m in got] == ["id1", "id2"]
        assert all(m.receive_count == 1 and m.first_received == 100 and m.visible_at == 130 for m in got)
        assert await store.counts("q", 100) == (0, 2, 1)
        assert await store.receive("q", 100, 10, 30, tokens(10), False, 0) == []
        again = await store.receive("q", 131, 1, 30, ["u0"], False, 0)
        assert [(m.message_id, m.receive_count, m.first_received) for m in again] == [("id1", 2, 100)]
        await base.close()

    run(scenario)


def test_receipts_must_be_the_latest(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        (sent,) = await store.send("q", [msg(1)], 0)
        (got,) = await store.receive("q", 100, 1, 10, ["old"], False, 0)
        assert got.seq == sent.seq  # messages are addressed by their seq
        await store.receive("q", 111, 1, 10, ["new"], False, 0)
        one = sent.seq
        assert await store.change_visibility("q", [(one, "old", 200)], 112) == [Outcome.STALE]
        assert await store.delete("q", [(one, "old")]) == [Outcome.STALE]
        assert await store.delete("other", [(one, "new")]) == [Outcome.GONE]  # another queue's seq
        assert await store.change_visibility("q", [(one, "new", 112)], 112) == [Outcome.DONE]
        assert await store.change_visibility("q", [(one, "new", 150)], 113) == [Outcome.NOT_IN_FLIGHT]
        assert await store.delete("q", [(one, "new")]) == [Outcome.DONE]
        assert await store.delete("q", [(one, "new")]) == [Outcome.GONE]
        await base.close()

    run(scenario)


def test_batches_answer_each_handle(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        s1, s2, s3 = (s.seq for s in await store.send("q", [msg(1), msg(2), msg(3)], 0))
        await store.receive("q", 100, 3, 30, ["a", "b", "c"], False, 0)
        changes = [(s1, "a", 100.0), (s2, "wrong", 100.0), (s3 + 1000, "x", 100.0), (s3, "c", 200.0)]
        assert await store.change_visibility("q", changes, 101) == [
            Outcome.DONE,
            Outcome.STALE,
            Outcome.GONE,
            Outcome.DONE,
        ]
        assert await store.counts("q", 101) == (1, 2, 0)
        handles = [(s2, "b"), (s3, "stale"), (s3, "c"), (s3, "c")]
        assert await store.delete("q", handles) == [Outcome.DONE, Outcome.STALE, Outcome.DONE, Outcome.GONE]
        assert await store.counts("q", 101) == (1, 0, 0)
        await base.close()

    run(scenario)


def test_the_in_flight_limit_refuses_a_receive_and_takes_nothing(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        await store.send("q", [msg(1), msg(2), msg(3), msg(4, delay=500)], 0)
        assert len(await store.receive("q", 100, 2, 30, tokens(2), False, 0, None, 2)) == 2
        with pytest.raises(InFlightLimit):
            await store.receive("q", 100, 1, 30, tokens(1), False, 0, None, 2)
        assert await store.counts("q", 100) == (1, 2, 1)  # nothing taken; a delayed message is not in flight
        assert len(await store.receive("q", 100, 1, 30, tokens(1), False, 0, None, 3)) == 1
        assert len(await store.receive("q", 131, 10, 30, tokens(10), False, 0, None, 3)) == 3  # visible again
        await base.close()

    run(scenario)


def test_fifo_groups_and_deduplication(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue("f.fifo", FifoQueue="true"))
        batch = [msg(1, group="a", dedup="d1"), msg(2, group="a", dedup="d2"), msg(3, group="b", dedup="d3")]
        sent = await store.send("f.fifo", batch, 0)
        dup = await store.send("f.fifo", [msg(4, group="a", dedup="d1")], 0)
        assert dup[0].duplicate and dup[0].message_id == "id1" and dup[0].seq == sent[0].seq
        first = await store.receive("f.fifo", 100, 1, 30, ["t"], True, 0)
        assert [m.message_id for m in first] == ["id1"]
        rest = await store.receive("f.fifo", 100, 10, 30, tokens(10), True, 0)
        assert [m.message_id for m in rest] == ["id3"]  # group a is blocked by id1 in flight
        assert await store.delete("f.fifo", [(first[0].seq, "t")]) == [Outcome.DONE]
        assert [m.message_id for m in await store.receive("f.fifo", 100, 10, 30, tokens(10), True, 0)] == ["id2"]
        # The window: an id remembered past its message's deletion, forgotten once older than dedup_since.
        assert (await store.send("f.fifo", [msg(5, group="a", dedup="d1")], 0))[0].duplicate
        assert not (await store.send("f.fifo", [msg(6, sent=500, group="a", dedup="d1")], 400))[0].duplicate
        await base.close()

    run(scenario)


def test_redrive_and_retention(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        await store.create_queue(queue("dlq"))
        await store.send("q", [msg(0, sent=20), msg(1), msg(2, sent=10)], 0)
        redrive = Redrive(1, "dlq", "arn:q")
        got = await store.receive("q", 100, 10, 0, tokens(10), False, 50, redrive)
        assert [m.message_id for m in got] == ["id1"]  # id0 and id2 (behind id1 in seq) were past their retention
        assert await store.counts("q", 100) == (1, 0, 0)
        assert await store.receive("q", 101, 10, 0, tokens(10), False, 50, redrive) == []
        moved = await store.receive("dlq", 101, 10, 30, tokens(10), False, 0)
        assert [(m.message_id, m.source_arn) for m in moved] == [("id1", "arn:q")]
        assert await store.purge("dlq") == 1 and await store.counts("dlq", 200) == (0, 0, 0)
        await base.close()

    run(scenario)


def test_a_receive_survives_a_reopen(make: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        await store.send("q", [msg(1), msg(2)], 0)
        await store.receive("q", 100, 1, 30, ["t"], False, 0)
        await base.close()
        store, base = await make()
        assert await store.counts("q", 100) == (1, 1, 0)
        assert [m.message_id for m in await store.receive("q", 100, 10, 30, tokens(10), False, 0)] == ["id2"]
        await base.close()

    run(scenario)


def test_concurrent_receives_never_share_a_message(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue())
        await store.send("q", [msg(i) for i in range(50)], 0)
        results = await asyncio.gather(
            *(store.receive("q", 100, 3, 30, tokens(3, f"r{i}-"), False, 0) for i in range(20))
        )
        ids = [m.message_id for got in results for m in got]
        assert len(ids) == len(set(ids)) == 50
        await base.close()

    run(scenario)


PREFIX = "arn:aws:sqs:r:1:"


def task(task_id: str = "t1", source: str = "dlq", destination: str | None = None) -> MoveTask:
    return MoveTask(task_id, source, destination, None, 100.0)


async def dead_lettered(store: QueueStore, *sources: str) -> None:
    """A dead-letter queue "dlq" holding one message from each of ``sources`` (in that order)."""
    await store.create_queue(queue("dlq"))
    for n, name in enumerate(sources):
        await store.create_queue(queue(name))
        await store.send(name, [msg(n)], 0)
        redrive = Redrive(1, "dlq", PREFIX + name)
        await store.receive(name, 100, 1, 0, ["t"], False, 0, redrive)  # received once...
        assert await store.receive(name, 100, 1, 0, ["t"], False, 0, redrive) == []  # ...then dead-lettered


def test_a_move_task_takes_each_message_back_to_its_source_in_order(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await dead_lettered(store, "a", "b")
        started = await store.start_move(task(), 10)
        assert started is not None and (started.status, started.to_move, started.moved) == ("RUNNING", 2, 0)
        assert await store.start_move(task("t2"), 10) is None  # one running task per source queue
        await store.send("dlq", [msg(9)], 0)  # after the start: not the task's to move
        assert await store.move_one("t1", 200, "new-a", PREFIX) == (Step.MOVED, "a")
        assert await store.move_one("t1", 201, "new-b", PREFIX) == (Step.MOVED, "b")
        assert await store.move_one("t1", 202, "x", PREFIX) == (Step.DONE, None)
        assert await store.move_one("t1", 203, "x", PREFIX) == (Step.STOPPED, None)
        (back,) = await store.receive("a", 300, 10, 30, tokens(10), False, 0)
        assert (back.message_id, back.body, back.sent, back.receive_count, back.source_arn) == (
            "new-a",
            "body0",
            200,
            1,
            None,
        )
        done = await store.move_task("t1")
        assert done is not None and (done.status, done.moved, done.to_move) == ("COMPLETED", 2, 2)
        assert [m.message_id for m in await store.receive("dlq", 300, 10, 30, tokens(10), False, 0)] == ["id9"]
        assert await store.running_moves() == []
        await base.close()

    run(scenario)


def test_a_move_task_to_a_destination_skips_messages_in_flight(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await dead_lettered(store, "a", "b")
        await store.create_queue(queue("dest"))
        await store.receive("dlq", 150, 1, 100, ["seen"], False, 0)  # the first one in flight until 250
        assert await store.start_move(task(destination="dest"), 10) is not None
        assert await store.move_one("t1", 200, "m1", PREFIX) == (Step.MOVED, "dest")
        assert await store.move_one("t1", 200, "m2", PREFIX) == (Step.DONE, None)
        assert await store.counts("dest", 200) == (1, 0, 0) and await store.counts("dlq", 200) == (0, 1, 0)
        await base.close()

    run(scenario)


def test_a_move_task_fails_when_its_destination_is_gone_and_keeps_the_message(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await dead_lettered(store, "a")
        await store.delete_queue("a")
        assert await store.start_move(task(), 10) is not None
        assert await store.move_one("t1", 200, "x", PREFIX) == (Step.FAILED, None)
        failed = await store.move_task("t1")
        assert failed is not None and (failed.status, failed.failure, failed.moved) == (
            "FAILED",
            "AWS.SimpleQueueService.NonExistentQueue",
            0,
        )
        assert await store.counts("dlq", 200) == (1, 0, 0)
        await base.close()

    run(scenario)


def test_a_move_task_drops_expired_messages_instead_of_moving_them(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue("dlq", MessageRetentionPeriod="60"))
        await store.create_queue(queue("dest"))
        await store.send("dlq", [msg(1, sent=100), msg(2, sent=150)], 0)
        assert await store.start_move(task(destination="dest"), 10) is not None
        assert await store.move_one("t1", 200, "n2", PREFIX) == (Step.MOVED, "dest")  # id1 expired at 160
        assert await store.move_one("t1", 200, "x", PREFIX) == (Step.DONE, None)
        assert [m.body for m in await store.receive("dest", 200, 10, 30, tokens(10), False, 0)] == ["body2"]
        assert await store.counts("dlq", 200) == (0, 0, 0)
        await base.close()

    run(scenario)


def test_an_expired_message_behind_a_kept_one_is_neither_received_nor_moved(make: Any) -> None:
    """id3 was sent before id2 but stored after it: retention stops at id2 (kept), yet a receive or a move that
    reads id3 drops it."""

    async def scenario() -> None:
        store, base = await make()
        await store.create_queue(queue("dlq", MessageRetentionPeriod="60"))
        await store.create_queue(queue("dest"))
        await store.send("dlq", [msg(1, sent=100), msg(2, sent=150, delay=100), msg(3, sent=110)], 0)
        assert await store.start_move(task(destination="dest"), 10) is not None
        assert await store.move_one("t1", 200, "x", PREFIX) == (Step.DONE, None)  # id2 is delayed, id3 expired
        assert await store.counts("dlq", 200) == (0, 0, 1) and await store.counts("dest", 200) == (0, 0, 0)
        await store.create_queue(queue())
        await store.send("q", [msg(4, sent=150, delay=100), msg(5, sent=110)], 0)
        assert await store.receive("q", 200, 10, 30, tokens(10), False, 140) == []
        assert await store.counts("q", 200) == (0, 0, 1)
        await base.close()

    run(scenario)


def test_cancel_is_exact_and_the_history_is_bounded(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await dead_lettered(store, "a", "b")
        assert await store.start_move(task(), 10) is not None
        assert (await store.move_one("t1", 200, "n1", PREFIX))[0] is Step.MOVED
        cancelled, changed = await store.cancel_move("t1")
        assert changed and cancelled is not None and (cancelled.status, cancelled.moved) == ("CANCELLED", 1)
        assert (await store.cancel_move("t1"))[1] is False
        assert await store.cancel_move("nope") == (None, False)
        assert await store.move_one("t1", 201, "n2", PREFIX) == (Step.STOPPED, None)
        assert await store.counts("dlq", 201) == (1, 0, 0)
        for n in range(2, 6):
            assert await store.start_move(task(f"t{n}"), 3) is not None
            await store.cancel_move(f"t{n}")
        assert [t.task_id for t in await store.move_tasks("dlq", 10)] == ["t5", "t4", "t3"]  # newest first
        assert [t.task_id for t in await store.move_tasks("dlq", 2)] == ["t5", "t4"]
        await store.delete_queue("dlq")
        assert await store.move_tasks("dlq", 10) == []
        await base.close()

    run(scenario)


def test_a_running_task_survives_a_reopen(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await dead_lettered(store, "a", "b")
        assert await store.start_move(task(), 10) is not None
        assert (await store.move_one("t1", 200, "n1", PREFIX))[0] is Step.MOVED
        await base.close()
        store, base = await make()
        (running,) = await store.running_moves()
        assert (running.task_id, running.moved, running.to_move) == ("t1", 1, 2)
        assert await store.move_one("t1", 201, "n2", PREFIX) == (Step.MOVED, "b")
        await base.close()

    run(scenario)


# The messages table as the first versions made it: a UNIQUE (indexed) message id.
_OLD_MESSAGES = """
CREATE TABLE sqs_messages (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT NOT NULL,
    message_id     TEXT NOT NULL UNIQUE,
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
CREATE INDEX sqs_messages_by_queue ON sqs_messages(queue, seq);
CREATE INDEX sqs_messages_by_age ON sqs_messages(queue, sent);
"""


def test_a_database_of_the_earlier_schema_is_rebuilt_with_its_messages(tmp_path: Path) -> None:
    """Opening a database whose messages table indexes message ids rebuilds it without that index: every
    message kept (seq, id, body, receive state, document), the seq counter not reset (a seq is never handed
    out twice, FIFO sequence numbers keep growing), and the store works on it; a second open changes nothing."""
    path = tmp_path / "meta.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_MESSAGES)
    doc = '{"md5_body":"m","sender":"s","attributes":{"a":{"DataType":"String","StringValue":"v"}}}'
    db.executemany(
        "INSERT INTO sqs_messages(seq, queue, message_id, body, sent, visible_at, doc, group_id, dedup_id,"
        " receive_count, first_received, receipt) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (1, "q", "id1", "one", 100.0, 100.0, doc, None, None, 0, None, None),
            (2, "q", "id2", "two", 101.0, 500.0, doc, None, None, 1, 101.0, "tok"),
            (3, "q", "id3", "three", 102.0, 102.0, doc, None, None, 0, None, None),
        ],
    )
    db.execute("UPDATE sqlite_sequence SET seq = 7 WHERE name = 'sqs_messages'")  # seqs 4-7 sent and deleted
    db.commit()
    db.close()

    async def scenario() -> None:
        store, base = await _sqlite(tmp_path)
        await store.create_queue(queue())
        assert await store.counts("q", 200) == (2, 1, 0)
        assert await store.change_visibility("q", [(2, "tok", 200.0)], 150) == [Outcome.DONE]  # by seq now
        got = await store.receive("q", 200, 10, 30, tokens(10), False, 0)
        assert [(m.seq, m.message_id, m.body, m.receive_count) for m in got] == [
            (1, "id1", "one", 1),
            (2, "id2", "two", 2),
            (3, "id3", "three", 1),
        ]
        assert got[0].attributes == {"a": {"DataType": "String", "StringValue": "v"}} and got[0].md5_body == "m"
        assert (await store.send("q", [msg(9)], 0))[0].seq == 8
        assert await store.delete("q", [(1, "t0")]) == [Outcome.DONE]
        await base.close()
        store, base = await _sqlite(tmp_path)  # a second open: nothing to rebuild, nothing lost
        assert await store.counts("q", 200) == (1, 2, 0) and await store.counts("q", 10_000) == (3, 0, 0)
        assert (await store.send("q", [msg(10)], 0))[0].seq == 9
        await base.close()

    run(scenario)
    db = sqlite3.connect(path)
    indexes = {row[1]: row[3] for row in db.execute("PRAGMA index_list(sqs_messages)")}
    db.close()
    assert "u" not in indexes.values(), indexes
    assert {"sqs_messages_by_queue", "sqs_messages_received"} <= set(indexes), indexes


def test_the_sqlite_store_reads_a_deep_queue_without_sorting_or_scanning_it() -> None:
    """A receive takes the first visible messages in sending order straight off an index, retention finds
    the expired ones by age, and the in-flight count reads received messages only: none reads (or sorts)
    every message of a deep queue."""
    db = sqlite3.connect(":memory:")
    db.executescript(queue_sqlite._SCHEMA)
    for statement in queue_sqlite._MESSAGE_INDEXES:
        db.execute(statement)
    receive = db.execute("EXPLAIN QUERY PLAN " + queue_sqlite.RECEIVE_SQL, ("q", 1.0)).fetchall()
    assert not any("TEMP B-TREE" in str(row) for row in receive), receive
    expire = db.execute("EXPLAIN QUERY PLAN " + queue_sqlite.EXPIRE_SQL, ("q", 1.0)).fetchall()
    assert all("SCAN sqs_messages" not in str(row) or "INDEX" in str(row) for row in expire), expire
    assert any("sqs_messages_by_queue (queue=? AND seq<?)" in str(row) for row in expire), expire
    in_flight = db.execute("EXPLAIN QUERY PLAN " + queue_sqlite.IN_FLIGHT_SQL, ("q", 1.0, 10)).fetchall()
    assert any("sqs_messages_received" in str(row) for row in in_flight), in_flight
    move = db.execute("EXPLAIN QUERY PLAN " + queue_sqlite.MOVE_SQL, ("q", 1.0, 5)).fetchall()
    assert not any("TEMP B-TREE" in str(row) for row in move), move
