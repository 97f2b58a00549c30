"""Schedules as a push source: the loop that runs EventBridge Scheduler's schedules when they are due.

Each schedule keeps its next due time in the store (``services.scheduler``). One task sleeps until the earliest
(at most ``MAX_WAIT_S``, and it is woken when a schedule changes), then takes up to ``BATCH`` due schedules per
wake-up. A run is one asynchronous invocation of the target function with the schedule's Input as its payload,
verbatim (``{}`` when there is none), stored in the same transaction that moves the schedule's next due time on
(``ScheduleStore.fire``), then handed to the async invoker: a crash neither loses nor repeats a run.

Runs missed while the server was down (or while the loop was behind): at most one catch-up run per schedule.
The next due time after a run is computed from *now*, so a schedule overdue by many periods runs once, then
resumes on its own times.

Retries: as on AWS, a schedule's RetryPolicy is about handing the invocation to Lambda, which here commits in
the run's own transaction and cannot fail; the function's errors are retried by its asynchronous configuration
(PutFunctionEventInvokeConfig: MaximumRetryAttempts, MaximumEventAgeInSeconds, destinations), as any
asynchronous invocation's are. DeadLetterConfig is kept and shown, not used yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from selfless import ids
from selfless.services.scheduler import expressions
from selfless.services.scheduler.service import next_due, target_function
from selfless.services.scheduler.store import Schedule, ScheduleStore
from selfless.store.base import StoredEvent

log = logging.getLogger(__name__)

BATCH = 100  # schedules fired per wake-up
MAX_WAIT_S = 60.0  # the loop looks again at least this often (a clock that jumps, a missed wake-up)
_RETRY_AFTER_FAULT_S = 5.0
_MIN_WAIT_S = 0.05


class Invoker(Protocol):
    """The async invoker's side the scheduler needs (``invocation.events.AsyncInvoker``)."""

    def has_room(self, count: int) -> bool: ...

    def adopt(self, events: list[StoredEvent]) -> None: ...


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Scheduler:
    """The loop that fires due schedules (see the module docstring). ``clock`` gives epoch seconds."""

    def __init__(self, store: ScheduleStore, invoker: Invoker, clock: Callable[[], float] = time.time) -> None:
        self._store = store
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
        """One wake-up: fire up to ``BATCH`` due schedules; the seconds until the loop should look again."""
        now = self._clock()
        due = await self._store.due(now, BATCH)
        fired = 0
        for schedule in due:
            if not self._invoker.has_room(1):
                log.warning("the async queue is full; schedules wait")
                return _RETRY_AFTER_FAULT_S
            fired += await self._fire(schedule, now)
        if len(due) == BATCH and fired:
            return 0.0  # more may be due: look again at once (a full batch that fired nothing waits below)
        earliest = await self._store.earliest()
        if earliest is None:
            return MAX_WAIT_S
        wait = min(max(earliest - self._clock(), 0.0), MAX_WAIT_S)
        # Due but not fired (each changed while this wake-up ran): a short pause rather than a spin.
        return wait if wait > 0 or fired else _MIN_WAIT_S

    async def _fire(self, schedule: Schedule, now: float) -> int:
        doc = schedule.doc
        assert schedule.next_due is not None  # due() returns only schedules with one
        target = doc["Target"]
        function = target_function(target["Arn"])
        events: list[StoredEvent] = []
        if function is not None:
            payload = str(target.get("Input") or "{}").encode()
            name, qualifier = function
            events.append(StoredEvent(ids.request_id(), name, qualifier, payload, None, now, trace_id=ids.trace_id()))
        try:
            following = next_due(doc, schedule.created, max(now, schedule.next_due))
        except expressions.InvalidExpression:
            following = None
        delete = following is None and doc.get("ActionAfterCompletion") == "DELETE"
        done = await self._store.fire(schedule.replace(next_due=following), schedule.next_due, events, delete)
        if not done:
            return 0  # changed meanwhile: its new due time stands
        self._invoker.adopt(events)
        log.info("schedule %s/%s ran (due %.3f)", schedule.group, schedule.name, schedule.next_due)
        return 1
