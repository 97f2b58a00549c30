"""Freeze benchmark: what freezing an idle environment and thawing it for its next call cost, on this host.

Run by hand from the project root, as root on Linux (not a test)::

    .venv/bin/python bench/freeze.py [--samples 300] [--idle-ms 20]

What it does: makes a cgroup the way the linux sandbox does (selfless's own ``Cgroups``, under a name of its
own, removed at the end) and puts one child in it that answers one byte on a socket pair, as a runtime
blocked at /next answers its event. Then, ``--samples`` times each, after ``--idle-ms`` of quiet:

- **plain**: send a byte, read the answer (the child was asleep in recv, not frozen): the floor;
- **frozen**: freeze (``LinuxProcess.freeze``), wait until the kernel says FROZEN, then thaw
  (``LinuxProcess.thaw``, the one pwrite on a call's path) and send a byte, read the answer;
- **frozen, sent first**: the same, but the byte is sent before the thaw (the answer to /next could be
  written into a frozen runtime's socket and the thaw come after: one wake-up instead of two);

and the freeze and thaw writes alone. All three with and without v1's ``keep-frozen`` cgroup (which keeps
the freezer's static key on, see ``cgroups.py``); on cgroup v2 there is no such key and both runs are alike.
Nothing is sent anywhere: a socket pair between this process and its child.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time

from selfless.sandbox.cgroups import Cgroups, CgroupsUnavailable
from selfless.sandbox.linux import LinuxProcess


def echo_child() -> tuple[int, socket.socket]:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ours.close()
        while True:
            data = theirs.recv(1)
            if not data:
                os._exit(0)
            theirs.sendall(data)
    theirs.close()
    return pid, ours


def measure(process: LinuxProcess, sock: socket.socket, samples: int, idle_s: float) -> dict[str, list[float]]:
    us: dict[str, list[float]] = {
        "plain round trip": [],
        "thaw + round trip": [],
        "send, thaw, read": [],
        "freeze write": [],
        "thaw write": [],
    }
    clock = time.perf_counter
    for _ in range(samples):
        time.sleep(idle_s)
        t0 = clock()
        sock.sendall(b"x")
        sock.recv(1)
        us["plain round trip"].append((clock() - t0) * 1e6)
        time.sleep(idle_s)
        t0 = clock()
        process.freeze()
        us["freeze write"].append((clock() - t0) * 1e6)
        deadline = time.monotonic() + 5
        while process.cgroup.freezer_state() != "FROZEN":
            if time.monotonic() > deadline:
                raise RuntimeError("the child did not freeze")
        time.sleep(idle_s)
        t0 = clock()
        process.thaw()
        t1 = clock()
        sock.sendall(b"x")
        sock.recv(1)
        t2 = clock()
        us["thaw write"].append((t1 - t0) * 1e6)
        us["thaw + round trip"].append((t2 - t0) * 1e6)
        time.sleep(idle_s)
        process.freeze()
        while process.cgroup.freezer_state() != "FROZEN":
            if time.monotonic() > deadline + 5:
                raise RuntimeError("the child did not freeze")
        time.sleep(idle_s)
        t0 = clock()
        sock.sendall(b"x")
        process.thaw()
        sock.recv(1)
        us["send, thaw, read"].append((clock() - t0) * 1e6)
    return us


def report(title: str, us: dict[str, list[float]]) -> None:
    print(title)
    for name, values in us.items():
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"  {name:<20} p50 {statistics.median(values):8.1f} us   p99 {p99:8.1f} us")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--idle-ms", type=float, default=20.0)
    args = p.parse_args()
    if not 1 <= args.samples <= 100_000 or not 0 <= args.idle_ms <= 1000:
        p.error("keep --samples in [1, 1e5] and --idle-ms in [0, 1000]")
    cgroups = Cgroups(f"selfless-bench-freeze-{os.getpid()}")
    try:
        cgroups.setup()
    except CgroupsUnavailable as exc:
        print(f"no cgroups here: {exc}", file=sys.stderr)
        return 1
    if cgroups.freezer_missing:
        print(f"no freezer here: {cgroups.freezer_missing}", file=sys.stderr)
        cgroups.close()
        return 1
    loop = asyncio.new_event_loop()
    pid, sock = echo_child()
    cgroup = cgroups.create("env", 1024)
    try:
        for procs in cgroup.procs_files:
            with open(procs, "w") as f:
                f.write(str(pid))
        process = LinuxProcess(pid, loop.create_future(), -1, cgroup)
        report(
            f"cgroup v{cgroups.version}, the static key turned at each freeze and thaw:",
            measure(process, sock, args.samples, args.idle_ms / 1000),
        )
        cgroups.keep_freezer_on()
        report("with keep-frozen (what selfless runs with):", measure(process, sock, args.samples, args.idle_ms / 1000))
    finally:
        sock.close()
        cgroup.kill_all()
        os.waitpid(pid, 0)
        cgroup.remove()
        cgroups.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
