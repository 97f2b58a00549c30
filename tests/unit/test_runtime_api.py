"""The Runtime API's /next that has to wait: answered when the environment delivers, 410 when it stops, and
its wait given up (so the environment knows nobody waits) when the runtime's connection closes."""

from __future__ import annotations

import asyncio

from selfless.invocation.inflight import Invocation
from selfless.runtime import api as runtime_api


def test_a_waiting_next_follows_its_environment() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Invocation] = loop.create_future()
        answer = runtime_api._when_delivered(waiter)
        inv = Invocation("rid-1", b'{"a":1}', function_arn="arn:f", timeout_s=3, client_context=None, trace_id="t")
        inv.deliver()
        waiter.set_result(inv)
        await asyncio.sleep(0)
        response = answer.result()
        assert response.status == 200 and response.body == b'{"a":1}'
        assert ("Lambda-Runtime-Aws-Request-Id", "rid-1") in response.headers
        assert ("Lambda-Runtime-Trace-Id", "t") in response.headers

        stopped: asyncio.Future[Invocation] = loop.create_future()
        answer = runtime_api._when_delivered(stopped)
        stopped.set_exception(runtime_api.EnvironmentStopped("env"))
        await asyncio.sleep(0)
        assert answer.result().status == 410

        abandoned: asyncio.Future[Invocation] = loop.create_future()
        answer = runtime_api._when_delivered(abandoned)
        answer.cancel()  # what the HTTP server does when the runtime's connection closes
        await asyncio.sleep(0)
        assert abandoned.cancelled()

    asyncio.run(scenario())
