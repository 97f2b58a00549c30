"""Invoke semantics as AWS documents them, end to end with boto3 against a real server."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.credentials
import botocore.exceptions
import pytest

from tests.conftest import Server, make_zip

ECHO = """
import os, sys, json, time
print("init line")
def handler(event, context):
    print("handling", json.dumps(event))
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "event": event,
        "pid": os.getpid(),
        "request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "client_context": None if context.client_context is None else context.client_context.custom,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "python": "%d.%d" % sys.version_info[:2],
        "path0": sys.path[0],
    }
"""


def call(lam: Any, name: str, payload: Any = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}), **kw)
    body = r["Payload"].read()
    return r, json.loads(body) if body else None


def tail(r: dict[str, Any]) -> str:
    return base64.b64decode(r["LogResult"]).decode()


def test_request_response_context_and_environment(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO, MemorySize=256, Environment={"Variables": {"MY_VAR": "yes"}})
    r, out = call(lam, name, {"k": "v"})
    assert r["StatusCode"] == 200 and "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    assert out["event"] == {"k": "v"}
    assert out["function_name"] == name and out["function_version"] == "$LATEST"
    assert out["memory"] == "256"
    assert out["arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert out["log_group"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in out["log_stream"]
    assert 2000 < out["remaining"] <= 3000
    env = out["env"]
    assert env["MY_VAR"] == "yes"
    for key in (
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "_HANDLER",
        "TZ",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "_X_AMZN_TRACE_ID",
    ):
        assert key in env, key
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert out["cwd"] == env["LAMBDA_TASK_ROOT"] == out["path0"]
    # Nothing of the server's own environment reaches a function.
    assert "SELFLESS_SERVER_SECRET_CANARY" not in env
    assert "SELFLESS_SECRET_ACCESS_KEY" not in env
    assert not any(v == "selfless-test-secret-key-0123456789abcdef" for v in env.values())


def test_warm_reuse_and_parallel_fan_out(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    pids = {call(lam, name)[1]["pid"] for _ in range(5)}
    assert len(pids) == 1, "sequential calls should reuse one warm environment"
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: call(lam, name, {"sleep": 0.5})[1], range(4)))
    assert len({o["pid"] for o in outs}) == 4, "parallel calls each get their own environment"
    assert len({o["request_id"] for o in outs}) == 4


def test_tail_logs_hold_this_invocation(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    r, out = call(lam, name, {"marker": "abc123"}, LogType="Tail")
    log = tail(r)
    lines = log.strip().splitlines()
    rid = out["request_id"]
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert 'handling {"marker": "abc123"}' in lines[1]
    assert lines[-2] == f"END RequestId: {rid}"
    report = lines[-1]
    assert report.startswith(f"REPORT RequestId: {rid}\tDuration: ")
    fields = dict(part.split(": ", 1) for part in report.split("\t")[1:] if ": " in part)
    assert fields["Memory Size"] == "128 MB"
    assert int(fields["Max Memory Used"].split()[0]) > 0
    duration = float(fields["Duration"].split()[0])
    billed = int(fields["Billed Duration"].split()[0])
    assert billed == max(1, -(-int(duration * 1000) // 1000)) or billed == int(duration) + 1
    assert "Init Duration" in fields  # first call of a new environment
    r2, _ = call(lam, name, {}, LogType="Tail")
    assert "Init Duration" not in tail(r2)
    assert "init line" not in tail(r2)


def test_dry_run_and_event(lam: Any, server: Server, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    dry = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert dry["StatusCode"] == 204
    marker = f"event-{time.time_ns()}"
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"m": marker}))
    assert accepted["StatusCode"] == 202
    logs = server.client("logs")
    deadline = time.monotonic() + 20
    found = False
    while time.monotonic() < deadline and not found:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        found = any(marker in e["message"] for e in events)
        time.sleep(0.1)
    assert found, "the Event invocation never ran"


def test_client_context(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    ctx = base64.b64encode(json.dumps({"custom": {"user": "u1"}}).encode()).decode()
    _, out = call(lam, name, {}, ClientContext=ctx)
    assert out["client_context"] == {"user": "u1"}
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, ClientContext="!!notbase64!!")


def test_handler_exception(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function("def handler(e, c):\n    raise ValueError('bad thing')\n")
    r, out = call(lam, name)
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert out["errorMessage"] == "bad thing"
    assert isinstance(out["stackTrace"], list) and any("raise ValueError" in s for s in out["stackTrace"])


def test_timeout_then_fresh_environment(lam: Any, make_function: Callable[..., str]) -> None:
    code = (
        "import os, time\ndef handler(e, c):\n    if e.get('hang'):\n        time.sleep(30)\n    return os.getpid()\n"
    )
    name = make_function(code, Timeout=1)
    _, pid_before = call(lam, name)
    t0 = time.monotonic()
    r, out = call(lam, name, {"hang": True}, LogType="Tail")
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 5
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout"
    assert out["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")
    assert "Task timed out after 1.00 seconds" in tail(r)
    assert "Status: timeout" in tail(r)
    r2, pid_after = call(lam, name)
    assert "FunctionError" not in r2 and pid_after != pid_before


@pytest.mark.parametrize(
    ("code", "handler", "error_type", "message"),
    [
        (
            "import not_a_module\n",
            "app.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'app': No module named 'not_a_module'",
        ),
        (
            "def other(e, c):\n    pass\n",
            "app.handler",
            "Runtime.HandlerNotFound",
            "Handler 'handler' missing on module 'app'",
        ),
        ("def handler(e, c)\n", "app.handler", "Runtime.UserCodeSyntaxError", "Syntax error in module 'app'"),
        ("x = 1\n", "nodot", "Runtime.MalformedHandlerName", "Bad handler 'nodot'"),
        ("raise RuntimeError('init boom')\n", "app.handler", "RuntimeError", "init boom"),
    ],
)
def test_init_errors(
    lam: Any, make_function: Callable[..., str], code: str, handler: str, error_type: str, message: str
) -> None:
    name = make_function(code, handler=handler)
    for _ in range(2):  # and again on a fresh environment
        r, out = call(lam, name)
        assert r["FunctionError"] == "Unhandled"
        assert out["errorType"] == error_type
        assert message in out["errorMessage"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("os._exit(3)", "Runtime exited with error: exit status 3"),
        ("os.kill(os.getpid(), 9)", "Runtime exited with error: signal: killed"),
    ],
)
def test_crash_returns_exit_error_then_recovers(
    lam: Any, make_function: Callable[..., str], body: str, expected: str
) -> None:
    code = f"import os\ndef handler(e, c):\n    if e.get('crash'):\n        {body}\n    return 'fine'\n"
    name = make_function(code)
    r, out = call(lam, name, {"crash": True}, LogType="Tail")
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.ExitError"
    assert out["errorMessage"].endswith(expected)
    assert "REPORT RequestId" in tail(r)
    r2, out2 = call(lam, name)
    assert out2 == "fine" and "FunctionError" not in r2


def test_payload_limits(lam: Any, make_function: Callable[..., str]) -> None:
    code = "def handler(e, c):\n    return 'x' * e.get('n', 1)\n"
    name = make_function(code)
    with pytest.raises(lam.exceptions.RequestTooLargeException) as exc:
        lam.invoke(FunctionName=name, Payload=b'"' + b"x" * 6_291_456 + b'"')
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "6291456" in exc.value.response["Error"]["Message"]
    r, out = call(lam, name, {"n": 6_300_000})
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Function.ResponseSizeTooLarge"
    r2, out2 = call(lam, name, {"n": 5_000_000})
    assert "FunctionError" not in r2 and len(out2) == 5_000_000
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"{not json")


def test_unmarshalable_result(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function("def handler(e, c):\n    return {1, 2}\n")
    r, out = call(lam, name)
    assert r["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.MarshalError"


def test_qualifier(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    r, _ = call(lam, name, Qualifier="$LATEST")
    assert r["StatusCode"] == 200
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="7")


def test_update_retires_old_environments_without_failing_in_flight(lam: Any, make_function: Callable[..., str]) -> None:
    v1 = "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return 'v1'\n"
    v2 = "def handler(e, c):\n    return 'v2'\n"
    name = make_function(v1)
    assert call(lam, name)[1] == "v1"
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        slow = ex.submit(call, lam, name, {"sleep": 1.5})
        time.sleep(0.3)
        lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": v2}))
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        assert call(lam, name)[1] == "v2"
        r, out = slow.result(timeout=30)
    assert out == "v1" and "FunctionError" not in r


def test_update_configuration_reaches_new_environments(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO, Environment={"Variables": {"VER": "1"}})
    assert call(lam, name)[1]["env"]["VER"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"VER": "2"}}, MemorySize=384)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    out = call(lam, name)[1]
    assert out["env"]["VER"] == "2" and out["memory"] == "384"


@pytest.mark.parametrize("runtime", ["python3.9", "python3.10", "python3.12", "python3.13"])
def test_python_runtimes(lam: Any, make_function: Callable[..., str], runtime: str) -> None:
    name = make_function(ECHO, runtime=runtime)
    _, out = call(lam, name)
    assert out["python"] == runtime.removeprefix("python")


def test_missing_runtime_version_runs_on_nearest(lam: Any, server: Server, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO, runtime="python3.14")
    _, out = call(lam, name)
    assert out["python"] in ("3.13", "3.14")
    if out["python"] != "3.14":
        events = server.client("logs").filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        assert any("python3.14 is not installed here" in e["message"] for e in events)


def test_own_code_copy_and_tmp(lam: Any, server: Server, make_function: Callable[..., str]) -> None:
    code = (
        "import os, tempfile, time\n"
        "def handler(e, c):\n"
        "    root = os.environ['LAMBDA_TASK_ROOT']\n"
        "    try:\n"
        "        open(os.path.join(root, 'scratch-%d' % os.getpid()), 'w').close()\n"
        "        code_writable = True\n"
        "    except OSError:\n"
        "        code_writable = False\n"
        "    t = tempfile.gettempdir()\n"
        "    open(os.path.join(t, 'mine-%d' % os.getpid()), 'w').write('x')\n"
        "    time.sleep(0.3)\n"
        "    st = os.statvfs(t)\n"
        "    return {'root': root, 'tmp': t, 'listing': sorted(os.listdir(root)), 'code_writable': code_writable,"
        " 'tmp_listing': sorted(os.listdir(t)), 'tmp_bytes': st.f_blocks * st.f_frsize, 'pid': os.getpid()}\n"
    )
    name = make_function(code, EphemeralStorage={"Size": 600})
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: call(lam, name, {})[1], range(2)))
    assert outs[0]["pid"] != outs[1]["pid"]
    for out in outs:
        # Each environment's /tmp holds its own files only.
        assert [f for f in out["tmp_listing"] if f.startswith("mine-")] == [f"mine-{out['pid']}"]
        if os.geteuid() == 0:  # a tmpfs or an ext4 image of EphemeralStorage size (its metadata aside)
            assert 0.98 * (600 << 20) <= out["tmp_bytes"] <= 1.02 * (600 << 20), out["tmp_bytes"]
    if server.sandbox == "linux":
        # As on AWS: the code is read-only at /var/task, and /tmp is the environment's own tmpfs.
        assert all(o["root"] == "/var/task" and o["tmp"] == "/tmp" and not o["code_writable"] for o in outs)
    else:
        assert outs[0]["root"] != outs[1]["root"]
        for out in outs:
            assert out["tmp"] == os.path.join(os.path.dirname(out["root"]), "tmp")
            assert [f for f in out["listing"] if f.startswith("scratch-")] == [f"scratch-{out['pid']}"]


def test_sigv4_errors_do_not_reach_functions(server: Server, make_function: Callable[..., str]) -> None:
    name = make_function(ECHO)
    bad = server.client()
    bad._request_signer._credentials = botocore.credentials.Credentials("AKIASELFLESSTEST0001", "nope")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        bad.invoke(FunctionName=name)
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_function_credentials_can_invoke_but_not_manage(lam: Any, make_function: Callable[..., str]) -> None:
    target = make_function("def handler(e, c):\n    return 'target says hi'\n")
    caller_code = (
        "import sigv4_client as c\n"
        "def handler(e, ctx):\n"
        "    return {'invoke': c.call('POST', '/2015-03-31/functions/%s/invocations' % e['t'], b'{}'),\n"
        "            'delete': c.call('DELETE', '/2015-03-31/functions/%s' % e['t'], b'')}\n"
    )
    signer = (Path(__file__).parent / "sigv4_client.py").read_text()
    name = make_function(files={"app.py": caller_code, "sigv4_client.py": signer})
    _, out = call(lam, name, {"t": target})
    assert out["invoke"] == [200, '"target says hi"']
    assert out["delete"][0] == 403 and "AccessDeniedException" in out["delete"][1]
    assert lam.get_function(FunctionName=target)["Configuration"]["FunctionName"] == target


def test_metrics_count_invocations_and_cold_starts(lam: Any, server: Server, make_function: Callable[..., str]) -> None:
    import urllib.request

    name = make_function("def handler(e, c):\n    if e.get('fail'):\n        raise ValueError()\n    return 1\n")
    call(lam, name)
    call(lam, name)
    call(lam, name, {"fail": True})
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert f'selfless_invocations_total{{function="{name}",outcome="response"}} 2.0' in text
    assert f'selfless_invocations_total{{function="{name}",outcome="error"}} 1.0' in text
    assert f'selfless_cold_starts_total{{function="{name}"}} 1.0' in text
    assert "selfless_environment_start_overhead_seconds_count" in text


def test_output_lines_arrive_whole_and_in_order(lam: Any, make_function: Callable[..., str]) -> None:
    code = (
        "import sys\n"
        "def handler(e, c):\n"
        "    print('hello from handler', {'n': 1})\n"
        "    sys.stdout.write('part one, ')\n"
        "    sys.stdout.flush()\n"
        "    sys.stdout.write('part two\\n')\n"
        "    sys.stderr.write('to stderr\\n')\n"
        "    sys.stdout.write('no newline at the end')\n"
        "    return 1\n"
    )
    name = make_function(code)
    call(lam, name)
    r, _ = call(lam, name, LogType="Tail")
    lines = tail(r).strip().splitlines()
    assert lines[1:5] == [
        "hello from handler {'n': 1}",
        "part one, part two",
        "to stderr",
        "no newline at the end",
    ]
    assert lines[5].startswith("END RequestId")


@pytest.mark.parametrize("runtime", ["python3.12", "python3.13"])
def test_boto3_is_provided_and_reaches_selfless(lam: Any, make_function: Callable[..., str], runtime: str) -> None:
    code = (
        "import boto3\n"
        "def handler(e, c):\n"
        "    me = boto3.client('lambda').get_function_configuration(FunctionName=c.function_name)\n"
        "    return {'boto3': boto3.__version__, 'name': me['FunctionName'], 'file': boto3.__file__}\n"
    )
    name = make_function(code, runtime=runtime, MemorySize=512, Timeout=20)
    r, out = call(lam, name)
    assert "FunctionError" not in r, out
    assert out["name"] == name
    assert out["boto3"]


def test_function_boto3_wins_over_the_runtime_one(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(
        files={
            "app.py": "import boto3\ndef handler(e, c):\n    return boto3.__version__\n",
            "boto3/__init__.py": "__version__ = 'shipped-with-the-function'\n",
        }
    )
    assert call(lam, name)[1] == "shipped-with-the-function"


TRACED = """
import os
def handler(event, context):
    print("trace=" + os.environ.get("_X_AMZN_TRACE_ID", "-"))
    return os.environ.get("_X_AMZN_TRACE_ID")
"""
CALLER_TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def _with_trace_header(lam: Any, value: str) -> Callable[[], None]:
    """Send X-Amzn-Trace-Id on this client's Invoke calls (as API Gateway or an X-Ray SDK does); the
    returned callable stops it."""

    def add(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = value

    lam.meta.events.register_first("before-sign.lambda.Invoke", add)
    return lambda: lam.meta.events.unregister("before-sign.lambda.Invoke", add)


def test_trace_header_reaches_the_function_and_tracing_mode_sets_sampling(
    lam: Any, server: Server, make_function: Callable[..., str]
) -> None:
    name = make_function(TRACED)
    # No header, PassThrough: a trace of the call's own, not sampled.
    _, got = call(lam, name)
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", got)
    # The caller's header is what the function sees (synchronous and asynchronous calls alike).
    stop = _with_trace_header(lam, CALLER_TRACE)
    try:
        _, got = call(lam, name)
        assert got == CALLER_TRACE
        accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
        assert accepted["StatusCode"] == 202
    finally:
        stop()
    logs = server.client("logs")
    deadline = time.monotonic() + 20
    seen: list[str] = []
    while time.monotonic() < deadline and len(seen) < 3:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        seen = [e["message"].strip() for e in events if e["message"].startswith("trace=")]
        time.sleep(0.1)
    assert len(seen) == 3 and seen[2] == f"trace={CALLER_TRACE}", seen
    # A header that is no X-Ray header is not passed on: the call gets its own.
    stop = _with_trace_header(lam, "not-a-trace")
    try:
        _, got = call(lam, name)
    finally:
        stop()
    assert got.startswith("Root=1-") and got.endswith(";Sampled=0")
    # TracingConfig Active: a call without a header gets a sampled trace.
    lam.update_function_configuration(FunctionName=name, TracingConfig={"Mode": "Active"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert lam.get_function_configuration(FunctionName=name)["TracingConfig"] == {"Mode": "Active"}
    _, got = call(lam, name)
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=1", got)
