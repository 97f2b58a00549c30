"""Attacks on the built-in queue service: more long-polling receives than the server lets wait (each one past
the bound is refused at once, never queued, and the waiting ones end by their deadline or a send), messages and
batches past the size limits, a body that is not JSON, a query-protocol form of endless fields, more message
move tasks than may run at once and an endless history of them, a queue policy grown without end by
AddPermission, and forged receipt handles (a seq past SQLite's integers, signs, spaces, another queue's name).
The server stays healthy throughout."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, start_server
from tests.e2e.test_sqs import error_of

WAITERS = 20
MOVE_TASKS = 2


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("sqs-hostile"),
        {"SELFLESS_SQS_MAX_WAITERS": str(WAITERS), "SELFLESS_SQS_MAX_MOVE_TASKS": str(MOVE_TASKS)},
    )
    yield srv
    assert srv.stop() == 0, srv.log()


def healthy(server: Server) -> bool:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        return bool(r.status == 200)


def test_long_poll_waiters_are_bounded(bounded: Server) -> None:
    sqs: Any = bounded.client("sqs", max_pool_connections=WAITERS + 20)
    url = sqs.create_queue(QueueName="waiters")["QueueUrl"]
    with concurrent.futures.ThreadPoolExecutor(WAITERS + 10) as pool:
        waiting = [pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=20) for _ in range(WAITERS)]
        time.sleep(1.5)  # every one of them is waiting now
        started = time.monotonic()
        refused = [pool.submit(error_of, sqs.receive_message, QueueUrl=url, WaitTimeSeconds=20) for _ in range(10)]
        for future in refused:
            code, status, _ = future.result(timeout=10)
            assert (code, status) == ("RequestThrottled", 403)
        assert time.monotonic() - started < 5  # refused at once, not queued
        assert healthy(bounded)
        # A short receive that does not wait is never refused.
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "MessageBody": "x"} for i in range(10)])
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"n{i}", "MessageBody": "x"} for i in range(10)])
        got = sum(len(f.result(timeout=30).get("Messages", [])) for f in waiting)
        assert got == 2 * 10
    # Once they are gone, waiting is possible again.
    sqs.send_message(QueueUrl=url, MessageBody="again")
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"] == "again"


def test_oversized_messages_and_batches_are_refused(bounded: Server) -> None:
    sqs: Any = bounded.client("sqs")
    url = sqs.create_queue(QueueName="sizes")["QueueUrl"]
    code, _, _ = error_of(sqs.send_message, QueueUrl=url, MessageBody="x" * (2 << 20))
    assert code == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.BatchRequestTooLong):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"b{i}", "MessageBody": "x" * 200_000} for i in range(10)])
    code, _, _ = error_of(
        sqs.send_message,
        QueueUrl=url,
        MessageBody="x",
        MessageAttributes={f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)},
    )
    assert code == "InvalidParameterValue"
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert healthy(bounded)


def test_a_body_that_is_not_json(bounded: Server, tmp_path: Path) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import ACCESS_KEY, SECRET_KEY

    for body in (b"[1,2]", b"{" * 5000, b"\xff\xfe"):
        request = AWSRequest(
            method="POST",
            url=bounded.endpoint + "/",
            data=body,
            headers={"X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"},
        )
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sqs", "us-east-1").add_auth(request)
        prepared = urllib.request.Request(request.url, data=body, headers=dict(request.headers.items()), method="POST")
        try:
            urllib.request.urlopen(prepared, timeout=10)
            raise AssertionError("accepted a body that is not a JSON object")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
            assert json.loads(exc.read())["__type"].endswith("SerializationException")
            assert exc.headers["x-amzn-query-error"].endswith(";Sender")
    assert healthy(bounded)


def test_a_query_protocol_form_with_endless_fields(bounded: Server) -> None:
    """The older wire's form is read once and bounded: a form of 100,000 fields (about 4 MB, under the API's
    body limit) is refused with the query protocol's XML error, not parsed into a list of 100,000 entries."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import ACCESS_KEY, SECRET_KEY

    body = b"Action=DeleteMessageBatch&QueueUrl=x" + b"".join(
        b"&DeleteMessageBatchRequestEntry.%d.Id=i" % i for i in range(1, 100_001)
    )
    request = AWSRequest(
        method="POST",
        url=bounded.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sqs", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(request.url, data=body, headers=dict(request.headers.items()), method="POST")
    started = time.monotonic()
    try:
        urllib.request.urlopen(prepared, timeout=30)
        raise AssertionError("accepted a form of 100,000 fields")
    except urllib.error.HTTPError as exc:
        answer = exc.read()
        assert exc.code == 400, (exc.code, answer[:300])
        assert b"<ErrorResponse" in answer and b"MalformedQueryString" in answer
    assert time.monotonic() - started < 10
    assert healthy(bounded)


def test_message_move_tasks_are_bounded_and_so_is_their_history(bounded: Server) -> None:
    from tests.e2e.test_sqs_moves import arn_of, dead_letter, pair

    sqs: Any = bounded.client("sqs")
    dlqs = []
    for _ in range(MOVE_TASKS + 1):
        src, dlq = pair(sqs)
        dead_letter(sqs, src, dlq, [f"m{i}" for i in range(8)])
        dlqs.append(arn_of(sqs, dlq))
    handles = [
        sqs.start_message_move_task(SourceArn=arn, MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
        for arn in dlqs[:MOVE_TASKS]
    ]  # each runs for seven seconds or more
    code, status, _ = error_of(sqs.start_message_move_task, SourceArn=dlqs[-1], MaxNumberOfMessagesPerSecond=1)
    assert (code, status) == ("RequestThrottled", 403)
    assert sqs.list_message_move_tasks(SourceArn=dlqs[-1])["Results"] == []
    sqs.cancel_message_move_task(TaskHandle=handles[0])
    deadline = time.monotonic() + 30
    while True:  # the cancelled task's slot frees when its runner has stopped
        try:
            last = sqs.start_message_move_task(SourceArn=dlqs[-1], MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
            break
        except sqs.exceptions.ClientError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    for handle in (handles[1], last):
        sqs.cancel_message_move_task(TaskHandle=handle)
    # a queue's history keeps its ten most recent tasks, however many were started
    _, empty = pair(sqs)
    empty_arn = arn_of(sqs, empty)
    for _ in range(15):
        deadline = time.monotonic() + 30
        while True:
            try:
                sqs.start_message_move_task(SourceArn=empty_arn)
                break
            except sqs.exceptions.ClientError:  # the one before has not completed yet (it has nothing to move)
                assert time.monotonic() < deadline
                time.sleep(0.05)
    listed = sqs.list_message_move_tasks(SourceArn=empty_arn, MaxResults=10)["Results"]
    assert len(listed) == 10
    assert healthy(bounded)


def test_add_permission_cannot_grow_a_policy_without_end(bounded: Server) -> None:
    sqs: Any = bounded.client("sqs")
    url = sqs.create_queue(QueueName="permissions")["QueueUrl"]
    ok = {"QueueUrl": url, "AWSAccountIds": ["111122223333"], "Actions": ["SendMessage"]}
    added = 0
    while True:
        try:
            sqs.add_permission(**ok, Label=f"l{added}")
        except sqs.exceptions.ClientError as exc:
            assert (exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]) == (
                "OverLimit",
                403,
            )
            break
        added += 1
        assert added < 1000
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    assert added > 50 and len(json.loads(policy)["Statement"]) == added and len(policy) <= 20_480
    sqs.send_message(QueueUrl=url, MessageBody="still fine")
    assert healthy(bounded)


def test_forged_receipt_handles_are_refused_and_change_nothing(bounded: Server) -> None:
    """A handle is the service's own format (queue name, message seq, receipt token): forged ones, with a seq
    no SQLite integer holds or not a plain number, are ReceiptHandleIsInvalid (never a 500), and the message
    stays in flight for its real handle."""
    sqs: Any = bounded.client("sqs")
    url = sqs.create_queue(QueueName="forged")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="real")
    (m,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"]
    name, seq, token = base64.urlsafe_b64decode(m["ReceiptHandle"]).decode().split("\n")
    forged = [
        f"{name}\n{'9' * 40}\n{token}",
        f"{name}\n{'9' * 19}\n{token}",
        f"{name}\n-{seq}\n{token}",
        f"{name}\n {seq}\n{token}",
        f"{name}\n{seq}_0\n{token}",
        f"{name}\n\u0663\n{token}",  # a digit, but not an ASCII one
        f"other\n{seq}\n{token}",
        f"{name}\n{seq}\n{token}\nmore",
    ]
    for text in forged:
        handle = base64.urlsafe_b64encode(text.encode()).decode()
        code, status, _ = error_of(sqs.delete_message, QueueUrl=url, ReceiptHandle=handle)
        assert (code, status) == ("ReceiptHandleIsInvalid", 400), text
        code, status, _ = error_of(
            sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0
        )
        assert (code, status) == ("ReceiptHandleIsInvalid", 400), text
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert healthy(bounded)
