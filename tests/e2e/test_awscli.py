"""The unchanged `aws` CLI (PyPI awscli) against the server: only --endpoint-url differs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ACCESS_KEY, ROLE, SECRET_KEY, Server, make_zip, unique


def aws(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_PAGER="",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    cli = Path(sys.executable).parent / "aws"
    proc = subprocess.run(
        [str(cli), "--endpoint-url", server.endpoint, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_aws_cli_round_trip(server: Server, tmp_path: Path, lam: Any) -> None:
    name = unique("cli")
    package = tmp_path / "fn.zip"
    package.write_bytes(make_zip({"app.py": "def handler(e, c):\n    return {'got': e}\n"}))
    created = json.loads(
        aws(
            server,
            "lambda",
            "create-function",
            "--function-name",
            name,
            "--runtime",
            "python3.12",
            "--role",
            ROLE,
            "--handler",
            "app.handler",
            "--zip-file",
            f"fileb://{package}",
        ).stdout
    )
    assert created["FunctionName"] == name and created["Version"] == "$LATEST"
    aws(server, "lambda", "wait", "function-active-v2", "--function-name", name)

    listed = json.loads(aws(server, "lambda", "list-functions").stdout)
    assert name in [f["FunctionName"] for f in listed["Functions"]]

    out = tmp_path / "out.json"
    meta = json.loads(
        aws(
            server,
            "lambda",
            "invoke",
            "--function-name",
            name,
            "--payload",
            '{"hello": "cli"}',
            "--log-type",
            "Tail",
            str(out),
        ).stdout
    )
    assert meta["StatusCode"] == 200 and meta["ExecutedVersion"] == "$LATEST"
    assert json.loads(out.read_text()) == {"got": {"hello": "cli"}}

    aws(server, "lambda", "update-function-configuration", "--function-name", name, "--timeout", "7")
    aws(server, "lambda", "wait", "function-updated-v2", "--function-name", name)
    config = json.loads(aws(server, "lambda", "get-function-configuration", "--function-name", name).stdout)
    assert config["Timeout"] == 7

    logs = json.loads(aws(server, "logs", "filter-log-events", "--log-group-name", f"/aws/lambda/{name}").stdout)
    assert any(e["message"].startswith("REPORT RequestId") for e in logs["events"])

    aws(server, "lambda", "delete-function", "--function-name", name)
    missing = aws(server, "lambda", "get-function", "--function-name", name, check=False)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


def test_aws_cli_layers_versions_aliases_and_policies(server: Server, tmp_path: Path) -> None:
    layer_zip = tmp_path / "layer.zip"
    layer_zip.write_bytes(make_zip({"python/greeting.py": "WORD = 'hi'\n"}))
    layer_name = unique("cli-layer")
    layer = json.loads(
        aws(
            server, "lambda", "publish-layer-version", "--layer-name", layer_name, "--zip-file", f"fileb://{layer_zip}",
            "--compatible-runtimes", "python3.12",
        ).stdout
    )  # fmt: skip
    assert layer["Version"] == 1
    listed = json.loads(aws(server, "lambda", "list-layers", "--compatible-runtime", "python3.12").stdout)
    assert layer_name in [entry["LayerName"] for entry in listed["Layers"]]

    name = unique("cli")
    package = tmp_path / "fn.zip"
    package.write_bytes(make_zip({"app.py": "import greeting\n\ndef handler(e, c):\n    return greeting.WORD\n"}))
    aws(
        server, "lambda", "create-function", "--function-name", name, "--runtime", "python3.12", "--role", ROLE,
        "--handler", "app.handler", "--zip-file", f"fileb://{package}", "--layers", layer["LayerVersionArn"],
        "--publish",
    )  # fmt: skip
    aws(server, "lambda", "wait", "function-active-v2", "--function-name", name)
    aws(server, "lambda", "create-alias", "--function-name", name, "--name", "live", "--function-version", "1")
    out = tmp_path / "out.json"
    aws(server, "lambda", "invoke", "--function-name", name, "--qualifier", "live", str(out))
    assert json.loads(out.read_text()) == "hi"

    aws(
        server, "lambda", "add-permission", "--function-name", name, "--statement-id", "sns",
        "--action", "lambda:InvokeFunction", "--principal", "sns.amazonaws.com", "--qualifier", "live",
    )  # fmt: skip
    policy = json.loads(aws(server, "lambda", "get-policy", "--function-name", name, "--qualifier", "live").stdout)
    assert json.loads(policy["Policy"])["Statement"][0]["Principal"] == {"Service": "sns.amazonaws.com"}
    versions = json.loads(aws(server, "lambda", "list-versions-by-function", "--function-name", name).stdout)
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]

    aws(server, "lambda", "delete-function", "--function-name", name)
    aws(server, "lambda", "delete-layer-version", "--layer-name", layer_name, "--version-number", "1")


def test_aws_cli_sqs_start_message_move_task(server: Server) -> None:
    def sqs(*args: str) -> Any:
        out = aws(server, "--output", "json", "sqs", *args).stdout
        return json.loads(out) if out.strip() else {}

    dlq = sqs("create-queue", "--queue-name", unique("cli-dlq"))["QueueUrl"]
    dlq_arn = sqs("get-queue-attributes", "--queue-url", dlq, "--attribute-names", "QueueArn")["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    src = sqs("create-queue", "--queue-name", unique("cli-src"), "--attributes", json.dumps({"RedrivePolicy": policy}))[
        "QueueUrl"
    ]
    sqs("send-message", "--queue-url", src, "--message-body", "poison")
    for _ in range(50):  # received once, then dead-lettered by the next receive
        sqs("receive-message", "--queue-url", src, "--visibility-timeout", "0")
        if sqs("receive-message", "--queue-url", dlq, "--visibility-timeout", "0").get("Messages"):
            break
    handle = sqs("start-message-move-task", "--source-arn", dlq_arn, "--max-number-of-messages-per-second", "50")[
        "TaskHandle"
    ]
    assert handle
    for _ in range(100):
        (task,) = sqs("list-message-move-tasks", "--source-arn", dlq_arn)["Results"]
        if task["Status"] != "RUNNING":
            break
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 1
    assert sqs("receive-message", "--queue-url", src, "--wait-time-seconds", "5")["Messages"][0]["Body"] == "poison"
    refused = aws(server, "sqs", "start-message-move-task", "--source-arn", dlq_arn + "-none", check=False)
    assert refused.returncode != 0 and "ResourceNotFoundException" in refused.stderr
    for url in (src, dlq):
        sqs("delete-queue", "--queue-url", url)
