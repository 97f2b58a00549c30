"""Floor servers for ``bench/invoke.py``: the cheapest programs that do what one invoke has to do.

Each prints ``ready PORT [RUNTIME_PORT]`` on stdout once it listens (pass port 0 for any free port), serves
until SIGTERM, SIGINT or ``--max-seconds``, and only ever binds 127.0.0.1.

``python bench/floors.py echo PORT``
    A bare uvloop ``asyncio.Protocol`` HTTP/1.1 server, hand-parsed, keep-alive: every request is answered
    ``200`` with its own body. No signature check, no routing: the floor of one HTTP round trip.

``python bench/floors.py relay PORT RUNTIME_PORT``
    A minimal front end in the shape of a Lambda runtime API: a client's request body is handed to a worker
    process that waits in ``GET /2018-06-01/runtime/invocation/next`` on ``RUNTIME_PORT``; the worker
    ``POST``\\ s ``.../invocation/<id>/response`` and the front end answers the client with that body. Idle
    workers are used last-in first-out. ``GET /health`` on ``PORT`` answers ``{"idle": N}``.

``python bench/floors.py relay-worker RUNTIME_PORT``
    The function side of the relay: one blocking keep-alive connection (``TCP_NODELAY``) in a next/response
    loop; the "function" is ``json.dumps(json.loads(body))``, what a handler returning its event costs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import socket
import sys
import time
from typing import cast

import uvloop

HOST = "127.0.0.1"
NEXT_PATH = b"/2018-06-01/runtime/invocation/next"
RESPONSE_PREFIX = b"/2018-06-01/runtime/invocation/"
REQUEST_ID_HEADER = b"\r\nlambda-runtime-aws-request-id:"
CONTENT_LENGTH_HEADER = b"\r\ncontent-length:"
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class RequestParser:
    """Splits a keep-alive byte stream into ``(method, path, body)`` requests (Content-Length bodies)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes, bytes]]:
        self._buf += data
        out: list[tuple[bytes, bytes, bytes]] = []
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > 65536:
                    raise ValueError("request head too long")
                return out
            head = bytes(self._buf[:end])
            line_end = head.find(b"\r\n")
            method, path, _ = (head if line_end < 0 else head[:line_end]).split(b" ", 2)
            lowered = head.lower()
            at = lowered.find(CONTENT_LENGTH_HEADER)
            length = 0
            if at >= 0:
                stop = lowered.find(b"\r\n", at + 2)
                length = int(lowered[at + len(CONTENT_LENGTH_HEADER) : stop if stop >= 0 else len(lowered)])
            if length > MAX_REQUEST_BYTES:
                raise ValueError("request body too large")
            total = end + 4 + length
            if len(self._buf) < total:
                return out
            out.append((method, path, bytes(self._buf[end + 4 : total])))
            del self._buf[:total]


def _response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ParsingProtocol(asyncio.Protocol):
    """A floor connection: parses requests and hands each to ``handle``."""

    def __init__(self) -> None:
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            requests = self._parser.feed(data)
        except ValueError:
            self._transport.close()
            return
        for method, path, body in requests:
            self.handle(method, path, body)

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


class EchoProtocol(_ParsingProtocol):
    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        self.send(_response(b"200 OK", body))


class Relay:
    """The front end's state: idle workers (a stack), waiting requests (a queue), requests in flight."""

    def __init__(self) -> None:
        self.idle: list[RuntimeProtocol] = []
        self.waiting: collections.deque[tuple[bytes, ClientProtocol]] = collections.deque()
        self.inflight: dict[bytes, ClientProtocol] = {}
        self._next_id = 0

    def submit(self, body: bytes, client: ClientProtocol) -> None:
        if self.idle:
            self._hand(self.idle.pop(), body, client)
        else:
            self.waiting.append((body, client))

    def ready(self, worker: RuntimeProtocol) -> None:
        if self.waiting:
            body, client = self.waiting.popleft()
            self._hand(worker, body, client)
        else:
            self.idle.append(worker)

    def _hand(self, worker: RuntimeProtocol, body: bytes, client: ClientProtocol) -> None:
        self._next_id += 1
        request_id = b"%d" % self._next_id
        self.inflight[request_id] = client
        worker.send(_response(b"200 OK", body, b"Lambda-Runtime-Aws-Request-Id: " + request_id + b"\r\n"))

    def respond(self, request_id: bytes, body: bytes) -> bool:
        client = self.inflight.pop(request_id, None)
        if client is None:
            return False
        client.send(_response(b"200 OK", body))
        return True

    def gone(self, worker: RuntimeProtocol) -> None:
        if worker in self.idle:
            self.idle.remove(worker)


class _RelayProtocol(_ParsingProtocol):
    """A relay connection (either side)."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self._relay = relay


class ClientProtocol(_RelayProtocol):
    """The invoke side of the relay front end."""

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"GET" and path == b"/health":
            self.send(_response(b"200 OK", json.dumps({"idle": len(self._relay.idle)}).encode()))
        else:
            self._relay.submit(body, self)


class RuntimeProtocol(_RelayProtocol):
    """The runtime-API side of the relay front end: one connection per worker."""

    def handle(self, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"GET" and path == NEXT_PATH:
            self._relay.ready(self)
        elif method == b"POST" and path.startswith(RESPONSE_PREFIX) and path.endswith(b"/response"):
            request_id = path[len(RESPONSE_PREFIX) : -len(b"/response")]
            known = self._relay.respond(request_id, body)
            self.send(_response(b"202 Accepted" if known else b"404 Not Found", b"{}"))
        else:
            self.send(_response(b"404 Not Found", b"{}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.gone(self)


async def _serve_until_stopped(servers: list[asyncio.Server], max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    ports = [str(s.sockets[0].getsockname()[1]) for s in servers]
    print("ready " + " ".join(ports), flush=True)
    try:
        await asyncio.wait_for(stop, max_seconds)
    except TimeoutError:
        print("floors: --max-seconds reached, stopping", file=sys.stderr)
    for server in servers:
        server.close()


async def serve_echo(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, port, backlog=1024)
    await _serve_until_stopped([server], max_seconds)


async def serve_relay(port: int, runtime_port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay()
    front = await loop.create_server(lambda: ClientProtocol(relay), HOST, port, backlog=1024)
    runtime = await loop.create_server(lambda: RuntimeProtocol(relay), HOST, runtime_port, backlog=1024)
    await _serve_until_stopped([front, runtime], max_seconds)


class _Reader:
    """Reads Content-Length HTTP/1.1 answers from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def answer(self) -> tuple[bytes, bytes]:
        """``(lower-cased head, body)`` of the next answer; raises ``ConnectionError`` at end of stream."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self._buf[:end]).lower()
                at = head.find(CONTENT_LENGTH_HEADER)
                length = 0
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + len(CONTENT_LENGTH_HEADER) : stop if stop >= 0 else len(head)])
                total = end + 4 + length
                if len(self._buf) >= total:
                    body = bytes(self._buf[end + 4 : total])
                    del self._buf[:total]
                    return head, body
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionError("runtime API closed the connection")
            self._buf += chunk


def relay_worker(runtime_port: int, max_seconds: float, idle_timeout_s: float = 600.0) -> None:
    """Serve invocations until the front end goes away, ``idle_timeout_s`` passes without one, or
    ``max_seconds`` is reached (checked between invocations)."""
    deadline = time.monotonic() + max_seconds
    sock = socket.create_connection((HOST, runtime_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(idle_timeout_s)
    reader = _Reader(sock)
    host = b"Host: 127.0.0.1:%d\r\n" % runtime_port
    get_next = b"GET " + NEXT_PATH + b" HTTP/1.1\r\n" + host + b"\r\n"
    try:
        while time.monotonic() < deadline:
            sock.sendall(get_next)
            head, event = reader.answer()
            at = head.find(REQUEST_ID_HEADER)
            if at < 0:
                raise ConnectionError("an invocation without Lambda-Runtime-Aws-Request-Id")
            stop = head.find(b"\r\n", at + 2)
            request_id = head[at + len(REQUEST_ID_HEADER) : stop if stop >= 0 else len(head)].strip()
            result = json.dumps(json.loads(event)).encode()
            sock.sendall(
                b"POST "
                + RESPONSE_PREFIX
                + request_id
                + b"/response HTTP/1.1\r\n"
                + host
                + b"Content-Length: %d\r\n\r\n" % len(result)
                + result
            )
            reader.answer()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long [3600]")
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo", help="bare uvloop HTTP echo server")
    echo.add_argument("port", type=int)
    relay = sub.add_parser("relay", help="relay front end (invoke port and runtime API port)")
    relay.add_argument("port", type=int)
    relay.add_argument("runtime_port", type=int)
    worker = sub.add_parser("relay-worker", help="relay worker (the function process)")
    worker.add_argument("runtime_port", type=int)
    args = parser.parse_args(argv)
    if args.command == "echo":
        uvloop.run(serve_echo(args.port, args.max_seconds))
    elif args.command == "relay":
        uvloop.run(serve_relay(args.port, args.runtime_port, args.max_seconds))
    else:
        relay_worker(args.runtime_port, args.max_seconds)


if __name__ == "__main__":
    main()
