"""Hostile clients against the API port: each attack an adversarial probe made against ``selfless serve``,
reproduced against a real server, with the platform's answer and its health afterwards (/health answers at
once, an invoke still works).

- 400,000 repeated headers (6.8 MB) stalled the event loop for 24 s; one huge header and too many headers
  are the same attack's cousins: now 431 at once.
- A header byte now and then held a connection forever, and so did a body at that pace: now 408 at the
  head deadline (SELFLESS_HEAD_TIMEOUT, short here) and at the body's minimum pace (SELFLESS_MIN_BODY_RATE).
- A flood of connections exhausted the server's descriptors, and /health failed for ~20 s after it: now
  past SELFLESS_MAX_CONNECTIONS (small here) new connections are reset at once, and /health answers again
  as soon as the flood lets go.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, deploy, start_server, unique

HEAD_TIMEOUT = 1.5
MIN_BODY_RATE = 1000
MAX_CONNECTIONS = 64
# The sweep visits connections every quarter of the head deadline; the rest is slack for a loaded machine.
LATE = HEAD_TIMEOUT / 4 + 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        Path(tmp_path_factory.mktemp("http")),
        {
            "SELFLESS_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
            "SELFLESS_MIN_BODY_RATE": str(MIN_BODY_RATE),
            "SELFLESS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "SELFLESS_ZYGOTE_PREWARM": "",
        },
    )
    yield srv
    assert srv.stop() == 0, srv.log()
    assert srv.leftovers() == [], "environments outlived the server"
    # Every attack was answered by the server's own rules, none by an error reaching the event loop.
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture(scope="module")
def function(server: Server) -> str:
    return deploy(server.client(), "def handler(event, context):\n    return {'echo': event}\n", name=unique("http"))


def health(server: Server, timeout: float = 5.0) -> float:
    """GET /health on a new connection; how long it took (it must answer 200)."""
    t0 = time.monotonic()
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=timeout) as r:
        assert r.status == 200
        r.read()
    return time.monotonic() - t0


def assert_healthy(server: Server, function: str) -> None:
    assert health(server) < 1.0
    r = server.client().invoke(FunctionName=function, Payload=b'{"after": "attack"}')
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert json.loads(r["Payload"].read()) == {"echo": {"after": "attack"}}


def exchange(server: Server, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` whole, then read until the server closes; what it answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        with contextlib.suppress(ConnectionError):
            s.sendall(data)
        return read_until_closed(s)


def read_until_closed(s: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_message(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["message"]


class HealthWatch:
    """Polls /health from a thread while an attack runs: every answer must be 200, and quick."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.latencies.append(health(self._server, timeout=10))
            except Exception as exc:
                self.failures.append(repr(exc))
            time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert self.failures == []
        assert self.latencies, "/health was never asked"
        assert max(self.latencies) < 1.0, self.latencies


def dribble(server: Server, data: bytes, every: float) -> tuple[float, bytes]:
    """Send ``data`` one byte per ``every`` seconds until the server answers or closes; how long after the
    first byte that came, and what it said."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        t0 = time.monotonic()
        for byte in data:
            try:
                s.send(bytes([byte]))
            except ConnectionError:
                break
            readable, _, _ = select.select([s], [], [], every)
            if readable:
                break
        else:
            raise AssertionError("the server waited for all of it")
        answer = read_until_closed(s)
        return time.monotonic() - t0, answer


def test_400k_repeated_headers_get_431_at_once_and_health_keeps_answering(server: Server, function: str) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Amz-Meta-A: abcdefgh\r\n" * 400_000 + b"\r\n"
    assert len(head) > 6_000_000
    with HealthWatch(server):
        t0 = time.monotonic()
        answer = exchange(server, head)
        elapsed = time.monotonic() - t0
    status, message = status_and_message(answer)
    assert status == 431
    assert message == "Request header fields too large: at most 100 fields and 32768 bytes"
    assert elapsed < 2.0
    assert_healthy(server, function)


def test_one_huge_header_gets_431_at_once(server: Server, function: str) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"h" * 7_000_000 + b"\r\n\r\n"
    with HealthWatch(server):
        t0 = time.monotonic()
        answer = exchange(server, head)
        elapsed = time.monotonic() - t0
    assert status_and_message(answer)[0] == 431
    assert elapsed < 2.0
    assert_healthy(server, function)


def test_too_many_headers_get_431(server: Server, function: str) -> None:
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(101))
    answer = exchange(server, f"GET /health HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
    assert status_and_message(answer)[0] == 431
    assert_healthy(server, function)


def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_head_deadline(server: Server, function: str) -> None:
    """Fifty such clients at once: each is answered 408 at the deadline, and /health answers throughout."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 10_000 + b"\r\n\r\n"
    with HealthWatch(server), concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: dribble(server, head, every=0.25), range(50)))
    for elapsed, answer in results:
        assert status_and_message(answer) == (
            408,
            f"Request timeout: the request head took more than {HEAD_TIMEOUT:g} s",
        )
        assert HEAD_TIMEOUT - 0.3 <= elapsed < HEAD_TIMEOUT + LATE
    assert_healthy(server, function)


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(server: Server, function: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        t0 = time.monotonic()
        assert read_until_closed(s) == b""
        assert HEAD_TIMEOUT - 0.3 <= time.monotonic() - t0 < HEAD_TIMEOUT + LATE
    assert_healthy(server, function)


def test_a_body_sent_a_byte_at_a_time_is_cut_at_its_deadline(server: Server, function: str) -> None:
    head = (
        f"POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        t0 = time.monotonic()
        for _ in range(1000):
            try:
                s.send(b"x")
            except ConnectionError:
                break
            if select.select([s], [], [], 0.25)[0]:
                break
        elapsed = time.monotonic() - t0
        answer = read_until_closed(s)
    assert status_and_message(answer) == (
        408,
        f"Request timeout: the request body arrived slower than {MIN_BODY_RATE} bytes/s",
    )
    # The grace plus a second per MIN_BODY_RATE bytes that came (a few here).
    assert HEAD_TIMEOUT - 0.3 <= elapsed < HEAD_TIMEOUT + 0.1 + LATE
    assert_healthy(server, function)


def read_response(s: socket.socket) -> bytes:
    """One response off a kept-alive connection (b"" when the server closed or reset it)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                return b""
            body += chunk
    except ConnectionError:
        return b""
    return head + b"\r\n\r\n" + body


def ask_for_health(server: Server) -> socket.socket | None:
    """A new connection that asks for /health and stays open (keep-alive); None when the server refused it
    (reset or closed without an answer; the reset can come before connect() returns)."""
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    except ConnectionError:
        return None
    with contextlib.suppress(ConnectionError):
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    if read_response(s):
        return s
    s.close()
    return None


def refused_fast(server: Server) -> None:
    """A new connection is refused, at once."""
    t0 = time.monotonic()
    assert ask_for_health(server) is None
    assert time.monotonic() - t0 < 1.0


def metric(server: Server, name: str) -> float:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_connection_flood_is_refused_at_the_cap_and_health_answers_once_it_ends(
    server: Server, function: str
) -> None:
    refused_metric = 'selfless_connections_refused_total{listener="api"}'
    refused_before = metric(server, refused_metric)
    held: list[socket.socket] = []
    try:
        # Each connection asks for /health and stays (keep-alive): a client that holds what it opened.
        for _ in range(MAX_CONNECTIONS + 10):
            s = ask_for_health(server)
            if s is None:
                break
            held.append(s)
        else:
            raise AssertionError(f"{len(held)} connections held, past the cap of {MAX_CONNECTIONS}")
        # Others of this test session (pooled clients) may hold a few of the cap.
        assert MAX_CONNECTIONS - 8 <= len(held) < MAX_CONNECTIONS
        refused_fast(server)
        t0 = time.monotonic()
        with pytest.raises(OSError):
            health(server)
        assert time.monotonic() - t0 < 1.0
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 2.0
    while True:
        try:
            health(server)
            break
        except OSError:
            assert time.monotonic() < deadline, "/health did not come back within 2 s of the flood's end"
            time.sleep(0.05)
    assert metric(server, refused_metric) >= refused_before + 3
    assert_healthy(server, function)


def test_the_limits_leave_ordinary_clients_alone(server: Server, function: str) -> None:
    """A signed request with a large body (1 MB) and the usual SDK headers goes through."""
    payload = json.dumps({"blob": "b" * 1_000_000}).encode()
    r: Any = server.client().invoke(FunctionName=function, Payload=payload)
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert len(json.loads(r["Payload"].read())["echo"]["blob"]) == 1_000_000
