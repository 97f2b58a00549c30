"""Disk-backed /tmp for sandboxed environments: a fresh ext4 image per environment on a loop device.

Why not tmpfs: tmpfs pages count against the memory cgroup, so a function writing to /tmp would be killed
for memory before /tmp was full. On AWS /tmp is a disk: full means ENOSPC, and nothing else. An ext4 file
system's page cache is reclaimable, so the memory limit and the /tmp size stay independent, as there.

Each image is a sparse file (only written blocks take disk) formatted without a journal (~6 ms), attached
to a free loop device with LO_FLAGS_AUTOCLEAR: the device detaches by itself once its last user is gone
(the environment's mount namespace and our descriptor). Images of the common size are made ahead in a
small pool so that a cold start only hands over a device name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_LOOP_INFO64_SIZE = 232
_LO_FLAGS_OFFSET = 52
POOLED_SIZE_MB = 512
POOL = 2
_REFILL_DELAY_S = 0.1


class ScratchUnavailable(RuntimeError):
    """Loop devices or mkfs.ext4 are missing; the message says which."""


@dataclasses.dataclass
class Scratch:
    """One environment's /tmp: the image file, its loop device, and our descriptor on it."""

    image: Path
    device: str
    fd: int

    def release(self) -> None:
        """Close our hold on the device (it detaches once no mount uses it) and delete the image."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


def image_mb(size_mb: int) -> int:
    """ext4's own metadata (inode tables, bitmaps) takes ~1.8% of an image made this way (measured: 527 MB
    leaves 517.9 MB free, 10,500 MB leaves 10,294.8): size the image so that the function sees about
    EphemeralStorage free."""
    return -(-size_mb * 1000 // 982)


def check_support() -> str:
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mke2fs")
    if mkfs is None:
        raise ScratchUnavailable("mkfs.ext4 (e2fsprogs) is not installed")
    if not os.path.exists("/dev/loop-control"):
        raise ScratchUnavailable("/dev/loop-control is missing (no loop device support)")
    return mkfs


class ScratchPool:
    def __init__(self, directory: Path, mkfs: str) -> None:
        self._dir = directory
        self._mkfs = mkfs
        self._ready: list[Scratch] = []
        self._filling: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self._dir.glob("*.img"):
            leftover.unlink(missing_ok=True)

    def _make(self, size_mb: int) -> Scratch:
        image = self._dir / f"{uuid.uuid4().hex}.img"
        with open(image, "wb") as f:
            f.truncate(image_mb(size_mb) << 20)
        try:
            subprocess.run(
                [
                    self._mkfs,
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-O",
                    "^has_journal",
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1,nodiscard",
                    str(image),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            return _attach(image)
        except BaseException:
            image.unlink(missing_ok=True)
            raise

    async def take(self, size_mb: int) -> Scratch:
        """A formatted, attached image of ``size_mb`` (from the pool when it is the common size)."""
        if size_mb == POOLED_SIZE_MB and self._ready:
            scratch = self._ready.pop()
        else:
            scratch = await asyncio.to_thread(self._make, size_mb)
        # Not now: the cold start that took this image is still using both CPUs.
        asyncio.get_running_loop().call_later(_REFILL_DELAY_S, self.refill)
        return scratch

    def refill(self) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        while len(self._ready) < POOL:
            try:
                self._ready.append(await asyncio.to_thread(self._make, POOLED_SIZE_MB))
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("could not make a /tmp image ahead: %s", exc)
                return

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        for scratch in self._ready:
            scratch.release()
        self._ready.clear()


# GET_FREE names a free device without reserving it: attaching is serialised here, and a device another
# program took in between (EBUSY) is skipped.
_attach_lock = threading.Lock()
_ATTACH_TRIES = 20


def _attach(image: Path) -> Scratch:
    info = bytearray(_LOOP_INFO64_SIZE)
    struct.pack_into("I", info, _LO_FLAGS_OFFSET, _LO_FLAGS_AUTOCLEAR)
    image_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        config = struct.pack("II", image_fd, 0) + bytes(info) + bytes(64)
        with _attach_lock:
            for _ in range(_ATTACH_TRIES):
                ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
                try:
                    number = fcntl.ioctl(ctl, _LOOP_CTL_GET_FREE)
                finally:
                    os.close(ctl)
                device = f"/dev/loop{number}"
                loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(loop_fd, _LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                return Scratch(image, device, loop_fd)
        raise OSError(errno.EBUSY, "no free loop device after several tries")
    finally:
        os.close(image_fd)
