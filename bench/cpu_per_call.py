"""CPU per warm invoke, thread by thread: far steadier than throughput on a shared machine.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/cpu_per_call.py [--concurrency 16] [--duration 5] [--runs 3] [--src DIR]
                                           [--profile out.pstats]

Starts ``selfless serve`` (from ``--src``'s ``src/`` when given, so that another checkout of the project can be
measured the same way), deploys the benchmark's echo function (``bench/invoke.py``'s), warms it up, then for
each of ``--runs`` runs drives ``--concurrency`` keep-alive connections of SigV4-signed invokes for
``--duration`` seconds and reads, before and after, the user+system CPU time of every thread of the server
(``/proc/<pid>/task/*/stat``) and of every process below it (the environments). It prints, per call: the
server's main thread (the event loop), its other threads, and the environments; and the calls per second.

``--profile``: the server runs under cProfile instead (its main thread only), and the statistics of the
last run are written to the file when the server stops (a profiled server is ~2x slower: use the
proportions, not the times).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client import SignedRequest, SigV4Signer, Target, run_concurrent
from invoke import (
    ACCESS_KEY_ID,
    PAYLOAD,
    REGION,
    SECRET_ACCESS_KEY,
    WARM_FUNCTION,
    Floors,
    deploy,
    descendants,
    free_port,
    http_get,
    invoke_path,
    lambda_client,
    wait_until,
)

TICK = os.sysconf("SC_CLK_TCK")
PROFILED = """
import cProfile, signal, sys
from selfless.cli import main
profile = cProfile.Profile()
def stop(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
try:
    main(sys.argv[2:])
finally:
    profile.dump_stats(sys.argv[1])
"""


def cpu_ticks(stat_path: Path) -> int:
    """utime + stime of one task or process, in clock ticks (0 when it is gone)."""
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def snapshot(pid: int) -> tuple[int, int, dict[int, int]]:
    """(main thread, other threads, {environment pid: its CPU}) in ticks."""
    main = 0
    others = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        ticks = cpu_ticks(task / "stat")
        if int(task.name) == pid:
            main = ticks
        else:
            others += ticks
    return main, others, {child: cpu_ticks(Path(f"/proc/{child}/stat")) for child in descendants(pid)}


def client_cpu_s() -> float:
    """This process's own CPU time (the benchmark client), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


HEADER = f"{'run':>3} {'calls/s':>9} {'main µs':>9} {'threads µs':>10} {'envs µs':>9} {'client µs':>9}"


def report(run: int, rate: float, calls: int, main: int, threads: int, envs: int, client_s: float) -> None:
    """One line of figures per call (``main``, ``threads``, ``envs`` in clock ticks)."""
    per_call = 1e6 / TICK / calls
    print(
        f"{run:>3} {rate:>9,.0f} {main * per_call:>9.1f} {threads * per_call:>10.1f} {envs * per_call:>9.1f} "
        f"{client_s * 1e6 / calls:>9.1f}",
        flush=True,
    )


def measure_relay(args: argparse.Namespace) -> int:
    """The relay floor's front end (main thread) and its workers (as "envs"), measured like selfless."""
    floors = Floors()
    try:
        floors.start(args.concurrency)
        front, workers = floors.procs[1].pid, [proc.pid for proc in floors.procs[2:]]
        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        request = SignedRequest(signer, Target("relay", floors.relay_port, invoke_path(WARM_FUNCTION)), PAYLOAD)
        run_concurrent(request, args.concurrency, 2.0, PAYLOAD)
        print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(HEADER)
        for run in range(args.runs):
            before = snapshot(front), [cpu_ticks(Path(f"/proc/{pid}/stat")) for pid in workers], client_cpu_s()
            result = run_concurrent(request, args.concurrency, args.duration, PAYLOAD)
            after = snapshot(front), [cpu_ticks(Path(f"/proc/{pid}/stat")) for pid in workers], client_cpu_s()
            calls = len(result.samples_ns)
            if result.errors or not calls:
                raise RuntimeError(f"run {run}: {result.errors} errors: {result.error_examples}")
            envs = sum(after[1]) - sum(before[1])
            main, threads = after[0][0] - before[0][0], after[0][1] - before[0][1]
            report(run, result.rate, calls, main, threads, envs, after[2] - before[2])
    finally:
        floors.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run [5]")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", type=Path, help="a checkout of selfless to run instead of the installed one")
    p.add_argument("--profile", type=Path, help="run the server under cProfile; write its stats here")
    p.add_argument("--relay", action="store_true", help="measure bench/floors.py's relay the same way instead")
    args = p.parse_args(argv)
    if args.relay:
        return measure_relay(args)

    workdir = Path(tempfile.mkdtemp(prefix="selfless-cpu-"))
    env = dict(os.environ, SELFLESS_ACCESS_KEY_ID=ACCESS_KEY_ID, SELFLESS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve() / "src")
    port = free_port()
    serve = ["serve", "--port", str(port), "--data-dir", str(workdir / "data")]
    if args.profile is not None:
        command = [sys.executable, "-c", PROFILED, str(args.profile.resolve()), *serve]
    else:
        command = [sys.executable, "-c", "import sys; from selfless.cli import main; sys.exit(main())", *serve]
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"selfless exited: {(workdir / 'server.log').read_text()[-2000:]}")
            try:
                return http_get(port, "/health")[0] == 200
            except OSError:
                return False

        wait_until("GET /health == 200", healthy, 60.0)
        deploy(lambda_client(port), WARM_FUNCTION)
        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        request = SignedRequest(signer, Target("selfless", port, invoke_path(WARM_FUNCTION)), PAYLOAD)
        warm = run_concurrent(request, args.concurrency, 2.0, PAYLOAD)
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.error_examples}")
        print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print(HEADER)
        for run in range(args.runs):
            if args.profile is not None and run == args.runs - 1:
                proc.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
            before, client_before = snapshot(proc.pid), client_cpu_s()
            result = run_concurrent(request, args.concurrency, args.duration, PAYLOAD)
            after, client_after = snapshot(proc.pid), client_cpu_s()
            if args.profile is not None and run == args.runs - 1:
                proc.send_signal(signal.SIGUSR2)
            calls = len(result.samples_ns)
            if result.errors or not calls:
                raise RuntimeError(f"run {run}: {result.errors} errors: {result.error_examples}")
            envs = sum(t - before[2].get(pid, 0) for pid, t in after[2].items())
            report(
                run, result.rate, calls, after[0] - before[0], after[1] - before[1], envs, client_after - client_before
            )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if args.profile is not None else signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
