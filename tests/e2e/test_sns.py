"""The built-in topic service through the unchanged boto3 ``sns`` client (the query protocol) and the aws CLI:
every operation, its main errors as SNS words them, filter policies keeping and dropping messages, raw
delivery, a FIFO topic into a FIFO queue in order, the http subscription handshake, fan-out to two functions
and a queue, topics as Lambda destinations and dead-letter targets, and durability across kill -9."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_async import ECHO, FAILING, RECORDER, records, wait_for
from tests.e2e.test_awscli import aws
from tests.e2e.test_builtin_queue_targets import drain, make_queue


@pytest.fixture(scope="module")
def sns(server: Server) -> Any:
    return server.client("sns")


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


def error_of(call: Any, **params: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def topic(sns: Any, fifo: bool = False, **attributes: str) -> str:
    name = unique("t") + (".fifo" if fifo else "")
    if fifo:
        attributes["FifoTopic"] = "true"
    return str(sns.create_topic(Name=name, Attributes=attributes)["TopicArn"])


def subscribe_queue(sns: Any, sqs: Any, topic_arn: str, **attributes: str) -> tuple[str, str]:
    """A new queue subscribed to the topic: (queue URL, subscription ARN)."""
    url, arn = make_queue(sqs, **({"FifoQueue": "true"} if topic_arn.endswith(".fifo") else {}))
    sub = sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    return url, sub


class Endpoint:
    """A small HTTP endpoint on loopback: records every POST (headers, body); answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.status = 200
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = owner.status
                owner.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_type(self, kind: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [
            (headers, json.loads(body))
            for headers, body, _status in list(self.received)
            if headers.get("x-amz-sns-message-type") == kind
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    found = Endpoint()
    yield found
    found.close()


# -- topics --------------------------------------------------------------------------------------------------


def test_topic_lifecycle_attributes_tags_and_paging(sns: Any) -> None:
    name = unique("life")
    arn = sns.create_topic(Name=name, Attributes={"DisplayName": "Life"}, Tags=[{"Key": "team", "Value": "a"}])[
        "TopicArn"
    ]
    assert arn == f"arn:aws:sns:us-east-1:000000000000:{name}"
    assert sns.create_topic(Name=name, Attributes={"DisplayName": "Life"})["TopicArn"] == arn  # idempotent
    code, status, message = error_of(sns.create_topic, Name=name, Attributes={"DisplayName": "Other"})
    assert (code, status) == ("InvalidParameter", 400) and "different attributes" in message
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["DisplayName"] == "Life" and attributes["Owner"] == "000000000000"
    assert attributes["TopicArn"] == arn and attributes["SubscriptionsConfirmed"] == "0"
    assert json.loads(attributes["Policy"])["Statement"][0]["Resource"] == arn
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Renamed")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "Renamed"
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.set_topic_attributes(TopicArn=arn, AttributeName="FifoTopic", AttributeValue="true")

    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "test"}])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [
        {"Key": "env", "Value": "test"},
        {"Key": "team", "Value": "a"},
    ]
    sns.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert sns.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "test"}]
    with pytest.raises(sns.exceptions.ResourceNotFoundException):
        sns.list_tags_for_resource(ResourceArn=arn + "-gone")

    made = [sns.create_topic(Name=f"{name}-{i:03d}")["TopicArn"] for i in range(101)]
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = sns.list_topics(**({"NextToken": token} if token else {}))
        assert len(page["Topics"]) <= 100
        seen += [t["TopicArn"] for t in page["Topics"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages >= 2 and set(made) | {arn} <= set(seen) and len(seen) == len(set(seen))
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.list_topics(NextToken="not-a-token")

    for made_arn in made:
        sns.delete_topic(TopicArn=made_arn)
    sns.delete_topic(TopicArn=arn)
    sns.delete_topic(TopicArn=arn)  # a topic that does not exist: no error, as on SNS
    with pytest.raises(sns.exceptions.NotFoundException) as caught:
        sns.get_topic_attributes(TopicArn=arn)
    assert caught.value.response["Error"]["Message"] == "Topic does not exist"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_topic_names_and_attributes_are_checked(sns: Any) -> None:
    assert error_of(sns.create_topic, Name="has space")[:2] == ("InvalidParameter", 400)
    assert error_of(sns.create_topic, Name="x" * 257)[0] == "InvalidParameter"
    assert error_of(sns.create_topic, Name=unique("n") + ".fifo")[0] == "InvalidParameter"  # FifoTopic not set
    assert error_of(sns.create_topic, Name=unique("n"), Attributes={"FifoTopic": "true"})[0] == "InvalidParameter"
    assert error_of(sns.create_topic, Name=unique("n"), Attributes={"Colour": "red"})[0] == "InvalidParameter"
    assert error_of(sns.create_topic, Name=unique("n"), Attributes={"Policy": "{not json"})[0] == "InvalidParameter"
    code, _, _ = error_of(sns.create_topic, Name=unique("n"), Attributes={"ContentBasedDeduplication": "true"})
    assert code == "InvalidParameter"  # FIFO topics only
    for policy in ('{"http": []}', "[1]", '{"http": {"defaultHealthyRetryPolicy": {"numRetries": 101}}}'):
        code, _, _ = error_of(sns.create_topic, Name=unique("n"), Attributes={"DeliveryPolicy": policy})
        assert code == "InvalidParameter", policy
    fifo = topic(sns, fifo=True, ContentBasedDeduplication="true")
    attributes = sns.get_topic_attributes(TopicArn=fifo)["Attributes"]
    assert attributes["FifoTopic"] == "true" and attributes["ContentBasedDeduplication"] == "true"
    assert error_of(sns.get_topic_attributes, TopicArn="not-an-arn")[:2] == ("InvalidParameter", 400)
    assert error_of(sns.get_topic_attributes, TopicArn="arn:aws:sns:us-east-1:000000000000:none")[:2] == (
        "NotFound",
        404,
    )


# -- subscriptions -------------------------------------------------------------------------------------------


def test_subscriptions_attributes_listing_and_unsubscribe(sns: Any, sqs: Any) -> None:
    arn = topic(sns)
    url, sub = subscribe_queue(sns, sqs, arn)
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert sub.startswith(arn + ":")
    again = sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    assert again == sub  # the same endpoint: the same subscription
    listed = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert listed == [
        {"SubscriptionArn": sub, "Owner": "000000000000", "Protocol": "sqs", "Endpoint": queue_arn, "TopicArn": arn}
    ]
    assert any(s["SubscriptionArn"] == sub for s in all_subscriptions(sns))
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attributes["RawMessageDelivery"] == "false" and attributes["PendingConfirmation"] == "false"
    assert attributes["TopicArn"] == arn and attributes["Endpoint"] == queue_arn
    policy = json.dumps({"colour": ["red"]})
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=policy)
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true")
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attributes["FilterPolicy"] == policy and attributes["FilterPolicyScope"] == "MessageAttributes"
    assert attributes["RawMessageDelivery"] == "true"
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["SubscriptionsConfirmed"] == "1"

    bad = {"SubscriptionArn": sub, "AttributeName": "FilterPolicy"}
    assert error_of(sns.set_subscription_attributes, AttributeValue="{nope", **bad)[0] == "InvalidParameter"
    too_many = json.dumps({f"k{i}": ["v"] for i in range(6)})
    code, _, message = error_of(sns.set_subscription_attributes, AttributeValue=too_many, **bad)
    assert code == "InvalidParameter" and "5 keys" in message
    complex_policy = json.dumps({"a": [str(i) for i in range(20)], "b": [str(i) for i in range(10)]})
    code, _, message = error_of(sns.set_subscription_attributes, AttributeValue=complex_policy, **bad)
    assert code == "InvalidParameter" and "too complex" in message
    unknown = json.dumps({"a": [{"wildcard-ish": "x"}]})
    assert error_of(sns.set_subscription_attributes, AttributeValue=unknown, **bad)[0] == "InvalidParameter"
    assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["FilterPolicy"] == policy

    assert error_of(sns.subscribe, TopicArn=arn, Protocol="carrier-pigeon", Endpoint="x")[0] == "InvalidParameter"
    assert error_of(sns.subscribe, TopicArn=arn, Protocol="sqs", Endpoint="not-an-arn")[0] == "InvalidParameter"
    assert error_of(sns.subscribe, TopicArn=arn, Protocol="http", Endpoint="https://x")[0] == "InvalidParameter"
    code, _, message = error_of(
        sns.subscribe,
        TopicArn=arn,
        Protocol="lambda",
        Endpoint="arn:aws:lambda:us-east-1:000000000000:function:f",
        Attributes={"RawMessageDelivery": "true"},
    )
    assert code == "InvalidParameter" and "raw message delivery" in message
    assert error_of(sns.subscribe, TopicArn=arn + "-gone", Protocol="sqs", Endpoint=queue_arn)[0] == "NotFound"

    sns.unsubscribe(SubscriptionArn=sub)
    assert sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"] == []
    assert error_of(sns.get_subscription_attributes, SubscriptionArn=sub)[:2] == ("NotFound", 404)
    assert error_of(sns.unsubscribe, SubscriptionArn="garbage")[0] == "InvalidParameter"


def all_subscriptions(sns: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        page = sns.list_subscriptions(**({"NextToken": token} if token else {}))
        found += page["Subscriptions"]
        token = page.get("NextToken")
        if not token:
            return found


def test_deleting_a_topic_deletes_its_subscriptions(sns: Any, sqs: Any) -> None:
    arn = topic(sns)
    _url, sub = subscribe_queue(sns, sqs, arn)
    sns.delete_topic(TopicArn=arn)
    assert error_of(sns.get_subscription_attributes, SubscriptionArn=sub)[0] == "NotFound"
    assert all(s["SubscriptionArn"] != sub for s in all_subscriptions(sns))


# -- publishing into queues ----------------------------------------------------------------------------------


def test_publish_to_queues_as_an_envelope_and_raw(sns: Any, sqs: Any, server: Server) -> None:
    arn = topic(sns)
    wrapped_url, wrapped_sub = subscribe_queue(sns, sqs, arn)
    raw_url, _raw_sub = subscribe_queue(sns, sqs, arn, RawMessageDelivery="true")
    attributes = {
        "colour": {"DataType": "String", "StringValue": "red"},
        "size": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    message_id = sns.publish(TopicArn=arn, Message="hello <world>", Subject="Greeting", MessageAttributes=attributes)[
        "MessageId"
    ]

    (wrapped,) = drain(sqs, wrapped_url, 1)
    envelope = json.loads(wrapped["Body"])
    assert envelope["Type"] == "Notification" and envelope["MessageId"] == message_id
    assert envelope["TopicArn"] == arn and envelope["Subject"] == "Greeting" and envelope["Message"] == "hello <world>"
    assert envelope["SignatureVersion"] == "1" and envelope["Signature"] and envelope["SigningCertURL"]
    assert envelope["UnsubscribeURL"].startswith(server.endpoint) and "Unsubscribe" in envelope["UnsubscribeURL"]
    assert time.strptime(envelope["Timestamp"][:19], "%Y-%m-%dT%H:%M:%S") and envelope["Timestamp"].endswith("Z")
    assert envelope["MessageAttributes"] == {
        "colour": {"Type": "String", "Value": "red"},
        "size": {"Type": "Number", "Value": "42"},
        "blob": {"Type": "Binary", "Value": "AAE="},
    }
    assert wrapped_sub.endswith(envelope["UnsubscribeURL"].rsplit("%3A", 1)[1])

    (raw,) = drain(sqs, raw_url, 1)
    assert raw["Body"] == "hello <world>"
    got = raw["MessageAttributes"]
    assert got["colour"] == {"DataType": "String", "StringValue": "red"}
    assert got["size"] == {"DataType": "Number", "StringValue": "42"}
    assert got["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01"}

    structured = json.dumps({"default": "for everyone", "sqs": "for queues"})
    sns.publish(TopicArn=arn, Message=structured, MessageStructure="json")
    assert json.loads(drain(sqs, wrapped_url, 1)[0]["Body"])["Message"] == "for queues"

    batch = sns.publish_batch(
        TopicArn=arn,
        PublishBatchRequestEntries=[
            {"Id": "one", "Message": "first"},
            {"Id": "two", "Message": "second", "Subject": "bad\nsubject"},
            {"Id": "three", "Message": "third"},
        ],
    )
    assert [s["Id"] for s in batch["Successful"]] == ["one", "three"]
    assert batch["Failed"] == [
        {"Id": "two", "Code": "InvalidParameter", "Message": "Invalid parameter: Subject", "SenderFault": True}
    ]
    bodies = sorted(m["Body"] for m in drain(sqs, raw_url, 3))
    assert bodies == ["first", "for queues", "third"]  # a raw sqs delivery takes the "sqs" text too


def test_publish_is_checked_as_sns_checks_it(sns: Any) -> None:
    arn = topic(sns)
    assert error_of(sns.publish, TopicArn=arn, Message="x" * 262_145)[:2] == ("InvalidParameter", 400)
    sns.publish(TopicArn=arn, Message="x" * 262_144)
    many = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=many)[0] == "InvalidParameter"
    empty = {"a": {"DataType": "String", "StringValue": ""}}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=empty)[0] == "ParameterValueInvalid"
    nan = {"a": {"DataType": "Number", "StringValue": "lots"}}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=nan)[0] == "ParameterValueInvalid"
    reserved = {"AWS.thing": {"DataType": "String", "StringValue": "v"}}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=reserved)[0] == "ParameterValueInvalid"
    kind = {"a": {"DataType": "Colour", "StringValue": "v"}}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=kind)[0] == "ParameterValueInvalid"
    assert error_of(sns.publish, TopicArn=arn, Message="m", Subject="s" * 101)[0] == "InvalidParameter"
    code, _, message = error_of(sns.publish, TopicArn=arn, Message='{"sqs": "x"}', MessageStructure="json")
    assert code == "InvalidParameter" and "No default entry" in message
    assert error_of(sns.publish, TopicArn=arn, Message="", Subject="s")[0] == "InvalidParameter"
    assert error_of(sns.publish, TopicArn=arn + "-gone", Message="m")[:2] == ("NotFound", 404)
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageDeduplicationId="d")[0] == "InvalidParameter"
    assert sns.publish(TargetArn=arn, Message="by target")["MessageId"]

    entries = [{"Id": f"e{i}", "Message": "m"} for i in range(11)]
    assert error_of(sns.publish_batch, TopicArn=arn, PublishBatchRequestEntries=entries)[0] == (
        "TooManyEntriesInBatchRequest"
    )
    same = [{"Id": "a", "Message": "m"}, {"Id": "a", "Message": "n"}]
    assert error_of(sns.publish_batch, TopicArn=arn, PublishBatchRequestEntries=same)[0] == "BatchEntryIdsNotDistinct"
    bad_id = [{"Id": "no spaces", "Message": "m"}]
    assert error_of(sns.publish_batch, TopicArn=arn, PublishBatchRequestEntries=bad_id)[0] == "InvalidBatchEntryId"
    big = [{"Id": f"e{i}", "Message": "x" * 100_000} for i in range(3)]
    assert error_of(sns.publish_batch, TopicArn=arn, PublishBatchRequestEntries=big)[0] == "BatchRequestTooLong"


# -- filter policies -----------------------------------------------------------------------------------------


def test_filter_policies_keep_and_drop(sns: Any, sqs: Any) -> None:
    arn = topic(sns)
    policies = {
        "exact": {"colour": ["red", "blue"]},
        "prefix": {"region": [{"prefix": "eu-"}]},
        "numeric": {"price": [{"numeric": [">=", 10, "<", 20]}]},
        "anything-but": {"colour": [{"anything-but": ["red", "green"]}]},
        "absent": {"colour": [{"exists": False}]},
        "array": {"tags": ["urgent"]},
        "or": {"$or": [{"colour": ["green"]}, {"price": [{"numeric": ["=", 99]}]}]},
        "ignore-case": {"colour": [{"equals-ignore-case": "RED"}]},
        "suffix": {"region": [{"suffix": "-1"}]},
        "cidr": {"source": [{"cidr": "10.0.0.0/24"}]},
    }
    queues = {
        name: subscribe_queue(sns, sqs, arn, FilterPolicy=json.dumps(p), RawMessageDelivery="true")[0]
        for name, p in policies.items()
    }
    body_url, _ = subscribe_queue(
        sns,
        sqs,
        arn,
        FilterPolicy=json.dumps({"order": {"kind": ["book"], "total": [{"numeric": [">", 5]}]}}),
        FilterPolicyScope="MessageBody",
        RawMessageDelivery="true",
    )

    def attrs(**values: Any) -> dict[str, Any]:
        out = {}
        for key, value in values.items():
            if isinstance(value, list):
                out[key] = {"DataType": "String.Array", "StringValue": json.dumps(value)}
            elif isinstance(value, int | float):
                out[key] = {"DataType": "Number", "StringValue": str(value)}
            else:
                out[key] = {"DataType": "String", "StringValue": value}
        return out

    sent = {
        "m1": attrs(colour="red", region="eu-west-1", price=15),
        "m2": attrs(colour="blue", region="us-east-2", price=20),
        "m3": attrs(colour="green", price=99),
        "m4": attrs(tags=["later", "urgent"], region="eu-central-1", source="10.0.0.7"),
        "m5": attrs(colour="Red", source="10.0.1.7"),
    }
    for body, attributes in sent.items():
        sns.publish(TopicArn=arn, Message=body, MessageAttributes=attributes)
    sns.publish(TopicArn=arn, Message=json.dumps({"order": {"kind": "book", "total": 7}}))
    sns.publish(TopicArn=arn, Message=json.dumps({"order": {"kind": "book", "total": 3}}))
    sns.publish(TopicArn=arn, Message="not json at all")

    expected = {
        "exact": {"m1", "m2"},
        "prefix": {"m1", "m4"},
        "numeric": {"m1"},
        "anything-but": {"m2", "m5"},
        "absent": {"m4", "body"},
        "array": {"m4"},
        "or": {"m3"},
        "ignore-case": {"m1", "m5"},
        "suffix": {"m1", "m4"},
        "cidr": {"m4"},
    }
    for name, url in queues.items():
        want = expected[name]
        # "absent" also takes the three messages published without attributes (they have no colour).
        got = drain(sqs, url, len(want) + (2 if "body" in want else 0))
        bodies = {m["Body"] for m in got if m["Body"].startswith("m")}
        assert bodies == want - {"body"}, name
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1), name
    (matched,) = drain(sqs, body_url, 1)
    assert json.loads(matched["Body"])["order"]["total"] == 7
    assert "Messages" not in sqs.receive_message(QueueUrl=body_url, WaitTimeSeconds=1)


# -- FIFO ----------------------------------------------------------------------------------------------------


def test_fifo_topic_to_fifo_queue_in_order_with_deduplication(sns: Any, sqs: Any) -> None:
    arn = topic(sns, fifo=True)
    url, _sub = subscribe_queue(sns, sqs, arn, RawMessageDelivery="true")
    standard_url, standard_arn = make_queue(sqs)
    assert sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=standard_arn)["SubscriptionArn"]
    _, fifo_queue_arn = make_queue(sqs, FifoQueue="true")
    code, _, message = error_of(sns.subscribe, TopicArn=topic(sns), Protocol="sqs", Endpoint=fifo_queue_arn)
    assert code == "InvalidParameter" and "FIFO" in message
    lam_arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    assert error_of(sns.subscribe, TopicArn=arn, Protocol="lambda", Endpoint=lam_arn)[0] == "InvalidParameter"

    assert error_of(sns.publish, TopicArn=arn, Message="m")[0] == "InvalidParameter"  # no group
    code, _, message = error_of(sns.publish, TopicArn=arn, Message="m", MessageGroupId="g")
    assert code == "InvalidParameter" and "ContentBasedDeduplication" in message
    sequence = []
    first_ids = []
    for i in range(12):
        answer = sns.publish(TopicArn=arn, Message=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"d{i}")
        sequence.append(int(answer["SequenceNumber"]))
        first_ids.append(answer["MessageId"])
    assert sequence == sorted(sequence) and len(set(sequence)) == 12
    again = sns.publish(TopicArn=arn, Message="dup", MessageGroupId="g", MessageDeduplicationId="d3")
    assert again["MessageId"] == first_ids[3]  # within the window: not published again
    batch = sns.publish_batch(
        TopicArn=arn,
        PublishBatchRequestEntries=[
            {"Id": "a", "Message": "m12", "MessageGroupId": "g", "MessageDeduplicationId": "d12"},
            {"Id": "b", "Message": "m13", "MessageGroupId": "g", "MessageDeduplicationId": "d13"},
        ],
    )
    assert [s["Id"] for s in batch["Successful"]] == ["a", "b"] and all(
        s["SequenceNumber"] for s in batch["Successful"]
    )

    bodies: list[str] = []

    def more() -> bool:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        for message in got.get("Messages", []):
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= 14

    wait_for("14 messages in order", more, timeout=60)
    assert bodies == [f"m{i}" for i in range(14)]
    wrapped = drain(sqs, standard_url, 14)
    assert {json.loads(m["Body"])["Message"] for m in wrapped} == {f"m{i}" for i in range(14)}
    assert all("SequenceNumber" in json.loads(m["Body"]) for m in wrapped)


# -- http ----------------------------------------------------------------------------------------------------


def test_http_subscription_handshake_and_delivery(sns: Any, endpoint: Endpoint, server: Server) -> None:
    arn = topic(sns)
    answer = sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=endpoint.url)
    assert answer["SubscriptionArn"] == "pending confirmation"
    (pending,) = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert pending["SubscriptionArn"] == "PendingConfirmation" and pending["Endpoint"] == endpoint.url
    headers, confirmation = wait_for("the confirmation request", lambda: endpoint.of_type("SubscriptionConfirmation"))[
        0
    ]
    assert headers["x-amz-sns-topic-arn"] == arn and headers["x-amz-sns-message-id"] == confirmation["MessageId"]
    assert confirmation["Type"] == "SubscriptionConfirmation" and confirmation["TopicArn"] == arn
    assert confirmation["Token"] and confirmation["SubscribeURL"].startswith(server.endpoint)
    sns.publish(TopicArn=arn, Message="before confirmation")  # not delivered: still pending

    assert error_of(sns.confirm_subscription, TopicArn=arn, Token="wrong")[0] == "InvalidParameter"
    with urllib.request.urlopen(confirmation["SubscribeURL"], timeout=30) as page:  # unsigned, as SNS's is
        assert b"<SubscriptionArn>arn:aws:sns:" in page.read()
    (confirmed,) = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    sub = confirmed["SubscriptionArn"]
    assert sub.startswith(arn + ":")
    assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["PendingConfirmation"] == "false"
    assert sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"] == sub

    sns.publish(
        TopicArn=arn, Message="after", Subject="S", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}}
    )
    headers, note = wait_for("the notification", lambda: endpoint.of_type("Notification"))[0]
    assert headers["x-amz-sns-subscription-arn"] == sub and headers["x-amz-sns-topic-arn"] == arn
    assert headers["x-amz-sns-message-id"] == note["MessageId"]
    assert note["Message"] == "after" and note["Subject"] == "S"
    assert note["MessageAttributes"] == {"k": {"Type": "String", "Value": "v"}}
    assert [n["Message"] for _h, n in endpoint.of_type("Notification")] == ["after"]


def test_http_delivery_retries_then_succeeds(sns: Any, endpoint: Endpoint) -> None:
    arn = topic(sns)
    sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=endpoint.url)
    (_h, confirmation) = wait_for("the confirmation", lambda: endpoint.of_type("SubscriptionConfirmation"))[0]
    sub = sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 5, "numNoDelayRetries": 2, "minDelayTarget": 1, "maxDelayTarget": 1}}
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="DeliveryPolicy", AttributeValue=json.dumps(policy)
    )
    endpoint.status = 500
    sns.publish(TopicArn=arn, Message="eventually")
    wait_for("three failed attempts", lambda: len(endpoint.of_type("Notification")) >= 3)
    endpoint.status = 200
    attempts = wait_for(
        "a delivered attempt", lambda: len(endpoint.of_type("Notification")) >= 4 and endpoint.of_type("Notification")
    )
    assert {n["Message"] for _h, n in attempts} == {"eventually"}
    time.sleep(2.5)
    answered = [
        status for headers, _b, status in endpoint.received if headers["x-amz-sns-message-type"] == "Notification"
    ]
    assert answered[-1] == 200 and answered.count(200) == 1  # once delivered, not sent again
    assert len(answered) >= 4


def test_a_delivery_given_up_goes_to_the_subscriptions_dead_letter_queue(
    sns: Any, sqs: Any, endpoint: Endpoint
) -> None:
    arn = topic(sns)
    dead_url, dead_arn = make_queue(sqs)
    sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=endpoint.url)
    (_h, confirmation) = wait_for("the confirmation", lambda: endpoint.of_type("SubscriptionConfirmation"))[0]
    sub = sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 1}}
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="DeliveryPolicy", AttributeValue=json.dumps(policy)
    )
    redrive = json.dumps({"deadLetterTargetArn": dead_arn})
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RedrivePolicy", AttributeValue=redrive)
    endpoint.status = 500
    message_id = sns.publish(TopicArn=arn, Message="undeliverable")["MessageId"]
    (dead,) = drain(sqs, dead_url, 1)
    envelope = json.loads(dead["Body"])
    assert envelope["MessageId"] == message_id and envelope["Message"] == "undeliverable"
    assert dead["MessageAttributes"]["ErrorMessage"]["StringValue"] == "HTTP 500"
    assert len(endpoint.of_type("Notification")) == 2  # the attempt and its one retry


# -- Lambda --------------------------------------------------------------------------------------------------


def allow_sns(lam: Any, function: str, topic_arn: str) -> None:
    lam.add_permission(
        FunctionName=function,
        StatementId="sns",
        Action="lambda:InvokeFunction",
        Principal="sns.amazonaws.com",
        SourceArn=topic_arn,
    )


def test_fan_out_to_two_functions_and_a_queue(server: Server, sns: Any, sqs: Any, lam: Any) -> None:
    arn = topic(sns)
    first, second, refused = deploy(lam, RECORDER), deploy(lam, RECORDER), deploy(lam, RECORDER)
    allow_sns(lam, first, arn)
    allow_sns(lam, second, arn)
    subs = {}
    for name in (first, second, refused):
        fn_arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
        subs[name] = sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=fn_arn)["SubscriptionArn"]
    url, _ = subscribe_queue(sns, sqs, arn)
    message_id = sns.publish(
        TopicArn=arn, Message="to everyone", MessageAttributes={"n": {"DataType": "Number", "StringValue": "7"}}
    )["MessageId"]

    for name in (first, second):
        (found,) = wait_for(f"{name}'s event", lambda name=name: records(server, name), timeout=90)
        (record,) = found["record"]["Records"]
        assert record["EventSource"] == "aws:sns" and record["EventVersion"] == "1.0"
        assert record["EventSubscriptionArn"] == subs[name]
        event = record["Sns"]
        assert event["Type"] == "Notification" and event["MessageId"] == message_id
        assert event["TopicArn"] == arn and event["Subject"] is None and event["Message"] == "to everyone"
        assert event["SignatureVersion"] == "1" and event["Signature"] and event["SigningCertUrl"]
        assert event["UnsubscribeUrl"].startswith(server.endpoint)
        assert event["MessageAttributes"] == {"n": {"Type": "Number", "Value": "7"}}
        assert event["Timestamp"].endswith("Z") and len(event["Timestamp"]) == 24
    (queued,) = drain(sqs, url, 1)
    assert json.loads(queued["Body"])["MessageId"] == message_id
    time.sleep(1)
    assert records(server, refused) == []  # its policy does not let SNS invoke it


def test_failed_lambda_delivery_follows_the_functions_async_configuration(sns: Any, sqs: Any, lam: Any) -> None:
    arn = topic(sns)
    failed_url, failed_arn = make_queue(sqs)
    failing = deploy(lam, FAILING)
    lam.put_function_event_invoke_config(
        FunctionName=failing, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": failed_arn}}
    )
    allow_sns(lam, failing, arn)
    fn_arn = lam.get_function_configuration(FunctionName=failing)["FunctionArn"]
    sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=fn_arn)
    sns.publish(TopicArn=arn, Message="doomed")
    (failure,) = drain(sqs, failed_url, 1, timeout=90)
    record = json.loads(failure["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["Records"][0]["Sns"]["Message"] == "doomed"


def test_topics_as_destinations_and_dead_letter_targets(sns: Any, sqs: Any, lam: Any) -> None:
    success_topic, dead_topic = topic(sns), topic(sns)
    success_url, _ = subscribe_queue(sns, sqs, success_topic, RawMessageDelivery="true")
    dead_url, _ = subscribe_queue(sns, sqs, dead_topic, RawMessageDelivery="true")
    echo = deploy(lam, ECHO)
    lam.put_function_event_invoke_config(
        FunctionName=echo, DestinationConfig={"OnSuccess": {"Destination": success_topic}}, MaximumRetryAttempts=0
    )
    lam.invoke(FunctionName=echo, InvocationType="Event", Payload=b'{"n": 1}')
    (success,) = drain(sqs, success_url, 1, timeout=90)
    record = json.loads(success["Body"])
    assert record["requestContext"]["condition"] == "Success" and record["responsePayload"] == {"echo": {"n": 1}}

    failing = deploy(lam, FAILING, DeadLetterConfig={"TargetArn": dead_topic})
    lam.put_function_event_invoke_config(FunctionName=failing, MaximumRetryAttempts=0)
    answer = lam.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"n": 2}')
    request_id = answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    (dead,) = drain(sqs, dead_url, 1, timeout=90)
    assert json.loads(dead["Body"]) == {"n": 2}
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["RequestID"] == request_id and attributes["ErrorCode"] == "200"

    missing = success_topic + "-gone"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.put_function_event_invoke_config(
            FunctionName=echo, DestinationConfig={"OnSuccess": {"Destination": missing}}
        )
    assert f"does not have permissions to call Publish on {missing}" in str(caught.value)


TOPIC_WORKER = """import boto3


def handler(event, context):
    sns = boto3.client("sns")
    published = sns.publish(TopicArn=event["topic"], Message="from a function")["MessageId"]
    listed = any(t["TopicArn"] == event["topic"] for t in sns.list_topics()["Topics"])
    refused = {}
    for name, call in (
        ("create", lambda: sns.create_topic(Name="made-by-a-function")),
        ("delete", lambda: sns.delete_topic(TopicArn=event["topic"])),
        ("subscribe", lambda: sns.subscribe(TopicArn=event["topic"], Protocol="http", Endpoint="http://x")),
    ):
        try:
            call()
            refused[name] = "allowed"
        except Exception as exc:
            refused[name] = [exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]]
    return {"published": bool(published), "listed": listed, "refused": refused}
"""


def test_function_credentials_publish_but_do_not_manage_topics(sns: Any, sqs: Any, lam: Any) -> None:
    arn = topic(sns)
    url, _ = subscribe_queue(sns, sqs, arn, RawMessageDelivery="true")
    fn = deploy(lam, TOPIC_WORKER, Timeout=30)
    result = json.loads(lam.invoke(FunctionName=fn, Payload=json.dumps({"topic": arn}))["Payload"].read())
    assert result == {
        "published": True,
        "listed": True,
        "refused": {key: ["AuthorizationError", 403] for key in ("create", "delete", "subscribe")},
    }
    assert drain(sqs, url, 1)[0]["Body"] == "from a function"


LOOPER = """import json

import boto3


def handler(event, context):
    print("RECORD " + json.dumps({"delivery": context.aws_request_id, "record": event}))
    boto3.client("sns").publish(TopicArn=event["Records"][0]["Sns"]["TopicArn"], Message="again")
"""


def test_a_function_topic_function_loop_is_stopped(server: Server, sns: Any, lam: Any) -> None:
    arn = topic(sns)
    looper = deploy(lam, LOOPER, Timeout=30)
    allow_sns(lam, looper, arn)
    fn_arn = lam.get_function_configuration(FunctionName=looper)["FunctionArn"]
    sns.subscribe(TopicArn=arn, Protocol="lambda", Endpoint=fn_arn)
    sns.publish(TopicArn=arn, Message="start")
    wait_for("sixteen runs", lambda: len(records(server, looper)) >= 16, timeout=180)
    time.sleep(3)
    assert len(records(server, looper)) == 16  # Lambda's recursive loop detection stopped the chain


# -- durability ----------------------------------------------------------------------------------------------


def test_kill_9_keeps_every_acknowledged_publish(tmp_path: Path) -> None:
    hook = Endpoint()
    srv = start_server(tmp_path)
    try:
        sns, sqs = srv.client("sns"), srv.client("sqs")
        arn = sns.create_topic(Name="durable")["TopicArn"]
        url, _ = subscribe_queue(sns, sqs, arn, RawMessageDelivery="true")
        sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=hook.url)
        (_h, confirmation) = wait_for("the confirmation", lambda: hook.of_type("SubscriptionConfirmation"))[0]
        sub = sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])["SubscriptionArn"]
        policy = {"healthyRetryPolicy": {"numRetries": 50, "minDelayTarget": 1, "maxDelayTarget": 1}}
        sns.set_subscription_attributes(
            SubscriptionArn=sub, AttributeName="DeliveryPolicy", AttributeValue=json.dumps(policy)
        )
        hook.status = 503  # the endpoint is down: its deliveries stay pending
        ids = {sns.publish(TopicArn=arn, Message=f"m{i}")["MessageId"] for i in range(20)}
        srv.stop(signal.SIGKILL)
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    hook.status = 200
    again = start_server(tmp_path)
    try:
        sqs = again.client("sqs")
        queue_url = sqs.get_queue_url(QueueName=url.rsplit("/", 1)[1])["QueueUrl"]
        # At least once: a delivery made just before the kill may come again after it, so count distinct
        # bodies, not messages.
        want, bodies = {f"m{i}" for i in range(20)}, set()
        deadline = time.monotonic() + 60
        while not bodies >= want:
            assert time.monotonic() < deadline, f"missing after the restart: {sorted(want - bodies)}"
            bodies |= {m["Body"] for m in drain(sqs, queue_url, 1)}
        delivered = wait_for(
            "every notification at the endpoint",
            lambda: {n["MessageId"] for _h, n in hook.of_type("Notification")} >= ids,
            timeout=90,
        )
        assert delivered
        assert again.stop() == 0
    finally:
        if again.process.poll() is None:
            again.stop(signal.SIGKILL)
        hook.close()


# -- AWS JSON 1.0 --------------------------------------------------------------------------------------------


def json_call(server: Server, operation: str, params: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import ACCESS_KEY, SECRET_KEY

    body = json.dumps(params).encode()
    request = AWSRequest(
        method="POST",
        url=server.endpoint + "/",
        data=body,
        headers={
            "X-Amz-Target": f"AmazonSimpleNotificationService.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sns", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(request.url, data=body, headers=dict(request.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(prepared, timeout=30) as answer:
            return answer.status, dict(answer.headers.items()), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), json.loads(exc.read())


def test_the_json_protocol_answers_the_same_operations(server: Server, sqs: Any) -> None:
    name = unique("json")
    status, _, created = json_call(server, "CreateTopic", {"Name": name})
    assert status == 200 and created["TopicArn"].endswith(f":{name}")
    url, queue_arn = make_queue(sqs)
    status, _, _ = json_call(
        server,
        "Subscribe",
        {"TopicArn": created["TopicArn"], "Protocol": "sqs", "Endpoint": queue_arn,
         "Attributes": {"RawMessageDelivery": "true"}},
    )  # fmt: skip
    assert status == 200
    status, _, published = json_call(server, "Publish", {"TopicArn": created["TopicArn"], "Message": "json"})
    assert status == 200 and published["MessageId"]
    assert drain(sqs, url, 1)[0]["Body"] == "json"
    status, headers, error = json_call(server, "GetTopicAttributes", {"TopicArn": created["TopicArn"] + "-gone"})
    assert status == 404 and error["__type"] == "com.amazonaws.sns#NotFoundException"
    assert {k.lower(): v for k, v in headers.items()}["x-amzn-query-error"] == "NotFound;Sender"


# -- the aws CLI ---------------------------------------------------------------------------------------------


def test_aws_cli_topics(server: Server, sqs: Any) -> None:
    name = unique("cli")
    arn = json.loads(aws(server, "sns", "create-topic", "--name", name).stdout)["TopicArn"]
    assert arn.endswith(f":{name}")
    assert arn in aws(server, "sns", "list-topics").stdout
    url, queue_arn = make_queue(sqs)
    aws(server, "sns", "subscribe", "--topic-arn", arn, "--protocol", "sqs", "--notification-endpoint", queue_arn,
        "--attributes", "RawMessageDelivery=true")  # fmt: skip
    published = json.loads(aws(server, "sns", "publish", "--topic-arn", arn, "--message", "via the CLI").stdout)
    assert published["MessageId"]
    assert drain(sqs, url, 1)[0]["Body"] == "via the CLI"
    failed = aws(server, "sns", "get-topic-attributes", "--topic-arn", arn + "-gone", check=False)
    assert failed.returncode != 0 and "NotFound" in failed.stderr
    aws(server, "sns", "delete-topic", "--topic-arn", arn)
