"""S3's browser-based uploads (PostObject) against the built-in store: forms made by boto3's
``generate_presigned_post`` and sent as a browser sends them (``requests``' multipart encoder, and a streamed
``http.client`` body for a large file), each answer S3 gives, each way a policy refuses a form, in S3's words,
and the ``s3:ObjectCreated:Post`` notification."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import requests

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_s3 import client
from tests.e2e.test_s3_large import status_kb
from tests.e2e.test_s3_notifications import RECORDER, allow_s3, configure, records, rule, wait_records


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    """A client whose forms are signed with SigV4 (the x-amz-algorithm/-credential/-date/-signature fields)."""
    return client(server, signature_version="s3v4")


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = unique("post")
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def send(
    form: dict[str, Any],
    content: bytes = b"hello, bucket",
    filename: str = "hello.txt",
    change: dict[str, str | None] | None = None,
    url: str | None = None,
    file: bool = True,
) -> requests.Response:
    """POST a presigned form as a browser does: its fields (``change``d: None removes one), then the file."""
    fields = dict(form["fields"])
    for name, value in (change or {}).items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    files = {"file": (filename, content, "application/octet-stream")} if file else None
    if files is None:  # a form of fields only: still multipart/form-data, as a browser sends it
        files = {name: (None, value) for name, value in fields.items()}
        fields = {}
    return requests.post(url or form["url"], data=fields, files=files, allow_redirects=False, timeout=60)


def error(response: requests.Response) -> tuple[int, str, str, dict[str, str]]:
    """(status, code, message, the other fields) of an S3 XML error."""
    assert response.headers["Content-Type"] == "application/xml", response.text
    root = ElementTree.fromstring(response.content)
    fields = {child.tag: child.text or "" for child in root}
    return response.status_code, fields.pop("Code"), fields.pop("Message"), fields


def absent(s3: Any, bucket: str, key: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0


# -- uploads -----------------------------------------------------------------------------------------------------


def test_a_presigned_post_uploads_and_answers_204(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="docs/hello.txt", ExpiresIn=60)
    answer = send(form, b"hello, bucket")
    assert answer.status_code == 204 and answer.content == b""
    etag = f'"{hashlib.md5(b"hello, bucket").hexdigest()}"'
    assert answer.headers["ETag"] == etag
    assert answer.headers["Location"] == f"{form['url']}/docs%2Fhello.txt"
    got = s3.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert got["Body"].read() == b"hello, bucket" and got["ETag"] == etag


def test_boto3s_default_form_signed_the_older_way_uploads_too(server: Server, s3: Any, bucket: str) -> None:
    default = client(server)  # for us-east-1, boto3 signs forms with AWSAccessKeyId and an HMAC-SHA1 signature
    form = default.generate_presigned_post(Bucket=bucket, Key="v2.txt")
    assert "AWSAccessKeyId" in form["fields"] and "signature" in form["fields"]
    assert send(form, b"older").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="v2.txt")["Body"].read() == b"older"
    status, code, _, fields = error(send(form, change={"signature": "AAAA" + form["fields"]["signature"][4:]}))
    assert (status, code) == (403, "SignatureDoesNotMatch") and fields["StringToSign"] == form["fields"]["policy"]
    status, code, message, _ = error(send(form, change={"AWSAccessKeyId": None}))
    assert (status, code) == (400, "InvalidArgument") and "'AWSAccessKeyId'" in message


def test_success_action_status_201_answers_a_post_response_document(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="made.txt",
        Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}],
    )
    answer = send(form, b"created")
    assert answer.status_code == 201 and answer.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(answer.content)
    assert root.tag == "PostResponse"
    doc = {child.tag: child.text for child in root}
    etag = f'"{hashlib.md5(b"created").hexdigest()}"'
    assert doc == {"Location": f"{form['url']}/made.txt", "Bucket": bucket, "Key": "made.txt", "ETag": etag}

    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="ok.txt",
        Fields={"success_action_status": "200"},
        Conditions=[["eq", "$success_action_status", "200"]],
    )
    answer = send(form, b"ok")
    assert answer.status_code == 200 and answer.content == b""
    assert s3.get_object(Bucket=bucket, Key="ok.txt")["Body"].read() == b"ok"


def test_success_action_redirect_sends_the_browser_on_with_bucket_key_and_etag(s3: Any, bucket: str) -> None:
    target = "https://app.example.com/uploaded?from=form"
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="photos/${filename}",
        Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
    )
    answer = send(form, b"jpeg", filename="cat picture.jpg")
    assert answer.status_code == 303
    location = urllib.parse.urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://app.example.com/uploaded"
    query = urllib.parse.parse_qs(location.query)
    etag = f'"{hashlib.md5(b"jpeg").hexdigest()}"'
    assert query == {"from": ["form"], "bucket": [bucket], "key": ["photos/cat picture.jpg"], "etag": [etag]}
    assert s3.get_object(Bucket=bucket, Key="photos/cat picture.jpg")["Body"].read() == b"jpeg"


def test_filename_is_the_files_name_without_its_path(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="user/42/${filename}")
    assert ["starts-with", "$key", "user/42/"] in json.loads(base64.b64decode(form["fields"]["policy"]))["conditions"]
    assert send(form, b"a", filename="C:\\Users\\ada\\report.pdf").status_code == 204
    assert send(form, b"b", filename="notes/today.txt").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="user/42/report.pdf")["Body"].read() == b"a"
    assert s3.get_object(Bucket=bucket, Key="user/42/today.txt")["Body"].read() == b"b"


def test_content_type_standard_fields_and_metadata_are_kept(s3: Any, bucket: str) -> None:
    fields = {
        "Content-Type": "image/png",
        "Cache-Control": "max-age=60",
        "Content-Disposition": 'attachment; filename="logo.png"',
        "x-amz-meta-owner": "ada",
        "x-amz-meta-source": "${filename}",
    }
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="logo.png",
        Fields=fields,
        Conditions=[
            ["starts-with", "$Content-Type", "image/"],
            {"Cache-Control": "max-age=60"},
            ["starts-with", "$Content-Disposition", "attachment"],
            {"x-amz-meta-owner": "ada"},
            ["starts-with", "$x-amz-meta-source", ""],
        ],
    )
    assert send(form, b"\x89PNG", filename="logo-v2.png").status_code == 204
    head = s3.head_object(Bucket=bucket, Key="logo.png")
    assert head["ContentType"] == "image/png" and head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="logo.png"'
    assert head["Metadata"] == {"owner": "ada", "source": "logo-v2.png"}


def test_a_forms_tagging_field_tags_the_object(s3: Any, bucket: str) -> None:
    tagging = "<Tagging><TagSet><Tag><Key>source</Key><Value>browser</Value></Tag></TagSet></Tagging>"
    form = s3.generate_presigned_post(
        Bucket=bucket, Key="tagged.txt", Fields={"tagging": tagging}, Conditions=[{"tagging": tagging}]
    )
    assert send(form, b"tagged").status_code == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged.txt")["TagSet"] == [{"Key": "source", "Value": "browser"}]
    doubled = tagging.replace("</TagSet>", "<Tag><Key>source</Key><Value>again</Value></Tag></TagSet>")
    form = s3.generate_presigned_post(
        Bucket=bucket, Key="refused.txt", Fields={"tagging": doubled}, Conditions=[{"tagging": doubled}]
    )
    status, code, _, _ = error(send(form, b"refused"))
    assert (status, code) == (400, "InvalidTag") and absent(s3, bucket, "refused.txt")


def test_a_form_posted_to_a_buckets_virtual_host(server: Server, s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="virtual/v.txt", Fields={"success_action_status": "201"},
                                      Conditions=[{"success_action_status": "201"}])  # fmt: skip
    host = f"{bucket}.localhost:{server.port}"
    answer = requests.post(
        f"http://127.0.0.1:{server.port}/",
        data=form["fields"],
        files={"file": ("v.txt", b"virtual")},
        headers={"Host": host},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"] == f"http://{host}/virtual%2Fv.txt"
    assert ElementTree.fromstring(answer.content).findtext("Bucket") == bucket
    assert s3.get_object(Bucket=bucket, Key="virtual/v.txt")["Body"].read() == b"virtual"


def test_a_form_for_a_bucket_that_does_not_exist(s3: Any) -> None:
    missing = unique("nowhere")
    status, code, _, fields = error(send(s3.generate_presigned_post(Bucket=missing, Key="k")))
    assert (status, code, fields["BucketName"]) == (404, "NoSuchBucket", missing)


# -- refusals ----------------------------------------------------------------------------------------------------


def test_each_policy_condition_refuses_a_form_that_fails_it(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="user/42/${filename}",
        Fields={"Content-Type": "text/plain"},
        Conditions=[{"Content-Type": "text/plain"}, ["content-length-range", 2, 10]],
    )
    failed = "Invalid according to Policy: Policy Condition failed: "
    status, code, message, _ = error(send(form, change={"key": "other/x.txt"}))
    assert (status, code, message) == (403, "AccessDenied", failed + '["starts-with", "$key", "user/42/"]')
    status, code, message, _ = error(send(form, change={"Content-Type": "text/html"}))
    assert (status, code, message) == (403, "AccessDenied", failed + '["eq", "$Content-Type", "text/plain"]')
    status, code, message, _ = error(send(form, change={"x-amz-meta-sneaky": "1"}))
    assert (status, code, message) == (
        403,
        "AccessDenied",
        "Invalid according to Policy: Extra input fields: x-amz-meta-sneaky",
    )
    assert send(form, change={"x-ignore-tracking": "1"}, content=b"ok").status_code == 204  # x-ignore- needs none

    status, code, message, fields = error(send(form, content=b"x" * 11, filename="big.txt"))
    assert (status, code, message) == (400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
    assert fields["ProposedSize"] == "11" and fields["MaxSizeAllowed"] == "10"
    status, code, message, fields = error(send(form, content=b"x", filename="small.txt"))
    assert (status, code, message) == (
        400,
        "EntityTooSmall",
        "Your proposed upload is smaller than the minimum allowed size",
    )
    assert fields["ProposedSize"] == "1" and fields["MinSizeAllowed"] == "2"
    assert absent(s3, bucket, "user/42/big.txt") and absent(s3, bucket, "user/42/small.txt")
    assert absent(s3, bucket, "other/") and s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1

    other = unique("post-other")
    s3.create_bucket(Bucket=other)
    try:
        url = form["url"].rsplit("/", 1)[0] + "/" + other
        status, code, message, _ = error(send(form, url=url))
        assert (status, code, message) == (403, "AccessDenied", failed + f'["eq", "$bucket", "{bucket}"]')
        assert s3.list_objects_v2(Bucket=other)["KeyCount"] == 0
    finally:
        s3.delete_bucket(Bucket=other)


def test_an_expired_policy_is_refused(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="late.txt", ExpiresIn=1)
    time.sleep(2.1)
    status, code, message, _ = error(send(form))
    assert (status, code, message) == (403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    assert absent(s3, bucket, "late.txt")


def test_signatures_that_do_not_match_and_unknown_keys_are_refused(server: Server, s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="signed.txt")
    wrong = "0" * 64
    status, code, message, fields = error(send(form, change={"x-amz-signature": wrong}))
    assert (status, code) == (403, "SignatureDoesNotMatch")
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    assert fields["SignatureProvided"] == wrong and fields["StringToSign"] == form["fields"]["policy"]

    # A policy changed after signing (here: a wider key prefix) no longer matches its signature.
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if c != {"key": "signed.txt"}]
    policy["conditions"].append(["starts-with", "$key", ""])
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    status, code, _, _ = error(send(form, change={"policy": forged, "key": "anything.txt"}))
    assert (status, code) == (403, "SignatureDoesNotMatch")

    stranger = client(server, key="AKIAUNKNOWN000000000", secret="x" * 40)
    status, code, message, fields = error(send(stranger.generate_presigned_post(Bucket=bucket, Key="signed.txt")))
    assert (status, code) == (403, "InvalidAccessKeyId")
    assert message == "The AWS Access Key Id you provided does not exist in our records."
    assert fields["AWSAccessKeyId"] == "AKIAUNKNOWN000000000"
    assert absent(s3, bucket, "signed.txt") and absent(s3, bucket, "anything.txt")


def test_missing_fields_and_unsigned_forms_are_refused(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(Bucket=bucket, Key="k.txt")
    order = "If it is specified, please check the order of the fields."
    for name, shown in (
        ("x-amz-signature", "X-Amz-Signature"),
        ("x-amz-credential", "X-Amz-Credential"),
        ("key", "key"),
    ):
        status, code, message, fields = error(send(form, change={name: None}))
        assert (status, code) == (400, "InvalidArgument"), name
        assert message == f"Bucket POST must contain a field named '{shown}'.  {order}"
        assert fields["ArgumentName"] == shown
    status, code, message, _ = error(send(form, file=False))
    assert (status, code, message) == (400, "InvalidArgument", "POST requires exactly one file upload per request.")
    unsigned = {name: None for name in form["fields"] if name != "key"}
    status, code, message, _ = error(send(form, change=unsigned))
    assert (status, code, message) == (403, "AccessDenied", "Access Denied")
    assert absent(s3, bucket, "k.txt")


def test_fields_before_the_file_are_bounded(s3: Any, bucket: str) -> None:
    form = s3.generate_presigned_post(
        Bucket=bucket, Key="padded.txt", Conditions=[["starts-with", "$x-amz-meta-note", ""]]
    )
    assert send(form, change={"x-amz-meta-note": "n" * 10_000}).status_code == 204
    status, code, message, fields = error(send(form, change={"x-amz-meta-note": "n" * 25_000}))
    assert (status, code) == (400, "MaxPostPreDataLengthExceeded")
    assert message == "Your POST request fields preceeding the upload file was too large."
    assert fields["MaxPostPreDataLengthBytes"] == "20480"


def test_a_functions_session_credentials_may_post(server: Server, lam: Any, s3: Any, bucket: str) -> None:
    code = """import boto3
import urllib3


def handler(event, context):
    form = boto3.client("s3").generate_presigned_post(Bucket=event["bucket"], Key="from-function.txt")
    assert "x-amz-security-token" in form["fields"]
    fields = dict(form["fields"])
    fields["file"] = ("f.txt", b"posted inside")
    answer = urllib3.PoolManager().request("POST", form["url"], fields=fields)
    return {"status": answer.status, "body": answer.data.decode()}
"""
    fn = deploy(lam, code, Timeout=30)
    result = json.loads(lam.invoke(FunctionName=fn, Payload=json.dumps({"bucket": bucket}))["Payload"].read())
    assert result == {"status": 204, "body": ""}, result
    assert s3.get_object(Bucket=bucket, Key="from-function.txt")["Body"].read() == b"posted inside"


# -- notifications -------------------------------------------------------------------------------------------------


def test_a_post_upload_notifies_as_object_created_post(server: Server, lam: Any, s3: Any, bucket: str) -> None:
    fn = deploy(lam, RECORDER)
    arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    allow_s3(lam, fn, bucket)
    configure(
        s3,
        bucket,
        rule(arn, ["s3:ObjectCreated:Post"], prefix="post/", Id="posts"),
        rule(arn, ["s3:ObjectCreated:Put"], prefix="put/", Id="puts"),
        rule(arn, ["s3:ObjectCreated:*"], prefix="any/", Id="any"),
    )
    for key in ("post/a.txt", "put/b.txt", "any/c.txt"):
        assert send(s3.generate_presigned_post(Bucket=bucket, Key=key), b"posted").status_code == 204
    s3.put_object(Bucket=bucket, Key="post/put-not-post.txt", Body=b"put")
    found = wait_records(server, fn, 2)
    time.sleep(1.0)  # nothing more arrives
    found = records(server, fn)
    got = sorted((r["eventName"], r["s3"]["configurationId"], r["s3"]["object"]["key"]) for r in found)
    assert got == [("ObjectCreated:Post", "any", "any/c.txt"), ("ObjectCreated:Post", "posts", "post/a.txt")]
    posted = next(r for r in found if r["s3"]["object"]["key"] == "post/a.txt")
    assert posted["s3"]["object"]["size"] == len(b"posted")
    assert posted["s3"]["object"]["eTag"] == hashlib.md5(b"posted").hexdigest()


# -- a large file, streamed ----------------------------------------------------------------------------------------

# Large enough that what the write path may hold at once (a worker lane of at most 8 MB for the hashes and one
# for the file, a few 1 MiB pieces) is well below it: the bound below shows the file streams.
SIZE = 96 << 20


def stream_post(port: int, form: dict[str, Any], size: int, piece: bytes) -> tuple[int, bytes]:
    """POST the form with a ``size``-byte file sent in pieces as it is produced (never whole in memory)."""
    boundary = uuid.uuid4().hex
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in form["fields"].items()
    )
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield tail

    path = urllib.parse.urlsplit(form["url"]).path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        conn.request("POST", path, body=body(), headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_a_96mb_file_streams_through_with_bounded_memory(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        s3 = client(srv)
        s3.create_bucket(Bucket="large-post")
        piece = bytes(range(256)) * 4096  # 1 MiB
        # Warm: the first upload loads what every later one shares (S3's model, the store's paths, the worker
        # lanes' threads), and is large enough to use the lanes.
        warm = s3.generate_presigned_post(Bucket="large-post", Key="warm")
        assert stream_post(srv.port, warm, 24 << 20, piece)[0] == 204
        pid = srv.process.pid
        before = status_kb(pid, "VmRSS")
        status, body = stream_post(srv.port, s3.generate_presigned_post(Bucket="large-post", Key="big"), SIZE, piece)
        assert status == 204, body
        peak = status_kb(pid, "VmHWM")
        growth = (peak - before) * 1024
        assert growth < SIZE // 3, f"peak RSS grew by {growth >> 20} MB for a {SIZE >> 20} MB file"
        expected = hashlib.md5(piece * (SIZE // len(piece))).hexdigest()
        got = s3.get_object(Bucket="large-post", Key="big")
        assert got["ContentLength"] == SIZE and got["ETag"] == f'"{expected}"'
        assert hashlib.md5(got["Body"].read()).hexdigest() == expected
    finally:
        assert srv.stop() == 0, srv.log()
