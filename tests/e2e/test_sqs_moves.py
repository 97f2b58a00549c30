"""Dead-letter queue redrive through the unchanged boto3 ``sqs`` client: StartMessageMoveTask back to each
message's own source queue or to a chosen one, its rate, ListMessageMoveTasks, CancelMessageMoveTask, the one
running task per queue, FIFO order, the errors as SQS words them, and a stop and a kill -9 in the middle of a
move that lose no message (the task resumes)."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, start_server, unique

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


def arn_of(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def until(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def pair(sqs: Any, fifo: bool = False, dlq: str | None = None) -> tuple[str, str]:
    """A source queue whose messages go to a dead-letter queue (``dlq``, or a new one) at their second
    receive; returns (source url, dead-letter queue url)."""
    suffix = ".fifo" if fifo else ""
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    if dlq is None:
        dlq = sqs.create_queue(QueueName=unique("dlq") + suffix, Attributes=attributes)["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn_of(sqs, dlq), "maxReceiveCount": 1})
    src = sqs.create_queue(QueueName=unique("src") + suffix, Attributes={**attributes, "RedrivePolicy": policy})
    return src["QueueUrl"], dlq


def dead_letter(sqs: Any, src: str, dlq: str, bodies: list[str], group: str | None = None) -> None:
    """Send ``bodies`` to ``src`` and receive them until every one is in ``dlq``."""
    before = count(sqs, dlq)
    for start in range(0, len(bodies), 10):
        entries = [{"Id": f"m{i}", "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
        if group is not None:
            entries = [{**e, "MessageGroupId": group} for e in entries]
        assert not sqs.send_message_batch(QueueUrl=src, Entries=entries).get("Failed")

    def moved() -> bool:
        sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return count(sqs, dlq) == before + len(bodies)

    until(moved, "the messages to reach the dead-letter queue")


def drain(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    """Every message of ``url`` (``expected`` of them), received once and deleted."""
    got: list[dict[str, Any]] = []

    def more() -> bool:
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], VisibilityTimeout=60
        )
        for m in answer.get("Messages", []):
            got.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(got) >= expected

    until(more, f"{expected} messages in {url}")
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    return got


def latest(sqs: Any, dlq_arn: str) -> dict[str, Any]:
    return dict(sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0])


def finished(sqs: Any, dlq_arn: str) -> dict[str, Any]:
    return dict(until(lambda: (t := latest(sqs, dlq_arn))["Status"] != "RUNNING" and t, "the task to end"))


def error_of(call: Any, **params: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def test_redrive_sends_each_message_back_to_the_queue_it_came_from(sqs: Any) -> None:
    first, dlq = pair(sqs)
    second, _ = pair(sqs, dlq=dlq)
    dead_letter(sqs, first, dlq, [f"a{i}" for i in range(7)])
    dead_letter(sqs, second, dlq, [f"b{i}" for i in range(5)])
    old_ids = {
        m["MessageId"]
        for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    }
    dlq_arn = arn_of(sqs, dlq)
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert json.loads(base64.b64decode(handle))["sourceArn"] == dlq_arn
    task = finished(sqs, dlq_arn)
    assert task["Status"] == "COMPLETED"
    assert task["ApproximateNumberOfMessagesMoved"] == task["ApproximateNumberOfMessagesToMove"] == 12
    assert task["SourceArn"] == dlq_arn
    assert "TaskHandle" not in task and "DestinationArn" not in task and "MaxNumberOfMessagesPerSecond" not in task
    assert "FailureReason" not in task and abs(task["StartedTimestamp"] / 1000 - time.time()) < 120
    back_a = drain(sqs, first, 7)
    back_b = drain(sqs, second, 5)
    assert sorted(m["Body"] for m in back_a) == [f"a{i}" for i in range(7)]
    assert sorted(m["Body"] for m in back_b) == [f"b{i}" for i in range(5)]
    for m in back_a + back_b:  # new messages: new ids, never received, no dead-letter source any more
        assert m["MessageId"] not in old_ids
        assert m["Attributes"]["ApproximateReceiveCount"] == "1"
        assert "DeadLetterQueueSourceArn" not in m["Attributes"]
    assert count(sqs, dlq) == 0


def test_redrive_to_a_chosen_destination_at_its_rate_one_task_at_a_time(sqs: Any) -> None:
    src, dlq = pair(sqs)
    target = sqs.create_queue(QueueName=unique("target"))["QueueUrl"]
    dead_letter(sqs, src, dlq, [f"m{i}" for i in range(20)])
    dlq_arn, target_arn = arn_of(sqs, dlq), arn_of(sqs, target)
    started = time.monotonic()
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=target_arn, MaxNumberOfMessagesPerSecond=5)[
        "TaskHandle"
    ]
    running = latest(sqs, dlq_arn)
    assert running["Status"] == "RUNNING" and running["TaskHandle"] == handle
    assert running["DestinationArn"] == target_arn and running["MaxNumberOfMessagesPerSecond"] == 5
    assert running["ApproximateNumberOfMessagesToMove"] == 20
    code, status, message = error_of(sqs.start_message_move_task, SourceArn=dlq_arn)
    assert (code, status) == ("InvalidParameterValue", 400)
    assert message == (
        "There is already a task running. Only one active task is allowed for a source queue arn at a given time."
    )
    task = finished(sqs, dlq_arn)
    elapsed = time.monotonic() - started
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 20
    assert elapsed >= 3.6, f"20 messages at 5 a second moved in {elapsed:.1f} s"  # 19 intervals of 0.2 s
    assert sorted(m["Body"] for m in drain(sqs, target, 20)) == sorted(f"m{i}" for i in range(20))
    assert count(sqs, src) == 0 and count(sqs, dlq) == 0
    # the task stays listed, most recent first, after the next one
    sqs.start_message_move_task(SourceArn=dlq_arn)
    finished(sqs, dlq_arn)
    listed = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]
    assert [t["Status"] for t in listed] == ["COMPLETED", "COMPLETED"]
    assert [t["ApproximateNumberOfMessagesToMove"] for t in listed] == [0, 20]


def test_cancel_stops_the_move_and_keeps_every_message(sqs: Any) -> None:
    src, dlq = pair(sqs)
    target = sqs.create_queue(QueueName=unique("target"))["QueueUrl"]
    dead_letter(sqs, src, dlq, [f"m{i}" for i in range(20)])
    dlq_arn = arn_of(sqs, dlq)
    handle = sqs.start_message_move_task(
        SourceArn=dlq_arn, DestinationArn=arn_of(sqs, target), MaxNumberOfMessagesPerSecond=2
    )["TaskHandle"]
    until(lambda: latest(sqs, dlq_arn)["ApproximateNumberOfMessagesMoved"] >= 1, "a first move")
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert 1 <= moved < 20
    time.sleep(1.5)  # longer than a move's interval: nothing moves after the cancel
    task = latest(sqs, dlq_arn)
    assert task["Status"] == "CANCELLED" and task["ApproximateNumberOfMessagesMoved"] == moved
    assert "TaskHandle" not in task
    assert count(sqs, target) == moved and count(sqs, dlq) == 20 - moved
    code, status, _ = error_of(sqs.cancel_message_move_task, TaskHandle=handle)
    assert (code, status) == ("InvalidParameterValue", 400)
    sqs.start_message_move_task(SourceArn=dlq_arn)  # a cancelled task no longer blocks the queue
    assert finished(sqs, dlq_arn)["ApproximateNumberOfMessagesMoved"] == 20 - moved
    assert len(drain(sqs, src, 20 - moved)) == 20 - moved


def test_fifo_redrive_keeps_each_group_in_order(sqs: Any) -> None:
    src, dlq = pair(sqs, fifo=True)
    dead_letter(sqs, src, dlq, [f"x{i}" for i in range(6)], group="g")
    # in a FIFO dead-letter queue a message's id is its deduplication id, as SQS has it
    peek = sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["All"], VisibilityTimeout=0)["Messages"][0]
    assert peek["Attributes"]["MessageDeduplicationId"] == peek["MessageId"]
    standard = sqs.create_queue(QueueName=unique("std"))["QueueUrl"]
    dlq_arn = arn_of(sqs, dlq)
    code, _, message = error_of(sqs.start_message_move_task, SourceArn=dlq_arn, DestinationArn=arn_of(sqs, standard))
    assert code == "InvalidParameterValue" and "same queue type" in message
    sqs.start_message_move_task(SourceArn=dlq_arn)
    assert finished(sqs, dlq_arn)["Status"] == "COMPLETED"
    bodies = []
    for _ in range(6):  # one at a time: the group gives its next message once the one before is deleted
        m = sqs.receive_message(QueueUrl=src, MessageSystemAttributeNames=["All"], WaitTimeSeconds=5)["Messages"][0]
        assert m["Attributes"]["MessageGroupId"] == "g"
        bodies.append(m["Body"])
        sqs.delete_message(QueueUrl=src, ReceiptHandle=m["ReceiptHandle"])
    assert bodies == [f"x{i}" for i in range(6)]


def test_errors_as_sqs_words_them(sqs: Any) -> None:
    plain = sqs.create_queue(QueueName=unique("plain"))["QueueUrl"]
    src, dlq = pair(sqs)
    plain_arn, dlq_arn = arn_of(sqs, plain), arn_of(sqs, dlq)
    missing = plain_arn + "-none"
    with pytest.raises(sqs.exceptions.ResourceNotFoundException) as caught:
        sqs.start_message_move_task(SourceArn=missing)
    err = caught.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err["Error"]["Message"] == "The resource that you specified for the SourceArn parameter doesn't exist."
    assert error_of(sqs.start_message_move_task, SourceArn=plain_arn) == (
        "InvalidParameterValue",
        400,
        "Source queue must be configured as a Dead Letter Queue.",
    )
    assert error_of(sqs.start_message_move_task, SourceArn=dlq_arn, DestinationArn=missing) == (
        "ResourceNotFoundException",
        404,
        "The resource that you specified for the DestinationArn parameter doesn't exist.",
    )
    for rate in (0, 501):
        code, _, message = error_of(sqs.start_message_move_task, SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=rate)
        assert code == "InvalidParameterValue" and "MaxNumberOfMessagesPerSecond" in message
    assert error_of(sqs.list_message_move_tasks, SourceArn=missing)[:2] == ("ResourceNotFoundException", 404)
    code, _, _ = error_of(sqs.list_message_move_tasks, SourceArn=dlq_arn, MaxResults=11)
    assert code == "InvalidParameterValue"
    assert sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"] == []
    assert error_of(sqs.cancel_message_move_task, TaskHandle="not a handle") == (
        "InvalidParameterValue",
        400,
        "Value for parameter TaskHandle is invalid.",
    )
    unknown = base64.b64encode(json.dumps({"taskId": "nope", "sourceArn": dlq_arn}).encode()).decode()
    assert error_of(sqs.cancel_message_move_task, TaskHandle=unknown) == (
        "ResourceNotFoundException",
        404,
        "Task does not exist.",
    )
    # a running task's id under another queue's ARN names no task there, and cancels nothing
    other_src, other_dlq = pair(sqs)
    dead_letter(sqs, other_src, other_dlq, [f"o{i}" for i in range(8)])  # 7 s or more at 1 a second
    other_arn = arn_of(sqs, other_dlq)
    handle = sqs.start_message_move_task(SourceArn=other_arn, MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    task_id = json.loads(base64.b64decode(handle))["taskId"]
    forged = base64.b64encode(json.dumps({"taskId": task_id, "sourceArn": dlq_arn}).encode()).decode()
    assert error_of(sqs.cancel_message_move_task, TaskHandle=forged)[:2] == ("ResourceNotFoundException", 404)
    assert latest(sqs, other_arn)["Status"] == "RUNNING"
    sqs.cancel_message_move_task(TaskHandle=handle)
    # a denyAll RedriveAllowPolicy takes the queue out of the dead-letter queues it may redrive from
    sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": ""})
    assert error_of(sqs.start_message_move_task, SourceArn=dlq_arn)[0] == "InvalidParameterValue"
    assert sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"] == []  # a refused start stores nothing


def test_a_stop_and_a_kill_9_during_a_move_lose_no_message_and_the_task_resumes(tmp_path: Path) -> None:
    bodies = [f"m{i}" for i in range(40)]
    srv = start_server(tmp_path)
    try:  # a clean stop in the middle of a move: the server ends at once, the task stays RUNNING
        sqs = srv.client("sqs")
        src, dlq = pair(sqs)
        dead_letter(sqs, src, dlq, bodies)
        dlq_arn = arn_of(sqs, dlq)
        sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=5)  # 8 s for all of them
        until(lambda: latest(sqs, dlq_arn)["ApproximateNumberOfMessagesMoved"] >= 3, "some moves")
        assert srv.stop(timeout=30) == 0
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    again = start_server(tmp_path)
    try:  # resumed; then killed in the middle of it
        sqs = again.client("sqs")
        resumed = latest(sqs, dlq_arn)
        assert resumed["Status"] == "RUNNING" and resumed["ApproximateNumberOfMessagesToMove"] == 40
        moved_before = resumed["ApproximateNumberOfMessagesMoved"]
        until(lambda: latest(sqs, dlq_arn)["ApproximateNumberOfMessagesMoved"] >= moved_before + 3, "more moves")
        again.stop(signal.SIGKILL)
    finally:
        if again.process.poll() is None:
            again.stop(signal.SIGKILL)
    last = start_server(tmp_path)
    try:
        sqs = last.client("sqs")
        task = finished(sqs, dlq_arn)
        assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 40
        assert sorted(m["Body"] for m in drain(sqs, src, 40)) == sorted(bodies)  # each once, none lost
        assert count(sqs, dlq) == 0
        assert last.stop() == 0
    finally:
        if last.process.poll() is None:
            last.stop(signal.SIGKILL)
