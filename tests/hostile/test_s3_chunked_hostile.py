"""Hostile aws-chunked uploads: a client that declares a chunk of 2^60 bytes and then sends data without end, one
whose chunk line never ends, one that streams a 64 MiB chunk and then breaks the framing. The server answers
S3's error at once (from the chunk line, not after the data the client promised; after the large chunk, at the
first byte past it) and its peak memory stays where it was."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, start_server
from tests.e2e.test_s3 import client, error_of
from tests.hostile.test_output_flood import memory_mb

SENT_AT_MOST = 96 << 20  # bytes each attacker sends (while the server reads and drops them)


def attack(server: Server, path: str, decoded_length: int, opening: bytes, filler: bytes) -> tuple[bytes, float]:
    """A signed STREAMING-UNSIGNED-PAYLOAD-TRAILER PUT whose body (HTTP-chunked, as SDKs send it) is ``opening``
    and then ``filler`` without end; the server's answer, and how long it took to come."""
    request = AWSRequest(method="PUT", url=f"{server.endpoint}{path}")
    request.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
    request.headers["Content-Encoding"] = "aws-chunked"
    request.headers["Transfer-Encoding"] = "chunked"
    request.headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    request.headers["X-Amz-Decoded-Content-Length"] = str(decoded_length)
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    head = f"Host: 127.0.0.1:{server.port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    stop = threading.Event()

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:

        def send() -> None:
            frame = f"{len(filler):x}\r\n".encode() + filler + b"\r\n"
            try:
                sock.sendall(f"PUT {path} HTTP/1.1\r\n{head}\r\n".encode())
                if opening:
                    sock.sendall(f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
                sent = 0
                while sent < SENT_AT_MOST and not stop.is_set():
                    sock.sendall(frame)
                    sent += len(frame)
            except OSError:
                pass  # the server closed: as good as an answer

        sender = threading.Thread(target=send, daemon=True)
        started = time.monotonic()
        sender.start()
        answer = b""
        try:
            while b"</Error>" not in answer:
                got = sock.recv(65536)
                if not got:
                    break
                answer += got
            took = time.monotonic() - started
        finally:
            stop.set()
            with contextlib.suppress(OSError):  # the server may have closed already
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(30)
    return answer, took


def test_declared_giant_chunks_and_endless_chunk_lines_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        s3 = client(srv)
        s3.create_bucket(Bucket="hostile")
        s3.put_object(Bucket="hostile", Key="warm", Body=b"x" * 100_000)  # the upload path's first-use costs
        before = memory_mb(srv.process.pid)
        cases = [
            (1 << 20, b"1000000000000000\r\n", b"a" * 65536),  # a chunk of 2^60 bytes: past the declared size
            (5 << 30, b"1000000000000000\r\n", b"a" * 65536),  # ... past the largest object too
            (1 << 20, b"", b"1" * 65536),  # a chunk line that never ends
            (1 << 20, b"2000\r\n" + b"a" * 8192 + b"\r\n", b"f" * 65536),  # the same after a chunk
            (64 << 20, b"4000000\r\n", b"a" * 65536),  # 64 MiB streamed through, then no CRLF after them
        ]
        for declared, opening, filler in cases:
            answer, took = attack(srv, "/hostile/attack", declared, opening, filler)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"<Code>IncompleteBody</Code>" in answer, answer[:400]
            assert took < 20, took
        after = memory_mb(srv.process.pid)
        # Kilobytes were read of each body before the answer; its peak memory stayed where it was.
        assert after["VmHWM"] - before["VmHWM"] < 48, (before, after)
        assert error_of(s3.head_object, Bucket="hostile", Key="attack")[1] == 404
        assert not any((tmp_path / "data" / "s3" / "tmp").iterdir())  # the partial write is gone
        s3.put_object(Bucket="hostile", Key="after", Body=b"fine")  # and it serves on
        assert s3.get_object(Bucket="hostile", Key="after")["Body"].read() == b"fine"
    finally:
        assert srv.stop() == 0, srv.log()


pytestmark = pytest.mark.timeout(300)
