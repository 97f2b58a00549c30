"""Code from object storage: Code.S3Bucket/S3Key/S3ObjectVersion in CreateFunction and UpdateFunctionCode, and
Content.S3* in PublishLayerVersion, read from the S3-compatible endpoint SELFLESS_S3_ENDPOINT names (here a
real one: moto's S3 server), with AWS's errors for missing objects."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import ROLE, Server, make_zip, start_server, unique

BUCKET = "selfless-packages"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAMOTOTESTING00002", "AWS_SECRET_ACCESS_KEY": "moto-testing-secret"}


def package(answer: str) -> bytes:
    return make_zip({"app.py": f"def handler(event, context):\n    return {answer!r}\n"})


@dataclasses.dataclass
class Store:
    s3: Any
    first_version: str  # of fn.zip: answers "v1"; the latest answers "v2"


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[Store, str]]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_lower(FAKE_KEYS))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        first = s3.put_object(Bucket=BUCKET, Key="fn.zip", Body=package("v1"))["VersionId"]
        s3.put_object(Bucket=BUCKET, Key="fn.zip", Body=package("v2"))
        s3.put_object(Bucket=BUCKET, Key="other.zip", Body=package("other"))
        s3.put_object(Bucket=BUCKET, Key="layer.zip", Body=make_zip({"python/from_s3.py": "WHERE = 's3'\n"}))
        yield Store(s3, first), endpoint
    finally:
        moto.stop()


def _lower(keys: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": keys["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": keys["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture(scope="module")
def s3_server(store: tuple[Store, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _, endpoint = store
    env = {"SELFLESS_S3_ENDPOINT": endpoint, "AWS_EC2_METADATA_DISABLED": "true", **FAKE_KEYS}
    srv = start_server(Path(tmp_path_factory.mktemp("s3server")), env)
    yield srv
    assert srv.stop() == 0, srv.log()


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def wait_active(lam: Any, name: str) -> None:
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def test_functions_and_layers_from_s3(store: tuple[Store, str], s3_server: Server) -> None:
    bucket, _ = store
    lam = s3_server.client()
    name = unique()
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": BUCKET, "S3Key": "fn.zip"},
    )
    assert created["CodeSha256"] == sha(package("v2")), "without a version: the latest object"
    wait_active(lam, name)
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "v2"

    updated = lam.update_function_code(
        FunctionName=name, S3Bucket=BUCKET, S3Key="fn.zip", S3ObjectVersion=bucket.first_version
    )
    assert updated["CodeSha256"] == sha(package("v1")), "S3ObjectVersion picks that version"
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "v1"

    layer = lam.publish_layer_version(LayerName=unique("layer"), Content={"S3Bucket": BUCKET, "S3Key": "layer.zip"})
    assert layer["Content"]["CodeSha256"] == sha(make_zip({"python/from_s3.py": "WHERE = 's3'\n"}))
    user = unique()
    lam.create_function(
        FunctionName=user,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": "import from_s3\n\ndef handler(e, c):\n    return from_s3.WHERE\n"})},
        Layers=[layer["LayerVersionArn"]],
    )
    wait_active(lam, user)
    assert json.loads(lam.invoke(FunctionName=user)["Payload"].read()) == "s3"
    for fn in (name, user):
        lam.delete_function(FunctionName=fn)
    lam.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])


def test_missing_objects_give_aws_errors_and_change_nothing(store: tuple[Store, str], s3_server: Server) -> None:
    lam = s3_server.client()

    def create(code: dict[str, Any]) -> Any:
        return lam.create_function(
            FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler", Code=code
        )

    with pytest.raises(lam.exceptions.InvalidParameterValueException) as no_key:
        create({"S3Bucket": BUCKET, "S3Key": "absent.zip"})
    assert no_key.value.response["Error"]["Message"] == (
        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."
    )
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as no_bucket:
        create({"S3Bucket": "no-such-bucket-here", "S3Key": "fn.zip"})
    assert "S3 Error Code: NoSuchBucket." in no_bucket.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as both:
        create({"S3Bucket": BUCKET, "S3Key": "fn.zip", "ZipFile": package("inline")})
    assert "not both" in both.value.response["Error"]["Message"]

    # A failed UpdateFunctionCode leaves the function as it was.
    name = unique()
    create_ok = lam.create_function(
        FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"S3Bucket": BUCKET, "S3Key": "other.zip"},
    )  # fmt: skip
    wait_active(lam, name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key="absent.zip")
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == create_ok["CodeSha256"]
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "other"
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.publish_layer_version(LayerName=unique("layer"), Content={"S3Bucket": BUCKET, "S3Key": "absent.zip"})


def test_without_an_endpoint_code_comes_from_the_built_in_store(server: Server, lam: Any) -> None:
    from tests.e2e.test_s3 import client

    s3 = client(server)
    bucket = unique("code")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fn.zip", Body=package("built-in"))
    s3.put_object(Bucket=bucket, Key="layer.zip", Body=make_zip({"python/from_s3.py": "WHERE = 'built-in'\n"}))
    layer = lam.publish_layer_version(LayerName=unique("layer"), Content={"S3Bucket": bucket, "S3Key": "layer.zip"})
    name = unique()
    lam.create_function(
        FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": "fn.zip"}, Layers=[layer["LayerVersionArn"]],
    )  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "built-in"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="absent.zip")
    assert refused.value.response["Error"]["Message"] == (
        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."
    )
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="fn.zip", S3ObjectVersion="v9")
    assert "NoSuchVersion" in refused.value.response["Error"]["Message"]
    lam.delete_function(FunctionName=name)
