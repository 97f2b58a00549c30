"""Streamed bodies both ways: a request body handed over as it arrives with bounded buffering, 100-continue,
an early answer, a client gone mid-body, a stalled body's deadline; an answer streamed with backpressure, a
HEAD answer's length, and a stream that fails mid-way."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from selfless.httpserver import STREAM_HIGH, BodyStream, Request, Response
from tests.unit.test_httpserver import read_all, read_response, run, serving, status_of, until

__all__ = ["run"]  # the fixture, shared with test_httpserver


def streams_uploads(method: str, url: str, headers: dict[str, str]) -> bool:
    return method == "PUT"


class Hasher:
    """Reads a streamed body slowly, noting how much waited unread at most."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.most_buffered = 0
        self.errors: list[BaseException] = []
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        if request.stream is None:
            return Response(200, b"buffered:" + str(len(request.body)).encode())
        digest = hashlib.sha256()
        try:
            async for chunk in request.stream:
                self.most_buffered = max(self.most_buffered, request.stream.buffered + len(chunk))
                digest.update(chunk)
                if self.delay:
                    await asyncio.sleep(self.delay)
        except (ConnectionError, asyncio.CancelledError) as exc:  # gone mid-body: cancelled or told so
            self.errors.append(exc)
            raise
        return Response(200, digest.hexdigest().encode())


def test_a_large_upload_streams_in_order_with_bounded_buffering(run: Any) -> None:
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB
    handler = Hasher(delay=0.001)

    async def scenario() -> None:
        async with serving(handler, max_body=1024, streams=streams_uploads) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            answer = await read_response(reader)
            assert status_of(answer) == 200
            assert answer.endswith(hashlib.sha256(body).hexdigest().encode())
            # The next request on the same connection is served as usual (buffered: not a PUT).
            writer.write(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            assert (await read_response(reader)).endswith(b"buffered:3")
            writer.close()
        # Never much more than the high-water mark waited unread (one read of the socket past it).
        assert handler.most_buffered <= STREAM_HIGH + 512 * 1024

    run(scenario())


def test_expect_100_continue_is_answered_before_the_body_is_sent(run: Any) -> None:
    async def scenario() -> None:
        async with serving(Hasher(), streams=streams_uploads) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /o HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            answer = await read_response(reader)
            assert answer.endswith(hashlib.sha256(b"hello").hexdigest().encode())
            writer.close()

    run(scenario())


def test_an_early_answer_reaches_a_client_that_sends_the_whole_body_first(run: Any) -> None:
    async def refuse(request: Request) -> Response:
        return Response(403, b"no")

    body = b"x" * (4 * STREAM_HIGH)

    async def scenario() -> None:
        async with serving(refuse, streams=streams_uploads) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            answer = await read_response(reader)
            assert status_of(answer) == 403
            # The dropped body did not stop the connection: the next request is answered.
            writer.write(b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
            assert status_of(await read_response(reader)) == 403
            writer.close()

    run(scenario())


def test_a_client_gone_mid_body_makes_the_reader_raise(run: Any) -> None:
    handler = Hasher()

    async def scenario() -> None:
        async with serving(handler, streams=streams_uploads) as (_, port):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
            await writer.drain()
            await until(lambda: len(handler.seen) == 1)
            writer.transport.abort()
            await until(lambda: len(handler.errors) == 1)

    run(scenario())


def test_a_stalled_streamed_body_gets_408_while_its_handler_waits(run: Any) -> None:
    handler = Hasher()

    async def scenario() -> None:
        async with serving(handler, streams=streams_uploads, head_timeout=0.3, min_body_rate=1000) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /o HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
            await read_all(reader, within=10)  # closed: the handler was still running, so no 408 body
            await until(lambda: len(handler.errors) == 1)
            writer.close()

    run(scenario())


async def _chunks(count: int, size: int, produced: list[int]) -> AsyncIterator[bytes]:
    for i in range(count):
        produced.append(i)
        yield bytes([i % 256]) * size


def test_a_streamed_answer_is_produced_no_faster_than_the_client_reads(run: Any) -> None:
    produced: list[int] = []
    count, size = 512, 64 * 1024  # 32 MiB

    async def handler(request: Request) -> Response:
        return Response(200, stream=_chunks(count, size, produced), length=count * size, content_type=None)

    async def scenario() -> None:
        async with serving(handler) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert f"Content-Length: {count * size}".encode() in head
            await asyncio.sleep(0.3)  # not reading: the producer must stop well short of the end
            assert len(produced) < count // 2
            got = 0
            while got < count * size:
                chunk = await reader.read(1 << 20)
                assert chunk
                got += len(chunk)
            assert got == count * size and len(produced) == count
            # Keep-alive: the connection serves the next request.
            writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            rest = await read_all(reader, within=30)
            assert rest.startswith(b"HTTP/1.1 200")
            writer.close()

    run(scenario())


def test_a_head_answer_says_the_length_and_sends_nothing(run: Any) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, length=12345, content_type="image/jpeg")

    async def scenario() -> None:
        async with serving(handler) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HEAD /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await read_all(reader)
            assert b"Content-Length: 12345\r\n" in answer and answer.endswith(b"\r\n\r\n")
            writer.close()

    run(scenario())


def test_an_answer_stream_that_fails_mid_way_aborts_the_connection(run: Any) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise OSError("the disk went away")

    async def handler(request: Request) -> Response:
        return Response(200, stream=failing(), length=5000, content_type=None)

    async def scenario() -> None:
        errors: list[Any] = []
        async with serving(handler) as (_, port):
            asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /o HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await read_all(reader)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"Content-Length: 5000" in head and len(body) == 1000
            writer.close()

    run(scenario())


def test_body_stream_is_exported() -> None:
    assert BodyStream.__aiter__ is not None
