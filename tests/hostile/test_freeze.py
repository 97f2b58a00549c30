"""Work left running between invocations: frozen until the next call, as AWS does, never unbilled.

The attack: a handler starts a background thread and a child process (in a session of its own, out of the
runtime's process group) that each append a monotonic timestamp to a file in /tmp every 10 ms, and
returns. Unfrozen, both keep running, unbilled, for as long as the environment lives. Frozen, neither
makes a tick from a moment after the call (the freeze delay, Settings.freeze_after_ms, plus the server's
own latency) until the next call starts, and both go on during that call: alive, only frozen.

And nothing frozen is ever left behind: DeleteFunction, keep-alive expiry and a timeout each stop an
environment that holds frozen leftovers, and no process or cgroup of it remains.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from selfless.config import Settings
from tests.conftest import Server, deploy, start_server, unique

FREEZE_AFTER_S = (Settings().freeze_after_ms or 0) / 1000
# What a loaded machine adds to the freeze delay before the freeze takes hold: the response's way back to
# the server, the runtime's /next, event loop lateness. A leftover unfrozen runs 2 s here, not this.
SLACK_S = 0.15
# The attack's own pacing: how long the function leaves its work running between two calls.
BETWEEN_CALLS_S = 2.0
TIMEOUT_S = 3
# One vCPU: no CPU quota throttles the runtime on its way back to /next after a call that started a process.
MEMORY_MB = 1769

LEAVER = r"""
import os, subprocess, sys, threading, time

TICKER = '''
import sys, time
path = sys.argv[1]
while True:
    with open(path, "a") as f:
        f.write(f"{time.monotonic()}\\n")
    time.sleep(0.01)
'''

def tick(path):
    while True:
        with open(path, "a") as f:
            f.write(f"{time.monotonic()}\n")
        time.sleep(0.01)

def ticks(path):
    try:
        with open(path) as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []

def handler(event, context):
    start = time.monotonic()
    token = event["token"]
    thread_file, child_file = f"/tmp/thread-{token}", f"/tmp/child-{token}"
    if event["case"] == "leave":
        threading.Thread(target=tick, args=(thread_file,), daemon=True).start()
        subprocess.Popen([sys.executable, "-I", "-c", TICKER, child_file], start_new_session=True)
        deadline = time.monotonic() + 10
        while not (ticks(thread_file) and ticks(child_file)) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(event.get("hold", 0))
        return {"end": time.monotonic(), "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
    if event["case"] == "read":
        # When the call was delivered (its billed Duration starts then), on the monotonic clock: the
        # deadline is the delivery's wall-clock time in whole ms plus the timeout.
        delivered = start - (event["timeout_ms"] - context.get_remaining_time_in_millis()) / 1000
        time.sleep(event["sleep"])
        return {"delivered": delivered, "thread": ticks(thread_file), "child": ticks(child_file)}
    if event["case"] == "hang":
        time.sleep(60)
    return {"healthy": True}
"""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def pids_with(token: str) -> list[int]:
    """Host pids whose command line holds ``token`` (the leftover child's does: its tick file's name)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def cgroup_dirs(pid: int, server: Server) -> dict[str, Path]:
    """The environment cgroups the process is in: by controller on v1 ("freezer", "memory", ...), "" on v2."""
    assert server.sandbox_cgroup
    dirs = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if server.sandbox_cgroup in path.split("/"):
            for controller in controllers.split(",") if controllers else [""]:
                dirs[controller] = Path("/sys/fs/cgroup", controllers, path.lstrip("/"))
    assert "freezer" in dirs or "" in dirs, dirs
    return dirs


def freezer_state(dirs: dict[str, Path]) -> str:
    if "freezer" in dirs:
        return (dirs["freezer"] / "freezer.state").read_text().strip()
    events = (dirs[""] / "cgroup.events").read_text().splitlines()
    return "FROZEN" if "frozen 1" in events else "THAWED"


class Leaver:
    """The attacking function on one server: ``leave`` starts the leftovers of a fresh token."""

    def __init__(self, server: Server, lam: Any, **config: Any) -> None:
        self.server = server
        self.lam = lam
        self.name = deploy(lam, LEAVER, name=unique("leaver"), runtime="python3.12", **config)
        self.token = ""
        self.qualifier = "$LATEST"

    def call(self, case: str, token: str | None = None, **event: Any) -> tuple[str | None, Any]:
        payload = json.dumps({"case": case, "token": token or self.token, **event})
        r = self.lam.invoke(FunctionName=self.name, Qualifier=self.qualifier, Payload=payload)
        return r.get("FunctionError"), json.loads(r["Payload"].read())

    def leave(self, init: str = "on-demand") -> tuple[float, int, dict[str, Path]]:
        """Start the leftovers; the first call's end, the child's host pid and its environment's cgroups,
        once the environment is frozen."""
        self.token = uuid.uuid4().hex
        error, out = self.call("leave")
        assert error is None and out["init"] == init, out
        child, dirs = self.frozen(self.token)
        return out["end"], child, dirs

    def frozen(self, token: str) -> tuple[int, dict[str, Path]]:
        """The leftover child of ``token``'s call, and its environment's cgroups once they are frozen."""
        (child,) = pids_with(f"child-{token}")
        dirs = cgroup_dirs(child, self.server)
        wait_for(lambda: freezer_state(dirs) == "FROZEN", "the idle environment to be frozen")
        return child, dirs

    def healthy(self) -> None:
        error, out = self.call("ok")
        assert error is None and out == {"healthy": True}, out


def assert_gone(child: int, dirs: dict[str, Path]) -> None:
    wait_for(lambda: not Path(f"/proc/{child}").exists(), "the frozen leftover to be killed")
    wait_for(lambda: not any(d.exists() for d in dirs.values()), "the environment's cgroups to go")


def assert_health(server: Server) -> None:
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=10) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def linux(server: Server) -> Server:
    if server.sandbox != "linux":
        pytest.fail("the linux sandbox is not in use here (run as root on Linux): nothing to freeze")
    return server


@pytest.fixture
def leaver(lam: Any, linux: Server) -> Iterator[Leaver]:
    fn = Leaver(linux, lam, Timeout=TIMEOUT_S, MemorySize=MEMORY_MB)
    yield fn
    with contextlib.suppress(Exception):
        lam.delete_function(FunctionName=fn.name)
    assert_health(linux)


def test_leftovers_make_no_progress_between_invocations(leaver: Leaver) -> None:
    end, child, dirs = leaver.leave()
    time.sleep(BETWEEN_CALLS_S)  # the attack's own pacing: the leftovers' time to run unbilled
    assert freezer_state(dirs) == "FROZEN", "frozen for as long as the environment is idle"
    assert Path(f"/proc/{child}").exists()
    error, out = leaver.call("read", sleep=0.3, timeout_ms=TIMEOUT_S * 1000)
    assert error is None, out
    # Thawed as the call is delivered: a leftover may tick at once, before the handler itself starts.
    delivered = out["delivered"] - 0.002  # (the deadline it comes from is in whole milliseconds)
    assert delivered - end >= BETWEEN_CALLS_S
    for leftover in ("thread", "child"):
        ticks = out[leftover]
        assert any(t <= end for t in ticks), f"the {leftover} ran during the first call"
        between = [t for t in ticks if end + FREEZE_AFTER_S + SLACK_S < t < delivered]
        assert between == [], f"the {leftover} ran {len(between)} times between calls, unbilled"
        during = [t for t in ticks if t >= delivered]
        assert len(during) >= 3, f"the {leftover} is alive and runs again during the next call: {during}"
    leaver.healthy()


def test_deleting_a_frozen_environment_leaves_nothing_behind(lam: Any, leaver: Leaver, linux: Server) -> None:
    _end, child, dirs = leaver.leave()
    lam.delete_function(FunctionName=leaver.name)
    assert_gone(child, dirs)
    assert_health(linux)


def test_a_timeout_kills_an_environment_with_frozen_leftovers(leaver: Leaver) -> None:
    _end, child, dirs = leaver.leave()
    error, out = leaver.call("hang")
    assert error == "Unhandled" and out["errorType"] == "Sandbox.Timedout", out
    assert_gone(child, dirs)
    leaver.healthy()  # on a new environment


def test_provisioned_environments_are_frozen_between_calls(lam: Any, leaver: Leaver, linux: Server) -> None:
    leaver.qualifier = lam.publish_version(FunctionName=leaver.name)["Version"]
    lam.put_provisioned_concurrency_config(
        FunctionName=leaver.name, Qualifier=leaver.qualifier, ProvisionedConcurrentExecutions=1
    )
    wait_for(
        lambda: (
            lam.get_provisioned_concurrency_config(FunctionName=leaver.name, Qualifier=leaver.qualifier)["Status"]
            == "READY"
        ),
        "provisioned concurrency to be ready",
    )
    _end, child, dirs = leaver.leave(init="provisioned-concurrency")
    lam.delete_provisioned_concurrency_config(FunctionName=leaver.name, Qualifier=leaver.qualifier)
    assert_gone(child, dirs)
    assert_health(linux)


def templates_ready(server: Server) -> int:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        found = re.search(r"^selfless_fork_templates_ready ([0-9.]+)$", r.read().decode(), re.M)
    assert found is not None
    return int(float(found.group(1)))


def test_environments_forked_after_init_are_frozen_and_their_template_is_not(lam: Any, linux: Server) -> None:
    fn = Leaver(linux, lam, Timeout=TIMEOUT_S, MemorySize=MEMORY_MB, Tags={"selfless:ForkAfterInit": "on"})
    try:
        before = templates_ready(linux)
        fn.healthy()  # a plain start, which has the template made
        wait_for(lambda: templates_ready(linux) > before, "the fork-after-init template")
        # Two calls at once: one on the plain environment, the other on one forked from the template.
        tokens = [uuid.uuid4().hex, uuid.uuid4().hex]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda token: fn.call("leave", token=token, hold=1.0), tokens))
        assert sorted(out["init"] for _error, out in results) == ["on-demand", "snap-start"], results
        for token in tokens:
            _child, dirs = fn.frozen(token)
        # The template (a fork server, in a cgroup of its own beside its environments') is never frozen.
        freezer_base = (dirs["freezer"] if "freezer" in dirs else dirs[""]).parent
        templates = [d for d in freezer_base.glob("template-*") if d.is_dir()]
        assert templates
        for template in templates:
            assert freezer_state({"freezer" if "freezer" in dirs else "": template}) == "THAWED"
        fn.token = tokens[0]
        fn.healthy()
    finally:
        lam.delete_function(FunctionName=fn.name)
    assert_health(linux)


@pytest.fixture
def short_keep_alive(tmp_path: Path, linux: Server) -> Iterator[Server]:
    srv = start_server(tmp_path, {"SELFLESS_KEEP_ALIVE": "3"})
    yield srv
    assert srv.stop() == 0, srv.log()
    assert srv.leftovers() == [], "environments outlived the server"
    assert srv.cgroup_leftovers() == [], "cgroups outlived the server"


def test_keep_alive_expiry_of_a_frozen_environment_leaves_nothing_behind(short_keep_alive: Server) -> None:
    fn = Leaver(short_keep_alive, short_keep_alive.client(), Timeout=TIMEOUT_S, MemorySize=MEMORY_MB)
    _end, child, dirs = fn.leave()
    assert_gone(child, dirs)  # expired: 3 s idle
    assert_health(short_keep_alive)
    fn.healthy()


def test_a_server_stopping_with_frozen_environments_leaves_nothing_behind(tmp_path: Path, linux: Server) -> None:
    srv = start_server(tmp_path)
    try:
        fn = Leaver(srv, srv.client(), Timeout=TIMEOUT_S, MemorySize=MEMORY_MB)
        _end, child, dirs = fn.leave()
    finally:
        assert srv.stop() == 0, srv.log()
    assert not Path(f"/proc/{child}").exists() and not any(d.exists() for d in dirs.values())
    assert srv.leftovers() == [] and srv.cgroup_leftovers() == []
