"""The 200-call burst of this tree next to another checkout's, alternated, in one run.

Run by hand from the project root, as root, not as a test::

    git worktree add /tmp/before <commit> && (cd /tmp/before && python3 -m venv .venv &&
        .venv/bin/pip install -e '.[test]')
    .venv/bin/python bench/burst_ab.py --base /tmp/before [--runs 2] [--fork]

Each tree's own ``bench/scale.py`` (3 rounds a run, which measures its own floor, a bare server that sleeps,
in the same run), the trees alternating ABBA: the machine's speed drifts by ±10% within the hour. Per tree:
the median and worst of every round's wall time, the floor's, and the machine's CPU per call. Cold starts of
two builds: ``bench/cold_ab.py``.
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

from invoke import machine_info

HERE = Path(__file__).resolve().parent.parent


def burst_run(tree: Path, fork: bool, out: Path) -> dict[str, Any]:
    argv = [str(tree / ".venv" / "bin" / "python"), str(tree / "bench" / "scale.py"), "--rounds", "3"]
    argv += ["--json", str(out)] + (["--fork"] if fork else [])
    subprocess.run(argv, check=True, cwd=tree, timeout=1800)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (with its own .venv)")
    parser.add_argument("--runs", type=int, default=2, help="bench/scale.py runs per tree")
    parser.add_argument("--fork", action="store_true", help="bursts with fork-after-init")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the linux sandbox needs root", file=sys.stderr)
        return 2
    trees = {"base": args.base.resolve(), "head": HERE}
    report: dict[str, Any] = {"machine": machine_info(), "trees": {k: str(v) for k, v in trees.items()}}
    work = Path(tempfile.mkdtemp(prefix="selfless-burst-ab-"))
    bursts: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        for i in range(args.runs):
            order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
            for name in order:
                bursts[name].append(burst_run(trees[name], args.fork, work / f"burst-{name}-{i}.json"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {}
    for name in trees:
        rounds = [r for run in bursts[name] for r in run["rounds"]]
        summary[name] = {
            "wall_median_s": round(statistics.median(r["selfless"]["wall_s"] for r in rounds), 3),
            "wall_max_s": round(max(r["selfless"]["wall_s"] for r in rounds), 3),
            "floor_median_s": round(statistics.median(r["floor"]["wall_s"] for r in rounds), 3),
            "cpu_ms_per_call": round(statistics.median(r["selfless"]["cpu_ms_per_call"] for r in rounds), 2),
            "server_cpu_ms_per_call": round(
                statistics.median(r["selfless"]["server_cpu_ms_per_call"] for r in rounds), 2
            ),
            "walls_s": [r["selfless"]["wall_s"] for r in rounds],
        }
    summary["head_over_base"] = round(summary["head"]["wall_median_s"] / summary["base"]["wall_median_s"], 3)
    report["summary"] = summary
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report | {"bursts": bursts}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
