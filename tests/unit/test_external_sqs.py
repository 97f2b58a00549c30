"""``ExternalQueueSource`` against SQS-compatible servers other than selfless: moto's SQS (receive, delete, give
back, a missing queue, a queue of another ARN), and a server that accepts connections and never answers (every
call ends at its deadline, and calls beyond ``max_calls`` wait for a slot within theirs)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from selfless.events.external_sqs import ExternalQueueSource
from selfless.events.sqs import SourceGone, SourceUnavailable

REGION = "us-east-1"


@dataclass
class Moto:
    endpoint: str
    sqs: Any


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    nothing = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIAMOTOTESTING00003")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "moto-testing-secret")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nothing))
        mp.setenv("AWS_CONFIG_FILE", str(nothing))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            yield Moto(endpoint, boto3.client("sqs", endpoint_url=endpoint, region_name=REGION))
        finally:
            server.stop()


def make_queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def visible(sqs: Any, url: str) -> int:
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(got["Attributes"]["ApproximateNumberOfMessages"])


def test_receive_delete_and_give_back_on_moto(moto: Moto) -> None:
    url, arn = make_queue(moto.sqs, "esm-moto", VisibilityTimeout="120")
    for i in range(3):
        moto.sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    source = ExternalQueueSource(moto.endpoint, REGION)

    async def scenario() -> None:
        attributes = await source.attributes(source.queue_of(arn, REGION, arn.split(":")[4]) or "")
        assert attributes is not None and attributes["QueueArn"] == arn
        assert await source.visibility_timeout(arn) == 120
        got = await source.receive(arn, 10, 1)
        assert sorted(r.message["Body"] for r in got) == ["m0", "m1", "m2"]
        assert got[0].message["Attributes"]["ApproximateReceiveCount"] == "1"
        await source.delete(arn, [r.receipt for r in got if r.message["Body"] != "m1"])
        await source.release(arn, [r.receipt for r in got if r.message["Body"] == "m1"])
        again = await source.receive(arn, 10, 1)  # at once, not after 120 s
        assert [r.message["Body"] for r in again] == ["m1"]
        await source.delete(arn, [again[0].receipt])
        assert await source.receive(arn, 10, 0) == []

    asyncio.run(scenario())
    assert visible(moto.sqs, url) == 0


def test_missing_queues_and_other_arns_on_moto(moto: Moto) -> None:
    url, arn = make_queue(moto.sqs, "esm-moto-gone")
    source = ExternalQueueSource(moto.endpoint, REGION)

    async def scenario() -> None:
        assert await source.attributes(arn + "-missing") is None
        # The endpoint has a queue of that name, but it is not the one this ARN names (another region).
        assert await source.attributes(arn.replace(f":{REGION}:", ":eu-west-3:")) is None
        assert await source.visibility_timeout(arn) == 30
        moto.sqs.delete_queue(QueueUrl=url)
        with pytest.raises(SourceGone):
            await source.receive(arn, 10, 0)
        with pytest.raises(SourceGone):
            await source.visibility_timeout(arn)
        await source.delete(arn, ["stale"])  # nothing to delete: no error
        await source.release(arn, ["stale"])

    asyncio.run(scenario())


def test_every_call_ends_at_its_deadline_and_calls_are_bounded() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does) and never answers
    try:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        source = ExternalQueueSource(endpoint, REGION, max_calls=1, call_timeout_s=0.5)
        arn = f"arn:aws:sqs:{REGION}:123456789012:anything"

        async def scenario() -> None:
            started = time.monotonic()
            with pytest.raises(SourceUnavailable) as exc:
                await source.attributes(arn)
            assert str(exc.value) == f"Error occurred while ReceiveMessage. No answer from {endpoint} within 0.5 s"
            assert time.monotonic() - started < 2
            # The one slot is still held by the thread that waits for its answer: the next call waits for it
            # within its own deadline, and ends there too.
            started = time.monotonic()
            with pytest.raises(SourceUnavailable, match=r"GetQueueAttributes\. No answer"):
                await source.visibility_timeout(arn)
            assert time.monotonic() - started < 2
            await source.release(arn, ["r"])  # best effort: logged, not raised

        asyncio.run(scenario())
    finally:
        silent.close()
