"""What deployment tools rely on: every field they send reads back as sent, re-reads are identical (a
Terraform-style plan/apply/re-apply cycle, simulated with boto3), ListFunctions with FunctionVersion=ALL,
GetFunction's Tags and Concurrency sections, and architectures this host cannot run said clearly."""

from __future__ import annotations

import concurrent.futures
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ROLE, make_zip, unique

CODE = "def handler(event, context):\n    return 'ok'\n"
HOST = {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x86_64")
FOREIGN = "x86_64" if HOST == "arm64" else "arm64"


def wait_updated(lam: Any, name: str) -> None:
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_list_functions_with_all_versions(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"NUM": "2"}})
    wait_updated(lam, name)
    lam.publish_version(FunctionName=name)

    def mine(functions: list[dict[str, Any]]) -> list[str]:
        return [f["Version"] for f in functions if f["FunctionName"] == name]

    assert mine(lam.list_functions(MaxItems=50)["Functions"]) == ["$LATEST"]
    everything = []
    for page in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL", PaginationConfig={"PageSize": 1}):
        everything += page["Functions"]
    assert mine(everything) == ["$LATEST", "1", "2"]
    arns = [f["FunctionArn"] for f in everything if f["FunctionName"] == name]
    assert arns[1].endswith(f":{name}:1") and arns[2].endswith(f":{name}:2")
    variables = [f.get("Environment", {}).get("Variables") for f in everything if f["FunctionName"] == name]
    assert variables == [{"NUM": "2"}, None, {"NUM": "2"}]
    assert len({(f["FunctionName"], f["Version"]) for f in everything}) == len(everything), "no repeats across pages"


def test_terraform_style_cycle(lam: Any, make_function: Callable[..., str]) -> None:
    layer = lam.publish_layer_version(LayerName=unique("layer"), Content={"ZipFile": make_zip({"python/x.py": ""})})
    name = unique()
    desired: dict[str, Any] = {
        "Description": "managed by a deployment tool",
        "Timeout": 7,
        "MemorySize": 256,
        "Environment": {"Variables": {"STAGE": "prod", "EMPTY": ""}},
        "TracingConfig": {"Mode": "Active"},
        "Architectures": [HOST],
        "EphemeralStorage": {"Size": 1024},
        "LoggingConfig": {"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "INFO"},
        "Layers": [layer["LayerVersionArn"]],
    }
    package = make_zip({"app.py": CODE})
    created = lam.create_function(
        FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": package},
        Tags={"team": "core"}, **desired,
    )  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    try:
        # Apply, then read back: every field as it was sent.
        first = lam.get_function(FunctionName=name)
        config = first["Configuration"]
        for key, value in desired.items():
            if key == "Layers":
                assert [layer["Arn"] for layer in config["Layers"]] == value
            elif key == "LoggingConfig":
                assert config[key] == {**value, "LogGroup": f"/aws/lambda/{name}"}
            else:
                assert config[key] == value, key
        assert config["PackageType"] == "Zip" and config["Runtime"] == "python3.12"
        assert config["CodeSha256"] == created["CodeSha256"]
        assert "RuntimeVersionArn" in config["RuntimeVersionConfig"]
        assert first["Tags"] == {"team": "core"}
        assert "Concurrency" not in first

        # Plan: a re-read changes nothing (same revision, same timestamps, same everything).
        again = lam.get_function(FunctionName=name)
        assert again["Configuration"] == config
        assert again["Tags"] == first["Tags"]
        without_meta = {
            k: v for k, v in lam.get_function_configuration(FunctionName=name).items() if k != "ResponseMetadata"
        }
        assert without_meta == config

        # Apply a change: only what changed changes.
        lam.update_function_configuration(
            FunctionName=name, Description="changed", Environment={"Variables": {"STAGE": "staging"}}
        )
        wait_updated(lam, name)
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
        lam.tag_resource(Resource=config["FunctionArn"], Tags={"owner": "ops"})
        after = lam.get_function(FunctionName=name)
        changed = after["Configuration"]
        assert changed["Description"] == "changed"
        assert changed["Environment"] == {"Variables": {"STAGE": "staging"}}
        assert changed["RevisionId"] != config["RevisionId"]
        for key in (
            "Timeout",
            "MemorySize",
            "TracingConfig",
            "Layers",
            "LoggingConfig",
            "CodeSha256",
        ):
            assert changed[key] == config[key], key
        assert after["Concurrency"] == {"ReservedConcurrentExecutions": 3}
        assert after["Tags"] == {"team": "core", "owner": "ops"}
        assert lam.list_tags(Resource=config["FunctionArn"])["Tags"] == after["Tags"]

        # Re-apply the same code: the same CodeSha256, and the function still answers.
        code = lam.update_function_code(FunctionName=name, ZipFile=package)
        assert code["CodeSha256"] == created["CodeSha256"]
        wait_updated(lam, name)
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "ok"
        assert lam.get_function(FunctionName=name)["Configuration"]["Description"] == "changed"
    finally:
        lam.delete_function(FunctionName=name)
        lam.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])


def test_a_foreign_architecture_is_kept_and_refused_clearly(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE, Architectures=[FOREIGN])
    assert lam.get_function_configuration(FunctionName=name)["Architectures"] == [FOREIGN]
    answer = lam.invoke(FunctionName=name)
    body = json.loads(answer["Payload"].read())
    assert answer.get("FunctionError") == "Unhandled"
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    assert f"{FOREIGN} functions run only on {FOREIGN} hosts; this host is {HOST}" in body["errorMessage"]


def test_an_update_keeps_the_old_package_for_calls_in_flight(lam: Any, make_function: Callable[..., str]) -> None:
    """An update during a call: the call finishes on its own code and files, the next one runs the new
    code. (That the old package outlives its last reference while an environment uses it, past the code
    store's grace for fresh packages, is tests/unit/test_package_collection.py's.)"""
    slow = "import time\n\ndef handler(event, context):\n    time.sleep(2)\n    return open('data.txt').read()\n"
    name = make_function(files={"app.py": slow, "data.txt": "old"})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(lambda: lam.invoke(FunctionName=name))
        time.sleep(0.8)  # the call has started
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": slow, "data.txt": "new"}))
        answer = in_flight.result(timeout=30)
    assert "FunctionError" not in answer, answer["Payload"].read()
    assert json.loads(answer["Payload"].read()) == "old"
    wait_updated(lam, name)
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "new"


def test_update_function_code_with_publish_makes_a_version(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    published = lam.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return 'v1'\n"}), Publish=True
    )
    assert published["Version"] == "1"
    assert published["FunctionArn"].endswith(f":{name}:1")
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1"]
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="1")["Payload"].read()) == "v1"


def test_a_dead_letter_target_that_cannot_be_delivered_to_is_refused(lam: Any) -> None:
    """This server has no SQS or SNS endpoint: a DeadLetterConfig naming a built-in queue or topic that does not
    exist is refused, not kept."""
    name = unique()
    for target, words in (
        ("arn:aws:sqs:us-east-1:000000000000:dlq", "does not have permissions to call SendMessage"),
        ("arn:aws:sns:us-east-1:000000000000:topic", "does not have permissions to call Publish"),
        ("arn:aws:lambda:us-east-1:000000000000:function:f", "an SQS queue or an SNS topic"),
    ):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
            lam.create_function(
                FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                Code={"ZipFile": make_zip({"app.py": CODE})}, DeadLetterConfig={"TargetArn": target},
            )  # fmt: skip
        assert words in refused.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
