"""LoggingConfig: Text (AWS's default lines, and the Python runtime's "[LEVEL]\\ttime\\trequest id\\tmessage"
form for the logging module) and JSON (platform lines as JSON records, the logging module's records as JSON
objects, ApplicationLogLevel and SystemLogLevel filtering), as AWS's Python runtime writes them."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ROLE, make_zip, unique

CODE = """import logging

log = logging.getLogger("app")


def handler(event, context):
    print("plain print")
    log.debug("debug %s", "detail")
    log.info("info %s", 1)
    log.warning("careful", extra={"order": 7})
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("caught")
    if event.get("fail"):
        raise KeyError("boom")
    return context.aws_request_id
"""


def tail(lam: Any, name: str, payload: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    answer = lam.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps(payload or {}))
    lines = base64.b64decode(answer["LogResult"]).decode().splitlines()
    return json.loads(answer["Payload"].read()) if "FunctionError" not in answer else "", lines


def configure(lam: Any, name: str, config: dict[str, str]) -> dict[str, Any]:
    answer = lam.update_function_configuration(FunctionName=name, LoggingConfig=config)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return dict(answer["LoggingConfig"])


def test_text_format_is_the_default(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE, runtime="python3.12")
    assert lam.get_function_configuration(FunctionName=name)["LoggingConfig"] == {
        "LogFormat": "Text",
        "LogGroup": f"/aws/lambda/{name}",
    }
    request_id, lines = tail(lam, name)
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "plain print" in lines
    warning = next(line for line in lines if line.startswith("[WARNING]"))
    assert re.fullmatch(rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{request_id}\tcareful", warning)
    assert not any("info 1" in line or "debug detail" in line for line in lines), "the root logger is at WARNING"
    assert any(line.startswith("[ERROR]") and line.endswith("\tcaught") for line in lines)
    assert f"END RequestId: {request_id}" in lines
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")


def test_json_format(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE, runtime="python3.12")
    shown = configure(lam, name, {"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"})
    assert shown == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "DEBUG",
        "SystemLogLevel": "INFO",
        "LogGroup": f"/aws/lambda/{name}",
    }
    request_id, lines = tail(lam, name)
    assert "plain print" in lines, "print stays plain text, as on AWS"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    platform = [r for r in records if "type" in r]
    assert [r["type"] for r in platform] == ["platform.start", "platform.report"]
    assert platform[0]["record"] == {"requestId": request_id, "version": "$LATEST"}
    report = platform[1]["record"]
    assert report["requestId"] == request_id and report["status"] == "success"
    assert set(report["metrics"]) >= {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", platform[0]["time"])
    assert not any(line.startswith("END ") for line in lines)
    app = {r["message"]: r for r in records if "message" in r}
    assert app["debug detail"]["level"] == "DEBUG" and app["info 1"]["level"] == "INFO"
    assert app["careful"] == {
        "timestamp": app["careful"]["timestamp"],
        "level": "WARNING",
        "message": "careful",
        "logger": "app",
        "requestId": request_id,
        "order": 7,
    }
    assert app["caught"]["errorType"] == "ValueError" and app["caught"]["errorMessage"] == "bad value"
    assert app["caught"]["stackTrace"] and app["caught"]["location"].endswith("/var/task/app.py:handler:14")

    # An unhandled error is a JSON record too.
    _, lines = tail(lam, name, {"fail": True})
    errors = [json.loads(line) for line in lines if line.startswith("{") and '"errorType"' in line]
    assert any(e.get("errorType") == "KeyError" and e["level"] == "ERROR" for e in errors), lines


def test_levels_filter(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE, runtime="python3.12")
    configure(lam, name, {"LogFormat": "JSON", "ApplicationLogLevel": "ERROR", "SystemLogLevel": "WARN"})
    _, lines = tail(lam, name)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not any("type" in r for r in records), "SystemLogLevel WARN drops the platform's INFO records"
    assert [r["message"] for r in records] == ["caught"], "ApplicationLogLevel ERROR keeps only errors"


def test_log_levels_need_json(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.create_function(
            FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": CODE})},
            LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "DEBUG"},
        )  # fmt: skip
    assert refused.value.response["Error"]["Message"] == (
        'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your request or change the '
        'LogFormat to "Json" and try again.'
    )


def test_a_custom_log_group_gets_the_logs(lam: Any, server: Any, make_function: Callable[..., str]) -> None:
    name = make_function(CODE, runtime="python3.12")
    group = f"/shared/{unique('group')}"
    assert configure(lam, name, {"LogGroup": group}) == {"LogFormat": "Text", "LogGroup": group}
    request_id, _ = tail(lam, name)
    logs = server.client("logs")
    messages = [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]]
    assert f"START RequestId: {request_id} Version: $LATEST" in messages
    assert group in [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix="/shared/")["logGroups"]]
    default = f"/aws/lambda/{name}"
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.filter_log_events(logGroupName=default)
