"""A small HTTP/1.1 server on ``asyncio.Protocol`` and httptools, shared by the public API and the Runtime API.

Why not a framework: the warm invoke path crosses this layer four times (client in and out, environment in
and out), and a framework costs ~100 µs each way here (docs/benchmarks.md). This module does only what both
servers need, and bounds what a client can make it hold:

- one request at a time per connection: a pipelined request waits in a short queue (reading pauses only
  when that queue is full), so the common case costs no epoll changes;
- keep-alive, ``Connection: close``, HTTP/1.0;
- request heads of at most ``max_head`` bytes (request target and header fields) in at most ``max_headers``
  fields: past either, 431, and the parser is fed nothing more, so a 7 MB head costs no more parsing than
  ``max_head`` plus one read. Repeated headers are joined with ``,`` once, when the head is complete;
- bodies up to ``max_body`` bytes, or, for a request the server's ``streams`` predicate picks from its head,
  a body of any size handed to the handler as it arrives (``Request.stream``: at most ``STREAM_HIGH`` bytes
  wait unread, then reading pauses; ``Expect: 100-continue`` is answered when the handler starts; an answer
  before the body ended drops the rest at the body's pace); answers may stream too (``Response.stream``,
  written no further ahead of the peer than the transport's high-water mark), or come from a file
  (``Response.file``: sent with ``sendfile``, never through the process, no further ahead of the peer
  than the socket's buffer; the file is closed however the answer ends). A larger ``Content-Length``
  than ``max_body`` is answered by ``on_too_large`` after the body
  has been read and dropped (so that clients that send the whole body before reading see the answer), and a
  body past ``2 * max_body`` closes the connection;
- TCP_NODELAY on every connection (Nagle plus delayed ACK otherwise adds ~44 ms per leg);
- deadlines, enforced by one sweep per server (no timer per request) on connections with no handler
  running: between requests, ``idle_timeout`` of silence closes a connection; a request head must be
  complete ``head_timeout`` after its first byte (a connection's first head: after its accept, so a
  connection that never says anything goes too); a body must keep arriving at ``min_body_rate`` bytes a
  second on average after a grace of ``head_timeout`` (a 1-byte-per-minute body goes after the grace, a
  large one at a fair pace takes what it needs). A late head or body gets 408. ``idle_timeout=0`` turns the
  sweep off: for a server whose peer may stay silent or slow as long as it likes (the Runtime API: a
  runtime waits on /next until there is work, and an invocation's own timeout bounds the rest);
- at most ``max_connections`` connections at once (None: no cap): past it a new connection is accepted and
  reset at once (SO_LINGER 0), so its client fails fast instead of waiting in the backlog, and
  ``on_refused`` is called.

Refusals (400, 408, 431) close gracefully: the answer is written, the connection half-closed, and what the
client still sends is read and dropped until it closes, for ``LINGER_S`` at most, so that a client that
sends its whole request before reading sees the answer rather than a reset.

A handler takes a request and returns its ``Response``, an ``asyncio.Future`` of one, or a coroutine that makes
one (an ``async def`` handler). A Response is written at once and a Future when it resolves, with no task in
between: the Runtime API answers most of a runtime's requests so, and a task per request costs more than
the rest of such a request does. A coroutine runs in a task of its own. A handler that raises gets a bare
500; mapping domain errors to wire errors is the caller's job (``selfless.api.errors``). A connection that
goes away cancels its handler's task or Future.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("serving a listener failed", exc_info=task.exception())


_REASONS = {s.value: s.phrase for s in HTTPStatus}
_MAX_PIPELINED = 8
_MAX_HELD = 4096  # the largest answer held back to leave with the next (coalesce)
SENDFILE_MAX = 4 << 20  # bytes one sendfile call may send (a file answer's turn on the event loop)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
    # The body as it arrives, for a request the server's ``streams`` predicate chose (``body`` is then b"").
    stream: BodyStream | None = None


@dataclasses.dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    content_type: str | None = "application/json"
    # A body written as it is produced (``body`` is then b""), with ``length`` its Content-Length. ``length``
    # without ``stream`` and with an empty ``body``: an answer to HEAD, which says the length and sends nothing.
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None
    # A body sent from a file (``body`` is then b"" and ``length`` defaults to its count).
    file: FileBody | None = None


@dataclasses.dataclass(slots=True)
class FileBody:
    """An answer's body sent from a file with ``sendfile`` (the bytes go from the page cache to the socket,
    never through this process): ``count`` bytes from ``offset`` of the open file descriptor ``fd``. The
    server owns ``fd`` from the answer on and closes it once sent, or once abandoned (the connection went
    away, or closed before the answer could be written). A file that ends before ``count`` bytes aborts
    the connection (the peer sees a short body, never a wrong one). Open the file before answering: it then
    stays readable to the end even if it is renamed over or unlinked meanwhile."""

    fd: int
    offset: int
    count: int


class BodyStream:
    """A request body as it arrives: ``async for chunk in stream`` (or ``await stream.read()``) until it
    ends. At most ``high`` bytes wait unread (past that the connection stops reading until the reader has
    taken them below ``low``), so a fast client and a slow consumer hold a bounded amount of memory. A
    connection that goes away mid-body makes the reader raise ConnectionResetError."""

    __slots__ = ("_chunks", "_done", "_error", "_high", "_low", "_paused", "_size", "_transport", "_waiter")

    def __init__(self, transport: asyncio.Transport, high: int, low: int) -> None:
        self._transport = transport
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._high = high
        self._low = low
        self._paused = False
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def buffered(self) -> int:
        return self._size

    @property
    def complete(self) -> bool:
        return self._done

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._high and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        if self._paused:
            self._paused = False
            with contextlib.suppress(Exception):
                self._transport.resume_reading()
        self._wake()

    def _discard(self) -> None:
        """Nobody will read the rest (the request was answered): drop what waits and what comes."""
        self._chunks.clear()
        self._size = 0
        self._high = -1  # _feed drops from now on (see HttpProtocol.on_body)
        if self._paused:
            self._paused = False
            self._transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk; b"" at the end."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._paused and self._size < self._low:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk


Handler = Callable[[Request], "Response | asyncio.Future[Response] | Awaitable[Response]"]
# Chooses, from its head (method, raw request target, lower-case headers), a request whose body streams.
StreamsPredicate = Callable[[str, str, dict[str, str]], bool]
STREAM_HIGH = 1 << 20  # bytes of a streamed body that may wait unread (then reading pauses)
STREAM_LOW = 256 << 10  # ... until the reader has taken them below this
TooLargeHandler = Callable[[Request], Response]


_INTERNAL_ERROR = Response(500, b'{"message":"Internal server error"}')


def _too_large_default(request: Request) -> Response:
    return Response(413, b'{"message":"Request entity too large"}')


# Where a connection is in its current request.
_IDLE = 0  # between requests: the idle deadline
_HEAD = 1  # a head is arriving (a connection's first from its accept): the head deadline
_BODY = 2  # a body is arriving: the body's pace
_DRAINING = 3  # refused: its input is dropped until it closes or the linger ends

# A refused connection's input is read and dropped this long at most (see the module docstring).
LINGER_S = 2.0
# Defaults fit for a public API (what front ends use: nginx reads heads of up to 4 x 8 KiB, Node and h11
# 16 KiB, AWS's load balancers 64 KiB; Apache takes 100 fields and gives a head 20-40 s).
MAX_HEAD = 32 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 20.0
MIN_BODY_RATE = 4096
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class _HeadRefused(Exception):
    """Raised in a parser callback to stop the parser: the head is over a limit (already answered)."""


class _Refuse(asyncio.Protocol):
    """A connection past ``max_connections``: reset at once. Stateless, so one instance serves them all."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        reset(transport.get_extra_info("socket"))
        transport.abort()  # type: ignore[attr-defined]  # a connection's transport is a Transport


_REFUSE = _Refuse()


def reset(sock: Any) -> None:
    """Make ``close()`` of ``sock`` (a socket or uvloop's stand-in) send a reset rather than a FIN."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)


class ConnectionBudget:
    """A cap shared by many servers (each environment's own API listener): their connections together stay
    under ``limit``, whatever each one's own cap."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: set[HttpProtocol] = set()

    def full(self) -> bool:
        return len(self.held) >= self.limit


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "_body_parts",
        "_body_size",
        "_closing",
        "_coalesce",
        "_connections",
        "_context",
        "_discarding",
        "_handler",
        "_head_raw",
        "_headers",
        "_held",
        "_last_seen",
        "_linger",
        "_loop",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_on_too_large",
        "_parser",
        "_peer",
        "_pending",
        "_repeated",
        "_repeats",
        "_serving_pending",
        "_shared",
        "_started",
        "_state",
        "_stream",
        "_streams",
        "_task",
        "_transport",
        "_url",
        "_write_waiter",
        "_writing_paused",
    )

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        max_head: int = MAX_HEAD,
        max_headers: int = MAX_HEADERS,
        context: Any,
        on_too_large: TooLargeHandler,
        connections: set[HttpProtocol],
        shared: set[HttpProtocol] | None = None,
        coalesce: bool = False,
        streams: StreamsPredicate | None = None,
    ) -> None:
        """``connections``: its server's, and ``shared`` a budget's: it leaves both when it closes.
        ``coalesce``, ``streams``: see HttpServer."""
        self._streams = streams
        self._stream: BodyStream | None = None  # the body of the request whose head came last, while it arrives
        self._writing_paused = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._shared = shared
        self._coalesce = coalesce
        self._held = b""  # an answer that leaves with the next one (coalesce)
        self._serving_pending = False
        self._handler = handler
        self._max_body = max_body
        self._max_head = max_head
        self._max_headers = max_headers
        self._context = context
        self._on_too_large = on_too_large
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._repeated: dict[str, list[str]] | None = None  # a repeated field's values, joined at the end
        self._repeats = 0  # fields of this head that repeated a name
        self._head_raw = 0  # bytes read while a head was unfinished (see data_received)
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._discarding = False
        # The handler at work on this connection's request: its task (a coroutine) or the Future it returned.
        self._task: asyncio.Future[Any] | None = None
        self._closing = False
        self._pending: collections.deque[tuple[Request, bool]] = collections.deque()
        self._last_seen = time.monotonic()
        # A new connection waits for its first head, whose clock runs from now (its accept).
        self._state = _HEAD
        self._started = self._last_seen
        self._linger: asyncio.TimerHandle | None = None
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

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream is not None:
            self._stream._finish(ConnectionResetError("the client went away before the body ended"))
            self._stream = None
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)
        self._connections.discard(self)
        if self._shared is not None:
            self._shared.discard(self)
        self._closing = True
        self._pending.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._linger is not None:
            self._linger.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _DRAINING:
            return
        self._last_seen = time.monotonic()
        if state != _BODY:
            if state == _IDLE:  # the next request's first bytes (or stray line ends): its head's clock starts
                self._state = _HEAD
                self._started = self._last_seen
            # Counted before parsing, so that one huge field (which httptools gathers before it calls
            # on_header) is caught too; reset when a message completes, so this never counts another
            # request's bytes (it may miss a pipelined head's start: at most one read).
            self._head_raw += len(data)
        try:
            self._parser.feed_data(data)
            if self._coalesce and self._state != _DRAINING:
                # Requests that came in this read were queued (see on_message_complete): served now, so
                # that an answer knows whether another request is behind it.
                self._serve_pending()
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Bad request")
            return
        except httptools.HttpParserError:
            self._refuse(400, "Bad request")  # a no-op when a callback refused already (431)
            return
        if self._state == _HEAD and self._head_raw > self._max_head:
            self._head_too_large()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._state == _IDLE:  # pipelined after a request that ended in this same read: its clock starts
            self._started = self._last_seen
        self._state = _HEAD
        self._url = b""
        self._headers = {}
        self._repeated = None
        self._repeats = 0
        self._body_parts = []
        self._body_size = 0
        self._discarding = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # The warm path: a field with a new name costs one dict lookup more than no limit at all. Sizes are
        # checked by data_received and, for a head read at once, by on_headers_complete.
        key = name.decode("latin-1").lower()
        headers = self._headers
        if key in headers:
            self._repeat(key, value.decode("latin-1"))
        elif len(headers) + self._repeats < self._max_headers:
            headers[key] = value.decode("latin-1")
        else:
            raise self._head_too_large()

    def _repeat(self, key: str, text: str) -> None:
        self._repeats += 1
        if len(self._headers) + self._repeats > self._max_headers:
            raise self._head_too_large()
        # Joined once the head is complete: joining at each repeat is quadratic in the repeats.
        if self._repeated is None:
            self._repeated = {}
        parts = self._repeated.get(key)
        if parts is None:
            self._repeated[key] = [self._headers[key], text]
        else:
            parts.append(text)

    def on_headers_complete(self) -> None:
        headers = self._headers
        if self._repeated is not None:
            for key, parts in self._repeated.items():
                headers[key] = ",".join(parts)
            self._repeated = None
        # A head that came whole within reads of more than max_head bytes (with its body, say): measured.
        if self._head_raw > self._max_head:
            size = len(self._url) + sum(len(k) + len(v) + 4 for k, v in headers.items())
            if size > self._max_head:
                raise self._head_too_large()
        self._state = _BODY
        self._started = self._last_seen
        if self._streams is not None and self._streams(self._method(), self._url.decode("latin-1"), headers):
            self._begin_stream()
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._discarding = True

    def _method(self) -> str:
        return str(self._parser.get_method().decode("ascii"))

    def _begin_stream(self) -> None:
        """Dispatch the request now, its body to follow through a BodyStream (no ``max_body``)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        stream = BodyStream(transport, STREAM_HIGH, STREAM_LOW)
        self._stream = stream
        path, _, query = self._url.decode("latin-1").partition("?")
        request = Request(self._method(), path, query, self._headers, b"", self._peer, self._context, stream)
        keep_alive = self._parser.should_keep_alive()
        if self._task is not None or self._pending:
            self._pending.append((request, keep_alive))  # its 100 Continue, if asked for, when it is served
            if len(self._pending) >= _MAX_PIPELINED:
                transport.pause_reading()
            return
        self._dispatch(request, keep_alive)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        stream = self._stream
        if stream is not None:
            if stream._high >= 0:  # else answered already: the rest is dropped
                stream._feed(body)
            return
        if self._discarding or self._body_size > self._max_body:
            self._discarding = True
            self._body_parts = []
            if self._body_size > 2 * self._max_body:
                self._body_too_large()
            return
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        self._state = _IDLE
        self._head_raw = 0
        if self._stream is not None:  # dispatched with its head
            self._stream._finish()
            self._stream = None
            return
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
        if self._task is not None or self._coalesce:
            # Pipelined behind a request still being served (answers go out in order), or with coalesce,
            # every request of a read until the read is parsed (data_received serves the first).
            self._pending.append((request, keep_alive))
            if len(self._pending) >= _MAX_PIPELINED:
                self._transport.pause_reading()
            return
        self._dispatch(request, keep_alive)

    # -- internals ----------------------------------------------------------------------------------------

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        stream = request.stream
        if (
            stream is not None
            and not stream.complete
            and self._transport is not None
            and request.headers.get("expect", "").lower() == "100-continue"
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            result = self._handler(request)
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            result = _INTERNAL_ERROR
        if isinstance(result, Response):
            self._write(result, keep_alive, request.method == "HEAD")
        elif isinstance(result, asyncio.Future):
            self._task = result
            result.add_done_callback(lambda done: self._resolved(done, request, keep_alive))
        else:
            self._task = self._loop.create_task(self._run(result, request, keep_alive))

    def _resolved(self, done: asyncio.Future[Response], request: Request, keep_alive: bool) -> None:
        if done.cancelled() or done is not self._task:
            return  # the connection went away (and cancelled it)
        self._task = None
        exc = done.exception()
        if exc is not None:
            log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
        self._write(_INTERNAL_ERROR if exc is not None else done.result(), keep_alive, request.method == "HEAD")

    async def _run(self, answer: Awaitable[Response], request: Request, keep_alive: bool) -> None:
        try:
            response = await answer
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = _INTERNAL_ERROR
        self._task = None
        self._write(response, keep_alive, request.method == "HEAD")

    def _write(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        """``head``: the answer to a HEAD request, whose file (if any) says the length and is not sent."""
        transport = self._transport
        file = response.file
        if file is not None and (head or transport is None or transport.is_closing()):
            os.close(file.fd)
            length = response.length if response.length is not None else file.count
            response = dataclasses.replace(response, file=None, length=length)
        if transport is None or transport.is_closing():
            return
        if self._stream is not None:
            # Answered before its body ended: the rest is read and dropped (at the body's pace), so that a
            # client that sends it all before reading sees this answer.
            self._stream._discard()
        if response.stream is not None:
            self._flush_held(transport)
            transport.write(self._encode(response, keep_alive))
            self._task = self._loop.create_task(self._pump(response.stream, keep_alive))
            return
        if response.file is not None:
            self._flush_held(transport)
            transport.write(self._encode(response, keep_alive))
            self._task = self._loop.create_task(self._send_file(transport, response.file, keep_alive))
            return
        if self._coalesce and keep_alive and self._pending and self._task is None:
            # A pipelined request waits behind this answer: the answer leaves with that one's (one write, one
            # wake-up of the peer, instead of two).
            self._held += self._encode(response, keep_alive)
            if len(self._held) > _MAX_HELD:
                self._flush_held(transport)
        else:
            self._send(transport, response, keep_alive)
        self._written(transport, keep_alive)

    def _written(self, transport: asyncio.Transport, keep_alive: bool) -> None:
        self._last_seen = time.monotonic()
        if self._state == _HEAD:  # a pipelined head waited behind this handler: its clock starts now
            self._started = self._last_seen
        if not keep_alive:
            transport.close()
        else:
            self._serve_pending()

    async def _pump(self, body: AsyncIterator[bytes], keep_alive: bool) -> None:
        """Write a streamed answer's body, never more than the transport's high-water mark ahead of the
        peer; then go on as after any answer. A body that fails mid-way aborts the connection (the peer
        sees a short body, never a wrong one)."""
        try:
            async for chunk in body:
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                transport.write(chunk)
                if self._writing_paused:
                    self._write_waiter = self._loop.create_future()
                    try:
                        await self._write_waiter
                    finally:
                        self._write_waiter = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a streamed answer failed mid-body")
            if self._transport is not None:
                self._transport.abort()
            return
        finally:
            closing = getattr(body, "aclose", None)
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()
        self._task = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._written(transport, keep_alive)

    async def _send_file(self, transport: asyncio.Transport, body: FileBody, keep_alive: bool) -> None:
        """Send a file answer's body with ``sendfile`` on a duplicate of the connection's socket (the loop
        watches the transport's own descriptor and will not lend it), once the head has left the transport's
        buffer; as ``_pump``, never further ahead of the peer than the socket's buffer, then on as after any
        answer. A peer that goes away ends it (connection_lost cancels it); a file that ends early, or a
        socket error, aborts the connection."""
        out = -1
        try:
            if not await self._drained(transport):
                return
            sock = transport.get_extra_info("socket")
            out = os.dup(sock.fileno())
            offset, end = body.offset, body.offset + body.count
            while offset < end:
                if transport.is_closing():
                    return
                try:
                    sent = os.sendfile(out, body.fd, offset, min(end - offset, SENDFILE_MAX))
                except BlockingIOError:
                    await self._writable(out)
                    continue
                if sent == 0:
                    raise OSError(f"the file ended at {offset - body.offset} of {body.count} bytes")
                offset += sent
        except OSError as exc:
            if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                log.error("a file answer failed mid-body", exc_info=exc)
            transport.abort()
            return
        finally:
            os.close(body.fd)
            if out >= 0:
                os.close(out)
        self._task = None
        if not transport.is_closing():
            self._written(transport, keep_alive)

    async def _drained(self, transport: asyncio.Transport) -> bool:
        """Wait until what was written to the transport has left its buffer (False: it closed meanwhile).
        With a high-water mark of 0 the transport pauses its writer now and resumes it once empty."""
        if transport.get_write_buffer_size() == 0:
            return not transport.is_closing()
        transport.set_write_buffer_limits(high=0)
        try:
            while transport.get_write_buffer_size() > 0 and not transport.is_closing():
                if not self._writing_paused:  # not paused by the limit after all: look again soon
                    await asyncio.sleep(0.001)
                    continue
                self._write_waiter = self._loop.create_future()
                try:
                    await self._write_waiter
                finally:
                    self._write_waiter = None
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits()
        return not transport.is_closing()

    async def _writable(self, fd: int) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(fd, _wake, ready)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def _serve_pending(self) -> None:
        """Serve the requests queued behind the last one, in order, until one is still at work. A loop, not
        a call per answer from the last answer's write: thousands of pipelined requests answered at once
        must not nest that deep. Re-entered (an answer written from inside it), it leaves the rest to the
        loop already running."""
        if self._serving_pending:
            return
        self._serving_pending = True
        try:
            while self._pending and self._task is None and not self._closing:
                transport = self._transport
                if transport is None or transport.is_closing():
                    break
                request, keep = self._pending.popleft()
                if len(self._pending) == _MAX_PIPELINED - 1:
                    transport.resume_reading()
                self._dispatch(request, keep)
        finally:
            self._serving_pending = False

    def _flush_held(self, transport: asyncio.Transport) -> None:
        held, self._held = self._held, b""
        if held:
            transport.write(held)

    def _send(self, transport: asyncio.Transport, response: Response, keep_alive: bool) -> None:
        data = self._encode(response, keep_alive)
        if self._held:
            if len(data) < 65536:
                data, self._held = self._held + data, b""
            else:
                self._flush_held(transport)  # a large answer: a write of its own after the held one
        transport.write(data)

    @staticmethod
    def _encode(response: Response, keep_alive: bool) -> bytes:
        status = response.status
        parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        if response.content_type is not None:
            parts.append(f"Content-Type: {response.content_type}\r\n")
        for name, value in response.headers:
            parts.append(f"{name}: {value}\r\n")
        length = response.length
        if length is None:
            length = response.file.count if response.file is not None else len(response.body)
        parts.append(f"Content-Length: {length}\r\n")
        if not keep_alive:
            parts.append("Connection: close\r\n")
        parts.append("\r\n")
        # One write: headers and body leave in the same segment when they fit.
        return "".join(parts).encode("latin-1") + response.body

    def _body_too_large(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write(Response(413, b'{"message":"Request entity too large"}'), keep_alive=False)

    def _head_too_large(self) -> _HeadRefused:
        """Answer 431; returns what a parser callback raises to stop the parser."""
        limits = f"at most {self._max_headers} fields and {self._max_head} bytes"
        self._refuse(431, f"Request header fields too large: {limits}")
        return _HeadRefused()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"message": message}`` and close gracefully (the module docstring says
        how). Idempotent. With a handler still running (a pipelined request refused), the connection is
        closed at once instead: its answer would have to wait for that handler's."""
        transport = self._transport
        if transport is None or self._state == _DRAINING:
            return
        self._state = _DRAINING
        self._pending.clear()
        if self._task is not None or transport.is_closing():
            transport.close()
            return
        self._send(transport, Response(status, json.dumps({"message": message}).encode()), keep_alive=False)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # then its EOF closes it (eof_received), or the linger ends
        self._linger = self._loop.call_later(LINGER_S, transport.close)

    def expire(self, now: float, idle_timeout: float, head_timeout: float, min_body_rate: float) -> None:
        """The sweep's visit: close this connection if it is past its deadline (the module docstring says
        which). Nothing happens while a handler runs."""
        transport = self._transport
        if transport is None:
            if not self._closing and now - self._last_seen > 60:
                self._connections.discard(self)  # made by an accept that never connected it
            return
        state = self._state
        if self._task is not None:
            stream = self._stream
            if stream is None or state != _BODY or stream._paused:
                return
        silent = now - self._last_seen > idle_timeout
        if state == _IDLE:
            if silent:
                transport.close()
            return
        if state == _HEAD:
            late = 0 < head_timeout < now - self._started
            why = f"the request head took more than {head_timeout:g} s"
            if (late or silent) and self._head_raw == 0:
                transport.close()  # never said a word: nobody is waiting for an answer
                return
        else:
            # The grace, plus a second for each min_body_rate bytes that came: a fair pace takes what it needs.
            allowed = head_timeout + self._body_size / min_body_rate if min_body_rate > 0 else math.inf
            late = head_timeout > 0 and now - self._started > allowed
            why = f"the request body arrived slower than {min_body_rate:g} bytes/s"
        if late or silent:
            self._refuse(408, f"Request timeout: {why if late else 'the client went silent mid-request'}")

    def close(self) -> None:
        """Close now; an in-flight handler is cancelled."""
        if self._transport is not None:
            self._transport.close()


class HttpServer:
    """One listening socket and the connections it accepted (the module docstring states the limits)."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = 1 << 20,
        max_head: int = MAX_HEAD,
        max_headers: int = MAX_HEADERS,
        idle_timeout: float = 75.0,
        head_timeout: float = HEAD_TIMEOUT_S,
        min_body_rate: float = MIN_BODY_RATE,
        max_connections: int | None = None,
        on_refused: Callable[[], None] | None = None,
        budget: ConnectionBudget | None = None,
        context: Any = None,
        on_too_large: TooLargeHandler = _too_large_default,
        coalesce: bool = False,
        streams: StreamsPredicate | None = None,
    ) -> None:
        """``streams``: picks, from a request's head, the requests dispatched at once with their body as a
        ``BodyStream`` (``Request.stream``) and no ``max_body``: object uploads, which may be gigabytes.
        ``coalesce``: an answer with a pipelined request behind it (a runtime's result, then its next
        /next) is held back and leaves with that request's answer, in one write: for a peer that sends both
        at once and wants the second answer anyway (selfless's Python runtime). At most ``_MAX_HELD``
        bytes are held; a larger answer goes at once."""
        self._coalesce = coalesce
        self._streams = streams
        self._handler = handler
        self._max_body = max_body
        self._max_head = max_head
        self._max_headers = max_headers
        self._idle_timeout = idle_timeout
        self._head_timeout = head_timeout
        self._min_body_rate = min_body_rate
        self.max_connections = max_connections  # None: no cap; may be lowered before serving
        self._on_refused = on_refused
        self._budget = budget  # a cap shared with other servers, besides this one's own
        self._context = context
        self._on_too_large = on_too_large
        self._server: asyncio.Server | None = None
        self._listener: socket.socket | None = None  # bound by ``listen``, not yet served
        self._serving: asyncio.Task[None] | None = None  # ``serve_soon``
        self._waiting_fd = -1  # ``serve_on_demand``: the listener watched for a first connection
        self._sweeping = False  # between serving and ``stop_listening``, with an idle timeout
        self._sweeper: asyncio.TimerHandle | None = None  # armed while there are connections
        self.connections: set[HttpProtocol] = set()
        self.refused = 0  # connections refused for the cap, since the start

    def _full(self) -> bool:
        if self._budget is not None and self._budget.full():
            return True
        return self.max_connections is not None and len(self.connections) >= self.max_connections

    def _count_refusal(self) -> None:
        self.refused += 1
        if self._on_refused is not None:
            self._on_refused()

    def _protocol(self) -> HttpProtocol:
        conn = HttpProtocol(
            self._handler,
            max_body=self._max_body,
            max_head=self._max_head,
            max_headers=self._max_headers,
            context=self._context,
            on_too_large=self._on_too_large,
            connections=self.connections,
            shared=self._budget.held if self._budget is not None else None,
            coalesce=self._coalesce,
            streams=self._streams,
        )
        # Counted from its accept, not from connection_made: a burst of accepts runs ahead of those.
        self.connections.add(conn)
        if self._budget is not None:
            self._budget.held.add(conn)
        if self._sweeping and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)
        return conn

    def _factory(self) -> asyncio.Protocol:
        if self._full():
            self._count_refusal()
            return _REFUSE
        return self._protocol()

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
            self._sweeping = True
            if self.connections and self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    async def adopt(self, sock: socket.socket) -> None:
        """Serve one connection that is already made, as if accepted: whoever made it vouches for its peer,
        (the cap holds). The transport owns ``sock`` from here."""
        if self._full():
            self._count_refusal()
            reset(sock)
            sock.close()
            return
        conn = self._protocol()
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
        except BaseException:
            self.connections.discard(conn)
            if self._budget is not None:
                self._budget.held.discard(conn)
            sock.close()
            raise

    @property
    def _sweep_every(self) -> float:
        deadlines = [t for t in (self._idle_timeout, self._head_timeout) if t > 0]
        return max(0.25, min(deadlines) / 4)

    def _sweep(self) -> None:
        """Visit every connection (``HttpProtocol.expire``); rearmed while there are connections, so a
        server nobody is connected to costs no timer."""
        now = time.monotonic()
        for conn in list(self.connections):
            conn.expire(now, self._idle_timeout, self._head_timeout, self._min_body_rate)
        self._sweeper = None
        if self.connections:
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
        self._sweeping = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def close_all(self) -> None:
        self.stop_listening()
        for conn in list(self.connections):
            conn.close()
