"""The HTTP server's limits, in process on both event loops: request heads bounded in size and fields (431,
linear work), deadlines for heads and bodies (408) that spare idle keep-alive connections and servers
without an idle timeout, and the connection cap (a reset at once past it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop

from selfless.httpserver import HttpServer, Request, Response
from selfless.runtime import api as runtime_api

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Awaitable[None]], None]]:
    """Runs a scenario on the event loop of the parameter (the server runs on uvloop; asyncio without it)."""

    def runner(coro: Awaitable[None]) -> None:
        if request.param == "uvloop":
            uvloop.run(coro)  # type: ignore[arg-type]
        else:
            asyncio.run(coro)  # type: ignore[arg-type]

    yield runner


class Recorder:
    """A handler that answers with what it saw."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        body = {"path": request.path, "headers": request.headers, "size": len(request.body)}
        return Response(200, json.dumps(body).encode())


@contextlib.asynccontextmanager
async def serving(handler: Any = None, **options: Any) -> AsyncIterator[tuple[HttpServer, int]]:
    """A server on a free port; no error may reach the event loop's handler meanwhile (a protocol callback
    that raises is one: the loop then resets the connection)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    server = HttpServer(handler or Recorder(), **options)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        server.close_all()
        await asyncio.sleep(0)
    assert errors == []


async def read_all(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything until the server closes (EOF or a reset), which must be ``within`` seconds."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    return b"".join(chunks)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``condition`` holds; a failed assertion after ``within`` seconds."""
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.01) + 1):
        if condition():
            return
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.01)
    assert condition(), "not in time"


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response off a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length"))
    return head + await reader.readexactly(length)


def status_and_message(answer: bytes) -> tuple[int, str]:
    return status_of(answer), body_of(answer)["message"]


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def body_of(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


async def request(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await read_all(reader)
    finally:
        writer.close()


def get(path: str = "/", headers: list[tuple[str, str]] | None = None, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_repeated_headers_are_joined_with_commas_in_order(run: Any) -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            answer = await request(port, get(headers=[("X-A", str(i)) for i in range(50)] + [("X-B", "one")]))
            assert status_of(answer) == 200
            headers = body_of(answer)["headers"]
            assert headers["x-a"] == ",".join(str(i) for i in range(50))
            assert headers["x-b"] == "one"

    run(scenario())


def test_400k_repeated_headers_are_refused_at_once_with_431(run: Any) -> None:
    """The attack that stalled the event loop for 24 s: 6.8 MB of one repeated header."""

    async def scenario() -> None:
        handler = Recorder()
        async with serving(handler) as (_, port):
            head = b"GET / HTTP/1.1\r\nHost: test\r\n" + b"X-Repeat: abcdefgh\r\n" * 400_000 + b"\r\n"
            t0 = time.monotonic()
            answer = await request(port, head)
            elapsed = time.monotonic() - t0
            assert status_of(answer) == 431, answer[:200]
            assert "100 fields" in body_of(answer)["message"]
            assert b"Connection: close" in answer
            assert elapsed < 1.0
            assert handler.requests == []
            # The server is fine: the next request is served.
            assert status_of(await request(port, get())) == 200

    run(scenario())


def test_one_huge_header_is_refused_with_431_before_it_ends(run: Any) -> None:
    async def scenario() -> None:
        async with serving(max_head=8192) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answered = asyncio.ensure_future(read_all(reader))
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Huge: ")
            pieces = 0
            with contextlib.suppress(ConnectionError):
                while not answered.done() and pieces < 1000:  # a field that never ends
                    writer.write(b"x" * 4096)
                    await writer.drain()
                    pieces += 1
                    await asyncio.sleep(0.005)
            answer = await answered
            writer.close()
            assert status_of(answer) == 431
            assert "8192 bytes" in body_of(answer)["message"]
            assert pieces < 50

    run(scenario())


def test_a_head_over_the_limit_in_one_read_is_refused_and_one_under_it_with_a_body_is_not(run: Any) -> None:
    async def scenario() -> None:
        async with serving(max_head=16384, max_body=4 << 20) as (_, port):
            over = get(headers=[("X-Big", "y" * 17000)])
            assert status_of(await request(port, over)) == 431
            # 15 KB of head and a 1 MB body in one write: the body's bytes are not the head's.
            body = b"z" * (1 << 20)
            head = (
                f"POST /upload HTTP/1.1\r\nHost: test\r\nX-Big: {'y' * 15000}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            answer = await request(port, head, body)
            assert status_of(answer) == 200
            assert body_of(answer)["size"] == len(body)

    run(scenario())


def test_too_many_headers_are_refused_with_431(run: Any) -> None:
    async def scenario() -> None:
        async with serving(max_headers=20) as (_, port):
            assert status_of(await request(port, get(headers=[(f"X-{i}", "v") for i in range(17)]))) == 200
            answer = await request(port, get(headers=[(f"X-{i}", "v") for i in range(25)]))
            assert status_of(answer) == 431
            assert "20 fields" in body_of(answer)["message"]

    run(scenario())


def test_the_runtime_apis_head_limit_takes_awslambdarics_largest_xray_cause(run: Any) -> None:
    """awslambdaric sends Lambda-Runtime-Function-XRay-Error-Cause headers of up to 1 MiB."""

    async def scenario() -> None:
        async with serving(max_head=runtime_api.MAX_HEAD, idle_timeout=0) as (_, port):
            cause = "c" * (1024 * 1024 - 1)
            head = get("/2018-06-01/runtime/invocation/x/error", [("Lambda-Runtime-Function-XRay-Error-Cause", cause)])
            answer = await request(port, head)
            assert status_of(answer) == 200
            assert len(body_of(answer)["headers"]["lambda-runtime-function-xray-error-cause"]) == len(cause)
            too_much = get(headers=[("X-Cause", "c" * runtime_api.MAX_HEAD)])
            assert status_of(await request(port, too_much)) == 431

    run(scenario())


def test_pipelined_requests_are_answered_in_order(run: Any) -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/one", close=False) + get("/two", close=False) + get("/three"))
            paths = [body_of(await read_response(reader))["path"] for _ in range(3)]
            writer.close()
            assert paths == ["/one", "/two", "/three"]

    run(scenario())


def test_a_slow_head_gets_408_at_its_deadline(run: Any) -> None:
    """One byte at a time, never finishing: the deadline counts from the first byte, not from the last."""

    async def scenario() -> None:
        handler = Recorder()
        async with serving(handler, head_timeout=0.6) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.monotonic()
            head = get(headers=[("X-Slow", "s" * 1000)])
            closed = asyncio.ensure_future(read_all(reader, within=10))
            with contextlib.suppress(ConnectionError):
                for byte in head[:-4]:
                    if closed.done():
                        break
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)
            answer = await closed
            elapsed = time.monotonic() - t0
            writer.close()
            assert status_of(answer) == 408
            assert "head" in body_of(answer)["message"]
            assert 0.6 <= elapsed < 2.0
            assert handler.requests == []

    run(scenario())


def test_a_connection_that_says_nothing_is_closed_at_the_head_deadline(run: Any) -> None:
    async def scenario() -> None:
        async with serving(head_timeout=0.5) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.monotonic()
            answer = await read_all(reader)
            writer.close()
            assert answer == b""
            assert 0.5 <= time.monotonic() - t0 < 2.0
            assert server.connections == set()

    run(scenario())


def test_an_idle_keep_alive_connection_outlives_the_head_deadline(run: Any) -> None:
    async def scenario() -> None:
        async with serving(head_timeout=0.3, idle_timeout=30) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/first", close=False))
            first = await read_response(reader)
            assert status_of(first) == 200
            await asyncio.sleep(1.0)  # idle between requests, past the head deadline: the idle timeout applies
            writer.write(get("/second"))
            second = await read_all(reader)
            writer.close()
            assert status_of(second) == 200
            assert body_of(second)["path"] == "/second"

    run(scenario())


def test_a_slow_body_gets_408_and_a_fair_paced_one_is_served(run: Any) -> None:
    async def scenario() -> None:
        async with serving(head_timeout=0.5, min_body_rate=20_000) as (_, port):
            # 1 byte every 50 ms of a declared 1,000.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
            t0 = time.monotonic()
            closed = asyncio.ensure_future(read_all(reader, within=10))
            with contextlib.suppress(ConnectionError):
                for _ in range(1000):
                    if closed.done():
                        break
                    writer.write(b"b")
                    await asyncio.sleep(0.05)
            answer = await closed
            elapsed = time.monotonic() - t0
            writer.close()
            assert status_of(answer) == 408
            assert "body" in body_of(answer)["message"]
            assert 0.5 <= elapsed < 2.0

            # 60 KB at ~60 KB/s: longer than the grace, above the minimum pace.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 60000\r\nConnection: close\r\n\r\n")
            for _ in range(20):
                writer.write(b"f" * 3000)
                await asyncio.sleep(0.05)
            answer = await read_all(reader)
            writer.close()
            assert status_of(answer) == 200
            assert body_of(answer)["size"] == 60000

    run(scenario())


def test_line_ends_between_requests_do_not_hold_a_connection(run: Any) -> None:
    """Stray CRLFs after a request start no message, yet they start the next head's clock."""

    async def scenario() -> None:
        async with serving(head_timeout=0.5, idle_timeout=30) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get("/first", close=False))
            assert status_of(await read_response(reader)) == 200
            t0 = time.monotonic()
            closed = asyncio.ensure_future(read_all(reader, within=10))
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    if closed.done():
                        break
                    writer.write(b"\r\n")
                    await asyncio.sleep(0.05)
            answer = await closed
            writer.close()
            assert status_of(answer) in (400, 408)
            assert time.monotonic() - t0 < 2.0

    run(scenario())


def test_a_body_that_stops_coming_is_cut_after_the_idle_timeout(run: Any) -> None:
    """However much credit its pace has earned, a body silent for the idle timeout goes."""

    async def scenario() -> None:
        async with serving(head_timeout=10, min_body_rate=1, idle_timeout=0.5) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"b" * 100)
            t0 = time.monotonic()
            answer = await read_all(reader, within=10)
            writer.close()
            assert status_and_message(answer) == (408, "Request timeout: the client went silent mid-request")
            assert 0.5 <= time.monotonic() - t0 < 2.0

    run(scenario())


def test_without_an_idle_timeout_a_slow_peer_is_never_cut(run: Any) -> None:
    """The Runtime API's case: a runtime waits on /next and posts at its own pace, bounded by the invocation."""

    async def scenario() -> None:
        async with serving(idle_timeout=0, head_timeout=0.2) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\n")
            await asyncio.sleep(0.8)
            writer.write(b"Content-Length: 3\r\nConnection: close\r\n\r\nab")
            await asyncio.sleep(0.8)
            writer.write(b"c")
            answer = await read_all(reader)
            writer.close()
            assert status_of(answer) == 200
            assert body_of(answer)["size"] == 3

    run(scenario())


def test_past_the_cap_connections_are_reset_at_once_and_counted(run: Any) -> None:
    async def scenario() -> None:
        refused: list[int] = []
        async with serving(max_connections=3, on_refused=lambda: refused.append(1)) as (server, port):
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for reader, writer in held:  # each is served (and so surely counted) before the next test
                writer.write(get("/held", close=False))
                assert status_of(await read_response(reader)) == 200
            t0 = time.monotonic()
            with pytest.raises(ConnectionResetError):  # at connect, or at the first read
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(get())
                    await reader.read(100)
                    await reader.read(100)  # the reset may come after an empty read
                finally:
                    writer.close()
            assert time.monotonic() - t0 < 0.5
            assert server.refused == 1
            assert refused == [1]
            # One goes, and a new one is served again.
            held[0][1].close()
            for _ in range(500):
                if len(server.connections) < 3:
                    break
                await asyncio.sleep(0.01)
            assert status_of(await request(port, get())) == 200
            for _, w in held[1:]:
                w.close()

    run(scenario())


def test_adopted_connections_count_against_the_cap(run: Any) -> None:
    async def scenario() -> None:
        async with serving(max_connections=1) as (server, _):
            first, first_peer = socket.socketpair()
            second, second_peer = socket.socketpair()
            try:
                await server.adopt(first)
                await server.adopt(second)
                assert server.refused == 1
                assert len(server.connections) == 1
                second_peer.settimeout(2)
                assert second_peer.recv(10) == b""  # closed at once
            finally:
                first_peer.close()
                second_peer.close()

    run(scenario())


def test_handlers_may_answer_at_once_with_a_future_or_with_a_coroutine(run: Any) -> None:
    """Three kinds of answer, pipelined on one connection, go out in order; a Future left pending when its
    connection closes is cancelled (the Runtime API's /next tells its environment so), and a handler that
    raises or a Future that fails gets a bare 500."""
    pending: list[asyncio.Future[Response]] = []

    def handler(request: Request) -> Any:
        kind = request.path.strip("/")
        if kind == "now":
            return Response(200, b"now")
        if kind == "raise":
            raise RuntimeError("boom")
        if kind == "later":
            fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.05, fut.set_result, Response(200, b"later"))
            return fut
        if kind == "fail":
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.set_exception, ValueError("no"))
            return fut
        if kind == "never":
            fut = asyncio.get_running_loop().create_future()
            pending.append(fut)
            return fut

        async def coroutine() -> Response:
            await asyncio.sleep(0.01)
            return Response(200, b"coroutine")

        return coroutine()

    async def scenario() -> None:
        async with serving(handler, idle_timeout=0) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            order = ["later", "now", "coroutine", "raise", "fail", "now"]
            writer.write(b"".join(f"GET /{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for k in order))
            bodies = []
            for _ in order:
                answer = await asyncio.wait_for(read_response(reader), 5)
                bodies.append(answer.split(b"\r\n\r\n", 1)[1])
            assert bodies == [
                b"later",
                b"now",
                b"coroutine",
                b'{"message":"Internal server error"}',
                b'{"message":"Internal server error"}',
                b"now",
            ]
            writer.write(b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await until(lambda: bool(pending))
            writer.close()
            await until(lambda: pending[0].cancelled())

    run(scenario())


def test_coalesce_holds_an_answer_until_the_pipelined_request_behind_it_is_answered(run: Any) -> None:
    """With coalesce (the Runtime API), a result's answer and the answer to the /next pipelined behind it
    reach the peer in one read; without a request behind it an answer goes at once."""
    later: list[asyncio.Future[Response]] = []

    def handler(request: Request) -> Any:
        if request.path == "/wait":
            fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            later.append(fut)
            return fut
        return Response(202, b"ok")

    async def scenario() -> None:
        async with serving(handler, idle_timeout=0, coalesce=True) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /result HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            alone = await asyncio.wait_for(read_response(reader), 5)
            assert alone.endswith(b"ok")  # nothing behind it: at once
            writer.write(
                b"POST /result HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /wait HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            await until(lambda: bool(later))
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):  # the 202 waits for the /next's answer
                await asyncio.wait_for(reader.read(1), 0.1)
            later[0].set_result(Response(200, b"next"))
            first = await asyncio.wait_for(read_response(reader), 5)
            second = await asyncio.wait_for(read_response(reader), 5)
            assert first.startswith(b"HTTP/1.1 202") and first.endswith(b"ok")
            assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"next")
            writer.close()

    run(scenario())


@pytest.mark.parametrize("coalesce", [False, True])
def test_thousands_of_pipelined_requests_answered_at_once_do_not_recurse(run: Any, coalesce: bool) -> None:
    """A peer that pipelines thousands of small requests in one write, behind one that takes a while, gets
    every answer in order; answering them one after another must not nest calls (a recursion per answer
    would overflow Python's stack around a thousand). A Runtime API peer is a function's own code."""
    count = 3000

    def handler(request: Request) -> Any:
        if request.path == "/slow":

            async def slow() -> Response:
                await asyncio.sleep(0.05)
                return Response(200, b"slow")

            return slow()
        return Response(200, request.path.encode())

    async def scenario() -> None:
        async with serving(handler, idle_timeout=0, coalesce=coalesce) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write(b"".join(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(count)))
            await writer.drain()
            bodies = []
            async with asyncio.timeout(30):
                for _ in range(count + 1):
                    bodies.append((await read_response(reader)).split(b"\r\n\r\n", 1)[1])
            assert bodies == [b"slow"] + [f"/{i}".encode() for i in range(count)]
            writer.close()

    run(scenario())
