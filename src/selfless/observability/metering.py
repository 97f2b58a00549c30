"""Metering: one record per invocation, appended to ``<data-dir>/metering/<YYYY-MM-DD>.jsonl``.

A record holds what billing needs: function, version, request id, duration, billed duration (ms, rounded
up), memory size, init duration, outcome. Written on the event loop with a buffered file that is flushed
50 ms after the first unflushed record (one write for a burst) and on close; readers take whole lines only.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import IO, Any

_FLUSH_S = 0.05


class Meter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._day = ""
        self._file: IO[str] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def record(self, **fields: Any) -> None:
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self._day or self._file is None:
            self.close()
            self._file = open(self.root / f"{day}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._day = day
        fields["time"] = round(now, 3)
        self._file.write(json.dumps(fields, separators=(",", ":")) + "\n")
        # Records from a burst of invocations leave in one write.
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._file.flush()
            else:
                self._flush_handle = loop.call_later(_FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._file is not None:
            self._file.close()
            self._file = None
