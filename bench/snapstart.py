"""Fork-after-init benchmark: the first call of an environment forked from a post-init template, next to a
warm call and to a plain cold start of the same code, in the same run.

Run by hand from the project root, as root (the Linux sandbox needs it), not as a test::

    .venv/bin/python bench/snapstart.py [--samples 40] [--json out.json]

The server runs with a short keep-alive (``SELFLESS_KEEP_ALIVE=0.4``), so that an idle environment is gone
a moment after its call while a fork-after-init template (which keep-alive does not stop) stays. Two
python3.12 functions with the same code, a module that imports boto3 and makes an S3 client at init (an
ordinary heavy init, 1,769 MB so that the CPU quota is one whole vCPU):

- ``snap`` carries the tag ``selfless:ForkAfterInit=on``: after its first (plain) start a template runs its
  init once; from then on every new environment forks from it;
- ``plain`` has no tag: every new environment starts from the zygote and imports boto3 itself.

Each sample, interleaved: wait until the last environments of both have stopped (keep-alive), then time
one call to ``snap`` (a forked environment's first call: its REPORT must say ``Restore Duration``), after
a 0.24 s pause a second call to ``snap`` on the same connection (warm: neither; the pause because on this
VM any call after an idle spell costs ~1 ms more, so both calls follow one), then one call to ``plain``
(a cold start: ``Init Duration``). Client-side times on a keep-alive connection opened before the clock starts.
After the samples, ``--samples`` x 5 back-to-back calls on one long-warm environment ("steady warm": the
second call of a freshly forked environment still pays copy-on-write faults on first-touched pages).
Target: the forked first call within 2x of the warm call.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import RawConnection, SignedRequest, SigV4Signer, Target
from invoke import (
    ACCESS_KEY_ID,
    PAYLOAD,
    SECRET_ACCESS_KEY,
    SelflessServer,
    gc_paused,
    invoke_path,
    lambda_client,
    machine_info,
    wait_configured,
)
from sandbox import pct, zip_of

HEAVY_INIT = """import boto3

S3 = boto3.client("s3", region_name="us-east-1")


def handler(event, context):
    return event
"""
KEEP_ALIVE_S = 0.4


def timed(conn: RawConnection, request: SignedRequest) -> tuple[float, str]:
    prepared = request.prepare()
    with gc_paused():
        t0 = time.perf_counter()
        answer = conn.post(prepared)
        t1 = time.perf_counter()
    problem = answer.failed(PAYLOAD)
    if problem:
        raise RuntimeError(problem)
    log = base64.b64decode(answer.header("X-Amz-Log-Result") or "").decode(errors="replace")
    report = next((line for line in log.splitlines() if line.startswith("REPORT")), "")
    return (t1 - t0) * 1000, report


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50), 3), "p99_ms": round(pct(values, 99), 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["SELFLESS_KEEP_ALIVE"] = str(KEEP_ALIVE_S)
    forked: list[float] = []
    warm: list[float] = []
    cold: list[float] = []
    restore: list[float] = []
    steady: list[float] = []
    steady_plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="selfless-snapstart-") as tmp:
        server = SelflessServer(str(Path(sys.executable).parent / "selfless"), Path(tmp) / "data", Path(tmp) / "log")
        try:
            server.wait_healthy()
            lam = lambda_client(server.port)
            for name, tags in (("snap", {"selfless:ForkAfterInit": "on"}), ("plain", {})):
                lam.create_function(
                    FunctionName=name,
                    Runtime="python3.12",
                    Role="arn:aws:iam::000000000000:role/bench",
                    Handler="app.handler",
                    Code={"ZipFile": zip_of(HEAVY_INIT)},
                    MemorySize=1769,
                    Timeout=30,
                    Tags=tags,
                )
                wait_configured(lam, name)
            signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            tail = {"X-Amz-Log-Type": "Tail"}
            snap = SignedRequest(signer, Target("snap", server.port, invoke_path("snap")), PAYLOAD, tail)
            plain = SignedRequest(signer, Target("plain", server.port, invoke_path("plain")), PAYLOAD, tail)
            conn_snap, conn_plain = RawConnection(snap.target), RawConnection(plain.target)
            conn_snap.connect()
            conn_plain.connect()
            timed(conn_snap, snap)  # the first, plain start; the template is made meanwhile
            time.sleep(2.0)
            for i in range(args.samples):
                time.sleep(KEEP_ALIVE_S * 2 + 0.2)  # both functions' environments are gone
                ms, report = timed(conn_snap, snap)
                if "Restore Duration" not in report:
                    raise RuntimeError(f"sample {i}: not a forked start: {report}")
                restore.append(float(report.split("Restore Duration: ")[1].split(" ms")[0]))
                forked.append(ms)
                # The same kind of pause before the warm call (shorter than the keep-alive): on this VM
                # the first call after an idle spell costs ~1 ms more, whatever serves it.
                time.sleep(KEEP_ALIVE_S * 0.6)
                ms, report = timed(conn_snap, snap)
                if "Duration: " in report and ("Restore Duration" in report or "Init Duration" in report):
                    raise RuntimeError(f"sample {i}: the second call was not warm: {report}")
                warm.append(ms)
                ms, report = timed(conn_plain, plain)
                if "Init Duration" not in report:
                    raise RuntimeError(f"sample {i}: not a cold start: {report}")
                cold.append(ms)
            # Steady warm: back-to-back calls on one environment that has served many (its copy-on-write
            # faults are behind it, unlike the second call of a freshly forked one).
            for _ in range(50):
                timed(conn_snap, snap)
                timed(conn_plain, plain)
            for _ in range(args.samples * 5):
                steady.append(timed(conn_snap, snap)[0])
                steady_plain.append(timed(conn_plain, plain)[0])
            conn_snap.close()
            conn_plain.close()
        except Exception:
            print(server.log_tail(40), file=sys.stderr)
            raise
        finally:
            stopped = server.stop()
            if stopped.leftovers:
                print("left behind:", stopped.leftovers, file=sys.stderr)
    result = {
        "machine": machine_info(),
        "warm": summary(warm),
        "steady_warm": summary(steady),
        "steady_warm_plain_environment": summary(steady_plain),
        "fork_after_init_first_call": summary(forked),
        "plain_cold_start": summary(cold),
        "restore_duration": summary(restore),
    }
    result["ratio_forked_to_warm_p50"] = round(
        result["fork_after_init_first_call"]["p50_ms"] / result["warm"]["p50_ms"], 2
    )
    result["ratio_forked_to_steady_warm_p50"] = round(
        result["fork_after_init_first_call"]["p50_ms"] / result["steady_warm"]["p50_ms"], 2
    )
    result["ratio_cold_to_forked_p50"] = round(
        result["plain_cold_start"]["p50_ms"] / result["fork_after_init_first_call"]["p50_ms"], 2
    )
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
