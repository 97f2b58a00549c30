"""The query protocol's fields read into the JSON protocol's shapes, and answers written as SQS wrote them."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from selfless.api.model import service_model
from selfless.services.sqs import errors as E
from selfless.services.sqs import query


def op(name: str) -> Any:
    return service_model("sqs").operation_model(name)


def test_a_batch_with_attributes_reads_into_the_json_shape() -> None:
    form = query.form_of(
        b"Action=SendMessageBatch&QueueUrl=http%3A%2F%2Fx%2F0%2Fq"
        b"&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one"
        b"&SendMessageBatchRequestEntry.1.DelaySeconds=3"
        b"&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k"
        b"&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String"
        b"&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v"
        b"&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two"
        b"&SendMessageBatchRequestEntry.4.Id=after-a-gap",
        "",
    )
    assert query.action_of(form) == "SendMessageBatch"
    assert query.parse(op("SendMessageBatch").input_shape, form) == {
        "QueueUrl": "http://x/0/q",
        "Entries": [
            {
                "Id": "a",
                "MessageBody": "one",
                "DelaySeconds": 3,
                "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
            },
            {"Id": "b", "MessageBody": "two"},
        ],
    }


def test_maps_lists_and_a_get_query_string() -> None:
    form = query.form_of(
        b"", "Action=CreateQueue&QueueName=q&Attribute.1.Name=DelaySeconds&Attribute.1.Value=5&Tag.1.Key=t&Tag.1.Value="
    )
    assert query.parse(op("CreateQueue").input_shape, form) == {
        "QueueName": "q",
        "Attributes": {"DelaySeconds": "5"},
        "tags": {"t": ""},
    }
    form = query.form_of(b"AttributeName.1=All&MessageAttributeName.1=a.*&MaxNumberOfMessages=2&QueueUrl=u", "")
    assert query.parse(op("ReceiveMessage").input_shape, form) == {
        "QueueUrl": "u",
        "AttributeNames": ["All"],
        "MessageAttributeNames": ["a.*"],
        "MaxNumberOfMessages": 2,
    }


def test_answers_and_errors_as_sqs_wrote_them() -> None:
    result = {
        "Messages": [
            {
                "MessageId": "m1",
                "Body": "<b>",
                "Attributes": {"SentTimestamp": "1"},
                "MessageAttributes": {"k": {"DataType": "Binary", "BinaryValue": "AAE="}},
            }
        ]
    }
    xml = query.answer("ReceiveMessage", op("ReceiveMessage").output_shape, result, "req-1")
    ns = {"q": query.NAMESPACE}
    root = ElementTree.fromstring(xml)
    assert root.tag == f"{{{query.NAMESPACE}}}ReceiveMessageResponse"
    message = root.find("q:ReceiveMessageResult/q:Message", ns)
    assert message is not None and message.findtext("q:Body", namespaces=ns) == "<b>"
    assert message.findtext("q:Attribute/q:Name", namespaces=ns) == "SentTimestamp"
    assert message.findtext("q:MessageAttribute/q:Value/q:BinaryValue", namespaces=ns) == "AAE="
    assert root.findtext("q:ResponseMetadata/q:RequestId", namespaces=ns) == "req-1"
    error = ElementTree.fromstring(query.error(E.no_queue(), "req-2"))
    assert error.findtext("q:Error/q:Code", namespaces=ns) == "AWS.SimpleQueueService.NonExistentQueue"
    assert error.findtext("q:Error/q:Type", namespaces=ns) == "Sender"
