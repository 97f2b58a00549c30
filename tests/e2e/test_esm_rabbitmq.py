"""Event source mappings of Amazon MQ for RabbitMQ brokers, end to end: a server whose SELFLESS_MQ_BROKERS names
the RabbitMQ broker of this machine (127.0.0.1:5672, guest/guest), a broker that is not listening and one whose
credentials are wrong. The API and AWS's refusals for MQ with boto3; messages published with pika reach the
function in the ``aws:rmq`` shape, basic properties included, in batches; a failed batch comes back from the
broker (``redelivered: true``) and nothing is lost; FilterCriteria on ``data``; disabling stops consuming; a
broker that cannot be reached, refuses the credentials or has no such queue is reported. Each test has a queue
of its own, deleted after it."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.conftest import Server, deploy, free_port, start_server, unique
from tests.e2e.test_async import wait_for
from tests.e2e.test_awscli import aws
from tests.e2e.test_event_source_mappings import error, wait_state

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=0"
ACCOUNT = "000000000000"
BROKER = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:local:b-0c9e1c6a-5b2d-4d8e-9a51-1f2e3d4c5b6a"
DOWN = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:down:b-1"
WRONG = f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:wrong:b-2"
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:mq-guest-AbCdEf"
AUTH = [{"Type": "BASIC_AUTH", "URI": SECRET}]

# One log line per batch: the event without the bodies, and the bodies decoded. A body "fail-once" fails the
# batch when the broker delivers it for the first time; "slow" makes it take 3 s then.
RECORDER = """import base64, json, time


def handler(event, context):
    (key, messages), = event["rmqMessagesByQueue"].items()
    bodies = [base64.b64decode(m["data"]).decode("latin-1") for m in messages]
    print("BATCH " + json.dumps({
        "source": event["eventSource"], "arn": event["eventSourceArn"], "key": key,
        "bodies": bodies, "redelivered": [m["redelivered"] for m in messages], "first": messages[0],
    }))
    if any(b == "fail-once" and not m["redelivered"] for b, m in zip(bodies, messages)):
        raise ValueError("fail-once")
    if any(b == "slow" and not m["redelivered"] for b, m in zip(bodies, messages)):
        time.sleep(3)
"""


def brokers_env() -> str:
    return ",".join(
        [
            "local=amqp://guest:guest@127.0.0.1:5672",
            f"{DOWN}=amqp://guest:guest@127.0.0.1:{free_port()}",
            "wrong=amqp://guest:not-the-password@127.0.0.1:5672",
        ]
    )


@pytest.fixture(scope="module")
def mq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("mq"), {"SELFLESS_MQ_BROKERS": brokers_env()})
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def lam(mq_server: Server) -> Any:
    return mq_server.client()


@pytest.fixture
def recorder(lam: Any) -> Iterator[str]:
    name = deploy(lam, RECORDER, Timeout=30)
    yield name
    for mapping in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    lam.delete_function(FunctionName=name)


@contextmanager
def rabbit_queue(**arguments: Any) -> Iterator[tuple[str, Any]]:
    """A queue of its own on the broker (deleted after), and a channel to it."""
    name = unique("q")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # a publish returns once the broker has the message on the queue
        channel.queue_declare(name, arguments=arguments or None)
        try:
            yield name, channel
        finally:
            channel.queue_delete(name)
    finally:
        connection.close()


def publish(channel: Any, queue: str, bodies: list[str | bytes], **properties: Any) -> None:
    for body in bodies:
        channel.basic_publish("", queue, body, pika.BasicProperties(**properties))


def counts(channel: Any, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of the queue."""
    found = channel.queue_declare(queue, passive=True).method
    return int(found.message_count), int(found.consumer_count)


def batches(server: Server, function: str) -> list[dict[str, Any]]:
    logs = server.client("logs")
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"logGroupName": f"/aws/lambda/{function}"}
    try:
        while True:
            page = logs.filter_log_events(**params)
            found += [json.loads(e["message"][6:]) for e in page["events"] if e["message"].startswith("BATCH ")]
            if not page.get("nextToken"):
                return found
            params["nextToken"] = page["nextToken"]
    except logs.exceptions.ResourceNotFoundException:
        return []


def bodies_seen(server: Server, function: str) -> list[str]:
    return [b for batch in batches(server, function) for b in batch["bodies"]]


def create(lam: Any, function: str, queue: str, **params: Any) -> dict[str, Any]:
    answer: dict[str, Any] = lam.create_event_source_mapping(
        EventSourceArn=params.pop("EventSourceArn", BROKER),
        FunctionName=function,
        Queues=[queue],
        SourceAccessConfigurations=params.pop("SourceAccessConfigurations", AUTH),
        **params,
    )
    return answer


def test_the_api_and_its_refusals(mq_server: Server, lam: Any, recorder: str) -> None:
    unvalidated = mq_server.client(parameter_validation=False)
    fn_arn = lam.get_function_configuration(FunctionName=recorder)["FunctionArn"]
    with rabbit_queue() as (queue, _channel):
        access = [*AUTH, {"Type": "VIRTUAL_HOST", "URI": "/"}]
        created = create(lam, recorder, queue, SourceAccessConfigurations=access)
        assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert created["State"] == "Creating" and created["StateTransitionReason"] == "USER_INITIATED"
        assert created["BatchSize"] == 100 and created["MaximumBatchingWindowInSeconds"] == 0
        assert created["EventSourceArn"] == BROKER and created["FunctionArn"] == fn_arn
        assert created["Queues"] == [queue] and created["SourceAccessConfigurations"] == access
        assert "FunctionResponseTypes" not in created and "ScalingConfig" not in created
        mapping_id = created["UUID"]
        enabled = wait_state(lam, mapping_id, "Enabled")
        assert enabled["LastProcessingResult"] == "No records processed"
        assert enabled["StateTransitionReason"] == "USER_INITIATED"
        assert enabled["Queues"] == [queue]

        listed = lam.list_event_source_mappings(EventSourceArn=BROKER)["EventSourceMappings"]
        assert [m["UUID"] for m in listed] == [mapping_id]
        assert [m["UUID"] for m in lam.list_event_source_mappings(FunctionName=recorder)["EventSourceMappings"]] == [
            mapping_id
        ]

        code, message = error(
            lam.create_event_source_mapping,
            EventSourceArn=BROKER,
            FunctionName=recorder,
            Queues=[queue],
            SourceAccessConfigurations=AUTH,
        )
        assert code == "ResourceConflictException"
        assert mapping_id in message and queue in message and BROKER in message

        # Another queue of the same broker is another mapping.
        with rabbit_queue() as (other, _):
            second = create(lam, recorder, other)
            lam.delete_event_source_mapping(UUID=second["UUID"])
            wait_for("the second mapping gone", lambda: _gone(lam, second["UUID"]))

        refusals: list[tuple[dict[str, Any], str]] = [
            ({"Queues": None}, "Queues is required for Amazon MQ event sources: one queue name."),
            (
                {"SourceAccessConfigurations": None},
                "SourceAccessConfigurations must contain a BASIC_AUTH secret for Amazon MQ event sources.",
            ),
            (
                {"SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST", "URI": "/"}]},
                "SourceAccessConfigurations must contain a BASIC_AUTH secret for Amazon MQ event sources.",
            ),
            (
                {"SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": "guest:guest"}]},
                "The BASIC_AUTH URI must be a Secrets Manager secret ARN, got guest:guest.",
            ),
            (
                {"SourceAccessConfigurations": [*AUTH, *AUTH]},
                "Only one BASIC_AUTH SourceAccessConfiguration is allowed.",
            ),
            (
                {"SourceAccessConfigurations": [*AUTH, {"Type": "SASL_SCRAM_512_AUTH", "URI": SECRET}]},
                "Unsupported SourceAccessConfiguration Type SASL_SCRAM_512_AUTH for Amazon MQ event sources: "
                "use BASIC_AUTH and VIRTUAL_HOST.",
            ),
            (
                {"FunctionResponseTypes": ["ReportBatchItemFailures"]},
                "FunctionResponseTypes is not valid for Amazon MQ event sources.",
            ),
            ({"ScalingConfig": {"MaximumConcurrency": 5}}, "ScalingConfig is not valid for Amazon MQ event sources."),
            ({"StartingPosition": "LATEST"}, "StartingPosition is not valid for Amazon MQ event sources."),
            ({"ParallelizationFactor": 2}, "ParallelizationFactor is not valid for Amazon MQ event sources."),
            (
                {"EventSourceArn": f"arn:aws:mq:us-east-1:{ACCOUNT}:broker:nowhere:b-9"},
                f"The broker arn:aws:mq:us-east-1:{ACCOUNT}:broker:nowhere:b-9 does not exist or you do not have "
                "access to it (selfless reaches the brokers that SELFLESS_MQ_BROKERS names).",
            ),
        ]
        for changes, expected in refusals:
            params: dict[str, Any] = {
                "EventSourceArn": BROKER,
                "FunctionName": recorder,
                "Queues": [queue + "-x"],
                "SourceAccessConfigurations": AUTH,
                **changes,
            }
            params = {k: v for k, v in params.items() if v is not None}
            assert error(unvalidated.create_event_source_mapping, **params) == (
                "InvalidParameterValueException",
                expected,
            ), changes
        # The model's own limits: one queue, a batch of at most 10,000.
        code, _ = error(unvalidated.create_event_source_mapping, **_params(recorder, [queue, queue + "-2"]))
        assert code == "ValidationException"
        code, _ = error(unvalidated.create_event_source_mapping, **_params(recorder, [queue]), BatchSize=10_001)
        assert code == "ValidationException"
        assert [m["UUID"] for m in lam.list_event_source_mappings(EventSourceArn=BROKER)["EventSourceMappings"]] == [
            mapping_id
        ]

        # A batch above 10 needs no batching window (unlike SQS).
        updated = lam.update_event_source_mapping(UUID=mapping_id, BatchSize=10_000, MaximumBatchingWindowInSeconds=2)
        assert updated["State"] == "Updating" and updated["BatchSize"] == 10_000
        assert wait_state(lam, mapping_id, "Enabled")["MaximumBatchingWindowInSeconds"] == 2
        assert error(
            unvalidated.update_event_source_mapping, UUID=mapping_id, FunctionResponseTypes=["ReportBatchItemFailures"]
        ) == ("InvalidParameterValueException", "FunctionResponseTypes is not valid for Amazon MQ event sources.")
        assert error(
            unvalidated.update_event_source_mapping,
            UUID=mapping_id,
            SourceAccessConfigurations=[{"Type": "VIRTUAL_HOST", "URI": "/"}],
        ) == (
            "InvalidParameterValueException",
            "SourceAccessConfigurations must contain a BASIC_AUTH secret for Amazon MQ event sources.",
        )
        assert lam.get_event_source_mapping(UUID=mapping_id)["SourceAccessConfigurations"] == access

        disabled = lam.update_event_source_mapping(UUID=mapping_id, Enabled=False)
        assert disabled["State"] == "Disabling"
        wait_state(lam, mapping_id, "Disabled")

        deleted = lam.delete_event_source_mapping(UUID=mapping_id)
        assert deleted["State"] == "Deleting"
        wait_for("the mapping gone", lambda: _gone(lam, mapping_id))


def _params(function: str, queues: list[str]) -> dict[str, Any]:
    return {"EventSourceArn": BROKER, "FunctionName": function, "Queues": queues, "SourceAccessConfigurations": AUTH}


def _gone(lam: Any, mapping_id: str) -> bool:
    try:
        lam.get_event_source_mapping(UUID=mapping_id)
    except lam.exceptions.ResourceNotFoundException:
        return True
    return False


def test_messages_reach_the_function_in_awss_shape(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        publish(
            channel,
            queue,
            ['{"kind":"order","n":1}'],
            content_type="application/json",
            content_encoding="utf-8",
            headers={"h": "value1", "n": 10, "flag": True},
            delivery_mode=2,
            priority=3,
            correlation_id="corr-1",
            reply_to="replies",
            expiration="60000",
            message_id="m-1",
            timestamp=1700000000,
            type="order.created",
            user_id="guest",
            app_id="shop",
        )
        created = create(lam, recorder, queue)
        wait_for("the batch", lambda: batches(mq_server, recorder))
        (batch,) = batches(mq_server, recorder)
        assert batch["source"] == "aws:rmq" and batch["arn"] == BROKER and batch["key"] == f"{queue}::/"
        assert batch["bodies"] == ['{"kind":"order","n":1}']
        assert batch["first"] == {
            "basicProperties": {
                "contentType": "application/json",
                "contentEncoding": "utf-8",
                "headers": {"h": {"bytes": list(b"value1")}, "n": 10, "flag": True},
                "deliveryMode": 2,
                "priority": 3,
                "correlationId": "corr-1",
                "replyTo": "replies",
                "expiration": "60000",
                "messageId": "m-1",
                "timestamp": "Nov 14, 2023, 10:13:20 PM",
                "type": "order.created",
                "userId": "guest",
                "appId": "shop",
                "clusterId": None,
                "bodySize": 22,
            },
            "redelivered": False,
            "data": base64.b64encode(b'{"kind":"order","n":1}').decode(),
        }
        wait_for("acknowledged", lambda: counts(channel, queue)[0] == 0)
        assert lam.get_event_source_mapping(UUID=created["UUID"])["LastProcessingResult"] == "OK"

        # A message without properties: every property null, binary bodies in base64.
        publish(channel, queue, [b"\x00\xffbinary"])
        wait_for("the second batch", lambda: len(batches(mq_server, recorder)) == 2 or None)
        second = batches(mq_server, recorder)[1]["first"]
        assert second["data"] == base64.b64encode(b"\x00\xffbinary").decode()
        assert second["basicProperties"] == {
            "contentType": None,
            "contentEncoding": None,
            "headers": None,
            "deliveryMode": None,
            "priority": None,
            "correlationId": None,
            "replyTo": None,
            "expiration": None,
            "messageId": None,
            "timestamp": None,
            "type": None,
            "userId": None,
            "appId": None,
            "clusterId": None,
            "bodySize": 8,
        }


def test_batches_follow_the_batch_size_and_the_virtual_host(mq_server: Server, lam: Any) -> None:
    function = deploy(lam, RECORDER)
    try:
        with rabbit_queue() as (queue, channel):
            sent = [f"m{i}" for i in range(250)]
            publish(channel, queue, sent)
            create(
                lam,
                function,
                queue,
                BatchSize=100,
                MaximumBatchingWindowInSeconds=1,
                SourceAccessConfigurations=[*AUTH, {"Type": "VIRTUAL_HOST", "URI": "/"}],
            )
            wait_for("every message", lambda: len(set(bodies_seen(mq_server, function))) == len(sent), timeout=90)
            found = batches(mq_server, function)
            assert all(len(b["bodies"]) <= 100 for b in found)
            assert max(len(b["bodies"]) for b in found) == 100  # they were all there: full batches
            assert sorted(bodies_seen(mq_server, function)) == sorted(sent)  # each once: nothing failed
            assert {b["key"] for b in found} == {f"{queue}::/"}
            wait_for("all acknowledged", lambda: counts(channel, queue)[0] == 0)
    finally:
        for mapping in lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"]:
            lam.delete_event_source_mapping(UUID=mapping["UUID"])
        lam.delete_function(FunctionName=function)


def test_a_failed_batch_is_redelivered_and_nothing_is_lost(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        sent = ["a", "fail-once", "b", "c"]
        publish(channel, queue, sent)
        created = create(lam, recorder, queue, BatchSize=10, MaximumBatchingWindowInSeconds=1)

        def done() -> bool:
            return set(bodies_seen(mq_server, recorder)) == set(sent) and any(
                all(b["redelivered"]) for b in batches(mq_server, recorder)
            )

        wait_for("the failed batch redelivered", done, timeout=60)
        found = batches(mq_server, recorder)
        failed = [b for b in found if "fail-once" in b["bodies"] and not any(b["redelivered"])]
        redelivered = [b for b in found if "fail-once" in b["bodies"] and all(b["redelivered"])]
        assert failed and redelivered
        # The whole failed batch came back, every message of it marked redelivered.
        assert set(failed[0]["bodies"]) <= set(redelivered[0]["bodies"])
        wait_for("all acknowledged", lambda: counts(channel, queue) == (0, 1))
        wait_for("OK", lambda: lam.get_event_source_mapping(UUID=created["UUID"])["LastProcessingResult"] == "OK")


def test_filter_criteria_on_data(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        create(
            lam,
            recorder,
            queue,
            FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]},
        )
        publish(channel, queue, ['{"kind":"drop"}', "not json", '{"kind":"keep","n":1}'])
        wait_for("the kept message", lambda: bodies_seen(mq_server, recorder))
        wait_for("all settled", lambda: counts(channel, queue)[0] == 0)
        assert bodies_seen(mq_server, recorder) == ['{"kind":"keep","n":1}']


def test_disabling_stops_consuming(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        mapping_id = create(lam, recorder, queue)["UUID"]
        wait_state(lam, mapping_id, "Enabled")
        wait_for("the consumer", lambda: counts(channel, queue)[1] == 1)
        publish(channel, queue, ["first"])
        wait_for("the first message", lambda: bodies_seen(mq_server, recorder) == ["first"])

        lam.update_event_source_mapping(UUID=mapping_id, Enabled=False)
        wait_state(lam, mapping_id, "Disabled")
        assert counts(channel, queue)[1] == 0  # its consumer (and connection) are gone
        publish(channel, queue, ["second", "third"])
        # Nothing consumes them: they stay on the queue (a consumer would take them within its 0.5 s window).
        wait_for("both on the queue", lambda: counts(channel, queue) == (2, 0))  # a publish is asynchronous
        for _ in range(12):
            assert counts(channel, queue) == (2, 0)
            time.sleep(0.25)
        assert bodies_seen(mq_server, recorder) == ["first"]

        lam.update_event_source_mapping(UUID=mapping_id, Enabled=True)
        wait_for("the rest", lambda: sorted(bodies_seen(mq_server, recorder)) == ["first", "second", "third"])
        lam.delete_event_source_mapping(UUID=mapping_id)
        wait_for("the mapping gone", lambda: _gone(lam, mapping_id))
        assert counts(channel, queue)[1] == 0


def test_a_broker_that_cannot_be_used_is_reported(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        down = create(lam, recorder, queue, EventSourceArn=DOWN)
        wrong = create(lam, recorder, queue, EventSourceArn=WRONG)
        missing = create(lam, recorder, queue + "-missing")

        def result(mapping_id: str) -> dict[str, Any] | None:
            found: dict[str, Any] = lam.get_event_source_mapping(UUID=mapping_id)
            return found if found["LastProcessingResult"].startswith("PROBLEM") else None

        found = wait_for("the unreachable broker reported", lambda: result(down["UUID"]))
        assert found["LastProcessingResult"].startswith("PROBLEM: Connection error. Could not connect to the broker")
        assert found["State"] == "Enabled"
        found = wait_for("the refused credentials reported", lambda: result(wrong["UUID"]))
        assert found["LastProcessingResult"].startswith("PROBLEM: Authentication failed at the broker 127.0.0.1:5672")
        assert found["StateTransitionReason"] == "EVENT_SOURCE_AUTHN_ERROR"
        assert "not-the-password" not in json.dumps(found, default=str)
        found = wait_for("the missing queue reported", lambda: result(missing["UUID"]))
        assert (
            found["LastProcessingResult"] == f"PROBLEM: The queue {queue}-missing does not exist in the virtual host /"
        )
        assert found["StateTransitionReason"] == "ESM_CONFIG_NOT_VALID"

        # Once the queue exists, the same mapping consumes it and says so.
        channel.queue_declare(queue + "-missing")
        try:
            publish(channel, queue + "-missing", ["late"])
            wait_for("the late message", lambda: bodies_seen(mq_server, recorder) == ["late"], timeout=90)
            wait_for(
                "the reason cleared",
                lambda: lam.get_event_source_mapping(UUID=missing["UUID"])["StateTransitionReason"] == "USER_INITIATED",
            )
        finally:
            for mapping in (down, wrong, missing):
                lam.delete_event_source_mapping(UUID=mapping["UUID"])
            for mapping in (down, wrong, missing):
                wait_for("the mapping gone", lambda m=mapping: _gone(lam, m["UUID"]))  # type: ignore[misc]
            channel.queue_delete(queue + "-missing")


def test_a_queue_deleted_under_a_mapping_is_reported_and_consumed_again_once_back(
    mq_server: Server, lam: Any, recorder: str
) -> None:
    with rabbit_queue() as (queue, channel):
        mapping_id = create(lam, recorder, queue)["UUID"]
        wait_for("the consumer", lambda: counts(channel, queue)[1] == 1)
        channel.queue_delete(queue)

        def reported() -> bool:
            found = lam.get_event_source_mapping(UUID=mapping_id)
            return bool(found["StateTransitionReason"] == "ESM_CONFIG_NOT_VALID")

        wait_for("the missing queue reported", reported)
        channel.queue_declare(queue)
        publish(channel, queue, ["back"])
        wait_for("the message", lambda: bodies_seen(mq_server, recorder) == ["back"], timeout=90)
        wait_for("acknowledged", lambda: counts(channel, queue) == (0, 1))


def close_consumer_connection(mapping_id: str) -> None:
    """Have the broker close the mapping's connection (named ``selfless-esm-<UUID>``)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    pids = [line.split("\t")[0] for line in listed.splitlines() if f'"selfless-esm-{mapping_id}"' in line]
    assert len(pids) == 1, listed
    subprocess.run(["rabbitmqctl", "close_connection", pids[0], "test"], capture_output=True, timeout=60, check=True)


def test_a_lost_connection_is_made_again_and_its_batch_redelivered(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        mapping_id = create(lam, recorder, queue)["UUID"]
        wait_for("the consumer", lambda: counts(channel, queue)[1] == 1)
        publish(channel, queue, ["slow"])
        wait_for("the message out", lambda: counts(channel, queue)[0] == 0)
        close_consumer_connection(mapping_id)  # while its batch is collected or invoked: never acknowledged

        def redelivered() -> bool:
            return any(b["bodies"] == ["slow"] and b["redelivered"] == [True] for b in batches(mq_server, recorder))

        wait_for("the batch again, from the broker", redelivered, timeout=60)
        wait_for("acknowledged", lambda: counts(channel, queue) == (0, 1))
        publish(channel, queue, ["after"])
        wait_for("the next message", lambda: "after" in bodies_seen(mq_server, recorder))
        assert lam.get_event_source_mapping(UUID=mapping_id)["State"] == "Enabled"


def test_the_aws_cli_makes_an_amazon_mq_mapping(mq_server: Server, lam: Any, recorder: str) -> None:
    with rabbit_queue() as (queue, channel):
        made = aws(
            mq_server, "lambda", "create-event-source-mapping", "--function-name", recorder,
            "--event-source-arn", BROKER, "--queues", queue, "--batch-size", "5",
            "--source-access-configurations", f"Type=BASIC_AUTH,URI={SECRET}", "Type=VIRTUAL_HOST,URI=/",
        )  # fmt: skip
        mapping = json.loads(made.stdout)
        assert mapping["Queues"] == [queue] and mapping["BatchSize"] == 5
        assert mapping["SourceAccessConfigurations"] == [*AUTH, {"Type": "VIRTUAL_HOST", "URI": "/"}]
        publish(channel, queue, ["by cli"])
        wait_for("the message", lambda: bodies_seen(mq_server, recorder) == ["by cli"])
        refused = aws(
            mq_server, "lambda", "create-event-source-mapping", "--function-name", recorder,
            "--event-source-arn", BROKER, "--queues", queue + "-other", check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "InvalidParameterValueException" in refused.stderr and "BASIC_AUTH" in refused.stderr
        aws(mq_server, "lambda", "delete-event-source-mapping", "--uuid", mapping["UUID"])


def test_a_batch_under_kill_9_comes_back_from_the_broker(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"SELFLESS_MQ_BROKERS": brokers_env()})
    with rabbit_queue() as (queue, channel):
        try:
            lam = srv.client()
            function = deploy(lam, RECORDER, Timeout=30)
            mapping_id = create(lam, function, queue)["UUID"]
            wait_for("the consumer", lambda: counts(channel, queue)[1] == 1)
            publish(channel, queue, ["slow"])
            wait_for("the message out", lambda: counts(channel, queue)[0] == 0)
            srv.stop(signal.SIGKILL)
        finally:
            if srv.process.poll() is None:
                srv.stop(signal.SIGKILL)
        # Never acknowledged: the broker has it again once the connection is gone.
        wait_for("the message back on the queue", lambda: counts(channel, queue) == (1, 0))
        again = start_server(tmp_path, {"SELFLESS_MQ_BROKERS": brokers_env()})
        try:

            def handled() -> bool:
                return any(b["bodies"] == ["slow"] and b["redelivered"] == [True] for b in batches(again, function))

            wait_for("the message handled after the restart", handled, timeout=90)
            wait_for("acknowledged", lambda: counts(channel, queue) == (0, 1))
            again.client().delete_event_source_mapping(UUID=mapping_id)
        finally:
            assert again.stop() == 0, again.log()


def test_mappings_outlive_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path, {"SELFLESS_MQ_BROKERS": brokers_env()})
    try:
        lam = srv.client()
        function = deploy(lam, RECORDER)
        with rabbit_queue() as (queue, channel):
            mapping_id = create(lam, function, queue)["UUID"]
            wait_state(lam, mapping_id, "Enabled")
            assert srv.stop() == 0, srv.log()
            publish(channel, queue, ["while stopped"])
            srv = start_server(tmp_path, {"SELFLESS_MQ_BROKERS": brokers_env()})
            again = srv.client()
            found = again.get_event_source_mapping(UUID=mapping_id)
            assert found["Queues"] == [queue] and found["SourceAccessConfigurations"] == AUTH
            wait_for("the message", lambda: bodies_seen(srv, function) == ["while stopped"])
            wait_for("acknowledged", lambda: counts(channel, queue)[0] == 0)
            again.delete_event_source_mapping(UUID=mapping_id)
            wait_for("the mapping gone", lambda: _gone(again, mapping_id))
    finally:
        assert srv.stop() == 0, srv.log()
