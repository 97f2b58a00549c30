"""The metadata store protocol: the system of record for functions and accepted asynchronous events.

The embedded default is SQLite (``sqlite.py``); a PostgreSQL implementation for clusters fits the same
protocol. Every method is a coroutine and every write is durable when it returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from selfless.models import Alias, Function, LayerVersion


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """An accepted Event invocation, durable until it has run."""

    id: str
    function_name: str
    qualifier: str | None
    payload: bytes
    client_context: str | None
    accepted_at: float
    attempts: int = 0


class MetadataStore(Protocol):
    async def list_functions(self) -> list[Function]: ...

    async def put_function(self, function: Function) -> None: ...

    async def delete_function(self, name: str) -> None:
        """The function with its versions, aliases, provisioned concurrency configurations and policies."""

    async def list_versions(self) -> list[Function]: ...

    async def publish_version(self, latest: Function, version: Function) -> None: ...

    async def delete_version(self, name: str, version: str) -> None:
        """The version with its provisioned concurrency configuration and its policy."""

    async def list_aliases(self) -> list[Alias]: ...

    async def put_alias(self, alias: Alias) -> None: ...

    async def delete_alias(self, name: str, alias: str) -> None:
        """The alias with its provisioned concurrency configuration and its policy."""

    async def list_provisioned(self) -> list[dict[str, Any]]: ...

    async def put_provisioned(self, name: str, qualifier: str, doc: dict[str, Any]) -> None: ...

    async def delete_provisioned(self, name: str, qualifier: str) -> None: ...

    async def list_layers(self) -> tuple[list[LayerVersion], dict[str, int]]:
        """Every layer version, and each layer name's highest version number ever published."""

    async def put_layer(self, layer: LayerVersion) -> None: ...

    async def delete_layer(self, name: str, version: int, policy_resource: str) -> None: ...

    async def list_policies(self) -> dict[str, str]:
        """Resource policies (function, function version or alias, layer version) by resource key."""

    async def put_policy(self, resource: str, doc: str | None) -> None: ...

    async def add_event(self, event: StoredEvent) -> None: ...

    async def delete_event(self, event_id: str) -> None: ...

    async def list_events(self) -> list[StoredEvent]: ...

    async def close(self) -> None: ...
