"""Attacks through a RabbitMQ queue that an Amazon MQ mapping consumes: messages big enough that a batch of them
would pass Lambda's 6 MB invocation payload (each event stays within it, a message too large for any event goes
to the queue's dead-letter exchange, the others all arrive), and a flood of messages behind a slow function
(the broker never has much more than a batch out to the server: the prefetch). The server stays healthy."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pika
import pytest

from tests.conftest import Server, deploy, start_server, unique
from tests.e2e.test_async import wait_for
from tests.e2e.test_esm_rabbitmq import AMQP, batches, brokers_env, counts, create, publish, rabbit_queue

MAX_PAYLOAD = 6_291_456

# Logs each batch's event size and body sizes (never the bodies); sleeps when a body asks it to.
SIZES = """import base64, json, time


def handler(event, context):
    (messages,) = event["rmqMessagesByQueue"].values()
    sizes = [len(base64.b64decode(m["data"])) for m in messages]
    print("BATCH " + json.dumps({"event": len(json.dumps(event)), "sizes": sizes, "bodies": []}))
    if any(base64.b64decode(m["data"]) == b"slow" for m in messages):
        time.sleep(5)
"""


@pytest.fixture(scope="module")
def mq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("mq-hostile"), {"SELFLESS_MQ_BROKERS": brokers_env()})
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def sizes(mq_server: Server) -> Iterator[str]:
    lam = mq_server.client()
    name = deploy(lam, SIZES, Timeout=60, MemorySize=512)
    yield name
    for mapping in lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=mapping["UUID"])
    lam.delete_function(FunctionName=name)


def healthy(server: Server) -> bool:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        return bool(r.status == 200)


def test_events_stay_within_6_mb_and_a_message_too_large_is_dead_lettered(mq_server: Server, sizes: str) -> None:
    lam = mq_server.client()
    dead = unique("dlq")
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.queue_declare(dead)
    try:
        with rabbit_queue(**{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}) as (queue, source):
            big = 2 * 1024 * 1024  # 2.7 MB in base64: two fit an event, three do not
            publish(source, queue, [b"a" * big, b"b" * big, b"c" * big, b"x" * (5 * 1024 * 1024), b"d" * big, b"small"])
            create(lam, sizes, queue, BatchSize=10, MaximumBatchingWindowInSeconds=2)

            def seen() -> list[int]:
                return sorted(s for b in batches(mq_server, sizes) for s in b["sizes"])

            wait_for("every message that fits", lambda: seen() == sorted([big] * 4 + [5]), timeout=120)
            found = batches(mq_server, sizes)
            assert all(b["event"] <= MAX_PAYLOAD for b in found), [b["event"] for b in found]
            # Batches were cut by size, not by BatchSize: never three big ones together.
            assert max(sum(1 for s in b["sizes"] if s == big) for b in found) == 2
            wait_for("the queue settled", lambda: counts(source, queue)[0] == 0)
            # The one that could never fit an event went to the dead-letter queue, whole.
            got = wait_for("the dead letter", lambda: channel.basic_get(dead, auto_ack=True)[2])
            assert got == b"x" * (5 * 1024 * 1024)
            # Small messages after big ones come in full batches again: the prefetch follows the recent sizes.
            publish(source, queue, [f"t{i}" for i in range(40)])
            wait_for(
                "the small ones",
                lambda: sum(b["sizes"].count(2) + b["sizes"].count(3) for b in batches(mq_server, sizes)) == 40,
            )
            assert max(len(b["sizes"]) for b in batches(mq_server, sizes)) == 10
            assert healthy(mq_server)
    finally:
        channel.queue_delete(dead)
        connection.close()


def test_the_broker_never_has_more_than_a_batch_out(mq_server: Server, sizes: str) -> None:
    lam = mq_server.client()
    with rabbit_queue() as (queue, channel):
        publish(channel, queue, ["slow"] + [f"m{i}" for i in range(59)])
        mapping_id = create(lam, sizes, queue, BatchSize=5)["UUID"]
        # The first batch is out while the function sleeps, and the others wait on the broker: 5 of them out, and
        # one more at most (the first message, taken with a prefetch of 1 before the consumer knew their size).
        wait_for("the first batch out", lambda: counts(channel, queue)[0] <= 55, timeout=60)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert counts(channel, queue)[0] >= 54
            time.sleep(0.1)

        def total() -> int:
            return sum(len(b["sizes"]) for b in batches(mq_server, sizes))

        wait_for("every message", lambda: total() == 60, timeout=120)
        assert all(len(b["sizes"]) <= 5 for b in batches(mq_server, sizes))
        lam.delete_event_source_mapping(UUID=mapping_id)
        assert healthy(mq_server)
