"""Hostile output: a function that prints without end cannot grow the server, in memory or on disk.

Reproduced attacks: hundreds of MB printed as fast as a function can (the server once held all of it: 2 GB of
output grew it to 2.3 GB, and wrote a 2 GB log file), one line of tens of MB without a newline, a background
thread that never stops printing, and a full disk under the logs (lines were dropped silently). Each case checks
the platform's answer (a bounded server, a capped log group, what was dropped said in the function's log as
Lambda says it, counted in /metrics), then that the server is healthy: /health answers and calls still work.
Retention (PutRetentionPolicy) is exercised through boto3 and across a restart.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, deploy, start_server

CAP_MB = 8
MAX_EVENT_BYTES = 262_144 - 26  # Lambda's pieces of an over-long line
RSS_GROWTH_MB = 64  # what a flood of hundreds of MB may add to the server's peak memory, at most

PRINTER = r"""
import sys, threading, time

def handler(event, context):
    mode = event["mode"]
    if mode == "lines":  # numbered 100-byte lines, 1 MB at a time
        chunk = "".join(f"{i:07d} " + "x" * 91 + "\n" for i in range(10000))
        for _ in range(event["mb"]):
            sys.stdout.write(chunk)
    elif mode == "one_line":  # no newline at all
        block = "y" * (1 << 20)
        for _ in range(event["mb"]):
            sys.stdout.write(block)
    elif mode == "background":  # returns while a thread prints on and on
        def spew():
            lines = ("z" * 99 + "\n") * 1000
            while True:
                sys.stdout.write(lines)
        threading.Thread(target=spew, daemon=True).start()
        time.sleep(0.2)
    else:
        for i in range(event["n"]):
            print(event["text"], i)
    return {"done": mode}
"""


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose log groups keep at most CAP_MB each."""
    srv = start_server(tmp_path_factory.mktemp("capped"), {"SELFLESS_LOG_GROUP_MAX_MB": str(CAP_MB)})
    yield srv
    assert srv.stop() == 0, srv.log()
    assert srv.leftovers() == [], "environments outlived the server"


@pytest.fixture
def printer(capped: Server) -> Iterator[Callable[..., str]]:
    lam = capped.client()
    made: list[str] = []

    def make(**kwargs: Any) -> str:
        name = deploy(lam, PRINTER, Timeout=300, MemorySize=512, **kwargs)
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(Exception):
            lam.delete_function(FunctionName=name)


def memory_mb(pid: int) -> dict[str, int]:
    """The server's VmHWM (its peak resident memory) and VmRSS, in MB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) // 1024
    return found


def invoke(lam: Any, name: str, **event: Any) -> tuple[dict[str, Any], Any]:
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    assert "FunctionError" not in r, r["Payload"].read()
    return r, json.loads(r["Payload"].read())


def tail(r: dict[str, Any]) -> str:
    return base64.b64decode(r["LogResult"]).decode("utf-8", "replace")


def healthy(server: Server) -> None:
    started = time.monotonic()
    with urllib.request.urlopen(f"{server.endpoint}/health", timeout=5) as r:
        assert r.status == 200
    assert time.monotonic() - started < 2, "/health answered slowly"


def metric(server: Server, name: str, reason: str) -> float:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(rf'^{name}{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def group_bytes(server: Server, name: str) -> int:
    return sum(f.stat().st_size for f in (server.data_dir / "logs" / name).glob("*.log"))


def events(logs: Any, name: str, **params: Any) -> list[dict[str, Any]]:
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{name}", **params)
    return [e for page in pages for e in page["events"]]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


def test_hundreds_of_mb_printed_leave_the_server_bounded_and_the_group_capped(
    capped: Server, printer: Callable[..., str]
) -> None:
    lam, logs = capped.client(), capped.client("logs")
    name = printer()
    invoke(lam, name, mode="print", text="warm", n=1)
    before = memory_mb(capped.process.pid)
    started = time.monotonic()
    r, out = invoke(lam, name, mode="lines", mb=300)
    took = time.monotonic() - started
    after = memory_mb(capped.process.pid)
    assert out == {"done": "lines"}
    grown = after["VmHWM"] - before["VmHWM"]
    print(f"300 MB printed in {took:.1f} s; server VmHWM {before['VmHWM']} -> {after['VmHWM']} MB")
    assert grown < RSS_GROWTH_MB, f"the server grew by {grown} MB while a function printed 300 MB"
    # The invocation's tail is its last 4 KB, ending with its own END and REPORT.
    lines = tail(r).splitlines()
    assert lines[-3] == "0009999 " + "x" * 91
    assert lines[-2].startswith("END RequestId: ") and lines[-1].startswith("REPORT RequestId: ")
    # The deletion of the oldest is said (a read: everything is written by now), the group kept to its cap (and
    # a few writes' worth), the newest lines kept.
    said = events(logs, name, filterPattern='"Some logs were dropped"')
    stored = group_bytes(capped, name)
    assert stored <= (CAP_MB + 1) << 20, f"{stored} bytes on disk for a group capped at {CAP_MB} MB"
    assert said, "the deletion of the group's oldest logs is said in its log"
    assert said[-1]["message"].startswith(
        f"Some logs were dropped because the log group reached its size limit of {CAP_MB} MB"
    )
    records = re.search(r"droppedRecords: (\d+), droppedBytes: (\d+)", said[-1]["message"])
    assert records and int(records.group(1)) > 0 and int(records.group(2)) > 512 << 10
    assert metric(capped, "selfless_log_lines_dropped_total", "group_cap") > 2_000_000
    assert metric(capped, "selfless_log_bytes_dropped_total", "group_cap") > 250e6
    reports = events(logs, name, filterPattern='"REPORT RequestId"')
    assert reports and reports[-1]["message"] == lines[-1]
    healthy(capped)
    r, out = invoke(lam, name, mode="print", text="next call", n=2)
    assert out == {"done": "print"}
    assert "next call 1" in tail(r)


def test_one_huge_line_without_a_newline_is_split_into_events_as_lambda_splits_it(
    capped: Server, printer: Callable[..., str]
) -> None:
    lam, logs = capped.client(), capped.client("logs")
    name = printer()
    invoke(lam, name, mode="print", text="warm", n=1)
    before = memory_mb(capped.process.pid)
    r, _ = invoke(lam, name, mode="one_line", mb=64)
    after = memory_mb(capped.process.pid)
    grown = after["VmHWM"] - before["VmHWM"]
    assert grown < RSS_GROWTH_MB, f"the server grew by {grown} MB on a 64 MB line"
    lines = tail(r).splitlines()
    assert set(lines[-3]) == {"y"} and lines[-2].startswith("END RequestId: ")
    pieces = [e["message"] for e in events(logs, name, filterPattern="yyyyyyyy")]
    assert len(pieces) >= 20, "the newest pieces of the line are kept, up to the group's cap"
    assert all(set(p) == {"y"} for p in pieces)
    assert all(len(p) <= MAX_EVENT_BYTES for p in pieces)
    assert all(len(p) == MAX_EVENT_BYTES for p in pieces[:-1]), "every piece but the last is a full event"
    assert len(pieces[-1]) == (64 << 20) % MAX_EVENT_BYTES, "the line's end is its last event, before END"
    stored = group_bytes(capped, name)
    print(f"64 MB line: server VmHWM {before['VmHWM']} -> {after['VmHWM']} MB; group {stored / 1e6:.2f} MB")
    assert stored <= (CAP_MB + 1) << 20
    healthy(capped)
    _, out = invoke(lam, name, mode="print", text="next", n=1)
    assert out == {"done": "print"}


def test_a_thread_printing_on_after_the_response_holds_neither_the_call_nor_the_server(
    capped: Server, printer: Callable[..., str]
) -> None:
    lam = capped.client()
    name = printer()
    other = printer()
    invoke(lam, name, mode="print", text="warm", n=1)
    before = memory_mb(capped.process.pid)
    started = time.monotonic()
    r, out = invoke(lam, name, mode="background")
    assert out == {"done": "background"}
    assert time.monotonic() - started < 10, "the call ended with its response, whatever its thread prints"
    assert tail(r).splitlines()[-1].startswith("REPORT RequestId: ")
    # While the thread prints on: the server answers, other functions run, and so does this one.
    for _ in range(3):
        healthy(capped)
        _, out = invoke(lam, other, mode="print", text="other", n=1)
        assert out == {"done": "print"}
    r, out = invoke(lam, name, mode="print", text="again", n=1)
    assert out == {"done": "print"}
    assert tail(r).splitlines()[-1].startswith("REPORT RequestId: ")
    grown = memory_mb(capped.process.pid)["VmHWM"] - before["VmHWM"]
    assert grown < RSS_GROWTH_MB
    assert group_bytes(capped, name) <= (CAP_MB + 1) << 20


def test_retention_policies_as_cloudwatch_logs_keeps_them(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        lam, logs = srv.client(), srv.client("logs")
        name = deploy(lam, PRINTER)
        group = f"/aws/lambda/{name}"
        invoke(lam, name, mode="print", text="old line", n=2)
        with pytest.raises(ClientError) as missing:
            logs.put_retention_policy(logGroupName="/aws/lambda/nothing-here", retentionInDays=1)
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
        with pytest.raises(ClientError) as bad:
            logs.put_retention_policy(logGroupName=group, retentionInDays=2)
        assert bad.value.response["Error"]["Code"] == "InvalidParameterException"
        assert bad.value.response["Error"]["Message"] == (
            "Invalid retention value. Valid values are: [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, "
            "545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]"
        )
        logs.put_retention_policy(logGroupName=group, retentionInDays=30)
        (described,) = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert described["retentionInDays"] == 30
        assert described["storedBytes"] > 0
        logs.delete_retention_policy(logGroupName=group)
        (described,) = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert "retentionInDays" not in described
        logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    finally:
        assert srv.stop() == 0, srv.log()
    # Two days pass while the server is down: its next start finds the policy and deletes what is past it.
    two_days_ago = time.time() - 2 * 86_400
    for segment in (srv.data_dir / "logs" / name).glob("*.log"):
        os.utime(segment, (two_days_ago, two_days_ago))
    srv = start_server(tmp_path)
    try:
        lam, logs = srv.client(), srv.client("logs")
        (described,) = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert described["retentionInDays"] == 1
        wait_for(lambda: not events(logs, name, startTime=0))
        invoke(lam, name, mode="print", text="new line", n=1)
        messages = [e["message"] for e in events(logs, name, startTime=0)]
        assert "new line 0" in messages and "old line 0" not in messages
        healthy(srv)
    finally:
        assert srv.stop() == 0, srv.log()
        assert srv.leftovers() == []


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A size-limited tmpfs at ``path`` for as long as the block runs."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; the file that holds them."""
    filler = directory / "filler"
    block = b"\0" * (64 << 10)
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):
            while f.write(b"\0"):
                pass
    return filler


def test_a_full_disk_under_the_logs_loses_lines_counted_and_said_once_space_returns(tmp_path: Path) -> None:
    with small_disk(tmp_path / "data" / "logs", "4m"):
        srv = start_server(tmp_path)
        try:
            lam, logs = srv.client(), srv.client("logs")
            name = deploy(lam, PRINTER)
            as_json = deploy(lam, PRINTER, LoggingConfig={"LogFormat": "JSON"})
            for fn in (name, as_json):
                invoke(lam, fn, mode="print", text="before", n=1)
                assert "before 0" in [e["message"] for e in events(logs, fn)]  # a read: written by now
                # The next calls in a new environment, so a new log stream: its file is made once the disk is
                # full, and has no room at all (the first one's last page has slack that takes short writes).
                lam.update_function_configuration(FunctionName=fn, Environment={"Variables": {"STREAM": "2"}})
                lam.get_waiter("function_updated_v2").wait(FunctionName=fn, WaiterConfig={"Delay": 1})
            filler = fill(srv.data_dir / "logs")
            # The disk is full: the calls themselves are unharmed, their lines are counted as lost.
            for fn in (name, as_json):
                _, out = invoke(lam, fn, mode="print", text="lost", n=2000)
                assert out == {"done": "print"}
            # Every lost line, the calls' own END and REPORT (Text) and REPORT (JSON) included, before space
            # returns: one still on its way then would be written, not lost.
            wait_for(lambda: metric(srv, "selfless_log_lines_dropped_total", "write_failed") >= 2002 + 2001)
            healthy(srv)
            assert "Internal server error" not in srv.log()
            # Space comes back: the next lines are written, and what was lost is said first.
            filler.unlink()
            said = {}
            for fn in (name, as_json):
                invoke(lam, fn, mode="print", text="after", n=1)
                messages = wait_for(
                    lambda fn=fn: (found := [e["message"] for e in events(logs, fn)]) and "after 0" in found and found
                )
                assert "before 0" in messages and "lost 0" not in messages
                (notice,) = [m for m in messages if "Some logs were dropped" in m]
                assert messages.index(notice) < messages.index("after 0")
                said[fn] = notice
            reason = "Some logs were dropped because they could not be written: No space left on device"
            assert said[name].startswith(f"{reason} (droppedRecords: ")
            dropped = int(said[name].split("droppedRecords: ")[1].split(",")[0])
            assert dropped >= 2002, "the lost call's output and its END and REPORT lines"
            record = json.loads(said[as_json])
            assert record["type"] == "platform.logsDropped"
            assert record["record"]["reason"] == reason
            assert record["record"]["droppedRecords"] >= 2001 and record["record"]["droppedBytes"] > 2000
            total = dropped + record["record"]["droppedRecords"]
            assert metric(srv, "selfless_log_lines_dropped_total", "write_failed") == total
            healthy(srv)
        finally:
            assert srv.stop() == 0, srv.log()
            assert srv.leftovers() == []
