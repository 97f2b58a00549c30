"""Who may call a public (AuthType NONE) function URL: the statements ``add-permission`` writes, evaluated
by ``policies.allows_anyone``, and the response mapping's refusals (pure functions, no server)."""

from __future__ import annotations

from typing import Any

from selfless import policies
from selfless.function_urls.serving import _mapped

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"
CONTEXT = {"lambda:functionurlauthtype": "NONE", "lambda:invokedviafunctionurl": "true"}


def policy(*statements: dict[str, Any]) -> policies.Policy:
    return policies.Policy(tuple(statements), "r")


def statement(sid: str, **params: Any) -> dict[str, Any]:
    return policies.function_statement({"StatementId": sid, "Principal": "*", **params}, ARN)


def test_the_statements_add_permission_writes_open_the_url() -> None:
    url = statement("url", Action="lambda:InvokeFunctionUrl", FunctionUrlAuthType="NONE")
    invoke = statement("invoke", Action="lambda:InvokeFunction", InvokedViaFunctionUrl=True)
    both = policy(url, invoke)
    assert policies.allows_anyone(both, "lambda:InvokeFunctionUrl", CONTEXT)
    assert policies.allows_anyone(both, "lambda:InvokeFunction", CONTEXT)
    assert not policies.allows_anyone(policy(url), "lambda:InvokeFunction", CONTEXT)
    assert not policies.allows_anyone(None, "lambda:InvokeFunctionUrl", CONTEXT)


def test_conditions_that_do_not_hold_grant_nothing() -> None:
    iam = statement("url", Action="lambda:InvokeFunctionUrl", FunctionUrlAuthType="AWS_IAM")
    assert not policies.allows_anyone(policy(iam), "lambda:InvokeFunctionUrl", CONTEXT)
    not_via_url = statement("invoke", Action="lambda:InvokeFunction", InvokedViaFunctionUrl=False)
    assert not policies.allows_anyone(policy(not_via_url), "lambda:InvokeFunction", CONTEXT)
    sourced = statement("s", Action="lambda:InvokeFunction", SourceArn="arn:aws:s3:::b")
    assert not policies.allows_anyone(policy(sourced), "lambda:InvokeFunction", CONTEXT)
    account = policies.function_statement(
        {"StatementId": "a", "Principal": "111122223333", "Action": "lambda:InvokeFunctionUrl"}, ARN
    )
    assert not policies.allows_anyone(policy(account), "lambda:InvokeFunctionUrl", CONTEXT)
    deny = {**statement("d", Action="lambda:*"), "Effect": "Deny"}
    assert not policies.allows_anyone(policy(deny), "lambda:InvokeFunctionUrl", CONTEXT)


def test_results_that_cannot_be_an_http_response_are_502() -> None:
    for payload in (
        b'{"statusCode": "200"}',
        b'{"statusCode": 99}',
        b'{"statusCode": true}',
        b'{"statusCode": 200, "body": {"an": "object"}}',
        b'{"statusCode": 200, "body": "!!", "isBase64Encoded": true}',
        b'{"statusCode": 200, "headers": {"bad name": "x"}}',
        b'{"statusCode": 200, "headers": {"x": {"nested": 1}}}',
        b'{"statusCode": 200, "cookies": "a=1"}',
        b"not json",
    ):
        answer = _mapped(payload)
        assert (answer.status, answer.body) == (502, b"Internal Server Error"), payload
    answer = _mapped(b'{"statusCode": 204, "headers": {"x-n": 5, "x-b": true}}')
    assert (answer.status, answer.body) == (204, b"")
    assert answer.headers == [("x-n", "5"), ("x-b", "true")]
    assert _mapped(b"null").body == b"null"
