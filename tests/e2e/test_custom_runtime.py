"""provided.al2023 with the official runtime interface client (PyPI awslambdaric) as the bootstrap."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

APP = """
import os, time
def handler(event, context):
    if event.get("fail"):
        raise KeyError("missing thing")
    if event.get("hang"):
        time.sleep(30)
    print("ric says hello")
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining": context.get_remaining_time_in_millis(),
        "cwd": os.getcwd(),
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
    }
"""


def ric_files() -> dict[str, str | bytes]:
    """The official runtime interface client and what it imports, shipped inside the package as a custom
    runtime must be (a sandbox sees nothing of the test environment), run by the system's interpreter of the
    same minor version (/usr is what every sandbox root has)."""
    files: dict[str, str | bytes] = {}
    for dist in ("awslambdaric", "simplejson", "snapshot-restore-py"):
        for entry in importlib.metadata.distribution(dist).files or ():
            if "__pycache__" in entry.parts or ".dist-info" in entry.parts[0]:
                continue
            files["deps/" + str(entry)] = Path(str(entry.locate())).read_bytes()
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    assert os.access(python, os.X_OK), f"{python} is needed to run awslambdaric inside a sandbox"
    files["bootstrap"] = (
        f"#!/bin/sh\nexport PYTHONPATH=$LAMBDA_TASK_ROOT/deps\nexec {python} -m awslambdaric app.handler\n"
    )
    return files


def shell_bootstrap() -> str:
    """A custom runtime in plain shell and curl-free Python one-liners is overkill; a tiny Python loop over
    the Runtime API (urllib only) stands in for any language's hand-written runtime."""
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return (
        f"#!{python} -I\n"
        "import json, os, urllib.request\n"
        "api = 'http://' + os.environ['AWS_LAMBDA_RUNTIME_API'] + '/2018-06-01/runtime/invocation/'\n"
        "while True:\n"
        "    with urllib.request.urlopen(api + 'next') as r:\n"
        "        rid = r.headers['Lambda-Runtime-Aws-Request-Id']\n"
        "        event = json.loads(r.read())\n"
        "    body = json.dumps({'echo': event, 'handler': os.environ['_HANDLER']}).encode()\n"
        "    urllib.request.urlopen(urllib.request.Request(api + rid + '/response', data=body)).read()\n"
    )


@pytest.fixture
def ric_function(make_function: Callable[..., str]) -> str:
    return make_function(
        files={"app.py": APP, **ric_files()},
        modes={"bootstrap": 0o755},
        runtime="provided.al2023",
        handler="app.handler",
        Timeout=2,
    )


def test_awslambdaric_invoke(lam: Any, ric_function: str) -> None:
    r = lam.invoke(FunctionName=ric_function, Payload=json.dumps({"a": 1}), LogType="Tail")
    out = json.loads(r["Payload"].read())
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert out["event"] == {"a": 1}
    assert out["function_name"] == ric_function
    assert 1000 < out["remaining"] <= 2000
    assert out["cwd"] == out["task_root"]
    log = base64.b64decode(r["LogResult"]).decode()
    assert "ric says hello" in log and "REPORT RequestId: " + out["request_id"] in log
    # Warm: the second call reuses the environment and is fast.
    r2 = lam.invoke(FunctionName=ric_function, Payload=b"{}")
    assert r2["StatusCode"] == 200 and "FunctionError" not in r2


def test_awslambdaric_error_and_timeout(lam: Any, ric_function: str) -> None:
    r = lam.invoke(FunctionName=ric_function, Payload=json.dumps({"fail": True}))
    out = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "KeyError" and "missing thing" in out["errorMessage"]
    r = lam.invoke(FunctionName=ric_function, Payload=json.dumps({"hang": True}))
    out = json.loads(r["Payload"].read())
    assert out["errorType"] == "Sandbox.Timedout"
    assert out["errorMessage"].endswith("Task timed out after 2.00 seconds")
    r = lam.invoke(FunctionName=ric_function, Payload=b"{}")
    assert "FunctionError" not in r


def test_awslambdaric_import_error(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(
        files={"app.py": "import nothing_here\n", **ric_files()},
        modes={"bootstrap": 0o755},
        runtime="provided.al2023",
    )
    r = lam.invoke(FunctionName=name, Payload=b"{}")
    out = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ImportModuleError"


def test_hand_written_runtime(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(
        files={"bootstrap": shell_bootstrap()},
        modes={"bootstrap": 0o755},
        runtime="provided",
        handler="anything.goes",
    )
    r = lam.invoke(FunctionName=name, Payload=json.dumps({"x": 2}))
    assert json.loads(r["Payload"].read()) == {"echo": {"x": 2}, "handler": "anything.goes"}


def test_missing_bootstrap(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(files={"app.py": "x = 1\n"}, runtime="provided.al2")
    r = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    out = json.loads(r["Payload"].read())
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.InvalidEntrypoint"
    assert "Couldn't find valid bootstrap(s)" in out["errorMessage"]
    log = base64.b64decode(r["LogResult"]).decode()
    assert "START RequestId" in log and "REPORT RequestId" in log and "Status: error" in log
