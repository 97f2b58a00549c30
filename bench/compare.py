"""Before/after: cold starts and the 200-call burst of this tree next to another checkout's, in one run.

Run by hand from the project root, as root, not as a test::

    git worktree add /tmp/before <commit> && (cd /tmp/before && python3 -m venv .venv &&
        .venv/bin/pip install -e '.[test]')
    .venv/bin/python bench/compare.py --base /tmp/before [--cold 30] [--rounds 4] [--bursts 2] [--fork]

The machine's speed drifts by ±10% within the hour, so the two trees alternate (ABBA order) instead of one
run after the other:

1. **Cold start, boto3 handler**: for each tree in turn a fresh ``selfless serve`` (linux sandbox) of that
   tree, the function of ``bench/sandbox.py`` (imports boto3, 1,024 MB), ``--cold`` samples of a call right
   after a configuration change, timed client-side; interleaved sample by sample with the fresh-interpreter
   floor (``python3.12 -c "import boto3"``). Per tree: p50 and p90 over every round, and the floor's p50.
2. **Burst**: each tree's own ``bench/scale.py`` (``--bursts`` runs of 3 rounds each, alternating; it measures
   its own floor, a bare server that sleeps, in the same run). Per tree: the median of every round's wall
   time, and the floor's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from invoke import SelflessServer, lambda_client, machine_info
from sandbox import BOTO3_HANDLER, COLD, clean_python312, create, measure_cold, pct

HERE = Path(__file__).resolve().parent.parent


def cold_round(tree: Path, work: Path, python: Path, count: int) -> dict[str, Any]:
    os.environ["SELFLESS_SANDBOX"] = "linux"
    try:
        data = Path(tempfile.mkdtemp(dir=work, prefix="data-"))
        server = SelflessServer(str(tree / ".venv" / "bin" / "selfless"), data, work / f"{tree.name}.log")
    finally:
        del os.environ["SELFLESS_SANDBOX"]
    try:
        server.wait_healthy()
        lam = lambda_client(server.port)
        create(lam, COLD, BOTO3_HANDLER, 1024)
        return measure_cold(lam, server.port, data / "runtime" / "python", python, count)
    finally:
        stopped = server.stop()
        if stopped.leftovers:
            print("left behind:", stopped.leftovers, file=sys.stderr)
        shutil.rmtree(data, ignore_errors=True)


def burst_run(tree: Path, fork: bool, out: Path) -> dict[str, Any]:
    argv = [str(tree / ".venv" / "bin" / "python"), str(tree / "bench" / "scale.py"), "--rounds", "3"]
    argv += ["--json", str(out)] + (["--fork"] if fork else [])
    subprocess.run(argv, check=True, cwd=tree, timeout=1800)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (with its own .venv)")
    parser.add_argument("--cold", type=int, default=30, help="cold samples per tree and round")
    parser.add_argument("--rounds", type=int, default=4, help="cold-start rounds per tree")
    parser.add_argument("--bursts", type=int, default=2, help="bench/scale.py runs per tree (0: none)")
    parser.add_argument("--fork", action="store_true", help="bursts with fork-after-init")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the linux sandbox needs root", file=sys.stderr)
        return 2
    trees = {"base": args.base.resolve(), "head": HERE}
    report: dict[str, Any] = {"machine": machine_info(), "trees": {k: str(v) for k, v in trees.items()}}
    work = Path(tempfile.mkdtemp(prefix="selfless-compare-"))
    cold: dict[str, dict[str, list[float]]] = {name: {"cold_ms": [], "fresh_ms": []} for name in trees}
    bursts: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        python = clean_python312(work)
        for i in range(args.rounds):
            order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
            for name in order:
                got = cold_round(trees[name], work, python, args.cold)
                cold[name]["cold_ms"] += got["cold_ms"]
                cold[name]["fresh_ms"] += got["fresh_ms"]
                print(f"cold round {i} {name}: p50 {pct(got['cold_ms'], 50):.2f} ms", file=sys.stderr, flush=True)
        for i in range(args.bursts):
            order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
            for name in order:
                bursts[name].append(burst_run(trees[name], args.fork, work / f"burst-{name}-{i}.json"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {}
    for name in trees:
        row: dict[str, Any] = {
            "cold_p50_ms": round(pct(cold[name]["cold_ms"], 50), 2),
            "cold_p90_ms": round(pct(cold[name]["cold_ms"], 90), 2),
            "fresh_floor_p50_ms": round(pct(cold[name]["fresh_ms"], 50), 2),
        }
        rounds = [r for run in bursts[name] for r in run["rounds"]]
        if rounds:
            row["burst_wall_median_s"] = round(statistics.median(r["selfless"]["wall_s"] for r in rounds), 3)
            row["burst_wall_max_s"] = round(max(r["selfless"]["wall_s"] for r in rounds), 3)
            row["burst_floor_median_s"] = round(statistics.median(r["floor"]["wall_s"] for r in rounds), 3)
            row["burst_cpu_ms_per_call"] = round(statistics.median(r["selfless"]["cpu_ms_per_call"] for r in rounds), 2)
            row["burst_walls_s"] = [r["selfless"]["wall_s"] for r in rounds]
        summary[name] = row
    head, base = summary["head"], summary["base"]
    summary["head_over_base"] = {
        key: round(head[key] / base[key], 3)
        for key in ("cold_p50_ms", "cold_p90_ms", "burst_wall_median_s")
        if key in head and base.get(key)
    }
    report["summary"] = summary
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report | {"cold": cold, "bursts": bursts}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
