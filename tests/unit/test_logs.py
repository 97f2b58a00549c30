"""The log store: lines kept in memory until the store's next flush hands them to its writer thread (which makes
the files: none on a cold start's path, nor on the event loop), memory bounded by a backlog that tells feeders to
wait, a group's disk use bounded by its cap and its retention, and nothing lost without being counted and said."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from selfless.invocation.inflight import Invocation, Outcome, OutcomeKind
from selfless.observability import logs
from selfless.observability.logs import MAX_EVENT_BYTES, LogStore, cut_events


def log_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.log"))


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


class Drops:
    """An ``on_dropped`` that adds up what the store reports, by kind."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def __call__(self, kind: str, lines: int, size: int) -> None:
        counts = self.counts.setdefault(kind, [0, 0])
        counts[0] += lines
        counts[1] += size


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
        store.wait_written()
        (path,) = log_files(tmp_path)
        assert lines_of(path) == ["1\tINIT_START", "2\tlater"]
        stream.close()
        store.close()

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


def test_files_are_made_by_the_writer_thread_not_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LogStore(tmp_path)
    made_on: list[str] = []
    real_open = logs._open_segment

    def spy(path: Path) -> int:
        made_on.append(threading.current_thread().name)
        return real_open(path)

    async def scenario() -> None:
        stream = store.stream("fn", "s")
        stream.write("one", timestamp_ms=1)
        stream.flush()
        store.wait_written()
        stream.close()
        store.close()

    monkeypatch.setattr(logs, "_open_segment", spy)
    asyncio.run(scenario())
    assert made_on and all(name.startswith("logs") for name in made_on), made_on
    (path,) = log_files(tmp_path)
    assert lines_of(path) == ["1\tone"]


# -- events from a runtime's output -----------------------------------------------------------------------------


def test_output_is_cut_into_one_event_per_line_and_the_rest_is_kept() -> None:
    events, rest = cut_events(b"one\r\ntwo\n\nthree", complete=False)
    assert events == ["one", "two", ""]
    assert rest == b"three"
    events, rest = cut_events(rest + b" more", complete=True)
    assert events == ["three more"]
    assert rest == b""
    events, rest = cut_events(b"bad \xff byte\n\xe2\x82", complete=False)
    assert events == ["bad \ufffd byte"]
    assert rest == b"\xe2\x82", "half a character waits for the rest of it"


def test_a_line_over_the_event_limit_is_split_between_characters_as_lambda_splits_it() -> None:
    line = ("ab€" * 200_000).encode()  # 1 MB: 5 bytes per 3 characters
    events, rest = cut_events(line + b"\n", complete=False)
    assert rest == b""
    assert len(events) == 4
    assert all(len(e.encode()) <= MAX_EVENT_BYTES for e in events)
    assert len(events[0].encode()) >= MAX_EVENT_BYTES - 3
    assert "".join(events).encode() == line


def test_an_unfinished_line_is_never_held_past_one_event() -> None:
    events: list[str] = []
    rest = b""
    for _ in range(40):  # 2.6 MB without a newline, 64 KiB at a time
        more, rest = cut_events(rest + b"x" * 65536, complete=False)
        events += more
        assert len(rest) <= MAX_EVENT_BYTES
    more, rest = cut_events(rest, complete=True)
    events += more
    assert rest == b""
    assert all(len(e) == MAX_EVENT_BYTES for e in events[:-1])
    assert sum(len(e) for e in events) == 40 * 65536


def test_the_tail_of_an_invocation_keeps_only_its_last_4_kb() -> None:
    async def scenario() -> None:
        inv = Invocation("r", b"", function_arn="arn", timeout_s=3, client_context=None, trace_id="t", tail=True)
        everything: list[str] = []
        for i in range(20_000):
            line = f"line {i} " + "é" * (i % 50)
            inv.log_lines.append(line)
            everything.append(line)
        inv.log_lines.extend(["x" * 10_000, "short"])
        everything += ["x" * 10_000, "short"]
        burst = [f"b{i}" for i in range(50_000)]
        inv.log_lines.extend(burst)
        everything += burst
        kept = tuple(inv.log_lines)
        assert len(kept) <= 4096
        assert sum(len(line) for line in kept) < 2 * 4096
        outcome = Outcome(OutcomeKind.RESPONSE, log_lines=kept)
        whole = ("\n".join(everything) + "\n").encode()[-4096:]
        assert base64.b64decode(outcome.log_tail) == whole
        # A call that did not ask for its tail keeps none of it.
        plain = Invocation("r", b"", function_arn="arn", timeout_s=3, client_context=None, trace_id="t")
        plain.log_lines.append("a line")
        plain.log_lines.extend(["more"] * 3)
        assert tuple(plain.log_lines) == ()

    asyncio.run(scenario())


# -- bounds -----------------------------------------------------------------------------------------------------


def test_a_group_over_its_cap_loses_its_oldest_segments_and_says_so(tmp_path: Path) -> None:
    drops = Drops()
    cap = 1 << 20
    store = LogStore(tmp_path, group_max_bytes=cap, on_dropped=drops)
    first = store.stream("/aws/lambda/fn", "2026/01/01/[$LATEST]a")
    second = store.stream("/aws/lambda/fn", "2026/01/01/[$LATEST]b")
    first.write("from the first environment", timestamp_ms=1)
    first.close()
    store.wait_written()
    written = 0
    for i in range(50_000):  # ~5 MB
        second.write_lines([f"{i:08d} " + "y" * 90], timestamp_ms=10 + i)
        written += 1
    second.close()
    store.sync()
    total = sum(p.stat().st_size for p in log_files(tmp_path))
    assert total <= cap + (256 << 10)
    assert len(log_files(tmp_path)) < 20, "few large segments, not many small files"
    events = store.events("/aws/lambda/fn")
    assert "from the first environment" not in [e.message for e in events], "the oldest went first"
    kept = [e.message for e in events if not e.message.startswith("Some logs were dropped")]
    numbers = [int(m.split()[0]) for m in kept]
    assert numbers == list(range(numbers[0], written)), "what is kept is the newest, whole and in order"
    notices = [e.message for e in events if e.message.startswith("Some logs were dropped")]
    assert notices and "reached its size limit of 1 MB" in notices[-1]
    lines, size = drops.counts["group_cap"]
    # Everything missing was counted: the first environment's line, the second's oldest, and the notices that
    # went with their segments.
    assert lines >= written - len(kept) + 1
    assert lines <= written - len(kept) + 1 + len(notices) + 50
    assert size > 4 * cap
    store.close()


def test_a_failed_write_is_counted_then_said_once_writing_works_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = Drops()
    store = LogStore(tmp_path, on_dropped=drops)
    stream = store.stream("/aws/lambda/fn", "s")
    stream.write("kept", timestamp_ms=1)
    store.sync()

    class FillingDisk:
        """``os`` for the log module, on a disk that takes half a write, then is full."""

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def write(fd: int, data: memoryview) -> int:
            if len(data) > 1:
                return os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(logs, "os", FillingDisk())
    stream.write_lines(["lost one", "lost two"], timestamp_ms=2)
    store.sync()
    assert drops.counts["write_failed"] == [2, len("2\tlost one\n2\tlost two\n")]
    (path,) = log_files(tmp_path)
    assert lines_of(path) == ["1\tkept"], "no half line is left behind"
    monkeypatch.setattr(logs, "os", os)
    stream.write("after", timestamp_ms=3)
    store.sync()
    messages = [e.message for e in store.events("/aws/lambda/fn")]
    assert messages == [
        "kept",
        "Some logs were dropped because they could not be written: No space left on device "
        "(droppedRecords: 2, droppedBytes: 22)",
        "after",
    ]
    stream.close()
    store.close()


def test_an_owed_notice_is_written_without_new_lines_and_as_json_in_the_json_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LogStore(tmp_path)
    stream = store.stream("/aws/lambda/fn", "s", json_format=True)
    real_open = logs._open_segment

    def full(path: Path) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(logs, "_open_segment", full)
    stream.write("lost", timestamp_ms=1)
    stream.close()
    store.sync()
    assert not log_files(tmp_path)
    monkeypatch.setattr(logs, "_open_segment", real_open)
    store.close()  # the last step says what is owed
    ((_, line),) = [line.split("\t", 1) for line in lines_of(log_files(tmp_path)[0])]
    record = json.loads(line)
    assert record["type"] == "platform.logsDropped"
    assert record["record"] == {
        "reason": "Some logs were dropped because they could not be written: No space left on device",
        "droppedRecords": 1,
        "droppedBytes": len("1\tlost\n"),
    }


def test_past_its_backlog_the_store_says_wait_and_wakes_feeders_once_it_has_drained(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path)
        store.open()
        stream = store.stream("/aws/lambda/fn", "s")
        gate = threading.Event()
        store.submit(lambda: gate.wait(30) and None)  # the writer is held up (a slow disk)
        line = "z" * 1000
        while not stream.congested:
            stream.write_lines([line] * 64)
        assert store.backlog > logs.BACKLOG_HIGH
        woken = asyncio.Event()
        stream.when_drained(woken.set)
        await asyncio.sleep(0.1)
        assert not woken.is_set()
        gate.set()
        stream.flush()
        async with asyncio.timeout(30):
            await woken.wait()
        assert store.backlog <= logs.BACKLOG_LOW
        stream.close()
        store.close()

    asyncio.run(scenario())


def test_output_offered_past_the_hard_bound_is_counted_and_said(tmp_path: Path) -> None:
    drops = Drops()
    store = LogStore(tmp_path, on_dropped=drops)
    stream = store.stream("/aws/lambda/fn", "s")
    stream.drop(3, 300)
    stream.write("next", timestamp_ms=5)
    store.sync()
    assert drops.counts["backlog"] == [3, 300]
    assert [e.message for e in store.events("/aws/lambda/fn")] == [
        f"{logs.SLOWER_CONSUMER} (droppedRecords: 3, droppedBytes: 300)",
        "next",
    ]
    store.close()


def test_retention_is_kept_across_restarts_and_the_sweep_deletes_what_is_past_it(tmp_path: Path) -> None:
    now = time.time()
    drops = Drops()

    async def put() -> None:
        store = LogStore(tmp_path)
        store.open()
        old = store.stream("/aws/lambda/fn", "2026/01/01/[$LATEST]old")
        new = store.stream("/aws/lambda/fn", "2026/01/03/[$LATEST]new")
        old.write("two days ago")
        new.write("today")
        old.close()
        new.close()
        await store.synced()
        await store.set_retention("/aws/lambda/fn", 1)
        await store.set_retention("/aws/lambda/other", 7)
        await store.set_retention("/aws/lambda/other", None)
        store.close()

    asyncio.run(put())
    (old_file,) = [p for p in log_files(tmp_path) if "old" in p.name]
    old_size = old_file.stat().st_size
    os.utime(old_file, (now - 2 * 86_400, now - 2 * 86_400))

    async def restart() -> None:
        store = LogStore(tmp_path, on_dropped=drops)
        store.open()  # sweeps at once
        assert store.retention("/aws/lambda/fn") == 1
        assert store.retention("/aws/lambda/other") is None
        await store.synced()
        assert [e.message for e in store.events("/aws/lambda/fn")] == ["today"]
        store.close()

    asyncio.run(restart())
    assert drops.counts["retention"] == [1, old_size]
    assert not old_file.exists()


def test_readers_page_through_streams_in_time_order_with_bounded_pages(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    a = store.stream("/aws/lambda/fn", "a")
    b = store.stream("/aws/lambda/fn", "b")
    for i in range(100):
        (a if i % 2 else b).write(f"event {i}", timestamp_ms=1000 + i)
    store.sync()
    seen: list[str] = []
    after = None
    while True:
        page = store.events("/aws/lambda/fn", after=after, limit=7)
        if not page:
            break
        assert len(page) <= 7
        seen += [e.message for e in page]
        after = page[-1].key
    assert seen == [f"event {i}" for i in range(100)]
    assert [e.message for e in store.events("/aws/lambda/fn", start_ms=1095, pattern="7")] == ["event 97"]
    a.close()
    b.close()
    store.close()
