"""Functions: create, read, update, delete and tag $LATEST, publish and delete versions, with AWS's rules.

The registry is the in-memory view of the metadata store (the store is the system of record; every change
is durable before it is visible). Mutations of one function are serialised by a per-function lock, and
conditional updates compare RevisionId under that lock. Invocations read the in-memory view only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from selfless.api.model import service_model
from selfless.artifacts.local import LocalCodeStore
from selfless.artifacts.s3 import CodeObjects
from selfless.artifacts.unzip import MAX_UNZIPPED
from selfless.config import Settings
from selfless.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    RequestEntityTooLarge,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)
from selfless.ids import now_lastmodified
from selfless.invocation.leases import Leases
from selfless.layers import LayerRegistry
from selfless.models import Alias, CodeRef, Function, FunctionState, LayerRef, UpdateStatus
from selfless.runtime.runtimes import RuntimeCatalog
from selfless.store.base import MetadataStore

if TYPE_CHECKING:  # the code signing registry uses this module's tag rules, so it is imported for types only
    from selfless.codesigning import CodeSigning

MAX_ZIPPED = 52_428_800  # 50 MB
MAX_ENV_BYTES = 4096
MAX_TAGS = 50  # per function, AWS's limit

TAGS_ON_QUALIFIED = "Tags on function aliases and versions are not supported. Please specify a function ARN."
QUALIFIED_CONCURRENCY = (
    "This operation is permitted on Lambda functions only. Aliases and versions do not support this operation. "
    "Please specify either a function name or an unqualified function ARN."
)

# Keys AWS reserves: setting any of them is refused (the runtime sets them).
RESERVED_ENV_KEYS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)

# Configuration we accept, store and echo back, but do not act on yet.
_PASSTHROUGH = ("VpcConfig", "DeadLetterConfig", "KMSKeyArn", "TracingConfig", "LoggingConfig", "SnapStart")
_UNSUPPORTED = {
    "FileSystemConfigs": "File systems are not supported by selfless",
    "ImageConfig": "Container images are not supported by selfless yet",
    "CapacityProviderConfig": "Capacity providers are not supported by selfless",
    "DurableConfig": "Durable functions are not supported by selfless yet",
}

# A function's name, partial ARN (ACCOUNT:function:NAME or ACCOUNT:NAME) or ARN, optionally qualified. A
# region is read only inside a full ARN: "my-fn-1:live" is a function and its alias, not a region.
_NAME_RE = re.compile(
    r"^(?:arn:(?:aws[a-zA-Z-]*)?:lambda:(?P<region>(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):"
    r"(?P<account>\d{12}):function:|(?P<paccount>\d{12}):function:|(?P<short>\d{12}):)?"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$"
)
_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?"
    r"([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
# Every runtime botocore's model names (the Runtime enum): the request validator leaves Runtime to
# ``_check_runtime``, which words an unknown one as AWS does.
_MODELLED_RUNTIMES = frozenset(service_model("lambda").shape_for("Runtime").enum)
DERIVED_QUALIFIER = "The derived qualifier from the function name does not match the specified qualifier."


_random = random.Random()
log = logging.getLogger(__name__)


def _snapshot_fields(fn: Function) -> dict[str, Any]:
    """What makes a version differ from another: code and configuration, not names, times or counters."""
    doc = fn.to_doc()
    for key in (
        "arn",
        "version",
        "last_version",
        "last_modified",
        "revision_id",
        "generation",
        "description",
        "tags",
        "reserved_concurrency",
        "recursive_loop",
        "code_signing_config_arn",
        "state",
        "state_reason",
        "state_reason_code",
        "last_update_status",
        "last_update_status_reason",
        "last_update_status_reason_code",
    ):
        doc.pop(key, None)
    return doc


def check_tags(tags: Mapping[str, str]) -> None:
    """Raise InvalidParameterValue unless ``tags`` keep AWS's rules beyond the model's lengths: at most 50 per
    function, and no key under the ``aws:`` prefix (any case), which AWS reserves for its own tags."""
    reserved = sorted(k for k in tags if k.lower().startswith("aws:"))
    if reserved:
        # AWS documents the reservation; the exact wording of Lambda's refusal could not be confirmed.
        raise InvalidParameterValue(
            f"Invalid tag key: {reserved[0]}. Tag keys starting with 'aws:' are reserved for AWS use."
        )
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValue("Number of tags exceeds resource tag limit.")


class FunctionRegistry:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        code: LocalCodeStore,
        runtimes: RuntimeCatalog,
        on_change: Callable[[str, int | None], None],
        leases: Leases,
        s3: CodeObjects,
    ) -> None:
        self._s3 = s3
        self._leases = leases
        self._settings = settings
        self._store = store
        self._code = code
        self._runtimes = runtimes
        self._on_change = on_change  # (name, new generation or None when deleted): retire environments
        self._functions: dict[str, Function] = {}
        self._versions: dict[str, dict[str, Function]] = {}  # name -> version number -> snapshot
        self._aliases: dict[str, dict[str, Alias]] = {}  # name -> alias name -> alias
        # (function name, alias name): an alias changed or went away (provisioned concurrency follows it).
        self.on_alias_change: Callable[[str, str], None] = lambda _name, _alias: None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the composition root (the layer registry needs this one's ``collect`` in turn).
        self.layers: LayerRegistry | None = None
        # Package keys and /opt trees live environments use (an update's old code serves the calls in
        # flight until they end): kept by ``collect``. Set by the composition root.
        self.in_use: Callable[[], Iterable[str]] = lambda: ()
        # Refuses a DeadLetterConfig target that cannot be delivered to (``Destinations.check``); set by the
        # composition root.
        self.check_target: Callable[[str, str], Awaitable[None]] = _no_check
        # Provisioned concurrency requested per function name, all its versions and aliases together
        # (``ProvisionedConcurrency.totals``); set by the composition root, which sits above both.
        self.provisioned: Callable[[], Mapping[str, int]] = dict
        # Code signing configurations: checks deployments; set by the composition root.
        self.code_signing: CodeSigning | None = None

    async def load(self) -> None:
        for fn in await self._store.list_functions():
            # A transition cut off by a restart completes now: the code was stored before it was recorded.
            if fn.state is FunctionState.PENDING or fn.last_update_status is UpdateStatus.IN_PROGRESS:
                fn = self._settled(fn)
                await self._store.put_function(fn)
            self._functions[fn.name] = fn
        for version in await self._store.list_versions():
            self._versions.setdefault(version.name, {})[version.version] = version
        for alias in await self._store.list_aliases():
            self._aliases.setdefault(alias.function_name, {})[alias.name] = alias
        self._leases.load(
            {fn.name: fn.reserved_concurrency for fn in self._functions.values() if fn.reserved_concurrency is not None}
        )
        # /opt trees are derived data: make any that went missing.
        for fn in [*self._functions.values(), *(v for vs in self._versions.values() for v in vs.values())]:
            await self._build_opt(fn)

    # -- names ------------------------------------------------------------------------------------------

    def arn(self, name: str) -> str:
        s = self._settings
        return f"arn:aws:lambda:{s.region}:{s.account_id}:function:{name}"

    def resolve_name(self, name_or_arn: str) -> tuple[str, str | None]:
        """(function name, qualifier or None) from a name, partial ARN or ARN; ResourceNotFound when the
        ARN names another region or account."""
        return self.resolve(name_or_arn, None)

    def resolve(self, name_or_arn: str, qualifier: str | None) -> tuple[str, str | None]:
        """(function name, qualifier or None) that a FunctionName and an operation's Qualifier parameter
        name together, checked as AWS checks them: a qualified name whose qualifier differs from the
        parameter is InvalidParameterValue, then an ARN of another region or account is ResourceNotFound."""
        m = _NAME_RE.match(name_or_arn)
        if m is None:
            raise ValidationError(
                f"1 validation error detected: Value '{name_or_arn}' at 'functionName' failed to satisfy "
                f"constraint: Member must satisfy regular expression pattern: {_NAME_PATTERN}"
            )
        name, in_name = m.group("name"), m.group("qualifier")
        if qualifier and in_name and qualifier != in_name:
            raise InvalidParameterValue(DERIVED_QUALIFIER)
        region = m.group("region")
        if region and region != self._settings.region:
            raise ResourceNotFound(
                f"Functions from '{region}' are not reachable in this region ('{self._settings.region}')"
            )
        account = m.group("account") or m.group("paccount") or m.group("short")
        if account and account != self._settings.account_id:
            # Another account's function: nothing of it is here (AWS would check that account's policy).
            raise ResourceNotFound(f"Function not found: {self.arn(name)}")
        if len(name) > 64:
            raise ValidationError(
                f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
                "Member must have length less than or equal to 64"
            )
        return name, qualifier or in_name

    def get(self, name_or_arn: str, qualifier: str | None = None) -> Function:
        """$LATEST, or the published version the qualifier (or the ARN's) names; for an alias, the version
        it points to."""
        name, q = self.resolve(name_or_arn, qualifier)
        asked = q
        fn = self._functions.get(name)
        if fn is not None and q is not None and q != "$LATEST":
            alias = self._aliases.get(name, {}).get(q)
            if alias is not None:
                q = alias.function_version
            fn = fn if q == "$LATEST" else self._versions.get(name, {}).get(q)
        if fn is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name)}" + (f":{asked}" if asked else ""))
        return fn

    def for_invoke(self, name_or_arn: str, qualifier: str | None = None) -> tuple[Function, str]:
        """What one call runs, and the ARN the call named (the context's invoked_function_arn, qualifier
        included): like ``get``, but an alias with routing weights picks its version by them."""
        name, q = self.resolve(name_or_arn, qualifier)
        invoked = self.arn(name) + (f":{q}" if q else "")
        alias = self._aliases.get(name, {}).get(q) if q is not None else None
        if alias is not None and alias.weights:
            draw = _random.random()
            for version, weight in alias.weights.items():
                if draw < weight:
                    return self.get(name, version), invoked
                draw -= weight
        return self.get(name, q), invoked

    def latest(self, name_or_arn: str) -> Function:
        """$LATEST, for changes: a name or ARN qualified with anything else is not found."""
        name, q = self.resolve_name(name_or_arn)
        fn = self._functions.get(name)
        if fn is None or (q is not None and q != "$LATEST"):
            raise ResourceNotFound(f"Function not found: {self.arn(name)}" + (f":{q}" if q else ""))
        return fn

    def versions(self, name_or_arn: str) -> list[Function]:
        """$LATEST then every published version, oldest first."""
        latest = self.get(name_or_arn)
        published = self._versions.get(latest.name, {})
        return [latest] + [published[v] for v in sorted(published, key=int)]

    def page(
        self, marker: str | None, max_items: int | None, all_versions: bool = False
    ) -> tuple[list[Function], str | None]:
        """ListFunctions: functions by name ($LATEST; with ``all_versions`` each followed by its published
        versions in order), ``max_items`` (50 by default) after ``marker``, and the next page's marker."""
        items: list[tuple[tuple[str, int], Function]] = []
        for name in sorted(self._functions):
            items.append(((name, 0), self._functions[name]))
            if all_versions:
                versions = self._versions.get(name, {})
                items += [((name, int(v)), versions[v]) for v in sorted(versions, key=int)]
        start = 0
        if marker:
            try:
                name, _, order = base64.urlsafe_b64decode(marker.encode()).decode().partition("\0")
                after = (name, int(order or 0))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidParameterValue("Invalid marker") from None
            start = next((i for i, (key, _fn) in enumerate(items) if key > after), len(items))
        limit = max_items or 50
        page = items[start : start + limit]
        next_marker = None
        if start + limit < len(items) and page:
            last_name, last_order = page[-1][0]
            next_marker = base64.urlsafe_b64encode(f"{last_name}\0{last_order}".encode()).decode()
        return [fn for _key, fn in page], next_marker

    def all(self) -> list[Function]:
        return list(self._functions.values())

    # -- mutations --------------------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def create(self, params: Mapping[str, Any]) -> Function:
        name, qualifier = self.resolve_name(params["FunctionName"])
        if qualifier is not None:
            raise InvalidParameterValue("FunctionName cannot include a qualifier when creating a function")
        await self._refuse_unsupported(params)
        package_type = params.get("PackageType", "Zip")
        if package_type != "Zip":
            raise InvalidParameterValue("Container images are not supported by selfless yet; use PackageType Zip")
        runtime = params.get("Runtime")
        handler = params.get("Handler")
        if runtime is None:
            raise InvalidParameterValue("Runtime must be set when PackageType is Zip")
        self._check_runtime(runtime)
        if handler is None and not runtime.startswith("provided"):
            raise InvalidParameterValue("Handler must be set when PackageType is Zip")
        env = self._check_environment(params.get("Environment"))
        check_tags(params.get("Tags") or {})
        self._check_logging(params.get("LoggingConfig") or {})
        layers = self._resolve_layers(params.get("Layers") or [], ())
        signing = params.get("CodeSigningConfigArn")
        self._check_signing(signing, name)
        zip_bytes = await self.package(params.get("Code") or {})
        async with self._lock(name):
            if name in self._functions:
                raise ResourceConflict(f"Function already exist: {name}")
            code = await self._code.put(zip_bytes)
            if name in self._functions:  # created meanwhile by a request that did not wait on the lock
                raise ResourceConflict(f"Function already exist: {name}")
            self._check_combined_size(code, layers)
            fn = Function(
                name=name,
                arn=self.arn(name),
                runtime=runtime,
                role=params["Role"],
                handler=handler,
                code=code,
                description=params.get("Description", ""),
                timeout=params.get("Timeout", 3),
                memory_size=params.get("MemorySize", 128),
                ephemeral_storage=(params.get("EphemeralStorage") or {}).get("Size", 512),
                environment=env,
                environment_set=params.get("Environment") is not None,
                architectures=tuple(params.get("Architectures") or ("x86_64",)),
                tags=dict(params.get("Tags") or {}),
                extra={k: params[k] for k in _PASSTHROUGH if k in params},
                last_modified=now_lastmodified(),
                revision_id=str(uuid.uuid4()),
                generation=1,
                state=FunctionState.PENDING,
                state_reason="The function is being created.",
                state_reason_code="Creating",
                layers=layers,
                code_signing_config_arn=signing,
            )
            await self._build_opt(fn)
            async with self._attaching(signing):
                await self._store.put_function(fn)
                self._functions[name] = fn
        self._on_change(name, fn.generation)
        self._settle_soon(name)
        return fn

    async def update_code(self, name_or_arn: str, params: Mapping[str, Any]) -> Function:
        fn = self.latest(name_or_arn)
        if params.get("ImageUri"):
            raise InvalidParameterValue("Container images are not supported by selfless yet")
        zip_bytes = await self.package(params)
        dry_run = bool(params.get("DryRun"))
        async with self._lock(fn.name):
            fn = self.get(fn.name)
            self._check_revision(fn, params.get("RevisionId"))
            self._check_updatable(fn)
            self._check_signing(fn.code_signing_config_arn, fn.name)
            code = await self._code.put(zip_bytes)
            self._check_combined_size(code, fn.layers)
            if dry_run:
                return fn.replace(code=code)
            fn = fn.replace(
                code=code,
                architectures=tuple(params.get("Architectures") or fn.architectures),
                **self._update_fields(fn),
            )
            await self._store.put_function(fn)
            self._functions[fn.name] = fn
        self._on_change(fn.name, fn.generation)
        self._settle_soon(fn.name)
        await self.collect()
        return fn

    async def update_configuration(self, name_or_arn: str, params: Mapping[str, Any]) -> Function:
        fn = self.latest(name_or_arn)
        await self._refuse_unsupported(params)
        if "Runtime" in params:
            self._check_runtime(params["Runtime"])
        env = self._check_environment(params["Environment"]) if "Environment" in params else None
        async with self._lock(fn.name):
            fn = self.get(fn.name)
            self._check_revision(fn, params.get("RevisionId"))
            self._check_updatable(fn)
            changes: dict[str, Any] = {}
            for key, field in (
                ("Role", "role"),
                ("Handler", "handler"),
                ("Description", "description"),
                ("Timeout", "timeout"),
                ("MemorySize", "memory_size"),
                ("Runtime", "runtime"),
            ):
                if key in params:
                    changes[field] = params[key]
            if env is not None:
                changes["environment"] = env
                changes["environment_set"] = params["Environment"] is not None
            if "EphemeralStorage" in params:
                changes["ephemeral_storage"] = (params["EphemeralStorage"] or {}).get("Size", 512)
            if "Layers" in params:
                if params["Layers"]:  # layers are deployed packages too: signed by an allowed profile or not
                    self._check_signing(fn.code_signing_config_arn, fn.name)
                changes["layers"] = self._resolve_layers(params["Layers"] or [], fn.layers)
                self._check_combined_size(fn.code, changes["layers"])
            extra = dict(fn.extra)
            extra.update({k: params[k] for k in _PASSTHROUGH if k in params})
            if "LoggingConfig" in params:
                # Merged over what is set: an update naming only the format keeps the log group.
                extra["LoggingConfig"] = {**(fn.extra.get("LoggingConfig") or {}), **(params["LoggingConfig"] or {})}
                self._check_logging(extra["LoggingConfig"])
            fn = fn.replace(extra=extra, **changes, **self._update_fields(fn))
            await self._build_opt(fn)
            await self._store.put_function(fn)
            self._functions[fn.name] = fn
        self._on_change(fn.name, fn.generation)
        self._settle_soon(fn.name)
        if "Layers" in params:
            await self.collect()
        return fn

    async def delete(self, name_or_arn: str, qualifier: str | None) -> None:
        """The whole function (its versions too), or with a qualifier one published version."""
        name, q = self.resolve(name_or_arn, qualifier)
        if q == "$LATEST":
            raise InvalidParameterValue("$LATEST version cannot be deleted without deleting the function.")
        if q is not None:
            await self._delete_version(name, q)
            return
        async with self._lock(name):
            if name not in self._functions:
                raise ResourceNotFound(f"Function not found: {self.arn(name)}")
            await self._store.delete_function(name)
            del self._functions[name]
            versions = self._versions.pop(name, {})
            self._aliases.pop(name, None)
        self._locks.pop(name, None)
        self._leases.reserve(name, None)
        self._on_change(name, None)
        for version in versions.values():
            self._on_change(version.qualified_name, None)
        await self.collect()

    async def _delete_version(self, name: str, version: str) -> None:
        async with self._lock(name):
            if name not in self._functions:
                raise ResourceNotFound(f"Function not found: {self.arn(name)}")
            if version in self._aliases.get(name, {}):
                raise InvalidParameterValue("Deletion of aliases is not supported. Use DeleteAlias instead.")
            fn = self._versions.get(name, {}).get(version)
            if fn is None:
                return  # AWS answers 204 for a version that does not exist
            users = sorted(
                a.name
                for a in self._aliases.get(name, {}).values()
                if a.function_version == version or version in a.weights
            )
            if users:
                raise ResourceConflict(
                    f"Unable to delete version because the following aliases reference it: [{', '.join(users)}]"
                )
            await self._store.delete_version(name, version)
            del self._versions[name][version]
        self._on_change(fn.qualified_name, None)
        await self.collect()

    # -- aliases ----------------------------------------------------------------------------------------

    def alias(self, name_or_arn: str, alias_name: str) -> Alias:
        """GetAlias's alias: "Cannot find alias arn: ARN" when it does not exist (AWS's words, which
        tools such as Terraform match)."""
        fn = self.latest(name_or_arn)
        alias = self._aliases.get(fn.name, {}).get(alias_name)
        if alias is None:
            raise ResourceNotFound(f"Cannot find alias arn: {fn.arn}:{alias_name}")
        return alias

    def aliases(self, name_or_arn: str, version: str | None = None) -> list[Alias]:
        fn = self.latest(name_or_arn)
        found = sorted(self._aliases.get(fn.name, {}).values(), key=lambda a: a.name)
        if version is not None:
            found = [a for a in found if a.function_version == version or version in a.weights]
        return found

    async def create_alias(self, name_or_arn: str, params: Mapping[str, Any]) -> Alias:
        fn = self.latest(name_or_arn)
        async with self._lock(fn.name):
            fn = self.latest(fn.name)
            alias_name = params["Name"]
            arn = f"{fn.arn}:{alias_name}"
            if alias_name in self._aliases.get(fn.name, {}):
                raise ResourceConflict(f"Alias already exists: {arn}")
            weights = self._check_alias_target(fn.name, params["FunctionVersion"], params.get("RoutingConfig"))
            alias = Alias(
                function_name=fn.name,
                name=alias_name,
                arn=arn,
                function_version=params["FunctionVersion"],
                description=params.get("Description", ""),
                weights=weights,
                revision_id=str(uuid.uuid4()),
            )
            await self._store.put_alias(alias)
            self._aliases.setdefault(fn.name, {})[alias_name] = alias
        return alias

    async def update_alias(self, name_or_arn: str, params: Mapping[str, Any]) -> Alias:
        fn = self.latest(name_or_arn)
        async with self._lock(fn.name):
            alias = self._aliases.get(fn.name, {}).get(params["Name"])
            if alias is None:  # UpdateAlias words it otherwise than GetAlias
                raise ResourceNotFound(f"Alias not found: {fn.arn}:{params['Name']}")
            if params.get("RevisionId") is not None and params["RevisionId"] != alias.revision_id:
                raise PreconditionFailed(
                    "The Revision Id provided does not match the latest Revision Id. "
                    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                )
            version = params.get("FunctionVersion", alias.function_version)
            routing = params.get("RoutingConfig", {"AdditionalVersionWeights": alias.weights})
            weights = self._check_alias_target(fn.name, version, routing)
            alias = dataclasses.replace(
                alias,
                function_version=version,
                description=params.get("Description", alias.description),
                weights=weights,
                revision_id=str(uuid.uuid4()),
            )
            await self._store.put_alias(alias)
            self._aliases[fn.name][alias.name] = alias
        self.on_alias_change(fn.name, alias.name)
        return alias

    async def delete_alias(self, name_or_arn: str, alias_name: str) -> None:
        """Idempotent, as on AWS: deleting an alias that does not exist succeeds (the function must)."""
        fn = self.latest(name_or_arn)
        async with self._lock(fn.name):
            alias = self._aliases.get(fn.name, {}).get(alias_name)
            if alias is None:
                return
            await self._store.delete_alias(fn.name, alias.name)
            del self._aliases[fn.name][alias.name]
        self.on_alias_change(fn.name, alias_name)

    def _check_alias_target(self, name: str, version: str, routing: Mapping[str, Any] | None) -> dict[str, float]:
        if version != "$LATEST" and version not in self._versions.get(name, {}):
            raise ResourceNotFound(f"Function not found: {self.arn(name)}:{version}")
        weights = dict((routing or {}).get("AdditionalVersionWeights") or {})
        if not weights:
            return {}
        if len(weights) > 1:
            raise InvalidParameterValue("Number of items in AdditionalVersionWeights cannot be greater than 1")
        if version == "$LATEST" or "$LATEST" in weights:
            raise InvalidParameterValue("$LATEST is not supported for an alias pointing to more than 1 version")
        for extra in weights:
            if extra == version:
                raise InvalidParameterValue(
                    f"Invalid function version {extra}. Function version {extra} is already included in routing "
                    "configuration."
                )
            if extra not in self._versions.get(name, {}):
                raise ResourceNotFound(f"Function not found: {self.arn(name)}:{extra}")
        return {k: float(v) for k, v in weights.items()}

    async def publish_version(self, name_or_arn: str, params: Mapping[str, Any]) -> Function:
        """Snapshot $LATEST as the next version number; when neither code nor configuration changed since
        the last version, that version is returned instead of a new one (as AWS does)."""
        name, q = self.resolve_name(name_or_arn)
        if q is not None:
            raise InvalidParameterValue("PublishVersion does not accept a qualified function name")
        async with self._lock(name):
            latest = self.get(name)
            self._check_revision(latest, params.get("RevisionId"))
            self._check_updatable(latest)
            if latest.state is not FunctionState.ACTIVE:
                raise ResourceConflict(
                    "The operation cannot be performed at this time. The function is currently in the following "
                    f"state: {latest.state.value}"
                )
            sha = params.get("CodeSha256")
            if sha is not None and sha != latest.code.sha256:
                raise InvalidParameterValue(
                    f"CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({latest.code.sha256}). "
                    "Please try again with the CodeSHA256 in $LATEST."
                )
            published = self._versions.get(name, {})
            if published:
                newest = published[max(published, key=int)]
                if _snapshot_fields(newest) == _snapshot_fields(latest):
                    return newest
            number = latest.last_version + 1
            version = latest.replace(
                version=str(number),
                arn=f"{latest.arn}:{number}",
                description=params.get("Description", latest.description),
                last_modified=now_lastmodified(),
                revision_id=str(uuid.uuid4()),
                last_version=0,
                reserved_concurrency=None,
                tags={},
                last_update_status=UpdateStatus.SUCCESSFUL,
                last_update_status_reason=None,
                last_update_status_reason_code=None,
            )
            latest = latest.replace(last_version=number)
            await self._store.publish_version(latest, version)
            self._functions[name] = latest
            self._versions.setdefault(name, {})[version.version] = version
        return version

    def unqualified(self, name_or_arn: str) -> Function:
        """$LATEST, for operations on the whole function (reserved concurrency): a version or alias named is
        InvalidParameterValue, as on AWS."""
        name, q = self.resolve_name(name_or_arn)
        if q is not None:
            raise InvalidParameterValue(QUALIFIED_CONCURRENCY)
        return self.latest(name)

    async def put_concurrency(self, name_or_arn: str, value: int) -> Function:
        """Reserve ``value`` concurrent executions (0 turns the function off). The reservation must hold the
        function's provisioned concurrency, and leave the account's unreserved pool (less the provisioned
        concurrency of functions without a reservation, which comes out of it) at AWS's minimum."""
        fn = self.unqualified(name_or_arn)
        async with self._lock(fn.name):
            fn = self.get(fn.name)
            totals = self.provisioned()
            own = totals.get(fn.name, 0)
            if own > value:
                # AWS's wording, its stray spaces included.
                raise InvalidParameterValue(
                    f" ReservedConcurrentExecutions  {value} should not be lower than function's total provisioned "
                    f"concurrency [{own}]."
                )
            pinned = sum(n for other, n in totals.items() if other != fn.name and self._leases.reserved(other) is None)
            self._leases.check_reservation(fn.name, value, pinned)
            fn = fn.replace(reserved_concurrency=value)
            await self._store.put_function(fn)
            self._functions[fn.name] = fn
            self._leases.reserve(fn.name, value)
        return fn

    async def put_recursion(self, name_or_arn: str, value: str) -> Function:
        """PutFunctionRecursionConfig: for the whole function (kept on $LATEST); no new generation."""
        fn = self.latest(name_or_arn)
        async with self._lock(fn.name):
            fn = self.latest(fn.name).replace(recursive_loop=value)
            await self._store.put_function(fn)
            self._functions[fn.name] = fn
        return fn

    async def put_code_signing(self, name_or_arn: str, config_arn: str | None) -> Function:
        """Attach a code signing configuration to the function (None detaches it): it applies to the
        deployments that follow, as on AWS. No new generation: running code is not redeployed."""
        if config_arn is not None and self.code_signing is not None:
            self.code_signing.for_function(config_arn)  # AWS looks for the configuration before the function
        fn = self.latest(name_or_arn)
        async with self._lock(fn.name):
            fn = self.latest(fn.name)
            async with self._attaching(config_arn):
                fn = fn.replace(code_signing_config_arn=config_arn)
                await self._store.put_function(fn)
                self._functions[fn.name] = fn
        return fn

    def code_signing_users(self, config_arn: str) -> list[str]:
        """The ARNs of the functions a code signing configuration is attached to, by name."""
        return [fn.arn for name, fn in sorted(self._functions.items()) if fn.code_signing_config_arn == config_arn]

    async def delete_concurrency(self, name_or_arn: str) -> None:
        fn = self.unqualified(name_or_arn)
        async with self._lock(fn.name):
            fn = self.get(fn.name).replace(reserved_concurrency=None)
            await self._store.put_function(fn)
            self._functions[fn.name] = fn
            self._leases.reserve(fn.name, None)

    async def tag(self, arn: str, tags: Mapping[str, str]) -> None:
        """TagResource: ``tags`` merged over the function's (a key given again takes the new value)."""
        fn = self._by_arn(arn)
        check_tags(tags)
        async with self._lock(fn.name):
            fn = self._by_arn(arn)
            merged = dict(fn.tags)
            merged.update(tags)
            check_tags(merged)
            fn = fn.replace(tags=merged, revision_id=str(uuid.uuid4()))
            await self._store.put_function(fn)
            self._functions[fn.name] = fn

    async def untag(self, arn: str, keys: list[str]) -> None:
        fn = self._by_arn(arn)
        async with self._lock(fn.name):
            fn = self._by_arn(arn)
            fn = fn.replace(
                tags={k: v for k, v in fn.tags.items() if k not in set(keys)}, revision_id=str(uuid.uuid4())
            )
            await self._store.put_function(fn)
            self._functions[fn.name] = fn

    def tags(self, arn: str) -> dict[str, str]:
        return dict(self._by_arn(arn).tags)

    def _by_arn(self, arn: str) -> Function:
        """The function a tagging call's Resource names. A version's or alias's ARN is refused before the
        function is looked up (AWS keeps tags on functions only)."""
        parts = arn.split(":")
        if len(parts) == 8 and parts[5] == "function":  # arn:aws:lambda:<region>:<account>:function:<name>:<q>
            raise InvalidParameterValue(TAGS_ON_QUALIFIED)
        prefix = f"arn:aws:lambda:{self._settings.region}:{self._settings.account_id}:function:"
        if not arn.startswith(prefix):
            raise ResourceNotFound(f"Function not found: {arn}")
        fn = self._functions.get(arn[len(prefix) :])
        if fn is None:
            raise ResourceNotFound(f"Function not found: {arn}")
        return fn

    # -- revisions --------------------------------------------------------------------------------------

    def revision(self, name: str, qualifier: str | None) -> str:
        """The RevisionId of $LATEST (``qualifier`` None or "$LATEST"), of a published version or of an alias:
        also the revision of the resource policy attached to it, as AWS reports it (GetPolicy)."""
        if qualifier is not None and qualifier != "$LATEST":
            alias = self._aliases.get(name, {}).get(qualifier)
            if alias is not None:
                return alias.revision_id
        return self.get(name, qualifier).revision_id

    async def new_revision(self, name: str, qualifier: str | None) -> str:
        """Give $LATEST, a version or an alias a new RevisionId (its resource policy changed: AWS counts the
        policy as part of what it names); the new id."""
        revision = str(uuid.uuid4())
        async with self._lock(name):
            if qualifier is not None and qualifier != "$LATEST":
                alias = self._aliases.get(name, {}).get(qualifier)
                if alias is not None:
                    alias = dataclasses.replace(alias, revision_id=revision)
                    await self._store.put_alias(alias)
                    self._aliases[name][alias.name] = alias
                    return revision
                version = self.get(name, qualifier).replace(revision_id=revision)
                await self._store.put_version(version)
                self._versions[name][version.version] = version
                return revision
            fn = self.latest(name).replace(revision_id=revision)
            await self._store.put_function(fn)
            self._functions[name] = fn
        return revision

    def code_size(self) -> int:
        """Bytes of deployment packages (zipped) held by every function's $LATEST and published versions: AWS
        counts each version's package (GetAccountSettings' AccountUsage.TotalCodeSize, with layers')."""
        fns = [*self._functions.values(), *(v for versions in self._versions.values() for v in versions.values())]
        return sum(fn.code.size for fn in fns)

    # -- state transitions ------------------------------------------------------------------------------

    @staticmethod
    def _update_fields(fn: Function) -> dict[str, Any]:
        return {
            "last_modified": now_lastmodified(),
            "revision_id": str(uuid.uuid4()),
            "generation": fn.generation + 1,
            "last_update_status": UpdateStatus.IN_PROGRESS,
            "last_update_status_reason": "The function is being created.",
            "last_update_status_reason_code": "Creating",
        }

    @staticmethod
    def _settled(fn: Function) -> Function:
        if fn.state is FunctionState.PENDING:
            return fn.replace(
                state=FunctionState.ACTIVE,
                state_reason=None,
                state_reason_code=None,
                last_update_status=UpdateStatus.SUCCESSFUL,
                revision_id=str(uuid.uuid4()),
            )
        return fn.replace(
            last_update_status=UpdateStatus.SUCCESSFUL,
            last_update_status_reason=None,
            last_update_status_reason_code=None,
            revision_id=str(uuid.uuid4()),
        )

    def _settle_soon(self, name: str) -> None:
        """Pending -> Active and InProgress -> Successful once the response has gone out: the package was
        validated and stored before the call returned, so nothing can fail any more."""
        task = asyncio.get_running_loop().create_task(self._settle(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, name: str) -> None:
        await asyncio.sleep(0)
        async with self._lock(name):
            fn = self._functions.get(name)
            if fn is None:
                return
            if fn.state is not FunctionState.PENDING and fn.last_update_status is not UpdateStatus.IN_PROGRESS:
                return
            fn = self._settled(fn)
            try:
                await self._store.put_function(fn)
            except Exception as exc:  # a full disk: what is stored completes at the next start (load)
                log.warning("function %s settled in memory only, its record could not be written: %s", name, exc)
            self._functions[name] = fn

    async def wait_settled(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- checks -----------------------------------------------------------------------------------------

    def _check_revision(self, fn: Function, revision: str | None) -> None:
        if revision is not None and revision != fn.revision_id:
            raise PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    @staticmethod
    def _check_updatable(fn: Function) -> None:
        if fn.last_update_status is UpdateStatus.IN_PROGRESS:
            raise ResourceConflict(
                f"The operation cannot be performed at this time. An update is in progress for resource: {fn.arn}"
            )

    def _check_runtime(self, runtime: str) -> None:
        if self._runtimes.get(runtime) is not None:
            return
        deprecated = ("python2.7", "python3.6", "python3.7", "python3.8")
        if runtime in deprecated:
            raise InvalidParameterValue(
                f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS Lambda "
                "functions. We recommend you use a supported runtime while creating or updating functions."
            )
        if runtime in _MODELLED_RUNTIMES:  # a runtime AWS offers that this server has not installed
            raise InvalidParameterValue(
                f"The runtime parameter of {runtime} is not supported by this server. "
                f"Supported runtimes: {', '.join(self._runtimes.names())}"
            )
        # AWS's words for a runtime it does not know (a typo, another case): the list names the runtimes it
        # takes, which here are the installed ones. Value unquoted, as AWS writes it.
        raise InvalidParameterValue(
            f"Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: "
            f"[{', '.join(self._runtimes.names())}] or be a valid ARN"
        )

    def _check_signing(self, config_arn: str | None, name: str) -> None:
        """A package is being deployed to function ``name``, which has (or is given) ``config_arn``:
        CodeSigningConfigNotFoundException for a configuration that does not exist; what its policy says
        about a package whose signature selfless cannot verify (``CodeSigning.check_deployment``)."""
        if config_arn is None:
            return
        if self.code_signing is None:
            raise InvalidParameterValue("Code signing is not available on this server")
        self.code_signing.for_function(config_arn)
        self.code_signing.check_deployment(config_arn, self.arn(name))

    def _attaching(self, config_arn: str | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a record naming ``config_arn`` is written (the configuration cannot go meanwhile)."""
        if config_arn is None or self.code_signing is None:
            return contextlib.nullcontext()
        return self.code_signing.attaching(config_arn)

    async def _refuse_unsupported(self, params: Mapping[str, Any]) -> None:
        for key, message in _UNSUPPORTED.items():
            if params.get(key):
                raise InvalidParameterValue(message)
        target = (params.get("DeadLetterConfig") or {}).get("TargetArn")
        if target:  # an empty TargetArn removes the dead-letter target, as on AWS
            await self.check_target(target, "DeadLetterConfig")

    @staticmethod
    def _check_logging(config: Mapping[str, Any]) -> None:
        levels = config.get("ApplicationLogLevel") or config.get("SystemLogLevel")
        if levels and (config.get("LogFormat") or "Text") != "JSON":
            raise InvalidParameterValue(
                'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your request or '
                'change the LogFormat to "Json" and try again.'
            )

    @staticmethod
    def _check_environment(environment: Any) -> dict[str, str]:
        if not environment:
            return {}
        variables = environment.get("Variables") or {}
        reserved = sorted(k for k in variables if k in RESERVED_ENV_KEYS)
        if reserved:
            raise InvalidParameterValue(
                "Lambda was unable to configure your environment variables because the environment variables "
                "you have provided contains reserved keys that are currently not supported for modification. "
                f"Reserved keys used in this request: {', '.join(reserved)}"
            )
        measured = json.dumps(variables, separators=(",", ":"))
        if len(measured.encode()) > MAX_ENV_BYTES:
            raise InvalidParameterValue(
                "Lambda was unable to configure your environment variables because the environment variables "
                f"you have provided exceeded the 4KB limit. String measured: {measured}"
            )
        return {str(k): str(v) for k, v in variables.items()}

    async def package(self, code: Mapping[str, Any]) -> bytes:
        """The zip a Code (or a layer's Content) parameter names: inline (ZipFile), or an object of the
        S3-compatible store (S3Bucket, S3Key, S3ObjectVersion)."""
        if "S3Bucket" in code or "S3Key" in code:
            if code.get("ZipFile") is not None:
                raise InvalidParameterValue(
                    "Please provide either ZipFile or an S3 location (S3Bucket and S3Key) for function code, not both."
                )
            return await self._s3.fetch(
                code.get("S3Bucket") or "", code.get("S3Key") or "", code.get("S3ObjectVersion"), max_bytes=MAX_UNZIPPED
            )
        return self._zip_from(code)

    @staticmethod
    def _zip_from(code: Mapping[str, Any]) -> bytes:
        if code.get("ImageUri"):
            raise InvalidParameterValue("Container images are not supported by selfless yet")
        raw = code.get("ZipFile")
        if raw is None:
            raise InvalidParameterValue("Please provide a source for function code.")
        if isinstance(raw, bytes):
            data = raw
        else:
            try:
                data = base64.b64decode(str(raw), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidParameterValue(
                    "Could not unzip uploaded file. Please check your file, then try to upload again."
                ) from None
        if len(data) > MAX_ZIPPED:
            raise RequestEntityTooLarge(f"Zipped size must be smaller than {MAX_ZIPPED} bytes")
        return data

    async def collect(self) -> None:
        """Remove packages and /opt trees that no function, version or layer version refers to."""
        fns = [*self._functions.values(), *(v for versions in self._versions.values() for v in versions.values())]
        keys = [fn.code.key for fn in fns]
        keys += [layer.code.key for fn in fns for layer in fn.layers]
        keys += [fn.opt_key for fn in fns if fn.opt_key is not None]
        if self.layers is not None:
            keys += self.layers.keys()
        keys += self.in_use()
        await self._code.collect(keys)

    # -- layers -----------------------------------------------------------------------------------------

    def _resolve_layers(self, arns: list[str], kept: tuple[LayerRef, ...]) -> tuple[LayerRef, ...]:
        if not arns:
            return ()
        if self.layers is None:
            raise InvalidParameterValue("Layers are not available on this server")
        return self.layers.resolve(arns, kept)

    @staticmethod
    def _check_combined_size(code: CodeRef, layers: tuple[LayerRef, ...]) -> None:
        total = code.unzipped_size + sum(layer.code.unzipped_size for layer in layers)
        if layers and total > MAX_UNZIPPED:
            raise InvalidParameterValue(
                f"Function code combined with layers exceeds the maximum allowed size of {MAX_UNZIPPED} bytes. "
                f"The actual size is {total} bytes."
            )

    async def _build_opt(self, fn: Function) -> None:
        if fn.opt_key is not None:
            await self._code.build_opt(fn.opt_key, [layer.code.key for layer in fn.layers])


async def _no_check(arn: str, usage: str) -> None:
    """Every target is taken (until the composition root gives the registry its check)."""
