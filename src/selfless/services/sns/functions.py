"""Lambda subscriptions, on Lambda's side: whether SNS may invoke a subscription's function, and the durable
asynchronous invocation that carries a message there.

As on AWS, SNS invokes a function asynchronously, so the function's asynchronous configuration (retries,
maximum age, destinations, dead-letter target) applies to each message; and it may do so only when the
function's resource policy lets ``sns.amazonaws.com`` call ``lambda:InvokeFunction`` for the topic (what
``aws lambda add-permission --principal sns.amazonaws.com --source-arn TOPIC_ARN`` grants). A message for a
function without that permission, or that no longer exists, is not delivered (logged, as AWS records a
failed delivery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from selfless import ids, policies
from selfless.errors import SelflessError
from selfless.functions import FunctionRegistry
from selfless.permissions import Permissions
from selfless.store.base import StoredEvent, encode_lineage

log = logging.getLogger(__name__)

SNS_PRINCIPAL = "sns.amazonaws.com"
INVOKE = "lambda:InvokeFunction"


class SubscribedFunctions:
    def __init__(self, registry: FunctionRegistry, permissions: Permissions, account_id: str) -> None:
        self._registry = registry
        self._permissions = permissions
        self._account_id = account_id

    def event(
        self, topic_arn: str, function_arn: str, payload: bytes, lineage: Mapping[str, int] | None
    ) -> StoredEvent | None:
        """The asynchronous invocation carrying ``payload`` to the function (continuing ``lineage``, the chain
        of the invocation that published, for recursive loop detection), or None (logged) when SNS may not
        invoke it."""
        try:
            name, qualifier = self._registry.resolve(function_arn, None)
            self._registry.get(name, qualifier)
        except SelflessError:
            log.warning("topic %s: function %s does not exist; message not delivered", topic_arn, function_arn)
            return None
        try:
            policy = self._permissions.function_policy(name, qualifier)
        except SelflessError:
            policy = None
        if not policies.allows_service(
            policy, SNS_PRINCIPAL, INVOKE, source_arn=topic_arn, source_account=self._account_id
        ):
            log.warning(
                "topic %s: the resource policy of %s does not let %s invoke it; message not delivered",
                topic_arn, function_arn, SNS_PRINCIPAL,
            )  # fmt: skip
            return None
        return StoredEvent(
            ids.request_id(), name, qualifier, payload, None, time.time(),
            lineage=encode_lineage(lineage), trace_id=ids.trace_id(),
        )  # fmt: skip
