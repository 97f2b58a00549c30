"""Attacks on the built-in topic service: subscriptions past the per-topic bound, deliveries past the pending
bound (an endpoint that keeps failing), messages, attributes, batches and filter policies past their limits,
and a query-protocol form of endless fields. Each is refused at once in SNS's words; the server stays
healthy throughout."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, start_server, unique
from tests.e2e.test_async import wait_for
from tests.e2e.test_builtin_queue_targets import make_queue
from tests.e2e.test_sns import Endpoint, error_of

SUBSCRIPTIONS = 5
PENDING = 20


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("sns-hostile"),
        {"SELFLESS_SNS_MAX_SUBSCRIPTIONS": str(SUBSCRIPTIONS), "SELFLESS_SNS_MAX_PENDING": str(PENDING)},
    )
    yield srv
    assert srv.stop() == 0, srv.log()


def healthy(server: Server) -> bool:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        return bool(r.status == 200)


def test_subscriptions_per_topic_are_bounded(bounded: Server) -> None:
    sns, sqs = bounded.client("sns"), bounded.client("sqs")
    arn = sns.create_topic(Name=unique("many"))["TopicArn"]
    queues = [make_queue(sqs)[1] for _ in range(SUBSCRIPTIONS + 1)]
    for queue_arn in queues[:SUBSCRIPTIONS]:
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    code, status, _ = error_of(sns.subscribe, TopicArn=arn, Protocol="sqs", Endpoint=queues[-1])
    assert (code, status) == ("SubscriptionLimitExceeded", 403)
    assert sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queues[0])["SubscriptionArn"]  # an existing one
    assert len(sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]) == SUBSCRIPTIONS
    assert healthy(bounded)


def test_pending_deliveries_are_bounded(bounded: Server) -> None:
    sns = bounded.client("sns")
    arn = sns.create_topic(Name=unique("pending"))["TopicArn"]
    hook = Endpoint()
    try:
        sns.subscribe(TopicArn=arn, Protocol="http", Endpoint=hook.url)
        (_h, confirmation) = wait_for("the confirmation", lambda: hook.of_type("SubscriptionConfirmation"))[0]
        sns.confirm_subscription(TopicArn=arn, Token=confirmation["Token"])
        hook.status = 500  # every delivery fails, and waits 20 s for its next attempt
        accepted, refused = 0, []
        for i in range(PENDING + 5):
            try:
                sns.publish(TopicArn=arn, Message=f"m{i}")
                accepted += 1
            except sns.exceptions.ThrottledException as exc:
                refused.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        assert accepted == PENDING and refused == [429] * 5
        assert healthy(bounded)
    finally:
        sns.delete_topic(TopicArn=arn)  # its deliveries go with it
        hook.close()


def test_oversized_messages_attributes_batches_and_policies(bounded: Server) -> None:
    sns, sqs = bounded.client("sns"), bounded.client("sqs")
    arn = sns.create_topic(Name=unique("sizes"))["TopicArn"]
    assert error_of(sns.publish, TopicArn=arn, Message="x" * (1 << 20))[:2] == ("InvalidParameter", 400)
    attributes = {"a": {"DataType": "String", "StringValue": "x" * 262_144}}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=attributes)[0] == "InvalidParameter"
    many = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(100)}
    assert error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=many)[0] == "InvalidParameter"
    entries = [{"Id": f"e{i}", "Message": "x" * 30_000} for i in range(10)]
    assert error_of(sns.publish_batch, TopicArn=arn, PublishBatchRequestEntries=entries)[0] == "BatchRequestTooLong"
    _url, queue_arn = make_queue(sqs)
    policy = json.dumps({"k": [f"v{i}" for i in range(40_000)]})  # ~400 KB
    code, _, _ = error_of(
        sns.subscribe, TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"FilterPolicy": policy}
    )
    assert code == "InvalidParameter"
    deep = "[" * 5000 + "]" * 5000
    code, _, _ = error_of(
        sns.subscribe, TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"FilterPolicy": deep}
    )
    assert code == "InvalidParameter"
    assert sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"] == []
    deep_message = "[" * 100_000 + "]" * 100_000
    code, _, _ = error_of(sns.publish, TopicArn=arn, Message=deep_message, MessageStructure="json")
    assert code == "InvalidParameter"
    deep_array = {"a": {"DataType": "String.Array", "StringValue": deep_message}}
    code, _, _ = error_of(sns.publish, TopicArn=arn, Message="m", MessageAttributes=deep_array)
    assert code == "ParameterValueInvalid"
    assert healthy(bounded)


def test_a_form_with_endless_fields(bounded: Server) -> None:
    """A form of 100,000 fields is refused with SNS's XML error at once, never parsed into 100,000 entries."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b"Action=PublishBatch&TopicArn=x" + b"".join(
        b"&PublishBatchRequestEntries.member.%d.Id=i" % i for i in range(1, 100_001)
    )
    request = AWSRequest(
        method="POST",
        url=bounded.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sns", "us-east-1").add_auth(request)
    prepared = urllib.request.Request(request.url, data=body, headers=dict(request.headers.items()), method="POST")
    started = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(prepared, timeout=30)
    assert caught.value.code == 400
    text = caught.value.read().decode()
    caught.value.close()
    assert "<ErrorResponse" in text and "<Code>MalformedQueryString</Code>" in text
    assert time.monotonic() - started < 10
    assert healthy(bounded)


def test_an_unsigned_confirmation_link_confirms_nothing_without_its_token(bounded: Server) -> None:
    sns = bounded.client("sns")
    arn = sns.create_topic(Name=unique("link"))["TopicArn"]
    for query in (
        f"Action=ConfirmSubscription&TopicArn={arn}&Token=guess",
        f"Action=ConfirmSubscription&TopicArn={arn}",
        "Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:000000000000:" + "x" * 10_000,
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{bounded.endpoint}/?{query}", timeout=10)
        assert caught.value.code in (400, 404)
        assert b"<ErrorResponse" in caught.value.read()
        caught.value.close()
    # Nothing else is reachable unsigned this way.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{bounded.endpoint}/?Action=DeleteTopic&TopicArn={arn}", timeout=10)
    assert caught.value.code == 403
    caught.value.close()
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["TopicArn"] == arn
