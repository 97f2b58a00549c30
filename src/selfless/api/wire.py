"""Lambda's response shapes, built from our records (field names exactly as the service model has them)."""

from __future__ import annotations

from typing import Any

from selfless.models import Alias, Function, LayerVersion


def alias_doc(alias: Alias) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "AliasArn": alias.arn,
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }
    if alias.weights:
        doc["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.weights)}
    return doc


def layer_version_item(layer: LayerVersion) -> dict[str, Any]:
    """LayerVersionsListItem: what ListLayerVersions and ListLayers show of a version."""
    doc: dict[str, Any] = {
        "LayerVersionArn": layer.arn,
        "Version": layer.version,
        "Description": layer.description,
        "CreatedDate": layer.created_date,
    }
    if layer.compatible_runtimes:
        doc["CompatibleRuntimes"] = list(layer.compatible_runtimes)
    if layer.license_info is not None:
        doc["LicenseInfo"] = layer.license_info
    if layer.compatible_architectures:
        doc["CompatibleArchitectures"] = list(layer.compatible_architectures)
    return doc


def layer_version_doc(layer: LayerVersion, location: str) -> dict[str, Any]:
    """PublishLayerVersion's and GetLayerVersion's answer; ``location`` a time-limited download link."""
    doc = {
        "Content": {"Location": location, "CodeSha256": layer.code.sha256, "CodeSize": layer.code.size},
        "LayerArn": layer.layer_arn,
    }
    doc.update(layer_version_item(layer))
    return doc


# What a listing (ListFunctions, ListVersionsByFunction) leaves out of each FunctionConfiguration: AWS shows
# states and the runtime version only when one function (or version) is read.
_NOT_LISTED = (
    "State",
    "StateReason",
    "StateReasonCode",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
    "LastUpdateStatusReasonCode",
    "RuntimeVersionConfig",
)

# The state AWS reports for a function or version that is being created.
CREATING = {"State": "Pending", "StateReason": "The function is being created.", "StateReasonCode": "Creating"}


def configuration(
    fn: Function, region: str, *, function_arn: str | None = None, listed: bool = False
) -> dict[str, Any]:
    """FunctionConfiguration as AWS answers it for ``fn``.

    ``function_arn`` is the ARN the caller named when AWS echoes it instead of the record's own: an alias's
    ARN when reading through an alias, ``...:$LATEST`` when $LATEST was named explicitly. ``listed`` gives the
    shorter form of ListFunctions' and ListVersionsByFunction's items (no states, no runtime version).
    """
    runtime = fn.runtime or ""
    doc: dict[str, Any] = {
        "FunctionName": fn.name,
        "FunctionArn": function_arn or fn.arn,
        "Runtime": fn.runtime,
        "Role": fn.role,
        "Handler": fn.handler,
        "CodeSize": fn.code.size,
        "Description": fn.description,
        "Timeout": fn.timeout,
        "MemorySize": fn.memory_size,
        "LastModified": fn.last_modified,
        "CodeSha256": fn.code.sha256,
        "Version": fn.version,
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": fn.revision_id,
        "State": fn.state.value,
        "PackageType": "Zip",
        "Architectures": list(fn.architectures),
        "EphemeralStorage": {"Size": fn.ephemeral_storage},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "RuntimeVersionConfig": {
            "RuntimeVersionArn": f"arn:aws:lambda:{region}::runtime:selfless-{runtime}",
        },
    }
    if fn.environment or fn.environment_set:
        doc["Environment"] = {"Variables": dict(fn.environment)}
    if fn.layers:
        doc["Layers"] = [{"Arn": layer.arn, "CodeSize": layer.code.size} for layer in fn.layers]
    if fn.state_reason is not None:
        doc["StateReason"] = fn.state_reason
    if fn.state_reason_code is not None:
        doc["StateReasonCode"] = fn.state_reason_code
    if fn.last_update_status is not None:
        doc["LastUpdateStatus"] = fn.last_update_status.value
    if fn.last_update_status_reason is not None:
        doc["LastUpdateStatusReason"] = fn.last_update_status_reason
    if fn.last_update_status_reason_code is not None:
        doc["LastUpdateStatusReasonCode"] = fn.last_update_status_reason_code
    for key, value in fn.extra.items():
        doc[key] = value
    doc["LoggingConfig"] = dict(fn.logging_config)
    snap_start = fn.extra.get("SnapStart")
    if isinstance(snap_start, dict):
        # Fork-after-init is on for published versions that ask for it (and $LATEST by selfless's own tag).
        applies = snap_start.get("ApplyOn") == "PublishedVersions" and fn.version != "$LATEST"
        doc["SnapStart"] = {
            "ApplyOn": snap_start.get("ApplyOn", "None"),
            "OptimizationStatus": "On" if applies else "Off",
        }
    if listed:
        for key in _NOT_LISTED:
            doc.pop(key, None)
    return {k: v for k, v in doc.items() if v is not None}


def being_created(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as AWS answers a call that publishes a version while creating it (CreateFunction or
    UpdateFunctionCode with Publish): the new version is Pending, with no update status yet."""
    out = {k: v for k, v in doc.items() if not k.startswith("LastUpdateStatus")}
    out.update(CREATING)
    return out
