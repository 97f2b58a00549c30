"""Queues as poll sources for event source mappings, and the SQS event shape a function receives.

``QueueSource`` is the seam the poller uses; a queue is named by its ARN. Two sources:

- ``BuiltinQueueSource``: the built-in queue service, in-process (``QueueService``'s own operations, with their
  checks and durability);
- ``ExternalQueueSource``: an SQS-compatible endpoint elsewhere (``SELFLESS_SQS_ENDPOINT``: AWS SQS itself or
  another server), through botocore with the standard credential chain, each call in a worker thread of the
  source's own bounded pool (a long poll holds a thread for up to 20 s; the event loop's default pool is left
  alone) and under a deadline. A queue ARN's account, when it is not the caller's, is the queue's owner
  (``QueueOwnerAWSAccountId``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import botocore.exceptions

from selfless import aws_clients
from selfless.services.sqs import errors as E
from selfless.services.sqs.service import Call, QueueService

T = TypeVar("T")
_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:sqs:(?P<region>[^:]*):(?P<account>[^:]*):(?P<name>[^:]+)$")
_NO_QUEUE_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
EXTERNAL_THREADS = 32  # calls to an external endpoint at once (long polls included); more wait for a thread
# An external long poll holds one of those threads, and a stopping server waits for it: shorter than the built-in
# queues' 20 s (an idle queue then costs a request per worker every 5 s).
EXTERNAL_LONG_POLL_S = 5
_CALL_MARGIN_S = 10.0  # beyond a call's own long poll, how long it may take before it counts as failed


def queue_name(arn: str) -> str:
    found = _ARN.match(arn)
    if found is None:
        raise SourceGone(arn)
    return found.group("name")


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
    """A queue is named by its ARN in every call."""

    async def attributes(self, queue: str) -> dict[str, str] | None:
        """The queue's attributes (All), or None when there is no such queue."""
        ...

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


class BuiltinQueueSource:
    """``QueueSource`` over the built-in ``QueueService``."""

    def __init__(self, service: QueueService, account_id: str) -> None:
        self._service = service
        self._account = account_id
        self._call = Call("localhost", LAMBDA_PRINCIPAL)

    def _url(self, queue: str) -> str:
        return f"/{self._account}/{queue_name(queue)}"

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


class ExternalQueueSource:
    """``QueueSource`` over an SQS-compatible endpoint elsewhere (see the module docstring)."""

    def __init__(self, endpoint: str, region: str, account_id: str) -> None:
        self._endpoint = endpoint
        self._region = region
        self._account = account_id
        self._client: Any = None
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(EXTERNAL_THREADS, thread_name_prefix="sqs-source")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _sqs(self) -> Any:
        with self._lock:
            if self._client is None:
                # One attempt per call: the poller retries, with a backoff of its own.
                self._client = aws_clients.client(
                    "sqs", self._endpoint, self._region, read_timeout_s=20 + _CALL_MARGIN_S, max_attempts=1
                )
            return self._client

    async def _in_thread(self, fn: Callable[[], T], wait_s: float = 0.0) -> T:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(wait_s + _CALL_MARGIN_S * 2):
            return await loop.run_in_executor(self._pool, fn)

    def _url_of(self, queue: str) -> str:
        """In a worker thread: the queue's URL, looked up once (SourceGone when there is no such queue)."""
        url = self._urls.get(queue)
        if url is not None:
            return url
        found = _ARN.match(queue)
        if found is None:
            raise SourceGone(queue)
        params = {"QueueName": found.group("name")}
        if found.group("account") and found.group("account") != self._account:
            params["QueueOwnerAWSAccountId"] = found.group("account")
        url = str(self._call(queue, "get_queue_url", **params)["QueueUrl"])
        if len(self._urls) > 10_000:
            self._urls.clear()
        self._urls[queue] = url
        return url

    def _call(self, queue: str, operation: str, **params: Any) -> Any:
        """In a worker thread: one call of the client; SourceGone when the queue does not exist."""
        try:
            return getattr(self._sqs(), operation)(**params)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NO_QUEUE_CODES:
                self._urls.pop(queue, None)
                raise SourceGone(queue) from None
            raise

    async def attributes(self, queue: str) -> dict[str, str] | None:
        def get() -> dict[str, str]:
            url = self._url_of(queue)
            answer = self._call(queue, "get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
            return dict(answer.get("Attributes") or {})

        try:
            return await self._in_thread(get)
        except SourceGone:
            return None

    async def visibility_timeout(self, queue: str) -> int:
        attributes = await self.attributes(queue)
        if attributes is None:
            raise SourceGone(queue)
        return int(attributes.get("VisibilityTimeout", "30"))

    async def receive(self, queue: str, limit: int, wait_s: int) -> list[Received]:
        wait_s = min(wait_s, EXTERNAL_LONG_POLL_S)

        def get() -> list[Received]:
            url = self._url_of(queue)
            answer = self._call(
                queue,
                "receive_message",
                QueueUrl=url,
                MaxNumberOfMessages=limit,
                WaitTimeSeconds=wait_s,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            return [Received(m, _size(m)) for m in answer.get("Messages", [])]

        return await self._in_thread(get, wait_s)

    async def delete(self, queue: str, receipts: Sequence[str]) -> None:
        def run() -> None:
            url = self._url_of(queue)
            for start in range(0, len(receipts), 10):
                entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + 10])]
                self._call(queue, "delete_message_batch", QueueUrl=url, Entries=entries)

        try:
            await self._in_thread(run)
        except SourceGone:
            return

    async def release(self, queue: str, receipts: Sequence[str]) -> None:
        def run() -> None:
            url = self._url_of(queue)
            for start in range(0, len(receipts), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                    for i, r in enumerate(receipts[start : start + 10])
                ]
                self._call(queue, "change_message_visibility_batch", QueueUrl=url, Entries=entries)

        try:
            await self._in_thread(run)
        except (SourceGone, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, TimeoutError):
            return  # best effort: the messages come back after their visibility timeout anyway


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
