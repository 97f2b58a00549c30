"""Metering: one record per invocation, appended to ``<data-dir>/metering/<YYYY-MM-DD>.jsonl``.

A record holds what billing needs: function, version, request id, duration, billed duration (ms, rounded
up), memory size, init duration, outcome. Records are appended by the event loop 50 ms after the first
unwritten one (one write for a burst) and on close; each write is whole lines, and a write the disk cuts
short is taken back, so readers see whole lines only.

A write that fails (a full disk) never reaches the invocation that made the record: the records wait in
memory and are written once the disk takes them again (tried every second). At most ``MAX_WAITING`` wait;
past that the oldest are dropped, counted in ``dropped`` and said in the server's log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_WAITING = 100_000
_FLUSH_S = 0.05
_RETRY_S = 1.0
# One encoder for every record: json.dumps with separators builds a new encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_STR: Any = json.encoder.encode_basestring  # a JSON string literal, quotes and escapes included (C)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


class Meter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dropped = 0  # records lost because the disk refused them for too long
        self._waiting: collections.deque[tuple[str, str]] = collections.deque()  # (day, line)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._failing = False
        self._day_number = -1
        self._day_name = ""

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def record(self, **fields: Any) -> None:
        """Keep one record; never raises for the disk's sake."""
        now = time.time()
        fields["time"] = round(now, 3)
        self._keep(now, _ENCODE(fields) + "\n")

    def invocation(
        self,
        *,
        function: str,
        version: str,
        request_id: str,
        environment: str,
        duration_ms: float,
        billed_ms: int,
        memory_mb: int,
        max_memory_used_mb: int,
        init_ms: float | None,
        platform_init_ms: float | None,
        outcome: str,
    ) -> None:
        """One invocation's record: what ``record`` with these fields keeps, formatted directly (the warm
        path's: a JSON encoder costs ~7 µs a record, this ~2)."""
        now = time.time()
        line = (
            f'{{"function":{_STR(function)},"version":{_STR(version)},"request_id":{_STR(request_id)},'
            f'"environment":{_STR(environment)},"duration_ms":{float(duration_ms)!r},"billed_ms":{int(billed_ms)},'
            f'"memory_mb":{int(memory_mb)},"max_memory_used_mb":{int(max_memory_used_mb)},'
            f'"init_ms":{_number(init_ms)},"platform_init_ms":{_number(platform_init_ms)},'
            f'"outcome":{_STR(outcome)},"time":{round(now, 3)!r}}}\n'
        )
        self._keep(now, line)

    def _keep(self, now: float, line: str) -> None:
        if len(self._waiting) >= MAX_WAITING:
            self._waiting.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("metering: %d records dropped so far, the disk has refused them too long", self.dropped)
        self._waiting.append((self._day(now), line))
        # Records from a burst of invocations leave in one write.
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write()
            else:
                self._flush_handle = loop.call_later(_FLUSH_S, self._flush)

    def _day(self, now: float) -> str:
        """The UTC day of ``now`` (``YYYY-MM-DD``), formatted once a day."""
        number = int(now // 86_400)
        if number != self._day_number:
            self._day_number = number
            self._day_name = time.strftime("%Y-%m-%d", time.gmtime(now))
        return self._day_name

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._write():
            self._flush_handle = asyncio.get_running_loop().call_later(_RETRY_S, self._flush)

    def _write(self) -> bool:
        """Append the waiting records, day by day; False when the disk refused some (they keep waiting)."""
        while self._waiting:
            day = self._waiting[0][0]
            lines = []
            while self._waiting and self._waiting[0][0] == day:
                lines.append(self._waiting.popleft()[1])
            try:
                _append(self.root / f"{day}.jsonl", "".join(lines).encode())
            except OSError as exc:
                self._waiting.extendleft((day, line) for line in reversed(lines))
                if not self._failing:
                    log.error("metering: records cannot be written (%s); they wait until the disk takes them", exc)
                self._failing = True
                return False
            if self._failing:
                log.warning("metering: records are written again")
                self._failing = False
        return True

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._write():
            log.error("metering: %d records could not be written before shutdown", len(self._waiting))
            self._waiting.clear()


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` whole or not at all (a write cut short by a full disk is truncated away)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
