"""Server lifecycle: draining on SIGTERM, no processes left behind, keep-alive, restart and durability."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import deploy as create
from tests.conftest import start_server, unique

SLOW = """
import os, subprocess, sys, time
def handler(event, context):
    if event.get("child"):
        # A child in the environment's process group, and one that escapes it with its own session.
        kept = subprocess.Popen(["sleep", "300"])
        escaped = subprocess.Popen(["sleep", "301"], start_new_session=True)
        return {"pids": [kept.pid, escaped.pid], "me": os.getpid()}
    time.sleep(event.get("sleep", 0))
    if event.get("marker"):
        print(event["marker"])
    return {"me": os.getpid(), "slept": event.get("sleep", 0)}
"""


def deploy(lam: Any, code: str = SLOW, **kw: Any) -> str:
    return create(lam, code, name=unique("life"), Timeout=30, **kw)


def invoke(lam: Any, name: str, payload: dict[str, Any]) -> Any:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
    return r.get("FunctionError"), json.loads(r["Payload"].read())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_sigterm_drains_in_flight_and_leaves_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        lam = server.client()
        name = deploy(lam)
        _, first = invoke(lam, name, {})
        _, children = invoke(lam, name, {"child": True})
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            slow = ex.submit(invoke, lam, name, {"sleep": 1.5})
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            error, out = slow.result(timeout=30)
        assert error is None and out["slept"] == 1.5
        assert server.process.wait(timeout=30) == 0
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
    assert wait_gone([first["me"], *children["pids"]]) == []
    assert server.leftovers() == []
    assert server.cgroup_leftovers() == []
    with open("/proc/self/mountinfo") as f:
        assert str(server.data_dir) not in f.read()


def test_retired_environment_takes_its_children(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        lam = server.client()
        name = deploy(lam)
        _, out = invoke(lam, name, {"child": True})
        kept, _escaped = out["pids"]
        lam.update_function_configuration(FunctionName=name, Description="retire")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        assert wait_gone([out["me"], kept]) == []
    finally:
        assert server.stop() == 0
    assert server.leftovers() == []
    assert server.cgroup_leftovers() == []


def test_idle_environments_stop_after_keep_alive(tmp_path: Path) -> None:
    server = start_server(tmp_path, args=["--keep-alive", "1"])
    try:
        lam = server.client()
        name = deploy(lam)
        _, out = invoke(lam, name, {})
        assert alive(out["me"])
        assert wait_gone([out["me"]], timeout=10) == []
        _, again = invoke(lam, name, {})
        assert again["me"] != out["me"]
    finally:
        assert server.stop() == 0


def test_restart_keeps_functions_and_accepted_events(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    marker = f"durable-{time.time_ns()}"
    try:
        lam = server.client()
        name = deploy(lam)
        accepted = lam.invoke(
            FunctionName=name, InvocationType="Event", Payload=json.dumps({"sleep": 1.0, "marker": marker})
        )
        assert accepted["StatusCode"] == 202
        # Dies before the event could finish: it must run again after the restart.
        server.stop(signal.SIGKILL)
    finally:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)
    time.sleep(1.5)
    server = start_server(tmp_path)
    try:
        lam = server.client()
        assert lam.get_function(FunctionName=name)["Configuration"]["State"] == "Active"
        logs = server.client("logs")
        deadline = time.monotonic() + 20
        seen = 0
        while time.monotonic() < deadline:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
            seen = sum(1 for e in events if e["message"] == marker)
            if seen:
                break
            time.sleep(0.2)
        assert seen >= 1, "the accepted event did not run after the restart"
        error, _ = invoke(lam, name, {})
        assert error is None
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs /tmp needs root; the process backend says so at start")
def test_tmp_is_limited_to_ephemeral_storage(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    code = (
        "import errno, os, tempfile\n"
        "def handler(e, c):\n"
        "    path = os.path.join(tempfile.gettempdir(), 'fill')\n"
        "    chunk = b'x' * (1 << 20)\n"
        "    written = 0\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            while written < 2000 * (1 << 20):\n"
        "                f.write(chunk); f.flush(); written += len(chunk)\n"
        "    except OSError as exc:\n"
        "        os.remove(path)\n"
        "        return {'errno': exc.errno == errno.ENOSPC, 'written_mb': written >> 20}\n"
        "    return {'errno': False, 'written_mb': written >> 20}\n"
    )
    try:
        lam = server.client()
        # 128 MB of memory and 512 MB of /tmp: filling /tmp must end in ENOSPC, not in the OOM killer.
        name = deploy(lam, code, EphemeralStorage={"Size": 512}, MemorySize=128)
        error, out = invoke(lam, name, {})
        assert error is None
        assert out["errno"] is True and 500 <= out["written_mb"] <= 514
    finally:
        assert server.stop() == 0


def test_sandbox_linux_refuses_precisely_when_it_cannot_run(tmp_path: Path) -> None:
    """As an unprivileged user --sandbox linux must refuse to start and say why, not fall back."""
    if os.geteuid() != 0:
        pytest.fail("this test drops to an unprivileged user and needs root to do so")
    data = Path(tempfile.mkdtemp(prefix="selfless-unprivileged-"))  # /tmp: traversable by nobody
    os.chown(data, 65534, 65534)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "selfless.cli",
            "serve",
            "--sandbox",
            "linux",
            "--port",
            "0",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    shutil.rmtree(data, ignore_errors=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--sandbox linux is not possible here" in proc.stderr
    assert "needs root" in proc.stderr
    assert "Traceback" not in proc.stderr
