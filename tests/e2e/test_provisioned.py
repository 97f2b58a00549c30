"""Published versions (the part provisioned concurrency needs) and provisioned concurrency, end to end with
boto3: AWS's status transitions, environments initialised before any call, calls routed to them first and
spilling over to on-demand ones, REPORT lines without Init Duration, and AWS's errors."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import make_zip

# Returns how its environment was initialised, which version it is, and when its module was imported.
REPORTER = (
    "import os, time\n"
    "IMPORTED = time.time()\n"
    "def handler(e, c):\n"
    "    time.sleep(e.get('sleep', 0))\n"
    "    return {'init': os.environ['AWS_LAMBDA_INITIALIZATION_TYPE'],\n"
    "            'version': os.environ['AWS_LAMBDA_FUNCTION_VERSION'], 'code': 'v1', 'imported': IMPORTED,\n"
    "            'stream': c.log_stream_name, 'arn': c.invoked_function_arn}\n"
)


def invoke(lam: Any, name: str, qualifier: str | None = None, **payload: Any) -> tuple[dict[str, Any], Any]:
    kwargs: dict[str, Any] = {"FunctionName": name, "Payload": json.dumps(payload), "LogType": "Tail"}
    if qualifier is not None:
        kwargs["Qualifier"] = qualifier
    r = lam.invoke(**kwargs)
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body, r


def report_of(response: Any) -> str:
    tail = base64.b64decode(response["LogResult"]).decode()
    return next(line for line in tail.splitlines() if line.startswith("REPORT"))


def wait_status(lam: Any, name: str, qualifier: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc: dict[str, Any] = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if doc["Status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def test_publish_version_snapshots_code_and_configuration(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(REPORTER, Description="first")
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1"
    assert v1["FunctionArn"].endswith(f":function:{name}:1")
    assert v1["Description"] == "first"
    # Nothing changed: AWS returns the same version rather than a new one.
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": REPORTER.replace("'v1'", "'v2'")}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    code, message = error_of(lambda: lam.publish_version(FunctionName=name, CodeSha256="bm90LXRoZS1zaGE="))
    assert code == "InvalidParameterValueException" and "CodeSHA256" in message
    code, _ = error_of(lambda: lam.publish_version(FunctionName=name, RevisionId="not-the-revision"))
    assert code == "PreconditionFailedException"
    v2 = lam.publish_version(FunctionName=name, Description="second")
    assert (v2["Version"], v2["Description"]) == ("2", "second")

    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2"]
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["CodeSha256"] == v1["CodeSha256"]

    old, r1 = invoke(lam, name, "1")
    new, r_latest = invoke(lam, name)
    assert (old["code"], old["version"], r1["ExecutedVersion"]) == ("v1", "1", "1")
    assert (new["code"], new["version"], r_latest["ExecutedVersion"]) == ("v2", "$LATEST", "$LATEST")
    assert "[1]" in old["stream"] and "[$LATEST]" in new["stream"]
    assert "Version: 1" in base64.b64decode(r1["LogResult"]).decode()

    lam.delete_function(FunctionName=name, Qualifier="1")
    code, _ = error_of(lambda: invoke(lam, name, "1"))
    assert code == "ResourceNotFoundException"
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "2"]
    # Numbers are never reused.
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_provisioned_environments_answer_without_init(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(REPORTER, Timeout=10)
    version = lam.publish_version(FunctionName=name)["Version"]
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    ready = wait_status(lam, name, version)
    assert ready["Status"] == "READY", ready
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2

    # Both provisioned environments imported the handler before this call: no Init Duration, and the
    # import happened before the call was even made.
    before = time.time()
    body, r = invoke(lam, name, version)
    assert body["init"] == "provisioned-concurrency"
    assert body["imported"] < before
    assert "Init Duration" not in report_of(r)

    # Three at once: two go to the provisioned environments, the third spills over to an on-demand start.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: invoke(lam, name, version, sleep=1.0), range(3)))
    kinds = sorted(b["init"] for b, _ in results)
    assert kinds == ["on-demand", "provisioned-concurrency", "provisioned-concurrency"]
    for b, response in results:
        assert ("Init Duration" in report_of(response)) == (b["init"] == "on-demand")

    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"] for c in listed] == [
        f"{lam.get_function(FunctionName=name)['Configuration']['FunctionArn']}:{version}"
    ]

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    code, message = error_of(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version))
    assert code == "ProvisionedConcurrencyConfigNotFoundException", message
    body, _ = invoke(lam, name, version)
    assert body["init"] == "on-demand"


def test_provisioned_concurrency_errors(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(REPORTER)
    code, message = error_of(
        lambda: lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    )
    assert code == "InvalidParameterValueException"
    assert message == "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    code, _ = error_of(
        lambda: lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="7", ProvisionedConcurrentExecutions=1
        )
    )
    assert code == "ResourceNotFoundException"
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    code, message = error_of(
        lambda: lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
        )
    )
    assert code == "InvalidParameterValueException" and "reservedConcurrentExecution" in message
    code, _ = error_of(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version))
    assert code == "ProvisionedConcurrencyConfigNotFoundException"


def test_a_failing_init_fails_the_configuration(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function("raise RuntimeError('broken at import')\ndef handler(e, c):\n    return 1\n")
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    doc = wait_status(lam, name, version)
    assert doc["Status"] == "FAILED"
    assert doc["StatusReason"] == "FUNCTION_ERROR_INIT_FAILURE"
    # Deleting the version takes its configuration with it.
    lam.delete_function(FunctionName=name, Qualifier=version)
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_aliases_point_at_versions_and_split_traffic(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(REPORTER)
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": REPORTER.replace("'v1'", "'v2'")}))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    v2 = lam.publish_version(FunctionName=name)["Version"]

    created = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion=v1, Description="live")
    assert created["AliasArn"].endswith(f":function:{name}:prod")
    assert (created["FunctionVersion"], created["Description"]) == (v1, "live")
    assert lam.get_alias(FunctionName=name, Name="prod")["RevisionId"] == created["RevisionId"]
    body, r = invoke(lam, name, "prod")
    assert (body["code"], r["ExecutedVersion"]) == ("v1", v1)
    assert body["arn"] == created["AliasArn"], "the context names the alias it was invoked through"

    code, _ = error_of(lambda: lam.create_alias(FunctionName=name, Name="prod", FunctionVersion=v2))
    assert code == "ResourceConflictException"
    code, message = error_of(lambda: lam.get_alias(FunctionName=name, Name="nope"))
    assert code == "ResourceNotFoundException" and message.startswith("Cannot find alias arn")
    code, _ = error_of(lambda: lam.update_alias(FunctionName=name, Name="prod", FunctionVersion=v2, RevisionId="x"))
    assert code == "PreconditionFailedException"
    code, message = error_of(lambda: lam.delete_function(FunctionName=name, Qualifier=v1))
    assert code == "ResourceConflictException"
    assert message == "Unable to delete version because the following aliases reference it: [prod]"

    # 30% of the calls to version 2: of 1,000 calls, 300 expected, sd 14.5; the band is 6 sd either side
    # (p < 1e-8 to fail by chance), and it excludes 50% (a weight read the wrong way round or ignored).
    lam.update_alias(FunctionName=name, Name="prod", RoutingConfig={"AdditionalVersionWeights": {v2: 0.3}})
    executed = [invoke(lam, name, "prod")[1]["ExecutedVersion"] for _ in range(1000)]
    assert set(executed) == {v1, v2}
    assert 213 <= executed.count(v2) <= 387, executed.count(v2)
    code, message = error_of(
        lambda: lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="prod", ProvisionedConcurrentExecutions=1
        )
    )
    assert code == "InvalidParameterValueException" and "weights" in message

    lam.update_alias(FunctionName=name, Name="prod", FunctionVersion=v2, RoutingConfig={"AdditionalVersionWeights": {}})
    body, r = invoke(lam, name, "prod")
    assert (body["code"], r["ExecutedVersion"]) == ("v2", v2)
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["prod"]
    assert lam.list_aliases(FunctionName=name, FunctionVersion=v1)["Aliases"] == []
    lam.delete_alias(FunctionName=name, Name="prod")
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
    lam.delete_function(FunctionName=name, Qualifier=v1)  # no alias holds it any more


def test_provisioned_concurrency_on_an_alias_follows_it(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(REPORTER)
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_configuration(FunctionName=name, Description="changed")
    # As on AWS, a second update while one is in progress is refused: wait for the first.
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    lam.update_function_configuration(FunctionName=name, MemorySize=192)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    v2 = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, name, "live")["Status"] == "READY"
    body, r = invoke(lam, name, "live")
    assert (body["init"], r["ExecutedVersion"]) == ("provisioned-concurrency", v1)
    # The version already has its configuration, through the alias.
    code, _ = error_of(
        lambda: lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=1
        )
    )
    assert code == "ResourceConflictException"

    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=v2)
    assert wait_status(lam, name, "live")["Status"] == "READY"
    body, r = invoke(lam, name, "live")
    assert (body["init"], r["ExecutedVersion"]) == ("provisioned-concurrency", v2)
    body, _ = invoke(lam, name, v1)
    assert body["init"] == "on-demand"  # version 1's provisioned environments went with the alias

    lam.delete_alias(FunctionName=name, Name="live")
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
