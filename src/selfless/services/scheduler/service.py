"""Schedules: the rules of EventBridge Scheduler's API (the firing is ``events.schedules``'s).

What a schedule is (``Schedules``): a name in a group (``default``, or one made with CreateScheduleGroup), an
expression (``expressions``), an optional IANA time zone (UTC by default), StartDate/EndDate, State, a target
with its Input (a Lambda function, version or alias; or an SQS queue, with SqsParameters.MessageGroupId
required for a FIFO queue), its RetryPolicy and DeadLetterConfig (a standard queue), a FlexibleTimeWindow
(OFF; FLEXIBLE is accepted and runs at the window's start) and ActionAfterCompletion (DELETE removes a schedule
once it has made its last run). Each schedule keeps its next due time (``next_due``) in the store, computed here
on every change. Whether a target exists is not checked here, as AWS does not (its role decides, when it runs):
a run whose target is missing goes to the dead-letter queue.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

from selfless import arns
from selfless.errors import ResourceNotFound, SelflessError, ValidationError
from selfless.services.scheduler import expressions
from selfless.services.scheduler.store import Group, Schedule, ScheduleStore

DEFAULT_GROUP = "default"
_JUST_BEFORE_S = 0.001
# ListScheduleGroups' NextToken after the (unstored) default group: every stored group comes next. Not a
# valid group name, so never confused with one.
_AFTER_DEFAULT = "*default"
_TOKEN = "_ClientToken"  # kept in a schedule's document (never shown): CreateSchedule's idempotency token
# The members of CreateSchedule/UpdateSchedule kept as given.
_KEPT = (
    "ScheduleExpression",
    "StartDate",
    "EndDate",
    "Description",
    "ScheduleExpressionTimezone",
    "State",
    "KmsKeyArn",
    "Target",
    "FlexibleTimeWindow",
    "ActionAfterCompletion",
)


class Conflict(SelflessError):
    aws_type = "ConflictException"


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
    raise ValidationError(f"Invalid timestamp: {value}")


def _instant(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def timing(doc: Mapping[str, Any], created: float) -> expressions.Timing:
    """A schedule's expression, zone, StartDate/EndDate and rate anchor (StartDate, else its creation)."""
    start, end = doc.get("StartDate"), doc.get("EndDate")
    return expressions.Timing(
        expressions.parse(doc["ScheduleExpression"]),
        expressions.zone(doc.get("ScheduleExpressionTimezone") or "UTC"),
        _instant(start if start is not None else created),
        None if start is None else _instant(start),
        None if end is None else _instant(end),
    )


def next_due(doc: Mapping[str, Any], created: float, after: float) -> float | None:
    """When a schedule runs next after ``after`` (epoch seconds), None if never (disabled, past its EndDate,
    an at() already passed)."""
    if doc.get("State", "ENABLED") == "DISABLED":
        return None
    when = timing(doc, created).next_run(_instant(after))
    return None if when is None else when.timestamp()


def target_function(arn: str) -> tuple[str, str | None] | None:
    return arns.function_of(arn)


def _check_target(target: Mapping[str, Any]) -> None:
    """A target selfless can run: a Lambda function, an SQS queue or a standard SNS topic, with the parameters
    that kind takes."""
    arn = str(target["Arn"])
    queue, topic = arns.queue_of(arn), arns.topic_of(arn)
    if arns.function_of(arn) is None and queue is None and topic is None:
        raise ValidationError(
            f"Target Arn {arn} is not supported: selfless's scheduler runs Lambda functions and sends to SQS queues "
            "and SNS topics."
        )
    if topic is not None and topic[2].endswith(".fifo"):
        raise ValidationError(f"Target Arn {arn} is not supported: selfless's scheduler sends to standard topics.")
    for key in ("EcsParameters", "EventBridgeParameters", "KinesisParameters", "SageMakerPipelineParameters"):
        if target.get(key) is not None:
            raise ValidationError(f"{key} is not supported for target {arn}.")
    sqs = target.get("SqsParameters")
    if sqs is not None and queue is None:
        raise ValidationError(f"SqsParameters is not supported for target {arn}.")
    if queue is not None and queue[2].endswith(".fifo") and not (sqs or {}).get("MessageGroupId"):
        raise ValidationError("MessageGroupId is required for FIFO queue targets. Provide it in SqsParameters.")
    if queue is not None and not queue[2].endswith(".fifo") and (sqs or {}).get("MessageGroupId"):
        raise ValidationError("MessageGroupId is only supported for FIFO queue targets.")
    dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
    if dead_letter is not None:
        found = arns.queue_of(str(dead_letter))
        if found is None or found[2].endswith(".fifo"):
            raise ValidationError(f"DeadLetterConfig Arn {dead_letter} is not a standard SQS queue ARN.")


class Schedules:
    """Create, read, update, delete and list schedules (the API's rules; the firing is ``Scheduler``'s)."""

    def __init__(
        self, store: ScheduleStore, account_id: str, region: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._account_id = account_id
        self._region = region
        self._clock = clock
        self.on_change: Callable[[], None] = lambda: None

    def arn(self, group: str, name: str) -> str:
        return f"arn:aws:scheduler:{self._region}:{self._account_id}:schedule/{group}/{name}"

    def group_arn(self, name: str) -> str:
        return f"arn:aws:scheduler:{self._region}:{self._account_id}:schedule-group/{name}"

    async def _group(self, params: Mapping[str, Any]) -> str:
        """The schedule's group (``default`` when none is named); ResourceNotFound when it does not exist."""
        group = str(params.get("GroupName") or DEFAULT_GROUP)
        if group != DEFAULT_GROUP and await self._store.get_group(group) is None:
            raise ResourceNotFound(f"Schedule group {group} does not exist.")
        return group

    def _doc(self, params: Mapping[str, Any]) -> dict[str, Any]:
        doc = {k: params[k] for k in _KEPT if params.get(k) is not None}
        for key in ("StartDate", "EndDate"):
            if key in doc:
                doc[key] = _epoch(doc[key])
        doc.setdefault("State", "ENABLED")
        doc.setdefault("ActionAfterCompletion", "NONE")
        try:
            expr = expressions.parse(doc["ScheduleExpression"])
            if "ScheduleExpressionTimezone" in doc:
                expressions.zone(doc["ScheduleExpressionTimezone"])
        except expressions.InvalidExpression as exc:
            raise ValidationError(str(exc)) from None
        start, end = doc.get("StartDate"), doc.get("EndDate")
        if start is not None and end is not None and end <= start:
            raise ValidationError("The EndDate must be after the StartDate.")
        if end is not None and end <= self._clock() and not isinstance(expr, expressions.At):
            raise ValidationError("The EndDate must be in the future.")
        window = doc["FlexibleTimeWindow"]
        if window.get("Mode") == "FLEXIBLE" and window.get("MaximumWindowInMinutes") is None:
            raise ValidationError("MaximumWindowInMinutes must be provided when Mode is FLEXIBLE.")
        if window.get("Mode") == "OFF" and window.get("MaximumWindowInMinutes") is not None:
            raise ValidationError("MaximumWindowInMinutes must not be provided when Mode is OFF.")
        _check_target(doc["Target"])
        return doc

    async def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group, name = await self._group(params), params["Name"]
        doc = self._doc(params)
        now = self._clock()
        # From just before now: a rate schedule without a StartDate makes its first run at once, as on AWS.
        token = params.get("ClientToken")
        kept = {**doc, _TOKEN: token} if token else doc
        schedule = Schedule(group, name, now, now, kept, next_due(doc, now, now - _JUST_BEFORE_S))
        if not await self._store.create(schedule):
            existing = await self._store.get(group, name)
            # The same request again (an SDK retrying one whose answer was lost): the schedule it made.
            if token and existing is not None and existing.doc.get(_TOKEN) == token:
                return {"ScheduleArn": self.arn(group, name)}
            raise Conflict(f"Schedule {name} already exists.")
        self.on_change()
        return {"ScheduleArn": self.arn(group, name)}

    async def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group, name = await self._group(params), params["Name"]
        doc = self._doc(params)
        old = await self._store.get(group, name)
        if old is None:
            raise ResourceNotFound(f"Schedule {name} does not exist.")
        now = self._clock()
        due = next_due(doc, old.created, now - _JUST_BEFORE_S)
        if not await self._store.update(old.replace(modified=now, doc=doc, next_due=due)):
            raise ResourceNotFound(f"Schedule {name} does not exist.")
        self.on_change()
        return {"ScheduleArn": self.arn(group, name)}

    async def get(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group, name = await self._group(params), params["Name"]
        schedule = await self._store.get(group, name)
        if schedule is None:
            raise ResourceNotFound(f"Schedule {name} does not exist.")
        return {
            "Arn": self.arn(group, name),
            "GroupName": group,
            "Name": name,
            "CreationDate": schedule.created,
            "LastModificationDate": schedule.modified,
            **{k: v for k, v in schedule.doc.items() if k != _TOKEN},
        }

    async def delete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group, name = await self._group(params), params["Name"]
        if not await self._store.delete(group, name):
            raise ResourceNotFound(f"Schedule {name} does not exist.")
        self.on_change()
        return {}

    async def list_all(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group = params.get("GroupName")
        if group is not None:
            await self._group(params)
        limit = int(params.get("MaxResults") or 100)
        token = params.get("NextToken")
        after: tuple[str, str] | None = None
        if token:
            grp, sep, name = str(token).partition("/")
            if not sep:
                raise ValidationError("Invalid NextToken.")
            after = (grp, name)
        state = params.get("State")
        found: list[Schedule] = []
        # A State filter is applied after reading: page on until the page is full or the schedules end.
        while len(found) < limit:
            page = await self._store.list_schedules(group, params.get("NamePrefix") or "", after, limit)
            found += [s for s in page if state is None or s.doc.get("State") == state]
            if len(page) < limit:
                after = None
                break
            after = (page[-1].group, page[-1].name)
        out: dict[str, Any] = {
            "Schedules": [
                {
                    "Arn": self.arn(s.group, s.name),
                    "Name": s.name,
                    "GroupName": s.group,
                    "State": s.doc.get("State", "ENABLED"),
                    "CreationDate": s.created,
                    "LastModificationDate": s.modified,
                    "Target": {"Arn": s.doc["Target"]["Arn"]},
                }
                for s in found[:limit]
            ]
        }
        if len(found) > limit:
            last = found[limit - 1]
            out["NextToken"] = f"{last.group}/{last.name}"
        elif after is not None:
            out["NextToken"] = f"{after[0]}/{after[1]}"
        return out

    # -- schedule groups ------------------------------------------------------------------------------------

    def _group_doc(self, group: Group) -> dict[str, Any]:
        return {
            "Arn": self.group_arn(group.name),
            "Name": group.name,
            "State": "ACTIVE",
            "CreationDate": group.created,
            "LastModificationDate": group.modified,
        }

    async def _stored_group(self, name: str) -> Group:
        if name == DEFAULT_GROUP:
            return Group(DEFAULT_GROUP, 0.0, 0.0)
        group = await self._store.get_group(name)
        if group is None:
            raise ResourceNotFound(f"Schedule group {name} does not exist.")
        return group

    async def create_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        now = self._clock()
        tags = _tags(params.get("Tags") or [])
        if name == DEFAULT_GROUP or not await self._store.create_group(Group(name, now, now, tags)):
            raise Conflict(f"Schedule group {name} already exists.")
        return {"ScheduleGroupArn": self.group_arn(name)}

    async def get_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._group_doc(await self._stored_group(params["Name"]))

    async def delete_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        if name == DEFAULT_GROUP:
            raise ValidationError("The default schedule group cannot be deleted.")
        if not await self._store.delete_group(name):
            raise ResourceNotFound(f"Schedule group {name} does not exist.")
        self.on_change()
        return {}

    async def list_groups(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``default`` group first (when the prefix allows), then the others by name."""
        prefix = str(params.get("NamePrefix") or "")
        limit = int(params.get("MaxResults") or 100)
        token = params.get("NextToken")
        found: list[Group] = []
        if not token and DEFAULT_GROUP.startswith(prefix):
            found.append(await self._stored_group(DEFAULT_GROUP))
        after = None if not token or token == _AFTER_DEFAULT else str(token)
        found += await self._store.list_groups(prefix, after, limit + 1)
        out: dict[str, Any] = {"ScheduleGroups": [self._group_doc(g) for g in found[:limit]]}
        if len(found) > limit:
            last = found[limit - 1].name
            out["NextToken"] = _AFTER_DEFAULT if last == DEFAULT_GROUP else last
        return out

    def _group_of_arn(self, arn: str) -> str:
        prefix = self.group_arn("")
        if not arn.startswith(prefix):
            raise ResourceNotFound(f"Schedule group {arn} does not exist.")
        return arn[len(prefix) :]

    async def tag(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group = await self._stored_group(self._group_of_arn(params["ResourceArn"]))
        if group.name == DEFAULT_GROUP:
            raise ValidationError("The default schedule group cannot be tagged.")
        tags = {**group.tags, **_tags(params.get("Tags") or [])}
        await self._store.set_group_tags(group.name, tags, self._clock())
        return {}

    async def untag(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group = await self._stored_group(self._group_of_arn(params["ResourceArn"]))
        keys = set(params.get("TagKeys") or [])
        if group.name != DEFAULT_GROUP:
            kept = {k: v for k, v in group.tags.items() if k not in keys}
            await self._store.set_group_tags(group.name, kept, self._clock())
        return {}

    async def list_tags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group = await self._stored_group(self._group_of_arn(params["ResourceArn"]))
        return {"Tags": [{"Key": k, "Value": v} for k, v in group.tags.items()]}


def _tags(given: list[Mapping[str, Any]]) -> dict[str, str]:
    return {str(tag["Key"]): str(tag["Value"]) for tag in given}
