"""Code packages from S3, against a real S3-compatible server (moto's, on a local port)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from selfless.artifacts.s3 import NO_ENDPOINT_MESSAGE, S3Source
from selfless.config import Settings, SettingsError
from selfless.errors import InvalidParameterValue, RequestEntityTooLarge, SelflessError, ServiceError
from tests.conftest import free_port

REGION = "us-east-1"
BUCKET = "selfless-code"
FIRST = b"PK\x05\x06first version" + bytes(range(256))
SECOND = b"PK\x05\x06second version" + os.urandom(3 * (1 << 20))  # more than one read chunk


@dataclass
class Store:
    endpoint: str
    s3: Any
    first_version: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """moto's S3 server with a versioned bucket holding ``pkg.zip`` twice (FIRST, then SECOND)."""
    nothing = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as mp:
        # S3Source reads credentials from botocore's standard chain: give it fake ones in the environment,
        # and keep the host's own (profiles, files, instance metadata) out of the tests.
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIAMOTOTESTING00001")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "moto-testing-secret")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nothing))
        mp.setenv("AWS_CONFIG_FILE", str(nothing))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            first = s3.put_object(Bucket=BUCKET, Key="pkg.zip", Body=FIRST)["VersionId"]
            s3.put_object(Bucket=BUCKET, Key="pkg.zip", Body=SECOND)
            s3.put_object(Bucket=BUCKET, Key="public.zip", Body=FIRST, ACL="public-read")
            yield Store(endpoint, s3, first)
        finally:
            server.stop()


def fetch(source: S3Source, bucket: str, key: str, version: str | None = None, max_bytes: int = 10 << 20) -> bytes:
    return asyncio.run(source.fetch(bucket, key, version, max_bytes=max_bytes))


def refused(exc_type: type[SelflessError], source: S3Source, bucket: str, key: str, **kwargs: Any) -> str:
    with pytest.raises(exc_type) as exc:
        fetch(source, bucket, key, **kwargs)
    return exc.value.message


def test_fetch_returns_the_latest_bytes(store: Store) -> None:
    assert fetch(S3Source(store.endpoint, REGION), BUCKET, "pkg.zip") == SECOND


def test_fetch_of_a_version_returns_that_version(store: Store) -> None:
    assert fetch(S3Source(store.endpoint, REGION), BUCKET, "pkg.zip", store.first_version) == FIRST


def test_one_source_serves_concurrent_fetches(store: Store) -> None:
    source = S3Source(store.endpoint, REGION)

    async def scenario() -> list[bytes]:
        return await asyncio.gather(
            *(
                source.fetch(BUCKET, "pkg.zip", store.first_version if i % 2 else None, max_bytes=10 << 20)
                for i in range(6)
            )
        )

    assert asyncio.run(scenario()) == [SECOND, FIRST] * 3


def test_missing_key_is_reported_as_aws_does(store: Store) -> None:
    message = refused(InvalidParameterValue, S3Source(store.endpoint, REGION), BUCKET, "absent.zip")
    assert message == (
        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist."
    )


def test_missing_bucket_is_reported_as_aws_does(store: Store) -> None:
    message = refused(InvalidParameterValue, S3Source(store.endpoint, REGION), "no-such-bucket-here", "pkg.zip")
    assert message.startswith("Error occurred while GetObject. S3 Error Code: NoSuchBucket. S3 Error Message: ")


@pytest.mark.parametrize("version", ["not-a-version", "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"])
def test_unknown_version_is_an_s3_error(store: Store, version: str) -> None:
    message = refused(InvalidParameterValue, S3Source(store.endpoint, REGION), BUCKET, "pkg.zip", version=version)
    assert message.startswith("Error occurred while GetObject. S3 Error Code: NoSuchVersion. S3 Error Message: ")


def test_without_credentials_requests_go_unsigned(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Anonymous reads work where the store allows them (botocore would raise NoCredentialsError if it signed)...
    assert fetch(S3Source(store.endpoint, REGION), BUCKET, "public.zip") == FIRST
    # ... and are refused, with S3's code, where it does not.
    message = refused(InvalidParameterValue, S3Source(store.endpoint, REGION), BUCKET, "pkg.zip")
    assert message == "Error occurred while GetObject. S3 Error Code: AccessDenied. S3 Error Message: Access Denied"


def test_an_object_of_exactly_max_bytes_is_accepted(store: Store) -> None:
    assert fetch(S3Source(store.endpoint, REGION), BUCKET, "pkg.zip", max_bytes=len(SECOND)) == SECOND


@pytest.mark.parametrize("max_bytes", [0, 100, len(SECOND) - 1])
def test_an_object_past_max_bytes_is_refused(store: Store, max_bytes: int) -> None:
    message = refused(RequestEntityTooLarge, S3Source(store.endpoint, REGION), BUCKET, "pkg.zip", max_bytes=max_bytes)
    assert message == f"The S3 object is larger than the {max_bytes} bytes a package may be"


def test_without_an_endpoint_s3_locations_are_refused() -> None:
    message = refused(InvalidParameterValue, S3Source(None, REGION), BUCKET, "pkg.zip")
    assert message == NO_ENDPOINT_MESSAGE
    assert message == "S3 code locations need an S3-compatible endpoint: set SELFLESS_S3_ENDPOINT"


@pytest.mark.parametrize(
    ("bucket", "key", "version", "expected"),
    [
        ("", "pkg.zip", None, "S3Bucket must not be empty"),
        (BUCKET, "", None, "S3Key must not be empty"),
        (BUCKET, "pkg.zip", "", "S3ObjectVersion must not be empty when it is given"),
    ],
)
def test_empty_parameters_are_refused_before_any_request(bucket: str, key: str, version: str, expected: str) -> None:
    # Nothing listens there: a request would end in ServiceError, not in the validation message.
    source = S3Source(f"http://127.0.0.1:{free_port()}", REGION, timeout_s=5)
    assert refused(InvalidParameterValue, source, bucket, key, version=version) == expected


# The two tests below take ``store`` only for its credentials: the host's own must not be looked up.
def test_an_endpoint_nobody_listens_on_is_a_service_error(store: Store) -> None:
    source = S3Source(f"http://127.0.0.1:{free_port()}", REGION, timeout_s=20)
    started = time.monotonic()
    message = refused(ServiceError, source, BUCKET, "pkg.zip")
    assert message == "Error occurred while GetObject: the S3 endpoint could not be reached"
    assert time.monotonic() - started < 20


def test_an_endpoint_that_never_answers_is_a_service_error_at_the_deadline(store: Store) -> None:
    # Accepts connections (the kernel does, from the backlog) but never reads or answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        source = S3Source(f"http://127.0.0.1:{silent.getsockname()[1]}", REGION, timeout_s=1)

        async def scenario() -> str:
            started = time.monotonic()
            with pytest.raises(ServiceError) as exc:
                await source.fetch(BUCKET, "pkg.zip", None, max_bytes=100)
            assert time.monotonic() - started < 3
            # Closing the listener resets the waiting connections, so the worker thread ends now rather than
            # at botocore's read timeout (asyncio.run waits for it).
            silent.close()
            return exc.value.message

        assert (
            asyncio.run(scenario()) == "Error occurred while GetObject: the S3 endpoint did not answer within 1 seconds"
        )


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.example.com", "https://[::1]:9000/"])
def test_settings_take_an_http_endpoint(endpoint: str) -> None:
    assert Settings.from_env({"SELFLESS_S3_ENDPOINT": endpoint}).s3_endpoint == endpoint
    assert Settings.from_env({}, s3_endpoint=endpoint).s3_endpoint == endpoint


def test_settings_default_to_no_endpoint() -> None:
    assert Settings.from_env({}).s3_endpoint is None
    assert Settings.from_env({"SELFLESS_S3_ENDPOINT": ""}).s3_endpoint is None


@pytest.mark.parametrize("endpoint", ["s3.example.com", "ftp://s3.example.com", "http://", "http://host:99999"])
def test_settings_refuse_an_endpoint_that_is_not_an_http_url(endpoint: str) -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"SELFLESS_S3_ENDPOINT": endpoint})
    assert str(exc.value) == f"SELFLESS_S3_ENDPOINT must be an http:// or https:// URL, got {endpoint!r}"
