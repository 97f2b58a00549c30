"""aws-chunked request bodies, decoded as they stream: what S3's SDKs send for object writes.

The body is a series of chunks, each ``<size in hex>[;chunk-signature=<sig>]\\r\\n<size bytes>\\r\\n``, ended by
a chunk of size 0, then (in the trailer modes) trailing header fields ``name:value\\r\\n`` and an empty line::

    STREAMING-AWS4-HMAC-SHA256-PAYLOAD           signed chunks
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER   signed chunks, then fields and x-amz-trailer-signature
    STREAMING-UNSIGNED-PAYLOAD-TRAILER           unsigned chunks, then fields (the ones x-amz-trailer names)

:class:`ChunkedPayload` is a :class:`selfless.api.payload.Payload`: it yields the decoded bytes, checks each
signed chunk's signature (chained from the request's seed signature, ``auth.ChunkSigning``) when the chunk
ends, and sets ``trailers`` from the trailing fields once the body has ended. Nothing a client declares is
trusted for memory: data passes through in the pieces it arrives in (handed on in pieces of about
``payload.BATCH`` bytes); a chunk line or trailer field longer than ``MAX_LINE`` bytes, more than
``MAX_TRAILERS`` fields, a chunk larger than what is left of ``x-amz-decoded-content-length``, a size that is
not hex: each fails at once. Failures raise from the iteration, before it ends (so a consumer that commits
only after a complete iteration commits nothing), as S3 names them:

* :class:`selfless.errors.MalformedBody` ``IncompleteBody`` -- broken framing (a size that is not 1-16 hex
  digits, a signed chunk without exactly its ``chunk-signature``, no CRLF where one belongs, a line past
  ``MAX_LINE``, bytes after the end, a body that ends early), or decoded bytes that are not
  ``x-amz-decoded-content-length``;
* ``MalformedBody`` ``InvalidChunkSizeError`` (with ``Chunk`` and ``BadChunkSize``) -- a chunk other than the
  last one under 8 KiB, numbered as S3 numbers it (the chunk after the short one);
* ``MalformedBody`` ``MalformedTrailerError`` -- a trailing field not of ``name:value`` form, not among those
  ``x-amz-trailer`` named, repeated, missing, past the limits, or a signed trailer without its signature;
* :class:`selfless.errors.InvalidSignature` -- a chunk's or the trailer's signature does not match.

The trailing checksums themselves (``x-amz-checksum-*``) are the consumer's to verify, from ``trailers``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from selfless.api.auth import ChunkSigning
from selfless.errors import MalformedBody

MAX_LINE = 4096  # bytes of one chunk line or trailing field, without its CRLF
MAX_TRAILERS = 16
MIN_CHUNK = 8192  # every chunk but the last, as S3 requires
BATCH = 1 << 20  # decoded bytes handed on at once (at most; a body's last piece may be smaller)
_MAX_HEX = 16  # digits of a chunk size: 2^64 - 1 at most
_HEX = frozenset(b"0123456789abcdefABCDEF")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SIGNATURE = b"chunk-signature="
_TRAILER_SIGNATURE = "x-amz-trailer-signature"

MSG_INCOMPLETE = "The request body terminated unexpectedly"
MSG_LENGTH = "You did not provide the number of bytes specified by the Content-Length HTTP header"
MSG_SMALL = "Only the last chunk is allowed to have a size less than 8192 bytes"
MSG_TRAILER = "The request contained trailing data that was not well-formed or did not conform to our published schema."


def _incomplete(message: str = MSG_INCOMPLETE) -> MalformedBody:
    return MalformedBody("IncompleteBody", message)


def _bad_trailer() -> MalformedBody:
    return MalformedBody("MalformedTrailerError", MSG_TRAILER)


class _Wire:
    """The encoded body, read as lines (bounded) and runs of data, from the pieces it arrives in."""

    __slots__ = ("_it", "_piece", "_pos")

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._it = aiter(source)
        self._piece = b""
        self._pos = 0

    async def _fill(self) -> bool:
        """Makes unread bytes available; False at the end of the body."""
        while self._pos >= len(self._piece):
            try:
                self._piece = await anext(self._it)
            except StopAsyncIteration:
                self._piece, self._pos = b"", 0
                return False
            self._pos = 0
        return True

    async def line(self, trailer: bool = False) -> bytes:
        """The bytes up to the next CRLF (which is consumed, not returned); at most MAX_LINE of them."""
        held = bytearray()
        while True:
            if not await self._fill():
                raise _incomplete()
            piece, pos = self._piece, self._pos
            end = min(len(piece), pos + MAX_LINE + 2 - len(held))
            found = piece.find(b"\n", pos, end)
            if found >= 0:
                held += piece[pos:found]
                self._pos = found + 1
                if not held.endswith(b"\r"):
                    raise _bad_trailer() if trailer else _incomplete()
                return bytes(held[:-1])
            held += piece[pos:end]
            self._pos = end
            if len(held) >= MAX_LINE + 2:
                raise _bad_trailer() if trailer else _incomplete()

    async def take(self, most: int) -> bytes:
        """The next 1..``most`` bytes of data (``most`` > 0)."""
        if not await self._fill():
            raise _incomplete()
        piece, pos = self._piece, self._pos
        if pos == 0 and len(piece) <= most:
            self._pos = len(piece)
            return piece  # the common case: a whole piece, not copied
        end = min(len(piece), pos + most)
        self._pos = end
        return piece[pos:end]

    async def ended(self) -> bool:
        """Whether the body has ended here (read to its end, so that what it checks at its end runs)."""
        return not await self._fill()


class ChunkedPayload:
    """An aws-chunked body, decoded (see the module docstring). ``length``: x-amz-decoded-content-length
    (None when not given); ``signing``: the signed modes' chunk signing, None for unsigned chunks;
    ``trailer``: whether trailing fields follow the last chunk, and ``declared`` the names x-amz-trailer
    gave them (lower-case)."""

    __slots__ = ("_declared", "_signing", "_source", "_trailer", "length", "trailers")

    def __init__(
        self,
        source: AsyncIterable[bytes],
        length: int | None,
        *,
        signing: ChunkSigning | None = None,
        trailer: bool = False,
        declared: Iterable[str] = (),
    ) -> None:
        self._source = source
        self._signing = signing
        self._trailer = trailer
        self._declared = frozenset(declared)
        self.length = length
        self.trailers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        wire = _Wire(self._source)
        signing = self._signing
        previous = signing.seed if signing is not None else ""
        declared = self.length
        held: list[bytes] = []
        held_size = 0
        total = 0
        number = 0
        last = -1  # the previous chunk's size
        while True:
            size, signature = self._head(await wire.line())
            number += 1
            if size and 0 <= last < MIN_CHUNK:
                raise MalformedBody("InvalidChunkSizeError", MSG_SMALL, Chunk=str(number), BadChunkSize=str(last))
            if declared is not None and size > declared - total:
                raise _incomplete(MSG_LENGTH)
            digest = hashlib.sha256() if signing is not None and size else None
            left = size
            while left:
                data = await wire.take(left)
                left -= len(data)
                if digest is not None:
                    digest.update(data)
                held.append(data)
                held_size += len(data)
                if held_size >= BATCH:
                    yield b"".join(held) if len(held) > 1 else held[0]
                    held, held_size = [], 0
            total += size
            if signing is not None:
                previous = signing.chunk(previous, digest.hexdigest() if digest is not None else _EMPTY_SHA256)
                signing.check(previous, signature)
            if not size:
                break
            if await wire.line():  # the CRLF that ends a chunk's data
                raise _incomplete()
            last = size
        if self._trailer:
            self.trailers = await self._trailing(wire, previous)
        elif await wire.line():
            raise _incomplete()
        if declared is not None and total != declared:
            raise _incomplete(MSG_LENGTH)
        if not await wire.ended():
            raise _incomplete()
        if held:
            yield b"".join(held) if len(held) > 1 else held[0]

    def _head(self, line: bytes) -> tuple[int, bytes]:
        """A chunk line's size and (signed modes) signature."""
        digits, semicolon, extension = line.partition(b";")
        if not digits or len(digits) > _MAX_HEX or not _HEX.issuperset(digits):
            raise _incomplete()
        if self._signing is None:
            return int(digits, 16), b""  # unsigned chunks: extensions are ignored
        if not semicolon or not extension.startswith(_SIGNATURE) or b";" in extension:
            raise _incomplete()
        return int(digits, 16), extension[len(_SIGNATURE) :].lower()

    async def _trailing(self, wire: _Wire, previous: str) -> dict[str, str]:
        """The trailing fields, up to the empty line that ends the body; the signed trailer's checked."""
        fields: dict[str, str] = {}
        signature: str | None = None
        while line := await wire.line(trailer=True):
            raw_name, colon, raw_value = line.partition(b":")
            name = raw_name.strip().decode("latin-1").lower()
            value = raw_value.strip().decode("latin-1")
            if not colon or not name or signature is not None:  # nothing may follow the signature
                raise _bad_trailer()
            if name == _TRAILER_SIGNATURE and self._signing is not None:
                signature = value.lower()
                continue
            if name not in self._declared or name in fields or len(fields) >= MAX_TRAILERS:
                raise _bad_trailer()
            fields[name] = value
        if set(fields) != self._declared:
            raise _bad_trailer()
        if self._signing is not None:
            if signature is None:
                raise _bad_trailer()
            text = "".join(f"{name}:{value}\n" for name, value in fields.items())
            digest = hashlib.sha256(text.encode("latin-1")).hexdigest()
            self._signing.check(self._signing.trailer(previous, digest), signature.encode("latin-1"))
        return fields
