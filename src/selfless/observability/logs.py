"""Function logs: per-function log groups of per-environment log streams, on disk, bounded in memory and on disk.

Layout: ``<data-dir>/logs/<function-name>/<quoted stream name>.log``, then ``...+1.log``, ``...+2.log``: a stream
is a sequence of segment files, one event per line as ``<epoch ms>\\t<message>``. Messages never hold a newline:
output is split into one event per line, as Lambda's runtimes do, and a line longer than ``MAX_EVENT_BYTES`` into
several events, as Lambda does. The group name shown through the API is ``/aws/lambda/<function-name>``; any other
group (a custom LoggingConfig.LogGroup) lives in ``~<quoted name>``. ``retention.json`` holds the groups'
retention policies.

Bounds (nothing a function prints can grow the server without limit):
- Memory: lines written are held (pending in their stream, then queued for the writer) until written. Past
  ``BACKLOG_HIGH`` held bytes the store is ``congested``: whoever feeds it (an environment's output pipe) stops
  reading until the writer has it back under ``BACKLOG_LOW`` (``when_drained``), so a function printing faster
  than the disk takes it blocks on its own writes. Past ``BACKLOG_HARD`` what is offered anyway is dropped.
- Disk: a group holds at most ``group_max_bytes`` (and ``_MAX_SEGMENTS`` files); past it its oldest segments go.
  Segments are an eighth of the cap (at most 32 MiB), so the store deletes few large files rather than many small
  ones: ext4 pays on every later file creation for each inode deleted in the last minutes (docs/benchmarks.md).
  Retention (PutRetentionPolicy) deletes segments whose newest event is older than the policy: swept when the
  store opens and hourly; a stream starts a new segment daily, so its old days can go.
- Never silent: lines not stored (a write failed, e.g. on a full disk; a backlog past its hard bound; a group's
  oldest events deleted for its cap) are counted (``on_dropped``: metrics) and said in the stream concerned, in
  the words of Lambda's ``platform.logsDropped`` record (that record itself in the JSON log format), as soon as
  writing works again (retried every few seconds).

Threads: writers keep lines in memory; the store hands every stream written to within 50 ms (one write for a
burst of invocations) to its writer thread, the only one that touches the files, in order. So creating a
stream's file (a journal write: 0.2-1 ms here) never blocks the event loop, which a burst of cold starts shares.
Operations go to the writer in one batch per event-loop turn: a hand-over per stream cost a burst a future, a lock
and a thread wake-up each, and the GIL back and forth. Readers (the CloudWatch Logs API, ``selfless logs``)
``await synced()`` first, so they see everything written so far without holding up the event loop while the
writer catches up; they read the files from any thread (a segment deleted meanwhile is skipped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import heapq
import json
import logging
import os
import shutil
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

GROUP_PREFIX = "/aws/lambda/"
# Lambda splits a longer line into several events: CloudWatch's 256 KB per event, less the 26 bytes it counts per
# event (seen from Lambda as pieces of 2^18 - 26 bytes).
MAX_EVENT_BYTES = 262_144 - 26
BACKLOG_HIGH = 4 << 20  # held bytes past which feeders stop reading their functions' output
BACKLOG_LOW = 1 << 20  # ... until it is back under this
BACKLOG_HARD = 16 << 20  # past this, output offered anyway (a bounded drain at an invocation's end) is dropped
DEFAULT_GROUP_MAX_MB = 256
# PutRetentionPolicy's allowed values, as CloudWatch Logs lists them.
RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
# Lambda's Telemetry API words for lost logs (platform.logsDropped).
SLOWER_CONSUMER = "Some logs were dropped because the downstream consumer is slower than the logs production rate"

_FLUSH_S = 0.05
_MAX_PENDING = 512  # lines held in memory per stream between flushes
_MAX_PENDING_BYTES = 64 << 10  # ... and bytes
_SYNC_TIMEOUT_S = 30.0
_MAX_SEGMENTS = 10_000  # files per group, whatever their size
_SEGMENT_MAX_AGE_S = 86_400.0
_SWEEP_S = 3600.0
_RETRY_S = 5.0  # owed notices of lost lines are tried again this often
_RETENTION_FILE = "retention.json"

log = logging.getLogger(__name__)

# (kind, lines, bytes): lines lost or deleted, by kind ("backlog", "write_failed", "group_cap", "retention").
OnDropped = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class LogEvent:
    timestamp: int  # epoch ms
    message: str
    stream: str
    event_id: str
    key: tuple[int, int, int, int]  # (timestamp, stream hash, segment, line): the order readers page in


def stream_name(version: str, env_id: str, now: float | None = None) -> str:
    """AWS's form: ``2026/11/22/[$LATEST]<32 hex>``."""
    day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
    return f"{day}/[{version}]{env_id}"


def iso_time(now: float) -> str:
    """``2026-11-22T10:00:00.123Z``, as Lambda's JSON records give their time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def dropped_notice(reason: str, records: int, size: int, *, json_format: bool, now: float) -> str:
    """The line that says what was lost: Lambda's ``platform.logsDropped`` record in the JSON log format, its
    reason with the counts in the Text format."""
    if json_format:
        record = {"reason": reason, "droppedRecords": records, "droppedBytes": size}
        return json.dumps(
            {"time": iso_time(now), "type": "platform.logsDropped", "record": record}, separators=(",", ":")
        )
    return f"{reason} (droppedRecords: {records}, droppedBytes: {size})"


def _write_failed(exc: OSError) -> str:
    return f"Some logs were dropped because they could not be written: {exc.strerror or exc}"


def _group_cap(max_bytes: int) -> str:
    size = f"{max_bytes >> 20} MB" if max_bytes >= 1 << 20 else f"{max_bytes} bytes"
    return f"Some logs were dropped because the log group reached its size limit of {size}: its oldest were deleted"


def _background() -> None:
    """The writer yields to everything else (nice 19, this thread only): under a burst of cold starts the
    CPU goes to the starts, and the log files are made and written in the gaps. Readers wait for it."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _open_segment(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes, size_before: int) -> None:
    """All of ``data`` or nothing: a partial write (a disk filling up) is cut off again, so that the file never
    ends in half a line."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        if len(view) != len(data):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size_before)
        raise


def _count_lines(path: Path) -> int:
    count = 0
    with contextlib.suppress(OSError), open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def _segment_file(base: str, seq: int) -> str:
    return f"{base}.log" if seq == 0 else f"{base}+{seq}.log"


def _parse_segment(filename: str) -> tuple[str, int] | None:
    """(quoted stream name, segment number) of a segment file's name. ``+`` never occurs in a quoted name."""
    if not filename.endswith(".log"):
        return None
    stem = filename[: -len(".log")]
    base, plus, seq = stem.rpartition("+")
    if plus and seq.isdigit():
        return base, int(seq)
    return stem, 0


@dataclasses.dataclass
class _Segment:
    size: int
    last_write: float  # epoch s of its newest event
    lines: int | None  # None: not known (found on disk)


class _Group:
    """A group's segment files as the writer knows them (writer thread only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.segments: dict[str, _Segment] = {}
        self.total = 0

    @classmethod
    def scan(cls, directory: Path) -> _Group:
        group = cls(directory)
        try:
            entries = list(os.scandir(directory))
        except OSError:  # not made yet, or gone
            return group
        for entry in entries:
            if entry.name.endswith(".log"):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    group.segments[entry.name] = _Segment(st.st_size, st.st_mtime, None)
                    group.total += st.st_size
        return group

    def grew(self, filename: str, size: int, lines: int, now: float) -> None:
        segment = self.segments.get(filename)
        if segment is None:
            segment = self.segments[filename] = _Segment(0, now, 0)
        segment.size += size
        segment.last_write = now
        if segment.lines is not None:
            segment.lines += lines
        self.total += size

    def oldest(self, keep: str | None = None) -> str | None:
        candidates = (name for name in self.segments if name != keep)
        return min(candidates, key=lambda name: self.segments[name].last_write, default=None)

    def remove(self, filename: str) -> tuple[int, int]:
        """Delete a segment file: the (lines, bytes) it held."""
        segment = self.segments.pop(filename)
        self.total -= segment.size
        path = self.directory / filename
        lines = segment.lines if segment.lines is not None else _count_lines(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return 0, 0
        except OSError as exc:  # left on disk, forgotten here: the next sweep finds it again
            log.error("log segment %s could not be deleted: %s", path, exc)
        return lines, segment.size


class LogStream:
    """An append-only stream owned by one environment. Not thread-safe: the event loop owns it, and its files
    are touched only by the operations it hands to its store's writer thread, in order.

    Lines are kept in memory until the next flush, which creates the file on its first run: creating a
    file costs a journal write (0.2-1 ms here), which must not sit on a cold start's path."""

    def __init__(self, store: LogStore, directory: Path, name: str, *, json_format: bool = False) -> None:
        self.name = name
        self._store = store
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._dirty = False
        # The writer thread's alone:
        self._directory = directory
        self._base = urllib.parse.quote(name, safe="")
        self._json = json_format
        self._fd = -1
        self._seq = 0
        self._segment_size = 0
        self._segment_started = 0.0
        self._closed = False
        self._failing = False
        self._last_ts = 0  # of the last line written
        self._lost: dict[str, list[int]] = {}  # reason -> [records, bytes] not said yet

    # -- the event loop's side --------------------------------------------------------------------------------

    @property
    def congested(self) -> bool:
        """The store holds more than it should: stop feeding it until ``when_drained``."""
        return self._store.congested

    @property
    def overflowing(self) -> bool:
        """Past the hard bound: what is offered now is to be dropped (``drop``), not written."""
        return self._store.overflowing

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._store.when_drained(callback)

    def write(self, message: str, timestamp_ms: int | None = None) -> None:
        self.write_lines((message,), timestamp_ms)

    def write_lines(self, messages: Sequence[str], timestamp_ms: int | None = None) -> None:
        """One event per message (none may hold a newline), all with the same timestamp."""
        if not messages:
            return
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        prefix = f"{ts}\t"
        text = prefix + ("\n" + prefix).join(messages) + "\n"
        self._pending.append(text)
        self._pending_bytes += len(text)
        self._store.hold(len(text))
        if len(self._pending) >= _MAX_PENDING or self._pending_bytes >= _MAX_PENDING_BYTES:
            self.flush()  # a chatty runtime: memory stays bounded
        else:
            self.flush_soon()

    def drop(self, records: int, size: int) -> None:
        """Lines that were not taken (the store overflowing): counted now, said in the stream later."""
        if records or size:
            self._store.dropped("backlog", records, size)
            self._store.submit(lambda: self._owe(SLOWER_CONSUMER, records, size))

    def flush(self) -> None:
        """Hand the lines written so far to the writer."""
        self._dirty = False
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._store.submit(lambda: self._append(text), len(text))

    def flush_soon(self) -> None:
        """Flush within the store's flush interval."""
        if not self._dirty:
            self._dirty = True
            self._store.mark_dirty(self)

    def close(self) -> None:
        """Flush what is pending and close the file (lines written later open it again)."""
        self.flush()
        self._store.submit(self._close_file)

    # -- the writer's side ------------------------------------------------------------------------------------

    @property
    def _filename(self) -> str:
        return _segment_file(self._base, self._seq)

    def _append(self, text: str, enforce: bool = True) -> None:
        """Write ``text`` (whole lines) after the notices owed; on failure its lines are counted as lost."""
        store = self._store
        self._closed = False
        data = text.encode("utf-8", "replace")
        now = store.clock()
        # A notice takes the time of the line it precedes (or of the last line written): a stream's events
        # stay in time order, which readers page by.
        ts = int(text[: text.index("\t")]) if text else self._last_ts or int(now * 1000)
        notices = [
            f"{ts}\t{dropped_notice(reason, n, size, json_format=self._json, now=ts / 1000)}\n"
            for reason, (n, size) in self._lost.items()
        ]
        owed = "".join(notices).encode("utf-8")
        try:
            fd = self._segment_fd(now, len(owed) + len(data))
            _write_all(fd, owed + data, self._segment_size)
        except OSError as exc:
            if data:
                lines = text.count("\n")
                store.dropped("write_failed", lines, len(data))
                self._owe(_write_failed(exc), lines, len(data))
            if not self._failing:
                self._failing = True
                log.error("log stream %s: lines are being dropped (counted and said later): %s", self.name, exc)
            return
        if self._failing:
            self._failing = False
            log.warning("log stream %s: writing again", self.name)
        if self._lost:
            self._lost.clear()
            store.owed.discard(self)
        if text:
            last = text.rfind("\n", 0, -1) + 1
            self._last_ts = int(text[last : text.index("\t", last)])
        written = len(owed) + len(data)
        self._segment_size += written
        group = store.group(self._directory)
        group.grew(self._filename, written, len(notices) + text.count("\n"), now)
        if enforce:
            store.enforce(group, self)

    def _owe(self, reason: str, records: int, size: int) -> None:
        counts = self._lost.setdefault(reason, [0, 0])
        counts[0] += records
        counts[1] += size
        self._store.owed.add(self)

    def _say_owed(self) -> None:
        """Write the notices owed, if writing works again (a stream closed meanwhile is closed again after)."""
        if self._lost:
            closed = self._closed
            self._append("", enforce=False)
            if closed:
                self._close_file()

    def _segment_fd(self, now: float, incoming: int) -> int:
        if self._fd >= 0:
            if os.fstat(self._fd).st_nlink == 0:
                # Deleted (its group, or for the cap or retention): later lines go on in a new segment, as on AWS.
                self._close_fd()
                self._seq += 1
            elif self._segment_size > 0 and (
                self._segment_size + incoming > self._store.segment_bytes
                or now - self._segment_started > _SEGMENT_MAX_AGE_S
            ):
                self._close_fd()
                self._seq += 1
        if self._fd < 0:
            path = self._directory / self._filename
            try:
                fd = _open_segment(path)
            except FileNotFoundError:  # the group's first stream (or the group was deleted)
                self._directory.mkdir(parents=True, exist_ok=True)
                fd = _open_segment(path)
            self._fd = fd
            self._segment_size = os.fstat(fd).st_size
            self._segment_started = now
        return self._fd

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_file(self) -> None:
        self._closed = True
        self._close_fd()


class LogStore:
    def __init__(
        self,
        root: Path,
        *,
        group_max_bytes: int = DEFAULT_GROUP_MAX_MB << 20,
        on_dropped: OnDropped | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.clock = clock
        self.group_max_bytes = group_max_bytes
        self.segment_bytes = min(32 << 20, max(64 << 10, group_max_bytes // 8))
        self._on_dropped = on_dropped
        self._dirty: list[LogStream] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._batch: list[Callable[[], None]] = []  # operations for the writer, handed over together
        self._batch_bytes = 0
        self._hand_over_soon: asyncio.Handle | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="logs", initializer=_background
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bytes written to streams and not yet in their files; the writer lowers it, the event loop raises it.
        self._held = 0
        self._held_lock = threading.Lock()
        self._drained: list[Callable[[], None]] = []
        self._wake_wanted = False
        self._retention: dict[str, int] = {}
        self._upkeep: asyncio.Task[None] | None = None
        # The writer thread's alone:
        self._groups: dict[Path, _Group] = {}
        self.owed: set[LogStream] = set()  # streams with notices of lost lines not written yet

    def open(self) -> None:
        """Make the root, read the retention policies and, under an event loop, start the upkeep (a sweep for
        retention and caps now and hourly; owed notices tried again every few seconds)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._retention = self._load_retention()
        self.submit(functools.partial(self._sweep, dict(self._retention)))
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._upkeep = self._loop.create_task(self._keep_up())

    def stream(self, group: str, name: str, *, json_format: bool = False) -> LogStream:
        return LogStream(self, self._group_dir(group), name, json_format=json_format)

    # -- backlog ----------------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self._held

    @property
    def congested(self) -> bool:
        return self._held > BACKLOG_HIGH

    @property
    def overflowing(self) -> bool:
        return self._held > BACKLOG_HARD

    def hold(self, size: int) -> None:
        with self._held_lock:
            self._held += size

    def _release(self, size: int) -> None:
        """On the writer: ``size`` bytes are in their files (or dropped); wake the feeders once it has drained."""
        with self._held_lock:
            self._held -= size
            wake = self._wake_wanted and self._held <= BACKLOG_LOW
            if wake:
                self._wake_wanted = False
        if wake:
            if self._loop is None:
                self._wake()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    self._loop.call_soon_threadsafe(self._wake)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, on the event loop) when the backlog is back under ``BACKLOG_LOW``."""
        with self._held_lock:
            drained = self._held <= BACKLOG_LOW
            if not drained:
                self._drained.append(callback)
                self._wake_wanted = True
        if drained:
            callback()

    def _wake(self) -> None:
        with self._held_lock:
            callbacks, self._drained = self._drained, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a log backlog waiter failed")

    def dropped(self, kind: str, lines: int, size: int) -> None:
        if self._on_dropped is not None and (lines or size):
            self._on_dropped(kind, lines, size)

    # -- the writer -------------------------------------------------------------------------------------------

    def submit(self, operation: Callable[[], None], size: int = 0) -> None:
        """Queue a file operation for the writer, with the others of this loop turn. ``size``: the held bytes it
        writes out (or drops)."""
        self._batch.append(operation)
        self._batch_bytes += size
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
        size, self._batch_bytes = self._batch_bytes, 0
        if batch:
            self._writer.submit(self._run_all, batch, size)

    def _run_all(self, operations: list[Callable[[], None]], size: int) -> None:
        try:
            for operation in operations:
                try:
                    operation()
                except Exception:  # one stream's trouble must not cost the others their lines
                    log.exception("log writer operation failed")
        finally:
            if size:
                self._release(size)

    def group(self, directory: Path) -> _Group:
        """The writer's accounting of a group's files, read from disk on first use."""
        group = self._groups.get(directory)
        if group is None:
            group = self._groups[directory] = _Group.scan(directory)
        return group

    def enforce(self, group: _Group, stream: LogStream | None = None) -> None:
        """On the writer: delete the group's oldest segments while it is over its cap (a stream's current
        segment is the last to go), and say so in ``stream``."""
        if group.total <= self.group_max_bytes and len(group.segments) <= _MAX_SEGMENTS:
            return
        keep = stream._filename if stream is not None else None
        lines = size = 0
        while group.total > self.group_max_bytes or len(group.segments) > _MAX_SEGMENTS:
            victim = group.oldest(keep)
            if victim is None:
                break
            n, s = group.remove(victim)
            lines += n
            size += s
        if not size:
            return
        self.dropped("group_cap", lines, size)
        if stream is not None:
            stream._owe(_group_cap(self.group_max_bytes), lines, size)
            stream._append("", enforce=False)
        else:
            log.warning("log group %s: %d bytes of its oldest logs deleted for its cap", group.directory.name, size)

    def _sweep(self, retention: dict[str, int]) -> None:
        """On the writer: every group read afresh from disk, its segments past retention deleted, its cap kept."""
        now = self.clock()
        try:
            directories = [d for d in self.root.iterdir() if d.is_dir() and not d.is_symlink()]
        except OSError as exc:
            log.error("log sweep: %s", exc)
            return
        for directory in directories:
            group = self._groups[directory] = _Group.scan(directory)
            days = retention.get(self._group_name(directory))
            if days is not None:
                cutoff = now - days * 86_400
                lines = size = 0
                for filename, segment in list(group.segments.items()):
                    if segment.last_write < cutoff:
                        n, s = group.remove(filename)
                        lines += n
                        size += s
                self.dropped("retention", lines, size)
            self.enforce(group)

    def _say_owed(self) -> None:
        for stream in list(self.owed):
            stream._say_owed()

    async def _keep_up(self) -> None:
        last_sweep = time.monotonic()  # open() swept
        while True:
            await asyncio.sleep(_RETRY_S)
            self.submit(self._say_owed)
            if time.monotonic() - last_sweep >= _SWEEP_S:
                last_sweep = time.monotonic()
                self.submit(functools.partial(self._sweep, dict(self._retention)))

    # -- synchronisation --------------------------------------------------------------------------------------

    async def synced(self) -> None:
        """Every line written so far is in its file when this returns: readers (the logs API) await it
        first. The event loop goes on meanwhile: the writer runs at nice 19, and under a burst of starts
        its backlog can take a while."""
        self.flush_pending()
        await self._on_writer(lambda: None)

    async def _on_writer(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the writer after everything handed to it so far, and wait for it."""
        self._hand_over()
        async with asyncio.timeout(_SYNC_TIMEOUT_S):
            await asyncio.wrap_future(self._writer.submit(operation))

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
        if self._upkeep is not None:
            self._upkeep.cancel()
            self._upkeep = None
        self.flush_pending()
        self.submit(self._say_owed)
        self._hand_over()
        self._writer.shutdown(wait=True)

    def mark_dirty(self, stream: LogStream) -> None:
        """Flush ``stream`` within the flush interval (at once outside an event loop: a command, a test)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            stream.flush()
            return
        self._dirty.append(stream)
        if self._flush_handle is None:
            self._flush_handle = loop.call_later(_FLUSH_S, self.flush_pending)

    def flush_pending(self) -> None:
        """Hand every stream written to since the last flush to the writer (without waiting for it)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for stream in dirty:
            stream.flush()

    # -- retention --------------------------------------------------------------------------------------------

    def retention(self, group: str) -> int | None:
        return self._retention.get(group)

    async def set_retention(self, group: str, days: int | None) -> None:
        """Keep (or, with None, remove) a group's retention in days; durable when this returns. The next sweep
        applies it."""
        before = dict(self._retention)
        if days is None:
            self._retention.pop(group, None)
        else:
            self._retention[group] = days
        snapshot = dict(self._retention)
        try:
            await self._on_writer(lambda: self._save_retention(snapshot))
        except BaseException:
            self._retention = before
            raise

    def _load_retention(self) -> dict[str, int]:
        path = self.root / _RETENTION_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read (%s): no retention applies until a policy is put again", path, exc)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {str(k): int(v) for k, v in doc.items() if isinstance(v, int) and v in RETENTION_DAYS}

    def _save_retention(self, retention: dict[str, int]) -> None:
        path = self.root / _RETENTION_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(retention, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        directory = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # -- groups and reading -----------------------------------------------------------------------------------

    def _group_dir(self, group: str) -> Path:
        function_name = self.function_of_group(group)
        if function_name is not None:
            return self.root / function_name
        return self.root / ("~" + urllib.parse.quote(group, safe=""))

    @staticmethod
    def _group_name(directory: Path) -> str:
        name = directory.name
        return urllib.parse.unquote(name[1:]) if name.startswith("~") else GROUP_PREFIX + name

    @staticmethod
    def function_of_group(group: str) -> str | None:
        """The function name a log group belongs to, or None when it is not one of ours."""
        if not group.startswith(GROUP_PREFIX):
            return None
        name = group[len(GROUP_PREFIX) :]
        if not name or "/" in name or name.startswith("."):
            return None
        return name

    def groups(self) -> list[tuple[str, int, int]]:
        """(group name, creation time ms, stored bytes) of every group with a directory."""
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                with contextlib.suppress(OSError):
                    if d.is_dir() and not d.is_symlink():
                        stored = sum(f.stat().st_size for f in d.glob("*.log"))
                        out.append((self._group_name(d), int(d.stat().st_mtime * 1000), stored))
        return sorted(out)

    def has_group(self, group: str) -> bool:
        return self._group_dir(group).is_dir()

    def _segments(self, group: str) -> dict[str, list[tuple[int, Path, os.stat_result]]]:
        """Each stream's segment files in order: stream name -> [(segment number, path, stat)]."""
        found: dict[str, list[tuple[int, Path, os.stat_result]]] = {}
        directory = self._group_dir(group)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return found
        for entry in entries:
            parsed = _parse_segment(entry.name)
            if parsed is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # deleted meanwhile
                continue
            base, seq = parsed
            found.setdefault(urllib.parse.unquote(base), []).append((seq, Path(entry.path), st))
        for segments in found.values():
            segments.sort(key=lambda s: s[0])
        return found

    def streams(self, group: str) -> list[tuple[str, int, int, int]]:
        """(stream name, first event ms, last event ms, stored bytes) for each stream of a group."""
        out = []
        for name, segments in sorted(self._segments(group).items()):
            first = int(segments[0][2].st_ctime * 1000)
            last = int(segments[-1][2].st_mtime * 1000)
            out.append((name, first, last, sum(st.st_size for _, _, st in segments)))
        return out

    def events(
        self,
        group: str,
        *,
        streams: list[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        pattern: str | None = None,
        after: tuple[int, int, int, int] | None = None,
        limit: int | None = None,
    ) -> list[LogEvent]:
        """Matching events of a group in time order, after the ``after`` key and at most ``limit`` of them:
        streams are read lazily and merged, so memory follows ``limit``, not the group's size. ``pattern``
        matches as a plain substring."""
        wanted = set(streams) if streams else None
        since = start_ms if after is None else max(start_ms or 0, after[0])
        readers = []
        for name, segments in self._segments(group).items():
            if wanted is None or name in wanted:
                readers.append(self._stream_events(name, segments, since, end_ms, pattern, after))
        merged = heapq.merge(*readers, key=lambda e: e.key)
        out: list[LogEvent] = []
        for event in merged:
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
        return out

    @staticmethod
    def _stream_events(
        name: str,
        segments: list[tuple[int, Path, os.stat_result]],
        start_ms: int | None,
        end_ms: int | None,
        pattern: str | None,
        after: tuple[int, int, int, int] | None,
    ) -> Iterator[LogEvent]:
        crc = zlib.crc32(name.encode())
        for seq, path, st in segments:
            if start_ms is not None and st.st_mtime * 1000 < start_ms - 1000:
                continue  # every event of this segment is older
            try:
                f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:  # deleted meanwhile (cap, retention)
                continue
            with f:
                for i, line in enumerate(f):
                    ts_text, sep, message = line.rstrip("\n").partition("\t")
                    if not sep or not ts_text.isdigit():
                        continue
                    ts = int(ts_text)
                    if start_ms is not None and ts < start_ms:
                        continue
                    if end_ms is not None and ts > end_ms:
                        return
                    key = (ts, crc, seq, i)
                    if after is not None and key <= after:
                        continue
                    if pattern and pattern not in message:
                        continue
                    yield LogEvent(ts, message, name, f"{ts}-{crc:08x}-{seq}-{i}", key)

    def delete_group(self, group: str) -> None:
        """What was logged so far goes; a later write makes the group again (as on AWS)."""
        self.flush_pending()
        directory = self._group_dir(group)

        def delete() -> None:
            self._groups.pop(directory, None)
            if directory.is_dir() and not directory.is_symlink():
                shutil.rmtree(directory, ignore_errors=True)

        self.submit(delete)
        self.wait_written()


def cut_events(buffer: bytes, *, complete: bool) -> tuple[list[str], bytes]:
    """The events in what a runtime wrote, and the unfinished rest to keep for the next call.

    One event per line (a trailing ``\\r`` dropped); a line longer than ``MAX_EVENT_BYTES`` (encoded) becomes
    several events, cut between characters, as Lambda splits it. With ``complete`` (the invocation or the
    environment ends) an unfinished last line is an event too; otherwise it is kept, never more than
    ``MAX_EVENT_BYTES`` of it."""
    events: list[str] = []
    cut = buffer.rfind(b"\n")
    rest = buffer
    if cut >= 0:
        text = buffer[:cut].decode("utf-8", "replace")
        rest = buffer[cut + 1 :]
        lines = text.split("\n")
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if len(text) > MAX_EVENT_BYTES // 4:  # a line might be too long (a character is at most 4 bytes)
            events = [piece for line in lines for piece in _split_event(line)]
        else:
            events = lines
    while len(rest) > MAX_EVENT_BYTES:
        end = MAX_EVENT_BYTES
        for _ in range(3):  # back to the start of a character (at most 3 continuation bytes)
            if rest[end] & 0xC0 != 0x80:
                break
            end -= 1
        events.extend(_split_event(rest[:end].decode("utf-8", "replace")))
        rest = rest[end:]
    if rest and complete:
        events.extend(_split_event(rest.decode("utf-8", "replace").removesuffix("\r")))
        rest = b""
    return events, rest


def _split_event(line: str) -> list[str]:
    if len(line) <= MAX_EVENT_BYTES // 4:
        return [line]
    data = line.encode("utf-8", "replace")
    if len(data) <= MAX_EVENT_BYTES:
        return [line]
    pieces = []
    start = 0
    while len(data) - start > MAX_EVENT_BYTES:
        end = start + MAX_EVENT_BYTES
        while data[end] & 0xC0 == 0x80:  # valid UTF-8 (it was encoded here): a character starts within 3 bytes
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    pieces.append(data[start:].decode("utf-8"))
    return pieces
