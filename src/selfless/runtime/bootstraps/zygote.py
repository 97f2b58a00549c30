"""selfless's zygote: a warm, single-threaded parent that forks execution environments into their sandboxes.

Started by the server as ``python -I -S -u zygote.py`` with a SOCK_SEQPACKET control socket whose number
is in SELFLESS_ZYGOTE_FD. It first gives itself a mount namespace of its own in which the runtime
directory (SELFLESS_RUNTIME_VIEW_FD: boto3 and friends and the bootstrap's modules) is ``/var/runtime``, where
every environment sees it: what the zygote imports from there (the bootstrap, boto3) carries that path in
its modules and code objects, never the host's (the data directory's). The host's mounts stay visible to
it (its children bind code trees from there). It then imports the Python runtime's bootstrap (and the
modules in SELFLESS_ZYGOTE_PRELOAD), builds the seccomp filter once, freezes its heap out of the garbage
collector's way, and serves two messages:

  server -> zygote   {"op": "spare", "token": T, "cgroup_procs": [...]}
  zygote -> server   {"spare": T, "pid": P}
  server -> zygote   {"op": "spawn", "id": N, "spec": {...}, "fds": [names], ["spare": T]} with the
                     descriptors ``fds`` names, in order (SCM_RIGHTS): "out" (the stdout pipe), "api" (a Python
                     environment's end of its Runtime API connection), "netns" (the
                     environment's network namespace), "control" (a fork-after-init template's socket)
  zygote -> server   {"id": N, "pid": P} or {"id": N, "error": "..."}; later {"exit": P, "code": C}

A spare is a child forked ahead of time that has already joined its cgroups and waits for a spec: joining
a cgroup v1 memory controller costs an RCU grace period (~20 ms here), which spares take off the cold
start. A spare whose zygote goes away sees its socket close and exits.

A spawned child enters its sandbox (sandbox_enter: cgroups, its network namespace, mount/IPC/UTS
namespaces, a read-only root, limits, an unprivileged uid, no_new_privs, seccomp) and then runs the Python
bootstrap in-process, or execs a custom runtime's ``bootstrap``. Runs on every supported interpreter
(3.9+); never imports selfless.
"""

import ctypes
import gc
import json
import os
import select
import signal
import socket
import struct
import sys

RUNTIME_DIR = "/var/runtime"


def _runtime_view(source):
    """A mount namespace of the zygote's own in which ``source`` is /var/runtime. /var becomes a
    tmpfs that holds the host's /var entries, bound back one by one, and runtime: the host's file system is
    never written to. Mounts made on the host later still show (the namespace is a slave)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def mount(src, target, fstype, flags, data=None):
        rc = libc.mount(
            src.encode() if src else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, "mount %s: %s" % (target, os.strerror(err)))

    ms_nosuid, ms_nodev, ms_bind, ms_rec, ms_slave = 2, 4, 4096, 16384, 1 << 19
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        err = ctypes.get_errno()
        raise OSError(err, "unshare: %s" % os.strerror(err))
    mount(None, "/", None, ms_rec | ms_slave)
    host_var = os.open("/var", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    entries = [name for name in os.listdir("/var") if name != "runtime"]
    mount("tmpfs", "/var", "tmpfs", ms_nosuid | ms_nodev, "size=64k,mode=755")
    for name in entries:
        src = "/proc/self/fd/%d/%s" % (host_var, name)
        dst = "/var/" + name
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src):
            os.mkdir(dst)
            mount(src, dst, None, ms_bind | ms_rec)
        else:
            open(dst, "w").close()
            mount(src, dst, None, ms_bind)
    os.close(host_var)
    os.mkdir(RUNTIME_DIR)
    # Writable here (the zygote, root, caches the bytecode of what it imports there); read-only in every
    # environment.
    mount(source, RUNTIME_DIR, None, ms_bind)


if os.environ.get("SELFLESS_RUNTIME_VIEW_FD"):
    _view_fd = int(os.environ["SELFLESS_RUNTIME_VIEW_FD"])
    _runtime_view(os.readlink("/proc/self/fd/%d" % _view_fd))  # (a bind's source must be a path of ours)
    os.close(_view_fd)
    sys.path.insert(0, RUNTIME_DIR)
    os.environ["SELFLESS_RUNTIME_PACKAGES"] = RUNTIME_DIR
else:  # no runtime directory (a test of the zygote alone): the bootstrap beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import python_bootstrap  # noqa: E402  (after the path is set)
import sandbox_enter  # noqa: E402

del sys.path[0]  # functions get the runtime directory last on their path (python_bootstrap._prepare_paths)

_MAX_MSG = 1 << 20


def _preload():
    provided = os.environ.get("SELFLESS_RUNTIME_PACKAGES")
    if provided and sys.version_info >= (3, 10):
        sys.path.append(provided)
    before = set(sys.modules)
    for name in os.environ.get("SELFLESS_ZYGOTE_PRELOAD", "").split(","):
        name = name.strip()
        if name:
            try:
                __import__(name)
            except Exception:  # a missing optional module only costs its absence
                pass
    # Top-level packages the preload brought in from outside the standard library (boto3, botocore, ...).
    provided = os.environ.get("SELFLESS_RUNTIME_PACKAGES")
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or ""
        if provided and path.startswith(provided):
            _PRELOADED.add(name.split(".")[0])


_PRELOADED = set()


def _forget_shadowed_preloads(task_root):
    """A function that ships its own copy of a preloaded package (its own boto3) must get its own, as it
    would on AWS: then every preloaded package is dropped, so that they are imported afresh together."""
    shadowed = any(
        os.path.exists(os.path.join(task_root, top)) or os.path.exists(os.path.join(task_root, top + ".py"))
        for top in _PRELOADED
    )
    if shadowed:
        for name in list(sys.modules):
            if name.split(".")[0] in _PRELOADED:
                del sys.modules[name]


def _send(sock, doc):
    sock.send(json.dumps(doc).encode())


def _reset_signals():
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spare(cgroup_procs, channel, sock, filter_prog):
    """A forked spare: join the cgroups now, then wait for the spec of the environment it becomes."""
    try:
        sock.close()
        _reset_signals()
        sandbox_enter.join_cgroups(cgroup_procs)
        msg, fds, _flags, _addr = socket.recv_fds(channel, _MAX_MSG, _MAX_FDS)
        if not msg:
            os._exit(0)  # the zygote went away, or gave up on this spare
        channel.close()
        doc = json.loads(msg)
        named = _named(doc.get("fds", ["out"]), fds)
        if named is None:
            os._exit(0)
    except BaseException:
        os._exit(126)
    _child(doc["spec"], named, None, filter_prog)


_MAX_FDS = 3


def _named(names, fds):
    """{name: descriptor} for a message's descriptors, or None (closing them) when they are not as named."""
    if len(names) != len(fds) or "out" not in names:
        for fd in fds:
            os.close(fd)
        return None
    return {name: fds[i] for i, name in enumerate(names)}


def _child(spec, fds, sock, filter_prog):
    """In the forked child: never returns. ``fds``: "out" (stdout), and "netns" (the network namespace to
    enter), "control" (a fork-after-init template's socket to the server) when given."""
    code = 1
    try:
        if sock is not None:
            sock.close()
            _reset_signals()
        out_fd = fds["out"]
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        if out_fd > 2:
            os.close(out_fd)
        netns_fd = fds.get("netns")
        # Each socket to its fixed number (sandbox_enter keeps those); a descriptor still open that holds
        # that number now moves aside first ("out" is closed by now).
        fixed = (("control", sandbox_enter.TEMPLATE_CONTROL_FD), ("api", sandbox_enter.RUNTIME_API_FD))
        for name, number in fixed:
            fd = fds.get(name)
            if fd is None or fd == number:
                continue
            for other in ("netns", "control", "api"):
                if other != name and fds.get(other) == number:
                    fds[other] = os.dup(number)
            netns_fd = fds.get("netns")
            os.dup2(fd, number)
            os.close(fd)
            fds[name] = number
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sandbox_enter.enter(spec, filter_prog, netns_fd)
        os.environ.clear()
        os.environ.update(spec["env"])
        if spec.get("exec"):
            os.execve(spec["exec"][0], spec["exec"], spec["env"])
        # The zygote's heap stays frozen: collecting it would touch (and so copy) every shared page.
        _forget_shadowed_preloads(spec.get("cwd", "/var/task"))
        if "control" in fds:
            control = socket.socket(fileno=sandbox_enter.TEMPLATE_CONTROL_FD)
            python_bootstrap.template_main(control, filter_prog)
        else:
            python_bootstrap.main(sandbox_enter.RUNTIME_API_FD if "api" in fds else None)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # the reason reaches the function's log
        try:
            os.write(2, ("selfless: sandbox setup failed: %s: %s\n" % (type(exc).__name__, exc)).encode())
        except OSError:
            pass
        code = 127
    finally:
        os._exit(code)


def main():
    sock = socket.socket(fileno=int(os.environ["SELFLESS_ZYGOTE_FD"]))
    _preload()
    filter_prog = sandbox_enter.build_seccomp_filter()
    sandbox_enter.become_subreaper()
    sandbox_enter.mergeable()
    children = set()
    spares = {}  # token -> (pid, channel to it)
    wake_r, _wake_w = sandbox_enter.watch_children()
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": os.getpid(), "python": "%d.%d" % sys.version_info[:2]})
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            for pid, code in sandbox_enter.reap(wake_r):
                if pid in children:
                    children.discard(pid)
                    _send(sock, {"exit": pid, "code": code})
        if sock in readable:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MSG, _MAX_FDS)
            except (ConnectionError, OSError):
                return
            if not msg:
                return  # the server went away: so do we (children are in their own sessions)
            doc = json.loads(msg)
            if doc.get("op") == "spare":
                for fd in fds:
                    os.close(fd)
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    pid = os.fork()
                except OSError as exc:
                    ours.close()
                    theirs.close()
                    _send(sock, {"spare": doc["token"], "error": str(exc)})
                    continue
                if pid == 0:
                    ours.close()
                    _spare(doc["cgroup_procs"], theirs, sock, filter_prog)
                theirs.close()
                children.add(pid)
                spares[doc["token"]] = (pid, ours)
                _send(sock, {"spare": doc["token"], "pid": pid})
                continue
            names = doc.get("fds", ["out"])
            if doc.get("op") != "spawn":
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": doc.get("id"), "error": "bad request"})
                continue
            if _named(names, fds) is None:  # (closed them)
                _send(sock, {"id": doc.get("id"), "error": "bad request"})
                continue
            if doc.get("spare") in spares:
                pid, channel = spares.pop(doc["spare"])
                try:
                    socket.send_fds(channel, [json.dumps({"spec": doc["spec"], "fds": names}).encode()], fds)
                    reply = {"id": doc["id"], "pid": pid}
                except OSError as exc:
                    reply = {"id": doc["id"], "error": "spare %d is gone: %s" % (pid, exc)}
                channel.close()
                for fd in fds:
                    os.close(fd)
                _send(sock, reply)
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": doc["id"], "error": str(exc)})
                continue
            if pid == 0:
                _child(doc["spec"], {name: fds[i] for i, name in enumerate(names)}, sock, filter_prog)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            _send(sock, {"id": doc["id"], "pid": pid})


if __name__ == "__main__":
    # struct and ctypes are imported here so that forks inherit them already loaded.
    _ = (struct, ctypes)
    main()
