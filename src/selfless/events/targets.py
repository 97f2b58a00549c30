"""Where a scheduled run goes: the target of an EventBridge Scheduler schedule or of an EventBridge rule, a
Lambda function (an asynchronous invocation), a queue of the built-in queue service or a topic of the built-in
topic service (a message, a delivery ``StoredEvent.target``), and whether it can go there now.

``Targets.refusal`` is asked when a run is due: a function, queue or topic that does not exist is refused, and
for EventBridge rules (``principal`` ``events.amazonaws.com``) so is a function whose resource policy does not
let EventBridge invoke it for that rule (``aws lambda add-permission --principal events.amazonaws.com
--source-arn RULE_ARN``), or a queue or topic whose ``Policy`` does not let it ``sqs:SendMessage`` /
``sns:Publish``, as AWS requires.
A schedule's own permissions are its RoleArn's, which selfless (without IAM) takes as given. A refused run
goes straight to its dead-letter queue, without retries, as on AWS.

``Targets.run`` makes a run's durable event, carrying its failure handling (``destinations.OnFailure``): a
delivery that keeps failing past its RetryPolicy, or a function gone before its event ran, ends in the
dead-letter queue too (``invocation.events``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from selfless import arns, ids, policies
from selfless.errors import SelflessError
from selfless.functions import FunctionRegistry
from selfless.invocation.destinations import OnFailure, encode_options
from selfless.permissions import Permissions
from selfless.services.s3.functions import AttributeLookup
from selfless.store.base import StoredEvent

EVENTS_PRINCIPAL = "events.amazonaws.com"
function_of = arns.function_of  # kept here too: the schedule and rule loops ask this module
queue_of = arns.queue_of


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a run cannot be handed to its target: ``kind`` "missing" or "denied", and AWS-like words."""

    kind: str
    message: str


class Targets:
    """``queues`` and ``topics``: the built-in queue and topic services (None: they live in an external service,
    and targets there are taken as given)."""

    def __init__(
        self,
        registry: FunctionRegistry,
        permissions: Permissions,
        queues: AttributeLookup | None,
        account_id: str,
        region: str,
        topics: AttributeLookup | None = None,
    ) -> None:
        self._registry = registry
        self._permissions = permissions
        self.queues = queues
        self.topics = topics
        self._account_id = account_id
        self._region = region

    async def refusal(self, arn: str, principal: str | None = None, source_arn: str | None = None) -> Refusal | None:
        """Why a run of ``source_arn`` may not go to ``arn`` now (None: it may)."""
        source = {"source_arn": source_arn, "source_account": self._account_id}
        function = function_of(arn)
        if function is not None:
            try:
                name, qualifier = self._registry.resolve(arn, None)
                self._registry.get(name, qualifier)
            except SelflessError:
                return Refusal("missing", f"Function not found: {arn}")
            if principal is None:
                return None
            try:
                policy = self._permissions.function_policy(name, qualifier)
            except SelflessError:
                policy = None
            if policies.allows_service(policy, principal, "lambda:InvokeFunction", **source):
                return None
            return Refusal("denied", f"{principal} is not authorized to perform: lambda:InvokeFunction on {arn}")
        queue, topic = arns.queue_of(arn), arns.topic_of(arn)
        found, service, kind, action = (
            (queue, self.queues, "queue", "sqs:SendMessage")
            if queue is not None
            else (topic, self.topics, "topic", "sns:Publish")
        )
        if found is None:
            return Refusal("missing", f"Target {arn} is not supported")
        if service is None:
            return None
        if found[:2] != (self._region, self._account_id):
            return Refusal("missing", f"The {kind} {arn} does not exist")
        attributes = await service.attributes(found[2])
        if attributes is None:
            return Refusal("missing", f"The {kind} {arn} does not exist")
        if principal is None:
            return None
        if policies.allows_service(policies.of_attributes(attributes), principal, action, **source):
            return None
        return Refusal("denied", f"{principal} is not authorized to perform: {action} on {arn}")

    @staticmethod
    def run(
        arn: str,
        payload: bytes,
        on_failure: OnFailure,
        *,
        fifo_group: str | None = None,
        at: float | None = None,
    ) -> StoredEvent:
        """The durable event of one run of a target (a function, queue or topic ARN that ``refusal`` passed)."""
        now = time.time() if at is None else at
        event_id = ids.request_id()
        function = function_of(arn)
        if function is not None:
            name, qualifier = function
            options = encode_options(None, None, on_failure)
            trace = ids.trace_id()
            return StoredEvent(event_id, name, qualifier, payload, None, now, trace_id=trace, attributes=options)
        options = encode_options(None, None if fifo_group is None else (fifo_group, event_id), on_failure)
        return StoredEvent(event_id, "", None, payload, None, now, target=arn, attributes=options)

    @staticmethod
    def dead_letter(
        on_failure: OnFailure, payload: bytes, refusal: Refusal, code: str, at: float | None = None
    ) -> list[StoredEvent]:
        """The dead-letter message of a refused run (none without a dead-letter queue: it is dropped)."""
        if not on_failure.dead_letter:
            return []
        attributes = on_failure.dead_letter_attributes(code, refusal.message, 0, None)
        now = time.time() if at is None else at
        return [
            StoredEvent(ids.request_id(), "", None, payload, None, now, target=on_failure.dead_letter,
                        attributes=encode_options(attributes, None, None))
        ]  # fmt: skip


def retry_policy(target: Mapping[str, object]) -> tuple[int, int]:
    """(MaximumRetryAttempts, MaximumEventAgeInSeconds) of a target's RetryPolicy, AWS's defaults 185 and 86,400."""
    policy = target.get("RetryPolicy")
    policy = policy if isinstance(policy, Mapping) else {}
    retries, age = policy.get("MaximumRetryAttempts"), policy.get("MaximumEventAgeInSeconds")
    return (185 if not isinstance(retries, int) else retries), (86_400 if not isinstance(age, int) else age)
