"""The scheduler's state behind ``ScheduleStore`` (SQLite today, in the server's database; PostgreSQL for the
cluster mode must pass the same contract, ``tests/unit/test_scheduler_store_contract.py``).

A schedule carries ``next_due``: the epoch time of its next run (None: it runs no more, or is disabled).
``fire`` commits a run's events together with the schedule's new ``next_due`` (or its deletion, for an at()
schedule with ActionAfterCompletion DELETE), so a restart neither loses nor repeats a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.store.base import StoredEvent


@dataclasses.dataclass(frozen=True)
class Schedule:
    group: str
    name: str
    created: float
    modified: float
    # The schedule as the API shows it (ScheduleExpression, Target, State, StartDate as epoch seconds, ...),
    # without Arn, Name, GroupName, CreationDate, LastModificationDate.
    doc: Mapping[str, Any]
    next_due: float | None = None

    def replace(self, **changes: Any) -> Schedule:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Group:
    """A schedule group other than ``default`` (which always exists and is not stored)."""

    name: str
    created: float
    modified: float
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


class ScheduleStore(Protocol):
    async def open(self) -> None: ...

    async def create_group(self, group: Group) -> bool:
        """False when a group of that name exists (nothing written)."""
        ...

    async def get_group(self, name: str) -> Group | None: ...

    async def delete_group(self, name: str) -> bool:
        """The group and every schedule in it, in one transaction; False when there is no such group."""
        ...

    async def list_groups(self, prefix: str, after: str | None, limit: int) -> list[Group]: ...

    async def set_group_tags(self, name: str, tags: Mapping[str, str], modified: float) -> bool: ...

    async def create(self, schedule: Schedule) -> bool:
        """False when the group already has a schedule of that name (nothing written)."""
        ...

    async def get(self, group: str, name: str) -> Schedule | None: ...

    async def update(self, schedule: Schedule) -> bool:
        """False when there is no such schedule."""
        ...

    async def delete(self, group: str, name: str) -> bool: ...

    async def list_schedules(
        self, group: str | None, prefix: str, after: tuple[str, str] | None, limit: int
    ) -> list[Schedule]:
        """Schedules ordered by (group, name), those after ``after``; ``group`` None: every group."""
        ...

    async def due(self, now: float, limit: int) -> list[Schedule]:
        """Up to ``limit`` schedules with ``next_due <= now``, the earliest first."""
        ...

    async def earliest(self) -> float | None:
        """The earliest ``next_due`` of any schedule."""
        ...

    async def fire(self, schedule: Schedule, expected_due: float, events: Sequence[StoredEvent], delete: bool) -> bool:
        """One run, in one transaction: ``events`` stored, and the schedule's ``next_due`` set to
        ``schedule.next_due`` (or the schedule deleted), only if its stored ``next_due`` is still
        ``expected_due`` (else nothing is written and False is returned: it changed meanwhile)."""
        ...
