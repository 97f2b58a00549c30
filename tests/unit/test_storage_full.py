"""A full disk, component by component: the metadata store, the code store and metering refuse cleanly,
leave nothing half-written, and work again once there is space; the API maps what escapes to AWS's 500."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from selfless import errors
from selfless.api import errors as wire_errors
from selfless.artifacts import local
from selfless.artifacts.local import LocalCodeStore
from selfless.observability import metering
from selfless.observability.metering import Meter
from selfless.store.base import StoredEvent
from selfless.store.sqlite import SqliteStore

FULL = OSError(errno.ENOSPC, "No space left on device")


def event(i: int, size: int = 0) -> StoredEvent:
    return StoredEvent(f"e-{i}", "f", None, b"x" * size, None, float(i))


def test_the_store_refuses_when_full_and_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        await store.add_events([event(0)])
        pages = await store._run(lambda: store._db().execute("PRAGMA page_count").fetchone()[0])
        # SQLite's own cap on the file's pages stands in for the disk: past it, SQLITE_FULL.
        await store._run(lambda: store._db().execute(f"PRAGMA max_page_count = {pages + 2}"))
        with pytest.raises(sqlite3.OperationalError) as info:
            await store.add_events([event(1, 100_000), event(2)])
        assert wire_errors.disk_full(info.value)
        assert not await store._run(lambda: store._db().in_transaction)
        assert [e.id for e in await store.list_events()] == ["e-0"], "nothing of the refused group was kept"
        await store._run(lambda: store._db().execute("PRAGMA max_page_count = 1073741823"))
        await store.add_events([event(3, 100_000)])
        await store.settle_event(event(0), [event(4)])
        assert [e.id for e in await store.list_events()] == ["e-3", "e-4"]
        await store.close()

    asyncio.run(scenario())


def package() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
    return buf.getvalue()


def contents(code: LocalCodeStore) -> list[str]:
    return sorted(str(p.relative_to(code.root)) for p in code.root.rglob("*"))


@pytest.mark.parametrize("where", ["unpacking", "writing the blob"])
def test_the_code_store_refuses_when_full_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    code = LocalCodeStore(tmp_path / "code")
    code.open()
    empty = contents(code)

    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise FULL

    with monkeypatch.context() as patch:
        if where == "unpacking":
            patch.setattr(local, "unpack_zip", full)
        else:
            patch.setattr(LocalCodeStore, "_write_blob", full)
        with pytest.raises(errors.CodeStorageExceeded) as info:
            asyncio.run(code.put(package()))
    assert info.value.message == "Code storage limit exceeded: the server's disk has no space left for this package."
    assert isinstance(info.value.__cause__, OSError)
    assert contents(code) == empty, "a refused package leaves nothing behind"
    ref = asyncio.run(code.put(package()))
    assert code.tree(ref.key).is_dir() and code.blob(ref.key).is_file()


def lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(root.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_metering_never_raises_and_writes_what_waited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter(tmp_path / "metering")
    meter.open()
    meter.record(request_id="a")
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        if len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise FULL

    with monkeypatch.context() as patch:
        patch.setattr(metering.os, "write", half_then_full)
        meter.record(request_id="b")  # cut short, taken back: no half line on disk
        meter.record(request_id="c")
    assert [r["request_id"] for r in lines(meter.root)] == ["a"]
    meter.record(request_id="d")
    assert [r["request_id"] for r in lines(meter.root)] == ["a", "b", "c", "d"]
    meter.close()


def test_metering_waits_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter(tmp_path / "metering")
    meter.open()

    def full(*_args: Any) -> None:
        raise FULL

    monkeypatch.setattr(metering, "MAX_WAITING", 3)
    with monkeypatch.context() as patch:
        patch.setattr(metering, "_append", full)
        for i in range(5):
            meter.record(request_id=str(i))
    assert meter.dropped == 2
    meter.close()
    assert [r["request_id"] for r in lines(meter.root)] == ["2", "3", "4"]


def test_unexpected_errors_become_aws_500s() -> None:
    try:
        raise errors.ServiceError("wrapped") from OSError(errno.EDQUOT, "Disk quota exceeded")
    except errors.ServiceError as exc:
        chained = exc
    full = wire_errors.unexpected(FULL)
    assert type(full) is errors.ServiceError and wire_errors.status_of(full) == 500
    assert full.message == wire_errors.DISK_FULL
    assert wire_errors.unexpected(chained).message == wire_errors.DISK_FULL
    assert wire_errors.unexpected(sqlite3.OperationalError("database is locked")).message == wire_errors.INTERNAL
    assert wire_errors.unexpected(KeyError("x")).message == "The Lambda service encountered an internal error."
    logs = wire_errors.unexpected(FULL, "logs")
    assert logs.aws_type == "ServiceUnavailableException" and "data disk is full" in logs.message
    response = wire_errors.rest_json(full, "rid")
    assert response.status == 500 and ("x-amzn-ErrorType", "ServiceException") in response.headers


def test_an_invocation_record_is_the_json_record_would_write(tmp_path: Path) -> None:
    meter = Meter(tmp_path / "metering")
    meter.open()
    fields: dict[str, Any] = {
        "function": 'odd"name\\é',
        "version": "$LATEST",
        "request_id": "6f1c0a3e-1111-4222-8333-444455556666",
        "environment": "ab" * 16,
        "duration_ms": 0.412,
        "billed_ms": 1,
        "memory_mb": 128,
        "max_memory_used_mb": 23,
        "init_ms": None,
        "platform_init_ms": 1.5,
        "outcome": "response",
    }
    meter.invocation(**fields)
    meter.record(**fields)
    meter.close()
    (day,) = (tmp_path / "metering").iterdir()
    fast, generic = (json.loads(line) for line in day.read_text().splitlines())
    assert fast.pop("time") == pytest.approx(generic.pop("time"), abs=1)
    assert fast == generic == fields
