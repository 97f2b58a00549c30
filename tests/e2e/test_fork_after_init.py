"""Fork-after-init (SnapStart-style starts): once a version's template has run its init, new environments
fork from it; they run SnapStart's hooks, get fresh random state, and keep their own uid, /tmp and seccomp
filter. Opt-in with SnapStart ApplyOn PublishedVersions, or the selfless:ForkAfterInit tag on $LATEST."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

SNAPPY = """import ctypes, os, random, sys, time
from snapshot_restore_py import register_after_restore, register_before_snapshot

STATE = {"before": 0, "after": 0, "import_random": random.random()}


@register_before_snapshot
def before():
    STATE["before"] += 1


@register_after_restore
def after():
    STATE["after"] += 1


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    mark = "/tmp/mark-" + context.aws_request_id
    others = [n for n in os.listdir("/tmp") if n.startswith("mark-")]
    open(mark, "w").write("x")
    libc = ctypes.CDLL(None, use_errno=True)
    mounted = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) == 0
    unshared = libc.unshare(0x00020000) == 0
    return {
        "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "before": STATE["before"],
        "after": STATE["after"],
        "random": random.random(),
        "uid": os.getuid(),
        "others_tmp": others,
        "mounted": mounted,
        "unshared": unshared,
        "stream": context.log_stream_name,
        "immortal": sys.getrefcount(STATE) > 2**30,
    }
"""


def call(lam: Any, name: str, qualifier: str, sleep: float = 0.0) -> tuple[dict[str, Any], str]:
    r = lam.invoke(FunctionName=name, Qualifier=qualifier, Payload=json.dumps({"sleep": sleep}), LogType="Tail")
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    tail = base64.b64decode(r["LogResult"]).decode()
    report = next(line for line in tail.splitlines() if line.startswith("REPORT"))
    return body, report


def templates_ready(server: Any) -> int:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^selfless_fork_templates_ready ([0-9.]+)$", text, re.M)
    assert found is not None, "the metric is missing"
    return int(float(found.group(1)))


def first_call_then_template(server: Any, lam: Any, name: str, qualifier: str) -> dict[str, Any]:
    """The first call starts plainly and has the template made; wait (bounded) until it is ready."""
    before = templates_ready(server)
    body, report = call(lam, name, qualifier)
    assert body["init"] == "on-demand" and "Init Duration" in report
    deadline = time.monotonic() + 30
    while templates_ready(server) <= before:
        assert time.monotonic() < deadline, "the template did not become ready"
        time.sleep(0.05)
    return body


def forked_burst(lam: Any, name: str, qualifier: str, n: int) -> list[tuple[dict[str, Any], str]]:
    """``n`` concurrent calls: one finds the warm environment, the others fork from the template."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: call(lam, name, qualifier, sleep=1.0), range(n)))
    return [r for r in results if r[0]["init"] == "snap-start"]


def test_published_versions_fork_from_a_template(server: Any, lam: Any, make_function: Callable[..., str]) -> None:
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    name = make_function(SNAPPY, runtime="python3.12", Timeout=10, SnapStart={"ApplyOn": "PublishedVersions"})
    assert lam.get_function_configuration(FunctionName=name)["SnapStart"]["OptimizationStatus"] == "Off"
    version = lam.publish_version(FunctionName=name)
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}

    first_call_then_template(server, lam, name, version["Version"])
    forked = forked_burst(lam, name, version["Version"], 4)
    assert len(forked) == 3, "environments did not fork from the template"
    for body, report in forked:
        assert body["before"] == 1, "before-snapshot hooks ran once, in the template"
        assert body["after"] == 1, "after-restore hooks ran in the forked environment"
        assert "Restore Duration" in report and "Init Duration" not in report
        assert body["others_tmp"] == [], "/tmp is the environment's own"
        assert not body["mounted"] and not body["unshared"], "the full seccomp filter applies"
        assert body["immortal"], "what the init left behind is immortal: no copy-on-write for reference counts"
    randoms = [body["random"] for body, _ in forked]
    assert len(set(randoms)) == len(randoms), "random state was reseeded in every forked environment"
    assert len({body["uid"] for body, _ in forked}) == len(forked), "each environment has its own uid"
    assert len({body["stream"] for body, _ in forked}) == len(forked)

    # A warm call on a forked environment is an ordinary one.
    body, report = call(lam, name, version["Version"])
    assert "Restore Duration" not in report and "Init Duration" not in report


def test_latest_forks_with_the_selfless_tag(server: Any, lam: Any, make_function: Callable[..., str]) -> None:
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    name = make_function(SNAPPY, runtime="python3.12", Timeout=10, Tags={"selfless:ForkAfterInit": "on"})
    first_call_then_template(server, lam, name, "$LATEST")
    forked = forked_burst(lam, name, "$LATEST", 3)
    assert len(forked) == 2
    assert all(body["after"] == 1 for body, _ in forked)
    # An update makes a new generation: its environments start plainly again, then fork from a new template.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GEN": "2"}})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    first_call_then_template(server, lam, name, "$LATEST")
    assert len(forked_burst(lam, name, "$LATEST", 3)) == 2


def test_a_template_whose_init_fails_changes_nothing(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(
        "import os\nif os.environ['AWS_LAMBDA_INITIALIZATION_TYPE'] == 'snap-start':\n    raise RuntimeError('no')\n"
        "def handler(e, c):\n    return os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n",
        runtime="python3.12",
        Tags={"selfless:ForkAfterInit": "on"},
    )
    results = []
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results += list(
                pool.map(
                    lambda _: json.loads(lam.invoke(FunctionName=name, Payload=b'{"sleep": 0.3}')["Payload"].read()),
                    range(3),
                )
            )
        time.sleep(0.3)
    assert set(results) == {"on-demand"}


HOSTILE = """import os, signal, time


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("kind") == "killall":
        os.kill(-1, signal.SIGKILL)  # every process this environment may signal
    visible = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    owners = set()
    for pid in visible:
        try:
            with open("/proc/%d/status" % pid) as f:
                owners.add(next(l for l in f if l.startswith("Uid:")).split()[1])
        except OSError:
            pass
    return {"init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"], "uid": os.getuid(), "owners": sorted(owners)}
"""


def test_forked_environments_cannot_reach_each_other_or_the_template(
    server: Any, lam: Any, make_function: Callable[..., str]
) -> None:
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    name = make_function(HOSTILE, runtime="python3.12", Timeout=10, Tags={"selfless:ForkAfterInit": "on"})
    first_call_then_template(server, lam, name, "$LATEST")

    def invoke(payload: dict[str, Any]) -> dict[str, Any]:
        r = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
        body: dict[str, Any] = json.loads(r["Payload"].read())
        return body

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        sibling = pool.submit(invoke, {"sleep": 2.0})
        other = pool.submit(invoke, {"sleep": 2.0})
        time.sleep(0.5)
        killer = invoke({"kind": "killall"})
        survivors = [sibling.result(), other.result()]
    # kill(-1) spares the caller itself; everything else it may signal would have died.
    assert killer["init"] == "snap-start" and killer["owners"] == [str(killer["uid"])], killer
    for body in survivors:
        assert "errorType" not in body, body  # alive: its answer came back
        # hidepid and per-environment uids: only its own processes are visible.
        assert body["owners"] == [str(body["uid"])], body
    # The template survived: new environments still fork from it.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        fresh = list(pool.map(lambda _: invoke({"sleep": 1.0}), range(4)))
    assert sum(b["init"] == "snap-start" for b in fresh) >= 3, fresh


def template_pids(server: Any) -> list[int]:
    """Templates: processes running as the first uid of a 512-uid block above the environments' whose parent
    is not one of them (a child just forked from a template has its uid until it takes its own)."""
    low, _high = server.sandbox_uids
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            uid, parent = int(fields["Uid"].split()[0]), int(fields["PPid"])
        except (OSError, KeyError, ValueError):
            continue
        if uid - low >= 1000 and (uid - low) % 512 == 0:
            found[int(entry)] = parent
    return [pid for pid, parent in found.items() if parent not in found]


def test_a_template_that_dies_is_made_again(server: Any, lam: Any, make_function: Callable[..., str]) -> None:
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    before = set(template_pids(server))
    name = make_function(SNAPPY, runtime="python3.12", Timeout=10, Tags={"selfless:ForkAfterInit": "on"})
    first_call_then_template(server, lam, name, "$LATEST")
    mine = set(template_pids(server)) - before
    assert len(mine) == 1, mine
    ready = templates_ready(server)
    os.kill(mine.pop(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while templates_ready(server) >= ready:
        assert time.monotonic() < deadline, "the dead template still counts as ready"
        time.sleep(0.05)
    # The next start is a plain one and has a new template made; then environments fork again.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: call(lam, name, "$LATEST", sleep=0.5), range(2)))
    deadline = time.monotonic() + 30
    while templates_ready(server) < ready:
        assert time.monotonic() < deadline, "no new template"
        time.sleep(0.05)
    assert len(forked_burst(lam, name, "$LATEST", 4)) >= 2


PROBE = """import http.client, os, time


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/2018-06-01/runtime/nothing-here")
    return {"init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"], "api_status": conn.getresponse().status}
"""


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_children_forked_ahead_that_died_are_passed_over(
    server: Any, lam: Any, make_function: Callable[..., str]
) -> None:
    """A forked environment talks to the Runtime API over a connection made at fork; its address
    (AWS_LAMBDA_RUNTIME_API) still answers it. Children forked ahead that were killed while they waited are
    never handed a call."""
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    before = set(template_pids(server))
    name = make_function(PROBE, runtime="python3.12", Timeout=10, Tags={"selfless:ForkAfterInit": "on"})
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(r["Payload"].read()) == {"init": "on-demand", "api_status": 405}
    deadline = time.monotonic() + 30
    while len(mine := set(template_pids(server)) - before) != 1 or len(children_of(next(iter(mine)))) < 2:
        assert time.monotonic() < deadline, "no template with children forked ahead"
        time.sleep(0.05)
    ahead = children_of(mine.pop())
    for pid in ahead:
        os.kill(pid, signal.SIGKILL)
    # Dead and reaped by their template (whether the server has heard of it yet or not).
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in ahead):
        assert time.monotonic() < deadline, "the killed children were not reaped"
        time.sleep(0.01)
    # Concurrent calls: one may find the first environment warm; the others fork, now, past the dead ones.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: lam.invoke(FunctionName=name, Payload=b'{"sleep": 0.5}'), range(3)))
    bodies = [json.loads(a["Payload"].read()) for a in answers]
    assert all("FunctionError" not in a for a in answers), bodies
    assert all(b["api_status"] == 405 for b in bodies), bodies
    assert sum(b["init"] == "snap-start" for b in bodies) >= 2, bodies


BOTO3_AT_INIT = """import sys

PRELOADED = "boto3" in sys.modules  # what the template had before this function's own imports
import boto3  # noqa: E402 -- after the check above, on purpose

CLIENT = boto3.client("lambda")  # made once, at init, as SnapStart users do


def handler(event, context):
    __import__("time").sleep(event.get("sleep", 0))
    return {
        "init": __import__("os").environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "preloaded": PRELOADED,
        "region": CLIENT.meta.region_name,
    }
"""


def test_a_template_holds_what_its_init_imports(server: Any, lam: Any, make_function: Callable[..., str]) -> None:
    """Templates start from a zygote that preloads nothing (every page a template holds is copied at each
    fork); a function that imports boto3 at init still gets the runtime's boto3, once, in its template."""
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    name = make_function(BOTO3_AT_INIT, runtime="python3.12", Timeout=10, Tags={"selfless:ForkAfterInit": "on"})
    before = templates_ready(server)
    first = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert first["init"] == "on-demand"
    deadline = time.monotonic() + 30
    while templates_ready(server) <= before:
        assert time.monotonic() < deadline, "the template did not become ready"
        time.sleep(0.05)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: lam.invoke(FunctionName=name, Payload=b'{"sleep": 1}'), range(3)))
    bodies = [json.loads(a["Payload"].read()) for a in answers]
    forked = [b for b in bodies if b["init"] == "snap-start"]
    assert forked, bodies
    for body in forked:
        assert body["preloaded"] is False, "the template's zygote preloaded boto3"
        assert body["region"] == "us-east-1"


CGROUP_OF = """import os, time


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    with open("/proc/self/cgroup") as f:
        memory = next(line for line in f if ":memory:" in line or line.startswith("0::"))
    return {"init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"], "cgroup": memory.rsplit("/", 1)[1].strip()}
"""


def stock_of(server: Any, prefix: str) -> list[str]:
    """The server's memory cgroups whose names start with ``prefix``."""
    for dirpath, dirs, _files in os.walk("/sys/fs/cgroup/memory"):
        if os.path.basename(dirpath) == server.sandbox_cgroup:
            return [d for d in dirs if d.startswith(prefix)]
    return []


def test_forked_environments_take_cgroups_made_ahead(server: Any, lam: Any, make_function: Callable[..., str]) -> None:
    """Once the template is ready, cgroups limited for its memory size are made ahead (in the background);
    a burst's forked environments take them, each its own."""
    if server.sandbox != "linux":
        pytest.fail("fork-after-init needs the linux sandbox, which CI runs")
    name = make_function(CGROUP_OF, runtime="python3.12", MemorySize=192, Tags={"selfless:ForkAfterInit": "on"})
    first_call_then_template(server, lam, name, "$LATEST")
    deadline = time.monotonic() + 10
    while len(stock_of(server, "ahead-192-")) < 16:
        assert time.monotonic() < deadline, f"no cgroups made ahead: {stock_of(server, 'ahead-')}"
        time.sleep(0.05)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: call(lam, name, "$LATEST", sleep=1.0)[0], range(6)))
    forked = [b["cgroup"] for b in bodies if b["init"] == "snap-start"]
    assert len(forked) == 5, bodies  # the first call's environment serves one
    assert len(set(forked)) == 5, "each environment has a cgroup of its own"
    # Two children may have been forked ahead (their cgroups made in step with the stock); the others took it.
    assert sum(c.startswith("ahead-192-") for c in forked) >= 3, forked
