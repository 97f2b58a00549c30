"""Asynchronous invocation as AWS does it: event invoke configurations, retries of function errors,
destinations receiving AWS's invocation record, throttled events that wait and then run, and a kill -9 under
load after which every accepted event ends in exactly one success or failure record.

A server of its own, with retries 0.2 s x attempts apart (SELFLESS_ASYNC_RETRY_DELAY) instead of AWS's
minutes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, deploy, start_server, unique

FAILING = """def handler(event, context):
    raise ValueError("no good: %s" % event.get("n"))
"""
ECHO = """def handler(event, context):
    return {"echo": event}
"""
SLOW_OR_ECHO = """import time


def handler(event, context):
    if event.get("sleep"):
        print("sleeping")
        time.sleep(event["sleep"])
    return {"echo": event}
"""
# Prints one line per record it receives: the record itself, and this delivery's own request id.
RECORDER = """import json


def handler(event, context):
    print("RECORD " + json.dumps({"delivery": context.aws_request_id, "record": event}))
"""


@pytest.fixture(scope="module")
def async_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(Path(tmp_path_factory.mktemp("async")), {"SELFLESS_ASYNC_RETRY_DELAY": "0.2"})
    yield srv
    assert srv.stop() == 0, srv.log()


def records(server: Server, recorder: str) -> list[dict[str, Any]]:
    logs = server.client("logs")
    try:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{recorder}")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return [json.loads(e["message"][len("RECORD ") :]) for e in found if e["message"].startswith("RECORD ")]


def log_messages(server: Server, name: str) -> list[str]:
    logs = server.client("logs")
    try:
        return [e["message"] for e in logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]]
    except logs.exceptions.ResourceNotFoundException:
        return []


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def arn_of(lam: Any, name: str) -> str:
    return str(lam.get_function_configuration(FunctionName=name)["FunctionArn"])


def with_recorder(
    lam: Any, code: str, on: tuple[str, ...], deploy_args: dict[str, Any] | None = None, **config: Any
) -> tuple[str, str]:
    """A function from ``code`` and a recorder function that its ``on`` destinations (OnSuccess, OnFailure)
    send their records to; ``config``: the rest of its event invoke config (MaximumRetryAttempts...)."""
    name, recorder = deploy(lam, code, **(deploy_args or {})), deploy(lam, RECORDER)
    destination = {"Destination": arn_of(lam, recorder)}
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={kind: destination for kind in on}, **config
    )
    return name, recorder


def test_event_invoke_config_api(async_server: Server) -> None:
    lam = async_server.client()
    name = deploy(lam, ECHO)
    target = deploy(lam, RECORDER)
    arn = arn_of(lam, name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert missing.value.response["Error"]["Message"] == f"The function {arn}:$LATEST doesn't have an EventInvokeConfig"
    put = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": arn_of(lam, target)}},
    )
    assert put["FunctionArn"] == f"{arn}:$LATEST"
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": arn_of(lam, target)}}
    # Update merges; Put replaces.
    updated = lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert updated["MaximumRetryAttempts"] == 0 and updated["MaximumEventAgeInSeconds"] == 120
    assert updated["DestinationConfig"]["OnFailure"]["Destination"] == arn_of(lam, target)
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=2)
    assert "MaximumEventAgeInSeconds" not in replaced
    assert replaced["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert lam.get_function_event_invoke_config(FunctionName=name)["MaximumRetryAttempts"] == 2
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{arn}:$LATEST"]

    unvalidated = async_server.client(parameter_validation=False)  # the server's own validation
    for bad, code, words in (
        ({"MaximumRetryAttempts": 3}, "ValidationException", ""),
        ({"MaximumEventAgeInSeconds": 59}, "ValidationException", ""),
        # This server has no SQS endpoint: queues are its built-in ones, and there is no queue q.
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}},
            "InvalidParameterValueException",
            "does not have permissions to call SendMessage on arn:aws:sqs:us-east-1:000000000000:q",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:dynamodb:us-east-1:000000000000:table/t"}}},
            "InvalidParameterValueException",
            "is invalid",
        ),
    ):
        with pytest.raises(lam.exceptions.ClientError) as refused:
            unvalidated.put_function_event_invoke_config(FunctionName=name, **bad)
        assert refused.value.response["Error"]["Code"] == code, bad
        assert words in refused.value.response["Error"]["Message"]
    assert lam.get_function_event_invoke_config(FunctionName=name)["MaximumRetryAttempts"] == 2, "unchanged"
    lam.delete_function_event_invoke_config(FunctionName=name)
    assert lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []


def test_retries_then_the_failure_record(async_server: Server) -> None:
    lam = async_server.client()
    name, recorder = with_recorder(lam, FAILING, ("OnFailure",), MaximumRetryAttempts=1)
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 1}))
    assert accepted["StatusCode"] == 202
    request_id = accepted["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    (got,) = wait_for("the failure record", lambda: records(async_server, recorder))
    record = got["record"]
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{arn_of(lam, name)}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
    }
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "no good: 1"
    # Two attempts, each a START in the function's own log, with the same request id (as AWS retries).
    logs = async_server.client("logs")
    starts = [
        e for e in logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        if e["message"].startswith(f"START RequestId: {request_id}")
    ]  # fmt: skip
    assert len(starts) == 2


def test_success_record_and_throttled_events_run_later(async_server: Server) -> None:
    lam = async_server.client()
    name, recorder = with_recorder(lam, SLOW_OR_ECHO, ("OnSuccess",))
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(lam.invoke, FunctionName=name, Payload=json.dumps({"sleep": 2.5}))  # holds the 1
        wait_for("the slow call to start", lambda: "sleeping" in " ".join(log_messages(async_server, name)))
        accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"k": "v"}))
        assert accepted["StatusCode"] == 202
        time.sleep(1.0)
        assert records(async_server, recorder) == [], "throttled: not run yet"
        assert json.loads(busy.result()["Payload"].read()) == {"echo": {"sleep": 2.5}}
    (got,) = wait_for("the success record", lambda: records(async_server, recorder))
    record = got["record"]
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1, "a throttle is not an attempt"
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"echo": {"k": "v"}}


def test_reserved_concurrency_0_sends_events_to_the_failure_path_at_once(async_server: Server) -> None:
    """As AWS does since 2021: a function turned off runs none of its events and does not retry them."""
    lam = async_server.client()
    name, recorder = with_recorder(lam, SLOW_OR_ECHO, ("OnFailure",))
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    started = time.monotonic()
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"k": "off"}))
    (got,) = wait_for("the failure record", lambda: records(async_server, recorder))
    assert time.monotonic() - started < 5, "no retries, no throttle backoff"
    record = got["record"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"k": "off"} and "responseContext" not in record
    assert log_messages(async_server, name) == [], "the function never ran"


def test_kill_9_under_load_loses_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"SELFLESS_ASYNC_RETRY_DELAY": "0.2"})
    accepted: list[str] = []
    try:
        lam = server.client()
        # Half of the events fail (odd n) and land on the failure path, half succeed.
        code = "import time\n\ndef handler(event, context):\n    time.sleep(0.05)\n    if event['n'] % 2:\n" \
               "        raise RuntimeError('odd')\n    return event['n']\n"  # fmt: skip
        name, recorder = with_recorder(lam, code, ("OnSuccess", "OnFailure"), MaximumRetryAttempts=0)

        def send(n: int) -> str | None:
            try:
                answer = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": n}))
            except Exception:
                return None  # the server died under this request: not accepted
            return str(answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(send, n) for n in range(300)]
            time.sleep(0.6)
            server.stop(signal.SIGKILL)  # mid-load: some accepted, some running, some in neither
            accepted = [r for f in futures if (r := f.result()) is not None]
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
    assert accepted, "nothing was accepted before the kill"
    server = start_server(tmp_path, {"SELFLESS_ASYNC_RETRY_DELAY": "0.2"})
    try:

        def complete() -> list[dict[str, Any]] | None:
            found = records(server, recorder)
            seen = {r["record"]["requestContext"]["requestId"] for r in found}
            return found if seen >= set(accepted) else None

        found = wait_for("a record for every accepted event", complete, timeout=90)
        by_event: dict[str, set[str]] = {}
        for r in found:
            by_event.setdefault(r["record"]["requestContext"]["requestId"], set()).add(r["delivery"])
        # Exactly one record per accepted event (a record delivered twice keeps its delivery id).
        assert all(len(deliveries) == 1 for deliveries in by_event.values()), by_event
        conditions = {r["record"]["requestContext"]["condition"] for r in found}
        assert conditions == {"Success", "RetriesExhausted"}
    finally:
        assert server.stop() == 0, server.log()


def selfless_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SELFLESS_"))}
    env.update(
        SELFLESS_ENDPOINT=server.endpoint, SELFLESS_ACCESS_KEY_ID=ACCESS_KEY, SELFLESS_SECRET_ACCESS_KEY=SECRET_KEY
    )
    return subprocess.run(
        [sys.executable, "-m", "selfless.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_failed_events_are_listed_and_re_driven(async_server: Server) -> None:
    lam = async_server.client()
    name, recorder = with_recorder(lam, FAILING, ("OnFailure",), MaximumRetryAttempts=0)
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 7}))
    request_id = accepted["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    wait_for("the failure record", lambda: records(async_server, recorder))

    listed = selfless_cli(async_server, "events", name)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if request_id in line]
    assert "failed" in row and "RetriesExhausted" in row and "ValueError" in row

    redriven = selfless_cli(async_server, "events", name, "--redrive")
    assert redriven.returncode == 0 and "re-drove 1 failed event" in redriven.stdout, redriven.stderr
    # It runs again (and fails again): a second failure record for the same request.
    wait_for("a second record", lambda: len(records(async_server, recorder)) == 2)
    assert [r["record"]["requestContext"]["requestId"] for r in records(async_server, recorder)] == [request_id] * 2

    missing = selfless_cli(async_server, "events", unique("nope"))
    assert missing.returncode == 1 and "ResourceNotFoundException" in missing.stderr


def test_invoke_async_the_deprecated_api(async_server: Server) -> None:
    lam = async_server.client()
    name, recorder = with_recorder(lam, ECHO, ("OnSuccess",))
    answer = lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"old": "api"}))
    assert answer["Status"] == 202 and answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    (got,) = wait_for("the success record", lambda: records(async_server, recorder))
    assert got["record"]["responsePayload"] == {"echo": {"old": "api"}}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_async(FunctionName=unique("nope"), InvokeArgs=b"{}")


LOOPER = """import json

import boto3

LAMBDA = boto3.client("lambda")


def handler(event, context):
    depth = event.get("depth", 0)
    print("DEPTH %d" % depth)
    if depth < event.get("stop_at", 1000):
        payload = json.dumps(dict(event, depth=depth + 1))
        LAMBDA.invoke(FunctionName=context.function_name, InvocationType="Event", Payload=payload)
    return depth
"""


def depths(server: Server, name: str) -> list[int]:
    logs = server.client("logs")
    try:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
    except logs.exceptions.ResourceNotFoundException:
        return []
    return sorted(int(e["message"].split()[1]) for e in found if e["message"].startswith("DEPTH "))


def test_a_recursive_loop_is_stopped_after_16_runs(async_server: Server) -> None:
    lam = async_server.client()
    name, recorder = with_recorder(lam, LOOPER, ("OnFailure",), {"runtime": "python3.12"})
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"depth": 0}))
    (got,) = wait_for("the loop's failure record", lambda: records(async_server, recorder), timeout=60)
    assert got["record"]["requestContext"]["condition"] == "RecursiveInvocationException"
    assert got["record"]["requestPayload"]["depth"] == 16
    assert depths(async_server, name) == list(range(16)), "16 runs, then the 17th was stopped"

    # Allow: the chain goes on past 16 (here until the function itself stops at 20).
    assert lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")["RecursiveLoop"] == "Allow"
    allowed = deploy(lam, LOOPER, runtime="python3.12")
    lam.put_function_recursion_config(FunctionName=allowed, RecursiveLoop="Allow")
    lam.invoke(FunctionName=allowed, InvocationType="Event", Payload=json.dumps({"depth": 0, "stop_at": 20}))
    wait_for("21 runs", lambda: depths(async_server, allowed) == list(range(21)), timeout=60)


@pytest.mark.timeout(180)
def test_an_event_too_old_to_run_goes_to_the_failure_path(async_server: Server) -> None:
    """MaximumEventAgeInSeconds at AWS's minimum, 60: an event throttled for longer than that (its function's
    one slot is held by an earlier event for 61 s) is not run; its record says EventAgeExceeded and has no
    response. This takes about a minute, as it would on AWS."""
    lam = async_server.client()
    name, recorder = with_recorder(lam, SLOW_OR_ECHO, ("OnFailure",), {"Timeout": 90}, MaximumEventAgeInSeconds=60)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"sleep": 61}))
    wait_for("the first event to run", lambda: "sleeping" in " ".join(log_messages(async_server, name)))
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"too": "late"}))
    request_id = accepted["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    (got,) = wait_for("the failure record", lambda: records(async_server, recorder), timeout=150)
    record = got["record"]
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"too": "late"} and "responseContext" not in record
    starts = [m for m in log_messages(async_server, name) if m.startswith(f"START RequestId: {request_id}")]
    assert starts == [], "never run"


def test_an_event_larger_than_1_mb_is_refused_and_not_queued(async_server: Server) -> None:
    lam = async_server.client()
    name = deploy(lam, ECHO)
    with pytest.raises(lam.exceptions.RequestTooLargeException) as refused:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * 1_048_575 + b'"')
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "1048576" in refused.value.response["Error"]["Message"]
    listed = selfless_cli(async_server, "events", name)
    assert listed.returncode == 0 and "no events" in listed.stderr, "nothing was queued"
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * 1_048_570 + b'"')
    assert accepted["StatusCode"] == 202
