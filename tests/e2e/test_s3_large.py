"""A 2 GB object through PUT and GET with the server's memory bounded: the body streams to disk and back in
pieces, never whole (the server's peak resident memory grows by far less than the object)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.e2e.test_s3 import client

SIZE = 2 << 30
GROWTH_LIMIT = 256 << 20  # what the server's peak resident memory may grow by while the object passes


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.timeout(600)
def test_a_2gb_object_streams_through_with_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "two-gb.bin"
    with open(source, "wb") as f:  # sparse: the disk holds only what the store writes
        f.truncate(SIZE)
    server = start_server(tmp_path)
    try:
        s3 = client(server)
        s3.create_bucket(Bucket="large")
        pid = server.process.pid
        before = status_kb(pid, "VmRSS")
        with open(source, "rb") as body:
            put = s3.put_object(Bucket="large", Key="two-gb", Body=body)
        expected = hashlib.md5()
        for _ in range(SIZE >> 20):
            expected.update(b"\0" * (1 << 20))
        assert put["ETag"] == f'"{expected.hexdigest()}"'
        got = s3.get_object(Bucket="large", Key="two-gb")
        assert got["ContentLength"] == SIZE
        digest, size = hashlib.md5(), 0
        while chunk := got["Body"].read(4 << 20):
            digest.update(chunk)
            size += len(chunk)
        assert size == SIZE and digest.hexdigest() == expected.hexdigest()
        peak = status_kb(pid, "VmHWM")
        assert (peak - before) * 1024 < GROWTH_LIMIT, f"peak RSS grew by {(peak - before) // 1024} MB"
        s3.delete_object(Bucket="large", Key="two-gb")
    finally:
        assert server.stop() == 0, server.log()
