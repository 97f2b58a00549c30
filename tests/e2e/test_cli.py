"""The ``selfless`` client commands, end to end: a real ``selfless serve`` and the CLI as a subprocess.

Each command must talk to the server only through its public API, print what it promises on the stream it
promises, and fail with one ``selfless: ...`` line and exit status 1 (never a traceback).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfless.cli import zip_directory

HEALTH_DEADLINE_S = 20.0
CLI_TIMEOUT_S = 120.0

HANDLER_V1 = """\
def handler(event, context):
    print("cli-test-line", event.get("n"))
    return {"version": 1, "echo": event}
"""

HANDLER_V2 = """\
def handler(event, context):
    return {"version": 2, "echo": event}
"""

RAISING = """\
def handler(event, context):
    raise ValueError("cli-test-boom")
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The test process's environment without anything that would point selfless somewhere else."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SELFLESS_")}


@dataclass
class CliServer:
    endpoint: str
    data_dir: Path
    log_path: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env()
        env["SELFLESS_ENDPOINT"] = self.endpoint
        env["SELFLESS_DATA_DIR"] = str(self.data_dir)
        env.update(extra)
        return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    tmp = tmp_path_factory.mktemp("cli-server")
    data_dir = tmp / "data"
    log_path = tmp / "server.log"
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfless.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        deadline = time.monotonic() + HEALTH_DEADLINE_S
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                pytest.fail(f"selfless serve exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                log_text = log_path.read_text()
                pytest.fail(f"selfless serve not healthy within {HEALTH_DEADLINE_S} s:\n{log_text}")
            time.sleep(0.1)
        yield CliServer(f"http://127.0.0.1:{port}", data_dir, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log_path.read_text()


def cli(server: CliServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfless.cli", *args],
        env=env if env is not None else server.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def ok(server: CliServer, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli(server, *args)
    assert result.returncode == 0, f"selfless {' '.join(args)}: {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``selfless: ...`` line a failing command must print, after checking there is only it."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("selfless: "), lines[0]
    return lines[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def function_dir(tmp_path: Path, source: str, subdir: str = "fn") -> Path:
    d = tmp_path / subdir
    d.mkdir(exist_ok=True)
    (d / "app.py").write_text(source)
    return d


def deploy(server: CliServer, directory: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    required = ["--name", name, "--runtime", "python3.12", "--handler", "app.handler"]
    return ok(server, "deploy", str(directory), *required, *extra)


# --- packaging (no server) -----------------------------------------------------------------------------


def test_zip_directory_is_deterministic_keeps_exec_bits_and_skips_caches(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "lib").mkdir(parents=True)
    (root / "app.py").write_text("x = 1\n")
    (root / "lib" / "tool.sh").write_text("#!/bin/sh\n")
    (root / "lib" / "tool.sh").chmod(0o700)
    for skipped in ("__pycache__", ".git", "lib/__pycache__"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("junk")

    first = zip_directory(root)
    os.utime(root / "app.py", (1, 1))  # mtimes must not leak into the bytes
    assert zip_directory(root) == first

    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert list(infos) == ["app.py", "lib/tool.sh"]
        assert stat.S_IMODE(infos["lib/tool.sh"].external_attr >> 16) == 0o755
        assert stat.S_IMODE(infos["app.py"].external_attr >> 16) == 0o644
        assert zf.read("app.py") == b"x = 1\n"


# --- against a server ----------------------------------------------------------------------------------


def test_deploy_invoke_and_redeploy(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-hello")
    src = function_dir(tmp_path, HANDLER_V1)

    created = deploy(cli_server, src, name, "--memory", "256", "--env", "GREETING=hi")
    assert created.stdout.startswith("created ")
    assert f":function:{name}" in created.stdout
    assert "CodeSha256" in created.stdout
    assert len(created.stdout.strip().splitlines()) == 1

    result = ok(cli_server, "invoke", name, "--payload", '{"n": 1}')
    assert json.loads(result.stdout) == {"version": 1, "echo": {"n": 1}}

    payload_file = tmp_path / "event.json"
    payload_file.write_text('{"n": 2}')
    result = ok(cli_server, "invoke", name, "--payload", f"@{payload_file}")
    assert json.loads(result.stdout) == {"version": 1, "echo": {"n": 2}}

    (src / "app.py").write_text(HANDLER_V2)
    updated = deploy(cli_server, src, name, "--timeout", "10")
    assert updated.stdout.startswith("updated ")
    assert f":function:{name}" in updated.stdout
    assert updated.stdout.split("CodeSha256")[1] != created.stdout.split("CodeSha256")[1]

    result = ok(cli_server, "invoke", name, "--payload", '{"n": 3}')
    assert json.loads(result.stdout) == {"version": 2, "echo": {"n": 3}}

    listing = ok(cli_server, "ls").stdout
    row = next(line for line in listing.splitlines() if name in line)
    assert "python3.12" in row and "256 MB" in row and "10 s" in row and " B" in row


def test_invoke_logs_prints_the_tail_on_stderr(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-tail")
    deploy(cli_server, function_dir(tmp_path, HANDLER_V1), name)
    result = ok(cli_server, "invoke", name, "--payload", '{"n": 7}', "--logs")
    assert json.loads(result.stdout) == {"version": 1, "echo": {"n": 7}}
    for marker in ("START RequestId:", "END RequestId:", "REPORT RequestId:", "cli-test-line"):
        assert marker in result.stderr
    assert "START" not in result.stdout


def test_invoke_async_prints_the_request_status(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-async")
    deploy(cli_server, function_dir(tmp_path, HANDLER_V1), name)
    result = ok(cli_server, "invoke", name, "--async")
    assert "202" in result.stdout


def test_function_error_exits_1_and_still_prints_the_payload(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-raise")
    deploy(cli_server, function_dir(tmp_path, RAISING), name)
    result = cli(cli_server, "invoke", name)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "cli-test-boom"
    assert "Traceback" not in result.stderr


def test_logs_since_shows_what_the_function_printed(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-logs")
    deploy(cli_server, function_dir(tmp_path, HANDLER_V1), name)
    # Deployed but never run: no log group yet, which is not an error.
    assert ok(cli_server, "logs", name, "--since", "5m").stdout == ""
    ok(cli_server, "invoke", name, "--payload", '{"n": 42}')

    deadline = time.monotonic() + 10
    while True:
        out = ok(cli_server, "logs", name, "--since", "5m").stdout
        if "cli-test-line" in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines = out.splitlines()
    assert any("cli-test-line" in line for line in lines), out
    assert any("START RequestId:" in line for line in lines), out
    stamp = lines[0].split(" ", 1)[0]
    assert stamp[:4].isdigit() and "T" in stamp, lines[0]


def test_logs_follow_prints_each_event_once_and_ctrl_c_exits_0(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-follow")
    deploy(cli_server, function_dir(tmp_path, HANDLER_V1), name)
    ok(cli_server, "invoke", name, "--payload", '{"n": 1}')  # create the log group

    out_path, err_path = tmp_path / "follow.out", tmp_path / "follow.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfless.cli", "logs", name, "--follow", "--since", "5m"],
            env=cli_server.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        # Two more invocations while following: their events arrive across several polls.
        time.sleep(1.5)
        ok(cli_server, "invoke", name, "--payload", '{"n": 2}')
        ok(cli_server, "invoke", name, "--payload", '{"n": 3}')
        deadline = time.monotonic() + 15
        while out_path.read_text().count("REPORT RequestId:") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # a couple more polls: nothing may be printed twice
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0
    assert err_path.read_text() == ""
    out_text = out_path.read_text()
    assert out_text.count("REPORT RequestId:") == 3, out_text
    assert out_text.count("START RequestId:") == 3, out_text


def test_ls_and_rm(cli_server: CliServer, tmp_path: Path) -> None:
    name = unique("cli-rm")
    deploy(cli_server, function_dir(tmp_path, HANDLER_V1), name)
    assert name in ok(cli_server, "ls").stdout

    ok(cli_server, "rm", name)  # stdin is not a terminal: no prompt without --yes
    assert name not in ok(cli_server, "ls").stdout

    line = one_error_line(cli(cli_server, "rm", name, "--yes"))
    assert "ResourceNotFoundException" in line


def test_invoke_missing_function_is_one_line(cli_server: CliServer) -> None:
    line = one_error_line(cli(cli_server, "invoke", unique("cli-missing")))
    assert "ResourceNotFoundException" in line


def test_logs_of_missing_function_is_one_line(cli_server: CliServer) -> None:
    line = one_error_line(cli(cli_server, "logs", unique("cli-missing")))
    assert "ResourceNotFoundException" in line


def test_bad_payload_is_a_usage_error(cli_server: CliServer, tmp_path: Path) -> None:
    for payload in ("{not json", f"@{tmp_path / 'missing.json'}"):
        result = cli(cli_server, "invoke", "whatever", "--payload", payload)
        assert result.returncode == 2, result
        assert "Invalid value for '--payload'" in result.stderr
        assert "Traceback" not in result.stderr


def test_parameter_validation_is_one_line(cli_server: CliServer) -> None:
    line = one_error_line(cli(cli_server, "invoke", ""))
    assert "FunctionName" in line


def test_wrong_credentials_are_one_line(cli_server: CliServer) -> None:
    env = cli_server.env(SELFLESS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0", SELFLESS_SECRET_ACCESS_KEY="nope")
    result = cli(cli_server, "ls", env=env)
    one_error_line(result)


def test_unreachable_endpoint(cli_server: CliServer) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = cli(cli_server, "ls", env=cli_server.env(SELFLESS_ENDPOINT=endpoint))
    line = one_error_line(result)
    assert line == f"selfless: cannot reach {endpoint}: is 'selfless serve' running?"


def test_missing_credentials_say_where_they_were_looked_for(cli_server: CliServer, tmp_path: Path) -> None:
    env = cli_server.env(SELFLESS_DATA_DIR=str(tmp_path / "nowhere"))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(key, None)
    # Keep boto3's chain from finding the developer's own keys or asking an instance metadata service.
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    line = one_error_line(cli(cli_server, "ls", env=env))
    assert str(tmp_path / "nowhere" / "credentials") in line
    assert not (tmp_path / "nowhere").exists()
