"""Bucket destinations: without SELFLESS_S3_ENDPOINT they are the built-in store's (checked for the bucket,
written in-process under Lambda's key layout, the store's refusals and a slow write mapped to DeliveryError
once); with it set, the built-in store is not consulted and the external endpoint is what is written to."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from selfless.config import Settings
from selfless.errors import InvalidParameterValue
from selfless.invocation.destinations import DeliveryError, Destinations, Message
from selfless.services.s3.blobs import LocalBlobs
from selfless.services.s3.destinations import BuiltinBuckets
from selfless.services.s3.service import ObjectService
from selfless.services.s3.sqlite import SqliteObjectMetadata
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore

FUNCTION = "arn:aws:lambda:us-east-1:000000000000:function:worker:$LATEST"
RECORD = json.dumps({"requestContext": {"functionArn": FUNCTION, "condition": "RetriesExhausted"}}).encode()
KEY = re.compile(
    r"aws/lambda/async/worker/\d{4}/\d\d/\d\d/\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


class Buckets:
    def __init__(self, names: set[str], delay_s: float = 0.0) -> None:
        self.names = names
        self.delay_s = delay_s
        self.asked: list[str] = []
        self.written: list[tuple[str, str, bytes]] = []

    async def exists(self, bucket: str) -> bool:
        self.asked.append(bucket)
        return bucket in self.names

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        await asyncio.sleep(self.delay_s)
        self.written.append((bucket, key, body))


def destinations(buckets: Buckets | None, timeout_s: float = 5.0, **settings: Any) -> Destinations:
    made = Destinations(Settings(**settings), timeout_s=timeout_s)
    made.buckets = buckets
    return made


def test_a_bucket_of_the_builtin_store_is_checked_and_written_in_process() -> None:
    buckets = Buckets({"failures"})
    dest = destinations(buckets)

    async def scenario() -> None:
        await dest.check("arn:aws:s3:::failures", usage="OnFailure")
        with pytest.raises(InvalidParameterValue) as refused:
            await dest.check("arn:aws:s3:::nowhere", usage="OnFailure")
        assert str(refused.value) == (
            "The function's execution role does not have permissions to call PutObject on arn:aws:s3:::nowhere"
        )
        with pytest.raises(InvalidParameterValue, match="OnFailure only"):
            await dest.check("arn:aws:s3:::failures", usage="OnSuccess")
        await dest.send(Message("arn:aws:s3:::failures", RECORD))

    asyncio.run(scenario())
    assert buckets.asked == ["failures", "nowhere"]
    ((bucket, key, body),) = buckets.written
    assert bucket == "failures" and KEY.fullmatch(key) and body == RECORD
    # A dead-letter target is still a queue or a topic only.
    with pytest.raises(InvalidParameterValue, match="an SQS queue or an SNS topic"):
        dest.check_form("arn:aws:s3:::failures", usage="DeadLetterConfig")


def test_without_a_builtin_store_or_an_endpoint_a_bucket_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidParameterValue, match="SELFLESS_S3_ENDPOINT, which is not set"):
        asyncio.run(destinations(None).check("arn:aws:s3:::failures", usage="OnFailure"))
    with pytest.raises(DeliveryError, match="no endpoint"):
        asyncio.run(destinations(None).send(Message("arn:aws:s3:::failures", RECORD)))


def test_a_write_that_does_not_finish_in_time_is_a_delivery_error() -> None:
    buckets = Buckets({"failures"}, delay_s=5.0)
    with pytest.raises(DeliveryError, match=r"did not keep it within 0\.05 s"):
        asyncio.run(destinations(buckets, timeout_s=0.05).send(Message("arn:aws:s3:::failures", RECORD)))
    assert buckets.written == []


def test_with_an_endpoint_set_the_external_store_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with socket.socket() as probe:  # a port nothing listens on: the endpoint refuses at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    buckets = Buckets({"failures"})
    dest = destinations(buckets, s3_endpoint=f"http://127.0.0.1:{port}")

    async def scenario() -> None:
        await dest.check("arn:aws:s3:::anything", usage="OnFailure")  # the external store is not asked
        with pytest.raises(DeliveryError, match=f"127.0.0.1:{port}"):
            await dest.send(Message("arn:aws:s3:::failures", RECORD))

    asyncio.run(scenario())
    assert buckets.asked == [] and buckets.written == []


# -- the built-in store's side ---------------------------------------------------------------------------------


class Functions:
    """Every notified function exists and may be invoked; each match is one event."""

    async def refusal(self, bucket: str, targets: Any) -> Any:
        return lambda target: None

    def test_events(self, bucket: str, targets: Any, request_id: str, at: float) -> list[StoredEvent]:
        return []

    def events(self, matched: list[tuple[Any, bytes]]) -> list[StoredEvent]:
        return [StoredEvent(f"e{n}", "recorder", None, payload, None, 1.0) for n, (_, payload) in enumerate(matched)]


class Queue:
    def __init__(self, room: bool = True) -> None:
        self.room = room
        self.adopted: list[StoredEvent] = []

    def has_room(self, count: int) -> bool:
        return self.room

    def adopt(self, events: list[StoredEvent]) -> None:
        self.adopted += events


def test_the_builtin_store_writes_the_record_and_its_notification_fires(tmp_path: Path) -> None:
    queue = Queue()

    async def scenario() -> None:
        base = SqliteStore(tmp_path / "meta.db")
        await base.open()
        meta = SqliteObjectMetadata(base)
        await meta.open()
        service = ObjectService(
            meta, LocalBlobs(tmp_path / "s3"), Functions(), queue,  # type: ignore[arg-type]
            region="us-east-1", owner_id="000000000000",
        )  # fmt: skip
        await service.start()
        buckets = BuiltinBuckets(service)
        await service.create_bucket("failures", None)
        await service.put_notification(
            "failures",
            {
                "LambdaFunctionConfigurations": [
                    {
                        "LambdaFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:recorder",
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
            "req-1",
        )
        assert await buckets.exists("failures") and not await buckets.exists("nowhere")
        await buckets.write("failures", "aws/lambda/async/worker/k", RECORD)
        stored = await service.get("failures", "aws/lambda/async/worker/k")
        assert stored.headers == {"ContentType": "application/json"} and stored.inline == RECORD

        queue.room = False  # the bucket's notification cannot be queued: S3's SlowDown, nothing written
        with pytest.raises(DeliveryError, match=r"^SlowDown: "):
            await buckets.write("failures", "aws/lambda/async/worker/later", RECORD)
        with pytest.raises(DeliveryError, match=r"^NoSuchBucket: "):
            await buckets.write("nowhere", "aws/lambda/async/worker/k", RECORD)
        objects, _, _, _ = await service.list_objects("failures", "", "", "", 10)
        assert [o.key for o in objects] == ["aws/lambda/async/worker/k"]
        await base.close()

    asyncio.run(scenario())
    (event,) = queue.adopted
    (notice,) = json.loads(event.payload)["Records"]
    assert notice["eventName"] == "ObjectCreated:Put"
    assert notice["userIdentity"] == {"principalId": "lambda.amazonaws.com"}
    assert notice["requestParameters"] == {"sourceIPAddress": "lambda.amazonaws.com"}
