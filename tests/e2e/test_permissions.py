"""Resource policies with boto3: AddPermission / GetPolicy / RemovePermission on functions, versions and
aliases, and AddLayerVersionPermission / GetLayerVersionPolicy / RemoveLayerVersionPermission, with the
statement JSON and the errors AWS returns; policies are durable and go with what they belong to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import deploy, make_zip, start_server, unique

CODE = "def handler(event, context):\n    return 1\n"


def test_function_policies(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    added = lam.add_permission(
        FunctionName=name,
        StatementId="s3-invoke",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket",
        SourceAccount="123456789012",
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    statement = json.loads(added["Statement"])
    assert statement == {
        "Sid": "s3-invoke",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": arn,
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "123456789012"},
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
        },
    }
    lam.add_permission(FunctionName=arn, StatementId="account", Action="lambda:GetFunction", Principal="210987654321")
    got = lam.get_policy(FunctionName=name)
    policy = json.loads(got["Policy"])
    assert policy["Version"] == "2012-10-17" and policy["Id"] == "default"
    assert [s["Sid"] for s in policy["Statement"]] == ["s3-invoke", "account"]
    assert policy["Statement"][1]["Principal"] == {"AWS": "arn:aws:iam::210987654321:root"}

    with pytest.raises(lam.exceptions.ResourceConflictException) as dup:
        lam.add_permission(FunctionName=name, StatementId="account", Action="lambda:*", Principal="*")
    assert dup.value.response["Error"]["Message"] == (
        "The statement id (account) provided already exists. Please provide a new statement id, or remove the "
        "existing statement."
    )
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.add_permission(
            FunctionName=name, StatementId="late", Action="lambda:*", Principal="*", RevisionId="not-the-revision"
        )
    with pytest.raises(lam.exceptions.ClientError) as bad_action:
        lam.add_permission(FunctionName=name, StatementId="bad", Action="s3:GetObject", Principal="*")
    assert bad_action.value.response["Error"]["Code"] == "ValidationException"
    assert json.loads(lam.get_policy(FunctionName=name)["Policy"]) == policy, "refusals change nothing"

    lam.remove_permission(FunctionName=name, StatementId="s3-invoke", RevisionId=got["RevisionId"])
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as unknown:
        lam.remove_permission(FunctionName=name, StatementId="s3-invoke")
    assert unknown.value.response["Error"]["Message"] == "Statement s3-invoke is not found in resource policy."
    lam.remove_permission(FunctionName=name, StatementId="account")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as none:
        lam.get_policy(FunctionName=name)
    assert none.value.response["Error"]["Message"] == "The resource you requested does not exist."
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=unique("missing"))


def test_versions_and_aliases_have_their_own_policies(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    for qualifier in (version, "live"):
        added = lam.add_permission(
            FunctionName=name, Qualifier=qualifier, StatementId="sns", Action="lambda:InvokeFunction",
            Principal="sns.amazonaws.com",
        )  # fmt: skip
        assert json.loads(added["Statement"])["Resource"] == f"{arn}:{qualifier}"
    # By qualified ARN too.
    policy = json.loads(lam.get_policy(FunctionName=f"{arn}:live")["Policy"])
    assert policy["Statement"][0]["Resource"] == f"{arn}:live"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)  # the unqualified function has none
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=name, Qualifier="nope", StatementId="x", Action="lambda:*", Principal="*")
    # A deleted alias takes its policy with it; a new alias of the same name starts without one.
    lam.delete_alias(FunctionName=name, Name="live")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name, Qualifier="live")
    assert lam.get_policy(FunctionName=name, Qualifier=version)["Policy"]


def test_layer_version_policies(lam: Any) -> None:
    layer_name = unique("layer")
    layer = lam.publish_layer_version(LayerName=layer_name, Content={"ZipFile": make_zip({"python/x.py": ""})})
    version = layer["Version"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as none:
        lam.get_layer_version_policy(LayerName=layer_name, VersionNumber=version)
    assert none.value.response["Error"]["Message"] == "No policy is associated with the given resource."
    added = lam.add_layer_version_permission(
        LayerName=layer_name, VersionNumber=version, StatementId="org", Action="lambda:GetLayerVersion",
        Principal="*", OrganizationId="o-abcdefghij",
    )  # fmt: skip
    assert json.loads(added["Statement"]) == {
        "Sid": "org",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "lambda:GetLayerVersion",
        "Resource": layer["LayerVersionArn"],
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}},
    }
    got = lam.get_layer_version_policy(LayerName=layer_name, VersionNumber=version)
    assert got["RevisionId"] == added["RevisionId"]
    assert [s["Sid"] for s in json.loads(got["Policy"])["Statement"]] == ["org"]
    with pytest.raises(lam.exceptions.ClientError) as wrong_action:
        lam.add_layer_version_permission(
            LayerName=layer_name, VersionNumber=version, StatementId="x", Action="lambda:InvokeFunction",
            Principal="*",
        )  # fmt: skip
    assert wrong_action.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_layer_version_permission(
            LayerName=layer_name, VersionNumber=version, StatementId="org", RevisionId="stale"
        )
    lam.remove_layer_version_permission(LayerName=layer_name, VersionNumber=version, StatementId="org")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=layer_name, VersionNumber=version)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_layer_version_permission(
            LayerName=layer_name, VersionNumber=version + 1, StatementId="x", Action="lambda:GetLayerVersion",
            Principal="*",
        )  # fmt: skip
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=version)


def test_policies_survive_a_restart_and_go_with_their_function(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        lam = server.client()
        name = deploy(lam, CODE)
        lam.add_permission(FunctionName=name, StatementId="keep", Action="lambda:InvokeFunction", Principal="*")
        before = lam.get_policy(FunctionName=name)
    finally:
        assert server.stop() == 0, server.log()
    server = start_server(tmp_path)
    try:
        lam = server.client()
        after = lam.get_policy(FunctionName=name)
        assert (after["Policy"], after["RevisionId"]) == (before["Policy"], before["RevisionId"])
        lam.delete_function(FunctionName=name)
        deploy(lam, CODE, name=name)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_policy(FunctionName=name)
    finally:
        assert server.stop() == 0, server.log()
