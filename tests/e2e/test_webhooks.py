"""Uploads to external object stores as triggers: MinIO's and Ceph RGW's webhook deliveries, in the formats
their documentation shows, POSTed through real HTTP to a trigger made with the selfless CLI, run the function
once per matching record; wrong tokens, other buckets and filtered-out keys run nothing.

No MinIO server can be installed from the registries this project may use (PyPI, Debian, npm), and Ceph RGW
(Debian's radosgw) needs a RADOS cluster, so the stores' payloads are replayed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.conftest import Server, deploy, unique
from tests.e2e.test_s3_notifications import records, wait_records

RECORDER = """import json


def handler(event, context):
    print("RECORD " + json.dumps(event))
"""


def minio_delivery(bucket: str, key: str, event: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    """A MinIO notify_webhook delivery (the shape MinIO's bucket notification guide shows)."""
    quoted = urllib.parse.quote_plus(key, safe="/")
    return {
        "EventName": event,
        "Key": f"{bucket}/{quoted}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2026-12-04T01:02:03.456Z",
                "eventName": event,
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "10.0.0.7"},
                "responseElements": {
                    "x-amz-request-id": "18B0D4A1B2C3D4E5",
                    "x-minio-origin-endpoint": "http://10.0.0.2:9000",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "minioadmin"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quoted,
                        "size": 2048,
                        "eTag": "0f343b0931126a20f133d67c2b018a3b",
                        "contentType": "image/jpeg",
                        "userMetadata": {"content-type": "image/jpeg"},
                        "sequencer": "18B0D4A1B2F00001",
                    },
                },
                "source": {"host": "10.0.0.7", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
            }
        ],
    }


def ceph_delivery(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    """A Ceph RGW HTTP push-endpoint delivery (the event record Ceph's bucket notification docs show)."""
    return {
        "Records": [
            {
                "eventVersion": "2.2",
                "eventSource": "ceph:s3",
                "awsRegion": "default",
                "eventTime": "2026-12-04T01:02:03.456789Z",
                "eventName": event,
                "userIdentity": {"principalId": "tester"},
                "requestParameters": {"sourceIPAddress": ""},
                "responseElements": {"x-amz-request-id": "a1b2c3d4.4242.17", "x-amz-id-2": "4242-default-default"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "selfless-topic-notif",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "tester"},
                        "arn": f"arn:aws:s3:default::{bucket}",
                        "id": "a1b2c3d4.4242.1",
                    },
                    "object": {
                        "key": key,
                        "size": "1024",
                        "eTag": "37b51d194a7513e45b56f6524f2d51f2",
                        "versionId": "",
                        "sequencer": "F7E6D75DC742D108",
                        "metadata": [],
                        "tags": [],
                    },
                },
                "eventId": "1575024453.201286.37b51d194a7513e45b56f6524f2d51f2",
                "opaqueData": "",
            }
        ]
    }


def post(url: str, doc: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in server.env.items()}
    env["SELFLESS_ENDPOINT"] = server.endpoint
    result = subprocess.run(
        [sys.executable, "-m", "selfless.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def field(output: str, label: str) -> str:
    for line in output.splitlines():
        if line.startswith(label):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label} in {output!r}")


def test_minio_deliveries_run_the_function_once_per_matching_record(server: Server, lam: Any) -> None:
    fn = deploy(lam, RECORDER)
    name = unique("minio")
    made = cli(
        server,
        "webhooks",
        "create",
        name,
        "--source",
        "minio",
        "--bucket",
        "photos",
        "--function",
        fn,
        "--suffix",
        ".jpg",
    ).stdout
    url, token = field(made, "endpoint"), field(made, "auth_token")
    assert url == f"{server.endpoint}/_selfless/hooks/{name}"
    bearer = {"Authorization": f"Bearer {token}"}

    # Probed before use, answered without a token.
    with urllib.request.urlopen(url, timeout=10) as probe:
        assert probe.status == 200
    assert post(url, minio_delivery("photos", "in/red flower.jpg"), bearer) == (200, {"Accepted": 1})
    assert post(url, minio_delivery("photos", "in/notes.txt"), bearer) == (200, {"Accepted": 0})  # suffix
    assert post(url, minio_delivery("other", "in/a.jpg"), bearer) == (200, {"Accepted": 0})  # bucket
    assert post(url, minio_delivery("photos", "in/a.jpg", "s3:ObjectRemoved:Delete"), bearer) == (200, {"Accepted": 0})
    assert post(url, minio_delivery("photos", "a.jpg"), {"Authorization": "Bearer wrong-token-0123456789"})[0] == 403
    assert post(url, minio_delivery("photos", "a.jpg"))[0] == 403
    assert post(url, b"{not json", bearer)[0] == 400
    assert post(url, {"Records": "nope"}, bearer)[0] == 400
    assert post(f"{server.endpoint}/_selfless/hooks/{name}-gone", minio_delivery("photos", "a.jpg"), bearer)[0] == 404

    (event,) = wait_records(server, fn, 1)
    (record,) = event["Records"]
    assert record["eventSource"] == "minio:s3"
    assert record["s3"]["bucket"]["name"] == "photos"
    assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == "in/red flower.jpg"
    time.sleep(0.5)  # nothing else arrives
    assert len(records(server, fn)) == 1

    listed = cli(server, "webhooks", "list").stdout
    assert name in listed and "suffix=.jpg" in listed and token not in listed
    cli(server, "webhooks", "delete", name)
    assert post(url, minio_delivery("photos", "b.jpg"), bearer)[0] == 404


def test_ceph_deliveries_authenticate_by_query_token(server: Server, lam: Any) -> None:
    fn = deploy(lam, RECORDER)
    name = unique("ceph")
    made = cli(
        server,
        "webhooks",
        "create",
        name,
        "--source",
        "ceph",
        "--bucket",
        "logs",
        "--function",
        fn,
        "--prefix",
        "raw/",
        "--event",
        "s3:ObjectCreated:*",
        "--event",
        "s3:ObjectRemoved:*",
    ).stdout
    push = field(made, "push-endpoint")
    assert push.startswith(f"{server.endpoint}/_selfless/hooks/{name}?token=")
    assert post(push, ceph_delivery("logs", "raw/2026/12/04/app+1.log")) == (200, {"Accepted": 1})
    assert post(push, ceph_delivery("logs", "raw/old.log", "ObjectRemoved:Delete")) == (200, {"Accepted": 1})
    assert post(push, ceph_delivery("logs", "cooked/x.log")) == (200, {"Accepted": 0})
    assert post(push.split("?")[0] + "?token=not-the-token-at-all", ceph_delivery("logs", "raw/y.log"))[0] == 403

    found = wait_records(server, fn, 2)
    keys = sorted(e["Records"][0]["s3"]["object"]["key"] for e in found)
    assert keys == ["raw/2026/12/04/app+1.log", "raw/old.log"]  # Ceph's keys, as Ceph sent them
    assert {e["Records"][0]["eventSource"] for e in found} == {"ceph:s3"}
    cli(server, "webhooks", "delete", name)


def test_trigger_validation_and_access(server: Server, lam: Any) -> None:
    fn = deploy(lam, RECORDER)
    url = f"{server.endpoint}/_selfless/webhook-triggers"
    env = dict(server.env)
    env["SELFLESS_ENDPOINT"] = server.endpoint
    bad = [
        ["--source", "minio", "--bucket", "b", "--function", "missing-function-xyz"],
        ["--source", "minio", "--bucket", "b", "--function", fn, "--event", "s3:Nothing:*"],
        ["--source", "minio", "--bucket", "b", "--function", fn, "--token", "short"],
    ]
    for args in bad:
        result = subprocess.run(
            [sys.executable, "-m", "selfless.cli", "webhooks", "create", unique("bad"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    # Unsigned management calls are refused like any API call.
    status, _ = post(url, {"Name": "x"})
    assert status == 403


pytestmark = pytest.mark.timeout(180)
