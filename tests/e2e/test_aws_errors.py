"""Errors as AWS answers them, read through boto3: the parsed error's keys (botocore adds the members Lambda's
model gives each error, spelled per exception), codes, statuses and AWS's words for validation, name
resolution and resources that do not exist."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import ROLE, make_zip, unique

CODE = "def handler(event, context):\n    return 'ok'\n"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
DERIVED = "The derived qualifier from the function name does not match the specified qualifier."


def failure(call: Callable[[], Any]) -> dict[str, Any]:
    """The parsed error a call raised (botocore's ``err.response``)."""
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        call()
    return dict(exc.value.response)


def summary(response: dict[str, Any]) -> tuple[str, int, str]:
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def body_keys(response: dict[str, Any]) -> set[str]:
    """What botocore took from the error's body besides Error and ResponseMetadata."""
    return set(response) - {"Error", "ResponseMetadata"}


def test_parsed_errors_hold_the_keys_aws_sends(lam: Any, make_function: Callable[..., str]) -> None:
    missing = unique("missing")
    gone = failure(lambda: lam.get_function(FunctionName=missing))
    # ResourceNotFoundException's model spells it Message.
    assert summary(gone) == ("ResourceNotFoundException", 404, f"Function not found: {ARN}{missing}")
    assert body_keys(gone) == {"Type", "Message"}
    assert (gone["Type"], gone["Message"]) == ("User", f"Function not found: {ARN}{missing}")

    name = make_function(CODE)
    latest = failure(lambda: lam.delete_function(FunctionName=name, Qualifier="$LATEST"))
    # InvalidParameterValueException's spells it message.
    assert summary(latest) == (
        "InvalidParameterValueException",
        400,
        "$LATEST version cannot be deleted without deleting the function.",
    )
    assert body_keys(latest) == {"Type", "message"} and latest["Type"] == "User"

    twice = failure(
        lambda: lam.create_function(
            FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": make_zip({})}
        )
    )
    assert summary(twice)[:2] == ("ResourceConflictException", 409)
    assert body_keys(twice) == {"Type", "message"}


def test_a_throttle_says_why_and_when(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    throttled = failure(lambda: lam.invoke(FunctionName=name, Payload=b"{}"))
    assert summary(throttled) == ("TooManyRequestsException", 429, "Rate Exceeded.")
    # Reason in the body, retryAfterSeconds from the Retry-After header: as botocore's model places them.
    assert body_keys(throttled) == {"Type", "message", "Reason", "retryAfterSeconds"}
    assert throttled["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert int(throttled["retryAfterSeconds"]) >= 1


def test_every_violation_is_listed_at_once(lam_unvalidated: Any) -> None:
    name = unique("invalid")
    refused = failure(
        lambda: lam_unvalidated.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": CODE})},
            Timeout=0,
            MemorySize=64,
            Architectures=["x86_64", "arm64"],
        )
    )
    assert summary(refused) == (
        "ValidationException",
        400,
        "3 validation errors detected: "
        "Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1; "
        "Value '64' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal "
        "to 128; "
        "Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: Member must have length less "
        "than or equal to 1",
    )
    with pytest.raises(lam_unvalidated.exceptions.ResourceNotFoundException):
        lam_unvalidated.get_function(FunctionName=name)  # nothing was created


def test_an_unknown_runtime_is_refused_in_aws_words(lam: Any, make_function: Callable[..., str]) -> None:
    def check(response: dict[str, Any], runtime: str) -> None:
        code, status, message = summary(response)
        assert (code, status) == ("InvalidParameterValueException", 400)
        assert message.startswith(
            f"Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: ["
        ), message
        assert message.endswith("] or be a valid ARN"), message
        assert "python3.12" in message  # the runtimes that are taken

    name = unique("runtime")
    for runtime in ("Python3.12", "python3.99"):
        created = failure(
            lambda runtime=runtime: lam.create_function(
                FunctionName=name,
                Runtime=runtime,
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": make_zip({"app.py": CODE})},
            )
        )
        check(created, runtime)
    existing = make_function(CODE)
    check(failure(lambda: lam.update_function_configuration(FunctionName=existing, Runtime="PYTHON3.12")), "PYTHON3.12")
    assert lam.get_function_configuration(FunctionName=existing)["Runtime"] == "python3.11"  # unchanged


def test_a_qualifier_that_contradicts_the_name_is_refused(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    lam.publish_version(FunctionName=name)
    lam.add_permission(FunctionName=name, Qualifier="1", StatementId="s", Action="lambda:InvokeFunction", Principal="*")
    qualified, arn = f"{name}:1", f"{ARN}{name}:1"
    calls: dict[str, Callable[[str], Any]] = {
        "GetFunction": lambda fn: lam.get_function(FunctionName=fn, Qualifier="$LATEST"),
        "GetFunctionConfiguration": lambda fn: lam.get_function_configuration(FunctionName=fn, Qualifier="2"),
        "Invoke": lambda fn: lam.invoke(FunctionName=fn, Qualifier="$LATEST", Payload=b"{}"),
        "DeleteFunction": lambda fn: lam.delete_function(FunctionName=fn, Qualifier="2"),
        "GetPolicy": lambda fn: lam.get_policy(FunctionName=fn, Qualifier="2"),
        "AddPermission": lambda fn: lam.add_permission(
            FunctionName=fn, Qualifier="2", StatementId="t", Action="lambda:InvokeFunction", Principal="*"
        ),
        "RemovePermission": lambda fn: lam.remove_permission(FunctionName=fn, Qualifier="2", StatementId="s"),
        "GetFunctionEventInvokeConfig": lambda fn: lam.get_function_event_invoke_config(FunctionName=fn, Qualifier="2"),
        "PutFunctionEventInvokeConfig": lambda fn: lam.put_function_event_invoke_config(
            FunctionName=fn, Qualifier="2", MaximumRetryAttempts=1
        ),
        "PutProvisionedConcurrencyConfig": lambda fn: lam.put_provisioned_concurrency_config(
            FunctionName=fn, Qualifier="2", ProvisionedConcurrentExecutions=1
        ),
    }
    for operation, call in calls.items():
        for given in (qualified, arn):
            assert summary(failure(lambda call=call, given=given: call(given))) == (
                "InvalidParameterValueException",
                400,
                DERIVED,
            ), (operation, given)
    # Nothing changed: the version and its statement are still there.
    assert lam.get_function(FunctionName=qualified)["Configuration"]["Version"] == "1"
    policy = json.loads(lam.get_policy(FunctionName=name, Qualifier="1")["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["s"]
    # The same qualifier twice is no contradiction.
    assert lam.get_function_configuration(FunctionName=arn, Qualifier="1")["Version"] == "1"


def test_another_regions_function_is_not_reachable(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    elsewhere = f"arn:aws:lambda:eu-west-1:000000000000:function:{name}"
    expected = (
        "ResourceNotFoundException",
        404,
        "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')",
    )
    assert summary(failure(lambda: lam.get_function(FunctionName=elsewhere))) == expected
    assert summary(failure(lambda: lam.invoke(FunctionName=elsewhere, Payload=b"{}"))) == expected
    assert summary(failure(lambda: lam.delete_function(FunctionName=elsewhere))) == expected
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name  # still there


def test_not_found_in_each_resources_words(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    arn = f"{ARN}{name}"
    missing = unique("missing")

    def not_found(call: Callable[[], Any], message: str) -> None:
        response = failure(call)
        assert summary(response) == ("ResourceNotFoundException", 404, message)
        assert response["Type"] == "User"

    # Functions, versions and aliases: the ARN as qualified.
    not_found(lambda: lam.get_function(FunctionName=name, Qualifier="7"), f"Function not found: {arn}:7")
    not_found(lambda: lam.get_function(FunctionName=f"{name}:nope"), f"Function not found: {arn}:nope")
    not_found(lambda: lam.get_function_configuration(FunctionName=missing), f"Function not found: {ARN}{missing}")
    not_found(lambda: lam.invoke(FunctionName=name, Qualifier="nope"), f"Function not found: {arn}:nope")
    not_found(lambda: lam.get_alias(FunctionName=name, Name="nope"), f"Cannot find alias arn: {arn}:nope")
    not_found(lambda: lam.update_alias(FunctionName=name, Name="nope", Description="x"), f"Alias not found: {arn}:nope")
    # Deleting an alias that does not exist succeeds, as on AWS; the function must exist.
    assert lam.delete_alias(FunctionName=name, Name="nope")["ResponseMetadata"]["HTTPStatusCode"] == 204
    not_found(lambda: lam.delete_alias(FunctionName=missing, Name="nope"), f"Function not found: {ARN}{missing}")

    # Event invoke configurations.
    none = f"The function {arn}:$LATEST doesn't have an EventInvokeConfig"
    not_found(lambda: lam.get_function_event_invoke_config(FunctionName=name), none)
    not_found(lambda: lam.delete_function_event_invoke_config(FunctionName=name), none)
    not_found(lambda: lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1), none)
    not_found(
        lambda: lam.get_function_event_invoke_config(FunctionName=missing),
        f"The function {ARN}{missing}:$LATEST doesn't have an EventInvokeConfig",
    )
    gone = "The function doesn't exist."
    not_found(lambda: lam.put_function_event_invoke_config(FunctionName=missing, MaximumRetryAttempts=1), gone)
    not_found(
        lambda: lam.put_function_event_invoke_config(FunctionName=name, Qualifier="9", MaximumRetryAttempts=1), gone
    )
    not_found(lambda: lam.list_function_event_invoke_configs(FunctionName=missing), gone)

    # Layer versions' policies name the version's ARN; policy statements their id.
    layer = unique("layer")
    version_arn = f"arn:aws:lambda:us-east-1:000000000000:layer:{layer}:3"
    not_found(
        lambda: lam.get_layer_version_policy(LayerName=layer, VersionNumber=3),
        f"Layer version {version_arn} does not exist.",
    )
    not_found(
        lambda: lam.add_layer_version_permission(
            LayerName=layer, VersionNumber=3, StatementId="s", Action="lambda:GetLayerVersion", Principal="*"
        ),
        f"Layer version {version_arn} does not exist.",
    )
    lam.add_permission(FunctionName=name, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
    not_found(
        lambda: lam.remove_permission(FunctionName=name, StatementId="other"),
        "Statement other is not found in resource policy.",
    )
