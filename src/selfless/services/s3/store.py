"""The built-in object store's state: bucket and object metadata behind ``ObjectMetadataStore`` (SQLite today,
in the same database as the rest, so an object and its notifications' events commit together), and the
bytes behind ``BlobStore`` (a local directory today; an S3-compatible store for the cluster mode).

Versions: a key's current version lives apart from its older ones (``versioning`` says how a write treats
the one it replaces, as S3's bucket versioning states do); a delete marker is a version with no bytes.

Every write is durable when it returns. An object's bytes are written and synced first (under a name of
their own, never overwritten), then its metadata row commits: a reader never sees a partial object, and a
crash in between leaves a blob no row names, which ``BlobStore.sweep`` removes at the next start.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping, Sequence
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
    """One version of a key. ``etag`` is quoted, as S3 sends it. ``headers``: the standard headers stored with
    it (Content-Type, Cache-Control, ...), ``metadata``: x-amz-meta-* (names without the prefix),
    ``checksums``: algorithm -> base64 value, ``tags``: its tag set. The bytes are ``inline`` or in the blob
    ``blob``. ``version_id`` is "null" unless the bucket's versioning was Enabled when it was written; a
    ``delete_marker`` has no bytes."""

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
    delete_marker: bool = False
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def doc(self) -> str:
        doc = {"headers": dict(self.headers), "metadata": dict(self.metadata), "checksums": dict(self.checksums)}
        if self.tags:
            doc["tags"] = dict(self.tags)
        return json.dumps(doc, separators=(",", ":"))


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
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


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


@dataclasses.dataclass(frozen=True)
class VersionListing:
    """Versions in S3's order (key ascending, then newest first), each with whether it is the key's current
    one."""

    versions: list[tuple[ObjectRecord, bool]]
    truncated: bool


class ObjectMetadataStore(Protocol):
    async def create_bucket(self, bucket: Bucket) -> bool:
        """False when a bucket of that name exists already (nothing changed)."""

    async def get_bucket(self, name: str) -> Bucket | None: ...

    async def list_buckets(self) -> list[Bucket]: ...

    async def update_bucket(self, bucket: Bucket, events: Sequence[StoredEvent] = ()) -> None:
        """Its versioning and notification configuration (and accept ``events``, in the same transaction)."""

    async def delete_bucket(self, name: str) -> bool:
        """False (nothing changed) when the bucket holds objects (of any version, delete markers too) or uploads."""

    async def put_object(
        self, record: ObjectRecord, events: list[StoredEvent], versioning: str = ""
    ) -> list[ObjectRecord]:
        """Make ``record`` (an object or a delete marker) the key's current version and accept ``events``, in
        one transaction. What happens to the versions already there follows ``versioning``, the bucket's
        state: "" (never enabled) replaces the current one; "Enabled" keeps it as an older version;
        "Suspended" keeps it unless its version is "null", and any older "null" version goes. Returns the
        versions that went (whose blobs the caller may now delete)."""

    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord | None:
        """The key's current version (possibly a delete marker), or the version ``version_id`` names."""

    async def delete_object(self, bucket: str, key: str, events: list[StoredEvent]) -> ObjectRecord | None:
        """Remove the key's current version (and accept ``events``) in one transaction; the removed one, if any.
        For buckets that never had versioning."""

    async def delete_version(
        self, bucket: str, key: str, version_id: str, events: list[StoredEvent]
    ) -> ObjectRecord | None:
        """Remove one version for good (and accept ``events``) in one transaction; when it was the current one,
        the newest older version becomes current. The removed version, or None (nothing changed)."""

    async def set_tags(
        self, bucket: str, key: str, version_id: str | None, tags: Mapping[str, str], events: list[StoredEvent]
    ) -> ObjectRecord | None:
        """Replace a version's tag set (the current version's when ``version_id`` is None) and accept ``events``,
        in one transaction; the changed record, or None (nothing changed) when there is no such version."""

    async def list_objects(self, bucket: str, prefix: str, after: str, limit: int) -> Listing:
        """Current versions that are not delete markers whose key starts with ``prefix`` and sorts after
        ``after`` (UTF-8 binary order, as S3 sorts), at most ``limit`` of them."""

    async def list_versions(
        self, bucket: str, prefix: str, key_after: str, version_after: str | None, limit: int
    ) -> VersionListing:
        """Every version (delete markers too) of keys starting with ``prefix``, in S3's order, starting after
        the version ``version_after`` of ``key_after`` (after every version of ``key_after`` when it is None),
        at most ``limit`` of them."""

    async def create_upload(self, upload: Upload) -> None: ...

    async def get_upload(self, upload_id: str) -> Upload | None: ...

    async def list_uploads(self, bucket: str) -> list[Upload]: ...

    async def put_part(self, part: Part) -> Part | None:
        """Record a part (replacing the same number's: returned, for its blob to be deleted)."""

    async def list_parts(self, upload_id: str) -> list[Part]: ...

    async def complete_upload(
        self, upload_id: str, record: ObjectRecord, events: list[StoredEvent], versioning: str = ""
    ) -> tuple[list[ObjectRecord], list[Part]]:
        """In one transaction: the upload and its parts go, ``record`` becomes the key's current version (as
        ``put_object`` makes it), ``events`` are accepted. Returns the versions that went and the upload's
        parts (whose unused blobs may go)."""

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

    async def append_blob(self, blob: str, size: int) -> None:
        """Append the whole of another blob of the same store (``size`` bytes), in order with ``write``s,
        without passing its bytes through this process where the store can avoid it."""

    async def commit(self) -> None:
        """Synced and in place under ``blob``."""

    async def discard(self) -> None: ...
