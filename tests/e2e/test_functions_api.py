"""The function-management half of the Lambda API, driven by boto3 against a real server."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import ROLE, Server, make_zip, unique

HANDLER = "def handler(event, context):\n    return event\n"


def error_of(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_create_get_update_delete_shapes(lam: Any) -> None:
    name = unique()
    package = make_zip({"app.py": HANDLER})
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": package},
        Description="first",
        Timeout=5,
        MemorySize=256,
        Environment={"Variables": {"GREETING": "hi"}},
        Tags={"team": "core"},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(package).digest()).decode()
    assert created["CodeSize"] == len(package)
    assert created["Version"] == "$LATEST"
    assert created["State"] == "Pending"
    assert created["StateReasonCode"] == "Creating"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", created["LastModified"])
    assert created["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["PackageType"] == "Zip" and created["Architectures"] == ["x86_64"]

    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    got = lam.get_function(FunctionName=name)
    config = got["Configuration"]
    assert config["State"] == "Active" and config["LastUpdateStatus"] == "Successful"
    assert config["RevisionId"] != created["RevisionId"]
    assert got["Tags"] == {"team": "core"}
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=10) as r:
        assert r.read() == package
    assert lam.get_function_configuration(FunctionName=config["FunctionArn"])["FunctionName"] == name

    updated = lam.update_function_configuration(FunctionName=name, MemorySize=512, Description="second")
    assert updated["LastUpdateStatus"] == "InProgress"
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["MemorySize"], config["Description"], config["Timeout"]) == (512, "second", 5)

    new_package = make_zip({"app.py": HANDLER + "# v2\n"})
    code = lam.update_function_code(FunctionName=name, ZipFile=new_package)
    assert code["CodeSha256"] == base64.b64encode(hashlib.sha256(new_package).digest()).decode()
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})

    deleted = lam.delete_function(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName=name)
    code_, message, status = error_of(exc)
    assert (code_, status) == ("ResourceNotFoundException", 404)
    assert message == f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}"


def test_create_twice_conflicts(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": HANDLER})},
        )
    assert error_of(exc) == ("ResourceConflictException", f"Function already exist: {name}", 409)


def test_revision_id_conditions_updates(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    revision = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.update_function_configuration(FunctionName=name, Timeout=9, RevisionId="not-the-revision")
    assert error_of(exc)[2] == 412
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 3
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": HANDLER + "#x"}), RevisionId="stale")
    lam.update_function_configuration(FunctionName=name, Timeout=9, RevisionId=revision)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 9


def test_list_functions_paginates(lam: Any, make_function: Callable[..., str]) -> None:
    names = sorted(make_function(HANDLER, name=unique("page")) for _ in range(5))
    page = lam.list_functions(MaxItems=2)
    assert len(page["Functions"]) == 2 and "NextMarker" in page
    seen = []
    for p in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
        seen += [f["FunctionName"] for f in p["Functions"]]
    assert [n for n in seen if n in names] == names
    assert len(seen) == len(set(seen))


def test_tags_round_trip(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"a": "1", "b": "2"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "2"}
    lam.untag_resource(Resource=arn, TagKeys=["a"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn + "-missing")


def test_account_settings(lam: Any, make_function: Callable[..., str]) -> None:
    make_function(HANDLER)
    settings = lam.get_account_settings()
    assert settings["AccountLimit"]["CodeSizeUnzipped"] == 262_144_000
    assert settings["AccountLimit"]["CodeSizeZipped"] == 52_428_800
    assert settings["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert settings["AccountUsage"]["FunctionCount"] >= 1
    assert settings["AccountUsage"]["TotalCodeSize"] > 0


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        (
            {"MemorySize": 100},
            "ValidationException",
            "1 validation error detected: Value '100' at 'memorySize' failed to satisfy constraint: "
            "Member must have value greater than or equal to 128",
        ),
        (
            {"MemorySize": 10241},
            "ValidationException",
            "1 validation error detected: Value '10241' at 'memorySize' failed to satisfy constraint: "
            "Member must have value less than or equal to 10240",
        ),
        (
            {"Timeout": 901},
            "ValidationException",
            "1 validation error detected: Value '901' at 'timeout' failed to satisfy constraint: "
            "Member must have value less than or equal to 900",
        ),
        (
            {"Timeout": 0},
            "ValidationException",
            "Member must have value greater than or equal to 1",
        ),
        (
            {"EphemeralStorage": {"Size": 511}},
            "ValidationException",
            "Value '511' at 'ephemeralStorage.size' failed to satisfy constraint: "
            "Member must have value greater than or equal to 512",
        ),
        (
            {"EphemeralStorage": {"Size": 10241}},
            "ValidationException",
            "Member must have value less than or equal to 10240",
        ),
        (
            {"Runtime": "cobol9"},
            "InvalidParameterValueException",
            "Value cobol9 at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [",
        ),
        ({"Runtime": "python2.7"}, "InvalidParameterValueException", "python2.7 is no longer supported"),
        ({"Runtime": "nodejs22.x"}, "InvalidParameterValueException", "nodejs22.x is not supported"),
        ({"Handler": "has space"}, "ValidationException", "at 'handler' failed to satisfy constraint"),
        ({"Role": "not-a-role"}, "ValidationException", "at 'role' failed to satisfy constraint"),
        (
            {"FunctionName": "bad name!"},
            "ValidationException",
            "at 'functionName' failed to satisfy constraint",
        ),
        (
            {"FunctionName": "x" * 65},
            "ValidationException",
            "Member must have length less than or equal to 64",
        ),
        (
            {"Environment": {"Variables": {"AWS_REGION": "eu-west-1"}}},
            "InvalidParameterValueException",
            "Reserved keys used in this request: AWS_REGION",
        ),
        (
            {"Environment": {"Variables": {"BIG": "x" * 4100}}},
            "InvalidParameterValueException",
            "exceeded the 4KB limit",
        ),
        (
            {"Environment": {"Variables": {"1bad": "x"}}},
            "ValidationException",
            # AWS names the map once (its values unshown: they are sensitive) with every rule of its keys.
            "Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: "
            "[Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
        ),
        (
            {"Code": {"S3Bucket": "no-such-bucket-here", "S3Key": "k.zip"}},
            "InvalidParameterValueException",
            "Error occurred while GetObject. S3 Error Code: NoSuchBucket.",
        ),
        (
            {"Code": {"ZipFile": b"not a zip"}},
            "InvalidParameterValueException",
            "Could not unzip uploaded file",
        ),
    ],
)
def test_create_validation(lam_unvalidated: Any, lam: Any, overrides: dict[str, Any], code: str, message: str) -> None:
    name = unique("invalid")
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": make_zip({"app.py": HANDLER})},
    }
    params.update(overrides)
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        lam_unvalidated.create_function(**params)
    got_code, got_message, status = error_of(exc)
    assert got_code == code
    assert message in got_message
    assert status == 400
    # Nothing was created.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_sensitive_values_are_not_echoed(lam_unvalidated: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        lam_unvalidated.create_function(
            FunctionName=unique(),
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": HANDLER})},
            Environment={"Variables": {"9secret": "hunter2"}},
        )
    assert "9secret" not in error_of(exc)[1] and "hunter2" not in error_of(exc)[1]


def test_missing_function_errors(lam: Any) -> None:
    for call in (
        lambda: lam.get_function_configuration(FunctionName="nope-missing"),
        lambda: lam.update_function_configuration(FunctionName="nope-missing", Timeout=5),
        lambda: lam.delete_function(FunctionName="nope-missing"),
        lambda: lam.invoke(FunctionName="nope-missing"),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            call()
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName="arn:aws:lambda:eu-west-1:000000000000:function:x")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_unsigned_and_badly_signed_requests_are_refused(server: Server) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    def client(**kw: Any) -> Any:
        return boto3.client("lambda", endpoint_url=server.endpoint, region_name="us-east-1", **kw)

    cases = [
        (client(config=Config(signature_version=UNSIGNED)), "MissingAuthenticationTokenException"),
        (
            client(aws_access_key_id="AKIASELFLESSTEST0001", aws_secret_access_key="wrong"),
            "InvalidSignatureException",
        ),
        (
            client(aws_access_key_id="AKIAUNKNOWNKEY000000", aws_secret_access_key="x"),
            "UnrecognizedClientException",
        ),
    ]
    for c, expected in cases:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            c.list_functions()
        assert exc.value.response["Error"]["Code"] == expected
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_health_is_open_and_everything_else_is_not(server: Server) -> None:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        assert r.status == 200
    if server.sandbox == "linux":
        # Ready means the zygotes are up: the first cold start after it takes milliseconds, not a second.
        assert server.prewarm == "done"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{server.endpoint}/2015-03-31/functions", timeout=5)
    assert exc.value.code == 403
    exc.value.close()
    with pytest.raises(urllib.error.HTTPError) as exc2:
        urllib.request.urlopen(f"{server.endpoint}/_selfless/code/{'0' * 64}.zip?Expires=9999999999&Signature=x")
    assert exc2.value.code == 403
    exc2.value.close()
