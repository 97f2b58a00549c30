"""EventBridge rules' state behind ``RuleStore`` (SQLite today, in the server's database; PostgreSQL for the
cluster mode must pass the same contract, ``tests/unit/test_rule_store_contract.py``).

A rule is three parts that change separately, so that no change overwrites another made meanwhile: its
attributes with ``next_due`` (PutRule, EnableRule, DisableRule; the firing loop moves ``next_due`` on), its
targets (PutTargets, RemoveTargets) and its tags. ``fire`` commits a run's events together with the rule's new
``next_due``, so a restart neither loses nor repeats a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.store.base import StoredEvent


@dataclasses.dataclass(frozen=True)
class Rule:
    bus: str
    name: str
    created: float
    # The rule as DescribeRule shows it (ScheduleExpression, EventPattern, State, Description, RoleArn), without
    # Name, Arn and EventBusName.
    doc: Mapping[str, Any]
    targets: Sequence[Mapping[str, Any]] = ()  # as PutTargets gave them, in Id order
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    next_due: float | None = None  # epoch seconds of its next scheduled run (None: none, or disabled)

    def replace(self, **changes: Any) -> Rule:
        return dataclasses.replace(self, **changes)


class RuleStore(Protocol):
    async def open(self) -> None: ...

    async def put(self, rule: Rule, max_rules: int) -> bool:
        """Create the rule, or replace an existing one's ``doc`` and ``next_due`` (its ``created``, targets and
        tags are kept; ``rule.tags`` are a new rule's tags). False when it is new and its bus already has
        ``max_rules`` rules (nothing written)."""
        ...

    async def get(self, bus: str, name: str) -> Rule | None: ...

    async def delete(self, bus: str, name: str, force: bool) -> bool | None:
        """True: deleted; None: no such rule; False: it still has targets and not ``force`` (nothing written)."""
        ...

    async def set_targets(self, bus: str, name: str, targets: Sequence[Mapping[str, Any]]) -> bool:
        """Replace the rule's targets; False when there is no such rule."""
        ...

    async def set_tags(self, bus: str, name: str, tags: Mapping[str, str]) -> bool: ...

    async def list_rules(self, bus: str, prefix: str, after: str | None, limit: int) -> list[Rule]:
        """The bus's rules ordered by name, those after ``after`` whose name starts with ``prefix``."""
        ...

    async def due(self, now: float, limit: int) -> list[Rule]:
        """Up to ``limit`` rules with ``next_due <= now``, the earliest first."""
        ...

    async def earliest(self) -> float | None: ...

    async def fire(self, rule: Rule, expected_due: float, events: Sequence[StoredEvent]) -> bool:
        """One run, in one transaction: ``events`` stored and the rule's ``next_due`` set to ``rule.next_due``,
        only if its stored ``next_due`` is still ``expected_due`` (else nothing is written: False)."""
        ...
