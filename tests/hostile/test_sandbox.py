"""Hostile functions against the Linux sandbox: every attack fails, and the platform stays healthy.

Each case runs an attacking handler, checks what the attack achieved (nothing), then checks that a normal
function on the same server still answers. The session's server fixture finally checks that no process of
any environment outlived the server. On a machine where the server runs the process backend (not root)
there is no sandbox to attack, and these tests say so instead of passing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, deploy, make_zip, unique

ATTACKS = r"""
import ctypes, errno, json, os, signal, socket, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None)}

def read(path):
    with open(path, "rb") as f:
        return f.read(200).decode("latin-1")

def syscall_errno(rc):
    return {"rc": rc, "errno": ctypes.get_errno()}

def handler(event, context):
    case = event["case"]
    if case == "read":
        return {p: attempt(lambda p=p: read(p)) for p in event["paths"]}
    if case == "listdir":
        return {p: attempt(lambda p=p: sorted(os.listdir(p))[:50]) for p in event["paths"]}
    if case == "processes":
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if case == "kill_server":
        return attempt(lambda: os.kill(event["pid"], signal.SIGKILL))
    if case == "kill_all":
        child = subprocess.Popen(["sleep", "30"])
        os.kill(-1, signal.SIGKILL)
        return {"child_killed": child.wait(timeout=5) == -signal.SIGKILL}
    if case == "write_code":
        return attempt(lambda: open("/var/task/evil.py", "w").write("x"))
    if case == "mount":
        return syscall_errno(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
    if case == "unshare":
        return syscall_errno(libc.unshare(0x00020000))
    if case == "ptrace":
        return syscall_errno(libc.ptrace(16, event["pid"], None, None))  # PTRACE_ATTACH
    if case == "setuid":
        return attempt(lambda: os.setuid(0))
    if case == "chroot":
        return attempt(lambda: os.chroot("/tmp"))
    if case == "fork_bomb":
        children = 0
        failure = None
        for _ in range(5000):
            try:
                pid = os.fork()
            except OSError as exc:
                failure = exc.errno
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
        return {"children": children, "errno": failure}
    if case == "memory":
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    if case == "fill_tmp":
        chunk = b"x" * (1 << 20)
        written = 0
        try:
            with open("/tmp/fill", "wb") as f:
                while written < 4000:
                    f.write(chunk); f.flush(); written += 1
        except OSError as exc:
            os.remove("/tmp/fill")
            return {"written_mb": written, "errno": exc.errno}
        return {"written_mb": written, "errno": None}
    if case == "spin":
        while True:
            pass
    if case == "orphans":
        kept = subprocess.Popen(["sleep", "300"])
        escaped = subprocess.Popen(["sleep", "301"], start_new_session=True)
        return [kept.pid, escaped.pid]
    if case == "cpu":
        start = time.process_time(); t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            pass
        return time.process_time() - start
    if case == "identity":
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(),
                "hostname": socket.gethostname(), "caps": read("/proc/self/status").count("CapEff"),
                "status": open("/proc/self/status").read()}
    if case == "descriptors":
        import resource
        names = ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE")
        limits = {name: resource.getrlimit(getattr(resource, name)) for name in names}
        raised = attempt(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536)))
        held = []
        try:
            while len(held) < 100000:
                held.append(socket.socket())
            failure = None
        except OSError as exc:
            failure = exc.errno
        opened = len(held)
        for s in held:
            s.close()
        return {"limits": limits, "raised": raised, "opened": opened, "errno": failure}
    if case == "env":
        return dict(os.environ)
    raise ValueError(case)
"""

HEALTHY = "import os\ndef handler(e, c):\n    return {'healthy': True, 'api': os.environ['AWS_LAMBDA_RUNTIME_API']}\n"


@pytest.fixture(scope="module")
def linux(server: Server) -> Server:
    if server.sandbox != "linux":
        pytest.fail("the linux sandbox is not in use here (run as root on Linux): nothing to attack")
    return server


@pytest.fixture(scope="module")
def attacker(lam: Any, linux: Server) -> Iterator[Callable[..., Any]]:
    """Invoke the attacking function with an event; a fresh configuration per module."""
    name = deploy(lam, ATTACKS, name=unique("attacker"), Timeout=5, MemorySize=256)

    def run(event: dict[str, Any], **kw: Any) -> tuple[str | None, Any, str]:
        r = lam.invoke(FunctionName=name, Payload=json.dumps(event), LogType="Tail", **kw)
        import base64

        return r.get("FunctionError"), json.loads(r["Payload"].read()), base64.b64decode(r["LogResult"]).decode()

    run.name = name  # type: ignore[attr-defined]
    yield run
    lam.delete_function(FunctionName=name)


@pytest.fixture(scope="module")
def bystander(lam: Any, linux: Server) -> Iterator[tuple[str, bytes]]:
    files: dict[str, str | bytes] = {"app.py": HEALTHY, "secret.txt": "bystander secret"}
    package = make_zip(files)
    name = deploy(lam, files=files, name=unique("bystander"), runtime="python3.12")
    yield name, package
    lam.delete_function(FunctionName=name)


@pytest.fixture(autouse=True)
def platform_stays_healthy(lam: Any, bystander: tuple[str, bytes]) -> Iterator[None]:
    yield
    r = lam.invoke(FunctionName=bystander[0])
    assert json.loads(r["Payload"].read())["healthy"] is True


def test_sees_no_host_secrets_data_dir_or_other_code(
    attacker: Callable[..., Any], linux: Server, bystander: tuple[str, bytes]
) -> None:
    other_code = linux.data_dir / "code" / "trees" / hashlib.sha256(bystander[1]).hexdigest()
    assert (other_code / "secret.txt").exists()  # it is there, on the host
    paths = [
        "/etc/shadow",
        "/etc/hostname",
        str(linux.data_dir / "metadata.sqlite3"),
        str(linux.data_dir / "credentials"),
        str(other_code / "secret.txt"),
        "/proc/1/environ",
        f"/proc/{linux.process.pid}/environ",
        f"/proc/{linux.process.pid}/cmdline",
        "/root/.bash_history",
    ]
    error, out, _ = attacker({"case": "read", "paths": paths})
    assert error is None
    for path in paths:
        assert out[path]["ok"] is False, f"{path} was readable: {out[path]}"
    error, out, _ = attacker({"case": "listdir", "paths": ["/", "/etc", "/var/task", "/tmp", "/dev"]})
    assert set(out["/"]["value"]) <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "root",
        "sbin",
        "tmp",
        "usr",
        "var",
    }
    assert set(out["/etc"]["value"]) <= {
        "ca-certificates",
        "group",
        "hosts",
        "nsswitch.conf",
        "passwd",
        "pki",
        "resolv.conf",
        "ssl",
    }
    assert out["/var/task"]["value"] == ["app.py"]
    assert set(out["/dev"]["value"]) <= {"fd", "full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"}


def test_sees_only_its_own_processes(attacker: Callable[..., Any], linux: Server) -> None:
    error, pids, _ = attacker({"case": "processes"})
    assert error is None
    assert linux.process.pid not in pids and 1 not in pids
    uids = linux.sandbox_uids
    assert uids is not None
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        assert uids[0] <= uid <= uids[1]


def test_runs_unprivileged_with_no_capabilities(attacker: Callable[..., Any], linux: Server) -> None:
    error, out, _ = attacker({"case": "identity"})
    assert error is None
    assert out["uid"] != 0 and out["gid"] != 0 and out["groups"] == []
    status = dict(line.split(":\t", 1) for line in out["status"].splitlines() if ":\t" in line)
    assert int(status["CapEff"].strip(), 16) == 0
    assert int(status["CapPrm"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert out["cwd"] == "/var/task"


def test_server_environment_is_not_inherited(attacker: Callable[..., Any]) -> None:
    _, env, _ = attacker({"case": "env"})
    assert "SELFLESS_SERVER_SECRET_CANARY" not in env and "SELFLESS_SECRET_ACCESS_KEY" not in env


@pytest.mark.parametrize("case", ["mount", "unshare", "ptrace"])
def test_privileged_syscalls_are_refused(attacker: Callable[..., Any], linux: Server, case: str) -> None:
    error, out, _ = attacker({"case": case, "pid": linux.process.pid})
    assert error is None
    assert out["rc"] == -1 and out["errno"] == 1  # EPERM


@pytest.mark.parametrize("case", ["setuid", "chroot", "kill_server", "write_code"])
def test_escalations_fail(attacker: Callable[..., Any], linux: Server, case: str) -> None:
    error, out, _ = attacker({"case": case, "pid": linux.process.pid})
    assert error is None
    assert out["ok"] is False, out
    assert linux.process.poll() is None


def test_kill_everything_reaches_only_its_own_processes(attacker: Callable[..., Any], linux: Server) -> None:
    # kill(-1) signals every process the caller may signal (never itself): here, only its own children.
    error, out, _ = attacker({"case": "kill_all"})
    assert error is None and out == {"child_killed": True}
    assert linux.process.poll() is None


@pytest.fixture
def big(make_function: Callable[..., str], lam: Any) -> Callable[..., Any]:
    """The attacker with one full vCPU (1,769 MB) and time to exhaust its limits."""
    name = make_function(ATTACKS, MemorySize=1769, Timeout=60, EphemeralStorage={"Size": 512})

    def run(event: dict[str, Any]) -> tuple[str | None, Any]:
        r = lam.invoke(FunctionName=name, Payload=json.dumps(event))
        return r.get("FunctionError"), json.loads(r["Payload"].read())

    return run


def test_functions_get_awss_process_limits_not_the_servers(attacker: Callable[..., Any], linux: Server) -> None:
    """1,024 open files (the server itself may hold tens of thousands), 1,024 processes, no core files; the
    hard limits cannot be raised."""
    error, out, _ = attacker({"case": "descriptors"})
    assert error is None, out
    assert out["limits"] == {"RLIMIT_NOFILE": [1024, 1024], "RLIMIT_NPROC": [1024, 1024], "RLIMIT_CORE": [0, 0]}
    assert out["raised"]["ok"] is False
    assert out["errno"] == 24 and out["opened"] < 1024  # EMFILE
    with open(f"/proc/{linux.process.pid}/limits") as f:
        server_files = next(line for line in f if line.startswith("Max open files")).split()[3]
    assert int(server_files) > 1024


def test_fork_bomb_hits_the_pids_limit(big: Callable[..., Any]) -> None:
    error, out = big({"case": "fork_bomb"})
    assert error is None, out
    assert out["errno"] == 11 and out["children"] < 1024  # EAGAIN from pids.max


def test_memory_past_the_limit_is_killed_then_recovers(attacker: Callable[..., Any]) -> None:
    error, out, log = attacker({"case": "memory"})
    assert error == "Unhandled" and out["errorType"] == "Runtime.ExitError"
    assert out["errorMessage"].endswith("signal: killed")
    report = next(line for line in log.splitlines() if line.startswith("REPORT"))
    used = int(report.split("Max Memory Used: ")[1].split()[0])
    assert 200 <= used <= 256
    error, out, _ = attacker({"case": "identity"})
    assert error is None


def test_tmp_full_is_enospc(big: Callable[..., Any]) -> None:
    error, out = big({"case": "fill_tmp"})
    assert error is None, out
    assert out["errno"] == 28 and 500 <= out["written_mb"] <= 514


def test_spinning_forever_times_out(attacker: Callable[..., Any]) -> None:
    t0 = time.monotonic()
    error, out, _ = attacker({"case": "spin"})
    assert error == "Unhandled" and out["errorType"] == "Sandbox.Timedout"
    assert time.monotonic() - t0 < 15


def test_cpu_is_limited_in_proportion_to_memory(attacker: Callable[..., Any]) -> None:
    error, used, _ = attacker({"case": "cpu"})
    assert error is None
    share = 256 / 1769  # 256 MB is about 0.14 of a vCPU
    assert used < share * 2 + 0.05


def test_orphans_are_killed_when_the_environment_goes(attacker: Callable[..., Any], lam: Any) -> None:
    error, pids, _ = attacker({"case": "orphans"})
    assert error is None
    assert all(Path(f"/proc/{p}").exists() for p in pids)
    lam.update_function_configuration(FunctionName=attacker.name, Description=f"retire {time.time()}")  # type: ignore[attr-defined]
    lam.get_waiter("function_updated_v2").wait(FunctionName=attacker.name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


def test_environments_are_offered_to_same_page_merging(tmp_path: Path) -> None:
    """Zygotes (and every environment forked from them) are mergeable; SELFLESS_KSM=1 runs ksmd while the
    server serves and puts it back as it was afterwards."""
    from tests.conftest import start_server

    ksm_run = Path("/sys/kernel/mm/ksm/run")
    before = ksm_run.read_text().strip()
    server = start_server(tmp_path, extra_env={"SELFLESS_KSM": "1", "SELFLESS_ZYGOTE_PREWARM": "python3.12"})
    try:
        if server.sandbox != "linux":
            pytest.fail("the linux sandbox is not in use here: nothing to merge")
        assert ksm_run.read_text().strip() == "1"
        deadline = time.monotonic() + 30
        zygotes: list[int] = []
        while time.monotonic() < deadline and not zygotes:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if b"zygote.py" in Path(f"/proc/{entry}/cmdline").read_bytes():
                            zygotes.append(int(entry))
                    except OSError:
                        continue
            time.sleep(0.1)
        assert zygotes, "no zygote started"
        stats = Path(f"/proc/{zygotes[0]}/ksm_stat").read_text()
        assert "ksm_merge_any: yes" in stats
    finally:
        assert server.stop() == 0
    assert ksm_run.read_text().strip() == before
