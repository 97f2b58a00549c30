"""The invocation service: resolve the function, then run synchronously or accept for later.

    invoke(request)
      ├─ RequestResponse: lease an environment ─> assign ─> await its outcome (the environment enforces the
      │                   function's deadline; this wait has a backstop deadline of its own)
      ├─ Event:           durable in the metadata store before the 202 ─> bounded queue ─> same path
      └─ DryRun:          checks only (204)

A client that disconnects does not cancel its invocation: the function runs to its end, as on AWS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from selfless import ids, json_limits
from selfless.config import Settings
from selfless.errors import (
    InvalidRequestContent,
    RequestTooLarge,
    ResourceConflict,
    ServiceError,
    TooManyRequests,
)
from selfless.functions import FunctionRegistry
from selfless.invocation.inflight import Invocation, Outcome, OutcomeKind, error_payload
from selfless.invocation.leases import Lease, Leases
from selfless.models import Function, FunctionState, InvocationType, InvokeRequest, InvokeResult
from selfless.observability.metrics import Metrics
from selfless.sandbox.environment import Environment, EnvState
from selfless.sandbox.pool import EnvironmentPool
from selfless.store.base import MetadataStore, StoredEvent, encode_lineage

if TYPE_CHECKING:
    from selfless.invocation.events import AsyncInvoker

log = logging.getLogger(__name__)

MAX_SYNC_PAYLOAD = 6_291_456
MAX_ASYNC_PAYLOAD = 1_048_576
MAX_CLIENT_CONTEXT = 3583
_ASYNC_CONCURRENCY = 64
# Beyond the function's timeout and init, how long a caller waits before we call it our fault.
_BACKSTOP_S = 30.0
# How often the backstops of running invocations are checked (one timer for them all, not one per call).
_BACKSTOP_SWEEP_S = 1.0


class _Prepared(NamedTuple):
    fn: Function
    invoked: str
    payload: bytes
    client_context: str | None
    request_id: str
    trace: str


class Started(NamedTuple):
    """A RequestResponse invocation on its way (InvocationService.start)."""

    outcome: asyncio.Future[Outcome]
    fn: Function
    request_id: str
    tail_logs: bool


class InvocationService:
    def __init__(
        self,
        settings: Settings,
        registry: FunctionRegistry,
        pool: EnvironmentPool,
        store: MetadataStore,
        metrics: Metrics,
        leases: Leases,
    ) -> None:
        self._leases = leases
        self._settings = settings
        self._metrics = metrics
        self._registry = registry
        self._pool = pool
        self._store = store
        # The asynchronous path (invocation/events.py), set by the composition root: it runs events through
        # ``run`` and so needs this service first.
        self.events: AsyncInvoker | None = None
        self._sync: set[asyncio.Task[Outcome]] = set()  # synchronous ones, which outlive their callers
        self._sync_stops: set[asyncio.Task[None]] = set()  # environments stopped by the backstop
        # Running synchronous invocations: their backstop deadline (monotonic) and environment, checked by one
        # sweep every _BACKSTOP_SWEEP_S while there are any.
        self._running: dict[Invocation, tuple[float, Environment]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # -- entry point ------------------------------------------------------------------------------------

    async def invoke(self, req: InvokeRequest) -> InvokeResult:
        """Any invocation type: RequestResponse runs and answers its result (a caller that goes away leaves
        it running), Event is stored and answered 202, DryRun checks and answers 204."""
        if req.invocation_type is InvocationType.REQUEST_RESPONSE:
            started = self.start(req)
            return self.result(started, await asyncio.shield(started.outcome))
        p = self._prepare(req)
        if req.invocation_type is InvocationType.DRY_RUN:
            return InvokeResult(204, b"", request_id=p.request_id)
        await self._accept(p.fn, req.qualifier, p.payload, p.client_context, p.request_id, req.lineage, p.trace)
        return InvokeResult(202, b"", request_id=p.request_id)

    def start(self, req: InvokeRequest, then: Callable[[asyncio.Future[Outcome]], None] | None = None) -> Started:
        """A RequestResponse invocation checked (raising what ``invoke`` raises) and started, without waiting:
        the Future of its outcome, which the caller must not cancel (wait on it through ``asyncio.shield``, or
        a callback), and what ``result`` needs to answer it. ``then``: called with that Future once it is
        done, after the service's own bookkeeping (lease, metrics), in the same callback: no hop of its own."""
        p = self._prepare(req)
        # A synchronous call is counted in its chain too (a loop may go through it), but never stopped.
        lineage = {**req.lineage, p.fn.name: req.lineage.get(p.fn.name, 0) + 1} if req.lineage else None
        outcome = self._launch(
            p.fn, p.payload, p.client_context, p.request_id, p.invoked, lineage, p.trace, req.tail_logs, then
        )
        return Started(outcome, p.fn, p.request_id, req.tail_logs)

    @staticmethod
    def result(started: Started, outcome: Outcome) -> InvokeResult:
        """A RequestResponse invocation's answer."""
        return InvokeResult(
            200,
            outcome.payload,
            executed_version=started.fn.version,
            function_error="Unhandled" if outcome.failed else None,
            log_tail=outcome.log_tail if started.tail_logs else None,
            request_id=started.request_id,
        )

    def _prepare(self, req: InvokeRequest) -> _Prepared:
        fn, invoked = self._registry.for_invoke(req.function_name, req.qualifier)
        if fn.state is FunctionState.PENDING:
            raise ResourceConflict(
                "The operation cannot be performed at this time. The function is currently in the following "
                "state: Pending"
            )
        client_context = self._client_context(req.client_context)
        request_id = req.request_id or ids.request_id()
        if req.invocation_type is InvocationType.EVENT:
            if len(req.payload) > MAX_ASYNC_PAYLOAD:
                raise RequestTooLarge(
                    f"Request must be smaller than {MAX_ASYNC_PAYLOAD} bytes for the InvokeAsync operation"
                )
        elif len(req.payload) > MAX_SYNC_PAYLOAD:
            raise RequestTooLarge(
                f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"
            )
        payload = self._check_json(req.payload)
        # X-Ray: the caller's trace header when it sent one; else one of the call's own, sampled when the
        # function's tracing is Active.
        active = fn.tracing_active
        trace = ids.accepted_trace(req.trace_header, active) or ids.trace_id(active)
        return _Prepared(fn, invoked, payload, client_context, request_id, trace)

    @staticmethod
    def _check_json(payload: bytes) -> bytes:
        if not payload.strip():
            return b"{}"
        try:
            json_limits.loads(payload)
        except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
            raise InvalidRequestContent(
                f"Could not parse request body into json: Could not parse payload into json: {exc}"
            ) from None
        return payload

    @staticmethod
    def _client_context(raw: str | None) -> str | None:
        if raw is None:
            return None
        if len(raw) > MAX_CLIENT_CONTEXT:
            raise InvalidRequestContent(
                f"Client context must be smaller than {MAX_CLIENT_CONTEXT} bytes when base64-encoded"
            )
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8")
            json_limits.loads(text)
        except (binascii.Error, ValueError):
            raise InvalidRequestContent("Client context must be a valid Base64-encoded JSON object.") from None
        return text

    # -- synchronous path -------------------------------------------------------------------------------

    async def run(
        self,
        fn: Function,
        payload: bytes,
        client_context: str | None,
        request_id: str,
        invoked_arn: str = "",
        lineage: Mapping[str, int] | None = None,
        trace: str | None = None,
    ) -> Outcome:
        """Run one invocation on an environment of ``fn`` and return its outcome (never raises for
        function failures; raises TooManyRequests when no lease or environment can be had). See
        ``_launch``."""
        started = self._launch(fn, payload, client_context, request_id, invoked_arn, lineage, trace)
        return await asyncio.shield(started)

    def _launch(
        self,
        fn: Function,
        payload: bytes,
        client_context: str | None,
        request_id: str,
        invoked_arn: str = "",
        lineage: Mapping[str, int] | None = None,
        trace: str | None = None,
        tail: bool = False,
        then: Callable[[asyncio.Future[Outcome]], None] | None = None,
    ) -> asyncio.Future[Outcome]:
        """Start one invocation on an environment of ``fn``: the Future of its outcome (which fails with
        TooManyRequests when no environment can be had); raises TooManyRequests at once without a lease.

        A caller that goes away (its request task is cancelled) leaves the invocation running to its end,
        holding its lease and its environment until then, as on AWS: the lease is given back by the outcome's
        own callback, never by the caller. An idle environment is taken and given the call right here (the
        warm path: no task of its own); otherwise a task leases one (it may start one) and the caller waits
        for that task. ``invoked_arn``: the ARN as the caller named it (with its alias or version), for the
        context object; ``fn.arn`` when empty. ``lineage``: the chain this call belongs to, this function's
        run counted in. ``trace``: its X-Ray trace header (a new one, sampled as the function's tracing
        says, when None). ``tail``: keep the log's last lines for the answer (LogType: Tail). ``then``: see
        ``start``."""
        try:
            lease = self._leases.acquire(fn.name)
        except TooManyRequests as exc:
            self._throttled(exc)
            raise
        self._inflight += 1
        self._idle.clear()
        loop = asyncio.get_running_loop()  # once: in CPython 3.11 each call costs a getpid() system call
        inv = Invocation(
            request_id,
            payload,
            function_arn=invoked_arn or fn.arn,
            timeout_s=fn.timeout,
            client_context=client_context,
            trace_id=trace or ids.trace_id(fn.tracing_active),
            lineage=lineage,
            loop=loop,
            tail=tail,
        )
        env = self._pool.take_idle(fn)
        if env is not None:
            self._begin(fn, env, inv, lease, then)
            return inv.done
        task = loop.create_task(self._start_and_run(fn, inv, lease))
        self._sync.add(task)
        task.add_done_callback(self._sync.discard)
        if then is not None:
            task.add_done_callback(then)
        return task

    async def _start_and_run(self, fn: Function, inv: Invocation, lease: Lease) -> Outcome:
        """The path without an idle environment: lease one (which may start it), then as the warm path."""
        try:
            env = await self._pool.lease(fn)
        except TooManyRequests as exc:
            self._throttled(exc)
            self._settled(lease)
            raise
        except OSError as exc:
            # No environment could even be built (its runtime vanished from this host).
            log.warning("no environment for %s: %s", fn.name, exc)
            self._settled(lease)
            body = error_payload(
                "Runtime.InvalidEntrypoint", f"RequestId: {inv.request_id} Error: Couldn't start the runtime: {exc}"
            )
            return Outcome(OutcomeKind.START_FAILED, body, "Runtime.InvalidEntrypoint")
        except BaseException:
            self._settled(lease)
            raise
        if env.state is EnvState.STARTING:
            self._metrics.cold_starts.labels(fn.name).inc()
        self._begin(fn, env, inv, lease)
        return await inv.done

    def _begin(
        self,
        fn: Function,
        env: Environment,
        inv: Invocation,
        lease: Lease,
        then: Callable[[asyncio.Future[Outcome]], None] | None = None,
    ) -> None:
        """Give ``inv`` to ``env``; from here its outcome (or the backstop) settles the lease, exactly once.
        ``then``: called last by the outcome's callback."""
        deadline_s = max(10.0, float(fn.timeout)) + fn.timeout + _BACKSTOP_S
        self._running[inv] = (time.monotonic() + deadline_s, env)
        if self._sweeper is None:
            self._sweeper = inv.done.get_loop().call_later(_BACKSTOP_SWEEP_S, self._sweep_backstops)

        def finished(done: asyncio.Future[Outcome]) -> None:
            self._running.pop(inv, None)
            self._settled(lease)
            if not done.cancelled() and done.exception() is None:
                outcome = done.result()
                self._metrics.invocation(fn.name, outcome.kind.value, outcome.duration_ms / 1000)
                if outcome.platform_init_ms is not None:
                    self._metrics.start_overhead.observe(outcome.platform_init_ms / 1000)
            if then is not None:
                then(done)

        inv.done.add_done_callback(finished)
        try:
            env.assign(inv)
        except BaseException as exc:
            if not inv.done.done():
                inv.done.set_exception(exc)
            raise

    def _sweep_backstops(self) -> None:
        """Stop the environments of invocations past their backstop; re-armed while any are running."""
        self._sweeper = None
        now = time.monotonic()
        late = [(inv, env) for inv, (deadline, env) in self._running.items() if deadline <= now]
        for inv, env in late:
            del self._running[inv]
            self._backstop(env, inv)
        if self._running:
            self._sweeper = asyncio.get_running_loop().call_later(_BACKSTOP_SWEEP_S, self._sweep_backstops)

    def _backstop(self, env: Environment, inv: Invocation) -> None:
        """The environment never settled ``inv`` (its own deadline should have): our fault; stop it."""
        if inv.done.done():
            return
        log.error("invocation %s passed its backstop deadline; stopping its environment", inv.request_id)
        task = asyncio.get_running_loop().create_task(self._stop_stuck(env, inv))
        self._sync_stops.add(task)
        task.add_done_callback(self._sync_stops.discard)

    @staticmethod
    async def _stop_stuck(env: Environment, inv: Invocation) -> None:
        await env.stop()  # which settles the invocation if it can (its REPORT included)
        if not inv.done.done():
            inv.done.set_exception(ServiceError("The invocation did not finish in time"))

    def _settled(self, lease: Lease) -> None:
        """Every path gives the lease back exactly once: response, error, timeout, crash, no environment."""
        self._leases.release(lease)
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    def _throttled(self, exc: TooManyRequests) -> None:
        self._metrics.throttles.labels(exc.reason).inc()

    # -- asynchronous path ------------------------------------------------------------------------------

    async def _accept(
        self,
        fn: Function,
        qualifier: str | None,
        payload: bytes,
        client_context: str | None,
        request_id: str,
        lineage: Mapping[str, int],
        trace: str,
    ) -> None:
        if self._closed or self.events is None:
            raise TooManyRequests("Rate Exceeded.", "ServerShuttingDown")
        event = StoredEvent(
            request_id,
            fn.name,
            qualifier,
            payload,
            client_context,
            time.time(),
            lineage=encode_lineage(lineage),
            trace_id=trace,
        )
        await self.events.accept(event)

    # -- shutdown ---------------------------------------------------------------------------------------

    async def drain(self, deadline_s: float) -> bool:
        """Stop taking events and wait for in-flight invocations; True when all finished in time. Events
        cut off here stay queued in the store and run after a restart."""
        self._closed = True
        if self.events is not None:
            await self.events.close()
        try:
            async with asyncio.timeout(deadline_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            if self.events is not None:
                await self.events.cancel_running()
        return True

    @property
    def inflight(self) -> int:
        return self._inflight
