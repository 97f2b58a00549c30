"""The queue service's older wire, the query protocol, through an SDK of that era: botocore 1.31 (the last
releases before SQS moved to AWS JSON), installed beside the current one by the test command (or here, when
missing) and run in a process of its own."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from selfless.services.sqs.service import attributes_md5
from tests.conftest import ACCESS_KEY, SECRET_KEY, Server

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / ".venv" / "legacy-botocore"
CLIENT = Path(__file__).with_name("legacy") / "sqs_query_client.py"


def legacy_botocore() -> Path:
    if not (LEGACY / "botocore" / "__init__.py").is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(LEGACY), "botocore==1.31.0"],
            check=True, timeout=300,
        )  # fmt: skip
    return LEGACY


def test_the_query_protocol_through_an_sdk_of_its_era(server: Server) -> None:
    env = {**os.environ, "PYTHONPATH": str(legacy_botocore())}
    for name in [k for k in env if k.startswith("AWS_")]:
        del env[name]
    proc = subprocess.run(
        [sys.executable, str(CLIENT), server.endpoint, ACCESS_KEY, SECRET_KEY],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["botocore"] == "1.31.0"
    assert out["url"].endswith("/000000000000/legacy-q") and out["get_url"] == out["url"]
    assert out["listed"] == [out["url"]]
    assert out["attributes"] == {
        "VisibilityTimeout": "7",
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:legacy-q",
    }
    attributes = {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01bytes"},
    }
    assert out["sent"]["MD5OfMessageBody"] == hashlib.md5(b"hello <old> & wire").hexdigest()
    assert out["sent"]["MD5OfMessageAttributes"] == attributes_md5(attributes)
    assert out["batch"] == ["a", "b"]
    by_body = {m["Body"]: m for m in out["received"]}
    assert sorted(by_body) == ["hello <old> & wire", "one", "two"]
    greeting = by_body["hello <old> & wire"]
    assert greeting["ReceiveCount"] == "1"
    assert greeting["MessageAttributes"] == {
        "kind": "greeting",
        "blob": base64.b64encode(b"\x00\x01bytes").decode(),
    }
    assert out["deleted"] == 2
    assert out["tags"] == {"extra": "1"}
    assert out["missing"] == ["AWS.SimpleQueueService.NonExistentQueue", 400]
    assert out["forged"] == ["SignatureDoesNotMatch", 403]  # refused at the door, in the query protocol's XML
    dlq_arn = "arn:aws:sqs:us-east-1:000000000000:legacy-dlq"
    assert out["moves"] == [
        {
            "Status": "COMPLETED",
            "SourceArn": dlq_arn,
            "MaxNumberOfMessagesPerSecond": 10,
            "ApproximateNumberOfMessagesMoved": 1,
            "ApproximateNumberOfMessagesToMove": 1,
        }
    ]
    assert out["moved_back"] == "poison"
    assert out["cancel_done"] == ["InvalidParameterValue", 400]
    assert out["moves_missing"] == ["ResourceNotFoundException", 404]
    assert out["permission"] == [
        {
            "Sid": "legacy",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
            "Action": ["SQS:SendMessage", "SQS:ReceiveMessage"],
            "Resource": "arn:aws:sqs:us-east-1:000000000000:legacy-q",
        }
    ]
    assert out["permission_removed"] is True
