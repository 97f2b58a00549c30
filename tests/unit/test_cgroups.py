"""Cgroup set-up, limits and freezing on both hierarchies, against a stand-in cgroup filesystem.

CI machines here have cgroup v1, exercised for real by the sandbox tests; v2's set-up (the server leaf,
delegated controllers) and every limit file of both versions are checked here on a directory tree shaped
like each hierarchy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfless.sandbox.cgroups import (
    FORK_SERVER_WEIGHT,
    KEEP_FROZEN,
    MAX_PIDS,
    Cgroup,
    Cgroups,
    CgroupsAhead,
    vcpus_for,
)
from selfless.sandbox.linux import LinuxProcess


def fake_v2(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    own = root / "user.slice" / "svc"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (own / "cgroup.subtree_control").write_text("")
    table = tmp_path / "self-cgroup"
    table.write_text("0::/user.slice/svc\n")
    return root, table


def test_v2_setup_moves_the_server_and_delegates_controllers(tmp_path: Path) -> None:
    root, table = fake_v2(tmp_path)
    # On a real cgroupfs these files appear with the directory.
    orig_mkdir = Path.mkdir

    def mkdir_with_files(self: Path, *args: object, **kwargs: object) -> None:
        orig_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        for name in ("cgroup.procs", "cgroup.subtree_control"):
            if not (self / name).exists():
                (self / name).write_text("")

    mp = pytest.MonkeyPatch()
    mp.setattr(Path, "mkdir", mkdir_with_files)
    try:
        cg = Cgroups("selfless-3", root=root, table=table)
        cg.setup()
        assert cg.version == 2
        own = root / "user.slice" / "svc"
        assert (own / "selfless-server" / "cgroup.procs").read_text() == str(os.getpid())
        assert (own / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
        assert (own / "selfless-3" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
        env = cg.create("env1", 3538)
    finally:
        mp.undo()
    d = own / "selfless-3" / "env1"
    assert env.dirs == [d] and env.procs_files == [str(d / "cgroup.procs")]
    assert (d / "memory.max").read_text() == str(3538 << 20)
    assert (d / "cpu.max").read_text() == "max 100000"  # no quota during init
    assert (d / "pids.max").read_text() == str(MAX_PIDS)
    env.set_cpu(vcpus_for(3538))
    assert (d / "cpu.max").read_text() == f"{int(vcpus_for(3538) * 100000)} 100000"
    (d / "memory.peak").write_text(str(300 << 20))
    assert env.peak_mb() == 300
    assert cg.freezer_missing is not None, "no cgroup.freeze in this tree: not frozen"
    assert env.freezer is None


def test_v2_freezes_through_cgroup_freeze(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    root, table = fake_v2(tmp_path)
    own = root / "user.slice" / "svc"
    for d in (own / "selfless-server", own / "selfless-3"):
        d.mkdir()
        (d / "cgroup.procs").write_text("")
        (d / "cgroup.subtree_control").write_text("")
    (own / "selfless-3" / "cgroup.freeze").write_text("0")
    cg = Cgroups("selfless-3", root=root, table=table)
    cg.setup()
    assert cg.freezer_missing is None
    d = own / "selfless-3" / "env1"
    d.mkdir()
    env = cg._cgroup("env1", [d])
    assert env.freezer == d / "cgroup.freeze"
    (d / "cgroup.freeze").write_text("0")
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    process = LinuxProcess(1 << 30, loop.create_future(), -1, env)
    process.freeze()
    assert (d / "cgroup.freeze").read_text() == "1" and env.freezer_state() == "FREEZING"
    (d / "cgroup.events").write_text("populated 1\nfrozen 1\n")  # as the kernel says once all are
    assert env.freezer_state() == "FROZEN"
    process.thaw()
    assert (d / "cgroup.freeze").read_text() == "0"
    cg.keep_freezer_on()  # v1 only: nothing to keep on here
    assert not (own / "selfless-3" / KEEP_FROZEN).exists()


def fake_v1(tmp_path: Path, freezer: bool = False) -> tuple[Path, Cgroups]:
    """A v1 hierarchy (memory, cpu, pids, and freezer if asked) with this process in /svc (in / of the
    freezer's, as on the CI machines); the Cgroups set up on it."""
    root = tmp_path / "cgroup"
    for ctl in ("memory", "cpu", "pids"):
        (root / ctl / "svc").mkdir(parents=True)
    table = tmp_path / "self-cgroup"
    table.write_text("9:pids:/svc\n6:freezer:/\n4:memory:/svc\n1:cpu,cpuacct:/svc\n")
    if freezer:
        (root / "freezer").mkdir()
    cg = Cgroups("selfless-0", root=root, table=table)
    cg.setup()
    return root, cg


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_v1_without_a_freezer_says_why_and_makes_environments_that_are_never_frozen(tmp_path: Path) -> None:
    _root, cg = fake_v1(tmp_path)
    assert cg.freezer_missing is not None and "freezer" in cg.freezer_missing
    env = cg.create("e", 128)
    assert len(env.dirs) == 3 and env.freezer is None and env.freezer_state() is None
    env.thaw()  # nothing to do, and no error


def test_v1_environments_join_the_freezer_and_freeze_and_thaw(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    root, cg = fake_v1(tmp_path, freezer=True)
    assert cg.freezer_missing is None
    base = root / "freezer" / "selfless-0"
    env = cg.create("e", 128)
    assert env.dirs[3] == base / "e" and str(base / "e" / "cgroup.procs") in env.procs_files
    assert env.freezer == base / "e" / "freezer.state"
    (base / "e" / "freezer.state").write_text("THAWED")
    # Spares, forked children and cgroups made ahead all come from make(): every one has its freezer.
    assert cg.make("spare-1").freezer == base / "spare-1" / "freezer.state"
    process = LinuxProcess(1 << 30, loop.create_future(), -1, env)
    assert process.freezable
    process.thaw()
    assert env.freezer_state() == "THAWED", "a thaw of what is not frozen writes nothing"
    process.freeze()
    assert env.freezer_state() == "FROZEN"
    process.thaw()
    assert env.freezer_state() == "THAWED"
    process.freeze()
    process.kill(signal.SIGTERM)
    assert env.freezer_state() == "THAWED", "a signal is always followed by a thaw"
    assert not process.freezable, "a signalled environment is never frozen again"
    process.freeze()
    assert env.freezer_state() == "THAWED"


def test_kill_all_signals_first_and_thaws_after(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    _root, cg = fake_v1(tmp_path, freezer=True)
    env = cg.create("e", 128)
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (env.memory_dir / "cgroup.procs").write_text(f"{child.pid}\n")
        assert env.freezer is not None
        env.freezer.write_text("FROZEN")
        process = LinuxProcess(child.pid, loop.create_future(), -1, env)
        process.kill()
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert env.freezer_state() == "THAWED"
    finally:
        child.kill()
        child.wait()


def test_v1_keeps_one_empty_cgroup_frozen_while_it_runs(tmp_path: Path) -> None:
    root, cg = fake_v1(tmp_path, freezer=True)
    keep = root / "freezer" / "selfless-0" / KEEP_FROZEN
    cg.keep_freezer_on()
    assert (keep / "freezer.state").read_text() == "FROZEN"
    cg.sweep()
    assert (keep / "freezer.state").read_text() == "FROZEN", "not a leftover"
    cg.close()
    assert (keep / "freezer.state").read_text() == "THAWED", "thawed (and on a real cgroupfs removed) at close"


def test_sweep_thaws_what_a_previous_run_left_frozen(tmp_path: Path) -> None:
    root, cg = fake_v1(tmp_path, freezer=True)
    left = root / "freezer" / "selfless-0" / "0123abcd"
    left.mkdir()
    (left / "cgroup.procs").write_text("")
    (left / "freezer.state").write_text("FROZEN")
    cg.sweep()
    # (On a real cgroupfs the directory then goes; here its files keep it.)
    assert (left / "freezer.state").read_text() == "THAWED"


def test_v1_limits(tmp_path: Path) -> None:
    root, cg = fake_v1(tmp_path)
    assert cg.version == 1
    env = cg.create("e", 128)
    memory, cpu, pids = env.dirs
    assert memory == root / "memory" / "svc" / "selfless-0" / "e"
    assert (memory / "memory.limit_in_bytes").read_text() == str(128 << 20)
    # A new cgroup has no quota and v1's 100 ms period already: nothing is written for the CPU until init ends.
    assert not (cpu / "cpu.cfs_quota_us").exists() and not (cpu / "cpu.cfs_period_us").exists()
    assert (pids / "pids.max").read_text() == str(MAX_PIDS)
    env.set_cpu(vcpus_for(128))
    assert (cpu / "cpu.cfs_quota_us").read_text() == str(int(128 / 1769 * 100000))
    (memory / "memory.max_usage_in_bytes").write_text(str((64 << 20) + 1))
    assert env.peak_mb() == 65


def test_a_template_gets_a_larger_cpu_share_capped_at_one_vcpu(tmp_path: Path) -> None:
    _root, cg = fake_v1(tmp_path)
    template = cg.create("template-1-1", 256)
    template.set_fork_server_cpu()
    cpu = template.dirs[1]
    assert (cpu / "cpu.shares").read_text() == str(1024 * FORK_SERVER_WEIGHT)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "100000", "one vCPU at most"

    root2, _table = fake_v2(tmp_path / "v2")
    (root2 / "user.slice" / "svc" / "selfless-3").mkdir()
    d = root2 / "user.slice" / "svc" / "selfless-3" / "t"
    d.mkdir()
    Cgroup([d], d, 2).set_fork_server_cpu()
    assert (d / "cpu.weight").read_text() == str(100 * FORK_SERVER_WEIGHT)
    assert (d / "cpu.max").read_text() == "100000 100000"


def test_cpu_share_follows_memory() -> None:
    assert vcpus_for(1769) == pytest.approx(1.0) or vcpus_for(1769) == os.cpu_count()
    assert vcpus_for(128) == pytest.approx(128 / 1769)
    assert vcpus_for(10240) <= min(6, os.cpu_count() or 1)


def test_cgroups_made_ahead_come_limited_per_memory_size_and_bounded(tmp_path: Path) -> None:
    root, cg = fake_v1(tmp_path)
    ahead = CgroupsAhead(cg)
    assert ahead.take(128) is None, "nothing is made before it is wanted"
    ahead.want(128, 3)
    ahead.want(128, 2)  # a smaller burst keeps the larger stock
    assert ahead.missing(128) == 3
    ahead.fill(128)
    assert ahead.missing(128) == 0
    taken = ahead.take(128)
    assert taken is not None and ahead.missing(128) == 1
    memory, cpu = taken.dirs[:2]
    # Ready as a forked environment needs it: memory limit, CPU quota, charges carried on the move.
    assert (memory / "memory.limit_in_bytes").read_text() == str(128 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text() == str(int(vcpus_for(128) * 100000))
    assert (memory / "memory.move_charge_at_immigrate").read_text() == "1"
    assert ahead.take(256) is None, "a stock serves its own memory size only"
    ahead.want(256, 10_000)
    assert ahead.missing(256) == CgroupsAhead.MAX
    gone = ahead.detach(128)
    assert len(gone) == 2 and ahead.take(128) is None and ahead.missing(128) == 0
    for cgroup in gone:  # (on a real cgroupfs: cgroup.remove(); here the limit files are plain files)
        for d in cgroup.dirs:
            shutil.rmtree(d)
    made = sorted(d.name for d in (root / "memory" / "svc" / "selfless-0").iterdir() if d.is_dir())
    assert made == [taken.dirs[0].name], "detached stock is removed, the taken one is the caller's"
