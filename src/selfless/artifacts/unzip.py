"""Extract an untrusted Lambda code package (a zip held in memory) into a new directory.

Contract of :func:`unpack_zip`:

* It creates one NEW directory with :func:`tempfile.mkdtemp` inside ``parent`` before it reads the zip,
  and writes only below it. On any refusal it removes that directory (and only it: never a path that
  came from the zip) and raises :class:`~selfless.errors.PackageRefused` with a one-line message
  (AWS's own wording where AWS has one). Other failures (disk full, ...) remove it too and propagate.
* The whole package is validated before the first byte is written: entry count (read from the End Of
  Central Directory record before :class:`zipfile.ZipFile` is built, since its constructor parses the
  whole central directory), names, file types, duplicates, symlink targets and the declared unzipped
  size. While streaming, the bytes actually produced are counted as well, so a header that lies about
  its size cannot push the tree past ``max_unzipped``.
* Refused: entry names that are absolute (``/x``, ``C:...``), contain ``..`` or empty components, a
  backslash or a NUL byte; fifos, devices, sockets; duplicates and file/directory clashes; entries
  written through a symlink entry; symlinks whose target is absolute or resolves (following the
  package's other symlinks) outside the package root; encrypted, corrupt or truncated data.
* Written: directories 0o755, regular files 0o644, or 0o755 when the zip's unix mode has an exec bit;
  never setuid/setgid/sticky. ``.`` components are dropped (``./a`` is ``a``). Symlinks that stay
  inside are recreated, after every file and directory. Every path component is opened relative to its
  parent's directory fd with ``O_NOFOLLOW``, and every file is created with ``O_CREAT | O_EXCL``, so no
  write can go through a symlink even if the validation were wrong.
* Limits of our own: a path component is at most 255 bytes, a path at most :data:`MAX_DEPTH`
  components deep, a symlink target at most 4095 bytes, and the directories a package implies are
  at most ``max_entries`` (each held open while its subtree is written, so depth also bounds fds).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from selfless.errors import PackageRefused

__all__ = ["MAX_DEPTH", "MAX_ENTRIES", "MAX_UNZIPPED", "Unpacked", "unpack_zip", "zip_sha256_b64"]

MAX_UNZIPPED = 262_144_000  # AWS: 250 MB unzipped
MAX_ENTRIES = 20_000  # our documented limit on files in one package
MAX_DEPTH = 128  # path components; far beyond any real package, and it bounds the fds held open

CORRUPT = "Could not unzip uploaded file. Please check your file, then try to upload again."

_NAME_MAX = 255  # bytes in one path component (Linux NAME_MAX)
_LINK_MAX = 4095  # bytes in a symlink target (PATH_MAX - 1)
_LINK_HOPS = 40  # nested symlinks followed while resolving one target (Linux's MAXSYMLINKS)
_CHUNK = 1 << 16
_SHOWN = 200  # characters of a hostile name quoted in a message

# Every exception zipfile and its decompressors raise on bad bytes read from memory. Writes to disk are
# kept outside the ``try`` blocks that catch these, so an OSError there is never mistaken for corruption.
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,  # bz2 reports bad data as OSError
    ValueError,  # includes UnicodeDecodeError on a bad UTF-8 name
    struct.error,
    NotImplementedError,  # unsupported compression method or zip version
    RuntimeError,  # encrypted entry
    OverflowError,
    IndexError,
)

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD64 = b"PK\x06\x06"
_EOCD64_SIZE = 56
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64_LOCATOR_SIZE = 20
_CENTRAL = b"PK\x01\x02"
_CENTRAL_SIZE = 46

_FLAG_ENCRYPTED = 0x1
_UNIX = 3  # ZipInfo.create_system of entries made on unix
_DRIVE = re.compile(r"[A-Za-z]:")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Kind = Literal["dir", "file", "link"]


@dataclasses.dataclass(frozen=True)
class Unpacked:
    path: Path  # the new directory holding the extracted tree
    file_count: int  # regular files and symlinks (directories are not counted)
    unzipped_size: int  # bytes actually written: file contents plus symlink targets


def zip_sha256_b64(data: bytes) -> str:
    """Base64 of the package's SHA-256, as Lambda's ``CodeSha256``."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def unpack_zip(
    data: bytes, parent: Path, *, max_unzipped: int = MAX_UNZIPPED, max_entries: int = MAX_ENTRIES
) -> Unpacked:
    """Extract a zip held in memory into a NEW directory created (tempfile.mkdtemp) inside `parent`.
    On any refusal raise PackageRefused with AWS's message, after removing only that new directory."""
    # The one path clean-up may delete, fixed before a byte of the zip is looked at.
    dest = Path(tempfile.mkdtemp(prefix="unzip-", dir=parent))
    try:
        _check_entry_count(data, max_entries)
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except _CORRUPT_ERRORS as exc:
            raise PackageRefused(CORRUPT) from exc
        with archive:
            infos = archive.infolist()
            if len(infos) > max_entries:  # belt and braces: the pre-count mirrors zipfile's parser
                raise PackageRefused(_too_many(str(len(infos)), max_entries))
            budget = _Budget(max_unzipped)
            root = _plan(archive, infos, budget, max_entries)
            file_count = _extract(archive, root, dest, budget)
        return Unpacked(dest, file_count, budget.used)
    except BaseException:
        # rmtree removes symlinks without following them (the fd-based variant on Linux).
        shutil.rmtree(dest, ignore_errors=True)
        raise


# --- entry count, before zipfile parses the central directory ------------------------------------------


def _too_many(count: str, limit: int) -> str:
    return f"Package has {count} files; the limit is {limit}"


def _check_entry_count(data: bytes, max_entries: int) -> None:
    """Refuse a package whose central directory holds more than ``max_entries`` records.

    This mirrors how zipfile (3.11) finds the EOCD record, the zip64 record and the start of the central
    directory, so the records counted are the ones its constructor would parse. The EOCD's own count is
    not trusted alone: zipfile walks ``size_cd`` bytes whatever the count says.
    """
    found = _find_end_record(data)
    if found is None:
        raise PackageRefused(CORRUPT)
    claimed, size_cd, start = found
    if claimed > max_entries:
        raise PackageRefused(_too_many(str(claimed), max_entries))
    # Every record zipfile parses starts with the central-header signature at its own offset, so the
    # number of signatures in the whole buffer bounds the records; walk them only when that bound is high.
    if data.count(_CENTRAL) <= max_entries:
        return
    if start < 0:
        raise PackageRefused(CORRUPT)
    end = min(start + size_cd, len(data))
    pos, count = start, 0
    while pos - start < size_cd:
        if end - pos < _CENTRAL_SIZE or data[pos : pos + 4] != _CENTRAL:
            raise PackageRefused(CORRUPT)
        count += 1
        if count > max_entries:
            raise PackageRefused(_too_many(f"more than {max_entries}", max_entries))
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        pos += _CENTRAL_SIZE + name_len + extra_len + comment_len


def _find_end_record(data: bytes) -> tuple[int, int, int] | None:
    """(entries claimed, central directory size, central directory start) as zipfile computes them."""
    size = len(data)
    if size < _EOCD_SIZE:
        return None
    if data[size - _EOCD_SIZE : size - _EOCD_SIZE + 4] == _EOCD and data[size - 2 :] == b"\0\0":
        eocd = size - _EOCD_SIZE
    else:
        window = max(size - (1 << 16) - _EOCD_SIZE, 0)
        eocd = data.rfind(_EOCD, window)
        if eocd < 0 or eocd + _EOCD_SIZE > size:
            return None
    _sig, _disk, _cd_disk, _here, claimed, size_cd, _offset, _comment = struct.unpack_from("<4s4H2LH", data, eocd)
    start = eocd - size_cd
    # zipfile seeks relative to the end of a BytesIO, which clamps a negative position to 0.
    locator = max(eocd - _EOCD64_LOCATOR_SIZE, 0)
    if data[locator : locator + 4] == _EOCD64_LOCATOR:
        _sig, disk, _rel, disks = struct.unpack_from("<4sLQL", data, locator)
        if disk != 0 or disks > 1:
            raise PackageRefused(CORRUPT)  # multi-disk: zipfile refuses it too
        record = max(eocd - _EOCD64_LOCATOR_SIZE - _EOCD64_SIZE, 0)
        if data[record : record + 4] == _EOCD64 and record + _EOCD64_SIZE <= size:
            fields = struct.unpack_from("<4sQ2H2L4Q", data, record)
            claimed, size_cd = fields[7], fields[8]
            start = eocd - size_cd - _EOCD64_SIZE - _EOCD64_LOCATOR_SIZE
    return claimed, size_cd, start


# --- validation: the whole plan is checked before anything is written ------------------------------------


class _Budget:
    """Counts the bytes really produced; the declared sizes are checked separately, and may lie."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise PackageRefused(_too_big(self.limit))


def _too_big(limit: int) -> str:
    return f"Unzipped size must be smaller than {limit} bytes"


class _Node:
    """One path of the package: a directory (named by an entry or implied by one), a file or a symlink."""

    __slots__ = ("children", "explicit", "has_links", "info", "kind", "mode", "name", "parent", "target")

    def __init__(self, name: str, parent: _Node | None, kind: Kind) -> None:
        self.name = name
        self.parent = parent
        self.kind: Kind = kind
        self.children: dict[str, _Node] = {}
        self.explicit = False  # named by an entry, not only implied by a deeper one
        self.has_links = False  # a symlink somewhere below (directories only)
        self.info: zipfile.ZipInfo | None = None
        self.mode = 0o755
        self.target = ""

    def path(self) -> str:
        parts: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))


def _show(name: str) -> str:
    """A hostile name quoted on one line, cut to a readable length."""
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "...")


def _bad_name(name: str) -> PackageRefused:
    return PackageRefused(f"Invalid zip entry name: {_show(name)}")


def _split_name(name: str) -> tuple[tuple[str, ...], bool]:
    """The components of an entry name and whether it names a directory; refuses anything unsafe."""
    # orig_filename keeps what zipfile's ZipInfo.filename silently cuts at a NUL.
    if not name or "\0" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise _bad_name(name)
    is_dir = name.endswith("/")
    parts = (name[:-1] if is_dir else name).split("/")
    for part in parts:
        if part in ("", "..") or len(os.fsencode(part)) > _NAME_MAX:
            raise _bad_name(name)
    kept = tuple(part for part in parts if part != ".")
    if len(kept) > MAX_DEPTH:
        raise _bad_name(name)
    return kept, is_dir


def _classify(info: zipfile.ZipInfo, named_dir: bool) -> tuple[Kind, int]:
    """Kind and permission bits of an entry, from the unix mode when the zip was made on unix."""
    name = info.orig_filename
    kind: Kind
    if info.create_system == _UNIX:
        unix = info.external_attr >> 16
        ftype = stat.S_IFMT(unix)
        if ftype == stat.S_IFLNK:
            if named_dir:
                raise _bad_name(name)
            return "link", 0o777
        if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):  # fifo, device, socket, or nonsense
            raise PackageRefused(f"Unsupported file type in zip entry: {_show(name)}")
        kind = "dir" if named_dir or ftype == stat.S_IFDIR else "file"
        # Only the exec bits carry over: no setuid/setgid/sticky, no group/world write.
        mode = 0o755 if kind == "dir" or unix & 0o111 else 0o644
    else:
        kind, mode = ("dir", 0o755) if named_dir else ("file", 0o644)
    if kind == "dir" and info.file_size != 0:
        raise PackageRefused(f"Invalid zip entry: directory {_show(name)} has data")
    return kind, mode


def _plan(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], budget: _Budget, max_entries: int) -> _Node:
    """Build and check the tree of everything the package will write; returns its root."""
    root = _Node("", None, "dir")
    links: list[_Node] = []
    declared = 0
    implied_dirs = 0
    for info in infos:
        parts, named_dir = _split_name(info.orig_filename)
        kind, mode = _classify(info, named_dir)
        if info.flag_bits & _FLAG_ENCRYPTED:
            raise PackageRefused(CORRUPT)
        declared += info.file_size
        if not parts:  # "./": the root itself
            if kind != "dir":
                raise _bad_name(info.orig_filename)
            continue
        node = root
        ancestors: list[_Node] = []
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                implied_dirs += 1
                if implied_dirs > max_entries:
                    raise PackageRefused(f"Package has more than {max_entries} directories")
                child = node.children[part] = _Node(part, node, "dir")
            elif child.kind == "link":
                raise _through_link(info.orig_filename, child)
            elif child.kind == "file":
                raise _clash(child)
            ancestors.append(child)
            node = child
        last = parts[-1]
        existing = node.children.get(last)
        if existing is not None:
            if existing.explicit:
                raise PackageRefused(f"Duplicate zip entry: {_show(info.orig_filename)}")
            # Only an implied directory can already be here: entries came in below it first.
            if kind == "link":
                raise _through_link(next(iter(existing.children.values())).path(), existing)
            if kind == "file":
                raise _clash(existing)
            existing.explicit = True
            continue
        new = node.children[last] = _Node(last, node, kind)
        new.explicit, new.info, new.mode = True, info, mode
        if kind == "link":
            links.append(new)
            root.has_links = True
            for ancestor in ancestors:
                ancestor.has_links = True
    if declared > budget.limit:
        raise PackageRefused(_too_big(budget.limit))
    for link in links:
        assert link.info is not None
        link.target = _read_link(archive, link.info, budget)
    resolver = _Resolver()
    for link in links:
        resolver.resolve(link)
    return root


def _through_link(name: str, link: _Node) -> PackageRefused:
    return PackageRefused(f"Zip entry {_show(name)} is inside symlink {_show(link.path())}")


def _clash(node: _Node) -> PackageRefused:
    return PackageRefused(f"Zip entry is both a file and a directory: {_show(node.path())}")


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """The entry's data as decompressed, each chunk charged to ``budget`` before it is handed out."""
    real = 0
    try:
        src = archive.open(info)
    except _CORRUPT_ERRORS as exc:
        raise PackageRefused(CORRUPT) from exc
    with src:
        while True:
            try:
                chunk = src.read(_CHUNK)
            except _CORRUPT_ERRORS as exc:  # bad CRC, truncated or undecodable data
                raise PackageRefused(CORRUPT) from exc
            if not chunk:
                return
            budget.take(len(chunk))
            real += len(chunk)
            # zipfile stops at the declared size itself; this holds even if some reader did not.
            if real > info.file_size:
                raise PackageRefused(CORRUPT)
            yield chunk


def _read_link(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> str:
    name = info.orig_filename
    if not 0 < info.file_size <= _LINK_MAX:
        raise PackageRefused(f"Invalid symlink target in zip entry: {_show(name)}")
    raw = b"".join(_chunks(archive, info, budget))
    try:
        target = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageRefused(f"Invalid symlink target in zip entry: {_show(name)}") from None
    if not target or "\0" in target or "\\" in target or target.startswith("/") or _DRIVE.match(target):
        raise PackageRefused(f"Symlink {_show(name)} points outside the package: {_show(target)}")
    return target


class _Resolver:
    """Resolves symlink targets inside the package tree, following the package's own symlinks.

    A purely lexical check is not enough: with ``d -> .``, the target ``d/..`` normalises to ``.`` but
    the kernel follows ``d`` first and lands above the root. So each target is walked component by
    component the way the kernel would, expanding symlink entries as they are met. Components that name
    nothing in the package are kept as a lexical tail (the kernel would fail there; being conservative
    costs nothing). Results are memoised, so each target is walked once.
    """

    def __init__(self) -> None:
        self._done: dict[_Node, tuple[_Node, tuple[str, ...]]] = {}
        self._active: list[_Node] = []

    def resolve(self, link: _Node) -> tuple[_Node, tuple[str, ...]]:
        done = self._done.get(link)
        if done is not None:
            return done
        if link in self._active or len(self._active) >= _LINK_HOPS:
            raise PackageRefused(f"Symlink loop in zip entry: {_show(link.path())}")
        assert link.parent is not None
        self._active.append(link)
        node: _Node = link.parent
        tail: list[str] = []
        for part in link.target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if tail:
                    tail.pop()
                elif node.parent is None:
                    raise PackageRefused(
                        f"Symlink {_show(link.path())} points outside the package: {_show(link.target)}"
                    )
                else:
                    node = node.parent
            elif tail or part not in node.children:
                tail.append(part)
            else:
                child = node.children[part]
                if child.kind == "link":
                    node, hops = self.resolve(child)
                    tail = list(hops)
                else:
                    node = child
        self._active.pop()
        result = self._done[link] = (node, tuple(tail))
        return result


# --- extraction ----------------------------------------------------------------------------------------


def _extract(archive: zipfile.ZipFile, root: _Node, dest: Path, budget: _Budget) -> int:
    """Write the checked tree under ``dest``; returns the number of files and symlinks written."""
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        count = _write_dir(archive, root, root_fd, budget)
        if root.has_links:
            count += _write_links(root, root_fd)
        os.fchmod(root_fd, 0o755)  # mkdtemp's 0o700 kept others out only while the tree was incomplete
        return count
    finally:
        os.close(root_fd)


def _write_dir(archive: zipfile.ZipFile, node: _Node, dir_fd: int, budget: _Budget) -> int:
    count = 0
    for name, child in sorted(node.children.items()):
        if child.kind == "dir":
            with _exists_is_duplicate(child):
                os.mkdir(name, 0o755, dir_fd=dir_fd)
            # Opened with O_NOFOLLOW, relative to the parent's fd: never a path string from the root.
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                os.fchmod(fd, 0o755)  # mkdir's mode is filtered by the umask
                count += _write_dir(archive, child, fd, budget)
            finally:
                os.close(fd)
        elif child.kind == "file":
            assert child.info is not None
            with _exists_is_duplicate(child):
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                for chunk in _chunks(archive, child.info, budget):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                # Permissions last, so a half-written file is never executable.
                os.fchmod(fd, child.mode)
            finally:
                os.close(fd)
            count += 1
    return count


def _write_links(node: _Node, dir_fd: int) -> int:
    """Create the symlinks, once every file and directory exists."""
    count = 0
    for name, child in sorted(node.children.items()):
        if child.kind == "link":
            with _exists_is_duplicate(child):
                os.symlink(child.target, name, dir_fd=dir_fd)
            count += 1
        elif child.kind == "dir" and child.has_links:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                count += _write_links(child, fd)
            finally:
                os.close(fd)
    return count


@contextlib.contextmanager
def _exists_is_duplicate(node: _Node) -> Iterator[None]:
    """Names distinct in the zip can still collide on a case-insensitive or normalising filesystem."""
    try:
        yield
    except FileExistsError:
        raise PackageRefused(f"Duplicate zip entry: {_show(node.path())}") from None
