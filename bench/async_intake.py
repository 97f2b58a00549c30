"""Asynchronous intake benchmark: durable Event invocations accepted per second, next to the same machine's
plain SQLite commits with fsync, measured in the same run.

Run by hand from the project root (as root for the Linux sandbox), not as a test::

    .venv/bin/python bench/async_intake.py [--concurrency 32] [--seconds 5] [--json out.json]

1. **Intake**: a server, one function with reserved concurrency 0 (so accepted events stay queued and the
   measurement is the intake alone: every 202 means the event's commit, with fsync, had returned).
   ``--concurrency`` keep-alive connections each send the next signed ``X-Amz-Invocation-Type: Event`` invoke
   as soon as the last got its 202, for ``--seconds``. Target: >= 5,000 accepted events per second at 32.
2. **Lag** at a steady load: a second function that prints the wall-clock time its handler starts; events
   sent at ``--rate`` per second for ``--seconds``, each 202's arrival time noted by request id (the event's
   id); lag = handler start - 202. p50/p99 over all events. (Same machine, same clock.) Floor: 200
   synchronous calls of the same function on one keep-alive connection, the whole round trip.
3. **Floor**: in a fresh SQLite database with the server's settings (WAL, synchronous=FULL), the same rows
   (one event of the same payload size) inserted one per transaction, sequentially, for ``--seconds``: what
   durability costs when each event pays its own fsync.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import boto3
from client import RawConnection, SignedRequest, SigV4Signer, Stats, Target, run_concurrent
from invoke import (
    ACCESS_KEY_ID,
    PAYLOAD,
    SECRET_ACCESS_KEY,
    SelflessServer,
    invoke_path,
    lambda_client,
    machine_info,
    wait_configured,
)
from sandbox import pct, zip_of

STAMP = """import time


def handler(event, context):
    print("STARTED %s %.6f" % (context.aws_request_id, time.time()))
    return None
"""


def logs_client(port: int) -> Any:
    return boto3.client(
        "logs",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def steady_lag(port: int, signer: SigV4Signer, rate: float, seconds: float) -> dict[str, Any]:
    """Events at ``rate``/s (paced, one connection) to ``stamp``; lag from each 202 to its handler start."""
    target = Target("stamp", port, invoke_path("stamp"))
    request = SignedRequest(signer, target, PAYLOAD, {"X-Amz-Invocation-Type": "Event"})
    conn = RawConnection(target)
    conn.connect()
    accepted: dict[str, float] = {}
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        due = started + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        answer = conn.post(request.prepare())
        if answer.status == 202:
            accepted[str(answer.header("x-amzn-RequestId"))] = time.time()
        n += 1
    conn.close()
    client = logs_client(port)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(seen) < len(accepted) and time.monotonic() < deadline:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"logGroupName": "/aws/lambda/stamp"}
            if token:
                kwargs["nextToken"] = token
            page = client.filter_log_events(**kwargs)
            for e in page["events"]:
                parts = e["message"].split()
                if len(parts) == 3 and parts[0] == "STARTED":
                    seen[parts[1]] = float(parts[2])
            token = page.get("nextToken")
            if not token:
                break
        time.sleep(0.5)
    lags = sorted((seen[k] - t) * 1000 for k, t in accepted.items() if k in seen)
    # Floor: the same function called synchronously, on one keep-alive connection: a whole round trip
    # through the same path (the lag should be a fraction of it: no client leg back, no response).
    sync = SignedRequest(signer, target, PAYLOAD)
    conn = RawConnection(target)
    conn.connect()
    round_trips = []
    for _ in range(200):
        prepared = sync.prepare()
        t0 = time.perf_counter()
        answer = conn.post(prepared)
        round_trips.append((time.perf_counter() - t0) * 1000)
        if answer.status != 200:
            raise RuntimeError(f"synchronous floor call failed: {answer.status} {answer.body[:200]!r}")
    conn.close()
    round_trips.sort()
    return {
        "rate_per_s": rate,
        "sent": n,
        "accepted": len(accepted),
        "ran": len(lags),
        "lag_p50_ms": round(pct(lags, 50), 2) if lags else None,
        "lag_p99_ms": round(pct(lags, 99), 2) if lags else None,
        "floor_sync_round_trip_p50_ms": round(pct(round_trips, 50), 2),
        "floor_sync_round_trip_p99_ms": round(pct(round_trips, 99), 2),
    }


def floor(seconds: float, payload: bytes) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="selfless-floor-") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE events (id TEXT PRIMARY KEY, function_name TEXT, qualifier TEXT, payload BLOB,"
            " client_context TEXT, accepted_at REAL, attempts INTEGER)"
        )
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (os.urandom(16).hex(), "sink", None, payload, None, time.time(), 0),
            )
            db.execute("COMMIT")
            count += 1
        elapsed = time.perf_counter() - started
        db.close()
    return {"commits": count, "commits_per_s": round(count / elapsed, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second for the lag measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="selfless-async-") as tmp:
        server = SelflessServer(str(Path(sys.executable).parent / "selfless"), Path(tmp) / "data", Path(tmp) / "log")
        try:
            server.wait_healthy()
            lam = lambda_client(server.port)
            lam.create_function(
                FunctionName="sink",
                Runtime="python3.12",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": zip_of("def handler(event, context):\n    return event\n")},
            )
            wait_configured(lam, "sink")
            lam.put_function_concurrency(FunctionName="sink", ReservedConcurrentExecutions=0)
            signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            request = SignedRequest(
                signer, Target("sink", server.port, invoke_path("sink")), PAYLOAD, {"X-Amz-Invocation-Type": "Event"}
            )
            run_concurrent(request, args.concurrency, 1.0, b"", status=202)  # warm-up
            intake = run_concurrent(request, args.concurrency, args.seconds, b"", status=202)
            lam.create_function(
                FunctionName="stamp",
                Runtime="python3.12",
                Role="arn:aws:iam::000000000000:role/bench",
                Handler="app.handler",
                Code={"ZipFile": zip_of(STAMP)},
            )
            wait_configured(lam, "stamp")
            lam.invoke(FunctionName="stamp", Payload=PAYLOAD)  # one warm environment to start with
            lag = steady_lag(server.port, signer, args.rate, args.seconds)
        except Exception:
            print(server.log_tail(40), file=sys.stderr)
            raise
        finally:
            server.stop()
    if intake.errors:
        print(f"errors: {intake.errors} {intake.error_examples}", file=sys.stderr)
    plain = floor(args.seconds, PAYLOAD)
    stats = Stats.of(intake.samples_ns)
    result = {
        "machine": machine_info(),
        "concurrency": args.concurrency,
        "accepted": len(intake.samples_ns),
        "accepted_per_s": round(intake.rate, 1),
        "latency_p50_ms": round(stats.p50_us / 1000, 3),
        "latency_p99_ms": round(stats.p99_us / 1000, 3),
        "errors": intake.errors,
        "floor_sqlite_fsync_commits_per_s": plain["commits_per_s"],
        "ratio_to_floor": round(intake.rate / plain["commits_per_s"], 2),
        "steady_lag": lag,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
