"""The embedded code store: packages on local disk, addressed by their SHA-256.

Layout under ``<data-dir>/code``::

    blobs/<hex>.zip     the package exactly as uploaded (GetFunction's Code.Location serves it)
    trees/<hex>/        the validated, extracted tree (read-only by convention; environments link to it)
    opt/<hex>/          a function's layers merged in order (its /opt), named by Function.opt_key
    staging/            extraction in progress; a refusal removes only its own new directory there

Storing is idempotent: the same zip uploaded twice is stored once. ``collect`` removes packages no
function refers to any more. A disk with no space left (ENOSPC, EDQUOT) is CodeStorageExceeded, after what
this call made is removed again: a package is stored whole (tree and blob) or not at all.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from selfless.artifacts.unzip import unpack_zip
from selfless.errors import CodeStorageExceeded
from selfless.models import CodeRef

_RECENT_S = 120.0
_FULL = "Code storage limit exceeded: the server's disk has no space left for this package."


class LocalCodeStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._trees = root / "trees"
        self._staging = root / "staging"
        self._opt = root / "opt"
        self._lock = asyncio.Lock()
        # Keys stored moments ago may not be referenced by a function record yet; collect spares them.
        self._recent: dict[str, float] = {}

    def open(self) -> None:
        for d in (self._blobs, self._trees, self._staging, self._opt):
            d.mkdir(parents=True, exist_ok=True)
        # Anything in staging is from a run that died mid-extraction.
        for leftover in self._staging.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    async def put(self, data: bytes) -> CodeRef:
        """Validate and store a zip; raises PackageRefused (nothing kept) when it is hostile or broken, and
        CodeStorageExceeded (nothing kept) when the disk is full."""
        digest = hashlib.sha256(data).digest()
        key = digest.hex()
        self._recent[key] = time.monotonic()
        sha_b64 = base64.b64encode(digest).decode()
        tree = self._trees / key
        if tree.is_dir() and (self._blobs / f"{key}.zip").is_file():
            return CodeRef(sha_b64, key, len(data), _tree_size(tree))
        with _full_is_exceeded():
            unpacked = await asyncio.to_thread(unpack_zip, data, self._staging)
            async with self._lock:
                placed = False
                try:
                    if tree.exists():
                        shutil.rmtree(unpacked.path)
                    else:
                        os.rename(unpacked.path, tree)
                        placed = True
                    await asyncio.to_thread(self._write_blob, key, data)
                except BaseException:
                    # A tree without its blob is half a package: it goes too (placed by this call only).
                    for leftover in (unpacked.path, tree if placed else None):
                        if leftover is not None and leftover.exists():
                            shutil.rmtree(leftover, ignore_errors=True)
                    raise
        return CodeRef(sha_b64, key, len(data), unpacked.unzipped_size)

    def _write_blob(self, key: str, data: bytes) -> None:
        final = self._blobs / f"{key}.zip"
        if final.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self._staging, suffix=".zip")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def tree(self, key: str) -> Path:
        return self._trees / key

    def blob(self, key: str) -> Path:
        return self._blobs / f"{key}.zip"

    def opt_tree(self, opt_key: str) -> Path:
        return self._opt / opt_key

    async def build_opt(self, opt_key: str, keys: Iterable[str]) -> None:
        """Merge the trees of ``keys`` (layer packages, in order) into the /opt tree ``opt_key`` names, as
        Lambda extracts layers: a later layer's entry replaces an earlier one's at the same path. Files are
        hard links to the layers' own trees. Idempotent; a partial merge never becomes visible."""
        self._recent[opt_key] = time.monotonic()
        if self.opt_tree(opt_key).is_dir():
            return
        with _full_is_exceeded():
            await asyncio.to_thread(self._build_opt, opt_key, [self.tree(k) for k in keys])

    def _build_opt(self, opt_key: str, trees: list[Path]) -> None:
        staging = Path(tempfile.mkdtemp(prefix="opt-", dir=self._staging))
        try:
            staging.chmod(0o755)
            for tree in trees:
                _merge_into(tree, staging)
            try:
                os.rename(staging, self.opt_tree(opt_key))
            except OSError:
                if not self.opt_tree(opt_key).is_dir():  # not a concurrent build of the same tree
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    async def collect(self, referenced: Iterable[str]) -> int:
        """Remove every package whose key is not in ``referenced``; returns how many went."""
        now = time.monotonic()
        self._recent = {k: t for k, t in self._recent.items() if now - t < _RECENT_S}
        keep = set(referenced) | set(self._recent)
        async with self._lock:
            return await asyncio.to_thread(self._collect, keep)

    def _collect(self, keep: set[str]) -> int:
        removed = 0
        for blob in self._blobs.glob("*.zip"):
            if blob.stem not in keep:
                blob.unlink(missing_ok=True)
                removed += 1
        for parent in (self._trees, self._opt):
            for tree in parent.iterdir():
                if tree.name not in keep and tree.is_dir() and not tree.is_symlink():
                    shutil.rmtree(tree, ignore_errors=True)
        return removed

    def total_size(self, keys: Iterable[str]) -> int:
        total = 0
        for key in set(keys):
            with contextlib.suppress(FileNotFoundError):
                total += self.blob(key).stat().st_size
        return total


@contextlib.contextmanager
def _full_is_exceeded() -> Iterator[None]:
    """A write that found the disk full becomes CodeStorageExceeded (its own clean-up has run by then)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CodeStorageExceeded(_FULL) from exc
        raise


def _tree_size(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _merge_into(src: Path, dst: Path) -> None:
    """Lay ``src`` over ``dst``: what ``src`` holds replaces whatever ``dst`` has at the same path."""
    src_s = str(src)
    for dirpath, dirs, files in os.walk(src_s):
        rel = os.path.relpath(dirpath, src_s)
        target_dir = str(dst) if rel == "." else os.path.join(dst, rel)
        for d in dirs:
            sp, tp = os.path.join(dirpath, d), os.path.join(target_dir, d)
            if os.path.islink(sp):
                if os.path.lexists(tp):
                    _remove(tp)
                os.symlink(os.readlink(sp), tp)
            elif os.path.lexists(tp) and not (os.path.isdir(tp) and not os.path.islink(tp)):
                os.unlink(tp)  # an earlier layer's file or link where this layer has a directory
                os.mkdir(tp, 0o755)
            elif not os.path.lexists(tp):
                os.mkdir(tp, 0o755)
        for f in files:
            sp, tp = os.path.join(dirpath, f), os.path.join(target_dir, f)
            if os.path.lexists(tp):
                _remove(tp)
            if os.path.islink(sp):
                os.symlink(os.readlink(sp), tp)
            else:
                os.link(sp, tp)


def link_tree(src: Path, dst: Path) -> None:
    """Give an environment its own copy of a code tree: its own directories, files hard-linked.

    The environment can add, remove and rename entries in its copy without touching other environments;
    file contents are shared read-only (the Linux sandbox mounts the copy read-only as well).
    """
    src_s = str(src)
    os.mkdir(dst, 0o755)
    for dirpath, dirs, files in os.walk(src_s):
        rel = os.path.relpath(dirpath, src_s)
        target_dir = str(dst) if rel == "." else os.path.join(dst, rel)
        for d in dirs:
            sp = os.path.join(dirpath, d)
            tp = os.path.join(target_dir, d)
            if os.path.islink(sp):
                os.symlink(os.readlink(sp), tp)
            else:
                os.mkdir(tp, 0o755)
        for f in files:
            sp = os.path.join(dirpath, f)
            tp = os.path.join(target_dir, f)
            if os.path.islink(sp):
                os.symlink(os.readlink(sp), tp)
            else:
                os.link(sp, tp)
