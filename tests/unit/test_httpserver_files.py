"""Answers sent from a file with sendfile (``Response.file``): whole and ranged, kept alive, behind a large
answer still in the transport's buffer, to a client that stops reading (backpressure, with the loop free
for others), to a client that goes away mid-file, from a file that ends early; the file is always closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfless.httpserver import FileBody, Request, Response
from tests.unit.test_httpserver import read_all, read_response, run, serving, until

__all__ = ["run"]  # the fixture, shared with test_httpserver


@pytest.fixture
def data_file() -> Iterator[tuple[Path, bytes]]:
    data = os.urandom(3 << 20)
    with tempfile.TemporaryDirectory(prefix="selfless-files-") as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        yield path, data


class FileServer:
    """Answers ``GET /<start>/<count>`` with those bytes of ``path`` (``GET /small`` with a short body),
    noting the descriptors it handed over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fds: list[int] = []

    def __call__(self, request: Request) -> Response:
        if request.path == "/small":
            return Response(200, b"small", content_type="text/plain")
        if request.path == "/big":
            return Response(200, b"b" * (8 << 20), content_type=None)
        start, count = (int(part) for part in request.path.strip("/").split("/"))
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return Response(
            206, headers=[("X-Range", f"{start}-{count}")], content_type=None, file=FileBody(fd, start, count)
        )

    def all_closed(self) -> bool:
        return all(_closed(fd) for fd in self.fds)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_whole_and_ranged_file_answers_on_one_kept_alive_connection(run: Any, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    files = FileServer(path)

    async def scenario() -> None:
        async with serving(files) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for start, count in ((0, len(data)), (12345, 1 << 20), (len(data) - 7, 7), (5, 1)):
                writer.write(f"GET /{start}/{count} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                answer = await read_response(reader)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 206") and f"Content-Length: {count}\r\n".encode() in head + b"\r\n"
                assert body == data[start : start + count]
            writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await read_all(reader)).endswith(b"\r\n\r\nsmall")
            writer.close()
            await until(files.all_closed)

    run(scenario())


def test_a_file_answer_to_head_says_the_length_sends_nothing_and_closes_the_file(
    run: Any, data_file: tuple[Path, bytes]
) -> None:
    path, _ = data_file
    files = FileServer(path)

    async def scenario() -> None:
        async with serving(files) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HEAD /10/2000 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 206") and b"Content-Length: 2000\r\n" in head
            await until(files.all_closed)
            # Nothing followed the head: the next answer on the connection starts right after it.
            writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            rest = await read_all(reader)
            assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\nsmall")
            writer.close()

    run(scenario())


def test_a_file_answer_waits_for_a_large_answer_still_buffered_before_it(
    run: Any, data_file: tuple[Path, bytes]
) -> None:
    path, data = data_file
    files = FileServer(path)

    async def scenario() -> None:
        async with serving(files) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            # Pipelined: an 8 MiB answer the client does not read yet (most of it waits in the transport's
            # buffer), then a file answer, whose bytes must not overtake it.
            writer.write(f"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /0/{len(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await asyncio.sleep(0.3)
            first = await read_response(reader)
            assert first.partition(b"\r\n\r\n")[2] == b"b" * (8 << 20)
            second = await read_response(reader)
            assert second.startswith(b"HTTP/1.1 206") and second.partition(b"\r\n\r\n")[2] == data
            writer.close()
            await until(files.all_closed)

    run(scenario())


def test_a_file_answer_goes_no_faster_than_the_client_reads_and_leaves_the_loop_free(run: Any) -> None:
    size = 64 << 20
    with tempfile.TemporaryDirectory(prefix="selfless-files-") as tmp:
        path = Path(tmp) / "blob"
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: 64 MiB of zeros
        files = FileServer(path)

        async def scenario() -> None:
            async with serving(files) as (server, port):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
                writer.write(f"GET /0/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.3)  # not reading: the server must be waiting, well short of the end
                (conn,) = server.connections
                assert conn._task is not None and not conn._task.done()
                assert not files.all_closed()
                # Meanwhile the server answers others at once.
                other_reader, other_writer = await asyncio.open_connection("127.0.0.1", port)
                other_writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await read_all(other_reader, within=2)).endswith(b"small")
                other_writer.close()
                got = 0
                while got < size:
                    chunk = await reader.read(1 << 20)
                    assert chunk and chunk.count(0) == len(chunk)
                    got += len(chunk)
                assert got == size
                writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await read_all(reader)).endswith(b"small")
                writer.close()
                await until(files.all_closed)

        run(scenario())


def test_a_client_gone_mid_file_closes_the_file_and_the_connection(run: Any) -> None:
    size = 64 << 20
    with tempfile.TemporaryDirectory(prefix="selfless-files-") as tmp:
        path = Path(tmp) / "blob"
        with open(path, "wb") as f:
            f.truncate(size)
        files = FileServer(path)

        async def scenario() -> None:
            async with serving(files) as (server, port):
                for reset in (False, True):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
                    writer.write(f"GET /0/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    await reader.readexactly(1 << 20)
                    if reset:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.close()
                    await until(lambda: not server.connections)
                    await until(files.all_closed)

        run(scenario())


def test_a_file_that_ends_early_aborts_the_connection(run: Any, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    files = FileServer(path)

    async def scenario() -> None:
        async with serving(files) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /{len(data) - 100}/1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = await read_all(reader)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"Content-Length: 1000\r\n" in head + b"\r\n" and body == data[-100:]  # short: never wrong
            writer.close()
            await until(files.all_closed)

    run(scenario())


def test_a_file_answer_the_connection_did_not_live_to_see_is_closed(run: Any, data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    opened: list[int] = []

    async def scenario() -> None:
        async def handler(request: Request) -> Response:
            with contextlib.suppress(asyncio.CancelledError):  # the connection went away: answered regardless
                await asyncio.sleep(30)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened.append(fd)
            return Response(200, file=FileBody(fd, 0, 10))

        async with serving(handler) as (server, port):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: bool(server.connections) and next(iter(server.connections))._task is not None)
            writer.close()
            await until(lambda: len(opened) == 1)
            await until(lambda: _closed(opened[0]))

    run(scenario())
