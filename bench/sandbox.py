"""Sandbox benchmark: cold starts of a boto3 handler, density, and what isolation costs a warm invoke.

Run by hand from the project root, as root (the Linux sandbox needs it), not as a test::

    .venv/bin/python bench/sandbox.py [--cold 40] [--density 100] [--warm 2000] [--json out.json]

1. **Cold start, boto3 handler** (linux backend): a python3.12 function whose module imports boto3 and
   creates an S3 client. Before each sample its configuration changes (retiring its environments); one
   invoke is then timed client-side. Floor, interleaved sample by sample: spawn-to-exit of
   ``python3.12 -c "import boto3, os; os._exit(0)"`` from a clean virtual environment, with the very same
   boto3 on its path. Targets: p50 <= 15 ms, p99 <= 40 ms (at least 20x faster than the fresh spawn).
2. **Density**: ``--density`` concurrent calls open as many environments of a boto3 handler; once they are
   idle, the PSS of every process of every environment (from /proc/PID/smaps_rollup; shared pages are split
   among their sharers, the zygote's included) gives MiB per idle environment and environments per GiB.
   Measured twice: at once, and after the kernel's same-page merging has gone over them (the linux server
   runs with SELFLESS_KSM=1; for the measurement the benchmark raises ksmd's scan rate and waits until a
   full scan merges nothing more, then puts the rate back). Target >= 400 per GiB.
3. **Isolation cost**: warm concurrency-1 invokes of the same 1,769 MB (one vCPU) function on a linux server
   and on a process server, in rotated rounds. Target: linux p50 <= 1.25x process p50.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import SignedRequest, SigV4Signer, Target, fresh_call
from invoke import (
    ACCESS_KEY_ID,
    FRESH_ENV,
    INIT_RE,
    PAYLOAD,
    ROLE,
    SECRET_ACCESS_KEY,
    SelflessServer,
    gc_paused,
    invoke_path,
    lambda_client,
    machine_info,
    measure_sequential,
    wait_configured,
)

BOTO3_HANDLER = """import boto3


def handler(event, context):
    return event
"""
SLEEPY_BOTO3_HANDLER = """import time

import boto3


def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return event
"""
ECHO_HANDLER = "def handler(event, context):\n    return event\n"
COLD = "bench-cold-boto3"
DENSE = "bench-dense"
WARM = "bench-warm-1vcpu"


def zip_of(source: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("app.py", date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, source)
    return buf.getvalue()


def create(lam: Any, name: str, source: str, memory: int, runtime: str = "python3.12") -> None:
    lam.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_of(source)},
        Timeout=60,
        MemorySize=memory,
    )
    wait_configured(lam, name)


def start(kind: str, work: Path, *, ksm: bool = True) -> SelflessServer:
    """A server with the ``kind`` sandbox; ``ksm``: same-page merging on (for density; the default of
    ``selfless serve`` is off) when the kind is linux."""
    os.environ["SELFLESS_SANDBOX"] = kind
    os.environ["SELFLESS_KSM"] = "1" if kind == "linux" and ksm else ""
    try:
        server = SelflessServer(
            str(Path(sys.executable).parent / "selfless"), work / f"data-{kind}", work / f"{kind}.log"
        )
    finally:
        del os.environ["SELFLESS_SANDBOX"]
        del os.environ["SELFLESS_KSM"]
    server.wait_healthy()
    return server


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def clean_python312(work: Path) -> Path:
    base = shutil.which("python3.12", path="/usr/local/bin:/usr/bin:/bin")
    if base is None:
        pyenv = sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob("3.12.*/bin/python3.12"))
        base = str(pyenv[-1]) if pyenv else None
    if base is None:
        raise RuntimeError("no python3.12 to measure the fresh-interpreter floor with")
    venv = work / "venv312"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def measure_cold(lam: Any, port: int, packages: Path, python: Path, count: int) -> dict[str, Any]:
    signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    request = SignedRequest(signer, Target("linux", port, invoke_path(COLD)), PAYLOAD, {"X-Amz-Log-Type": "Tail"})
    env = dict(FRESH_ENV, PYTHONPATH=str(packages))
    argv = [str(python), "-c", "import boto3, os; os._exit(0)"]
    cold: list[float] = []
    fresh: list[float] = []
    init: list[float] = []
    for i in range(count):
        lam.update_function_configuration(
            FunctionName=COLD, Environment={"Variables": {"GENERATION": f"{time.time_ns()}{i}"}}
        )
        wait_configured(lam, COLD)
        with gc_paused():
            elapsed_ns, answer = fresh_call(request)
        problem = answer.failed(PAYLOAD)
        if problem:
            raise RuntimeError(f"cold sample {i}: {problem}")
        log = base64.b64decode(answer.header("X-Amz-Log-Result") or "").decode(errors="replace")
        found = INIT_RE.search(log)
        if found is None:
            raise RuntimeError(f"cold sample {i} did not start a new environment:\n{log}")
        init.append(float(found.group(1)))
        cold.append(elapsed_ns / 1e6)
        with gc_paused():
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, check=True, timeout=60)
            fresh.append((time.perf_counter() - t0) * 1000)
    return {"cold_ms": cold, "fresh_ms": fresh, "init_ms": init}


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


KSM = Path("/sys/kernel/mm/ksm")


def measure_density(server: SelflessServer, lam: Any, count: int) -> dict[str, Any]:
    health = json.loads(urllib_get(server.port, "/health"))
    low, high = (int(x) for x in health["sandbox_uids"].split("-"))

    def one(_: int) -> None:
        lam.invoke(FunctionName=DENSE, Payload=json.dumps({"sleep": 2.0}))

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        list(pool.map(one, range(count)))
    time.sleep(1.0)
    before = pss_of_uids(low, high)
    rate = (KSM / "pages_to_scan").read_text().strip()
    try:
        (KSM / "pages_to_scan").write_text("5000")
        # Merging takes a few passes (a page must look the same twice before it is merged): wait until a
        # whole scan adds nothing, at least three scans, at most two minutes.
        deadline = time.monotonic() + 120
        scans = int((KSM / "full_scans").read_text())
        sharing = -1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = int((KSM / "full_scans").read_text())
            if now >= scans + 1:
                current = int((KSM / "pages_sharing").read_text())
                if current == sharing and now >= scans + 3:
                    break
                sharing, scans = current, now
    finally:
        (KSM / "pages_to_scan").write_text(rate)
    after = pss_of_uids(low, high)
    return {"unmerged": before, "merged": after}


def pss_of_uids(low: int, high: int) -> dict[str, Any]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if low <= uid <= high:
                pids.append(int(entry))
    total_kib = sum(pss_kib(p) for p in pids)
    per_env_mib = total_kib / 1024 / max(1, len(pids))
    return {
        "environments": len(pids),
        "pss_total_mib": total_kib / 1024,
        "pss_per_env_mib": per_env_mib,
        "per_gib": 1024 / per_env_mib if per_env_mib else 0.0,
    }


def urllib_get(port: int, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return bytes(r.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=40)
    parser.add_argument("--density", type=int, default=100)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the linux sandbox needs root", file=sys.stderr)
        return 2
    info = machine_info()
    print(json.dumps(info))
    work = Path(tempfile.mkdtemp(prefix="selfless-sandbox-bench-"))
    servers: list[SelflessServer] = []
    results: dict[str, Any] = {"machine": info}
    try:
        linux = start("linux", work)
        servers.append(linux)
        process = start("process", work)
        servers.append(process)
        lam = lambda_client(linux.port)
        plam = lambda_client(process.port)
        create(lam, COLD, BOTO3_HANDLER, 1024)
        create(lam, DENSE, SLEEPY_BOTO3_HANDLER, 128)
        create(lam, WARM, ECHO_HANDLER, 1769)
        create(plam, WARM, ECHO_HANDLER, 1769)
        python = clean_python312(work)
        packages = work / "data-linux" / "runtime" / "python"
        print("measuring cold starts ...", flush=True)
        cold = measure_cold(lam, linux.port, packages, python, args.cold)
        print("measuring warm isolation cost ...", flush=True)
        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        requests = {
            "linux": SignedRequest(signer, Target("linux", linux.port, invoke_path(WARM)), PAYLOAD),
            "process": SignedRequest(signer, Target("process", process.port, invoke_path(WARM)), PAYLOAD),
        }
        warm = measure_sequential(requests, ["raw"], args.warm, 200, 4)["raw"]
        print("measuring density ...", flush=True)
        density = measure_density(linux, lam, args.density)
    finally:
        for server in servers:
            stop = server.stop()
            if stop.leftovers:
                print("left behind:", stop.leftovers, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    c50, c99 = pct(cold["cold_ms"], 50), pct(cold["cold_ms"], 99)
    f50, f99 = pct(cold["fresh_ms"], 50), pct(cold["fresh_ms"], 99)
    lin = sorted(warm["linux"].samples_ns)
    pro = sorted(warm["process"].samples_ns)
    l50, p50 = statistics.median(lin) / 1000, statistics.median(pro) / 1000
    l99, p99 = pct([x / 1000 for x in lin], 99), pct([x / 1000 for x in pro], 99)
    rows = [
        (
            "cold start p50, boto3 handler",
            f"{c50:.2f} ms",
            f"fresh python + boto3 {f50:.2f} ms",
            f"{f50 / c50:.1f}x faster",
            "<= 15 ms: " + ("met" if c50 <= 15 else "not met"),
        ),
        (
            "cold start p99, boto3 handler",
            f"{c99:.2f} ms",
            f"fresh python + boto3 {f99:.2f} ms",
            f"{f99 / c99:.1f}x faster",
            "<= 40 ms: " + ("met" if c99 <= 40 else "not met"),
        ),
        ("Init Duration p50 (handler import)", f"{pct(cold['init_ms'], 50):.2f} ms", "", "", ""),
        (
            "idle environments per GiB (PSS), merged",
            f"{density['merged']['per_gib']:.0f}",
            f"{density['merged']['environments']} envs, {density['merged']['pss_per_env_mib']:.2f} MiB each",
            "",
            ">= 400: " + ("met" if density["merged"]["per_gib"] >= 400 else "not met"),
        ),
        (
            "idle environments per GiB (PSS), at once",
            f"{density['unmerged']['per_gib']:.0f}",
            f"{density['unmerged']['pss_per_env_mib']:.2f} MiB each, before ksmd went over them",
            "",
            "",
        ),
        (
            "warm c=1 p50, linux vs process",
            f"{l50:.1f} µs",
            f"process {p50:.1f} µs",
            f"{l50 / p50:.2f}x",
            "<= 1.25x: " + ("met" if l50 <= 1.25 * p50 else "not met"),
        ),
        ("warm c=1 p99, linux vs process", f"{l99:.1f} µs", f"process {p99:.1f} µs", f"{l99 / p99:.2f}x", ""),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(r)))
    results.update(cold=cold, density=density, warm={"linux_p50_us": l50, "process_p50_us": p50})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
