"""``ObjectMetadataStore`` on the server's SQLite database (the same connection and thread as the rest, so an
object's row and its notifications' events commit in one transaction)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from selfless.services.s3.store import Bucket, Listing, ObjectRecord, Part, Upload, VersionListing
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore, insert_events, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS s3_buckets (
    name         TEXT PRIMARY KEY,
    created      REAL NOT NULL,
    region       TEXT NOT NULL,
    versioning   TEXT NOT NULL DEFAULT '',
    notification TEXT
);
CREATE TABLE IF NOT EXISTS s3_objects (
    bucket        TEXT NOT NULL,
    key           BLOB NOT NULL,
    version_id    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT NOT NULL,
    last_modified REAL NOT NULL,
    doc           TEXT NOT NULL,
    inline        BLOB,
    blob          TEXT,
    parts         INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key)
);
-- A key's older versions (the current one is in s3_objects); seq grows with each, so newest first is seq DESC.
CREATE TABLE IF NOT EXISTS s3_versions (
    seq           INTEGER PRIMARY KEY,
    bucket        TEXT NOT NULL,
    key           BLOB NOT NULL,
    version_id    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT NOT NULL,
    last_modified REAL NOT NULL,
    doc           TEXT NOT NULL,
    inline        BLOB,
    blob          TEXT,
    parts         INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (bucket, key, version_id)
);
CREATE TABLE IF NOT EXISTS s3_uploads (
    upload_id TEXT PRIMARY KEY,
    bucket    TEXT NOT NULL,
    key       BLOB NOT NULL,
    initiated REAL NOT NULL,
    doc       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS s3_parts (
    upload_id     TEXT NOT NULL,
    number        INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT NOT NULL,
    last_modified REAL NOT NULL,
    blob          TEXT NOT NULL,
    checksums     TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
);
"""

# Keys are stored as their UTF-8 bytes (BLOB): SQLite orders BLOBs bytewise, which is S3's listing order.
_OBJECT_COLUMNS = "bucket, key, version_id, size, etag, last_modified, doc, inline, blob, parts, deleted"
# The current version sorts before every older one of its key (older ones by -seq).
_CURRENT_ORDER = -(1 << 62)


def _object_row(r: ObjectRecord) -> tuple[Any, ...]:
    return (
        r.bucket,
        r.key.encode("utf-8", "surrogatepass"),
        r.version_id,
        r.size,
        r.etag,
        r.last_modified,
        r.doc(),
        r.inline,
        r.blob,
        r.parts,
        int(r.delete_marker),
    )


def _object_of(row: tuple[Any, ...]) -> ObjectRecord:
    bucket, key, version_id, size, etag, modified, doc, inline, blob, parts, deleted = row
    extra = json.loads(doc)
    return ObjectRecord(
        bucket,
        bytes(key).decode("utf-8", "surrogatepass"),
        size,
        etag,
        modified,
        extra["headers"],
        extra["metadata"],
        extra["checksums"],
        None if inline is None else bytes(inline),
        blob,
        version_id,
        parts,
        bool(deleted),
        extra.get("tags", {}),
    )


def _bucket_of(row: tuple[Any, ...]) -> Bucket:
    return Bucket(*row)


def _upload_of(row: tuple[Any, ...]) -> Upload:
    upload_id, bucket, key, initiated, doc = row
    extra = json.loads(doc)
    return Upload(
        upload_id,
        bucket,
        bytes(key).decode("utf-8", "surrogatepass"),
        initiated,
        extra["headers"],
        extra["metadata"],
        extra.get("checksum_algorithm"),
        extra.get("tags", {}),
    )


def _part_of(row: tuple[Any, ...]) -> Part:
    upload_id, number, size, etag, modified, blob, checksums = row
    return Part(upload_id, number, size, etag, modified, blob, json.loads(checksums))


class SqliteObjectMetadata:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def open(self) -> None:
        def q(db: sqlite3.Connection) -> None:
            db.executescript(_SCHEMA)
            # Databases made before versioning: the current-version table gains its delete-marker flag.
            if "deleted" not in {row[1] for row in db.execute("PRAGMA table_info(s3_objects)")}:
                db.execute("ALTER TABLE s3_objects ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")

        await self._store.call(q)

    # -- buckets ---------------------------------------------------------------------------------------------

    async def create_bucket(self, bucket: Bucket) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO s3_buckets(name, created, region, versioning, notification) VALUES (?,?,?,?,?)",
                (bucket.name, bucket.created, bucket.region, bucket.versioning, bucket.notification),
            )
            return cursor.rowcount == 1

        return await self._store.call(q)

    async def get_bucket(self, name: str) -> Bucket | None:
        def q(db: sqlite3.Connection) -> Bucket | None:
            row = db.execute(
                "SELECT name, created, region, versioning, notification FROM s3_buckets WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else _bucket_of(row)

        return await self._store.call(q)

    async def list_buckets(self) -> list[Bucket]:
        def q(db: sqlite3.Connection) -> list[Bucket]:
            rows = db.execute("SELECT name, created, region, versioning, notification FROM s3_buckets ORDER BY name")
            return [_bucket_of(row) for row in rows]

        return await self._store.call(q)

    async def update_bucket(self, bucket: Bucket, events: Sequence[StoredEvent] = ()) -> None:
        def q(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    "UPDATE s3_buckets SET versioning = ?, notification = ? WHERE name = ?",
                    (bucket.versioning, bucket.notification, bucket.name),
                )
                if events:
                    insert_events(db, list(events))

        await self._store.call(q)

    async def delete_bucket(self, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with transaction(db):
                if db.execute("SELECT 1 FROM s3_objects WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                    return False
                if db.execute("SELECT 1 FROM s3_versions WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                    return False
                if db.execute("SELECT 1 FROM s3_uploads WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                    return False
                db.execute("DELETE FROM s3_buckets WHERE name = ?", (name,))
                return True

        return await self._store.call(q)

    # -- objects ---------------------------------------------------------------------------------------------

    @staticmethod
    def _current(db: sqlite3.Connection, bucket: str, key: str) -> ObjectRecord | None:
        row = db.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ? AND key = ?",
            (bucket, key.encode("utf-8", "surrogatepass")),
        ).fetchone()
        return None if row is None else _object_of(row)

    @staticmethod
    def _older(db: sqlite3.Connection, bucket: str, key: str, version_id: str) -> ObjectRecord | None:
        row = db.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM s3_versions WHERE bucket = ? AND key = ? AND version_id = ?",
            (bucket, key.encode("utf-8", "surrogatepass"), version_id),
        ).fetchone()
        return None if row is None else _object_of(row)

    @staticmethod
    def _replace(db: sqlite3.Connection, record: ObjectRecord) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO s3_objects({_OBJECT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            _object_row(record),
        )

    @staticmethod
    def _archive(db: sqlite3.Connection, record: ObjectRecord) -> None:
        db.execute(f"INSERT INTO s3_versions({_OBJECT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", _object_row(record))

    def _install(self, db: sqlite3.Connection, record: ObjectRecord, versioning: str) -> list[ObjectRecord]:
        """``record`` made current, the versions it replaces kept or removed as ``versioning`` says."""
        gone: list[ObjectRecord] = []
        old = self._current(db, record.bucket, record.key)
        if old is not None:
            if versioning == "Enabled" or (versioning == "Suspended" and old.version_id != "null"):
                self._archive(db, old)
            else:
                gone.append(old)
        if versioning == "Suspended":
            older_null = self._older(db, record.bucket, record.key, "null")
            if older_null is not None:
                db.execute(
                    "DELETE FROM s3_versions WHERE bucket = ? AND key = ? AND version_id = 'null'",
                    (record.bucket, record.key.encode("utf-8", "surrogatepass")),
                )
                gone.append(older_null)
        self._replace(db, record)
        return gone

    async def put_object(
        self, record: ObjectRecord, events: list[StoredEvent], versioning: str = ""
    ) -> list[ObjectRecord]:
        def q(db: sqlite3.Connection) -> list[ObjectRecord]:
            with transaction(db):
                gone = self._install(db, record, versioning)
                if events:
                    insert_events(db, events)
                return gone

        return await self._store.call(q)

    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord | None:
        def q(db: sqlite3.Connection) -> ObjectRecord | None:
            current = self._current(db, bucket, key)
            if version_id is None or (current is not None and current.version_id == version_id):
                return current
            return self._older(db, bucket, key, version_id)

        return await self._store.call(q)

    async def delete_object(self, bucket: str, key: str, events: list[StoredEvent]) -> ObjectRecord | None:
        def q(db: sqlite3.Connection) -> ObjectRecord | None:
            with transaction(db):
                old = self._current(db, bucket, key)
                if old is not None:
                    db.execute(
                        "DELETE FROM s3_objects WHERE bucket = ? AND key = ?",
                        (bucket, key.encode("utf-8", "surrogatepass")),
                    )
                if events:
                    insert_events(db, events)
                return old

        return await self._store.call(q)

    async def delete_version(
        self, bucket: str, key: str, version_id: str, events: list[StoredEvent]
    ) -> ObjectRecord | None:
        encoded = key.encode("utf-8", "surrogatepass")

        def q(db: sqlite3.Connection) -> ObjectRecord | None:
            with transaction(db):
                current = self._current(db, bucket, key)
                if current is not None and current.version_id == version_id:
                    db.execute("DELETE FROM s3_objects WHERE bucket = ? AND key = ?", (bucket, encoded))
                    row = db.execute(
                        f"SELECT seq, {_OBJECT_COLUMNS} FROM s3_versions WHERE bucket = ? AND key = ?"
                        " ORDER BY seq DESC LIMIT 1",
                        (bucket, encoded),
                    ).fetchone()
                    if row is not None:  # the newest older version becomes current
                        db.execute("DELETE FROM s3_versions WHERE seq = ?", (row[0],))
                        self._replace(db, _object_of(row[1:]))
                    gone = current
                else:
                    found = self._older(db, bucket, key, version_id)
                    if found is None:
                        return None
                    db.execute(
                        "DELETE FROM s3_versions WHERE bucket = ? AND key = ? AND version_id = ?",
                        (bucket, encoded, version_id),
                    )
                    gone = found
                if events:
                    insert_events(db, events)
                return gone

        return await self._store.call(q)

    async def set_tags(
        self, bucket: str, key: str, version_id: str | None, tags: Mapping[str, str], events: list[StoredEvent]
    ) -> ObjectRecord | None:
        encoded = key.encode("utf-8", "surrogatepass")

        def q(db: sqlite3.Connection) -> ObjectRecord | None:
            with transaction(db):
                current = self._current(db, bucket, key)
                if current is not None and version_id in (None, current.version_id):
                    changed = dataclasses.replace(current, tags=dict(tags))
                    db.execute(
                        "UPDATE s3_objects SET doc = ? WHERE bucket = ? AND key = ?", (changed.doc(), bucket, encoded)
                    )
                    if events:
                        insert_events(db, events)
                    return changed
                if version_id is None:
                    return None
                older = self._older(db, bucket, key, version_id)
                if older is None:
                    return None
                changed = dataclasses.replace(older, tags=dict(tags))
                db.execute(
                    "UPDATE s3_versions SET doc = ? WHERE bucket = ? AND key = ? AND version_id = ?",
                    (changed.doc(), bucket, encoded, version_id),
                )
                if events:
                    insert_events(db, events)
                return changed

        return await self._store.call(q)

    async def list_objects(self, bucket: str, prefix: str, after: str, limit: int) -> Listing:
        low = max(prefix.encode("utf-8", "surrogatepass"), after.encode("utf-8", "surrogatepass"))
        encoded_prefix = prefix.encode("utf-8", "surrogatepass")

        def q(db: sqlite3.Connection) -> Listing:
            # Past the prefix, keys are > low; the prefix bound is checked in Python (no upper bound in SQL
            # that is right for every byte), with the scan ending at the first key past the prefix.
            op = ">" if after.encode("utf-8", "surrogatepass") >= encoded_prefix and after else ">="
            rows = db.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ? AND key {op} ? AND deleted = 0"
                " ORDER BY key LIMIT ?",
                (bucket, low, limit + 1),
            ).fetchall()
            out: list[ObjectRecord] = []
            for row in rows:
                if not bytes(row[1]).startswith(encoded_prefix):
                    return Listing(out, False)
                out.append(_object_of(row))
            truncated = len(out) > limit
            return Listing(out[:limit], truncated)

        return await self._store.call(q)

    async def list_versions(
        self, bucket: str, prefix: str, key_after: str, version_after: str | None, limit: int
    ) -> VersionListing:
        encoded_prefix = prefix.encode("utf-8", "surrogatepass")
        after = key_after.encode("utf-8", "surrogatepass")

        def q(db: sqlite3.Connection) -> VersionListing:
            # Where the page starts: past every version of key_after, or past one of them.
            order = None
            if key_after and version_after is not None:
                current = self._current(db, bucket, key_after)
                if current is not None and current.version_id == version_after:
                    order = _CURRENT_ORDER
                else:
                    row = db.execute(
                        "SELECT seq FROM s3_versions WHERE bucket = ? AND key = ? AND version_id = ?",
                        (bucket, after, version_after),
                    ).fetchone()
                    order = None if row is None else -row[0]
            args: list[Any]
            if order is None:
                start = "key > ?" if key_after else "key >= ?"
                where, args = f"({start} AND key >= ?)", [after, encoded_prefix]
            else:
                where, args = "(key > ? OR (key = ? AND ord > ?)) AND key >= ?", [after, after, order, encoded_prefix]
            rows = db.execute(
                f"SELECT * FROM (SELECT {_OBJECT_COLUMNS}, 1 AS latest, {_CURRENT_ORDER} AS ord FROM s3_objects"
                f" WHERE bucket = ? UNION ALL SELECT {_OBJECT_COLUMNS}, 0, -seq FROM s3_versions WHERE bucket = ?)"
                f" WHERE {where} ORDER BY key, ord LIMIT ?",
                (bucket, bucket, *args, limit + 1),
            ).fetchall()
            out: list[tuple[ObjectRecord, bool]] = []
            for row in rows:
                if not bytes(row[1]).startswith(encoded_prefix):
                    return VersionListing(out, False)
                out.append((_object_of(row[:-2]), bool(row[-2])))
            return VersionListing(out[:limit], len(out) > limit)

        return await self._store.call(q)

    # -- multipart -------------------------------------------------------------------------------------------

    async def create_upload(self, upload: Upload) -> None:
        doc = json.dumps(
            {
                "headers": dict(upload.headers),
                "metadata": dict(upload.metadata),
                "checksum_algorithm": upload.checksum_algorithm,
                "tags": dict(upload.tags),
            }
        )
        await self._store.call(
            lambda db: (
                db.execute(
                    "INSERT INTO s3_uploads(upload_id, bucket, key, initiated, doc) VALUES (?,?,?,?,?)",
                    (
                        upload.upload_id,
                        upload.bucket,
                        upload.key.encode("utf-8", "surrogatepass"),
                        upload.initiated,
                        doc,
                    ),
                )
                and None
            )
        )

    async def get_upload(self, upload_id: str) -> Upload | None:
        def q(db: sqlite3.Connection) -> Upload | None:
            row = db.execute(
                "SELECT upload_id, bucket, key, initiated, doc FROM s3_uploads WHERE upload_id = ?", (upload_id,)
            ).fetchone()
            return None if row is None else _upload_of(row)

        return await self._store.call(q)

    async def list_uploads(self, bucket: str) -> list[Upload]:
        def q(db: sqlite3.Connection) -> list[Upload]:
            rows = db.execute(
                "SELECT upload_id, bucket, key, initiated, doc FROM s3_uploads WHERE bucket = ?"
                " ORDER BY key, initiated",
                (bucket,),
            )
            return [_upload_of(row) for row in rows]

        return await self._store.call(q)

    async def put_part(self, part: Part) -> Part | None:
        def q(db: sqlite3.Connection) -> Part | None:
            with transaction(db):
                row = db.execute(
                    "SELECT upload_id, number, size, etag, last_modified, blob, checksums FROM s3_parts"
                    " WHERE upload_id = ? AND number = ?",
                    (part.upload_id, part.number),
                ).fetchone()
                db.execute(
                    "INSERT OR REPLACE INTO s3_parts(upload_id, number, size, etag, last_modified, blob, checksums)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (
                        part.upload_id,
                        part.number,
                        part.size,
                        part.etag,
                        part.last_modified,
                        part.blob,
                        json.dumps(dict(part.checksums)),
                    ),
                )
                return None if row is None else _part_of(row)

        return await self._store.call(q)

    async def list_parts(self, upload_id: str) -> list[Part]:
        def q(db: sqlite3.Connection) -> list[Part]:
            rows = db.execute(
                "SELECT upload_id, number, size, etag, last_modified, blob, checksums FROM s3_parts"
                " WHERE upload_id = ? ORDER BY number",
                (upload_id,),
            )
            return [_part_of(row) for row in rows]

        return await self._store.call(q)

    async def complete_upload(
        self, upload_id: str, record: ObjectRecord, events: list[StoredEvent], versioning: str = ""
    ) -> tuple[list[ObjectRecord], list[Part]]:
        def q(db: sqlite3.Connection) -> tuple[list[ObjectRecord], list[Part]]:
            with transaction(db):
                parts = [
                    _part_of(row)
                    for row in db.execute(
                        "SELECT upload_id, number, size, etag, last_modified, blob, checksums FROM s3_parts"
                        " WHERE upload_id = ? ORDER BY number",
                        (upload_id,),
                    )
                ]
                db.execute("DELETE FROM s3_parts WHERE upload_id = ?", (upload_id,))
                db.execute("DELETE FROM s3_uploads WHERE upload_id = ?", (upload_id,))
                gone = self._install(db, record, versioning)
                if events:
                    insert_events(db, events)
                return gone, parts

        return await self._store.call(q)

    async def abort_upload(self, upload_id: str) -> list[Part]:
        def q(db: sqlite3.Connection) -> list[Part]:
            with transaction(db):
                parts = [
                    _part_of(row)
                    for row in db.execute(
                        "SELECT upload_id, number, size, etag, last_modified, blob, checksums FROM s3_parts"
                        " WHERE upload_id = ?",
                        (upload_id,),
                    )
                ]
                db.execute("DELETE FROM s3_parts WHERE upload_id = ?", (upload_id,))
                db.execute("DELETE FROM s3_uploads WHERE upload_id = ?", (upload_id,))
                return parts

        return await self._store.call(q)

    async def blobs_in_use(self) -> set[str]:
        def q(db: sqlite3.Connection) -> set[str]:
            names = {row[0] for row in db.execute("SELECT blob FROM s3_objects WHERE blob IS NOT NULL")}
            names |= {row[0] for row in db.execute("SELECT blob FROM s3_versions WHERE blob IS NOT NULL")}
            names |= {row[0] for row in db.execute("SELECT blob FROM s3_parts")}
            return names

        return await self._store.call(q)
