"""Bucket notification configurations, matching and event records, as S3 has them."""

from __future__ import annotations

import itertools
import json
import urllib.parse
from typing import Any

import pytest

from selfless.services.s3 import notify
from selfless.services.s3.notify import NotificationError, Target

FN = "arn:aws:lambda:us-east-1:123456789012:function:thumb"


def config(*events: str, prefix: str | None = None, suffix: str | None = None, **extra: Any) -> dict[str, Any]:
    rules = []
    if prefix is not None:
        rules.append({"Name": "prefix", "Value": prefix})
    if suffix is not None:
        rules.append({"Name": "suffix", "Value": suffix})
    doc: dict[str, Any] = {"LambdaFunctionArn": FN, "Events": list(events), **extra}
    if rules:
        doc["Filter"] = {"Key": {"FilterRules": rules}}
    return doc


def parse(*configs: dict[str, Any]) -> tuple[Target, ...]:
    return notify.parse({"LambdaFunctionConfigurations": list(configs)})


def test_a_configuration_parses_to_targets_with_ids() -> None:
    (named,) = parse(config("s3:ObjectCreated:*", prefix="in/", suffix=".jpg", Id="thumbs"))
    assert named == Target("thumbs", FN, ("s3:ObjectCreated:*",), "in/", ".jpg")
    (unnamed,) = parse(config("s3:ObjectRemoved:Delete"))
    assert unnamed.id and len(unnamed.id) <= 255
    doc = {"LambdaFunctionConfigurations": [config("s3:ObjectRemoved:Delete")]}
    shown = notify.stored(doc, (unnamed,))
    assert shown == {"LambdaFunctionConfigurations": [{**config("s3:ObjectRemoved:Delete"), "Id": unnamed.id}]}
    assert notify.parse({}) == ()


@pytest.mark.parametrize(
    ("wanted", "event", "key", "matches"),
    [
        ("s3:ObjectCreated:*", "s3:ObjectCreated:Put", "in/a.jpg", True),
        ("s3:ObjectCreated:*", "s3:ObjectCreated:CompleteMultipartUpload", "in/a.jpg", True),
        ("s3:ObjectCreated:Put", "s3:ObjectCreated:Copy", "in/a.jpg", False),
        ("s3:ObjectCreated:*", "s3:ObjectRemoved:Delete", "in/a.jpg", False),
        ("s3:ObjectRemoved:*", "s3:ObjectRemoved:DeleteMarkerCreated", "in/a.jpg", True),
        ("s3:ObjectCreated:*", "s3:ObjectCreated:Put", "out/a.jpg", False),
        ("s3:ObjectCreated:*", "s3:ObjectCreated:Put", "in/a.png", False),
        ("s3:ObjectCreated:*", "s3:ObjectCreated:Put", "in/.jpg", True),
    ],
)
def test_matching_by_event_type_prefix_and_suffix(wanted: str, event: str, key: str, matches: bool) -> None:
    (target,) = parse(config(wanted, prefix="in/", suffix=".jpg"))
    assert target.matches(event, key) is matches


def test_filter_rule_names_are_read_without_case_and_given_back_capitalized() -> None:
    doc = config("s3:ObjectCreated:*")
    doc["Filter"] = {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "a/"}]}}
    (target,) = parse(doc)
    assert target.prefix == "a/"
    assert notify.stored({"LambdaFunctionConfigurations": [doc]}, (target,))["LambdaFunctionConfigurations"][0][
        "Filter"
    ] == {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "a/"}]}}
    doc["Filter"] = {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".x"}]}}
    (target,) = parse(doc)
    shown = notify.stored({"LambdaFunctionConfigurations": [doc]}, (target,))["LambdaFunctionConfigurations"][0]
    assert shown["Filter"] == {"Key": {"FilterRules": [{"Name": "Suffix", "Value": ".x"}]}}


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        ([config("s3:ObjectCreated:Everything")], "The event is not supported for notifications"),
        (
            [
                config("s3:ObjectCreated:*", prefix="a", suffix=None)
                | {
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": "a"}, {"Name": "prefix", "Value": "b"}]}
                    }
                }
            ],
            "Cannot specify more than one prefix rule in a filter.",
        ),
        (
            [config("s3:ObjectCreated:*") | {"Filter": {"Key": {"FilterRules": [{"Name": "middle", "Value": "a"}]}}}],
            "filter rule name must be either prefix or suffix",
        ),
        (
            [config("s3:ObjectCreated:*"), config("s3:ObjectCreated:Put", prefix="in/")],
            "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
        ),
        (
            [config("s3:ObjectCreated:*", prefix="in/"), config("s3:ObjectCreated:*", prefix="in/raw/")],
            "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
        ),
        (
            [config("s3:ObjectCreated:*", suffix=".jpg"), config("s3:ObjectCreated:*", suffix="a.jpg")],
            "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
        ),
        (
            [config("s3:ObjectCreated:*", Id="x"), config("s3:ObjectRemoved:*", Id="x")],
            "Configuration id must be unique within a notification configuration",
        ),
    ],
)
def test_configurations_s3_refuses(configs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(NotificationError) as caught:
        parse(*configs)
    assert caught.value.code == "InvalidArgument"
    assert caught.value.message == message


def test_configurations_that_do_not_overlap() -> None:
    targets = parse(
        config("s3:ObjectCreated:*", suffix=".jpg"),
        config("s3:ObjectCreated:*", suffix=".png"),
        config("s3:ObjectCreated:*", prefix="a/", suffix=".gif"),
        config("s3:ObjectCreated:*", prefix="b/", suffix=".gif"),
        config("s3:ObjectRemoved:*"),
    )
    assert len(targets) == 5


def test_missing_function_or_events_is_malformed_xml() -> None:
    for broken in ({"Events": ["s3:ObjectCreated:*"]}, {"LambdaFunctionArn": FN, "Events": []}):
        with pytest.raises(NotificationError) as caught:
            parse(broken)
        assert caught.value.code == "MalformedXML"


def test_topic_and_eventbridge_configurations_parse() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:t"
    doc = {
        "QueueConfigurations": [{"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q", "Events": ["s3:ObjectRemoved:*"]}],
        "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"], "Id": "t"}],
    }
    queue, found = notify.parse(doc)
    assert (found.kind, found.arn, found.id, queue.kind) == ("topic", topic, "t", "queue")
    assert notify.stored(doc, (queue, found))["TopicConfigurations"] == [
        {"TopicArn": topic, "Events": ["s3:ObjectCreated:*"], "Id": "t"}
    ]
    # An EventBridge configuration beside them: every object event, no overlap with the others, shown as {}.
    with_bus = {**doc, "EventBridgeConfiguration": {}}
    parsed = notify.parse(with_bus)
    assert [t.kind for t in parsed] == ["queue", "topic", "bus"]
    assert parsed[2].matches("s3:ObjectCreated:Copy", "any/key") and parsed[2].matches("s3:ObjectRemoved:Delete", "k")
    assert notify.stored(with_bus, parsed)["EventBridgeConfiguration"] == {}


def test_queue_configurations_parse_beside_functions_and_overlap_with_them() -> None:
    queue = "arn:aws:sqs:us-east-1:123456789012:uploads"
    doc = {
        "LambdaFunctionConfigurations": [config("s3:ObjectCreated:*", prefix="in/", Id="fn")],
        "QueueConfigurations": [{"QueueArn": queue, "Events": ["s3:ObjectRemoved:*"], "Id": "q"}],
    }
    fn, q = notify.parse(doc)
    assert (fn.kind, q.kind) == ("function", "queue")
    assert q == Target("q", queue, ("s3:ObjectRemoved:*",), kind="queue")
    assert notify.stored(doc, (fn, q)) == {
        "LambdaFunctionConfigurations": [
            {
                **config("s3:ObjectCreated:*", Id="fn"),
                "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "in/"}]}},
            }
        ],
        "QueueConfigurations": [{"QueueArn": queue, "Events": ["s3:ObjectRemoved:*"], "Id": "q"}],
    }
    overlapping = {**doc, "QueueConfigurations": [{"QueueArn": queue, "Events": ["s3:ObjectCreated:Put"]}]}
    with pytest.raises(NotificationError) as caught:
        notify.parse(overlapping)
    assert caught.value.message.startswith("Configurations overlap")


def test_destinations_s3_may_not_invoke_are_named() -> None:
    targets = parse(
        config("s3:ObjectCreated:*", prefix="a/"),
        config("s3:ObjectCreated:*", prefix="b/") | {"LambdaFunctionArn": FN + "-other"},
    )
    notify.check_destinations(targets, lambda target: None)
    with pytest.raises(NotificationError) as caught:
        notify.check_destinations(
            targets, lambda t: f"Not authorized to invoke function [{t.arn}]" if t.arn != FN else None
        )
    assert caught.value.message == "Unable to validate the following destination configurations"
    assert caught.value.arguments == ((FN + "-other", f"Not authorized to invoke function [{FN}-other]"),)


def test_the_event_record_as_s3_sends_it() -> None:
    record = notify.event_record(
        event_name="s3:ObjectCreated:Put",
        bucket="photos",
        key="in/red flower+1.jpg",
        config_id="thumbs",
        region="us-east-1",
        owner_id="OWNER",
        principal_id="AWS:AKID",
        source_ip="127.0.0.1",
        request_id="REQ",
        host_id="HOST",
        sequencer="0055AED6DCD90281E5",
        size=1024,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        at=1_700_000_000.123,
    )
    assert record == {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2023-11-14T22:13:20.123Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AKID"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "REQ", "x-amz-id-2": "HOST"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "thumbs",
            "bucket": {"name": "photos", "ownerIdentity": {"principalId": "OWNER"}, "arn": "arn:aws:s3:::photos"},
            "object": {
                "key": "in/red+flower%2B1.jpg",
                "size": 1024,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "sequencer": "0055AED6DCD90281E5",
            },
        },
    }
    # What a handler does with the key (AWS's own examples) gives the key back.
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "in/red flower+1.jpg"
    assert json.loads(notify.event_payload(record)) == {"Records": [record]}


def test_a_removal_has_no_size_or_etag_and_a_version_only_when_versioned() -> None:
    common: dict[str, Any] = dict(
        bucket="b",
        key="k",
        config_id="c",
        region="us-east-1",
        owner_id="o",
        principal_id="p",
        source_ip="::1",
        request_id="r",
        host_id="h",
        sequencer="01",
    )
    removed = notify.event_record(event_name="s3:ObjectRemoved:DeleteMarkerCreated", version_id="v1", **common)
    assert removed["eventName"] == "ObjectRemoved:DeleteMarkerCreated"
    assert removed["s3"]["object"] == {"key": "k", "versionId": "v1", "sequencer": "01"}


def test_sequencers_grow() -> None:
    seq = notify.Sequencer()
    values = [seq.next() for _ in range(1000)]
    assert all(len(a) <= len(b) and (len(a) < len(b) or a < b) for a, b in itertools.pairwise(values))
