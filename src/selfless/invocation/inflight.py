"""An invocation in flight between the invocation service and one execution environment."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import json
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

_TAIL_BYTES = 4096


class OutcomeKind(enum.Enum):
    RESPONSE = "response"  # the runtime posted a response
    ERROR = "error"  # the runtime posted an invocation error (handler raised)
    INIT_ERROR = "init_error"  # the runtime posted /init/error before this invocation could run
    TIMEOUT = "timeout"  # the deadline passed; the environment was killed
    EXIT = "exit"  # the runtime died while this invocation was assigned to it
    TOO_LARGE = "too_large"  # the response was past the payload limit
    START_FAILED = "start_failed"  # the environment could not be started at all


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    payload: bytes = b""
    error_type: str | None = None
    duration_ms: float = 0.0
    init_duration_ms: float | None = None
    max_memory_mb: int | None = None
    log_lines: tuple[str, ...] = ()
    platform_init_ms: float | None = None  # set on a cold start: the platform's share of it

    @property
    def log_tail(self) -> str:
        """Base64 of the last 4 KB of this invocation's log, as X-Amz-Log-Result carries it."""
        raw = ("\n".join(self.log_lines) + "\n").encode("utf-8")[-_TAIL_BYTES:]
        return base64.b64encode(raw).decode("ascii")

    @property
    def failed(self) -> bool:
        return self.kind is not OutcomeKind.RESPONSE


class LogTail:
    """The last lines of an invocation's log, as many as its last ``_TAIL_BYTES`` need and no more: what
    ``LogType: Tail`` returns, whatever the function prints."""

    __slots__ = ("_chars", "_lines")

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._chars = 0  # of the lines kept, a newline each: a character is at least one byte

    def append(self, line: str) -> None:
        if len(line) > _TAIL_BYTES:
            line = line[-_TAIL_BYTES:]
        self._lines.append(line)
        self._chars += len(line) + 1
        # The oldest line goes once the others hold the tail without it.
        while self._chars - len(self._lines[0]) - 1 >= _TAIL_BYTES:
            self._chars -= len(self._lines.popleft()) + 1

    def extend(self, lines: Sequence[str]) -> None:
        # Only the lines that can still be in the tail: a flood of short lines costs a few, not all of them.
        start, chars = len(lines), 0
        while start > 0 and chars < _TAIL_BYTES:
            start -= 1
            chars += len(lines[start]) + 1
        for i in range(start, len(lines)):
            self.append(lines[i])

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


class NoTail(LogTail):
    """What a call that did not ask for its log's tail keeps of it: nothing (the warm path's common case)."""

    __slots__ = ()

    def append(self, line: str) -> None:
        pass

    def extend(self, lines: Sequence[str]) -> None:
        pass


class Invocation:
    """One request for one environment. ``done`` resolves exactly once with an ``Outcome``."""

    __slots__ = (
        "client_context",
        "deadline_ms",
        "delivered_at",
        "done",
        "function_arn",
        "lineage",
        "log_lines",
        "payload",
        "request_id",
        "timeout_s",
        "trace_id",
    )

    def __init__(
        self,
        request_id: str,
        payload: bytes,
        *,
        function_arn: str,
        timeout_s: int,
        client_context: str | None,
        trace_id: str,
        lineage: Mapping[str, int] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tail: bool = False,
    ) -> None:
        self.request_id = request_id
        # How many times each function has run in the chain of calls this one belongs to, this one included
        # (recursive loop detection; see invocation/events.py).
        self.lineage: Mapping[str, int] = lineage or {}
        self.payload = payload
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.client_context = client_context
        self.trace_id = trace_id
        self.deadline_ms = 0
        self.delivered_at = 0.0
        # Kept only for a call that wants it back (LogType: Tail): the log itself is written either way.
        self.log_lines = LogTail() if tail else NoTail()
        self.done: asyncio.Future[Outcome] = (loop or asyncio.get_running_loop()).create_future()

    def deliver(self) -> None:
        self.delivered_at = time.monotonic()
        self.deadline_ms = int(time.time() * 1000) + self.timeout_s * 1000

    def finish(self, outcome: Outcome) -> bool:
        """Resolve once; later calls are ignored (a timeout and a late response may race)."""
        if self.done.done():
            return False
        self.done.set_result(outcome)
        return True


def error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()
