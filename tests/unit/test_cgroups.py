"""Cgroup set-up and limits on both hierarchies, against a stand-in cgroup filesystem.

CI machines here have cgroup v1, exercised for real by the sandbox tests; v2's set-up (the server leaf,
delegated controllers) and every limit file of both versions are checked here on a directory tree shaped
like each hierarchy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from selfless.sandbox.cgroups import FORK_SERVER_WEIGHT, MAX_PIDS, Cgroup, Cgroups, CgroupsAhead, vcpus_for


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


def fake_v1(tmp_path: Path) -> tuple[Path, Cgroups]:
    """A v1 hierarchy (memory, cpu, pids) with this process in /svc; the Cgroups set up on it."""
    root = tmp_path / "cgroup"
    for ctl in ("memory", "cpu", "pids"):
        (root / ctl / "svc").mkdir(parents=True)
    table = tmp_path / "self-cgroup"
    table.write_text("9:pids:/svc\n4:memory:/svc\n1:cpu,cpuacct:/svc\n")
    cg = Cgroups("selfless-0", root=root, table=table)
    cg.setup()
    return root, cg


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
    memory, cpu, _pids = taken.dirs
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
