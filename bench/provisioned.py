"""Provisioned-concurrency benchmark: the first call each provisioned environment serves, next to a warm invoke.

Run by hand from the project root, as root (the Linux sandbox needs it), not as a test::

    .venv/bin/python bench/provisioned.py [--provisioned 20] [--warm 500] [--rounds 1] [--json out.json]

What it does
------------
1. Starts ``selfless serve`` (linux sandbox, no KSM, no memory budget) on a free 127.0.0.1 port with a
   temporary data dir, and deploys one python3.12 function with MemorySize 1769 (a CPU quota of one full
   vCPU). Its handler returns a small dict: ``context.log_stream_name`` (one stream per environment: which
   environment answered) and the ``AWS_LAMBDA_INITIALIZATION_TYPE`` it sees; given ``hold_until`` (a wall
   clock time) it first sleeps until then. The server is stopped with SIGTERM at the end whatever happens,
   and whatever it left behind is reported (and killed).
2. Publishes a version, puts provisioned concurrency ``--provisioned`` (N) on it, and polls
   GetProvisionedConcurrencyConfig until Status is READY (bounded by ``--ready-timeout``; FAILED raises).
3. **First calls** (the figure): N sequential calls with ``Qualifier=<version>``, each on a fresh keep-alive
   connection opened (and its request signed) before the clock starts, one at a time, nothing else in
   flight but sleeping handlers. The pool hands a call the most recently used idle provisioned environment
   (a stack), so N plain sequential calls would all land on the first one. To reach N different ones the
   script *holds* each environment once it has been timed: right after timed call k returns (its
   environment is freed when its runtime posts the response, so it is on top of the idle stack by then) a
   "holder" call is sent on its own connection, whose handler sleeps until ``hold_until`` (the end of the
   round, ``--hold`` seconds ahead); it takes environment k. Before timed call k + 1 the script waits
   (bounded) until the server's ``selfless_concurrent_executions`` gauge in ``/metrics`` shows k + 1 calls
   in flight: a call's concurrency lease and its environment are taken in the same event-loop step, so
   environment k is then busy, and call k + 1 can only go to one that no call has touched. Nothing is
   taken on trust: every answer names its log stream, a timed call counts as "first call of an
   environment" only if no earlier call (timed or holder) answered from that stream, and every holder must
   answer from the stream of the call it was meant to hold. Every timed call asks for ``X-Amz-Log-Type:
   Tail``: its REPORT line (base64 ``X-Amz-Log-Result``) must have no ``Init Duration``, and the handler
   must have seen ``AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency``. Holders never run
   concurrently with a timed call's handler except as sleeping processes.
4. **Floor, warm calls of the same version**, once every environment has served (the holders have
   returned): ``--warm`` sequential calls made exactly like a first call (the same ``GET /metrics`` just
   before, a fresh connection opened before the clock, the same signed body and Tail header), after
   ``--warmup`` unrecorded ones; then ``--warm`` more back to back on one keep-alive connection, for
   reference. Same client, same run. The collector is paused over each phase, not collected before each
   call: on this 2-vCPU VM any pause of 10 ms or more before a call (a ``gc.collect()``, a sleep) makes
   that call ~1 ms slower whichever environment answers (the machine idling), which would swamp what
   this measures; the prelude keeps first calls and their floor in the same, non-idle, condition.

With ``--rounds`` R > 1 the function's configuration changes between rounds and a new version is published
and provisioned (the previous configuration is deleted first), so there are R x N first calls.

Figures: p50 / p99 (nearest rank) of client-side time from sending the request to having read the whole
answer. Target: first-call p50 <= 2x the warm p50 (fresh-connection warm calls: identical protocol).
Every wait is bounded in time; every request goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import (
    Answer,
    RawConnection,
    SignedRequest,
    SigV4Signer,
    Stats,
    Target,
    _answer_bounds,
    fresh_call,
)
from invoke import (
    ACCESS_KEY_ID,
    DURATION_RE,
    HOST,
    INIT_RE,
    REGION,
    SECRET_ACCESS_KEY,
    SelflessServer,
    ServerStop,
    gc_paused,
    http_get,
    lambda_client,
    machine_info,
    server_log_findings,
    shutdown_notes,
    wait_configured,
    wait_until,
)
from sandbox import create

FUNCTION = "bench-provisioned"
HANDLER = """import os
import time


def handler(event, context):
    hold_until = event.get("hold_until")
    if hold_until:
        # Bounded: never past the function's timeout, whatever the caller asked.
        time.sleep(max(0.0, min(float(hold_until) - time.time(), 50.0)))
    return {"stream": context.log_stream_name, "init": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
"""
BODY = b"{}"
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


# ------------------------------------------------------------------------------------------------ signing


class PendingCall:
    """A request sent now on its own connection, its answer read later (a holder: no thread needed)."""

    def __init__(self, port: int, wire: bytes, timeout_s: float):
        self.sent_at = time.time()
        self._sock = socket.create_connection((HOST, port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(wire)

    def finish(self) -> Answer:
        buf = bytearray()
        try:
            while (bounds := _answer_bounds(buf)) is None:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buf += chunk
        finally:
            self._sock.close()
        end, total = bounds
        return Answer(int(buf[9:12]), bytes(buf[:end]), bytes(buf[end + 4 : total]))

    def close(self) -> None:
        self._sock.close()


# ---------------------------------------------------------------------------------------------- server


def start_server(work: Path, name: str, env: dict[str, str]) -> SelflessServer:
    """``selfless serve`` with these extra environment variables (set around the spawn only); healthy, or
    stopped and raised."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = SelflessServer(
            str(Path(sys.executable).parent / "selfless"), work / f"data-{name}", work / f"{name}.log"
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        server.wait_healthy()
    except BaseException:
        print(server.log_tail(40), file=sys.stderr)
        server.stop()
        raise
    return server


def metrics(port: int) -> dict[str, float]:
    """``GET /metrics``: each series (name plus labels) -> value."""
    status, body = http_get(port, "/metrics", timeout_s=5.0)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            match = _METRIC_LINE.match(line)
            if match:
                out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def metric_sum(values: dict[str, float], name: str) -> float:
    """The sum of every series of ``name`` (a counter's ``_total`` over all its labels, or one gauge)."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def report_line(answer: Answer) -> str | None:
    log = base64.b64decode(answer.header("X-Amz-Log-Result") or "").decode(errors="replace")
    return next((line for line in log.splitlines() if line.startswith("REPORT")), None)


# --------------------------------------------------------------------------------------------- measure


@dataclasses.dataclass
class Call:
    """One timed call: latency, who answered, and what its REPORT line and handler said."""

    latency_ns: int
    status: int
    stream: str | None
    init_type: str | None
    report: str | None
    problem: str | None = None
    first_on_stream: bool = False

    @classmethod
    def of(cls, latency_ns: int, answer: Answer) -> Call:
        stream = init = problem = None
        if answer.status != 200 or answer.header("X-Amz-Function-Error") is not None:
            problem = f"status {answer.status}: {answer.body[:200]!r}"
        else:
            try:
                doc = json.loads(answer.body)
                stream, init = doc["stream"], doc["init"]
            except (ValueError, KeyError, TypeError):
                problem = f"unexpected body {answer.body[:200]!r}"
        return cls(latency_ns, answer.status, stream, init, report_line(answer), problem)

    @property
    def duration_ms(self) -> float:
        """The REPORT line's Duration (the handler's run as the platform saw it), nan without one."""
        found = DURATION_RE.search(self.report or "")
        return float(found.group(1)) if found else math.nan

    @property
    def init_duration(self) -> bool:
        return self.report is not None and INIT_RE.search(self.report) is not None


@dataclasses.dataclass
class Round:
    version: str
    ready_s: float
    first: list[Call]
    holders_ok: int
    holder_problems: list[str]
    held_past_deadline: bool
    warm_fresh: list[Call]
    warm_keepalive: list[Call]
    environments_after: float
    cold_starts_after: float


def wait_in_flight(port: int, count: int) -> None:
    """Until ``count`` calls are in flight (the concurrency gauge); at least one ``GET /metrics`` always."""
    wait_until(
        f"{count} holder calls in flight",
        lambda: metric_sum(metrics(port), "selfless_concurrent_executions") >= count,
        10.0,
        interval_s=0.002,
    )


def timed_call(request: SignedRequest) -> Call:
    """One call on a fresh connection, opened (and the request signed) before the clock starts. The
    caller pauses the collector for the whole phase: a ``gc.collect()`` (or any pause of 10 ms or more)
    just before the call makes it ~1 ms slower on an idle 2-vCPU VM, whichever environment answers."""
    elapsed_ns, answer = fresh_call(request)
    return Call.of(elapsed_ns, answer)


def keepalive_calls(target: Target, request: SignedRequest, count: int) -> list[Call]:
    conn = RawConnection(target, timeout_s=60)
    conn.connect()
    calls = []
    try:
        with gc_paused():
            for _ in range(count):
                prepared = request.prepare()
                t0 = time.perf_counter_ns()
                answer = conn.post(prepared)
                t1 = time.perf_counter_ns()
                calls.append(Call.of(t1 - t0, answer))
    finally:
        conn.close()
    return calls


def wait_ready(lam: Any, version: str, timeout_s: float) -> float:
    started = time.monotonic()

    def ready() -> bool:
        conf = lam.get_provisioned_concurrency_config(FunctionName=FUNCTION, Qualifier=version)
        if conf["Status"] == "FAILED":
            raise RuntimeError(f"provisioned concurrency FAILED: {conf.get('StatusReason')}")
        return bool(conf["Status"] == "READY")

    wait_until(f"provisioned concurrency on version {version} to be READY", ready, timeout_s, interval_s=0.05)
    return time.monotonic() - started


def measure_round(
    lam: Any, port: int, signer: SigV4Signer, version: str, args: argparse.Namespace, seen: set[str]
) -> Round:
    n = args.provisioned
    t_put = time.monotonic()
    lam.put_provisioned_concurrency_config(FunctionName=FUNCTION, Qualifier=version, ProvisionedConcurrentExecutions=n)
    ready_s = wait_ready(lam, version, args.ready_timeout)
    print(f"version {version}: {n} provisioned environments READY in {time.monotonic() - t_put:.2f} s", file=sys.stderr)
    target = Target("selfless", port, f"/2015-03-31/functions/{FUNCTION}/invocations")
    tail = {"X-Amz-Log-Type": "Tail"}
    request = SignedRequest(signer, target, BODY, tail, query=f"Qualifier={version}")
    hold_until = time.time() + args.hold
    hold_body = json.dumps({"hold_until": hold_until}).encode()
    hold_request = SignedRequest(signer, target, hold_body, {}, query=f"Qualifier={version}")
    holders: list[PendingCall] = []
    first: list[Call] = []
    late = False
    try:
        with gc_paused():
            for k in range(n):
                wait_in_flight(port, len(holders))
                late = late or time.time() >= hold_until
                first.append(timed_call(request))
                if k < n - 1:
                    holders.append(PendingCall(port, hold_request.prepare().wire, args.hold + 60))
        answers = [h.finish() for h in holders]
    finally:
        for h in holders:
            h.close()
    # The environments were touched in this order: timed 0, holder 0, timed 1, holder 1, ... (holder k had
    # its environment before timed call k + 1 was sent). A timed call is a first call if no call before it
    # in that order answered from its stream.
    holders_ok = 0
    holder_problems = []
    for k, call in enumerate(first):
        call.first_on_stream = call.stream is not None and call.stream not in seen
        if call.stream is not None:
            seen.add(call.stream)
        if k >= len(answers):
            continue
        held = Call.of(0, answers[k])
        if held.problem:
            holder_problems.append(f"holder {k}: {held.problem}")
        elif held.stream != call.stream:
            holder_problems.append(f"holder {k} answered from {held.stream}, not {call.stream}")
        else:
            holders_ok += 1
        if held.stream is not None:
            seen.add(held.stream)

    print(f"version {version}: {n} first calls done; warm calls ...", file=sys.stderr, flush=True)
    warm_fresh = []
    with gc_paused():
        for i in range(args.warmup + args.warm):
            wait_in_flight(port, 0)  # the same prelude as a first call's: one GET /metrics
            call = timed_call(request)
            if i >= args.warmup:
                warm_fresh.append(call)
    warm_keepalive = keepalive_calls(target, request, args.warm)
    after = metrics(port)
    return Round(
        version,
        ready_s,
        first,
        holders_ok,
        holder_problems,
        late,
        warm_fresh,
        warm_keepalive,
        metric_sum(after, "selfless_environments"),
        metric_sum(after, "selfless_cold_starts_total"),
    )


# ---------------------------------------------------------------------------------------------- report


def us(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1000:,.1f} µs"


def checks(calls: list[Call]) -> dict[str, int]:
    return {
        "calls": len(calls),
        "errors": sum(1 for c in calls if c.problem),
        "with_init_duration": sum(1 for c in calls if c.init_duration),
        "without_report_line": sum(1 for c in calls if c.report is None),
        "not_provisioned_init_type": sum(1 for c in calls if c.init_type != "provisioned-concurrency"),
        "distinct_streams": len({c.stream for c in calls if c.stream}),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--provisioned", type=int, default=20, help="provisioned concurrency N [20]")
    p.add_argument("--warm", type=int, default=500, help="warm calls, each way (fresh / keep-alive) [500]")
    p.add_argument("--warmup", type=int, default=50, help="unrecorded warm calls first [50]")
    p.add_argument("--rounds", type=int, default=1, help="versions provisioned one after another [1]")
    p.add_argument("--hold", type=float, help="seconds holders keep environments busy [2 + 0.5 N, <= 45]")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="bound on the wait for READY [120]")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    p.add_argument("--keep-log", type=Path, help="copy the server's log here before it is deleted")
    args = p.parse_args(argv)
    if not 1 <= args.provisioned <= 200 or not 1 <= args.rounds <= 20 or not 1 <= args.warm <= 100_000:
        p.error("keep --provisioned in [1, 200], --rounds in [1, 20], --warm in [1, 1e5]")
    if args.hold is None:
        args.hold = min(45.0, 2.0 + 0.5 * args.provisioned)
    if not 0 < args.hold <= 45:
        p.error("--hold must be in (0, 45] (the function's timeout is 60 s)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the linux sandbox needs root", file=sys.stderr)
        return 2
    machine = machine_info()
    print(f"machine : {machine['cpu']}, nproc {machine['nproc']}; load average {' '.join(machine['loadavg_at_start'])}")
    print(f"selfless: {machine['selfless_commit']}")
    print(
        f"plan    : {args.rounds} round(s) of {args.provisioned} provisioned environments (1769 MB), "
        f"{args.warm} warm calls each way, holders {args.hold:g} s",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="selfless-provisioned-"))
    server: SelflessServer | None = None
    stopped: ServerStop | None = None
    rounds: list[Round] = []
    log_text = ""
    try:
        server = start_server(work, "server", {"SELFLESS_SANDBOX": "linux"})
        lam = lambda_client(server.port)
        create(lam, FUNCTION, HANDLER, 1769)
        signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)
        seen: set[str] = set()
        previous: str | None = None
        for r in range(args.rounds):
            if r:
                lam.update_function_configuration(FunctionName=FUNCTION, Environment={"Variables": {"ROUND": str(r)}})
                wait_configured(lam, FUNCTION)
            version = lam.publish_version(FunctionName=FUNCTION)["Version"]
            if previous is not None:
                lam.delete_provisioned_concurrency_config(FunctionName=FUNCTION, Qualifier=previous)
            rounds.append(measure_round(lam, server.port, signer, version, args, seen))
            previous = version
    except Exception:
        if server is not None:
            print(server.log_tail(40), file=sys.stderr)
        raise
    finally:
        if server is not None:
            stopped = server.stop()
            log_text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
            if args.keep_log:
                shutil.copyfile(server.log_path, args.keep_log)
        shutil.rmtree(work, ignore_errors=True)

    first = [c for r in rounds for c in r.first]
    counted = [c.latency_ns for c in first if c.first_on_stream and not c.problem]
    fresh = [c.latency_ns for r in rounds for c in r.warm_fresh if not c.problem]
    keep = [c.latency_ns for r in rounds for c in r.warm_keepalive if not c.problem]
    fs, ws, ks = Stats.of(counted), Stats.of(fresh), Stats.of(keep)
    ratio50 = fs.p50_us / ws.p50_us if ws.p50_us else math.nan
    ratio99 = fs.p99_us / ws.p99_us if ws.p99_us else math.nan
    verdict = "met" if ratio50 <= 2.0 else "MISSED"
    print()
    header = f"{'figure':<44} {'p50':>11} {'p99':>11} {'mean':>11} {'max':>11}  n"
    print(header)
    print("-" * len(header))
    for label, s in (
        ("first call of a provisioned environment", fs),
        ("warm, same version, fresh connection (floor)", ws),
        ("warm, same version, one keep-alive connection", ks),
    ):
        print(
            f"{label:<44} {us(s.p50_us * 1000):>11} {us(s.p99_us * 1000):>11} {us(s.mean_us * 1000):>11} "
            f"{us(s.max_us * 1000):>11}  {s.count}"
        )
    print(f"ratio first / warm (fresh connection): p50 {ratio50:.2f}x (target <= 2x: {verdict}), p99 {ratio99:.2f}x")

    def report_p50(calls: list[Call]) -> float:
        values = sorted(c.duration_ms for c in calls if not math.isnan(c.duration_ms))
        return values[(len(values) - 1) // 2] if values else math.nan

    first_counted = [c for c in first if c.first_on_stream and not c.problem]
    warm_calls = [c for r in rounds for c in r.warm_fresh if not c.problem]
    print(
        f"REPORT Duration p50 (the handler's run, server-side): first calls {report_p50(first_counted):.2f} ms, "
        f"warm calls {report_p50(warm_calls):.2f} ms"
    )
    print()
    notes = []
    for r in rounds:
        c = checks(r.first)
        w = checks(r.warm_fresh + r.warm_keepalive)
        notes.append(
            f"version {r.version}: READY {r.ready_s:.2f} s after the put; first calls: {c['calls']} timed, "
            f"{sum(1 for x in r.first if x.first_on_stream)} first on their stream, {c['distinct_streams']} "
            f"distinct streams, {c['errors']} errors, {c['with_init_duration']} with Init Duration, "
            f"{c['without_report_line']} without a REPORT line, {c['not_provisioned_init_type']} not "
            f"provisioned-concurrency; holders on the intended environment {r.holders_ok}/{len(r.first) - 1}"
            + (" (the hold ran out before the last timed call: raise --hold)" if r.held_past_deadline else "")
        )
        notes += [f"  | {p}" for p in r.holder_problems[:5]]
        notes.append(
            f"version {r.version}: warm calls {w['calls']}, {w['errors']} errors, {w['with_init_duration']} with "
            f"Init Duration, {w['not_provisioned_init_type']} not provisioned-concurrency, {w['distinct_streams']} "
            f"stream(s); after the round /metrics: selfless_environments {r.environments_after:g}, "
            f"selfless_cold_starts_total {r.cold_starts_after:g}"
        )
    problems = [c.problem for r in rounds for c in r.first + r.warm_fresh + r.warm_keepalive if c.problem]
    if problems:
        notes.append(f"{len(problems)} failed calls, e.g. {problems[:2]}")
    assert stopped is not None
    notes += shutdown_notes(stopped, log_text)
    print("\n".join(notes))

    if args.json:
        out = {
            "machine": machine,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "first_call": dataclasses.asdict(fs),
            "warm_fresh_connection": dataclasses.asdict(ws),
            "warm_keepalive": dataclasses.asdict(ks),
            "ratio_p50": ratio50,
            "ratio_p99": ratio99,
            "rounds": [
                {
                    "version": r.version,
                    "ready_s": r.ready_s,
                    "first_calls": [dataclasses.asdict(c) for c in r.first],
                    "first_checks": checks(r.first),
                    "warm_checks": checks(r.warm_fresh + r.warm_keepalive),
                    "holders_ok": r.holders_ok,
                    "holder_problems": r.holder_problems,
                    "held_past_deadline": r.held_past_deadline,
                    "environments_after": r.environments_after,
                    "cold_starts_after": r.cold_starts_after,
                }
                for r in rounds
            ],
            "shutdown": dataclasses.asdict(stopped),
            "server_log_findings": server_log_findings(log_text),
            "notes": notes,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
