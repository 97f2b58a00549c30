"""Attacks on function URLs: request bodies past the 6 MB an invocation takes (refused 413, also far past the
API's own body limit), a response past 6 MB (AWS's 502, the server's memory bounded), a response whose header
would split the HTTP response (502), and a flood of requests to URL ids that do not exist (404, nothing kept).
The server stays healthy throughout."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tests.conftest import Server
from tests.e2e.test_function_urls import ROUTES, call, host_of, make_public

SPLITTER = """
def handler(event, context):
    return {"statusCode": 200, "headers": {"x-evil": "a\\r\\nSet-Cookie: stolen=1"}, "body": "hi"}
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def public_url(lam: Any, name: str) -> str:
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    return str(url)


def test_oversized_requests_and_responses(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    url = public_url(lam, make_function(ROUTES))
    host = host_of(url)
    before = rss_mb(server.process.pid)
    for _ in range(3):
        refused = call(server, "POST", "/echo", host=host, body=b"x" * (6 * 1024 * 1024 + 1))
        assert refused.status == 413
        assert refused.json() == {"Message": "Request Entity Too Large"}
        # Under 6 MB as bytes but past it as the event's base64: refused too.
        binary = call(
            server,
            "POST",
            "/echo",
            host=host,
            body=b"\xff" * (5 * 1024 * 1024),
            headers=[("Content-Type", "application/octet-stream")],
        )
        assert binary.status == 413
        big = call(server, "GET", "/big", host=host)
        assert big.status == 502
        assert big.body == b"Internal Server Error"
    assert call(server, "GET", "/bare", host=host).status == 200
    # Memory: nothing of those bodies is kept (a generous bound for a loaded machine's allocator).
    assert rss_mb(server.process.pid) - before < 200


def test_a_body_past_the_api_limit_is_dropped(server: Server) -> None:
    """A 100 MB body to a URL (past the 70 MB any API request may carry): read and dropped as it arrives, then
    answered 413 in function URLs' words; the server's memory does not hold it."""
    before = rss_mb(server.process.pid)
    size = 100 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        head = f"POST /lambda-url/{'a' * 32}/ HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode())
        chunk = b"\0" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        answer = b""
        while b"}" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert answer.endswith(b'{"Message":"Request Entity Too Large"}'), answer
    assert rss_mb(server.process.pid) - before < 60


def test_response_splitting_is_refused(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    url = public_url(lam, make_function(SPLITTER))
    answer = call(server, "GET", "/", host=host_of(url))
    assert answer.status == 502
    assert answer.all("set-cookie") == []


def test_unknown_url_ids(server: Server) -> None:
    for i in range(200):
        answer = call(server, "GET", f"/lambda-url/{i:032d}/", host=None)
        assert answer.status == 404
    assert call(server, "GET", "/health").status == 200


FRAMER = """
def handler(event, context):
    headers = {"Content-Length": "1", "Transfer-Encoding": "chunked", "x-ok": "yes"}
    if event["rawPath"] == "/wide":
        headers["x-wide"] = "\\u20ac"
    return {"statusCode": 200, "headers": headers, "body": "hello"}
"""


def test_a_function_cannot_frame_the_response(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    """Content-Length and Transfer-Encoding are the server's to write (else the body a client reads would be
    the function's choice: request smuggling towards a proxy); a header HTTP cannot carry is AWS's 502."""
    url = public_url(lam, make_function(FRAMER))
    answer = call(server, "GET", "/", host=host_of(url))
    assert (answer.status, answer.body, answer.header("x-ok")) == (200, b"hello", "yes")
    assert answer.all("content-length") == ["5"]
    assert answer.all("transfer-encoding") == []
    assert call(server, "GET", "/wide", host=host_of(url)).status == 502
    assert call(server, "GET", "/", host=host_of(url)).status == 200  # the connection and server are fine
