"""Lambda's destinations on the built-in default event bus (``invocation.destinations.Buses``): an invocation
record put on the bus through ``EventBus.put_events`` in-process, with the same checks, rule matching and
durability as a client's PutEvents, as Lambda puts it (source ``lambda``, detail-type ``Lambda Function
Invocation Result - Success|Failure``, the function's ARN as the event's resource).

The bus's refusals (an entry it does not take, a full async queue) become DeliveryError: the durable async
queue tries the delivery again, as it does for any destination. Only the default bus exists (``exists``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.errors import SelflessError
from selfless.invocation.destinations import DeliveryError

DEFAULT_BUS = "event-bus/default"  # the resource part of the default bus's ARN


class Bus(Protocol):
    async def put_events(self, params: Mapping[str, Any]) -> dict[str, Any]: ...


class BuiltinBuses:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def exists(self, name: str) -> bool:
        return name == DEFAULT_BUS

    async def put(self, name: str, source: str, detail_type: str, detail: str, resources: Sequence[str]) -> None:
        entry = {
            "EventBusName": "default",
            "Source": source,
            "DetailType": detail_type,
            "Detail": detail,
            "Resources": list(resources),
        }
        try:
            answer = await self._bus.put_events({"Entries": [entry]})
        except SelflessError as exc:
            raise DeliveryError(f"{exc.aws_type}: {exc}") from None
        except OSError as exc:
            raise DeliveryError(f"the event bus could not keep it: {exc}") from None
        if answer.get("FailedEntryCount"):
            (failed,) = answer["Entries"]
            raise DeliveryError(f"PutEvents refused it: {failed.get('ErrorCode')} {failed.get('ErrorMessage')}")
