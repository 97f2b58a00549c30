"""Lambda's destinations and dead-letter targets in the built-in topic service
(``invocation.destinations.Topics``): a Publish through ``TopicService.publish`` in-process, with the same
checks and durability as a client's Publish, from Lambda's service principal.

The topic service's refusals (the topic deleted since the destination was configured, a message it refuses,
a full delivery queue) become DeliveryError: the durable async queue tries the delivery again, as it does for
any destination. FIFO topics are not destinations (Lambda sends no message group id), so they are reported
as missing when a destination is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfless.invocation.destinations import DeliveryError
from selfless.services.sns import errors as E
from selfless.services.sns.service import Call, TopicService

LAMBDA_PRINCIPAL = "arn:aws:sts::000000000000:assumed-role/lambda.amazonaws.com"


class BuiltinTopics:
    def __init__(self, service: TopicService) -> None:
        self._service = service
        self._call = Call(LAMBDA_PRINCIPAL)

    async def exists(self, name: str) -> bool:
        try:
            found = await self._service.get_topic_attributes({"TopicArn": self._service.arn(name)}, self._call)
        except E.SnsError:
            return False
        return bool(found["Attributes"].get("FifoTopic") != "true")

    async def send(self, name: str, body: bytes, attributes: Mapping[str, str]) -> None:
        params: dict[str, Any] = {"TopicArn": self._service.arn(name), "Message": body.decode("utf-8", "replace")}
        if attributes:
            params["MessageAttributes"] = {
                key: {"DataType": "Number" if key == "ErrorCode" else "String", "StringValue": value}
                for key, value in attributes.items()
                if value
            }
        try:
            await self._service.publish(params, self._call)
        except E.SnsError as exc:
            raise DeliveryError(f"{exc.code}: {exc}") from None
        except OSError as exc:
            raise DeliveryError(f"the topic service could not keep it: {exc}") from None
