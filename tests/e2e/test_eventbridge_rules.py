"""EventBridge rules with the unchanged boto3 ``events`` client and the aws CLI: every operation and its errors,
and a scheduled rule running its targets: a function EventBridge may invoke, a queue whose policy lets it
send, and a function that does not trust it (its run goes to the target's dead-letter queue)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, deploy, unique
from tests.e2e.test_awscli import aws
from tests.e2e.test_s3 import client as s3_client
from tests.e2e.test_s3_notifications import records, wait_records

RECORDER = """import json


def handler(event, context):
    print("RECORD " + json.dumps(event))
"""


@pytest.fixture(scope="module")
def events(server: Server) -> Any:
    return server.client("events")


@pytest.fixture(scope="module")
def sqs(server: Server) -> Any:
    return server.client("sqs")


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def account_of(lam: Any, function: str) -> str:
    return str(lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"].split(":")[4])


def fn_arn(account: str, name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{account}:function:{name}"


def queue(sqs: Any, name: str | None = None, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name or unique("q"), Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def let_events_send(sqs: Any, url: str, queue_arn: str, rule_arn: str) -> None:
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Statement": [statement]})})


def receive(sqs: Any, url: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} messages arrived"
        answer = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2, MessageAttributeNames=["All"]
        )
        found += answer.get("Messages", [])
    return found


def test_rule_operations(events: Any, lam: Any) -> None:
    name = unique("rule")
    arn = events.put_rule(
        Name=name,
        ScheduleExpression="rate(5 minutes)",
        Description="every five",
        Tags=[{"Key": "team", "Value": "data"}],
    )["RuleArn"]
    assert arn.startswith("arn:aws:events:us-east-1:") and arn.endswith(f":rule/{name}")
    got = events.describe_rule(Name=name)
    assert (got["Name"], got["Arn"], got["State"], got["EventBusName"]) == (name, arn, "ENABLED", "default")
    assert (got["ScheduleExpression"], got["Description"]) == ("rate(5 minutes)", "every five")
    # PutRule again updates it (same ARN); EnableRule / DisableRule change its State.
    assert events.put_rule(Name=name, ScheduleExpression="cron(0 12 * * ? *)")["RuleArn"] == arn
    assert events.describe_rule(Name=name)["ScheduleExpression"] == "cron(0 12 * * ? *)"
    events.disable_rule(Name=name)
    assert events.describe_rule(Name=name)["State"] == "DISABLED"
    events.enable_rule(Name=name, EventBusName="default")
    assert events.describe_rule(Name=name)["State"] == "ENABLED"
    listed = events.list_rules(NamePrefix=name)["Rules"]
    assert [(r["Name"], r["Arn"], r["ScheduleExpression"]) for r in listed] == [(name, arn, "cron(0 12 * * ? *)")]
    # Tags.
    assert events.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "data"}]
    events.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}])
    events.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert events.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    # Targets.
    account = arn.split(":")[4]
    target_arn = fn_arn(account, unique("fn"))
    answer = events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "a", "Arn": target_arn, "Input": '{"x": 1}'},
            {"Id": "b", "Arn": target_arn, "InputPath": "$.detail"},
            {"Id": "bad", "Arn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"},
        ],
    )
    assert answer["FailedEntryCount"] == 1
    assert [(f["TargetId"], f["ErrorCode"]) for f in answer["FailedEntries"]] == [("bad", "ValidationException")]
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    assert targets == [
        {"Id": "a", "Arn": target_arn, "Input": '{"x": 1}'},
        {"Id": "b", "Arn": target_arn, "InputPath": "$.detail"},
    ]
    page = events.list_targets_by_rule(Rule=name, Limit=1)
    assert [t["Id"] for t in page["Targets"]] == ["a"]
    rest = events.list_targets_by_rule(Rule=name, Limit=1, NextToken=page["NextToken"])
    assert [t["Id"] for t in rest["Targets"]] == ["b"] and "NextToken" not in rest
    assert events.list_rule_names_by_target(TargetArn=target_arn)["RuleNames"] == [name]
    # A rule with targets is not deleted (unless forced); without them it is.
    with pytest.raises(ClientError) as exc:
        events.delete_rule(Name=name)
    assert code_of(exc) == (400, "ValidationException", "Rule can't be deleted since it has targets.")
    removed = events.remove_targets(Rule=name, Ids=["a", "b"])
    assert removed["FailedEntryCount"] == 0
    assert events.list_targets_by_rule(Rule=name)["Targets"] == []
    events.delete_rule(Name=name)
    with pytest.raises(ClientError) as exc:
        events.describe_rule(Name=name)
    assert code_of(exc) == (400, "ResourceNotFoundException", f"Rule {name} does not exist on EventBus default.")
    # The default bus.
    bus = events.describe_event_bus()
    assert bus["Name"] == "default" and bus["Arn"].endswith(":event-bus/default")
    assert [b["Name"] for b in events.list_event_buses()["EventBuses"]] == ["default"]


def test_list_rules_pages(events: Any) -> None:
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        events.put_rule(Name=name, ScheduleExpression="rate(1 day)")
    seen, token = [], None
    while True:
        page = events.list_rules(NamePrefix=prefix, Limit=2, **({"NextToken": token} if token else {}))
        assert len(page["Rules"]) <= 2
        seen += [r["Name"] for r in page["Rules"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == names
    for name in names:
        events.delete_rule(Name=name)


def test_errors(events: Any) -> None:
    missing = unique("none")
    for call in (
        lambda: events.describe_rule(Name=missing),
        lambda: events.enable_rule(Name=missing),
        lambda: events.disable_rule(Name=missing),
        lambda: events.list_targets_by_rule(Rule=missing),
        lambda: events.put_targets(Rule=missing, Targets=[{"Id": "a", "Arn": fn_arn("123456789012", "f")}]),
        lambda: events.remove_targets(Rule=missing, Ids=["a"]),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc) == (400, "ResourceNotFoundException", f"Rule {missing} does not exist on EventBus default.")
    events.delete_rule(Name=missing)  # as on AWS, deleting a rule that is not there succeeds
    for bad in ("rate(1 minutes)", "cron(0 12 * * * *)", "at(2030-01-01T00:00:00)", "every day"):
        with pytest.raises(ClientError) as exc:
            events.put_rule(Name=unique("bad"), ScheduleExpression=bad)
        assert code_of(exc) == (400, "ValidationException", "Parameter ScheduleExpression is not valid.")
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique("bad"))
    assert code_of(exc) == (
        400,
        "ValidationException",
        "Parameter(s) EventPattern or ScheduleExpression must be specified.",
    )
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique("bad"), EventPattern='{"source": "not-a-list"}')
    assert code_of(exc)[:2] == (400, "InvalidEventPatternException")
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name=unique("bad"), ScheduleExpression="rate(1 hour)", EventBusName="custom")
    assert code_of(exc) == (400, "ResourceNotFoundException", "Event bus custom does not exist.")
    with pytest.raises(ClientError) as exc:
        events.put_rule(Name="bad name!", ScheduleExpression="rate(1 hour)")
    status, code, message = code_of(exc)
    assert (status, code) == (400, "ValidationException") and "failed to satisfy constraint" in message
    # Too many targets on one rule.
    name = unique("full")
    events.put_rule(Name=name, ScheduleExpression="rate(1 day)")
    arn = fn_arn("123456789012", "f")
    events.put_targets(Rule=name, Targets=[{"Id": f"t{i}", "Arn": arn} for i in range(5)])
    with pytest.raises(ClientError) as exc:
        events.put_targets(Rule=name, Targets=[{"Id": "t5", "Arn": arn}])
    assert code_of(exc)[:2] == (400, "LimitExceededException")
    assert len(events.list_targets_by_rule(Rule=name)["Targets"]) == 5  # nothing changed
    events.put_targets(Rule=name, Targets=[{"Id": "t0", "Arn": arn, "Input": "{}"}])  # replacing one is fine
    # Invalid target parameters come back in FailedEntries.
    answer = events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "t1", "Arn": arn, "Input": "not json"},
            {"Id": "t2", "Arn": arn, "Input": "{}", "InputPath": "$.detail"},
            {"Id": "t3", "Arn": "arn:aws:sqs:us-east-1:123456789012:q.fifo"},
            {"Id": "t4", "Arn": arn, "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:123456789012:d.fifo"}},
        ],
    )
    assert [f["TargetId"] for f in answer["FailedEntries"]] == ["t1", "t2", "t3", "t4"]
    assert "SqsParameters" in answer["FailedEntries"][2]["ErrorMessage"]
    events.delete_rule(Name=name, Force=True)


def test_function_credentials_may_not_touch_rules(events: Any, lam: Any) -> None:
    code = """import boto3


def handler(event, context):
    client = boto3.client("events")
    out = {}
    for what, call in (("list", lambda: client.list_rules()),
                       ("put", lambda: client.put_rule(Name="by-a-function", ScheduleExpression="rate(1 day)"))):
        try:
            call()
            out[what] = "allowed"
        except Exception as exc:
            out[what] = exc.response["Error"]["Code"]
    return out
"""
    fn = deploy(lam, code, Timeout=30)
    result = json.loads(lam.invoke(FunctionName=fn, Payload=b"{}")["Payload"].read())
    assert result == {"list": "AccessDeniedException", "put": "AccessDeniedException"}
    with pytest.raises(ClientError):
        events.describe_rule(Name="by-a-function")


def test_the_aws_cli_puts_a_rule_and_its_targets(server: Server, events: Any) -> None:
    name = unique("cli-rule")
    made = json.loads(
        aws(server, "events", "put-rule", "--name", name, "--schedule-expression", "rate(5 minutes)").stdout
    )
    assert made["RuleArn"].endswith(f":rule/{name}")
    target = fn_arn(made["RuleArn"].split(":")[4], "report")
    put = aws(server, "events", "put-targets", "--rule", name, "--targets", f"Id=1,Arn={target}")
    assert json.loads(put.stdout)["FailedEntryCount"] == 0
    described = json.loads(aws(server, "events", "describe-rule", "--name", name).stdout)
    assert described["ScheduleExpression"] == "rate(5 minutes)" and described["State"] == "ENABLED"
    listed = json.loads(aws(server, "events", "list-targets-by-rule", "--rule", name).stdout)
    assert listed["Targets"] == [{"Id": "1", "Arn": target}]
    refused = aws(server, "events", "delete-rule", "--name", name, check=False)
    assert refused.returncode != 0 and "ValidationException" in refused.stderr
    aws(server, "events", "remove-targets", "--rule", name, "--ids", "1")
    aws(server, "events", "delete-rule", "--name", name)
    gone = aws(server, "events", "describe-rule", "--name", name, check=False)
    assert gone.returncode != 0 and "ResourceNotFoundException" in gone.stderr


def test_a_scheduled_rule_runs_its_targets(server: Server, events: Any, lam: Any, sqs: Any) -> None:
    """One rule every minute with three targets: a function EventBridge may invoke (the Scheduled Event), a
    queue that lets it send (the target's Input), and a function without that permission (its run goes to
    the dead-letter queue, at once, with EventBridge's attributes)."""
    allowed, refused = deploy(lam, RECORDER), deploy(lam, RECORDER)
    account = account_of(lam, allowed)
    name = unique("minutely")
    rule_arn = events.put_rule(Name=name, ScheduleExpression="cron(* * * * ? *)")["RuleArn"]
    lam.add_permission(
        FunctionName=allowed,
        StatementId="events",
        Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com",
        SourceArn=rule_arn,
    )
    url, queue_arn = queue(sqs)
    let_events_send(sqs, url, queue_arn, rule_arn)
    dlq_url, dlq_arn = queue(sqs)
    answer = events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "fn", "Arn": fn_arn(account, allowed)},
            {"Id": "queue", "Arn": queue_arn, "Input": '{"job": "sweep"}'},
            {"Id": "untrusted", "Arn": fn_arn(account, refused), "DeadLetterConfig": {"Arn": dlq_arn}},
        ],
    )
    assert answer["FailedEntryCount"] == 0
    started = time.time()
    ran = wait_records(server, allowed, 1, timeout=120)[0]
    assert ran["detail-type"] == "Scheduled Event" and ran["source"] == "aws.events"
    assert (ran["version"], ran["account"], ran["region"], ran["detail"]) == ("0", account, "us-east-1", {})
    assert ran["resources"] == [rule_arn]
    assert ran["time"].endswith(":00Z")  # the minute it was due
    message = receive(sqs, url, 1)[0]
    assert json.loads(message["Body"]) == {"job": "sweep"}
    dead = receive(sqs, dlq_url, 1)[0]
    assert json.loads(dead["Body"])["detail-type"] == "Scheduled Event"
    shown = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert shown["RULE_ARN"] == rule_arn and shown["TARGET_ARN"] == fn_arn(account, refused)
    assert shown["ERROR_CODE"] == "NO_PERMISSIONS" and shown["RETRY_ATTEMPTS"] == "0"
    assert "EXHAUSTED_RETRY_CONDITION" not in shown
    assert records(server, refused) == []
    events.remove_targets(Rule=name, Ids=["fn", "queue", "untrusted"])
    events.delete_rule(Name=name)
    assert time.time() - started < 130


PUBLISHER = """import boto3


def handler(event, context):
    client = boto3.client("events")
    answer = client.put_events(Entries=[{"Source": "from.a.function", "DetailType": "t", "Detail": '{"n": 1}'}])
    return answer["FailedEntryCount"]
"""


def test_put_events_reaches_the_rules_whose_pattern_matches(server: Server, events: Any, lam: Any, sqs: Any) -> None:
    recorder = deploy(lam, RECORDER)
    account = account_of(lam, recorder)
    source = unique("shop")
    name = unique("orders")
    rule_arn = events.put_rule(
        Name=name,
        EventPattern=json.dumps(
            {"source": [source, "from.a.function"], "detail": {"total": [{"numeric": [">", 100]}]}}
        ),
    )["RuleArn"]
    lam.add_permission(FunctionName=recorder, StatementId="events", Action="lambda:InvokeFunction",
                       Principal="events.amazonaws.com", SourceArn=rule_arn)  # fmt: skip
    url, queue_arn = queue(sqs)
    let_events_send(sqs, url, queue_arn, rule_arn)
    _, closed_arn = queue(sqs)  # no Policy: EventBridge may not send to it
    dlq_url, dlq_arn = queue(sqs)
    gone = fn_arn(account, unique("gone"))
    events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "closed", "Arn": closed_arn, "DeadLetterConfig": {"Arn": dlq_arn}},
            {"Id": "gone", "Arn": gone, "DeadLetterConfig": {"Arn": dlq_arn}},
            {"Id": "fn", "Arn": fn_arn(account, recorder)},
            {"Id": "q", "Arn": queue_arn, "InputTransformer": {
                "InputPathsMap": {"total": "$.detail.total", "kind": "$.detail-type"},
                "InputTemplate": '{"kind": "<kind>", "total": <total>}'}},
        ],
    )  # fmt: skip
    answer = events.put_events(
        Entries=[
            {"Source": source, "DetailType": "Order Placed", "Detail": json.dumps({"total": 250})},
            {"Source": source, "DetailType": "Order Placed", "Detail": json.dumps({"total": 5})},  # no match
            {"Source": "elsewhere", "DetailType": "Order Placed", "Detail": json.dumps({"total": 999})},
            {"Source": source, "DetailType": "Order Placed", "Detail": "not json"},
            {"Source": source, "Detail": "{}"},
        ]
    )
    assert answer["FailedEntryCount"] == 2
    assert [e.get("ErrorCode") for e in answer["Entries"]] == [None, None, None, "MalformedDetail", "InvalidArgument"]
    first = answer["Entries"][0]["EventId"]
    (got,) = wait_records(server, recorder, 1)
    assert got["id"] == first and got["source"] == source and got["detail-type"] == "Order Placed"
    assert got["detail"] == {"total": 250} and got["account"] == account
    assert json.loads(receive(sqs, url, 1)[0]["Body"]) == {"kind": "Order Placed", "total": 250}
    letters = {m["MessageAttributes"]["TARGET_ARN"]["StringValue"]: m for m in receive(sqs, dlq_url, 2)}
    assert letters[closed_arn]["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "NO_PERMISSIONS"
    assert letters[gone]["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "NO_RESOURCE"
    assert json.loads(letters[gone]["Body"])["id"] == first
    # A function's own credentials may put events (and nothing else of the events API).
    publisher = deploy(lam, PUBLISHER, Timeout=30)
    assert json.loads(lam.invoke(FunctionName=publisher, Payload=b"{}")["Payload"].read()) == 0
    time.sleep(1.0)
    assert len(records(server, recorder)) == 1  # its event has no total over 100: not matched
    events.delete_rule(Name=name, Force=True)


ECHO = """def handler(event, context):
    return {"echo": event}
"""


def test_function_results_on_the_default_bus_reach_matching_rules(events: Any, lam: Any, sqs: Any) -> None:
    """A destination naming the built-in default bus puts Lambda's invocation record on it (source lambda,
    detail-type "Lambda Function Invocation Result - Success", the function as the resource), where rules match
    it as any event; another bus is refused as Lambda refuses a destination it cannot reach."""
    function = deploy(lam, ECHO)
    account = account_of(lam, function)
    bus = f"arn:aws:events:us-east-1:{account}:event-bus/default"
    with pytest.raises(ClientError) as caught:
        lam.put_function_event_invoke_config(
            FunctionName=function,
            DestinationConfig={"OnSuccess": {"Destination": bus.replace("/default", "/custom")}},
        )
    status, code, message = code_of(caught)
    assert (status, code) == (400, "InvalidParameterValueException") and "call PutEvents" in message
    name = unique("results")
    pattern = {
        "source": ["lambda"],
        "detail-type": ["Lambda Function Invocation Result - Success"],
        "resources": [{"prefix": fn_arn(account, function)}],
    }
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern))["RuleArn"]
    url, queue_arn = queue(sqs)
    let_events_send(sqs, url, queue_arn, rule_arn)
    events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": queue_arn}])
    lam.put_function_event_invoke_config(FunctionName=function, DestinationConfig={"OnSuccess": {"Destination": bus}})

    lam.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps({"order": 7}))
    (message,) = receive(sqs, url, 1)
    event = json.loads(message["Body"])
    assert (event["source"], event["detail-type"]) == ("lambda", "Lambda Function Invocation Result - Success")
    assert event["resources"] == [fn_arn(account, function) + ":$LATEST"]
    record = event["detail"]
    assert record["requestPayload"] == {"order": 7} and record["responsePayload"] == {"echo": {"order": 7}}
    assert record["requestContext"]["condition"] == "Success"
    events.remove_targets(Rule=name, Ids=["q"])
    events.delete_rule(Name=name)


def test_rules_publish_to_topics_their_policy_lets_eventbridge_publish_to(
    server: Server, events: Any, sqs: Any
) -> None:
    sns = server.client("sns")
    name, source = unique("to-topic"), unique("orders")
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps({"source": [source]}))["RuleArn"]
    open_topic = sns.create_topic(Name=unique("open"))["TopicArn"]
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": open_topic,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
    sns.set_topic_attributes(
        TopicArn=open_topic, AttributeName="Policy", AttributeValue=json.dumps({"Statement": [statement]})
    )
    closed_topic = sns.create_topic(Name=unique("closed"))["TopicArn"]  # SNS's default policy: owner only
    fanned_url, fanned = queue(sqs)
    sns.subscribe(TopicArn=open_topic, Protocol="sqs", Endpoint=fanned)
    dlq_url, dlq = queue(sqs)
    answer = events.put_targets(
        Rule=name,
        Targets=[
            {"Id": "open", "Arn": open_topic},
            {"Id": "closed", "Arn": closed_topic, "DeadLetterConfig": {"Arn": dlq}},
            {"Id": "fifo", "Arn": open_topic + ".fifo"},
        ],
    )
    assert answer["FailedEntryCount"] == 1 and answer["FailedEntries"][0]["TargetId"] == "fifo"

    events.put_events(Entries=[{"Source": source, "DetailType": "Order Placed", "Detail": '{"id": 1}'}])
    (message,) = receive(sqs, fanned_url, 1)
    envelope = json.loads(message["Body"])
    assert envelope["TopicArn"] == open_topic
    event = json.loads(envelope["Message"])
    assert (event["source"], event["detail-type"], event["detail"]) == (source, "Order Placed", {"id": 1})
    (letter,) = receive(sqs, dlq_url, 1)
    shown = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert shown["TARGET_ARN"] == closed_topic and shown["ERROR_CODE"] == "NO_PERMISSIONS"
    events.remove_targets(Rule=name, Ids=["open", "closed"])
    events.delete_rule(Name=name)


def test_bucket_events_on_the_default_bus_reach_matching_rules(server: Server, events: Any, sqs: Any) -> None:
    """A bucket's EventBridgeConfiguration puts every object event on the default bus in S3's EventBridge shape
    (Object Created / Object Deleted, the key as it is), where a rule's pattern picks them."""
    s3 = s3_client(server)
    bucket = unique("to-bus")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    assert s3.get_bucket_notification_configuration(Bucket=bucket)["EventBridgeConfiguration"] == {}
    name = unique("bucket-events")
    pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "in/"}]}}}
    rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern))["RuleArn"]
    url, queue_arn = queue(sqs)
    let_events_send(sqs, url, queue_arn, rule_arn)
    events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": queue_arn}])

    etag = s3.put_object(Bucket=bucket, Key="in/red flower.jpg", Body=b"jpeg")["ETag"].strip('"')
    s3.put_object(Bucket=bucket, Key="elsewhere.txt", Body=b"not matched by the rule")
    s3.delete_object(Bucket=bucket, Key="in/red flower.jpg")
    got = [json.loads(m["Body"]) for m in receive(sqs, url, 2)]
    created, deleted = sorted(got, key=lambda e: e["detail-type"])
    assert (created["source"], created["detail-type"]) == ("aws.s3", "Object Created")
    assert created["resources"] == [f"arn:aws:s3:::{bucket}"]
    detail = created["detail"]
    assert detail["bucket"] == {"name": bucket} and detail["reason"] == "PutObject"
    assert detail["object"]["key"] == "in/red flower.jpg" and detail["object"]["etag"] == etag
    assert detail["object"]["size"] == 4 and detail["object"]["sequencer"]
    assert deleted["detail-type"] == "Object Deleted"
    assert deleted["detail"]["reason"] == "DeleteObject" and deleted["detail"]["deletion-type"] == "Permanently Deleted"
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    events.remove_targets(Rule=name, Ids=["q"])
    events.delete_rule(Name=name)
