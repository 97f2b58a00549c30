"""SNS's rules that need no server: filter policies (each operator, both scopes, the limits), the http retry
schedule of a delivery policy, SQS's retry schedule, and the query protocol read and written with the names of
SNS's own model."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree

import pytest

from selfless.api.model import service_model
from selfless.services import query
from selfless.services.sns import errors as E
from selfless.services.sns import filters
from selfless.services.sns.delivery import http_delay, sqs_delay
from selfless.services.sns.service import http_retry_policy


def attrs(**values: Any) -> dict[str, dict[str, str]]:
    out = {}
    for key, value in values.items():
        if isinstance(value, list):
            out[key] = {"DataType": "String.Array", "StringValue": json.dumps(value)}
        elif isinstance(value, bytes):
            out[key] = {"DataType": "Binary", "BinaryValue": "AAE="}
        elif isinstance(value, int | float):
            out[key] = {"DataType": "Number", "StringValue": str(value)}
        else:
            out[key] = {"DataType": "String", "StringValue": value}
    return out


def keeps(policy: dict[str, Any], scope: str = "MessageAttributes", body: str = "", **values: Any) -> bool:
    return filters.matches(json.dumps(policy), scope, attrs(**values), body)


@pytest.mark.parametrize(
    ("policy", "kept", "dropped"),
    [
        ({"c": ["red"]}, {"c": "red"}, {"c": "Red"}),
        ({"c": [{"prefix": "re"}]}, {"c": "red"}, {"c": "ore"}),
        ({"c": [{"suffix": "ed"}]}, {"c": "red"}, {"c": "redder"}),
        ({"c": [{"equals-ignore-case": "RED"}]}, {"c": "rEd"}, {"c": "rouge"}),
        ({"c": [{"anything-but": ["red"]}]}, {"c": "blue"}, {"c": "red"}),
        ({"c": [{"anything-but": {"prefix": "r"}}]}, {"c": "blue"}, {"c": "red"}),
        ({"n": [{"numeric": [">", 0, "<=", 5]}]}, {"n": 5}, {"n": 6}),
        ({"n": [{"numeric": ["=", 3.5]}]}, {"n": 3.5}, {"n": 3}),
        ({"c": [{"exists": True}]}, {"c": "x"}, {"d": "x"}),
        ({"c": [{"exists": False}]}, {"d": "x"}, {"c": "x"}),
        ({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "10.1.2.3"}, {"ip": "11.1.2.3"}),
        ({"tags": ["a"]}, {"tags": ["b", "a"]}, {"tags": ["b"]}),
        ({"$or": [{"c": ["red"]}, {"n": [1]}]}, {"n": 1}, {"c": "blue", "n": 2}),
        ({"b": [{"exists": True}]}, {"c": "x", "b": "x"}, {"b": b"\x00"}),  # binary attributes match nothing
    ],
)
def test_each_operator_keeps_and_drops(policy: dict[str, Any], kept: dict[str, Any], dropped: dict[str, Any]) -> None:
    assert keeps(policy, **kept)
    assert not keeps(policy, **dropped)


def test_the_message_body_scope() -> None:
    policy = {"order": {"kind": ["book"], "n": [{"numeric": [">", 1]}]}}
    assert keeps(policy, "MessageBody", json.dumps({"order": {"kind": "book", "n": 2}}))
    assert not keeps(policy, "MessageBody", json.dumps({"order": {"kind": "book", "n": 1}}))
    assert not keeps(policy, "MessageBody", "not json")
    assert not keeps(policy, "MessageBody", "[1, 2]")
    assert not keeps({"c": ["red"]}, "MessageBody", json.dumps({"c": "blue"}), c="red")  # attributes not seen


def test_policies_sns_refuses() -> None:
    for policy, scope in (
        ("{not json", "MessageAttributes"),
        ("{}", "MessageAttributes"),
        ('{"a": []}', "MessageAttributes"),
        ('{"a": {"b": ["c"]}}', "MessageAttributes"),  # nested: the body scope only
        ('{"a": [{"nonsense": 1}]}', "MessageAttributes"),
        (json.dumps({f"k{i}": ["v"] for i in range(6)}), "MessageAttributes"),
        (json.dumps({"a": {"b": ["1"], "c": ["2"], "d": ["3"]}, "e": ["4"], "f": ["5"], "g": ["6"]}), "MessageBody"),
        (json.dumps({"a": [str(i) for i in range(151)]}), "MessageAttributes"),
        (json.dumps({"a": [str(i) for i in range(13)], "b": [str(i) for i in range(12)]}), "MessageAttributes"),
        ("[" * 3000 + "]" * 3000, "MessageBody"),
    ):
        with pytest.raises(E.SnsError) as caught:
            filters.check(policy, scope)
        assert caught.value.code == "InvalidParameter" and str(caught.value).startswith(
            "Invalid parameter: FilterPolicy: "
        ), policy[:80]
    filters.check(json.dumps({"a": [str(i) for i in range(150)]}), "MessageAttributes")  # exactly the limit
    filters.check(json.dumps({"a": {"b": {"c": ["d"]}}}), "MessageBody")


def test_the_http_retry_schedule() -> None:
    default = http_retry_policy(None, None)
    assert [http_delay(default, n) for n in range(1, 5)] == [20, 20, 20, None]  # SNS's 3 retries, 20 s apart
    policy = http_retry_policy(
        json.dumps({"http": {"defaultHealthyRetryPolicy": {"numRetries": 9, "minDelayTarget": 1}}}),
        json.dumps(
            {
                "healthyRetryPolicy": {
                    "numNoDelayRetries": 2,
                    "numMinDelayRetries": 1,
                    "numMaxDelayRetries": 2,
                    "maxDelayTarget": 16,
                    "backoffFunction": "exponential",
                }
            }
        ),
    )
    delays = [http_delay(policy, n) for n in range(1, 11)]
    assert delays[:3] == [0, 0, 1]  # no delay, then the minimum
    backoff = delays[3:7]  # four retries backing off from 1 s to 16 s, exponentially
    assert backoff[0] == 1 and backoff[-1] == 16 and backoff == sorted(backoff)
    assert backoff[1] == pytest.approx(16 ** (1 / 3)) and backoff[2] == pytest.approx(16 ** (2 / 3))
    assert delays[7:9] == [16, 16] and delays[9] is None  # two at the maximum, then given up (9 retries)


def test_the_sqs_retry_schedule() -> None:
    delays = [sqs_delay(n) for n in range(1, 20)]
    assert delays[:3] == [0, 0, 0] and delays[3:5] == [1, 1]
    assert delays[5:15] == sorted(delays[5:15]) and max(delays) == 20 and delays[-1] == 20


def test_the_query_protocol_with_the_model_s_names() -> None:
    model = service_model("sns")
    reader = query.Reader(query.ModelNaming())
    form = query.form_of(
        b"Action=PublishBatch&TopicArn=arn"
        b"&PublishBatchRequestEntries.member.1.Id=a&PublishBatchRequestEntries.member.1.Message=one"
        b"&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name=k"
        b"&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.DataType=String"
        b"&PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue=v"
        b"&PublishBatchRequestEntries.member.2.Id=b&PublishBatchRequestEntries.member.2.Message=two",
        "",
    )
    assert reader.parse(model.operation_model("PublishBatch").input_shape, form) == {
        "TopicArn": "arn",
        "PublishBatchRequestEntries": [
            {"Id": "a", "Message": "one", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
            {"Id": "b", "Message": "two"},
        ],
    }
    form = query.form_of(b"Action=CreateTopic&Name=t&Attributes.entry.1.key=DisplayName&Attributes.entry.1.value=D", "")
    assert reader.parse(model.operation_model("CreateTopic").input_shape, form) == {
        "Name": "t",
        "Attributes": {"DisplayName": "D"},
    }
    form = query.form_of(b"Action=UntagResource&ResourceArn=r&TagKeys=", "")
    assert reader.parse(model.operation_model("UntagResource").input_shape, form) == {"ResourceArn": "r", "TagKeys": []}

    writer = query.Writer(query.ModelNaming(), "urn:sns")
    answer = {"Attributes": {"A": "1"}}
    xml = writer.answer("GetTopicAttributes", model.operation_model("GetTopicAttributes").output_shape, answer, "r1")
    ns = {"s": "urn:sns"}
    root = ElementTree.fromstring(xml)
    entry = root.find("s:GetTopicAttributesResult/s:Attributes/s:entry", ns)
    assert entry is not None and entry.findtext("s:key", namespaces=ns) == "A"
    assert entry.findtext("s:value", namespaces=ns) == "1"
    empty = writer.answer("TagResource", model.operation_model("TagResource").output_shape, {}, "r2")
    assert b"<TagResourceResult></TagResourceResult>" in empty  # botocore looks for the wrapper


def test_an_http_delivery_is_bounded_by_its_deadline_and_reads_only_the_status() -> None:
    """A silent endpoint costs the attempt its deadline and no more; an endless status line is refused."""
    import asyncio
    import time

    from selfless.services.sns import delivery

    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read()  # until the client gives up and closes
            finally:
                writer.close()

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(b"HTTP/1.1 200 " + b"x" * 200_000)
                await writer.drain()
                await reader.read()
            except OSError:
                pass
            finally:
                writer.close()

        async def fine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            writer.close()

        servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (silent, endless, fine)]
        urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/x" for s in servers]
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await delivery._post(urls[0], b"{}", {})
        assert time.monotonic() - started < 2
        with pytest.raises(delivery.DeliveryFailed):
            async with asyncio.timeout(5):
                await delivery._post(urls[1], b"{}", {})
        assert await delivery._post(urls[2], b"{}", {"x-amz-sns-message-type": "Notification"}) == 204
        with pytest.raises(delivery.DeliveryFailed):
            await delivery._post("http://127.0.0.1:1/refused", b"{}", {})
        for s in servers:
            s.close()
            await s.wait_closed()

    asyncio.run(scenario())
