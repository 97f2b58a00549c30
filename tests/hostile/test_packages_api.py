"""Hostile packages through the real API: refused with InvalidParameterValueException, nothing written
outside the server's own staging area, and the server keeps serving."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROLE, Server, unique


def raw_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z,
        z.open("big.bin", "w", force_zip64=True) as f,
    ):
        chunk = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    return buf.getvalue()


def many_files(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(f"f{i}", b"")
    return buf.getvalue()


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the data dir that hostile paths aim at."""
    d = tmp_path_factory.mktemp("victim")
    (d / "keep.txt").write_text("original")
    return d


def hostile_packages(victim: Path) -> dict[str, bytes]:
    depth = "../" * 12
    return {
        "not a zip": b"PK\x03\x04 definitely not a zip file",
        "zip slip": raw_zip([("app.py", b"x"), (f"{depth}{victim.relative_to('/')}/pwned.txt", b"owned")]),
        "absolute path": raw_zip([(f"{victim}/abs.txt", b"owned")]),
        "symlink out": raw_zip([symlink("link", str(victim)), ("app.py", b"x")]),
        "symlink up": raw_zip([symlink("up", "../../../../../../../../tmp")]),
        "write through symlink": raw_zip([symlink("d", str(victim)), ("d/through.txt", b"owned")]),
        "zip bomb": bomb(300 << 20),
        "too many files": many_files(20_001),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not a zip",
        "zip slip",
        "absolute path",
        "symlink out",
        "symlink up",
        "write through symlink",
        "zip bomb",
        "too many files",
    ],
)
def test_hostile_package_is_refused(
    case: str, lam: Any, server: Server, victim: Path, make_function: Callable[..., str]
) -> None:
    package = hostile_packages(victim)[case]
    before = sorted(os.listdir(victim))
    tmp_before = set(os.listdir("/tmp"))
    name = unique("hostile")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(
            FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": package}
        )
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sorted(os.listdir(victim)) == before
    assert (victim / "keep.txt").read_text() == "original"
    assert not any(n in ("pwned.txt", "abs.txt", "through.txt") for n in set(os.listdir("/tmp")) - tmp_before)
    staging = server.data_dir / "code" / "staging"
    assert list(staging.iterdir()) == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    # The same refusal on an update leaves the existing code in place.
    good = make_function("def handler(e, c):\n    return 'still here'\n")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=good, ZipFile=package)
    r = lam.invoke(FunctionName=good)
    assert r["Payload"].read() == b'"still here"'


def test_package_size_limits(lam_unvalidated: Any) -> None:
    too_big = os.urandom(52_428_800 + 1)
    with pytest.raises(Exception) as exc:
        lam_unvalidated.create_function(
            FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": too_big}
        )
    response = getattr(exc.value, "response", {})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert response["Error"]["Code"] == "RequestEntityTooLargeException"


def test_exec_bits_and_inside_symlinks_survive(lam: Any) -> None:
    code = (
        "import os\n"
        "def handler(e, c):\n"
        "    root = os.environ['LAMBDA_TASK_ROOT']\n"
        "    return {'exec': os.access(os.path.join(root, 'tool.sh'), os.X_OK),\n"
        "            'link': open(os.path.join(root, 'alias.txt')).read()}\n"
    )
    tool = zipfile.ZipInfo("tool.sh")
    tool.create_system = 3
    tool.external_attr = (stat.S_IFREG | 0o755) << 16
    package = raw_zip(
        [("app.py", code.encode()), ("data.txt", b"linked"), symlink("alias.txt", "data.txt"), (tool, b"#!/bin/sh\n")]
    )
    name = unique("okpkg")
    lam.create_function(
        FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": package}
    )
    try:
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        out = lam.invoke(FunctionName=name)["Payload"].read()
        assert out == b'{"exec": true, "link": "linked"}'
    finally:
        lam.delete_function(FunctionName=name)
