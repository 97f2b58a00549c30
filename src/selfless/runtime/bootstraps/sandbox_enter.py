"""Entering a Linux sandbox, from inside a freshly forked zygote child (still root, single-threaded).

Order matters and every step is a plain syscall through ctypes (no helper binary to install):

1. join the environment's cgroups, unless a spare did so already (memory, CPU, pids limits apply from here);
2. enter the environment's network namespace, made ahead by the server (``selfless.sandbox.network``: its
   own loopback with the Runtime API on 127.0.0.1:9001, a link to the outside world and none to the host);
   then a new session, and new mount, IPC and UTS namespaces;
3. a private tmpfs root: read-only binds of the runtime's files (/usr and friends, the interpreter's
   prefix), the function's code read-only at /var/task, the bootstrap at /var/runtime, a /tmp of
   EphemeralStorage size (an ext4 image on a loop device the server attached; tmpfs where it could not),
   a procfs that hides other users' processes (each environment has its own uid), a minimal /dev and an
   /etc with only what a runtime needs; then the root itself goes read-only;
4. pivot_root into it and detach the old root;
5. AWS's process limits (1,024 open files, 1,024 processes and threads; no core files), then drop to the
   environment's unprivileged uid/gid with no supplementary groups (all capabilities go with uid 0), set
   no_new_privs, and load the seccomp filter built once in the zygote.

Mounts live in the child's own mount namespace: they vanish with its last process, nothing to clean up.

A fork-after-init *template* (``spec["template"]``) takes steps 1-4 the same way, but in step 5 it enters a
new user namespace instead: a helper forked just before (still root on the host) maps the namespace's uids
0..N-1 onto N host uids of the template's own block, and the template becomes uid 0 there: host uid H, no
capability on the host, all of them inside its namespace, which is what lets each environment forked from
it later (``enter_forked``) make a mount namespace with a private /tmp and drop to uid k (host H+k) before
the full seccomp filter. The template's own filter allows mount and unshare for that reason.
"""

import ctypes
import os
import resource
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEW_ANY = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWUSER
CLONE_NEW_ANY |= CLONE_NEWCGROUP | 0x00000080  # CLONE_NEWTIME

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_MEMORY_MERGE = 67
SECCOMP_MODE_FILTER = 2

TEMPLATE_CONTROL_FD = 4  # a template's control socket to the server
RUNTIME_API_FD = 5  # a Python environment's own connection to its Runtime API (a Unix socket pair)
SYS_PIVOT_ROOT = 155
SYS_CLOSE_RANGE = 436

# x86_64 system calls a function never needs and a hostile one wants.
DENIED = {
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "move_pages": 279,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
}
SYS_CLONE = 56
SYS_CLONE3 = 435

_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_KILL = 0x80000000
_RET_ERRNO = 0x00050000
_EPERM = 1
_ENOSYS = 38


def _insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def build_seccomp_filter(allow=()):
    """The BPF program (bytes) for the x86_64 deny list less ``allow`` (syscall names); None on other
    architectures (then no filter)."""
    if os.uname().machine != "x86_64":
        return None
    ld_w_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    denied = sorted(set(nr for name, nr in DENIED.items() if name not in allow))
    prog = []
    # 0: arch check (a foreign ABI could name other syscalls by these numbers)
    prog.append((ld_w_abs, 0, 0, 4))
    prog.append(("jeq_arch",))
    # 2: syscall number
    prog.append((ld_w_abs, 0, 0, 0))
    prog.append(("jge_x32",))  # the x32 ABI (numbers with bit 30 set) is refused whole
    for nr in denied:
        prog.append(("deny", nr))
    prog.append(("clone3",))  # clone3 hides its flags behind a pointer: ENOSYS makes libc fall back to clone
    prog.append(("clone",))  # clone with any CLONE_NEW* flag is refused
    prog.append((ld_w_abs, 0, 0, 16))  # args[0], low 32 bits (x86_64 is little-endian)
    prog.append(("jset_new",))
    prog.append(("allow",))
    prog.append(("eperm",))
    prog.append(("enosys",))
    prog.append(("kill",))
    n = len(prog)
    index = {tag: i for i, p in enumerate(prog) for tag in [p[0]] if isinstance(tag, str)}
    out = []
    ld_after_clone = index["clone"] + 1
    for i, p in enumerate(prog):
        tag = p[0]
        if not isinstance(tag, str):
            out.append(_insn(*p))
            continue

        def rel(target, i=i):
            return target - (i + 1)

        if tag == "jeq_arch":
            out.append(_insn(jeq, 0, rel(index["kill"]), _AUDIT_ARCH_X86_64))
        elif tag == "jge_x32":
            out.append(_insn(jge, rel(index["eperm"]), 0, 0x40000000))
        elif tag == "deny":
            out.append(_insn(jeq, rel(index["eperm"]), 0, p[1]))
        elif tag == "clone3":
            out.append(_insn(jeq, rel(index["enosys"]), 0, SYS_CLONE3))
        elif tag == "clone":
            # not clone: skip the flag check and allow
            out.append(_insn(jeq, rel(ld_after_clone), rel(index["allow"]), SYS_CLONE))
        elif tag == "jset_new":
            out.append(_insn(jset, rel(index["eperm"]), rel(index["allow"]), CLONE_NEW_ANY))
        elif tag == "allow":
            out.append(_insn(ret, 0, 0, _RET_ALLOW))
        elif tag == "eperm":
            out.append(_insn(ret, 0, 0, _RET_ERRNO | _EPERM))
        elif tag == "enosys":
            out.append(_insn(ret, 0, 0, _RET_ERRNO | _ENOSYS))
        elif tag == "kill":
            out.append(_insn(ret, 0, 0, _RET_KILL))
    assert len(out) == n
    return b"".join(out)


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(src, target, fstype, flags, data=None):
    _check(
        _libc.mount(
            src.encode() if src else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        "mount %s" % target,
    )


def mergeable():
    """Offer this process's memory, and that of every child forked from it, to KSM (Linux 6.4+): where the
    host runs ksmd, identical pages of many environments become one. Without ksmd it costs nothing."""
    _libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0)


def become_subreaper():
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _close_extra_fds(keep=()):
    """Close every descriptor from 3 up but those in ``keep``."""
    first = 3
    for kept in sorted(keep) + [None]:
        last = 0xFFFFFFFF if kept is None else kept - 1
        if first <= last and _libc.syscall(SYS_CLOSE_RANGE, first, last, 0) != 0:
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if first <= fd <= last:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        if kept is not None:
            first = kept + 1


def _bind(root, src, dst, read_only):
    target = root + dst
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "w"):
                pass
    _mount(src, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def watch_children():
    """SIGCHLD made readable: (read end, write end) of a pipe the signal writes to, to select on."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    return wake_r, wake_w


def reap(wake_r):
    """(pid, exit code) of every child that has exited since the last call; empties the wake-up pipe."""
    try:
        os.read(wake_r, 4096)
    except BlockingIOError:
        pass
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        done.append((pid, os.waitstatus_to_exitcode(status)))
    return done


def join_cgroups(procs_files):
    for procs in procs_files:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))


# AWS's limits for a function's processes (Lambda quotas: 1,024 file descriptors, 1,024 processes/threads).
LIMITS = (
    (resource.RLIMIT_NOFILE, 1024),
    (resource.RLIMIT_NPROC, 1024),
    (resource.RLIMIT_CORE, 0),
)


def _limit():
    for which, value in LIMITS:
        resource.setrlimit(which, (value, value))


def enter(spec, filter_prog, netns_fd=None):
    join_cgroups(spec.get("cgroup_procs", ()))
    if netns_fd is not None:
        _check(_libc.setns(netns_fd, CLONE_NEWNET), "setns network namespace")
        os.close(netns_fd)
    template = spec.get("template")
    keep = []
    if template:
        os.set_inheritable(TEMPLATE_CONTROL_FD, False)
        keep.append(TEMPLATE_CONTROL_FD)
    if spec.get("runtime_api_fd"):
        os.set_inheritable(RUNTIME_API_FD, False)  # the runtime's; not for the processes a function starts
        keep.append(RUNTIME_API_FD)
    _close_extra_fds(keep=tuple(keep))
    os.setsid()
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)

    root = spec["root_dir"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    for target, link in spec.get("symlinks", ()):
        os.symlink(target, root + link)
    # /tmp before the binds: a bind below /tmp (a data dir under /tmp) then lands on the tmpfs, not under it.
    os.makedirs(root + "/tmp")
    if spec.get("tmp_device"):
        # A disk (an ext4 image on a loop device): full means ENOSPC, and its pages are not the function's
        # memory, as on AWS.
        # The image comes ready (root 1777, no lost+found); noinit_itable: no kernel thread zeroing its
        # inode tables in the background (lazily initialised tables are valid as they are).
        _mount(spec["tmp_device"], root + "/tmp", "ext4", MS_NOSUID | MS_NODEV, "noinit_itable")
    else:
        _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % spec["tmp_mb"])
    for src, dst, read_only in spec["binds"]:
        _bind(root, src, dst, read_only)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.makedirs(root + "/dev")
    _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for dev in ("null", "zero", "full", "random", "urandom"):
        _bind(root, "/dev/" + dev, "/dev/" + dev, False)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink("/proc/self/fd/%d" % i, root + "/dev/" + name)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    os.makedirs(root + "/etc", exist_ok=True)
    for name, content in spec.get("etc", {}).items():
        with open(root + "/etc/" + name, "w") as f:
            f.write(content)
    _mount(None, root + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4m,mode=755")

    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    hostname = spec.get("hostname", "localhost").encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")

    _limit()
    if template:
        _enter_user_namespace(template["uid_base"], template["count"])
        filter_prog = build_seccomp_filter(allow=("mount", "umount2", "unshare"))
    else:
        uid, gid = spec["uid"], spec["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    _own_proc_files()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _seccomp(filter_prog)
    os.chdir(spec.get("cwd", "/var/task"))


def _own_proc_files():
    """Changing uids cleared the process's dumpable flag, which makes its /proc/self files root's: a function
    could not read its own environ, maps or fd list (it can on AWS). Its own uid only, no core files
    (RLIMIT_CORE 0), and ptrace refused by seccomp: nothing else follows from it."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")


def _seccomp(filter_prog):
    if filter_prog is None:
        return
    buf = ctypes.create_string_buffer(filter_prog, len(filter_prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(filter_prog) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


def _enter_user_namespace(uid_base, count):
    """Become uid 0 of a new user namespace whose uids 0..count-1 are host uids uid_base.. (see above)."""
    ready_r, ready_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(ready_w)
            if os.read(ready_r, 1) == b"u":
                parent = os.getppid()
                with open("/proc/%d/uid_map" % parent, "w") as f:
                    f.write("0 %d %d\n" % (uid_base, count))
                with open("/proc/%d/gid_map" % parent, "w") as f:
                    f.write("0 %d %d\n" % (uid_base, count))
                code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    try:
        _check(_libc.unshare(CLONE_NEWUSER), "unshare user namespace")
    finally:
        os.write(ready_w, b"u")
        os.close(ready_w)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("could not map the template's user namespace")
    # Host uid uid_base from here on: root only inside the namespace.
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def enter_forked(spec, filter_prog):
    """In an environment forked from a template: a mount namespace of its own with a private /tmp, its
    own uid (``spec["uid"]``, inside the template's user namespace), then the full seccomp filter."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=1777" % spec["tmp_mb"])
    uid = spec["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _own_proc_files()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _seccomp(filter_prog)
    os.chdir("/var/task")
