"""Lean benchmark clients and a direct SigV4 signer, shared by ``bench/invoke.py``.

The client side of a latency benchmark is part of every figure it prints, so it is kept as cheap as it can
be and identical for the platform and for its floors:

* :class:`SigV4Signer` signs ``POST <path>`` with a direct HMAC-SHA256 chain (the signing key is derived
  once per UTC day) over the headers ``host;x-amz-date`` and the payload's SHA-256. A signature depends
  only on the second, the path and the body, so :class:`SignedRequest` keeps the last one (as
  :class:`Prepared` wire bytes) and re-signs when the second changes: every request is signed, identical
  inputs are not recomputed.
* :class:`RawConnection` (one persistent keep-alive socket, ``TCP_NODELAY``, the answer split by hand) and
  :class:`HttpClientConnection` (the same over ``http.client.HTTPConnection``) measure sequential latency
  (concurrency 1) with :func:`run_sequential`. Requests are signed *before* the clock starts.
* :func:`run_concurrent` drives ``concurrency`` keep-alive connections from one uvloop event loop with a
  hand-parsed ``asyncio.Protocol`` client for a fixed time, for throughput.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import http.client
import math
import re
import socket
import time
from collections.abc import Mapping
from typing import cast

import uvloop

ALGORITHM = "AWS4-HMAC-SHA256"
SIGNED_HEADERS = "host;x-amz-date"
CONTENT_LENGTH = b"\r\ncontent-length:"
_QUERY_PAIR = re.compile(r"^[A-Za-z0-9_.~-]+=[A-Za-z0-9_.~-]*$")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/")


class SigV4Signer:
    """AWS Signature Version 4 for ``POST`` requests without a query string."""

    def __init__(self, access_key_id: str, secret: str, region: str = "us-east-1", service: str = "lambda"):
        self._key_id = access_key_id
        self._secret = secret
        self._region = region
        self._service = service
        self._day = ""
        self._key = b""

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            k = hmac.digest(("AWS4" + self._secret).encode(), day.encode(), "sha256")
            for part in (self._region, self._service, "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            self._day, self._key = day, k
        return self._key

    def headers(self, host: str, path: str, body: bytes, epoch_s: int | None = None, query: str = "") -> dict[str, str]:
        """``Host``, ``X-Amz-Date`` and ``Authorization`` for ``POST path[?query]`` with ``body``. ``query``:
        at most one ``key=value`` pair that needs no percent-encoding (``Qualifier=1``), already canonical."""
        if not set(path) <= _UNRESERVED:
            raise ValueError(f"path needs percent-encoding, which this signer does not do: {path!r}")
        if query and not _QUERY_PAIR.match(query):
            raise ValueError(f"one unreserved key=value pair only, which needs no encoding: {query!r}")
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if epoch_s is None else epoch_s))
        day = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        canonical = f"POST\n{path}\n{query}\nhost:{host}\nx-amz-date:{amz_date}\n\n{SIGNED_HEADERS}\n{payload_hash}"
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        credential = f"Credential={self._key_id}/{scope}"
        authorization = f"{ALGORITHM} {credential}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
        return {"Host": host, "X-Amz-Date": amz_date, "Authorization": authorization}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one kind of invoke goes: the platform, or one of its floors."""

    name: str
    port: int
    path: str
    host: str = "127.0.0.1"

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One signed request, ready to send: its headers (for ``http.client``) and its whole wire form."""

    path: str
    headers: dict[str, str]
    body: bytes
    wire: bytes


class SignedRequest:
    """The signed ``POST`` of one body to one target (``?query``: see :meth:`SigV4Signer.headers`),
    re-signed whenever the wall-clock second changes."""

    def __init__(
        self,
        signer: SigV4Signer,
        target: Target,
        body: bytes,
        extra: Mapping[str, str] | None = None,
        query: str = "",
    ):
        self.target = target
        self.body = body
        self.query = query
        self._signer = signer
        self._extra = dict(extra or {})
        self._second = -1
        self._prepared: Prepared | None = None

    def prepare(self) -> Prepared:
        second = int(time.time())
        if self._prepared is None or second != self._second:
            t = self.target
            headers = self._signer.headers(t.host_header, t.path, self.body, second, self.query)
            headers.update(self._extra)
            headers["Content-Length"] = str(len(self.body))
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request_target = f"{t.path}?{self.query}" if self.query else t.path
            wire = f"POST {request_target} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + self.body
            self._prepared = Prepared(request_target, headers, self.body, wire)
            self._second = second
        return self._prepared


def _answer_bounds(buf: bytes | bytearray) -> tuple[int, int] | None:
    """``(end of head, end of answer)`` once ``buf`` holds a whole Content-Length answer, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lowered = bytes(buf[:end]).lower()
    at = lowered.find(CONTENT_LENGTH)
    if at < 0:
        raise ConnectionError("an answer without Content-Length (this client reads no other kind)")
    stop = lowered.find(b"\r\n", at + 2)
    total = end + 4 + int(lowered[at + len(CONTENT_LENGTH) : stop if stop >= 0 else len(lowered)])
    return (end, total) if len(buf) >= total else None


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    head: bytes  # the status line and headers as received
    body: bytes

    def header(self, name: str) -> str | None:
        needle = b"\r\n" + name.lower().encode() + b":"
        at = self.head.lower().find(needle)
        if at < 0:
            return None
        stop = self.head.find(b"\r\n", at + 2)
        return self.head[at + len(needle) : stop if stop >= 0 else len(self.head)].strip().decode("latin-1")

    def failed(self, expect: bytes, status: int = 200) -> str | None:
        """Why this is not a successful answer (``status``) carrying ``expect`` (None when it is)."""
        if self.status != status or self.body != expect or b"\r\nx-amz-function-error:" in self.head.lower():
            return f"status {self.status}: {self.body[:200]!r}"
        return None


class RawConnection:
    """One persistent keep-alive socket (``TCP_NODELAY``): the prepared wire bytes in one ``sendall``, the
    answer split by hand. The leanest client Python has: what the echo floor measures is mostly the
    loopback round trip, not this client."""

    def __init__(self, target: Target, timeout_s: float = 30.0):
        self.target = target
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection((self.target.host, self.target.port), timeout=self._timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def post(self, prepared: Prepared) -> Answer:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(prepared.wire)
        buf = self._buf
        while (bounds := _answer_bounds(buf)) is None:
            chunk = self._sock.recv(262144)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        end, total = bounds
        answer = Answer(int(buf[9:12]), bytes(buf[:end]), bytes(buf[end + 4 : total]))
        del buf[:total]
        return answer


def fresh_call(request: SignedRequest, timeout_s: float = 60.0) -> tuple[int, Answer]:
    """One call on a new connection, opened (and the request signed) before the clock starts: the
    nanoseconds from send to the whole answer, and the answer. What a first call of a client sees."""
    conn = RawConnection(request.target, timeout_s=timeout_s)
    conn.connect()
    prepared = request.prepare()
    try:
        t0 = time.perf_counter_ns()
        answer = conn.post(prepared)
        t1 = time.perf_counter_ns()
    finally:
        conn.close()
    return t1 - t0, answer


class HttpClientConnection:
    """One persistent keep-alive ``http.client.HTTPConnection`` (``TCP_NODELAY``; headers and body go out in
    one write). Costs ~80 us more per call than :class:`RawConnection` on a 2 vCPU VM, mostly in
    ``getresponse``'s header parsing."""

    def __init__(self, target: Target, timeout_s: float = 30.0):
        self.target = target
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def connect(self) -> None:
        self.close()
        conn = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self._timeout_s)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, prepared: Prepared) -> Answer:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        self._conn.request("POST", prepared.path, prepared.body, prepared.headers)
        response = self._conn.getresponse()
        body = response.read()
        if response.will_close:
            self.close()
        head = "".join(f"\r\n{k}: {v}" for k, v in response.getheaders())
        return Answer(response.status, f"HTTP/1.1 {response.status}{head}".encode("latin-1"), body)


Connection = RawConnection | HttpClientConnection


@dataclasses.dataclass
class Latencies:
    """Client-observed latencies of one measurement, in nanoseconds, and what went wrong."""

    samples_ns: list[int] = dataclasses.field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(what)

    def extend(self, other: Latencies) -> None:
        self.samples_ns.extend(other.samples_ns)
        self.elapsed_s += other.elapsed_s
        for example in other.error_examples:
            if len(self.error_examples) < 5:
                self.error_examples.append(example)
        self.errors += other.errors

    @property
    def rate(self) -> float:
        return len(self.samples_ns) / self.elapsed_s if self.elapsed_s > 0 else math.nan


def run_sequential(conn: Connection, request: SignedRequest, count: int, expect: bytes) -> Latencies:
    """``count`` invokes one after another on one connection, each signed before its clock starts; each
    answer must be 200 with ``expect``. A broken connection is reopened (outside the clock)."""
    result = Latencies()
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for _ in range(count):
        prepared = request.prepare()
        try:
            t0 = clock()
            answer = conn.post(prepared)
            t1 = clock()
        except (OSError, http.client.HTTPException) as exc:
            result.error(f"{type(exc).__name__}: {exc}")
            conn.close()
            continue
        problem = answer.failed(expect)
        if problem:
            result.error(problem)
            continue
        result.samples_ns.append(t1 - t0)
    result.elapsed_s = time.perf_counter() - started
    return result


class _ClientProtocol(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection that answers one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            bounds = _answer_bounds(self._buf)
        except (ConnectionError, ValueError) as exc:
            waiter.set_exception(ConnectionError(str(exc)))
            return
        if bounds is None:
            return
        end, total = bounds
        answer = Answer(int(self._buf[9:12]), bytes(self._buf[:end]), bytes(self._buf[end + 4 : total]))
        del self._buf[:total]
        self._waiter = None
        waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("connection closed by the server"))

    def request(self, raw: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self._waiter


async def _drive(
    request: SignedRequest, concurrency: int, duration_s: float, expect: bytes, timeout_s: float, status: int = 200
) -> Latencies:
    loop = asyncio.get_running_loop()
    target = request.target
    protocols: list[_ClientProtocol] = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(_ClientProtocol, target.host, target.port)
        protocols.append(protocol)
    result = Latencies()
    clock = time.perf_counter_ns
    started = time.perf_counter()
    deadline = started + duration_s

    def give_up() -> None:  # a stuck answer ends its connection (and so its loop) instead of hanging
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.abort()

    watchdog = loop.call_later(duration_s + timeout_s, give_up)

    async def one(protocol: _ClientProtocol) -> None:
        while time.perf_counter() < deadline:
            wire = request.prepare().wire
            t0 = clock()
            try:
                answer = await protocol.request(wire)
            except OSError as exc:
                result.error(f"{type(exc).__name__}: {exc}")
                return
            t1 = clock()
            problem = answer.failed(expect, status)
            if problem:
                result.error(problem)
                continue
            result.samples_ns.append(t1 - t0)

    try:
        await asyncio.gather(*(one(p) for p in protocols))
    finally:
        result.elapsed_s = time.perf_counter() - started
        watchdog.cancel()
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
    return result


def run_concurrent(
    request: SignedRequest,
    concurrency: int,
    duration_s: float,
    expect: bytes,
    timeout_s: float = 30.0,
    status: int = 200,
) -> Latencies:
    """``concurrency`` connections, each sending its next request as soon as the last is answered (with
    ``status`` and ``expect``), until ``duration_s`` has passed (connections are opened before the clock
    starts)."""
    return uvloop.run(_drive(request, concurrency, duration_s, expect, timeout_s, status))


@dataclasses.dataclass(frozen=True)
class Stats:
    count: int
    p50_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, samples_ns: list[int]) -> Stats:
        if not samples_ns:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(samples_ns)

        def rank(q: float) -> float:  # nearest rank
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1000

        return cls(
            count=len(ordered),
            p50_us=rank(0.50),
            p99_us=rank(0.99),
            mean_us=sum(ordered) / len(ordered) / 1000,
            min_us=ordered[0] / 1000,
            max_us=ordered[-1] / 1000,
        )
