"""aws-chunked object writes against a running server, as AWS SDKs send them: boto3 itself in its unsigned-trailer
mode (what it sends over TLS: botocore's AwsChunkedWrapper with a CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER
signed by its SigV4 signer), and signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) built here per AWS's
documentation on botocore's S3SigV4Auth seed signature. The stored object is what was meant; a wrong trailing
checksum or chunk signature leaves nothing behind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import io
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, unique
from tests.e2e.test_s3 import client, error_of

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    return client(server)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique("chunked")
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=name)


def trailer_client(server: Server) -> Any:
    """A boto3 client that sends object writes as it does over TLS: aws-chunked with a trailing checksum
    (botocore chooses the trailer only for https; this flips its own choice before the request is built)."""
    made = client(server)

    def in_trailer(context: dict[str, Any], **_: Any) -> None:
        algorithm = context.get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    made.meta.events.register("before-call.s3.PutObject", in_trailer)
    made.meta.events.register("before-call.s3.UploadPart", in_trailer)
    return made


def crc32_of(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_boto3_unsigned_trailer_uploads_store_the_object_and_its_checksum(server: Server, bucket: str) -> None:
    s3 = trailer_client(server)
    seen: list[dict[str, str]] = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers)))
    data = bytes(range(256)) * 12_000  # ~3 MiB: botocore's 1 MiB chunks and a short last one
    put = s3.put_object(Bucket=bucket, Key="big.bin", Body=data, ContentType="application/x-test")
    sent = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in seen[-1].items()}
    assert sent["x-amz-content-sha256"] == UNSIGNED_TRAILER and sent["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert sent["content-encoding"] == "aws-chunked" and sent["transfer-encoding"] == "chunked"
    md5 = f'"{hashlib.md5(data).hexdigest()}"'
    assert put["ETag"] == md5 and put["ChecksumCRC32"] == crc32_of(data)
    got = s3.get_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ContentLength"] == len(data) and got["ETag"] == md5
    assert got["ChecksumCRC32"] == crc32_of(data) and "ContentEncoding" not in got
    assert got["ContentType"] == "application/x-test"
    # Another encoding travels with aws-chunked (botocore appends it): the object keeps it.
    s3.put_object(Bucket=bucket, Key="page.gz", Body=b"\x1f\x8b" + b"z" * 100, ContentEncoding="gzip")
    assert sent_encoding(seen) == "gzip,aws-chunked"
    head = s3.head_object(Bucket=bucket, Key="page.gz")
    assert head["ContentEncoding"] == "gzip" and head["ContentLength"] == 102
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def sent_encoding(seen: list[dict[str, Any]]) -> str:
    value = {k.lower(): v for k, v in seen[-1].items()}["content-encoding"]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_boto3_unsigned_trailer_multipart_upload(server: Server, bucket: str) -> None:
    s3 = trailer_client(server)
    parts_data = [b"p" * (5 << 20), b"q" * 1000]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, data in enumerate(parts_data, 1):
        part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=data)
        assert part["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' and part["ChecksumCRC32"] == crc32_of(data)
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"".join(parts_data)


class _LyingCrc32(Crc32Checksum):
    def b64digest(self) -> str:
        return crc32_of(b"something else")


def send(server: Server, request: AWSRequest, body: bytes | Iterator[bytes]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        path = request.url.split(str(server.port), 1)[1]
        headers = dict(request.headers.items())
        chunked = "Transfer-Encoding" in request.headers
        conn.request(request.method, path, body=body, headers=headers, encode_chunked=chunked)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def put_unsigned_trailer(
    server: Server, path: str, data: bytes, checksum: type[Crc32Checksum], **headers: str
) -> tuple[int, bytes]:
    """A PUT in botocore's unsigned-trailer framing, signed by botocore's S3 signer (its trailer mode)."""
    request = AWSRequest(method="PUT", url=f"{server.endpoint}{path}")
    request.context["checksum"] = {
        "request_algorithm": {"algorithm": "crc32", "in": "trailer", "name": "x-amz-checksum-crc32"}
    }
    request.headers["Content-Encoding"] = "aws-chunked"
    request.headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    request.headers["X-Amz-Decoded-Content-Length"] = str(len(data))
    request.headers["Transfer-Encoding"] = "chunked"
    for name, value in headers.items():
        del request.headers[name]  # (setting adds a second field)
        request.headers[name] = value
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == UNSIGNED_TRAILER
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=checksum, checksum_name="x-amz-checksum-crc32")
    return send(server, request, iter(wrapper))


def test_a_wrong_trailing_checksum_is_bad_digest_and_stores_nothing(server: Server, s3: Any, bucket: str) -> None:
    data = b"x" * 100_000
    status, body = put_unsigned_trailer(server, f"/{bucket}/lied", data, _LyingCrc32)
    assert status == 400 and b"<Code>BadDigest</Code>" in body, body
    assert b"The CRC32 you specified did not match the calculated checksum." in body
    assert error_of(s3.head_object, Bucket=bucket, Key="lied")[1] == 404
    status, _ = put_unsigned_trailer(server, f"/{bucket}/told", data, Crc32Checksum)
    assert status == 200 and s3.get_object(Bucket=bucket, Key="told")["Body"].read() == data


def test_decoded_length_missing_or_wrong(server: Server, s3: Any, bucket: str) -> None:
    data = b"y" * 20_000
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/nolength")
    request.headers["x-amz-content-sha256"] = UNSIGNED_TRAILER
    request.headers["Content-Encoding"] = "aws-chunked"
    request.headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    framed = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32")
    encoded = framed.read()
    request.headers["Content-Length"] = str(len(encoded))
    signer = S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
    request.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
    signer.add_auth(request)
    status, body = send(server, request, encoded)
    assert status == 411 and b"<Code>MissingContentLength</Code>" in body, body
    for wrong in (len(data) - 1, len(data) + 1):
        status, body = put_unsigned_trailer(
            server, f"/{bucket}/wrong", data, Crc32Checksum, **{"X-Amz-Decoded-Content-Length": str(wrong)}
        )
        assert status == 400 and b"<Code>IncompleteBody</Code>" in body, body
    assert error_of(s3.head_object, Bucket=bucket, Key="nolength")[1] == 404
    assert error_of(s3.head_object, Bucket=bucket, Key="wrong")[1] == 404


# -- signed chunks ------------------------------------------------------------------------------------------------


class _StreamingS3Auth(S3SigV4Auth):
    """botocore's S3 signer, signing one of the aws-chunked modes as the payload (as SDKs that send them do)."""

    def __init__(self, mode: str) -> None:
        super().__init__(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
        self.mode = mode

    def payload(self, request: Any) -> str:
        return self.mode


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_chunks(
    request: AWSRequest, data: bytes, chunk: int, trailer: str | None = None, bad_chunk: int = -1
) -> bytes:
    """The body of a signed aws-chunked request, per AWS's documentation: each chunk signed over
    AWS4-HMAC-SHA256-PAYLOAD, date, scope, the previous signature (the seed: the request's), the empty hash and
    the chunk's hash; then the final empty chunk; then (``trailer``: a ``name:value`` field) the trailer,
    signed over AWS4-HMAC-SHA256-TRAILER. ``bad_chunk``: the index of a chunk whose signature is wrong."""
    authorization = request.headers["Authorization"]
    seed = authorization.rsplit("Signature=", 1)[1]
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{SECRET_KEY}".encode(), amz_date[:8]), "us-east-1"), "s3"), "aws4_request")
    previous, out = seed, []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for index, piece in enumerate(pieces):
        text = "\n".join(
            ("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, hashlib.sha256(piece).hexdigest())
        )
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        shown = "0" * 64 if index == bad_chunk else previous
        out.append(f"{len(piece):x};chunk-signature={shown}\r\n".encode() + piece + (b"\r\n" if piece else b""))
    if trailer is None:
        return b"".join(out) + b"\r\n"
    fields_hash = hashlib.sha256(f"{trailer}\n".encode()).hexdigest()
    text = "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, fields_hash))
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return b"".join(out) + f"{trailer}\r\nx-amz-trailer-signature:{signature}\r\n\r\n".encode()


def signed_put(
    server: Server,
    path: str,
    data: bytes,
    mode: str,
    *,
    chunk: int = 64 << 10,
    trailer: str | None = None,
    bad_chunk: int = -1,
    encoding: str = "aws-chunked",
    transfer_chunked: bool = False,
) -> tuple[int, bytes]:
    request = AWSRequest(method="PUT", url=f"{server.endpoint}{path}")
    request.headers["Content-Encoding"] = encoding
    request.headers["X-Amz-Decoded-Content-Length"] = str(len(data))
    if trailer is not None:
        request.headers["X-Amz-Trailer"] = trailer.split(":", 1)[0]
    # The encoded length is signed (as in AWS's example) unless the body goes with Transfer-Encoding: chunked;
    # signatures are all 64 characters, so a placeholder body has the length of the real one.
    if transfer_chunked:
        request.headers["Transfer-Encoding"] = "chunked"
    else:
        placeholder = AWSRequest(method="PUT", url=request.url, headers={"Authorization": "Signature=" + "0" * 64,
                                 "X-Amz-Date": "20260101T000000Z"})  # fmt: skip
        size = len(signed_chunks(placeholder, data, chunk, trailer))
        request.headers["Content-Length"] = str(size)
    _StreamingS3Auth(mode).add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == mode
    body = signed_chunks(request, data, chunk, trailer, bad_chunk)
    if transfer_chunked:
        return send(server, request, iter([body[i : i + 100_000] for i in range(0, len(body), 100_000)]))
    return send(server, request, body)


def test_signed_chunks_store_the_object(server: Server, s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes: three 64 KiB chunks, a short one, the empty one
    status, body = signed_put(server, f"/{bucket}/signed", data, SIGNED)
    assert status == 200, body
    got = s3.get_object(Bucket=bucket, Key="signed")
    assert got["Body"].read() == data and got["ContentLength"] == len(data)
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' and "ContentEncoding" not in got
    # Sent with Transfer-Encoding: chunked, and with another content encoding kept.
    status, body = signed_put(
        server, f"/{bucket}/signed-gz", data, SIGNED, encoding="aws-chunked,gzip", transfer_chunked=True
    )
    assert status == 200, body
    head = s3.head_object(Bucket=bucket, Key="signed-gz")
    assert head["ContentEncoding"] == "gzip" and head["ContentLength"] == len(data)


def test_a_wrong_chunk_signature_is_signature_does_not_match_and_stores_nothing(
    server: Server, s3: Any, bucket: str
) -> None:
    data = b"s" * 300_000
    for bad in (0, 2, 5):  # the first chunk, one in the middle, the final empty one
        status, body = signed_put(server, f"/{bucket}/forged", data, SIGNED, bad_chunk=bad)
        assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body, (bad, body)
    assert error_of(s3.head_object, Bucket=bucket, Key="forged")[1] == 404
    status, body = signed_put(server, f"/{bucket}/small", data, SIGNED, chunk=4096)
    assert status == 400 and b"<Code>InvalidChunkSizeError</Code>" in body, body
    assert b"<Chunk>2</Chunk><BadChunkSize>4096</BadChunkSize>" in body
    assert error_of(s3.head_object, Bucket=bucket, Key="small")[1] == 404


def test_signed_chunks_with_a_signed_trailer(server: Server, s3: Any, bucket: str) -> None:
    data = b"t" * 150_000
    trailer = f"x-amz-checksum-crc32:{crc32_of(data)}"
    status, body = signed_put(server, f"/{bucket}/trailed", data, SIGNED_TRAILER, trailer=trailer)
    assert status == 200, body
    got = s3.get_object(Bucket=bucket, Key="trailed", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC32"] == crc32_of(data)
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    wrong = f"x-amz-checksum-crc32:{crc32_of(b'other')}"
    status, body = signed_put(server, f"/{bucket}/trail-lied", data, SIGNED_TRAILER, trailer=wrong)
    assert status == 400 and b"<Code>BadDigest</Code>" in body, body
    status, body = signed_put(server, f"/{bucket}/trail-forged", data, SIGNED_TRAILER, trailer=trailer, bad_chunk=1)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body, body
    for key in ("trail-lied", "trail-forged"):
        assert error_of(s3.head_object, Bucket=bucket, Key=key)[1] == 404


def test_signed_chunks_for_a_part(server: Server, s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parted")["UploadId"]
    data = b"r" * (5 << 20)
    status, body = signed_put(server, f"/{bucket}/parted?partNumber=1&uploadId={upload}", data, SIGNED)
    assert status == 200, body
    listed = s3.list_parts(Bucket=bucket, Key="parted", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [
        (1, len(data), f'"{hashlib.md5(data).hexdigest()}"')
    ]
    status, body = signed_put(server, f"/{bucket}/parted?partNumber=2&uploadId={upload}", data, SIGNED, bad_chunk=3)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body, body
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="parted", UploadId=upload)["Parts"]] == [1]
