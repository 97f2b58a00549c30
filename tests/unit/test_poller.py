"""The poller's rules without a server: ReportBatchItemFailures as Lambda reads a response, batches that go
when full, throttles that lose nothing, scaling up on full batches, and a stop that gives held messages back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import pytest

from selfless.errors import TooManyRequests
from selfless.events.poller import QueuePoller, failed_items
from selfless.events.sqs import Received
from selfless.invocation.inflight import Outcome, OutcomeKind

IDS = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", set()),
        (b"null", set()),
        (b"{}", set()),
        (b'{"batchItemFailures": null}', set()),
        (b'{"batchItemFailures": []}', set()),
        (b'"done"', set()),
        (b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', {"b"}),
        (b'{"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "c"}]}', {"a", "c"}),
        (b"not json", None),
        (b'{"batchItemFailures": [{"itemIdentifier": ""}]}', None),
        (b'{"batchItemFailures": [{"itemIdentifier": null}]}', None),
        (b'{"batchItemFailures": [{"itemIdentifier": "zzz"}]}', None),
        (b'{"batchItemFailures": [{"itemId": "a"}]}', None),
        (b'{"batchItemFailures": ["a"]}', None),
        (b'{"batchItemFailures": {"itemIdentifier": "a"}}', None),
    ],
)
def test_report_batch_item_failures_rules(payload: bytes, expected: set[str] | None) -> None:
    assert failed_items(payload, IDS) == expected


class FakeQueue:
    def __init__(self, bodies: list[str]) -> None:
        self.visible = [(f"id{i}", b) for i, b in enumerate(bodies)]
        self.hidden: dict[str, str] = {}
        self.deleted: list[str] = []
        self.released: list[str] = []
        self.arrived = asyncio.Event()

    async def visibility_timeout(self, queue: str) -> int:
        return 30

    async def receive(self, queue: str, limit: int, wait_s: int) -> list[Received]:
        if not self.visible:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=min(wait_s, 0.05) if wait_s else 0.001)
            except TimeoutError:
                return []
        taken, self.visible = self.visible[:limit], self.visible[limit:]
        out = []
        for message_id, body in taken:
            self.hidden[message_id] = body
            out.append(Received({"MessageId": message_id, "ReceiptHandle": message_id, "Body": body}, len(body)))
        return out

    async def delete(self, queue: str, receipts: Sequence[str]) -> None:
        for r in receipts:
            self.hidden.pop(r)
            self.deleted.append(r)

    async def release(self, queue: str, receipts: Sequence[str]) -> None:
        for r in receipts:
            self.visible.append((r, self.hidden.pop(r)))
            self.released.append(r)


def poller(queue: FakeQueue, invoke: object, **options: object) -> QueuePoller:
    settings: dict[str, object] = {
        "mapping_id": "m",
        "queue": "q",
        "event_source_arn": "arn:aws:sqs:us-east-1:000000000000:q",
        "region": "us-east-1",
        "source": queue,
        "invoke": invoke,
        "batch_size": 2,
        "window_s": 0,
        "report_failures": False,
        "max_workers": 3,
        "on_result": lambda result: None,
    }
    settings.update(options)
    return QueuePoller(**settings)  # type: ignore[arg-type]


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds, for 10 seconds at most."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_batches_scale_up_and_throttles_lose_nothing() -> None:
    async def scenario() -> None:
        queue = FakeQueue([f"b{i}" for i in range(40)])
        seen: list[list[str]] = []
        running = 0
        most = 0
        calls = 0

        async def invoke(payload: bytes) -> Outcome:
            nonlocal running, most, calls
            calls += 1
            if calls % 3 == 0:
                raise TooManyRequests("throttled", "ReservedFunctionConcurrentInvocationLimitExceeded")
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            seen.append([r["messageId"] for r in json.loads(payload)["Records"]])
            return Outcome(OutcomeKind.RESPONSE, b"null")

        p = poller(queue, invoke)
        p.start()
        await until(lambda: len(queue.deleted) == 40)
        await p.stop(5.0)
        assert sorted(queue.deleted) == sorted(f"id{i}" for i in range(40))
        assert all(len(batch) <= 2 for batch in seen)
        assert 1 < most <= 3  # full batches that succeed add workers, up to the maximum
        assert p.workers == 0

    asyncio.run(scenario())


def test_a_function_error_deletes_nothing_and_stop_gives_back_held_messages() -> None:
    async def scenario() -> None:
        queue = FakeQueue(["x", "y"])

        async def fail(payload: bytes) -> Outcome:
            return Outcome(OutcomeKind.ERROR, b'{"errorMessage": "no"}', "Unhandled")

        p = poller(queue, fail, max_workers=1)
        p.start()
        await until(lambda: not queue.visible and not queue.deleted and len(queue.hidden) == 2)
        await p.stop(5.0)
        assert queue.deleted == []

        # A batching window holding messages when the poller stops: they are made visible again at once.
        held = FakeQueue(["h"])
        p = poller(held, fail, window_s=300, batch_size=10)
        p.start()
        await until(lambda: "id0" in held.hidden)
        await p.stop(5.0)
        assert held.released == ["id0"] and held.visible == [("id0", "h")]

    asyncio.run(scenario())
