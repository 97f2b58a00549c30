"""Layers: publish, read, list and delete layer versions, and resolve a function's Layers, with AWS's rules.

A layer version is immutable: its package is stored once in the code store (by SHA-256, like functions'),
and its number is never reused, even after it is deleted. A function keeps the packages of the layer
versions it was given (``LayerRef``), so deleting a layer version never breaks a function that uses it, as
on AWS. The registry is the in-memory view of the metadata store; every change is durable before it is
visible.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from selfless.artifacts.local import LocalCodeStore
from selfless.config import Settings
from selfless.errors import InvalidParameterValue, ResourceNotFound
from selfless.ids import now_lastmodified
from selfless.models import LayerRef, LayerVersion
from selfless.store.base import MetadataStore

MAX_LAYERS = 5
_NOT_FOUND = "The resource you requested does not exist."
# A layer's name or ARN (LayerName), and a layer version's ARN (what functions and GetLayerVersionByArn take).
_LAYER_RE = re.compile(
    r"^(?:arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:(?P<account>\d{12}):layer:)?(?P<name>[a-zA-Z0-9-_]+)$"
)
_VERSION_ARN_RE = re.compile(
    r"^arn:[a-zA-Z0-9-]+:lambda:(?P<region>[a-zA-Z0-9-]+):(?P<account>\d{12}):layer:(?P<name>[a-zA-Z0-9-_]+):"
    r"(?P<version>[0-9]+)$"
)


class LayerRegistry:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        code: LocalCodeStore,
        collect: Callable[[], Any],
    ) -> None:
        self._settings = settings
        self._store = store
        self._code = code
        self._collect = collect  # removes packages nothing refers to any more (the function registry's)
        self._layers: dict[str, dict[int, LayerVersion]] = {}
        self._last: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        layers, self._last = await self._store.list_layers()
        for layer in layers:
            self._layers.setdefault(layer.name, {})[layer.version] = layer

    def layer_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self._settings.region}:{self._settings.account_id}:layer:{name}"

    def name_of(self, name_or_arn: str) -> str:
        found = _LAYER_RE.match(name_or_arn)
        if found is None:
            raise ResourceNotFound(_NOT_FOUND)
        account = found.group("account")
        if account is not None and account != self._settings.account_id:
            raise ResourceNotFound(_NOT_FOUND)
        return found.group("name")

    # -- versions -------------------------------------------------------------------------------------------

    async def publish(self, name_or_arn: str, params: Mapping[str, Any], zip_bytes: bytes) -> LayerVersion:
        """Store the package and make it the layer's next version (numbers are never reused)."""
        name = self.name_of(name_or_arn)
        code = await self._code.put(zip_bytes)
        async with self._lock:
            version = self._last.get(name, 0) + 1
            layer = LayerVersion(
                name=name,
                version=version,
                layer_arn=self.layer_arn(name),
                code=code,
                description=params.get("Description", ""),
                created_date=now_lastmodified(),
                compatible_runtimes=tuple(params.get("CompatibleRuntimes") or ()),
                compatible_architectures=tuple(params.get("CompatibleArchitectures") or ()),
                license_info=params.get("LicenseInfo"),
            )
            await self._store.put_layer(layer)
            self._layers.setdefault(name, {})[version] = layer
            self._last[name] = version
        return layer

    def get(self, name_or_arn: str, version: int, named: bool = False) -> LayerVersion:
        """The layer version; ResourceNotFound when it does not exist, in GetLayerVersion's words, or with
        ``named`` in those of the layer version policy operations: "Layer version ARN does not exist."."""
        name = self.name_of(name_or_arn)
        layer = self._layers.get(name, {}).get(version)
        if layer is None:
            raise ResourceNotFound(
                f"Layer version {self.layer_arn(name)}:{version} does not exist." if named else _NOT_FOUND
            )
        return layer

    def get_by_arn(self, arn: str) -> LayerVersion:
        found = _VERSION_ARN_RE.match(arn)
        if found is None or found.group("account") != self._settings.account_id:
            raise ResourceNotFound(_NOT_FOUND)
        return self.get(found.group("name"), int(found.group("version")))

    async def delete(self, name_or_arn: str, version: int) -> None:
        """Idempotent, as on AWS: deleting a version that does not exist succeeds."""
        name = self.name_of(name_or_arn)
        async with self._lock:
            if version not in self._layers.get(name, {}):
                return
            await self._store.delete_layer(name, version, policy_resource(name, version))
            del self._layers[name][version]
            if not self._layers[name]:
                del self._layers[name]
        await self._collect()

    def versions(
        self, name_or_arn: str, runtime: str | None = None, architecture: str | None = None
    ) -> list[LayerVersion]:
        """A layer's versions that match the filters, newest first (ListLayerVersions' order)."""
        found = self._layers.get(self.name_of(name_or_arn), {})
        return [
            layer for _version, layer in sorted(found.items(), reverse=True) if _matches(layer, runtime, architecture)
        ]

    def latest_matching(self, runtime: str | None = None, architecture: str | None = None) -> list[LayerVersion]:
        """For ListLayers: each layer's newest version that matches the filters, layers by name."""
        out = []
        for name in sorted(self._layers):
            matching = self.versions(name, runtime, architecture)
            if matching:
                out.append(matching[0])
        return out

    def code_size(self) -> int:
        """Bytes of every layer version's archive (zipped), as GetAccountSettings counts them."""
        return sum(layer.code.size for versions in self._layers.values() for layer in versions.values())

    def keys(self) -> Iterable[str]:
        """Package keys every layer version refers to (kept by the code store's collection)."""
        return [layer.code.key for versions in self._layers.values() for layer in versions.values()]

    # -- functions' Layers ----------------------------------------------------------------------------------

    def resolve(self, arns: Iterable[str], kept: Iterable[LayerRef] = ()) -> tuple[LayerRef, ...]:
        """A function's ``Layers`` parameter as the packages to extract into /opt, in order. A layer version
        the function already has (``kept``) resolves even if it was deleted since, as on AWS."""
        arns = list(arns)
        if len(arns) > MAX_LAYERS:
            raise InvalidParameterValue(f"Cannot reference more than {MAX_LAYERS} layers.")
        held = {ref.arn: ref for ref in kept}
        refs: list[LayerRef] = []
        seen: dict[str, str] = {}
        for arn in arns:
            found = _VERSION_ARN_RE.match(arn)
            if found is None:
                raise InvalidParameterValue(f"Layer version {arn} does not exist.")
            name = found.group("name")
            if name in seen:
                raise InvalidParameterValue(
                    "Two different versions of the same layer are not allowed to be referenced in the same "
                    f"function. {seen[name]} and {arn} refer to the same layer."
                )
            seen[name] = arn
            if arn in held:
                refs.append(held[arn])
                continue
            try:
                layer = self.get_by_arn(arn)
            except ResourceNotFound:
                raise InvalidParameterValue(f"Layer version {arn} does not exist.") from None
            refs.append(LayerRef(layer.arn, layer.code))
        return tuple(refs)


def policy_resource(name: str, version: int) -> str:
    """The key a layer version's policy is stored under."""
    return f"layer:{name}:{version}"


def _matches(layer: LayerVersion, runtime: str | None, architecture: str | None) -> bool:
    if runtime is not None and runtime not in layer.compatible_runtimes:
        return False
    return architecture is None or architecture in layer.compatible_architectures
