"""Function logs: per-function log groups of per-environment log streams, on disk.

Layout: ``<data-dir>/logs/<function-name>/<quoted stream name>.log``, one event per line as
``<epoch ms>\\t<message>``. Messages never hold a newline: output is split into one event per line, as
Lambda's runtimes do. The group name shown through the API is ``/aws/lambda/<function-name>``.

Writers keep lines in memory; the store hands every stream written to within 50 ms (one write for a burst
of invocations) to its writer thread, the only one that touches the files, in order. So creating a stream's
file (a journal write: 0.2-1 ms here) never blocks the event loop, which a burst of cold starts shares.
Operations go to the writer in one batch per event-loop turn: a hand-over per stream cost a burst a future,
a lock and a thread wake-up each, and the GIL back and forth. Readers (the CloudWatch Logs API, ``selfless
logs``) ``await synced()`` first, so they see everything written so far without holding up the event loop
while the writer catches up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

GROUP_PREFIX = "/aws/lambda/"
_FLUSH_S = 0.05
_MAX_PENDING = 512  # lines held in memory per stream between flushes
_SYNC_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)

# Runs a file operation: on the store's writer thread, or at once for a stream without a store.
Submit = Callable[[Callable[[], None]], None]


@dataclasses.dataclass(frozen=True)
class LogEvent:
    timestamp: int  # epoch ms
    message: str
    stream: str
    event_id: str


def stream_name(version: str, env_id: str, now: float | None = None) -> str:
    """AWS's form: ``2026/11/22/[$LATEST]<32 hex>``."""
    day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
    return f"{day}/[{version}]{env_id}"


def _background() -> None:
    """The writer yields to everything else (nice 19, this thread only): under a burst of cold starts the
    CPU goes to the starts, and the log files are made and written in the gaps. Readers wait for it."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _at_once(operation: Callable[[], None]) -> None:
    operation()


def _run_all(operations: list[Callable[[], None]]) -> None:
    for operation in operations:
        operation()


class LogStream:
    """An append-only stream owned by one environment. Not thread-safe; the event loop owns it, and its file
    is touched only by the operations it hands to ``submit`` (the store's writer thread, in order).

    Lines are kept in memory until the next flush, which creates the file on its first run: creating a
    file costs a journal write (0.2-1 ms here), which must not sit on a cold start's path."""

    def __init__(
        self,
        path: Path,
        name: str,
        on_dirty: Callable[[LogStream], None] | None = None,
        submit: Submit = _at_once,
    ) -> None:
        self.name = name
        self._path = path
        self._file: IO[str] | None = None
        self._on_dirty = on_dirty
        self._submit = submit
        self._dirty = False
        self._pending: list[str] = []

    def write(self, message: str, timestamp_ms: int | None = None) -> None:
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._pending.append(f"{ts}\t{message}\n")
        if len(self._pending) >= _MAX_PENDING:
            self.flush()  # a chatty runtime: memory stays bounded
        else:
            self.flush_soon()

    def flush(self) -> None:
        """Hand the lines written so far to the writer."""
        self._dirty = False
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._submit(lambda: self._append(text))

    def _append(self, text: str) -> None:
        """On the writer: the file is made on the first lines (again, if its group was deleted meanwhile)."""
        try:
            if self._file is not None and os.fstat(self._file.fileno()).st_nlink == 0:
                # Its group was deleted: later lines make it again, as on AWS.
                self._file.close()
                self._file = None
            if self._file is None:
                try:
                    self._file = open(self._path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
                except FileNotFoundError:  # the group's first stream (or the group was deleted)
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self._path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            log.error("log stream %s: %d characters could not be written: %s", self.name, len(text), exc)

    def flush_soon(self) -> None:
        """Flush within the store's flush interval (now, when the stream has no store)."""
        if self._on_dirty is None:
            self.flush()
        elif not self._dirty:
            self._dirty = True
            self._on_dirty(self)

    def close(self) -> None:
        """Flush what is pending and close the file (lines written later open it again)."""
        self.flush()
        self._submit(self._close_file)

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirty: list[LogStream] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._batch: list[Callable[[], None]] = []  # operations for the writer, handed over together
        self._hand_over_soon: asyncio.Handle | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="logs", initializer=_background
        )

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def stream(self, group: str, name: str) -> LogStream:
        return LogStream(self._stream_path(group, name), name, self._mark_dirty, self._submit)

    def _submit(self, operation: Callable[[], None]) -> None:
        """Queue a file operation for the writer: on the event loop, with the others of this loop turn."""
        self._batch.append(operation)
        if self._hand_over_soon is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._hand_over()  # no event loop here (a command, a test): at once
                return
            self._hand_over_soon = loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        if self._hand_over_soon is not None:
            self._hand_over_soon.cancel()
            self._hand_over_soon = None
        batch, self._batch = self._batch, []
        if batch:
            self._writer.submit(_run_all, batch)

    async def synced(self) -> None:
        """Every line written so far is in its file when this returns: readers (the logs API) await it
        first. The event loop goes on meanwhile: the writer runs at nice 19, and under a burst of starts
        its backlog can take a while."""
        self.flush_pending()
        self._hand_over()
        async with asyncio.timeout(_SYNC_TIMEOUT_S):
            await asyncio.wrap_future(self._writer.submit(lambda: None))

    def sync(self) -> None:
        """``synced`` for a caller off the event loop or outside one: blocks until the lines are written."""
        self.flush_pending()
        self.wait_written()

    def wait_written(self) -> None:
        """What was handed to the writer so far is in the files when this returns."""
        self._hand_over()
        self._writer.submit(lambda: None).result(timeout=_SYNC_TIMEOUT_S)

    def close(self) -> None:
        """Write out what is pending and stop the writer (the server's last step)."""
        self.flush_pending()
        self._hand_over()
        self._writer.shutdown(wait=True)

    def _mark_dirty(self, stream: LogStream) -> None:
        self._dirty.append(stream)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(_FLUSH_S, self.flush_pending)

    def flush_pending(self) -> None:
        """Hand every stream written to since the last flush to the writer (without waiting for it)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for stream in dirty:
            stream.flush()

    def _group_dir(self, group: str) -> Path:
        function_name = self.function_of_group(group)
        if function_name is not None:
            return self.root / function_name
        return self.root / ("~" + urllib.parse.quote(group, safe=""))

    def _stream_path(self, group: str, name: str) -> Path:
        return self._group_dir(group) / (urllib.parse.quote(name, safe="") + ".log")

    @staticmethod
    def function_of_group(group: str) -> str | None:
        """The function name a log group belongs to, or None when it is not one of ours."""
        if not group.startswith(GROUP_PREFIX):
            return None
        name = group[len(GROUP_PREFIX) :]
        if not name or "/" in name or name.startswith("."):
            return None
        return name

    def groups(self) -> list[tuple[str, int]]:
        """(group name, creation time ms) of every group with at least one stream."""
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if d.is_dir():
                    name = urllib.parse.unquote(d.name[1:]) if d.name.startswith("~") else GROUP_PREFIX + d.name
                    out.append((name, int(d.stat().st_mtime * 1000)))
        return sorted(out)

    def has_group(self, group: str) -> bool:
        return self._group_dir(group).is_dir()

    def streams(self, group: str) -> list[tuple[str, int, int]]:
        """(stream name, first event ms, last event ms) for each stream of a group."""
        out = []
        directory = self._group_dir(group)
        if directory.is_dir():
            for f in sorted(directory.glob("*.log")):
                name = urllib.parse.unquote(f.name[: -len(".log")])
                st = f.stat()
                out.append((name, int(st.st_ctime * 1000), int(st.st_mtime * 1000)))
        return out

    def events(
        self,
        group: str,
        *,
        streams: list[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        pattern: str | None = None,
    ) -> list[LogEvent]:
        """Every matching event of a group, oldest first. ``pattern`` matches as a plain substring."""
        wanted = set(streams) if streams else None
        found: list[LogEvent] = []
        for name, _first, last in self.streams(group):
            if wanted is not None and name not in wanted:
                continue
            if start_ms is not None and last < start_ms - 1000:
                continue
            for i, (ts, msg) in enumerate(self._read(self._stream_path(group, name))):
                if start_ms is not None and ts < start_ms:
                    continue
                if end_ms is not None and ts > end_ms:
                    continue
                if pattern and pattern not in msg:
                    continue
                found.append(LogEvent(ts, msg, name, f"{ts}-{zlib.crc32(name.encode()):08x}-{i}"))
        found.sort(key=lambda e: (e.timestamp, e.event_id))
        return found

    @staticmethod
    def _read(path: Path) -> Iterator[tuple[int, str]]:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    ts, sep, msg = line.rstrip("\n").partition("\t")
                    if sep and ts.isdigit():
                        yield int(ts), msg
        except FileNotFoundError:
            return

    def delete_group(self, group: str) -> None:
        """What was logged so far goes; a later write makes the group again (as on AWS)."""
        self.sync()
        directory = self._group_dir(group)
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory, ignore_errors=True)


def split_lines(buffer: str) -> tuple[list[str], str]:
    """Complete lines of ``buffer`` and the unfinished rest."""
    if "\n" not in buffer:
        return [], buffer
    *lines, rest = buffer.split("\n")
    return [line.rstrip("\r") for line in lines], rest
