"""Fork-after-init templates, as the server sees them: one per function version that opted in.

A template is a sandboxed process that ran the version's init once (imports, module-level clients) and then
forks environments on request (``bootstraps/python_bootstrap.py`` has its side of the protocol, and
``bootstraps/sandbox_enter.py`` how it and its children are isolated). A new environment of that version
then pays neither an interpreter start nor the function's imports: a fork, a mount namespace with a private
/tmp, a uid change, the seccomp filter, and the after-restore hooks.

Each template has a block of ``UIDS_PER_TEMPLATE`` host uids, mapped into its user namespace: uid 0 is the
template itself, 1.. are the environments forked from it, one each at a time. An environment forked from
a template is moved into a cgroup of its own before it may go on, so its memory limit is its own.

A template serves one generation of one version. When the version goes away or changes, the template
drains: no new forks, and it stops once the last environment forked from it has exited (it is their
parent and reports their exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from selfless.sandbox.cgroups import Cgroup
from selfless.sandbox.channel import read_messages, read_pipe, send_message
from selfless.sandbox.peers import PeerLookup

log = logging.getLogger(__name__)

_MAX_LINE = 65536  # what the server's own log takes of a template's output without a newline, per line

UIDS_PER_TEMPLATE = 512
_FORK_TIMEOUT_S = 10.0


class TemplateFailed(Exception):
    """The template could not be made: its init failed (``error_type``) or it could not start."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


@dataclasses.dataclass
class ForkedChild:
    """A child of a template, in its own sandbox and cgroup, not yet an environment: ``index`` is its uid
    inside the template's user namespace, ``read_fd`` the read end of its stdout, ``go_fd`` the write end
    of the pipe it waits on (the server writes to it directly: no hop through the template on a call's
    path), ``api`` the server's end of a connection the child uses for the Runtime API (no TCP connect,
    accept and peer check on a call's path; only this child holds the other end).

    Each descriptor is closed at most once (then it is -1): closing a number twice could close another
    file that took the number meanwhile."""

    index: int
    pid: int
    exited: asyncio.Future[int]
    read_fd: int
    go_fd: int
    api: socket.socket  # the server's end of its Runtime API connection, made at fork
    cgroup: Cgroup

    def moved(self) -> None:
        """It is in its own cgroup now: it may enter its sandbox (and then waits for ``go``)."""
        os.write(self.go_fd, b"m")

    def go(self, env: dict[str, str]) -> None:
        """It goes on as an environment with these variables. The pipe is new and holds at most one byte,
        and the variables are far below a pipe's 64 KiB, so the write does not block."""
        try:
            os.write(self.go_fd, json.dumps(env).encode())
        finally:
            self.close_go()

    def close_go(self) -> None:
        fd, self.go_fd = self.go_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_output(self) -> None:
        """Its stdout pipe, when it never became an environment (an environment's process closes it)."""
        fd, self.read_fd = self.read_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        """It will never be an environment: its descriptors go (the caller kills it)."""
        self.close_go()
        self.close_output()
        self.api.close()


class SharedRuntimeApi:
    """The Runtime API address (127.0.0.1:9001) of a template's network namespace, which the template and
    every environment forked from it share. Each environment got its own connection at fork; a further one
    (a function that opens its own, from AWS_LAMBDA_RUNTIME_API) is handed to the environment whose uid owns
    it (sock_diag of that namespace), or closed: one environment never reaches another's Runtime API."""

    def __init__(
        self,
        listener: socket.socket,
        peers: PeerLookup,
        taker_of: Callable[[int], Callable[[socket.socket], None] | None],
    ) -> None:
        """``taker_of(uid)``: where a connection owned by ``uid`` goes (None: nobody's, closed)."""
        self._listener = listener
        self._peers = peers
        self._taker_of = taker_of
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("a template's Runtime API listener failed: %s", exc)
                return
            uid = self._peers.tcp_owner(peer, conn.getsockname())
            take = self._taker_of(uid) if uid is not None else None
            if take is None:
                conn.close()
                continue
            conn.setblocking(False)
            take(conn)

    def close(self) -> None:
        """Idempotent."""
        if self._listener.fileno() >= 0:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
        self._peers.close()


class Template:
    def __init__(self, qualified_name: str, generation: int, uid_base: int, block: int) -> None:
        self.qualified_name = qualified_name
        self.generation = generation
        self.uid_base = uid_base
        self.block = block
        # The name its cgroup, network namespace and sandbox spec go by.
        self.owner = f"template-{block}"
        self.cgroup: Cgroup | None = None  # made in the background, with the template
        self.pid = 0
        self.exited: asyncio.Future[int] | None = None
        self.draining = False
        self.closed = False
        self._free = list(range(UIDS_PER_TEMPLATE - 1, 0, -1))
        self._children: dict[int, asyncio.Future[int]] = {}  # pid -> its exit
        self._early_exits: dict[int, int] = {}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._output_fd = -1
        self._partial = b""
        # Children forked ahead, in their cgroups already, waiting for an environment (see LinuxBackend).
        self.ahead: list[ForkedChild] = []
        self.filling = False
        # Children are forked ahead once it has been quiet a moment (LinuxBackend._replenish_template):
        # the timer for that, and how many environments were forked from it since it was last quiet.
        self.refill: asyncio.TimerHandle | None = None
        self.burst = 0
        self.ready: asyncio.Future[float] = self._loop.create_future()  # the template's init time (ms)
        self.ready.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    # -- wiring ---------------------------------------------------------------------------------------------

    def attach(self, pid: int, exited: asyncio.Future[int], sock: socket.socket, output_fd: int) -> None:
        self.pid = pid
        self.exited = exited
        self._sock = sock
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._output_fd = output_fd
        self._loop.add_reader(output_fd, self._on_output)
        exited.add_done_callback(self._on_exit)

    @property
    def usable(self) -> bool:
        return (
            not self.draining
            and self.ready.done()
            and not self.ready.cancelled()
            and self.ready.exception() is None
            and bool(self._free)
            and self._sock is not None
        )

    @property
    def died(self) -> bool:
        """It was ready once and is gone now (killed, out of memory): worth making again, unlike one whose
        init failed."""
        ready_once = self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None
        return ready_once and self.exited is not None and self.exited.done()

    @property
    def idle(self) -> bool:
        """No child of it (environment, or forked ahead) is alive."""
        return not self._children

    # -- forking --------------------------------------------------------------------------------------------

    def take_uid(self) -> int:
        """A uid index (1..) for a new environment; the host uid is ``uid_base`` + it."""
        return self._free.pop()

    def give_back_uid(self, index: int) -> None:
        self._free.append(index)

    async def fork(self, spec: dict[str, Any], output_fd: int) -> tuple[int, asyncio.Future[int], int, socket.socket]:
        """A new child: its pid, its exit, the write end of the pipe it waits on and the server's end of its
        Runtime API connection (see ForkedChild)."""
        if self._sock is None:
            raise OSError("the template is gone")
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[request_id] = reply
        doc = {"op": "fork", "id": request_id, "spec": spec}
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with asyncio.timeout(_FORK_TIMEOUT_S):
                fds = [output_fd, go_r, theirs.fileno()]
                await send_message(self._sock, self._loop, self._lock, json.dumps(doc).encode(), fds)
                os.close(go_r)
                go_r = -1
                theirs.close()
                msg = await reply
            if "error" in msg:
                raise OSError(f"the template could not fork: {msg['error']}")
        except BaseException:
            if go_r >= 0:
                os.close(go_r)
            os.close(go_w)
            theirs.close()
            ours.close()
            raise
        pid = int(msg["pid"])
        exited: asyncio.Future[int] = self._loop.create_future()
        if pid in self._early_exits:
            exited.set_result(self._early_exits.pop(pid))
        else:
            self._children[pid] = exited
        return pid, exited, go_w, ours

    # -- messages -------------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._sock is not None:
            read_messages(self._sock, self._dispatch, self._lost)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "ready" in msg:
            if not self.ready.done():
                self.ready.set_result(float(msg.get("init_ms", 0.0)))
        elif "init_error" in msg:
            if not self.ready.done():
                self.ready.set_exception(TemplateFailed(str(msg["init_error"]), str(msg.get("message", ""))))
        elif "exit" in msg:
            pid, code = int(msg["exit"]), int(msg["code"])
            fut = self._children.pop(pid, None)
            if fut is None:
                self._early_exits[pid] = code
            elif not fut.done():
                fut.set_result(code)
        elif "id" in msg:
            reply = self._replies.pop(int(msg["id"]), None)
            if reply is not None and not reply.done():
                reply.set_result(msg)

    def _on_output(self) -> None:
        # What the template's init printed: into the server's log, line by line.
        data, _end = read_pipe(self._output_fd, 65536, self._loop)
        if not data:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > _MAX_LINE:  # an init printing without newlines must not grow the server
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            log.info("template of %s: %s", self.qualified_name, line.decode("utf-8", "replace"))

    def _on_exit(self, fut: asyncio.Future[int]) -> None:
        if not self.ready.done():
            self.ready.set_exception(TemplateFailed("Runtime.ExitError", "the template exited during its init"))
        self._lost()

    def _lost(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(OSError("the template went away"))
        self._replies.clear()
        # Its children are the server's now (a subreaper); nobody reports their exits any more, so they go.
        for pid, fut in list(self._children.items()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if not fut.done():
                fut.set_result(-signal.SIGKILL)
        self._children.clear()

    def close(self) -> None:
        """Stop the template itself (its cgroup holds only it); environments forked from it go with it."""
        self.closed = True
        self.draining = True
        if self.cgroup is not None:
            self.cgroup.kill_all()
        self._lost()
        if self._output_fd >= 0:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._output_fd)
            with contextlib.suppress(OSError):
                os.close(self._output_fd)
            self._output_fd = -1
