"""Event source mappings' state behind ``MappingStore`` (SQLite today, in the server's database; PostgreSQL for
the cluster mode must pass the same contract, ``tests/unit/test_mapping_store_contract.py``).

A mapping is stored whole, by its UUID; every write is committed (durable) when it returns, so a mapping the
API answered for survives kill -9 and its pollers start again with the server.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class EventSourceMapping:
    """One mapping: a source polled for ``function_arn`` (qualified or not), with its settings and lifecycle.
    ``state`` is one of Lambda's (Creating, Enabling, Enabled, Updating, Disabling, Disabled, Deleting)."""

    uuid: str
    function_arn: str
    event_source_arn: str
    batch_size: int
    window_s: int  # MaximumBatchingWindowInSeconds
    enabled: bool
    state: str
    reason: str  # StateTransitionReason
    last_modified: float  # epoch seconds
    last_result: str  # LastProcessingResult
    response_types: tuple[str, ...] = ()  # FunctionResponseTypes
    max_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency
    filters: tuple[str, ...] = ()  # FilterCriteria: each filter's Pattern, as given
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    queues: tuple[str, ...] = ()  # Queues (Amazon MQ: one queue name)
    access: tuple[tuple[str, str], ...] = ()  # SourceAccessConfigurations: (Type, URI) pairs, as given

    def replace(self, **changes: Any) -> EventSourceMapping:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        doc = dataclasses.asdict(self)
        doc["response_types"] = list(self.response_types)
        doc["filters"] = list(self.filters)
        doc["queues"] = list(self.queues)
        doc["access"] = [list(pair) for pair in self.access]
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EventSourceMapping:
        doc = json.loads(text)
        doc["response_types"] = tuple(doc.get("response_types") or ())
        doc["filters"] = tuple(doc.get("filters") or ())
        doc["queues"] = tuple(doc.get("queues") or ())
        doc["access"] = tuple((str(t), str(u)) for t, u in doc.get("access") or ())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


class MappingStore(Protocol):
    async def open(self) -> None: ...

    async def list_mappings(self) -> list[EventSourceMapping]:
        """Every mapping, oldest first."""
        ...

    async def put_mapping(self, mapping: EventSourceMapping) -> None:
        """Insert or replace the mapping with this UUID, committed before it returns."""
        ...

    async def delete_mapping(self, uuid: str) -> None:
        """Idempotent."""
        ...
