"""On-failure records in a bucket of the built-in object store (no SELFLESS_S3_ENDPOINT): the record is an
object under Lambda's key layout, written through the store so the bucket's own notifications fire for it; a
bucket that does not exist is refused when it is configured, in Lambda's words; a bucket deleted after it was
configured holds the delivery back until it is there again."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from typing import Any

import pytest

from tests.conftest import Server, deploy, unique
from tests.e2e.test_async import FAILING, arn_of, selfless_cli, wait_for
from tests.e2e.test_s3 import client
from tests.e2e.test_s3_notifications import RECORDER, allow_s3, configure, rule, wait_records


def on_failure(lam: Any, name: str, bucket: str, **config: Any) -> dict[str, Any]:
    return dict(
        lam.put_function_event_invoke_config(
            FunctionName=name,
            DestinationConfig={"OnFailure": {"Destination": f"arn:aws:s3:::{bucket}"}},
            **config,
        )
    )


def invoke_event(lam: Any, name: str, payload: bytes) -> str:
    answer = lam.invoke(FunctionName=name, InvocationType="Event", Payload=payload)
    assert answer["StatusCode"] == 202
    return str(answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])


def objects(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_objects_v2(Bucket=bucket).get("Contents") or [])


def test_a_failure_record_is_an_object_in_the_builtin_store(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("failures")
    s3.create_bucket(Bucket=bucket)
    name = deploy(lam, FAILING)
    shown = on_failure(lam, name, bucket, MaximumRetryAttempts=0)
    assert shown["DestinationConfig"]["OnFailure"] == {"Destination": f"arn:aws:s3:::{bucket}"}
    before = time.strftime("%Y/%m/%d", time.gmtime())
    request_id = invoke_event(lam, name, b'{"n": 5}')

    (obj,) = wait_for("the record object", lambda: objects(s3, bucket), timeout=60)
    # aws/lambda/async/<function>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID> (the day: UTC, when written)
    day = next(d for d in (before, time.strftime("%Y/%m/%d", time.gmtime())) if d in obj["Key"])
    prefix = f"aws/lambda/async/{name}/{day}/"
    leaf = obj["Key"].removeprefix(prefix)
    assert obj["Key"].startswith(prefix) and leaf.startswith(day.replace("/", "-") + "T"), obj["Key"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", leaf), leaf
    got = s3.get_object(Bucket=bucket, Key=obj["Key"])
    assert got["ContentType"] == "application/json"
    record = json.loads(got["Body"].read())
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{arn_of(lam, name)}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"n": 5}
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorMessage"] == "no good: 5"
    assert record["responsePayload"]["errorType"] == "ValueError"


def test_a_bucket_that_does_not_exist_is_refused_as_lambda_refuses_it(server: Server, lam: Any) -> None:
    name = deploy(lam, FAILING)
    missing = unique("missing")
    arn = f"arn:aws:s3:::{missing}"
    message = f"The function's execution role does not have permissions to call PutObject on {arn}"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {"Destination": arn}})
    assert caught.value.response["Error"]["Message"] == message
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)  # nothing was kept
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.update_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnFailure": {"Destination": arn}}
        )
    assert caught.value.response["Error"]["Message"] == message
    kept = lam.get_function_event_invoke_config(FunctionName=name)
    assert kept["MaximumRetryAttempts"] == 1 and kept["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    # Buckets remain on-failure only, and never dead-letter targets, whether they exist or not.
    s3 = client(server)
    bucket = unique("present")
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": f"arn:aws:s3:::{bucket}"}}
        )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": f"arn:aws:s3:::{bucket}"})


def test_the_buckets_own_notification_fires_for_the_record(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("notified-failures")
    s3.create_bucket(Bucket=bucket)
    recorder = deploy(lam, RECORDER)
    allow_s3(lam, recorder, bucket)
    configure(s3, bucket, rule(arn_of(lam, recorder), ["s3:ObjectCreated:*"], prefix="aws/lambda/async/"))
    name = deploy(lam, FAILING)
    on_failure(lam, name, bucket, MaximumRetryAttempts=0)
    invoke_event(lam, name, b'{"n": 8}')

    (notice,) = wait_records(server, recorder, 1)
    (obj,) = objects(s3, bucket)
    assert notice["eventName"] == "ObjectCreated:Put"
    assert notice["s3"]["bucket"]["name"] == bucket
    assert urllib.parse.unquote_plus(notice["s3"]["object"]["key"]) == obj["Key"]
    assert notice["s3"]["object"]["size"] == obj["Size"]
    assert notice["s3"]["object"]["eTag"] == obj["ETag"].strip('"')
    # Written by Lambda itself, as S3 names a service's own writes.
    assert notice["userIdentity"] == {"principalId": "lambda.amazonaws.com"}
    assert notice["requestParameters"] == {"sourceIPAddress": "lambda.amazonaws.com"}


def test_a_deleted_bucket_holds_the_record_until_it_is_back(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = unique("comes-back")
    s3.create_bucket(Bucket=bucket)
    name = deploy(lam, FAILING)
    on_failure(lam, name, bucket, MaximumRetryAttempts=0)
    s3.delete_bucket(Bucket=bucket)
    request_id = invoke_event(lam, name, b'{"n": 2}')
    target = f"arn:aws:s3:::{bucket}"

    def failed_attempt() -> str | None:
        rows = selfless_cli(server, "events", name).stdout.splitlines()
        found = [row for row in rows if f"deliver to {target}" in row and "NoSuchBucket" in row]
        return found[0] if found else None

    wait_for("a delivery attempt that found no bucket", failed_attempt, timeout=60)
    s3.create_bucket(Bucket=bucket)
    (obj,) = wait_for("the record object", lambda: objects(s3, bucket), timeout=60)
    record = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    assert record["requestContext"]["requestId"] == request_id
    # Delivered: no delivery is left for the function.
    rows = selfless_cli(server, "events", name).stdout.splitlines()
    assert [row for row in rows if "deliver to" in row] == []
