"""The built-in queue service as a poll source for event source mappings: receive, delete and give back messages
in-process (``QueueService``'s own operations, with their checks and durability), and the SQS event shape a
function receives.

``QueueSource`` is the seam: a mapping on an SQS-compatible endpoint elsewhere (``events.external_sqs``)
implements the same four calls over HTTP, and the poller does not change. ``MappableQueues`` adds what the
mappings' rules need of a source: which queue an SQS ARN names, and its attributes."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.services.sqs import errors as E
from selfless.services.sqs.service import Call, QueueService

LAMBDA_PRINCIPAL = "lambda.amazonaws.com"
# The system attributes a record carries (those the message has), in the order Lambda shows them.
_RECORD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
)


class SourceGone(Exception):
    """The queue does not exist (any more)."""


class SourceUnavailable(Exception):
    """The queue's service refused a call (credentials, permissions, ...) or did not answer in time; the
    message says which call and why, in Lambda's words (``Error occurred while ReceiveMessage. SQS Error
    Code: ...``)."""


@dataclasses.dataclass(frozen=True)
class Received:
    """One message as ReceiveMessage answered it (the SQS wire shape), and its size for the 6 MB payload cap."""

    message: Mapping[str, Any]
    size: int

    @property
    def message_id(self) -> str:
        return str(self.message["MessageId"])

    @property
    def receipt(self) -> str:
        return str(self.message["ReceiptHandle"])


class QueueSource(Protocol):
    async def visibility_timeout(self, queue: str) -> int:
        """The queue's VisibilityTimeout; SourceGone when there is no such queue."""
        ...

    async def receive(self, queue: str, limit: int, wait_s: int) -> list[Received]:
        """Up to ``limit`` (1-10) messages, long-polling up to ``wait_s``; hidden for the queue's visibility
        timeout. SourceGone when there is no such queue."""
        ...

    async def delete(self, queue: str, receipts: Sequence[str]) -> None:
        """Delete these messages (a stale receipt deletes nothing)."""
        ...

    async def release(self, queue: str, receipts: Sequence[str]) -> None:
        """Make these messages visible again now (best effort: a stale receipt is skipped)."""
        ...


class MappableQueues(QueueSource, Protocol):
    def queue_of(self, arn: str, region: str, account: str) -> str | None:
        """How this source names the queue of an SQS ARN (already parsed into ``region`` and ``account``), or
        None when the ARN cannot name one of its queues."""
        ...

    async def attributes(self, queue: str) -> dict[str, str] | None:
        """All the queue's attributes; None when there is no such queue. SourceUnavailable when that cannot
        be told."""
        ...


class BuiltinQueueSource:
    """``QueueSource`` over the built-in ``QueueService``; queues are named by their name."""

    def __init__(self, service: QueueService, account_id: str) -> None:
        self._service = service
        self._account = account_id
        self._call = Call("localhost", LAMBDA_PRINCIPAL)

    def _url(self, queue: str) -> str:
        return f"/{self._account}/{queue}"

    def queue_of(self, arn: str, region: str, account: str) -> str | None:
        name = arn.rsplit(":", 1)[1]
        return name if self._service.arn(name).split(":")[3:5] == [region, account] else None

    async def attributes(self, queue: str) -> dict[str, str] | None:
        try:
            found = await self._service.get_queue_attributes(
                {"QueueUrl": self._url(queue), "AttributeNames": ["All"]}, self._call
            )
        except E.SqsError:
            return None
        return dict(found.get("Attributes") or {})

    async def visibility_timeout(self, queue: str) -> int:
        attributes = await self.attributes(queue)
        if attributes is None:
            raise SourceGone(queue)
        return int(attributes.get("VisibilityTimeout", "30"))

    async def receive(self, queue: str, limit: int, wait_s: int) -> list[Received]:
        params = {
            "QueueUrl": self._url(queue),
            "MaxNumberOfMessages": limit,
            "WaitTimeSeconds": wait_s,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        try:
            answer = await self._service.receive_message(params, self._call)
        except E.SqsError as exc:
            if exc.query_code == "AWS.SimpleQueueService.NonExistentQueue":
                raise SourceGone(queue) from None
            raise
        return [Received(m, _size(m)) for m in answer.get("Messages", [])]

    async def delete(self, queue: str, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
            try:
                await self._service.delete_message_batch({"QueueUrl": self._url(queue), "Entries": entries}, self._call)
            except E.SqsError as exc:
                if exc.query_code == "AWS.SimpleQueueService.NonExistentQueue":
                    return
                raise

    async def release(self, queue: str, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                for i, r in enumerate(receipts[start : start + 10])
            ]
            try:
                await self._service.change_message_visibility_batch(
                    {"QueueUrl": self._url(queue), "Entries": entries}, self._call
                )
            except E.SqsError:
                return  # the queue is gone: nothing to give back


def _size(message: Mapping[str, Any]) -> int:
    size = len(str(message.get("Body", "")).encode()) + 1024  # the record's other members, generously
    for name, value in (message.get("MessageAttributes") or {}).items():
        size += len(name) + len(str(value.get("StringValue") or value.get("BinaryValue") or "")) + 64
    return size


def record(received: Received, event_source_arn: str, region: str) -> dict[str, Any]:
    """The SQS event's record for one message, as Lambda shapes it."""
    m = received.message
    system = m.get("Attributes") or {}
    attributes = {name: str(system[name]) for name in _RECORD_ATTRIBUTES if name in system}
    message_attributes: dict[str, Any] = {}
    for name, value in (m.get("MessageAttributes") or {}).items():
        shown: dict[str, Any] = {}
        if value.get("StringValue") is not None:
            shown["stringValue"] = value["StringValue"]
        if value.get("BinaryValue") is not None:
            data = value["BinaryValue"]
            shown["binaryValue"] = data if isinstance(data, str) else base64.b64encode(data).decode()
        shown["stringListValues"] = []
        shown["binaryListValues"] = []
        shown["dataType"] = value.get("DataType", "String")
        message_attributes[name] = shown
    out: dict[str, Any] = {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m.get("Body", ""),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.get("MD5OfBody", ""),
    }
    if m.get("MD5OfMessageAttributes"):
        out["md5OfMessageAttributes"] = m["MD5OfMessageAttributes"]
    out.update({"eventSource": "aws:sqs", "eventSourceARN": event_source_arn, "awsRegion": region})
    return out
