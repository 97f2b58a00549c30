"""Event source mappings on the built-in SQS queues, end to end with boto3: the API and AWS's refusals, batches
and batching windows, ReportBatchItemFailures, FilterCriteria, poison messages to the dead-letter queue,
disabling, kill -9 of the server while batches run (every message handled at least once, deleted only after
success), and a mapping that outlives a restart."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, deploy, make_zip, start_server
from tests.e2e.test_async import wait_for
from tests.e2e.test_awscli import aws
from tests.e2e.test_builtin_queue_targets import make_queue

# One log line per batch: its message ids, bodies and receive counts, and the first record whole. Bodies that
# start with "flaky" fail (ReportBatchItemFailures) on their first receive; a "poison" body fails the batch.
RECORDER = """import json


def handler(event, context):
    records = event["Records"]
    print("BATCH " + json.dumps({
        "ids": [r["messageId"] for r in records],
        "bodies": [r["body"] for r in records],
        "counts": [r["attributes"]["ApproximateReceiveCount"] for r in records],
        "first": records[0],
    }))
    if any(r["body"] == "poison" for r in records):
        raise ValueError("poison")
    flaky = [r for r in records if r["body"].startswith("flaky") and r["attributes"]["ApproximateReceiveCount"] == "1"]
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in flaky]}
"""


def batches(server: Server, function: str) -> list[dict[str, Any]]:
    """Every batch the recorder logged, oldest first."""
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


def counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(got[names[0]]), int(got[names[1]])


def wait_state(lam: Any, mapping_id: str, state: str, timeout: float = 60.0) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        found: dict[str, Any] = lam.get_event_source_mapping(UUID=mapping_id)
        return found if found["State"] == state else None

    result: dict[str, Any] = wait_for(f"mapping {mapping_id} {state}", settled, timeout=timeout)
    return result


def send(sqs: Any, url: str, bodies: list[str]) -> list[str]:
    """Send in batches of 10; the message ids."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer
        ids += [s["MessageId"] for s in sorted(answer["Successful"], key=lambda s: int(s["Id"]))]
    return ids


def error(call: Any, **params: Any) -> tuple[str, str]:
    try:
        call(**params)
    except Exception as exc:  # botocore's ClientError
        response = getattr(exc, "response", None)
        assert response is not None, exc
        return response["Error"]["Code"], response["Error"]["Message"]
    raise AssertionError("no error")


@pytest.fixture
def recorder(lam: Any) -> Iterator[str]:
    name = deploy(lam, RECORDER)
    yield name
    for mapping in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    lam.delete_function(FunctionName=name)


def test_the_api_and_its_refusals(server: Server, lam: Any, lam_unvalidated: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    _url, arn = make_queue(sqs)
    fn_arn = lam.get_function_configuration(FunctionName=recorder)["FunctionArn"]

    created = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["State"] == "Creating" and created["StateTransitionReason"] == "USER_INITIATED"
    assert created["BatchSize"] == 10 and created["MaximumBatchingWindowInSeconds"] == 0
    assert created["EventSourceArn"] == arn and created["FunctionArn"] == fn_arn
    assert created["FunctionResponseTypes"] == [] and "ScalingConfig" not in created
    assert created["EventSourceMappingArn"].endswith(f":event-source-mapping:{created['UUID']}")
    mapping_id = created["UUID"]
    enabled = wait_state(lam, mapping_id, "Enabled")
    assert enabled["LastProcessingResult"] == "No records processed"
    assert enabled["LastModified"].timestamp() == pytest.approx(created["LastModified"].timestamp())

    listed = lam.list_event_source_mappings(FunctionName=recorder)["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [mapping_id]
    assert [m["UUID"] for m in lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]] == [
        mapping_id
    ]
    assert lam.list_event_source_mappings(EventSourceArn=arn + "-other")["EventSourceMappings"] == []

    code, message = error(lam.create_event_source_mapping, EventSourceArn=arn, FunctionName=recorder)
    assert code == "ResourceConflictException"
    assert message == (
        f'An event source mapping with SQS arn (" {arn} ") and function (" {recorder} ") already exists. '
        f"Please update or delete the existing mapping with UUID {mapping_id}"
    )
    code, message = error(lam.create_event_source_mapping, EventSourceArn=arn + "-missing", FunctionName=recorder)
    assert (code, message) == (
        "InvalidParameterValueException",
        "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
        "SQS Error Message: The specified queue does not exist or you do not have access to it.",
    )
    _other_url, other = make_queue(sqs)
    code, message = error(lam.create_event_source_mapping, EventSourceArn=other, FunctionName=recorder, BatchSize=100)
    assert (code, message) == (
        "InvalidParameterValueException",
        "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10",
    )
    _fifo_url, fifo = make_queue(sqs, FifoQueue="true")
    code, message = error(
        lam.create_event_source_mapping, EventSourceArn=fifo, FunctionName=recorder, MaximumBatchingWindowInSeconds=5
    )
    assert (code, message) == ("InvalidParameterValueException", "Batching window is not supported for FIFO queues")
    code, _ = error(lam_unvalidated.create_event_source_mapping, EventSourceArn=other, FunctionName=recorder,
                    BatchSize=10001, MaximumBatchingWindowInSeconds=1)  # fmt: skip
    assert code == "ValidationException"
    code, _ = error(lam_unvalidated.create_event_source_mapping, EventSourceArn=other, FunctionName=recorder,
                    ScalingConfig={"MaximumConcurrency": 1})  # fmt: skip
    assert code == "ValidationException"
    code, _ = error(lam.create_event_source_mapping, EventSourceArn=other, FunctionName=recorder + "-missing")
    assert code == "ResourceNotFoundException"
    code, message = error(
        lam.create_event_source_mapping, EventSourceArn=other, FunctionName=recorder, StartingPosition="LATEST"
    )
    assert (code, message) == ("InvalidParameterValueException", "StartingPosition is not valid for SQS event sources.")

    # A qualified function is a mapping of its own; options as given.
    qualified = lam.create_event_source_mapping(
        EventSourceArn=other,
        FunctionName=f"{recorder}:$LATEST",
        BatchSize=100,
        MaximumBatchingWindowInSeconds=2,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig={"MaximumConcurrency": 3},
        Enabled=False,
    )
    assert qualified["FunctionArn"] == f"{fn_arn}:$LATEST"
    assert qualified["ScalingConfig"] == {"MaximumConcurrency": 3}
    assert qualified["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    wait_state(lam, qualified["UUID"], "Disabled")

    updating = lam.update_event_source_mapping(UUID=mapping_id, BatchSize=50, MaximumBatchingWindowInSeconds=1)
    assert updating["State"] == "Updating" and updating["BatchSize"] == 50
    wait_state(lam, mapping_id, "Enabled")
    code, message = error(lam.update_event_source_mapping, UUID=mapping_id, MaximumBatchingWindowInSeconds=0)
    assert code == "InvalidParameterValueException" and "greater than 10" in message
    assert lam.update_event_source_mapping(UUID=mapping_id, Enabled=False)["State"] == "Disabling"
    wait_state(lam, mapping_id, "Disabled")
    assert lam.update_event_source_mapping(UUID=mapping_id, Enabled=True)["State"] == "Enabling"
    wait_state(lam, mapping_id, "Enabled")

    assert lam.delete_event_source_mapping(UUID=mapping_id)["State"] == "Deleting"

    def gone() -> bool:
        try:
            lam.get_event_source_mapping(UUID=mapping_id)
        except lam.exceptions.ResourceNotFoundException:
            return True
        return False

    wait_for("the mapping deleted", gone)
    code, message = error(lam.get_event_source_mapping, UUID="00000000-0000-0000-0000-000000000000")
    assert (code, message) == ("ResourceNotFoundException", "The resource you requested does not exist.")
    code, _ = error(lam.delete_event_source_mapping, UUID="00000000-0000-0000-0000-000000000000")
    assert code == "ResourceNotFoundException"


def test_messages_invoke_the_function_in_batches_and_are_deleted(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    url, arn = make_queue(sqs)
    sent = send(sqs, url, [f"m{i}" for i in range(35)])
    sqs.send_message(
        QueueUrl=url,
        MessageBody="with attributes",
        MessageAttributes={
            "color": {"DataType": "String", "StringValue": "blue"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder, BatchSize=10)

    def all_seen() -> bool:
        return len({i for b in batches(server, recorder) for i in b["ids"]}) == len(sent) + 1

    wait_for("every message handled", all_seen, timeout=90)
    found = batches(server, recorder)
    assert all(1 <= len(b["ids"]) <= 10 for b in found)
    assert set(sent) <= {i for b in found for i in b["ids"]}
    wait_for("the queue emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)
    record = next(b["first"] for b in found if b["first"]["body"] == "with attributes" or b["bodies"][0] == "m0")
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody"}
    assert set(record["attributes"]) >= {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    with_attributes = [b["first"] for b in found if b["first"]["body"] == "with attributes"]
    if with_attributes:  # it led its batch: its attributes as Lambda shows them
        shown = with_attributes[0]["messageAttributes"]
        assert shown["color"] == {
            "stringValue": "blue",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        assert shown["blob"]["binaryValue"] == "AAE=" and shown["blob"]["dataType"] == "Binary"
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK"


def test_a_batching_window_collects_messages(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    url, arn = make_queue(sqs)
    mapping = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=recorder, BatchSize=100, MaximumBatchingWindowInSeconds=4
    )
    wait_state(lam, mapping["UUID"], "Enabled")
    sent = []
    for i in range(5):  # apart in time, well within the window
        sent += send(sqs, url, [f"w{i}"])
        time.sleep(0.2)
    found = wait_for("the batch", lambda: batches(server, recorder), timeout=60)
    assert len(found) == 1 and found[0]["ids"] == sent
    # A full batch goes at once, without waiting for the window.
    lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=20, MaximumBatchingWindowInSeconds=300)
    wait_state(lam, mapping["UUID"], "Enabled")
    more = send(sqs, url, [f"f{i}" for i in range(20)])
    found = wait_for("the full batch", lambda: batches(server, recorder)[1:], timeout=60)
    assert len(found) == 1 and sorted(found[0]["ids"]) == sorted(more)


def test_a_partial_batch_failure_deletes_exactly_the_succeeded(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    url, arn = make_queue(sqs, VisibilityTimeout="4")
    mapping = lam.create_event_source_mapping(
        EventSourceArn=arn,
        FunctionName=recorder,
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    wait_state(lam, mapping["UUID"], "Enabled")
    ok1, flaky, ok2 = send(sqs, url, ["ok1", "flaky", "ok2"])

    def retried() -> list[dict[str, Any]]:
        return [b for b in batches(server, recorder) if flaky in b["ids"]][1:]

    again = wait_for("the failed record retried", retried, timeout=60)
    assert again[0]["ids"] == [flaky] and again[0]["counts"] == ["2"]
    found = batches(server, recorder)
    assert found[0]["ids"] == [ok1, flaky, ok2]
    seen = [i for b in found for i in b["ids"]]
    assert seen.count(ok1) == 1 and seen.count(ok2) == 1  # deleted after the first batch: never again
    wait_for("the queue emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)


def test_a_poison_message_reaches_the_dead_letter_queue(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    dlq_url, dlq_arn = make_queue(sqs)
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url, arn = make_queue(sqs, VisibilityTimeout="1", RedrivePolicy=policy)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder, BatchSize=1)
    (poison,) = send(sqs, url, ["poison"])

    def in_dlq() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages", [])
        return got

    moved = wait_for("the poison message in the dead-letter queue", in_dlq, timeout=60)
    assert moved[0]["MessageId"] == poison and moved[0]["Body"] == "poison"
    tries = [b for b in batches(server, recorder) if b["ids"] == [poison]]
    assert [b["counts"] for b in tries] == [["1"], ["2"]]
    found = lam.get_event_source_mapping(UUID=mapping["UUID"])
    assert found["LastProcessingResult"] == "PROBLEM: Function call failed"


def test_disabling_stops_processing_and_enabling_resumes(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    url, arn = make_queue(sqs)
    mapping = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=recorder)
    wait_state(lam, mapping["UUID"], "Enabled")
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    wait_state(lam, mapping["UUID"], "Disabled")
    (held,) = send(sqs, url, ["held"])
    deadline = time.monotonic() + 3  # a poller would have taken it by now
    while time.monotonic() < deadline:
        assert counts(sqs, url) == (1, 0)
        time.sleep(0.2)
    assert batches(server, recorder) == []
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    found = wait_for("the held message handled", lambda: batches(server, recorder), timeout=60)
    assert found[0]["ids"] == [held]


def test_a_kill_loses_no_message_and_the_mapping_survives_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        lam, sqs = srv.client(), srv.client("sqs")
        # Each batch takes a while, so that the kill finds batches invoked and not yet deleted.
        slow = RECORDER.replace("    records = event", "    import time\n    time.sleep(0.2)\n    records = event")
        fn = deploy(lam, slow)
        url, arn = make_queue(sqs, VisibilityTimeout="3")
        mapping = lam.create_event_source_mapping(
            EventSourceArn=arn, FunctionName=fn, BatchSize=5, ScalingConfig={"MaximumConcurrency": 4}
        )
        wait_state(lam, mapping["UUID"], "Enabled")
        sent = send(sqs, url, [f"k{i}" for i in range(150)])
        wait_for("batches running", lambda: len(batches(srv, fn)) >= 3, timeout=60)
        srv.stop(signal.SIGKILL)
    finally:
        if srv.process.poll() is None:
            srv.stop(signal.SIGKILL)
    again = start_server(tmp_path)
    try:
        lam, sqs = again.client(), again.client("sqs")
        found = lam.get_event_source_mapping(UUID=mapping["UUID"])
        assert found["State"] == "Enabled" and found["BatchSize"] == 5
        assert found["ScalingConfig"] == {"MaximumConcurrency": 4}

        def all_handled() -> bool:
            return {i for b in batches(again, fn) for i in b["ids"]} >= set(sent)

        wait_for("every sent message handled", all_handled, timeout=120)
        wait_for("the queue emptied", lambda: counts(sqs, url) == (0, 0), timeout=60)
        assert {i for b in batches(again, fn) for i in b["ids"]} == set(sent)
    finally:
        assert again.stop() == 0, again.log()


def throttles(server: Server) -> float:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("selfless_throttles_total{") and "ReservedFunctionConcurrentInvocationLimitExceeded" in line
    )


def test_a_throttled_function_loses_no_message(server: Server, lam: Any, recorder: str) -> None:
    sqs = server.client("sqs")
    slow = RECORDER.replace("    records = event", "    import time\n    time.sleep(0.3)\n    records = event")
    lam.update_function_code(FunctionName=recorder, ZipFile=make_zip({"app.py": slow}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=recorder, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    lam.put_function_concurrency(FunctionName=recorder, ReservedConcurrentExecutions=1)
    dlq_url, dlq_arn = make_queue(sqs)
    # Any second receive of a message would move it to the dead-letter queue: throttles must not cause one.
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    url, arn = make_queue(sqs, VisibilityTimeout="60", RedrivePolicy=policy)
    before = throttles(server)
    sent = send(sqs, url, [f"t{i}" for i in range(12)])
    lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=recorder, BatchSize=1, ScalingConfig={"MaximumConcurrency": 5}
    )

    def all_handled() -> bool:
        return sorted(i for b in batches(server, recorder) for i in b["ids"]) == sorted(sent)

    wait_for("every message handled once", all_handled, timeout=90)
    wait_for("the queue emptied", lambda: counts(sqs, url) == (0, 0), timeout=30)
    assert counts(sqs, dlq_url) == (0, 0)
    assert throttles(server) > before  # more pollers than the function may run: some batches were throttled


def test_filter_criteria_keep_matching_messages_and_delete_the_others(server: Server, lam: Any, recorder: str) -> None:
    """A filter on a JSON body field: matching messages invoke the function, the others are deleted without
    invoking it; an update that changes the filter takes effect; AWS's refusal of an invalid pattern."""
    sqs = server.client("sqs")
    url, arn = make_queue(sqs)
    orders = '{ "body" : { "kind" : [ "order" ], "total": [ { "numeric": [ ">", 10 ] } ] } }'
    code, message = error(
        lam.create_event_source_mapping,
        EventSourceArn=arn,
        FunctionName=recorder,
        FilterCriteria={"Filters": [{"Pattern": '{"body": {"kind": [{"wildcard": "o*"}]}}'}]},
    )
    assert (code, message) == ("InvalidParameterValueException", "Invalid filter pattern definition.")

    mapping = lam.create_event_source_mapping(
        EventSourceArn=arn, FunctionName=recorder, FilterCriteria={"Filters": [{"Pattern": orders}]}
    )
    assert mapping["FilterCriteria"] == {"Filters": [{"Pattern": orders}]}  # as given
    mapping_id = mapping["UUID"]
    assert wait_state(lam, mapping_id, "Enabled")["FilterCriteria"] == {"Filters": [{"Pattern": orders}]}
    listed = lam.list_event_source_mappings(FunctionName=recorder)["EventSourceMappings"]
    assert listed[0]["FilterCriteria"] == {"Filters": [{"Pattern": orders}]}

    def body(kind: str, total: int, n: int) -> str:
        return json.dumps({"kind": kind, "total": total, "n": n})

    keep = [body("order", 20 + i, i) for i in range(4)]
    drop = [body("refund", 50, 10), body("order", 5, 11), "kind order, not JSON", body("ORDER", 50, 12)]
    send(sqs, url, [*drop[:2], *keep[:2], *drop[2:], *keep[2:]])

    def bodies() -> list[str]:
        return sorted(b for batch in batches(server, recorder) for b in batch["bodies"])

    wait_for("the matching messages handled", lambda: bodies() == sorted(keep), timeout=60)
    wait_for("the queue emptied (the others deleted)", lambda: counts(sqs, url) == (0, 0), timeout=30)
    assert bodies() == sorted(keep)  # the filtered messages never reached the function

    # A new filter takes effect; an invalid one on update is refused and changes nothing.
    code, message = error(
        lam.update_event_source_mapping, UUID=mapping_id, FilterCriteria={"Filters": [{"Pattern": "{}"}]}
    )
    assert (code, message) == ("InvalidParameterValueException", "Invalid filter pattern definition.")
    refunds = '{"body": {"kind": [{"equals-ignore-case": "REFUND"}]}}'
    updated = lam.update_event_source_mapping(UUID=mapping_id, FilterCriteria={"Filters": [{"Pattern": refunds}]})
    assert updated["State"] == "Updating" and updated["FilterCriteria"] == {"Filters": [{"Pattern": refunds}]}
    wait_state(lam, mapping_id, "Enabled")
    later_keep = [body("refund", 1, 20), body("Refund", 2, 21)]
    send(sqs, url, [body("order", 99, 22), *later_keep, "refund"])
    wait_for("the refunds handled", lambda: bodies() == sorted(keep + later_keep), timeout=60)
    wait_for("the queue emptied again", lambda: counts(sqs, url) == (0, 0), timeout=30)
    assert bodies() == sorted(keep + later_keep)

    # An empty FilterCriteria removes the filter (the aws CLI, as AWS's guide does it): every message goes to the
    # function again.
    cleared = json.loads(
        aws(server, "lambda", "update-event-source-mapping", "--uuid", mapping_id, "--filter-criteria", "{}").stdout
    )
    assert "FilterCriteria" not in cleared
    wait_state(lam, mapping_id, "Enabled")
    send(sqs, url, ["plain"])
    wait_for("the unfiltered message handled", lambda: "plain" in bodies(), timeout=60)
