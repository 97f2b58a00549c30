"""Queue -> event source mapping -> function: messages per second through the whole path, and the latency from
SendMessage to the handler's start, next to their floors measured in the same run.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/esm.py [--messages 20000] [--latency 200] [--concurrency 5] [--json out.json]

What it measures (this machine is shared and noisy: ratios mean more than absolute figures):

1. **Floor (commits)**: one thread committing batches of 10 rows to SQLite (WAL, ``synchronous=FULL``, the
   server's settings) in the data directory's file system. A message through a mapping costs at least two
   durable commits per batch (the receive's new visibility, then the delete), so the floor's messages per
   second for the path is half its rows per second.
2. **Floor (invoke)**: the same function invoked directly (RequestResponse, a 10-record SQS-shaped event,
   ``--concurrency`` callers on keep-alive connections): batches per second the invoke path gives, times 10.
3. **Throughput**: ``--messages`` messages of 64 bytes sent to a queue (SendMessageBatch) with the mapping
   disabled, then the mapping (BatchSize 10, no batching window, ScalingConfig.MaximumConcurrency
   ``--concurrency``) enabled: messages per second from the enable until the queue is empty (visible and in
   flight both 0), read off GetQueueAttributes every 100 ms (each read counts the queue's messages, so
   it is not free: more often would measure the reads).
4. **Latency**: ``--latency`` messages sent one at a time, 30 ms apart, each carrying the client's clock
   just before its SendMessage; the handler prints its own clock at its start; the differences are read back
   from the function's log (FilterLogEvents). Next to it, the SendMessage round trip and a direct invoke's
   round trip measured in the same run.

Targets (issue 16): >= 2,000 messages/s through the mapping (batch 10, trivial handler) on a 2-vCPU machine;
SendMessage-to-handler-start p50 <= 10 ms with no batching window.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invoke import (
    ACCESS_KEY_ID,
    HOST,
    REGION,
    ROLE,
    SECRET_ACCESS_KEY,
    SelflessServer,
    handler_zip,
    lambda_client,
    machine_info,
    percentile,
    wait_configured,
    wait_until,
)
from sqs import floor, server_cpu

FUNCTION = "bench-esm"
HANDLER_SOURCE = '''"""Benchmark handler: prints when it started for each record that carries a send time."""
import time


def handler(event, context):
    now = time.time()
    for record in event.get("Records", ()):
        body = record.get("body", "")
        if body.startswith("t="):
            print("LAT", body[2:], now)
    return None
'''


def client(service: str, port: int) -> Any:
    return boto3.client(
        service,
        endpoint_url=f"http://{HOST}:{port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60, max_pool_connections=32),
    )


def sqs_event(n: int) -> bytes:
    records = [
        {
            "messageId": f"00000000-0000-0000-0000-{i:012d}",
            "receiptHandle": "x" * 120,
            "body": "x" * 64,
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
            "messageAttributes": {},
            "md5OfBody": "0" * 32,
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:bench",
            "awsRegion": "us-east-1",
        }
        for i in range(n)
    ]
    return json.dumps({"Records": records}).encode()


def invoke_floor(port: int, seconds: float, concurrency: int) -> float:
    """Direct invokes per second with a 10-record event, ``concurrency`` callers."""
    payload = sqs_event(10)
    counts = [0] * concurrency
    lam = lambda_client(port)

    def one(i: int) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            lam.invoke(FunctionName=FUNCTION, Payload=payload)
            counts[i] += 1

    for _ in range(concurrency * 2):  # warm the environments first
        lam.invoke(FunctionName=FUNCTION, Payload=payload)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def fill(sqs: Any, url: str, count: int) -> None:
    def part(first: int, last: int) -> None:
        for base in range(first, last, 10):
            entries = [{"Id": str(i), "MessageBody": "m" * 64} for i in range(min(10, last - base))]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)

    step = (count + 3) // 4
    threads = [threading.Thread(target=part, args=(i, min(i + step, count))) for i in range(0, count, step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def backlog(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_state(lam: Any, uuid: str, state: str) -> None:
    wait_until(f"mapping {state}", lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == state, 60.0)


def throughput(lam: Any, sqs: Any, url: str, uuid: str, count: int, pid: int) -> dict[str, Any]:
    fill(sqs, url, count)
    assert backlog(sqs, url) == count
    before = server_cpu(pid)
    start = time.perf_counter()
    lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    deadline = start + 600
    while backlog(sqs, url) > 0:
        if time.perf_counter() > deadline:
            raise RuntimeError("the queue was not drained in 10 minutes")
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    after = server_cpu(pid)
    cpu = sum(after.values()) - sum(before.values())
    return {"msgs_s": count / elapsed, "seconds": elapsed, "server_cpu_us_per_msg": cpu * 1e6 / count}


def latency(lam: Any, logs: Any, sqs: Any, url: str, count: int) -> dict[str, Any]:
    sends: list[float] = []
    for _ in range(count):
        t0 = time.time()
        sqs.send_message(QueueUrl=url, MessageBody=f"t={t0!r}")
        sends.append((time.time() - t0) * 1000)
        time.sleep(0.03)
    found: dict[str, float] = {}

    def collected() -> bool:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{FUNCTION}", "filterPattern": "LAT"}
            if token:
                kwargs["nextToken"] = token
            page = logs.filter_log_events(**kwargs)
            for event in page.get("events", []):
                parts = event["message"].split()
                if len(parts) >= 3 and parts[0] == "LAT":
                    found[parts[1]] = (float(parts[2]) - float(parts[1])) * 1000
            token = page.get("nextToken")
            if not token:
                break
        return len(found) >= count

    wait_until("every latency line in the log", collected, 60.0, interval_s=0.5)
    values = sorted(found.values())
    direct = []
    payload = sqs_event(1)
    for _ in range(count):
        t0 = time.perf_counter()
        lam.invoke(FunctionName=FUNCTION, Payload=payload)
        direct.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
        "send_p50_ms": percentile(sends, 0.5),
        "invoke_p50_ms": percentile(direct, 0.5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--floor-seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    executable = str(Path(sys.executable).parent / "selfless")
    with tempfile.TemporaryDirectory(prefix="selfless-bench-esm-") as tmp:
        data_dir = Path(tmp) / "data"
        server = SelflessServer(executable, data_dir, Path(tmp) / "server.log", {"SELFLESS_LOG_LEVEL": "warning"})
        try:
            server.wait_healthy()
            port = server.port
            lam, sqs, logs = client("lambda", port), client("sqs", port), client("logs", port)
            lam.create_function(
                FunctionName=FUNCTION,
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": handler_zip(HANDLER_SOURCE)},
                Timeout=30,
                MemorySize=1769,  # one full vCPU, as bench/invoke.py gives its functions
            )
            wait_configured(lam, FUNCTION)
            result: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"json": None}}
            floor_rows = floor(data_dir, args.floor_seconds, 64)
            result["floor_commit_msgs_s"] = floor_rows / 2
            result["floor_invoke_msgs_s"] = invoke_floor(port, args.floor_seconds, args.concurrency) * 10

            url = sqs.create_queue(QueueName="bench-throughput", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            uuid = lam.create_event_source_mapping(
                EventSourceArn=arn,
                FunctionName=FUNCTION,
                BatchSize=10,
                Enabled=False,
                ScalingConfig={"MaximumConcurrency": max(2, args.concurrency)},
            )["UUID"]
            wait_state(lam, uuid, "Disabled")
            result["throughput"] = throughput(lam, sqs, url, uuid, args.messages, server.proc.pid)
            lam.delete_event_source_mapping(UUID=uuid)

            url = sqs.create_queue(QueueName="bench-latency")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            uuid = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=FUNCTION, BatchSize=1)["UUID"]
            wait_state(lam, uuid, "Enabled")
            result["latency"] = latency(lam, logs, sqs, url, args.latency)
        finally:
            stopped = server.stop()
            if stopped.leftovers:
                print("leftover processes:", stopped.leftovers, file=sys.stderr)
    t, lat = result["throughput"], result["latency"]
    commits, invokes = result["floor_commit_msgs_s"], result["floor_invoke_msgs_s"]
    print(f"floor: commits {commits:,.0f} msgs/s, invoke {invokes:,.0f} msgs/s")
    print(
        f"through the mapping: {t['msgs_s']:,.0f} msgs/s ({t['msgs_s'] / result['floor_commit_msgs_s']:.2f}x commits, "
        f"{t['msgs_s'] / result['floor_invoke_msgs_s']:.2f}x invoke; target >= 2,000), "
        f"server CPU {t['server_cpu_us_per_msg']:.0f} µs/msg"
    )
    print(
        f"send -> handler start: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms (target p50 <= 10 ms); "
        f"SendMessage p50 {lat['send_p50_ms']:.2f} ms, direct invoke p50 {lat['invoke_p50_ms']:.2f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
