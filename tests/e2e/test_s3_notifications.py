"""Bucket notifications as S3 has them: configurations validated as S3 validates them, every matching upload
and removal invoking the function asynchronously with S3's event, prefix and suffix filters, what a
function's own credentials may do in the store, and no accepted upload losing its event to a kill -9."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_s3 import client, error_of

RECORDER = """import json


def handler(event, context):
    for record in event["Records"]:
        print("RECORD " + json.dumps(record))
"""


def records(server: Server, function: str) -> list[dict[str, Any]]:
    logs = server.client("logs")
    try:
        found = []
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{function}"):
            found += page["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [json.loads(e["message"][len("RECORD ") :]) for e in found if e["message"].startswith("RECORD ")]


def wait_records(server: Server, function: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = records(server, function)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} records arrived"
        time.sleep(0.2)


def allow_s3(lam: Any, function: str, bucket: str) -> None:
    lam.add_permission(
        FunctionName=function,
        StatementId=unique("s3"),
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn=f"arn:aws:s3:::{bucket}",
    )


def configure(s3: Any, bucket: str, *configs: dict[str, Any]) -> None:
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": list(configs)}
    )


def rule(
    arn: str, events: list[str], prefix: str | None = None, suffix: str | None = None, **extra: Any
) -> dict[str, Any]:
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v is not None]
    doc: dict[str, Any] = {"LambdaFunctionArn": arn, "Events": events, **extra}
    if rules:
        doc["Filter"] = {"Key": {"FilterRules": rules}}
    return doc


def test_uploads_and_removals_invoke_with_s3s_event(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("notified")
    s3.create_bucket(Bucket=bucket)
    fn = deploy(lam, RECORDER)
    arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    allow_s3(lam, fn, bucket)
    configure(
        s3,
        bucket,
        rule(arn, ["s3:ObjectCreated:*"], prefix="in/", suffix=".jpg", Id="created"),
        rule(arn, ["s3:ObjectRemoved:*"], prefix="in/", Id="removed"),
    )
    shown = s3.get_bucket_notification_configuration(Bucket=bucket)["LambdaFunctionConfigurations"]
    assert [c["Id"] for c in shown] == ["created", "removed"] and shown[0]["LambdaFunctionArn"] == arn
    assert shown[0]["Filter"]["Key"]["FilterRules"] == [
        {"Name": "Prefix", "Value": "in/"},
        {"Name": "Suffix", "Value": ".jpg"},
    ]

    etag = s3.put_object(Bucket=bucket, Key="in/red flower.jpg", Body=b"jpeg bytes")["ETag"]
    s3.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"not matched")  # suffix
    s3.put_object(Bucket=bucket, Key="out/x.jpg", Body=b"not matched")  # prefix
    s3.copy_object(Bucket=bucket, Key="in/copy.jpg", CopySource={"Bucket": bucket, "Key": "in/red flower.jpg"})
    s3.delete_object(Bucket=bucket, Key="in/notes.txt")
    s3.delete_object(Bucket=bucket, Key="in/never-there.jpg")  # nothing removed: no event

    found = wait_records(server, fn, 3)
    time.sleep(1.0)  # nothing more arrives
    found = records(server, fn)
    by_name = {(r["eventName"], urllib.parse.unquote_plus(r["s3"]["object"]["key"])): r for r in found}
    assert sorted(by_name) == [
        ("ObjectCreated:Copy", "in/copy.jpg"),
        ("ObjectCreated:Put", "in/red flower.jpg"),
        ("ObjectRemoved:Delete", "in/notes.txt"),
    ]
    put = by_name[("ObjectCreated:Put", "in/red flower.jpg")]
    assert put["eventVersion"] == "2.1" and put["eventSource"] == "aws:s3" and put["awsRegion"] == "us-east-1"
    assert put["s3"]["configurationId"] == "created"
    assert put["s3"]["bucket"]["name"] == bucket and put["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    assert put["s3"]["object"]["key"] == "in/red+flower.jpg"  # form-encoded, as S3 sends keys
    assert put["s3"]["object"]["size"] == len(b"jpeg bytes") and put["s3"]["object"]["eTag"] == etag.strip('"')
    assert put["userIdentity"]["principalId"].startswith("AWS:")
    assert put["requestParameters"]["sourceIPAddress"] == "127.0.0.1"
    removed = by_name[("ObjectRemoved:Delete", "in/notes.txt")]
    assert removed["s3"]["configurationId"] == "removed" and "size" not in removed["s3"]["object"]
    sequencers = [int(r["s3"]["object"]["sequencer"], 16) for r in sorted(found, key=lambda r: r["eventTime"])]
    assert len(set(sequencers)) == 3


def test_multipart_completion_sends_its_event(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("mpnotified")
    s3.create_bucket(Bucket=bucket)
    fn = deploy(lam, RECORDER)
    allow_s3(lam, fn, bucket)
    configure(
        s3,
        bucket,
        rule(
            lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"],
            ["s3:ObjectCreated:CompleteMultipartUpload"],
        ),
    )
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"only part")["ETag"]
    s3.put_object(Bucket=bucket, Key="plain", Body=b"not this event type")
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    (record,) = wait_records(server, fn, 1)
    assert record["eventName"] == "ObjectCreated:CompleteMultipartUpload" and record["s3"]["object"]["key"] == "big"
    assert record["s3"]["object"]["eTag"].endswith("-1")


def test_configurations_s3_refuses(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("refuses")
    s3.create_bucket(Bucket=bucket)
    fn = deploy(lam, RECORDER)
    arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    # No permission for s3.amazonaws.com yet: S3 cannot validate the destination.
    code, status, err = error_of(
        s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration={"LambdaFunctionConfigurations": [rule(arn, ["s3:ObjectCreated:*"])]},
    )
    assert (code, status, err["Message"]) == (
        "InvalidArgument",
        400,
        "Unable to validate the following destination configurations",
    )
    # A permission for another bucket is not one for this bucket.
    allow_s3(lam, fn, "some-other-bucket")
    assert (
        error_of(
            s3.put_bucket_notification_configuration,
            Bucket=bucket,
            NotificationConfiguration={"LambdaFunctionConfigurations": [rule(arn, ["s3:ObjectCreated:*"])]},
        )[0]
        == "InvalidArgument"
    )
    missing = arn + "-missing"
    code, _, err = error_of(
        s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration={"LambdaFunctionConfigurations": [rule(missing, ["s3:ObjectCreated:*"])]},
    )
    assert code == "InvalidArgument" and err["Message"] == "Unable to validate the following destination configurations"
    allow_s3(lam, fn, bucket)
    overlapping = [rule(arn, ["s3:ObjectCreated:*"], prefix="a/"), rule(arn, ["s3:ObjectCreated:Put"], prefix="a/b/")]
    code, _, err = error_of(
        s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration={"LambdaFunctionConfigurations": overlapping},
    )
    assert (code, err["Message"]) == (
        "InvalidArgument",
        "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
    )
    code, _, _ = error_of(
        s3.put_bucket_notification_configuration,
        Bucket=bucket,
        NotificationConfiguration={"LambdaFunctionConfigurations": [rule(arn, ["s3:ObjectCreated:Everything"])]},
    )
    assert code == "InvalidArgument"
    assert s3.get_bucket_notification_configuration(Bucket=bucket).get("LambdaFunctionConfigurations") is None
    configure(s3, bucket, rule(arn, ["s3:ObjectCreated:*"]))  # with the permission: accepted
    configure(s3, bucket)  # and an empty configuration turns notifications off
    assert s3.get_bucket_notification_configuration(Bucket=bucket).get("LambdaFunctionConfigurations") is None


OBJECT_WORKER = """import boto3


def handler(event, context):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=event["bucket"], Key="from-function", Body=b"written inside")
    read = s3.get_object(Bucket=event["bucket"], Key="from-function")["Body"].read().decode()
    try:
        s3.create_bucket(Bucket=event["bucket"] + "-new")
        made = "made"
    except Exception as exc:
        made = type(exc).__name__ + ":" + exc.response["Error"]["Code"]
    try:
        s3.put_bucket_notification_configuration(Bucket=event["bucket"], NotificationConfiguration={})
        changed = "changed"
    except Exception as exc:
        changed = exc.response["Error"]["Code"]
    return {"read": read, "create_bucket": made, "configure": changed}
"""


def test_function_credentials_read_and_write_objects_only(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("fncreds")
    s3.create_bucket(Bucket=bucket)
    fn = deploy(lam, OBJECT_WORKER, Timeout=30)
    answer = lam.invoke(FunctionName=fn, Payload=json.dumps({"bucket": bucket}))
    result = json.loads(answer["Payload"].read())
    assert result["read"] == "written inside" and result["configure"] == "AccessDenied"
    assert result["create_bucket"].endswith(":AccessDenied")
    assert s3.get_object(Bucket=bucket, Key="from-function")["Body"].read() == b"written inside"
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket + "-new")


def test_no_accepted_upload_loses_its_event_to_a_kill(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    keys = [f"k{i:03d}" for i in range(300)]
    try:
        lam, s3 = srv.client(), client(srv)
        bucket = "durable"
        s3.create_bucket(Bucket=bucket)
        fn = deploy(lam, RECORDER)
        allow_s3(lam, fn, bucket)
        arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
        configure(s3, bucket, rule(arn, ["s3:ObjectCreated:*"]))

        def upload(key: str) -> str | None:
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
            except Exception:
                return None  # the server died under this request: not accepted
            return key

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(upload, key) for key in keys]
            deadline = time.monotonic() + 60
            while sum(f.done() for f in futures) < 60 and time.monotonic() < deadline:
                time.sleep(0.01)
            srv.stop(signal.SIGKILL)  # mid-load: some answered 200, some committed unanswered, some neither
            accepted = {key for f in futures if (key := f.result()) is not None}
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    assert accepted, "nothing was accepted before the kill"
    again = start_server(tmp_path)
    try:

        def complete() -> bool:
            return {r["s3"]["object"]["key"] for r in records(again, fn)} >= accepted

        deadline = time.monotonic() + 120
        while not complete():
            assert time.monotonic() < deadline, "an accepted upload's event was lost"
            time.sleep(0.5)
        seen = {r["s3"]["object"]["key"] for r in records(again, fn)}
        assert accepted <= seen <= set(keys)
        # Every object the store holds was announced, and nothing it does not hold.
        held = {
            o["Key"]
            for p in client(again).get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in p.get("Contents", [])
        }
        assert accepted <= held
        time.sleep(1.0)
        assert {r["s3"]["object"]["key"] for r in records(again, fn)} == held
    finally:
        assert again.stop() == 0, again.log()


pytestmark = pytest.mark.timeout(300)
