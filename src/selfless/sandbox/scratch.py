"""Disk-backed /tmp for sandboxed environments: a fresh ext4 image per environment on a loop device.

Why not tmpfs: tmpfs pages count against the memory cgroup, so a function writing to /tmp would be killed
for memory before /tmp was full. On AWS /tmp is a disk: full means ENOSPC, and nothing else. An ext4 file
system's page cache is reclaimable, so the memory limit and the /tmp size stay independent, as there.

Formatting is done once per size: a *template* image is made with mkfs.ext4 (no journal, lazy inode tables)
and finished with debugfs (its root directory world-writable and sticky as /tmp must be, no lost+found).
Each environment's image is then a sparse copy of the template's few hundred KiB of metadata
(``copy_file_range`` over its data extents, ~0.3 ms) instead of a mkfs run (~7 ms plus a fork of the
server), which is what lets a burst of cold starts fan out. The image is attached to a free loop device
with LO_FLAGS_AUTOCLEAR: the device detaches by itself once its last user is gone (the environment's mount
namespace and our descriptor). A couple of images of the common size are also made ahead.
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
_KEEP_RETURNED = 256


class ScratchUnavailable(RuntimeError):
    """Loop devices or mkfs.ext4 are missing; the message says which."""


@dataclasses.dataclass
class Scratch:
    """One environment's /tmp: the image file, its loop device, and our descriptor on it."""

    image: Path
    device: str
    fd: int
    size_mb: int = POOLED_SIZE_MB

    def release(self) -> None:
        """Close our hold on the device (it detaches once no mount uses it) and delete the image."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()

    def close(self) -> None:
        """Close our descriptor, once: a returned image is closed when given back and again when released,
        and a second close of the number would close whatever file took it meanwhile (a zygote's socket,
        seen at shutdown as "Bad file descriptor")."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def detached(self) -> bool:
        """Whether the loop device no longer reads this image (every mount of it is gone): only then may
        the image be overwritten for another environment."""
        backing = Path("/sys/block") / Path(self.device).name / "loop" / "backing_file"
        try:
            return backing.read_text().strip() != str(self.image)
        except FileNotFoundError:
            return True
        except OSError:
            return False


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
        self._templates: dict[int, Template] = {}
        # Images given back by stopped environments, per size, to be rewritten for new ones.
        self._returned: dict[int, list[Scratch]] = {}
        # Threads may ask for the same new size at once: one formats it.
        self._templates_lock = threading.Lock()

    def open(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self._dir.glob("*.img"):
            leftover.unlink(missing_ok=True)

    def _template(self, size_mb: int) -> Template:
        with self._templates_lock:
            template = self._templates.get(size_mb)
            if template is None:
                template = _format(self._dir / f"template-{size_mb}.img", size_mb, self._mkfs)
                self._templates[size_mb] = template
            return template

    def _make(self, size_mb: int) -> Scratch:
        template = self._template(size_mb)
        image = self._reusable(size_mb)
        if image is None:
            image = self._dir / f"{uuid.uuid4().hex}.img"
        try:
            template.copy_to(image)
            return _attach(image, size_mb)
        except BaseException:
            image.unlink(missing_ok=True)
            raise

    def _reusable(self, size_mb: int) -> Path | None:
        """An image file an earlier environment gave back and nothing reads any more. Rewriting a file
        is much cheaper than creating one and deleting it later: ext4 without a journal scans past every
        recently deleted inode when it allocates one, so file churn grows slower with each burst."""
        with self._templates_lock:
            returned = self._returned.get(size_mb, [])
            for i, scratch in enumerate(returned):
                if scratch.detached():
                    del returned[i]
                    return scratch.image
        return None

    def give_back(self, scratch: Scratch) -> None:
        """The environment using ``scratch`` is gone: keep its file for another (bounded), else delete it.
        Called from a worker thread."""
        scratch.close()
        with self._templates_lock:
            returned = self._returned.setdefault(scratch.size_mb, [])
            if len(returned) < _KEEP_RETURNED:
                returned.append(scratch)
                return
        scratch.release()

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
        for template in self._templates.values():
            template.path.unlink(missing_ok=True)
        self._templates.clear()
        for returned in self._returned.values():
            for scratch in returned:
                scratch.release()
        self._returned.clear()


@dataclasses.dataclass(frozen=True)
class Template:
    """A formatted image and where its data is (everything else is a hole)."""

    path: Path
    size: int
    extents: tuple[tuple[int, int], ...]

    def copy_to(self, image: Path) -> None:
        src = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(image, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                # A reused image: drop every block it had (no inode churn), then lay the template over it.
                os.ftruncate(dst, 0)
                os.ftruncate(dst, self.size)
                for offset, length in self.extents:
                    done = 0
                    while done < length:
                        n = os.copy_file_range(src, dst, length - done, offset + done, offset + done)
                        if n == 0:
                            raise OSError(errno.EIO, f"{self.path} is shorter than it was")
                        done += n
            finally:
                os.close(dst)
        finally:
            os.close(src)


def _format(path: Path, size_mb: int, mkfs: str) -> Template:
    """mkfs.ext4 an image of ``size_mb`` usable MB, make its root what /tmp must be, and map its data."""
    with open(path, "wb") as f:
        f.truncate(image_mb(size_mb) << 20)
    try:
        subprocess.run(
            [
                mkfs,
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
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # Done once here rather than in every environment's start: no lost+found, root 1777 (sticky, as /tmp).
        debugfs = shutil.which("debugfs") or str(Path(mkfs).with_name("debugfs"))
        subprocess.run(
            [debugfs, "-w", "-f", "-", str(path)],
            input=b"rmdir lost+found\nset_inode_field <2> mode 041777\n",
            check=True,
            capture_output=True,
            timeout=60,
        )
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            extents: list[tuple[int, int]] = []
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(fd, start, os.SEEK_HOLE)
                extents.append((start, end - start))
                pos = end
        finally:
            os.close(fd)
        return Template(path, size, tuple(extents))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# GET_FREE names a free device without reserving it: attaching is serialised here, and a device another
# program took in between (EBUSY) is skipped.
_attach_lock = threading.Lock()
_ATTACH_TRIES = 20


def _attach(image: Path, size_mb: int) -> Scratch:
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
                return Scratch(image, device, loop_fd, size_mb)
        raise OSError(errno.EBUSY, "no free loop device after several tries")
    finally:
        os.close(image_fd)
