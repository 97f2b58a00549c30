"""Frozen records passed between the steps of the invocation path."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from collections.abc import Mapping
from typing import Any


class FunctionState(enum.StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    FAILED = "Failed"


class UpdateStatus(enum.StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class CodeRef:
    """A stored, validated package. ``sha256`` is base64 (Lambda's CodeSha256); ``key`` is its hex form."""

    sha256: str
    key: str
    size: int
    unzipped_size: int


@dataclasses.dataclass(frozen=True)
class LayerRef:
    """A layer version as a function holds it: the ARN it was given and the package, kept even after the
    layer version is deleted (as on AWS, functions that use it go on working)."""

    arn: str
    code: CodeRef


@dataclasses.dataclass(frozen=True)
class LayerVersion:
    """One published, immutable version of a layer."""

    name: str
    version: int
    layer_arn: str
    code: CodeRef
    description: str = ""
    created_date: str = ""
    compatible_runtimes: tuple[str, ...] = ()
    compatible_architectures: tuple[str, ...] = ()
    license_info: str | None = None

    @property
    def arn(self) -> str:
        return f"{self.layer_arn}:{self.version}"

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["compatible_runtimes"] = list(self.compatible_runtimes)
        doc["compatible_architectures"] = list(self.compatible_architectures)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LayerVersion:
        fields = dict(doc)
        fields["code"] = CodeRef(**fields["code"])
        fields["compatible_runtimes"] = tuple(fields.get("compatible_runtimes", ()))
        fields["compatible_architectures"] = tuple(fields.get("compatible_architectures", ()))
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Function:
    """$LATEST or a published version of one function: everything GetFunctionConfiguration shows, plus tags.

    ``generation`` changes when code or configuration changes, and only then: environments belong to one
    generation, so an update retires the old ones without touching in-flight calls.
    """

    name: str
    arn: str
    runtime: str | None
    role: str
    handler: str | None
    code: CodeRef
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    ephemeral_storage: int = 512
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Environment was given (even as an empty map): AWS then shows ``Environment: {"Variables": {...}}``, and
    # leaves it out for a function that never had one.
    environment_set: bool = False
    architectures: tuple[str, ...] = ("x86_64",)
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Configuration kept as sent and echoed back: TracingConfig, VpcConfig... (not acted on yet), DeadLetterConfig
    # (read by the async path), LoggingConfig, SnapStart.
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    last_modified: str = ""
    revision_id: str = ""
    generation: int = 1
    reserved_concurrency: int | None = None
    # "$LATEST", or the number of a published version (an immutable snapshot; its ``arn`` is qualified).
    version: str = "$LATEST"
    # On $LATEST: the highest version number ever published (numbers are never reused).
    last_version: int = 0
    state: FunctionState = FunctionState.PENDING
    state_reason: str | None = None
    state_reason_code: str | None = None
    last_update_status: UpdateStatus | None = None
    last_update_status_reason: str | None = None
    last_update_status_reason_code: str | None = None
    # In the order given: later layers' files override earlier ones' in /opt.
    layers: tuple[LayerRef, ...] = ()
    # RecursiveLoop (PutFunctionRecursionConfig): "Terminate" stops an event chain that comes back to this
    # function more than 16 times; "Allow" lets it run. Kept on $LATEST, for the whole function.
    recursive_loop: str = "Terminate"
    # The code signing configuration attached to the function (CreateFunction's CodeSigningConfigArn,
    # PutFunctionCodeSigningConfig): kept on $LATEST, for the whole function; checked at every deployment.
    code_signing_config_arn: str | None = None

    def replace(self, **changes: Any) -> Function:
        return dataclasses.replace(self, **changes)

    @property
    def tracing_active(self) -> bool:
        """TracingConfig Mode is Active: a call without a trace header gets a sampled one."""
        tracing = self.extra.get("TracingConfig")
        return isinstance(tracing, Mapping) and tracing.get("Mode") == "Active"

    @property
    def qualified_name(self) -> str:
        """What environments belong to: ``name`` for $LATEST, ``name:N`` for version N."""
        return self.name if self.version == "$LATEST" else f"{self.name}:{self.version}"

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["code"] = dataclasses.asdict(self.code)
        doc["environment"] = dict(self.environment)
        doc["tags"] = dict(self.tags)
        doc["extra"] = dict(self.extra)
        doc["architectures"] = list(self.architectures)
        doc["layers"] = [{"arn": layer.arn, "code": dataclasses.asdict(layer.code)} for layer in self.layers]
        return doc

    @functools.cached_property
    def logging_config(self) -> Mapping[str, str]:
        """LoggingConfig as AWS shows it, defaults filled in: Text, or JSON with both levels (INFO unless
        set), and the log group. Worked out once per record (every environment start reads it)."""
        given = self.extra.get("LoggingConfig") or {}
        doc = {"LogFormat": given.get("LogFormat") or "Text"}
        if doc["LogFormat"] == "JSON":
            doc["ApplicationLogLevel"] = given.get("ApplicationLogLevel") or "INFO"
            doc["SystemLogLevel"] = given.get("SystemLogLevel") or "INFO"
        doc["LogGroup"] = given.get("LogGroup") or f"/aws/lambda/{self.name}"
        return doc

    @functools.cached_property
    def opt_key(self) -> str | None:
        """Names the merged /opt tree of this function's layers (None without layers)."""
        if not self.layers:
            return None
        joined = ",".join(layer.code.key for layer in self.layers)
        return hashlib.sha256(f"opt:{joined}".encode()).hexdigest()

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Function:
        fields = dict(doc)
        fields["code"] = CodeRef(**fields["code"])
        fields["architectures"] = tuple(fields.get("architectures", ("x86_64",)))
        fields["layers"] = tuple(LayerRef(layer["arn"], CodeRef(**layer["code"])) for layer in fields.get("layers", ()))
        fields["state"] = FunctionState(fields["state"])
        if fields.get("last_update_status") is not None:
            fields["last_update_status"] = UpdateStatus(fields["last_update_status"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Alias:
    """A named pointer to a version, optionally sending a share of calls to a second one."""

    function_name: str
    name: str
    arn: str
    function_version: str
    description: str = ""
    # AdditionalVersionWeights: version -> share of calls (0..1) that go there instead.
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    revision_id: str = ""

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["weights"] = dict(self.weights)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Alias:
        return cls(**doc)


@dataclasses.dataclass(frozen=True)
class CodeSigningConfig:
    """A code signing configuration: the signing profiles whose signatures are trusted, and what a deployment
    that fails the checks gets (``policy``: "Warn" lets it through with a warning, "Enforce" refuses it)."""

    id: str
    arn: str
    allowed_profiles: tuple[str, ...]
    policy: str = "Warn"
    description: str = ""
    last_modified: str = ""
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> CodeSigningConfig:
        return dataclasses.replace(self, **changes)

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["allowed_profiles"] = list(self.allowed_profiles)
        doc["tags"] = dict(self.tags)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CodeSigningConfig:
        fields = dict(doc)
        fields["allowed_profiles"] = tuple(fields.get("allowed_profiles", ()))
        return cls(**fields)


class InvocationType(enum.StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


@dataclasses.dataclass(frozen=True)
class InvokeRequest:
    function_name: str
    qualifier: str | None
    payload: bytes
    invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE
    tail_logs: bool = False
    client_context: str | None = None  # JSON text, already base64-decoded
    request_id: str = ""
    # When a function's own code makes the call: how many times each function has run in this chain so far.
    lineage: Mapping[str, int] = dataclasses.field(default_factory=dict)
    trace_header: str | None = None  # X-Amzn-Trace-Id as the caller sent it


@dataclasses.dataclass(frozen=True)
class InvokeResult:
    status: int
    payload: bytes
    executed_version: str = "$LATEST"
    function_error: str | None = None  # "Unhandled" when the function failed
    log_tail: str | None = None  # base64 of the last 4 KB of this invocation's log
    request_id: str = ""
