"""Cold starts of two builds side by side: this checkout's server and another's, samples alternated.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/cold_ab.py --other /path/to/other/selfless [--samples 100]

``--other`` is a ``selfless`` command of the build to compare with, e.g. for an older commit::

    git archive <commit> | tar -x -C /tmp/base
    printf '#!/bin/sh\\nPYTHONPATH=/tmp/base/src exec %s -m selfless.cli "$@"\\n' "$PWD/.venv/bin/python" > /tmp/base.sh
    chmod +x /tmp/base.sh

Both servers run at once, each with ``bench-cold`` (``bench/invoke.py``'s stdlib handler). Each sample, in
turn on each server (which goes first alternates): a configuration change retires the function's
environments, 50 ms pass (the retired environment's teardown out of the way, alike for both), then one
invoke is timed client-side on a connection opened beforehand, as ``bench/invoke.py``'s cold start. The
machine's noise falls on both alike, which separate runs cannot promise on a shared machine. Every sample
must report an Init Duration (a new environment). Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import SignedRequest, SigV4Signer, Target, fresh_call
from invoke import (
    ACCESS_KEY_ID,
    COLD_FUNCTION,
    INIT_RE,
    PAYLOAD,
    REGION,
    SECRET_ACCESS_KEY,
    SelflessServer,
    deploy,
    gc_paused,
    invoke_path,
    lambda_client,
    wait_configured,
)


def sample(lam: Any, request: SignedRequest) -> float:
    """One cold start in ms."""
    lam.update_function_configuration(
        FunctionName=COLD_FUNCTION, Environment={"Variables": {"GEN": str(time.time_ns())}}
    )
    wait_configured(lam, COLD_FUNCTION)
    time.sleep(0.05)
    with gc_paused():
        elapsed_ns, answer = fresh_call(request)
    problem = answer.failed(PAYLOAD)
    if problem:
        raise RuntimeError(problem)
    if not INIT_RE.search(base64.b64decode(answer.header("X-Amz-Log-Result") or "").decode(errors="replace")):
        raise RuntimeError("a sample ran on a warm environment")
    return elapsed_ns / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="the selfless command of the build to compare with")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--selfless", default=str(Path(sys.executable).parent / "selfless"), help="this build's command")
    args = p.parse_args()
    if not 1 <= args.samples <= 10_000:
        p.error("keep --samples in [1, 1e4]")
    work = Path(tempfile.mkdtemp(prefix="selfless-cold-ab-"))
    servers: dict[str, SelflessServer] = {}
    try:
        servers["other"] = SelflessServer(args.other, work / "data-other", work / "other.log")
        servers["this"] = SelflessServer(args.selfless, work / "data-this", work / "this.log")
        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        lams: dict[str, Any] = {}
        requests: dict[str, SignedRequest] = {}
        for name, server in servers.items():
            server.wait_healthy()
            lams[name] = lambda_client(server.port)
            deploy(lams[name], COLD_FUNCTION)
            target = Target(name, server.port, invoke_path(COLD_FUNCTION))
            requests[name] = SignedRequest(signer, target, PAYLOAD, {"X-Amz-Log-Type": "Tail"})
        ms: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(args.samples):
            for name in list(servers) if i % 2 == 0 else list(reversed(servers)):
                ms[name].append(sample(lams[name], requests[name]))
        for name, values in ms.items():
            values.sort()
            print(
                f"{name:<5} ({servers[name].proc.args[0]}): cold start p50 {statistics.median(values):.2f} ms, "
                f"p90 {values[int(len(values) * 0.9)]:.2f} ms, mean {statistics.mean(values):.2f} ms (n={len(values)})"
            )
        ratio = statistics.median(ms["this"]) / statistics.median(ms["other"])
        print(f"this / other, p50: {ratio:.3f}")
    finally:
        for name, server in servers.items():
            stopped = server.stop()
            if stopped.killed or stopped.leftovers:
                print(f"{name} did not stop cleanly: {stopped}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
