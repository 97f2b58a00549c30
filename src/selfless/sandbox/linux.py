"""The Linux sandbox backend: environments forked from per-interpreter zygotes into namespaces and cgroups.

    server ──spawn spec + stdout pipe + netns (SCM_RIGHTS)──> zygote (one per interpreter, warm, single-threaded)
                                                                └─ fork ─> child: cgroups, its network namespace,
                                                                           mount/ipc/uts namespaces, read-only
                                                                           root, limits, unprivileged uid,
                                                                           seccomp, then the runtime

What a function sees: its code read-only at /var/task, the runtime (the bootstrap, boto3) read-only at
/var/runtime, a /tmp of EphemeralStorage size, the runtime's files read-only (/usr and the interpreter's
prefix), a /proc that shows only its own processes (each environment runs as its own uid), a minimal /dev,
and an /etc with only passwd, group, hosts, resolv.conf, nsswitch.conf and the CA certificates. Not the data
dir, not other functions, not the server's environment. Its network is a namespace of its own
(``network.py``): the Runtime API on 127.0.0.1:9001 and selfless's API on 127.0.0.1:9400 of its own
loopback, and a routed link to the outside world that reaches nothing of the host's and no other
environment.

The zygote reports each child's exit code; cgroups bound memory, CPU and pids, freeze an environment
between its invocations (``LinuxProcess.freeze``), and let every leftover process of an environment be
killed when it is retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from selfless.httpserver import HttpServer
from selfless.models import Function
from selfless.runtime.runtimes import BOOTSTRAP_DIR, Runtime
from selfless.sandbox import network
from selfless.sandbox.base import Layout
from selfless.sandbox.cgroups import (
    Cgroup,
    Cgroups,
    CgroupsAhead,
    CgroupsUnavailable,
    freeze_command,
    peak_mb_of,
    vcpus_for,
)
from selfless.sandbox.channel import read_messages, send_message
from selfless.sandbox.network import Netns, NetnsMaker, NetnsStock, NetworkUnavailable
from selfless.sandbox.peers import PeerLookup
from selfless.sandbox.scratch import Scratch, ScratchPool, ScratchUnavailable
from selfless.sandbox.scratch import check_support as scratch_support
from selfless.sandbox.templates import UIDS_PER_TEMPLATE, ForkedChild, SharedRuntimeApi, Template, TemplateFailed

log = logging.getLogger(__name__)

ZYGOTE = BOOTSTRAP_DIR / "zygote.py"
# Each running server holds one slot (an flock on /run/selfless/slot-<k>.lock, released when it dies) and
# with it a block of uids and its own cgroup parent: two servers on one host never share either.
UID_BASE = 10_000_000
UID_BLOCK = 65_536
SLOTS = 64
_SLOT_DIR = Path("/run/selfless")
_KSM_RUN = Path("/sys/kernel/mm/ksm/run")
SANDBOX_USER = "sbx_user1051"
# A function tagged with this key and the value "none" runs without any network (see the README).
NETWORK_MODE_TAG = "selfless:NetworkMode"
_SPAWN_TIMEOUT_S = 10.0
_ZYGOTE_START_TIMEOUT_S = 30.0


FORK_AFTER_INIT_TAG = "selfless:ForkAfterInit"
# Children each template keeps forked ahead (in their cgroups, waiting for an environment).
TEMPLATE_AHEAD = 2
# ... forked once no environment was forked from it for this long: in a burst, a child forked ahead (primed,
# through worker threads) is taken at once by the next call, which is only the same start made dearer.
TEMPLATE_AHEAD_QUIET_S = 0.05
# Cgroups made ahead for forked environments (CgroupsAhead): at first this many per memory size, then as
# many as the largest burst forked between two quiet moments; a stock no start took from for STOCK_IDLE_S goes.
CGROUPS_AHEAD_FIRST = 16
CGROUPS_STOCK_IDLE_S = 600.0
# A forked child's page tables (~128 KB for a Python process) stay charged to the template's cgroup.
TEMPLATE_HEADROOM_MB = UIDS_PER_TEMPLATE // 4


def forks_after_init(function: Function) -> bool:
    """Published versions with SnapStart ApplyOn PublishedVersions, and $LATEST tagged
    ``selfless:ForkAfterInit=on``: their new environments fork from a post-init template."""
    if function.version == "$LATEST":
        return function.tags.get(FORK_AFTER_INIT_TAG, "").lower() in ("on", "true", "1", "yes")
    snap_start = function.extra.get("SnapStart") or {}
    return isinstance(snap_start, dict) and snap_start.get("ApplyOn") == "PublishedVersions"


def _join_cgroup(cgroup: Cgroup, pid: int) -> None:
    for procs in cgroup.procs_files:
        with open(procs, "w") as f:
            f.write(str(pid))


async def _nothing() -> None:
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@functools.cache
def _prefix_of(interpreter: str) -> str:
    """The installation prefix of an interpreter (``<prefix>/bin/python3.X``)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(interpreter)))


class SandboxUnavailable(RuntimeError):
    """The kernel or the privileges here do not allow the Linux sandbox; the message says exactly why."""


def check_support() -> None:
    """Raise SandboxUnavailable naming the first missing piece."""
    if sys.platform != "linux":
        raise SandboxUnavailable(f"the linux sandbox needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise SandboxUnavailable("the linux sandbox needs root (mounts, cgroups and uid changes); run as root")
    libc = ctypes.CDLL(None, use_errno=True)
    probe = os.fork()
    if probe == 0:  # pragma: no cover - runs in the probe child
        rc = libc.unshare(0x00020000 | 0x08000000 | 0x04000000 | network.CLONE_NEWNET)
        os._exit(0 if rc == 0 else ctypes.get_errno() or 1)
    _, status = os.waitpid(probe, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SandboxUnavailable(f"unshare(mount, ipc, uts, network namespaces) failed: {os.strerror(code)}")
    if not hasattr(os, "pidfd_open"):
        raise SandboxUnavailable("pidfd_open is missing (Linux 5.3 or newer is needed)")


class LinuxProcess:
    """A sandboxed runtime as the server sees it: pid, exit future (from the zygote), output pipe, cgroup."""

    def __init__(
        self,
        pid: int,
        exited: asyncio.Future[int],
        output_fd: int,
        cgroup: Cgroup,
        runtime_connection: socket.socket | None = None,
        cpu_limited: bool = False,
        runtime_listener: socket.socket | None = None,
    ) -> None:
        """``cpu_limited``: the CPU quota is set already (an environment forked after init has no init).
        ``runtime_listener``: where its Runtime API is to be served (127.0.0.1:9001 of its namespace)."""
        self.pid = pid
        self.exited = exited
        self.output_fd = output_fd
        self.cgroup = cgroup
        self.runtime_connection = runtime_connection
        self.runtime_listener = runtime_listener
        self.runtime_handover: Callable[[socket.socket], None] | None = None
        self._cpu_limited = cpu_limited
        self.freezable = cgroup.freezer is not None
        # The freezer file, open from the first freeze on: a thaw on a call's path is then one pwrite.
        self._freezer_fd = -1
        self._frozen = False
        # The cgroup's peak-memory file, open from the first REPORT on (one pread per call) until the kill.
        self._peak_fd = -1
        self._killed = False

    def freeze(self) -> None:
        freezer = self.cgroup.freezer
        if not self.freezable or freezer is None:
            return
        try:
            if self._freezer_fd < 0:
                self._freezer_fd = os.open(freezer, os.O_WRONLY | os.O_CLOEXEC)
            os.pwrite(self._freezer_fd, freeze_command(self.cgroup.version, True), 0)
            self._frozen = True
        except OSError as exc:  # the cgroup went (the environment is on its way out)
            log.debug("could not freeze %s: %s", self.cgroup.freezer, exc)

    def thaw(self) -> None:
        if self._frozen:
            self._frozen = False
            with contextlib.suppress(OSError):
                os.pwrite(self._freezer_fd, freeze_command(self.cgroup.version, False), 0)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if sig == signal.SIGKILL:
            self.cgroup.kill_all()  # thaws too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, sig)
        # Signalled first, thawed second: a frozen task acts on no signal until thawed, and then acts on this
        # one before anything else. An environment that was signalled is never frozen again.
        self.thaw()
        self.freezable = False
        self._killed = True
        for fd in (self._freezer_fd, self._peak_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._freezer_fd = self._peak_fd = -1

    def close_output(self) -> None:
        """Once (see Scratch.close for what a second close of a number does)."""
        fd, self.output_fd = self.output_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def peak_rss_mb(self) -> int | None:
        if self._killed:
            return self.cgroup.peak_mb()
        try:
            if self._peak_fd < 0:
                self._peak_fd = os.open(self.cgroup.peak_file, os.O_RDONLY | os.O_CLOEXEC)
            return peak_mb_of(os.pread(self._peak_fd, 32, 0))
        except (OSError, ValueError):
            return None

    def init_done(self, memory_mb: int) -> None:
        """From here on the CPU quota is in proportion to memory."""
        if not self._cpu_limited:
            self.cgroup.set_cpu(vcpus_for(memory_mb))


class Zygote:
    """One warm zygote process and the control socket to it."""

    def __init__(self, interpreter: str, preload: str, packages: Path | None) -> None:
        self.interpreter = interpreter
        self._preload = preload
        self._packages = packages
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._early_exits: dict[int, int] = {}
        self._spare_replies: dict[str, asyncio.Future[int]] = {}
        # Spares forked and not yet used; one that dies unused leaves this set.
        self.spare_pids: set[int] = set()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_lock = asyncio.Lock()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "SELFLESS_ZYGOTE_FD": str(theirs.fileno()),
            "SELFLESS_ZYGOTE_PRELOAD": self._preload,
        }
        fds = [theirs.fileno()]
        view = -1
        try:
            if self._packages is not None:
                # /var/runtime, in the zygote's own view. A descriptor, not a path: every environment forked
                # from the zygote shows the zygote's original environment block in /proc/self/environ.
                view = os.open(self._packages, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                env["SELFLESS_RUNTIME_VIEW_FD"] = str(view)
                fds.append(view)
            self._proc = self._popen(env, fds)
        finally:
            theirs.close()
            if view >= 0:
                os.close(view)
        ours.setblocking(False)
        self._sock = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(_ZYGOTE_START_TIMEOUT_S):
                await self._ready
        except BaseException:
            await self.close()
            raise

    def _popen(self, env: dict[str, str], fds: list[int]) -> subprocess.Popen[bytes]:
        # Once per interpreter and server run; a fork+exec of ~1 ms is fine on the loop.
        return subprocess.Popen(
            [self.interpreter, "-I", "-S", "-u", str(ZYGOTE)],
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=fds,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self._sock is not None and self._proc is not None and self._proc.poll() is None

    def _on_readable(self) -> None:
        if self._sock is not None:
            read_messages(self._sock, self._dispatch, self._lost)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "ready" in msg:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg)
        elif "spare" in msg:
            waiting = self._spare_replies.pop(str(msg["spare"]), None)
            if waiting is not None and not waiting.done():
                if "error" in msg:
                    waiting.set_exception(OSError(msg["error"]))
                else:
                    self.spare_pids.add(int(msg["pid"]))
                    waiting.set_result(int(msg["pid"]))
        elif "exit" in msg:
            pid, code = int(msg["exit"]), int(msg["code"])
            if pid in self.spare_pids:  # a spare that died unused: nobody waits for it
                self.spare_pids.discard(pid)
                return
            fut = self._exits.pop(pid, None)
            if fut is None:
                self._early_exits[pid] = code
            elif not fut.done():
                fut.set_result(code)
        elif "id" in msg:
            if "pid" in msg:
                # From now on it is an environment: its exit must reach whoever awaits it.
                self.spare_pids.discard(int(msg["pid"]))
            reply = self._replies.pop(int(msg["id"]), None)
            if reply is not None and not reply.done():
                reply.set_result(msg)

    def _lost(self) -> None:
        log.error("zygote for %s exited", self.interpreter)
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        waiting: list[asyncio.Future[Any]] = [*self._replies.values(), *self._spare_replies.values()]
        for fut in waiting + ([self._ready] if self._ready else []):
            if not fut.done():
                fut.set_exception(OSError("the zygote went away"))
        # Its children are now ours (the server is their subreaper) and die with their cgroups.
        for fut2 in self._exits.values():
            if not fut2.done():
                fut2.set_result(-signal.SIGKILL)
        self._exits.clear()

    async def spare(self, token: str, cgroup_procs: list[str]) -> int:
        """Fork a spare into these cgroups; its pid."""
        if self._sock is None or self._loop is None:
            raise OSError("the zygote is not running")
        reply: asyncio.Future[int] = self._loop.create_future()
        self._spare_replies[token] = reply
        async with asyncio.timeout(_SPAWN_TIMEOUT_S):
            await self._send(json.dumps({"op": "spare", "token": token, "cgroup_procs": cgroup_procs}).encode())
            return await reply

    async def _send(self, payload: bytes, fds: list[int] | None = None) -> None:
        """One message to the zygote; a burst of spawns can fill its queue: then senders wait their turn."""
        if self._sock is None or self._loop is None:
            raise OSError("the zygote is not running")
        await send_message(self._sock, self._loop, self._send_lock, payload, fds or [])

    async def spawn(
        self, spec: dict[str, Any], fds: dict[str, int], spare: str | None = None
    ) -> tuple[int, asyncio.Future[int]]:
        """Fork a child for ``spec`` with these descriptors: "out" (its stdout), "netns" (the network namespace
        it enters), "control" (a fork-after-init template's socket); see zygote.py."""
        if self._sock is None or self._loop is None:
            raise OSError("the zygote is not running")
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[request_id] = reply
        doc: dict[str, Any] = {"op": "spawn", "id": request_id, "spec": spec, "fds": list(fds)}
        if spare is not None:
            doc["spare"] = spare
        async with asyncio.timeout(_SPAWN_TIMEOUT_S):
            await self._send(json.dumps(doc).encode(), list(fds.values()))
            msg = await reply
        if "error" in msg:
            raise OSError(f"zygote could not fork: {msg['error']}")
        pid = int(msg["pid"])
        exited: asyncio.Future[int] = self._loop.create_future()
        if pid in self._early_exits:
            exited.set_result(self._early_exits.pop(pid))
        else:
            self._exits[pid] = exited
        return pid, exited

    async def close(self) -> None:
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 5)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        elif proc is not None:
            proc.wait()


class LinuxBackend:
    name = "linux"

    def __init__(
        self,
        data_dir: Path,
        fallback_interpreter: str,
        preload: str = "",
        spares: int = 2,
        ksm: bool = False,
        egress: str = "public",
        sandbox_network: str = network.DEFAULT_NETWORK,
    ) -> None:
        """``egress``: what environments reach outside (network.EGRESS_MODES); ``sandbox_network``: the
        addresses their links take (each server slot gets an equal share)."""
        self._ksm = ksm
        self._egress = egress
        self._sandbox_network = ipaddress.IPv4Network(sandbox_network)
        self._firewall: network.Firewall | None = None
        self._maker: NetnsMaker | None = None
        self._netns_stock: NetnsStock | None = None
        self._network_note = ""
        # Each environment's (and template's) network namespace, and the server for selfless's API inside it.
        self._netns: dict[str, Netns] = {}
        self._doors: dict[str, HttpServer] = {}
        self._tenants: dict[str, str] = {}  # environment -> its function's name (whose namespaces it may reuse)
        # Templates' shared Runtime API addresses, and the environments forked from them (by id).
        self._shared_apis: dict[str, SharedRuntimeApi] = {}
        self._forked_processes: dict[str, LinuxProcess] = {}
        # Serves selfless's API on a listening socket inside a namespace (set by the composition root).
        self.serve_api: Callable[[socket.socket], HttpServer] | None = None
        self._ksm_restore: str | None = None
        self._scratch: ScratchPool | None = None
        self._scratches: dict[str, Scratch] = {}
        # Fork-after-init: a template per opted-in version, the uid blocks they take, and which template
        # (and uid index) each forked environment came from.
        self._templates: dict[str, Template] = {}
        self._template_blocks: list[int] = []
        self._forked: dict[str, tuple[Template, int]] = {}
        self._template_tasks: set[asyncio.Task[None]] = set()
        self._cgroups_ahead: CgroupsAhead | None = None
        self._cgroup_fills: dict[int, asyncio.Task[None]] = {}
        self._stock_used: dict[int, float] = {}  # memory size -> when a start last took from its stock
        self._stock_trim: asyncio.TimerHandle | None = None
        # Where each child mounts its root, in its own mount namespace: one empty directory for all.
        self._mount_point = data_dir / "sandbox" / "root"
        self._data_dir = data_dir
        self._fallback_interpreter = fallback_interpreter
        self._preload = preload
        self.cgroups = Cgroups()
        self.runtime_packages: Path | None = None
        self._slot_file: Any = None
        self.slot = -1
        self._zygotes: dict[str, Zygote] = {}
        self._zygote_locks: dict[str, asyncio.Lock] = {}
        self._free_uids: list[int] = []
        self._uids: dict[str, int] = {}
        self._cgroups: dict[str, Cgroup] = {}
        self._etc_static: dict[str, str] = {}
        # Children forked ahead per zygote, already in their (limitless) cgroups: (token, pid, cgroup).
        self._spares: dict[str, list[tuple[str, int, Cgroup]]] = {}
        self._spares_per_zygote = spares
        self._spare_ids = itertools.count(1)
        self._replenishing: set[str] = set()
        self._spare_tasks: set[asyncio.Task[None]] = set()
        self._base_binds: list[tuple[str, str, bool]] = []
        self._symlinks: list[tuple[str, str]] = []

    def setup(self, max_environments: int) -> None:
        """Check the kernel, set up cgroups and the parts of every root that never change."""
        check_support()
        self.slot = self._take_slot()
        self.cgroups = Cgroups(f"selfless-{self.slot}")
        try:
            self.cgroups.setup()
        except CgroupsUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from exc
        self.cgroups.sweep()
        if self.cgroups.freezer_missing is not None:
            log.warning(
                "environments are not frozen between invocations (what a function leaves running keeps running): %s",
                self.cgroups.freezer_missing,
            )
        else:
            self.cgroups.keep_freezer_on()
        self._cgroups_ahead = CgroupsAhead(self.cgroups)
        try:
            self._scratch = ScratchPool(self._data_dir / "scratch", scratch_support())
            self._scratch.open()
        except ScratchUnavailable as exc:
            log.warning("/tmp falls back to tmpfs (it then counts against memory): %s", exc)
            self._scratch = None
        if self._ksm:
            self._start_ksm()
        self._mount_point.mkdir(mode=0o755, parents=True, exist_ok=True)
        base = UID_BASE + self.slot * UID_BLOCK
        self._free_uids = list(range(base + min(max_environments, UID_BLOCK) - 1, base - 1, -1))
        # Template uid blocks come from the top of the server's block, clear of environments' uids.
        blocks = (UID_BLOCK - min(max_environments, UID_BLOCK)) // UIDS_PER_TEMPLATE
        self._template_blocks = list(range(min(blocks, 128) - 1, -1, -1))
        for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            host = Path("/") / name
            if host.is_symlink():
                self._symlinks.append((os.readlink(host), "/" + name))
            elif host.is_dir():
                self._base_binds.append((str(host), "/" + name, True))
        self._base_binds.insert(0, ("/usr", "/usr", True))
        for cert_dir in ("/etc/ssl", "/etc/ca-certificates", "/etc/pki"):
            if os.path.isdir(cert_dir):
                self._base_binds.append((cert_dir, cert_dir, True))
        resolv = network.resolv_conf_for_environments()
        self._etc_static = {
            "hosts": "127.0.0.1 localhost\n::1 localhost\n",
            "resolv.conf": resolv,
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        }
        self._setup_network(resolv)

    def _setup_network(self, resolv: str) -> None:
        """The slot's firewall (egress through the host) and the namespace maker. Without nftables
        environments still get namespaces of their own, only with no way out."""
        plan: network.EgressPlan | None = None
        if self._egress != "none":
            try:
                plan = network.EgressPlan(
                    self._egress,
                    network.slot_subnet(self._sandbox_network, self.slot, SLOTS),
                    f"{network.IF_PREFIX}{self.slot}x",
                    network.host_resolvers(resolv),
                )
                self._firewall = network.Firewall(self.slot, plan)
                self._firewall.apply()
                self._network_note = f"egress {self._egress} through {plan.subnet}"
            except NetworkUnavailable as exc:
                log.warning("functions get no outbound network: %s (install nftables for it)", exc)
                self._firewall = None
                plan = None
                self._network_note = f"no outbound network ({exc})"
        else:
            self._network_note = "no outbound network (SELFLESS_EGRESS=none)"
        self._maker = NetnsMaker(plan)
        try:
            self._maker.start()
        except OSError as exc:
            raise SandboxUnavailable(f"cannot make network namespaces: {exc}") from exc
        self._netns_stock = NetnsStock(self._maker)

    def _start_ksm(self) -> None:
        """Run ksmd while we serve (environments are mergeable: see sandbox_enter.mergeable)."""
        try:
            previous = _KSM_RUN.read_text().strip()
            if previous == "0":
                _KSM_RUN.write_text("1")
                self._ksm_restore = previous
        except OSError as exc:
            log.warning("SELFLESS_KSM: cannot start ksmd (%s); environments stay unmerged", exc)

    def _take_slot(self) -> int:
        try:
            _SLOT_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot create {_SLOT_DIR}: {exc.strerror}") from exc
        for slot in range(SLOTS):
            f = open(_SLOT_DIR / f"slot-{slot}.lock", "a+")  # noqa: SIM115 - held for the server's life
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self._slot_file = f
            return slot
        raise SandboxUnavailable(f"all {SLOTS} sandbox slots are held by other selfless servers on this host")

    def describe(self) -> str:
        return (
            f"sandbox: linux (cgroup v{self.cgroups.version}; mount/ipc/uts/network namespaces, read-only root, "
            "per-environment uid, seccomp; memory, CPU and pids limits"
            f"{'' if self.cgroups.freezer_missing else '; frozen between invocations'}; {self._network_note})"
        )

    async def prewarm(self, interpreters: list[str]) -> None:
        """Start these zygotes now (one after another), so no first call waits for them."""
        if self._scratch is not None:
            self._scratch.refill()
        if self._netns_stock is not None:
            self._netns_stock.prime(network.OPEN)
        for interpreter in interpreters:
            try:
                self._replenish(await self._zygote(interpreter))
            except (OSError, TimeoutError) as exc:
                log.warning("zygote for %s did not start: %s", interpreter, exc)

    async def _zygote(self, interpreter: str, *, bare: bool = False) -> Zygote:
        """The interpreter's zygote (with the preloaded modules), or with ``bare`` its zygote for
        fork-after-init templates, which preloads nothing: a template holds what its function's init
        imports and no more, as every page and mapping it holds is copied at each fork (a python3.12
        with boto3 imported forks in ~1.9 ms of CPU, without it in ~0.5 ms)."""
        key = f"{interpreter} (templates)" if bare else interpreter
        lock = self._zygote_locks.setdefault(key, asyncio.Lock())
        async with lock:
            z = self._zygotes.get(key)
            if z is None or not z.alive:
                if z is not None:
                    await z.close()
                z = Zygote(interpreter, "" if bare else self._preload, self.runtime_packages)
                await z.start()
                self._zygotes[key] = z
            return z

    async def prepare(self, env_id: str, root: Path, code_tree: Path, function: Function) -> Layout:
        # Nothing on disk per environment: every child mounts its root on the one shared mount point, in
        # a mount namespace of its own (host directory churn under a burst of cold starts costs journal
        # waits on the event loop).
        host, port = network.RUNTIME_API
        api_host, api_port = network.API
        return Layout(
            "/var/task",
            "/tmp",
            "/var/runtime",
            "/var/runtime",
            runtime_api=f"{host}:{port}",
            api_url=f"http://{api_host}:{api_port}",
        )

    async def spawn(
        self, env_id: str, root: Path, function: Function, runtime: Runtime, layout: Layout, env: Mapping[str, str]
    ) -> LinuxProcess:
        if not self._free_uids:
            raise OSError("no free sandbox uid")
        if not runtime.is_python and not _executable(self._code_tree_of(root, function) / "bootstrap"):
            raise FileNotFoundError(2, "no executable bootstrap in the package")
        cut = function.tags.get(NETWORK_MODE_TAG, "").lower() == "none"
        interpreter = runtime.interpreter or self._fallback_interpreter
        zygote = await self._zygote(interpreter)
        if runtime.is_python and not cut and forks_after_init(function):
            template = self._templates.get(function.qualified_name)
            if template is not None and (template.generation != function.generation or template.died):
                self._retire_template(template)  # a template that died after it was ready is made again
                template = None
            if template is not None and template.usable:
                return await self._fork(env_id, template, function, env)
            if template is None:
                self._start_template(interpreter, root, function, runtime, env)
        uid = self._free_uids.pop()
        self._uids[env_id] = uid
        spare = self._take_spare(zygote)
        token = spare[0] if spare is not None else None
        self._replenish(zygote)
        # cgroupfs and disk work in threads, the namespace made ahead (or by its own thread), all at once:
        # under a burst of cold starts they would otherwise queue behind each other on the event loop.
        cgroup_made = asyncio.to_thread(self._cgroup_for, env_id, spare, function.memory_size)
        netns_taken = self._netns_for(env_id, network.CLOSED if cut else network.OPEN, function.name)
        scratch_taken = self._scratch.take(function.ephemeral_storage) if self._scratch is not None else _nothing()
        done = await asyncio.gather(cgroup_made, netns_taken, scratch_taken, return_exceptions=True)
        if isinstance(done[2], Scratch):
            self._scratches[env_id] = done[2]
        for result in done:
            if isinstance(result, BaseException):
                raise result  # what was made is recorded: ``release`` frees it
        cgroup, netns = self._cgroups[env_id], self._netns[env_id]
        spec = self._spec(env_id, root, function, runtime, interpreter, uid, env)
        spec["cgroup_procs"] = [] if token is not None else cgroup.procs_files
        fds = {"out": -1, "netns": netns.fd}
        ours: socket.socket | None = None
        if runtime.is_python:
            # selfless's own Python runtime talks to its Runtime API over a Unix socket pair made here
            # (AWS_LAMBDA_RUNTIME_API, served inside the namespace from its init on, is there for anything
            # else): a call then costs the server and the runtime a loopback TCP exchange less each way.
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds["api"] = theirs.fileno()
            spec["runtime_api_fd"] = True
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        fds["out"] = write_fd
        try:
            pid, exited = await zygote.spawn(spec, fds, token)
        except BaseException:
            os.close(read_fd)
            if ours is not None:
                ours.close()
            raise
        finally:
            os.close(write_fd)
            if ours is not None:
                theirs.close()
        os.set_blocking(read_fd, False)
        self._open_door(env_id, netns)
        return LinuxProcess(pid, exited, read_fd, cgroup, runtime_connection=ours, runtime_listener=netns.runtime)

    async def _netns_for(self, env_id: str, kind: network.Kind, tenant: str) -> Netns:
        """A namespace of ``kind`` for ``env_id`` of function ``tenant`` (recorded at once, for ``release``)."""
        if self._netns_stock is None:
            raise OSError("the sandbox is not set up")
        netns = await self._netns_stock.get(kind, tenant)
        self._netns[env_id] = netns
        self._tenants[env_id] = tenant
        return netns

    def _open_door(self, owner: str, netns: Netns) -> None:
        """selfless's API, served on the listener inside ``netns`` (once something connects to it)."""
        if netns.api is not None and self.serve_api is not None:
            self._doors[owner] = self.serve_api(netns.api)
            netns.api = None  # the door owns it now

    def _runtime_taker(self, uid: int) -> Callable[[socket.socket], None] | None:
        """Where a Runtime API connection that ``uid`` made in a template's namespace goes."""
        for env_id, owner in self._uids.items():
            if owner == uid:
                process = self._forked_processes.get(env_id)
                return process.runtime_handover if process is not None else None
        return None

    def _close_network(self, owner: str, *, emptied: bool = False) -> None:
        """``emptied``: no process of the owner is left in its namespace (its cgroup is gone): the namespace
        goes to the owner's function's next environment."""
        shared = self._shared_apis.pop(owner, None)
        if shared is not None:
            shared.close()
        door = self._doors.pop(owner, None)
        if door is not None:
            door.close_all()
        tenant = self._tenants.pop(owner, None)
        netns = self._netns.pop(owner, None)
        if netns is not None and self._netns_stock is not None:
            if emptied and tenant is not None:
                self._netns_stock.recycle(netns, tenant)
            else:
                self._netns_stock.give_back(netns)

    def _spec(
        self,
        env_id: str,
        root: Path,
        function: Function,
        runtime: Runtime,
        interpreter: str,
        uid: int,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        """What the zygote's child needs to enter the sandbox and start the runtime."""
        binds = list(self._base_binds)
        prefix = _prefix_of(interpreter)
        if runtime.is_python and not prefix.startswith("/usr"):
            binds.append((prefix, prefix, True))
        binds.append((str(self._code_tree_of(root, function)), "/var/task", True))
        # The zygote's own view of the runtime directory (it imported the bootstrap and boto3 from there).
        view = "/var/runtime" if self.runtime_packages is not None else str(BOOTSTRAP_DIR)
        binds.append((view, "/var/runtime", True))
        if function.opt_key is not None:
            binds.append((str(self._data_dir / "code" / "opt" / function.opt_key), "/opt", True))
        etc = dict(self._etc_static)
        etc["passwd"] = f"root:x:0:0:root:/root:/sbin/nologin\n{SANDBOX_USER}:x:{uid}:{uid}::/tmp:/sbin/nologin\n"
        etc["group"] = f"root:x:0:\n{SANDBOX_USER}:x:{uid}:\n"
        spec: dict[str, Any] = {
            "root_dir": str(self._mount_point),
            "binds": binds,
            "symlinks": self._symlinks,
            "tmp_mb": function.ephemeral_storage,
            "tmp_device": self._scratches[env_id].device if env_id in self._scratches else None,
            "etc": etc,
            "uid": uid,
            "gid": uid,
            "hostname": "localhost",
            "cwd": "/var/task",
            "env": dict(env),
        }
        if not runtime.is_python:
            spec["exec"] = ["/var/task/bootstrap"]
        return spec

    # -- fork-after-init ----------------------------------------------------------------------------------

    def _start_template(
        self, interpreter: str, root: Path, function: Function, runtime: Runtime, env: Mapping[str, str]
    ) -> None:
        """Make the version's template in the background; calls meanwhile start environments as usual."""
        if not self._template_blocks:
            log.warning("no uid block left for a fork-after-init template of %s", function.arn)
            return
        block = self._template_blocks.pop()
        base = UID_BASE + self.slot * UID_BLOCK + UID_BLOCK - (block + 1) * UIDS_PER_TEMPLATE
        template = Template(function.qualified_name, function.generation, base, block)
        self._templates[function.qualified_name] = template

        async def make() -> None:
            try:
                zygote = await self._zygote(interpreter, bare=True)
                # Headroom over the function's memory for its children's page tables, charged here at fork.
                cgroup = await asyncio.to_thread(
                    self.cgroups.create,
                    f"template-{block}-{function.generation}",
                    function.memory_size + TEMPLATE_HEADROOM_MB,
                )
                template.cgroup = cgroup
                # One namespace for the template and every environment forked from it (one function's):
                # their Runtime API connections are made at fork, so only selfless's API is served in it.
                netns = await self._netns_stock.fresh(network.OPEN, with_diag=True) if self._netns_stock else None
                if netns is None:
                    raise OSError("the sandbox is not set up")
                self._netns[template.owner] = netns
                spec = self._spec(template.owner, root, function, runtime, zygote.interpreter, base, env)
                spec["cgroup_procs"] = cgroup.procs_files
                spec["template"] = {"uid_base": base, "count": UIDS_PER_TEMPLATE}
                spec["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                try:
                    fds = {"out": write_fd, "control": theirs.fileno(), "netns": netns.fd}
                    pid, exited = await zygote.spawn(spec, fds)
                except BaseException:
                    ours.close()
                    os.close(read_fd)
                    raise
                finally:
                    theirs.close()
                    os.close(write_fd)
                    netns.close_fd()
                os.set_blocking(read_fd, False)
                self._open_door(template.owner, netns)
                if netns.diag is not None:
                    peers = PeerLookup(netns.diag)
                    self._shared_apis[template.owner] = SharedRuntimeApi(netns.runtime, peers, self._runtime_taker)
                template.attach(pid, exited, ours, read_fd)
                init_ms = await asyncio.wait_for(asyncio.shield(template.ready), max(10.0, float(function.timeout)))
                log.info("fork-after-init template of %s ready (init %.1f ms)", function.qualified_name, init_ms)
                await asyncio.to_thread(cgroup.set_fork_server_cpu)
                self._replenish_template(template, function)
            except (OSError, TimeoutError, TemplateFailed) as exc:
                log.warning("no fork-after-init template for %s: %s", function.qualified_name, exc)
                if not template.ready.done():
                    template.ready.set_exception(TemplateFailed("Runtime.Unknown", str(exc)))
                self._retire_template(template)

        self._in_background(make())

    async def _fork(self, env_id: str, template: Template, function: Function, env: Mapping[str, str]) -> LinuxProcess:
        """An environment from the template: a child forked ahead if there is one (the ~20 ms a cgroup v1
        move costs then lies off the call's path), else one forked now. A child forked ahead that died
        while it waited (the evictor, an OOM kill; seen as its exit, or as a broken pipe when told to go) is
        passed over."""
        child_env = dict(env)
        child_env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        while True:
            fresh = not template.ahead
            child = await self._fork_child(template, function, prime=False) if fresh else template.ahead.pop()
            if child.exited.done():
                self._discard_child(template, child)
                if fresh:
                    raise OSError("the environment forked from the template exited at once")
                continue
            try:
                child.go(child_env)
            except OSError:
                self._discard_child(template, child)
                if fresh:
                    raise
                continue
            break
        template.burst += 1
        self._replenish_template(template, function)
        self._forked[env_id] = (template, child.index)
        self._uids[env_id] = template.uid_base + child.index
        self._cgroups[env_id] = child.cgroup
        os.set_blocking(child.read_fd, False)
        process = LinuxProcess(child.pid, child.exited, child.read_fd, child.cgroup, child.api, cpu_limited=True)
        self._forked_processes[env_id] = process
        return process

    async def _fork_child(self, template: Template, function: Function, *, prime: bool = True) -> ForkedChild:
        """A child of the template, in its own sandbox and cgroup, waiting for its environment. ``prime``: it
        runs the first call's bootstrap code once while it waits (worth it for a child forked ahead; a call
        already waits for one forked now, which would only do that work twice)."""
        index = template.take_uid()
        try:
            name = f"forked-{template.block}-{index}"
            if prime:  # forked ahead, in the background: the event loop stays free for the calls
                cgroup = await asyncio.to_thread(self._forked_cgroup, name, function.memory_size)
            else:  # a call waits for this one: no thread hops (GIL hand-offs cost a burst ~0.5 ms a start)
                cgroup = self._forked_cgroup(name, function.memory_size)
        except BaseException:
            template.give_back_uid(index)
            raise
        spec = {"uid": index, "tmp_mb": function.ephemeral_storage, "prime": prime}
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            pid, exited, go_fd, api = await template.fork(spec, write_fd)
        except BaseException:
            os.close(read_fd)
            template.give_back_uid(index)
            await asyncio.to_thread(cgroup.remove)
            raise
        finally:
            os.close(write_fd)
        child = ForkedChild(index, pid, exited, read_fd, go_fd, api, cgroup)
        try:
            if prime:
                await asyncio.to_thread(_join_cgroup, cgroup, pid)
            else:
                _join_cgroup(cgroup, pid)
            child.moved()
        except BaseException:
            self._discard_child(template, child)
            raise
        return child

    def _forked_cgroup(self, name: str, memory_mb: int) -> Cgroup:
        """With its CPU quota from the start: the template ran the init; what a forked child runs before its
        first call (entering its sandbox, the after-restore hooks) is restore, limited as the calls are.
        One made ahead if there is one (CgroupsAhead)."""
        if self._cgroups_ahead is not None:
            made = self._cgroups_ahead.take(memory_mb)
            if made is not None:
                self._stock_used[memory_mb] = time.monotonic()
                return made
        cgroup = self.cgroups.create(name, memory_mb)
        cgroup.set_cpu(vcpus_for(memory_mb))
        self.cgroups.carry_charges(cgroup)
        return cgroup

    def _replenish_template(self, template: Template, function: Function) -> None:
        """Keep TEMPLATE_AHEAD children forked ahead for this template, and cgroups made ahead for its
        memory size, once no environment was forked from it for TEMPLATE_AHEAD_QUIET_S (in the background)."""
        if template.filling or template.draining:
            return
        if template.refill is not None:
            template.refill.cancel()
        template.refill = asyncio.get_running_loop().call_later(
            TEMPLATE_AHEAD_QUIET_S, self._fill_template, template, function
        )

    def _fill_template(self, template: Template, function: Function) -> None:
        template.refill = None
        if template.filling or not template.usable:
            return
        template.filling = True
        self._stock_cgroups(function.memory_size, max(CGROUPS_AHEAD_FIRST, template.burst))
        template.burst = 0

        async def fill() -> None:
            try:
                while len(template.ahead) < TEMPLATE_AHEAD and template.usable:
                    child = await self._fork_child(template, function)
                    if template.draining:
                        self._discard_child(template, child)
                        return
                    template.ahead.append(child)
            except (OSError, TimeoutError) as exc:
                log.warning("could not fork ahead from the template of %s: %s", template.qualified_name, exc)
            finally:
                template.filling = False

        self._in_background(fill())

    def _stock_cgroups(self, memory_mb: int, count: int) -> None:
        """Have at least ``count`` cgroups made ahead for ``memory_mb`` (in a worker thread, one fill per
        size at a time)."""
        ahead = self._cgroups_ahead
        if ahead is None:
            return
        ahead.want(memory_mb, count)
        self._stock_used.setdefault(memory_mb, time.monotonic())
        if not ahead.missing(memory_mb) or memory_mb in self._cgroup_fills:
            return

        async def fill() -> None:
            try:
                await asyncio.to_thread(ahead.fill, memory_mb)
            except OSError as exc:
                log.warning("could not make cgroups ahead for %d MB: %s", memory_mb, exc)
            finally:
                del self._cgroup_fills[memory_mb]

        self._cgroup_fills[memory_mb] = asyncio.get_running_loop().create_task(fill())
        if self._stock_trim is None:
            self._stock_trim = asyncio.get_running_loop().call_later(CGROUPS_STOCK_IDLE_S, self._trim_stocks)

    def _trim_stocks(self) -> None:
        """Remove the stocks no start took from for CGROUPS_STOCK_IDLE_S."""
        self._stock_trim = None
        now = time.monotonic()
        for size, used in list(self._stock_used.items()):
            if now - used >= CGROUPS_STOCK_IDLE_S and size not in self._cgroup_fills:
                del self._stock_used[size]
                if self._cgroups_ahead is not None:
                    self._in_background(self._remove_cgroups(self._cgroups_ahead.detach(size)))
        if self._stock_used:
            self._stock_trim = asyncio.get_running_loop().call_later(CGROUPS_STOCK_IDLE_S, self._trim_stocks)

    async def _remove_cgroups(self, cgroups: list[Cgroup]) -> None:
        for cgroup in cgroups:
            await asyncio.to_thread(cgroup.remove)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Template and cgroup upkeep off the calls' path; ``close`` waits for what is under way."""
        task = asyncio.get_running_loop().create_task(work)
        self._template_tasks.add(task)
        task.add_done_callback(self._template_tasks.discard)

    def _discard_child(self, template: Template, child: ForkedChild) -> None:
        """A child forked ahead that will never be an environment: kill it, then free its cgroup and uid."""
        child.cgroup.kill_all()
        child.discard()

        async def cleanup() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.exited), 10)
            await asyncio.to_thread(child.cgroup.remove)
            template.give_back_uid(child.index)
            if template.draining and template.idle:
                self._close_template(template)

        self._in_background(cleanup())

    def _retire_template(self, template: Template) -> None:
        """No more forks from it; it stops once the environments forked from it are gone."""
        if self._templates.get(template.qualified_name) is template:
            del self._templates[template.qualified_name]
        template.draining = True
        if template.refill is not None:
            template.refill.cancel()
            template.refill = None
        ahead, template.ahead = template.ahead, []
        for child in ahead:
            self._discard_child(template, child)
        if template.idle:
            self._close_template(template)

    def _close_template(self, template: Template) -> None:
        if template.closed:
            return
        template.close()

        async def cleanup() -> None:
            if template.exited is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(template.exited), 10)
            if template.cgroup is not None:
                await asyncio.to_thread(template.cgroup.remove)
            self._close_network(template.owner)
            self._template_blocks.append(template.block)

        self._in_background(cleanup())

    def network_namespaces(self) -> dict[str, int]:
        """Namespaces by state (the selfless_network_namespaces metric)."""
        counts = self._netns_stock.counts() if self._netns_stock is not None else {}
        return {"in_use": len(self._netns), **counts}

    def templates_ready(self) -> int:
        """Fork-after-init templates that environments can fork from now."""
        return sum(1 for t in self._templates.values() if t.usable)

    def retire(self, qualified_name: str, generation: int | None) -> None:
        """A version moved to ``generation`` or went away (None): its older template drains."""
        template = self._templates.get(qualified_name)
        if template is not None and template.generation != generation:
            self._retire_template(template)

    def _cgroup_for(self, env_id: str, spare: tuple[str, Cgroup] | None, memory_mb: int) -> Cgroup:
        """The environment's cgroup: the spare's, now limited, or a new one. Runs in a worker thread;
        recorded at once so that ``release`` removes it whatever happens next."""
        cgroup = spare[1] if spare is not None else self.cgroups.make(env_id)
        self._cgroups[env_id] = cgroup
        self.cgroups.limit(cgroup, memory_mb)
        return cgroup

    def _take_spare(self, zygote: Zygote) -> tuple[str, Cgroup] | None:
        ready = self._spares.setdefault(zygote.interpreter, [])
        while ready:
            token, pid, cgroup = ready.pop()
            if pid in zygote.spare_pids:
                return token, cgroup
            cgroup.remove()  # died unused
        return None

    def _replenish(self, zygote: Zygote) -> None:
        """Keep SPARES children forked ahead for this zygote (in the background)."""
        if self._spares_per_zygote <= 0 or zygote.interpreter in self._replenishing:
            return
        self._replenishing.add(zygote.interpreter)
        task = asyncio.get_running_loop().create_task(self._fill_spares(zygote))
        self._spare_tasks.add(task)
        task.add_done_callback(self._spare_tasks.discard)

    async def _fill_spares(self, zygote: Zygote) -> None:
        ready = self._spares.setdefault(zygote.interpreter, [])
        try:
            while len(ready) < self._spares_per_zygote and zygote.alive:
                token = f"spare-{next(self._spare_ids)}"
                cgroup = await asyncio.to_thread(self.cgroups.make, token)
                try:
                    pid = await zygote.spare(token, cgroup.procs_files)
                except (OSError, TimeoutError) as exc:
                    cgroup.remove()
                    log.warning("no spare from the zygote for %s: %s", zygote.interpreter, exc)
                    return
                ready.append((token, pid, cgroup))
        finally:
            self._replenishing.discard(zygote.interpreter)

    def _code_tree_of(self, root: Path, function: Function) -> Path:
        return self._data_dir / "code" / "trees" / function.code.key

    @property
    def uid_range(self) -> tuple[int, int]:
        """The uids this server gives its environments (inclusive)."""
        base = UID_BASE + self.slot * UID_BLOCK
        return base, base + UID_BLOCK - 1

    async def release(self, env_id: str, root: Path) -> None:
        self._forked_processes.pop(env_id, None)
        forked = self._forked.pop(env_id, None)
        cgroup = self._cgroups.pop(env_id, None)
        emptied = True  # no process of the environment is left (none ever was, without a cgroup)
        if cgroup is not None:
            cgroup.kill_all()
            if not await asyncio.to_thread(cgroup.remove):
                log.error("cgroup of environment %s could not be removed", env_id)
                emptied = False
        if forked is not None:
            # Its uid index (and so its cgroup's name) may be used again only now that the cgroup is gone.
            template, index = forked
            self._uids.pop(env_id, None)
            template.give_back_uid(index)
            if template.draining and template.idle:
                self._close_template(template)
        self._close_network(env_id, emptied=emptied)
        scratch = self._scratches.pop(env_id, None)
        if scratch is not None and self._scratch is not None:
            await asyncio.to_thread(self._scratch.give_back, scratch)
        uid = self._uids.pop(env_id, None)
        if uid is not None:
            self._free_uids.append(uid)

    async def close(self) -> None:
        for template in list(self._templates.values()):
            self._retire_template(template)
        for template, _index in list(self._forked.values()):
            if not template.idle:
                self._close_template(template)
        if self._stock_trim is not None:
            self._stock_trim.cancel()
            self._stock_trim = None
        if self._template_tasks:
            await asyncio.gather(*self._template_tasks, return_exceptions=True)
        if self._cgroup_fills:
            await asyncio.gather(*self._cgroup_fills.values(), return_exceptions=True)
        if self._cgroups_ahead is not None:
            await self._remove_cgroups(self._cgroups_ahead.detach())
        if self._scratch is not None:
            await self._scratch.close()
        for task in list(self._spare_tasks):
            task.cancel()
        if self._spare_tasks:
            await asyncio.gather(*self._spare_tasks, return_exceptions=True)
        for z in list(self._zygotes.values()):
            await z.close()
        self._zygotes.clear()
        # Spares exit when their zygote's socket closes; their cgroups go after them.
        for ready in self._spares.values():
            for _token, _pid, cgroup in ready:
                cgroup.kill_all()
                await asyncio.to_thread(cgroup.remove)
        self._spares.clear()
        self.cgroups.close()
        for owner in list(self._netns):
            self._close_network(owner)
        if self._netns_stock is not None:
            await self._netns_stock.close()
        if self._maker is not None:
            await asyncio.to_thread(self._maker.close)
        if self._firewall is not None:
            self._firewall.remove()
        if self._slot_file is not None:
            self._slot_file.close()
            self._slot_file = None
        self._stop_ksm()

    def _stop_ksm(self) -> None:
        """Put ksmd back as we found it."""
        if self._ksm_restore is not None:
            with contextlib.suppress(OSError):
                _KSM_RUN.write_text(self._ksm_restore)
            self._ksm_restore = None
