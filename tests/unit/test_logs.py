"""Log streams keep lines in memory until the store's next flush, which hands them to the store's writer
thread, which creates the file: no file is made on a cold start's path (nor on the event loop), readers still
see every line written, and memory stays bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from selfless.observability import logs
from selfless.observability.logs import LogStore


def log_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.log"))


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_lines_reach_disk_at_the_flush_and_readers_see_them_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path)
        store.open()
        stream = store.stream("fn", "2026/11/23/[$LATEST]abc")
        stream.write("INIT_START", timestamp_ms=1)
        assert not log_files(tmp_path), "no file is made on the write's path"
        # A reader waits for the writer first: the group and its line are there.
        await store.synced()
        assert store.has_group("fn")
        assert [e.message for e in store.events("fn")] == ["INIT_START"]
        stream.write("later", timestamp_ms=2)
        await asyncio.sleep(logs._FLUSH_S * 3)  # the store's own flush, without a reader
        (path,) = log_files(tmp_path)
        assert lines_of(path) == ["1\tINIT_START", "2\tlater"]
        stream.close()

    asyncio.run(scenario())


def test_a_chatty_stream_is_written_out_before_the_flush(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path)
        stream = store.stream("fn", "s")
        for i in range(logs._MAX_PENDING):
            stream.write(f"line {i}", timestamp_ms=i)
        store.wait_written()  # the writer thread's work so far, not the store's flush
        (path,) = log_files(tmp_path)
        assert len(lines_of(path)) == logs._MAX_PENDING
        stream.close()

    asyncio.run(scenario())


def test_a_deleted_group_comes_back_with_later_lines_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path)
        stream = store.stream("fn", "s")
        stream.write("before", timestamp_ms=1)
        store.delete_group("fn")
        assert not store.has_group("fn")
        stream.write("after", timestamp_ms=2)
        await store.synced()
        assert [e.message for e in store.events("fn")] == ["after"]
        stream.close()

    asyncio.run(scenario())


def test_files_are_made_by_the_writer_thread_not_the_caller(tmp_path: Path) -> None:
    import threading

    store = LogStore(tmp_path)
    made_on: list[str] = []
    real_open = logs.open if hasattr(logs, "open") else open

    def spy(*args: object, **kwargs: object) -> object:
        made_on.append(threading.current_thread().name)
        return real_open(*args, **kwargs)  # type: ignore[call-overload]

    async def scenario() -> None:
        stream = store.stream("fn", "s")
        stream.write("one", timestamp_ms=1)
        stream.flush()
        store.wait_written()
        stream.close()
        store.close()

    logs.open = spy  # type: ignore[attr-defined]
    try:
        asyncio.run(scenario())
    finally:
        del logs.open  # type: ignore[attr-defined]
    assert made_on and all(name.startswith("logs") for name in made_on), made_on
    (path,) = log_files(tmp_path)
    assert lines_of(path) == ["1\tone"]
