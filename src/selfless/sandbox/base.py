"""The sandbox backend seam: how an environment's runtime process is started, limited, watched and freed.

Two backends implement it: ``process`` (plain process groups, anywhere) and ``linux`` (namespaces,
cgroups, seccomp, forked from zygotes). The environment does not know which one it runs on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from selfless.models import Function
from selfless.runtime.runtimes import Runtime


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things are, as the function sees them."""

    task_root: str
    tmp_dir: str
    runtime_dir: str
    # boto3 and friends for Python runtimes (runtime/packages.py), or None.
    packages: str | None = None
    # The function's layers, merged in order (/opt in the Linux sandbox, as on AWS).
    opt_dir: str = "/opt"
    # Where the function finds its Runtime API ("host:port") and selfless's API (a URL): None when the
    # backend gives environments no network of their own (then the host's loopback and the server's own
    # endpoint are used).
    runtime_api: str | None = None
    api_url: str | None = None


class SandboxProcess(Protocol):
    """A started runtime. ``exited`` resolves with the exit code (negative: killed by that signal)."""

    pid: int
    exited: asyncio.Future[int]
    output_fd: int
    # A Runtime API connection the runtime already holds (made by the backend before the runtime ran), for
    # the environment to serve without a connect and a peer check; None: the runtime connects itself.
    runtime_connection: socket.socket | None
    # A listening socket the backend made for the Runtime API (inside the environment's own network), for the
    # environment to serve; None: the environment listens on the host's loopback itself.
    runtime_listener: socket.socket | None
    # Where the backend hands further Runtime API connections of this environment that it accepted itself (set
    # by the environment; None until then).
    runtime_handover: Callable[[socket.socket], None] | None
    # Whether ``freeze`` can stop it between invocations (False: the backend cannot, or it was signalled).
    freezable: bool

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the runtime and everything it started, frozen or not (it is thawed, and never frozen
        again). Idempotent; safe after exit."""

    def freeze(self) -> None:
        """Stop everything the environment runs, where it stands, until ``thaw``: between invocations
        nothing it left behind makes progress. A no-op where ``freezable`` is False."""

    def thaw(self) -> None:
        """Let it run again. Cheap when it is not frozen; safe after exit."""

    def close_output(self) -> None: ...

    def peak_rss_mb(self) -> int | None: ...

    def init_done(self, memory_mb: int) -> None:
        """The runtime asked for its first invocation: limits that spare the init phase apply now."""


class Backend(Protocol):
    name: str
    runtime_packages: Path | None

    async def prepare(self, env_id: str, root: Path, code_tree: Path, function: Function) -> Layout:
        """Make what the environment needs on disk; ``root`` is a path of its own that does not exist yet (a
        backend that needs files there creates it, and ``release`` removes it)."""

    async def spawn(
        self, env_id: str, root: Path, function: Function, runtime: Runtime, layout: Layout, env: Mapping[str, str]
    ) -> SandboxProcess:
        """Start the runtime; raises OSError when it cannot start."""

    async def release(self, env_id: str, root: Path) -> None:
        """Free what ``prepare``/``spawn`` took (kill leftovers, mounts, cgroups). Idempotent."""

    def describe(self) -> str: ...

    def templates_ready(self) -> int:
        """Fork-after-init templates ready to fork from (0 where the backend has none)."""

    def retire(self, qualified_name: str, generation: int | None) -> None:
        """A function version moved to ``generation`` or went away (None): drop what the backend keeps for
        older generations of it (fork-after-init templates)."""

    async def close(self) -> None: ...
