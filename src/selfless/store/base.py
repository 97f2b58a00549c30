"""The metadata store protocol: the system of record for functions and accepted asynchronous events.

The embedded default is SQLite (``sqlite.py``); a PostgreSQL implementation for clusters fits the same
protocol. Every method is a coroutine and every write is durable when it returns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Protocol

from selfless.models import Alias, CodeSigningConfig, Function, LayerVersion


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """An accepted Event invocation (or a delivery, see ``target``), durable until it has run to success or
    to its failure path.

    ``attempts``: runs (or delivery attempts) that ended (a throttle is not one); ``next_at``: not before
    this epoch time (a retry's delay); ``state``: "queued", or "failed" (kept for listing and re-driving)
    with ``failure`` the condition (RetriesExhausted, EventAgeExceeded, DeliveryFailed) and ``last_error``
    the last error type."""

    id: str
    function_name: str
    qualifier: str | None
    payload: bytes
    client_context: str | None
    accepted_at: float
    attempts: int = 0
    next_at: float = 0.0
    state: str = "queued"
    failure: str | None = None
    last_error: str | None = None
    # JSON {function name: runs so far} of the chain that made this event (recursive loop detection).
    lineage: str | None = None
    # A delivery rather than an invocation: send ``payload`` to this queue, topic, bus or bucket ARN (an
    # invocation record or a dead-letter message about an event of ``function_name``), with ``attributes``
    # (JSON {name: value}) the dead-letter message's attributes; and for a scheduled run (of EventBridge
    # Scheduler or a rule), the durable queue's instructions too (``invocation.destinations.encode_options``:
    # a FIFO queue's message group, the run's retry limits and dead-letter queue), for an invocation as well.
    target: str | None = None
    attributes: str | None = None
    # The X-Ray trace header the event runs with (the caller's X-Amzn-Trace-Id, or one made at acceptance).
    trace_id: str | None = None

    def replace(self, **changes: Any) -> StoredEvent:
        return dataclasses.replace(self, **changes)

    def chain(self) -> dict[str, int]:
        return dict(json.loads(self.lineage)) if self.lineage else {}


def encode_lineage(lineage: Mapping[str, int] | None) -> str | None:
    return json.dumps(dict(lineage), separators=(",", ":"), sort_keys=True) if lineage else None


class MetadataStore(Protocol):
    async def list_functions(self) -> list[Function]: ...

    async def put_function(self, function: Function) -> None: ...

    async def delete_function(self, name: str) -> None:
        """The function with its versions, aliases, provisioned concurrency configurations and policies."""

    async def list_versions(self) -> list[Function]: ...

    async def publish_version(self, latest: Function, version: Function) -> None: ...

    async def put_version(self, version: Function) -> None:
        """A published version's record again (only what may change on a version: its RevisionId)."""

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

    async def add_events(self, events: list[StoredEvent]) -> None:
        """All of them in one transaction: one commit (one fsync) for a group of accepted events."""

    async def update_event(self, event: StoredEvent) -> None:
        """Its attempts, next time, state, failure, last error and acceptance time (a re-drive's fresh age)."""

    async def settle_event(self, event: StoredEvent, then: list[StoredEvent]) -> None:
        """In one transaction: the event is done (deleted, or kept as failed when its state says so) and the
        events its outcome sends on (destination records) are accepted."""

    async def delete_event(self, event_id: str) -> None: ...

    async def list_events(self) -> list[StoredEvent]: ...

    async def list_event_invoke_configs(self) -> list[dict[str, Any]]: ...

    async def put_event_invoke_config(self, name: str, qualifier: str, doc: dict[str, Any] | None) -> None:
        """A function's (or version's, alias's) asynchronous invocation configuration; None removes it."""

    async def list_function_url_configs(self) -> list[dict[str, Any]]: ...

    async def put_function_url_config(self, name: str, qualifier: str, doc: dict[str, Any] | None) -> None:
        """A function's (``qualifier`` "") or alias's function URL configuration; None removes it. Deleting
        the function, or the alias, deletes it in the same transaction."""

    async def list_code_signing_configs(self) -> list[CodeSigningConfig]: ...

    async def put_code_signing_config(self, config: CodeSigningConfig) -> None:
        """Creates the configuration, or replaces the one with its id."""

    async def delete_code_signing_config(self, config_id: str) -> None: ...

    async def list_webhook_triggers(self) -> list[dict[str, Any]]: ...

    async def put_webhook_trigger(self, name: str, doc: dict[str, Any] | None) -> None:
        """An external object store's webhook trigger (``events.webhooks``); None removes it."""

    async def close(self) -> None: ...
