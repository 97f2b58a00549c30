"""Attacks on browser-based uploads (PostObject), whose body is read before anyone is authenticated: endless
fields before the file, a part header or a preamble that never ends, a file whose closing boundary never comes,
a client that leaves mid-file. Each is answered as S3 answers it (or, for a client that left, not at all),
quickly, with the server's memory bounded, and leaves nothing behind."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.conftest import Server, start_server
from tests.e2e.test_s3 import client, error_of
from tests.e2e.test_s3_large import status_kb

pytestmark = pytest.mark.timeout(300)

FLOOD = 32 << 20  # bytes of hostile body sent after the server's answer
GROWTH_LIMIT = 16 << 20  # what the server's peak resident memory may grow by meanwhile


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("post-hostile"))
    try:
        client(server).create_bucket(Bucket="target")
        yield server
    finally:
        assert server.stop() == 0, server.log()


def signed_fields(server: Server, key: str) -> dict[str, str]:
    form = client(server, signature_version="s3v4").generate_presigned_post(Bucket="target", Key=key)
    return dict(form["fields"])


def part(boundary: str, name: str, value: str) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def answer_of(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the one answer on ``sock`` (read until its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body[:length]


def code_of(body: bytes) -> str:
    return ElementTree.fromstring(body).findtext("Code") or ""


def flood(server: Server, prefix: bytes, filler: bytes) -> tuple[int, bytes, float, int]:
    """POST a body that starts with ``prefix`` and goes on with ``filler`` for FLOOD bytes, read the answer while
    it is sent: (status, body, seconds to the answer, the server's peak memory growth once all was sent)."""
    boundary = prefix.split(b"\r\n", 1)[0][2:].decode() if prefix.startswith(b"--") else "unused"
    pid = server.process.pid
    before = status_kb(pid, "VmRSS")
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        head = (
            f"POST /target HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(prefix) + FLOOD}\r\n\r\n"
        )
        sent: list[BaseException] = []

        def send() -> None:
            try:
                sock.sendall(head.encode() + prefix)
                for _ in range(FLOOD // len(filler)):
                    sock.sendall(filler)
            except OSError as exc:
                sent.append(exc)

        sender = threading.Thread(target=send)
        started = time.monotonic()
        sender.start()
        status, body = answer_of(sock)
        took = time.monotonic() - started
        sender.join(timeout=120)
        assert not sender.is_alive() and not sent, sent  # the server read (and dropped) all of it
    growth = (status_kb(pid, "VmHWM") - before) * 1024
    return status, body, took, growth


def test_endless_fields_before_the_file_are_cut_at_20_kb(srv: Server) -> None:
    boundary = uuid.uuid4().hex
    fields = b"".join(part(boundary, name, value) for name, value in signed_fields(srv, "flood").items())
    filler = b"".join(part(boundary, f"x-ignore-{i}", "v" * 200) for i in range(4096))  # ~1 MB of fields
    status, body, took, growth = flood(srv, fields, filler)
    assert status == 400 and code_of(body) == "MaxPostPreDataLengthExceeded", body
    assert took < 10 and growth < GROWTH_LIMIT, (took, growth >> 20)
    assert error_of(client(srv).head_object, Bucket="target", Key="flood")[1] == 404


@pytest.mark.parametrize(
    ("prefix", "filler"),
    [
        # A part's header that never ends (no blank line after it).
        (b'--b0undary\r\nContent-Disposition: form-data; name="key"\r\nX-Pad: ', b"a" * 65536),
        # A preamble in which the boundary never comes.
        (b"", b"no boundary here " * 4096),
        # A boundary line that never ends.
        (b"--b0undary", b" " * 65536),
    ],
    ids=["header", "preamble", "boundary-line"],
)
def test_a_form_whose_structure_never_ends_is_cut_at_20_kb(srv: Server, prefix: bytes, filler: bytes) -> None:
    status, body, took, growth = flood(srv, prefix, filler)
    assert status == 400 and code_of(body) == "MaxPostPreDataLengthExceeded", body
    assert took < 10 and growth < GROWTH_LIMIT, (took, growth >> 20)


def leftover_blobs(server: Server) -> list[Path]:
    return list((server.data_dir / "s3" / "tmp").iterdir())


def test_a_file_without_its_closing_boundary_is_refused_and_leaves_nothing(srv: Server) -> None:
    boundary = uuid.uuid4().hex
    fields = b"".join(part(boundary, name, value) for name, value in signed_fields(srv, "unclosed").items())
    file_head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
    content = b"z" * (5 << 20)  # past the size kept inline: a temporary file on disk
    body = fields + file_head + content
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(
            f"POST /target HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, answer = answer_of(sock)
    assert status == 400 and code_of(answer) == "MalformedPOSTRequest", answer
    assert error_of(client(srv).head_object, Bucket="target", Key="unclosed")[1] == 404
    assert leftover_blobs(srv) == []


def test_a_client_that_leaves_mid_file_leaves_nothing(srv: Server) -> None:
    boundary = uuid.uuid4().hex
    fields = b"".join(part(boundary, name, value) for name, value in signed_fields(srv, "left").items())
    file_head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(
            f"POST /target HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {100 << 20}\r\n\r\n".encode()
            + fields
            + file_head
            + b"z" * (5 << 20)
        )
    deadline = time.monotonic() + 10
    while leftover_blobs(srv) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_blobs(srv) == []
    assert error_of(client(srv).head_object, Bucket="target", Key="left")[1] == 404
    s3: Any = client(srv)
    s3.put_object(Bucket="target", Key="after", Body=b"still serving")
    assert s3.get_object(Bucket="target", Key="after")["Body"].read() == b"still serving"
