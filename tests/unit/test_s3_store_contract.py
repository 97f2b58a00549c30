"""The contract every ObjectMetadataStore implementation must keep (SQLite today; PostgreSQL for the cluster
mode must pass the same): buckets, objects in S3's byte order, events committed with the object that sends
them, multipart uploads, and the blobs in use. Plus the local blob store's atomicity and start-up sweep."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from selfless.services.s3.blobs import LocalBlobs
from selfless.services.s3.sqlite import SqliteObjectMetadata
from selfless.services.s3.store import Bucket, ObjectMetadataStore, ObjectRecord, Part, Upload
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore


async def _sqlite(tmp: Path) -> tuple[ObjectMetadataStore, SqliteStore]:
    base = SqliteStore(tmp / "meta.db")
    await base.open()
    store = SqliteObjectMetadata(base)
    await store.open()
    return store, base


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[tuple[ObjectMetadataStore, SqliteStore]]]] = {
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def make(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Awaitable[tuple[ObjectMetadataStore, SqliteStore]]]:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def record(key: str, bucket: str = "b", **extra: Any) -> ObjectRecord:
    fields: dict[str, Any] = {"inline": b"x", **extra}
    return ObjectRecord(
        bucket, key, 1, '"etag"', 1.0, {"ContentType": "x"}, {"m": "1"}, {"CRC32": "AAAAAA=="}, **fields
    )


def event(n: int) -> StoredEvent:
    return StoredEvent(f"e{n}", "fn", None, b'{"Records":[]}', None, 1.0)


def test_buckets(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        assert await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        assert not await store.create_bucket(Bucket("b", 2.0, "us-east-1"))
        assert (await store.get_bucket("b")) == Bucket("b", 1.0, "us-east-1")
        await store.update_bucket(Bucket("b", 1.0, "us-east-1", notification='{"x":1}'))
        assert (await store.get_bucket("b")).notification == '{"x":1}'  # type: ignore[union-attr]
        await store.put_object(record("k"), [])
        assert not await store.delete_bucket("b")  # not empty
        await store.delete_object("b", "k", [])
        await store.create_upload(Upload("u", "b", "k", 1.0))
        assert not await store.delete_bucket("b")  # an upload in progress
        await store.abort_upload("u")
        assert await store.delete_bucket("b")
        assert await store.get_bucket("b") is None and await store.list_buckets() == []
        await base.close()

    run(scenario)


def test_objects_and_the_events_they_commit_with(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        assert await store.put_object(record("k"), [event(1)]) is None
        replaced = await store.put_object(record("k", blob="blob-2", inline=None), [event(2)])
        assert replaced == record("k")
        assert (await store.get_object("b", "k")) == record("k", blob="blob-2", inline=None)
        removed = await store.delete_object("b", "k", [event(3)])
        assert removed is not None and removed.blob == "blob-2"
        assert await store.get_object("b", "k") is None
        assert [e.id for e in await base.list_events()] == ["e1", "e2", "e3"]
        await base.close()

    run(scenario)


def test_a_failed_commit_keeps_neither_the_object_nor_its_events(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        await store.put_object(record("k"), [event(1)])
        with pytest.raises(sqlite3.IntegrityError):  # an implementation's own error type for a failed commit
            await store.put_object(record("other"), [event(1)])  # a duplicate event id: the commit fails
        assert await store.get_object("b", "other") is None
        assert [e.id for e in await base.list_events()] == ["e1"]
        await base.close()

    run(scenario)


def test_listing_is_in_utf8_byte_order_with_prefix_and_after(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        keys = ["a", "a/1", "a/2", "aé", "a\U0001f600", "b", "Z"]
        for key in keys:
            await store.put_object(record(key), [])
        everything = await store.list_objects("b", "", "", 100)
        assert [o.key for o in everything.objects] == sorted(
            keys, key=lambda k: k.encode()
        ) and not everything.truncated
        assert [o.key for o in (await store.list_objects("b", "a/", "", 100)).objects] == ["a/1", "a/2"]
        page = await store.list_objects("b", "", "a/1", 2)
        assert [o.key for o in page.objects] == ["a/2", "aé"] and page.truncated
        assert [o.key for o in (await store.list_objects("b", "a/", "a/1", 10)).objects] == ["a/2"]
        assert (await store.list_objects("b", "zzz", "", 10)).objects == []
        await base.close()

    run(scenario)


def test_multipart_uploads(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        await store.create_upload(Upload("u", "b", "k", 1.0, {"ContentType": "x"}, {"m": "1"}, "CRC32"))
        assert (await store.get_upload("u")) == Upload("u", "b", "k", 1.0, {"ContentType": "x"}, {"m": "1"}, "CRC32")
        assert [u.upload_id for u in await store.list_uploads("b")] == ["u"]
        assert await store.put_part(Part("u", 2, 5, '"p2"', 1.0, "blob-p2")) is None
        first = Part("u", 1, 5, '"p1"', 1.0, "blob-p1", {"CRC32": "AAAAAA=="})
        await store.put_part(first)
        replaced = await store.put_part(Part("u", 1, 6, '"p1b"', 2.0, "blob-p1b"))
        assert replaced == first
        assert [(p.number, p.blob) for p in await store.list_parts("u")] == [(1, "blob-p1b"), (2, "blob-p2")]
        assert await store.blobs_in_use() == {"blob-p1b", "blob-p2"}
        old, parts = await store.complete_upload("u", record("k", blob="whole", inline=None), [event(9)])
        assert old is None and [p.number for p in parts] == [1, 2]
        assert await store.get_upload("u") is None and await store.list_parts("u") == []
        assert await store.blobs_in_use() == {"whole"}
        assert [e.id for e in await base.list_events()] == ["e9"]
        await base.close()

    run(scenario)


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def test_blobs_are_whole_or_absent_and_the_sweep_removes_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        blobs = LocalBlobs(tmp_path / "s3")
        assert await blobs.open_and_sweep(set()) == 0
        kept = blobs.writer()
        await kept.write(b"a" * (3 << 20))
        await kept.write(b"tail")
        await kept.commit()
        assert await _collect(await blobs.read(kept.blob, 0, kept.size)) == b"a" * (3 << 20) + b"tail"
        assert await _collect(await blobs.read(kept.blob, (3 << 20) - 1, (3 << 20) + 2)) == b"ata"
        abandoned = blobs.writer()  # a crash mid-write: the temporary file stays behind
        await abandoned.write(b"b" * (2 << 20))
        assert abandoned._lane is not None
        await abandoned._lane.drain()  # written (writes run in a lane: by commit at the latest)
        orphan = blobs.writer()  # a crash between the blob's commit and its row's
        await orphan.write(b"c")
        await orphan.commit()
        discarded = blobs.writer()
        await discarded.write(b"d" * (2 << 20))
        await discarded.discard()
        assert await LocalBlobs(tmp_path / "s3").open_and_sweep({kept.blob}) == 2
        assert sorted(p.name for p in (tmp_path / "s3").rglob("*") if p.is_file()) == [kept.blob]

    run(scenario)


def test_an_open_blob_stays_readable_after_it_is_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        blobs = LocalBlobs(tmp_path / "s3")
        await blobs.open_and_sweep(set())
        writer = blobs.writer()
        data = os.urandom(3 << 20)
        await writer.write(data)
        await writer.commit()
        fd = await blobs.open(writer.blob)
        try:
            await blobs.delete([writer.blob])
            assert not any(p.is_file() for p in (tmp_path / "s3").rglob("*"))
            assert os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)

    run(scenario)
