"""The Runtime API 2018-06-01, served to one execution environment on its own loopback port.

Each environment gets its own listening socket (``AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>``), so a
connection identifies its environment without any token in the path, exactly as the official runtime
interface clients expect. The routes, headers and error bodies are AWS's:

    GET  /2018-06-01/runtime/invocation/next
    POST /2018-06-01/runtime/invocation/{AwsRequestId}/response
    POST /2018-06-01/runtime/invocation/{AwsRequestId}/error
    POST /2018-06-01/runtime/init/error

The handlers translate; the environment (``RuntimeSession``) decides.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

from selfless.httpserver import Request, Response
from selfless.invocation.inflight import Invocation

PREFIX = "/2018-06-01/runtime/"
# AWS's limit on a synchronous response (6 MB + 100 bytes of framing).
MAX_RESPONSE = 6_291_556
# Request heads: a runtime's error carries its X-Ray cause in a header (awslambdaric sends up to 1 MiB of it,
# what AWS's Runtime API takes), so heads here may be far larger than the public API's.
MAX_HEAD = 1024 * 1024 + 64 * 1024

_ACCEPTED = Response(202, b'{"status":"OK"}')


class EnvironmentStopped(Exception):
    """The environment went away while its runtime was waiting for work."""


class RuntimeSession(Protocol):
    """What an environment offers its runtime."""

    def next_invocation(
        self, init_ms: float | None = None, restore_ms: float | None = None
    ) -> Response | asyncio.Future[Response]:
        """The answer to /next (``next_response``): at once when an invocation waits, else a Future the
        environment resolves when it delivers one, or with ``STOPPED`` when it goes away. The HTTP server
        cancels that Future when the runtime's connection closes: the environment then knows nobody waits.
        (One Future the HTTP server waits on directly, no hop in between: the warm path's.) ``restore_ms``: the
        environment was forked from a post-init template; this long to restore."""

    def post_response(self, request_id: str, body: bytes) -> bool: ...

    def post_error(self, request_id: str, body: bytes, error_type: str | None) -> bool: ...

    def post_init_error(self, body: bytes, error_type: str | None) -> bool: ...

    def response_too_large(self, request_id: str) -> None: ...


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < 1e9 else None


def _error(status: int, error_type: str, message: str) -> Response:
    return Response(status, json.dumps({"errorMessage": message, "errorType": error_type}).encode())


STOPPED = _error(410, "EnvironmentStopped", "The execution environment is shutting down")


def next_response(inv: Invocation) -> Response:
    """The answer to /next that delivers ``inv``."""
    headers = [
        ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
        ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
        ("Lambda-Runtime-Invoked-Function-Arn", inv.function_arn),
        ("Lambda-Runtime-Trace-Id", inv.trace_id),
    ]
    if inv.client_context is not None:
        headers.append(("Lambda-Runtime-Client-Context", inv.client_context))
    return Response(200, inv.payload, headers)


def handle(request: Request) -> Response | asyncio.Future[Response]:
    """Answer at once where the environment can (every request but a /next that has to wait for work)."""
    session: RuntimeSession = request.context
    path = request.path
    if not path.startswith(PREFIX):
        return _error(404, "InvalidRequest", "Unknown Runtime API path")
    tail = path[len(PREFIX) :]
    if request.method == "GET" and tail == "invocation/next":
        try:
            reported = request.headers.get("selfless-init-duration-ms")
            init_ms = _number(reported) if reported is not None else None
            restored = request.headers.get("selfless-restore-duration-ms")
            restore_ms = _number(restored) if restored is not None else None
            return session.next_invocation(init_ms, restore_ms)
        except EnvironmentStopped:
            return STOPPED
    if request.method != "POST":
        return _error(405, "InvalidRequest", "Method not allowed")
    if tail == "init/error":
        ok = session.post_init_error(request.body, request.headers.get("lambda-runtime-function-error-type"))
        return _ACCEPTED if ok else _error(403, "InvalidStateTransition", "State transition is not allowed")
    if tail.startswith("invocation/"):
        request_id, _, action = tail[len("invocation/") :].partition("/")
        if action == "response":
            ok = session.post_response(request_id, request.body)
        elif action == "error":
            ok = session.post_error(request_id, request.body, request.headers.get("lambda-runtime-function-error-type"))
        else:
            return _error(404, "InvalidRequest", "Unknown Runtime API path")
        return _ACCEPTED if ok else _error(400, "InvalidRequestID", "Invalid request ID")
    return _error(404, "InvalidRequest", "Unknown Runtime API path")


def too_large(request: Request) -> Response:
    """A response body past MAX_RESPONSE: the invocation fails with Function.ResponseSizeTooLarge."""
    session: RuntimeSession = request.context
    tail = request.path[len(PREFIX) :] if request.path.startswith(PREFIX) else ""
    if tail.startswith("invocation/") and tail.endswith("/response"):
        session.response_too_large(tail[len("invocation/") : -len("/response")])
    return _error(413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({MAX_RESPONSE} bytes).")
