"""Resource-based policies: statements, revisions and errors exactly as AWS writes them.

Expected strings come from AWS: botocore's examples (examples-1.json for AddPermission, GetPolicy and
AddLayerVersionPermission), LocalStack's snapshots recorded against AWS, and AWS error reports.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfless import policies
from selfless.api import model
from selfless.errors import (
    InvalidParameterValue,
    PolicyLengthExceeded,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)

FN = "arn:aws:lambda:us-east-2:123456789012:function:my-function"
LAYER = "arn:aws:lambda:us-east-2:123456789012:layer:my-layer:1"
STALE_FUNCTION = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)
STALE_LAYER = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetLayerPolicy API to retrieve the latest Revision Id"
)


def grant(sid: str = "s", **params: Any) -> dict[str, Any]:
    request = {"StatementId": sid, "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com", **params}
    return policies.function_statement(request, FN)


def layer_grant(sid: str = "s", **params: Any) -> dict[str, Any]:
    request = {"StatementId": sid, "Action": "lambda:GetLayerVersion", "Principal": "*", **params}
    return policies.layer_statement(request, LAYER)


def is_uuid4(text: str) -> bool:
    return str(uuid.UUID(text, version=4)) == text


# -- AddPermission's statement ---------------------------------------------------------------------------------


def test_service_principal_with_source_conditions_as_in_awss_example() -> None:
    statement = grant("s3", SourceAccount="123456789012", SourceArn="arn:aws:s3:::my-bucket-1xpuxmplzrlbh")
    # botocore examples-1.json, AddPermission "To grant Amazon S3 permission to invoke a function".
    assert policies.statement_json(statement) == (
        '{"Sid":"s3","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction",'
        '"Resource":"arn:aws:lambda:us-east-2:123456789012:function:my-function","Condition":{"StringEquals":'
        '{"AWS:SourceAccount":"123456789012"},"ArnLike":{"AWS:SourceArn":"arn:aws:s3:::my-bucket-1xpuxmplzrlbh"}}}'
    )


def test_account_principal_becomes_its_root_as_in_awss_example() -> None:
    # botocore examples-1.json, AddPermission "To grant another account permission to invoke a function".
    assert policies.statement_json(grant("xaccount", Principal="223456789012")) == (
        '{"Sid":"xaccount","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::223456789012:root"},'
        '"Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-2:123456789012:function:my-function"}'
    )


@pytest.mark.parametrize(
    ("principal", "rendered"),
    [
        ("*", "*"),
        ("123456789012", {"AWS": "arn:aws:iam::123456789012:root"}),
        ("lambda.amazonaws.com", {"Service": "lambda.amazonaws.com"}),
        ("logs.us-east-2.amazonaws.com", {"Service": "logs.us-east-2.amazonaws.com"}),
        ("alexa-appkit.amazon.com", {"Service": "alexa-appkit.amazon.com"}),
        ("s3.amazonaws.com.cn", {"Service": "s3.amazonaws.com.cn"}),
        ("arn:aws:iam::123456789012:root", {"AWS": "arn:aws:iam::123456789012:root"}),
        ("arn:aws:iam::123456789012:user/alice", {"AWS": "arn:aws:iam::123456789012:user/alice"}),
        ("arn:aws:iam::123456789012:role/example", {"AWS": "arn:aws:iam::123456789012:role/example"}),
    ],
)
def test_principal_forms(principal: str, rendered: object) -> None:
    assert grant(Principal=principal)["Principal"] == rendered


@pytest.mark.parametrize(
    "principal",
    [
        "nobody",
        "12345678901",
        "1234567890123",
        "arn:aws:s3:::bucket",
        "arn:aws:iam:123456789012:role/r",
        "S3.AMAZONAWS.COM",
    ],
)
def test_other_principals_are_refused_in_awss_words(principal: str) -> None:
    with pytest.raises(InvalidParameterValue) as exc:
        grant(Principal=principal)
    assert exc.value.message == "The provided principal was invalid. Please check the principal and try again."


def test_account_root_is_named_in_the_resources_partition() -> None:
    request = {"StatementId": "s", "Action": "lambda:InvokeFunction", "Principal": "123456789012"}
    statement = policies.function_statement(request, "arn:aws-cn:lambda:cn-north-1:123456789012:function:f")
    assert statement["Principal"] == {"AWS": "arn:aws-cn:iam::123456789012:root"}


def test_every_condition_merges_per_operator_in_awss_order() -> None:
    statement = grant(
        "urlPermission",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        SourceArn="arn:aws:s3:::bucket",
        SourceAccount="111111111111",
        PrincipalOrgID="o-1234567890",
        FunctionUrlAuthType="NONE",
    )
    # LocalStack's AWS-recorded snapshot TestLambdaPermissions::test_add_lambda_permission_fields.
    assert policies.statement_json(statement) == (
        '{"Sid":"urlPermission","Effect":"Allow","Principal":"*","Action":"lambda:InvokeFunctionUrl",'
        f'"Resource":"{FN}","Condition":{{"StringEquals":{{"lambda:FunctionUrlAuthType":"NONE",'
        '"aws:PrincipalOrgID":"o-1234567890","AWS:SourceAccount":"111111111111"},'
        '"ArnLike":{"AWS:SourceArn":"arn:aws:s3:::bucket"}}}'
    )


def test_event_source_token_is_a_string_condition() -> None:
    token = "amzn1.ask.skill.xxxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    statement = grant("alexaSkill", Principal="*", EventSourceToken=token)
    assert statement["Condition"] == {"StringEquals": {"lambda:EventSourceToken": token}}


@pytest.mark.parametrize(("flag", "text"), [(True, "true"), (False, "false")])
def test_invoked_via_function_url_is_a_bool_condition(flag: bool, text: str) -> None:
    statement = grant(Principal="*", InvokedViaFunctionUrl=flag)
    assert statement["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": text}}


def test_no_condition_without_condition_parameters() -> None:
    assert "Condition" not in grant(SourceArn=None, SourceAccount=None)
    assert list(grant()) == ["Sid", "Effect", "Principal", "Action", "Resource"]


def test_qualified_resource_is_kept() -> None:
    assert grant()["Resource"] == FN
    request = {"StatementId": "s", "Action": "lambda:InvokeFunction", "Principal": "*"}
    assert policies.function_statement(request, FN + ":PROD")["Resource"] == FN + ":PROD"


@pytest.mark.parametrize("action", ["lambda:InvokeFunction", "lambda:GetFunction", "lambda:*", "*", "lambda:ListTags"])
def test_lambda_actions_are_accepted(action: str) -> None:
    assert grant(Action=action)["Action"] == action


@pytest.mark.parametrize("action", ["s3:GetObject", "lambda:", "lambda:Invoke-Function", "lambda:**", ""])
def test_other_actions_fail_the_models_pattern(action: str) -> None:
    with pytest.raises(ValidationError) as exc:
        grant(Action=action)
    assert exc.value.message == (
        f"1 validation error detected: Value '{action}' at 'action' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])"
    )


def test_patterns_are_the_models() -> None:
    shapes = model.service_model().operation_model
    assert shapes("AddPermission").input_shape.members["Action"].metadata["pattern"] == policies.ACTION_PATTERN
    layer = shapes("AddLayerVersionPermission").input_shape.members
    assert layer["Action"].metadata["pattern"] == policies.LAYER_ACTION_PATTERN
    assert layer["Principal"].metadata["pattern"] == policies.LAYER_PRINCIPAL_PATTERN


# -- AddLayerVersionPermission's statement ---------------------------------------------------------------------


def test_layer_account_principal_as_in_awss_example() -> None:
    # botocore examples-1.json, AddLayerVersionPermission "To add permissions to a layer version".
    assert policies.statement_json(layer_grant("xaccount", Principal="223456789012")) == (
        '{"Sid":"xaccount","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::223456789012:root"},'
        '"Action":"lambda:GetLayerVersion","Resource":"arn:aws:lambda:us-east-2:123456789012:layer:my-layer:1"}'
    )


def test_layer_wildcard_principal() -> None:
    # LocalStack's AWS-recorded snapshot TestLambdaLayer::test_layer_policy_lifecycle.
    assert layer_grant("s1") == {
        "Sid": "s1",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "lambda:GetLayerVersion",
        "Resource": LAYER,
    }


def test_layer_root_arn_principal_is_kept() -> None:
    principal = "arn:aws:iam::223456789012:root"
    assert layer_grant(Principal=principal)["Principal"] == {"AWS": principal}


def test_layer_organization_condition() -> None:
    statement = layer_grant(OrganizationId="o-abcdefghij")
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    assert list(statement)[-1] == "Condition"


def test_layer_action_other_than_get_layer_version_fails_in_awss_words() -> None:
    with pytest.raises(ValidationError) as exc:
        layer_grant(Action="*")
    # LocalStack's AWS-recorded snapshot TestLambdaLayer::test_layer_policy_exceptions.
    assert exc.value.message == (
        "1 validation error detected: Value '*' at 'action' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: lambda:GetLayerVersion"
    )


@pytest.mark.parametrize("principal", ["s3.amazonaws.com", "arn:aws:iam::223456789012:user/alice", "12345"])
def test_layer_principal_outside_the_models_pattern(principal: str) -> None:
    with pytest.raises(ValidationError) as exc:
        layer_grant(Principal=principal)
    assert exc.value.message == (
        f"1 validation error detected: Value '{principal}' at 'principal' failed to satisfy constraint: "
        r"Member must satisfy regular expression pattern: \d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root"
    )


# -- add, remove, document -------------------------------------------------------------------------------------


def test_first_statement_makes_a_policy_with_a_revision() -> None:
    policy = policies.add(None, grant("a"), None)
    assert policy.statements == (grant("a"),)
    assert is_uuid4(policy.revision_id)


def test_add_appends_and_changes_the_revision() -> None:
    first = policies.add(None, grant("a"), None)
    second = policies.add(first, grant("b"), first.revision_id)
    assert second.sids == ("a", "b")
    assert second.revision_id != first.revision_id
    assert first.sids == ("a",)  # the old value is untouched


def test_add_copies_the_statement() -> None:
    statement = grant("a", SourceAccount="123456789012")
    policy = policies.add(None, statement, None)
    statement["Condition"]["StringEquals"]["AWS:SourceAccount"] = "999999999999"
    assert policy.statements[0]["Condition"] == {"StringEquals": {"AWS:SourceAccount": "123456789012"}}


def test_duplicate_sid_conflicts_in_awss_words() -> None:
    policy = policies.add(None, grant("s1"), None)
    with pytest.raises(ResourceConflict) as exc:
        policies.add(policy, grant("s1", Principal="*"), None)
    assert exc.value.message == (
        "The statement id (s1) provided already exists. Please provide a new statement id, or remove the existing "
        "statement."
    )


@pytest.mark.parametrize(("layer", "message"), [(False, STALE_FUNCTION), (True, STALE_LAYER)])
def test_stale_revision_on_add(layer: bool, message: str) -> None:
    policy = policies.add(None, grant("a"), None)
    with pytest.raises(PreconditionFailed) as exc:
        policies.add(policy, grant("b"), str(uuid.uuid4()), layer=layer)
    assert exc.value.message == message


def test_a_revision_cannot_name_a_policy_that_does_not_exist() -> None:
    with pytest.raises(PreconditionFailed) as exc:
        policies.add(None, grant("a"), str(uuid.uuid4()))
    assert exc.value.message == STALE_FUNCTION


def test_stale_revision_is_reported_before_a_duplicate_sid() -> None:
    policy = policies.add(None, grant("a"), None)
    with pytest.raises(PreconditionFailed):
        policies.add(policy, grant("a"), "stale")


def big(sid: str, n: int) -> dict[str, Any]:
    return grant(sid, SourceArn="arn:aws:s3:::" + "b" * n)


def test_policy_may_reach_exactly_20480_bytes() -> None:
    base = len(policies.document(policies.add(None, big("a", 0), None)).encode())
    policy = policies.add(None, big("a", policies.MAX_POLICY_BYTES - base), None)
    assert len(policies.document(policy).encode()) == 20480


def test_policy_past_20480_bytes_is_refused_in_awss_words() -> None:
    first = policies.add(None, big("a", 10_000), None)
    statement = big("b", 10_000)
    size = len(
        json.dumps(
            {**json.loads(policies.document(first)), "Statement": [*first.statements, statement]}, separators=(",", ":")
        ).encode()
    )
    assert size > 20480
    with pytest.raises(PolicyLengthExceeded) as exc:
        policies.add(first, statement, first.revision_id)
    assert exc.value.aws_type == "PolicyLengthExceededException"
    assert exc.value.message == f"The final policy size ({size}) is bigger than the limit (20480)."


def test_size_counts_utf8_bytes() -> None:
    base = len(policies.document(policies.add(None, big("a", 0), None)).encode())
    # Each "é" is two bytes: half as many characters reach the limit.
    room = policies.MAX_POLICY_BYTES - base
    policies.add(None, grant("a", SourceArn="arn:aws:s3:::" + "é" * (room // 2)), None)
    with pytest.raises(PolicyLengthExceeded):
        policies.add(None, grant("a", SourceArn="arn:aws:s3:::" + "é" * (room // 2 + 1)), None)


def test_remove_drops_the_statement_and_changes_the_revision() -> None:
    policy = policies.add(policies.add(None, grant("a"), None), grant("b"), None)
    after = policies.remove(policy, "a", policy.revision_id)
    assert after is not None
    assert after.statements == (grant("b"),)
    assert after.revision_id != policy.revision_id


def test_removing_the_last_statement_leaves_no_policy() -> None:
    assert policies.remove(policies.add(None, grant("a"), None), "a", None) is None


def test_unknown_sid_is_not_found_in_awss_words() -> None:
    policy = policies.add(None, grant("a"), None)
    with pytest.raises(ResourceNotFound) as exc:
        policies.remove(policy, "doesnotexist", None)
    assert exc.value.message == "Statement doesnotexist is not found in resource policy."


def test_removing_from_no_policy_is_not_found() -> None:
    with pytest.raises(ResourceNotFound) as exc:
        policies.remove(None, "a", None)
    assert exc.value.message == "No policy is associated with the given resource."


@pytest.mark.parametrize(("layer", "message"), [(False, STALE_FUNCTION), (True, STALE_LAYER)])
def test_stale_revision_on_remove(layer: bool, message: str) -> None:
    policy = policies.add(None, grant("a"), None)
    with pytest.raises(PreconditionFailed) as exc:
        policies.remove(policy, "a", "stale", layer=layer)
    assert exc.value.message == message


def test_document_as_in_awss_get_policy_example() -> None:
    request = {"StatementId": "xaccount", "Action": "lambda:InvokeFunction", "Principal": "123456789012"}
    statement = policies.function_statement(request, FN + ":1")
    # botocore examples-1.json, GetPolicy "To retrieve a Lambda function policy".
    assert policies.document(policies.add(None, statement, None)) == (
        '{"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"xaccount","Effect":"Allow",'
        '"Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"lambda:InvokeFunction",'
        '"Resource":"arn:aws:lambda:us-east-2:123456789012:function:my-function:1"}]}'
    )


def test_document_keeps_insertion_order() -> None:
    policy = policies.add(policies.add(None, grant("z"), None), grant("a"), None)
    assert [s["Sid"] for s in json.loads(policies.document(policy))["Statement"]] == ["z", "a"]


def test_from_document_restores_the_policy() -> None:
    policy = policies.add(policies.add(None, grant("a", SourceAccount="123456789012"), None), layer_grant("b"), None)
    assert policies.from_document(policies.document(policy), policy.revision_id) == policy


# -- properties ------------------------------------------------------------------------------------------------

SIDS = st.from_regex(r"[a-zA-Z0-9_-]{1,12}", fullmatch=True)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40),
    st.lists(SIDS, min_size=8, max_size=8, unique=True),
)
def test_any_sequence_of_adds_and_removes_keeps_exactly_the_statements_not_removed(
    ops: list[tuple[bool, int]], pool: list[str]
) -> None:
    policy: policies.Policy | None = None
    expected: list[str] = []  # the model: sids in insertion order
    revisions: set[str] = set()
    for adding, i in ops:
        sid = pool[i]
        revision = policy.revision_id if policy is not None else None
        if adding and sid in expected:
            with pytest.raises(ResourceConflict):
                policies.add(policy, grant(sid), revision)
            continue  # a refused change leaves the policy as it was
        if not adding and sid not in expected:
            with pytest.raises(ResourceNotFound):
                policies.remove(policy, sid, revision)
            continue
        if adding:
            policy = policies.add(policy, grant(sid), revision)
            expected.append(sid)
        else:
            policy = policies.remove(policy, sid, revision)
            expected.remove(sid)
        if policy is None:
            assert expected == []
            continue
        assert policy.statements == tuple(grant(s) for s in expected)
        assert is_uuid4(policy.revision_id)
        assert policy.revision_id not in revisions  # every change gets a revision never seen before
        revisions.add(policy.revision_id)


@given(st.lists(SIDS, min_size=1, max_size=15, unique=True), st.randoms(use_true_random=False))
def test_adding_all_then_removing_all_in_any_order(sids: list[str], rnd: Any) -> None:
    policy: policies.Policy | None = None
    for sid in sids:
        policy = policies.add(policy, grant(sid), policy.revision_id if policy else None)
    order = list(sids)
    rnd.shuffle(order)
    for n, sid in enumerate(order, 1):
        assert policy is not None
        old = policy.revision_id
        policy = policies.remove(policy, sid, old)
        left = [s for s in sids if s not in order[:n]]
        assert (policy.sids if policy else ()) == tuple(left)
        assert policy is None or policy.revision_id != old
    assert policy is None


# -- evaluating a policy for a service principal (S3's destination check) ---------------------------------


def _policy(*statements: dict[str, Any]) -> policies.Policy:
    policy = None
    for statement in statements:
        policy = policies.add(policy, statement, None)
    assert policy is not None
    return policy


S3 = "s3.amazonaws.com"
INVOKE = "lambda:InvokeFunction"
BUCKET = "arn:aws:s3:::photos"


def test_s3_may_invoke_with_the_statement_aws_documents() -> None:
    policy = _policy(
        policies.function_statement(
            {
                "StatementId": "s3",
                "Action": INVOKE,
                "Principal": S3,
                "SourceArn": BUCKET,
                "SourceAccount": "123456789012",
            },
            FN,
        )
    )
    assert policies.allows_service(policy, S3, INVOKE, source_arn=BUCKET, source_account="123456789012")
    assert not policies.allows_service(
        policy, S3, INVOKE, source_arn="arn:aws:s3:::other", source_account="123456789012"
    )
    assert not policies.allows_service(policy, S3, INVOKE, source_arn=BUCKET, source_account="999999999999")
    assert not policies.allows_service(
        policy, "sns.amazonaws.com", INVOKE, source_arn=BUCKET, source_account="123456789012"
    )


def test_wildcards_in_source_arn_and_action() -> None:
    policy = _policy(
        policies.function_statement(
            {"StatementId": "a", "Action": "lambda:*", "Principal": S3, "SourceArn": "arn:aws:s3:::ph?tos-*"}, FN
        )
    )
    assert policies.allows_service(policy, S3, INVOKE, source_arn="arn:aws:s3:::photos-2026")
    assert not policies.allows_service(policy, S3, INVOKE, source_arn="arn:aws:s3:::photos")


def test_no_policy_a_deny_or_another_principal_grants_nothing() -> None:
    assert not policies.allows_service(None, S3, INVOKE, source_arn=BUCKET)
    other = _policy(
        policies.function_statement({"StatementId": "a", "Action": INVOKE, "Principal": "sns.amazonaws.com"}, FN)
    )
    assert not policies.allows_service(other, S3, INVOKE, source_arn=BUCKET)
    deny = policies.Policy(({"Sid": "d", "Effect": "Deny", "Principal": {"Service": S3}, "Action": INVOKE},), "r")
    assert not policies.allows_service(deny, S3, INVOKE, source_arn=BUCKET)
    wrong_action = _policy(
        policies.function_statement({"StatementId": "g", "Action": "lambda:GetFunction", "Principal": S3}, FN)
    )
    assert not policies.allows_service(wrong_action, S3, INVOKE, source_arn=BUCKET)


def test_a_condition_that_cannot_be_evaluated_grants_nothing() -> None:
    policy = _policy(
        policies.function_statement(
            {"StatementId": "o", "Action": INVOKE, "Principal": S3, "PrincipalOrgID": "o-123"}, FN
        )
    )
    assert not policies.allows_service(policy, S3, INVOKE, source_arn=BUCKET)
    unconditional = _policy(policies.function_statement({"StatementId": "u", "Action": INVOKE, "Principal": S3}, FN))
    assert policies.allows_service(unconditional, S3, INVOKE, source_arn=BUCKET)


def test_action_names_are_compared_without_case_as_iam_does() -> None:
    statement = {"Effect": "Allow", "Principal": {"Service": S3}, "Action": "SNS:Publish", "Resource": "*"}
    policy = policies.Policy((statement,), "")
    assert policies.allows_service(policy, S3, "sns:Publish")
    assert policies.allows_service(
        policies.Policy(({**statement, "Action": ["sqs:*", "sns:publish"]},), ""), S3, "SNS:Publish"
    )
    assert not policies.allows_service(
        policies.Policy(({**statement, "Action": "sns:Subscribe"},), ""), S3, "sns:Publish"
    )
