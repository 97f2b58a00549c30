"""Shared fixtures: a real ``selfless serve`` on a free port, boto3 clients for it, and package builders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.response import StreamingBody

ACCESS_KEY = "AKIASELFLESSTEST0001"
SECRET_KEY = "selfless-test-secret-key-0123456789abcdef"
ROLE = "arn:aws:iam::000000000000:role/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _buffer_payload(parsed: dict[str, Any], **_: Any) -> None:
    """Invoke's Payload read at once: a test that never reads it (an Event call's empty body) would leave its
    connection checked out of the pool, never closed, for the garbage collector to warn about later."""
    body = parsed.get("Payload")
    if body is not None:
        data = body.read()
        parsed["Payload"] = StreamingBody(io.BytesIO(data), len(data))


@dataclass
class Server:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    sandbox: str = ""
    prewarm: str | None = None  # /health's word on the zygote prewarm at the first 200
    sandbox_uids: tuple[int, int] | None = None
    sandbox_cgroup: str | None = None
    # Every client made for this server; closed when it stops, so that no pooled connection to it is left
    # for the garbage collector to find (an unclosed socket warning, an error here) in a later test.
    clients: list[Any] = field(default_factory=list)

    def cgroup_leftovers(self) -> list[str]:
        """This server's cgroup directories that still exist (there must be none once it has stopped). Looked
        for under the cgroups this test process (the server's parent) is in, where the server makes them:
        another test run on the same host may hold a directory of the same name under its own."""
        if not self.sandbox_cgroup:
            return []
        own: dict[str, str] = {}
        with open("/proc/self/cgroup") as lines:
            for line in lines:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(",") if controllers else [""]:
                    own[controller.removeprefix("name=")] = path.lstrip("/")
        root = Path("/sys/fs/cgroup")
        places = [root / own[""]] if "" in own else []  # v2, or v1's unified hierarchy
        for mount in root.iterdir() if root.is_dir() else []:
            if mount.name in own and mount.name != "":
                places.append(mount / own[mount.name])
        if "" in own and (root / "unified").is_dir():
            places.append(root / "unified" / own[""])
        return sorted({str(place / self.sandbox_cgroup) for place in places if (place / self.sandbox_cgroup).is_dir()})

    def leftovers(self) -> list[int]:
        """Processes that belong to this server's environments (by working directory, or by sandbox uid)."""
        found = processes_under(self.data_dir)
        if self.sandbox_uids is not None:
            low, high = self.sandbox_uids
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        if low <= os.stat(f"/proc/{entry}").st_uid <= high:
                            found.append(int(entry))
        return found

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "lambda", **config: Any) -> Any:
        cfg = Config(**{"retries": {"max_attempts": 1, "mode": "standard"}, "read_timeout": 120, **config})
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=cfg,
        )
        if service == "lambda":
            client.meta.events.register("after-call.lambda.Invoke", _buffer_payload)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        for client in self.clients:
            client.close()
        self.clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def processes_under(path: Path) -> list[int]:
    """Pids whose working directory lies under ``path`` (environments run with cwd in the data dir)."""
    found = []
    prefix = str(path.resolve())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/cwd").startswith(prefix):
                    found.append(int(entry))
    return found


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
    port = free_port()
    data = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SELFLESS_"))}
    env.update(
        {
            "SELFLESS_ACCESS_KEY_ID": ACCESS_KEY,
            "SELFLESS_SECRET_ACCESS_KEY": SECRET_KEY,
            "SELFLESS_SERVER_SECRET_CANARY": "do-not-leak-this",
        }
    )
    env.update(extra_env or {})
    log_path = tmp / "server.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "selfless.cli",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                *(args or []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(port, data, proc, log_path, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.endpoint}/health", timeout=1) as r:
            if r.status == 200:
                health = json.loads(r.read())
                server.sandbox = health["sandbox"]
                server.sandbox_cgroup = health.get("sandbox_cgroup")
                server.prewarm = health.get("prewarm")
                if "sandbox_uids" in health:
                    low, high = health["sandbox_uids"].split("-")
                    server.sandbox_uids = (int(low), int(high))
                return server
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()
    assert srv.leftovers() == [], "environments outlived the server"
    assert srv.cgroup_leftovers() == [], "cgroups outlived the server"


@pytest.fixture(scope="session")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture(scope="session")
def lam_unvalidated(server: Server) -> Any:
    """A client that lets bad parameters through, so that the server's own validation is what answers."""
    return server.client(parameter_validation=False)


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.create_system = 3
            z.writestr(info, content)
    return buf.getvalue()


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_python(lam: Any, name: str, code: str, **kwargs: Any) -> dict[str, Any]:
    """CreateFunction's answer for a python3.12 function whose ``app.py`` is ``code`` (not waited for)."""
    answer: dict[str, Any] = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": code})},
        **kwargs,
    )
    return answer


def deploy(
    lam: Any,
    code: str | None = None,
    *,
    files: dict[str, str | bytes] | None = None,
    modes: dict[str, int] | None = None,
    runtime: str = "python3.11",
    handler: str = "app.handler",
    name: str | None = None,
    **kwargs: Any,
) -> str:
    """Create a function from source text (``code``) or files and wait until it is Active; its name."""
    fname = name or unique()
    package = make_zip(files if files is not None else {"app.py": code or ""}, modes)
    lam.create_function(
        FunctionName=fname, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": package}, **kwargs
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=fname, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return fname


@pytest.fixture
def make_function(lam: Any) -> Iterator[Callable[..., str]]:
    """Create a function from source text (``code``) or files; deleted after the test."""
    created: list[str] = []

    def make(code: str | None = None, **kwargs: Any) -> str:
        fname = deploy(lam, code, **kwargs)
        created.append(fname)
        return fname

    yield make
    for fname in created:
        with contextlib.suppress(Exception):
            lam.delete_function(FunctionName=fname)
