"""An execution environment: one runtime process, its Runtime API endpoint, its code copy, /tmp and log stream.

Lifecycle (guarded transitions, see ``EnvState``)::

    STARTING ──first /next──> IDLE <──response/error── BUSY
        │ assign()                 └──assign()──────────> ↑
        └────────────────────────────────────────────────┘
    any ──stop()/exit/timeout──> STOPPING ──process reaped, resources freed──> DEAD

Contracts:
- One invocation at a time. ``assign`` is only legal in STARTING (before anything was assigned) or IDLE.
- Every assigned invocation is finished exactly once, whatever happens (response, error, timeout, crash,
  stop); each finish writes exactly one END and one REPORT line and one metering record.
- The environment is free (``on_free``) the moment its runtime posts a response, not when it next calls
  ``/next``: the next request may be assigned before then and is delivered when ``/next`` arrives.
- After a timeout or a crash the environment is never reused; ``on_dead`` fires once it is fully gone.
- ``stop`` is idempotent and safe in every state.
- Frozen between invocations (where the backend can, see ``SandboxProcess.freeze``): once its runtime has
  waited at ``/next`` with nothing assigned for ``Settings.freeze_after_ms``, nothing in the environment
  runs until the next invocation is assigned, which thaws it before the answer to ``/next`` is written.
  So a process the function left behind runs unbilled for at most that long after a call. Frozen only
  between invocations: the timeout clock and Duration start at delivery, after the thaw.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import logging
import math
import signal
import socket
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfless import json_limits
from selfless.api.auth import Keyring, Principal, generate_session_credentials
from selfless.config import Settings
from selfless.httpserver import HttpServer, Response
from selfless.invocation.inflight import Invocation, Outcome, OutcomeKind, error_payload
from selfless.models import Function
from selfless.observability.logs import LogStream, cut_events
from selfless.observability.metering import Meter
from selfless.runtime import api as runtime_api
from selfless.runtime.api import EnvironmentStopped
from selfless.runtime.runtimes import Runtime
from selfless.sandbox.base import Backend, Layout, SandboxProcess
from selfless.sandbox.channel import read_pipe

log = logging.getLogger(__name__)

# AWS gives the init phase 10 s, and retries a slow init within the invocation's own timeout.
_MIN_INIT_TIMEOUT_S = 10.0
_KILL_WAIT_S = 10.0
RUNTIME_API_CONNECTIONS = 32
# Output: one read per event-loop callback takes this much at most; a drain before START/END at most this
# (more than a pipe holds: 64 KiB by default, 1 MiB at most for an unprivileged process).
_READ_BYTES = 65536
_DRAIN_MAX = 1 << 20


_releases: set[asyncio.Task[None]] = set()


async def wait_for_releases(deadline_s: float) -> None:
    """Wait (up to the deadline) until every stopped environment has given back its cgroup, uid and files."""
    if _releases:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*_releases, return_exceptions=True), deadline_s)


class EnvState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


_TRANSITIONS: dict[EnvState, frozenset[EnvState]] = {
    EnvState.STARTING: frozenset({EnvState.IDLE, EnvState.BUSY, EnvState.STOPPING}),
    EnvState.IDLE: frozenset({EnvState.BUSY, EnvState.STOPPING}),
    EnvState.BUSY: frozenset({EnvState.IDLE, EnvState.STOPPING}),
    EnvState.STOPPING: frozenset({EnvState.DEAD}),
    EnvState.DEAD: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"signal: {-code}"
        text = {
            "SIGKILL": "killed",
            "SIGTERM": "terminated",
            "SIGSEGV": "segmentation fault",
            "SIGABRT": "aborted",
            "SIGINT": "interrupt",
        }.get(name, name.lower())
        return f"signal: {text}"
    return f"exit status {code}"


class Environment:
    """See the module docstring for the contract."""

    def __init__(
        self,
        *,
        env_id: str,
        function: Function,
        runtime: Runtime,
        settings: Settings,
        root: Path,
        code_tree: Path,
        stream: LogStream,
        meter: Meter,
        keyring: Keyring,
        backend: Backend,
        on_free: Callable[[Environment], None],
        on_dead: Callable[[Environment], None],
        endpoint: str,
        first_substitution: Callable[[str], bool],
        provisioned: bool = False,
    ) -> None:
        self.id = env_id
        self.function = function
        self.key = (function.qualified_name, function.generation)
        # Started ahead for provisioned concurrency: initialised before any call, never reports Init Duration.
        self.provisioned = provisioned
        # Started for one call (the pool's lease), which assigns it once its start returns: should its init
        # finish first, it is not offered to any other call meanwhile.
        self.claimed = False
        self.runtime = runtime
        self.state = EnvState.STARTING
        self.last_used = time.monotonic()
        self.current: Invocation | None = None
        self._settings = settings
        self._root = root
        self._code_tree = code_tree
        self._stream = stream
        self._meter = meter
        self._keyring = keyring
        self._backend = backend
        self._on_free = on_free
        self._on_dead = on_dead
        self._endpoint = endpoint
        self._first_substitution = first_substitution
        self._loop = asyncio.get_running_loop()
        # Only the environment's own processes reach it (its own loopback, or a connection made at fork); a
        # runtime's X-Ray error cause comes in a header of up to 1 MiB; a few connections are all a runtime
        # and its extensions need (each one is a descriptor of the server's).
        self._server = HttpServer(
            runtime_api.handle,
            max_body=runtime_api.MAX_RESPONSE,
            max_head=runtime_api.MAX_HEAD,
            max_connections=RUNTIME_API_CONNECTIONS,
            idle_timeout=0,
            context=self,
            on_too_large=runtime_api.too_large,
            coalesce=True,  # a result's 202 leaves with the answer to the /next sent behind it
        )
        self._process: SandboxProcess | None = None
        # A /next waiting for work: the HTTP answer itself, resolved by ``assign`` (or with STOPPED).
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the init's deadline
        # The running invocation's deadline (monotonic) and the timer that checks it. Lazy: a timer armed
        # for an earlier call is kept, and on firing re-arms itself for the deadline of the call running
        # then, so a busy environment arms about one timer per timeout, not one per call.
        self._deadline = math.inf
        self._deadline_timer: asyncio.TimerHandle | None = None
        freeze_ms = settings.freeze_after_ms
        self._freeze_after_s = None if freeze_ms is None else freeze_ms / 1000
        self._freeze_timer: asyncio.TimerHandle | None = None  # lazy too: see ``_freeze_soon``
        self._waiting_since = 0.0  # when its runtime last began to wait at /next with nothing assigned
        self._spawned_at = 0.0
        self._init_done = False
        self._init_duration_ms: float | None = None
        self._init_reported = False
        self._init_error: tuple[bytes, str] | None = None
        self._restore_ms: float | None = None  # forked from a template: REPORT shows Restore Duration
        self._partial = b""  # an unfinished last line of output (at most one event's worth)
        self._output_paused = False  # not reading output until the log writer catches up
        self._output_eof = False
        self._release_task: asyncio.Task[None] | None = None
        self._adoptions: set[asyncio.Task[None]] = set()
        self._access_key: str | None = None
        self._cleaned = False
        self._start_error: OSError | None = None
        # Resolved once the start is over: init done (the first /next) or the environment is gone.
        self.started: asyncio.Future[None] = self._loop.create_future()
        # LoggingConfig: JSON turns the platform's lines into JSON records, which SystemLogLevel WARN drops.
        logging_config = function.logging_config
        self._json_logs = logging_config["LogFormat"] == "JSON"
        self._platform_logs = not self._json_logs or logging_config["SystemLogLevel"] in ("DEBUG", "INFO")
        # Platform cost of this start (files, Runtime API endpoint, spawn, fork and sandbox, interpreter
        # start: everything but the function's own init), in the metering record and a metric.
        self.start_overhead_ms = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------------

    def _move(self, to: EnvState) -> None:
        if to not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"environment {self.id}: {self.state.value} -> {to.value}")
        self.state = to

    @property
    def alive(self) -> bool:
        return self.state in (EnvState.STARTING, EnvState.IDLE, EnvState.BUSY)

    async def start(self) -> None:
        """Create the environment's files, its Runtime API endpoint and its process.

        When the runtime cannot be started (no executable bootstrap, a full disk...) the environment is
        stopped at once and remembers why: the invocation assigned to it then fails with
        Runtime.InvalidEntrypoint and still gets its START/END/REPORT lines."""
        t0 = time.perf_counter()
        fn = self.function
        try:
            layout = await self._backend.prepare(self.id, self._root, self._code_tree, fn)
            runtime_api = layout.runtime_api
            if runtime_api is None:
                # Bound now, served once the runtime is on its way: a connection made meanwhile waits in the
                # backlog, and the ~0.3 ms the event loop takes to serve a socket is off a forked start's path.
                host, port = self._server.listen("127.0.0.1", 0)
                runtime_api = f"{host}:{port}"
            key_id, secret, token = generate_session_credentials()
            principal = Principal(key_id, "function", fn.arn, environment_id=self.id)
            self._keyring.add(key_id, secret, principal, session_token=token)
            self._access_key = key_id
            env = self._environment(layout, runtime_api, key_id, secret, token)
            runtime_arn = f"arn:aws:lambda:{self._settings.region}::runtime:selfless-{self.runtime.name}"
            self._platform(
                None,
                "platform.initStart",
                {
                    "initializationType": env["AWS_LAMBDA_INITIALIZATION_TYPE"],
                    "phase": "init",
                    "runtimeVersion": f"{self.runtime.name}.selfless",
                    "runtimeVersionArn": runtime_arn,
                    "functionName": fn.name,
                    "functionVersion": fn.version,
                },
                f"INIT_START Runtime Version: {self.runtime.name}.selfless\tRuntime Version ARN: {runtime_arn}",
            )
            if self.runtime.substitute and self._first_substitution(fn.name):
                self._stream.write(
                    f"selfless: {self.runtime.name} is not installed here; running on Python "
                    f"{self.runtime.actual_version} instead"
                )
            self.start_overhead_ms += (time.perf_counter() - t0) * 1000
            self._spawned_at = time.monotonic()
            self._process = await self._backend.spawn(self.id, self._root, fn, self.runtime, layout, env)
            if self._process.runtime_connection is not None:
                # Its first /next comes this way; the listener (if any) is served after it (``_after_init``).
                await self._server.adopt(self._process.runtime_connection)
                if self._process.runtime_listener is not None:
                    self._server.listen_on(self._process.runtime_listener)
            else:
                if self._process.runtime_listener is not None:  # inside the environment's own network
                    self._server.listen_on(self._process.runtime_listener)
                await self._server.serve()
            self._process.runtime_handover = self._runtime_connection
        except OSError as exc:
            log.warning("environment %s of %s failed to start: %r", self.id, fn.name, exc, exc_info=True)
            self._start_error = exc
            await self.stop()
            return
        except BaseException:
            await self.stop()
            raise
        self._loop.add_reader(self._process.output_fd, self._read_output)
        self._process.exited.add_done_callback(self._on_exit)
        if self._init_done:
            # The runtime was quick: its first /next arrived while the spawn call was still returning.
            self._process.init_done(fn.memory_size)
        else:
            init_timeout = max(_MIN_INIT_TIMEOUT_S, float(fn.timeout))
            self._timer = self._loop.call_later(init_timeout, self._init_timed_out)

    def _runtime_connection(self, sock: socket.socket) -> None:
        """Another Runtime API connection of this environment, accepted by the backend: served as ours."""
        task = self._loop.create_task(self._server.adopt(sock))
        self._adoptions.add(task)
        task.add_done_callback(self._adoptions.discard)

    def _environment(self, layout: Layout, api: str, key_id: str, secret: str, token: str) -> dict[str, str]:
        fn = self.function
        s = self._settings
        opt = layout.opt_dir
        env: dict[str, str] = {
            # As AWS sets them: layers' bin/ and lib/ after the system's and the code's.
            "PATH": f"/usr/local/bin:/usr/bin:/bin:{opt}/bin",
            "LD_LIBRARY_PATH": f"{layout.task_root}:{layout.task_root}/lib:{opt}/lib",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
        }
        env.update(fn.environment)
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": fn.name,
                "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": self._stream.name,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency" if self.provisioned else "on-demand",
                "AWS_REGION": s.region,
                "AWS_DEFAULT_REGION": s.region,
                "AWS_LAMBDA_RUNTIME_API": api,
                "LAMBDA_TASK_ROOT": layout.task_root,
                "LAMBDA_RUNTIME_DIR": layout.runtime_dir,
                "_HANDLER": fn.handler or "",
                "TMPDIR": layout.tmp_dir,
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_SESSION_TOKEN": token,
            }
        )
        env.setdefault("AWS_ENDPOINT_URL", layout.api_url or self._endpoint)
        env["AWS_LAMBDA_LOG_FORMAT"] = fn.logging_config["LogFormat"]
        if "ApplicationLogLevel" in fn.logging_config:
            env["AWS_LAMBDA_LOG_LEVEL"] = fn.logging_config["ApplicationLogLevel"]
        if self.runtime.execution_env:
            env["AWS_EXECUTION_ENV"] = self.runtime.execution_env
        if self.runtime.is_python and layout.packages:
            env["SELFLESS_RUNTIME_PACKAGES"] = layout.packages
        if opt != "/opt":
            env["SELFLESS_OPT_DIR"] = opt  # the process backend: no /opt of its own
        return env

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``grace_s``) and free everything. Idempotent."""
        if self.state in (EnvState.STARTING, EnvState.IDLE, EnvState.BUSY):
            self._move(EnvState.STOPPING)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(runtime_api.STOPPED)
            self._waiter = None
        p = self._process
        if p is not None and not p.exited.done():
            if grace_s > 0:
                p.kill(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(p.exited), grace_s)
            p.kill(signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(p.exited), _KILL_WAIT_S)
            except TimeoutError:
                # Unkillable for now (stuck in the kernel): free everything else; the reaper still
                # collects the process whenever it finally exits.
                log.error("environment %s: pid %d survived SIGKILL for %.0f s", self.id, p.pid, _KILL_WAIT_S)
        self._cleanup()
        if self._release_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._release_task), _KILL_WAIT_S)

    def _on_exit(self, fut: asyncio.Future[int]) -> None:
        code = fut.result() if not fut.cancelled() else -9
        if self.state is not EnvState.STOPPING and self.state is not EnvState.DEAD:
            self._move(EnvState.STOPPING)
        self._drain_output(final=True)
        inv = self.current
        if inv is not None and not inv.done.done():
            if self._init_error is not None and not self._init_done:
                body, etype = self._init_error
                self._complete(inv, OutcomeKind.INIT_ERROR, body, etype, status="error")
            else:
                text = _exit_text(code)
                self._stream.write(f"RequestId: {inv.request_id} Error: Runtime exited with error: {text}")
                inv.log_lines.append(f"RequestId: {inv.request_id} Error: Runtime exited with error: {text}")
                payload = error_payload(
                    "Runtime.ExitError",
                    f"RequestId: {inv.request_id} Error: Runtime exited with error: {text}",
                )
                self._complete(inv, OutcomeKind.EXIT, payload, "Runtime.ExitError", status="error")
        self._cleanup()

    def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        if not self.started.done():
            self.started.set_result(None)
        if self.state is not EnvState.DEAD:
            if self.state is not EnvState.STOPPING:
                self._move(EnvState.STOPPING)
            self._move(EnvState.DEAD)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(runtime_api.STOPPED)
        inv = self.current
        if inv is not None and not inv.done.done():
            payload = error_payload(
                "Runtime.ExitError",
                f"RequestId: {inv.request_id} Error: Runtime exited without providing a reason",
            )
            self._complete(inv, OutcomeKind.EXIT, payload, "Runtime.ExitError", status="error")
        self.current = None
        if self._process is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._process.output_fd)
            self._process.close_output()
            # The group may hold orphans the runtime left behind; they go with it.
            self._process.kill(signal.SIGKILL)
        self._server.close_all()
        if self._access_key is not None:
            self._keyring.remove(self._access_key)
        self._stream.flush()
        self._stream.close()
        self._release_task = self._loop.create_task(self._release())
        _releases.add(self._release_task)
        self._release_task.add_done_callback(_releases.discard)
        self._on_dead(self)

    async def _release(self) -> None:
        try:
            await self._backend.release(self.id, self._root)
        except Exception:
            log.exception("releasing environment %s", self.id)

    # -- invocations --------------------------------------------------------------------------------------

    def assign(self, inv: Invocation) -> None:
        if self._start_error is not None:
            self._fail_start(inv, self._start_error)
            return
        if self.current is not None:
            raise IllegalTransition(f"environment {self.id} already has invocation {self.current.request_id}")
        if self.state is EnvState.IDLE:
            self._move(EnvState.BUSY)
        elif self.state is EnvState.STARTING:
            pass  # stays STARTING until init is done; delivered at the first /next
        else:
            raise IllegalTransition(f"environment {self.id}: cannot assign in {self.state.value}")
        self.current = inv
        self.claimed = False
        if self._waiter is not None and not self._waiter.done():
            waiter, self._waiter = self._waiter, None
            # Thawed before the answer to /next is written (by the handler waiting for it, right after this),
            # so the runtime's wake-up overlaps with that write, and before delivery, so the thaw stays out of
            # Duration. (Writing the answer into the frozen runtime's socket first, one wake-up instead of
            # two, measured no faster: bench/freeze.py.)
            self._thaw()
            waiter.set_result(runtime_api.next_response(self._deliver(inv)))

    def _fail_start(self, inv: Invocation, exc: OSError) -> None:
        if isinstance(exc, (FileNotFoundError, PermissionError)) and not self.runtime.is_python:
            reason = "Couldn't find valid bootstrap(s): [/var/task/bootstrap]"
        else:
            reason = f"Couldn't start the runtime: {exc.strerror or exc}"
        text = f"RequestId: {inv.request_id} Error: {reason}"
        self._write(inv, text)
        payload = error_payload("Runtime.InvalidEntrypoint", text)
        self._complete(inv, OutcomeKind.START_FAILED, payload, "Runtime.InvalidEntrypoint", status="error")
        # The stream was closed with the environment; the lines above reopened it.
        self._stream.close()

    def _deliver(self, inv: Invocation) -> Invocation:
        # What the runtime printed before asking for work (its init, the last call's stragglers) stays
        # out of this invocation: read it before START.
        self._drain_output()
        inv.deliver()
        if self.state is EnvState.STARTING:
            self._move(EnvState.BUSY)
        self._start_line(inv)
        self._deadline = inv.delivered_at + inv.timeout_s
        if self._deadline_timer is None:
            self._deadline_timer = self._loop.call_later(inv.timeout_s, self._check_deadline)
        return inv

    def _check_deadline(self) -> None:
        """The deadline timer fired: time out the running invocation if it is past its deadline; else wait
        for the deadline of the one running now (none running: the next delivery arms it again)."""
        self._deadline_timer = None
        inv = self.current
        if inv is None or inv.delivered_at == 0.0 or inv.done.done():
            return
        left = self._deadline - time.monotonic()
        if left > 0.0005:  # the loop's timers may fire up to a millisecond early
            self._deadline_timer = self._loop.call_later(left, self._check_deadline)
            return
        self._timed_out(inv)

    def next_invocation(
        self, init_ms: float | None = None, restore_ms: float | None = None
    ) -> Response | asyncio.Future[Response]:
        if not self._init_done:
            self._init_done = True
            self._restore_ms = restore_ms
            if not self.started.done():
                self.started.set_result(None)
            if self.provisioned:
                self._init_reported = True  # its init ran before any call: no call reports it
            since_spawn = (time.monotonic() - self._spawned_at) * 1000
            # Init Duration is the function's own init when its runtime says (ours does); the rest of the
            # time since the spawn (fork, sandbox, interpreter start) is the platform's.
            own = init_ms if init_ms is not None and init_ms <= since_spawn else since_spawn
            self._init_duration_ms = own
            self.start_overhead_ms += since_spawn - own
            # After the answer to this request is written: a cgroup write and serving a listener (~0.3 ms)
            # need not delay the first event.
            self._loop.call_soon(self._after_init)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.current is None and self.state is EnvState.STARTING:
                self._move(EnvState.IDLE)
                if not self.claimed:  # started ahead (provisioned): free for any call
                    self._on_free(self)
        inv = self.current
        if inv is not None and inv.delivered_at == 0.0:
            return runtime_api.next_response(self._deliver(inv))
        if not self.alive:
            raise EnvironmentStopped(self.id)
        self._waiter = self._loop.create_future()
        self._freeze_soon()
        return self._waiter

    def _freeze_soon(self) -> None:
        """The runtime waits for work and has none: freeze the environment unless a call comes first. The
        timer is lazy: one armed earlier is kept (a call between cancels nothing), and when it fires it
        freezes only an environment that has waited the whole delay, else waits for the rest of it."""
        self._waiting_since = time.monotonic()
        p = self._process
        if self._freeze_timer is None and self._freeze_after_s is not None and p is not None and p.freezable:
            self._freeze_timer = self._loop.call_later(self._freeze_after_s, self._freeze)

    def _freeze(self) -> None:
        self._freeze_timer = None
        waiting = self._waiter is not None and not self._waiter.done()
        if waiting and self.current is None and self.state is EnvState.IDLE and self._process is not None:
            assert self._freeze_after_s is not None  # armed only then
            left = self._waiting_since + self._freeze_after_s - time.monotonic()
            if left > 0.0005:  # it had work since the timer was armed: the delay counts from its last wait
                self._freeze_timer = self._loop.call_later(left, self._freeze)
                return
            self._process.freeze()

    def _thaw(self) -> None:
        if self._process is not None:
            self._process.thaw()

    def _after_init(self) -> None:
        if self._process is not None and self.alive:
            self._process.init_done(self.function.memory_size)
            self._server.serve_soon()

    def post_response(self, request_id: str, body: bytes) -> bool:
        inv = self.current
        if inv is None or inv.request_id != request_id or inv.delivered_at == 0.0:
            return False
        self._finish_and_free(inv, OutcomeKind.RESPONSE, body, None, status=None)
        return True

    def post_error(self, request_id: str, body: bytes, error_type: str | None) -> bool:
        inv = self.current
        if inv is None or inv.request_id != request_id or inv.delivered_at == 0.0:
            return False
        etype = error_type or "Unhandled"
        try:
            parsed = json_limits.loads(body) if body else {}
            if isinstance(parsed, dict) and isinstance(parsed.get("errorType"), str):
                etype = parsed["errorType"]
        except ValueError:
            body = error_payload(etype, body.decode("utf-8", "replace"))
        self._finish_and_free(inv, OutcomeKind.ERROR, body or error_payload(etype, ""), etype, status="error")
        return True

    def post_init_error(self, body: bytes, error_type: str | None) -> bool:
        if self._init_done:
            return False
        etype = error_type or "Runtime.Unknown"
        try:
            parsed = json_limits.loads(body) if body else {}
            if isinstance(parsed, dict) and isinstance(parsed.get("errorType"), str):
                etype = parsed["errorType"]
        except ValueError:
            body = error_payload(etype, body.decode("utf-8", "replace"))
        self._init_error = (body or error_payload(etype, ""), etype)
        # AWS resets an environment whose init failed; the next invocation starts a new one.
        inv = self.current
        self._drain_output()
        if inv is not None and not inv.done.done():
            self._complete(inv, OutcomeKind.INIT_ERROR, self._init_error[0], etype, status="error")
            self.current = None
        self._loop.call_soon(self._kill_after_failure)
        return True

    def response_too_large(self, request_id: str) -> None:
        inv = self.current
        if inv is None or inv.request_id != request_id:
            return
        payload = error_payload(
            "Function.ResponseSizeTooLarge",
            f"Response payload size exceeded maximum allowed payload size ({runtime_api.MAX_RESPONSE} bytes).",
        )
        self._finish_and_free(inv, OutcomeKind.TOO_LARGE, payload, "Function.ResponseSizeTooLarge", status="error")

    def _finish_and_free(
        self, inv: Invocation, kind: OutcomeKind, payload: bytes, etype: str | None, status: str | None
    ) -> None:
        self._drain_output()
        self.current = None  # its deadline timer, if still armed, finds nobody running (or a later call)
        self.last_used = time.monotonic()
        self._complete(inv, kind, payload, etype, status)
        if self.state is EnvState.BUSY:
            self._move(EnvState.IDLE)
            self._on_free(self)

    def _timed_out(self, inv: Invocation) -> None:
        if inv is not self.current or inv.done.done():
            return
        self._drain_output()
        text = f"Task timed out after {inv.timeout_s:.2f} seconds"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        self._write(inv, f"{stamp} {inv.request_id} {text}")
        payload = error_payload("Sandbox.Timedout", f"RequestId: {inv.request_id} Error: {text}")
        self._complete(inv, OutcomeKind.TIMEOUT, payload, "Sandbox.Timedout", status="timeout")
        self.current = None
        self._kill_after_failure()

    def _init_timed_out(self) -> None:
        self._timer = None
        if self._init_done:
            return
        inv = self.current
        if inv is not None and not inv.done.done():
            self._drain_output()
            timeout = max(_MIN_INIT_TIMEOUT_S, float(self.function.timeout))
            text = f"Task timed out after {timeout:.2f} seconds"
            payload = error_payload("Sandbox.Timedout", f"RequestId: {inv.request_id} Error: {text}")
            self._complete(inv, OutcomeKind.TIMEOUT, payload, "Sandbox.Timedout", status="timeout")
            self.current = None
        self._kill_after_failure()

    def _kill_after_failure(self) -> None:
        if self.state is not EnvState.DEAD and self.state is not EnvState.STOPPING:
            self._move(EnvState.STOPPING)
        if self._process is not None:
            self._process.kill(signal.SIGKILL)
        else:
            self._cleanup()

    def _complete(
        self, inv: Invocation, kind: OutcomeKind, payload: bytes, etype: str | None, status: str | None
    ) -> None:
        """Write END and REPORT, meter, and resolve the invocation. Once per invocation."""
        if inv.done.done():
            return
        now = time.monotonic()
        if inv.delivered_at == 0.0:
            inv.delivered_at = now
            self._start_line(inv)
        duration_ms = (now - inv.delivered_at) * 1000
        billed = max(1, math.ceil(duration_ms))
        memory = (self._process.peak_rss_mb() if self._process is not None else None) or 0
        init_ms = None
        platform_ms = None
        if not self._init_reported and self._init_duration_ms is not None:
            init_ms = self._init_duration_ms
            platform_ms = self.start_overhead_ms
            self._init_reported = True
        report = (
            f"REPORT RequestId: {inv.request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {billed} ms\t"
            f"Memory Size: {self.function.memory_size} MB\tMax Memory Used: {memory} MB"
        )
        if init_ms is not None and self._restore_ms is not None:
            # As SnapStart reports a start from a snapshot: the restore, not an init.
            restore = self._restore_ms
            report += f"\tRestore Duration: {restore:.2f} ms\tBilled Restore Duration: {max(1, math.ceil(restore))} ms"
        elif init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        if status is not None:
            report += f"\tStatus: {status}"
            if etype and status == "error":
                report += f"\tError Type: {etype}"
        if not self._json_logs:
            # END and REPORT as one event batch (JSON logs have no END record).
            lines = (f"END RequestId: {inv.request_id}", report)
            self._stream.write_lines(lines)
            inv.log_lines.extend(lines)
        else:  # the JSON record (``_platform`` leaves it out when SystemLogLevel is above INFO)
            metrics: dict[str, float | int] = {
                "durationMs": round(duration_ms, 2),
                "billedDurationMs": billed,
                "memorySizeMB": self.function.memory_size,
                "maxMemoryUsedMB": memory,
            }
            if init_ms is not None and self._restore_ms is not None:
                metrics["restoreDurationMs"] = round(self._restore_ms, 2)
                metrics["billedRestoreDurationMs"] = max(1, math.ceil(self._restore_ms))
            elif init_ms is not None:
                metrics["initDurationMs"] = round(init_ms, 2)
            record: dict[str, Any] = {"requestId": inv.request_id, "metrics": metrics, "status": status or "success"}
            if etype and status == "error":
                record["errorType"] = etype
            self._platform(inv, "platform.report", record, report)
        self._stream.flush_soon()
        self._meter.invocation(
            function=self.function.name,
            version=self.function.version,
            request_id=inv.request_id,
            environment=self.id,
            duration_ms=round(duration_ms, 3),
            billed_ms=billed,
            memory_mb=self.function.memory_size,
            max_memory_used_mb=memory,
            init_ms=None if init_ms is None else round(init_ms, 3),
            platform_init_ms=None if platform_ms is None else round(platform_ms, 3),
            outcome=kind.value,
        )
        inv.finish(Outcome(kind, payload, etype, duration_ms, init_ms, memory, tuple(inv.log_lines), platform_ms))

    # -- output ------------------------------------------------------------------------------------------

    def _start_line(self, inv: Invocation) -> None:
        version = self.function.version
        record = {"requestId": inv.request_id, "version": version}
        self._platform(inv, "platform.start", record, f"START RequestId: {inv.request_id} Version: {version}")

    def _platform(self, inv: Invocation | None, kind: str, record: dict[str, Any], text: str) -> None:
        """A platform line: ``text`` in Text format; in JSON format a ``{"time", "type", "record"}`` record as
        AWS writes it, unless SystemLogLevel is above INFO."""
        if not self._json_logs:
            self._write(inv, text)
        elif self._platform_logs:
            now = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
            self._write(inv, json.dumps({"time": stamp, "type": kind, "record": record}, separators=(",", ":")))

    def _write(self, inv: Invocation | None, line: str) -> None:
        self._stream.write(line)
        if inv is not None:
            inv.log_lines.append(line)

    def _read_output(self) -> None:
        """The runtime's pipe is readable: one bounded read per callback, so a function that never stops
        printing cannot hold the event loop. While the log writer is behind (its backlog past its bound), the
        pipe is not read until it has caught up: a function printing faster than the disk takes it then blocks
        on its own writes, and the server holds a bounded backlog, never the function's whole output."""
        p = self._process
        if p is None or self._output_paused:
            return
        data, eof = read_pipe(p.output_fd, _READ_BYTES, self._loop)
        # A write may arrive in pieces (print() under -u writes each argument separately): keep the
        # unfinished line until its newline, or until the invocation completes.
        self._take_output(data, complete=eof, final=eof)
        if not eof and self._stream.congested:
            self._output_paused = True
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(p.output_fd)
            self._stream.when_drained(self._resume_output)

    def _resume_output(self) -> None:
        self._output_paused = False
        p = self._process
        if p is not None and not self._cleaned and not self._output_eof and p.output_fd >= 0:
            self._loop.add_reader(p.output_fd, self._read_output)

    def _drain_output(self, final: bool = False, complete: bool = True) -> None:
        """Read what the runtime has written so far; called before START and END so output lands in its call.
        Bounded: what the pipe holds now (which holds everything written before the runtime's last request),
        so a background thread printing on cannot keep it going. It reads even while the reader waits for
        the log writer (a pipe's worth at most); only past the writer's hard bound is that output dropped,
        counted and said. ``complete``: an invocation (or the environment) ends here, so an unfinished last
        line goes out too. ``final``: the runtime is gone."""
        p = self._process
        if p is None:
            return
        data, eof = read_pipe(p.output_fd, min(_pipe_bytes(p.output_fd), _DRAIN_MAX), self._loop)
        self._take_output(data, complete=complete or eof, final=final or eof)

    def _take_output(self, data: bytes, complete: bool, final: bool) -> None:
        if final:
            self._output_eof = True
        if not data and not (complete and self._partial):
            return
        lines, self._partial = cut_events(self._partial + data, complete=complete)
        if not lines:
            return
        if self._stream.overflowing:
            self._stream.drop(len(lines), sum(len(line) + 1 for line in lines))
            return
        self._stream.write_lines(lines)
        inv = self.current
        if inv is not None and inv.delivered_at:
            inv.log_lines.extend(lines)


def _pipe_bytes(fd: int) -> int:
    """How many bytes the pipe holds now (0 when that cannot be told)."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    except OSError:
        return 0
