"""The environment pool's start slots: bounded parallel starts, and waiting requests served by whichever
comes first (a start slot or a freed environment of their function), never by more environments than
requests."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from selfless import config
from selfless.config import Settings, mem_info_mb
from selfless.errors import TooManyRequests
from selfless.models import CodeRef, Function, FunctionState
from selfless.sandbox import pool as pool_module
from selfless.sandbox.environment import EnvState
from selfless.sandbox.pool import EnvironmentPool

CODE = CodeRef(sha256="x", key="k", size=1, unzipped_size=1)


def function(name: str) -> Function:
    return Function(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        runtime="python3.12",
        role="arn:aws:iam::000000000000:role/r",
        handler="app.handler",
        code=CODE,
        state=FunctionState.ACTIVE,
    )


class FakeEnvironment:
    """Just what the pool touches; ``finish_init`` and ``free`` play the runtime's part."""

    def __init__(self, fn: Function, env_id: str, pool: Any) -> None:
        self.id = env_id
        self.function = fn
        self.key = (fn.qualified_name, fn.generation)
        self.provisioned = False
        self.state = EnvState.STARTING
        self.last_used = time.monotonic()
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pool = pool

    async def start(self) -> None:
        pass

    async def stop(self, grace_s: float = 0.0) -> None:
        self.state = EnvState.DEAD
        if not self.started.done():
            self.started.set_result(None)

    def finish_init(self) -> None:
        self.state = EnvState.BUSY
        self.started.set_result(None)

    def free(self) -> None:
        self.state = EnvState.IDLE
        self._pool._on_free(self)


class Harness:
    def __init__(self, max_starting: int) -> None:
        self.made: list[FakeEnvironment] = []
        self.pool = EnvironmentPool(self._make, keep_alive_s=60, max_environments=100, max_starting=max_starting)

    def _make(self, fn: Function, env_id: str, provisioned: bool) -> Any:
        env = FakeEnvironment(fn, env_id, self.pool)
        self.made.append(env)
        return env


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_starts_beyond_the_bound_wait_for_a_slot_and_then_start() -> None:
    async def scenario() -> None:
        h = Harness(max_starting=2)
        fn = function("burst")
        first = [asyncio.create_task(h.pool.lease(fn)) for _ in range(2)]
        third = asyncio.create_task(h.pool.lease(fn))
        await settle()
        assert len(h.made) == 2, "two starts at once, no more"
        assert all(t.done() for t in first) and not third.done()
        h.made[0].finish_init()  # its start is over: the slot passes to the waiting request
        await settle()
        assert len(h.made) == 3 and third.done()
        assert third.result() is h.made[2]

    asyncio.run(scenario())


def test_a_waiting_request_takes_a_freed_environment_instead_of_starting_one() -> None:
    async def scenario() -> None:
        h = Harness(max_starting=1)
        a, b = function("a"), function("b")
        env_a = await h.pool.lease(a)
        h.made[0].finish_init()
        await h.pool.lease(b)  # holds the only start slot (its init never ends here)
        waiting = asyncio.create_task(h.pool.lease(a))
        await settle()
        assert not waiting.done()
        h.made[0].free()  # a's environment answers: straight to the request waiting for a
        await settle()
        assert waiting.result() is env_a
        assert len(h.made) == 2, "no environment was started for the request that got a freed one"
        h.made[1].finish_init()  # b's start ends with nobody waiting: the slot is simply free again
        await settle()
        assert h.pool._starting == 0

    asyncio.run(scenario())


def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "START_WAIT_S", 0.05)

    async def scenario() -> None:
        h = Harness(max_starting=1)
        await h.pool.lease(function("slow"))
        with pytest.raises(TooManyRequests) as caught:
            await h.pool.lease(function("other"))
        assert caught.value.reason == "FunctionInvocationRateLimitExceeded"
        assert len(h.made) == 1
        # The throttled request left nothing behind: the slot it waited for goes to nobody.
        h.made[0].finish_init()
        await settle()
        assert h.pool._starting == 0

    asyncio.run(scenario())


def test_a_start_that_dies_before_init_gives_its_slot_back() -> None:
    async def scenario() -> None:
        h = Harness(max_starting=1)
        fn = function("dies")
        await h.pool.lease(fn)
        waiting = asyncio.create_task(h.pool.lease(fn))
        await settle()
        await h.made[0].stop()  # crashed during init
        await settle()
        assert waiting.done() and waiting.result() is h.made[1]

    asyncio.run(scenario())


def test_memory_pressure_stops_idle_environments_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "_PRESSURE_TICK_S", 0.01)
    monkeypatch.setattr(pool_module, "_PRESSURE_BATCH", 1)
    available = {"mb": 10_000}
    evicted: list[str] = []

    def on_evict(reason: str) -> None:
        evicted.append(reason)
        available["mb"] = 2_000  # one was enough

    async def scenario() -> None:
        made: list[FakeEnvironment] = []

        def factory(fn: Function, env_id: str, provisioned: bool) -> Any:
            env = FakeEnvironment(fn, env_id, pool)
            made.append(env)
            return env

        pool = EnvironmentPool(
            factory,
            keep_alive_s=600,
            max_environments=100,
            min_free_mb=1_000,
            mem_available_mb=lambda: available["mb"],
            on_evict=on_evict,
        )
        pool.start()
        try:
            envs = [await pool.lease(function(f"fn{i}")) for i in range(4)]
            for env in made:
                env.finish_init()
            await settle()
            for env in envs[:3]:  # fn0 is the least recently used; fn3 stays busy
                env.free()
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            assert all(e.state is not EnvState.DEAD for e in envs), "no pressure, nothing stopped"
            available["mb"] = 500  # the host runs short: idle environments go, oldest first
            for _ in range(100):
                await asyncio.sleep(0.01)
                if envs[0].state is EnvState.DEAD:
                    break
            await asyncio.sleep(0.05)
            assert envs[0].state is EnvState.DEAD
            assert evicted and set(evicted) == {"memory_pressure"}
            assert envs[3].state is EnvState.BUSY, "a busy environment is never evicted"
            assert envs[1].state is EnvState.IDLE and envs[2].state is EnvState.IDLE, "only as many as needed"
        finally:
            await pool.close(0)

    asyncio.run(scenario())


def test_meminfo_that_cannot_be_read_is_unknown_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "no-meminfo")
    assert mem_info_mb("MemAvailable", missing) is None
    garbled = tmp_path / "garbled"
    garbled.write_text("MemTotal:       16000000 kB\nMemAvailable:   lots kB\n")
    assert mem_info_mb("MemAvailable", str(garbled)) is None
    assert mem_info_mb("MemFree", str(garbled)) is None, "a field that is not there"
    assert mem_info_mb("MemTotal", str(garbled)) == 15625
    assert mem_info_mb("MemAvailable") is not None, "this host's own /proc/meminfo reads"
    # The default threshold comes from MemTotal: unknown, and there is no pressure evictor at all.
    monkeypatch.setattr(config, "mem_info_mb", lambda field: None)
    assert Settings(min_free_mb=None).resolved_min_free_mb() == 0


def test_a_failed_memory_reading_is_never_pressure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pool_module, "_PRESSURE_TICK_S", 0.005)
    reading: dict[str, int | None] = {"mb": None}
    readings = {"count": 0}
    evicted: list[str] = []

    def available() -> int | None:
        readings["count"] += 1
        return reading["mb"]

    async def scenario() -> None:
        made: list[FakeEnvironment] = []

        def factory(fn: Function, env_id: str, provisioned: bool) -> Any:
            env = FakeEnvironment(fn, env_id, pool)
            made.append(env)
            return env

        pool = EnvironmentPool(
            factory,
            keep_alive_s=600,
            max_environments=100,
            min_free_mb=1_000,
            mem_available_mb=available,
            on_evict=evicted.append,
        )
        pool.start()
        try:
            envs = [await pool.lease(function(f"fn{i}")) for i in range(3)]
            for env in made:
                env.finish_init()
                env.free()
            for _ in range(500):  # many ticks with a reading that fails every time
                await asyncio.sleep(0.005)
                if readings["count"] >= 20:
                    break
            assert readings["count"] >= 20
            assert evicted == [] and all(e.state is EnvState.IDLE for e in envs), "unknown is not pressure"
            reading["mb"] = 500  # readable again, and really short: now it is pressure
            for _ in range(500):
                await asyncio.sleep(0.005)
                if evicted:
                    break
            assert evicted and evicted[0] == "memory_pressure"
        finally:
            await pool.close(0)

    with caplog.at_level(logging.INFO, logger=pool_module.__name__):
        asyncio.run(scenario())
    unknown = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(unknown) == 1, "said once per run of failures, not at every tick"
