"""Schedules as a push source: the loop that runs what is due on a clock, EventBridge Scheduler's schedules
and EventBridge rules with a ScheduleExpression (``events.rules``) alike.

Each kind keeps its items' next due time in its store and is a ``Timetable`` to the loop. One task sleeps until
the earliest of all (at most ``MAX_WAIT_S``, and it is woken when an item changes), then takes up to ``BATCH``
due items of each kind per wake-up. A run's events (an asynchronous invocation of a function target, or a
delivery to a queue target) are stored in the same transaction that moves the item's next due time on, then
handed to the async invoker: a crash neither loses nor repeats a run.

Runs missed while the server was down (or while the loop was behind): at most one catch-up run per item. The
next due time after a run is computed from *now*, so an item overdue by many periods runs once, then resumes
on its own times.

A schedule's run (``ScheduleTimetable``): its Target is a Lambda function (an asynchronous invocation with the
Input as its payload, verbatim, ``{}`` when there is none) or a built-in SQS queue (the Input as the message
body, with SqsParameters.MessageGroupId for a FIFO queue). Retries: as on AWS, the RetryPolicy is about
handing the run to its target. Handing an invocation to Lambda commits in the run's own transaction and cannot
fail; the function's errors are retried by its own asynchronous configuration (PutFunctionEventInvokeConfig),
as any asynchronous invocation's are. A queue's message is a durable delivery, tried again (backing off) until
the queue has it, for at most MaximumRetryAttempts retries (185 by default) and MaximumEventAgeInSeconds
(86,400). DeadLetterConfig (a standard queue): a run that cannot be handed over goes there, with the
attributes AWS Scheduler sets (ERROR_CODE, ERROR_MESSAGE, EXECUTION_ID, EXHAUSTED_RETRY_CONDITION when a retry
limit ended it, IS_PAYLOAD_TRUNCATED, RETRY_ATTEMPTS, SCHEDULED_TIME, SCHEDULE_ARN, TARGET_ARN) and the Input
as its body: at once, without retries, when the target function or queue does not exist when the run is due
(or the function is gone when its event runs); after the retries when the queue keeps refusing it. Without a
DeadLetterConfig such a run is dropped (and logged), as on AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from selfless import ids
from selfless.events.targets import Targets, retry_policy
from selfless.invocation.destinations import OnFailure
from selfless.services.scheduler import expressions
from selfless.services.scheduler.service import next_due
from selfless.services.scheduler.store import Schedule, ScheduleStore
from selfless.store.base import StoredEvent

log = logging.getLogger(__name__)

BATCH = 100  # items of each timetable fired per wake-up
MAX_EVENTS_PER_RUN = 5  # a rule's targets; a schedule has one
MAX_WAIT_S = 60.0  # the loop looks again at least this often (a clock that jumps, a missed wake-up)
_RETRY_AFTER_FAULT_S = 5.0
_MIN_WAIT_S = 0.05


class Invoker(Protocol):
    """The async invoker's side the scheduler needs (``invocation.events.AsyncInvoker``)."""

    def has_room(self, count: int) -> bool: ...

    def adopt(self, events: list[StoredEvent]) -> None: ...


class Timetable(Protocol):
    """One kind of item that runs on a clock, as the loop sees it."""

    async def due(self, now: float, limit: int) -> Sequence[Any]:
        """Up to ``limit`` items due at ``now``, the earliest first."""
        ...

    async def earliest(self) -> float | None:
        """The earliest next due time of any item."""
        ...

    async def fire(self, item: Any, now: float) -> list[StoredEvent] | None:
        """Run one due item: its events committed with its next due time, in one transaction. The events
        committed, or None when the item changed meanwhile (nothing was written)."""
        ...


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Scheduler:
    """The loop that fires due items of its timetables (see the module docstring). ``clock`` gives epoch
    seconds."""

    def __init__(
        self, timetables: Sequence[Timetable], invoker: Invoker, clock: Callable[[], float] = time.time
    ) -> None:
        self._timetables = list(timetables)
        self._invoker = invoker
        self._clock = clock
        self._dirty = False  # a schedule changed since the loop last looked
        self._wake: asyncio.Future[None] | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """A schedule was created, updated or deleted: look again now."""
        self._dirty = True
        if self._wake is not None:
            _settle(self._wake)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop: it finishes the run it is committing (if any) and ends; cancelled past ``timeout_s``."""
        self._closed = True
        self.changed()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        # Stopped by ``close`` through a flag, not by cancelling: a cancel that reached an asyncio.wait_for here
        # was seen (Python 3.11, uvloop) to leave the task stuck "cancelling", and the server unable to stop.
        while not self._closed:
            self._dirty = False
            try:
                wait = await self.tick()
            except Exception:
                log.exception("the scheduler failed to run due schedules; trying again")
                wait = _RETRY_AFTER_FAULT_S
            if wait <= 0:
                await asyncio.sleep(0)
            elif not self._dirty and not self._closed:
                await self._pause(wait)

    async def _pause(self, wait_s: float) -> None:
        """Until ``wait_s`` has passed or a schedule changed (``changed``)."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(wait_s, _settle, wake)
        self._wake = wake
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def tick(self) -> float:
        """One wake-up: fire up to ``BATCH`` due items of each timetable; the seconds until the loop should look
        again."""
        now = self._clock()
        fired = 0
        more = False
        for timetable in self._timetables:
            due = await timetable.due(now, BATCH)
            for item in due:
                if not self._invoker.has_room(MAX_EVENTS_PER_RUN):
                    log.warning("the async queue is full; scheduled runs wait")
                    return _RETRY_AFTER_FAULT_S
                events = await timetable.fire(item, now)
                if events is not None:  # else changed meanwhile: its new due time stands
                    fired += 1
                    self._invoker.adopt(events)
            more = more or len(due) == BATCH
        if more and fired:
            return 0.0  # more may be due: look again at once (a full batch that fired nothing waits below)
        known = [when for timetable in self._timetables if (when := await timetable.earliest()) is not None]
        if not known:
            return MAX_WAIT_S
        wait = min(max(min(known) - self._clock(), 0.0), MAX_WAIT_S)
        # Due but not fired (each changed while this wake-up ran): a short pause rather than a spin.
        return wait if wait > 0 or fired else _MIN_WAIT_S


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class ScheduleTimetable:
    """EventBridge Scheduler's schedules as a ``Timetable``. ``targets`` checks a run's target when it is due
    (None: not checked, every run is handed on); ``arn`` names a schedule (group, name) for its dead letters."""

    def __init__(
        self,
        store: ScheduleStore,
        targets: Targets | None = None,
        arn: Callable[[str, str], str] = lambda group, name: f"schedule/{group}/{name}",
    ) -> None:
        self._store = store
        self._targets = targets
        self._arn = arn

    async def due(self, now: float, limit: int) -> Sequence[Schedule]:
        return await self._store.due(now, limit)

    async def earliest(self) -> float | None:
        return await self._store.earliest()

    async def fire(self, item: Any, now: float) -> list[StoredEvent] | None:
        schedule: Schedule = item
        doc = schedule.doc
        assert schedule.next_due is not None  # due() returns only schedules with one
        target = doc["Target"]
        arn = str(target["Arn"])
        retries, max_age = retry_policy(target)
        execution = ids.request_id()
        on_failure = OnFailure(
            retries,
            max_age,
            (target.get("DeadLetterConfig") or {}).get("Arn"),
            {
                "EXECUTION_ID": execution,
                "IS_PAYLOAD_TRUNCATED": "false",
                "SCHEDULED_TIME": _stamp(schedule.next_due),
                "SCHEDULE_ARN": self._arn(schedule.group, schedule.name),
                "TARGET_ARN": arn,
            },
            missing_code="ResourceNotFoundException",
            failed_code="AWS.SimpleQueueService.SendMessageFailed",
        )
        payload = str(target.get("Input") or "{}").encode()
        refusal = None if self._targets is None else await self._targets.refusal(arn)
        if refusal is not None:
            log.warning("schedule %s/%s: %s", schedule.group, schedule.name, refusal.message)
            events = Targets.dead_letter(on_failure, payload, refusal, on_failure.missing_code, at=now)
        else:
            group = (target.get("SqsParameters") or {}).get("MessageGroupId")
            events = [Targets.run(arn, payload, on_failure, fifo_group=group, at=now)]
        try:
            following = next_due(doc, schedule.created, max(now, schedule.next_due))
        except expressions.InvalidExpression:
            following = None
        delete = following is None and doc.get("ActionAfterCompletion") == "DELETE"
        done = await self._store.fire(schedule.replace(next_due=following), schedule.next_due, events, delete)
        if not done:
            return None
        log.info("schedule %s/%s ran (due %.3f)", schedule.group, schedule.name, schedule.next_due)
        return events
