"""A scheduled run's own failure handling in the durable queue (``destinations.OnFailure``, carried by the run's
event): a queue delivery retried within its RetryPolicy, then sent to its dead-letter queue with the reason
(MaximumRetryAttempts, MaximumEventAgeInSeconds); a function gone before its event ran goes there at once; a
FIFO queue's message group goes with the message."""

from __future__ import annotations

import asyncio
import json
import time

from selfless.invocation.destinations import OnFailure, decode_options, encode_options, extras_of
from selfless.invocation.events import AsyncInvoker
from selfless.store.base import StoredEvent
from tests.unit.test_async_events import Destinations, Registry, Store, invoker

QUEUE = "arn:aws:sqs:us-east-1:000000000000:jobs"
DLQ = "arn:aws:sqs:us-east-1:000000000000:dlq"
POLICY = OnFailure(1, 3600, DLQ, {"SCHEDULE_ARN": "arn:s", "TARGET_ARN": QUEUE}, "ResourceNotFoundException", "SEND")


def attempt(events: AsyncInvoker, event: StoredEvent) -> None:
    asyncio.run(events._attempt(event))


def with_destinations(store: Store, failures: int) -> tuple[AsyncInvoker, Destinations]:
    events, destinations = invoker(store, Registry(), []), Destinations(failures)
    events._destinations = destinations  # type: ignore[assignment]
    return events, destinations


def test_the_options_round_trip_and_are_not_message_attributes() -> None:
    encoded = encode_options({"A": "1"}, ("group", "dedup"), POLICY)
    assert decode_options(encoded) == ({"A": "1"}, ("group", "dedup"), POLICY)
    assert decode_options(None) == ({}, None, None)
    with_subject = encode_options({"A": "1"}, None, None, subject="Amazon S3 Notification")
    assert decode_options(with_subject) == ({"A": "1"}, None, None)  # the subject is not an attribute
    assert extras_of(with_subject) == ("Amazon S3 Notification", False) and extras_of(encoded) == (None, False)
    assert extras_of(encode_options(None, None, None, entry=True)) == (None, True)


def test_a_fifo_run_is_sent_with_its_group() -> None:
    store = Store()
    events, destinations = with_destinations(store, 0)
    run = StoredEvent("r-1", "", None, b"{}", None, time.time(), target=QUEUE, attributes=encode_options(
        None, ("g1", "r-1"), POLICY))  # fmt: skip
    attempt(events, run)
    (sent,) = destinations.sent
    assert sent.fifo == ("g1", "r-1") and sent.attributes == {}
    ((settled, then),) = store.settled
    assert settled.state == "queued" and then == []


def test_retries_run_out_then_the_dead_letter_queue_has_it() -> None:
    store = Store()
    events, destinations = with_destinations(store, 5)
    run = StoredEvent("r-2", "", None, b'{"job": 1}', None, time.time(), target=QUEUE,
                      attributes=encode_options(None, None, POLICY))  # fmt: skip
    attempt(events, run)
    assert store.settled == []  # one retry left
    attempt(events, run.replace(attempts=1))
    ((settled, then),) = store.settled
    assert settled.id == "r-2" and settled.state == "queued", "done: deleted, not kept as failed"
    (letter,) = then
    assert letter.target == DLQ and letter.payload == b'{"job": 1}'
    shown, fifo, on_failure = decode_options(letter.attributes)
    assert fifo is None and on_failure is None
    assert shown["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"
    assert shown["RETRY_ATTEMPTS"] == "1" and shown["ERROR_CODE"] == "SEND"
    assert "NonExistentQueue" in shown["ERROR_MESSAGE"]
    assert (shown["SCHEDULE_ARN"], shown["TARGET_ARN"]) == ("arn:s", QUEUE)
    assert destinations.sent == []


def test_a_run_older_than_its_maximum_age_goes_to_the_dead_letter_queue() -> None:
    store = Store()
    events, _ = with_destinations(store, 5)
    old = StoredEvent("r-3", "", None, b"{}", None, time.time() - 3601, target=QUEUE,
                      attributes=encode_options(None, None, POLICY.__class__(185, 3600, DLQ)))  # fmt: skip
    attempt(events, old)
    ((_, (letter,)),) = store.settled
    assert json.loads(letter.attributes or "")["EXHAUSTED_RETRY_CONDITION"] == "MaximumEventAgeInSeconds"


def test_a_run_without_a_dead_letter_queue_is_dropped() -> None:
    store = Store()
    events, _ = with_destinations(store, 5)
    run = StoredEvent("r-4", "", None, b"{}", None, time.time(), target=QUEUE,
                      attributes=encode_options(None, None, OnFailure(0, 60)))  # fmt: skip
    attempt(events, run)
    ((settled, then),) = store.settled
    assert settled.state == "queued" and then == []


def test_a_function_gone_before_its_run_goes_to_the_dead_letter_queue_at_once() -> None:
    store = Store()
    events = invoker(store, Registry(exists=False), [])
    run = StoredEvent("r-5", "job", None, b'{"n": 5}', None, time.time(), attributes=encode_options(None, None, POLICY))
    attempt(events, run)
    ((settled, (letter,)),) = store.settled
    assert settled.id == "r-5" and store.deleted == []
    shown = json.loads(letter.attributes or "")
    assert shown["ERROR_CODE"] == "ResourceNotFoundException" and shown["RETRY_ATTEMPTS"] == "0"
    assert "EXHAUSTED_RETRY_CONDITION" not in shown and letter.payload == b'{"n": 5}'


def test_a_run_keeps_to_its_own_retry_policy_past_the_6_hour_delivery_limit() -> None:
    store = Store()
    updated: list[StoredEvent] = []

    async def update_event(event: StoredEvent) -> None:
        updated.append(event)

    store.update_event = update_event  # type: ignore[method-assign]
    events, _ = with_destinations(store, 5)
    day = OnFailure(185, 86_400, DLQ)
    old = StoredEvent("r-6", "", None, b"{}", None, time.time() - 7 * 3600, target=QUEUE,
                      attributes=encode_options(None, None, day))  # fmt: skip
    attempt(events, old)
    assert store.settled == [], "neither kept as failed nor dead-lettered: it has 17 hours left"
    (kept,) = updated
    assert kept.attempts == 1 and kept.state == "queued"
