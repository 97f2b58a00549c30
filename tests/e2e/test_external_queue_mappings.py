"""Event source mappings on an SQS-compatible endpoint elsewhere (SELFLESS_SQS_ENDPOINT): here a second selfless
server, a complete SQS-compatible service, stands for AWS SQS. Its messages invoke the consuming server's
function in batches and are deleted there; a failing message reaches that endpoint's dead-letter queue by its
redrive policy; a queue it does not have is refused in AWS's words; and an S3 event, as AWS S3 puts it in a
queue, reaches the function inside the record's body (how bucket notifications usually reach consumers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfless.services.s3 import notify
from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, deploy, start_server
from tests.e2e.test_async import wait_for
from tests.e2e.test_event_source_mappings import RECORDER, batches, counts, send, wait_state


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    for name in ("provider", "consumer"):
        (tmp_path / name).mkdir()
    provider = start_server(tmp_path / "provider")
    try:
        consumer = start_server(
            tmp_path / "consumer",
            {
                "SELFLESS_SQS_ENDPOINT": provider.endpoint,
                # The consumer reaches the other endpoint with the standard credential chain.
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            },
        )
        try:
            yield provider, consumer
        finally:
            assert consumer.stop() == 0, consumer.log()
    finally:
        assert provider.stop() == 0, provider.log()


def s3_event_body(bucket: str, key: str) -> str:
    record = notify.event_record(
        event_name="s3:ObjectCreated:Put",
        bucket=bucket,
        key=key,
        config_id="to-queue",
        region="us-east-1",
        owner_id="000000000000",
        principal_id="AWS:AIDAEXAMPLE",
        source_ip="203.0.113.9",
        request_id="REQ",
        host_id="HOST",
        sequencer="0055AED6DCD90281E5",
        size=1024,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        at=1_700_000_000.0,
    )
    return json.dumps({"Records": [record]})


def test_a_queue_elsewhere_drives_the_function(servers: tuple[Server, Server]) -> None:
    provider, consumer = servers
    sqs, lam = provider.client("sqs"), consumer.client("lambda")
    dlq_url = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "2", "RedrivePolicy": redrive})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    fn = deploy(lam, RECORDER)
    refused = arn.replace(":work", ":not-there")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.create_event_source_mapping(EventSourceArn=refused, FunctionName=fn)
    assert "AWS.SimpleQueueService.NonExistentQueue" in str(caught.value)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=fn, BatchSize=10)
    wait_state(lam, mapping["UUID"], "Enabled")

    upload = s3_event_body("photos", "in/cat.jpg")
    bodies = [f"m{i}" for i in range(12)] + [upload]
    send(sqs, url, bodies)

    def handled() -> list[dict[str, Any]] | None:
        seen = batches(consumer, fn)
        got = {b for batch in seen for b in batch["bodies"]}
        return seen if set(bodies) <= got else None

    seen = wait_for("every message handled", handled, timeout=90)
    first = seen[0]["first"]
    assert first["eventSource"] == "aws:sqs" and first["eventSourceARN"] == arn and first["awsRegion"] == "us-east-1"
    uploaded = next(json.loads(b) for batch in seen for b in batch["bodies"] if b == upload)
    (record,) = uploaded["Records"]
    assert record["eventName"] == "ObjectCreated:Put" and record["s3"]["object"]["key"] == "in/cat.jpg"
    wait_for("the handled messages deleted there", lambda: counts(sqs, url) == (0, 0), timeout=60)

    # A message whose batch fails comes back after the visibility timeout; past maxReceiveCount 2 the other
    # endpoint moves it to its dead-letter queue.
    send(sqs, url, ["poison"])

    def dead() -> list[dict[str, Any]] | None:
        found = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages")
        return found or None

    assert [m["Body"] for m in wait_for("the poison message in the DLQ", dead, timeout=90)] == ["poison"]
    poisoned = [c for batch in batches(consumer, fn) if batch["bodies"] == ["poison"] for c in batch["counts"]]
    assert poisoned == ["1", "2"]
    wait_for("the queue emptied", lambda: counts(sqs, url) == (0, 0), timeout=60)
