"""EventBridge rules: the rules of the ``events`` API on the default event bus (the firing is
``events.rules``'s).

A rule (``Rules``) is a name on the bus ``default`` (the only bus; another is ResourceNotFoundException), with
a ScheduleExpression (``rate()`` or ``cron()`` as EventBridge rules take them: UTC, no ``at()``, no time zone)
and/or an EventPattern (AWS's pattern syntax, ``events.filtering``; matched by PutEvents), a State (ENABLED by
default), a Description, a RoleArn and tags, and up to ``MAX_TARGETS`` targets: Lambda functions (function,
version or alias ARNs) and queues of the built-in queue service, each with its Input, InputPath or
InputTransformer, SqsParameters (MessageGroupId, required for a FIFO queue), RetryPolicy and DeadLetterConfig
(a standard queue). A bus holds at most ``MAX_RULES`` rules (AWS's default quota); more is
LimitExceededException.

A scheduled rule's next run is kept in the store (``next_due``): a rate counts from the rule's creation (its
first run one period after it, as on AWS), a cron is read in UTC. Changes to one rule are serialised here
(one lock), so that PutTargets' read-modify-write never loses a concurrent change of the same rule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selfless import arns, json_limits
from selfless.errors import ResourceNotFound, SelflessError, ValidationError
from selfless.events import filtering
from selfless.services.eventbridge.store import Rule, RuleStore
from selfless.services.scheduler import expressions

DEFAULT_BUS = "default"
MAX_RULES = 300  # rules per event bus (AWS's default quota)
MAX_TARGETS = 5  # targets per rule (AWS's limit)
MAX_TAGS = 50  # tags per rule (AWS's limit)
_TOO_MANY = "The requested resource exceeds the maximum number allowed."
# The members of PutRule kept as given.
_KEPT = ("ScheduleExpression", "EventPattern", "State", "Description", "RoleArn")
_INPUTS = ("Input", "InputPath", "InputTransformer")


class LimitExceeded(SelflessError):
    aws_type = "LimitExceededException"


class InvalidEventPattern(SelflessError):
    aws_type = "InvalidEventPatternException"


def schedule_of(expression: str) -> expressions.Expression:
    """A rule's ScheduleExpression read (rate or cron; at() is Scheduler's only), or ValidationError."""
    try:
        parsed = expressions.parse(expression)
    except expressions.InvalidExpression:
        parsed = None
    if parsed is None or isinstance(parsed, expressions.At):
        raise ValidationError("Parameter ScheduleExpression is not valid.")
    return parsed


def next_due(doc: Mapping[str, Any], created: float, after: float) -> float | None:
    """When a rule runs next strictly after ``after`` (epoch seconds): None for a disabled rule or one with no
    ScheduleExpression. A rate counts from ``created``, whose own instant is not a run."""
    expression = doc.get("ScheduleExpression")
    if not expression or doc.get("State", "ENABLED") == "DISABLED":
        return None
    anchor = dt.datetime.fromtimestamp(created, dt.UTC)
    timing = expressions.Timing(schedule_of(expression), expressions.zone("UTC"), anchor)
    when = timing.next_run(dt.datetime.fromtimestamp(max(after, created), dt.UTC))
    return None if when is None else when.timestamp()


def json_path(path: str) -> list[str | int]:
    """An InputPath / InputPathsMap path (``$``, ``$.detail.items[0].id``) as keys and indexes, or
    ValidationError."""
    if not path.startswith("$"):
        raise ValidationError(f"The InputPath {path} is not a valid JSON path.")
    steps: list[str | int] = []
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|(.)", path[1:]):
        key, index, junk = part
        if junk:
            raise ValidationError(f"The InputPath {path} is not a valid JSON path.")
        steps.append(int(index) if index else key)
    return steps


class Rules:
    """PutRule ... ListTargetsByRule (the API's rules); ``on_change`` wakes the firing loop."""

    def __init__(self, store: RuleStore, account_id: str, region: str, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._account_id = account_id
        self._region = region
        self._clock = clock
        self._lock = asyncio.Lock()
        self.on_change: Callable[[], None] = lambda: None

    def arn(self, name: str) -> str:
        return f"arn:aws:events:{self._region}:{self._account_id}:rule/{name}"

    def bus_arn(self) -> str:
        return f"arn:aws:events:{self._region}:{self._account_id}:event-bus/{DEFAULT_BUS}"

    def _bus(self, params: Mapping[str, Any]) -> str:
        bus = str(params.get("EventBusName") or DEFAULT_BUS)
        if bus not in (DEFAULT_BUS, self.bus_arn()):
            raise ResourceNotFound(f"Event bus {bus} does not exist.")
        return DEFAULT_BUS

    async def _rule(self, bus: str, name: str) -> Rule:
        rule = await self._store.get(bus, name)
        if rule is None:
            raise ResourceNotFound(f"Rule {name} does not exist on EventBus {bus}.")
        return rule

    def _shown(self, rule: Rule) -> dict[str, Any]:
        return {
            "Name": rule.name,
            "Arn": self.arn(rule.name),
            **{k: rule.doc[k] for k in _KEPT if k in rule.doc},
            "EventBusName": rule.bus,
        }

    # -- rules ----------------------------------------------------------------------------------------------

    async def put_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus, name = self._bus(params), str(params["Name"])
        doc = {k: params[k] for k in _KEPT if params.get(k) is not None}
        doc.setdefault("State", "ENABLED")
        if "ScheduleExpression" not in doc and "EventPattern" not in doc:
            raise ValidationError("Parameter(s) EventPattern or ScheduleExpression must be specified.")
        if "ScheduleExpression" in doc:
            schedule_of(doc["ScheduleExpression"])
        if "EventPattern" in doc:
            try:
                filtering.compile_pattern(doc["EventPattern"])
            except filtering.InvalidPattern as exc:
                raise InvalidEventPattern(f"Event pattern is not valid. Reason: {exc}") from None
        tags = _tags(params.get("Tags") or [])
        async with self._lock:
            now = self._clock()
            old = await self._store.get(bus, name)
            created = now if old is None else old.created
            rule = Rule(bus, name, created, doc, tags=tags, next_due=next_due(doc, created, now))
            if not await self._store.put(rule, MAX_RULES):
                raise LimitExceeded(_TOO_MANY)
            if old is not None and tags:
                await self._store.set_tags(bus, name, _tags(params.get("Tags") or [], old.tags))
        self.on_change()
        return {"RuleArn": self.arn(name)}

    async def describe_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rule = await self._rule(self._bus(params), str(params["Name"]))
        return {**self._shown(rule), "CreatedBy": self._account_id}

    async def delete_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus, name = self._bus(params), str(params["Name"])
        async with self._lock:
            deleted = await self._store.delete(bus, name, bool(params.get("Force")))
        if deleted is False:
            raise ValidationError("Rule can't be deleted since it has targets.")
        # AWS: deleting a rule that does not exist succeeds.
        self.on_change()
        return {}

    async def _set_state(self, params: Mapping[str, Any], state: str) -> dict[str, Any]:
        bus, name = self._bus(params), str(params["Name"])
        async with self._lock:
            rule = await self._rule(bus, name)
            doc = {**rule.doc, "State": state}
            await self._store.put(rule.replace(doc=doc, next_due=next_due(doc, rule.created, self._clock())), MAX_RULES)
        self.on_change()
        return {}

    async def enable_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._set_state(params, "ENABLED")

    async def disable_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self._set_state(params, "DISABLED")

    async def list_rules(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus = self._bus(params)
        limit = int(params.get("Limit") or 100)
        prefix = str(params.get("NamePrefix") or "")
        found = await self._store.list_rules(bus, prefix, params.get("NextToken"), limit + 1)
        out: dict[str, Any] = {"Rules": [self._shown(r) for r in found[:limit]]}
        if len(found) > limit:
            out["NextToken"] = found[limit - 1].name
        return out

    # -- targets --------------------------------------------------------------------------------------------

    async def put_targets(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus, name = self._bus(params), str(params["Rule"])
        given: Sequence[Mapping[str, Any]] = params["Targets"]
        accepted: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        for target in given:
            why = _refusal(target)
            if why is None:
                accepted.append({k: v for k, v in target.items() if v is not None})
            else:
                failed.append({"TargetId": str(target["Id"]), "ErrorCode": "ValidationException", "ErrorMessage": why})
        async with self._lock:
            rule = await self._rule(bus, name)
            targets = {str(t["Id"]): dict(t) for t in rule.targets}
            targets.update({str(t["Id"]): t for t in accepted})
            if len(targets) > MAX_TARGETS:
                raise LimitExceeded(_TOO_MANY)
            await self._store.set_targets(bus, name, [targets[k] for k in sorted(targets)])
        return {"FailedEntryCount": len(failed), "FailedEntries": failed}

    async def remove_targets(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus, name = self._bus(params), str(params["Rule"])
        ids = {str(i) for i in params["Ids"]}
        async with self._lock:
            rule = await self._rule(bus, name)
            await self._store.set_targets(bus, name, [t for t in rule.targets if str(t["Id"]) not in ids])
        return {"FailedEntryCount": 0, "FailedEntries": []}

    async def list_targets_by_rule(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rule = await self._rule(self._bus(params), str(params["Rule"]))
        limit = int(params.get("Limit") or 100)
        after = str(params.get("NextToken") or "")
        found = [dict(t) for t in rule.targets if str(t["Id"]) > after]
        out: dict[str, Any] = {"Targets": found[:limit]}
        if len(found) > limit:
            out["NextToken"] = str(found[limit - 1]["Id"])
        return out

    async def list_rule_names_by_target(self, params: Mapping[str, Any]) -> dict[str, Any]:
        bus = self._bus(params)
        arn = str(params["TargetArn"])
        limit = int(params.get("Limit") or 100)
        rules = await self._store.list_rules(bus, "", params.get("NextToken"), MAX_RULES)
        found = [r.name for r in rules if any(t.get("Arn") == arn for t in r.targets)]
        out: dict[str, Any] = {"RuleNames": found[:limit]}
        if len(found) > limit:
            out["NextToken"] = found[limit - 1]
        return out

    # -- tags -----------------------------------------------------------------------------------------------

    def _name_of(self, arn: str) -> str:
        prefix = self.arn("")
        if not arn.startswith(prefix) or "/" in arn[len(prefix) :]:
            raise ResourceNotFound(f"Rule {arn.rpartition('/')[2]} does not exist on EventBus {DEFAULT_BUS}.")
        return arn[len(prefix) :]

    async def tag_resource(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name_of(str(params["ResourceARN"]))
        async with self._lock:
            rule = await self._rule(DEFAULT_BUS, name)
            await self._store.set_tags(DEFAULT_BUS, name, _tags(params["Tags"], rule.tags))
        return {}

    async def untag_resource(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = self._name_of(str(params["ResourceARN"]))
        keys = {str(k) for k in params["TagKeys"]}
        async with self._lock:
            rule = await self._rule(DEFAULT_BUS, name)
            await self._store.set_tags(DEFAULT_BUS, name, {k: v for k, v in rule.tags.items() if k not in keys})
        return {}

    async def list_tags_for_resource(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rule = await self._rule(DEFAULT_BUS, self._name_of(str(params["ResourceARN"])))
        return {"Tags": [{"Key": k, "Value": v} for k, v in rule.tags.items()]}

    # -- the bus --------------------------------------------------------------------------------------------

    async def describe_event_bus(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self._bus({"EventBusName": params.get("Name")})
        return {"Name": DEFAULT_BUS, "Arn": self.bus_arn()}

    async def list_event_buses(self, params: Mapping[str, Any]) -> dict[str, Any]:
        shown = DEFAULT_BUS.startswith(str(params.get("NamePrefix") or "")) and not params.get("NextToken")
        return {"EventBuses": [{"Name": DEFAULT_BUS, "Arn": self.bus_arn()}] if shown else []}


def _refusal(target: Mapping[str, Any]) -> str | None:
    """Why PutTargets does not take ``target`` (its FailedEntries' message), None when it does."""
    arn = str(target["Arn"])
    queue, topic = arns.queue_of(arn), arns.topic_of(arn)
    if arns.function_of(arn) is None and queue is None and topic is None:
        return (
            f"Target {arn} is not supported: selfless's rules invoke Lambda functions and send to SQS queues and "
            "SNS topics."
        )
    if topic is not None and topic[2].endswith(".fifo"):
        return f"Target {arn} is not supported: selfless's rules send to standard topics."
    if sum(target.get(k) is not None for k in _INPUTS) > 1:
        return "Only one of Input, InputPath, or InputTransformer must be provided."
    if target.get("Input") is not None:
        try:
            json_limits.loads(str(target["Input"]))
        except ValueError:
            return f"Input of target {target['Id']} is not valid JSON text."
    try:
        if target.get("InputPath") is not None:
            json_path(str(target["InputPath"]))
        transformer = target.get("InputTransformer")
        if transformer is not None:
            for path in (transformer.get("InputPathsMap") or {}).values():
                json_path(str(path))
    except ValidationError as exc:
        return exc.message
    sqs = target.get("SqsParameters")
    if sqs is not None and queue is None:
        return f"SqsParameters is not supported for target {arn}."
    if queue is not None and queue[2].endswith(".fifo") and not (sqs or {}).get("MessageGroupId"):
        return f"Parameter(s) SqsParameters must be specified for target: {target['Id']}."
    dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
    if dead_letter is not None:
        found = arns.queue_of(str(dead_letter))
        if found is None or found[2].endswith(".fifo"):
            return f"Parameter DeadLetterConfig.Arn {dead_letter} is not a standard SQS queue ARN."
    return None


def _tags(given: Sequence[Mapping[str, Any]], kept: Mapping[str, str] | None = None) -> dict[str, str]:
    """``kept`` with the ``given`` tags on top; LimitExceeded past ``MAX_TAGS``."""
    tags = {**(kept or {}), **{str(tag["Key"]): str(tag["Value"]) for tag in given}}
    if len(tags) > MAX_TAGS:
        raise LimitExceeded(f"A rule can have at most {MAX_TAGS} tags.")
    return tags
