"""Concurrency as AWS accounts for it: reserved concurrency, the account limit, throttles and their reasons,
and leases that always come back."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from tests.conftest import deploy, start_server


@pytest.fixture(scope="module")
def lam(server: Any) -> Any:
    """No retries: a throttle must be seen as the 429 it is, not retried into a success later."""
    return server.client(retries={"total_max_attempts": 1}, max_pool_connections=20)


# Crashes, raises, hangs past its timeout or answers, as the event's "kind" says (sleeps first if asked).
MISBEHAVING = (
    "import os, time\n"
    "def handler(e, c):\n"
    "    time.sleep(e.get('sleep', 0))\n"
    "    kind = e.get('kind', 'ok')\n"
    "    if kind == 'crash':\n"
    "        os._exit(3)\n"
    "    if kind == 'fail':\n"
    "        raise ValueError('no')\n"
    "    if kind == 'hang':\n"
    "        time.sleep(5)\n"
    "    return kind\n"
)
SLOW = "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return 'done'\n"


def call(lam: Any, name: str, payload: dict[str, Any]) -> str:
    """'ok', or the throttle Reason."""
    try:
        r = lam.invoke(FunctionName=name, Payload=json.dumps(payload))
    except botocore.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "TooManyRequestsException"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        return str(exc.response["Reason"] if "Reason" in exc.response else exc.response["Error"].get("Reason"))
    r["Payload"].read()
    return str(r.get("FunctionError", "ok"))


def parallel(lam: Any, name: str, n: int, sleep: float) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: call(lam, name, {"sleep": sleep}), range(n)))


def test_reserved_concurrency_limits_and_throttles_with_reason(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(SLOW, Timeout=10)
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    assert put["ReservedConcurrentExecutions"] == 2
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 2
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 2}
    results = parallel(lam, name, 5, 1.5)
    assert sorted(results) == ["ReservedFunctionConcurrentInvocationLimitExceeded"] * 3 + ["ok"] * 2
    # Leases came back: two more run side by side.
    assert parallel(lam, name, 2, 0.2) == ["ok", "ok"]
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert parallel(lam, name, 3, 0.2) == ["ok", "ok", "ok"]


def test_reserved_zero_turns_a_function_off(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(SLOW)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert call(lam, name, {}) == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    assert call(lam, name, {}) == "ok"


def test_unreserved_pool_never_drops_below_the_minimum(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(SLOW)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=901)
    assert "below its minimum value of [100]" in exc.value.response["Error"]["Message"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=900)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
    lam.delete_function_concurrency(FunctionName=name)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000


def test_leases_come_back_after_timeouts_crashes_and_errors(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(MISBEHAVING, Timeout=1)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    outcomes = [call(lam, name, {"kind": kind}) for kind in ("crash", "fail", "hang", "ok")]
    # Each failure ended its invocation and gave the one lease back: the next call was never throttled.
    assert outcomes == ["Unhandled", "Unhandled", "Unhandled", "ok"]


def test_a_caller_that_leaves_does_not_leak_its_lease(lam: Any, server: Any, make_function: Callable[..., str]) -> None:
    name = make_function(SLOW, Timeout=10)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    impatient = server.client(read_timeout=0.3, retries={"total_max_attempts": 1})
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        impatient.invoke(FunctionName=name, Payload=json.dumps({"sleep": 1.0}))
    # The call goes on (as on AWS) and holds the lease until it ends; then the lease is free again.
    assert call(lam, name, {}) == "ReservedFunctionConcurrentInvocationLimitExceeded"
    time.sleep(1.2)
    assert call(lam, name, {}) == "ok"


def test_account_limit_holds_across_functions(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"SELFLESS_CONCURRENCY_LIMIT": "3"})
    try:
        lam = server.client(retries={"total_max_attempts": 1}, max_pool_connections=20)
        first = deploy(lam, SLOW, Timeout=10)
        second = deploy(lam, SLOW, Timeout=10)
        assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 3
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda i: call(lam, (first, second)[i % 2], {"sleep": 1.5}), range(6)))
        assert sorted(results) == ["ConcurrentInvocationLimitExceeded"] * 3 + ["ok"] * 3
    finally:
        assert server.stop() == 0


def test_no_lease_leaks_after_a_thousand_mixed_calls(lam: Any, server: Any, make_function: Callable[..., str]) -> None:
    import random
    import urllib.request

    name = make_function(MISBEHAVING, Timeout=1)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=8)
    impatient = server.client(read_timeout=0.05, retries={"total_max_attempts": 1})
    rng = random.Random(1234)
    kinds = ["ok"] * 900 + ["fail"] * 60 + ["crash"] * 20 + ["hang"] * 4 + ["leave"] * 16
    rng.shuffle(kinds)

    def one(kind: str) -> str:
        if kind == "leave":
            try:
                impatient.invoke(FunctionName=name, Payload=json.dumps({"kind": "ok"}))
            except botocore.exceptions.ReadTimeoutError:
                return "left"
            return "ok"
        return call(lam, name, {"kind": kind})

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, kinds))
    assert len(results) == 1000
    # Every call ended one way or another; then every lease is back.
    deadline = time.monotonic() + 15
    held = -1.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
            text = r.read().decode()
        held = float(
            next(line.split()[1] for line in text.splitlines() if line.startswith("selfless_concurrent_executions "))
        )
        if held == 0:
            break
        time.sleep(0.2)
    assert held == 0
    assert parallel(lam, name, 8, 0.2) == ["ok"] * 8


def test_memory_budget_evicts_least_recently_used_idle_environments(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"SELFLESS_MEMORY_BUDGET_MB": "384"})
    try:
        lam = server.client(retries={"total_max_attempts": 1}, max_pool_connections=20)
        code = "import os, time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return os.getpid()\n"
        a, b, c = (deploy(lam, code, MemorySize=128, Timeout=10) for _ in range(3))

        def pid(name: str) -> int:
            return int(json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()))

        pid_a, pid_b, pid_c = pid(a), pid(b), pid(c)  # 3 x 128 MB: the budget is full
        assert pid(b) == pid_b  # b is now more recently used than a
        big = deploy(lam, code, MemorySize=256, Timeout=10)
        pid(big)  # needs 256 MB: a (least recently used) and then c go
        time.sleep(0.5)
        assert not Path(f"/proc/{pid_a}").exists()
        assert not Path(f"/proc/{pid_c}").exists()
        assert pid(b) == pid_b  # 128 + 256 = 384: b stayed
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            on_big = ex.submit(call, lam, big, {"sleep": 2.0})
            time.sleep(0.4)
            on_a = ex.submit(call, lam, a, {"sleep": 2.0})  # b is idle: it goes to make room
            time.sleep(0.6)
            # Everything left is busy: nothing to evict, so the call is refused, not overcommitted.
            refused = call(lam, c, {})
            assert on_big.result(timeout=30) == "ok" and on_a.result(timeout=30) == "ok"
        assert refused == "ConcurrentInvocationLimitExceeded"
        assert not Path(f"/proc/{pid_b}").exists()
    finally:
        assert server.stop() == 0


def test_warm_calls_never_take_an_environment_started_for_another_call(
    lam: Any, server: Any, make_function: Callable[..., str]
) -> None:
    """An environment started for one call may finish its init before its start returns; a warm call that
    comes meanwhile must not take it (the call it was started for then finds it busy). Calls that keep
    coming while new environments start, as a load that grows does, all succeed."""
    name = make_function("def handler(event, context):\n    return event\n")
    lam.invoke(FunctionName=name, Payload=b"{}")  # one warm environment to take
    cold = server.client("lambda", retries={"max_attempts": 0})

    def calls(i: int) -> list[int]:
        statuses = []
        for n in range(15):
            try:
                out = cold.invoke(FunctionName=name, Payload=json.dumps({"i": i, "n": n}).encode())
                statuses.append(out["StatusCode"] if json.loads(out["Payload"].read()) == {"i": i, "n": n} else -1)
            except botocore.exceptions.ClientError as exc:
                statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        return statuses

    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = [s for statuses in pool.map(calls, range(16)) for s in statuses]
        assert results == [200] * len(results), sorted(set(results))
        lam.update_function_configuration(FunctionName=name, Description=f"round {time.time()}")
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert "IllegalTransition" not in server.log()
