"""Lambda function URLs end to end: the configuration API with boto3 (and each of its errors)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server, deploy, make_zip, start_server
from tests.e2e.test_awscli import aws
from tests.e2e.test_wire_exactness import problems

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


# -- serving -----------------------------------------------------------------------------------------------

ROUTES = """
import base64, json


def handler(event, context):
    path = event["rawPath"]
    if path.startswith("/echo"):
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    if path == "/status":
        return {
            "statusCode": 201,
            "headers": {"x-custom": "yes", "content-type": "text/plain", "Access-Control-Allow-Origin": "https://x.example"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": "created",
        }
    if path == "/b64":
        body = base64.b64encode(bytes(range(256))).decode()
        return {"statusCode": 200, "headers": {"content-type": "image/png"}, "body": body, "isBase64Encoded": True}
    if path == "/bare":
        return {"k": [1, 2]}
    if path == "/string":
        return "hello"
    if path == "/error":
        raise ValueError("boom")
    if path == "/sleep":
        import time
        time.sleep(30)
    if path == "/big":
        return "x" * (7 * 1024 * 1024)
    return event
"""


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: Server,
    method: str,
    target: str,
    *,
    host: str | None = None,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> Answer:
    """One plain HTTP request to the server (``host``: the Host header to send, for the virtual-host form)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.putrequest(method, target, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in headers or []:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def signed_headers(url: str, method: str = "GET", body: bytes = b"", service: str = "lambda") -> list[tuple[str, str]]:
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, "us-east-1").add_auth(request)
    return [(k, v) for k, v in request.headers.items() if k.lower() != "host"]


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def url_id(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname.split(".")[0]  # type: ignore[union-attr]


def make_public(lam: Any, name: str, **qualified: str) -> None:
    """The two statements a public (AuthType NONE) URL needs since October 2025."""
    lam.add_permission(
        FunctionName=name,
        StatementId="url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
        **qualified,
    )
    lam.add_permission(
        FunctionName=name,
        StatementId="invoke",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
        **qualified,
    )


@dataclass
class Public:
    name: str
    url: str


@pytest.fixture(scope="module")
def public(lam: Any) -> Iterator[Public]:
    """A function serving ROUTES on a public URL with a CORS configuration."""
    name = deploy(lam, ROUTES)
    url = lam.create_function_url_config(
        FunctionName=name,
        AuthType="NONE",
        Cors={
            "AllowOrigins": ["https://app.example"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-token"],
            "ExposeHeaders": ["x-custom"],
            "MaxAge": 300,
        },
    )["FunctionUrl"]
    make_public(lam, name)
    yield Public(name, str(url))
    lam.delete_function(FunctionName=name)


def test_none_needs_both_public_statements(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ROUTES)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    forbidden = call(server, "GET", "/echo", host=host_of(url))
    assert forbidden.status == 403
    assert forbidden.json()["Message"].startswith("Forbidden")
    lam.add_permission(
        FunctionName=name,
        StatementId="url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )
    assert call(server, "GET", "/echo", host=host_of(url)).status == 403  # lambda:InvokeFunction is missing
    lam.add_permission(
        FunctionName=name,
        StatementId="invoke",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )
    assert call(server, "GET", "/echo", host=host_of(url)).status == 200
    assert call(server, "GET", f"/lambda-url/{url_id(url)}/echo").status == 200
    # A statement for AuthType AWS_IAM does not open a URL whose AuthType is NONE.
    lam.remove_permission(FunctionName=name, StatementId="url")
    lam.add_permission(
        FunctionName=name,
        StatementId="url",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="AWS_IAM",
    )
    assert call(server, "GET", "/echo", host=host_of(url)).status == 403
    # An unknown URL id is not found; a deleted URL stops answering.
    assert call(server, "GET", "/lambda-url/" + "0" * 32 + "/").status == 404
    lam.delete_function_url_config(FunctionName=name)
    assert call(server, "GET", f"/lambda-url/{url_id(url)}/echo").status == 404


def test_aws_iam_needs_a_lambda_signature(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ROUTES)
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    make_public(lam, name)  # a public policy does not make an AWS_IAM URL public
    unsigned = call(server, "GET", "/echo", host=host_of(url))
    assert unsigned.status == 403
    assert unsigned.json()["Message"].startswith("Forbidden")
    body = b'{"x": 1}'
    headers = [*signed_headers(url.rstrip("/") + "/echo?q=1", "POST", body), ("Content-Type", "application/json")]
    answer = call(server, "POST", "/echo?q=1", host=host_of(url), body=body, headers=headers)
    assert answer.status == 200, answer.body
    event = answer.json()
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == ACCESS_KEY
    assert iam["accountId"] == "000000000000"
    assert {"callerId", "userArn", "userId"} <= set(iam)
    assert event["body"] == '{"x": 1}'
    # Signed for another service, or with a body that is not the one signed: refused.
    other = signed_headers(url.rstrip("/") + "/echo", service="s3")
    assert call(server, "GET", "/echo", host=host_of(url), headers=other).status == 403
    tampered = signed_headers(url.rstrip("/") + "/echo", "POST", b"one")
    assert call(server, "POST", "/echo", host=host_of(url), body=b"two", headers=tampered).status == 403
    # The path form, signed as sent.
    path_url = f"{server.endpoint}/lambda-url/{url_id(url)}/echo"
    assert call(server, "GET", f"/lambda-url/{url_id(url)}/echo", headers=signed_headers(path_url)).status == 200


def test_the_event_is_payload_format_2(server: Server, public: Public) -> None:
    answer = call(
        server,
        "POST",
        "/echo/a%20b?a=1&a=2&b=&c=x%20y",
        host=host_of(public.url),
        body="héllo".encode(),
        headers=[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Cookie", "s=1; t=2"),
            ("User-Agent", "furl-test/1"),
        ],
    )
    assert answer.status == 200, answer.body
    event = answer.json()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo/a%20b"
    assert event["rawQueryString"] == "a=1&a=2&b=&c=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "", "c": "x y"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["headers"]["x-multi"] == "one,two"
    assert event["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert "cookie" not in event["headers"]
    assert all(k == k.lower() for k in event["headers"])
    assert event["body"] == "héllo"
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event and "stageVariables" not in event
    context = event["requestContext"]
    uid = url_id(public.url)
    assert context["apiId"] == uid == context["domainPrefix"]
    assert context["domainName"] == f"{uid}.lambda-url.us-east-1.localhost"
    assert context["accountId"] == "anonymous"
    assert "authorizer" not in context
    assert context["http"] == {
        "method": "POST",
        "path": "/echo/a b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "furl-test/1",
    }
    assert context["routeKey"] == "$default" and context["stage"] == "$default"
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 300
    assert context["requestId"]

    # A binary body travels base64-encoded; no body, no query: those members are absent.
    binary = bytes(range(256))
    event = call(
        server,
        "PUT",
        f"/lambda-url/{uid}/echo",
        body=binary,
        headers=[("Content-Type", "application/octet-stream")],
    ).json()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == binary
    assert event["rawPath"] == "/echo"
    event = call(server, "GET", f"/lambda-url/{uid}/echo").json()
    assert "body" not in event and "queryStringParameters" not in event and "cookies" not in event
    assert event["rawQueryString"] == ""


def test_response_mapping(server: Server, public: Public) -> None:
    host = host_of(public.url)
    status = call(server, "GET", "/status", host=host)
    assert status.status == 201
    assert status.body == b"created"
    assert status.header("x-custom") == "yes"
    assert status.header("content-type") == "text/plain"
    assert status.all("set-cookie") == ["a=1; Path=/", "b=2"]

    b64 = call(server, "GET", "/b64", host=host)
    assert b64.status == 200
    assert b64.body == bytes(range(256))
    assert b64.header("content-type") == "image/png"

    head = call(server, "HEAD", "/status", host=host)
    assert (head.status, head.body, head.header("content-length")) == (201, b"", "7")

    bare = call(server, "GET", "/bare", host=host)
    assert bare.status == 200
    assert bare.header("content-type") == "application/json"
    assert json.loads(bare.body) == {"k": [1, 2]}

    text = call(server, "GET", "/string", host=host)
    assert (text.status, text.body, text.header("content-type")) == (200, b'"hello"', "application/json")

    error = call(server, "GET", "/error", host=host)
    assert error.status == 502
    assert error.body == b"Internal Server Error"
    assert len(error.all("x-amzn-requestid")) == 1
    timeout = call(server, "GET", "/sleep", host=host)  # past the function's 3 s
    assert (timeout.status, timeout.body) == (502, b"Internal Server Error")


def test_cors(server: Server, public: Public) -> None:
    host = host_of(public.url)
    preflight = call(
        server,
        "OPTIONS",
        "/status",
        host=host,
        headers=[("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")],
    )
    assert preflight.status == 200
    assert preflight.header("access-control-allow-origin") == "https://app.example"
    assert preflight.header("access-control-allow-methods") == "GET,POST"
    assert preflight.header("access-control-allow-headers") == "x-token"
    assert preflight.header("access-control-max-age") == "300"
    other = call(
        server,
        "OPTIONS",
        "/status",
        host=host,
        headers=[("Origin", "https://other.example"), ("Access-Control-Request-Method", "POST")],
    )
    assert other.status == 200 and other.header("access-control-allow-origin") is None

    # On a response: the URL's CORS headers, in place of those the function set itself.
    answer = call(server, "GET", "/status", host=host, headers=[("Origin", "https://app.example")])
    assert answer.all("access-control-allow-origin") == ["https://app.example"]
    assert answer.header("access-control-expose-headers") == "x-custom"
    answer = call(server, "GET", "/status", host=host, headers=[("Origin", "https://other.example")])
    assert answer.header("access-control-allow-origin") is None


def test_throttled_and_deactivated(server: Server, lam: Any, public: Public) -> None:
    """AWS's way to deactivate a URL: reserved concurrency 0, every request then 429."""
    lam.put_function_concurrency(FunctionName=public.name, ReservedConcurrentExecutions=0)
    try:
        assert call(server, "GET", "/bare", host=host_of(public.url)).status == 429
    finally:
        lam.delete_function_concurrency(FunctionName=public.name)
    assert call(server, "GET", "/bare", host=host_of(public.url)).status == 200


def test_aws_cli(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ROUTES)
    created = json.loads(
        aws(server, "lambda", "create-function-url-config", "--function-name", name, "--auth-type", "NONE").stdout
    )
    url = created["FunctionUrl"]
    assert URL.fullmatch(url)
    aws(
        server, "lambda", "add-permission", "--function-name", name, "--statement-id", "url",
        "--action", "lambda:InvokeFunctionUrl", "--principal", "*", "--function-url-auth-type", "NONE",
    )  # fmt: skip
    aws(
        server, "lambda", "add-permission", "--function-name", name, "--statement-id", "invoke",
        "--action", "lambda:InvokeFunction", "--principal", "*", "--invoked-via-function-url",
    )  # fmt: skip
    answer = call(server, "GET", "/string", host=host_of(url))
    assert (answer.status, answer.body) == (200, b'"hello"')
    listed = json.loads(aws(server, "lambda", "list-function-url-configs", "--function-name", name).stdout)
    assert [c["FunctionUrl"] for c in listed["FunctionUrlConfigs"]] == [url]
    aws(server, "lambda", "delete-function-url-config", "--function-name", name)
    missing = aws(server, "lambda", "get-function-url-config", "--function-name", name, check=False)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


def test_alias_url_runs_the_alias_with_its_policy(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ROUTES)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    url = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)  # the function's policy: not the alias's
    assert call(server, "GET", "/echo", host=host_of(url)).status == 403
    make_public(lam, name, Qualifier="live")
    answer = call(server, "GET", "/echo", host=host_of(url))
    assert answer.status == 200
    assert answer.json()["requestContext"]["apiId"] == url_id(url)


def test_a_bucket_named_lambda_url_stays_reachable(server: Server) -> None:
    """The path form yields to requests signed for S3 (path-style addressing of a bucket of that name)."""
    s3 = server.client("s3")
    s3.create_bucket(Bucket="lambda-url")
    key = "a" * 32 + "/object.txt"
    s3.put_object(Bucket="lambda-url", Key=key, Body=b"kept")
    assert s3.get_object(Bucket="lambda-url", Key=key)["Body"].read() == b"kept"
    s3.delete_object(Bucket="lambda-url", Key=key)
    s3.delete_bucket(Bucket="lambda-url")


def test_urls_survive_a_restart(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        lam = srv.client()
        name = deploy(lam, ROUTES)
        url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
        make_public(lam, name)
    finally:
        assert srv.stop() == 0, srv.log()
    srv = start_server(tmp_path)
    try:
        lam = srv.client()
        again = lam.get_function_url_config(FunctionName=name)["FunctionUrl"]
        assert url_id(again) == url_id(url)
        answer = call(srv, "GET", f"/lambda-url/{url_id(url)}/bare")
        assert answer.status == 200, answer.body
    finally:
        assert srv.stop() == 0, srv.log()


def test_every_answer_fits_the_model(server: Server, make_function: Callable[..., str]) -> None:
    """The raw bodies of every URL configuration operation (and their errors) fit botocore's shapes."""
    lam = server.client()
    seen: list[tuple[str, list[str]]] = []

    def check(response_dict: dict[str, Any], operation_model: Any, **_: Any) -> None:
        body = response_dict.get("body") or b""
        if "FunctionUrl" not in operation_model.name or not body:
            return
        doc = json.loads(body)
        if response_dict["status_code"] < 300:
            seen.append((operation_model.name, problems(operation_model.output_shape, doc, operation_model.name)))
        else:
            code = response_dict["headers"].get("x-amzn-ErrorType", "").split(":")[0]
            shapes = {e.name: e for e in operation_model.error_shapes}
            allowed = {"Type", "message", "Message", "__type"} | set(shapes[code].members if code in shapes else [])
            seen.append((operation_model.name, [f"{code}: {k}" for k in doc if k not in allowed]))

    lam.meta.events.register("before-parse.lambda.*", check)
    name = make_function(ECHO)
    cors = {
        "AllowCredentials": True,
        "AllowHeaders": ["x-a"],
        "AllowMethods": ["*"],
        "AllowOrigins": ["*"],
        "ExposeHeaders": ["x-b"],
        "MaxAge": 10,
    }
    lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors)
    lam.get_function_url_config(FunctionName=name)
    lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    lam.list_function_url_configs(FunctionName=name, MaxItems=1)
    with pytest.raises(ClientError):
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(ClientError):
        lam.get_function_url_config(FunctionName=name)
    assert {op for op, _ in seen} == {
        "CreateFunctionUrlConfig",
        "GetFunctionUrlConfig",
        "UpdateFunctionUrlConfig",
        "ListFunctionUrlConfigs",
    }
    assert [p for _, found in seen for p in found] == []
