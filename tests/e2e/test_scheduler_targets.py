"""EventBridge Scheduler's queue and topic targets and dead-letter queues with the unchanged boto3 clients: a
schedule sends its Input to a queue (a FIFO queue with its MessageGroupId) or publishes it to a topic, and a run
whose target function, queue or topic does not exist goes to its DeadLetterConfig queue with the attributes AWS
Scheduler sets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, unique
from tests.e2e.test_eventbridge_rules import queue, receive
from tests.e2e.test_scheduler import ROLE_ARN, ahead, code_of, in_time


@pytest.fixture(scope="module")
def sch(server: Server) -> Any:
    return server.client("scheduler")


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


def create(sch: Any, name: str, expression: str, target: dict[str, Any]) -> None:
    sch.create_schedule(
        Name=name,
        ScheduleExpression=expression,
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"RoleArn": ROLE_ARN, **target},
    )


def test_targets_are_validated_as_aws_does(sch: Any, sqs: Any) -> None:
    _, fifo = queue(sqs, f"{unique('f')}.fifo", FifoQueue="true")
    _, standard = queue(sqs)
    account = standard.split(":")[4]
    function = f"arn:aws:lambda:us-east-1:{account}:function:f"
    for target, words in (
        ({"Arn": fifo}, "MessageGroupId is required"),
        ({"Arn": function, "SqsParameters": {"MessageGroupId": "g"}}, "SqsParameters is not supported"),
        ({"Arn": standard, "SqsParameters": {"MessageGroupId": "g"}}, "only supported for FIFO"),
        ({"Arn": function, "DeadLetterConfig": {"Arn": fifo}}, "failed to satisfy constraint"),  # the model says no
        ({"Arn": f"arn:aws:sns:us-east-1:{account}:topic.fifo"}, "sends to standard topics"),
        ({"Arn": f"arn:aws:kinesis:us-east-1:{account}:stream/s"}, "is not supported"),
    ):
        with pytest.raises(ClientError) as exc:
            create(sch, unique("bad"), "rate(1 hour)", target)
        status, code, message = code_of(exc)
        assert (status, code) == (400, "ValidationException") and words in message, message
    # Well-formed: taken (whether the queue or function exists is learnt when it runs, as on AWS).
    name = unique("ok")
    create(sch, name, "rate(1 hour)", {"Arn": fifo, "SqsParameters": {"MessageGroupId": "g"},
                                       "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600},
                                       "DeadLetterConfig": {"Arn": standard}})  # fmt: skip
    got = sch.get_schedule(Name=name)["Target"]
    assert got["SqsParameters"] == {"MessageGroupId": "g"} and got["DeadLetterConfig"] == {"Arn": standard}
    assert got["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}
    sch.delete_schedule(Name=name)


def test_queue_and_topic_targets_and_dead_letters(server: Server, sch: Any, sqs: Any) -> None:
    sns = server.client("sns")
    jobs_url, jobs = queue(sqs)
    topic = sns.create_topic(Name=unique("nightly"))["TopicArn"]
    fanned_url, fanned = queue(sqs)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=fanned, Attributes={"RawMessageDelivery": "true"})
    fifo_url, fifo = queue(sqs, f"{unique('f')}.fifo", FifoQueue="true")
    dlq_url, dlq = queue(sqs)
    account = jobs.split(":")[4]
    missing_fn = f"arn:aws:lambda:us-east-1:{account}:function:{unique('gone')}"
    missing_queue = f"arn:aws:sqs:us-east-1:{account}:{unique('gone')}"
    missing_topic = f"arn:aws:sns:us-east-1:{account}:{unique('gone')}"
    names = {k: unique(k) for k in ("queue", "fifo", "topic", "no-fn", "no-queue", "no-topic")}
    for margin in (4, 10, 25):
        when = ahead(margin)
        expression = f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"
        create(sch, names["queue"], expression, {"Arn": jobs, "Input": '{"job": "sweep"}'})
        create(sch, names["fifo"], expression, {"Arn": fifo, "Input": '{"job": "fifo"}',
                                                "SqsParameters": {"MessageGroupId": "nightly"}})  # fmt: skip
        create(sch, names["no-fn"], expression, {"Arn": missing_fn, "Input": '{"job": "lost"}',
                                                 "DeadLetterConfig": {"Arn": dlq}})  # fmt: skip
        create(sch, names["no-queue"], expression, {"Arn": missing_queue, "Input": '{"job": "lost too"}',
                                                    "DeadLetterConfig": {"Arn": dlq}})  # fmt: skip
        create(sch, names["topic"], expression, {"Arn": topic, "Input": '{"job": "fan out"}'})
        create(sch, names["no-topic"], expression, {"Arn": missing_topic, "Input": '{"job": "lost three"}',
                                                    "DeadLetterConfig": {"Arn": dlq}})  # fmt: skip
        if in_time(when):
            break
        for name in names.values():
            sch.delete_schedule(Name=name)
    else:
        pytest.fail("the server was too slow to make schedules a few seconds ahead")
    assert json.loads(receive(sqs, jobs_url, 1)[0]["Body"]) == {"job": "sweep"}
    assert json.loads(receive(sqs, fanned_url, 1)[0]["Body"]) == {"job": "fan out"}  # through the topic
    got = sqs.receive_message(QueueUrl=fifo_url, WaitTimeSeconds=20, AttributeNames=["MessageGroupId"])
    (message,) = got["Messages"]
    assert json.loads(message["Body"]) == {"job": "fifo"}
    assert message["Attributes"]["MessageGroupId"] == "nightly"
    dead = receive(sqs, dlq_url, 3)
    by_target = {m["MessageAttributes"]["TARGET_ARN"]["StringValue"]: m for m in dead}
    assert set(by_target) == {missing_fn, missing_queue, missing_topic}
    for target, name, body in (
        (missing_fn, names["no-fn"], "lost"),
        (missing_queue, names["no-queue"], "lost too"),
        (missing_topic, names["no-topic"], "lost three"),
    ):
        letter = by_target[target]
        assert json.loads(letter["Body"]) == {"job": body}
        shown = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
        assert shown["SCHEDULE_ARN"].endswith(f":schedule/default/{name}")
        assert shown["ERROR_CODE"] == "ResourceNotFoundException" and shown["RETRY_ATTEMPTS"] == "0"
        assert shown["SCHEDULED_TIME"] == when.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert shown["IS_PAYLOAD_TRUNCATED"] == "false" and shown["EXECUTION_ID"]
        assert "EXHAUSTED_RETRY_CONDITION" not in shown and shown["ERROR_MESSAGE"]
    for name in names.values():
        sch.delete_schedule(Name=name)
