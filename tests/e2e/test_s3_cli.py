"""The unchanged ``aws`` CLI against the built-in store: ``aws s3`` mb, cp (a multipart upload past the CLI's 8 MB
threshold, and back), sync, ls, presign, rm, rb, and ``aws s3api``."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Server, unique
from tests.e2e.test_awscli import aws


def test_aws_s3_commands(server: Server, tmp_path: Path) -> None:
    bucket = unique("cli")
    aws(server, "s3", "mb", f"s3://{bucket}")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    aws(server, "s3", "cp", str(big), f"s3://{bucket}/data/big.bin")
    head = json.loads(aws(server, "s3api", "head-object", "--bucket", bucket, "--key", "data/big.bin").stdout)
    assert head["ContentLength"] == 20 << 20 and head["ETag"].endswith('-3"')  # the CLI's three 8 MB parts
    back = tmp_path / "back.bin"
    aws(server, "s3", "cp", f"s3://{bucket}/data/big.bin", str(back))
    assert back.read_bytes() == big.read_bytes()

    folder = tmp_path / "site"
    (folder / "css").mkdir(parents=True)
    (folder / "index.html").write_text("<h1>hi</h1>")
    (folder / "css" / "a.css").write_text("h1{}")
    aws(server, "s3", "sync", str(folder), f"s3://{bucket}/site/")
    listed = aws(server, "s3", "ls", f"s3://{bucket}/site/", "--recursive").stdout
    assert "site/index.html" in listed and "site/css/a.css" in listed
    top = aws(server, "s3", "ls", f"s3://{bucket}/").stdout
    assert "PRE data/" in top and "PRE site/" in top
    assert bucket in aws(server, "s3", "ls").stdout
    again = aws(server, "s3", "sync", str(folder), f"s3://{bucket}/site/").stdout
    assert "upload:" not in again  # nothing changed: nothing sent

    url = aws(server, "s3", "presign", f"s3://{bucket}/site/index.html", "--expires-in", "60").stdout.strip()
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.read() == b"<h1>hi</h1>"
    short = aws(server, "s3", "presign", f"s3://{bucket}/site/index.html", "--expires-in", "1").stdout.strip()
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(short, timeout=30)
    with caught.value as refused:
        assert refused.code == 403 and b"Request has expired" in refused.read()

    refused_rb = aws(server, "s3", "rb", f"s3://{bucket}", check=False)
    assert refused_rb.returncode != 0 and "BucketNotEmpty" in refused_rb.stderr
    aws(server, "s3", "rm", f"s3://{bucket}/", "--recursive")
    aws(server, "s3", "rb", f"s3://{bucket}")
    assert bucket not in aws(server, "s3", "ls").stdout
