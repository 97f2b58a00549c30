"""Where bucket notifications go, on Lambda's and the queue service's side: whether S3 may deliver to a
configuration's function or queue, and the durable async events that carry a matched notification there.

S3 checks each destination when a configuration is put:

- a function must exist and its resource policy must let ``s3.amazonaws.com`` invoke it for this bucket (and
  account), which is what ``aws lambda add-permission --principal s3.amazonaws.com --source-arn
  arn:aws:s3:::BUCKET`` grants;
- a queue (of the built-in queue service) must exist, be a standard queue (S3 sends to no FIFO queue), and its
  ``Policy`` attribute must let ``s3.amazonaws.com`` call ``sqs:SendMessage`` for this bucket (and account).
  With ``SELFLESS_SQS_ENDPOINT`` set, queues live in that external service, which selfless cannot inspect: a
  well-formed queue ARN is taken as given.

A function's event is an asynchronous invocation; a queue's is a delivery (``StoredEvent.target``) of S3's
event document as the message body, retried by the durable queue until the queue has it. Both commit with the
change that sent them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from selfless import ids, policies
from selfless.errors import SelflessError
from selfless.functions import FunctionRegistry
from selfless.permissions import Permissions
from selfless.services.s3.notify import Target
from selfless.store.base import StoredEvent

S3_PRINCIPAL = "s3.amazonaws.com"
INVOKE = "lambda:InvokeFunction"
SEND = "sqs:SendMessage"
_QUEUE_REFUSED = "Permissions on the destination queue do not allow S3 to publish notifications from this bucket"


class QueueLookup(Protocol):
    """The built-in queue service, as notifications see it (``services.sqs.destinations.BuiltinQueues``)."""

    async def attributes(self, name: str) -> Mapping[str, str] | None: ...


class NotificationFunctions:
    """``queues``: the built-in queue service (set by the composition root, which builds it after this);
    None when queues are an external service's."""

    def __init__(self, registry: FunctionRegistry, permissions: Permissions, account_id: str, region: str) -> None:
        self._registry = registry
        self._permissions = permissions
        self._account_id = account_id
        self._queue_prefix = f"arn:aws:sqs:{region}:{account_id}:"
        self.queues: QueueLookup | None = None

    async def refusal(self, bucket: str, targets: Iterable[Target]) -> Callable[[Target], str | None]:
        """For ``notify.check_destinations``: why S3 may not deliver to a target for ``bucket`` (None: it may)."""
        queues: dict[str, Mapping[str, str] | None] = {}
        if self.queues is not None:
            for target in targets:
                if target.kind == "queue" and target.arn.startswith(self._queue_prefix):
                    queues[target.arn] = await self.queues.attributes(target.arn[len(self._queue_prefix) :])
        source = {"source_arn": f"arn:aws:s3:::{bucket}", "source_account": self._account_id}

        def why(target: Target) -> str | None:
            if target.kind == "queue":
                if self.queues is None:
                    return None if target.arn.startswith("arn:aws:sqs:") else _QUEUE_REFUSED
                attributes = queues.get(target.arn)
                if attributes is None:
                    return _QUEUE_REFUSED
                if attributes.get("FifoQueue") == "true":
                    return "FIFO queues are not supported as destinations for event notifications"
                try:
                    statements = json.loads(attributes.get("Policy") or "{}").get("Statement") or []
                except (ValueError, AttributeError):
                    statements = []
                if isinstance(statements, dict):
                    statements = [statements]
                queue_policy = policies.Policy(tuple(s for s in statements if isinstance(s, dict)), "")
                allowed = policies.allows_service(queue_policy, S3_PRINCIPAL, SEND, **source)
                return None if allowed else _QUEUE_REFUSED
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
            if target.kind == "queue":
                out.append(StoredEvent(ids.request_id(), "", None, payload, None, now, target=target.arn))
                continue
            try:
                name, qualifier = self._registry.resolve(target.arn, None)
            except SelflessError:
                continue  # an ARN of another region or account cannot have passed the destination check
            out.append(StoredEvent(ids.request_id(), name, qualifier, payload, None, now, trace_id=ids.trace_id()))
        return out

    def test_events(self, bucket: str, targets: Iterable[Target], request_id: str, at: float) -> list[StoredEvent]:
        """The ``s3:TestEvent`` message S3 sends each queue of a configuration when it is put."""
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
        arns = dict.fromkeys(t.arn for t in targets if t.kind == "queue")
        return [StoredEvent(ids.request_id(), "", None, body, None, at, target=arn) for arn in arns]
