"""Exactness on the wire: every response body the server sends for a broad run of operations fits AWS's
model (botocore's output and error shapes): no member AWS does not have, every value of the modelled type
and enum, required members present. boto3 drops unknown members silently, so this reads the raw bodies."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ROLE, Server, make_zip, unique

CODE = "def handler(event, context):\n    return event\n"
# What AWS itself sends outside its model's enums: an update in progress reports the reason code "Creating"
# (with "The function is being created."), which LastUpdateStatusReasonCode's enum does not list.
AWS_QUIRKS = {"LastUpdateStatusReasonCode: 'Creating' not in LastUpdateStatusReasonCode's enum"}


def problems(shape: Any, value: Any, path: str) -> list[str]:
    """Where ``value`` does not fit ``shape`` (a botocore shape), as readable paths."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: a {type(value).__name__}, not an object"]
        found = [f"{path}.{key}: not in {shape.name}" for key in value if key not in shape.members]
        found += [f"{path}.{key}: required, missing" for key in shape.required_members if key not in value]
        for key, member in shape.members.items():
            if key in value and value[key] is not None:
                found += problems(member, value[key], f"{path}.{key}")
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [p for i, item in enumerate(value) for p in problems(shape.member, item, f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: not a map"]
        return [p for k, v in value.items() for p in problems(shape.value, v, f"{path}[{k}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: {value!r} is not a string"]
        enum = shape.enum
        return [f"{path}: {value!r} not in {shape.name}'s enum"] if enum and value not in enum else []
    if kind in ("integer", "long"):
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: {value!r} not an integer"]
    if kind in ("float", "double"):
        return [] if isinstance(value, (int, float)) else [f"{path}: {value!r} not a number"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: {value!r} not a boolean"]
    return []


def test_every_response_fits_the_model(server: Server) -> None:
    lam = server.client()
    seen: list[tuple[str, int, list[str]]] = []

    def check(response_dict: dict[str, Any], operation_model: Any, **_: Any) -> None:
        body = response_dict.get("body") or b""
        status = response_dict["status_code"]
        if operation_model.name == "Invoke" or not body:
            return
        doc = json.loads(body)
        if status < 300:
            shape = operation_model.output_shape
            members = {k: v for k, v in shape.members.items() if v.serialization.get("location") is None}
            body_doc = {k: v for k, v in doc.items() if k in members or k not in shape.members}
            seen.append((operation_model.name, status, problems(shape, body_doc, operation_model.name)))
        else:
            # Errors: {"Type", "message"} plus the modelled error shape's members.
            code = response_dict["headers"].get("x-amzn-ErrorType", "").split(":")[0]
            error_shapes = {e.name: e for e in operation_model.error_shapes}
            allowed = {"Type", "message", "Message", "__type"}
            if code in error_shapes:
                allowed |= set(error_shapes[code].members)
            extra = [f"{operation_model.name} error {code}: {k}" for k in doc if k not in allowed]
            seen.append((operation_model.name, status, extra))

    lam.meta.events.register("before-parse.lambda.*", check)
    name = unique("exact")
    layer = lam.publish_layer_version(
        LayerName=unique("layer"),
        Content={"ZipFile": make_zip({"python/x.py": ""})},
        CompatibleRuntimes=["python3.12"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": CODE})},
        Environment={"Variables": {"KEY": "value"}},
        Layers=[layer["LayerVersionArn"]],
        Tags={"a": "b"},
        LoggingConfig={"LogFormat": "JSON"},
        TracingConfig={"Mode": "Active"},
        SnapStart={"ApplyOn": "PublishedVersions"},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    signing = lam.create_code_signing_config(
        AllowedPublishers={
            "SigningProfileVersionArns": ["arn:aws:signer:us-east-1:000000000000:/signing-profiles/p/1"]
        },
        Tags={"a": "b"},
    )["CodeSigningConfig"]["CodeSigningConfigArn"]
    try:
        lam.get_function(FunctionName=name)
        lam.get_function_configuration(FunctionName=name)
        lam.list_functions(FunctionVersion="ALL")
        lam.update_function_configuration(FunctionName=name, Description="x")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.list_versions_by_function(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
        lam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {}})
        lam.get_alias(FunctionName=name, Name="live")
        lam.list_aliases(FunctionName=name)
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
        lam.get_function_concurrency(FunctionName=name)
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
        lam.list_provisioned_concurrency_configs(FunctionName=name)
        lam.add_permission(FunctionName=name, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
        lam.get_policy(FunctionName=name)
        lam.remove_permission(FunctionName=name, StatementId="s")
        lam.list_tags(Resource=lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"])
        lam.get_account_settings()
        lam.get_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])
        lam.get_layer_version_by_arn(Arn=layer["LayerVersionArn"])
        lam.list_layers()
        lam.list_layer_versions(LayerName=layer["LayerArn"])
        lam.add_layer_version_permission(
            LayerName=layer["LayerArn"], VersionNumber=layer["Version"], StatementId="s",
            Action="lambda:GetLayerVersion", Principal="*",
        )  # fmt: skip
        lam.get_layer_version_policy(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])
        lam.get_function_code_signing_config(FunctionName=name)  # none yet
        lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=signing)
        lam.get_function_code_signing_config(FunctionName=name)
        lam.get_code_signing_config(CodeSigningConfigArn=signing)
        lam.update_code_signing_config(CodeSigningConfigArn=signing, Description="x")
        lam.list_code_signing_configs()
        lam.list_functions_by_code_signing_config(CodeSigningConfigArn=signing)
        lam.list_tags(Resource=signing)
        missing_signing = signing[:-17] + "0" * 17
        for failing in (
            lambda: lam.get_function(FunctionName=unique("missing")),
            lambda: lam.get_alias(FunctionName=name, Name="nope"),
            lambda: lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version),
            lambda: lam.update_function_configuration(FunctionName=name, RevisionId="stale"),
            lambda: lam.get_layer_version(LayerName=layer["LayerArn"], VersionNumber=99),
            lambda: lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=100000),
            lambda: lam.get_code_signing_config(CodeSigningConfigArn=missing_signing),
            lambda: lam.delete_code_signing_config(CodeSigningConfigArn=signing),  # in use
            lambda: lam.put_function_code_signing_config(FunctionName=name, CodeSigningConfigArn=missing_signing),
        ):
            try:
                failing()
            except lam.exceptions.ClientError:
                pass
            else:
                raise AssertionError("the call was meant to fail")
    finally:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
        lam.delete_function(FunctionName=name)
        lam.delete_code_signing_config(CodeSigningConfigArn=signing)
        lam.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=layer["Version"])
    checked = {op for op, _, _ in seen}
    assert len(checked) >= 25, sorted(checked)

    def quirk(found: str) -> bool:
        return any(found.endswith("." + q) for q in AWS_QUIRKS)

    bad = [(op, status, [f for f in found if not quirk(f)]) for op, status, found in seen if not all(map(quirk, found))]
    assert bad == [], bad
