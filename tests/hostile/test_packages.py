"""Hostile code packages: every refusal leaves the filesystem exactly as it was.

Each hostile zip is built in memory (by zipfile, then patched byte by byte where the attack needs a lie
zipfile will not write). A refusal must raise PackageRefused with the expected message and leave the
whole test directory unchanged: no new directory in ``parent``, the sentinel next to it intact, nothing
created outside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import struct
import tempfile
import uuid
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfless.artifacts import unzip
from selfless.artifacts.unzip import CORRUPT, MAX_ENTRIES, MAX_UNZIPPED, unpack_zip, zip_sha256_b64
from selfless.errors import PackageRefused

# --- building zips -------------------------------------------------------------------------------------

Entry = tuple[str | zipfile.ZipInfo, bytes]


def make_zip(entries: list[Entry], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names some tests need
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def unix(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def link(name: str, target: str) -> Entry:
    return unix(name, stat.S_IFLNK | 0o777), target.encode()


def directory(name: str) -> Entry:
    return unix(name, stat.S_IFDIR | 0o755), b""


def raw_zip(name: bytes, data: bytes) -> bytes:
    """A one-entry stored zip written by hand, for names zipfile refuses to write (it cannot write "")."""
    crc = zlib.crc32(data)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0)
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        0,
        0,
        0,
        crc,
        len(data),
        len(data),
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + data
    cd = central + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + end


def shown(name: str) -> str:
    """How a refusal quotes a name: repr, cut after 200 characters."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def end_record(data: bytes) -> int:
    return data.rfind(b"PK\x05\x06")


def central_headers(data: bytes) -> list[int]:
    eocd = end_record(data)
    count, size, offset = struct.unpack_from("<HLL", data, eocd + 10)
    found, pos = [], offset
    while pos < offset + size:
        assert data[pos : pos + 4] == b"PK\x01\x02"
        found.append(pos)
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + m + k
    assert len(found) == count
    return found


def local_headers(data: bytes) -> list[int]:
    return [struct.unpack_from("<L", data, cd + 42)[0] for cd in central_headers(data)]


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def patch_field(data: bytes, index: int, *, local: int, central: int, fmt: str, value: int) -> bytes:
    """Set one field of entry ``index`` in both its local header and its central directory record."""
    data = patch(data, local_headers(data)[index] + local, fmt, value)
    return patch(data, central_headers(data)[index] + central, fmt, value)


# --- the world around the extraction -------------------------------------------------------------------


@dataclasses.dataclass
class World:
    base: Path  # everything the test owns
    parent: Path  # where unpack_zip makes its new directory
    victim: Path  # a sentinel next to parent that hostile packages aim at


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root with its type, mode and content (files) or target (symlinks)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                seen[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                seen[path] = ("file", st_.st_mode, st_.st_mtime_ns, Path(path).read_bytes())
            else:
                seen[path] = ("other", st_.st_mode)
    return seen


@pytest.fixture
def world(tmp_path: Path) -> World:
    parent = tmp_path / "parent"
    parent.mkdir()
    # A sibling already in parent (another package's tree) must survive a refusal next to it.
    (parent / "unzip-other").mkdir()
    (parent / "unzip-other" / "keep.txt").write_text("keep")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("original")
    return World(tmp_path, parent, victim)


def refused(world: World, data: bytes, message: str, **limits: int) -> None:
    before = snapshot(world.base)
    with pytest.raises(PackageRefused) as caught:
        unpack_zip(data, world.parent, **limits)
    assert caught.value.message == message
    assert "\n" not in caught.value.message
    assert snapshot(world.base) == before
    assert world.victim.read_text() == "original"


# --- not a zip -----------------------------------------------------------------------------------------


def test_corrupt_message_is_aws_wording() -> None:
    assert CORRUPT == "Could not unzip uploaded file. Please check your file, then try to upload again."


@pytest.mark.parametrize("data", [b"", b"not a zip at all", os.urandom(4096), b"PK\x03\x04" + bytes(100)])
def test_not_a_zip(world: World, data: bytes) -> None:
    refused(world, data, CORRUPT)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1, -21])
def test_truncated_zip(world: World, keep: float) -> None:
    data = make_zip([("a.txt", b"hello" * 1000), ("b/c.txt", os.urandom(2000))])
    cut = int(len(data) * keep) if keep > 0 else len(data) + int(keep)
    refused(world, data[:cut], CORRUPT)


def test_truncated_member_data(world: World) -> None:
    # The central directory is intact but the first entry's data is cut short (the rest shifted in).
    data = make_zip([("a.txt", os.urandom(5000)), ("b.txt", b"b")])
    start = local_headers(data)[0] + 30 + len("a.txt")
    refused(world, data[: start + 100] + data[start + 4000 :], CORRUPT)


def test_crc_mismatch(world: World) -> None:
    data = make_zip([("a.txt", b"hello world" * 100)])
    refused(world, patch_field(data, 0, local=14, central=16, fmt="<L", value=0xDEADBEEF), CORRUPT)


def test_encrypted_entry(world: World) -> None:
    data = make_zip([("a.txt", b"secret")])
    refused(world, patch_field(data, 0, local=6, central=8, fmt="<H", value=1), CORRUPT)


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "../../etc/x",
        "a/../../x",
        "ok/../x",
        "..",
        "..\\x",
        "a\\b",
        "C:\\x",
        "C:/x",
        "a//b",
        "a/b//",
        "x" * 256,
    ],
)
def test_bad_names(world: World, name: str) -> None:
    data = make_zip([("fine.txt", b"fine"), (name, b"pwned")])
    refused(world, data, f"Invalid zip entry name: {shown(name)}")
    assert not (world.base / "x").exists()
    assert not (world.base / "etc").exists()


def test_absolute_name(world: World) -> None:
    target = Path(tempfile.gettempdir()) / f"selfless-zip-slip-{uuid.uuid4().hex}"
    name = str(target)
    refused(world, make_zip([(name, b"pwned")]), f"Invalid zip entry name: {name!r}")
    assert not target.exists()


def test_empty_name(world: World) -> None:
    data = raw_zip(b"", b"x")
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == [""]
    refused(world, data, "Invalid zip entry name: ''")


def test_nul_in_name(world: World) -> None:
    # zipfile cuts names at a NUL when reading (ZipInfo.filename) and cannot write one: patch it in.
    data = make_zip([("evil_sh", b"x")])
    data = data.replace(b"evil_sh", b"evil\0sh")
    refused(world, data, "Invalid zip entry name: 'evil\\x00sh'")


def test_too_deep(world: World) -> None:
    name = "/".join(["d"] * (unzip.MAX_DEPTH + 1))
    refused(world, make_zip([(name, b"x")]), f"Invalid zip entry name: {shown(name)}")
    assert len(shown(name)) < 210


@pytest.mark.parametrize(
    "names",
    [
        ["a.txt", "a.txt"],
        ["d/", "d/"],
        ["a.txt", "./a.txt"],
        ["sub/a.txt", "sub/./a.txt"],
    ],
)
def test_duplicate_names(world: World, names: list[str]) -> None:
    data = make_zip([(name, b"x" if not name.endswith("/") else b"") for name in names])
    refused(world, data, f"Duplicate zip entry: {names[1]!r}")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "a/b"], "Zip entry is both a file and a directory: 'a'"),
        (["a/b", "a"], "Zip entry is both a file and a directory: 'a'"),
        (["a/", "a"], "Duplicate zip entry: 'a'"),
    ],
)
def test_file_and_directory_clash(world: World, names: list[str], message: str) -> None:
    refused(world, make_zip([(name, b"" if name.endswith("/") else b"x") for name in names]), message)


# --- special files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ftype", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK, 0o030000])
def test_special_files(world: World, ftype: int) -> None:
    data = make_zip([("ok.txt", b"ok"), (unix("special", ftype | 0o644), b"")])
    refused(world, data, "Unsupported file type in zip entry: 'special'")


def test_directory_with_data(world: World) -> None:
    data = make_zip([(unix("d", stat.S_IFDIR | 0o755), b"data")])
    refused(world, data, "Invalid zip entry: directory 'd' has data")


# --- symlinks ------------------------------------------------------------------------------------------


def _passwd_state() -> tuple[Any, ...]:
    st_ = os.stat("/etc/passwd")
    return (
        st_.st_mode,
        st_.st_size,
        st_.st_mtime_ns,
        hashlib.sha256(Path("/etc/passwd").read_bytes()).digest(),
    )


def test_symlink_to_etc_passwd(world: World) -> None:
    before = _passwd_state()
    data = make_zip([link("passwd", "/etc/passwd")])
    refused(world, data, "Symlink 'passwd' points outside the package: '/etc/passwd'")
    # The classic follow-up: a second entry written over the link's target.
    data = make_zip([link("passwd", "/etc/passwd"), ("passwd", b"root::0:0::/:/bin/sh\n")])
    refused(world, data, "Duplicate zip entry: 'passwd'")
    assert _passwd_state() == before


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("up", "../../x"),
        ("up", ".."),
        ("a/b/up", "../../../outside/victim"),
        ("up", "./../outside"),
        ("sub/up", "../sub/../.."),
        ("drive", "C:/x"),
        ("back", "..\\..\\x"),
    ],
)
def test_symlink_escaping(world: World, name: str, target: str) -> None:
    data = make_zip([("sub/file", b"f"), link(name, target)])
    refused(world, data, f"Symlink {name!r} points outside the package: {target!r}")
    assert not (world.base / "x").exists()


def test_symlink_escaping_through_another_symlink(world: World) -> None:
    # Lexically "d/.." is ".", but the kernel follows d (-> the root) first and lands above the root.
    data = make_zip([link("d", "."), link("e", "d/.."), ("f", b"")])
    refused(world, data, "Symlink 'e' points outside the package: 'd/..'")
    data = make_zip([("deep/er/x", b""), link("d", "deep/er"), link("e", "d/../../..")])
    refused(world, data, "Symlink 'e' points outside the package: 'd/../../..'")


def test_symlink_loop(world: World) -> None:
    refused(world, make_zip([link("a", "b"), link("b", "a")]), "Symlink loop in zip entry: 'a'")


@pytest.mark.parametrize("size", [0, 5000])
def test_symlink_target_size(world: World, size: int) -> None:
    refused(world, make_zip([link("l", "a" * size)]), "Invalid symlink target in zip entry: 'l'")


@pytest.mark.parametrize("link_first", [True, False])
def test_file_written_through_symlinked_dir(world: World, link_first: bool) -> None:
    escape = [link("a", "sub"), ("sub/x", b"x")]
    entries = [*escape, ("a/evil", b"evil")] if link_first else [("a/evil", b"evil"), *escape]
    refused(world, make_zip(entries), "Zip entry 'a/evil' is inside symlink 'a'")


def test_file_written_through_escaping_symlink(world: World) -> None:
    data = make_zip([link("out", "../../outside"), ("out/victim", b"pwned")])
    refused(world, data, "Zip entry 'out/victim' is inside symlink 'out'")


# --- sizes and counts ----------------------------------------------------------------------------------


def test_zip_bomb_by_declared_size(world: World) -> None:
    data = make_zip([("zeros", bytes(2_000_000))])
    assert len(data) < 10_000
    refused(world, data, "Unzipped size must be smaller than 1000000 bytes", max_unzipped=1_000_000)


def test_zip_bomb_declared_over_aws_limit(world: World) -> None:
    # The declared size alone refuses it: nothing is decompressed.
    data = make_zip([("a", b"x"), ("b", b"y")])
    data = patch(data, central_headers(data)[1] + 24, "<L", MAX_UNZIPPED)
    refused(world, data, f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")


def test_zip_bomb_lying_header(world: World) -> None:
    # Declares 100 bytes, holds a megabyte: zipfile stops at the declared size, and the CRC (of the
    # real megabyte) no longer matches what was read.
    data = make_zip([("bomb", bytes(1_000_000))])
    data = patch_field(data, 0, local=22, central=24, fmt="<L", value=100)
    refused(world, data, CORRUPT, max_unzipped=10_000)


def test_real_bytes_are_counted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A reader that does not stop at the declared size (zipfile does): the running count must stop it.
    data = make_zip([("a", b"small"), ("b", b"tiny")])
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: b"\0" * (n if n > 0 else 1))
    refused(world, data, "Unzipped size must be smaller than 1000 bytes", max_unzipped=1000)


def test_real_bytes_beyond_declared_entry_size(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_zip([("a", b"small")])
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: b"\0" * 10)
    refused(world, data, CORRUPT)


def test_too_many_entries(world: World) -> None:
    data = make_zip([(f"f{i}", b"") for i in range(51)])
    refused(world, data, "Package has 51 files; the limit is 50", max_entries=50)
    assert unpack_zip(data, world.parent, max_entries=51).file_count == 51


def _no_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count must refuse before zipfile's constructor parses the central directory."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("ZipFile constructed")

    monkeypatch.setattr(zipfile, "ZipFile", boom)


def test_eocd_claims_too_many(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_zip([("a", b"x")])
    eocd = end_record(data)
    data = patch(patch(data, eocd + 8, "<H", 65000), eocd + 10, "<H", 65000)
    _no_zipfile(monkeypatch)
    refused(world, data, f"Package has 65000 files; the limit is {MAX_ENTRIES}")


def test_zip64_eocd_claims_huge_count(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_zip([("a", b"x")])
    eocd = end_record(data)
    _sig, _d, _cd, _here, _total, size_cd, offset_cd, _c = struct.unpack_from("<4s4H2LH", data, eocd)
    body = data[:eocd]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 600_000, 600_000, size_cd, offset_cd)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, size_cd, offset_cd, 0)
    _no_zipfile(monkeypatch)
    refused(world, body + record + locator + end, f"Package has 600000 files; the limit is {MAX_ENTRIES}")


def test_eocd_understating_the_count(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # zipfile walks the central directory by its byte size, not by the count: the count is not trusted.
    data = make_zip([(f"f{i}", b"") for i in range(60)])
    eocd = end_record(data)
    data = patch(patch(data, eocd + 8, "<H", 1), eocd + 10, "<H", 1)
    _no_zipfile(monkeypatch)
    refused(world, data, "Package has more than 50 files; the limit is 50", max_entries=50)


def test_too_many_implied_directories(world: World) -> None:
    data = make_zip([(f"d{i}/e/f", b"") for i in range(10)])
    refused(world, data, "Package has more than 15 directories", max_entries=15)


# --- what a good package gives -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_good_package(world: World) -> None:
    windows = zipfile.ZipInfo("win.bat")
    windows.create_system = 0
    windows.external_attr = 0x20  # MS-DOS archive bit
    entries: list[Entry] = [
        ("top.txt", b"top"),
        directory("a/"),
        ("a/b/c.txt", b"deep"),
        directory("a/empty/"),
        (unix("bin/run", stat.S_IFREG | 0o4775), b"#!/bin/sh\n"),  # setuid and group write dropped
        (unix("bin/data", stat.S_IFREG | 0o666), b"data"),
        (unix("plain", 0o700), b"no type bits"),
        (windows, b"@echo off"),
        ("./dotted.txt", b"dot"),
        link("link", "a/b/c.txt"),
        link("a/b/up", "../../top.txt"),
        link("dirlink", "a/b"),
        link("via", "dirlink/c.txt"),
        link("dangling", "no/such/file"),
    ]
    data = make_zip(entries)
    result = unpack_zip(data, world.parent)
    tree = result.path
    assert tree.parent == world.parent
    assert tree.name.startswith("unzip-")
    assert (tree / "top.txt").read_bytes() == b"top"
    assert (tree / "a/b/c.txt").read_bytes() == b"deep"
    assert (tree / "a/empty").is_dir()
    assert (tree / "dotted.txt").read_bytes() == b"dot"
    assert mode(tree) == mode(tree / "a") == mode(tree / "a/b") == mode(tree / "a/empty") == 0o755
    assert mode(tree / "bin/run") == 0o755
    assert mode(tree / "bin/data") == 0o644
    assert mode(tree / "plain") == 0o755
    assert mode(tree / "win.bat") == 0o644
    assert mode(tree / "top.txt") == 0o644
    assert os.readlink(tree / "link") == "a/b/c.txt"
    assert (tree / "link").read_bytes() == b"deep"
    assert os.readlink(tree / "a/b/up") == "../../top.txt"
    assert (tree / "a/b/up").read_bytes() == b"top"
    assert (tree / "via").read_bytes() == b"deep"
    assert os.readlink(tree / "dangling") == "no/such/file"
    links = ["link", "a/b/up", "dirlink", "via", "dangling"]
    assert result.file_count == 7 + len(links)
    contents = [b"top", b"deep", b"#!/bin/sh\n", b"data", b"no type bits", b"@echo off", b"dot"]
    targets = ["a/b/c.txt", "../../top.txt", "a/b", "dirlink/c.txt", "no/such/file"]
    assert result.unzipped_size == sum(map(len, contents)) + sum(len(t) for t in targets)
    # Nothing but the new tree appeared.
    assert sorted(p.name for p in world.parent.iterdir()) == sorted(["unzip-other", tree.name])
    assert world.victim.read_text() == "original"


def test_stored_entries(world: World) -> None:
    result = unpack_zip(make_zip([("s", b"stored" * 100)], zipfile.ZIP_STORED), world.parent)
    assert (result.path / "s").read_bytes() == b"stored" * 100


def test_empty_zip(world: World) -> None:
    result = unpack_zip(make_zip([]), world.parent)
    assert result.file_count == 0
    assert result.unzipped_size == 0
    assert list(result.path.iterdir()) == []


def test_size_at_the_limit_is_accepted(world: World) -> None:
    result = unpack_zip(make_zip([("a", bytes(1000))]), world.parent, max_unzipped=1000)
    assert result.unzipped_size == 1000


def test_umask_does_not_change_modes(world: World) -> None:
    old = os.umask(0o077)
    try:
        result = unpack_zip(make_zip([("d/f", b"x")]), world.parent)
    finally:
        os.umask(old)
    assert mode(result.path / "d") == 0o755
    assert mode(result.path / "d/f") == 0o644


def test_zip_sha256_b64() -> None:
    assert zip_sha256_b64(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


# --- property: any safe tree round-trips, and nothing escapes ------------------------------------------

_component = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


def _no_prefix_clashes(tree: dict[tuple[str, ...], bytes]) -> dict[tuple[str, ...], bytes]:
    """Drop files that other paths would need as directories."""
    dirs = {path[:i] for path in tree for i in range(1, len(path))}
    return {path: data for path, data in tree.items() if path not in dirs}


_trees = st.dictionaries(
    st.lists(_component, min_size=1, max_size=4).map(tuple), st.binary(max_size=300), max_size=12
).map(_no_prefix_clashes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, exec_bits=st.lists(st.booleans(), min_size=12, max_size=12))
def test_safe_trees_round_trip(tree: dict[tuple[str, ...], bytes], exec_bits: list[bool]) -> None:
    entries: list[Entry] = [
        (unix("/".join(path), stat.S_IFREG | (0o755 if ex else 0o644)), data)
        for (path, data), ex in zip(tree.items(), exec_bits, strict=False)
    ]
    with tempfile.TemporaryDirectory() as base_name:
        base = Path(base_name)
        parent = base / "parent"
        parent.mkdir()
        (base / "victim").write_bytes(b"v")
        before = snapshot(base)
        result = unpack_zip(make_zip(entries), parent)
        after = snapshot(base)
        created = {p for p in after if p not in before}
        assert all(Path(p).is_relative_to(result.path) for p in created)
        assert {k: v for k, v in after.items() if k in before} == before
        for (path, data), ex in zip(tree.items(), exec_bits, strict=False):
            file = result.path.joinpath(*path)
            assert file.read_bytes() == data
            assert mode(file) == (0o755 if ex else 0o644)
        files = [p for p, v in after.items() if v[0] == "file" and Path(p).is_relative_to(result.path)]
        assert len(files) == len(tree) == result.file_count
        assert result.unzipped_size == sum(map(len, tree.values()))
