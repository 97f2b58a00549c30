"""A small HTTP/1.1 server on ``asyncio.Protocol`` and httptools, shared by the public API and the Runtime API.

Why not a framework: the warm invoke path crosses this layer four times (client in and out, environment in
and out), and a framework costs ~100 µs each way here (docs/benchmarks.md). This module does only what both
servers need:

- one request at a time per connection: a pipelined request waits in a short queue (reading pauses only
  when that queue is full), so the common case costs no epoll changes;
- keep-alive, ``Connection: close``, HTTP/1.0;
- bodies up to ``max_body`` bytes; a larger ``Content-Length`` is answered by ``on_too_large`` after the body
  has been read and dropped (so that clients that send the whole body before reading see the answer), and a
  body past ``2 * max_body`` closes the connection;
- TCP_NODELAY on every connection (Nagle plus delayed ACK otherwise adds ~44 ms per leg);
- an idle deadline per connection, enforced by one sweep per server (no timer per request): a connection
  with no handler running that has been silent that long is closed, mid-request or between requests.

Handlers are ``async def handler(request) -> Response``. A handler that raises gets a bare 500; mapping domain
errors to wire errors is the caller's job (``selfless.api.errors``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("serving a listener failed", exc_info=task.exception())


_REASONS = {s.value: s.phrase for s in HTTPStatus}
_MAX_PIPELINED = 8


@dataclasses.dataclass(slots=True)
class Request:
    method: str
    path: str  # raw, still percent-encoded, without the query
    query: str  # raw, after '?', may be ""
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    body: bytes
    peer: tuple[str, int] | None = None
    # Per-server context (the Runtime API puts the environment here).
    context: Any = None


@dataclasses.dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    content_type: str | None = "application/json"


Handler = Callable[[Request], Awaitable[Response]]
# Decides from (peer address, local address) whether a new connection may stay open.
PeerCheck = Callable[[tuple[str, int], tuple[str, int]], bool]
TooLargeHandler = Callable[[Request], Response]


def _too_large_default(request: Request) -> Response:
    return Response(413, b'{"message":"Request entity too large"}')


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "_body_parts",
        "_body_size",
        "_closing",
        "_connections",
        "_context",
        "_discarding",
        "_handler",
        "_header_name",
        "_headers",
        "_last_seen",
        "_loop",
        "_max_body",
        "_on_too_large",
        "_parser",
        "_peer",
        "_peer_check",
        "_pending",
        "_task",
        "_transport",
        "_url",
    )

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        context: Any,
        on_too_large: TooLargeHandler,
        connections: set[HttpProtocol],
        peer_check: PeerCheck | None = None,
    ) -> None:
        self._peer_check = peer_check
        self._handler = handler
        self._max_body = max_body
        self._context = context
        self._on_too_large = on_too_large
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_name = b""
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._discarding = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._pending: collections.deque[tuple[Request, bool]] = collections.deque()
        self._last_seen = time.monotonic()
        self._peer: tuple[str, int] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._peer = peer if isinstance(peer, tuple) else None
        if self._peer_check is not None:
            local = transport.get_extra_info("sockname")
            if self._peer is None or not self._peer_check(self._peer, local):
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        self._pending.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._last_seen = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._send_error_and_close(400)
        except httptools.HttpParserError:
            self._send_error_and_close(400)

    # -- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body_parts = []
        self._body_size = 0
        self._discarding = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old},{text}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._discarding = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._discarding or self._body_size > self._max_body:
            self._discarding = True
            self._body_parts = []
            if self._body_size > 2 * self._max_body:
                self._send_error_and_close(413)
            return
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        if self._transport is None or self._closing:
            return
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body_parts[0] if len(self._body_parts) == 1 else b"".join(self._body_parts)
        self._body_parts = []
        request = Request(
            self._parser.get_method().decode("ascii"),
            path,
            query,
            self._headers,
            body,
            self._peer,
            self._context,
        )
        keep_alive = self._parser.should_keep_alive()
        if self._discarding:
            self._pending.clear()
            self._write(self._on_too_large(request), keep_alive=False)
            return
        if self._task is not None:
            # Pipelined behind a request still being served; answers go out in order.
            self._pending.append((request, keep_alive))
            if len(self._pending) >= _MAX_PIPELINED:
                self._transport.pause_reading()
            return
        self._task = self._loop.create_task(self._run(request, keep_alive))

    # -- internals ----------------------------------------------------------------------------------------

    async def _run(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self._handler(request)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = Response(500, b'{"message":"Internal server error"}')
        self._task = None
        self._write(response, keep_alive)

    def _write(self, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        if response.content_type is not None:
            parts.append(f"Content-Type: {response.content_type}\r\n")
        for name, value in response.headers:
            parts.append(f"{name}: {value}\r\n")
        parts.append(f"Content-Length: {len(response.body)}\r\n")
        if not keep_alive:
            parts.append("Connection: close\r\n")
        parts.append("\r\n")
        head = "".join(parts).encode("latin-1")
        # One write: headers and body leave in the same segment when they fit.
        transport.write(head + response.body if len(response.body) < 65536 else head)
        if len(response.body) >= 65536:
            transport.write(response.body)
        self._last_seen = time.monotonic()
        if not keep_alive:
            transport.close()
        elif self._pending and self._task is None:
            request, keep = self._pending.popleft()
            if len(self._pending) == _MAX_PIPELINED - 1:
                transport.resume_reading()
            self._task = self._loop.create_task(self._run(request, keep))

    def _send_error_and_close(self, status: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            body = b'{"message":"Bad request"}' if status == 400 else b'{"message":"Request entity too large"}'
            self._write(Response(status, body), keep_alive=False)

    def close_if_idle(self, cutoff: float) -> None:
        """Close when no handler runs and nothing arrived since ``cutoff`` (a monotonic time)."""
        if self._task is None and self._last_seen < cutoff and self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        """Close now; an in-flight handler is cancelled."""
        if self._transport is not None:
            self._transport.close()


class HttpServer:
    """One listening socket and the connections it accepted."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = 1 << 20,
        idle_timeout: float = 75.0,
        context: Any = None,
        on_too_large: TooLargeHandler = _too_large_default,
        peer_check: PeerCheck | None = None,
    ) -> None:
        self._peer_check = peer_check
        self._handler = handler
        self._max_body = max_body
        self._idle_timeout = idle_timeout
        self._context = context
        self._on_too_large = on_too_large
        self._server: asyncio.Server | None = None
        self._listener: socket.socket | None = None  # bound by ``listen``, not yet served
        self._serving: asyncio.Task[None] | None = None  # ``serve_soon``
        self._waiting_fd = -1  # ``serve_on_demand``: the listener watched for a first connection
        self._sweeper: asyncio.TimerHandle | None = None
        self.connections: set[HttpProtocol] = set()

    def _factory(self) -> HttpProtocol:
        return HttpProtocol(
            self._handler,
            max_body=self._max_body,
            context=self._context,
            on_too_large=self._on_too_large,
            connections=self.connections,
            peer_check=self._peer_check,
        )

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> tuple[str, int]:
        """Listen and return the bound (host, port)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._factory, sock=sock, backlog=1024)
        else:
            self._server = await loop.create_server(self._factory, host, port, backlog=1024, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self._start_sweeping()
        return str(bound[0]), int(bound[1])

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind and listen now, without the event loop (microseconds, where ``start`` costs ~0.3 ms):
        connections wait in the kernel's backlog until ``serve``. For a caller that needs the address
        before it can afford to serve (a cold start hands it to the runtime first)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        bound = sock.getsockname()
        return str(bound[0]), int(bound[1])

    def listen_on(self, sock: socket.socket) -> None:
        """``listen`` with a listening socket made elsewhere (inside another network namespace, say): served
        by ``serve``, closed with the server."""
        sock.setblocking(False)
        self._listener = sock

    async def serve(self) -> None:
        """Accept on the socket ``listen`` (or ``listen_on``) took."""
        if self._listener is None:
            raise RuntimeError("listen() first")
        sock, self._listener = self._listener, None
        try:
            self._server = await asyncio.get_running_loop().create_server(self._factory, sock=sock, backlog=1024)
        except BaseException:
            sock.close()
            raise
        self._start_sweeping()

    def serve_on_demand(self) -> None:
        """``serve`` once the first connection waits on the socket ``listen``/``listen_on`` took: a listener
        nobody uses (most environments never call selfless's API) costs one epoll registration, not the
        event loop's ~0.3 ms of serving it."""
        if self._listener is None or self._serving is not None:
            return
        loop = asyncio.get_running_loop()
        fd = self._listener.fileno()

        def wanted() -> None:
            loop.remove_reader(fd)
            self._waiting_fd = -1
            self.serve_soon()

        loop.add_reader(fd, wanted)
        self._waiting_fd = fd

    def serve_soon(self) -> None:
        """``serve`` in a task of its own (errors are logged: connections then wait until ``close_all``)."""
        if self._listener is None or self._serving is not None:
            return
        self._serving = asyncio.get_running_loop().create_task(self.serve())
        self._serving.add_done_callback(_log_failure)

    def _start_sweeping(self) -> None:
        if self._idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    async def adopt(self, sock: socket.socket) -> None:
        """Serve one connection that is already made, as if accepted: whoever made it vouches for its peer,
        so there is no peer check. The transport owns ``sock`` from here."""
        factory = functools.partial(
            HttpProtocol,
            self._handler,
            max_body=self._max_body,
            context=self._context,
            on_too_large=self._on_too_large,
            connections=self.connections,
        )
        try:
            await asyncio.get_running_loop().connect_accepted_socket(factory, sock)
        except BaseException:
            sock.close()
            raise

    @property
    def _sweep_every(self) -> float:
        return max(0.5, self._idle_timeout / 4)

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self._idle_timeout
        for conn in list(self.connections):
            conn.close_if_idle(cutoff)
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    def stop_listening(self) -> None:
        """Idempotent: stop accepting; open connections stay."""
        if self._waiting_fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._waiting_fd)
            self._waiting_fd = -1
        if self._serving is not None:
            self._serving.cancel()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def close_all(self) -> None:
        self.stop_listening()
        for conn in list(self.connections):
            conn.close()
