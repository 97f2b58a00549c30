"""The built-in S3 store through the unchanged boto3 ``s3`` client (and raw signed HTTP where boto3 cannot say
it): every operation it offers and the errors S3 answers, as S3 words them."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import crc32c
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, unique


def client(server: Server, **config: Any) -> Any:
    """An s3 client of ``server``, closed when the server stops (no pooled socket left to the collector)."""
    made = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=config.pop("key", ACCESS_KEY),
        aws_secret_access_key=config.pop("secret", SECRET_KEY),
        config=Config(retries={"max_attempts": 1}, **config),
    )
    server.clients.append(made)
    return made


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    return client(server)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique("bkt")
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=name)


def error_of(call: Any, **params: Any) -> tuple[str, int, dict[str, Any]]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]


# -- buckets ---------------------------------------------------------------------------------------------------


def test_bucket_lifecycle_and_its_errors(s3: Any) -> None:
    name = unique("life")
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None  # us-east-1, as S3 says it
    code, status, _ = error_of(s3.create_bucket, Bucket=name)
    assert (code, status) == ("BucketAlreadyOwnedByYou", 409)
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    code, status, err = error_of(s3.delete_bucket, Bucket=name)
    assert (code, status, err["Message"]) == ("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    code, status, err = error_of(s3.head_bucket, Bucket=name)
    assert status == 404
    code, status, err = error_of(s3.list_objects_v2, Bucket=name)
    assert (code, status, err["BucketName"]) == ("NoSuchBucket", 404, name)


@pytest.mark.parametrize("name", ["ab", "UPPER", "has_underscore", "-dash", "dots..twice", "192.168.1.1", "x" * 64])
def test_invalid_bucket_names_are_refused(s3: Any, name: str) -> None:
    code, status, _ = error_of(s3.create_bucket, Bucket=name)
    assert (code, status) == ("InvalidBucketName", 400)


# -- objects ---------------------------------------------------------------------------------------------------


def test_put_get_head_delete_with_metadata_and_standard_headers(s3: Any, bucket: str) -> None:
    body = b"hello, object store"
    put = s3.put_object(
        Bucket=bucket,
        Key="dir/a file+plus.txt",
        Body=body,
        ContentType="text/plain",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="a.txt"',
        ContentLanguage="en",
        Metadata={"owner": "team", "n": "1"},
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/a file+plus.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain" and got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="a.txt"' and got["ContentLanguage"] == "en"
    assert got["Metadata"] == {"owner": "team", "n": "1"}
    assert got["ContentLength"] == len(body) and got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="dir/a file+plus.txt")
    assert head["ContentLength"] == len(body) and head["Metadata"] == {"owner": "team", "n": "1"}
    over = s3.get_object(Bucket=bucket, Key="dir/a file+plus.txt", ResponseContentType="application/x-test")
    assert over["ContentType"] == "application/x-test" and over["Body"].read() == body  # read: its socket goes back
    s3.delete_object(Bucket=bucket, Key="dir/a file+plus.txt")
    code, status, err = error_of(s3.get_object, Bucket=bucket, Key="dir/a file+plus.txt")
    assert (code, status, err["Message"]) == ("NoSuchKey", 404, "The specified key does not exist.")
    assert error_of(s3.head_object, Bucket=bucket, Key="dir/a file+plus.txt")[1] == 404
    s3.delete_object(Bucket=bucket, Key="never-there")  # 204, as S3 answers


def test_ranges(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789")
    for wanted, body, content_range in (
        ("bytes=0-3", b"0123", "bytes 0-3/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-2", b"89", "bytes 8-9/10"),
        ("bytes=5-100", b"56789", "bytes 5-9/10"),
    ):
        got = s3.get_object(Bucket=bucket, Key="r", Range=wanted)
        assert (got["Body"].read(), got["ContentRange"]) == (body, content_range)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    code, status, _ = error_of(s3.get_object, Bucket=bucket, Key="r", Range="bytes=20-30")
    assert (code, status) == ("InvalidRange", 416)


def test_a_file_backed_object_reads_whole_by_range_and_head_and_outlives_its_replacement_mid_read(
    s3: Any, bucket: str
) -> None:
    # Larger than what socket buffers hold, so the replacement lands while the first read is mid-file.
    body = os.urandom(32 << 20)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == body
    ranged = s3.get_object(Bucket=bucket, Key="big", Range="bytes=1000-2000999")
    assert ranged["Body"].read() == body[1000:2001000] and ranged["ContentRange"] == f"bytes 1000-2000999/{len(body)}"
    assert s3.get_object(Bucket=bucket, Key="big", Range="bytes=-5")["Body"].read() == body[-5:]
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == len(body) and head["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    reading = s3.get_object(Bucket=bucket, Key="big")["Body"]
    first = reading.read(1 << 16)
    s3.put_object(Bucket=bucket, Key="big", Body=b"replaced")  # the old bytes' file is deleted
    rest = reading.read()
    assert first + rest == body
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"replaced"
    reading = s3.get_object(Bucket=bucket, Key="big", Range="bytes=0-3")["Body"]
    s3.delete_object(Bucket=bucket, Key="big")
    assert reading.read() == b"repl"


def test_conditional_reads(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"v1")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"v1"
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfMatch='"0000"')[:2] == ("PreconditionFailed", 412)
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfNoneMatch=etag)[1] == 304
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfModifiedSince=modified)[1] == 304
    past = modified.replace(year=modified.year - 1)
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)["Body"].read() == b"v1"
    assert error_of(s3.get_object, Bucket=bucket, Key="c", IfUnmodifiedSince=past)[:2] == ("PreconditionFailed", 412)


def test_digests_and_checksums_are_verified(s3: Any, bucket: str) -> None:
    body = b"checked bytes"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="m", Body=body, ContentMD5=md5)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert error_of(s3.put_object, Bucket=bucket, Key="m2", Body=body, ContentMD5=wrong)[:2] == ("BadDigest", 400)
    assert error_of(s3.put_object, Bucket=bucket, Key="m2", Body=body, ContentMD5="nope")[:2] == ("InvalidDigest", 400)
    bad_crc = base64.b64encode(b"\0\0\0\0").decode()
    code, _, err = error_of(s3.put_object, Bucket=bucket, Key="m2", Body=body, ChecksumCRC32=bad_crc)
    assert code == "BadDigest" and "CRC32" in err["Message"]
    assert error_of(s3.head_object, Bucket=bucket, Key="m2")[1] == 404  # nothing of a refused write remains
    for algorithm in ("CRC32", "SHA1", "SHA256"):
        put = s3.put_object(Bucket=bucket, Key=f"sum-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
        got = s3.head_object(Bucket=bucket, Key=f"sum-{algorithm}", ChecksumMode="ENABLED")
        assert got[f"Checksum{algorithm}"] == put[f"Checksum{algorithm}"]
    # CRC32C: botocore computes it only with its CRT extra, so the test gives the value it computed itself.
    value = base64.b64encode(crc32c.crc32c(body).to_bytes(4, "big")).decode()
    s3.put_object(Bucket=bucket, Key="sum-CRC32C", Body=body, ChecksumCRC32C=value)
    assert s3.head_object(Bucket=bucket, Key="sum-CRC32C", ChecksumMode="ENABLED")["ChecksumCRC32C"] == value
    wrong_c = base64.b64encode(crc32c.crc32c(b"else").to_bytes(4, "big")).decode()
    assert error_of(s3.put_object, Bucket=bucket, Key="m3", Body=body, ChecksumCRC32C=wrong_c)[0] == "BadDigest"


def test_a_streamed_body_that_is_not_the_signed_one_is_refused(server: Server, s3: Any, bucket: str) -> None:
    url = f"{server.endpoint}/{bucket}/tampered"
    request = AWSRequest(method="PUT", url=url, data=b"signed body")
    request.headers["x-amz-content-sha256"] = hashlib.sha256(b"signed body").hexdigest()
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = dict(request.headers.items())
    headers["Content-Length"] = str(len(b"other body!"))
    conn.request("PUT", f"/{bucket}/tampered", body=b"other body!", headers=headers)
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    assert answer.status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body
    assert error_of(s3.head_object, Bucket=bucket, Key="tampered")[1] == 404


def test_signature_errors_in_s3s_words(server: Server, bucket: str) -> None:
    wrong_secret = client(server, secret="not-the-secret")
    assert error_of(wrong_secret.list_objects_v2, Bucket=bucket)[:2] == ("SignatureDoesNotMatch", 403)
    unknown = client(server, key="AKIAUNKNOWN000000000")
    assert error_of(unknown.list_objects_v2, Bucket=bucket)[:2] == ("InvalidAccessKeyId", 403)


def test_listings_v2_and_v1(s3: Any, bucket: str) -> None:
    keys = ["a/1", "a/2", "a/b/3", "b/4", "c", "d/5"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == keys and everything["KeyCount"] == 6
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert [o["Key"] for o in top["Contents"]] == ["c"]
    under = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under["Contents"]] == ["a/1", "a/2"] and under["CommonPrefixes"] == [{"Prefix": "a/b/"}]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, StartAfter="b/4")["Contents"]] == ["c", "d/5"]
    # Pages of two, through the continuation token (and through boto3's paginator).
    seen, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=2, **({"ContinuationToken": token} if token else {}))
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == keys
    paged = [
        o["Key"]
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 4})
        for o in p.get("Contents", [])
    ]
    assert paged == keys
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert v1["IsTruncated"] and [p["Prefix"] for p in v1["CommonPrefixes"]] == ["a/", "b/"]
    rest = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=v1["NextMarker"])
    assert [o["Key"] for o in rest["Contents"]] == ["c"] and [p["Prefix"] for p in rest["CommonPrefixes"]] == ["d/"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="zzz")["KeyCount"] == 0


def test_copy_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"copied", ContentType="text/x", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="same-meta", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == s3.head_object(Bucket=bucket, Key="src")["ETag"]
    got = s3.get_object(Bucket=bucket, Key="same-meta")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"copied", "text/x", {"a": "1"})
    s3.copy_object(
        Bucket=bucket, Key="new-meta", CopySource=f"{bucket}/src", MetadataDirective="REPLACE", Metadata={"b": "2"}
    )
    assert s3.head_object(Bucket=bucket, Key="new-meta")["Metadata"] == {"b": "2"}
    code, _, _ = error_of(s3.copy_object, Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}, MetadataDirective="REPLACE")
    assert (
        error_of(s3.copy_object, Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})[0]
        == "NoSuchKey"
    )


def test_multipart_upload_with_three_parts_and_s3s_etag(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="application/x-mp")["UploadId"]
    bodies = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1234)]
    parts = []
    for number, body in enumerate(bodies, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=body)["ETag"]
        assert etag == f'"{hashlib.md5(body).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": etag})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 << 20), (2, 5 << 20), (3, 1234)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    # Wrong order, an unknown part: refused, the upload stays.
    assert (
        error_of(
            s3.complete_multipart_upload,
            Bucket=bucket,
            Key="mp",
            UploadId=upload,
            MultipartUpload={"Parts": list(reversed(parts))},
        )[0]
        == "InvalidPartOrder"
    )
    bad = [*parts[:2], {"PartNumber": 3, "ETag": '"00000000000000000000000000000000"'}]
    assert (
        error_of(
            s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": bad}
        )[0]
        == "InvalidPart"
    )
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    expected = hashlib.md5(b"".join(hashlib.md5(b).digest() for b in bodies)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == b"".join(bodies) and got["ContentType"] == "application/x-mp"
    assert error_of(s3.list_parts, Bucket=bucket, Key="mp", UploadId=upload)[0] == "NoSuchUpload"


def test_small_parts_are_refused_and_aborts_leave_nothing(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=bucket, Key="small", UploadId=upload, PartNumber=n, Body=b"tiny")["ETag"],
        }
        for n in (1, 2)
    ]
    code, status, _ = error_of(
        s3.complete_multipart_upload, Bucket=bucket, Key="small", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert (code, status) == ("EntityTooSmall", 400)
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=upload)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert (
        error_of(s3.upload_part, Bucket=bucket, Key="small", UploadId=upload, PartNumber=3, Body=b"x")[0]
        == "NoSuchUpload"
    )


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("x1", "x2", "x3"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x1"}, {"Key": "x2"}, {"Key": "gone"}]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["gone", "x1", "x2"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x3"}], "Quiet": True})
    assert "Deleted" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_presigned_get_and_put_and_their_expiry(server: Server, bucket: str) -> None:
    s3 = client(server, signature_version="s3v4")
    put = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=60)
    with urllib.request.urlopen(urllib.request.Request(put, data=b"presigned!", method="PUT"), timeout=30) as answer:
        assert answer.status == 200
    get = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=60)
    with urllib.request.urlopen(get, timeout=30) as answer:
        assert answer.read() == b"presigned!"
    short = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=1)
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(short, timeout=30)
    with caught.value as refused:
        body = refused.read()
    assert refused.code == 403 and b"<Code>AccessDenied</Code>" in body and b"Request has expired" in body


def test_virtual_hosted_style_addressing(server: Server, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="v/h.txt", Body=b"virtual")
    host = f"{bucket}.localhost:{server.port}"
    request = AWSRequest(method="GET", url=f"http://{host}/v/h.txt")
    request.headers["x-amz-content-sha256"] = hashlib.sha256(b"").hexdigest()
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # *.localhost need not resolve here
    conn.request("GET", "/v/h.txt", headers={**dict(request.headers.items()), "Host": host})
    answer = conn.getresponse()
    assert (answer.status, answer.read()) == (200, b"virtual")
    conn.request("GET", "/v/h.txt", headers={"Host": host})  # unsigned, to a bucket's host: S3's error
    refused = conn.getresponse()
    refused_body = refused.read()
    conn.close()
    assert refused.status == 403 and b"<Code>AccessDenied</Code>" in refused_body


def test_concurrent_writers_to_one_key_leave_one_whole_object(s3: Any, bucket: str) -> None:
    bodies = [bytes([i]) * (1 << 20) + os.urandom(1000) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda body: s3.put_object(Bucket=bucket, Key="contended", Body=body), bodies))
    final = s3.get_object(Bucket=bucket, Key="contended")["Body"].read()
    assert final in bodies


def test_unsupported_subresources_say_not_implemented(s3: Any, bucket: str) -> None:
    code, status, _ = error_of(s3.get_bucket_policy, Bucket=bucket)
    assert (code, status) == ("NotImplemented", 501)


pytestmark = pytest.mark.timeout(300)
