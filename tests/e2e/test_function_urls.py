"""Lambda function URLs end to end: the configuration API with boto3 (and each of its errors)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.conftest import make_zip

ECHO = "def handler(event, context):\n    return event\n"
URL = re.compile(r"http://([a-z0-9]{32})\.lambda-url\.us-east-1\.localhost:(\d+)/")


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_create_get_update_list_delete(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    cors = {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET", "POST"], "MaxAge": 60}
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE", Cors=cors)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    found = URL.fullmatch(created["FunctionUrl"])
    assert found is not None, created["FunctionUrl"]
    assert created["FunctionArn"] == arn
    assert created["AuthType"] == "NONE"
    assert created["InvokeMode"] == "BUFFERED"
    assert created["Cors"] == cors
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["CreationTime"])
    assert "LastModifiedTime" not in created

    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == created["FunctionUrl"]
    assert got["CreationTime"] == created["CreationTime"] == got["LastModifiedTime"]

    updated = lam.update_function_url_config(FunctionName=arn, AuthType="AWS_IAM")
    assert updated["AuthType"] == "AWS_IAM"
    assert updated["Cors"] == cors  # not given: kept
    assert updated["FunctionUrl"] == created["FunctionUrl"]
    assert updated["LastModifiedTime"] >= created["CreationTime"]
    updated = lam.update_function_url_config(FunctionName=name, Cors={"AllowOrigins": ["*"]})
    assert updated["Cors"] == {"AllowOrigins": ["*"]}  # given: replaced as a whole
    assert updated["AuthType"] == "AWS_IAM"

    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [created["FunctionUrl"]]

    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=name)
    assert error_code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


def test_alias_urls_and_paging(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    lam.publish_version(FunctionName=name)
    for alias in ("live", "beta"):
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion="1")
    own = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    live = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="AWS_IAM")
    beta = lam.create_function_url_config(FunctionName=f"{name}:beta", AuthType="NONE")
    assert live["FunctionArn"].endswith(f":function:{name}:live")
    assert len({own["FunctionUrl"], live["FunctionUrl"], beta["FunctionUrl"]}) == 3
    assert lam.get_function_url_config(FunctionName=name, Qualifier="live")["AuthType"] == "AWS_IAM"

    first = lam.list_function_url_configs(FunctionName=name, MaxItems=2)
    assert len(first["FunctionUrlConfigs"]) == 2
    rest = lam.list_function_url_configs(FunctionName=name, Marker=first["NextMarker"])
    assert "NextMarker" not in rest
    urls = {c["FunctionUrl"] for c in first["FunctionUrlConfigs"] + rest["FunctionUrlConfigs"]}
    assert urls == {own["FunctionUrl"], live["FunctionUrl"], beta["FunctionUrl"]}

    # Deleting the alias deletes its URL; deleting the function deletes the rest.
    lam.delete_alias(FunctionName=name, Name="beta")
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=name, Qualifier="beta")
    assert error_code(exc) == "ResourceNotFoundException"
    assert len(lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]) == 2
    lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as exc:
        lam.list_function_url_configs(FunctionName=name)
    assert error_code(exc) == "ResourceNotFoundException"
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/test",
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": ECHO})},
    )
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


def test_errors(lam: Any, lam_unvalidated: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    with pytest.raises(ClientError) as exc:
        lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert error_code(exc) == "ResourceConflictException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert "FunctionUrlConfig exists for this Lambda function" in str(exc.value)
    assert lam.get_function_url_config(FunctionName=name)["AuthType"] == "NONE"  # unchanged

    for call in (lam.get_function_url_config, lam.delete_function_url_config, lam.list_function_url_configs):
        with pytest.raises(ClientError) as exc:
            call(FunctionName="no-such-function-here")
        assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        lam.create_function_url_config(FunctionName="no-such-function-here", AuthType="NONE")
    assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        lam.create_function_url_config(FunctionName=name, Qualifier="nosuchalias", AuthType="NONE")
    assert error_code(exc) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        lam.update_function_url_config(FunctionName=name, Qualifier="nosuchalias", AuthType="NONE")
    assert error_code(exc) == "ResourceNotFoundException"

    # Only an alias may qualify a URL: $LATEST and version numbers break the model's pattern.
    for qualifier in ("$LATEST", "1"):
        with pytest.raises(ClientError) as exc:
            lam_unvalidated.create_function_url_config(FunctionName=name, Qualifier=qualifier, AuthType="NONE")
        assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        lam_unvalidated.create_function_url_config(FunctionName=f"{name}-other", AuthType="BASIC")
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        lam_unvalidated.update_function_url_config(FunctionName=name, Cors={"MaxAge": 86401})
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ParamValidationError):
        lam.create_function_url_config(FunctionName=name)  # AuthType is required

    # Response streaming is not offered: refused, nothing created or changed.
    other = make_function(ECHO)
    with pytest.raises(ClientError) as exc:
        lam.create_function_url_config(FunctionName=other, AuthType="NONE", InvokeMode="RESPONSE_STREAM")
    assert error_code(exc) == "InvalidParameterValueException"
    assert lam.list_function_url_configs(FunctionName=other)["FunctionUrlConfigs"] == []
    with pytest.raises(ClientError) as exc:
        lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")
    assert error_code(exc) == "InvalidParameterValueException"
    assert lam.get_function_url_config(FunctionName=name)["InvokeMode"] == "BUFFERED"
