"""The Runtime API's /next: answered at once when an invocation waits, else with the environment's own Future
(the answer the HTTP server waits on), 410 when the environment stops; and the answer's headers as AWS's."""

from __future__ import annotations

import asyncio

from selfless.httpserver import Request, Response
from selfless.invocation.inflight import Invocation
from selfless.runtime import api as runtime_api


class _Session:
    """A stand-in environment: ``answer`` is what its next /next gets (or raises)."""

    def __init__(self, answer: Response | asyncio.Future[Response] | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[float | None, float | None]] = []

    def next_invocation(
        self, init_ms: float | None = None, restore_ms: float | None = None
    ) -> Response | asyncio.Future[Response]:
        self.asked.append((init_ms, restore_ms))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _next(session: _Session, headers: dict[str, str] | None = None) -> Response | asyncio.Future[Response]:
    request = Request("GET", runtime_api.PREFIX + "invocation/next", "", headers or {}, b"", context=session)
    return runtime_api.handle(request)


def test_the_answer_to_next_carries_the_invocation_as_aws_does() -> None:
    async def scenario() -> None:
        inv = Invocation("rid-1", b'{"a":1}', function_arn="arn:f", timeout_s=3, client_context="cc", trace_id="t")
        inv.deliver()
        response = runtime_api.next_response(inv)
        assert response.status == 200 and response.body == b'{"a":1}'
        assert ("Lambda-Runtime-Aws-Request-Id", "rid-1") in response.headers
        assert ("Lambda-Runtime-Trace-Id", "t") in response.headers
        assert ("Lambda-Runtime-Invoked-Function-Arn", "arn:f") in response.headers
        assert ("Lambda-Runtime-Client-Context", "cc") in response.headers
        assert ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)) in response.headers

    asyncio.run(scenario())


def test_a_next_that_waits_is_the_environments_future_and_a_stopped_one_is_410() -> None:
    async def scenario() -> None:
        waiting: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        session = _Session(waiting)
        assert _next(session, {"selfless-init-duration-ms": "12.5", "selfless-restore-duration-ms": "x"}) is waiting
        assert session.asked == [(12.5, None)]  # a number it cannot read is not reported

        gone = _next(_Session(runtime_api.EnvironmentStopped("env")))
        assert isinstance(gone, Response) and gone.status == 410
        assert gone is runtime_api.STOPPED

    asyncio.run(scenario())
