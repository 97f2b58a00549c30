"""Queue benchmark: the built-in queue service's send, receive and delete throughput next to its floor, the
fsync'd SQLite commits the same messages need, measured in the same run.

Run by hand from the project root (not a test)::

    .venv/bin/python bench/sqs.py [--seconds 5] [--clients 4] [--body 256] [--json out.json]

What it measures (this machine is shared and noisy: ratios mean more than absolute figures):

1. **Floor**: one thread committing batches of 10 rows of ``--body`` bytes to a SQLite database in WAL mode
   with ``synchronous=FULL`` (the server's settings), in the data directory's file system, for
   ``--seconds``: messages per second if every batch is one durable commit.
2. **SendMessageBatch**: ``--clients`` threads, each on its own keep-alive connection, sending batches of 10
   messages (AWS JSON 1.0 requests signed by botocore before the clock starts) for ``--seconds``.
3. **ReceiveMessage + DeleteMessageBatch**: the same clients receiving up to 10 messages and deleting what
   they got, until the queue is empty or ``--seconds`` pass (each request signed as it is made, as a consumer
   must: the receipt handles come from the receive).

Target (issue 16): the queue's throughput with batching >= 0.5x the floor's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invoke import ACCESS_KEY_ID, HOST, REGION, SECRET_ACCESS_KEY, SelflessServer, machine_info

CREDENTIALS = Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def signed(port: int, operation: str, params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(params).encode()
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}:{port}/",
        data=body,
        headers={"X-Amz-Target": f"AmazonSQS.{operation}", "Content-Type": "application/x-amz-json-1.0"},
    )
    SigV4Auth(CREDENTIALS, "sqs", REGION).add_auth(request)
    return body, dict(request.headers.items())


def call(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    conn.request("POST", "/", body=body, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{answer.status}: {data[:300]!r}")
    return dict(json.loads(data))


def floor(data_dir: Path, seconds: float, body: int) -> float:
    path = data_dir / "bench-sqs-floor.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, body BLOB)")
        rows = 0
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < end:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO m (body) VALUES (?)", [(os.urandom(body),) for _ in range(10)])
            db.execute("COMMIT")
            rows += 10
        return rows / (time.perf_counter() - start)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each of the server's threads, by thread name (same-named threads summed)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / ticks
    return out


def cpu_per_message(before: dict[str, float], after: dict[str, float], messages: float) -> dict[str, float]:
    """Microseconds of the server's CPU per message, by thread name."""
    return {
        name: round((after[name] - before.get(name, 0.0)) * 1e6 / messages, 1)
        for name in after
        if messages and after[name] - before.get(name, 0.0) > 0
    }


def run_clients(clients: int, port: int, work: Any) -> float:
    """Messages per second over ``clients`` threads, each running ``work(conn) -> messages handled``."""
    counts = [0] * clients
    errors: list[BaseException] = []

    def one(i: int, port: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            counts[i] = work(conn)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i, port)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--body", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    executable = str(Path(sys.executable).parent / "selfless")
    with tempfile.TemporaryDirectory(prefix="selfless-bench-sqs-") as tmp:
        data_dir = Path(tmp) / "data"
        server = SelflessServer(executable, data_dir, Path(tmp) / "server.log", {"SELFLESS_LOG_LEVEL": "warning"})
        try:
            server.wait_healthy()
            port = server.port
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
            url = call(conn, *signed(port, "CreateQueue", {"QueueName": "bench"}))["QueueUrl"]
            conn.close()
            result: dict[str, Any] = {"machine": machine_info()}
            result["floor_msgs_s"] = floor(data_dir, args.seconds, args.body)
            payload = "x" * args.body
            prepared_per_client = int(args.seconds * 2000 / 10 / args.clients) + 10

            def send(c: http.client.HTTPConnection) -> int:
                batches = [
                    signed(
                        port,
                        "SendMessageBatch",
                        {"QueueUrl": url, "Entries": [{"Id": str(n), "MessageBody": payload} for n in range(10)]},
                    )
                    for _ in range(prepared_per_client)
                ]
                sent = 0
                end = time.perf_counter() + args.seconds
                for body, headers in batches:
                    if time.perf_counter() >= end:
                        break
                    call(c, body, headers)
                    sent += 10
                return sent

            pid = server.proc.pid
            before, started = server_cpu(pid), time.perf_counter()
            result["send_msgs_s"] = run_clients(args.clients, port, send)
            sent_total = result["send_msgs_s"] * (time.perf_counter() - started)
            result["send_cpu_us_per_msg"] = cpu_per_message(before, server_cpu(pid), sent_total)

            def consume(c: http.client.HTTPConnection) -> int:
                done = 0
                end = time.perf_counter() + args.seconds
                while time.perf_counter() < end:
                    got = call(c, *signed(port, "ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10}))
                    messages = got.get("Messages") or []
                    if not messages:
                        break
                    entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
                    call(c, *signed(port, "DeleteMessageBatch", {"QueueUrl": url, "Entries": entries}))
                    done += len(messages)
                return done

            before, started = server_cpu(pid), time.perf_counter()
            result["receive_delete_msgs_s"] = run_clients(args.clients, port, consume)
            done_total = result["receive_delete_msgs_s"] * (time.perf_counter() - started)
            result["receive_delete_cpu_us_per_msg"] = cpu_per_message(before, server_cpu(pid), done_total)
        finally:
            stopped = server.stop()
            if stopped.leftovers:
                print(f"processes left behind: {stopped.leftovers}", file=sys.stderr)
    fl = result["floor_msgs_s"]
    print(f"floor: SQLite commits of 10-row batches (WAL, synchronous=FULL) {fl:9.0f} messages/s")
    print(f"SendMessageBatch (x10), {args.clients} clients          {result['send_msgs_s']:9.0f} messages/s  "
          f"{result['send_msgs_s'] / fl:.2f}x (target >= 0.5x)")  # fmt: skip
    print(f"ReceiveMessage + DeleteMessageBatch, {args.clients} clients {result['receive_delete_msgs_s']:9.0f} "
          f"messages/s  {result['receive_delete_msgs_s'] / fl:.2f}x")  # fmt: skip
    print(f"server CPU per message (µs, by thread): send {result['send_cpu_us_per_msg']}")
    print(f"  receive+delete {result['receive_delete_cpu_us_per_msg']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
