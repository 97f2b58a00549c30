"""The README's event-driven quick start, as a person would run it: the aws CLI makes two buckets, deploys
a Python function that vendors Pillow in its zip, lets S3 invoke it, configures the bucket notification,
uploads 20 images with ``aws s3 cp`` and reads the 20 thumbnails back."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROLE, Server, unique
from tests.e2e.test_awscli import aws

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thumbnails" / "app.py"
IMAGES = 20


def build_package(tmp: Path) -> Path:
    """app.py with Pillow vendored beside it (a manylinux wheel for the function's Python, from PyPI)."""
    vendor = tmp / "package"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",
            str(vendor),
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux2014_x86_64",
            "pillow",
        ],
        check=True,
        timeout=300,
    )
    shutil.copy(EXAMPLE, vendor / "app.py")
    package = tmp / "thumbnails.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(vendor.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(vendor).as_posix())
    return package


def make_images(folder: Path) -> list[str]:
    from PIL import Image  # the test's own Pillow (a test dependency), only to make the inputs

    folder.mkdir()
    names = []
    for i in range(IMAGES):
        name = f"photo {i:02d}.jpg" if i % 2 else f"photo-{i:02d}.png"
        image = Image.new("RGB", (400 + 10 * i, 300), (i * 12 % 256, 80, 160))
        image.save(folder / name)
        names.append(name)
    return names


@pytest.mark.timeout(600)
def test_thumbnails_of_uploads(server: Server, tmp_path: Path) -> None:
    inbox, thumbs, fn = unique("inbox"), unique("thumbs"), unique("thumbnail")
    aws(server, "s3", "mb", f"s3://{inbox}")
    aws(server, "s3", "mb", f"s3://{thumbs}")
    package = build_package(tmp_path)
    created = json.loads(
        aws(
            server,
            "lambda",
            "create-function",
            "--function-name",
            fn,
            "--runtime",
            "python3.12",
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--timeout",
            "30",
            "--memory-size",
            "512",
            "--environment",
            json.dumps({"Variables": {"THUMBNAIL_BUCKET": thumbs}}),
            "--zip-file",
            f"fileb://{package}",
        ).stdout
    )
    aws(server, "lambda", "wait", "function-active-v2", "--function-name", fn)
    aws(
        server,
        "lambda",
        "add-permission",
        "--function-name",
        fn,
        "--statement-id",
        "s3-invoke",
        "--action",
        "lambda:InvokeFunction",
        "--principal",
        "s3.amazonaws.com",
        "--source-arn",
        f"arn:aws:s3:::{inbox}",
    )
    notification = {
        "LambdaFunctionConfigurations": [
            {"Id": "thumbnails", "LambdaFunctionArn": created["FunctionArn"], "Events": ["s3:ObjectCreated:*"]}
        ]
    }
    aws(
        server,
        "s3api",
        "put-bucket-notification-configuration",
        "--bucket",
        inbox,
        "--notification-configuration",
        json.dumps(notification),
    )

    names = make_images(tmp_path / "images")
    for name in names:
        aws(server, "s3", "cp", str(tmp_path / "images" / name), f"s3://{inbox}/{name}")

    deadline = time.monotonic() + 120
    while True:
        listed = aws(server, "s3api", "list-objects-v2", "--bucket", thumbs).stdout
        keys = sorted(o["Key"] for o in json.loads(listed or "{}").get("Contents", []))
        if len(keys) == IMAGES or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert keys == sorted(names)

    from PIL import Image

    out = tmp_path / "out"
    aws(server, "s3", "cp", f"s3://{thumbs}/", str(out), "--recursive")
    for name in names:
        with Image.open(io.BytesIO((out / name).read_bytes())) as thumb:
            assert thumb.format == "JPEG"
            assert max(thumb.size) == 128
