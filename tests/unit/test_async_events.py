"""The asynchronous path's rules, with the store, registry and runs faked: an event past its maximum age is
not run and goes to the failure path (EventAgeExceeded, no response in its record); settling and the
destination's record are one store call; a function that went away drops its events; a delivery to a queue
that fails waits behind its gate and is kept, and one failing for 6 hours is kept as failed; a dead-letter
message carries AWS's attributes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from selfless.errors import ResourceNotFound
from selfless.invocation.destinations import DeliveryError, Message
from selfless.invocation.events import DELIVERY_MAX_AGE_S, AsyncInvoker, Policy
from selfless.invocation.inflight import Outcome, OutcomeKind
from selfless.models import CodeRef, Function
from selfless.store.base import StoredEvent

FN = Function(
    name="f", arn="arn:aws:lambda:us-east-1:000000000000:function:f", runtime="python3.12", role="r",
    handler="app.handler", code=CodeRef("sha", "key", 1, 1),
)  # fmt: skip
DEST = "arn:aws:lambda:us-east-1:000000000000:function:dest"


class Store:
    def __init__(self) -> None:
        self.settled: list[tuple[StoredEvent, list[StoredEvent]]] = []
        self.deleted: list[str] = []
        self.added: list[StoredEvent] = []

    async def settle_event(self, event: StoredEvent, then: list[StoredEvent]) -> None:
        self.settled.append((event, then))

    async def delete_event(self, event_id: str) -> None:
        self.deleted.append(event_id)

    async def add_events(self, events: list[StoredEvent]) -> None:
        self.added += events

    async def update_event(self, event: StoredEvent) -> None:
        pass


class Registry:
    def __init__(self, exists: bool = True, recursive_loop: str = "Terminate") -> None:
        self.exists = exists
        self.fn = FN.replace(recursive_loop=recursive_loop)

    def latest(self, name: str) -> Function:
        return self.fn

    def for_invoke(self, name: str, qualifier: str | None) -> tuple[Function, str]:
        if not self.exists:
            raise ResourceNotFound("gone")
        return self.fn, FN.arn


class Configs:
    def policy(self, name: str, qualifier: str | None) -> Policy:
        return Policy(max_retries=2, max_age_s=60, on_failure=DEST)


def invoker(store: Store, registry: Registry, runs: list[str], chains: list[Any] | None = None) -> AsyncInvoker:
    async def run(
        fn: Function, payload: bytes, cc: str | None, request_id: str, arn: str, chain: Any, trace: str | None = None
    ) -> Outcome:
        runs.append(request_id)
        if chains is not None:
            chains.append(chain)
        return Outcome(OutcomeKind.RESPONSE, b"{}", None, 1.0, None, 0, (), None)

    return AsyncInvoker(
        store,
        registry,
        Configs(),
        run,
        Destinations(),
        limit=10,
        retry_delay_s=0.0,  # type: ignore[arg-type]
    )


class Destinations:
    """Fails the first ``failures`` sends, then takes them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("AWS.SimpleQueueService.NonExistentQueue: no such queue")
        self.sent.append(message)


def test_an_event_past_its_maximum_age_goes_to_the_failure_path_unrun() -> None:
    store, runs = Store(), []
    old = StoredEvent("req-1", "f", None, json.dumps({"a": 1}).encode(), None, time.time() - 61, attempts=1)
    asyncio.run(invoker(store, Registry(), runs)._attempt(old))
    assert runs == [], "not run again"
    ((event, then),) = store.settled
    assert event.state == "failed" and event.failure == "EventAgeExceeded" and event.attempts == 1
    (delivery,) = then
    assert delivery.function_name == "dest" and delivery.qualifier is None
    record = json.loads(delivery.payload)
    assert record["requestContext"] == {
        "requestId": "req-1",
        "functionArn": FN.arn + ":$LATEST",
        "condition": "EventAgeExceeded",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"a": 1}
    assert "responseContext" not in record and "responsePayload" not in record


def test_a_young_event_runs_and_a_gone_function_drops_it() -> None:
    store, runs = Store(), []
    young = StoredEvent("req-2", "f", None, b"{}", None, time.time() - 30)
    asyncio.run(invoker(store, Registry(), runs)._attempt(young))
    assert runs == ["req-2"]
    ((event, then),) = store.settled
    assert event.state == "queued" and event.attempts == 1 and then == [], "success, no OnSuccess destination"

    store, runs = Store(), []
    asyncio.run(invoker(store, Registry(exists=False), runs)._attempt(young))
    assert runs == [] and store.deleted == ["req-2"] and store.settled == []


def test_the_queue_is_bounded() -> None:
    async def scenario() -> Any:
        inv = invoker(Store(), Registry(), [])
        inv._limit = 0
        try:
            await inv.accept(StoredEvent("x", "f", None, b"{}", None, time.time()))
        except Exception as exc:
            return exc
        return None

    exc = asyncio.run(scenario())
    assert exc is not None and type(exc).__name__ == "TooManyRequests"


def test_a_chain_that_comes_back_more_than_16_times_is_stopped() -> None:
    store, runs, chains = Store(), [], []
    looping = StoredEvent("req-3", "f", None, b"{}", None, time.time(), lineage=json.dumps({"f": 16, "g": 16}))
    asyncio.run(invoker(store, Registry(), runs)._attempt(looping))
    assert runs == [], "the 17th run of f in the chain does not happen"
    ((event, then),) = store.settled
    assert event.state == "failed" and event.failure == "RecursiveInvocationException"
    assert json.loads(then[0].payload)["requestContext"]["condition"] == "RecursiveInvocationException"

    store, runs = Store(), []
    below = looping.replace(lineage=json.dumps({"f": 15}))
    asyncio.run(invoker(store, Registry(), runs, chains)._attempt(below))
    assert runs == ["req-3"] and chains == [{"f": 16}], "the 16th run happens, and counts itself"

    store, runs = Store(), []
    asyncio.run(invoker(store, Registry(recursive_loop="Allow"), runs)._attempt(looping))
    assert runs == ["req-3"], "RecursiveLoop Allow lets the chain go on"


def test_a_delivery_that_fails_waits_and_is_kept_then_goes() -> None:
    store, destinations = Store(), Destinations(failures=1)
    updated: list[StoredEvent] = []

    async def update_event(event: StoredEvent) -> None:
        updated.append(event)

    store.update_event = update_event  # type: ignore[method-assign]
    target = "arn:aws:sqs:us-east-1:000000000000:dlq"
    delivery = StoredEvent("d-1", "f", None, b'{"a": 1}', None, time.time(), target=target, attributes='{"X": "1"}')

    async def go() -> AsyncInvoker:
        events = invoker(store, Registry(), [])
        events._destinations = destinations  # type: ignore[assignment]
        await events._attempt(delivery)
        return events

    events = asyncio.run(go())
    (kept,) = updated
    assert kept.attempts == 1 and "NonExistentQueue" in (kept.last_error or "") and kept.state == "queued"
    assert events._gates[target][0] > time.time(), "its target is backed off"
    assert store.settled == [] and destinations.sent == []
    asyncio.run(events._attempt(kept))
    (sent,) = destinations.sent
    assert sent.target == target and sent.body == b'{"a": 1}' and sent.attributes == {"X": "1"}
    ((settled, then),) = store.settled
    assert settled.id == "d-1" and settled.state == "queued" and then == [], "delivered: deleted"


def test_a_delivery_failing_for_6_hours_is_kept_as_failed() -> None:
    store = Store()
    target = "arn:aws:sns:us-east-1:000000000000:t"
    old = StoredEvent("d-2", "f", None, b"{}", None, time.time() - DELIVERY_MAX_AGE_S - 1, target=target)
    events = invoker(store, Registry(), [])
    events._destinations = Destinations(failures=1)  # type: ignore[assignment]
    asyncio.run(events._attempt(old))
    ((settled, then),) = store.settled
    assert settled.state == "failed" and settled.failure == "DeliveryFailed" and then == []


def test_a_dead_letter_message_has_aws_attributes() -> None:
    event = StoredEvent("req-9", "f", None, b'{"n": 9}', None, time.time(), attempts=3)
    long_message = "x" * 2000
    outcome = Outcome(OutcomeKind.ERROR, json.dumps({"errorMessage": long_message}).encode(), "ValueError")
    events = invoker(Store(), Registry(), [])
    letter = events._dead_letter("arn:aws:sqs:us-east-1:000000000000:dlq", event, "RetriesExhausted", outcome)
    assert letter.target == "arn:aws:sqs:us-east-1:000000000000:dlq" and letter.payload == b'{"n": 9}'
    attributes = json.loads(letter.attributes or "")
    assert attributes["RequestID"] == "req-9" and attributes["ErrorCode"] == "200"
    assert attributes["ErrorMessage"] == "x" * 1024, "truncated to 1 KB"
    unrun = events._dead_letter("arn:aws:sns:us-east-1:000000000000:t", event, "EventAgeExceeded", None)
    assert json.loads(unrun.attributes or "")["ErrorCode"] == "429"
