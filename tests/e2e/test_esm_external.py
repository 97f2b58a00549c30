"""Event source mappings on an SQS-compatible endpoint elsewhere, end to end: a second selfless server (the
consumer) runs with SELFLESS_SQS_ENDPOINT at the session's server (the queue host, a full SQS-compatible
server) and the host's credentials in its AWS_* environment, so its mappings' queue ARNs name the host's
queues. Batches reach the consumer's function and are deleted on the host; a failing message reaches the host's
dead-letter queue by its redrive policy; a missing queue and refused credentials are refused at creation in
AWS's words; a deleted queue shows in LastProcessingResult; a disabled mapping leaves messages on the host; and
S3 events that the host's bucket sends to its queue reach the function as the records' bodies."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, deploy, start_server, unique
from tests.e2e.test_async import wait_for
from tests.e2e.test_builtin_queue_targets import make_queue, queue_policy
from tests.e2e.test_event_source_mappings import RECORDER, batches, counts, error, send, wait_state
from tests.e2e.test_s3 import client

NO_QUEUE = (
    "InvalidParameterValueException",
    "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
    "SQS Error Message: The specified queue does not exist or you do not have access to it.",
)


def consumer_of(host: Server, tmp: Path, secret: str = SECRET_KEY) -> Server:
    return start_server(
        tmp,
        {
            "SELFLESS_SQS_ENDPOINT": host.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,  # the credentials the consumer calls the host with
            "AWS_SECRET_ACCESS_KEY": secret,
        },
    )


@pytest.fixture(scope="module")
def consumer(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = consumer_of(server, tmp_path_factory.mktemp("consumer"))
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def recorder(consumer: Server) -> Iterator[str]:
    lam = consumer.client()
    name = deploy(lam, RECORDER)
    yield name
    for mapping in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    lam.delete_function(FunctionName=name)


def test_messages_elsewhere_invoke_the_function_in_batches_and_are_deleted_there(
    server: Server, consumer: Server, recorder: str
) -> None:
    sqs, lam = server.client("sqs"), consumer.client()
    url, arn = make_queue(sqs)
    sent = send(sqs, url, [f"x{i}" for i in range(35)])
    sqs.send_message(
        QueueUrl=url, MessageBody="with attributes",
        MessageAttributes={"color": {"DataType": "String", "StringValue": "blue"}},
    )  # fmt: skip
    # The consumer's own built-in queues do not have it: the ARN names the endpoint's queue.
    own = consumer.client("sqs")
    with pytest.raises(own.exceptions.QueueDoesNotExist):
        own.get_queue_url(QueueName=arn.rsplit(":", 1)[1])

    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder, BatchSize=10)
    assert mapping["EventSourceArn"] == arn and mapping["State"] == "Creating"

    def all_seen() -> bool:
        return len({i for b in batches(consumer, recorder) for i in b["ids"]}) == len(sent) + 1

    wait_for("every message handled", all_seen, timeout=90)
    wait_for("the queue elsewhere emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)
    found = batches(consumer, recorder)
    assert all(1 <= len(b["ids"]) <= 10 for b in found) and len(found) >= 4
    assert set(sent) <= {i for b in found for i in b["ids"]}
    record = found[0]["first"]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["awsRegion"] == arn.split(":")[3]
    assert set(record["attributes"]) >= {"ApproximateReceiveCount", "SentTimestamp", "SenderId"}
    with_attributes = [b["first"] for b in found if b["first"]["body"] == "with attributes"]
    if with_attributes:  # it led its batch
        assert with_attributes[0]["messageAttributes"]["color"]["stringValue"] == "blue"
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK"


def test_a_failing_message_reaches_the_dead_letter_queue_elsewhere(
    server: Server, consumer: Server, recorder: str
) -> None:
    sqs, lam = server.client("sqs"), consumer.client()
    dlq_url, dlq_arn = make_queue(sqs)
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url, arn = make_queue(sqs, VisibilityTimeout="1", RedrivePolicy=policy)
    mapping = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=recorder, BatchSize=1, FunctionResponseTypes=["ReportBatchItemFailures"]
    )
    wait_state(lam, mapping["UUID"], "Enabled")
    ok, flaky, poison = send(sqs, url, ["ok", "flaky", "poison"])

    def in_dlq() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages", [])
        return got

    moved = wait_for("the poison message in the dead-letter queue elsewhere", in_dlq, timeout=60)
    assert [m["MessageId"] for m in moved] == [poison] and moved[0]["Body"] == "poison"
    found = batches(consumer, recorder)
    assert [b["counts"] for b in found if b["ids"] == [poison]] == [["1"], ["2"]]
    seen = [i for b in found for i in b["ids"]]
    assert seen.count(ok) == 1  # deleted after its batch
    assert [b["counts"] for b in found if b["ids"] == [flaky]] == [["1"], ["2"]]  # reported failed once
    wait_for("the queue elsewhere emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)
    assert counts(sqs, dlq_url) == (0, 1)  # the poison message alone (received above: in flight)
    found_mapping = lam.get_event_source_mapping(UUID=mapping["UUID"])
    assert found_mapping["LastProcessingResult"] in ("PROBLEM: Function call failed", "OK")


def test_refusals_and_a_queue_gone(server: Server, consumer: Server, recorder: str, tmp_path: Path) -> None:
    sqs, lam = server.client("sqs"), consumer.client()
    _url, arn = make_queue(sqs)
    assert error(lam.create_event_source_mapping, EventSourceArn=arn + "-missing", FunctionName=recorder) == NO_QUEUE
    # A queue of the consumer's own built-in service is not one of the endpoint's.
    own_arn = make_queue(consumer.client("sqs"))[1]
    assert error(lam.create_event_source_mapping, EventSourceArn=own_arn, FunctionName=recorder) == NO_QUEUE
    _fifo_url, fifo = make_queue(sqs, FifoQueue="true")
    assert error(
        lam.create_event_source_mapping, EventSourceArn=fifo, FunctionName=recorder, MaximumBatchingWindowInSeconds=5
    ) == ("InvalidParameterValueException", "Batching window is not supported for FIFO queues")

    # The queue deleted on the host while mapped: the mapping says so.
    gone_url, gone_arn = make_queue(sqs)
    mapping = lam.create_event_source_mapping(EventSourceArn=gone_arn, FunctionName=recorder)
    wait_state(lam, mapping["UUID"], "Enabled")
    sqs.delete_queue(QueueUrl=gone_url)

    def reported() -> bool:
        result = lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"]
        return bool(
            result
            == "PROBLEM: Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue"
        )

    wait_for("the missing queue reported", reported, timeout=60)

    # Credentials the endpoint refuses: refused at creation with SQS's code and message.
    refused = consumer_of(server, tmp_path, secret="not-the-secret")
    try:
        other = refused.client()
        fn = deploy(other, RECORDER)
        code, message = error(other.create_event_source_mapping, EventSourceArn=arn, FunctionName=fn)
        assert code == "InvalidParameterValueException"
        assert message.startswith("Error occurred while ReceiveMessage. SQS Error Code: SignatureDoesNotMatch. ")
    finally:
        assert refused.stop() == 0, refused.log()


def test_a_disabled_mapping_leaves_messages_elsewhere(server: Server, consumer: Server, recorder: str) -> None:
    sqs, lam = server.client("sqs"), consumer.client()
    # A long visibility timeout: a message taken by a long poll that was not given back would stay hidden.
    url, arn = make_queue(sqs, VisibilityTimeout="300")
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder)
    wait_state(lam, mapping["UUID"], "Enabled")
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_state(lam, mapping["UUID"], "Disabled")
    (held,) = send(sqs, url, ["held"])
    # The stopped poller's long poll may still take it; it gives it back at once.
    wait_for("the message visible on the host", lambda: counts(sqs, url) == (1, 0), timeout=30)
    time.sleep(1)
    assert counts(sqs, url) == (1, 0) and batches(consumer, recorder) == []
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    found = wait_for("the held message handled", lambda: batches(consumer, recorder), timeout=60)
    assert found[0]["ids"] == [held]
    wait_for("the queue elsewhere emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)


def test_s3_events_through_a_queue_elsewhere_reach_the_function(
    server: Server, consumer: Server, recorder: str
) -> None:
    """The path AWS S3 notifications usually take: the bucket sends S3's event to a queue (here the host's
    store and queue, as S3 and SQS would), and the mapping hands it to the function as a record's body."""
    s3, sqs, lam = client(server), server.client("sqs"), consumer.client()
    bucket = unique("uploads")
    s3.create_bucket(Bucket=bucket)
    url, arn = make_queue(sqs)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": queue_policy(arn, bucket)})
    config = {"QueueConfigurations": [{"Id": "to-lambda", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder)
    wait_state(lam, mapping["UUID"], "Enabled")
    etag = s3.put_object(Bucket=bucket, Key="photos/red flower.jpg", Body=b"jpeg")["ETag"]

    def s3_records() -> list[dict[str, Any]]:
        bodies = [json.loads(body) for b in batches(consumer, recorder) for body in b["bodies"]]
        return [r for body in bodies for r in body.get("Records", [])]

    (record,) = wait_for("the S3 event handled", s3_records, timeout=60)
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket and record["s3"]["configurationId"] == "to-lambda"
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "photos/red flower.jpg"
    assert record["s3"]["object"]["eTag"] == etag.strip('"') and record["s3"]["object"]["size"] == 4
    wait_for("the queue elsewhere emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)
