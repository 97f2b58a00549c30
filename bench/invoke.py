"""Invoke benchmark: selfless's warm latency, throughput and cold start, each next to a floor of the same run.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/invoke.py [--warm 2000] [--duration 5] [--cold 30] [--json out.json]

What it does
------------
1. Starts ``selfless serve`` on a free 127.0.0.1 port with a temporary data dir and fixed
   SELFLESS_ACCESS_KEY_ID / SELFLESS_SECRET_ACCESS_KEY, waits for ``GET /health`` = 200, and deploys two
   python3.11 functions with boto3 (one stdlib-only module, ``app.handler`` returns its event): ``bench-warm``
   and ``bench-cold``. The server is stopped with SIGTERM at the end whatever happens, any process it left
   behind is reported (and killed), and the temporary directory is removed.
2. Starts the floors (``bench/floors.py``): an *echo* server (one uvloop process answering with the body), and
   a *relay* (a uvloop front end handing each body to one of ``--relay-workers`` worker processes over a
   loopback runtime-API next/response loop: the cheapest design where the function runs in another process).
3. **Warm, concurrency 1**: after ``--warmup`` calls per target, ``--warm`` sequential invokes per target on
   one persistent keep-alive connection (TCP_NODELAY), in ``--rounds`` blocks rotating echo -> relay ->
   selfless so that the machine's noise falls on all three alike. Two clients (``--c1-client``): *raw*, the
   prepared request in one ``sendall`` and the answer split by hand (the headline figures: the echo floor
   is then ~25 us), and *http.client* (``HTTPConnection``, which adds ~80 us per call here, mostly parsing
   headers, and so flattens every ratio). Every request carries a SigV4 signature from the direct HMAC
   signer in ``bench/client.py``, computed before the clock starts; the floors get the same signed request
   (and do not check it). p50 / p99 / mean of the client-side time from sending the request to having read
   the whole answer.
4. **Warm, concurrency 16**: ``--concurrency`` keep-alive connections from one uvloop loop with a
   hand-parsed protocol client, each sending its next request when the last is answered, for ``--duration``
   seconds per target (in ``--rounds`` slices, rotated like 3., after one second of unrecorded warm-up that
   lets selfless start its environments). Requests per second, and p50 / p99 per request.
5. **Warm, spaced** (``--spaced``, ``--gap-ms``): sequential invokes on one connection (raw client), each
   after a pause longer than the freeze delay (SELFLESS_FREEZE_AFTER_MS), so that every call finds its
   environment frozen and pays the thaw; the floors get the same pauses (their workers sleep in the
   meantime, as an idle environment would). ``--unfrozen-too`` starts a second server with freezing off
   (SELFLESS_FREEZE_AFTER_MS=off) and measures it in the same rounds as the first, for 3. and 5.: the cost
   of freezing (a thaw, and the timer every call arms) next to the same noise.
6. **Cold start**: before each of ``--cold`` samples, UpdateFunctionConfiguration changes an environment
   variable of ``bench-cold`` (which retires its environments) and the script waits for LastUpdateStatus
   Successful; then ONE invoke is timed client-side on a connection opened before the clock starts. The
   request asks for ``X-Amz-Log-Type: Tail`` so that the REPORT line's ``Init Duration`` shows which samples
   really started an environment. Its floor, interleaved sample by sample: spawn-to-exit of
   ``python -c "import json, os; os._exit(0)"`` from a clean ``python3.11 -m venv`` (no site-packages, the
   python3.11 selfless itself would pick: the first on PATH that is not a pyenv shim).

The team's reference relay floor (``../shared/floors/relay_floor.py``, started as its README says, when this
checkout sits beside it) is timed with the sequential figures (3. and 5.). It serves one request at a time
(one worker, and one slot for the waiting client: a second request in flight overwrites the first's, and
the floor fails), so the concurrent figure (4.) is set next to ``bench/floors.py``'s relay, the same design
with a worker per connection.

Ratios are selfless / floor. Targets: warm c=1 p50 <= 2.5x the shared relay floor, c=16 throughput >= 0.6x the
relay's, cold p50 <= 1.5x a fresh interpreter.
Every request goes to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import gc
import http.client
import io
import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from client import (
    Connection,
    HttpClientConnection,
    Latencies,
    RawConnection,
    SignedRequest,
    SigV4Signer,
    Stats,
    Target,
    fresh_call,
    run_concurrent,
    run_sequential,
)

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
FLOORS = BENCH_DIR / "floors.py"
HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "AKIDSELFLESSBENCH001"
SECRET_ACCESS_KEY = "selfless-bench-secret-not-a-real-key-0001"
WARM_FUNCTION = "bench-warm"
COLD_FUNCTION = "bench-cold"
ROLE = "arn:aws:iam::000000000000:role/selfless-bench"
HANDLER_SOURCE = '''"""Benchmark handler: returns the event it was given."""


def handler(event, context):
    return event
'''
# Sent in json.dumps's own form, so an answer that went through json.loads / json.dumps is byte-identical.
PAYLOAD = json.dumps({"bench": "selfless", "n": 1, "items": [1, 2, 3], "note": "warm payload"}).encode()
COLD_FLOOR_CODE = "import json, os; os._exit(0)"
FRESH_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
STOP_TIMEOUT_S = 45.0  # selfless gives in-flight invocations 30 s, then environments 2 s, on SIGTERM


def invoke_path(function: str) -> str:
    return f"/2015-03-31/functions/{function}/invocations"


# ---------------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        commit = out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "loadavg_at_start": load,
        "selfless_commit": commit,
    }


# -------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def read_ready_line(proc: subprocess.Popen[str], timeout_s: float) -> list[int]:
    """The ports from a floor server's ``ready PORT...`` line."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise RuntimeError(f"{proc.args} did not say it was ready within {timeout_s} s")
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        raise RuntimeError(f"{proc.args} did not start: {line!r} (exit code {proc.poll()})")
    return [int(p) for p in line[1:]]


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc/*/task/*/children), bounded by what /proc lists."""
    found: set[int] = set()
    todo = [pid]
    while todo and len(found) < 100_000:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        todo.append(int(child))
    return found


def alive(pid: int) -> str | None:
    """The command line of ``pid`` if it exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return None


def stop_process(proc: subprocess.Popen[Any], timeout_s: float) -> tuple[int | None, float, bool]:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL: (exit code, seconds to exit, killed)."""
    if proc.poll() is not None:
        return proc.returncode, 0.0, False
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
        return proc.returncode, time.monotonic() - started, False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return proc.returncode, time.monotonic() - started, True


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


@dataclasses.dataclass
class ServerStop:
    exit_code: int | None
    seconds: float
    killed: bool
    leftovers: list[str]


class SelflessServer:
    """One ``selfless serve`` child with its output in a log file."""

    def __init__(self, executable: str, data_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_path = log_path
        env = dict(os.environ)
        env.update(SELFLESS_ACCESS_KEY_ID=ACCESS_KEY_ID, SELFLESS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
        env.update(extra_env or {})
        self._log = open(log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [executable, "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"selfless exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return http_get(self.port, "/health")[0] == 200
            except OSError:
                return False

        wait_until("GET /health == 200", healthy, timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> ServerStop:
        family = descendants(self.proc.pid) if self.proc.poll() is None else set()
        code, seconds, killed = stop_process(self.proc, STOP_TIMEOUT_S)
        self._log.close()
        leftovers = []
        time.sleep(0.2)
        for pid in sorted(family):
            cmdline = alive(pid)
            if cmdline is not None:
                leftovers.append(f"pid {pid}: {cmdline}")
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)  # started (indirectly) by this benchmark
        return ServerStop(code, seconds, killed, leftovers)


class Floors:
    """The echo server, the relay front end and its workers."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.echo_port = self.relay_port = self.runtime_port = 0

    def start(self, workers: int) -> None:
        python = sys.executable
        echo = self._start([python, str(FLOORS), "echo", "0"])
        (self.echo_port,) = read_ready_line(echo, 30)
        relay = self._start([python, str(FLOORS), "relay", "0", "0"])
        self.relay_port, self.runtime_port = read_ready_line(relay, 30)
        for _ in range(workers):
            self._start([python, str(FLOORS), "relay-worker", str(self.runtime_port)])

        def all_idle() -> bool:
            status, body = http_get(self.relay_port, "/health")
            return status == 200 and json.loads(body)["idle"] == workers

        wait_until(f"{workers} relay workers", all_idle, 60)

    def _start(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc, 5)
            if proc.stdout is not None:
                proc.stdout.close()


def clean_python(venv_dir: Path) -> tuple[Path, str]:
    """A ``python3.11 -m venv`` (no pip, no site-packages) from the python3.11 selfless would run."""
    base = None
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry) / "python3.11"
        if "shims" not in entry and candidate.is_file() and os.access(candidate, os.X_OK):
            base = candidate
            break
    if base is None:
        raise RuntimeError("no python3.11 on PATH (pyenv shims skipped)")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv_dir)], check=True, timeout=120)
    python = venv_dir / "bin" / "python"
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    return python, f"{base} (Python {version})"


# ---------------------------------------------------------------------------------------------- deploy


def handler_zip(source: str = HANDLER_SOURCE) -> bytes:
    """A zip of ``app.py`` holding ``source`` (the echo handler by default)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("app.py", date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, source)
    return buf.getvalue()


def lambda_client(port: int) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=f"http://{HOST}:{port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=120),
    )


def wait_configured(lam: Any, name: str, timeout_s: float = 60.0) -> None:
    """Until State is Active and LastUpdateStatus is Successful (a Failed one raises)."""

    def ready() -> bool:
        conf = lam.get_function_configuration(FunctionName=name)
        if conf.get("State") == "Failed" or conf.get("LastUpdateStatus") == "Failed":
            raise RuntimeError(f"{name}: {conf.get('StateReason') or conf.get('LastUpdateStatusReason')}")
        updated = conf.get("LastUpdateStatus", "Successful") == "Successful"
        return bool(conf.get("State") == "Active" and updated)

    wait_until(f"{name} to be Active and Successful", ready, timeout_s, interval_s=0.005)


def deploy(lam: Any, name: str) -> None:
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": handler_zip()},
        Timeout=30,
        # One full vCPU: the Linux sandbox gives 128 MB functions 7% of one, which would measure the quota.
        MemorySize=1769,
    )
    wait_configured(lam, name)


# ---------------------------------------------------------------------------------------------- measure


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No collector pauses inside a timed loop (what the loop allocates is freed by reference counting)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


CLIENTS: dict[str, type[Connection]] = {"raw": RawConnection, "http.client": HttpClientConnection}


def measure_sequential(
    requests: dict[str, SignedRequest], clients: list[str], count: int, warmup: int, rounds: int
) -> dict[str, dict[str, Latencies]]:
    """Concurrency 1 on one persistent connection per (client, target): results[client][target]. Every
    ``count // rounds`` invokes the next (client, target) takes over, so noise falls on all alike."""
    conns = {(c, t): CLIENTS[c](r.target) for c in clients for t, r in requests.items()}
    results = {c: {t: Latencies() for t in requests} for c in clients}
    try:
        for (client, name), conn in conns.items():
            conn.connect()
            warm = run_sequential(conn, requests[name], warmup, PAYLOAD)
            if warm.errors:
                raise RuntimeError(f"{name} ({client}): warm-up failed: {warm.error_examples}")
        per_round = [count // rounds + (1 if i < count % rounds else 0) for i in range(rounds)]
        with gc_paused():
            for n in per_round:
                for (client, name), conn in conns.items():
                    results[client][name].extend(run_sequential(conn, requests[name], n, PAYLOAD))
    finally:
        for conn in conns.values():
            conn.close()
    return results


def measure_spaced(requests: dict[str, SignedRequest], count: int, gap_s: float) -> dict[str, Latencies]:
    """``count`` invokes per target, each ``gap_s`` after the last answer (rotated: one per target in turn,
    so that each target's calls are ``gap_s`` or more apart)."""
    conns = {t: RawConnection(r.target) for t, r in requests.items()}
    results = {t: Latencies() for t in requests}
    try:
        for name, conn in conns.items():
            conn.connect()
            if run_sequential(conn, requests[name], 5, PAYLOAD).errors:
                raise RuntimeError(f"{name}: spaced warm-up failed")
        with gc_paused():
            for _ in range(count):
                for name, conn in conns.items():
                    time.sleep(gap_s / len(conns))
                    results[name].extend(run_sequential(conn, requests[name], 1, PAYLOAD))
    finally:
        for conn in conns.values():
            conn.close()
    return results


def measure_concurrent(
    requests: dict[str, SignedRequest], concurrency: int, duration_s: float, rounds: int
) -> dict[str, Latencies]:
    """``concurrency`` connections per target for ``duration_s`` in all, in ``rounds`` rotated slices."""
    results = {name: Latencies() for name in requests}
    for name, request in requests.items():
        warm = run_concurrent(request, concurrency, 1.0, PAYLOAD)
        if warm.errors:
            raise RuntimeError(f"{name}: c={concurrency} warm-up failed: {warm.error_examples}")
    with gc_paused():
        for _ in range(rounds):
            for name, request in requests.items():
                results[name].extend(run_concurrent(request, concurrency, duration_s / rounds, PAYLOAD))
    return results


INIT_RE = re.compile(r"Init Duration: ([0-9.]+) ms")
DURATION_RE = re.compile(r"\tDuration: ([0-9.]+) ms")


@dataclasses.dataclass
class ColdResult:
    invoke: Latencies
    fresh: Latencies
    init_ms: list[float]
    duration_ms: list[float]
    without_init: int
    update_wait_ms: list[float]


def measure_cold(lam: Any, request: SignedRequest, python: Path, count: int) -> ColdResult:
    """Each sample: retire the function's environments (a configuration change), wait until the update
    is Successful, then time one invoke on a connection opened beforehand; then one fresh interpreter."""
    result = ColdResult(Latencies(), Latencies(), [], [], 0, [])
    fresh_argv = [str(python), "-c", COLD_FLOOR_CODE]
    clock = time.perf_counter_ns
    generation = f"{time.time_ns()}"
    for i in range(count):
        t_update = time.perf_counter()
        lam.update_function_configuration(
            FunctionName=COLD_FUNCTION, Environment={"Variables": {"BENCH_GENERATION": f"{generation}-{i}"}}
        )
        wait_configured(lam, COLD_FUNCTION)
        result.update_wait_ms.append((time.perf_counter() - t_update) * 1000)
        try:
            with gc_paused():
                elapsed_ns, answer = fresh_call(request)
        except OSError as exc:
            result.invoke.error(f"sample {i}: {type(exc).__name__}: {exc}")
            continue
        problem = answer.failed(PAYLOAD)
        if problem:
            result.invoke.error(f"sample {i}: {problem}")
        else:
            result.invoke.samples_ns.append(elapsed_ns)
            log = base64.b64decode(answer.header("X-Amz-Log-Result") or "").decode(errors="replace")
            init = INIT_RE.search(log)
            if init:
                result.init_ms.append(float(init.group(1)))
            else:
                result.without_init += 1
            duration = DURATION_RE.search(log)
            if duration:
                result.duration_ms.append(float(duration.group(1)))
        with gc_paused():
            t0 = clock()
            code = subprocess.run(fresh_argv, stdin=subprocess.DEVNULL, env=FRESH_ENV, timeout=30).returncode
            t1 = clock()
        if code == 0:
            result.fresh.samples_ns.append(t1 - t0)
        else:
            result.fresh.error(f"fresh interpreter exited {code}")
    return result


# ---------------------------------------------------------------------------------------------- report


@dataclasses.dataclass
class Row:
    figure: str
    value: float
    unit: str  # "us", "ms" or "/s"
    floors: list[tuple[str, float]]
    target: float | None = None  # a bound on value / floors[0]: an upper one, or a lower one with at_least
    at_least: bool = False

    def ratios(self) -> list[float]:
        return [self.value / f if f else math.nan for _, f in self.floors]


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.1f} µs"


def render(rows: list[Row]) -> str:
    width = max([26, *(len(row.figure) for row in rows)])
    header = f"{'figure':<{width}} {'selfless':>12}   {'floor':<34} {'floor value':>12} {'ratio':>8}  target"
    lines = [header, "-" * len(header)]
    for row in rows:
        for i, ((floor_name, floor_value), ratio) in enumerate(zip(row.floors, row.ratios(), strict=True)):
            left = f"{row.figure:<{width}} {fmt(row.value, row.unit):>12}" if i == 0 else " " * (width + 13)
            target = ""
            if i == 0 and row.target is not None:
                met = ratio >= row.target if row.at_least else ratio <= row.target
                target = f"{'>=' if row.at_least else '<='} {row.target:g}x {'met' if met else 'MISSED'}"
            floor = f"{floor_name:<34} {fmt(floor_value, row.unit):>12}"
            lines.append(f"{left}   {floor} {ratio:>7.2f}x  {target}".rstrip())
    return "\n".join(lines)


def stats_dict(lat: Latencies) -> dict[str, Any]:
    return {
        **dataclasses.asdict(Stats.of(lat.samples_ns)),
        "errors": lat.errors,
        "error_examples": lat.error_examples,
    }


RELAY_FLOOR = "relay (front end + worker)"
SHARED_RELAY = "shared relay floor (../shared/floors)"
SHARED_RELAY_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "floors" / "relay_floor.py"
UNFROZEN = "selfless-unfrozen"
ECHO_FLOOR = "echo (one process)"
FRESH_FLOOR = "fresh interpreter (clean venv)"


def build_rows(
    warm: dict[str, dict[str, Latencies]],
    conc: dict[str, Latencies],
    cold: ColdResult,
    concurrency: int,
    spaced: dict[str, Latencies] | None = None,
    gap_ms: float = 0.0,
) -> list[Row]:
    c = {k: Stats.of(v.samples_ns) for k, v in conc.items()}

    def row(figure: str, of: dict[str, Stats], field: str, target: float | None = None) -> Row:
        floors = [(RELAY_FLOOR, getattr(of["relay"], field)), (ECHO_FLOOR, getattr(of["echo"], field))]
        if SHARED_RELAY in of:
            floors.insert(0, (SHARED_RELAY, getattr(of[SHARED_RELAY], field)))
        return Row(figure, getattr(of["selfless"], field), "us", floors, target)

    def unfrozen(figure: str, of: dict[str, Stats], field: str) -> list[Row]:
        """The same figure of the server with freezing off, if it was measured."""
        if UNFROZEN not in of:
            return []
        floors = [
            (RELAY_FLOOR, getattr(of["relay"], field)),
            ("selfless (freezing on)", getattr(of["selfless"], field)),
        ]
        return [Row(f"{figure}, freezing off", getattr(of[UNFROZEN], field), "us", floors)]

    rates = [(RELAY_FLOOR, conc["relay"].rate), (ECHO_FLOOR, conc["echo"].rate)]
    ci, cf = Stats.of(cold.invoke.samples_ns), Stats.of(cold.fresh.samples_ns)
    rows: list[Row] = []
    if "raw" in warm:
        w = {k: Stats.of(v.samples_ns) for k, v in warm["raw"].items()}
        rows += [row("warm c=1 p50", w, "p50_us", 2.5), *unfrozen("warm c=1 p50", w, "p50_us")]
        rows += [row("warm c=1 p99", w, "p99_us"), row("warm c=1 mean", w, "mean_us")]
    if "http.client" in warm:
        h = {k: Stats.of(v.samples_ns) for k, v in warm["http.client"].items()}
        target = None if "raw" in warm else 3.0
        rows += [row("warm c=1 p50 http.client", h, "p50_us", target)]
        rows += [row("warm c=1 p99 http.client", h, "p99_us")]
    if spaced:
        s = {k: Stats.of(v.samples_ns) for k, v in spaced.items()}
        rows += [
            row(f"warm {gap_ms:g} ms apart p50", s, "p50_us"),
            *unfrozen(f"warm {gap_ms:g} ms apart p50", s, "p50_us"),
        ]
        rows += [row(f"warm {gap_ms:g} ms apart p99", s, "p99_us")]
    rows += [
        Row(f"warm c={concurrency} throughput", conc["selfless"].rate, "/s", rates, 0.6, at_least=True),
        row(f"warm c={concurrency} p50", c, "p50_us"),
        row(f"warm c={concurrency} p99", c, "p99_us"),
        Row("cold start p50", ci.p50_us / 1000, "ms", [(FRESH_FLOOR, cf.p50_us / 1000)], 1.5),
        Row("cold start p99", ci.p99_us / 1000, "ms", [(FRESH_FLOOR, cf.p99_us / 1000)]),
    ]
    return rows


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warm", type=int, default=2000, help="sequential invokes per target at c=1 [2000]")
    p.add_argument("--warmup", type=int, default=200, help="unrecorded invokes per target first [200]")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per target at c=16 [5]")
    p.add_argument("--concurrency", type=int, default=16, help="connections for throughput [16]")
    p.add_argument("--cold", type=int, default=30, help="cold-start samples (and fresh interpreters) [30]")
    p.add_argument("--rounds", type=int, default=4, help="blocks the warm figures are rotated in [4]")
    p.add_argument("--spaced", type=int, default=200, help="invokes per target with a pause before each [200]")
    p.add_argument("--gap-ms", type=float, default=50.0, help="the pause before each spaced invoke [50]")
    p.add_argument("--unfrozen-too", action="store_true", help="also a server with freezing off, same rounds")
    p.add_argument("--relay-workers", type=int, default=16, help="worker processes of the relay floor [16]")
    p.add_argument(
        "--c1-client",
        choices=("raw", "http.client", "both"),
        default="both",
        help="client for the c=1 figures: a raw keep-alive socket, http.client, or both [both]",
    )
    p.add_argument("--selfless", default=str(Path(sys.executable).parent / "selfless"), help="the CLI")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    p.add_argument("--keep-log", type=Path, help="copy the server's log here before it is deleted")
    args = p.parse_args(argv)
    for name in ("warm", "concurrency", "cold", "rounds", "relay_workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.duration <= 600 or args.warm > 1_000_000 or args.cold > 10_000:
        p.error("keep --duration in (0, 600], --warm <= 1e6 and --cold <= 1e4")
    if not 0 <= args.spaced <= 10_000 or not 0 < args.gap_ms <= 10_000:
        p.error("keep --spaced in [0, 1e4] and --gap-ms in (0, 1e4]")
    return args


def server_log_findings(text: str, limit: int = 20) -> list[str]:
    pattern = re.compile(r"traceback|error|exception|warn|killed|timed? ?out|refus", re.IGNORECASE)
    return [line for line in text.splitlines() if pattern.search(line)][:limit]


def shutdown_notes(stopped: ServerStop, log_text: str, which: str = "") -> list[str]:
    """How a benchmark's server stopped and what in its log looks like a problem, as report lines."""
    label = f" ({which})" if which else ""
    findings = server_log_findings(log_text)
    return [
        f"shutdown{label}: SIGTERM -> exit {stopped.exit_code} in {stopped.seconds:.2f} s"
        + (" (SIGKILLed)" if stopped.killed else "")
        + (f"; left behind: {stopped.leftovers}" if stopped.leftovers else "; nothing left behind"),
        f"server log{label}: {len(log_text.splitlines())} lines, {len(findings)} look like problems",
        *(f"  | {line}" for line in findings),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clients = ["raw", "http.client"] if args.c1_client == "both" else [args.c1_client]
    machine = machine_info()
    print(f"machine : {machine['cpu']}, nproc {machine['nproc']} (cpu_count {machine['cpu_count']})")
    print(f"kernel  : {machine['kernel']}; load average at start {' '.join(machine['loadavg_at_start'])}")
    print(f"python  : {machine['python']} ({machine['python_executable']})")
    print(f"selfless: {machine['selfless_commit']}")
    print(f"freezing: SELFLESS_FREEZE_AFTER_MS={os.environ.get('SELFLESS_FREEZE_AFTER_MS', '(default)')}")
    print(
        f"plan    : c=1 {args.warm} invokes/target (+{args.warmup} warm-up), c={args.concurrency} "
        f"{args.duration:g} s/target, {args.cold} cold samples, {args.rounds} rounds, "
        f"relay workers {args.relay_workers}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="selfless-bench-"))
    server: SelflessServer | None = None
    unfrozen: SelflessServer | None = None
    floors: Floors | None = None
    shared: subprocess.Popen[str] | None = None
    shared_port = 0
    stopped: ServerStop | None = None
    log_text = ""
    try:
        python, python_desc = clean_python(workdir / "venv")
        machine["fresh_interpreter"] = python_desc
        print(f"fresh   : {python_desc}", flush=True)
        server = SelflessServer(args.selfless, workdir / "data", workdir / "server.log")
        server.wait_healthy()
        lam = lambda_client(server.port)
        deploy(lam, WARM_FUNCTION)
        deploy(lam, COLD_FUNCTION)
        if args.unfrozen_too:
            unfrozen = SelflessServer(
                args.selfless, workdir / "data-unfrozen", workdir / "unfrozen.log", {"SELFLESS_FREEZE_AFTER_MS": "off"}
            )
            unfrozen.wait_healthy()
            deploy(lambda_client(unfrozen.port), WARM_FUNCTION)
        floors = Floors()
        floors.start(args.relay_workers)
        if SHARED_RELAY_PATH.is_file():
            # The team's reference relay floor, where this checkout sits beside it: started as its README says
            # (one worker: sequential figures only).
            shared_port = free_port()
            shared = subprocess.Popen(
                [sys.executable, str(SHARED_RELAY_PATH), str(shared_port)], stdout=subprocess.PIPE, text=True
            )
            assert shared.stdout is not None
            if shared.stdout.readline().strip() != "ready":
                raise RuntimeError("the shared relay floor did not start")
        print(
            f"servers : selfless :{server.port}, echo :{floors.echo_port}, relay :{floors.relay_port}",
            flush=True,
        )

        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        path = invoke_path(WARM_FUNCTION)
        requests = {
            "echo": SignedRequest(signer, Target("echo", floors.echo_port, path), PAYLOAD),
            "relay": SignedRequest(signer, Target("relay", floors.relay_port, path), PAYLOAD),
            "selfless": SignedRequest(signer, Target("selfless", server.port, path), PAYLOAD),
        }
        if unfrozen is not None:
            requests[UNFROZEN] = SignedRequest(signer, Target(UNFROZEN, unfrozen.port, path), PAYLOAD)
        if shared is not None:
            requests[SHARED_RELAY] = SignedRequest(signer, Target(SHARED_RELAY, shared_port, path), PAYLOAD)
        print("measuring warm c=1 ...", flush=True)
        warm = measure_sequential(requests, clients, args.warm, args.warmup, args.rounds)
        spaced: dict[str, Latencies] | None = None
        if args.spaced:
            print(f"measuring warm, {args.gap_ms:g} ms apart ...", flush=True)
            spaced = measure_spaced(requests, args.spaced, args.gap_ms / 1000)
        print(f"measuring warm c={args.concurrency} ...", flush=True)
        conc = measure_concurrent(
            {k: v for k, v in requests.items() if k not in (UNFROZEN, SHARED_RELAY)},
            args.concurrency,
            args.duration,
            args.rounds,
        )
        print("measuring cold starts ...", flush=True)
        cold_request = SignedRequest(
            signer,
            Target("selfless", server.port, invoke_path(COLD_FUNCTION)),
            PAYLOAD,
            {"X-Amz-Log-Type": "Tail"},
        )
        cold = measure_cold(lam, cold_request, python, args.cold)
    finally:
        if floors is not None:
            floors.stop()
        if shared is not None:
            shared.kill()
            shared.communicate(timeout=10)
        if unfrozen is not None:
            unfrozen_stop = unfrozen.stop()
            if unfrozen_stop.killed or unfrozen_stop.leftovers:
                print(f"selfless (freezing off) did not stop cleanly: {unfrozen_stop}", file=sys.stderr)
        if server is not None:
            stopped = server.stop()
            log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            if args.keep_log:
                shutil.copyfile(server.log_path, args.keep_log)
            if stopped.killed or stopped.leftovers:
                print(f"selfless did not stop cleanly: {stopped}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = build_rows(warm, conc, cold, args.concurrency, spaced, args.gap_ms)
    print()
    print(render(rows))
    print()
    notes = []
    groups = [(f"c=1 {client}", group) for client, group in warm.items()] + [(f"c={args.concurrency}", conc)]
    for label, group in groups:
        for name, lat in group.items():
            if lat.errors:
                notes.append(f"{label} {name}: {lat.errors} errors, e.g. {lat.error_examples[:2]}")
    total = len(cold.invoke.samples_ns)
    notes.append(
        f"cold: {total - cold.without_init}/{total} samples had an Init Duration (a new environment); "
        f"Init Duration p50 {percentile(cold.init_ms, 0.5):.2f} ms, "
        f"p99 {percentile(cold.init_ms, 0.99):.2f} ms; "
        f"REPORT Duration p50 {percentile(cold.duration_ms, 0.5):.2f} ms; "
        f"update-to-Successful p50 {percentile(cold.update_wait_ms, 0.5):.1f} ms"
    )
    if cold.invoke.errors:
        notes.append(f"cold: {cold.invoke.errors} failed samples, e.g. {cold.invoke.error_examples[:2]}")
    assert stopped is not None
    notes += shutdown_notes(stopped, log_text)
    print("\n".join(notes))

    if args.json:
        out = {
            "machine": machine,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": [{**dataclasses.asdict(r), "ratios": r.ratios()} for r in rows],
            "warm_c1": {c: {k: stats_dict(v) for k, v in group.items()} for c, group in warm.items()},
            "warm_spaced": {k: stats_dict(v) for k, v in (spaced or {}).items()},
            f"warm_c{args.concurrency}": {k: {**stats_dict(v), "rate": v.rate} for k, v in conc.items()},
            "cold": {
                "invoke": stats_dict(cold.invoke),
                "fresh_interpreter": stats_dict(cold.fresh),
                "invoke_samples_ms": [s / 1e6 for s in cold.invoke.samples_ns],
                "fresh_samples_ms": [s / 1e6 for s in cold.fresh.samples_ns],
                "init_duration_ms": cold.init_ms,
                "without_init_duration": cold.without_init,
                "update_wait_ms": cold.update_wait_ms,
            },
            "shutdown": dataclasses.asdict(stopped),
            "server_log_findings": server_log_findings(log_text),
            "notes": notes,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
