"""Control-plane answers as AWS gives them, moment by moment, through boto3 against a real server.

What each test expects is what AWS answers (AWS's API reference and answers recorded against AWS): the ARN a
read names is the ARN it echoes, states and update statuses as each call returns and as they settle, the
fields AWS leaves out, tag limits, account usage, reserved and provisioned concurrency rules, policy
revisions, and event invoke configurations' destinations.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import create_python, make_zip, unique

HANDLER = "def handler(event, context):\n    return event\n"
WAIT = {"Delay": 1, "MaxAttempts": 30}
ACCOUNT_ARN = "arn:aws:lambda:us-east-1:000000000000:function"


def error_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def create(lam: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    return create_python(lam, name, HANDLER, **kwargs)


def settled(lam: Any, name: str, qualifier: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """GetFunctionConfiguration once the function (version) is Active with no update in progress."""
    extra = {"Qualifier": qualifier} if qualifier else {}
    deadline = time.monotonic() + timeout_s
    while True:
        config: dict[str, Any] = lam.get_function_configuration(FunctionName=name, **extra)
        if (config["State"], config.get("LastUpdateStatus")) == ("Active", "Successful"):
            return config
        assert time.monotonic() < deadline, config
        time.sleep(0.05)


@pytest.fixture
def fresh(lam: Any) -> Any:
    """Names of functions a test creates itself (to see its very first answer); deleted after it."""
    names: list[str] = []

    def make() -> str:
        names.append(unique())
        return names[-1]

    yield make
    for name in names:
        with contextlib.suppress(botocore.exceptions.ClientError):
            lam.delete_function(FunctionName=name)


# -- FunctionArn as the caller named it -----------------------------------------------------------------------


def test_reads_echo_the_arn_they_name(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    arn = f"{ACCOUNT_ARN}:{name}"
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"] == arn
    assert lam.get_function_configuration(FunctionName=arn)["FunctionArn"] == arn
    for kwargs in ({"FunctionName": name, "Qualifier": "$LATEST"}, {"FunctionName": f"{name}:$LATEST"}):
        assert lam.get_function(**kwargs)["Configuration"]["FunctionArn"] == f"{arn}:$LATEST"
        assert lam.get_function_configuration(**kwargs)["Version"] == "$LATEST"
    for kwargs in ({"FunctionName": name, "Qualifier": "live"}, {"FunctionName": f"{arn}:live"}):
        through_alias = lam.get_function(**kwargs)["Configuration"]
        # The alias's ARN, and the version it points to.
        assert (through_alias["FunctionArn"], through_alias["Version"]) == (f"{arn}:live", "1")
        assert lam.get_function_configuration(**kwargs)["FunctionArn"] == f"{arn}:live"
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["FunctionArn"] == f"{arn}:1"


def test_listings_qualify_latest_and_leave_out_states(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    arn = f"{ACCOUNT_ARN}:{name}"
    lam.publish_version(FunctionName=name)
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [(v["FunctionArn"], v["Version"]) for v in versions] == [(f"{arn}:$LATEST", "$LATEST"), (f"{arn}:1", "1")]
    listed = [f for f in lam.list_functions(MaxItems=1000)["Functions"] if f["FunctionName"] == name]
    assert [f["FunctionArn"] for f in listed] == [arn]
    every = [
        f for f in lam.list_functions(FunctionVersion="ALL", MaxItems=1000)["Functions"] if f["FunctionName"] == name
    ]
    assert [f["FunctionArn"] for f in every] == [f"{arn}:$LATEST", f"{arn}:1"]
    for item in [*versions, *listed, *every]:
        for absent in ("State", "StateReason", "LastUpdateStatus", "RuntimeVersionConfig"):
            assert absent not in item, (absent, item)
        assert item["CodeSha256"] and item["Runtime"] == "python3.11"


# -- states at each moment --------------------------------------------------------------------------------------


def test_create_answers_pending_then_active(lam: Any, fresh: Callable[[], str]) -> None:
    name = fresh()
    created = create(lam, name)
    assert created["FunctionArn"] == f"{ACCOUNT_ARN}:{name}" and created["Version"] == "$LATEST"
    assert created["State"] == "Pending"
    assert created["StateReason"] == "The function is being created."
    assert created["StateReasonCode"] == "Creating"
    # Fields AWS does not send in this answer: no update status yet, no layers, no environment never set.
    for absent in ("LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode", "Layers", "Environment"):
        assert absent not in created, absent
    active = settled(lam, name)
    for absent in ("StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
        assert absent not in active, absent
    assert active["RevisionId"] != created["RevisionId"]


@pytest.mark.parametrize("update", ["configuration", "code"])
def test_updates_answer_in_progress_then_successful(lam: Any, fresh: Callable[[], str], update: str) -> None:
    name = fresh()
    create(lam, name)
    settled(lam, name)
    if update == "configuration":
        answer = lam.update_function_configuration(FunctionName=name, Description="second")
    else:
        answer = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": HANDLER + "# 2\n"}))
    assert answer["State"] == "Active"
    assert answer["LastUpdateStatus"] == "InProgress"
    assert answer["LastUpdateStatusReason"] == "The function is being created."
    assert answer["LastUpdateStatusReasonCode"] == "Creating"
    assert "StateReason" not in answer
    done = settled(lam, name)
    assert "LastUpdateStatusReason" not in done and "LastUpdateStatusReasonCode" not in done
    assert done["RevisionId"] != answer["RevisionId"]


def test_create_with_publish_answers_the_new_version_pending(lam: Any, fresh: Callable[[], str]) -> None:
    name = fresh()
    created = create(lam, name, Publish=True)
    # AWS: the version's configuration, under the function's unqualified ARN, still being created.
    assert created["FunctionArn"] == f"{ACCOUNT_ARN}:{name}"
    assert created["Version"] == "1"
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    assert "LastUpdateStatus" not in created
    version = settled(lam, name, "1")
    assert version["FunctionArn"] == f"{ACCOUNT_ARN}:{name}:1"


def test_update_code_with_publish_answers_the_new_version(lam: Any, fresh: Callable[[], str]) -> None:
    name = fresh()
    create(lam, name)
    settled(lam, name)
    answer = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": HANDLER + "# 2\n"}), Publish=True)
    assert (answer["FunctionArn"], answer["Version"]) == (f"{ACCOUNT_ARN}:{name}:1", "1")
    assert (answer["State"], answer["StateReason"]) == ("Pending", "The function is being created.")
    assert "LastUpdateStatus" not in answer
    assert settled(lam, name, "1")["CodeSha256"] == answer["CodeSha256"]


def test_an_empty_environment_is_echoed_when_sent(lam: Any, fresh: Callable[[], str]) -> None:
    with_empty, without = fresh(), fresh()
    assert create(lam, with_empty, Environment={"Variables": {}})["Environment"] == {"Variables": {}}
    assert settled(lam, with_empty)["Environment"] == {"Variables": {}}
    create(lam, without)
    assert "Environment" not in settled(lam, without)
    updated = lam.update_function_configuration(FunctionName=without, Environment={"Variables": {}})
    assert updated["Environment"] == {"Variables": {}}
    assert settled(lam, without)["Environment"] == {"Variables": {}}


# -- tags -------------------------------------------------------------------------------------------------------


def test_tag_limits_and_messages(lam: Any, lam_unvalidated: Any, fresh: Callable[[], str]) -> None:
    name = fresh()
    code, message = error_of(lambda: create(lam, name, Tags={f"k{i}": "v" for i in range(51)}))
    assert (code, message) == ("InvalidParameterValueException", "Number of tags exceeds resource tag limit.")
    code, _ = error_of(lambda: create(lam, name, Tags={"aws:owner": "me"}))
    assert code == "InvalidParameterValueException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):  # refused calls created nothing
        lam.get_function(FunctionName=name)

    arn = create(lam, name, Tags={f"k{i}": "v" for i in range(49)})["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"k0": "again", "k49": "v"})  # 50: at the limit
    code, message = error_of(lambda: lam.tag_resource(Resource=arn, Tags={"one-too-many": "v"}))
    assert (code, message) == ("InvalidParameterValueException", "Number of tags exceeds resource tag limit.")
    code, _ = error_of(lambda: lam.tag_resource(Resource=arn, Tags={"AWS:Stack": "x"}))
    assert code == "InvalidParameterValueException"
    tags = lam.list_tags(Resource=arn)["Tags"]
    assert len(tags) == 50 and tags["k0"] == "again" and "one-too-many" not in tags

    long_key = "k" * 129
    code, message = error_of(lambda: lam_unvalidated.tag_resource(Resource=arn, Tags={long_key: "v"}))
    assert code == "ValidationException"
    assert message == (
        f"1 validation error detected: Value '{{{long_key}=v}}' at 'tags' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have "
        r"length greater than or equal to 1, Member must satisfy regular expression pattern: "
        r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*), Member must not be null]"
    )
    code, message = error_of(lambda: lam_unvalidated.tag_resource(Resource=arn, Tags={"k": "v" * 257}))
    assert (
        code == "ValidationException" and "Map value must satisfy constraint: [Member must have length less" in message
    )


def test_tags_on_versions_and_aliases_are_refused(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    expected = (
        "InvalidParameterValueException",
        "Tags on function aliases and versions are not supported. Please specify a function ARN.",
    )
    for qualified in (f"{ACCOUNT_ARN}:{name}:1", f"{ACCOUNT_ARN}:{name}:live", f"{ACCOUNT_ARN}:{name}:$LATEST"):
        assert error_of(lambda q=qualified: lam.tag_resource(Resource=q, Tags={"a": "b"})) == expected
        assert error_of(lambda q=qualified: lam.list_tags(Resource=q)) == expected
        assert error_of(lambda q=qualified: lam.untag_resource(Resource=q, TagKeys=["a"])) == expected
    # Refused before the function is looked up, as on AWS.
    assert error_of(lambda: lam.list_tags(Resource=f"{ACCOUNT_ARN}:{unique()}:1")) == expected
    assert lam.list_tags(Resource=f"{ACCOUNT_ARN}:{name}")["Tags"] == {}


# -- account usage ----------------------------------------------------------------------------------------------


def test_account_usage_follows_functions_and_versions(lam: Any, fresh: Callable[[], str]) -> None:
    def usage() -> tuple[int, int]:
        doc = lam.get_account_settings()["AccountUsage"]
        return doc["FunctionCount"], doc["TotalCodeSize"]

    count, size = usage()
    name = fresh()
    first = create(lam, name)
    assert usage() == (count + 1, size + first["CodeSize"])
    settled(lam, name)
    # A published version holds its own package, counted again; so does the next code.
    lam.publish_version(FunctionName=name)
    assert usage() == (count + 1, size + 2 * first["CodeSize"])
    second = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": HANDLER + "# longer\n" * 9}))
    settled(lam, name)
    assert usage() == (count + 1, size + first["CodeSize"] + second["CodeSize"])
    lam.delete_function(FunctionName=name, Qualifier="1")
    assert usage() == (count + 1, size + second["CodeSize"])
    lam.delete_function(FunctionName=name)
    assert usage() == (count, size)


# -- reserved and provisioned concurrency -----------------------------------------------------------------------


def test_reserved_concurrency_rules(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    qualified = (
        "InvalidParameterValueException",
        "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. "
        "Please specify either a function name or an unqualified function ARN.",
    )
    for named in (f"{name}:1", f"{ACCOUNT_ARN}:{name}:live"):
        assert (
            error_of(lambda n=named: lam.put_function_concurrency(FunctionName=n, ReservedConcurrentExecutions=1))
            == qualified
        )
        assert error_of(lambda n=named: lam.get_function_concurrency(FunctionName=n)) == qualified
        assert error_of(lambda n=named: lam.delete_function_concurrency(FunctionName=n)) == qualified

    limit = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    code, message = error_of(
        lambda: lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=limit - 99)
    )
    assert (code, message) == (
        "InvalidParameterValueException",
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
        "below its minimum value of [100].",
    )

    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1)
    try:
        code, message = error_of(
            lambda: lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        )
        assert (code, message) == (
            "InvalidParameterValueException",
            " ReservedConcurrentExecutions  0 should not be lower than function's total provisioned concurrency [1].",
        )
        assert lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
        assert (
            lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)[
                "ReservedConcurrentExecutions"
            ]
            == 1
        )
        code, message = error_of(
            lambda: lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=2
            )
        )
        assert code == "InvalidParameterValueException"
        assert message.startswith("Requested Provisioned Concurrency should not be greater than the reservedConcurrent")
        # The alias points at version 1, which has a configuration already.
        code, _ = error_of(
            lambda: lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
            )
        )
        assert code == "ResourceConflictException"
        code, message = error_of(
            lambda: lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
            )
        )
        assert (code, message) == (
            "InvalidParameterValueException",
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
        )
    finally:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        lam.delete_function_concurrency(FunctionName=name)


# -- resource policy revisions ----------------------------------------------------------------------------------


def test_policy_revision_is_the_revision_of_what_it_is_attached_to(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    before = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    lam.add_permission(
        FunctionName=name,
        StatementId="s3",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        RevisionId=before,
    )
    after = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert after != before  # the policy is part of the function: a new revision
    assert lam.get_policy(FunctionName=name)["RevisionId"] == after

    stale = (
        "PreconditionFailedException",
        "The Revision Id provided does not match the latest Revision Id. "
        "Call the GetPolicy API to retrieve the latest Revision Id",
    )
    add = {"Action": "lambda:InvokeFunction", "Principal": "sns.amazonaws.com"}
    assert error_of(lambda: lam.add_permission(FunctionName=name, StatementId="sns", RevisionId=before, **add)) == stale
    assert error_of(lambda: lam.remove_permission(FunctionName=name, StatementId="s3", RevisionId=before)) == stale
    statements = json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["s3"]
    # A configuration change is a new revision of the function, and so of its policy.
    lam.update_function_configuration(FunctionName=name, Description="changed")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=WAIT)
    current = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert lam.get_policy(FunctionName=name)["RevisionId"] == current
    lam.remove_permission(FunctionName=name, StatementId="s3", RevisionId=current)
    assert lam.get_function_configuration(FunctionName=name)["RevisionId"] != current

    # An alias's policy goes with the alias's revision.
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.add_permission(FunctionName=name, Qualifier="live", StatementId="sns", RevisionId=alias["RevisionId"], **add)
    moved = lam.get_alias(FunctionName=name, Name="live")["RevisionId"]
    assert moved != alias["RevisionId"]
    assert lam.get_policy(FunctionName=name, Qualifier="live")["RevisionId"] == moved
    # So does a version's, with the version's.
    version = lam.get_function_configuration(FunctionName=name, Qualifier="1")["RevisionId"]
    lam.add_permission(FunctionName=f"{name}:1", StatementId="sns", RevisionId=version, **add)
    bumped = lam.get_function_configuration(FunctionName=name, Qualifier="1")["RevisionId"]
    assert bumped != version
    assert lam.get_policy(FunctionName=name, Qualifier="1")["RevisionId"] == bumped


# -- event invoke configurations --------------------------------------------------------------------------------


def test_destination_config_is_always_shown(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(HANDLER)
    empty = {"OnSuccess": {}, "OnFailure": {}}
    assert lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)["DestinationConfig"] == empty
    assert lam.get_function_event_invoke_config(FunctionName=name)["DestinationConfig"] == empty
    updated = lam.update_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert updated["DestinationConfig"] == empty
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["DestinationConfig"] for c in listed] == [empty]
    target = f"{ACCOUNT_ARN}:{make_function(HANDLER)}"
    with_success = lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": target}}
    )
    assert with_success["DestinationConfig"] == {"OnSuccess": {"Destination": target}, "OnFailure": {}}
