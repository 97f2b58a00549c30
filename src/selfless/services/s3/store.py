"""The built-in object store's state: bucket and object metadata behind ``ObjectMetadataStore`` (SQLite today,
in the same database as the rest, so an object and its notifications' events commit together), and the
bytes behind ``BlobStore`` (a local directory today; an S3-compatible store for the cluster mode).

Every write is durable when it returns. An object's bytes are written and synced first (under a name of
their own, never overwritten), then its metadata row commits: a reader never sees a partial object, and a
crash in between leaves a blob no row names, which ``BlobStore.sweep`` removes at the next start.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from selfless.store.base import StoredEvent

INLINE_MAX = 64 * 1024  # objects up to this size live in their metadata row: one commit, no file to sync


@dataclasses.dataclass(frozen=True)
class Bucket:
    name: str
    created: float
    region: str
    versioning: str = ""  # "", "Enabled" or "Suspended"
    notification: str | None = None  # the NotificationConfiguration document (JSON), as stored


@dataclasses.dataclass(frozen=True)
class ObjectRecord:
    """One object (the current version of a key). ``etag`` is quoted, as S3 sends it. ``headers``: the
    standard headers stored with it (Content-Type, Cache-Control, ...), ``metadata``: x-amz-meta-* (names
    without the prefix), ``checksums``: algorithm -> base64 value. The bytes are ``inline`` or in the blob
    ``blob``."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: float
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    inline: bytes | None = None
    blob: str | None = None
    version_id: str = "null"
    parts: int = 0  # multipart: how many parts (the ETag's -N)

    def doc(self) -> str:
        return json.dumps(
            {"headers": dict(self.headers), "metadata": dict(self.metadata), "checksums": dict(self.checksums)},
            separators=(",", ":"),
        )


@dataclasses.dataclass(frozen=True)
class Upload:
    """A multipart upload in progress: what CreateMultipartUpload was given for the object it will make."""

    upload_id: str
    bucket: str
    key: str
    initiated: float
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksum_algorithm: str | None = None


@dataclasses.dataclass(frozen=True)
class Part:
    upload_id: str
    number: int
    size: int
    etag: str  # quoted
    last_modified: float
    blob: str
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Listing:
    objects: list[ObjectRecord]
    truncated: bool


class ObjectMetadataStore(Protocol):
    async def create_bucket(self, bucket: Bucket) -> bool:
        """False when a bucket of that name exists already (nothing changed)."""

    async def get_bucket(self, name: str) -> Bucket | None: ...

    async def list_buckets(self) -> list[Bucket]: ...

    async def update_bucket(self, bucket: Bucket) -> None:
        """Its versioning and notification configuration."""

    async def delete_bucket(self, name: str) -> bool:
        """False (nothing changed) when the bucket holds objects or uploads."""

    async def put_object(self, record: ObjectRecord, events: list[StoredEvent]) -> ObjectRecord | None:
        """Make ``record`` the key's object, and accept ``events`` in the same transaction. Returns the object
        it replaced (whose blob the caller may now delete), if any."""

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None: ...

    async def delete_object(self, bucket: str, key: str, events: list[StoredEvent]) -> ObjectRecord | None:
        """Remove the key's object (and accept ``events``) in one transaction; the removed one, if any."""

    async def list_objects(self, bucket: str, prefix: str, after: str, limit: int) -> Listing:
        """Objects whose key starts with ``prefix`` and sorts after ``after`` (UTF-8 binary order, as S3
        sorts), at most ``limit`` of them."""

    async def create_upload(self, upload: Upload) -> None: ...

    async def get_upload(self, upload_id: str) -> Upload | None: ...

    async def list_uploads(self, bucket: str) -> list[Upload]: ...

    async def put_part(self, part: Part) -> Part | None:
        """Record a part (replacing the same number's: returned, for its blob to be deleted)."""

    async def list_parts(self, upload_id: str) -> list[Part]: ...

    async def complete_upload(
        self, upload_id: str, record: ObjectRecord, events: list[StoredEvent]
    ) -> tuple[ObjectRecord | None, list[Part]]:
        """In one transaction: the upload and its parts go, ``record`` becomes the key's object, ``events``
        are accepted. Returns the replaced object and the upload's parts (whose unused blobs may go)."""

    async def abort_upload(self, upload_id: str) -> list[Part]:
        """The upload and its parts go; returns the parts."""

    async def blobs_in_use(self) -> set[str]:
        """Every blob a row names (for the start-up sweep)."""


class BlobStore(Protocol):
    def writer(self) -> BlobWriter:
        """A new blob, written in order; invisible until ``commit``."""

    async def read(self, blob: str, start: int, end: int) -> AsyncIterator[bytes]:
        """An async iterator of the blob's bytes [start, end)."""

    async def open(self, blob: str) -> int | None:
        """An open file descriptor of the blob's bytes for the caller to read (with ``sendfile``) and close,
        readable to the end even if the blob is deleted meanwhile; None when blobs are not local files."""

    async def delete(self, blobs: list[str]) -> None: ...

    async def open_and_sweep(self, in_use: set[str]) -> int:
        """Ready the store; remove unfinished writes and blobs nobody names; how many went."""


class BlobWriter(Protocol):
    blob: str
    size: int

    async def write(self, data: bytes) -> None:
        """Append ``data``, in order (it may be written later, off the event loop: by ``commit`` at the
        latest); ``data`` must not change afterwards."""

    async def commit(self) -> None:
        """Synced and in place under ``blob``."""

    async def discard(self) -> None: ...
