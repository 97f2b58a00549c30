"""Model-driven request parsing and validation, with AWS's wording."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfless.api import model
from selfless.errors import InvalidRequestContent, ValidationError

OP = model.service_model().operation_model("CreateFunction")
BASE: dict[str, Any] = {"FunctionName": "f", "Role": "arn:aws:iam::000000000000:role/r", "Code": {}}


def errors_for(**params: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        model.validate(OP, {**BASE, **params})
    return exc.value.message


@given(st.integers(128, 10240))
def test_memory_in_range_is_valid(memory: int) -> None:
    model.validate(OP, {**BASE, "MemorySize": memory})


@given(st.integers(-(10**9), 127) | st.integers(10241, 10**9))
def test_memory_out_of_range_names_the_bound(memory: int) -> None:
    message = errors_for(MemorySize=memory)
    bound = "greater than or equal to 128" if memory < 128 else "less than or equal to 10240"
    assert message == (
        f"1 validation error detected: Value '{memory}' at 'memorySize' failed to satisfy constraint: "
        f"Member must have value {bound}"
    )


def test_several_errors_are_counted_and_joined() -> None:
    message = errors_for(Timeout=0, MemorySize=64)
    assert message.startswith("2 validation errors detected: ")
    assert message.count("; ") == 1


def test_required_members() -> None:
    with pytest.raises(ValidationError) as exc:
        model.validate(OP, {"FunctionName": "f"})
    assert "Value null at 'role' failed to satisfy constraint: Member must not be null" in exc.value.message
    assert "Value null at 'code'" in exc.value.message


def test_types_enums_and_patterns() -> None:
    assert "Member must be a number" in errors_for(Timeout="ten")
    assert "Member must satisfy enum value set: [Zip, Image]" in errors_for(PackageType="Tar")
    assert "Member must satisfy regular expression pattern" in errors_for(Role="me")
    assert "at 'ephemeralStorage.size'" in errors_for(EphemeralStorage={"Size": 100})
    # Sensitive members are never echoed back.
    message = errors_for(Environment={"Variables": {"0bad": "secret-value"}})
    assert "secret-value" not in message and "0bad" not in message


def test_values_render_as_aws_prints_them() -> None:
    assert model.render("text") == "text"
    assert model.render(None) == "null"
    assert model.render(True) == "true"
    assert model.render(1.0) == "1.0" and model.render(1.5) == "1.5" and model.render(7) == "7"
    assert model.render(["a", "b"]) == "[a, b]"
    assert model.render({"k": "v", "n": 1.0}) == "{k=v, n=1.0}"
    assert model.render([["a"], None]) == "[[a], null]"


def test_a_runtime_is_left_to_the_service() -> None:
    # AWS answers an unknown Runtime with InvalidParameterValueException (a runtime may also be an ARN):
    # the request validator does not refuse it, for either operation that takes one.
    model.validate(OP, {**BASE, "Runtime": "Python3.12"})
    update = model.service_model().operation_model("UpdateFunctionConfiguration")
    model.validate(update, {"FunctionName": "f", "Runtime": "python9"})
    # Elsewhere a runtime is an enum like any other (a layer's compatible runtimes).
    layer = model.service_model().operation_model("ListLayers")
    with pytest.raises(ValidationError) as exc:
        model.validate(layer, {"CompatibleRuntime": "python9"})
    assert exc.value.message.startswith(
        "1 validation error detected: Value 'python9' at 'compatibleRuntime' failed to satisfy constraint: "
        "Member must satisfy enum value set: [nodejs, "
    )


def test_every_violation_in_one_message_members_in_model_order() -> None:
    message = errors_for(FunctionName="x" * 141 + "!", Role=None, MemorySize=64)
    assert message.startswith("4 validation errors detected: ")
    parts = message.removeprefix("4 validation errors detected: ").split("; ")
    name = "x" * 141 + "!"
    # Length before pattern for one member; then the members as the model orders them.
    assert parts[0] == (
        f"Value '{name}' at 'functionName' failed to satisfy constraint: Member must have length less than or "
        "equal to 140"
    )
    assert parts[1].startswith(
        f"Value '{name}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: (arn:"
    )
    assert parts[2] == "Value null at 'role' failed to satisfy constraint: Member must not be null"
    assert parts[3] == (
        "Value '64' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128"
    )


def test_lists_are_shown_as_aws_shows_them() -> None:
    assert errors_for(Architectures=["x86_64", "arm64"]) == (
        "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: "
        "Member must have length less than or equal to 1"
    )
    # A bad member: one error at the list naming every rule of its members, not-null last.
    assert errors_for(Architectures=["sparc"]) == (
        "1 validation error detected: Value '[sparc]' at 'architectures' failed to satisfy constraint: Member "
        "must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64], Member must not be null]"
    )
    message = errors_for(Layers=["not-an-arn", None])
    assert message.startswith(
        "1 validation error detected: Value '[not-an-arn, null]' at 'layers' failed to satisfy constraint: "
        "Member must satisfy constraint: [Member must have length less than or equal to 2048, Member must have "
        "length greater than or equal to 1, Member must satisfy regular expression pattern: "
    )
    assert message.endswith(", Member must not be null]")
    # A list of structures: each member where it stands, as <list>.<n>.member.
    message = errors_for(FileSystemConfigs=[{"Arn": "nope", "LocalMountPath": "/mnt/data"}])
    assert message.startswith("1 validation error detected: Value 'nope' at 'fileSystemConfigs.1.member.arn' ")


def test_maps_are_shown_as_aws_shows_them() -> None:
    alias = model.service_model().operation_model("UpdateAlias")
    with pytest.raises(ValidationError) as exc:
        model.validate(
            alias, {"FunctionName": "f", "Name": "a", "RoutingConfig": {"AdditionalVersionWeights": {"1": 1.5}}}
        )
    assert exc.value.message == (
        "1 validation error detected: Value '{1=1.5}' at 'routingConfig.additionalVersionWeights' failed to "
        "satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
        "Member must have value greater than or equal to 0.0, Member must not be null]"
    )
    with pytest.raises(ValidationError) as exc:
        model.validate(
            alias, {"FunctionName": "f", "Name": "a", "RoutingConfig": {"AdditionalVersionWeights": {"x": 0.5}}}
        )
    assert exc.value.message == (
        "1 validation error detected: Value '{x=0.5}' at 'routingConfig.additionalVersionWeights' failed to "
        "satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 1024, "
        "Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: "
        "[0-9]+, Member must not be null]"
    )
    # Environment variables are sensitive: the map is named, never shown.
    assert errors_for(Environment={"Variables": {"1bad": "secret"}}) == (
        "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys "
        "must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+, "
        "Member must not be null]"
    )


def test_text_from_the_uri_names_its_member() -> None:
    versions = model.service_model().operation_model("ListVersionsByFunction")
    with pytest.raises(ValidationError) as exc:
        model.coerce_params(versions, {"FunctionName": "f", "MaxItems": "ten"})
    assert exc.value.message == (
        "1 validation error detected: Value 'ten' at 'maxItems' failed to satisfy constraint: Member must be a number"
    )


def test_router_matches_every_modelled_operation_path() -> None:
    router = model.Router(model.service_model())
    hit = router.match("GET", "/2015-03-31/functions")
    assert hit is not None and hit[0].operation == "ListFunctions"
    hit = router.match("GET", "/2015-03-31/functions/")
    assert hit is not None and hit[0].operation == "ListFunctions"
    hit = router.match("PUT", "/2015-03-31/functions/my-fn/code")
    assert hit is not None and hit[0].operation == "UpdateFunctionCode" and hit[1] == {"FunctionName": "my-fn"}
    arn = "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"
    hit = router.match("GET", f"/2017-03-31/tags/{arn}")
    assert hit is not None and hit[0].operation == "ListTags"
    assert hit[1]["Resource"] == "arn:aws:lambda:us-east-1:000000000000:function:f"
    assert router.match("GET", "/nothing/here") is None


def test_parse_reads_every_location() -> None:
    op = model.service_model().operation_model("Invoke")
    params = model.parse(
        op,
        {"FunctionName": "f"},
        "Qualifier=%24LATEST",
        {"x-amz-invocation-type": "Event", "x-amz-log-type": "Tail"},
        b'{"a": 1}',
    )
    assert params == {
        "FunctionName": "f",
        "Qualifier": "$LATEST",
        "InvocationType": "Event",
        "LogType": "Tail",
        "Payload": b'{"a": 1}',
    }
    untag = model.service_model().operation_model("UntagResource")
    assert model.parse(untag, {"Resource": "r"}, "tagKeys=a&tagKeys=b", {}, b"")["TagKeys"] == ["a", "b"]
    with pytest.raises(InvalidRequestContent):
        model.parse(OP, {}, "", {}, b"{not json")


def test_maps_are_reported_once_with_every_rule_of_their_keys_or_values() -> None:
    # As AWS recorded it for an alias's routing weights.
    op = model.service_model().operation_model("CreateAlias")
    with pytest.raises(ValidationError) as exc:
        model.validate(
            op,
            {
                "FunctionName": "f",
                "Name": "a",
                "FunctionVersion": "1",
                "RoutingConfig": {"AdditionalVersionWeights": {"2": 2.0}},
            },
        )
    assert exc.value.message == (
        "1 validation error detected: Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' failed to satisfy "
        "constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member "
        "must have value greater than or equal to 0.0, Member must not be null]"
    )


def test_tag_keys_and_values_keep_the_model_rules() -> None:
    op = model.service_model().operation_model("TagResource")
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    model.validate(op, {"Resource": arn, "Tags": {"Team é 1": "a b:c/d=e+f-g@h_i.j", "k": ""}})
    for tags, what in (({"k" * 129: "v"}, "Map keys"), ({"": "v"}, "Map keys"), ({"k": "v" * 257}, "Map value")):
        with pytest.raises(ValidationError) as exc:
            model.validate(op, {"Resource": arn, "Tags": tags})
        assert f"at 'tags' failed to satisfy constraint: {what} must satisfy constraint: [" in exc.value.message
    with pytest.raises(ValidationError):
        model.validate(op, {"Resource": arn, "Tags": {"k": "semi;colon"}})
