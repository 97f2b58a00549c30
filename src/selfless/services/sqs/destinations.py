"""Lambda's destinations and dead-letter targets in the built-in queue service (``invocation.destinations.Queues``):
a message sent through ``QueueService.send_message`` in-process, with the same checks, durability and
long-poll wake-ups as a SendMessage, from Lambda's service principal (``SenderId``).

The queue service's refusals (the queue deleted since the destination was configured, a body or attributes it
refuses) are mapped here, once, to DeliveryError: the durable queue tries the delivery again, as it does for
any destination."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfless.invocation.destinations import DeliveryError
from selfless.services.sqs import errors as E
from selfless.services.sqs.service import Call, QueueService

LAMBDA_PRINCIPAL = "lambda.amazonaws.com"


class BuiltinQueues:
    def __init__(self, service: QueueService, sender: str = LAMBDA_PRINCIPAL) -> None:
        self._service = service
        self._call = Call("localhost", sender)

    def _url(self, name: str) -> str:
        return self._service.url(self._call, name)

    async def attributes(self, name: str) -> Mapping[str, str] | None:
        """The queue's attributes (``FifoQueue``, ``Policy``, ...), or None when there is no such queue."""
        try:
            found = await self._service.get_queue_attributes(
                {"QueueUrl": self._url(name), "AttributeNames": ["All"]}, self._call
            )
        except E.SqsError:
            return None
        return dict(found.get("Attributes") or {})

    async def exists(self, name: str) -> bool:
        return await self.attributes(name) is not None

    async def send(
        self, name: str, body: bytes, attributes: Mapping[str, str], fifo: tuple[str, str] | None = None
    ) -> None:
        params: dict[str, Any] = {"QueueUrl": self._url(name), "MessageBody": body.decode("utf-8", "replace")}
        if fifo is not None:
            params["MessageGroupId"], params["MessageDeduplicationId"] = fifo
        if attributes:
            params["MessageAttributes"] = {
                key: {"DataType": "Number" if key == "ErrorCode" else "String", "StringValue": value}
                for key, value in attributes.items()
            }
        try:
            await self._service.send_message(params, self._call)
        except E.SqsError as exc:
            raise DeliveryError(f"{exc.query_code}: {exc}") from None
        except OSError as exc:
            raise DeliveryError(f"the queue service could not keep it: {exc}") from None
