"""The built-in queue and topic services as targets, with no SELFLESS_SQS_ENDPOINT / SELFLESS_SNS_ENDPOINT:
bucket notifications to queues and topics (QueueConfigurations and TopicConfigurations, validated as S3
validates them: the queue or topic must exist, be standard and let s3.amazonaws.com send or publish for the
bucket; S3's s3:TestEvent when configured; S3's event as the message body, a topic's with S3's Subject), and
Lambda's OnSuccess/OnFailure destinations and dead-letter queues delivering into built-in queues."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from tests.conftest import Server, deploy, unique
from tests.e2e.test_async import ECHO, FAILING, wait_for
from tests.e2e.test_s3 import client, error_of


def queue_policy(queue_arn: str, bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
                }
            ],
        }
    )


def make_queue(sqs: Any, **attributes: str) -> tuple[str, str]:
    name = unique("q") + (".fifo" if attributes.get("FifoQueue") == "true" else "")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drain(sqs: Any, url: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Receive and delete until ``count`` messages have come (long polls: no busy loop)."""
    got: list[dict[str, Any]] = []

    def more() -> bool:
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2, MessageAttributeNames=["All"]
        )
        for message in answer.get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    wait_for(f"{count} messages", more, timeout=timeout)
    return got


def test_bucket_notifications_reach_a_queue(server: Server) -> None:
    s3, sqs = client(server), server.client("sqs")
    bucket = unique("toqueue")
    s3.create_bucket(Bucket=bucket)
    url, arn = make_queue(sqs)
    config = {"QueueConfigurations": [{"Id": "uploads", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]}

    code, _, err = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=config)
    assert (code, err["Message"]) == ("InvalidArgument", "Unable to validate the following destination configurations")
    assert err["ArgumentName1"] == arn and "Permissions on the destination queue" in err["ArgumentValue1"]
    elsewhere = queue_policy(arn, "some-other-bucket")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": elsewhere})
    code, _, _ = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=config)
    assert code == "InvalidArgument"  # the policy is for another bucket
    missing = {"QueueConfigurations": [{"QueueArn": arn + "-gone", "Events": ["s3:ObjectCreated:*"]}]}
    code, _, _ = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=missing)
    assert code == "InvalidArgument"
    fifo_url, fifo_arn = make_queue(sqs, FifoQueue="true")
    sqs.set_queue_attributes(QueueUrl=fifo_url, Attributes={"Policy": queue_policy(fifo_arn, bucket)})
    fifo = {"QueueConfigurations": [{"QueueArn": fifo_arn, "Events": ["s3:ObjectCreated:*"]}]}
    code, _, _ = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=fifo)
    assert code == "InvalidArgument"

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": queue_policy(arn, bucket)})
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    shown = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert shown == [{"Id": "uploads", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
    (test_event,) = drain(sqs, url, 1)
    body = json.loads(test_event["Body"])
    assert body["Event"] == "s3:TestEvent" and body["Service"] == "Amazon S3" and body["Bucket"] == bucket

    etag = s3.put_object(Bucket=bucket, Key="in/red flower.jpg", Body=b"jpeg")["ETag"]
    s3.delete_object(Bucket=bucket, Key="in/red flower.jpg")  # not configured: no message
    (message,) = drain(sqs, url, 1)
    (record,) = json.loads(message["Body"])["Records"]
    assert record["eventName"] == "ObjectCreated:Put" and record["s3"]["configurationId"] == "uploads"
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "in/red flower.jpg"
    assert record["s3"]["object"]["eTag"] == etag.strip('"') and record["s3"]["bucket"]["name"] == bucket
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


def topic_policy(topic_arn: str, bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "SNS:Publish",  # IAM action names are compared without case
                    "Resource": topic_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
                }
            ],
        }
    )


def test_bucket_notifications_reach_a_topic_and_its_subscribers(server: Server) -> None:
    s3, sqs, sns = client(server), server.client("sqs"), server.client("sns")
    bucket = unique("totopic")
    s3.create_bucket(Bucket=bucket)
    topic = sns.create_topic(Name=unique("uploads"))["TopicArn"]
    url, queue_arn = make_queue(sqs)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    config = {"TopicConfigurations": [{"Id": "to-topic", "TopicArn": topic, "Events": ["s3:ObjectCreated:Put"]}]}

    code, _, err = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=config)
    assert (code, err["Message"]) == ("InvalidArgument", "Unable to validate the following destination configurations")
    assert err["ArgumentName1"] == topic and "Permissions on the destination topic" in err["ArgumentValue1"]
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=topic_policy(topic, "other"))
    code, _, _ = error_of(s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=config)
    assert code == "InvalidArgument"  # the policy is for another bucket
    fifo = sns.create_topic(Name=unique("uploads") + ".fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    sns.set_topic_attributes(TopicArn=fifo, AttributeName="Policy", AttributeValue=topic_policy(fifo, bucket))
    fifo_config = {"TopicConfigurations": [{"TopicArn": fifo, "Events": ["s3:ObjectCreated:*"]}]}
    code, _, err = error_of(
        s3.put_bucket_notification_configuration, Bucket=bucket, NotificationConfiguration=fifo_config
    )
    assert code == "InvalidArgument" and "FIFO SNS topics are not supported" in err["ArgumentValue1"]

    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=topic_policy(topic, bucket))
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    shown = s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
    assert shown == [{"Id": "to-topic", "TopicArn": topic, "Events": ["s3:ObjectCreated:Put"]}]
    (test_event,) = drain(sqs, url, 1)
    envelope = json.loads(test_event["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    assert envelope["Subject"] == "Amazon S3 Notification"
    assert json.loads(envelope["Message"])["Event"] == "s3:TestEvent"

    s3.put_object(Bucket=bucket, Key="photos/cat.jpg", Body=b"jpeg")
    s3.copy_object(Bucket=bucket, Key="copy.jpg", CopySource={"Bucket": bucket, "Key": "photos/cat.jpg"})  # not Put
    (message,) = drain(sqs, url, 1)
    envelope = json.loads(message["Body"])
    assert envelope["Subject"] == "Amazon S3 Notification"
    (record,) = json.loads(envelope["Message"])["Records"]
    assert record["eventName"] == "ObjectCreated:Put" and record["s3"]["configurationId"] == "to-topic"
    assert record["s3"]["object"]["key"] == "photos/cat.jpg" and record["s3"]["bucket"]["name"] == bucket
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)


def test_destinations_and_dead_letters_go_to_builtin_queues(server: Server, lam: Any) -> None:
    sqs = server.client("sqs")
    ok_url, ok_arn = make_queue(sqs)
    failed_url, failed_arn = make_queue(sqs)
    dead_url, dead_arn = make_queue(sqs)

    echo = deploy(lam, ECHO)
    lam.put_function_event_invoke_config(
        FunctionName=echo, DestinationConfig={"OnSuccess": {"Destination": ok_arn}}, MaximumRetryAttempts=0
    )
    lam.invoke(FunctionName=echo, InvocationType="Event", Payload=b'{"n": 1}')
    (success,) = drain(sqs, ok_url, 1)
    record = json.loads(success["Body"])
    assert record["requestContext"]["condition"] == "Success" and record["responsePayload"] == {"echo": {"n": 1}}

    failing = deploy(lam, FAILING, DeadLetterConfig={"TargetArn": dead_arn})
    lam.put_function_event_invoke_config(
        FunctionName=failing, DestinationConfig={"OnFailure": {"Destination": failed_arn}}, MaximumRetryAttempts=0
    )
    answer = lam.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"n": 2}')
    request_id = answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    (failure,) = drain(sqs, failed_url, 1)
    record = json.loads(failure["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["requestId"] == request_id and record["requestPayload"] == {"n": 2}
    (dead,) = drain(sqs, dead_url, 1)
    assert json.loads(dead["Body"]) == {"n": 2}
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["RequestID"] == request_id and attributes["ErrorCode"] == "200"
    assert "no good: 2" in attributes["ErrorMessage"]

    missing = ok_arn + "-gone"
    try:
        lam.put_function_event_invoke_config(
            FunctionName=echo, DestinationConfig={"OnSuccess": {"Destination": missing}}
        )
    except lam.exceptions.InvalidParameterValueException as exc:
        assert f"does not have permissions to call SendMessage on {missing}" in str(exc)
    else:
        raise AssertionError("a destination queue that does not exist was accepted")
