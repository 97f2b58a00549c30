"""Hostile callers of the API: a function reading other functions with its own credentials, JSON nested
100,000 deep, a signature scoped to another region, an Invoke with a malformed Qualifier. Each is refused
as AWS refuses it, and the server keeps serving."""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests.conftest import ACCESS_KEY, SECRET_KEY, Server

ACCOUNT = "000000000000"
REGION = "us-east-1"


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def healthy(server: Server, lam: Any, name: str) -> None:
    """The server answers /health and still runs a normal invocation of ``name``."""
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=10) as r:
        assert r.status == 200
    answer = lam.invoke(FunctionName=name, Payload=b'{"still": "fine"}')
    assert answer["StatusCode"] == 200 and "FunctionError" not in answer, answer["Payload"].read()
    answer["Payload"].read()
    assert "unhandled error serving" not in server.log()


def signed(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "lambda",
) -> tuple[int, dict[str, str], bytes]:
    """One request signed by botocore as a client signs it, sent as is: (status, headers, body)."""
    request = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
    prepared = request.prepare()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, prepared.url[len(server.endpoint) :], body=body, headers=dict(prepared.headers))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# --- a function's own credentials ---------------------------------------------------------------------------

ATTACKER = r'''
import json, os, urllib.error, urllib.request
import boto3, botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config


def outcome(call):
    try:
        result = call()
    except botocore.exceptions.ClientError as exc:
        error = exc.response["Error"]
        return [exc.response["ResponseMetadata"]["HTTPStatusCode"], error["Code"], error["Message"]]
    return [200, "ok", result]


def selfless_events(name):
    """selfless's own operation on a function's events, signed with this environment's credentials."""
    request = AWSRequest("GET", os.environ["AWS_ENDPOINT_URL"] + "/_selfless/functions/%s/events" % name)
    credentials = boto3.Session().get_credentials().get_frozen_credentials()
    SigV4Auth(credentials, "lambda", os.environ["AWS_REGION"]).add_auth(request)
    try:
        raw = urllib.request.Request(request.url, headers=dict(request.headers))
        with urllib.request.urlopen(raw, timeout=30) as r:
            return [r.status, "ok", r.read().decode()]
    except urllib.error.HTTPError as exc:
        return [exc.code, exc.headers.get("x-amzn-ErrorType"), json.loads(exc.read()).get("message")]


def handler(event, context):
    config = Config(retries={"max_attempts": 1})
    lam = boto3.client("lambda", config=config)  # AWS_ENDPOINT_URL and the environment's own credentials
    logs = boto3.client("logs", config=config)
    victim, victim_arn, me = event["victim"], event["victim_arn"], context.function_name
    own_arn = ":".join(context.invoked_function_arn.split(":")[:7])
    group = "/aws/lambda/" + victim
    calls = {
        "GetFunction": lambda: lam.get_function(FunctionName=victim)["Configuration"]["Environment"],
        "GetFunction $LATEST": lambda: lam.get_function(FunctionName=victim, Qualifier="$LATEST")["Code"],
        "GetFunctionConfiguration": lambda: lam.get_function_configuration(FunctionName=victim_arn)["Environment"],
        "ListFunctions": lambda: [f["FunctionName"] for f in lam.list_functions()["Functions"]],
        "ListFunctions ALL": lambda: len(lam.list_functions(FunctionVersion="ALL")["Functions"]),
        "GetPolicy": lambda: lam.get_policy(FunctionName=victim)["Policy"],
        "ListAliases": lambda: lam.list_aliases(FunctionName=victim)["Aliases"],
        "ListVersionsByFunction": lambda: len(lam.list_versions_by_function(FunctionName=victim)["Versions"]),
        "ListTags": lambda: lam.list_tags(Resource=victim_arn)["Tags"],
        "GetFunctionConcurrency": lambda: lam.get_function_concurrency(FunctionName=victim),
        "GetFunctionEventInvokeConfig": lambda: lam.get_function_event_invoke_config(FunctionName=victim),
        "ListProvisionedConcurrencyConfigs": lambda: lam.list_provisioned_concurrency_configs(FunctionName=victim),
        "GetFunctionRecursionConfig": lambda: lam.get_function_recursion_config(FunctionName=victim)["RecursiveLoop"],
        "UpdateFunctionConfiguration": lambda: lam.update_function_configuration(
            FunctionName=victim, Environment={"Variables": {"PWNED": "1"}})["FunctionName"],
        "UpdateFunctionCode": lambda: lam.update_function_code(FunctionName=victim, ZipFile=b"PK")["FunctionName"],
        "DeleteFunction": lambda: lam.delete_function(FunctionName=victim)["ResponseMetadata"]["HTTPStatusCode"],
        "AddPermission": lambda: lam.add_permission(
            FunctionName=victim, StatementId="open", Action="lambda:InvokeFunction", Principal="*")["Statement"],
        "DescribeLogGroups": lambda: logs.describe_log_groups()["logGroups"],
        "FilterLogEvents": lambda: logs.filter_log_events(logGroupName=group)["events"],
        "GetLogEvents": lambda: logs.get_log_events(logGroupName=group, logStreamName="s")["events"],
        "own GetFunction": lambda: lam.get_function(FunctionName=me)["Configuration"]["Environment"],
        "own GetFunction version": lambda: lam.get_function(FunctionName=me, Qualifier="1")["Configuration"]["Version"],
        "own GetFunctionConfiguration alias": lambda: lam.get_function_configuration(
            FunctionName=own_arn + ":live")["Version"],
        "own ListTags": lambda: lam.list_tags(Resource=own_arn)["Tags"],
        "own GetPolicy": lambda: lam.get_policy(FunctionName=me)["Policy"],
        "own UpdateFunctionConfiguration": lambda: lam.update_function_configuration(FunctionName=me, Timeout=9),
        "GetAccountSettings": lambda: sorted(lam.get_account_settings()["AccountLimit"]),
        "Invoke": lambda: lam.invoke(FunctionName=victim, Payload=b'{"from": "attacker"}')["Payload"].read().decode(),
        "Invoke Event": lambda: lam.invoke(FunctionName=victim, InvocationType="Event", Payload=b"{}")["StatusCode"],
    }
    found = {name: outcome(call) for name, call in calls.items()}
    found["selfless events"] = selfless_events(victim)
    return found
'''


def test_function_credentials_read_only_their_own_function(
    server: Server, lam: Any, make_function: Callable[..., str]
) -> None:
    victim = make_function(
        "def handler(event, context):\n    return {'victim got': event}\n",
        Environment={"Variables": {"DB_PASSWORD": "hunter2"}},
        Tags={"owner": "victim"},
    )
    lam.add_permission(
        FunctionName=victim, StatementId="s3", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com"
    )
    attacker = make_function(ATTACKER, Environment={"Variables": {"MINE": "mine"}}, Tags={"owner": "attacker"})
    # A role with a path: the session is named by the role's name alone, as on Lambda.
    lam.update_function_configuration(
        FunctionName=attacker, Role=f"arn:aws:iam::{ACCOUNT}:role/service-role/reader-role", Timeout=60
    )
    lam.get_waiter("function_updated_v2").wait(FunctionName=attacker, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    lam.publish_version(FunctionName=attacker)
    lam.create_alias(FunctionName=attacker, Name="live", FunctionVersion="1")

    def denied(action: str, resource: str, service: str = "lambda") -> list[Any]:
        message = (
            f"User: arn:aws:sts::{ACCOUNT}:assumed-role/reader-role/{attacker} is not authorized to perform: "
            f"{service}:{action} on resource: {resource} because no identity-based policy allows the "
            f"{service}:{action} action"
        )
        return [403, "AccessDeniedException", message]

    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:"
    expected = {
        "GetFunction": denied("GetFunction", arn(victim)),
        "GetFunction $LATEST": denied("GetFunction", arn(victim) + ":$LATEST"),
        "GetFunctionConfiguration": denied("GetFunctionConfiguration", arn(victim)),
        "ListFunctions": denied("ListFunctions", "*"),
        "ListFunctions ALL": denied("ListFunctions", "*"),
        "GetPolicy": denied("GetPolicy", arn(victim)),
        "ListAliases": denied("ListAliases", arn(victim)),
        "ListVersionsByFunction": denied("ListVersionsByFunction", arn(victim)),
        "ListTags": denied("ListTags", arn(victim)),
        "GetFunctionConcurrency": denied("GetFunctionConcurrency", arn(victim)),
        "GetFunctionEventInvokeConfig": denied("GetFunctionEventInvokeConfig", arn(victim)),
        "ListProvisionedConcurrencyConfigs": denied("ListProvisionedConcurrencyConfigs", arn(victim)),
        "GetFunctionRecursionConfig": denied("GetFunctionRecursionConfig", arn(victim)),
        "UpdateFunctionConfiguration": denied("UpdateFunctionConfiguration", arn(victim)),
        "UpdateFunctionCode": denied("UpdateFunctionCode", arn(victim)),
        "DeleteFunction": denied("DeleteFunction", arn(victim)),
        "AddPermission": denied("AddPermission", arn(victim)),
        "DescribeLogGroups": denied("DescribeLogGroups", f"{logs}:log-stream:", "logs"),
        "FilterLogEvents": denied("FilterLogEvents", f"{logs}/aws/lambda/{victim}:log-stream:", "logs"),
        "GetLogEvents": denied("GetLogEvents", f"{logs}/aws/lambda/{victim}:log-stream:s", "logs"),
        "own GetFunction": [200, "ok", {"Variables": {"MINE": "mine"}}],
        "own GetFunction version": [200, "ok", "1"],
        "own GetFunctionConfiguration alias": [200, "ok", "1"],
        "own ListTags": [200, "ok", {"owner": "attacker"}],
        "own GetPolicy": denied("GetPolicy", arn(attacker)),
        "own UpdateFunctionConfiguration": denied("UpdateFunctionConfiguration", arn(attacker)),
        "GetAccountSettings": [200, "ok", sorted(lam.get_account_settings()["AccountLimit"])],
        "Invoke": [200, "ok", json.dumps({"victim got": {"from": "attacker"}})],
        "Invoke Event": [200, "ok", 202],
        "selfless events": denied("ListFunctionEvents", arn(victim), "selfless"),
    }
    # From $LATEST's environments, and from an environment of version 1 (its credentials name the version).
    for qualifier in ("$LATEST", "live"):
        answer = lam.invoke(
            FunctionName=attacker,
            Qualifier=qualifier,
            Payload=json.dumps({"victim": victim, "victim_arn": arn(victim)}),
        )
        found = json.loads(answer["Payload"].read())
        assert "FunctionError" not in answer, found
        assert found == expected, qualifier

    after = lam.get_function_configuration(FunctionName=victim)
    assert after["Environment"] == {"Variables": {"DB_PASSWORD": "hunter2"}}
    assert lam.get_function_configuration(FunctionName=attacker)["Timeout"] == 60
    healthy(server, lam, victim)


# --- JSON nested 100,000 deep -------------------------------------------------------------------------------

TOO_DEEP = (
    "Document nesting depth (1001) exceeds the maximum allowed (1000, "
    "from `StreamReadConstraints.getMaxNestingDepth()`)"
)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_is_a_400(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function("def handler(event, context):\n    return 'ok'\n")
    deep = b"[" * 100_000
    invoke = f"/2015-03-31/functions/{name}/invocations"
    body_error = f"Could not parse request body into json: {TOO_DEEP}"
    payload_error = f"Could not parse request body into json: Could not parse payload into json: {TOO_DEEP}"
    context = {"X-Amz-Client-Context": base64.b64encode(b"[" * 2600).decode()}
    cases: list[tuple[str, str, bytes, dict[str, str], str]] = [
        ("POST", "/2015-03-31/functions", deep, {}, body_error),
        ("PUT", f"/2015-03-31/functions/{name}/configuration", deep, {}, body_error),
        ("POST", f"/2015-03-31/functions/{name}/policy", nested(100_000), {}, body_error),
        ("PUT", f"/2019-09-25/functions/{name}/event-invoke-config", deep, {}, body_error),
        ("POST", invoke, deep, {}, payload_error),
        ("POST", invoke, nested(100_000), {"X-Amz-Invocation-Type": "Event"}, payload_error),
        ("POST", invoke, nested(1001), {"X-Amz-Invocation-Type": "DryRun"}, payload_error),
        ("POST", invoke, b"[" * 6_000_000, {}, payload_error),
        ("POST", invoke, b"{}", context, "Client context must be a valid Base64-encoded JSON object."),
        ("POST", f"/2014-11-13/functions/{name}/invoke-async/", deep, {}, payload_error),
    ]
    for method, path, body, headers, message in cases:
        started = time.monotonic()
        status, answer_headers, answer = signed(server, method, path, body, headers)
        elapsed = time.monotonic() - started
        assert (status, answer_headers.get("x-amzn-errortype")) == (400, "InvalidRequestContentException"), (
            path,
            answer,
        )
        assert json.loads(answer) == {"Type": "User", "message": message}, path
        assert elapsed < 5.0, (path, elapsed)  # ~20 ms for 6 MB of '[' on a quiet machine

    # CloudWatch Logs (JSON 1.1) says SerializationException.
    status, _headers, answer = signed(
        server,
        "POST",
        "/",
        deep,
        {"X-Amz-Target": "Logs_20140328.FilterLogEvents", "Content-Type": "application/x-amz-json-1.1"},
        service="logs",
    )
    assert status == 400
    assert json.loads(answer) == {
        "__type": "SerializationException",
        "message": f"The request body could not be parsed as JSON: {TOO_DEEP}",
    }

    # At the limit itself, the payload is JSON like any other.
    status, _headers, _answer = signed(server, "POST", invoke, nested(1000), {"X-Amz-Invocation-Type": "DryRun"})
    assert status == 204
    healthy(server, lam, name)


# --- a signature scoped to another region -------------------------------------------------------------------


def test_signature_for_another_region_is_refused(server: Server, lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function("def handler(event, context):\n    return 'ok'\n")
    message = "Credential should be scoped to a valid region, not 'eu-west-1'. "
    for service, call in (
        ("lambda", lambda c: c.get_function(FunctionName=name)),
        ("lambda", lambda c: c.invoke(FunctionName=name, Payload=b"{}")),
        ("logs", lambda c: c.describe_log_groups()),
    ):
        client = boto3.client(
            service,
            endpoint_url=server.endpoint,
            region_name="eu-west-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}),
        )
        server.clients.append(client)
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call(client)
        response = info.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 403, service
        assert response["Error"] == {"Code": "InvalidSignatureException", "Message": message}, service
    healthy(server, lam, name)


# --- Invoke's Qualifier -------------------------------------------------------------------------------------


def test_invoke_validates_its_qualifier_as_get_function_does(
    server: Server, lam: Any, lam_unvalidated: Any, make_function: Callable[..., str]
) -> None:
    name = make_function("def handler(event, context):\n    return 'ok'\n")
    pattern = lam.meta.service_model.operation_model("Invoke").input_shape.members["Qualifier"].metadata["pattern"]
    cases = {
        "bad qualifier!": f"1 validation error detected: Value 'bad qualifier!' at 'qualifier' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {pattern}",
        "q" * 129: f"1 validation error detected: Value '{'q' * 129}' at 'qualifier' failed to satisfy constraint: "
        "Member must have length less than or equal to 128",
    }
    for qualifier, message in cases.items():
        for invocation_type in ("RequestResponse", "Event", "DryRun"):
            with pytest.raises(botocore.exceptions.ClientError) as info:
                lam_unvalidated.invoke(
                    FunctionName=name, Qualifier=qualifier, InvocationType=invocation_type, Payload=b"{}"
                )
            assert info.value.response["Error"] == {"Code": "ValidationException", "Message": message}
        with pytest.raises(botocore.exceptions.ClientError) as info:
            lam_unvalidated.get_function(FunctionName=name, Qualifier=qualifier)
        assert info.value.response["Error"] == {"Code": "ValidationException", "Message": message}
    healthy(server, lam, name)


DEEP_ERROR_BOOTSTRAP = """#!/usr/bin/env python3
# A custom runtime that answers every call with an error body nested far past any parser's limit.
import json, os, urllib.request

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
    body = ("[" * 100000 + "]" * 100000).encode()
    post = urllib.request.Request(api + request_id + "/error", data=body, method="POST")
    urllib.request.urlopen(post).close()
"""


def test_a_runtimes_deeply_nested_error_body_ends_its_call_at_once(
    server: Server, lam: Any, make_function: Callable[..., str]
) -> None:
    """A Runtime API error body nested 100k deep is kept as the error's text, not a 500 that would leave the
    call waiting for its timeout."""
    name = make_function(
        files={"bootstrap": DEEP_ERROR_BOOTSTRAP},
        modes={"bootstrap": 0o755},
        runtime="provided.al2023",
        handler="x",
        Timeout=30,
    )
    started = time.monotonic()
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    body = r["Payload"].read()
    assert time.monotonic() - started < 10
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(body)["errorMessage"].startswith("[[[")
    healthy(server, lam, make_function("def handler(event, context):\n    return event\n"))
