"""Ordered work off the event loop that the caller need not wait for piece by piece.

A large upload passes through three consumers that each must see its bytes in order: the SHA-256 its
signature names, the MD5 of its ETag (and any checksums), and the file it is written to. One after the other,
each piece costs the sum of the three; in a lane each, they cost the slowest one (hashlib and ``os.write`` let
go of the GIL for large buffers), and the event loop goes on receiving meanwhile.

A :class:`Lane` runs the calls given to ``submit`` one after another, in order, in a worker thread of the
loop's default executor (taken while it has work, given back when it has none, so an idle lane holds no
thread). Contract:

* ``submit`` returns once the call is queued; while more than ``limit`` bytes of queued arguments wait, it
  waits for room first (a slow lane slows its producer: memory stays bounded);
* the first call that raises stops the lane: what waits is dropped, and ``submit`` and ``drain`` raise that
  exception from then on;
* ``drain`` waits until every queued call has run; ``close`` drops what waits and waits for the call at
  work, if any, to end (after it, no call of the lane runs: a file it writes may be closed);
* not thread-safe on the producing side: one task submits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from typing import Any

LIMIT = 8 << 20  # bytes of arguments a lane holds before ``submit`` waits for room


class Lane:
    __slots__ = ("_error", "_items", "_job", "_limit", "_lock", "_loop", "_queued", "_waiter")

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[Callable[[Any], object], Any, int]] = collections.deque()
        self._queued = 0  # bytes of the queued calls' arguments, the call at work's included
        self._job: asyncio.Future[None] | None = None  # the worker thread's run, while it has work
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None  # the producer, waiting for room or the end

    async def submit(self, call: Callable[[Any], object], data: Any, size: int | None = None) -> None:
        """Queue ``call(data)``; ``size`` (default ``len(data)``) is what it counts against the limit."""
        if self._error is not None:
            raise self._error
        weight = len(data) if size is None else size
        with self._lock:
            self._items.append((call, data, weight))
            self._queued += weight
            idle = self._job is None
        if idle:
            self._job = self._loop.run_in_executor(None, self._run)
        while self._queued > self._limit and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    async def drain(self) -> None:
        """Wait until every queued call has run; raise the first failure, if any."""
        while self._job is not None and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Drop what waits; wait for the call at work, if any. Idempotent; never raises a call's failure."""
        with self._lock:
            self._items.clear()
        job = self._job
        if job is not None:
            await asyncio.shield(job)

    async def _wait(self) -> None:
        """Until the worker thread finishes a call or leaves (no wake-up is lost: while the producer waits
        there is work queued, so the thread either finishes more of it or leaves, and both wake it)."""
        waiter = self._loop.create_future()
        with self._lock:
            self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _run(self) -> None:
        """The worker thread: run calls until none waits (or one fails)."""
        while True:
            with self._lock:
                if not self._items:
                    break
                call, data, weight = self._items.popleft()
            try:
                call(data)
            except BaseException as exc:
                with self._lock:
                    self._error = exc
                    self._items.clear()
                break
            with self._lock:
                self._queued -= weight
                waiter = self._waiter
            if waiter is not None:
                self._post(_wake, waiter)
        self._post(self._ended)

    def _post(self, callback: Callable[..., object], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a call at work: nobody is waiting
            self._loop.call_soon_threadsafe(callback, *args)

    def _ended(self) -> None:
        """On the loop: the worker thread left. Work queued since it looked is given to a new one."""
        with self._lock:
            again = bool(self._items) and self._error is None
        self._job = self._loop.run_in_executor(None, self._run) if again else None
        if self._waiter is not None:
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
