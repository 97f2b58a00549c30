"""The environment pool: warm environments per function generation, started on demand, retired when idle.

- ``lease(function)`` gives an environment that will run exactly one invocation: the most recently used
  idle one of that function's current generation, or a new one when all are busy (never more environments
  than requests: a new one is started only for a request that found none idle).
- Starts are CPU-bound, so at most ``max_starting`` run at once (from spawn to the end of init): a burst
  past that does not slow every start down together. A request beyond it waits, up to ``START_WAIT_S``,
  for whichever comes first: a start slot (FIFO over all functions) or an environment of its own function
  coming free (FIFO per function). Past the wait it is throttled.
- Provisioned concurrency (``provision``): a version's environments started and initialised ahead, kept
  apart from on-demand ones. Calls go to an idle provisioned environment first and spill over to on-demand
  ones; keep-alive and eviction never stop them, and one that dies is replaced.

Environments belong to a *qualified* name (``name`` for $LATEST, ``name:N`` for version N) and generation.
- An environment returns itself (``_on_free``) the moment its runtime posts a response; an environment of
  an old generation (the function was updated or deleted) is stopped instead of going back.
- A sweeper stops environments idle past the keep-alive; past ``max_environments``, or past the memory
  budget (the sum of live environments' MemorySize), the least recently used idle environments of any
  function are stopped to make room, and when none is idle the lease is refused with TooManyRequests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable

from selfless.errors import TooManyRequests
from selfless.models import Function
from selfless.sandbox.environment import Environment, EnvState

log = logging.getLogger(__name__)

EnvKey = tuple[str, int]
EnvFactory = Callable[[Function, str, bool], Environment]  # (function, environment id, provisioned)
# How long a request waits for a start slot or a freed environment before it is throttled.
START_WAIT_S = 10.0
_PRESSURE_TICK_S = 0.25
_PRESSURE_BATCH = 4


class _Slot:
    """What a waiting request gets when a start slot is its: it may start an environment."""


_SLOT = _Slot()
_Handoff = asyncio.Future[Environment | _Slot]


class ProvisioningFailed(Exception):
    """A provisioned environment could not be made ready; ``reason`` is AWS's StatusReason text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(eq=False)
class _Provisioned:
    function: Function
    target: int
    envs: set[Environment] = dataclasses.field(default_factory=set)
    idle: list[Environment] = dataclasses.field(default_factory=list)
    filling: asyncio.Task[None] | None = None

    def ready(self) -> int:
        """Environments whose init is done (idle or busy)."""
        return sum(1 for e in self.envs if e.state in (EnvState.IDLE, EnvState.BUSY))


class EnvironmentPool:
    def __init__(
        self,
        factory: EnvFactory,
        *,
        keep_alive_s: float,
        max_environments: int,
        memory_budget_mb: int = 0,
        max_starting: int = 64,
        min_free_mb: int = 0,
        mem_available_mb: Callable[[], int | None] = lambda: 1 << 40,
        on_evict: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        """``memory_budget_mb`` 0: no memory budget, only the count bound. ``min_free_mb`` 0: no pressure
        evictor; else idle environments are stopped while ``mem_available_mb()`` is below it (None, the
        amount unknown, never counts as pressure)."""
        self._factory = factory
        self._min_free_mb = min_free_mb
        self._mem_available_mb = mem_available_mb
        self._on_evict = on_evict
        self._pressure: asyncio.Task[None] | None = None
        self._mem_unknown = False  # the last reading failed (said once per run of failures)
        self._max_starting = max_starting
        self._starting = 0
        # Requests waiting for a start slot (all functions, in arrival order), and the same requests by
        # function, for a freed environment. A future is resolved once, by whichever comes first; the
        # other queue drops it lazily.
        self._slot_waiters: deque[_Handoff] = deque()
        self._env_waiters: dict[EnvKey, deque[_Handoff]] = {}
        self._budget_mb = memory_budget_mb
        self._keep_alive_s = keep_alive_s
        self._max = max_environments
        self._idle: dict[EnvKey, list[Environment]] = {}
        self._all: dict[str, Environment] = {}
        self._current: dict[str, int] = {}  # qualified name -> current generation
        self._provisioned: dict[str, _Provisioned] = {}  # qualified name -> its provisioned environments
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- leasing ----------------------------------------------------------------------------------------

    def take_idle(self, function: Function) -> Environment | None:
        """An idle environment of ``function`` (provisioned ones first), ready to ``assign`` one invocation
        to at once; None when there is none (``lease`` then waits for one or starts one)."""
        self._current[function.qualified_name] = function.generation
        provisioned = self._provisioned.get(function.qualified_name)
        if provisioned is not None:
            while provisioned.idle:
                env = provisioned.idle.pop()
                if env.state is EnvState.IDLE:
                    return env
        idle = self._idle.get((function.qualified_name, function.generation))
        while idle:
            env = idle.pop()
            if env.state is EnvState.IDLE:
                return env
        return None

    async def lease(self, function: Function) -> Environment:
        """An environment ready to ``assign`` one invocation to. Raises TooManyRequests when full or when
        no start slot came in time, OSError when a new environment cannot start."""
        env = self.take_idle(function)
        if env is not None:
            return env
        key = (function.qualified_name, function.generation)
        if self._closed:
            raise TooManyRequests("Rate Exceeded.", "ServerShuttingDown")
        if self._starting >= self._max_starting:
            got = await self._wait_for_slot_or_env(key)
            if not isinstance(got, _Slot):
                return got
        else:
            self._starting += 1
        # Here this request holds a start slot, given back when the start is over (init done or failed).
        try:
            # Room by count and by memory (the sum of live environments' MemorySize): the least recently
            # used idle environments of any function go first; with none idle left, the call is refused.
            while len(self._all) >= self._max or self._over_budget(function.memory_size):
                if not self._evict_one("budget"):
                    raise TooManyRequests("Rate Exceeded.", "ConcurrentInvocationLimitExceeded")
            env_id = secrets.token_hex(16)
            env = self._factory(function, env_id, False)
        except BaseException:
            self._slot_done()
            raise
        self._all[env_id] = env
        env.started.add_done_callback(lambda _f: self._slot_done())
        env.claimed = True
        try:
            await env.start()
        except BaseException:
            # The call that wanted it went away (a shutdown): ready or not, it is anyone's.
            env.claimed = False
            if env.state is EnvState.IDLE and env.current is None:
                self._on_free(env)
            raise
        return env

    async def _wait_for_slot_or_env(self, key: EnvKey) -> Environment | _Slot:
        """Wait (up to START_WAIT_S) for a start slot, or for an environment of ``key`` to come free. With
        a slot, the caller has counted itself in ``_starting``."""
        while True:
            handoff: _Handoff = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(handoff)
            self._env_waiters.setdefault(key, deque()).append(handoff)
            try:
                async with asyncio.timeout(START_WAIT_S):
                    got = await asyncio.shield(handoff)
            except TimeoutError:
                if not handoff.done():
                    handoff.cancel()
                    raise TooManyRequests("Rate Exceeded.", "FunctionInvocationRateLimitExceeded") from None
                got = handoff.result()  # resolved as the deadline passed: still ours
            except asyncio.CancelledError:
                if handoff.done() and not handoff.cancelled():
                    self._return_handoff(handoff.result())
                else:
                    handoff.cancel()
                raise
            if isinstance(got, _Slot) or got.state is EnvState.IDLE:
                return got
            # The environment handed over died before we ran: wait again (a new deadline, as a new arrival).

    def _return_handoff(self, got: Environment | _Slot) -> None:
        if isinstance(got, _Slot):
            self._slot_done()
        elif got.state is EnvState.IDLE:
            self._on_free(got)

    def _slot_done(self) -> None:
        """A start is over: its slot goes to the longest-waiting request, if any."""
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(_SLOT)  # the slot passes on: _starting stays as it is
                return
        self._starting -= 1

    def _on_free(self, env: Environment) -> None:
        if self._closed or self._current.get(env.key[0]) != env.function.generation:
            self._stop_later(env)
            return
        env.last_used = time.monotonic()
        if env.provisioned:
            provisioned = self._provisioned.get(env.key[0])
            if provisioned is not None and env in provisioned.envs:
                provisioned.idle.append(env)
                return
            env.provisioned = False  # its configuration went away while it was busy: on demand from now
        waiters = self._env_waiters.get(env.key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(env)  # straight to a request waiting for a start of this function
                if not waiters:
                    del self._env_waiters[env.key]
                return
        if waiters is not None:
            del self._env_waiters[env.key]
        self._idle.setdefault(env.key, []).append(env)

    def _on_dead(self, env: Environment) -> None:
        self._all.pop(env.id, None)
        provisioned = self._provisioned.get(env.key[0])
        if provisioned is not None and env in provisioned.envs:
            provisioned.envs.discard(env)
            with contextlib.suppress(ValueError):
                provisioned.idle.remove(env)
            if not self._closed:
                self._fill_later(provisioned)  # AWS replaces a provisioned environment that went away
        idle = self._idle.get(env.key)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(env)
            if not idle:
                del self._idle[env.key]

    def callbacks(self) -> tuple[Callable[[Environment], None], Callable[[Environment], None]]:
        """The (on_free, on_dead) pair every environment of this pool is built with."""
        return self._on_free, self._on_dead

    # -- retiring ---------------------------------------------------------------------------------------

    def retire(self, function_name: str, generation: int | None) -> None:
        """The function (a qualified name) moved to ``generation`` (None: deleted): stop its other idle
        environments now; busy ones stop when they are freed."""
        if generation is None:
            self._current.pop(function_name, None)
            self.unprovision(function_name)
        else:
            self._current[function_name] = generation
        for key in [k for k in self._idle if k[0] == function_name and k[1] != generation]:
            for env in self._idle.pop(key):
                self._stop_later(env)
        for key in [k for k in self._env_waiters if k[0] == function_name and k[1] != generation]:
            # Requests waiting for these can still get a start slot; no environment of theirs comes back.
            del self._env_waiters[key]

    # -- provisioned concurrency --------------------------------------------------------------------------

    async def provision(self, function: Function, count: int) -> None:
        """Keep ``count`` initialised environments of ``function`` (a published version) for its calls.
        Returns once that many are ready; raises ProvisioningFailed when one cannot start or its init
        fails (what is ready stays), TooManyRequests when there is no room for them."""
        name = function.qualified_name
        self._current[name] = function.generation
        provisioned = self._provisioned.get(name)
        if provisioned is None:
            provisioned = self._provisioned[name] = _Provisioned(function, count)
        provisioned.target = count
        surplus = len(provisioned.envs) - count
        for env in list(provisioned.idle)[: max(0, surplus)]:
            provisioned.idle.remove(env)
            provisioned.envs.discard(env)
            self._stop_later(env)
        await self._fill(provisioned)

    def provisioned_ready(self, qualified_name: str) -> int:
        provisioned = self._provisioned.get(qualified_name)
        return 0 if provisioned is None else provisioned.ready()

    def unprovision(self, qualified_name: str) -> None:
        """Stop keeping environments for this version: idle ones stop now, busy ones become on-demand."""
        provisioned = self._provisioned.pop(qualified_name, None)
        if provisioned is None:
            return
        if provisioned.filling is not None:
            provisioned.filling.cancel()
        for env in provisioned.idle:
            self._stop_later(env)
        for env in provisioned.envs:
            env.provisioned = False  # busy ones go on as on-demand environments

    async def _fill(self, provisioned: _Provisioned) -> None:
        while not self._closed and self._provisioned.get(provisioned.function.qualified_name) is provisioned:
            missing = provisioned.target - len(provisioned.envs)
            if missing <= 0:
                return
            starts = [self._start_provisioned(provisioned) for _ in range(min(missing, self._max_starting))]
            results = await asyncio.gather(*starts, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _start_provisioned(self, provisioned: _Provisioned) -> None:
        function = provisioned.function
        while len(self._all) >= self._max or self._over_budget(function.memory_size):
            if not self._evict_one("budget"):
                raise TooManyRequests("Rate Exceeded.", "ConcurrentInvocationLimitExceeded")
        env = self._factory(function, secrets.token_hex(16), True)
        self._all[env.id] = env
        provisioned.envs.add(env)
        await env.start()
        await asyncio.shield(env.started)
        if not env.alive:
            raise ProvisioningFailed("FUNCTION_ERROR_INIT_FAILURE")

    def _fill_later(self, provisioned: _Provisioned) -> None:
        if provisioned.filling is not None and not provisioned.filling.done():
            return

        async def refill() -> None:
            try:
                await self._fill(provisioned)
            except (ProvisioningFailed, TooManyRequests, OSError) as exc:
                log.warning("could not replace a provisioned environment of %s: %s", provisioned.function.arn, exc)

        provisioned.filling = asyncio.get_running_loop().create_task(refill())

    def _evict_one(self, reason: str) -> bool:
        oldest: Environment | None = None
        for envs in self._idle.values():
            for env in envs:
                if oldest is None or env.last_used < oldest.last_used:
                    oldest = env
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        if not self._idle[oldest.key]:
            del self._idle[oldest.key]
        self._all.pop(oldest.id, None)
        self._stop_later(oldest)
        self._on_evict(reason)
        return True

    def _stop_later(self, env: Environment, grace_s: float = 0.0) -> None:
        task = asyncio.get_running_loop().create_task(env.stop(grace_s))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _sweep(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            cutoff = time.monotonic() - self._keep_alive_s
            for key in list(self._idle):
                envs = self._idle[key]
                stale = [e for e in envs if e.last_used < cutoff]
                if stale:
                    self._idle[key] = [e for e in envs if e.last_used >= cutoff]
                    if not self._idle[key]:
                        del self._idle[key]
                    for env in stale:
                        self._stop_later(env)

    async def _relieve_pressure(self) -> None:
        """While the host is short of memory, stop idle environments (least recently used first), a few per
        tick: stopping frees memory a moment later, so the next reading shows whether more must go. A
        reading that failed is no pressure: stopping every idle environment four times a second because a
        file could not be read would be the outage, not the cure."""
        while True:
            await asyncio.sleep(_PRESSURE_TICK_S)
            available = self._mem_available_mb()
            if available is None:
                if not self._mem_unknown:
                    log.warning("memory pressure unknown: the host's available memory cannot be read")
                    self._mem_unknown = True
                continue
            if self._mem_unknown:
                log.info("memory pressure: the host's available memory can be read again")
                self._mem_unknown = False
            if available >= self._min_free_mb:
                continue
            for _ in range(_PRESSURE_BATCH):
                if not self._evict_one("memory_pressure"):
                    break
            log.info("memory pressure: under %d MB available; stopped idle environments", self._min_free_mb)

    def start(self) -> None:
        interval = min(10.0, max(0.05, self._keep_alive_s / 4))
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(interval))
        if self._min_free_mb > 0:
            self._pressure = asyncio.get_running_loop().create_task(self._relieve_pressure())

    async def close(self, grace_s: float) -> None:
        """Stop every environment (SIGTERM, then SIGKILL after ``grace_s``) and wait until all are gone."""
        self._closed = True
        for waiter in self._slot_waiters:
            if not waiter.done():
                waiter.set_exception(TooManyRequests("Rate Exceeded.", "ServerShuttingDown"))
        self._slot_waiters.clear()
        self._env_waiters.clear()
        for provisioned in self._provisioned.values():
            if provisioned.filling is not None:
                provisioned.filling.cancel()
        for task in (self._sweeper, self._pressure):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        envs = list(self._all.values())
        self._idle.clear()
        if envs:
            await asyncio.gather(*(env.stop(grace_s) for env in envs), return_exceptions=True)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    # -- introspection ----------------------------------------------------------------------------------

    def _over_budget(self, more_mb: int) -> bool:
        return self._budget_mb > 0 and self.memory_mb() + more_mb > self._budget_mb

    def memory_mb(self) -> int:
        """What the live environments may use together: the sum of their MemorySize."""
        return sum(e.function.memory_size for e in self._all.values())

    def count(self, function_name: str | None = None) -> int:
        if function_name is None:
            return len(self._all)
        return sum(1 for e in self._all.values() if e.key[0] == function_name)

    def get(self, env_id: str) -> Environment | None:
        """A live environment by its id."""
        return self._all.get(env_id)

    def environments(self) -> list[Environment]:
        return list(self._all.values())
