"""The contract every ObjectMetadataStore implementation must keep (SQLite today; PostgreSQL for the cluster
mode must pass the same): buckets, objects in S3's byte order, events committed with the object that sends
them, multipart uploads, and the blobs in use. Plus the local blob store's atomicity and start-up sweep."""

from __future__ import annotations

import asyncio
import errno
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
        assert await store.put_object(record("k"), [event(1)]) == []
        replaced = await store.put_object(record("k", blob="blob-2", inline=None), [event(2)])
        assert replaced == [record("k")]
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
        assert old == [] and [p.number for p in parts] == [1, 2]
        assert await store.get_upload("u") is None and await store.list_parts("u") == []
        assert await store.blobs_in_use() == {"whole"}
        assert [e.id for e in await base.list_events()] == ["e9"]
        await base.close()

    run(scenario)


def test_versions_kept_listed_and_removed_as_the_bucket_state_says(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1", versioning="Enabled"))
        await store.put_object(record("k", blob="v0", inline=None), [])  # written before versioning: "null"
        assert await store.put_object(record("k", version_id="v1", blob="b1", inline=None), [], "Enabled") == []
        assert await store.put_object(record("k", version_id="v2"), [event(1)], "Enabled") == []
        marker = ObjectRecord("b", "k", 0, "", 3.0, version_id="m3", delete_marker=True)
        assert await store.put_object(marker, [], "Enabled") == []
        await store.put_object(record("z", version_id="z1"), [], "Enabled")
        assert (await store.get_object("b", "k")) == marker
        assert (await store.get_object("b", "k", "v1")).blob == "b1"  # type: ignore[union-attr]
        assert (await store.get_object("b", "k", "null")).blob == "v0"  # type: ignore[union-attr]
        assert await store.get_object("b", "k", "nope") is None
        # Listings skip a current delete marker; version listings show it, newest first per key.
        assert [o.key for o in (await store.list_objects("b", "", "", 10)).objects] == ["z"]
        page = await store.list_versions("b", "", "", None, 10)
        assert [(r.key, r.version_id, latest) for r, latest in page.versions] == [
            ("k", "m3", True),
            ("k", "v2", False),
            ("k", "v1", False),
            ("k", "null", False),
            ("z", "z1", True),
        ]
        first = await store.list_versions("b", "", "", None, 2)
        assert first.truncated and [r.version_id for r, _ in first.versions] == ["m3", "v2"]
        rest = await store.list_versions("b", "", "k", "v2", 10)
        assert [r.version_id for r, _ in rest.versions] == ["v1", "null", "z1"] and not rest.truncated
        assert [r.version_id for r, _ in (await store.list_versions("b", "", "k", None, 10)).versions] == ["z1"]
        assert [r.version_id for r, _ in (await store.list_versions("b", "z", "", None, 10)).versions] == ["z1"]
        # Removing the current version (the marker) makes the newest older one current again.
        assert (await store.delete_version("b", "k", "m3", [event(2)])) == marker
        assert (await store.get_object("b", "k")).version_id == "v2"  # type: ignore[union-attr]
        removed = await store.delete_version("b", "k", "v1", [])
        assert removed is not None and removed.blob == "b1"
        assert await store.delete_version("b", "k", "v1", [event(3)]) is None  # nothing changed, no event
        assert [e.id for e in await base.list_events()] == ["e1", "e2"]
        # Suspended: a write makes the "null" version, replacing the older "null" one (returned for its blob).
        gone = await store.put_object(record("k", blob="n2", inline=None), [], "Suspended")
        assert [g.blob for g in gone] == ["v0"]
        again = await store.put_object(record("k", blob="n3", inline=None), [], "Suspended")
        assert [g.blob for g in again] == ["n2"]
        assert [r.version_id for r, _ in (await store.list_versions("b", "k", "", None, 10)).versions] == [
            "null",
            "v2",
        ]
        assert await store.blobs_in_use() == {"n3"}
        assert not await store.delete_bucket("b")  # older versions keep a bucket
        await store.delete_version("b", "k", "null", [])
        await store.delete_version("b", "k", "v2", [])
        await store.delete_version("b", "z", "z1", [])
        assert await store.delete_bucket("b")
        await base.close()

    run(scenario)


def test_tags_change_with_their_events(make: Any) -> None:
    async def scenario() -> None:
        store, base = await make()
        await store.create_bucket(Bucket("b", 1.0, "us-east-1"))
        await store.put_object(record("k", tags={"a": "1"}), [])
        assert (await store.get_object("b", "k")).tags == {"a": "1"}  # type: ignore[union-attr]
        changed = await store.set_tags("b", "k", None, {"b": "2"}, [event(1)])
        assert changed is not None and changed.tags == {"b": "2"}
        assert (await store.get_object("b", "k")).tags == {"b": "2"}  # type: ignore[union-attr]
        assert await store.set_tags("b", "k", "v9", {}, [event(2)]) is None
        assert await store.set_tags("b", "none", None, {}, [event(3)]) is None
        assert [e.id for e in await base.list_events()] == ["e1"]
        await store.create_upload(Upload("u", "b", "k", 1.0, tags={"t": "v"}))
        assert (await store.get_upload("u")).tags == {"t": "v"}  # type: ignore[union-attr]
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


def test_a_database_from_before_versioning_opens_with_its_objects(tmp_path: Path) -> None:
    async def scenario() -> None:
        with sqlite3.connect(tmp_path / "meta.db") as db:  # the object table as it was made before versions
            db.execute(
                "CREATE TABLE s3_objects (bucket TEXT NOT NULL, key BLOB NOT NULL, version_id TEXT NOT NULL,"
                " size INTEGER NOT NULL, etag TEXT NOT NULL, last_modified REAL NOT NULL, doc TEXT NOT NULL,"
                " inline BLOB, blob TEXT, parts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (bucket, key))"
            )
            db.execute(
                "INSERT INTO s3_objects VALUES ('b', CAST('k' AS BLOB), 'null', 1, '\"e\"', 1.0,"
                ' \'{"headers":{},"metadata":{},"checksums":{}}\', CAST(\'x\' AS BLOB), NULL, 0)'
            )
        store, base = await _sqlite(tmp_path)
        found = await store.get_object("b", "k")
        assert found is not None and found.inline == b"x" and not found.delete_marker and found.tags == {}
        assert [o.key for o in (await store.list_objects("b", "", "", 10)).objects] == ["k"]
        await base.close()

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


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_a_blob_appended_to_a_new_one_keeps_its_place_among_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    if not kernel_copy:  # a file system without copy_file_range between these files: copied by hand

        def refuse(*args: Any) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)

    async def scenario() -> None:
        blobs = LocalBlobs(tmp_path / "s3")
        await blobs.open_and_sweep(set())
        part = blobs.writer()
        body = os.urandom((3 << 20) + 5)
        await part.write(body)
        await part.commit()
        whole = blobs.writer()
        await whole.write(b"head")
        await whole.append_blob(part.blob, part.size)
        await whole.append_blob(part.blob, part.size)
        await whole.write(b"tail")
        await whole.commit()
        assert whole.size == 8 + 2 * len(body)
        assert await _collect(await blobs.read(whole.blob, 0, whole.size)) == b"head" + body + body + b"tail"

    run(scenario)
