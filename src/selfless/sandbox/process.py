"""The plain-process sandbox backend: each environment is a process group of the server's own user.

What it gives: its own process group and session (so an environment and the children it leaves behind are
killed together), its own working copy of the code, its own TMPDIR (a tmpfs sized to EphemeralStorage when
the server may mount, else a plain directory), no inheritance of the server's environment variables or
file descriptors. What it does not give: memory, CPU and pids limits, freezing between invocations, or any
hiding of the host; that is the Linux sandbox backend's job (``selfless serve`` says so once at start-up).

The ``ChildReaper`` owns ``waitpid``: the server is a child subreaper, so environments' orphans are
re-parented to it, and every exited child (ours or adopted) is reaped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from selfless.artifacts.local import link_tree
from selfless.models import Function
from selfless.runtime.runtimes import BOOTSTRAP_DIR, Runtime
from selfless.sandbox.base import Layout

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_MNT_DETACH = 2

_libc: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def become_subreaper() -> bool:
    """Make orphaned descendants our children (Linux); False where unsupported."""
    try:
        return int(_get_libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class ChildReaper:
    """Reaps every child and resolves the future of the ones being watched.

    A watched child is noticed at once through a pidfd (readable when it exits); orphans adopted from
    environments are reaped by a sweep every second. (uvloop reserves SIGCHLD, so no signal handler.)"""

    _SWEEP_S = 1.0

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._pidfds: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sweeper = loop.call_later(self._SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self.reap()
        if self._loop is not None:
            self._sweeper = self._loop.call_later(self._SWEEP_S, self._sweep)

    def uninstall(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.reap()
        for pid in list(self._pidfds):
            self._forget_pidfd(pid)

    def watch(self, pid: int) -> asyncio.Future[int]:
        """Call right after spawning. The future gets the exit code (negative signal number when killed
        by a signal)."""
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiters[pid] = fut
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            pidfd = -1
        if pidfd >= 0:
            self._pidfds[pid] = pidfd
            loop.add_reader(pidfd, self.reap)
        # The child may already have exited before the watch was set up.
        self.reap()
        return fut

    def _forget_pidfd(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._forget_pidfd(pid)
            fut = self._waiters.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(os.waitstatus_to_exitcode(status))

    def adopted_children(self) -> list[int]:
        """Pids of live children that nobody watches (orphans re-parented to us)."""
        me = os.getpid()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # Field 4 (ppid) follows the parenthesised command, which may hold spaces.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == me and int(entry) not in self._waiters:
                found.append(int(entry))
        return found


class Process:
    """One spawned environment process: its pid, process group, merged stdout/stderr pipe and exit future.

    It is never frozen between invocations: only a cgroup catches every process an environment starts
    (a child that calls setsid leaves the process group, so SIGSTOP to the group would miss exactly the
    leftovers that matter), and this backend has none. What a function leaves running here keeps running."""

    runtime_connection: socket.socket | None = None
    runtime_listener: socket.socket | None = None
    runtime_handover: Callable[[socket.socket], None] | None = None
    freezable = False

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.exited = exited
        assert popen.stdout is not None
        self.output_fd = popen.stdout.fileno()
        self._status_fd: int | None = None
        os.set_blocking(self.output_fd, False)
        exited.add_done_callback(self._on_exit)

    def _on_exit(self, fut: asyncio.Future[int]) -> None:
        # Popen never waits for this child (the reaper does); record the code so it does not try to.
        if not fut.cancelled():
            self._popen.returncode = fut.result()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group. Idempotent; safe after exit."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def close_output(self) -> None:
        self.close_status()
        if self._popen.stdout is not None:
            with contextlib.suppress(OSError):
                self._popen.stdout.close()

    def peak_rss_mb(self) -> int | None:
        """Peak resident memory (VmHWM) in MB, rounded up; None when the process is gone.

        Read on every REPORT: the status file stays open and is re-read with pread (no open/close)."""
        try:
            if self._status_fd is None:
                self._status_fd = os.open(f"/proc/{self.pid}/status", os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(self._status_fd, 4096, 0)
        except OSError:
            return None
        start = data.find(b"VmHWM:")
        if start < 0:
            return None
        try:
            kb = int(data[start + 6 : data.index(b"kB", start)])
        except ValueError:
            return None
        return max(1, -(-kb // 1024))

    def init_done(self, memory_mb: int) -> None:
        """Nothing to tighten: this backend enforces no CPU limit."""

    def freeze(self) -> None:
        """Nothing: see the class docstring."""

    def thaw(self) -> None:
        """Nothing: see the class docstring."""

    def close_status(self) -> None:
        if self._status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._status_fd = None


def spawn(reaper: ChildReaper, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> Process:
    """Start an environment process in a new session; raises OSError when the executable cannot run."""
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    return Process(popen, reaper.watch(popen.pid))


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mount_tmpfs(path: Path, size_mb: int) -> bool:
    """Mount a tmpfs of ``size_mb`` on ``path``; False when not permitted."""
    libc = _get_libc()
    opts = f"size={size_mb}m,mode=1777".encode()
    rc = libc.mount(b"selfless-tmp", str(path).encode(), b"tmpfs", 0, opts)
    if rc != 0:
        err = ctypes.get_errno()
        log.debug("tmpfs mount on %s failed: %s", path, os.strerror(err))
        return False
    return True


def unmount(path: Path) -> None:
    """Detach a mount; idempotent."""
    _get_libc().umount2(str(path).encode(), _MNT_DETACH)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(found, key=lambda p: len(str(p)), reverse=True)


class ProcessBackend:
    """Environments as plain process groups of the server's user (see the module docstring)."""

    name = "process"

    def __init__(self, reaper: ChildReaper, mount_tmp: bool) -> None:
        self._reaper = reaper
        self._mount_tmp = mount_tmp
        self._mounted: set[Path] = set()
        self.runtime_packages: Path | None = None

    async def prepare(self, env_id: str, root: Path, code_tree: Path, function: Function) -> Layout:
        task_root = root / "task"
        tmp = root / "tmp"

        def make() -> None:
            root.mkdir(parents=True)
            link_tree(code_tree, task_root)
            tmp.mkdir(mode=0o1777)

        # In a thread: a 250 MB package of 20,000 files must not stall every other call on the loop.
        await asyncio.to_thread(make)
        if self._mount_tmp and mount_tmpfs(tmp, function.ephemeral_storage):
            self._mounted.add(tmp)
        packages = str(self.runtime_packages) if self.runtime_packages else None
        # No mount namespace here: the layers are read where the code store keeps them.
        opt = str(code_tree.parent.parent / "opt" / function.opt_key) if function.opt_key else "/opt"
        return Layout(str(task_root), str(tmp), str(BOOTSTRAP_DIR), packages, opt)

    async def spawn(
        self, env_id: str, root: Path, function: Function, runtime: Runtime, layout: Layout, env: Mapping[str, str]
    ) -> Process:
        task_root = Path(layout.task_root)
        return spawn(self._reaper, runtime.argv(task_root), env=env, cwd=task_root)

    async def release(self, env_id: str, root: Path) -> None:
        tmp = root / "tmp"
        if tmp in self._mounted:
            unmount(tmp)
            self._mounted.discard(tmp)
        # rmtree does not follow a symlink at the top (it refuses it); ignore_errors covers "never made".
        await asyncio.to_thread(shutil.rmtree, root, True)

    def templates_ready(self) -> int:
        return 0

    def retire(self, qualified_name: str, generation: int | None) -> None:
        """Nothing kept per function here (fork-after-init needs the linux backend)."""

    def describe(self) -> str:
        limits = "" if self._mount_tmp else "; /tmp sizes are not enforced (not root)"
        return (
            "sandbox: process: no memory/CPU/pids limits and no filesystem or process isolation" + limits + "; "
            "run only trusted functions (selfless serve --sandbox linux isolates them, as root)"
        )

    async def close(self) -> None:
        for tmp in list(self._mounted):
            unmount(tmp)
        self._mounted.clear()
