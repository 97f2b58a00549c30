"""Attacks on the built-in object store: XML entity bombs and oversized XML documents, more keys than one
DeleteObjects takes, a body that stalls mid-upload, and uploads faster than their notifications can be
queued. Each is refused as S3 refuses it, quickly, and leaves nothing behind."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, deploy, start_server, unique
from tests.e2e.test_s3 import client, error_of

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Delete><Object><Key>&lol4;</Key></Object></Delete>"""


def signed_request(server: Server, method: str, path: str, body: bytes, query: str = "") -> tuple[int, bytes, float]:
    url = f"{server.endpoint}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    if query == "delete":
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    started = time.monotonic()
    try:
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=dict(request.headers.items()))
        answer = conn.getresponse()
        return answer.status, answer.read(), time.monotonic() - started
    finally:
        conn.close()


def test_xml_entity_bombs_and_oversized_documents_are_refused(server: Server) -> None:
    s3 = client(server)
    bucket = unique("xml")
    s3.create_bucket(Bucket=bucket)
    status, body, took = signed_request(server, "POST", f"/{bucket}", BOMB, "delete")
    assert status == 400 and b"<Code>MalformedXML</Code>" in body and took < 5
    huge = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 60_000 + b"</Delete>"  # ~1.7 MB
    status, body, _ = signed_request(server, "POST", f"/{bucket}", huge, "delete")
    assert status == 400 and b"<Code>MalformedXML</Code>" in body
    many = {"Objects": [{"Key": f"k{i}"} for i in range(1001)]}
    assert error_of(s3.delete_objects, Bucket=bucket, Delete=many)[0] == "MalformedXML"
    s3.delete_bucket(Bucket=bucket)


def test_a_stalled_upload_is_cut_and_leaves_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"SELFLESS_HEAD_TIMEOUT": "1", "SELFLESS_MIN_BODY_RATE": "100000"})
    try:
        s3 = client(srv)
        s3.create_bucket(Bucket="stall")
        request = AWSRequest(method="PUT", url=f"{srv.endpoint}/stall/slow", data=b"")
        request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(f"PUT /stall/slow HTTP/1.1\r\n{head}Content-Length: 10000000\r\n\r\n".encode() + b"x" * 1000)
            started = time.monotonic()
            while sock.recv(65536):  # the server closes it
                pass
            assert time.monotonic() - started < 20
        assert error_of(s3.head_object, Bucket="stall", Key="slow")[1] == 404
        assert not any((tmp_path / "data" / "s3" / "tmp").iterdir())  # the partial write is gone
    finally:
        assert srv.stop() == 0, srv.log()


SLOW = """import time


def handler(event, context):
    time.sleep(8)
"""


def test_uploads_faster_than_their_notifications_can_queue_get_slow_down(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"SELFLESS_ASYNC_QUEUE_LIMIT": "3"})
    try:
        lam, s3 = srv.client(), client(srv)
        s3.create_bucket(Bucket="busy")
        fn = deploy(lam, SLOW, Timeout=60)
        lam.add_permission(
            FunctionName=fn, StatementId="s3", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
            SourceArn="arn:aws:s3:::busy",
        )  # fmt: skip
        arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
        s3.put_bucket_notification_configuration(
            Bucket="busy",
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        codes: list[Any] = []
        for i in range(6):
            try:
                s3.put_object(Bucket="busy", Key=f"k{i}", Body=b"x")
                codes.append(200)
            except Exception as exc:
                codes.append(exc.response["Error"]["Code"])  # type: ignore[attr-defined]
        assert codes[:3] == [200, 200, 200] and set(codes[3:]) == {"SlowDown"}
        stored = {o["Key"] for o in s3.list_objects_v2(Bucket="busy").get("Contents", [])}
        assert stored == {"k0", "k1", "k2"}  # a refused upload was not kept (its event could not be)
    finally:
        assert srv.stop() == 0, srv.log()


pytestmark = pytest.mark.timeout(300)
