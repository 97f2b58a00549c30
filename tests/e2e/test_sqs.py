"""The built-in queue service through the unchanged boto3 ``sqs`` client (AWS JSON 1.0) and the aws CLI: every
operation, its main errors as SQS words them, long polling, visibility, FIFO order and deduplication, redrive to
a dead-letter queue, and durability across kill -9."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from selfless.services.sqs.service import attributes_md5
from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, start_server, unique


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


@pytest.fixture
def queue(sqs: Any) -> Iterator[str]:
    url = sqs.create_queue(QueueName=unique("q"))["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def error_of(call: Any, **params: Any) -> tuple[str, int, dict[str, Any]]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]


# -- queues --------------------------------------------------------------------------------------------------


def test_queue_lifecycle_urls_and_missing_queues(server: Server, sqs: Any) -> None:
    name = unique("life")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert url == f"http://127.0.0.1:{server.port}/000000000000/{name}"
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url  # idempotent with the same attributes
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as caught:
        sqs.get_queue_url(QueueName=name)
    err = caught.value.response
    assert err["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert err["Error"]["Message"] == "The specified queue does not exist."
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=name)


def test_create_queue_validates_attributes_and_refuses_a_different_twin(sqs: Any) -> None:
    name = unique("attrs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    with pytest.raises(sqs.exceptions.QueueNameExists) as caught:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "41"})
    assert caught.value.response["Error"]["Code"] == "QueueAlreadyExists"
    code, status, err = error_of(sqs.create_queue, QueueName=unique("bad"), Attributes={"VisibilityTimeout": "43201"})
    assert (code, status) == ("InvalidAttributeValue", 400)
    assert err["Message"] == "Invalid value for the parameter VisibilityTimeout."
    code, _, err = error_of(sqs.create_queue, QueueName=unique("bad"), Attributes={"Colour": "red"})
    assert (code, err["Message"]) == ("InvalidAttributeName", "Unknown Attribute Colour.")
    code, _, _ = error_of(sqs.create_queue, QueueName="has space")
    assert code == "InvalidParameterValue"
    code, _, _ = error_of(sqs.create_queue, QueueName=unique("f"), Attributes={"FifoQueue": "true"})
    assert code == "InvalidParameterValue"  # a FIFO queue's name ends with .fifo
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "40"
    assert attrs["DelaySeconds"] == "0"
    assert attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "0"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert abs(int(attrs["CreatedTimestamp"]) - time.time()) < 60
    assert "FifoQueue" not in attrs
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "5", "MessageRetentionPeriod": "60"})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds", "MessageRetentionPeriod"])
    assert attrs["Attributes"] == {"DelaySeconds": "5", "MessageRetentionPeriod": "60"}
    code, _, _ = error_of(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["Nope"])
    assert code == "InvalidAttributeName"
    sqs.delete_queue(QueueUrl=url)


def test_list_queues_pages(sqs: Any) -> None:
    prefix = unique("page")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5)]
    seen: list[str] = []
    token = None
    while True:
        page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, **({"NextToken": token} if token else {}))
        seen += page["QueueUrls"]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == sorted(urls)
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


def test_tags(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique("tags"), tags={"team": "a"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"env": "dev"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a", "env": "dev"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "dev"}
    sqs.delete_queue(QueueUrl=url)


# -- messages ------------------------------------------------------------------------------------------------


def test_send_receive_delete_with_attributes_and_checksums(sqs: Any, queue: str) -> None:
    attributes = {
        "colour": {"DataType": "String", "StringValue": "blue"},
        "count": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        "other.x": {"DataType": "String.custom", "StringValue": "y"},
    }
    sent = sqs.send_message(QueueUrl=queue, MessageBody="héllo", MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == hashlib.md5("héllo".encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == attributes_md5(attributes)
    # A known vector: SQS's documented digest of one String attribute is computed over length-prefixed fields.
    known = hashlib.md5(b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x06String" + b"\x01" + b"\x00\x00\x00\x01b").hexdigest()
    assert attributes_md5({"a": {"DataType": "String", "StringValue": "b"}}) == known
    got = sqs.receive_message(
        QueueUrl=queue, MessageAttributeNames=["colour", "other.*"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert len(got) == 1
    m = got[0]
    assert (m["MessageId"], m["Body"], m["MD5OfBody"]) == (sent["MessageId"], "héllo", sent["MD5OfMessageBody"])
    assert set(m["MessageAttributes"]) == {"colour", "other.x"}
    assert m["MD5OfMessageAttributes"] == attributes_md5({k: attributes[k] for k in ("colour", "other.x")})
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    assert m["Attributes"]["SenderId"] == ACCESS_KEY
    assert abs(int(m["Attributes"]["SentTimestamp"]) / 1000 - time.time()) < 60
    assert "ApproximateFirstReceiveTimestamp" in m["Attributes"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    all_attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert all_attrs["ApproximateNumberOfMessages"] == all_attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="forged")


def test_a_handle_of_the_earlier_format_is_refused_cleanly(sqs: Any, queue: str) -> None:
    """Handles once named the message by its id (queue, message id, token); handles now carry its seq. One of
    the old shape, even with the message's real id and token, is ReceiptHandleIsInvalid and changes nothing."""
    sqs.send_message(QueueUrl=queue, MessageBody="kept")
    (m,) = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1)["Messages"]
    name, seq, token = base64.urlsafe_b64decode(m["ReceiptHandle"]).decode().split("\n")
    assert seq.isdigit()
    old = base64.urlsafe_b64encode(f"{name}\n{m['MessageId']}\n{token}".encode()).decode()
    for bad in (old, base64.urlsafe_b64encode(f"{name}\n-1\n{token}".encode()).decode()):
        with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=bad)
        with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
            sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=bad, VisibilityTimeout=0)
        deleted = sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": "a", "ReceiptHandle": bad}])
        assert [f["Code"] for f in deleted["Failed"]] == ["ReceiptHandleIsInvalid"]
    deadline = time.monotonic() + 30
    while "Messages" not in (again := sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)):
        assert time.monotonic() < deadline
    assert [x["Body"] for x in again["Messages"]] == ["kept"]  # not deleted by the old handle
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=again["Messages"][0]["ReceiptHandle"])


def test_message_limits_and_bad_parameters(sqs: Any, queue: str) -> None:
    code, _, err = error_of(sqs.send_message, QueueUrl=queue, MessageBody="x" * (1_048_576 + 1))
    assert code == "InvalidParameterValue" and "shorter than 1048576 bytes" in err["Message"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"MaximumMessageSize": "262144"})
    sqs.send_message(QueueUrl=queue, MessageBody="x" * 262_144)
    code, _, _ = error_of(sqs.send_message, QueueUrl=queue, MessageBody="x" * 262_145)
    assert code == "InvalidParameterValue"
    code, _, _ = error_of(sqs.send_message, QueueUrl=queue, MessageBody="bad \x01 char")
    assert code == "InvalidMessageContents"
    code, _, _ = error_of(sqs.receive_message, QueueUrl=queue, MaxNumberOfMessages=11)
    assert code == "InvalidParameterValue"
    code, _, _ = error_of(sqs.receive_message, QueueUrl=queue, WaitTimeSeconds=21)
    assert code == "InvalidParameterValue"
    code, _, _ = error_of(sqs.send_message, QueueUrl=queue, MessageBody="x", DelaySeconds=901)
    assert code == "InvalidParameterValue"


def test_batches(sqs: Any, queue: str) -> None:
    result = sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "a", "MessageBody": "one"},
            {"Id": "b", "MessageBody": "two"},
            {"Id": "c", "MessageBody": "\x01"},
        ],
    )
    assert sorted(s["Id"] for s in result["Successful"]) == ["a", "b"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in result["Failed"]] == [("c", "InvalidMessageContents", True)]
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(
            QueueUrl=queue, Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}]
        )
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": f"i{i}", "MessageBody": "x"} for i in range(11)])
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.send_message_batch(QueueUrl=queue, Entries=[])
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "two"]
    changed = sqs.change_message_visibility_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "x", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0},
            {"Id": "y", "ReceiptHandle": "bogus", "VisibilityTimeout": 0},
        ],
    )
    assert [s["Id"] for s in changed["Successful"]] == ["x"]
    assert changed["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == [got[0]["Body"]]
    deleted = sqs.delete_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "p", "ReceiptHandle": again[0]["ReceiptHandle"]},
            {"Id": "q", "ReceiptHandle": got[1]["ReceiptHandle"]},
        ],
    )
    assert sorted(s["Id"] for s in deleted["Successful"]) == ["p", "q"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_visibility_timeout_hides_and_shows_again(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="v")
    first = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=2)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    time.sleep(2.2)
    second = sqs.receive_message(QueueUrl=queue, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert second["MessageId"] == first["MessageId"] and second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"])  # a stale handle deletes nothing
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=queue)["Messages"][0]
    assert third["MessageId"] == first["MessageId"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=third["ReceiptHandle"], VisibilityTimeout=0)
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=third["ReceiptHandle"], VisibilityTimeout=5)


def test_delay_seconds(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=1)
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    assert got[0]["Body"] == "later"


def test_long_poll_returns_on_send_and_after_its_wait(sqs: Any, queue: str) -> None:
    start = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)
    assert 1.9 <= time.monotonic() - start < 6
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(sqs.receive_message, QueueUrl=queue, WaitTimeSeconds=20)
        time.sleep(0.5)
        sent_at = time.monotonic()
        sqs.send_message(QueueUrl=queue, MessageBody="wake")
        got = waiting.result(timeout=30)
        assert got["Messages"][0]["Body"] == "wake"
        assert time.monotonic() - sent_at < 0.9  # woken by the send, not by the once-a-second re-check


def test_purge(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="gone")
    sqs.purge_queue(QueueUrl=queue)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=queue)


# -- FIFO ----------------------------------------------------------------------------------------------------


def test_fifo_order_per_group_and_an_in_flight_message_blocks_its_group(sqs: Any) -> None:
    url = sqs.create_queue(QueueName=unique("order") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    seqs = []
    for i in range(3):
        for group in ("a", "b"):
            sent = sqs.send_message(
                QueueUrl=url, MessageBody=f"{group}{i}", MessageGroupId=group, MessageDeduplicationId=f"{group}{i}"
            )
            seqs.append(int(sent["SequenceNumber"]))
    assert seqs == sorted(seqs)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"])["Messages"]
    assert first[0]["Body"] == "a0" and first[0]["Attributes"]["MessageGroupId"] == "a"
    # Group a is blocked while a0 is in flight: only b's messages, in order.
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in rest] == ["b0", "b1", "b2"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    after = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in after] == ["a1", "a2"]
    code, _, _ = error_of(sqs.send_message, QueueUrl=url, MessageBody="x")
    assert code == "MissingParameter"
    code, _, _ = error_of(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code == "InvalidParameterValue"  # no deduplication id and no content-based deduplication
    sqs.delete_queue(QueueUrl=url)


def test_fifo_deduplication_window(sqs: Any) -> None:
    url = sqs.create_queue(
        QueueName=unique("dedup") + ".fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    one = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert one["MessageId"] == two["MessageId"] and one["SequenceNumber"] == two["SequenceNumber"]
    explicit = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g", MessageDeduplicationId="other")
    assert explicit["MessageId"] != one["MessageId"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["MessageDeduplicationId"])
    assert len(got["Messages"]) == 2
    assert got["Messages"][0]["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(b"same").hexdigest()
    for m in got["Messages"]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Deleted, but still within the window: a resend is still a duplicate.
    three = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert three["MessageId"] == one["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true" and attrs["ContentBasedDeduplication"] == "true"
    sqs.delete_queue(QueueUrl=url)


# -- dead-letter queues --------------------------------------------------------------------------------------


def test_redrive_to_a_dead_letter_queue_after_max_receive_count(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    src = sqs.create_queue(QueueName=unique("src"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    stored = json.loads(
        sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    assert stored == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    sent = sqs.send_message(QueueUrl=src, MessageBody="poison")
    for _ in range(2):
        got = sqs.receive_message(QueueUrl=src, VisibilityTimeout=0)["Messages"]
        assert got[0]["MessageId"] == sent["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=src)  # a third receive moves it instead
    moved = sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["All"])["Messages"][0]
    assert moved["MessageId"] == sent["MessageId"] and moved["Body"] == "poison"
    assert moved["Attributes"]["DeadLetterQueueSourceArn"].endswith(src.rsplit("/", 1)[1])
    code, _, err = error_of(
        sqs.create_queue,
        QueueName=unique("src"),
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn + "-nope", "maxReceiveCount": 2})},
    )
    assert code == "InvalidParameterValue" and "Dead letter target does not exist" in err["Message"]
    sqs.set_queue_attributes(
        QueueUrl=dlq, Attributes={"RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})}
    )
    code, _, _ = error_of(sqs.create_queue, QueueName=unique("src"), Attributes={"RedrivePolicy": policy})
    assert code == "InvalidParameterValue"
    sqs.delete_queue(QueueUrl=src)
    sqs.delete_queue(QueueUrl=dlq)


# -- who may -------------------------------------------------------------------------------------------------


def test_signature_failures_answer_in_sqs_shape(server: Server) -> None:
    import boto3
    from botocore.config import Config

    bad = boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="wrong",
        config=Config(retries={"max_attempts": 1}),
    )
    server.clients.append(bad)
    code, status, _ = error_of(bad.list_queues)
    assert (code, status) == ("SignatureDoesNotMatch", 403)


# -- durability ----------------------------------------------------------------------------------------------


def test_kill_9_keeps_every_sent_message_and_the_received_one_stays_hidden(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        sqs = srv.client("sqs")
        url = sqs.create_queue(QueueName="durable")["QueueUrl"]
        ids = {sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")["MessageId"] for i in range(20)}
        # Hidden long enough that a restart on a loaded machine still checks it while it is hidden.
        taken = sqs.receive_message(QueueUrl=url, VisibilityTimeout=15)["Messages"][0]
        received_at = time.monotonic()
        srv.stop(signal.SIGKILL)
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    again = start_server(tmp_path)
    try:
        sqs = again.client("sqs")
        url = sqs.get_queue_url(QueueName="durable")["QueueUrl"]
        seen: dict[str, str] = {}
        while len(seen) < 19:
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                seen[m["MessageId"]] = m["ReceiptHandle"]
        assert time.monotonic() - received_at < 15, "the test was too slow to check the hidden message"
        assert set(seen) == ids - {taken["MessageId"]}
        assert "Messages" not in sqs.receive_message(QueueUrl=url)  # still in its visibility window
        back = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"][0]
        assert back["MessageId"] == taken["MessageId"]
        assert time.monotonic() - received_at >= 14.5
        assert again.stop() == 0
    finally:
        if again.process.poll() is None:
            again.stop(signal.SIGKILL)


def test_in_flight_quotas_refuse_standard_receives_and_quiet_fifo_ones(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"SELFLESS_SQS_MAX_IN_FLIGHT": "3"})
    try:
        sqs = srv.client("sqs")
        url = sqs.create_queue(QueueName="busy")["QueueUrl"]
        for i in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)["Messages"]
        assert len(taken) == 3
        code, status, error = error_of(sqs.receive_message, QueueUrl=url)
        assert (code, status) == ("OverLimit", 403)
        assert error["Message"].startswith("Too many messages have been received without being deleted.")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=taken[0]["ReceiptHandle"])
        assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) >= 1

        fifo = sqs.create_queue(
            QueueName="busy.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]
        for i in range(5):
            sqs.send_message(QueueUrl=fifo, MessageBody=f"f{i}", MessageGroupId=f"g{i}")
        assert len(sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=3)["Messages"]) == 3
        assert "Messages" not in sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)  # no error, no messages
        assert srv.stop() == 0
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)


# -- the aws CLI ---------------------------------------------------------------------------------------------


def test_aws_cli_create_send_receive_delete(server: Server) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def aws(*args: str) -> Any:
        out = subprocess.run(
            ["aws", "--endpoint-url", server.endpoint, "--output", "json", "sqs", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return json.loads(out) if out.strip() else {}

    name = unique("cli")
    url = aws("create-queue", "--queue-name", name)["QueueUrl"]
    sent = aws("send-message", "--queue-url", url, "--message-body", "from the cli")
    got = aws("receive-message", "--queue-url", url)["Messages"][0]
    assert (got["MessageId"], got["Body"]) == (sent["MessageId"], "from the cli")
    aws("delete-message", "--queue-url", url, "--receipt-handle", got["ReceiptHandle"])
    aws("delete-queue", "--queue-url", url)
    failed = subprocess.run(
        ["aws", "--endpoint-url", server.endpoint, "sqs", "get-queue-url", "--queue-name", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode != 0 and "AWS.SimpleQueueService.NonExistentQueue" in failed.stderr


QUEUE_WORKER = """import boto3


def handler(event, context):
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=event["url"], MessageBody="from a function")
    got = sqs.receive_message(QueueUrl=event["url"], WaitTimeSeconds=1)["Messages"][0]
    sqs.delete_message(QueueUrl=event["url"], ReceiptHandle=got["ReceiptHandle"])
    refused = {}
    for name, call in (
        ("create", lambda: sqs.create_queue(QueueName="made-by-a-function")),
        ("purge", lambda: sqs.purge_queue(QueueUrl=event["url"])),
        ("delete", lambda: sqs.delete_queue(QueueUrl=event["url"])),
        ("move", lambda: sqs.start_message_move_task(SourceArn=event["arn"])),
        ("cancel", lambda: sqs.cancel_message_move_task(TaskHandle="eyJ9")),
        ("permit", lambda: sqs.add_permission(
            QueueUrl=event["url"], Label="x", AWSAccountIds=["111122223333"], Actions=["SendMessage"]
        )),
    ):
        try:
            call()
            refused[name] = "allowed"
        except Exception as exc:
            refused[name] = exc.response["Error"]["Code"]
    return {"body": got["Body"], "refused": refused}
"""


def test_function_credentials_use_queues_but_do_not_manage_them(sqs: Any, lam: Any, queue: str) -> None:
    from tests.conftest import deploy

    fn = deploy(lam, QUEUE_WORKER, Timeout=30)
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    answer = lam.invoke(FunctionName=fn, Payload=json.dumps({"url": queue, "arn": arn}))
    result = json.loads(answer["Payload"].read())
    assert result == {
        "body": "from a function",
        "refused": dict.fromkeys(("create", "purge", "delete", "move", "cancel", "permit"), "AccessDenied"),
    }
    assert sqs.get_queue_url(QueueName=queue.rsplit("/", 1)[1])["QueueUrl"] == queue
