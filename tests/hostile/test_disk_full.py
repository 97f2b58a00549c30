"""A full data disk: the server says so in AWS's words (never a bare 500, never a 202 for an event it did not
store), leaves no half-written package behind, keeps every event it accepted, and works again, without a
restart, once space is freed. The data directory lives on a small tmpfs the test mounts and fills."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from selfless.api.errors import DISK_FULL
from tests.conftest import Server, deploy, make_zip, start_server
from tests.hostile.test_api_hostile import signed

DISK_MB = 128
CODE_FULL = "Code storage limit exceeded: the server's disk has no space left for this package."

# Each call waits until its function is tagged gate=open, so the events it serves stay accepted (and unsettled)
# for as long as the test wants; then it says which event it ran.
GATE = """
import time, boto3
from botocore.config import Config

lam = boto3.client("lambda", config=Config(retries={"max_attempts": 1}))


def handler(event, context):
    arn = ":".join(context.invoked_function_arn.split(":")[:7])
    deadline = time.time() + 120
    while lam.list_tags(Resource=arn)["Tags"].get("gate") != "open":
        if time.time() > deadline:
            raise TimeoutError("the gate stayed closed")
        time.sleep(0.2)
    print("ran", event["marker"])
    return event["marker"]
"""


@pytest.fixture
def small_disk_server(tmp_path: Path) -> Iterator[Server]:
    """A server (process sandbox) whose data directory is a tmpfs of DISK_MB; unmounted afterwards."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(data)], check=True)
    server: Server | None = None
    try:
        server = start_server(tmp_path, {"SELFLESS_ASYNC_RETRY_DELAY": "1"}, ["--sandbox", "process"])
        yield server
    finally:
        with contextlib.suppress(FileNotFoundError):
            (data / "filler").unlink()
        if server is not None:
            assert server.stop() == 0, server.log()
            assert server.leftovers() == [], "environments outlived the server"
        if subprocess.run(["umount", "--recursive", str(data)], check=False).returncode != 0:
            subprocess.run(["umount", "--recursive", "--lazy", str(data)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros until the file system refuses another byte; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def error_of(call: Any) -> tuple[int, str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def code_files(data: Path) -> list[str]:
    root = data / "code"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def queued_events(server: Server, name: str) -> list[dict[str, Any]]:
    status, _headers, body = signed(server, "GET", f"/_selfless/functions/{name}/events")
    assert status == 200, body
    events: list[dict[str, Any]] = json.loads(body)["Events"]
    return events


def test_a_full_disk_is_said_and_survived(small_disk_server: Server) -> None:
    server = small_disk_server
    lam = server.client()
    logs = server.client("logs")
    gate = deploy(lam, GATE, Timeout=300, Tags={"gate": "closed"})
    spare = deploy(lam, "def handler(event, context):\n    return 'spare'\n")
    spare_sha = lam.get_function_configuration(FunctionName=spare)["CodeSha256"]
    accepted = []
    for i in range(3):
        marker = f"before-{i}"
        assert (
            lam.invoke(FunctionName=gate, InvocationType="Event", Payload=json.dumps({"marker": marker}))["StatusCode"]
            == 202
        )
        accepted.append(marker)
    stored = code_files(server.data_dir)

    filler = fill(server.data_dir)

    # Code packages: AWS's CodeStorageExceededException, and nothing of the package kept.
    package = make_zip({"app.py": "def handler(event, context):\n    return 'new'\n" + "#" * 10_000})
    refused = [
        lambda: lam.create_function(
            FunctionName="never-made", Runtime="python3.11", Role="arn:aws:iam::000000000000:role/test",
            Handler="app.handler", Code={"ZipFile": package},
        ),
        lambda: lam.update_function_code(FunctionName=spare, ZipFile=package),
        lambda: lam.publish_layer_version(LayerName="never-published", Content={"ZipFile": package}),
    ]  # fmt: skip
    for call in refused:
        assert error_of(call) == (400, "CodeStorageExceededException", CODE_FULL)
    assert code_files(server.data_dir) == stored, "a refused package left something behind"
    assert lam.get_function_configuration(FunctionName=spare)["CodeSha256"] == spare_sha
    assert "never-made" not in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert lam.list_layer_versions(LayerName="never-published")["LayerVersions"] == []

    # Events: each is either stored (202) or refused with ServiceException; the disk runs out within a few.
    refusal = None
    for i in range(50):
        marker = f"during-{i}"
        try:
            answer = lam.invoke(
                FunctionName=gate, InvocationType="Event", Payload=json.dumps({"marker": marker, "pad": "x" * 500_000})
            )
        except botocore.exceptions.ClientError as exc:
            refusal = exc.response
            break
        assert answer["StatusCode"] == 202
        accepted.append(marker)
    assert refusal is not None, "the disk never ran out"
    assert refusal["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert refusal["Error"] == {"Code": "ServiceException", "Message": DISK_FULL}

    # Other control-plane writes: done (SQLite may still find room in its own files) or refused the same way.
    for i in range(20):
        try:
            lam.update_function_configuration(FunctionName=spare, Description=f"attempt {i}")
        except botocore.exceptions.ClientError as exc:
            assert exc.response["Error"] == {"Code": "ServiceException", "Message": DISK_FULL}
            assert lam.get_function_configuration(FunctionName=spare)["Description"] != f"attempt {i}"
            break
        lam.get_waiter("function_updated_v2").wait(FunctionName=spare, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=10) as r:
        assert r.status == 200

    # Space again: no restart, every accepted event still there, then run; everything works again.
    filler.unlink()
    assert len(queued_events(server, gate)) == len(accepted)
    gate_arn = lam.get_function(FunctionName=gate)["Configuration"]["FunctionArn"]
    lam.tag_resource(Resource=gate_arn, Tags={"gate": "open"})
    assert lam.invoke(FunctionName=gate, InvocationType="Event", Payload=b'{"marker": "after"}')["StatusCode"] == 202
    accepted.append("after")
    fresh = deploy(lam, "def handler(event, context):\n    return 'fresh'\n")
    assert json.loads(lam.invoke(FunctionName=fresh)["Payload"].read()) == "fresh"
    lam.update_function_code(FunctionName=spare, ZipFile=package)
    lam.get_waiter("function_updated_v2").wait(FunctionName=spare, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert json.loads(lam.invoke(FunctionName=spare)["Payload"].read()) == "new"
    assert lam.publish_layer_version(LayerName="published", Content={"ZipFile": package})["Version"] == 1

    ran: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{gate}", filterPattern='"ran"')["events"]
        ran = {e["message"].split()[1] for e in found if e["message"].startswith("ran ")}
        if ran >= set(accepted) and not queued_events(server, gate):
            break
        time.sleep(0.5)  # polling the server's progress, with the deadline above
    assert set(accepted) <= ran, sorted(set(accepted) - ran)
    assert queued_events(server, gate) == [], "every accepted event ran and was settled"
    assert "unhandled error serving" not in server.log()
