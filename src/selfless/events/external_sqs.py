"""Event source mappings on an SQS-compatible endpoint elsewhere (``Settings.sqs_endpoint``: AWS SQS itself, or
another server, a second selfless included): ``ExternalQueueSource`` is the poller's ``QueueSource`` over HTTP.

A queue is named by its ARN, as the mapping's EventSourceArn gives it: GetQueueUrl with the ARN's name and
account (``QueueOwnerAWSAccountId``), and GetQueueAttributes must report that same QueueArn, else the queue does
not exist. Requests are signed for the ARN's region with the standard credential chain of the server's own
environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role; unsigned when it finds
none), through one botocore client per region.

Each call runs in a daemon thread of its own (a long poll must not hold the event loop's shared executor, nor
keep a stopping server waiting), at most ``max_calls`` at once: a call waits for a free one within its deadline.
Every call has a deadline (a long poll: its wait plus ``call_timeout_s``; others: ``call_timeout_s``), and
botocore's own timeouts end the thread. A receive whose caller stopped waiting (a mapping disabled or updated,
a deadline passed) gives its messages back at once (visibility 0) when its answer comes, so no message stays
hidden for a poller that is gone.

Errors: a missing queue (``AWS.SimpleQueueService.NonExistentQueue`` / ``QueueDoesNotExist``) is SourceGone;
any other refusal (credentials, permissions, throttling) or no answer in time is SourceUnavailable, worded as
Lambda words a failed SQS call: ``Error occurred while ReceiveMessage. SQS Error Code: <code>. SQS Error
Message: <message>``. Deletes and give-backs are best effort: one that fails is logged, and its messages come
back after their visibility timeout (delivered at least once).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import botocore.exceptions

from selfless import aws_clients
from selfless.events.sqs import Received, SourceGone, SourceUnavailable, _size

log = logging.getLogger(__name__)

T = TypeVar("T")

LONG_POLL_MAX_S = 20
CALL_TIMEOUT_S = 15.0
MAX_CALLS = 64
_READ_TIMEOUT_S = LONG_POLL_MAX_S + 10  # botocore's: a long poll answers within its wait
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _failed(call: str, exc: Exception) -> Exception:
    """SourceGone or SourceUnavailable for what botocore raised during ``call``."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        if code in _NO_QUEUE:
            return SourceGone(code)
        return SourceUnavailable(
            f"Error occurred while {call}. SQS Error Code: {code}. SQS Error Message: {error.get('Message') or ''}"
        )
    return SourceUnavailable(f"Error occurred while {call}. {exc}")


class ExternalQueueSource:
    """``MappableQueues`` over an SQS-compatible endpoint; queues are named by their ARN."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        max_calls: int = MAX_CALLS,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self._region = region  # for an ARN without one
        self._timeout_s = call_timeout_s
        self._max_calls = max_calls
        self._slots: asyncio.Semaphore | None = None
        self._clients: dict[str, Any] = {}  # by region
        self._urls: dict[str, str] = {}  # by ARN
        self._lock = threading.Lock()  # calls run in threads: each client is made once, by whichever comes first

    # -- MappableQueues ---------------------------------------------------------------------------------------

    def queue_of(self, arn: str, region: str, account: str) -> str | None:
        return arn

    async def attributes(self, queue: str) -> dict[str, str] | None:
        try:
            return await self._call("ReceiveMessage", self._timeout_s, lambda: self._attributes(queue))
        except SourceGone:
            return None

    async def visibility_timeout(self, queue: str) -> int:
        found = await self._call("GetQueueAttributes", self._timeout_s, lambda: self._attributes(queue))
        if found is None:
            raise SourceGone(queue)
        return int(found.get("VisibilityTimeout", "30"))

    async def receive(self, queue: str, limit: int, wait_s: int) -> list[Received]:
        wait_s = max(0, min(LONG_POLL_MAX_S, wait_s))

        def receive() -> list[Received]:
            answer = self._client(queue).receive_message(
                QueueUrl=self._url(queue),
                MaxNumberOfMessages=max(1, min(10, limit)),
                WaitTimeSeconds=wait_s,
                AttributeNames=["All"],  # the older name, for servers that do not know the newer one
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            return [Received(m, _size(m)) for m in answer.get("Messages", [])]

        def give_back(abandoned: list[Received]) -> None:
            if abandoned:
                self._release(queue, [r.receipt for r in abandoned])

        return await self._call("ReceiveMessage", wait_s + self._timeout_s, receive, give_back)

    async def delete(self, queue: str, receipts: Sequence[str]) -> None:
        try:
            await self._call("DeleteMessageBatch", self._timeout_s, lambda: self._batch(queue, receipts, delete=True))
        except SourceGone:
            return
        except SourceUnavailable as exc:
            log.warning("%s: %s (the messages come back after their visibility timeout)", queue, exc)

    async def release(self, queue: str, receipts: Sequence[str]) -> None:
        try:
            await self._call("ChangeMessageVisibilityBatch", self._timeout_s, lambda: self._release(queue, receipts))
        except (SourceGone, SourceUnavailable) as exc:
            log.info("%s: giving messages back failed: %s", queue, exc)

    # -- calls in threads ---------------------------------------------------------------------------------------

    async def _call(
        self,
        call: str,
        deadline_s: float,
        work: Callable[[], T],
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """``work()`` in a thread of its own within ``deadline_s``; botocore's errors mapped. A call whose
        caller stopped waiting hands its result to ``abandoned`` (in a thread) when it comes."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_calls)
        slots = self._slots
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(deadline_s):
                await slots.acquire()
                future: asyncio.Future[T] = loop.create_future()

                def settle(result: T | None, error: BaseException | None) -> None:
                    slots.release()
                    if future.cancelled():
                        if error is None and abandoned is not None:
                            _thread(lambda: _quietly(abandoned, result))
                    elif error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(result)  # type: ignore[arg-type]

                def run() -> None:
                    result: T | None = None
                    error: BaseException | None = None
                    try:
                        result = work()
                    except Exception as exc:  # handed to the caller
                        error = exc
                    try:
                        loop.call_soon_threadsafe(settle, result, error)
                    except RuntimeError:  # the loop is closed: nobody waits any more
                        if error is None and abandoned is not None:
                            _quietly(abandoned, result)

                try:
                    _thread(run)
                except BaseException:
                    slots.release()
                    raise
                return await future
        except TimeoutError:
            raise SourceUnavailable(
                f"Error occurred while {call}. No answer from {self.endpoint} within {deadline_s:g} s"
            ) from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and _code(exc) in _NO_QUEUE:
                self._urls.clear()  # a queue made again gets a URL of its own
            raise _failed(call, exc) from None
        except (ValueError, KeyError, TypeError) as exc:  # an answer that is not the SQS shape
            raise SourceUnavailable(f"Error occurred while {call}. Unexpected answer: {exc!r}") from None

    def _client(self, arn: str) -> Any:
        region = arn.split(":")[3] or self._region
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = aws_clients.client(
                    "sqs",
                    self.endpoint,
                    region,
                    read_timeout_s=_READ_TIMEOUT_S,
                    max_attempts=3,
                    connections=self._max_calls,
                )
                self._clients[region] = client
            return client

    def _url(self, arn: str) -> str:
        url = self._urls.get(arn)
        if url is None:
            _, _, _, _, account, name = arn.split(":", 5)
            params = {"QueueName": name}
            if account:
                params["QueueOwnerAWSAccountId"] = account
            url = str(self._client(arn).get_queue_url(**params)["QueueUrl"])
            self._urls[arn] = url
        return url

    def _attributes(self, arn: str) -> dict[str, str] | None:
        """All of the queue's attributes; None when the endpoint's queue of that name is another ARN's."""
        found = self._client(arn).get_queue_attributes(QueueUrl=self._url(arn), AttributeNames=["All"])
        attributes = {str(k): str(v) for k, v in (found.get("Attributes") or {}).items()}
        if attributes.get("QueueArn", arn) != arn:
            self._urls.pop(arn, None)
            return None
        return attributes

    def _batch(self, arn: str, receipts: Sequence[str], *, delete: bool) -> None:
        client = self._client(arn)
        for start in range(0, len(receipts), 10):
            chunk = receipts[start : start + 10]
            if delete:
                entries: list[dict[str, Any]] = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)]
                client.delete_message_batch(QueueUrl=self._url(arn), Entries=entries)
            else:
                entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0} for i, r in enumerate(chunk)]
                client.change_message_visibility_batch(QueueUrl=self._url(arn), Entries=entries)

    def _release(self, arn: str, receipts: Sequence[str]) -> None:
        self._batch(arn, receipts, delete=False)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _quietly(abandoned: Callable[[T], None], result: T | None) -> None:
    try:
        abandoned(result)  # type: ignore[arg-type]  # set when the work did not fail
    except Exception as exc:  # best effort: the messages come back after their visibility timeout
        log.info("giving back what an abandoned receive got failed: %s", exc)


def _thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="esm-sqs", daemon=True).start()
