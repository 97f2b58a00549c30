"""The topic service's state behind ``TopicStore`` (SQLite today, in the server's database; PostgreSQL for the
cluster mode must pass the same contract, ``tests/unit/test_sns_store_contract.py``).

Every write is committed (durable) when it returns. A publish is one transaction: each message (unless a FIFO
topic saw its deduplication id within the window), its pending deliveries (one per matching ``sqs``/``http``
subscription) and the asynchronous invocations of its matching ``lambda`` subscriptions (``StoredEvent``s of
the durable async queue). A message row lives while a delivery of it is pending.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.store.base import StoredEvent


@dataclasses.dataclass(frozen=True)
class Topic:
    arn: str
    name: str
    created: float
    attributes: Mapping[str, str]  # the settable attributes, as given
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoTopic") == "true"


@dataclasses.dataclass(frozen=True)
class Subscription:
    """``token``: the confirmation token of an http/https subscription still ``pending`` confirmation."""

    arn: str
    topic_arn: str
    protocol: str
    endpoint: str
    owner: str
    created: float
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    pending: bool = False
    token: str | None = None


@dataclasses.dataclass(frozen=True)
class Message:
    """A published message as its deliveries render it (``doc``: id, topic, subject, message text or
    per-protocol texts, timestamp, attributes, FIFO group/deduplication/sequence)."""

    message_id: str
    topic_arn: str
    doc: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One pending send of a message (``kind`` "notification") or of a subscription's confirmation request
    (``kind`` "confirmation", ``message_id`` empty) to an ``sqs``/``http``/``https`` subscription. ``seq``
    orders a subscription's deliveries (FIFO topics send in this order)."""

    id: str
    subscription_arn: str
    message_id: str
    kind: str
    accepted_at: float
    attempts: int = 0
    next_at: float = 0.0
    seq: int = 0


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """What one publish of one message stores: the message, its deliveries and its Lambda events."""

    message: Message
    deliveries: Sequence[Delivery] = ()
    events: Sequence[StoredEvent] = ()
    dedup_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Published:
    message_id: str
    seq: int
    duplicate: bool  # a FIFO publish within the window of an earlier one with the same deduplication id


class TopicStore(Protocol):
    async def open(self) -> None: ...

    async def create_topic(self, topic: Topic, limit: int) -> Topic | None:
        """Store ``topic`` unless one of its ARN exists; returns the stored one (the given one or the old),
        None when ``limit`` topics exist already."""
        ...

    async def get_topic(self, arn: str) -> Topic | None: ...

    async def list_topics(self, after: str | None, limit: int) -> list[Topic]:
        """Topics in ARN order, after the ARN ``after``."""
        ...

    async def update_topic(self, topic: Topic) -> bool: ...

    async def delete_topic(self, arn: str) -> bool:
        """The topic with its subscriptions and their pending deliveries; False when there was none."""
        ...

    async def add_subscription(
        self, subscription: Subscription, deliveries: Sequence[Delivery], limit: int
    ) -> tuple[Subscription, bool] | None:
        """Store ``subscription`` with ``deliveries`` (its confirmation request) unless its topic has one of
        the same protocol and endpoint: then (that one, False). None when the topic is gone or has ``limit``
        subscriptions already."""
        ...

    async def get_subscription(self, arn: str) -> Subscription | None: ...

    async def list_subscriptions(self, topic_arn: str | None, after: str | None, limit: int) -> list[Subscription]:
        """Subscriptions (of one topic, or all) in ARN order, after the ARN ``after``."""
        ...

    async def topic_subscriptions(self, topic_arn: str) -> list[Subscription]: ...

    async def update_subscription(self, subscription: Subscription) -> bool: ...

    async def delete_subscription(self, arn: str) -> bool:
        """The subscription with its pending deliveries."""
        ...

    async def publish(self, topic_arn: str, outgoing: Sequence[Outgoing], dedup_since: float) -> list[Published]:
        """Every message, its deliveries and its events, in one commit, in order; one with a ``dedup_id`` that
        a message published to the topic after ``dedup_since`` had is not stored again (nor its deliveries
        and events): its ``Published`` names the first. When the topic is gone, nothing is stored (an empty
        list)."""
        ...

    async def pending(self) -> list[Delivery]:
        """Every pending delivery, in ``seq`` order (after a restart)."""
        ...

    async def message(self, message_id: str) -> Message | None: ...

    async def retry(self, delivery: Delivery) -> None:
        """A delivery's attempts and next time."""
        ...

    async def done(self, delivery: Delivery) -> None:
        """The delivery is over (sent, or given up): removed, with its message once no delivery needs it."""
        ...

    async def count_pending(self) -> int: ...
