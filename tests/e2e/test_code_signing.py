"""Code signing configurations through boto3: their operations, AWS's validation and errors, a function's
attachment (CreateFunction's CodeSigningConfigArn, Put/Get/DeleteFunctionCodeSigningConfig,
ListFunctionsByCodeSigningConfig), and what the signature validation policy does to deployments.

selfless cannot verify AWS Signer signatures (it has no signing profiles to check them against), so every
package deployed to a function with a configuration counts as not signed by an allowed profile: Enforce
refuses the deployment (CodeVerificationFailedException), Warn accepts it and logs a warning."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, create_python, make_zip, unique

PROFILE = "arn:aws:signer:us-east-1:000000000000:/signing-profiles/selfless/abcdef1234"
OTHER_PROFILE = "arn:aws:signer:us-east-1:000000000000:/signing-profiles/other/0123456789"
CODE = "def handler(event, context):\n    return 'v1'\n"
MISSING = "arn:aws:lambda:us-east-1:000000000000:code-signing-config:csc-0123456789abcdef0"
ARN_RE = re.compile(r"^arn:aws:lambda:us-east-1:000000000000:code-signing-config:(csc-[0-9a-f]{17})$")
LAST_MODIFIED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


@pytest.fixture
def make_config(lam: Any) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a code signing configuration (its CodeSigningConfig); deleted after the test."""
    made: list[str] = []

    def make(**kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("AllowedPublishers", {"SigningProfileVersionArns": [PROFILE]})
        config: dict[str, Any] = lam.create_code_signing_config(**kwargs)["CodeSigningConfig"]
        made.append(config["CodeSigningConfigArn"])
        return config

    yield make
    for arn in made:
        with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
            lam.delete_code_signing_config(CodeSigningConfigArn=arn)


def error(exc: pytest.ExceptionInfo[Any]) -> tuple[str, str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def create_function(lam: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    out = create_python(lam, name, CODE, **kwargs)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return out


# -- the configurations --------------------------------------------------------------------------------------


def test_create_get_update_list_delete(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config()
    found = ARN_RE.match(config["CodeSigningConfigArn"])
    assert found is not None and found.group(1) == config["CodeSigningConfigId"]
    assert LAST_MODIFIED_RE.match(config["LastModified"])
    # Defaults as AWS's: Warn, and an empty description.
    assert config["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}
    assert config["Description"] == ""
    assert config["AllowedPublishers"] == {"SigningProfileVersionArns": [PROFILE]}
    arn = config["CodeSigningConfigArn"]
    assert lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"] == config

    # An update changes what it names, and only that.
    updated = lam.update_code_signing_config(CodeSigningConfigArn=arn, Description="strict")["CodeSigningConfig"]
    assert updated["Description"] == "strict"
    assert updated["AllowedPublishers"] == config["AllowedPublishers"]
    assert updated["CodeSigningPolicies"] == config["CodeSigningPolicies"]
    assert LAST_MODIFIED_RE.match(updated["LastModified"])
    updated = lam.update_code_signing_config(
        CodeSigningConfigArn=arn,
        AllowedPublishers={"SigningProfileVersionArns": [PROFILE, OTHER_PROFILE]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"},
    )["CodeSigningConfig"]
    assert updated["Description"] == "strict"
    assert updated["AllowedPublishers"]["SigningProfileVersionArns"] == [PROFILE, OTHER_PROFILE]
    assert updated["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Enforce"
    assert lam.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"] == updated

    listed = lam.list_code_signing_configs(MaxItems=10000)["CodeSigningConfigs"]
    assert [c for c in listed if c["CodeSigningConfigArn"] == arn] == [updated]

    assert lam.delete_code_signing_config(CodeSigningConfigArn=arn)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_code_signing_config(CodeSigningConfigArn=arn)
    assert arn not in [c["CodeSigningConfigArn"] for c in lam.list_code_signing_configs()["CodeSigningConfigs"]]


def test_create_with_everything(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    profiles = [f"{PROFILE}{i:02d}" for i in range(20)]  # 20 is AWS's most
    config = make_config(
        AllowedPublishers={"SigningProfileVersionArns": profiles},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"},
        Description="d" * 256,
        Tags={"team": "platform"},
    )
    assert config["AllowedPublishers"]["SigningProfileVersionArns"] == profiles
    assert config["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Enforce"
    assert config["Description"] == "d" * 256


def test_listing_pages(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    mine = {make_config(Description=f"page {i}")["CodeSigningConfigArn"] for i in range(3)}
    seen: list[str] = []
    marker = None
    while True:
        kwargs = {"Marker": marker} if marker else {}
        page = lam.list_code_signing_configs(MaxItems=2, **kwargs)
        assert len(page["CodeSigningConfigs"]) <= 2
        seen += [c["CodeSigningConfigArn"] for c in page["CodeSigningConfigs"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert mine <= set(seen) and len(seen) == len(set(seen))
    paginated = lam.get_paginator("list_code_signing_configs").paginate(PaginationConfig={"PageSize": 1})
    assert mine <= {c["CodeSigningConfigArn"] for page in paginated for c in page["CodeSigningConfigs"]}


def test_tags(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    arn = make_config(Tags={"a": "1"})["CodeSigningConfigArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1"}
    lam.tag_resource(Resource=arn, Tags={"b": "2"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "2"}
    lam.untag_resource(Resource=arn, TagKeys=["a"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    # A function's tag rules: at most 50, none under the reserved aws: prefix; a refusal changes nothing.
    for tags in ({f"k{i}": "v" for i in range(50)}, {"aws:owner": "me"}):
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.tag_resource(Resource=arn, Tags=tags)
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_code_signing_config(
            AllowedPublishers={"SigningProfileVersionArns": [PROFILE]}, Tags={"AWS:team": "x"}
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=MISSING)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (
            {"AllowedPublishers": {"SigningProfileVersionArns": []}},
            "at 'allowedPublishers.signingProfileVersionArns' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
        ),
        (
            {"AllowedPublishers": {"SigningProfileVersionArns": [f"{PROFILE}{i}" for i in range(21)]}},
            "at 'allowedPublishers.signingProfileVersionArns' failed to satisfy constraint: "
            "Member must have length less than or equal to 20",
        ),
        (
            {"AllowedPublishers": {"SigningProfileVersionArns": ["not-an-arn"]}},
            "at 'allowedPublishers.signingProfileVersionArns' failed to satisfy constraint: ",
        ),
        (
            {
                "AllowedPublishers": {"SigningProfileVersionArns": [PROFILE]},
                "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": "Block"},
            },
            "Value 'Block' at 'codeSigningPolicies.untrustedArtifactOnDeployment' failed to satisfy constraint: "
            "Member must satisfy enum value set: [Warn, Enforce]",
        ),
        (
            {"AllowedPublishers": {"SigningProfileVersionArns": [PROFILE]}, "Description": "d" * 257},
            "at 'description' failed to satisfy constraint: Member must have length less than or equal to 256",
        ),
    ],
)
def test_create_is_validated_as_aws(lam_unvalidated: Any, kwargs: dict[str, Any], fragment: str) -> None:
    lam = lam_unvalidated
    before = {c["CodeSigningConfigArn"] for c in lam.list_code_signing_configs(MaxItems=10000)["CodeSigningConfigs"]}
    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.create_code_signing_config(**kwargs)
    code, message, status = error(exc)
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith("1 validation error detected: ") and fragment in message, message
    after = {c["CodeSigningConfigArn"] for c in lam.list_code_signing_configs(MaxItems=10000)["CodeSigningConfigs"]}
    assert after == before  # nothing was made


def test_a_missing_configuration_is_not_found_as_aws_says(lam: Any, lam_unvalidated: Any) -> None:
    message = f"The Lambda code signing configuration {MISSING} can not be found."
    for call in (
        lambda: lam.get_code_signing_config(CodeSigningConfigArn=MISSING),
        lambda: lam.update_code_signing_config(CodeSigningConfigArn=MISSING, Description="x"),
        lambda: lam.delete_code_signing_config(CodeSigningConfigArn=MISSING),
        lambda: lam.list_functions_by_code_signing_config(CodeSigningConfigArn=MISSING),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error(exc) == ("ResourceNotFoundException", message, 404)
    # Another region's configuration is none of this one's.
    elsewhere = MISSING.replace("us-east-1", "eu-west-1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_code_signing_config(CodeSigningConfigArn=elsewhere)
    # An ARN that is not a code signing configuration's breaks the model's pattern.
    with pytest.raises(lam_unvalidated.exceptions.ClientError) as bad:
        lam_unvalidated.get_code_signing_config(CodeSigningConfigArn="arn:aws:lambda:us-east-1:000000000000:csc-1")
    assert error(bad)[0] == "ValidationException"


# -- functions and their configuration -----------------------------------------------------------------------


def test_a_function_is_given_a_configuration_and_loses_it(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    arn = make_config()["CodeSigningConfigArn"]
    name = unique("signed")
    try:
        created = create_function(lam, name, CodeSigningConfigArn=arn)
        # The configuration is the function's, reported by GetFunctionCodeSigningConfig; FunctionConfiguration
        # has no member for it, and no signature was verified, so no signing profile or job is named.
        assert "CodeSigningConfigArn" not in created
        got = lam.get_function(FunctionName=name)
        for key in ("CodeSigningConfigArn", "SigningProfileVersionArn", "SigningJobArn"):
            assert key not in got["Configuration"]
        function_arn = got["Configuration"]["FunctionArn"]
        answer = lam.get_function_code_signing_config(FunctionName=name)
        assert (answer["CodeSigningConfigArn"], answer["FunctionName"]) == (arn, name)
        assert lam.get_function_code_signing_config(FunctionName=function_arn)["CodeSigningConfigArn"] == arn
        assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == [function_arn]

        # In use: it cannot be deleted.
        with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
            lam.delete_code_signing_config(CodeSigningConfigArn=arn)
        assert error(exc)[2] == 409
        assert lam.get_code_signing_config(CodeSigningConfigArn=arn)

        deleted = lam.delete_function_code_signing_config(FunctionName=name)
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
        answer = lam.get_function_code_signing_config(FunctionName=name)
        assert (answer["CodeSigningConfigArn"], answer["FunctionName"]) == ("", name)
        assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []

        put = lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=arn)
        assert (put["CodeSigningConfigArn"], put["FunctionName"]) == (arn, name)
        assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == arn
    finally:
        lam.delete_function(FunctionName=name)
    # Deleting the function lets the configuration go.
    assert lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"] == []
    lam.delete_code_signing_config(CodeSigningConfigArn=arn)


def test_listing_functions_by_configuration_pages(lam: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    arn = make_config()["CodeSigningConfigArn"]
    names = [unique("bycsc") for _ in range(3)]
    try:
        for name in names:
            create_function(lam, name, CodeSigningConfigArn=arn)
        first = lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn, MaxItems=2)
        assert len(first["FunctionArns"]) == 2 and first["NextMarker"]
        rest = lam.list_functions_by_code_signing_config(CodeSigningConfigArn=arn, Marker=first["NextMarker"])
        assert "NextMarker" not in rest
        listed = first["FunctionArns"] + rest["FunctionArns"]
        assert sorted(a.rsplit(":", 1)[1] for a in listed) == sorted(names)
    finally:
        for name in names:
            lam.delete_function(FunctionName=name)


def test_a_missing_configuration_cannot_be_given_to_a_function(
    lam: Any, make_function: Callable[..., str], make_config: Callable[..., dict[str, Any]]
) -> None:
    message = (
        "The code signing configuration cannot be found. Check that the provided configuration is not deleted: "
        f"{MISSING}."
    )
    name = unique("nocsc")
    with pytest.raises(lam.exceptions.CodeSigningConfigNotFoundException) as exc:
        create_function(lam, name, CodeSigningConfigArn=MISSING)
    assert error(exc) == ("CodeSigningConfigNotFoundException", message, 404)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)  # nothing was made

    existing = make_function(CODE)
    with pytest.raises(lam.exceptions.CodeSigningConfigNotFoundException) as exc:
        lam.put_function_code_signing_config(FunctionName=existing, CodeSigningConfigArn=MISSING)
    assert error(exc) == ("CodeSigningConfigNotFoundException", message, 404)
    assert lam.get_function_code_signing_config(FunctionName=existing)["CodeSigningConfigArn"] == ""

    arn = make_config()["CodeSigningConfigArn"]
    missing_fn = unique("missing")
    for call in (
        lambda: lam.put_function_code_signing_config(FunctionName=missing_fn, CodeSigningConfigArn=arn),
        lambda: lam.get_function_code_signing_config(FunctionName=missing_fn),
        lambda: lam.delete_function_code_signing_config(FunctionName=missing_fn),
    ):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error(exc) == (
            "ResourceNotFoundException",
            f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{missing_fn}",
            404,
        )


# -- what the policy does to deployments ---------------------------------------------------------------------


def unsigned_message(name: str) -> str:
    return (
        "Lambda cannot deploy the function. The function or layer might be signed using a signature that the "
        "client is not configured to accept. Check the provided signature for "
        f"arn:aws:lambda:us-east-1:000000000000:function:{name}."
    )


def test_enforce_refuses_every_deployment_it_cannot_verify(
    lam: Any, server: Server, make_function: Callable[..., str], make_config: Callable[..., dict[str, Any]]
) -> None:
    arn = make_config(CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"})["CodeSigningConfigArn"]

    # CreateFunction: refused, nothing made.
    name = unique("enforced")
    with pytest.raises(lam.exceptions.CodeVerificationFailedException) as exc:
        create_function(lam, name, CodeSigningConfigArn=arn)
    assert error(exc) == ("CodeVerificationFailedException", unsigned_message(name), 400)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)

    # A configuration given later applies to the deployments after it: the code running now stays.
    name = make_function(CODE)
    before = lam.get_function_configuration(FunctionName=name)
    lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=arn)
    with pytest.raises(lam.exceptions.CodeVerificationFailedException) as exc:
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": CODE.replace("v1", "v2")}))
    assert error(exc) == ("CodeVerificationFailedException", unsigned_message(name), 400)
    after = lam.get_function_configuration(FunctionName=name)
    assert (after["CodeSha256"], after["RevisionId"]) == (before["CodeSha256"], before["RevisionId"])
    out = lam.invoke(FunctionName=name)
    assert json.loads(out["Payload"].read()) == "v1"

    # Layers are deployed packages too.
    layer = lam.publish_layer_version(LayerName=unique("layer"), Content={"ZipFile": make_zip({"python/x.py": ""})})
    try:
        with pytest.raises(lam.exceptions.CodeVerificationFailedException):
            lam.update_function_configuration(FunctionName=name, Layers=[layer["LayerVersionArn"]])
        assert "Layers" not in lam.get_function_configuration(FunctionName=name)
        # A change that deploys no package goes through.
        lam.update_function_configuration(FunctionName=name, Description="configuration only")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})

        # The policy turned to Warn: the same deployment is accepted, with a warning in the server's log.
        lam.update_code_signing_config(
            CodeSigningConfigArn=arn, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Warn"}
        )
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": CODE.replace("v1", "v2")}))
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "v2"
        assert f"arn:aws:lambda:us-east-1:000000000000:function:{name} deployed a package" in server.log()
    finally:
        lam.delete_function_code_signing_config(FunctionName=name)
        lam.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])


def test_warn_accepts_and_logs(lam: Any, server: Server, make_config: Callable[..., dict[str, Any]]) -> None:
    config = make_config()
    name = unique("warned")
    try:
        create_function(lam, name, CodeSigningConfigArn=config["CodeSigningConfigArn"])
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "v1"
        line = next(line for line in server.log().splitlines() if f"function:{name} deployed" in line)
        assert config["CodeSigningConfigId"] in line and "no AWS Signer signing profiles" in line
    finally:
        lam.delete_function(FunctionName=name)


def test_function_credentials_cannot_reach_code_signing(
    lam: Any, make_function: Callable[..., str], make_config: Callable[..., dict[str, Any]]
) -> None:
    arn = make_config()["CodeSigningConfigArn"]
    caller_code = (
        "import json, sigv4_client as c\n"
        "def handler(e, ctx):\n"
        "    me = ctx.function_name\n"
        "    return {\n"
        "        'list': c.call('GET', '/2020-04-22/code-signing-configs', b''),\n"
        "        'create': c.call('POST', '/2020-04-22/code-signing-configs', json.dumps(\n"
        "            {'AllowedPublishers': {'SigningProfileVersionArns': [e['profile']]}}).encode()),\n"
        "        'get_own': c.call('GET', '/2020-06-30/functions/%s/code-signing-config' % me, b''),\n"
        "        'detach_own': c.call('DELETE', '/2020-06-30/functions/%s/code-signing-config' % me, b''),\n"
        "    }\n"
    )
    signer = (Path(__file__).parent / "sigv4_client.py").read_text()
    name = make_function(files={"app.py": caller_code, "sigv4_client.py": signer})
    lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=arn)
    out = json.loads(lam.invoke(FunctionName=name, Payload=json.dumps({"profile": PROFILE}))["Payload"].read())
    for key in ("list", "create", "get_own", "detach_own"):
        assert out[key][0] == 403 and "AccessDeniedException" in out[key][1], (key, out[key])
    assert lam.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == arn
    lam.delete_function_code_signing_config(FunctionName=name)
