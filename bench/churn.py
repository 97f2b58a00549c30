"""Churn benchmark: the memory budget (SELFLESS_MEMORY_BUDGET_MB) under calls to 2,000 different functions.

Run by hand from the project root, as root (the Linux sandbox needs it), not as a test::

    .venv/bin/python bench/churn.py [--functions 2000] [--rounds 1] [--budget 2048] [--json out.json]

What it does
------------
1. **Floor, cold start with no budget** (its own server, SELFLESS_MEMORY_BUDGET_MB=0, stopped before the
   churn starts): one python3.12 function of ``--memory`` MB with the same tiny handler (returns its event).
   Before each of ``--cold`` samples UpdateFunctionConfiguration changes an environment variable (which
   retires its environments) and the script waits for LastUpdateStatus Successful; then ONE invoke is
   timed client-side on a connection opened before the clock starts, with ``X-Amz-Log-Type: Tail`` so that
   its REPORT line's ``Init Duration`` proves it started an environment. This is the same measurement as
   ``bench/invoke.py``'s cold start, at concurrency 1. The very first call on each fresh server (floor and
   churn alike) is timed and left out of every figure: right after ``GET /health`` first answers 200 it
   takes ~1 s (one-time work still going on in the background), against ~20 ms a few seconds later.
2. **Churn**: a server with SELFLESS_MEMORY_BUDGET_MB=``--budget`` (linux sandbox, no KSM, default keep-alive)
   and ``--functions`` python3.12 functions of ``--memory`` MB, created by ``--create-threads`` threads
   (each with its own boto3 client, each create waited on until Active and Successful). Then, for
   ``--rounds`` passes, every function is invoked once in a shuffled order (``--seed``) by
   ``--concurrency`` threads, each with one keep-alive raw connection (``bench/client.py``), every request
   signed before its clock starts and asking for the log tail (Init Duration = a new environment). With
   a budget of B MB and M MB functions at most B / M environments may be alive: almost every call is a
   cold start that first evicts the least recently used idle environment. Client-side latency p50 / p99,
   calls per second over the pass, answers by status (429 = TooManyRequests, with its error type).
3. **Sampled during the churn**, by two client-side threads:
   (a) every ``--metrics-interval`` s (1 s), ``selfless_environments`` from ``GET /metrics`` (the pool's
   live environments). Not every 0.1 s: rendering ``/metrics`` costs the server CPU that grows with the
   series of every function invoked; with 2,000 functions one scrape takes ~120 ms, so scraping every
   0.1 s kept the server busy ~90% of the time and halved the churn's rate (measured when scrapes were
   rendered on the event loop: 28 calls/s against 60). Each scrape's duration and the share of the
   churn's wall time spent scraping are reported, with a note when it passes 10%;
   (b) every ``--interval`` s (0.1 s), no server involved: the cgroup v1 memory controller's
   ``memory.usage_in_bytes`` of the server's environment parent
   ``/sys/fs/cgroup/memory/<server's cgroup>/<sandbox_cgroup from GET /health>`` (every environment's
   cgroup is below it, ``use_hierarchy`` is on), with ``total_rss`` / ``total_cache`` / ``total_shmem``
   from its ``memory.stat``, the number of environment cgroups below it (environments, plus spare
   children forked ahead, plus evicted ones not yet gone: an upper bound on live environments sampled
   10 times as often as (a), at no cost to the server), ``pids.current`` of the pids parent, and the
   server process's own RSS. ``memory.max_usage_in_bytes`` of the parent is reset (write 0) just before the
   churn and read at its end: the kernel's own peak, between samples included. Pages a child shares with
   the zygote it was forked from stay charged to the zygote (the server's cgroup, not this parent): this
   is what the environments added, not everything they map.

Checks: max ``selfless_environments`` x ``--memory`` <= budget (else the exit status is 1), 429 count
(expected 0: ``--concurrency`` 8 needs 8 environments, the budget allows 16), and real memory peak vs the
budget. There is no natural floor for a churn: its latency is read against the cold start of step 1 (at
concurrency 1; the churn runs ``--concurrency`` calls at once on however many CPUs the machine has). Every
wait is bounded; the servers are stopped with SIGTERM at the end whatever happens, leftovers reported.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import RawConnection, SignedRequest, SigV4Signer, Stats, Target, fresh_call
from invoke import (
    ACCESS_KEY_ID,
    INIT_RE,
    REGION,
    SECRET_ACCESS_KEY,
    SelflessServer,
    ServerStop,
    gc_paused,
    http_get,
    invoke_path,
    lambda_client,
    machine_info,
    shutdown_notes,
    wait_configured,
)
from provisioned import metric_sum, metrics, start_server
from sandbox import create

HANDLER = "def handler(event, context):\n    return event\n"
BODY = b"{}"
COLD = "churn-cold"
FIRST = "churn-first"
TAIL = {"X-Amz-Log-Type": "Tail"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
MiB = 1 << 20


def name_of(i: int) -> str:
    return f"churn-{i:05d}"


def log_of(answer_header: str | None) -> str:
    return base64.b64decode(answer_header or "").decode(errors="replace")


# ------------------------------------------------------------------------------------------------ floor


def first_cold_start(port: int, memory: int) -> float:
    """The server's very first environment (a function of its own), timed and left out of every figure:
    the first start on a fresh server also pays for one-time work (e.g. the first /tmp image of a size)."""
    create(lambda_client(port), FIRST, HANDLER, memory)
    signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
    request = SignedRequest(signer, Target("selfless", port, invoke_path(FIRST)), BODY, TAIL)
    elapsed_ns, answer = fresh_call(request)
    problem = answer.failed(BODY)
    if problem:
        raise RuntimeError(f"the first call on a fresh server failed: {problem}")
    return elapsed_ns / 1e6


def measure_cold(port: int, count: int, memory: int) -> dict[str, Any]:
    """``count`` cold starts of one function, each forced by a configuration change, at concurrency 1."""
    lam = lambda_client(port)
    create(lam, COLD, HANDLER, memory)
    signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
    request = SignedRequest(signer, Target("selfless", port, invoke_path(COLD)), BODY, TAIL)
    samples: list[int] = []
    init_ms: list[float] = []
    problems: list[str] = []
    for i in range(count):
        lam.update_function_configuration(
            FunctionName=COLD, Environment={"Variables": {"GENERATION": f"{time.time_ns()}{i}"}}
        )
        wait_configured(lam, COLD)
        with gc_paused():
            elapsed_ns, answer = fresh_call(request)
        problem = answer.failed(BODY)
        found = INIT_RE.search(log_of(answer.header("X-Amz-Log-Result")))
        if problem:
            problems.append(f"sample {i}: {problem}")
        elif found is None:
            problems.append(f"sample {i}: no Init Duration (not a cold start)")
        else:
            samples.append(elapsed_ns)
            init_ms.append(float(found.group(1)))
    return {"samples_ns": samples, "init_ms": init_ms, "problems": problems}


# ------------------------------------------------------------------------------------------------ churn


def create_all(port: int, count: int, threads: int, memory: int) -> float:
    """Create ``count`` functions with ``threads`` threads (a boto3 client each); seconds it took."""
    local = threading.local()
    done = 0
    lock = threading.Lock()
    started = time.monotonic()

    def one(i: int) -> None:
        nonlocal done
        lam = getattr(local, "lam", None)
        if lam is None:
            lam = local.lam = lambda_client(port)
        create(lam, name_of(i), HANDLER, memory)
        with lock:
            done += 1
            if done % 100 == 0 or done == count:
                rate = done / (time.monotonic() - started)
                print(f"created {done}/{count} functions ({rate:.0f}/s)", file=sys.stderr, flush=True)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(one, i) for i in range(count)]:
            future.result()
    return time.monotonic() - started


@dataclasses.dataclass
class CallResult:
    latency_ns: int
    status: int
    cold: bool
    error_type: str | None = None
    problem: str | None = None


def error_type(head_value: str | None, body: bytes) -> str | None:
    if head_value:
        return head_value.split(":", 1)[0]
    with contextlib.suppress(ValueError, AttributeError):
        doc = json.loads(body)
        return str(doc.get("Type") or doc.get("__type") or doc.get("errorType") or "") or None
    return None


class Invoker:
    """One raw keep-alive connection and one signer per thread; every connection is closed by ``close``."""

    def __init__(self, port: int):
        self._port = port
        self._local = threading.local()
        self._conns: list[RawConnection] = []
        self._lock = threading.Lock()
        self.reconnects = 0

    def _conn(self) -> RawConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._local.signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
            conn = self._local.conn = RawConnection(Target("selfless", self._port, "/"), timeout_s=120)
            self._local.used = False
            with self._lock:
                self._conns.append(conn)
        return conn

    def call(self, name: str) -> CallResult:
        conn = self._conn()
        request = SignedRequest(self._local.signer, Target("selfless", self._port, invoke_path(name)), BODY, TAIL)
        while True:
            prepared = request.prepare()
            try:
                t0 = time.perf_counter_ns()
                answer = conn.post(prepared)  # connects first if it is not connected
                t1 = time.perf_counter_ns()
                self._local.used = True
                break
            except OSError as exc:
                conn.close()
                if not self._local.used:
                    return CallResult(0, 0, False, None, f"{type(exc).__name__}: {exc}")
                # A keep-alive connection the server had closed: once more on a new one, as HTTP clients do.
                self._local.used = False
                with self._lock:
                    self.reconnects += 1
        cold = INIT_RE.search(log_of(answer.header("X-Amz-Log-Result"))) is not None
        if answer.status != 200:
            etype = error_type(answer.header("X-Amzn-ErrorType"), answer.body)
            return CallResult(t1 - t0, answer.status, cold, etype, f"status {answer.status}: {answer.body[:200]!r}")
        return CallResult(t1 - t0, answer.status, cold, None, answer.failed(BODY))

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()


# --------------------------------------------------------------------------------------------- sampling


@dataclasses.dataclass
class EnvSample:
    t: float
    environments: float
    scrape_ms: float


@dataclasses.dataclass
class MemSample:
    t: float
    usage_mib: float
    rss_mib: float
    cache_mib: float
    shmem_mib: float
    cgroups: int
    pids: int
    server_rss_mib: float


def memory_stat(path: Path) -> dict[str, int]:
    out = {}
    for line in (path / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def proc_status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cgroup_dirs(server_pid: int, name: str) -> tuple[Path, Path]:
    """The server's environment parents in the v1 memory and pids hierarchies."""
    paths = {}
    for line in Path(f"/proc/{server_pid}/cgroup").read_text().splitlines():
        _id, ctls, path = line.split(":", 2)
        for ctl in ctls.split(","):
            paths[ctl] = path
    if "memory" not in paths or not (CGROUP_ROOT / "memory").is_dir():
        raise RuntimeError("this benchmark reads the cgroup v1 memory controller, which is not mounted here")
    memory = CGROUP_ROOT / "memory" / paths["memory"].lstrip("/") / name
    pids = CGROUP_ROOT / "pids" / paths.get("pids", "/").lstrip("/") / name
    if not (memory / "memory.usage_in_bytes").is_file():
        raise RuntimeError(f"no environment memory cgroup at {memory}")
    return memory, pids


class Periodic(threading.Thread):
    """Calls ``take`` every ``interval_s`` (never catching up: a late sample delays the next) until stopped."""

    def __init__(self, name: str, take: Callable[[float], Any], interval_s: float):
        super().__init__(daemon=True, name=name)
        self.samples: list[Any] = []
        self.errors: list[str] = []
        self._take = take
        self._interval = interval_s
        self._halt = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self.samples.append(self._take(started - self.started_at))
            except (OSError, ValueError, RuntimeError) as exc:
                if len(self.errors) < 100:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._halt.wait(max(0.0, started + self._interval - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def env_sampler(port: int, interval_s: float) -> Periodic:
    def take(t: float) -> EnvSample:
        t0 = time.perf_counter()
        envs = metric_sum(metrics(port), "selfless_environments")
        return EnvSample(t, envs, (time.perf_counter() - t0) * 1000)

    return Periodic("environments", take, interval_s)


def memory_sampler(server_pid: int, memory_dir: Path, pids_dir: Path, interval_s: float) -> Periodic:
    def take(t: float) -> MemSample:
        usage = int((memory_dir / "memory.usage_in_bytes").read_text())
        stat = memory_stat(memory_dir)
        cgroups = sum(1 for e in os.scandir(memory_dir) if e.is_dir())
        pids = 0
        with contextlib.suppress(OSError, ValueError):
            pids = int((pids_dir / "pids.current").read_text())
        return MemSample(
            t,
            usage / MiB,
            stat.get("total_rss", 0) / MiB,
            stat.get("total_cache", 0) / MiB,
            stat.get("total_shmem", 0) / MiB,
            cgroups,
            pids,
            proc_status_kib(server_pid, "VmRSS") / 1024,
        )

    return Periodic("memory", take, interval_s)


def scrape_ms(port: int, count: int = 5) -> float:
    """The median time of ``count`` ``GET /metrics`` (nothing else running)."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        metrics(port)
        times.append((time.perf_counter() - t0) * 1000)
    return median(times)


def run_pass(invoker: Invoker, order: list[str], label: str, concurrency: int) -> dict[str, Any]:
    """Every name in ``order`` invoked once, ``concurrency`` at a time."""
    done = 0
    lock = threading.Lock()
    started = time.monotonic()

    def one(name: str) -> CallResult:
        nonlocal done
        result = invoker.call(name)
        with lock:
            done += 1
            if done % 250 == 0 or done == len(order):
                rate = done / (time.monotonic() - started)
                print(f"{label}: {done}/{len(order)} calls ({rate:.0f}/s)", file=sys.stderr, flush=True)
        return result

    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, order, timeout=600 + 2 * len(order)))
    finally:
        invoker.close()
    return {"elapsed_s": time.monotonic() - started, "results": results}


def churn(port: int, names: list[str], rounds: int, concurrency: int, seed: int) -> dict[str, Any]:
    invoker = Invoker(port)
    rng = random.Random(seed)
    passes = []
    for r in range(rounds):
        order = list(names)
        rng.shuffle(order)
        passes.append(run_pass(invoker, order, f"round {r}", concurrency))
    return {"passes": passes, "reconnects": invoker.reconnects}


# ----------------------------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else math.nan


def ms(stats: Stats, field: str) -> float:
    return float(getattr(stats, field)) / 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--functions", type=int, default=2000, help="functions created and churned through [2000]")
    p.add_argument("--rounds", type=int, default=1, help="passes over all functions, each shuffled [1]")
    p.add_argument("--budget", type=int, default=2048, help="SELFLESS_MEMORY_BUDGET_MB of the churn server [2048]")
    p.add_argument("--memory", type=int, default=128, help="MemorySize of every function [128]")
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight during the churn [8]")
    p.add_argument("--create-threads", type=int, default=8, help="threads creating the functions [8]")
    p.add_argument("--cold", type=int, default=30, help="cold starts of the no-budget floor [30]")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between cgroup samples [0.1]")
    p.add_argument("--metrics-interval", type=float, default=1.0, help="seconds between GET /metrics samples [1]")
    p.add_argument("--seed", type=int, default=1, help="seed of the shuffled call orders [1]")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    p.add_argument("--keep-log", type=Path, help="copy the churn server's log here before it is deleted")
    args = p.parse_args(argv)
    if not 1 <= args.functions <= 20_000 or not 1 <= args.rounds <= 50:
        p.error("keep --functions in [1, 20000] and --rounds in [1, 50]")
    if not 1 <= args.concurrency <= 256 or not 1 <= args.create_threads <= 64 or not 1 <= args.cold <= 1000:
        p.error("keep --concurrency in [1, 256], --create-threads in [1, 64], --cold in [1, 1000]")
    if args.budget < args.memory or not 128 <= args.memory <= 10240:
        p.error("--budget must hold one function; --memory in [128, 10240]")
    if not 0.01 <= args.interval <= 10 or not 0.01 <= args.metrics_interval <= 60:
        p.error("--interval in [0.01, 10], --metrics-interval in [0.01, 60]")
    return args


def stop_and_log(server: SelflessServer, keep: Path | None = None) -> tuple[ServerStop, str]:
    stopped = server.stop()
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    if keep is not None:
        shutil.copyfile(server.log_path, keep)
    return stopped, text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the linux sandbox needs root", file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"machine : {machine['cpu']}, nproc {machine['nproc']}; load average {' '.join(machine['loadavg_at_start'])}")
    print(f"selfless: {machine['selfless_commit']}")
    allowed = args.budget // args.memory
    print(
        f"plan    : {args.functions} functions x {args.rounds} round(s) of {args.memory} MB, budget {args.budget} MB "
        f"(<= {allowed} environments), concurrency {args.concurrency}, floor {args.cold} cold starts",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="selfless-churn-"))
    stops: dict[str, ServerStop] = {}
    logs: dict[str, str] = {}
    server: SelflessServer | None = None
    samplers: list[Periodic] = []
    result: dict[str, Any] = {}
    try:
        print("floor: cold starts with no budget ...", file=sys.stderr, flush=True)
        server = start_server(work, "floor", {"SELFLESS_SANDBOX": "linux", "SELFLESS_MEMORY_BUDGET_MB": "0"})
        try:
            first_ms = {"floor": first_cold_start(server.port, args.memory)}
            cold = measure_cold(server.port, args.cold, args.memory)
        finally:
            stops["floor"], logs["floor"] = stop_and_log(server)
            server = None

        env = {"SELFLESS_SANDBOX": "linux", "SELFLESS_MEMORY_BUDGET_MB": str(args.budget)}
        server = start_server(work, "churn", env)
        health = json.loads(http_get(server.port, "/health")[1])
        memory_dir, pids_dir = cgroup_dirs(server.proc.pid, health["sandbox_cgroup"])
        print(f"churn server :{server.port}, environments under {memory_dir}", file=sys.stderr, flush=True)
        first_ms["churn"] = first_cold_start(server.port, args.memory)
        create_s = create_all(server.port, args.functions, args.create_threads, args.memory)
        names = [name_of(i) for i in range(args.functions)]
        max_usage_before = int((memory_dir / "memory.max_usage_in_bytes").read_text())
        (memory_dir / "memory.max_usage_in_bytes").write_text("0")
        before = metrics(server.port)
        samplers = [
            env_sampler(server.port, args.metrics_interval),
            memory_sampler(server.proc.pid, memory_dir, pids_dir, args.interval),
        ]
        for sampler in samplers:
            sampler.start()
        result = churn(server.port, names, args.rounds, args.concurrency, args.seed)
        time.sleep(1.0)  # a second more of samples: what the churn left running
        for sampler in samplers:
            sampler.stop()
        after = metrics(server.port)
        idle_scrape_ms = scrape_ms(server.port)
        max_usage = int((memory_dir / "memory.max_usage_in_bytes").read_text())
        stat_end = memory_stat(memory_dir)
        server_hwm_mib = proc_status_kib(server.proc.pid, "VmHWM") / 1024
    except Exception:
        if server is not None:
            print(server.log_tail(40), file=sys.stderr)
        raise
    finally:
        try:
            for sampler in samplers:
                if sampler.is_alive():
                    sampler.stop()
        finally:
            if server is not None:
                stops["churn"], logs["churn"] = stop_and_log(server, args.keep_log)
            shutil.rmtree(work, ignore_errors=True)

    # -- figures
    cold_stats = Stats.of(cold["samples_ns"])
    all_results = [c for p in result["passes"] for c in p["results"]]
    ok = [c for c in all_results if c.problem is None]
    lat = Stats.of([c.latency_ns for c in ok])
    lat_cold = Stats.of([c.latency_ns for c in ok if c.cold])
    lat_warm = Stats.of([c.latency_ns for c in ok if not c.cold])
    elapsed = sum(p["elapsed_s"] for p in result["passes"])
    statuses = collections.Counter(c.status for c in all_results)
    throttled = [c for c in all_results if c.status == 429]
    throttle_types = collections.Counter(c.error_type for c in throttled)
    other_problems = [c.problem for c in all_results if c.problem and c.status != 429]
    env_samples: list[EnvSample] = samplers[0].samples
    samples: list[MemSample] = samplers[1].samples
    max_envs = max((s.environments for s in env_samples), default=math.nan)
    max_cgroups = max((s.cgroups for s in samples), default=0)
    max_sampled = max((s.usage_mib for s in samples), default=math.nan)
    max_rss = max((s.rss_mib for s in samples), default=math.nan)
    scrape = sorted(s.scrape_ms for s in env_samples)
    scrape_share = sum(scrape) / 1000 / elapsed if elapsed else math.nan
    envs_ok = max_envs * args.memory <= args.budget
    throttles_metric = {
        k: v for k, v in after.items() if k.startswith("selfless_throttles_total") and v != before.get(k, 0.0)
    }
    cold_starts = metric_sum(after, "selfless_cold_starts_total") - metric_sum(before, "selfless_cold_starts_total")

    def row(label: str, value: str, note: str = "") -> str:
        return f"{label:<46} {value:>16}  {note}".rstrip()

    print()
    lines = [
        row("functions created", f"{args.functions}", f"in {create_s:.1f} s ({args.functions / create_s:.0f}/s)"),
        row("calls", f"{len(all_results)}", f"{args.rounds} round(s), concurrency {args.concurrency}"),
        row("calls per second", f"{len(all_results) / elapsed:,.1f}", f"over {elapsed:.1f} s"),
        row("latency p50, all calls", f"{ms(lat, 'p50_us'):,.2f} ms", f"p99 {ms(lat, 'p99_us'):,.2f} ms"),
        row(
            "latency p50, cold (Init Duration)",
            f"{ms(lat_cold, 'p50_us'):,.2f} ms",
            f"p99 {ms(lat_cold, 'p99_us'):,.2f} ms, n={lat_cold.count}",
        ),
        row(
            "latency p50, warm (no Init Duration)",
            f"{ms(lat_warm, 'p50_us'):,.2f} ms",
            f"p99 {ms(lat_warm, 'p99_us'):,.2f} ms, n={lat_warm.count}",
        ),
        row(
            "floor: cold start p50, no budget, c=1",
            f"{ms(cold_stats, 'p50_us'):,.2f} ms",
            f"p99 {ms(cold_stats, 'p99_us'):,.2f} ms, n={cold_stats.count}; "
            f"churn p50 / floor p50 = {lat.p50_us / cold_stats.p50_us:.2f}x",
        ),
        row(
            f"max selfless_environments (/{args.metrics_interval:g} s)",
            f"{max_envs:g}",
            f"x {args.memory} MB = {max_envs * args.memory:g} MB vs budget {args.budget} MB: "
            + ("within" if envs_ok else "EXCEEDED"),
        ),
        row(
            "max environment cgroups (incl. spares, dying)",
            f"{max_cgroups}",
            f"x {args.memory} MB = {max_cgroups * args.memory} MB",
        ),
        row(
            "throttles (429)",
            f"{len(throttled)}",
            (", ".join(f"{k}: {v}" for k, v in throttle_types.items()) or "none")
            + f"; /metrics: {throttles_metric or 'none'}",
        ),
        row(
            "real memory peak (max_usage_in_bytes)",
            f"{max_usage / MiB:,.1f} MiB",
            f"{100 * max_usage / MiB / args.budget:.1f}% of the budget; sampled max {max_sampled:,.1f} MiB "
            f"(total_rss max {max_rss:,.1f} MiB)",
        ),
    ]
    print("\n".join(lines))
    print()
    notes = [
        f"statuses: {dict(statuses)}; cold starts by /metrics {cold_starts:g}, by Init Duration "
        f"{sum(1 for c in all_results if c.cold)}; keep-alive reconnects {result['reconnects']}",
        f"samples: {len(env_samples)} of /metrics (every {args.metrics_interval:g} s), {len(samples)} of the "
        f"cgroups (every {args.interval:g} s), {len(samplers[0].errors) + len(samplers[1].errors)} failed"
        + (f", e.g. {(samplers[0].errors + samplers[1].errors)[:2]}" if samplers[0].errors + samplers[1].errors else "")
        + f"; /metrics scrape during the churn p50 {median(scrape):.1f} ms, max {max(scrape, default=math.nan):.1f} "
        f"ms (scraping took {100 * scrape_share:.0f}% of the churn's wall time); on the idle server after it, with "
        f"{args.functions + 1} functions' series, {idle_scrape_ms:.1f} ms",
        f"memory at end: usage {samples[-1].usage_mib if samples else math.nan:.1f} MiB, total_rss "
        f"{stat_end.get('total_rss', 0) / MiB:.1f} MiB, total_cache {stat_end.get('total_cache', 0) / MiB:.1f} MiB, "
        f"total_shmem {stat_end.get('total_shmem', 0) / MiB:.1f} MiB; max_usage before the reset "
        f"{max_usage_before / MiB:.1f} MiB; pids.current max {max((s.pids for s in samples), default=0)}",
        f"server process: RSS {samples[-1].server_rss_mib if samples else math.nan:.1f} MiB at the end, "
        f"high-water mark {server_hwm_mib:.1f} MiB",
        f"floor: {len(cold['problems'])} problems"
        + (f", e.g. {cold['problems'][:2]}" if cold["problems"] else "")
        + f"; Init Duration p50 {median(cold['init_ms']):.2f} ms; left out of the figures: the first call on "
        f"each fresh server (a cold start), {first_ms['floor']:.1f} ms (floor), {first_ms['churn']:.1f} ms (churn)",
    ]
    if scrape_share > 0.1:
        notes.append(
            f"NOTE: the /metrics sampler kept the server busy {100 * scrape_share:.0f}% of the time (rendering "
            "costs the server CPU): the churn's rate and latency are lower and higher than without it; compare a run "
            "with a larger --metrics-interval"
        )
    if other_problems:
        notes.append(f"{len(other_problems)} failed calls other than 429, e.g. {other_problems[:3]}")
    for which, stopped in stops.items():
        notes += shutdown_notes(stopped, logs.get(which, ""), which)
    print("\n".join(notes))

    if args.json:
        out = {
            "machine": machine,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "summary": lines,
            "notes": notes,
            "create_s": create_s,
            "calls": len(all_results),
            "calls_per_s": len(all_results) / elapsed,
            "latency": dataclasses.asdict(lat),
            "latency_cold": dataclasses.asdict(lat_cold),
            "latency_warm": dataclasses.asdict(lat_warm),
            "floor_cold_start": dataclasses.asdict(cold_stats),
            "floor_init_ms": cold["init_ms"],
            "floor_samples_ms": [x / 1e6 for x in cold["samples_ns"]],
            "first_call_of_a_fresh_server_ms": first_ms,
            "max_environments": max_envs,
            "max_environment_cgroups": max_cgroups,
            "budget_mb": args.budget,
            "environments_within_budget": envs_ok,
            "throttles": len(throttled),
            "throttle_types": dict(throttle_types),
            "statuses": dict(statuses),
            "max_usage_mib": max_usage / MiB,
            "max_sampled_usage_mib": max_sampled,
            "memory_stat_end": stat_end,
            "idle_scrape_ms": idle_scrape_ms,
            "environment_samples": [dataclasses.asdict(s) for s in env_samples],
            "memory_samples": [dataclasses.asdict(s) for s in samples],
            "shutdown": {k: dataclasses.asdict(v) for k, v in stops.items()},
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if envs_ok else 1


if __name__ == "__main__":
    sys.exit(main())
