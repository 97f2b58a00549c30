"""Asynchronous invocation: accept an event durably, run it until it succeeds or reaches its failure path.

The path of an Event invocation:

1. ``accept``: the event joins the next group commit (every event accepted while the previous commit was on
   disk shares one transaction, one fsync) and the caller gets its 202 only once that commit returned.
2. The scheduler runs each queued event when it is due (a retry's delay) through the same invocation path as
   a synchronous call, at most ``_CONCURRENCY`` at once; an event is never run twice at the same time.
3. A throttle (no lease, no environment) is not an attempt: the event waits, backing off up to 5 minutes,
   for as long as its maximum age allows (6 hours by default, as on AWS). A function error is: the event
   runs again after ``retry_delay_s`` x attempts (AWS: about 1 minute, then 2), up to MaximumRetryAttempts
   (0-2, default 2). An event older than MaximumEventAgeInSeconds (60-21600) is not run again.
4. Settling is one transaction: the event is deleted (success) or kept as failed (RetriesExhausted,
   EventAgeExceeded), and the invocation record for the OnSuccess / OnFailure destination, if there is one,
   is accepted with it, as is the dead-letter message of a failed event (DeadLetterConfig). So after a crash
   every accepted event ends in exactly one success or one failure, though a function may run more than once
   (at least once, as on AWS).
5. A record for a Lambda function is an Event invocation of it. A record or dead-letter message for a queue,
   topic, bus or bucket is a delivery (``StoredEvent.target``): the scheduler sends it (``destinations.py``),
   and a delivery that does not go through waits and is tried again, backing off up to 5 minutes, for up to
   6 hours; then it is kept as failed, listed and re-drivable like a failed event.

A function whose reserved concurrency is 0 runs none of its events: as on AWS since 2021, they go to the
failure path at once, without retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless import ids, json_limits
from selfless.errors import ResourceNotFound, TooManyRequests
from selfless.functions import FunctionRegistry
from selfless.invocation.destinations import (
    DeliveryError,
    Destinations,
    Message,
    OnFailure,
    dead_letter_attributes,
    decode_options,
    encode_options,
    extras_of,
)
from selfless.invocation.inflight import Outcome
from selfless.models import Function
from selfless.store.base import MetadataStore, StoredEvent, encode_lineage

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2
DEFAULT_MAX_AGE_S = 21_600
_CONCURRENCY = 64
_THROTTLE_BACKOFF_MAX_S = 300.0
_MAX_GROUP = 2_000  # events per group commit
_RETRY_AFTER_FAULT_S = 5
# A delivery to a queue, topic, bus or bucket is tried again for this long before it is kept as failed.
DELIVERY_MAX_AGE_S = 21_600
_LAMBDA_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>[a-zA-Z0-9_$-]+))?$"
)

# (function, payload, client context, request id, invoked ARN, lineage, trace header)
Run = Callable[[Function, bytes, "str | None", str, str, "Mapping[str, int] | None", "str | None"], Awaitable[Outcome]]
# AWS stops a chain of asynchronous invocations that comes back to one function more than this many times.
# AWS's words when Put/Update/ListFunctionEventInvokeConfig(s) name a function, version or alias that does
# not exist, and when a function, version or alias has no configuration.
_NO_FUNCTION = "The function doesn't exist."


def _no_config(arn: str) -> str:
    return f"The function {arn} doesn't have an EventInvokeConfig"


RECURSION_LIMIT = 16
RECURSION_CONDITION = "RecursiveInvocationException"


@dataclasses.dataclass(frozen=True)
class Policy:
    """What applies to one function's (or version's, alias's) events."""

    max_retries: int = DEFAULT_RETRIES
    max_age_s: int = DEFAULT_MAX_AGE_S
    on_success: str | None = None
    on_failure: str | None = None


class EventInvokeConfigs:
    """Put/Update/Get/Delete/ListFunctionEventInvokeConfigs, kept in the metadata store."""

    def __init__(self, store: MetadataStore, registry: FunctionRegistry, destinations: Destinations) -> None:
        self._store = store
        self._registry = registry
        self._destinations = destinations
        self._configs: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for doc in await self._store.list_event_invoke_configs():
            self._configs[(doc["name"], doc["qualifier"])] = doc

    def _target(self, name_or_arn: str, qualifier: str | None, changing: bool) -> tuple[str, str, str]:
        """(function name, qualifier, the FunctionArn AWS shows: qualified, $LATEST by default). A function,
        version or alias that does not exist is ResourceNotFound in the words AWS uses for the operation:
        "The function doesn't exist." when ``changing`` (Put, Update), else that it has no configuration."""
        name, qualifier = self._registry.resolve(name_or_arn, qualifier)
        qualifier = qualifier or "$LATEST"
        arn = f"{self._registry.arn(name)}:{qualifier}"
        try:
            self._registry.get(name, qualifier)
        except ResourceNotFound:
            raise ResourceNotFound(_NO_FUNCTION if changing else _no_config(arn)) from None
        return name, qualifier, arn

    async def put(
        self, name_or_arn: str, qualifier: str | None, params: Mapping[str, Any], merge: bool
    ) -> dict[str, Any]:
        """PutFunctionEventInvokeConfig (``merge`` False: what is not given goes back to its default) or
        UpdateFunctionEventInvokeConfig (``merge`` True)."""
        name, qualifier, arn = self._target(name_or_arn, qualifier, changing=True)
        if merge and (name, qualifier) not in self._configs:
            raise ResourceNotFound(_no_config(arn))
        for kind in ("OnSuccess", "OnFailure"):
            destination = ((params.get("DestinationConfig") or {}).get(kind) or {}).get("Destination")
            if destination and not _LAMBDA_ARN.match(destination):
                await self._destinations.check(destination, usage=kind)
        async with self._lock:
            old = self._configs.get((name, qualifier))
            doc: dict[str, Any] = dict(old) if merge and old is not None else {}
            for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
                if key in params:
                    doc[key] = params[key]
            if "DestinationConfig" in params:
                merged = dict(doc.get("DestinationConfig") or {}) if merge else {}
                merged.update({k: v for k, v in (params["DestinationConfig"] or {}).items() if v is not None})
                doc["DestinationConfig"] = merged
            doc.update({"name": name, "qualifier": qualifier, "FunctionArn": arn, "LastModified": time.time()})
            await self._store.put_event_invoke_config(name, qualifier, doc)
            self._configs[(name, qualifier)] = doc
        return self.shown(doc)

    def get(self, name_or_arn: str, qualifier: str | None) -> dict[str, Any]:
        name, qualifier, arn = self._target(name_or_arn, qualifier, changing=False)
        doc = self._configs.get((name, qualifier))
        if doc is None:
            raise ResourceNotFound(_no_config(arn))
        return self.shown(doc)

    async def delete(self, name_or_arn: str, qualifier: str | None) -> None:
        name, qualifier, arn = self._target(name_or_arn, qualifier, changing=False)
        async with self._lock:
            if (name, qualifier) not in self._configs:
                raise ResourceNotFound(_no_config(arn))
            await self._store.put_event_invoke_config(name, qualifier, None)
            del self._configs[(name, qualifier)]

    def list(self, name_or_arn: str) -> list[dict[str, Any]]:
        try:
            name = self._registry.latest(name_or_arn).name
        except ResourceNotFound:
            raise ResourceNotFound(_NO_FUNCTION) from None
        return [self.shown(doc) for (n, _q), doc in sorted(self._configs.items()) if n == name]

    def forget(self, name: str, qualifier: str | None) -> None:
        """A function (every configuration of it) or a version or alias went away (the store dropped them)."""
        for key in [k for k in self._configs if k[0] == name and (qualifier is None or k[1] == qualifier)]:
            del self._configs[key]

    def policy(self, name: str, qualifier: str | None) -> Policy:
        doc = self._configs.get((name, qualifier or "$LATEST")) or {}
        destinations = doc.get("DestinationConfig") or {}
        return Policy(
            max_retries=doc.get("MaximumRetryAttempts", DEFAULT_RETRIES),
            max_age_s=doc.get("MaximumEventAgeInSeconds", DEFAULT_MAX_AGE_S),
            on_success=(destinations.get("OnSuccess") or {}).get("Destination"),
            on_failure=(destinations.get("OnFailure") or {}).get("Destination"),
        )

    @staticmethod
    def shown(doc: Mapping[str, Any]) -> dict[str, Any]:
        """FunctionEventInvokeConfig as AWS returns it."""
        out: dict[str, Any] = {"LastModified": doc["LastModified"], "FunctionArn": doc["FunctionArn"]}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if key in doc:
                out[key] = doc[key]
        destinations = doc.get("DestinationConfig") or {}
        # AWS always shows both, one without a destination (none given, or an empty Destination) as {}.
        out["DestinationConfig"] = {
            kind: {k: v for k, v in (destinations.get(kind) or {}).items() if v} for kind in ("OnSuccess", "OnFailure")
        }
        return out


def record(
    event: StoredEvent, function_arn: str, condition: str, attempts: int, outcome: Outcome | None, version: str
) -> dict[str, Any]:
    """AWS's invocation record (version 1.0), what a destination receives."""
    now = time.time()
    doc: dict[str, Any] = {
        "version": "1.0",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "requestContext": {
            "requestId": event.id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": _json_or_text(event.payload),
    }
    if outcome is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": version}
        if outcome.failed:
            response["functionError"] = "Unhandled"
        doc["responseContext"] = response
        doc["responsePayload"] = _json_or_text(outcome.payload)
    return doc


def _gate_key(event: StoredEvent) -> str:
    return f"{event.function_name}:{event.qualifier or '$LATEST'}"


def _json_or_text(data: bytes) -> Any:
    """A payload as a record carries it: its JSON, else (not JSON, or nested too deep to re-encode) text."""
    try:
        return json_limits.loads(data) if data else None
    except ValueError:
        return data.decode("utf-8", "replace")


class AsyncInvoker:
    """The durable queue and its scheduler (see the module docstring)."""

    def __init__(
        self,
        store: MetadataStore,
        registry: FunctionRegistry,
        configs: EventInvokeConfigs,
        run: Run,
        destinations: Destinations,
        *,
        limit: int,
        retry_delay_s: float,
    ) -> None:
        self._store = store
        self._registry = registry
        self._configs = configs
        self._run = run
        self._destinations = destinations
        self._limit = limit
        self._retry_delay_s = retry_delay_s
        self._pending: list[tuple[StoredEvent, asyncio.Future[None]]] = []
        self._written = asyncio.Event()
        self._heap: list[tuple[float, int, StoredEvent]] = []
        self._seq = itertools.count()
        self._more = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Per function (name:qualifier): not before this time, and throttles in a row. One throttled event
        # holds back its function's others, so a function with no room costs a heap move per event per
        # backoff, not a run attempt.
        self._gates: dict[str, tuple[float, int]] = {}
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- intake ---------------------------------------------------------------------------------------------

    async def accept(self, event: StoredEvent) -> None:
        """Durable when this returns (raises TooManyRequests when the queue is full or closing)."""
        if self._closed or self.queued >= self._limit:
            raise TooManyRequests("Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, done))
        self._written.set()
        await done

    def has_room(self, count: int) -> bool:
        """Whether ``count`` more events fit in the queue now (for a service that stores events in its own
        transaction, then hands them over with :meth:`adopt`: it refuses its request when this is False)."""
        return not self._closed and self.queued + count <= self._limit

    def adopt(self, events: list[StoredEvent]) -> None:
        """Schedule events another service has already made durable (committed with its own change, such as
        an object and its bucket notifications in one transaction). Events committed but not adopted (a
        crash in between) are found by :meth:`start` after a restart, like any accepted event."""
        for event in events:
            self._schedule(event)

    @property
    def queued(self) -> int:
        return len(self._pending) + len(self._heap) + len(self._running)

    async def _write_groups(self) -> None:
        while True:
            await self._written.wait()
            self._written.clear()
            while self._pending:
                group, self._pending = self._pending[:_MAX_GROUP], self._pending[_MAX_GROUP:]
                try:
                    await self._store.add_events([event for event, _ in group])
                except Exception as exc:
                    log.error("could not store %d events, so they were not accepted: %s", len(group), exc)
                    for _event, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for event, done in group:
                    self._schedule(event)
                    if not done.done():
                        done.set_result(None)

    # -- scheduling -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Queue again what was accepted and not settled before a restart, then start."""
        for event in await self._store.list_events():
            if event.state == "queued":
                self._schedule(event)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write_groups()), loop.create_task(self._dispatch())]

    def _schedule(self, event: StoredEvent) -> None:
        heapq.heappush(self._heap, (event.next_at, next(self._seq), event))
        self._more.set()

    async def _dispatch(self) -> None:
        while True:
            if not self._heap:
                await self._more.wait()
                self._more.clear()
                continue
            wait = self._heap[0][0] - time.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._more.wait()
                self._more.clear()
                continue
            _due, _seq, event = heapq.heappop(self._heap)
            gate = self._gates.get(_gate_key(event))
            if gate is not None and gate[0] > time.time():
                heapq.heappush(self._heap, (gate[0], next(self._seq), event))
                continue
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._guarded(event))
            self._running[event.id] = task
            task.add_done_callback(functools.partial(self._finished, event.id))

    def _finished(self, event_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(event_id, None)
        self._slots.release()

    # -- one attempt ----------------------------------------------------------------------------------------

    async def _guarded(self, event: StoredEvent) -> None:
        """An attempt that fails in an unforeseen way (a store error, a backstop deadline) is tried again
        later: the event stays queued in the store whatever happens here, and in memory too."""
        try:
            await self._attempt(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event %s for %s: the attempt failed; trying again in %d s", event.id,
                          event.function_name, _RETRY_AFTER_FAULT_S)  # fmt: skip
            self._schedule(event.replace(next_at=time.time() + _RETRY_AFTER_FAULT_S))

    async def _attempt(self, event: StoredEvent) -> None:
        if event.target is not None:
            await self._deliver(event)
            return
        policy = self._configs.policy(event.function_name, event.qualifier)
        try:
            fn, invoked = self._registry.for_invoke(event.function_name, event.qualifier)
        except ResourceNotFound:
            on_failure = decode_options(event.attributes)[2]
            if on_failure is not None:  # a scheduled run: its dead-letter queue learns that the target is gone
                message = f"Function not found: {event.function_name}"
                await self._give_up(event, on_failure, on_failure.missing_code, message, None)
                return
            log.warning("dropping event %s: function %s no longer exists", event.id, event.function_name)
            await self._store.delete_event(event.id)
            return
        arn = f"{fn.arn}:{fn.version}" if fn.version == "$LATEST" else fn.arn
        if time.time() - event.accepted_at > policy.max_age_s:
            await self._settle_failed(event, policy, arn, "EventAgeExceeded", None, fn.version)
            return
        chain = event.chain()
        runs = chain.get(fn.name, 0)
        if runs >= RECURSION_LIMIT and self._registry.latest(fn.name).recursive_loop == "Terminate":
            log.warning(
                "event %s for %s stopped: a recursive loop (%d runs of %s in its chain)", event.id, arn, runs, fn.name
            )
            await self._settle_failed(event, policy, arn, RECURSION_CONDITION, None, fn.version)
            return
        if self._registry.latest(fn.name).reserved_concurrency == 0:
            # AWS (since August 2021): a function turned off runs none of its events, and does not retry them.
            log.warning("event %s for %s: reserved concurrency is 0; to the failure path", event.id, arn)
            await self._settle_failed(event, policy, arn, "RetriesExhausted", None, fn.version)
            return
        chain[fn.name] = runs + 1
        try:
            outcome = await self._run(fn, event.payload, event.client_context, event.id, invoked, chain, event.trace_id)
        except TooManyRequests:
            self._back_off(event, _gate_key(event))
            return
        self._gates.pop(_gate_key(event), None)
        attempts = event.attempts + 1
        log.info(
            "event %s for %s: attempt %d of %d %s",
            event.id, fn.qualified_name, attempts, policy.max_retries + 1,
            f"failed ({outcome.error_type})" if outcome.failed else "succeeded",
        )  # fmt: skip
        if not outcome.failed:
            then = self._delivery(policy.on_success, event, arn, "Success", attempts, outcome, fn.version)
            await self._settle(event.replace(attempts=attempts), then)
            return
        event = event.replace(attempts=attempts, last_error=outcome.error_type)
        if attempts <= policy.max_retries:
            event = event.replace(next_at=time.time() + self._retry_delay_s * attempts)
            await self._store.update_event(event)
            self._schedule(event)
            return
        await self._settle_failed(event, policy, arn, "RetriesExhausted", outcome, fn.version)

    def _back_off(self, event: StoredEvent, key: str) -> None:
        """Not now (a throttle, an unreachable destination): this event and the others behind the same gate
        wait, twice as long each time in a row, up to 5 minutes."""
        throttles = self._gates.get(key, (0.0, 0))[1] + 1
        backoff = min(_THROTTLE_BACKOFF_MAX_S, 0.5 * 2 ** min(throttles, 10))
        self._gates[key] = (time.time() + backoff, throttles)
        self._schedule(event.replace(next_at=time.time() + backoff))

    async def _deliver(self, event: StoredEvent) -> None:
        """One attempt to send a record or dead-letter message to its queue, topic, bus or bucket."""
        target = event.target
        assert target is not None
        attributes, fifo, on_failure = decode_options(event.attributes)
        try:
            subject, entry = extras_of(event.attributes)
            await self._destinations.send(Message(target, event.payload, attributes, fifo, subject, entry))
        except DeliveryError as exc:
            event = event.replace(attempts=event.attempts + 1, last_error=str(exc)[:500])
            if on_failure is not None:
                condition = None
                if event.attempts > on_failure.max_retries:
                    condition = "MaximumRetryAttempts"
                elif time.time() - event.accepted_at > on_failure.max_age_s:
                    condition = "MaximumEventAgeInSeconds"
                if condition is not None:
                    await self._give_up(event, on_failure, on_failure.failed_code, str(exc), condition)
                    return
            if on_failure is None and time.time() - event.accepted_at > DELIVERY_MAX_AGE_S:
                log.error("delivery %s to %s failed for 6 hours (%s); kept as failed (selfless events %s)",
                          event.id, event.target, exc, event.function_name)  # fmt: skip
                await self._settle(event.replace(state="failed", failure="DeliveryFailed"), [])
                return
            log.warning("delivery %s to %s: attempt %d failed: %s", event.id, event.target, event.attempts, exc)
            await self._store.update_event(event)
            self._back_off(event, target)
            return
        self._gates.pop(target, None)
        await self._settle(event, [])

    async def _give_up(
        self, event: StoredEvent, on_failure: OnFailure, code: str, message: str, condition: str | None
    ) -> None:
        """A scheduled run that cannot reach its target: done, and its dead-letter message (if it has a
        dead-letter queue; else it is dropped, as AWS drops it) accepted in the same transaction."""
        retries = max(event.attempts - 1, 0)
        log.warning("scheduled run %s for %s failed (%s, %s); %s", event.id, event.target or event.function_name,
                    code, message, f"to {on_failure.dead_letter}" if on_failure.dead_letter else "dropped")  # fmt: skip
        then = []
        if on_failure.dead_letter:
            shown = on_failure.dead_letter_attributes(code, message, retries, condition)
            attributes = encode_options(shown, None, None)
            dead = StoredEvent(ids.request_id(), event.function_name, None, event.payload, None, time.time())
            then.append(dead.replace(target=on_failure.dead_letter, attributes=attributes))
        self._gates.pop(event.target or "", None)
        await self._settle(event.replace(state="queued"), then)

    async def _settle_failed(
        self, event: StoredEvent, policy: Policy, arn: str, condition: str, outcome: Outcome | None, version: str
    ) -> None:
        log.warning("event %s for %s failed: %s after %d attempts", event.id, arn, condition, event.attempts)
        then = self._delivery(policy.on_failure, event, arn, condition, event.attempts, outcome, version)
        dead_letter = (self._registry.latest(event.function_name).extra.get("DeadLetterConfig") or {}).get("TargetArn")
        if dead_letter:
            then.append(self._dead_letter(dead_letter, event, condition, outcome))
        await self._settle(event.replace(state="failed", failure=condition), then)

    async def _settle(self, event: StoredEvent, then: list[StoredEvent]) -> None:
        """Durably done, with its destination's record accepted in the same transaction; then that record
        is queued like any accepted event."""
        await self._store.settle_event(event, then)
        for follow in then:
            self._schedule(follow)

    def _delivery(
        self,
        destination: str | None,
        event: StoredEvent,
        arn: str,
        condition: str,
        attempts: int,
        outcome: Outcome | None,
        version: str,
    ) -> list[StoredEvent]:
        """The destination's event carrying the invocation record (none without a destination): an Event
        invocation of a function, or a delivery to a queue, topic, bus or bucket."""
        if not destination:
            return []
        doc = record(event, arn, condition, attempts, outcome, version)
        payload = json.dumps(doc).encode()
        found = _LAMBDA_ARN.match(destination)
        if found is None:
            return [self._to_target(destination, event, payload, None)]
        # The record continues its event's chain: a loop through destinations is a loop too.
        chain = event.chain()
        source = event.function_name
        chain[source] = chain.get(source, 0) + (0 if condition == RECURSION_CONDITION else 1)
        name, qualifier = found.group("name"), found.group("qualifier")
        lineage = encode_lineage(chain)
        return [StoredEvent(ids.request_id(), name, qualifier, payload, None, time.time(), lineage=lineage)]

    def _dead_letter(self, target: str, event: StoredEvent, condition: str, outcome: Outcome | None) -> StoredEvent:
        """The dead-letter message of a failed event: its payload unchanged, with AWS's attributes. ErrorCode
        is the invoke's HTTP status: 200 when the function ran and failed, 429 when it never ran."""
        message = condition
        if outcome is not None:
            answer = _json_or_text(outcome.payload)
            message = str(answer.get("errorMessage", "")) if isinstance(answer, dict) else str(answer or "")
            message = message or outcome.error_type or condition
        status = 200 if outcome is not None or event.last_error else 429
        return self._to_target(target, event, event.payload, dead_letter_attributes(event.id, status, message))

    @staticmethod
    def _to_target(
        target: str, event: StoredEvent, payload: bytes, attributes: Mapping[str, str] | None
    ) -> StoredEvent:
        encoded = json.dumps(dict(attributes), separators=(",", ":")) if attributes else None
        return StoredEvent(
            ids.request_id(), event.function_name, event.qualifier, payload, None, time.time(),
            target=target, attributes=encoded,
        )  # fmt: skip

    # -- what is there --------------------------------------------------------------------------------------

    async def events(self, function_name: str) -> list[StoredEvent]:
        """Queued, retrying (attempts > 0) and failed events of a function, oldest first."""
        return [e for e in await self._store.list_events() if e.function_name == function_name]

    async def redrive(self, function_name: str) -> int:
        """Queue the function's failed events again (a fresh start: attempts and age count anew)."""
        count = 0
        for event in await self.events(function_name):
            if event.state != "failed":
                continue
            again = event.replace(state="queued", failure=None, attempts=0, next_at=0.0, accepted_at=time.time())
            await self._store.update_event(again)  # one statement: never both states, never neither
            self._schedule(again)
            count += 1
        return count

    # -- shutdown -------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking and starting events; events running now are cancelled by the service's drain and
        stay queued in the store (they run again after a restart)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _event, done in self._pending:
            if not done.done():
                done.set_exception(TooManyRequests("Rate Exceeded.", "ServerShuttingDown"))
        self._pending.clear()

    async def cancel_running(self) -> None:
        """Attempts still running at the end of a shutdown's grace: cancelled (they stay queued)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
