"""The built-in object store's rules, as S3 has them: bucket names, object writes (streamed, hashed as they
pass, verified against Content-MD5 and the x-amz-checksum-* values, atomic), reads (ranges, conditions),
listings (prefix, delimiter, pages), copies, multipart uploads, bucket versioning (version ids, delete
markers, older versions read, listed and removed), object tags, and the bucket notifications each change
sends, committed with the change itself (``services.s3.notify``)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import secrets
import string
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

import crc32c

from selfless.api.payload import Payload
from selfless.lanes import Lane
from selfless.services.s3 import notify
from selfless.services.s3.errors import S3Error, malformed_xml, no_such_bucket, no_such_key, no_such_upload
from selfless.services.s3.functions import NotificationFunctions
from selfless.services.s3.store import (
    INLINE_MAX,
    BlobStore,
    BlobWriter,
    Bucket,
    ObjectMetadataStore,
    ObjectRecord,
    Part,
    Upload,
)
from selfless.store.base import StoredEvent

MAX_PUT = 5 << 30  # a single PUT (and a part) at most 5 GiB, as S3 allows
MIN_PART = 5 << 20  # every part but the last at least 5 MiB
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
_BUCKET_CACHE = 10_000
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d+\.\d+\.\d+\.\d+")
CHECKSUMS = ("CRC32", "CRC32C", "SHA1", "SHA256")


class EventQueue(Protocol):
    """The async invoker's side the store needs (``invocation.events.AsyncInvoker``)."""

    def has_room(self, count: int) -> bool: ...

    def adopt(self, events: list[StoredEvent]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who made a request, as S3's event records name them."""

    principal_id: str
    source_ip: str
    request_id: str

    def event(
        self, name: str, bucket: str, key: str, made: ObjectRecord | None = None, version_id: str = "null"
    ) -> notify.ObjectEvent:
        """What this actor did to bucket/key (``made``: the object a creation made; ``version_id``: the version
        it made or removed), for notifications."""
        size, etag = (made.size, made.etag.strip('"')) if made is not None and not made.delete_marker else (None, None)
        if made is not None:
            version_id = made.version_id
        return notify.ObjectEvent(
            name,
            bucket,
            key,
            self.principal_id,
            self.source_ip,
            self.request_id,
            self.request_id,
            size,
            etag,
            None if version_id == "null" else version_id,  # S3 names versions of versioned buckets only
        )


@dataclasses.dataclass(frozen=True)
class WriteChecks:
    """What the client said the body must be: Content-MD5 (base64), x-amz-checksum-<algorithm> values
    (base64; a value in ``trailers`` arrives after the body), the algorithm to compute and store, and those
    whose values are to come after the body (x-amz-trailer), computed too."""

    content_md5: str | None = None
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    algorithm: str | None = None
    trailing: tuple[str, ...] = ()


class _Hashers:
    def __init__(self, algorithms: Iterable[str]) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self._crc32 = 0 if "CRC32" in algorithms else None
        self._crc32c = 0 if "CRC32C" in algorithms else None
        self._sha1 = hashlib.sha1(usedforsecurity=False) if "SHA1" in algorithms else None
        self._sha256 = hashlib.sha256() if "SHA256" in algorithms else None

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        if self._crc32 is not None:
            self._crc32 = zlib.crc32(data, self._crc32)
        if self._crc32c is not None:
            self._crc32c = crc32c.crc32c(data, self._crc32c)
        if self._sha1 is not None:
            self._sha1.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)

    def values(self) -> dict[str, str]:
        out = {}
        if self._crc32 is not None:
            out["CRC32"] = base64.b64encode(self._crc32.to_bytes(4, "big")).decode()
        if self._crc32c is not None:
            out["CRC32C"] = base64.b64encode(self._crc32c.to_bytes(4, "big")).decode()
        if self._sha1 is not None:
            out["SHA1"] = base64.b64encode(self._sha1.digest()).decode()
        if self._sha256 is not None:
            out["SHA256"] = base64.b64encode(self._sha256.digest()).decode()
        return out


@dataclasses.dataclass(frozen=True)
class Deleted:
    """What a delete did: the version it made (a delete marker) or removed, and whether that is a marker."""

    version_id: str | None = None
    delete_marker: bool = False


class _Stream:
    """Bytes from an iterator as a ``Payload`` (a copy's source)."""

    def __init__(self, chunks: AsyncIterator[bytes], length: int) -> None:
        self._chunks = chunks
        self.length: int | None = length
        self.trailers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


@dataclasses.dataclass
class _Written:
    size: int
    md5: bytes
    checksums: dict[str, str]
    inline: bytes | None
    blob: str | None


def check_bucket_name(name: str) -> None:
    if (
        not _BUCKET_NAME.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IP.fullmatch(name)
        or name.startswith(("xn--", "sthree-"))
        or name.endswith(("-s3alias", "--ol-s3"))
    ):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", BucketName=name)


MAX_TAGS = 10


def check_tags(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """An object's tag set from (key, value) pairs, refused as S3 refuses it."""
    if len(pairs) > MAX_TAGS:
        raise S3Error("BadRequest", "Object tags cannot be greater than 10")
    tags: dict[str, str] = {}
    for key, value in pairs:
        if key in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key", TagKey=key)
        if not key or len(key) > 128:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid", TagKey=key)
        if len(value) > 256:
            raise S3Error("InvalidTag", "The TagValue you have provided is too long, max 256", TagKey=key)
        if key.startswith("aws:"):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:", TagKey=key)
        tags[key] = value
    return tags


_VERSION_ALPHABET = string.ascii_letters + string.digits


def new_version_id() -> str:
    # 32 letters and digits (190 random bits), as long as S3's: safe in URLs, copy sources and command lines.
    return "".join(secrets.choice(_VERSION_ALPHABET) for _ in range(32))


def check_key(key: str) -> None:
    if not key:
        raise S3Error("InvalidArgument", "An object key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long", Size=str(len(key.encode())), MaxSizeAllowed="1024")


class ObjectService:
    def __init__(
        self,
        meta: ObjectMetadataStore,
        blobs: BlobStore,
        functions: NotificationFunctions,
        events: EventQueue,
        *,
        region: str,
        owner_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._meta = meta
        self._blobs = blobs
        self._functions = functions
        self._events = events
        self.region = region
        self.owner_id = owner_id
        self._clock = clock
        self._sequencer = notify.Sequencer()
        self._targets: dict[str, tuple[notify.Target, ...]] = {}  # parsed configurations by document
        self._buckets: dict[str, Bucket] = {}

    # -- buckets ---------------------------------------------------------------------------------------------

    async def create_bucket(self, name: str, location: str | None) -> Bucket:
        check_bucket_name(name)
        if location and location != self.region:
            raise S3Error(
                "IllegalLocationConstraintException",
                f"The {location} location constraint is incompatible for the region specific endpoint this "
                "request was sent to.",
            )
        bucket = Bucket(name, self._clock(), self.region)
        if not await self._meta.create_bucket(bucket):
            raise S3Error(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
                BucketName=name,
            )
        return bucket

    async def bucket(self, name: str) -> Bucket:
        # Buckets are few and change through this service only (one server owns the embedded store): kept in
        # memory, so an object request costs no database round trip to find its bucket.
        found = self._buckets.get(name)
        if found is None:
            found = await self._meta.get_bucket(name)
            if found is None:
                raise no_such_bucket(name)
            if len(self._buckets) >= _BUCKET_CACHE:
                self._buckets.clear()
            self._buckets[name] = found
        return found

    async def list_buckets(self) -> list[Bucket]:
        return await self._meta.list_buckets()

    async def delete_bucket(self, name: str) -> None:
        await self.bucket(name)
        self._buckets.pop(name, None)
        if not await self._meta.delete_bucket(name):
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", BucketName=name)

    async def put_versioning(self, name: str, status: str | None, mfa_delete: str | None) -> None:
        bucket = await self.bucket(name)
        if status not in ("Enabled", "Suspended") or mfa_delete not in (None, "Disabled"):
            if mfa_delete not in (None, "Disabled"):
                raise S3Error("NotImplemented", "MFA Delete is not offered by this store.")
            raise malformed_xml()
        changed = dataclasses.replace(bucket, versioning=status)
        await self._meta.update_bucket(changed)
        self._buckets[name] = changed

    # -- notifications ---------------------------------------------------------------------------------------

    async def put_notification(self, name: str, doc: Mapping[str, Any], request_id: str) -> None:
        """Validate and keep a NotificationConfiguration; each of its queues is sent S3's ``s3:TestEvent``,
        committed with it."""
        bucket = await self.bucket(name)
        targets = notify.parse(doc)
        notify.check_destinations(targets, await self._functions.refusal(name, targets))
        stored = json.dumps(notify.stored(doc, targets), separators=(",", ":"))
        changed = dataclasses.replace(bucket, notification=stored)
        tests = self._functions.test_events(name, targets, request_id, self._clock())
        if tests and not self._events.has_room(len(tests)):
            raise S3Error("SlowDown", "Please reduce your request rate.")
        await self._meta.update_bucket(changed, tests)
        self._events.adopt(tests)
        self._buckets[name] = changed

    async def notification(self, name: str) -> dict[str, Any]:
        bucket = await self.bucket(name)
        return dict(json.loads(bucket.notification)) if bucket.notification else {}

    def _targets_of(self, bucket: Bucket) -> tuple[notify.Target, ...]:
        if not bucket.notification:
            return ()
        targets = self._targets.get(bucket.notification)
        if targets is None:
            targets = notify.parse(json.loads(bucket.notification))
            if len(self._targets) > 1000:
                self._targets.clear()
            self._targets[bucket.notification] = targets
        return targets

    def _notifications(self, bucket: Bucket, event: notify.ObjectEvent) -> list[StoredEvent]:
        """The async events ``event`` sends, refused as S3 refuses under load (SlowDown) when the queue has
        no room for them: the change is then not made, so no accepted change ever loses its event."""
        targets = self._targets_of(bucket)
        if not targets:
            return []
        matched = notify.matching_payloads(
            targets, event, region=self.region, owner_id=self.owner_id, sequencer=self._sequencer
        )
        events = self._functions.events(matched)
        if events and not self._events.has_room(len(events)):
            raise S3Error("SlowDown", "Please reduce your request rate.")
        return events

    # -- objects ---------------------------------------------------------------------------------------------

    async def _write(self, payload: Payload, checks: WriteChecks, limit: int) -> _Written:
        """The body, hashed as it passes: inline when it ends within INLINE_MAX bytes, else a committed blob.
        Nothing of it remains when this raises."""
        declared = payload.length
        if declared is not None and declared > limit:
            raise S3Error(
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=str(declared),
                MaxSizeAllowed=str(limit),
            )
        algorithms = set(checks.checksums) | set(checks.trailing)
        if checks.algorithm:
            algorithms.add(checks.algorithm)
        hashers = _Hashers(algorithms)
        held: list[bytes] = []
        size = 0
        writer: BlobWriter | None = None
        # Past INLINE_MAX, the hashes are computed in a lane of their own (a worker thread), beside the
        # writer's and the signature's: each piece costs the slowest of the three rather than their sum.
        hashing: Lane | None = None
        try:
            async for chunk in payload:
                size += len(chunk)
                if size > limit:
                    raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
                if writer is None and size <= INLINE_MAX:
                    hashers.update(chunk)
                    held.append(chunk)
                    continue
                if writer is None or hashing is None:
                    writer = self._blobs.writer()
                    hashing = Lane()
                    for piece in held:
                        await writer.write(piece)
                    held = []
                await hashing.submit(hashers.update, chunk)
                await writer.write(chunk)
            if hashing is not None:
                await hashing.drain()
            md5 = hashers.md5.digest()
            computed = hashers.values()
            self._verify(checks, payload.trailers, md5, computed)
            if writer is not None:
                await writer.commit()
        except BaseException:
            if writer is not None:
                await writer.discard()
            raise
        finally:
            if hashing is not None:
                await hashing.close()
        if writer is None:
            return _Written(size, md5, computed, b"".join(held), None)
        return _Written(size, md5, computed, None, writer.blob)

    @staticmethod
    def _verify(checks: WriteChecks, trailers: Mapping[str, str], md5: bytes, computed: Mapping[str, str]) -> None:
        if checks.content_md5 is not None:
            try:
                wanted = base64.b64decode(checks.content_md5, validate=True)
            except binascii.Error:
                wanted = b""
            if len(wanted) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
            if wanted != md5:
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        given = dict(checks.checksums)
        for name, value in trailers.items():
            if name.startswith("x-amz-checksum-"):
                given[name.removeprefix("x-amz-checksum-").upper()] = value
        for algorithm, value in given.items():
            if computed.get(algorithm) != value:
                raise S3Error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.")

    async def put_object(
        self,
        bucket_name: str,
        key: str,
        payload: Payload,
        headers: Mapping[str, str],
        metadata: Mapping[str, str],
        checks: WriteChecks,
        actor: Actor,
        event_name: str = "s3:ObjectCreated:Put",
        tags: Mapping[str, str] | None = None,
    ) -> ObjectRecord:
        check_key(key)
        bucket = await self.bucket(bucket_name)
        written = await self._write(payload, checks, MAX_PUT)
        record = ObjectRecord(
            bucket_name,
            key,
            written.size,
            f'"{written.md5.hex()}"',
            self._clock(),
            dict(headers),
            dict(metadata),
            written.checksums,
            written.inline,
            written.blob,
            self._version_for(bucket),
            tags=dict(tags or {}),
        )
        return await self._commit(bucket, record, actor, event_name)

    @staticmethod
    def _version_for(bucket: Bucket) -> str:
        """The version id a write to ``bucket`` makes now."""
        return new_version_id() if bucket.versioning == "Enabled" else "null"

    async def _commit(self, bucket: Bucket, record: ObjectRecord, actor: Actor, event_name: str) -> ObjectRecord:
        try:
            events = self._notifications(bucket, actor.event(event_name, bucket.name, record.key, record))
            gone = await self._meta.put_object(record, events, bucket.versioning)
        except BaseException:
            if record.blob is not None:
                await self._blobs.delete([record.blob])
            raise
        self._events.adopt(events)
        await self._forget(gone, keep=record.blob)
        return record

    async def _forget(self, gone: Iterable[ObjectRecord], keep: str | None = None) -> None:
        """The blobs of versions that are no longer there deleted."""
        blobs = [r.blob for r in gone if r.blob is not None and r.blob != keep]
        if blobs:
            await self._blobs.delete(blobs)

    async def get(self, bucket_name: str, key: str, version_id: str | None = None) -> ObjectRecord:
        """The key's current version, or the one ``version_id`` names; S3's 404 (NoSuchKey, NoSuchVersion) when
        there is none, and for a delete marker: 404 when it is current, 405 when named (both with the
        x-amz-delete-marker header, as S3 answers)."""
        await self.bucket(bucket_name)
        found = await self._meta.get_object(bucket_name, key, version_id)
        if found is None:
            if version_id is not None:
                raise S3Error("NoSuchVersion", "The specified version does not exist.", Key=key, VersionId=version_id)
            raise no_such_key(key)
        if found.delete_marker:
            marker = [("x-amz-delete-marker", "true"), ("x-amz-version-id", found.version_id)]
            if version_id is not None:
                raise S3Error(
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                    Method="GET",
                    ResourceType="DeleteMarker",
                ).with_headers([*marker, ("Allow", "DELETE")])
            raise no_such_key(key).with_headers(marker)
        return found

    async def read(self, record: ObjectRecord, start: int, end: int) -> AsyncIterator[bytes]:
        """The object's bytes [start, end)."""
        if record.inline is not None:
            return _one(record.inline[start:end])
        assert record.blob is not None
        return await self._blobs.read(record.blob, start, end)

    async def open(self, record: ObjectRecord) -> int | None:
        """An open file descriptor of the object's bytes, for the caller to send and close, when they live
        in a local file; None otherwise (``read`` them)."""
        if record.blob is None:
            return None
        return await self._blobs.open(record.blob)

    async def delete_object(self, bucket_name: str, key: str, actor: Actor, version_id: str | None = None) -> Deleted:
        """S3's DeleteObject: a named version removed for good; else, in a bucket that has versioning, a delete
        marker made the current version; else the object removed."""
        bucket = await self.bucket(bucket_name)
        if version_id is not None:
            events = self._notifications(
                bucket, actor.event("s3:ObjectRemoved:Delete", bucket_name, key, version_id=version_id)
            )
            removed = await self._meta.delete_version(bucket_name, key, version_id, events)
            if removed is None:
                return Deleted(version_id)  # nothing there: S3 answers 204 and sends no event
            self._events.adopt(events)
            await self._forget([removed])
            return Deleted(version_id, removed.delete_marker)
        if bucket.versioning:
            marker = ObjectRecord(
                bucket_name, key, 0, "", self._clock(), version_id=self._version_for(bucket), delete_marker=True
            )
            await self._commit(bucket, marker, actor, "s3:ObjectRemoved:DeleteMarkerCreated")
            return Deleted(marker.version_id, True)
        events = self._notifications(bucket, actor.event("s3:ObjectRemoved:Delete", bucket_name, key))
        current = await self._meta.get_object(bucket_name, key)
        if current is None:
            return Deleted()  # S3 answers 204 for a key that is not there, and sends no event
        old = await self._meta.delete_object(bucket_name, key, events)
        if old is None:
            return Deleted()
        self._events.adopt(events)
        await self._forget([old])
        return Deleted()

    async def list_versions(
        self, bucket_name: str, prefix: str, delimiter: str, key_marker: str, version_marker: str | None, max_keys: int
    ) -> tuple[list[tuple[ObjectRecord, bool]], list[str], bool, tuple[str, str | None]]:
        """S3's ListObjectVersions page: versions (each with whether it is current) and common prefixes past
        the markers, whether more follow, and the next page's markers."""
        await self.bucket(bucket_name)
        versions: list[tuple[ObjectRecord, bool]] = []
        prefixes: list[str] = []
        last: tuple[str, str | None] = ("", None)
        key_after, version_after = key_marker, version_marker
        rolled_up = key_marker.startswith(prefix) and key_marker.endswith(delimiter)
        if delimiter and rolled_up and delimiter in key_marker[len(prefix) :]:
            key_after, version_after = key_marker + "\U0010ffff", None  # past the rolled-up prefix
        while len(versions) + len(prefixes) < max_keys:
            page = await self._meta.list_versions(bucket_name, prefix, key_after, version_after, 1000)
            for record, latest in page.versions:
                rest = record.key[len(prefix) :]
                cut = rest.find(delimiter) if delimiter else -1
                if cut >= 0:
                    common = prefix + rest[: cut + len(delimiter)]
                    if common not in prefixes:
                        if len(versions) + len(prefixes) >= max_keys:
                            return versions, prefixes, True, last
                        prefixes.append(common)
                        last = (common, None)
                    key_after, version_after = common + "\U0010ffff", None
                    break
                if len(versions) + len(prefixes) >= max_keys:
                    return versions, prefixes, True, last
                versions.append((record, latest))
                last = (record.key, record.version_id)
                key_after, version_after = record.key, record.version_id
            else:
                if not page.truncated:
                    return versions, prefixes, False, last
        more = await self._meta.list_versions(bucket_name, prefix, key_after, version_after, 1)
        return versions, prefixes, bool(more.versions), last

    async def put_tags(
        self, bucket_name: str, key: str, version_id: str | None, tags: Mapping[str, str] | None, actor: Actor
    ) -> ObjectRecord:
        """Replace (``tags``) or remove (None) a version's tag set; the changed version."""
        bucket = await self.bucket(bucket_name)
        record = await self.get(bucket_name, key, version_id)
        name = "s3:ObjectTagging:Put" if tags is not None else "s3:ObjectTagging:Delete"
        events = self._notifications(bucket, actor.event(name, bucket_name, key, version_id=record.version_id))
        changed = await self._meta.set_tags(bucket_name, key, record.version_id, tags or {}, events)
        if changed is None:  # removed meanwhile
            raise (
                no_such_key(key)
                if version_id is None
                else S3Error("NoSuchVersion", "The specified version does not exist.", Key=key, VersionId=version_id)
            )
        self._events.adopt(events)
        return changed

    async def list_objects(
        self, bucket_name: str, prefix: str, delimiter: str, after: str, max_keys: int
    ) -> tuple[list[ObjectRecord], list[str], bool, str]:
        """Up to ``max_keys`` entries (objects and common prefixes) past ``after``; whether more follow, and
        the last entry's key or prefix (the next page's ``after``)."""
        await self.bucket(bucket_name)
        contents: list[ObjectRecord] = []
        prefixes: list[str] = []
        last = ""
        cursor = after
        if delimiter and after.startswith(prefix) and after.endswith(delimiter) and delimiter in after[len(prefix) :]:
            cursor = after + "\U0010ffff"  # a page ended on a common prefix: what it rolled up is behind
        while len(contents) + len(prefixes) < max_keys:
            page = await self._meta.list_objects(bucket_name, prefix, cursor, 1000)
            for record in page.objects:
                cursor = record.key
                rest = record.key[len(prefix) :]
                cut = rest.find(delimiter) if delimiter else -1
                if cut >= 0:
                    common = prefix + rest[: cut + len(delimiter)]
                    if common not in prefixes:  # a prefix is one entry, however many keys share it
                        if len(contents) + len(prefixes) >= max_keys:
                            return contents, prefixes, True, last
                        prefixes.append(common)
                        last = common
                    cursor = common + "\U0010ffff"  # past every key under it
                    break
                if len(contents) + len(prefixes) >= max_keys:
                    return contents, prefixes, True, last
                contents.append(record)
                last = record.key
            else:
                if not page.truncated:
                    return contents, prefixes, False, last
        more = await self._meta.list_objects(bucket_name, prefix, cursor, 1)
        return contents, prefixes, bool(more.objects), last

    async def copy(
        self,
        source: ObjectRecord,
        bucket_name: str,
        key: str,
        replace: Mapping[str, Any] | None,
        actor: Actor,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectRecord:
        """Copy ``source`` to bucket/key: its metadata and headers too, or ``replace``'s (REPLACE); its tags,
        or ``tags`` (the REPLACE tagging directive's)."""
        check_key(key)
        bucket = await self.bucket(bucket_name)
        onto_itself = source.bucket == bucket_name and source.key == key and replace is None
        if onto_itself and bucket.versioning == "Enabled":  # an older version copied over the key restores it
            current = await self._meta.get_object(bucket_name, key)
            onto_itself = current is not None and current.version_id == source.version_id
        if onto_itself:
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself without changing the "
                "object's metadata, storage class, website redirect location or encryption attributes.",
            )
        inline, blob = source.inline, None
        if source.blob is not None:
            writer = self._blobs.writer()
            try:
                await writer.append_blob(source.blob, source.size)
                await writer.commit()
            except BaseException:
                await writer.discard()
                raise
            blob = writer.blob
        headers = dict(source.headers) if replace is None else dict(replace["headers"])
        metadata = dict(source.metadata) if replace is None else dict(replace["metadata"])
        record = ObjectRecord(
            bucket_name,
            key,
            source.size,
            source.etag,
            self._clock(),
            headers,
            metadata,
            dict(source.checksums),
            inline,
            blob,
            self._version_for(bucket),
            parts=source.parts,
            tags=dict(source.tags if tags is None else tags),
        )
        return await self._commit(bucket, record, actor, "s3:ObjectCreated:Copy")

    # -- multipart -------------------------------------------------------------------------------------------

    async def create_upload(
        self,
        bucket_name: str,
        key: str,
        headers: Mapping[str, str],
        metadata: Mapping[str, str],
        algorithm: str | None,
        tags: Mapping[str, str] | None = None,
    ) -> Upload:
        check_key(key)
        await self.bucket(bucket_name)
        upload_id = secrets.token_urlsafe(48)
        upload = Upload(
            upload_id, bucket_name, key, self._clock(), dict(headers), dict(metadata), algorithm, dict(tags or {})
        )
        await self._meta.create_upload(upload)
        return upload

    async def upload(self, bucket_name: str, key: str, upload_id: str) -> Upload:
        await self.bucket(bucket_name)
        upload = await self._meta.get_upload(upload_id)
        if upload is None or upload.bucket != bucket_name or upload.key != key:
            raise no_such_upload(upload_id)
        return upload

    async def upload_part(
        self, bucket_name: str, key: str, upload_id: str, number: int, payload: Payload, checks: WriteChecks
    ) -> Part:
        self._check_part_number(number)
        await self.upload(bucket_name, key, upload_id)
        written = await self._write(payload, checks, MAX_PUT)
        return await self._keep_part(upload_id, number, written)

    async def upload_part_copy(
        self, bucket_name: str, key: str, upload_id: str, number: int, source: ObjectRecord, start: int, end: int
    ) -> Part:
        """UploadPartCopy: bytes [start, end) of ``source`` as part ``number``."""
        self._check_part_number(number)
        await self.upload(bucket_name, key, upload_id)
        written = await self._write(_Stream(await self.read(source, start, end), end - start), WriteChecks(), MAX_PUT)
        return await self._keep_part(upload_id, number, written)

    @staticmethod
    def _check_part_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise S3Error(
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(number),
            )

    async def _keep_part(self, upload_id: str, number: int, written: _Written) -> Part:
        blob = written.blob
        if blob is None:  # parts always live in blobs: they are concatenated at completion
            writer = self._blobs.writer()
            await writer.write(written.inline or b"")
            await writer.commit()
            blob = writer.blob
        part = Part(upload_id, number, written.size, f'"{written.md5.hex()}"', self._clock(), blob, written.checksums)
        old = await self._meta.put_part(part)
        if old is not None:
            await self._blobs.delete([old.blob])
        return part

    async def parts(self, bucket_name: str, key: str, upload_id: str) -> list[Part]:
        await self.upload(bucket_name, key, upload_id)
        return await self._meta.list_parts(upload_id)

    async def uploads(self, bucket_name: str) -> list[Upload]:
        await self.bucket(bucket_name)
        return await self._meta.list_uploads(bucket_name)

    async def abort(self, bucket_name: str, key: str, upload_id: str) -> None:
        await self.upload(bucket_name, key, upload_id)
        parts = await self._meta.abort_upload(upload_id)
        await self._blobs.delete([p.blob for p in parts])

    async def complete(
        self, bucket_name: str, key: str, upload_id: str, wanted: list[tuple[int, str]], actor: Actor
    ) -> ObjectRecord:
        """The object made of the listed parts (number, ETag), as S3 checks them."""
        upload = await self.upload(bucket_name, key, upload_id)
        bucket = await self.bucket(bucket_name)
        if not wanted:
            raise malformed_xml()
        numbers = [n for n, _ in wanted]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be specified in order by part "
                "number.",
            )
        have = {p.number: p for p in await self._meta.list_parts(upload_id)}
        chosen: list[Part] = []
        for number, etag in wanted:
            part = have.get(number)
            if part is None or part.etag.strip('"') != etag.strip('"'):
                raise S3Error(
                    "InvalidPart",
                    "One or more of the specified parts could not be found.  The part may not have been uploaded, or "
                    "the specified entity tag may not match the part's entity tag.",
                    UploadId=upload_id,
                    PartNumber=str(number),
                    ETag=etag,
                )
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART:
                raise S3Error(
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                    ProposedSize=str(part.size),
                    MinSizeAllowed=str(MIN_PART),
                    PartNumber=str(part.number),
                    ETag=part.etag.strip('"'),
                )
        digest = hashlib.md5(usedforsecurity=False)
        writer = self._blobs.writer()
        try:
            for part in chosen:
                digest.update(bytes.fromhex(part.etag.strip('"')))
                await writer.append_blob(part.blob, part.size)
            await writer.commit()
        except BaseException:
            await writer.discard()
            raise
        record = ObjectRecord(
            bucket_name,
            key,
            writer.size,
            f'"{digest.hexdigest()}-{len(chosen)}"',
            self._clock(),
            dict(upload.headers),
            dict(upload.metadata),
            {},
            None,
            writer.blob,
            self._version_for(bucket),
            parts=len(chosen),
            tags=dict(upload.tags),
        )
        event = actor.event("s3:ObjectCreated:CompleteMultipartUpload", bucket_name, key, record)
        try:
            events = self._notifications(bucket, event)
            gone, parts = await self._meta.complete_upload(upload_id, record, events, bucket.versioning)
        except BaseException:
            await self._blobs.delete([writer.blob])
            raise
        self._events.adopt(events)
        await self._blobs.delete([p.blob for p in parts])
        await self._forget(gone, keep=record.blob)
        return record

    async def start(self) -> int:
        """At start-up: the blob store made ready, and blobs of writes a crash interrupted removed (how many)."""
        return await self._blobs.open_and_sweep(await self._meta.blobs_in_use())


async def _one(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
