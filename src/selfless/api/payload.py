"""A request body as a service reads it: decoded, in chunks, checked against what was signed.

The HTTP server hands most requests over whole (``Request.body``); S3's object writes may be gigabytes, so a
request the front door routes to S3 is dispatched as soon as its head is complete and its body streams
(``Request.stream``). The front door wraps that stream in a :class:`Payload` (:func:`open_payload` picks it
from the request's head and what SigV4 verified): it removes ``aws-chunked`` framing (``api.chunked``:
verifying each chunk's signature when the chunks are signed), hashes the bytes as they pass, and when the
body ends checks them against the signed ``x-amz-content-sha256``. A body that does not match
raises :class:`selfless.errors.AuthError` (or a subclass) from the iteration, after its last chunk and
before iteration ends, so a consumer that commits only after a complete iteration never commits a body
that was not the one signed.

Contract for consumers:

* ``async for chunk in payload`` yields the decoded bytes in order (no empty chunks; a streamed body in
  pieces of about ``BATCH`` bytes); it may raise
  ``AuthError`` (signature or digest mismatch), ``BadDigest``-style errors are the consumer's (it checks
  Content-MD5 and x-amz-checksum-* itself, with ``trailers`` for those sent after the body);
* iterate at most once;
* ``length`` is the decoded length when the client declared it (``x-amz-decoded-content-length`` for
  aws-chunked, else ``Content-Length``), None otherwise;
* ``trailers`` holds the trailing header fields (lower-case names), complete once iteration has ended.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Protocol

from selfless.api.auth import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER, ChunkSigning
from selfless.api.chunked import ChunkedPayload
from selfless.errors import ContentDigestMismatch, MalformedBody
from selfless.lanes import Lane


class Payload(Protocol):
    length: int | None
    trailers: dict[str, str]

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class BytesPayload:
    """A payload already in memory (a small body the server read whole, or a test's)."""

    __slots__ = ("_data", "length", "trailers")

    def __init__(self, data: bytes, trailers: dict[str, str] | None = None) -> None:
        self._data = data
        self.length: int | None = len(data)
        self.trailers: dict[str, str] = dict(trailers or {})

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()


async def read_all(payload: Payload, limit: int) -> bytes:
    """The whole payload, or ValueError once it passes ``limit`` bytes (for bodies parsed in memory: XML)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in payload:
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the body is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
BATCH = 1 << 20  # bytes a streamed body is handed on in (the last piece may be smaller)


class SignedPayload:
    """A streamed body checked against the digest its signature names: ``declared`` is the
    x-amz-content-sha256 value (a hex SHA-256, or UNSIGNED-PAYLOAD: nothing to check). The check runs when
    the body ends: a mismatch raises ContentDigestMismatch instead of ending the iteration."""

    __slots__ = ("_declared", "_stream", "length", "trailers")

    def __init__(self, stream: AsyncIterable[bytes], declared: str | None, length: int | None) -> None:
        self._stream = stream
        self._declared = None if declared in (None, UNSIGNED_PAYLOAD) else declared
        self.length = length
        self.trailers: dict[str, str] = {}

    async def _chunks(self) -> AsyncIterator[bytes]:
        # Pieces of about BATCH bytes. A body larger than one piece is hashed in a lane of its own (a worker
        # thread; hashlib lets go of the GIL for large buffers), so the event loop is not held by hashing
        # gigabytes and the consumer works on a piece (its own hashes, its file) while this one is hashed.
        digest = hashlib.sha256() if self._declared is not None else None
        lane: Lane | None = None
        held: list[bytes] = []
        size = 0
        try:
            async for chunk in self._stream:
                held.append(chunk)
                size += len(chunk)
                if size >= BATCH:
                    piece = held[0] if len(held) == 1 else b"".join(held)
                    held, size = [], 0
                    if digest is not None:
                        if lane is None:
                            lane = Lane()
                        await lane.submit(digest.update, piece)
                    yield piece
            if held:
                piece = held[0] if len(held) == 1 else b"".join(held)
                if digest is not None:
                    if lane is None:
                        digest.update(piece)
                    else:
                        await lane.submit(digest.update, piece)
                yield piece
            if lane is not None:
                await lane.drain()
        finally:
            if lane is not None:
                await lane.close()
        if digest is not None and not hmac.compare_digest(
            digest.hexdigest().encode(), (self._declared or "").lower().encode("ascii", "replace")
        ):
            raise ContentDigestMismatch("The provided 'x-amz-content-sha256' header does not match what was computed.")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()


_STREAMING_PREFIX = "STREAMING-"
_MSG_SHA256 = (
    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value."
)


def open_payload(
    stream: AsyncIterable[bytes], headers: Mapping[str, str], content_sha256: str | None, signing: ChunkSigning | None
) -> Payload:
    """The payload of a streamed request: ``content_sha256`` and ``signing`` are what SigV4 verified
    (``Caller.content_sha256``, ``Caller.chunk_signing``). aws-chunked framing when x-amz-content-sha256 names
    a STREAMING mode or Content-Encoding says ``aws-chunked`` (unsigned chunks then, a hex digest checked over
    the encoded body); else the body as sent, checked against a hex digest."""
    streaming = content_sha256 is not None and content_sha256.startswith(_STREAMING_PREFIX)
    encodings = headers.get("content-encoding", "")
    if not streaming and "aws-chunked" not in [e.strip().lower() for e in encodings.split(",")]:
        return SignedPayload(stream, content_sha256, _length(headers.get("content-length")))
    length = _length(headers.get("x-amz-decoded-content-length"))
    if not streaming:
        return ChunkedPayload(
            SignedPayload(stream, content_sha256, None), length, trailer=True, declared=_trailer_names(headers)
        )
    if content_sha256 == STREAMING_SIGNED and signing is not None:
        return ChunkedPayload(stream, length, signing=signing)
    if content_sha256 == STREAMING_SIGNED_TRAILER and signing is not None:
        return ChunkedPayload(stream, length, signing=signing, trailer=True, declared=_trailer_names(headers))
    if content_sha256 == STREAMING_UNSIGNED_TRAILER:
        return ChunkedPayload(stream, length, trailer=True, declared=_trailer_names(headers))
    return _Refused(MalformedBody("InvalidArgument", _MSG_SHA256, ArgumentName="x-amz-content-sha256"), length)


def _length(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() else None


def _trailer_names(headers: Mapping[str, str]) -> list[str]:
    return [name.strip().lower() for name in headers.get("x-amz-trailer", "").split(",") if name.strip()]


class _Refused:
    """A body that cannot be read as declared: reading it raises ``error``."""

    __slots__ = ("_error", "length", "trailers")

    def __init__(self, error: Exception, length: int | None) -> None:
        self._error = error
        self.length = length
        self.trailers: dict[str, str] = {}

    async def _chunks(self) -> AsyncIterator[bytes]:
        raise self._error
        yield b""  # pragma: no cover - makes this an async generator

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()
