"""EventBridge rules as a push source: those with a ScheduleExpression are the ``Timetable`` that the schedules'
loop (``events.schedules.Scheduler``) fires, beside EventBridge Scheduler's schedules; those with an
EventPattern get the events PutEvents puts on the default bus (``EventBus``).

A run of a rule sends each of its targets EventBridge's Scheduled Event::

    {"version": "0", "id": ..., "detail-type": "Scheduled Event", "source": "aws.events", "account": ...,
     "time": "2026-05-01T10:05:00Z", "region": ..., "resources": [RULE_ARN], "detail": {}}

(``time`` the run's scheduled instant), or what the target makes of it: its Input (constant JSON), its
InputPath (a part of the event), or its InputTransformer (values picked by InputPathsMap put into the
InputTemplate's ``<name>`` placeholders; ``<aws.events.rule-arn>``, ``<aws.events.rule-name>`` and
``<aws.events.event>`` are predefined). A function receives it as an asynchronous invocation, a queue as a
message (with SqsParameters.MessageGroupId for a FIFO queue).

As on AWS, EventBridge needs the target's permission: the function's resource policy must let
``events.amazonaws.com`` invoke it (``aws lambda add-permission --principal events.amazonaws.com --source-arn
RULE_ARN``), the queue's Policy must let it ``sqs:SendMessage``. A run refused so (or whose target no longer
exists) goes at once to the target's DeadLetterConfig queue, with the attributes EventBridge sets (RULE_ARN,
TARGET_ARN, ERROR_CODE NO_PERMISSIONS or NO_RESOURCE, ERROR_MESSAGE, RETRY_ATTEMPTS), and is dropped (logged)
without one. A queue delivery that keeps failing is retried within the target's RetryPolicy (185 retries, 24
hours by default), then goes there too (with EXHAUSTED_RETRY_CONDITION).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from selfless import json_limits
from selfless.errors import SelflessError
from selfless.events import filtering
from selfless.events.targets import EVENTS_PRINCIPAL, Targets, retry_policy
from selfless.invocation.destinations import OnFailure
from selfless.services.eventbridge.service import MAX_RULES, json_path, next_due
from selfless.services.eventbridge.store import Rule, RuleStore
from selfless.services.scheduler import expressions
from selfless.store.base import StoredEvent

log = logging.getLogger(__name__)


def scheduled_event(rule_arn: str, account: str, region: str, at: float) -> dict[str, Any]:
    """EventBridge's Scheduled Event for a run of a rule due at ``at``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def _pick(event: Any, path: str) -> Any:
    """The value at a JSON path of the event (None when it is not there)."""
    value = event
    for step in json_path(path):
        found = isinstance(value, list) and isinstance(step, int) and step < len(value)
        found = found or (isinstance(value, dict) and isinstance(step, str) and step in value)
        if not found:
            return None
        value = value[step]
    return value


def target_input(target: Mapping[str, Any], event: Mapping[str, Any], rule_name: str, rule_arn: str) -> bytes:
    """What a target receives of ``event`` (see the module docstring)."""
    if target.get("Input") is not None:
        return str(target["Input"]).encode()
    if target.get("InputPath") is not None:
        return json.dumps(_pick(event, str(target["InputPath"]))).encode()
    transformer = target.get("InputTransformer")
    if transformer is None:
        return json.dumps(event).encode()
    values: dict[str, Any] = {
        "aws.events.rule-arn": rule_arn,
        "aws.events.rule-name": rule_name,
        "aws.events.event": event,
        "aws.events.event.json": event,
    }
    for name, path in (transformer.get("InputPathsMap") or {}).items():
        values[str(name)] = _pick(event, str(path))
    text = str(transformer.get("InputTemplate") or "")
    for name, value in values.items():
        # A string goes in as its text (the template's own quotes around the placeholder make it JSON); any
        # other value as JSON.
        shown = json.dumps(value)[1:-1] if isinstance(value, str) else json.dumps(value)
        text = text.replace(f"<{name}>", shown)
    return text.encode()


class RuleTimetable:
    """Scheduled EventBridge rules as a ``Timetable``; ``targets`` None: targets are not checked (tests)."""

    def __init__(self, store: RuleStore, targets: Targets | None, account_id: str, region: str) -> None:
        self._store = store
        self._targets = targets
        self._account_id = account_id
        self._region = region

    def _arn(self, name: str) -> str:
        return f"arn:aws:events:{self._region}:{self._account_id}:rule/{name}"

    async def due(self, now: float, limit: int) -> Sequence[Rule]:
        return await self._store.due(now, limit)

    async def earliest(self) -> float | None:
        return await self._store.earliest()

    async def fire(self, item: Any, now: float) -> list[StoredEvent] | None:
        rule: Rule = item
        assert rule.next_due is not None  # due() returns only rules with one
        rule_arn = self._arn(rule.name)
        event = scheduled_event(rule_arn, self._account_id, self._region, rule.next_due)
        events: list[StoredEvent] = []
        for target in rule.targets:
            events += await self.run(rule, target, event, now)
        try:
            following = next_due(rule.doc, rule.created, max(now, rule.next_due))
        except (expressions.InvalidExpression, ValueError):
            following = None
        if not await self._store.fire(rule.replace(next_due=following), rule.next_due, events):
            return None
        log.info("rule %s ran (due %.3f): %d targets", rule.name, rule.next_due, len(events))
        return events

    async def run(
        self, rule: Rule, target: Mapping[str, Any], event: Mapping[str, Any], now: float
    ) -> list[StoredEvent]:
        """One target's run of ``event``: its durable event, or its dead letter when it is refused."""
        rule_arn = self._arn(rule.name)
        arn = str(target["Arn"])
        retries, max_age = retry_policy(target)
        dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
        attributes = {"RULE_ARN": rule_arn, "TARGET_ARN": arn}
        on_failure = OnFailure(retries, max_age, dead_letter, attributes, "NO_RESOURCE", "ERROR_FROM_TARGET")
        payload = target_input(target, event, rule.name, rule_arn)
        if self._targets is not None:
            refusal = await self._targets.refusal(arn, EVENTS_PRINCIPAL, rule_arn)
            if refusal is not None:
                log.warning("rule %s, target %s: %s", rule.name, target.get("Id"), refusal.message)
                code = "NO_PERMISSIONS" if refusal.kind == "denied" else "NO_RESOURCE"
                return Targets.dead_letter(on_failure, payload, refusal, code, at=now)
        group = (target.get("SqsParameters") or {}).get("MessageGroupId")
        return [Targets.run(arn, payload, on_failure, fifo_group=group, at=now)]


class Acceptor(Protocol):
    """The async invoker's intake (``invocation.events.AsyncInvoker``)."""

    def has_room(self, count: int) -> bool: ...

    async def accept(self, event: StoredEvent) -> None: ...


class Throttled(SelflessError):
    aws_type = "ThrottlingException"


_MAX_ENTRY_BYTES = 256 * 1024  # AWS: an entry (and a whole PutEvents request) is at most 256 KB
_PATTERNS_KEPT = 1_000


class EventBus:
    """PutEvents on the default bus: each entry becomes an event, matched against the bus's enabled rules with
    an EventPattern (``events.filtering``, AWS's pattern syntax); each matching rule's targets get it (or what
    their Input, InputPath, InputTransformer make of it) as their runs, checked and dead-lettered as a scheduled
    rule's are. Every run of a request is durable before the answer goes out (one group commit)."""

    def __init__(
        self,
        store: RuleStore,
        targets: Targets | None,
        acceptor: Acceptor,
        account_id: str,
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._targets = targets
        self._acceptor = acceptor
        self._account_id = account_id
        self._region = region
        self._clock = clock
        self._patterns: dict[str, filtering.Pattern] = {}
        self._timetable = RuleTimetable(store, targets, account_id, region)

    def _pattern(self, text: str) -> filtering.Pattern | None:
        found = self._patterns.get(text)
        if found is None:
            try:
                found = filtering.compile_pattern(text)
            except filtering.InvalidPattern:
                return None  # PutRule refused it; kept from an older version: matches nothing
            if len(self._patterns) >= _PATTERNS_KEPT:
                self._patterns.clear()
            self._patterns[text] = found
        return found

    def _event(self, entry: Mapping[str, Any], now: float) -> dict[str, Any] | str:
        """The event an entry makes, or why it is refused (its ErrorMessage)."""
        for key in ("Source", "DetailType", "Detail"):
            if not entry.get(key):
                return f"Parameter {key} is not valid. Reason: {key} is a required argument."
        bus = str(entry.get("EventBusName") or "default")
        if bus not in ("default", f"arn:aws:events:{self._region}:{self._account_id}:event-bus/default"):
            return f"Event bus {bus} does not exist."
        if len(json.dumps(dict(entry)).encode()) > _MAX_ENTRY_BYTES:
            return "Total size of the entries in the request is over the limit."
        try:
            detail = json_limits.loads(str(entry["Detail"]))
        except ValueError:
            detail = None
        if not isinstance(detail, dict):
            return "Detail is malformed."
        at = entry.get("Time")
        when = at.timestamp() if isinstance(at, dt.datetime) else float(at) if isinstance(at, (int, float)) else now
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": str(entry["DetailType"]),
            "source": str(entry["Source"]),
            "account": self._account_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "region": self._region,
            "resources": [str(r) for r in entry.get("Resources") or []],
            "detail": detail,
        }

    async def put_events(self, params: Mapping[str, Any]) -> dict[str, Any]:
        now = self._clock()
        rules = [
            r
            for r in await self._store.list_rules("default", "", None, MAX_RULES)
            if r.doc.get("EventPattern") and r.doc.get("State", "ENABLED") != "DISABLED" and r.targets
        ]
        answers: list[dict[str, str]] = []
        runs: list[StoredEvent] = []
        for entry in params["Entries"]:
            event = self._event(entry, now)
            if isinstance(event, str):
                code = "MalformedDetail" if event.startswith("Detail") else "InvalidArgument"
                answers.append({"ErrorCode": code, "ErrorMessage": event})
                continue
            answers.append({"EventId": event["id"]})
            matched = filtering.loads(json.dumps(event))  # numbers as the patterns compare them
            for rule in rules:
                pattern = self._pattern(str(rule.doc["EventPattern"]))
                if pattern is not None and pattern.matches(matched):
                    for target in rule.targets:
                        runs += await self._timetable.run(rule, target, event, now)
        if runs and not self._acceptor.has_room(len(runs)):
            raise Throttled("Rate exceeded.")
        await asyncio.gather(*(self._acceptor.accept(run) for run in runs))
        failed = sum("ErrorCode" in a for a in answers)
        return {"FailedEntryCount": failed, "Entries": answers}
