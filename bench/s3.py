"""Object store benchmark: the built-in S3 store's PUT and GET next to their floors, and how soon an upload's
notification starts its function.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/s3.py [--small 500] [--large 5] [--large-mb 64] [--uploads 50] [--json out.json]

What it measures, each next to a floor measured in the same run (this machine is shared and noisy: ratios
mean more than absolute times):

1. **1 KB PUT and GET**, sequential on one keep-alive connection (``http.client``, every request signed with
   SigV4 for ``s3`` by botocore before the clock starts): p50 / p99. Floor: the same client sending a signed
   ``GET /health`` to the same server (a bare signed HTTP round trip). Target: PUT p50 <= 3x the floor. Beside
   it, the one thing a durable PUT must wait for that /health does not: a SQLite commit of a 1 KB row (WAL,
   synchronous=FULL, as the server commits) in the same file system.
2. **64 MB PUT and GET** (``--large-mb``): MB/s of one object on a raw keep-alive connection, signed before
   the clock starts (boto3 would add its own hashing of the body to the time), ``--large`` times each,
   alternating with the floors:
   writing the same bytes to a local file in the server's data directory's file system and fsyncing it
   (what a durable PUT must do at least), and reading that file back. Target: >= 0.7x each floor.
3. **Upload to handler start**: a function subscribed to ``s3:ObjectCreated:*`` prints ``time.time()`` as
   its first act; ``--uploads`` PutObjects, each after the last one's handler ran (so the environment is
   warm and idle), from the PUT's 200 to that timestamp (both clocks are this machine's). Target: p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import boto3
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invoke import (  # the sibling benchmark's server harness
    ACCESS_KEY_ID,
    HOST,
    REGION,
    ROLE,
    SECRET_ACCESS_KEY,
    SelflessServer,
    machine_info,
    wait_configured,
)

CREDENTIALS = Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
RECORDER = """import time


def handler(event, context):
    started = time.time()
    print("STARTED %.6f %s" % (started, event["Records"][0]["s3"]["object"]["key"]))
"""


def client(service: str, port: int) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://{HOST}:{port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, read_timeout=300),
    )


def signed(method: str, port: int, path: str, body: bytes = b"", service: str = "s3") -> tuple[str, dict[str, str]]:
    """The path and headers of a request signed as botocore signs it for ``service``."""
    request = AWSRequest(method=method, url=f"http://{HOST}:{port}{path}", data=body)
    if service == "s3":
        request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
        S3SigV4Auth(CREDENTIALS, "s3", REGION).add_auth(request)
    else:
        SigV4Auth(CREDENTIALS, service, REGION).add_auth(request)
    headers = {k: v for k, v in request.headers.items()}
    headers["Content-Length"] = str(len(body))
    return path, headers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(samples_s: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(samples_s, 0.5) * 1e6,
        "p99_us": percentile(samples_s, 0.99) * 1e6,
        "mean_us": statistics.fmean(samples_s) * 1e6,
    }


def small(port: int, bucket: str, count: int) -> dict[str, dict[str, float]]:
    """1 KB PUT, 1 KB GET and the signed /health floor, interleaved request by request."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    body = os.urandom(1024)
    times: dict[str, list[float]] = {"put": [], "get": [], "health": []}
    for i in range(count + 20):
        key = f"small/{i:06d}"
        for kind, (method, path, data) in (
            ("health", ("GET", "/health", b"")),
            ("put", ("PUT", f"/{bucket}/{key}", body)),
            ("get", ("GET", f"/{bucket}/{key}", b"")),
        ):
            target, headers = signed(method, port, path, data, service="lambda" if kind == "health" else "s3")
            t0 = time.perf_counter()
            conn.request(method, target, body=data or None, headers=headers)
            answer = conn.getresponse()
            got = answer.read()
            elapsed = time.perf_counter() - t0
            if answer.status != 200 or (kind == "get" and got != body):
                raise RuntimeError(f"{kind} {path}: {answer.status} {got[:200]!r}")
            if i >= 20:  # warm-up
                times[kind].append(elapsed)
    conn.close()
    return {kind: summary(samples) for kind, samples in times.items()}


def commit_floor(data_dir: Path, count: int) -> dict[str, float]:
    """What a durable 1 KB PUT cannot avoid: one SQLite commit of a 1 KB row in WAL mode with
    synchronous=FULL (the server's settings) in the data directory's file system."""
    path = data_dir / "bench-commit-floor.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
        samples = []
        for i in range(count + 20):
            row = (f"small/{i:06d}", os.urandom(1024))
            t0 = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", row)
            db.execute("COMMIT")
            if i >= 20:
                samples.append(time.perf_counter() - t0)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return summary(samples)


def large(port: int, bucket: str, data_dir: Path, size_mb: int, rounds: int) -> dict[str, float]:
    """PUT and GET of one ``size_mb`` object on a raw keep-alive connection (signed before the clock starts, so
    the client's own hashing is not timed), next to writing+fsyncing and reading the same bytes as a file."""
    data = os.urandom(size_mb << 20)
    floor_file = data_dir / "bench-floor.bin"
    rates: dict[str, list[float]] = {"put": [], "get": [], "file_write": [], "file_read": []}
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        for i in range(rounds):
            t0 = time.perf_counter()
            with open(floor_file, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            rates["file_write"].append(size_mb / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            with open(floor_file, "rb") as f:
                while f.read(1 << 20):
                    pass
            rates["file_read"].append(size_mb / (time.perf_counter() - t0))
            path, headers = signed("PUT", port, f"/{bucket}/large/{i}", data)
            t0 = time.perf_counter()
            conn.request("PUT", path, body=data, headers=headers)
            answer = conn.getresponse()
            answer.read()
            rates["put"].append(size_mb / (time.perf_counter() - t0))
            if answer.status != 200:
                raise RuntimeError(f"PUT large/{i}: {answer.status}")
            path, headers = signed("GET", port, f"/{bucket}/large/{i}")
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            got = 0
            while chunk := answer.read(1 << 20):
                got += len(chunk)
            rates["get"].append(size_mb / (time.perf_counter() - t0))
            if got != len(data):
                raise RuntimeError(f"GET large/{i}: {got} of {len(data)} bytes")
    finally:
        conn.close()
        with contextlib.suppress(OSError):
            floor_file.unlink()
    return {f"{kind}_mb_s": statistics.median(values) for kind, values in rates.items()}


def notification_latency(port: int, bucket: str, uploads: int) -> dict[str, float]:
    lam, s3, logs = client("lambda", port), client("s3", port), client("logs", port)
    import io
    import zipfile

    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("app.py", RECORDER)
    created = lam.create_function(
        FunctionName="bench-s3",
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": package.getvalue()},
        MemorySize=1769,
    )
    wait_configured(lam, "bench-s3")
    lam.add_permission(
        FunctionName="bench-s3",
        StatementId="s3",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn=f"arn:aws:s3:::{bucket}",
    )
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {
                    "LambdaFunctionArn": created["FunctionArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "notify/"}]}},
                }
            ]
        },
    )
    answered: dict[str, float] = {}
    started: dict[str, float] = {}
    seen_tokens: set[str] = set()

    def collect() -> None:
        with contextlib.suppress(logs.exceptions.ResourceNotFoundException):
            for event in logs.filter_log_events(logGroupName="/aws/lambda/bench-s3")["events"]:
                if event["message"].startswith("STARTED ") and event["eventId"] not in seen_tokens:
                    seen_tokens.add(event["eventId"])
                    _, stamp, key = event["message"].split(" ", 2)
                    started[urllib.parse.unquote_plus(key.strip())] = float(stamp)

    for i in range(uploads + 3):
        key = f"notify/{i:05d}"
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        answered[key] = time.time()
        deadline = time.monotonic() + 30
        while key not in started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{key}: the handler did not start within 30 s")
            time.sleep(0.02)
            collect()
    latencies = [started[k] - answered[k] for k in sorted(answered)[3:]]  # the first ones start the environment
    return {"p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=500, help="1 KB requests of each kind")
    parser.add_argument("--large", type=int, default=5, help="large PUT/GET rounds")
    parser.add_argument("--large-mb", type=int, default=64)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    executable = str(Path(sys.executable).parent / "selfless")
    with tempfile.TemporaryDirectory(prefix="selfless-bench-s3-") as tmp:
        data_dir = Path(tmp) / "data"
        server = SelflessServer(executable, data_dir, Path(tmp) / "server.log", {"SELFLESS_LOG_LEVEL": "warning"})
        try:
            server.wait_healthy()
            s3 = client("s3", server.port)
            s3.create_bucket(Bucket="bench")
            result: dict[str, Any] = {"machine": machine_info()}
            result["small"] = small(server.port, "bench", args.small)
            result["commit"] = commit_floor(data_dir, args.small)
            result["large"] = large(server.port, "bench", data_dir, args.large_mb, args.large)
            result["notification"] = notification_latency(server.port, "bench", args.uploads)
        finally:
            stopped = server.stop()
            if stopped.leftovers:
                print(f"processes left behind: {stopped.leftovers}", file=sys.stderr)
    sm, lg, nt = result["small"], result["large"], result["notification"]
    print(f"1 KB PUT  p50 {sm['put']['p50_us']:8.0f} us  p99 {sm['put']['p99_us']:8.0f} us")
    print(f"1 KB GET  p50 {sm['get']['p50_us']:8.0f} us  p99 {sm['get']['p99_us']:8.0f} us")
    print(f"signed /health (floor) p50 {sm['health']['p50_us']:8.0f} us")
    print(f"  PUT/floor {sm['put']['p50_us'] / sm['health']['p50_us']:.2f}x (target <= 3x)")
    commit = result["commit"]["p50_us"]
    print(f"SQLite commit, WAL + synchronous=FULL (what a durable PUT must wait for) p50 {commit:8.0f} us")
    print(f"  PUT/(floor + commit) {sm['put']['p50_us'] / (sm['health']['p50_us'] + commit):.2f}x")
    print(
        f"{args.large_mb} MB PUT {lg['put_mb_s']:8.0f} MB/s  file write+fsync {lg['file_write_mb_s']:8.0f} MB/s  "
        f"{lg['put_mb_s'] / lg['file_write_mb_s']:.2f}x (target >= 0.7x)"
    )
    print(
        f"{args.large_mb} MB GET {lg['get_mb_s']:8.0f} MB/s  file read {lg['file_read_mb_s']:8.0f} MB/s  "
        f"{lg['get_mb_s'] / lg['file_read_mb_s']:.2f}x (target >= 0.7x)"
    )
    print(f"upload 200 -> handler start p50 {nt['p50_ms']:.2f} ms  p99 {nt['p99_ms']:.2f} ms (target p50 <= 5 ms)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
