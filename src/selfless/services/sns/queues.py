"""The built-in queue service as SNS's ``sqs`` subscriptions and dead-letter queues send to it: a SendMessage
through ``QueueService`` in-process, with its checks, durability and long-poll wake-ups, from SNS's service
principal (``SenderId``). Its refusals (the queue deleted, a message it refuses) become DeliveryFailed, which
the delivery loop retries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfless.services.sns.delivery import DeliveryFailed
from selfless.services.sqs import errors as sqs_errors
from selfless.services.sqs.service import Call, QueueService

SNS_PRINCIPAL = "sns.amazonaws.com"


class BuiltinQueueSink:
    def __init__(self, service: QueueService) -> None:
        self._service = service
        self._call = Call("localhost", SNS_PRINCIPAL)

    async def send(
        self,
        name: str,
        body: str,
        attributes: Mapping[str, Mapping[str, Any]],
        group_id: str | None,
        dedup_id: str | None,
    ) -> None:
        params: dict[str, Any] = {"QueueUrl": self._service.url(self._call, name), "MessageBody": body}
        if attributes:
            params["MessageAttributes"] = {k: dict(v) for k, v in attributes.items()}
        if group_id is not None:
            params["MessageGroupId"] = group_id
        if dedup_id is not None:
            params["MessageDeduplicationId"] = dedup_id
        try:
            await self._service.send_message(params, self._call)
        except sqs_errors.SqsError as exc:
            raise DeliveryFailed(f"{exc.query_code}: {exc}") from None
        except OSError as exc:
            raise DeliveryFailed(f"the queue service could not keep it: {exc}") from None
