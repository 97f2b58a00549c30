"""Invocation records and dead-letter messages delivered to real SQS, SNS, EventBridge and S3 endpoints
(moto's server on a local port), in AWS's formats; a delivery whose queue does not exist yet waits, survives
a restart and arrives once the queue is there."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_async import ECHO, FAILING, arn_of, selfless_cli, wait_for

MOTO_ACCOUNT = "123456789012"  # the account moto's resources belong to
KEYS = {"aws_access_key_id": "AKIAMOTOTESTING00003", "aws_secret_access_key": "moto-testing-secret"}


@dataclasses.dataclass
class Services:
    endpoint: str
    sqs: Any
    sns: Any
    events: Any
    s3: Any

    def queue(self, name: str | None = None) -> tuple[str, str]:
        """A new queue: (its URL, its ARN)."""
        url = self.sqs.create_queue(QueueName=name or unique("q"))["QueueUrl"]
        return url, self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def messages(self, url: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} messages arrived"
            answer = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
            )
            for message in answer.get("Messages", []):
                got.append(message)
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return got


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        make = lambda service: boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **KEYS)  # noqa: E731
        yield Services(endpoint, make("sqs"), make("sns"), make("events"), make("s3"))
    finally:
        moto.stop()


def server_env(services: Services) -> dict[str, str]:
    env = {f"SELFLESS_{s}_ENDPOINT": services.endpoint for s in ("SQS", "SNS", "EVENTS", "S3")}
    env.update({"AWS_ACCESS_KEY_ID": KEYS["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": KEYS["aws_secret_access_key"]})
    env["SELFLESS_ASYNC_RETRY_DELAY"] = "0.2"
    return env


@pytest.fixture(scope="module")
def server(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(Path(tmp_path_factory.mktemp("destinations")), server_env(services))
    yield srv
    assert srv.stop() == 0, srv.log()


def event_id(answer: dict[str, Any]) -> str:
    assert answer["StatusCode"] == 202
    return str(answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])


def test_a_success_record_in_a_queue(server: Server, services: Services) -> None:
    lam = server.client()
    name = deploy(lam, ECHO)
    url, queue = services.queue()
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": queue}})
    request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"k": "v"}'))
    (message,) = services.messages(url)
    record = json.loads(message["Body"])
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{arn_of(lam, name)}:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"k": "v"}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"echo": {"k": "v"}}
    assert "MessageAttributes" not in message, "a record carries no dead-letter attributes"


def test_a_failure_record_through_a_topic(server: Server, services: Services) -> None:
    lam = server.client()
    name = deploy(lam, FAILING)
    url, queue = services.queue()
    topic = services.sns.create_topic(Name=unique("t"))["TopicArn"]
    services.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue, Attributes={"RawMessageDelivery": "true"})
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": topic}}
    )
    request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 3}'))
    (message,) = services.messages(url)
    record = json.loads(message["Body"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "no good: 3"


def test_a_record_on_an_event_bus(server: Server, services: Services) -> None:
    lam = server.client()
    name = deploy(lam, ECHO)
    url, queue = services.queue()
    bus_name = unique("bus")
    bus = services.events.create_event_bus(Name=bus_name)["EventBusArn"]
    services.events.put_rule(Name="records", EventBusName=bus_name, EventPattern=json.dumps({"source": ["lambda"]}))
    services.events.put_targets(Rule="records", EventBusName=bus_name, Targets=[{"Id": "q", "Arn": queue}])
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": bus}})
    request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"[1, 2]"))
    (message,) = services.messages(url)
    event = json.loads(message["Body"])
    assert event["source"] == "lambda"
    assert event["detail-type"] == "Lambda Function Invocation Result - Success"
    assert event["resources"] == [f"{arn_of(lam, name)}:$LATEST"]
    assert event["detail"]["requestContext"]["requestId"] == request_id
    assert event["detail"]["responsePayload"] == {"echo": [1, 2]}


def test_a_failure_record_in_a_bucket_and_buckets_are_for_failures_only(server: Server, services: Services) -> None:
    lam = server.client()
    name = deploy(lam, FAILING)
    bucket = unique("bucket").lower()
    services.s3.create_bucket(Bucket=bucket)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": f"arn:aws:s3:::{bucket}"}}
        )
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"arn:aws:s3:::{bucket}"}},
    )
    request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 9}'))
    listed = wait_for(
        "the record object", lambda: services.s3.list_objects_v2(Bucket=bucket).get("Contents"), timeout=30
    )
    (obj,) = listed
    assert obj["Key"].startswith(f"aws/lambda/async/{name}/{time.strftime('%Y/%m/%d', time.gmtime())}/")
    record = json.loads(services.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"


def test_dead_letter_queue(server: Server, services: Services) -> None:
    """The event's payload unchanged, with AWS's RequestID / ErrorCode / ErrorMessage attributes; both the
    dead-letter queue and an on-failure destination get theirs."""
    lam = server.client()
    dlq_url, dlq = services.queue()
    failures_url, failures = services.queue()
    name = deploy(lam, FAILING, runtime="python3.12", DeadLetterConfig={"TargetArn": dlq})
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": dlq}
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": failures}}
    )
    payload = b'{"n": 7,   "spacing": "kept as sent"}'
    request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=payload))
    (message,) = services.messages(dlq_url)
    assert message["Body"] == payload.decode()
    assert message["MessageAttributes"] == {
        "RequestID": {"StringValue": request_id, "DataType": "String"},
        "ErrorCode": {"StringValue": "200", "DataType": "Number"},
        "ErrorMessage": {"StringValue": "no good: 7", "DataType": "String"},
    }
    (record,) = services.messages(failures_url)
    assert json.loads(record["Body"])["requestContext"]["requestId"] == request_id


def test_a_delivery_waits_for_its_queue_across_a_restart(services: Services, tmp_path: Path) -> None:
    """The dead-letter queue does not exist yet: the message is kept, listed with its attempts, survives a
    restart, and arrives once the queue is there."""
    queue_name = f"later-{uuid.uuid4().hex[:8]}"
    dlq = f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{queue_name}"
    server = start_server(tmp_path, server_env(services))
    try:
        lam = server.client()
        name = deploy(lam, FAILING, runtime="python3.12", DeadLetterConfig={"TargetArn": dlq})
        lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
        request_id = event_id(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"n": 1}'))

        def delivery_tried() -> str | None:
            listed = selfless_cli(server, "events", name).stdout
            rows = [line for line in listed.splitlines() if f"deliver to {dlq}" in line and "Queue" in line]
            return rows[0] if rows else None

        row = wait_for("a failed delivery attempt", delivery_tried)
        assert "queued" in row or "retrying" in row
        assert server.stop() == 0, server.log()
        url, _ = services.queue(queue_name)
        server = start_server(tmp_path, server_env(services))
        (message,) = services.messages(url, timeout=40)
        assert message["Body"] == '{"n": 1}'
        assert message["MessageAttributes"]["RequestID"]["StringValue"] == request_id
        # Delivered: only the failed event itself is left for the function.
        rows = [line for line in selfless_cli(server, "events", name).stdout.splitlines() if "deliver to" in line]
        assert rows == []
    finally:
        assert server.stop() == 0, server.log()
