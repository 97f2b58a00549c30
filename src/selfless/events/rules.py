"""EventBridge rules with a ScheduleExpression as a push source: the ``Timetable`` that the schedules' loop
(``events.schedules.Scheduler``) fires, beside EventBridge Scheduler's schedules.

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

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from selfless.events.targets import EVENTS_PRINCIPAL, Targets, retry_policy
from selfless.invocation.destinations import OnFailure
from selfless.services.eventbridge.service import json_path, next_due
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
            events += await self._run(rule, rule_arn, target, event, now)
        try:
            following = next_due(rule.doc, rule.created, max(now, rule.next_due))
        except (expressions.InvalidExpression, ValueError):
            following = None
        if not await self._store.fire(rule.replace(next_due=following), rule.next_due, events):
            return None
        log.info("rule %s ran (due %.3f): %d targets", rule.name, rule.next_due, len(events))
        return events

    async def _run(
        self, rule: Rule, rule_arn: str, target: Mapping[str, Any], event: Mapping[str, Any], now: float
    ) -> list[StoredEvent]:
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
