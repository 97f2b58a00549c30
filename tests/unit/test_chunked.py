"""aws-chunked bodies: AWS's own example for signed chunks verified chunk by chunk, botocore's unsigned-trailer
framing, signed trailers, and the framing attacks a client can try (each refused at once, in bounded memory)."""

from __future__ import annotations

import asyncio
import base64
import calendar
import datetime as dt
import hashlib
import hmac
import io
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from selfless.api.auth import ChunkSigning, Keyring, Principal, SigV4Verifier
from selfless.api.chunked import MAX_LINE, MSG_INCOMPLETE, MSG_LENGTH, MSG_SMALL, MSG_TRAILER, ChunkedPayload
from selfless.api.payload import Payload, SignedPayload, open_payload
from selfless.errors import InvalidSignature, MalformedBody

# "Signature Calculations for the Authorization Header: Transferring Payload in Multiple Chunks", its example:
# PUT /examplebucket/chunkObject.txt, 66,560 bytes of 'a' in chunks of 64 KiB, 1 KiB and 0.
DOC_KEY_ID, DOC_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
DOC_HEADERS = {
    "host": "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "authorization": (
        f"AWS4-HMAC-SHA256 Credential={DOC_KEY_ID}/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;"
        "content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
        f"Signature={DOC_SEED}"
    ),
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "content-length": "66824",
}
DOC_DATA = b"a" * 66560


def doc_body(data: bytes = DOC_DATA, signatures: Iterable[str] = DOC_SIGNATURES) -> bytes:
    sigs = list(signatures)
    first, second = data[:65536], data[65536:]
    return (
        f"10000;chunk-signature={sigs[0]}\r\n".encode()
        + first
        + f"\r\n400;chunk-signature={sigs[1]}\r\n".encode()
        + second
        + f"\r\n0;chunk-signature={sigs[2]}\r\n\r\n".encode()
    )


def doc_signing() -> ChunkSigning:
    """What SigV4 verification hands over for the example: checked against the example's own seed."""
    keyring = Keyring()
    keyring.add(DOC_KEY_ID, DOC_SECRET, Principal(DOC_KEY_ID, "admin"))
    clock = float(calendar.timegm(dt.datetime(2013, 5, 24).timetuple()))
    verifier = SigV4Verifier(keyring, "us-east-1", clock=lambda: clock)
    caller = verifier.verify("PUT", "/examplebucket/chunkObject.txt", "", DOC_HEADERS, None)
    assert caller.content_sha256 == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    assert caller.chunk_signing is not None and caller.chunk_signing.seed == DOC_SEED
    return caller.chunk_signing


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def decode(payload: Payload) -> bytes:
    async def run() -> bytes:
        return b"".join([chunk async for chunk in payload])

    return asyncio.run(run())


def refusal(payload: Payload) -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        decode(payload)
    return caught.value


# -- the AWS documentation's example ----------------------------------------------------------------------------


def test_the_documented_example_verifies_its_seed_and_every_chunk_signature() -> None:
    signing = doc_signing()
    assert len(doc_body()) == int(DOC_HEADERS["content-length"])
    previous = DOC_SEED
    for data, expected in zip((DOC_DATA[:65536], DOC_DATA[65536:], b""), DOC_SIGNATURES, strict=True):
        previous = signing.chunk(previous, hashlib.sha256(data).hexdigest())
        assert previous == expected
    for piece in (1 << 20, 65536, 8191, 997):
        payload = ChunkedPayload(_pieces(doc_body(), piece), 66560, signing=signing)
        assert decode(payload) == DOC_DATA and payload.trailers == {}


def test_the_front_door_picks_the_signed_decoder_from_the_headers() -> None:
    signing = doc_signing()
    payload = open_payload(_pieces(doc_body(), 4096), DOC_HEADERS, DOC_HEADERS["x-amz-content-sha256"], signing)
    assert isinstance(payload, ChunkedPayload) and payload.length == 66560
    assert decode(payload) == DOC_DATA


def test_a_tampered_chunk_or_signature_fails_before_the_iteration_ends() -> None:
    signing = doc_signing()
    tampered = DOC_DATA[: 70000 - 3500] + b"b" + DOC_DATA[70000 - 3500 + 1 :]  # a byte of the second chunk
    for body in (
        doc_body(tampered),
        doc_body(signatures=(DOC_SIGNATURES[0], "0" * 64, DOC_SIGNATURES[2])),
        doc_body(signatures=(DOC_SIGNATURES[1], DOC_SIGNATURES[0], DOC_SIGNATURES[2])),  # chunks' order
        doc_body(signatures=(DOC_SIGNATURES[0], DOC_SIGNATURES[1], "f" * 64)),  # the final, empty chunk's
    ):
        payload = ChunkedPayload(_pieces(body, 65536), 66560, signing=signing)
        seen: list[bytes] = []

        async def consume(payload: Payload = payload, seen: list[bytes] = seen) -> None:
            async for chunk in payload:
                seen.append(chunk)

        with pytest.raises(InvalidSignature):
            asyncio.run(consume())
    # Another seed (another request's signature) makes every chunk's signature wrong.
    other = ChunkSigning("1" * 64, signing.key, signing.amz_date, signing.scope)
    with pytest.raises(InvalidSignature):
        decode(ChunkedPayload(_pieces(doc_body(), 65536), 66560, signing=other))


def test_a_signed_chunk_must_carry_exactly_its_signature() -> None:
    signing = doc_signing()
    body = doc_body()
    for broken in (
        body.replace(b"10000;chunk-signature=", b"10000;", 1),
        body.replace(b"10000;chunk-signature=", b"10000\r\n", 1),
        body.replace(b"10000;chunk-signature=", b"10000;x=1;chunk-signature=", 1),
    ):
        err = refusal(ChunkedPayload(_pieces(broken, 65536), 66560, signing=signing))
        assert (err.code, err.message) == ("IncompleteBody", MSG_INCOMPLETE)


# -- framing attacks ---------------------------------------------------------------------------------------------


class Endless:
    """A body that never ends (``head`` first, then ``filler`` forever), counting what was read of it."""

    def __init__(self, head: bytes, filler: bytes) -> None:
        self.head, self.filler, self.read = head, filler, 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._run()

    async def _run(self) -> AsyncIterator[bytes]:
        self.read += len(self.head)
        yield self.head
        while True:
            self.read += len(self.filler)
            yield self.filler


def test_a_declared_chunk_size_past_the_declared_length_fails_without_reading_on() -> None:
    body = Endless(b"1000000000000000;chunk-signature=" + b"0" * 64 + b"\r\n", b"a" * 65536)  # 2^60 bytes
    err = refusal(ChunkedPayload(body, 66560, signing=doc_signing()))
    assert (err.code, err.message) == ("IncompleteBody", MSG_LENGTH)
    assert body.read <= 200
    unsigned = Endless(b"ffffffffffffffff\r\n", b"a" * 65536)
    assert refusal(ChunkedPayload(unsigned, 10, trailer=True)).code == "IncompleteBody" and unsigned.read < 100


@pytest.mark.parametrize(
    "line",
    [b"zz", b"", b"-1", b" 10", b"0x10", b"1" * 17, b"10000 ;chunk-signature=" + b"0" * 64, "\u0661\u0660".encode()],
)
def test_a_chunk_size_that_is_not_hex_is_an_incomplete_body(line: bytes) -> None:
    err = refusal(ChunkedPayload(_pieces(line + b"\r\n" + b"a" * 20000 + b"\r\n0\r\n\r\n", 4096), None))
    assert (err.code, err.message) == ("IncompleteBody", MSG_INCOMPLETE)


def test_an_endless_chunk_line_fails_after_a_few_kilobytes() -> None:
    for filler in (b"1" * 65536, b"1;" + b"x" * 65534, b"\r" * 65536):
        body = Endless(b"", filler)
        err = refusal(ChunkedPayload(body, 1 << 30, trailer=True))
        assert err.code == "IncompleteBody" and body.read <= 65536 + MAX_LINE
    trailer = Endless(b"0\r\n", b"x" * 65536)
    err = refusal(ChunkedPayload(trailer, 0, trailer=True, declared=["x-amz-checksum-crc32"]))
    assert (err.code, err.message) == ("MalformedTrailerError", MSG_TRAILER) and trailer.read <= 65536 + 3


@pytest.mark.parametrize(
    "body",
    [
        b"4\r\nabcdXY0\r\n\r\n",  # no CRLF after the data
        b"4\r\nabcd\n0\r\n\r\n",  # a bare LF
        b"4\nabcd\r\n0\r\n\r\n",  # a bare LF after the size
        b"4\r\nabcd\r\n0\r\n",  # the body ends before its last line
        b"4\r\nab",  # ... inside a chunk's data
        b"4\r\nabcd\r\n0\r\n\r\nmore",  # bytes after the end
        b"4\r\nabcd\r\n0\r\n\r\n0\r\n\r\n",  # a chunk after the last one
    ],
)
def test_broken_framing_is_an_incomplete_body(body: bytes) -> None:
    err = refusal(ChunkedPayload(_pieces(body, 3), 4))
    assert (err.code, err.message) == ("IncompleteBody", MSG_INCOMPLETE)


def test_a_decoded_length_other_than_declared_is_refused() -> None:
    body = b"4\r\nabcd\r\n0\r\n\r\n"
    assert decode(ChunkedPayload(_pieces(body, 5), 4)) == b"abcd"
    for declared in (5, 3, 0):
        err = refusal(ChunkedPayload(_pieces(body, 5), declared))
        assert (err.code, err.message) == ("IncompleteBody", MSG_LENGTH)
    assert decode(ChunkedPayload(_pieces(body, 5), None)) == b"abcd"  # not declared: nothing to check


def test_only_the_last_chunk_may_be_under_8_kib_and_s3_numbers_the_one_after() -> None:
    body = b"2000\r\n" + b"a" * 8192 + b"\r\n1000\r\n" + b"b" * 4096 + b"\r\n10\r\n" + b"c" * 16 + b"\r\n0\r\n\r\n"
    err = refusal(ChunkedPayload(_pieces(body, 1000), 8192 + 4096 + 16))
    assert (err.code, err.message, err.fields) == (
        "InvalidChunkSizeError",
        MSG_SMALL,
        {"Chunk": "3", "BadChunkSize": "4096"},
    )
    small_last = b"2000\r\n" + b"a" * 8192 + b"\r\n10\r\n" + b"c" * 16 + b"\r\n0\r\n\r\n"
    assert decode(ChunkedPayload(_pieces(small_last, 1000), 8192 + 16)) == b"a" * 8192 + b"c" * 16


def test_decoding_holds_a_bounded_amount_of_memory_whatever_the_size() -> None:
    piece = b"a" * 65536
    chunk = b"100000\r\n" + piece * 16 + b"\r\n"  # 1 MiB chunks

    async def body() -> AsyncIterator[bytes]:
        for _ in range(48):  # 48 MiB, never whole in memory
            yield b"100000\r\n"
            for _ in range(16):
                yield piece
            yield b"\r\n"
        yield b"0\r\n\r\n"

    async def run() -> int:
        size = 0
        async for data in ChunkedPayload(body(), 48 << 20):
            size += len(data)
        return size

    assert len(chunk) == (1 << 20) + 10
    tracemalloc.start()
    try:
        assert asyncio.run(run()) == 48 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


# -- trailers ----------------------------------------------------------------------------------------------------


def botocore_framed(data: bytes, chunk_size: int = 1 << 20) -> bytes:
    """What botocore sends for STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size
    )
    return wrapper.read()


def crc32_of(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_botocore_unsigned_trailer_framing_decodes_with_its_checksum() -> None:
    data = bytes(range(256)) * 9000  # ~2.2 MiB: three chunks of botocore's 1 MiB
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "content-encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)),
    }
    payload = open_payload(_pieces(botocore_framed(data), 65536), headers, headers["x-amz-content-sha256"], None)
    assert decode(payload) == data
    assert payload.trailers == {"x-amz-checksum-crc32": crc32_of(data)}
    assert decode(open_payload(_pieces(botocore_framed(b""), 7), {**headers, "x-amz-decoded-content-length": "0"},
                               headers["x-amz-content-sha256"], None)) == b""  # fmt: skip


@pytest.mark.parametrize(
    "trailer",
    [
        b"x-amz-checksum-sha256:AAAA\r\n",  # not the one x-amz-trailer named
        b"",  # the named one missing
        b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-checksum-crc32:AAAAAA==\r\n",  # twice
        b"x-amz-checksum-crc32 AAAAAA==\r\n",  # no colon
        b"x-amz-checksum-crc32:AAAAAA==\n",  # a bare LF
        b"x-amz-checksum-crc32:" + b"A" * (MAX_LINE + 1) + b"\r\n",  # too long
    ],
)
def test_malformed_trailers_are_refused(trailer: bytes) -> None:
    body = b"4\r\nabcd\r\n0\r\n" + trailer + b"\r\n"
    err = refusal(ChunkedPayload(_pieces(body, 5), 4, trailer=True, declared=["x-amz-checksum-crc32"]))
    assert (err.code, err.message) == ("MalformedTrailerError", MSG_TRAILER)


def test_at_most_16_trailing_fields() -> None:
    names = [f"x-amz-meta-{i}" for i in range(17)]
    trailer = b"".join(f"{name}:v\r\n".encode() for name in names)
    body = b"0\r\n" + trailer + b"\r\n"
    assert refusal(ChunkedPayload(_pieces(body, 64), 0, trailer=True, declared=names)).code == "MalformedTrailerError"
    ok = b"0\r\n" + trailer.split(b"\r\n", 16)[-1] + b"\r\n"
    assert decode(ChunkedPayload(_pieces(ok, 64), 0, trailer=True, declared=[names[16]])) == b""


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signed_trailer_body(signing: ChunkSigning, data: bytes, checksum: str, tamper: str = "") -> bytes:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER body, signed per AWS's documentation (independently of
    ChunkSigning): each chunk, the final empty one, then the trailer."""
    prefix = f"{signing.amz_date}\n{signing.scope}\n"
    empty = hashlib.sha256(b"").hexdigest()
    previous, out = signing.seed, b""
    for chunk in (data[i : i + 65536] for i in range(0, len(data), 65536)):
        previous = sign(signing.key, f"AWS4-HMAC-SHA256-PAYLOAD\n{prefix}{previous}\n{empty}\n"
                        f"{hashlib.sha256(chunk).hexdigest()}")  # fmt: skip
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    previous = sign(signing.key, f"AWS4-HMAC-SHA256-PAYLOAD\n{prefix}{previous}\n{empty}\n{empty}")
    out += f"0;chunk-signature={previous}\r\n".encode()
    field = f"x-amz-checksum-crc32:{checksum}"
    trailer_sig = sign(signing.key, f"AWS4-HMAC-SHA256-TRAILER\n{prefix}{previous}\n"
                       f"{hashlib.sha256((field + chr(10)).encode()).hexdigest()}")  # fmt: skip
    return out + f"{field}{tamper}\r\nx-amz-trailer-signature:{trailer_sig}\r\n\r\n".encode()


def test_a_signed_trailer_is_verified() -> None:
    signing = doc_signing()
    data = b"z" * 100_000
    good = signed_trailer_body(signing, data, crc32_of(data))
    payload = ChunkedPayload(_pieces(good, 4000), len(data), signing=signing, trailer=True,
                             declared=["x-amz-checksum-crc32"])  # fmt: skip
    assert decode(payload) == data and payload.trailers == {"x-amz-checksum-crc32": crc32_of(data)}
    tampered = signed_trailer_body(signing, data, crc32_of(data), tamper="x")
    with pytest.raises(InvalidSignature):
        decode(ChunkedPayload(_pieces(tampered, 4000), len(data), signing=signing, trailer=True,
                              declared=["x-amz-checksum-crc32"]))  # fmt: skip
    unsigned = good[: good.index(b"x-amz-trailer-signature")] + b"\r\n"
    err = refusal(ChunkedPayload(_pieces(unsigned, 4000), len(data), signing=signing, trailer=True,
                                 declared=["x-amz-checksum-crc32"]))  # fmt: skip
    assert err.code == "MalformedTrailerError"


# -- choosing the decoder ----------------------------------------------------------------------------------------


def test_an_unknown_streaming_mode_is_refused_and_plain_bodies_pass_as_sent() -> None:
    err = refusal(open_payload(_pieces(b"x", 1), {}, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", None))
    assert err.code == "InvalidArgument" and err.fields == {"ArgumentName": "x-amz-content-sha256"}
    plain = open_payload(_pieces(b"4\r\nabcd\r\n", 3), {"content-length": "9"}, "UNSIGNED-PAYLOAD", None)
    assert isinstance(plain, SignedPayload) and plain.length == 9 and decode(plain) == b"4\r\nabcd\r\n"
    # Content-Encoding alone says aws-chunked (unsigned chunks): decoded, gzip or not.
    framed = open_payload(_pieces(b"4\r\nabcd\r\n0\r\n\r\n", 3), {"content-encoding": "gzip, aws-chunked",
                          "x-amz-decoded-content-length": "4"}, "UNSIGNED-PAYLOAD", None)  # fmt: skip
    assert decode(framed) == b"abcd"


def _frame(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at = 0
    for size in sizes:
        yield f"{size:x}\r\n".encode() + data[at : at + size] + b"\r\n"
        at += size
    yield b"0\r\n\r\n"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(8192, 20000), min_size=0, max_size=3),
    last=st.integers(0, 9000),
    cuts=st.lists(st.integers(1, 30000), min_size=1, max_size=8),
)
def test_any_split_of_any_framing_decodes_to_the_same_bytes(sizes: list[int], last: int, cuts: list[int]) -> None:
    sizes = [*sizes, last] if last else sizes
    data = bytes(i % 251 for i in range(sum(sizes)))
    body = b"".join(_frame(data, sizes))

    async def pieces() -> AsyncIterator[bytes]:
        at, i = 0, 0
        while at < len(body):
            step = cuts[i % len(cuts)]
            yield body[at : at + step]
            at, i = at + step, i + 1

    assert decode(ChunkedPayload(pieces(), len(data))) == data


def test_only_s3_accepts_the_streaming_modes() -> None:
    keyring = Keyring()
    keyring.add(DOC_KEY_ID, DOC_SECRET, Principal(DOC_KEY_ID, "admin"))
    for service, path in (("lambda", "/2015-03-31/functions"), ("logs", "/"), ("s3", "/b/k")):
        request = AWSRequest(method="PUT", url=f"http://localhost:9400{path}", data=b"4\r\nabcd\r\n0\r\n\r\n")
        request.headers["x-amz-content-sha256"] = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        request.context["checksum"] = {"request_algorithm": {"in": "trailer"}}  # botocore's S3 signer: its mode
        signer = S3SigV4Auth if service == "s3" else SigV4Auth
        signer(Credentials(DOC_KEY_ID, DOC_SECRET), service, "us-east-1").add_auth(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers["host"] = "localhost:9400"
        verifier = SigV4Verifier(keyring, "us-east-1")
        if service != "s3":
            for body in (request.body, None):
                with pytest.raises(InvalidSignature):
                    verifier.verify("PUT", path, "", headers, body)
        else:
            caller = verifier.verify("PUT", path, "", headers, None)
            assert caller.content_sha256 == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" and caller.chunk_signing is None
