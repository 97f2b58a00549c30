"""The environment pool: warm environments per function generation, started on demand, retired when idle.

- ``lease(function)`` gives an environment that will run exactly one invocation: the most recently used
  idle one of that function's current generation, or a new one when all are busy (never more environments
  than requests: a new one is started only for a request that found none idle).
- An environment returns itself (``_on_free``) the moment its runtime posts a response; an environment of
  an old generation (the function was updated or deleted) is stopped instead of going back.
- A sweeper stops environments idle past the keep-alive; past ``max_environments``, or past the memory
  budget (the sum of live environments' MemorySize), the least recently used idle environments of any
  function are stopped to make room, and when none is idle the lease is refused with TooManyRequests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from selfless.errors import TooManyRequests
from selfless.models import Function
from selfless.sandbox.environment import Environment, EnvState

log = logging.getLogger(__name__)

EnvKey = tuple[str, int]
EnvFactory = Callable[[Function, str], Environment]


class EnvironmentPool:
    def __init__(
        self, factory: EnvFactory, *, keep_alive_s: float, max_environments: int, memory_budget_mb: int = 0
    ) -> None:
        """``memory_budget_mb`` 0: no memory budget, only the count bound."""
        self._factory = factory
        self._budget_mb = memory_budget_mb
        self._keep_alive_s = keep_alive_s
        self._max = max_environments
        self._idle: dict[EnvKey, list[Environment]] = {}
        self._all: dict[str, Environment] = {}
        self._current: dict[str, int] = {}  # function name -> current generation
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- leasing ----------------------------------------------------------------------------------------

    async def lease(self, function: Function) -> Environment:
        """An environment ready to ``assign`` one invocation to. Raises TooManyRequests when full, OSError
        when a new environment cannot start."""
        self._current[function.name] = function.generation
        idle = self._idle.get((function.name, function.generation))
        while idle:
            env = idle.pop()
            if env.state is EnvState.IDLE:
                return env
        if self._closed:
            raise TooManyRequests("Rate Exceeded.", "ServerShuttingDown")
        # Room by count and by memory (the sum of live environments' MemorySize): the least recently used
        # idle environments of any function go first; with none idle left, the call is refused.
        while len(self._all) >= self._max or self._over_budget(function.memory_size):
            if not self._evict_one():
                raise TooManyRequests("Rate Exceeded.", "ConcurrentInvocationLimitExceeded")
        env_id = secrets.token_hex(16)
        env = self._factory(function, env_id)
        self._all[env_id] = env
        await env.start()
        return env

    def _on_free(self, env: Environment) -> None:
        if self._closed or self._current.get(env.function.name) != env.function.generation:
            self._stop_later(env)
            return
        env.last_used = time.monotonic()
        self._idle.setdefault(env.key, []).append(env)

    def _on_dead(self, env: Environment) -> None:
        self._all.pop(env.id, None)
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
        """The function moved to ``generation`` (None: deleted): stop its other idle environments now;
        busy ones stop when they are freed."""
        if generation is None:
            self._current.pop(function_name, None)
        else:
            self._current[function_name] = generation
        for key in [k for k in self._idle if k[0] == function_name and k[1] != generation]:
            for env in self._idle.pop(key):
                self._stop_later(env)

    def _evict_one(self) -> bool:
        oldest: Environment | None = None
        for envs in self._idle.values():
            for env in envs:
                if oldest is None or env.last_used < oldest.last_used:
                    oldest = env
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        self._all.pop(oldest.id, None)
        self._stop_later(oldest)
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

    def start(self) -> None:
        interval = min(10.0, max(0.05, self._keep_alive_s / 4))
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(interval))

    async def close(self, grace_s: float) -> None:
        """Stop every environment (SIGTERM, then SIGKILL after ``grace_s``) and wait until all are gone."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
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
        return sum(1 for e in self._all.values() if e.function.name == function_name)

    def environments(self) -> list[Environment]:
        return list(self._all.values())
