"""Where bucket notifications go, on Lambda's, the queue service's and the topic service's side: whether S3 may
deliver to a configuration's function, queue or topic, and the durable async events that carry a matched
notification there.

S3 checks each destination when a configuration is put:

- a function must exist and its resource policy must let ``s3.amazonaws.com`` invoke it for this bucket (and
  account), which is what ``aws lambda add-permission --principal s3.amazonaws.com --source-arn
  arn:aws:s3:::BUCKET`` grants;
- a queue (of the built-in queue service) must exist, be a standard queue (S3 sends to no FIFO queue), and its
  ``Policy`` attribute must let ``s3.amazonaws.com`` call ``sqs:SendMessage`` for this bucket (and account).
  With ``SELFLESS_SQS_ENDPOINT`` set, queues live in that external service, which selfless cannot inspect: a
  well-formed queue ARN is taken as given;
- a topic likewise (of the built-in topic service): it must exist, be a standard topic, and its ``Policy``
  attribute must let ``s3.amazonaws.com`` call ``SNS:Publish`` for this bucket (and account); with
  ``SELFLESS_SNS_ENDPOINT`` set, a well-formed topic ARN is taken as given.

An EventBridgeConfiguration needs no check: every event goes to the account's default bus (the built-in one,
or ``SELFLESS_EVENTS_ENDPOINT``'s), as a PutEvents entry (``notify.bus_entry``).

A function's event is an asynchronous invocation; a queue's, topic's or bus's is a delivery (``StoredEvent.target``)
of S3's event document as the message body (a topic's with the Subject "Amazon S3 Notification", as S3 sends
it), retried by the durable queue until the queue or topic has it. All commit with the change that sent them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from selfless import ids, policies
from selfless.errors import SelflessError
from selfless.functions import FunctionRegistry
from selfless.invocation.destinations import encode_options
from selfless.permissions import Permissions
from selfless.services.s3.notify import Target
from selfless.store.base import StoredEvent

S3_PRINCIPAL = "s3.amazonaws.com"
INVOKE = "lambda:InvokeFunction"
SEND = "sqs:SendMessage"
PUBLISH = "sns:Publish"
SUBJECT = "Amazon S3 Notification"
_QUEUE_REFUSED = "Permissions on the destination queue do not allow S3 to publish notifications from this bucket"
_TOPIC_REFUSED = "Permissions on the destination topic do not allow S3 to publish notifications from this bucket"


class AttributeLookup(Protocol):
    """The built-in queue or topic service, as notifications see it (``services.sqs.destinations.BuiltinQueues``,
    ``services.sns.destinations.BuiltinTopics``): a queue's or topic's attributes, None when there is none."""

    async def attributes(self, name: str) -> Mapping[str, str] | None: ...


class NotificationFunctions:
    """``queues`` and ``topics``: the built-in queue and topic services (set by the composition root, which
    builds them after this); None when queues or topics are an external service's."""

    def __init__(self, registry: FunctionRegistry, permissions: Permissions, account_id: str, region: str) -> None:
        self._registry = registry
        self._permissions = permissions
        self._account_id = account_id
        self._prefixes = {
            "queue": f"arn:aws:sqs:{region}:{account_id}:",
            "topic": f"arn:aws:sns:{region}:{account_id}:",
        }
        self._bus_arn = f"arn:aws:events:{region}:{account_id}:event-bus/default"
        self.queues: AttributeLookup | None = None
        self.topics: AttributeLookup | None = None

    async def refusal(self, bucket: str, targets: Iterable[Target]) -> Callable[[Target], str | None]:
        """For ``notify.check_destinations``: why S3 may not deliver to a target for ``bucket`` (None: it may)."""
        services = {"queue": self.queues, "topic": self.topics}
        found: dict[str, Mapping[str, str] | None] = {}
        for target in targets:
            service, prefix = services.get(target.kind), self._prefixes.get(target.kind, "")
            if service is not None and target.arn.startswith(prefix):
                found[target.arn] = await service.attributes(target.arn[len(prefix) :])
        source = {"source_arn": f"arn:aws:s3:::{bucket}", "source_account": self._account_id}
        # kind -> (ARN prefix of that service, refusal, FIFO attribute, FIFO refusal, action S3 needs)
        rules = {
            "queue": ("arn:aws:sqs:", _QUEUE_REFUSED, "FifoQueue", "FIFO queues", SEND),
            "topic": ("arn:aws:sns:", _TOPIC_REFUSED, "FifoTopic", "FIFO SNS topics", PUBLISH),
        }

        def why(target: Target) -> str | None:
            if target.kind == "bus":
                return None  # the account's default bus: always there
            if target.kind in rules:
                service_prefix, refused, fifo, fifo_name, action = rules[target.kind]
                if services[target.kind] is None:  # an external service's: taken as given
                    return None if target.arn.startswith(service_prefix) else refused
                attributes = found.get(target.arn)
                if attributes is None:
                    return refused
                if attributes.get(fifo) == "true":
                    return f"{fifo_name} are not supported as destinations for event notifications"
                allowed = policies.allows_service(policies.of_attributes(attributes), S3_PRINCIPAL, action, **source)
                return None if allowed else refused
            try:
                name, qualifier = self._registry.resolve(target.arn, None)
                self._registry.get(name, qualifier)
            except SelflessError:
                return f"The function {target.arn} does not exist"
            try:
                policy = self._permissions.function_policy(name, qualifier)
            except SelflessError:
                policy = None
            allowed = policies.allows_service(policy, S3_PRINCIPAL, INVOKE, **source)
            return None if allowed else f"Not authorized to invoke function [{target.arn}]"

        return why

    def events(self, matched: list[tuple[Target, bytes]]) -> list[StoredEvent]:
        """One accepted async event per matched configuration (a function may have gone since: the event then
        fails as an invocation of a missing function would, through the async path's failure handling)."""
        now = time.time()
        out = []
        for target, payload in matched:
            if target.kind == "bus":
                options = encode_options(None, None, None, entry=True)
                bus = self._bus_arn
                out.append(StoredEvent(ids.request_id(), "", None, payload, None, now, target=bus, attributes=options))
                continue
            if target.kind in ("queue", "topic"):
                out.append(_delivery(target.kind, target.arn, payload, now))
                continue
            try:
                name, qualifier = self._registry.resolve(target.arn, None)
            except SelflessError:
                continue  # an ARN of another region or account cannot have passed the destination check
            out.append(StoredEvent(ids.request_id(), name, qualifier, payload, None, now, trace_id=ids.trace_id()))
        return out

    def test_events(self, bucket: str, targets: Iterable[Target], request_id: str, at: float) -> list[StoredEvent]:
        """The ``s3:TestEvent`` message S3 sends each queue and topic of a configuration when it is put."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
        body = json.dumps(
            {
                "Service": "Amazon S3",
                "Event": "s3:TestEvent",
                "Time": stamp,
                "Bucket": bucket,
                "RequestId": request_id,
                "HostId": request_id,
            },
            separators=(",", ":"),
        ).encode()
        arns = dict.fromkeys((t.arn, t.kind) for t in targets if t.kind in ("queue", "topic"))
        return [_delivery(kind, arn, body, at) for arn, kind in arns]


def _delivery(kind: str, arn: str, body: bytes, at: float) -> StoredEvent:
    """A durable delivery of ``body`` to a queue, or to a topic with S3's Subject."""
    options = encode_options(None, None, None, SUBJECT) if kind == "topic" else None
    return StoredEvent(ids.request_id(), "", None, body, None, at, target=arn, attributes=options)
