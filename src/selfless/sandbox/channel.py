"""The control channels to the processes that fork environments (zygotes, fork-after-init templates):
SOCK_SEQPACKET sockets carrying one JSON document per message, with descriptors where needed; and reading
what those processes print (``read_pipe``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any


async def send_message(
    sock: socket.socket, loop: asyncio.AbstractEventLoop, lock: asyncio.Lock, payload: bytes, fds: list[int]
) -> None:
    """One SOCK_SEQPACKET message (with descriptors). When the peer's queue is full the sender waits its
    turn (one writability watch per socket, so one waiter at a time, in order) under the caller's deadline
    instead of failing."""
    async with lock:
        while True:
            try:
                if fds:
                    socket.send_fds(sock, [payload], fds)
                else:
                    sock.send(payload)
                return
            except BlockingIOError:
                pass
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def read_messages(sock: socket.socket, dispatch: Callable[[dict[str, Any]], None], lost: Callable[[], None]) -> None:
    """Everything readable now, one message at a time, to ``dispatch``; ``lost`` once the peer is gone."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            lost()
            return
        dispatch(json.loads(data))


def read_pipe(fd: int, limit: int, loop: asyncio.AbstractEventLoop) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from the non-blocking pipe, and whether it is at its end (then no longer watched)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        try:
            data = os.read(fd, left)
        except BlockingIOError:
            break
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
            return b"".join(chunks), True
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks), False
