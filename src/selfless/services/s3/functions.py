"""The bucket notifications' side of Lambda: whether S3 may invoke a configuration's function, and the async
events that carry a matched notification to it.

S3 checks each destination when a configuration is put: the function must exist and its resource policy
must let ``s3.amazonaws.com`` invoke it for this bucket (and account), which is what
``aws lambda add-permission --principal s3.amazonaws.com --source-arn arn:aws:s3:::BUCKET`` grants.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from selfless import ids, policies
from selfless.errors import SelflessError
from selfless.functions import FunctionRegistry
from selfless.permissions import Permissions
from selfless.services.s3.notify import FunctionTarget
from selfless.store.base import StoredEvent

S3_PRINCIPAL = "s3.amazonaws.com"
INVOKE = "lambda:InvokeFunction"


class NotificationFunctions:
    def __init__(self, registry: FunctionRegistry, permissions: Permissions, account_id: str) -> None:
        self._registry = registry
        self._permissions = permissions
        self._account_id = account_id

    def refusal(self, bucket: str) -> Callable[[str], str | None]:
        """For ``notify.check_destinations``: why S3 may not invoke a function for ``bucket`` (None: it may)."""

        def why(arn: str) -> str | None:
            try:
                name, qualifier = self._registry.resolve(arn, None)
                self._registry.get(name, qualifier)
            except SelflessError:
                return f"The function {arn} does not exist"
            try:
                policy = self._permissions.function_policy(name, qualifier)
            except SelflessError:
                policy = None
            allowed = policies.allows_service(
                policy, S3_PRINCIPAL, INVOKE, source_arn=f"arn:aws:s3:::{bucket}", source_account=self._account_id
            )
            return None if allowed else f"Not authorized to invoke function [{arn}]"

        return why

    def events(self, matched: list[tuple[FunctionTarget, bytes]]) -> list[StoredEvent]:
        """One accepted async event per matched configuration (its function may have gone since: the event
        then fails as an invocation of a missing function would, through the async path's failure handling)."""
        now = time.time()
        out = []
        for target, payload in matched:
            try:
                name, qualifier = self._registry.resolve(target.function_arn, None)
            except SelflessError:
                continue  # an ARN of another region or account cannot have passed the destination check
            out.append(StoredEvent(ids.request_id(), name, qualifier, payload, None, now, trace_id=ids.trace_id()))
        return out
