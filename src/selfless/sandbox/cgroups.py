"""Control groups for execution environments: memory, CPU and pids limits, peak memory, freezing, kill-all.

Both hierarchies are supported:

- v1 (this project's CI machines): one directory per controller, ``<mount>/<ctl>/<our cgroup>/<name>/<env>``
  for memory, cpu, pids and (where it is mounted) freezer.
- v2 (unified): ``<mount>/<our cgroup>/<name>/<env>``. v2 forbids processes in a cgroup that hands
  controllers to its children, so the server first moves itself into ``<our cgroup>/selfless-server``.
  Freezing is v2's core ``cgroup.freeze`` file (no controller to enable).

Freezing stops every task of an environment where it stands (between invocations, see ``environment.py``);
a frozen task acts on no signal until it is thawed (on v1 not even SIGKILL), so ``kill_all`` thaws after
it has signalled, and whatever kills an environment goes through it or thaws itself. Without a freezer
(a v1 host where it is not mounted) environments simply run unfrozen: ``Cgroups.freezer_missing`` says why.

v1's freezer turns a kernel static key on while any cgroup is freezing and off when the last thaws: each
such turn patches kernel text on every CPU (a thaw ~185 us here, against ~50 us otherwise; bench/freeze.py).
So one empty cgroup (``KEEP_FROZEN``) stays frozen while the server runs, and the key stays on.

``<name>`` is ``selfless-<slot>``: each running server holds its own slot (see ``linux.py``), so servers
side by side never touch each other's environments.

Limits follow AWS: memory.max = MemorySize, CPU quota in proportion to memory (1,769 MB = 1 vCPU, at most
6 and at most the host's CPUs), at most 1,024 processes and threads. Every environment's cgroup goes when the
environment does; whatever it still holds (orphans that left the process group too) is killed first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import time
from pathlib import Path

MB_PER_VCPU = 1769
MAX_VCPUS = 6
MAX_PIDS = 1024
_ROOT = Path("/sys/fs/cgroup")
_CPU_PERIOD_US = 100_000
# How much more CPU share a fork-after-init template gets than an environment (see set_fork_server_cpu).
FORK_SERVER_WEIGHT = 16
# The empty v1 freezer cgroup kept frozen while the server runs (see the module docstring).
KEEP_FROZEN = "keep-frozen"


class CgroupsUnavailable(RuntimeError):
    """The cgroup controllers selfless needs cannot be used here; the message says why."""


# Read once: os.cpu_count() reads /sys/devices/system/cpu/online on every call, once per start here.
_HOST_CPUS = float(os.cpu_count() or 1)


def vcpus_for(memory_mb: int) -> float:
    return min(memory_mb / MB_PER_VCPU, MAX_VCPUS, _HOST_CPUS)


def _own_path(controller: str, table: Path = Path("/proc/self/cgroup")) -> str:
    """This process's cgroup path in a v1 controller's hierarchy ('' for v2: the 0:: line)."""
    with open(table, encoding="utf-8") as f:
        for line in f:
            _id, ctls, path = line.rstrip("\n").split(":", 2)
            if controller in ctls.split(","):
                return path
    return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def freeze_command(version: int, frozen: bool) -> bytes:
    """What to write to the freezer file (``Cgroup.freezer``) to freeze or thaw."""
    if version == 1:
        return b"FROZEN" if frozen else b"THAWED"
    return b"1" if frozen else b"0"


def peak_mb_of(content: bytes) -> int:
    """A peak-memory file's bytes as whole MB, rounded up, at least 1. ValueError if it holds no number."""
    value: int = int(content)
    return max(1, -(-value // (1 << 20)))


@dataclasses.dataclass
class Cgroup:
    """One environment's cgroup (a directory per controller on v1, one on v2). ``freezer``: the file that
    freezes it (v1 ``freezer.state``, v2 ``cgroup.freeze``), None where there is no freezer."""

    dirs: list[Path]
    memory_dir: Path
    version: int
    freezer: Path | None = None

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def thaw(self) -> None:
        """Let every task inside run again (a no-op when not frozen; nothing when the cgroup is gone)."""
        if self.freezer is not None:
            with contextlib.suppress(OSError), open(self.freezer, "wb") as f:
                f.write(freeze_command(self.version, False))

    def freezer_state(self) -> str | None:
        """FROZEN, FREEZING or THAWED (v2: FROZEN once ``cgroup.events`` says so); None without a freezer."""
        if self.freezer is None:
            return None
        try:
            if self.version == 1:
                return self.freezer.read_text().strip()
            frozen = "frozen 1" in (self.freezer.parent / "cgroup.events").read_text().splitlines()
            wanted = self.freezer.read_text().strip() == "1"
        except OSError:
            return None
        return "FROZEN" if frozen else "FREEZING" if wanted else "THAWED"

    @property
    def peak_file(self) -> Path:
        """The file that holds the peak memory use in bytes (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``)."""
        return self.memory_dir / ("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak")

    def peak_mb(self) -> int | None:
        try:
            return peak_mb_of(self.peak_file.read_bytes())
        except (OSError, ValueError):
            return None

    def set_cpu(self, vcpus: float | None) -> None:
        """CPU quota in vCPUs; None lifts it (the init phase runs at full speed, as on AWS)."""
        quota = -1 if vcpus is None else max(1000, int(vcpus * _CPU_PERIOD_US))
        with contextlib.suppress(OSError):
            if self.version == 1:
                _write(self.dirs[1] / "cpu.cfs_quota_us", str(quota))
            else:
                _write(self.dirs[0] / "cpu.max", f"{'max' if quota < 0 else quota} {_CPU_PERIOD_US}")

    def set_fork_server_cpu(self) -> None:
        """A fork-after-init template, its init done: a serial stage every environment forked from it goes
        through, so under contention it gets FORK_SERVER_WEIGHT times the CPU share of an environment (as one
        of ~N siblings it would otherwise wait behind the very children it forks), capped at one vCPU (the
        function's own threads, if its init started any, run in it too)."""
        quota = _CPU_PERIOD_US
        with contextlib.suppress(OSError):
            if self.version == 1:
                _write(self.dirs[1] / "cpu.shares", str(1024 * FORK_SERVER_WEIGHT))
                _write(self.dirs[1] / "cpu.cfs_quota_us", str(quota))
            else:
                _write(self.dirs[0] / "cpu.weight", str(100 * FORK_SERVER_WEIGHT))
                _write(self.dirs[0] / "cpu.max", f"{quota} {_CPU_PERIOD_US}")

    def pids(self) -> list[int]:
        try:
            text = (self.memory_dir / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill_all(self) -> None:
        """SIGKILL everything inside, including processes that left the environment's process group, then
        thaw: a frozen task dies once thawed, without running another instruction of its own."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                _write(self.memory_dir / "cgroup.kill", "1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.thaw()

    def remove(self, deadline_s: float = 5.0) -> bool:
        """Kill what is left and remove the directories; False if something would not go in time."""
        end = time.monotonic() + deadline_s
        for d in self.dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > end:
                        return False
                    self.kill_all()
                    time.sleep(0.005)
        return True


class Cgroups:
    """Creates and removes environment cgroups under this server's own cgroup."""

    def __init__(self, name: str = "selfless", root: Path = _ROOT, table: Path = Path("/proc/self/cgroup")) -> None:
        """``root`` and ``table`` (the cgroup mount and /proc/self/cgroup) are parameters for tests."""
        self.name = name
        self._root = root
        self._table = table
        self.version = 0
        self._memsw: bool | None = None  # v1 swap accounting (memory.memsw.*): not known until first tried
        self._bases: list[Path] = []
        self._memory_base = Path()
        # Why environments cannot be frozen here (None: they can), for the backend to say once.
        self.freezer_missing: str | None = None
        self._freezer_base: Path | None = None  # v1: the freezer controller's base; v2: the one base

    def setup(self) -> None:
        """Find the hierarchy and make the ``selfless`` parent; raises CgroupsUnavailable with the reason."""
        if (self._root / "cgroup.controllers").is_file():
            self._setup_v2()
        elif (self._root / "memory").is_dir():
            self._setup_v1()
        else:
            raise CgroupsUnavailable(f"no cgroup hierarchy with a memory controller under {self._root}")

    def _setup_v1(self) -> None:
        self.version = 1
        bases = []
        for ctl in ("memory", "cpu", "pids"):
            mount = self._root / ctl
            if not mount.is_dir():
                raise CgroupsUnavailable(f"cgroup v1 controller '{ctl}' is not mounted at {mount}")
            base = mount / _own_path(ctl, self._table).lstrip("/") / self.name
            try:
                base.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupsUnavailable(f"cannot create {base}: {exc.strerror}") from exc
            bases.append(base)
        self._memory_base = bases[0]
        with contextlib.suppress(OSError):
            _write(self._memory_base / "memory.use_hierarchy", "1")
        mount = self._root / "freezer"
        if mount.is_dir():
            base = mount / _own_path("freezer", self._table).lstrip("/") / self.name
            try:
                base.mkdir(exist_ok=True)
                bases.append(base)
                self._freezer_base = base
            except OSError as exc:
                self.freezer_missing = f"cannot create {base}: {exc.strerror}"
        else:
            self.freezer_missing = f"the cgroup v1 freezer controller is not mounted at {mount}"
        self._bases = bases

    def _setup_v2(self) -> None:
        self.version = 2
        own = self._root / _own_path("", self._table).lstrip("/")
        server = own / "selfless-server"
        envs = own / self.name
        try:
            server.mkdir(exist_ok=True)
            envs.mkdir(exist_ok=True)
            # No internal processes: every process of our cgroup moves to the server leaf.
            for pid in (own / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    _write(server / "cgroup.procs", pid)
            _write(own / "cgroup.subtree_control", "+memory +cpu +pids")
            _write(envs / "cgroup.subtree_control", "+memory +cpu +pids")
        except OSError as exc:
            raise CgroupsUnavailable(f"cannot delegate memory, cpu and pids controllers under {own}: {exc}") from exc
        self._bases = [envs]
        self._memory_base = envs
        if (envs / "cgroup.freeze").is_file():
            self._freezer_base = envs
        else:
            self.freezer_missing = f"{envs} has no cgroup.freeze (Linux 5.2 or newer freezes cgroup v2)"

    def keep_freezer_on(self) -> None:
        """v1: freeze the empty KEEP_FROZEN cgroup for as long as the server runs (see the module
        docstring); ``close`` removes it. Best effort: without it freezing only costs more."""
        if self.version == 1 and self._freezer_base is not None:
            keep = self._freezer_base / KEEP_FROZEN
            with contextlib.suppress(OSError):
                keep.mkdir(exist_ok=True)
                _write(keep / "freezer.state", "FROZEN")

    def create(self, env_id: str, memory_mb: int) -> Cgroup:
        cg = self.make(env_id)
        self.limit(cg, memory_mb)
        return cg

    def make(self, name: str) -> Cgroup:
        """A new cgroup without limits yet (a spare's, until it becomes an environment)."""
        dirs = [base / name for base in self._bases]
        for d in dirs:
            d.mkdir()
        return self._cgroup(name, dirs)

    def _cgroup(self, name: str, dirs: list[Path]) -> Cgroup:
        freezer = None
        if self._freezer_base is not None:
            freezer = self._freezer_base / name / ("freezer.state" if self.version == 1 else "cgroup.freeze")
        return Cgroup(dirs, dirs[0], self.version, freezer)

    def limit(self, cg: Cgroup, memory_mb: int) -> None:
        """Memory and pids limits for ``memory_mb``; the CPU quota waits for the end of init (``set_cpu``:
        AWS runs the init phase at full speed too). A new cgroup has no quota, and v1's period is 100 ms
        already: each write here costs a start ~30 us of cgroupfs."""
        dirs = cg.dirs
        limit = memory_mb << 20
        try:
            if self.version == 1:
                memory, pids = dirs[0], dirs[2]
                _write(memory / "memory.limit_in_bytes", str(limit))
                if self._memsw is not False:  # only with swap accounting
                    try:
                        _write(memory / "memory.memsw.limit_in_bytes", str(limit))
                        self._memsw = True
                    except FileNotFoundError:
                        self._memsw = False
                _write(pids / "pids.max", str(MAX_PIDS))
            else:
                (d,) = dirs
                _write(d / "memory.max", str(limit))
                with contextlib.suppress(OSError):
                    _write(d / "memory.swap.max", "0")
                _write(d / "cpu.max", f"max {_CPU_PERIOD_US}")
                _write(d / "pids.max", str(MAX_PIDS))
        except OSError:
            cg.remove()
            raise

    def carry_charges(self, cg: Cgroup) -> None:
        """A process moving into ``cg`` brings the memory charged to it so far (v1's
        move_charge_at_immigrate): a child forked from a template dirties a few pages before it is moved,
        which would otherwise stay charged to the template. (v2 has nothing like it; clone3 with
        CLONE_INTO_CGROUP is the way there.) Best effort: kernels that dropped the knob ignore it."""
        if self.version == 1:
            with contextlib.suppress(OSError):
                _write(cg.dirs[0] / "memory.move_charge_at_immigrate", "1")

    def sweep(self) -> None:
        """Remove environment cgroups a previous run left behind (killing what they hold, frozen or not)."""
        names = {d.name for base in self._bases if base.is_dir() for d in base.iterdir() if d.is_dir()}
        for name in names - {KEEP_FROZEN}:
            # v1: the same directory under every controller (a crash may have left some of them only).
            dirs = [base / name for base in self._bases if (base / name).is_dir()]
            for d in dirs:  # what each holds: a crash between two joins leaves a process in some only
                Cgroup([d], d, self.version).kill_all()
            leftover = self._cgroup(name, dirs)
            leftover.thaw()
            leftover.remove()

    def close(self) -> None:
        """Remove our parent directories (v1: ``selfless`` under each controller) when empty."""
        if self.version == 1:
            if self._freezer_base is not None:
                keep = self._freezer_base / KEEP_FROZEN
                with contextlib.suppress(OSError):
                    _write(keep / "freezer.state", "THAWED")
                with contextlib.suppress(OSError):
                    os.rmdir(keep)
            for base in self._bases:
                with contextlib.suppress(OSError):
                    os.rmdir(base)


class CgroupsAhead:
    """Cgroups made and limited ahead for environments forked after init, one stock per memory size: a start
    that takes one skips the mkdirs (one per controller) and five writes of making it (~0.25 ms of the
    server's CPU, on the event loop, where a burst's starts queue up).

    A stock is filled off the calls' path (``fill``, in a worker thread, once its template has been quiet
    a moment) to the size of the largest burst seen for that memory size, at most ``MAX`` (each costs the
    kernel ~35-45 KB), and goes when no template of that size is left (``detach``). Not thread-safe: ``take``
    runs on the event loop, ``fill`` in one thread at a time per size (the caller's job)."""

    MAX = 256

    def __init__(self, cgroups: Cgroups) -> None:
        self._cgroups = cgroups
        self._stock: dict[int, list[Cgroup]] = {}
        self._wanted: dict[int, int] = {}
        self._ids = 0

    def take(self, memory_mb: int) -> Cgroup | None:
        """One made for ``memory_mb`` (memory and pids limits, the CPU quota, charges carried), or None."""
        stock = self._stock.get(memory_mb)
        return stock.pop() if stock else None

    def want(self, memory_mb: int, count: int) -> None:
        """Keep at least ``count`` (capped at MAX) for ``memory_mb`` from the next ``fill`` on."""
        self._wanted[memory_mb] = max(self._wanted.get(memory_mb, 0), min(count, self.MAX))

    def missing(self, memory_mb: int) -> int:
        return max(0, self._wanted.get(memory_mb, 0) - len(self._stock.get(memory_mb, ())))

    def fill(self, memory_mb: int) -> None:
        """Make what is missing for ``memory_mb`` (blocking: cgroupfs work; run it in a thread)."""
        stock = self._stock.setdefault(memory_mb, [])
        for _ in range(self.missing(memory_mb)):
            self._ids += 1
            cgroup = self._cgroups.create(f"ahead-{memory_mb}-{self._ids}", memory_mb)
            cgroup.set_cpu(vcpus_for(memory_mb))
            self._cgroups.carry_charges(cgroup)
            stock.append(cgroup)

    def detach(self, memory_mb: int | None = None) -> list[Cgroup]:
        """Give up the stock for ``memory_mb`` (every stock: None) and return it, for the caller to remove
        (on the event loop, so that no ``take`` races with it; the removal can go to a thread)."""
        sizes = list(self._stock) if memory_mb is None else [memory_mb]
        gone: list[Cgroup] = []
        for size in sizes:
            self._wanted.pop(size, None)
            gone.extend(self._stock.pop(size, []))
        return gone
