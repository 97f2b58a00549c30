"""The asynchronous path's rules, with the store, registry and runs faked: an event past its maximum age is
not run and goes to the failure path (EventAgeExceeded, no response in its record); settling and the
destination's record are one store call; a function that went away drops its events."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from selfless.errors import ResourceNotFound
from selfless.invocation.events import AsyncInvoker, Policy
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
    async def run(fn: Function, payload: bytes, cc: str | None, request_id: str, arn: str, chain: Any) -> Outcome:
        runs.append(request_id)
        if chains is not None:
            chains.append(chain)
        return Outcome(OutcomeKind.RESPONSE, b"{}", None, 1.0, None, 0, (), None)

    return AsyncInvoker(store, registry, Configs(), run, limit=10, retry_delay_s=0.0)  # type: ignore[arg-type]


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
