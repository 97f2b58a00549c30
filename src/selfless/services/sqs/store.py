"""The queue service's state behind ``QueueStore`` (SQLite today, in the server's database; PostgreSQL for the
cluster mode must pass the same contract, ``tests/unit/test_sqs_store_contract.py``).

Every write is committed (durable) when it returns: a sent message, a receive (its new visibility, receive
count and receipt token), a visibility change, a delete. A receive picks and hides its messages in one
transaction, so two receivers never get the same message within one visibility window, and the store applies
the rules that need a consistent view: FIFO groups with a message in flight are skipped, deduplication ids
are remembered for their window, a message received ``max_receives`` times moves to its dead-letter queue.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Queue:
    name: str
    created: float
    modified: float
    attributes: Mapping[str, str]  # the settable attributes, as given (with defaults filled in)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoQueue") == "true"


@dataclasses.dataclass(frozen=True)
class Message:
    """One message. ``seq`` orders a queue's messages (the FIFO sequence number) and addresses the message
    (receipt handles carry it); ``visible_at`` is when it
    may next be received (its delay, or the end of its visibility window); ``receipt`` is the token of its
    latest receive (a handle that carries another is stale)."""

    message_id: str
    body: str
    sent: float
    visible_at: float
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # MessageAttributes, wire form
    system: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # MessageSystemAttributes
    md5_body: str = ""
    md5_attributes: str | None = None
    md5_system: str | None = None
    sender: str = ""
    group_id: str | None = None
    dedup_id: str | None = None
    seq: int = 0
    receive_count: int = 0
    first_received: float | None = None
    receipt: str | None = None
    source_arn: str | None = None  # the queue it came from, once a redrive moved it to a dead-letter queue


@dataclasses.dataclass(frozen=True)
class Redrive:
    """Where a queue's messages go after ``max_receives`` receives."""

    max_receives: int
    target: str  # the dead-letter queue's name
    source_arn: str  # the queue's own ARN, recorded on moved messages


@dataclasses.dataclass(frozen=True)
class Sent:
    message_id: str
    seq: int
    duplicate: bool  # a FIFO send within the window of an earlier one with the same deduplication id


@dataclasses.dataclass(frozen=True)
class MoveTask:
    """A message move task (StartMessageMoveTask): the messages that were in the dead-letter queue ``source``
    when it started (``seq`` up to ``last_seq``) go, oldest first, to ``destination`` or, without one, each to
    the queue it was dead-lettered from (its ``source_arn``). ``status`` is RUNNING, COMPLETED, CANCELLED or
    FAILED (with ``failure``); ``moved`` counts the messages moved, in the same commits as the moves."""

    task_id: str
    source: str
    destination: str | None  # a queue name; None: each message back to the queue it came from
    rate: int | None  # MaxNumberOfMessagesPerSecond as given
    started: float
    status: str = "RUNNING"
    to_move: int = 0
    moved: int = 0
    failure: str | None = None
    last_seq: int = 0


class Step(enum.Enum):
    """What one ``move_one`` did."""

    MOVED = "moved"
    DONE = "done"  # nothing left to move: the task is COMPLETED
    STOPPED = "stopped"  # the task is no longer RUNNING (cancelled, or gone with its queue)
    FAILED = "failed"  # the task is FAILED (its failure says why); the message stays where it was


class Outcome(enum.Enum):
    DONE = "done"
    GONE = "gone"  # no such message (deleted, or never was)
    STALE = "stale"  # the message exists but the handle is not its latest receive's
    NOT_IN_FLIGHT = "not-in-flight"


class InFlightLimit(Exception):
    """A receive found ``max_in_flight`` messages of the queue already in flight, and took none."""


class QueueStore(Protocol):
    async def open(self) -> None: ...

    async def create_queue(self, queue: Queue) -> Queue:
        """Store ``queue`` unless one of its name exists; returns the stored one (the given one or the old)."""
        ...

    async def get_queue(self, name: str) -> Queue | None: ...

    async def list_queues(self, prefix: str, after: str | None, limit: int) -> list[Queue]:
        """Queues whose names start with ``prefix``, in name order, after the name ``after``."""
        ...

    async def update_queue(self, queue: Queue) -> bool:
        """Replace a queue's attributes, tags and modified time; False when it no longer exists."""
        ...

    async def delete_queue(self, name: str) -> bool:
        """The queue and every message in it; False when there was none."""
        ...

    async def send(self, queue: str, messages: Sequence[Message], dedup_since: float) -> list[Sent]:
        """Append ``messages`` in order, in one commit. A message with a ``dedup_id`` that one sent after
        ``dedup_since`` had is not stored again: its ``Sent`` names the first (``duplicate``)."""
        ...

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
        """Up to ``limit`` messages visible at ``now``, oldest first, made invisible until ``now +
        visible_for`` with their receive count raised and ``receipts[i]`` as the i-th one's token, committed
        before they are returned. FIFO: one group's messages in order, none of a group that has a message in
        flight. Messages sent before ``expire_before`` are dropped first; with ``redrive``, a message already
        received ``max_receives`` times moves to the dead-letter queue instead of being returned. With
        ``max_in_flight``: InFlightLimit when that many messages are in flight already (the in-flight count
        is read, never more than that many rows, before any is taken; a receive may end a little past it)."""
        ...

    async def delete(self, queue: str, handles: Sequence[tuple[int, str]]) -> list[Outcome]:
        """Delete each (message seq, receipt token) whose token is the message's current one, all in one commit
        (a batch of ten is one durable write, not ten); the i-th outcome is the i-th handle's."""
        ...

    async def change_visibility(
        self, queue: str, changes: Sequence[tuple[int, str, float]], now: float
    ) -> list[Outcome]:
        """Set each in-flight (message seq, receipt token, visible at) message's visibility, in one commit; the
        i-th outcome is the i-th change's."""
        ...

    async def purge(self, queue: str) -> int: ...

    async def counts(self, queue: str, now: float) -> tuple[int, int, int]:
        """(visible, in flight, delayed) messages."""
        ...

    # -- message move tasks ----------------------------------------------------------------------------------

    async def start_move(self, task: MoveTask, keep: int) -> MoveTask | None:
        """Store ``task`` as RUNNING, with ``to_move`` and ``last_seq`` taken from the messages in its source
        queue now, unless that queue has a RUNNING task already (None). Only the ``keep`` most recent tasks of
        the queue are kept (the older ones are dropped in the same commit)."""
        ...

    async def move_task(self, task_id: str) -> MoveTask | None: ...

    async def move_tasks(self, source: str, limit: int) -> list[MoveTask]:
        """The queue's most recent tasks first."""
        ...

    async def running_moves(self) -> list[MoveTask]:
        """Every RUNNING task (to resume after a restart)."""
        ...

    async def cancel_move(self, task_id: str) -> tuple[MoveTask | None, bool]:
        """A RUNNING task becomes CANCELLED (no message moves for it after this commit); returns the task as it
        now is (None when there is none) and whether this call cancelled it."""
        ...

    async def move_one(self, task_id: str, now: float, new_id: str, arn_prefix: str) -> tuple[Step, str | None]:
        """One transaction of a RUNNING task: its source queue's oldest message (of those it is to move) that is
        visible at ``now`` (FIFO: of a group with no message in flight) is inserted as a new message ``new_id``
        (sent and visible at ``now``, never received, without its dead-letter source) at the end of its
        destination, deleted from the source, and counted. A message's own source is its ``source_arn`` with
        ``arn_prefix`` (the ARN of a queue named "") removed. Returns the step and the destination queue's
        name when a message moved. Messages of the source past its MessageRetentionPeriod are dropped first,
        as a receive drops them. No message left: COMPLETED. The source, or the destination, missing:
        FAILED (``AWS.SimpleQueueService.NonExistentQueue``), nothing moved."""
        ...
