"""Scale-out benchmark: a burst of concurrent calls to a cold function, next to a same-run floor.

Run by hand from the project root, as root (the Linux sandbox needs it), not as a test::

    .venv/bin/python bench/scale.py [--burst 200] [--sleep 1.0] [--rounds 3] [--json out.json]

1. **Burst**: ``--burst`` connections are opened first; then all of them send one signed invoke of a cold
   python3.12 function whose handler sleeps ``--sleep`` seconds and returns when it started
   (``time.time()``) and its environment's identity. Before each round the function's configuration changes,
   which retires its environments, so every round starts from zero. Wall time from the first send to the last
   answer (target for 200 x 1 s: <= 1.5 s, i.e. everything fans out at once); how many distinct environments
   served the burst (must be exactly ``--burst``: never more environments than requests, never fewer, or
   calls were queued); and the scale-out rate: when the k-th handler started, relative to the first send
   (0 -> N concurrent environments).
   With ``--fork`` the function is tagged ``selfless:ForkAfterInit=on``: after each configuration change one
   call starts an environment plainly and has the version's template made, the script waits until
   ``selfless_fork_templates_ready`` shows it (and for that environment to be idle), and the burst's new
   environments fork from the template instead of starting from the zygote.
2. **Floor**, same client, same round: the same burst against a bare uvloop server that answers each request
   after ``asyncio.sleep(--sleep)`` (the client's own cost plus the sleep).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from client import SigV4Signer, Target
from floors import RequestParser, _nodelay, _response
from invoke import ACCESS_KEY_ID, SECRET_ACCESS_KEY, free_port, lambda_client, machine_info, wait_configured
from sandbox import create, pct, start

SCALE = "bench-scale"
CLEANUP_MARK = Path(tempfile.gettempdir()) / "selfless-bench-scale-cleanup"
SLEEPER = """import os, time


def handler(event, context):
    started = time.time()
    time.sleep(event.get("sleep", 1.0))
    return {"started": started, "env": context.log_stream_name, "pid": os.getpid(),
            "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
"""


class _SleepProtocol(asyncio.Protocol):
    def __init__(self, sleep_s: float) -> None:
        self._sleep_s = sleep_s
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _nodelay(transport)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for _method, _path, body in self._parser.feed(data):
            asyncio.get_running_loop().call_later(self._sleep_s, self._answer, body)

    def _answer(self, body: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            started = json.dumps({"started": time.time() - self._sleep_s, "env": "floor", "pid": 0}).encode()
            self._transport.write(_response(b"200 OK", started))


def serve_sleep(port: int, sleep_s: float, max_seconds: float) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _SleepProtocol(sleep_s), "127.0.0.1", port, backlog=4096
        )
        async with server:
            await asyncio.sleep(max_seconds)

    uvloop.run(main())


async def _one(port: int, wire: bytes, go: asyncio.Event) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        await go.wait()
        writer.write(wire)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {body[:300]!r}")
        return time.time(), body
    finally:
        writer.close()


def busy_cpu_s() -> float:
    """CPU time the whole machine spent busy so far (every process, kernel included), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float:
    """CPU time (user + system, every thread) a process has used so far; 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def burst(port: int, wire: bytes, count: int, server_pid: int | None = None) -> dict[str, Any]:
    go = asyncio.Event()
    tasks = [asyncio.create_task(_one(port, wire, go)) for _ in range(count)]
    await asyncio.sleep(0.5)  # every connection is open before the clock starts
    cpu0 = busy_cpu_s()
    server0 = process_cpu_s(server_pid)
    t0 = time.time()
    go.set()
    results = await asyncio.gather(*tasks)
    cpu = busy_cpu_s() - cpu0
    server_cpu = process_cpu_s(server_pid) - server0
    wall = max(done for done, _ in results) - t0
    answers = [json.loads(body) for _, body in results]
    errors = [a for a in answers if "errorType" in a]
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed, e.g. {errors[0]}")
    starts = sorted(a["started"] - t0 for a in answers)
    return {
        "wall_s": round(wall, 3),
        "environments": len({a["env"] for a in answers}),
        "forked_environments": len({a["env"] for a in answers if a.get("init") == "snap-start"}),
        "first_start_ms": round(starts[0] * 1000, 1),
        "p50_start_ms": round(pct(starts, 50) * 1000, 1),
        "last_start_ms": round(starts[-1] * 1000, 1),
        "scale_rate_per_s": round(count / max(starts[-1], 1e-6), 1),
        # Machine-wide CPU over the burst per call: server, zygote, sandbox entry, the client, everything.
        "cpu_ms_per_call": round(cpu * 1000 / count, 2),
        # Of which the server process (every thread); the rest is templates, environments and the client.
        "server_cpu_ms_per_call": round(server_cpu * 1000 / count, 2),
    }


def templates_ready(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("selfless_fork_templates_ready "):
                return int(float(line.split()[1]))
    return 0


def wire_for(signer: SigV4Signer, port: int, path: str, body: bytes) -> bytes:
    target = Target("x", port, path)
    headers = signer.headers(target.host_header, path, body)
    headers["Content-Length"] = str(len(body))
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode("latin-1") + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", type=int, default=128)
    parser.add_argument("--fork", action="store_true", help="fork-after-init (see the docstring)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signer = SigV4Signer(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    body = json.dumps({"sleep": args.sleep}).encode()
    path = f"/2015-03-31/functions/{SCALE}/invocations"
    report: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"json": str(args.json)}, "rounds": []}
    # A previous run's data directory, deleted moments ago, would cost this one: ext4 without a journal
    # (this machine's root) passes over inodes freed in the last 60 s (6 minutes while their inode table
    # blocks are dirty) on every file it creates, ~35% of the server's CPU in a burst right after a run.
    # So: written back, then out of that window.
    os.sync()
    wait = CLEANUP_MARK.stat().st_mtime + 61 - time.time() if CLEANUP_MARK.exists() else 0
    if wait > 0:
        print(f"waiting {wait:.0f} s for the last run's deleted files to age", file=sys.stderr)
        time.sleep(wait)
    with tempfile.TemporaryDirectory(prefix="selfless-scale-") as tmp:
        server = start("linux", Path(tmp), ksm=False)  # as `selfless serve` runs by default
        floor_port = free_port()
        floor = multiprocessing.Process(target=serve_sleep, args=(floor_port, args.sleep, 3600), daemon=True)
        floor.start()
        try:
            lam = lambda_client(server.port)
            create(lam, SCALE, SLEEPER, args.memory)
            if args.fork:
                lam.tag_resource(
                    Resource=lam.get_function(FunctionName=SCALE)["Configuration"]["FunctionArn"],
                    Tags={"selfless:ForkAfterInit": "on"},
                )
            for i in range(args.rounds):
                lam.update_function_configuration(FunctionName=SCALE, Environment={"Variables": {"ROUND": str(i)}})
                wait_configured(lam, SCALE)
                time.sleep(1.0)  # the retired environments are gone
                if args.fork:
                    before = templates_ready(server.port)
                    lam.invoke(FunctionName=SCALE, Payload=b'{"sleep": 0}')
                    deadline = time.monotonic() + 30
                    while templates_ready(server.port) <= before:
                        if time.monotonic() > deadline:
                            raise RuntimeError("the fork-after-init template did not become ready")
                        time.sleep(0.05)
                    time.sleep(0.5)
                print(f"round {i}: burst", file=sys.stderr, flush=True)
                wire = wire_for(signer, server.port, path, body)
                ours = uvloop.run(burst(server.port, wire, args.burst, server.proc.pid))
                base = uvloop.run(burst(floor_port, wire_for(signer, floor_port, path, body), args.burst))
                row = {"selfless": ours, "floor": base, "ratio": round(ours["wall_s"] / base["wall_s"], 3)}
                report["rounds"].append(row)
                print(json.dumps(row), flush=True)
        except Exception:
            print(server.log_tail(40), file=sys.stderr)
            raise
        finally:
            floor.terminate()
            stopped = server.stop()
            if stopped.leftovers:
                print("left behind:", stopped.leftovers, file=sys.stderr)
    CLEANUP_MARK.touch()  # the data directory is gone: the next run waits for that to age (see above)
    walls = sorted(r["selfless"]["wall_s"] for r in report["rounds"])
    report["summary"] = {"wall_s_median": walls[len(walls) // 2], "wall_s_max": walls[-1]}
    print(json.dumps(report["summary"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
