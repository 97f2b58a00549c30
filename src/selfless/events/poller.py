"""The shared poller and batcher of event source mappings, with Lambda's SQS semantics.

One ``QueuePoller`` per enabled mapping runs 1 to N workers (N: ScalingConfig.MaximumConcurrency, else 5, the
pollers AWS starts with). Each worker:

    collect:  receive (long poll; hidden for the queue's visibility timeout) until the batch is full
              (BatchSize), the batching window ends (it starts with the batch's first message), or the
              payload reaches 6 MB; with FilterCriteria, a message no filter accepts is deleted at once and
              never sent (Lambda's rule for SQS)
    invoke:   the function, synchronously, with the SQS event; a throttle is retried with backoff while the
              messages stay hidden, and never loses them (past their window they are simply visible again)
    settle:   success deletes the batch; with ReportBatchItemFailures only the records not listed; a function
              error or timeout deletes nothing (the messages come back after their visibility timeout and
              reach the dead-letter queue by the queue's redrive policy)

Scaling: a full batch that succeeded starts one more worker (up to N); an empty receive, a failure or a throttle
ends one (down to 1). Every wait has a deadline: receives are long polls of at most 20 s, throttle retries end
with the messages' visibility window. ``stop`` ends collecting workers at once (messages they hold are made
visible again) and lets workers that are invoking finish within its deadline, then cancels them (their
messages come back after their visibility timeout: delivered at least once, deleted only after success).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from selfless.errors import ResourceNotFound, TooManyRequests
from selfless.events.sqs import QueueSource, Received, SourceGone, SourceUnavailable, record
from selfless.invocation.inflight import Outcome

log = logging.getLogger(__name__)

DEFAULT_POLLERS = 5
MAX_PAYLOAD = 6_291_456
LONG_POLL_S = 20
_GONE_RETRY_S = 5.0
_THROTTLE_FIRST_S = 0.1
_THROTTLE_MAX_S = 2.0
_VISIBILITY_MARGIN_S = 0.5
_VISIBILITY_TTL_S = 5.0

NO_RECORDS = "No records processed"
OK = "OK"
FUNCTION_FAILED = "PROBLEM: Function call failed"
THROTTLED = "PROBLEM: Function call throttled"
FUNCTION_GONE = "PROBLEM: Function not found"
QUEUE_GONE = "PROBLEM: Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue"

Invoke = Callable[[bytes], Awaitable[Outcome]]


def failed_items(outcome_payload: bytes, message_ids: Sequence[str]) -> set[str] | None:
    """The message ids a ReportBatchItemFailures response names as failed (empty: all succeeded), or None when
    the whole batch counts as failed, by Lambda's rules: an empty or null ``batchItemFailures`` (or a null or
    empty response) is a success; a response that is not JSON, or an ``itemIdentifier`` that is missing,
    empty, not a string or not a message of the batch, fails the whole batch."""
    text = outcome_payload.strip()
    if not text:
        return set()
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return set()
    failures = doc.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(message_ids)
    failed: set[str] = set()
    for item in failures:
        if not isinstance(item, dict):
            return None
        identifier = item.get("itemIdentifier")
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


class QueuePoller:
    """The workers of one mapping on one queue."""

    def __init__(
        self,
        *,
        mapping_id: str,
        queue: str,
        event_source_arn: str,
        region: str,
        source: QueueSource,
        invoke: Invoke,
        batch_size: int,
        window_s: int,
        report_failures: bool,
        max_workers: int | None,
        on_result: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        accepts: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.mapping_id = mapping_id
        self._queue = queue
        self._arn = event_source_arn
        self._region = region
        self._source = source
        self._invoke = invoke
        self._batch_size = batch_size
        self._window_s = window_s
        self._report_failures = report_failures
        self.max_workers = max_workers or DEFAULT_POLLERS
        self._on_result = on_result
        self._clock = clock
        self._accepts = accepts  # FilterCriteria: a record it refuses is deleted, never sent
        self._workers: dict[asyncio.Task[None], bool] = {}  # task -> invoking (True) or collecting (False)
        self._stopping = False
        self._visibility_at: tuple[int, float] | None = None

    @property
    def workers(self) -> int:
        return len(self._workers)

    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        if self._stopping or len(self._workers) >= self.max_workers:
            return
        task = asyncio.get_running_loop().create_task(self._work(), name=f"esm-{self.mapping_id}")
        self._workers[task] = False
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._workers.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("mapping %s: a poller failed", self.mapping_id, exc_info=task.exception())
            if not self._stopping and not self._workers:  # never leave a mapping without a poller
                asyncio.get_running_loop().call_later(_GONE_RETRY_S, self._spawn)

    async def stop(self, deadline_s: float) -> None:
        """Collecting workers end at once; invoking ones get ``deadline_s`` to finish. Idempotent."""
        self._stopping = True
        for task, invoking in list(self._workers.items()):
            if not invoking:
                task.cancel()
        tasks = list(self._workers)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    async def _visibility(self) -> int:
        """The queue's visibility timeout, read again every ``_VISIBILITY_TTL_S``."""
        now = self._clock()
        if self._visibility_at is None or now - self._visibility_at[1] > _VISIBILITY_TTL_S:
            self._visibility_at = (await self._source.visibility_timeout(self._queue), now)
        return self._visibility_at[0]

    # -- one worker -----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._stopping:
            try:
                visibility = await self._visibility()
                batch = await self._collect()
            except SourceGone:
                self._on_result(QUEUE_GONE)
                await asyncio.sleep(_GONE_RETRY_S)
                continue
            except SourceUnavailable as exc:  # a queue elsewhere: refused or unreachable
                self._on_result(f"PROBLEM: {exc}")
                await asyncio.sleep(_GONE_RETRY_S)
                continue
            if not batch:
                if len(self._workers) > 1:
                    return  # scale down: the queue is empty
                continue
            self._workers[me] = True
            try:
                succeeded = await self._process(batch, visibility)
            finally:
                self._workers[me] = False
            if succeeded and len(batch) >= self._batch_size:
                self._spawn()  # scale up: full batches that succeed
            elif not succeeded and len(self._workers) > 1:
                return  # scale down on errors and throttles

    async def _collect(self) -> list[Received]:
        """One batch (maybe empty). Cancelled: the messages held so far are made visible again."""
        batch: list[Received] = []
        index: dict[str, int] = {}  # message id -> its place in the batch
        size = 0
        window_end: float | None = None
        try:
            while len(batch) < self._batch_size and size < MAX_PAYLOAD:
                if window_end is None:
                    wait = LONG_POLL_S
                else:
                    remaining = window_end - self._clock()
                    if remaining <= 0:
                        break
                    wait = min(LONG_POLL_S, int(remaining))
                got = await self._source.receive(self._queue, min(10, self._batch_size - len(batch)), wait)
                if self._accepts is not None:
                    got = await self._drop_filtered(got)
                for received in got:
                    held = index.get(received.message_id)
                    if held is not None:  # visible again within the window (a visibility timeout shorter than
                        batch[held] = received  # the window): one record, with the latest receipt
                        continue
                    if batch and size + received.size > MAX_PAYLOAD:
                        await self._source.release(self._queue, [received.receipt])  # it starts the next batch
                        continue
                    index[received.message_id] = len(batch)
                    batch.append(received)
                    size += received.size
                if not batch:
                    return []  # an empty long poll: let the worker decide whether to go on
                if self._window_s == 0:
                    break
                if window_end is None:
                    window_end = self._clock() + self._window_s
        except asyncio.CancelledError:
            if batch:
                await asyncio.shield(self._source.release(self._queue, [r.receipt for r in batch]))
            raise
        return batch

    async def _drop_filtered(self, got: list[Received]) -> list[Received]:
        """The messages the mapping's filters accept; the others are deleted from the queue (as Lambda does for
        SQS) without invoking the function."""
        assert self._accepts is not None
        kept: list[Received] = []
        dropped: list[str] = []
        for received in got:
            if self._accepts(record(received, self._arn, self._region)):
                kept.append(received)
            else:
                dropped.append(received.receipt)
        if dropped:
            await self._source.delete(self._queue, dropped)
        return kept

    async def _process(self, batch: list[Received], visibility_s: int) -> bool:
        """Invoke with ``batch`` and delete what succeeded; True when the whole batch did."""
        payload = json.dumps({"Records": [record(r, self._arn, self._region) for r in batch]}).encode()
        hidden_until = self._clock() + visibility_s - _VISIBILITY_MARGIN_S
        backoff = _THROTTLE_FIRST_S
        while True:
            try:
                outcome = await self._invoke(payload)
                break
            except TooManyRequests:
                self._on_result(THROTTLED)
                if self._stopping or self._clock() + backoff >= hidden_until:
                    return False  # the messages become visible again when their window ends
                await asyncio.sleep(backoff)
                backoff = min(_THROTTLE_MAX_S, backoff * 2)
            except ResourceNotFound:
                self._on_result(FUNCTION_GONE)
                await asyncio.sleep(min(_GONE_RETRY_S, max(0.0, hidden_until - self._clock())))
                return False
        if outcome.failed:
            self._on_result(FUNCTION_FAILED)
            return False
        ids = [r.message_id for r in batch]
        failed: set[str] | None = set()
        if self._report_failures:
            failed = failed_items(outcome.payload, ids)
        if failed is None:
            self._on_result(FUNCTION_FAILED)
            return False
        done = [r.receipt for r in batch if r.message_id not in failed]
        if done:
            await self._source.delete(self._queue, done)
        self._on_result(OK)
        return not failed
