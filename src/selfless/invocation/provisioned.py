"""Provisioned concurrency: configurations on published versions and aliases, and keeping their
environments ready.

A configuration (Put/Get/Delete/ListProvisionedConcurrencyConfigs) asks for N environments of one version
(for an alias: of the version it points to, followed when the alias moves), initialised before any call.
Its status follows AWS: IN_PROGRESS while the environments start and run their init, READY once all N
have, FAILED with a reason when one could not (FUNCTION_ERROR_INIT_FAILURE when the function's init
failed). A version takes one configuration, directly or through one alias; an alias with routing weights
takes none. Configurations are durable; after a restart they are allocated again.
The environments themselves live in the pool (``EnvironmentPool.provision``), which routes a version's
calls to them first and replaces one that dies.

Provisioned concurrency comes out of the function's concurrency: with reserved concurrency, the sum over
the function's versions may not exceed the reservation; without, it may not take the account's unreserved
pool below AWS's minimum.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from typing import Any

from selfless.errors import (
    InvalidParameterValue,
    ProvisionedConcurrencyConfigNotFound,
    ResourceConflict,
    ResourceNotFound,
    TooManyRequests,
)
from selfless.functions import FunctionRegistry
from selfless.ids import now_lastmodified
from selfless.invocation.leases import Leases
from selfless.models import Alias, Function
from selfless.sandbox.pool import EnvironmentPool, ProvisioningFailed
from selfless.store.base import MetadataStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Config:
    function_name: str
    qualifier: str  # a version number or an alias name
    requested: int
    last_modified: str
    version: str = ""  # the version whose environments are kept (the alias's, for an alias)
    status: str = "IN_PROGRESS"
    reason: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.function_name}:{self.qualifier}"

    @property
    def target(self) -> str:
        """The pool's name for the environments: ``name:version``."""
        return f"{self.function_name}:{self.version}"

    def record(self) -> dict[str, Any]:
        return {
            "FunctionName": self.function_name,
            "Qualifier": self.qualifier,
            "Requested": self.requested,
            "LastModified": self.last_modified,
        }


class ProvisionedConcurrency:
    def __init__(self, registry: FunctionRegistry, pool: EnvironmentPool, store: MetadataStore, leases: Leases) -> None:
        self._registry = registry
        self._pool = pool
        self._store = store
        self._leases = leases
        self._configs: dict[str, _Config] = {}  # qualified name -> configuration

    async def load(self) -> None:
        """Allocate every stored configuration again (its environments did not survive the restart)."""
        for doc in await self._store.list_provisioned():
            config = _Config(doc["FunctionName"], doc["Qualifier"], int(doc["Requested"]), doc["LastModified"])
            try:
                config.version = self._registry.get(config.function_name, config.qualifier).version
            except ResourceNotFound:
                continue
            self._configs[config.qualified_name] = config
            self._allocate(config)

    # -- API ----------------------------------------------------------------------------------------------

    async def put(self, name_or_arn: str, qualifier: str, count: int) -> dict[str, Any]:
        version = self._version(name_or_arn, qualifier)
        alias = self._alias(version.name, qualifier)
        if alias is not None and alias.weights:
            raise InvalidParameterValue("Alias with weights can not be used with Provisioned Concurrency")
        key = f"{version.name}:{qualifier}"
        for other in self._configs.values():
            if other.target == version.qualified_name and other.qualified_name != key:
                raise ResourceConflict(
                    f"Provisioned Concurrency Config already exists for version {version.version} of function "
                    f"{version.name} (through {other.qualifier}); a version takes one configuration"
                )
        others = sum(
            c.requested for c in self._configs.values() if c.function_name == version.name and c.qualified_name != key
        )
        reserved = self._leases.reserved(version.name)
        if reserved is not None:
            if others + count > reserved:
                raise InvalidParameterValue(
                    f"Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution "
                    f"for function {version.name}: {reserved}"
                )
        else:
            unreserved_pc = sum(
                c.requested
                for c in self._configs.values()
                if self._leases.reserved(c.function_name) is None and c.qualified_name != key
            )
            if self._leases.unreserved_limit - unreserved_pc - count < self._leases.min_unreserved:
                raise InvalidParameterValue(
                    "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
                    f"below its minimum value of [{self._leases.min_unreserved}]."
                )
        config = self._configs.get(key)
        if config is not None and config.task is not None:
            config.task.cancel()
        config = _Config(version.name, qualifier, count, now_lastmodified(), version.version)
        await self._store.put_provisioned(version.name, qualifier, config.record())
        self._configs[key] = config
        self._allocate(config)
        return self._doc(config)

    def get(self, name_or_arn: str, qualifier: str) -> dict[str, Any]:
        return self._doc(self._config(name_or_arn, qualifier))

    async def delete(self, name_or_arn: str, qualifier: str) -> None:
        config = self._config(name_or_arn, qualifier)
        await self._store.delete_provisioned(config.function_name, config.qualifier)
        self.forget(config.qualified_name)

    def page(
        self, name_or_arn: str, marker: str | None, max_items: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        fn = self._registry.latest(name_or_arn)
        configs = sorted((c for c in self._configs.values() if c.function_name == fn.name), key=lambda c: c.qualifier)
        start = 0
        if marker:
            try:
                after = base64.urlsafe_b64decode(marker.encode()).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidParameterValue("Invalid marker") from None
            start = next((i for i, c in enumerate(configs) if c.qualifier > after), len(configs))
        limit = max_items or 50
        chosen = configs[start : start + limit]
        next_marker = None
        if start + limit < len(configs) and chosen:
            next_marker = base64.urlsafe_b64encode(chosen[-1].qualifier.encode()).decode()
        return [self._doc(c, with_arn=True) for c in chosen], next_marker

    def totals(self) -> dict[str, int]:
        """Provisioned concurrency requested per function name (all its versions and aliases together)."""
        out: dict[str, int] = {}
        for config in self._configs.values():
            out[config.function_name] = out.get(config.function_name, 0) + config.requested
        return out

    def forget(self, qualified_name: str) -> None:
        """The configuration (and so its environments) is gone: deleted, or its version or function was."""
        config = self._configs.pop(qualified_name, None)
        if config is None:
            return
        if config.task is not None:
            config.task.cancel()
        self._pool.unprovision(config.target)

    def alias_changed(self, function_name: str, alias_name: str) -> None:
        """An alias moved to another version or went away: its configuration follows it or goes too."""
        config = self._configs.get(f"{function_name}:{alias_name}")
        if config is None:
            return
        alias = self._alias(function_name, alias_name)
        if alias is None:
            self.forget(config.qualified_name)
            return
        if alias.function_version != config.version:
            if config.task is not None:
                config.task.cancel()
            self._pool.unprovision(config.target)
            config.version, config.status, config.reason = alias.function_version, "IN_PROGRESS", None
            self._allocate(config)

    async def close(self) -> None:
        tasks = [c.task for c in self._configs.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- allocation ---------------------------------------------------------------------------------------

    def _allocate(self, config: _Config) -> None:
        async def run() -> None:
            try:
                version = self._registry.get(config.function_name, config.version)
                await self._pool.provision(version, config.requested)
            except ProvisioningFailed as exc:
                config.status, config.reason = "FAILED", exc.reason
            except TooManyRequests:
                config.status = "FAILED"
                config.reason = "There is not enough room on this server for the requested environments."
            except OSError as exc:
                config.status, config.reason = "FAILED", f"FUNCTION_ERROR_INIT_FAILURE: {exc}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not leave the configuration IN_PROGRESS forever
                log.exception("allocating provisioned concurrency for %s", config.qualified_name)
                config.status, config.reason = "FAILED", f"Internal error: {type(exc).__name__}"
            else:
                config.status, config.reason = "READY", None

        config.task = asyncio.get_running_loop().create_task(run())

    # -- helpers ------------------------------------------------------------------------------------------

    def _version(self, name_or_arn: str, qualifier: str) -> Function:
        name, _qualifier = self._registry.resolve(name_or_arn, qualifier)  # a mismatch with the ARN's: refused
        version = self._registry.get(name, qualifier)
        if version.version == "$LATEST":  # $LATEST itself, or an alias pointing to it
            raise InvalidParameterValue(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
            )
        return version

    def _alias(self, function_name: str, qualifier: str) -> Alias | None:
        try:
            return self._registry.alias(function_name, qualifier)
        except ResourceNotFound:
            return None

    def _config(self, name_or_arn: str, qualifier: str) -> _Config:
        version = self._version(name_or_arn, qualifier)
        config = self._configs.get(f"{version.name}:{qualifier}")
        if config is None:
            raise ProvisionedConcurrencyConfigNotFound("No Provisioned Concurrency Config found for this function")
        return config

    def _doc(self, config: _Config, with_arn: bool = False) -> dict[str, Any]:
        ready = self._pool.provisioned_ready(config.target)
        doc: dict[str, Any] = {
            "RequestedProvisionedConcurrentExecutions": config.requested,
            "AvailableProvisionedConcurrentExecutions": min(ready, config.requested),
            "AllocatedProvisionedConcurrentExecutions": min(ready, config.requested),
            "Status": config.status,
            "LastModified": config.last_modified,
        }
        if config.reason is not None:
            doc["StatusReason"] = config.reason
        if with_arn:
            doc = {"FunctionArn": f"{self._registry.arn(config.function_name)}:{config.qualifier}", **doc}
        return doc
