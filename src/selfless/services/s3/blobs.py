"""Object bytes in a local directory: ``<root>/tmp/`` while being written, ``<root>/blobs/<xx>/<id>`` once synced.

A blob is written under a fresh random name, synced, then renamed into place (and the directory synced), so a
blob that exists is whole; it is never overwritten, only deleted once no metadata row names it. Disk I/O runs
in worker threads, in pieces of up to ``CHUNK`` bytes, so a 5 GB object never sits in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from selfless.lanes import Lane

CHUNK = 1 << 20


def _writeback_starter() -> Callable[[int, int, int], None] | None:
    """Linux's ``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)``: start writing a range back
    to the disk without waiting for it. A blob's pieces are handed to the disk as they are written, so the
    ``fsync`` at its commit waits for the last few rather than for all of it (a 64 MB blob's fsync: ~20 ms
    down to a few here). None where the C library has no such call (then the fsync does it all)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; a failure only leaves the work to fsync

    return start


_start_writeback = _writeback_starter()


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._tmp = root / "tmp"
        self._blobs = root / "blobs"

    def _path(self, blob: str) -> Path:
        return self._blobs / blob[:2] / blob

    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    async def read(self, blob: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes [start, end) of ``blob``, in pieces."""
        fd = await asyncio.to_thread(os.open, self._path(blob), os.O_RDONLY | os.O_CLOEXEC)
        return _chunks(fd, start, end)

    async def open(self, blob: str) -> int:
        """An open file descriptor of ``blob`` (the caller closes it): it stays readable to the end even if
        the blob is deleted meanwhile."""
        path = self._path(blob)
        opening = asyncio.get_running_loop().run_in_executor(None, os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:  # the caller went away: the file it would have had is closed
            opening.add_done_callback(_close_opened)
            raise

    async def delete(self, blobs: list[str]) -> None:
        def remove() -> None:
            for blob in blobs:
                with contextlib.suppress(FileNotFoundError):
                    self._path(blob).unlink()

        if blobs:
            await asyncio.to_thread(remove)

    async def open_and_sweep(self, in_use: set[str]) -> int:
        def sweep() -> int:
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._blobs.mkdir(parents=True, exist_ok=True)
            gone = 0
            for path in self._tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    gone += 1
            for folder in self._blobs.iterdir():
                for path in folder.iterdir():
                    if path.name not in in_use:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            gone += 1
            return gone

        return await asyncio.to_thread(sweep)


def _close_opened(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


async def _chunks(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        offset = start
        while offset < end:
            data = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
            if not data:
                raise OSError(f"the object's file ended at {offset} of {end} bytes")
            offset += len(data)
            yield data
    finally:
        os.close(fd)


class LocalBlobWriter:
    """Appends to a temporary file in a lane of its own (a worker thread: the caller goes on with the next
    piece while this one is written), in pieces of at least ``CHUNK`` bytes; ``commit`` syncs it and moves it
    into place."""

    def __init__(self, blobs: LocalBlobs) -> None:
        self._blobs = blobs
        self.blob = secrets.token_hex(16)
        self.size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd = -1
        self._written = 0  # bytes in the file (the lane's thread's count)
        self._temp = blobs._tmp / self.blob
        self._lane: Lane | None = None

    async def write(self, data: bytes) -> None:
        """Append ``data`` (written by the time ``commit`` returns)."""
        self.size += len(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        if self._lane is None:
            self._lane = Lane()
        await self._lane.submit(self._append, data)

    async def append_blob(self, blob: str, size: int) -> None:
        """Append the whole of another blob of this store, copied by the kernel (``copy_file_range``: the
        bytes never pass through this process, and a file system that can share extents does not copy them
        at all)."""
        await self._flush()
        self.size += size
        if self._lane is None:
            self._lane = Lane()
        # Counts nothing against the lane's limit: no bytes of it are held in memory.
        await self._lane.submit(self._copy, (self._blobs._path(blob), size), size=0)

    def _copy(self, job: tuple[Path, int]) -> None:
        """In the lane's thread."""
        source, size = job
        self._open()
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            copied = 0
            while copied < size:
                try:
                    done = os.copy_file_range(fd, self._fd, min(size - copied, 1 << 30), copied, self._written)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    done = self._copy_by_hand(fd, copied, min(size - copied, CHUNK))
                if done == 0:
                    raise OSError(f"{source.name} ended at {copied} of {size} bytes")
                if _start_writeback is not None:
                    _start_writeback(self._fd, self._written, done)
                copied += done
                self._written += done
        finally:
            os.close(fd)

    def _copy_by_hand(self, fd: int, offset: int, count: int) -> int:
        data = os.pread(fd, count, offset)
        view = memoryview(data)
        position = self._written
        while view:
            wrote = os.pwrite(self._fd, view, position)
            view, position = view[wrote:], position + wrote
        return len(data)

    def _open(self) -> None:
        if self._fd < 0:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def _append(self, data: bytes) -> None:
        """In the lane's thread."""
        self._open()
        view = memoryview(data)
        position = self._written  # at an offset: copy_file_range with one does not move the file position
        while view:
            wrote = os.pwrite(self._fd, view, position)
            view, position = view[wrote:], position + wrote
        if _start_writeback is not None:
            _start_writeback(self._fd, self._written, len(data))
        self._written += len(data)

    async def commit(self) -> None:
        await self._flush()
        if self._lane is not None:
            await self._lane.drain()
        final = self._blobs._path(self.blob)

        def place() -> None:
            self._open()  # an empty blob has no file yet
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            final.parent.mkdir(exist_ok=True)
            os.rename(self._temp, final)
            dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        await asyncio.to_thread(place)

    async def discard(self) -> None:
        self._buffer = []
        if self._lane is not None:
            await self._lane.close()  # no write of this blob's runs after this

        def drop() -> None:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()

        await asyncio.to_thread(drop)
