"""Bucket versioning, object tags and UploadPartCopy in the built-in store, through boto3 and the aws CLI: version
ids, delete markers and what S3 answers for them, older versions read, copied, listed and removed, the
"null" version of a suspended bucket, tag sets and their limits, ranged part copies, the notifications a
versioned bucket sends, and Lambda code read by S3ObjectVersion."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from typing import Any

import pytest

from tests.conftest import ROLE, Server, deploy, make_zip, unique
from tests.e2e.test_awscli import aws
from tests.e2e.test_s3 import client, error_of
from tests.e2e.test_s3_notifications import RECORDER, allow_s3, configure, records, rule, wait_records


@pytest.fixture(scope="module")
def s3(server: Server) -> Any:
    return client(server)


def versioned(s3: Any, status: str = "Enabled") -> str:
    name = unique("ver")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    return name


def test_versions_and_delete_markers(s3: Any) -> None:
    bucket = unique("ver")
    s3.create_bucket(Bucket=bucket)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    unversioned = s3.put_object(Bucket=bucket, Key="k", Body=b"before")
    assert "VersionId" not in unversioned  # a bucket that never had versioning names no versions
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2) and len(v1) == 32
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"two" and got["VersionId"] == v2
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"before"
    assert s3.head_object(Bucket=bucket, Key="k", VersionId=v1)["ContentLength"] == 3
    code, status, err = error_of(s3.get_object, Bucket=bucket, Key="k", VersionId="A" * 32)
    assert (code, status, err["Message"]) == ("NoSuchVersion", 404, "The specified version does not exist.")

    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    code, status, _ = error_of(s3.get_object, Bucket=bucket, Key="k")
    assert (code, status) == ("NoSuchKey", 404)
    try:
        s3.head_object(Bucket=bucket, Key="k")
    except s3.exceptions.ClientError as exc:
        headers = exc.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    else:
        raise AssertionError("a delete marker answered HEAD")
    code, status, _ = error_of(s3.get_object, Bucket=bucket, Key="k", VersionId=marker)
    assert (code, status) == ("MethodNotAllowed", 405)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)  # the key is gone from listings...
    listed = s3.list_object_versions(Bucket=bucket)  # ...but not its versions
    assert [(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [(v2, False), (v1, False), ("null", False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker, True)]
    assert listed["Versions"][0]["ETag"] == f'"{hashlib.md5(b"two").hexdigest()}"'
    code, _, _ = error_of(s3.delete_bucket, Bucket=bucket)
    assert code == "BucketNotEmpty"

    # Removing the marker brings v2 back; removing v2 for good makes v1 current.
    gone = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == v1

    # Copying an older version restores it as a new one.
    s3.put_object(Bucket=bucket, Key="k", Body=b"three")
    copied = s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"})
    assert copied["CopySourceVersionId"] == "null" and copied["VersionId"] not in (v1, "null")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"before"

    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": v["VersionId"]} for v in versions]}
    )
    assert sorted(d["VersionId"] for d in result["Deleted"]) == sorted(v["VersionId"] for v in versions)
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)
    s3.delete_bucket(Bucket=bucket)


def test_suspended_versioning_writes_the_null_version(s3: Any) -> None:
    bucket = versioned(s3)
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"null one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"null two")  # replaces the null version
    listed = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in listed] == ["null", kept]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"null two"
    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True and marker["VersionId"] == "null"  # and it replaced the null version
    listed = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [kept]
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == ["null"]
    code, status, _ = error_of(s3.put_bucket_versioning, Bucket=bucket, VersioningConfiguration={"Status": "Disabled"})
    assert (code, status) == ("MalformedXML", 400)


def test_version_listings_page_and_roll_up(s3: Any) -> None:
    bucket = versioned(s3)
    made: dict[str, list[str]] = {}
    for key in ("a", "b", "dir/x", "dir/y"):
        made[key] = [s3.put_object(Bucket=bucket, Key=key, Body=key.encode())["VersionId"] for _ in range(3)]
    pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert len(pages) == 6
    seen = [(v["Key"], v["VersionId"]) for p in pages for v in p.get("Versions", [])]
    assert seen == [(k, v) for k in ("a", "b", "dir/x", "dir/y") for v in reversed(made[k])]
    rolled = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["dir/"] and len(rolled["Versions"]) == 6
    under = s3.list_object_versions(Bucket=bucket, Prefix="dir/", KeyMarker="dir/x", VersionIdMarker=made["dir/x"][1])
    assert [v["VersionId"] for v in under["Versions"]] == [made["dir/x"][0], *reversed(made["dir/y"])]
    code, _, _ = error_of(s3.list_object_versions, Bucket=bucket, VersionIdMarker=made["a"][0])
    assert code == "InvalidArgument"


def test_object_tags(s3: Any) -> None:
    bucket = versioned(s3)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="team=data&stage=raw%20in")["VersionId"]
    assert s3.head_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    got = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert got["VersionId"] == first
    assert {t["Key"]: t["Value"] for t in got["TagSet"]} == {"team": "data", "stage": "raw in"}
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"y")["VersionId"]
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=first, Tagging={"TagSet": [{"Key": "old", "Value": ""}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)["TagSet"] == [{"Key": "old", "Value": ""}]
    s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId=first)
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)["TagSet"] == []

    # Copies keep the source's tags unless told to replace them.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "1"}]})
    s3.copy_object(Bucket=bucket, Key="kept", CopySource={"Bucket": bucket, "Key": "k"})
    assert s3.get_object_tagging(Bucket=bucket, Key="kept")["TagSet"] == [{"Key": "a", "Value": "1"}]
    s3.copy_object(
        Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "k"}, TaggingDirective="REPLACE", Tagging="b=2"
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="new")["TagSet"] == [{"Key": "b", "Value": "2"}]
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["VersionId"] == second

    def tag_error(tags: list[dict[str, str]]) -> tuple[str, str]:
        code, _, err = error_of(s3.put_object_tagging, Bucket=bucket, Key="k", Tagging={"TagSet": tags})
        return code, err["Message"]

    eleven = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    assert tag_error(eleven) == ("BadRequest", "Object tags cannot be greater than 10")
    assert tag_error([{"Key": "d", "Value": "1"}, {"Key": "d", "Value": "2"}])[0] == "InvalidTag"
    assert tag_error([{"Key": "x" * 129, "Value": "1"}])[0] == "InvalidTag"
    assert tag_error([{"Key": "x", "Value": "v" * 257}])[0] == "InvalidTag"
    assert tag_error([{"Key": "aws:x", "Value": "1"}])[0] == "InvalidTag"
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "a", "Value": "1"}]  # unchanged
    code, _, _ = error_of(s3.put_object, Bucket=bucket, Key="bad", Body=b"x", Tagging="a=1&a=2")
    assert code == "InvalidTag"
    code, _, _ = error_of(s3.head_object, Bucket=bucket, Key="bad")
    assert code == "404"  # a refused tag set writes nothing

    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="from=mp")
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"z")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="mp")["TagSet"] == [{"Key": "from", "Value": "mp"}]


def test_upload_part_copy(s3: Any) -> None:
    bucket = unique("partcopy")
    s3.create_bucket(Bucket=bucket)
    source = bytes(range(256)) * (24 << 12)  # 6 MiB
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{(5 << 20) - 1}",
    )["CopyPartResult"]
    assert first["ETag"] == f'"{hashlib.md5(source[: 5 << 20]).hexdigest()}"'
    second = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=2, CopySource=f"{bucket}/src")[
        "CopyPartResult"
    ]
    third = s3.upload_part(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=3, Body=b"tail")
    parts = [(1, first["ETag"]), (2, second["ETag"]), (3, third["ETag"])]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
    )
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == source[: 5 << 20] + source + b"tail"

    other = s3.create_multipart_upload(Bucket=bucket, Key="dst2")["UploadId"]
    for bad in ("bytes=0-", "0-10", f"bytes=10-{len(source)}", "bytes=5-4"):
        code, status, _ = error_of(
            s3.upload_part_copy,
            Bucket=bucket,
            Key="dst2",
            UploadId=other,
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange=bad,
        )
        assert (code, status) == ("InvalidArgument", 400), bad
    code, _, _ = error_of(
        s3.upload_part_copy,
        Bucket=bucket,
        Key="dst2",
        UploadId=other,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "missing"},
    )
    assert code == "NoSuchKey"
    assert s3.list_parts(Bucket=bucket, Key="dst2", UploadId=other).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="dst2", UploadId=other)


def test_a_versioned_bucket_notifies_with_version_ids_and_markers(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = versioned(s3)
    fn = deploy(lam, RECORDER)
    arn = lam.get_function(FunctionName=fn)["Configuration"]["FunctionArn"]
    allow_s3(lam, fn, bucket)
    configure(
        s3,
        bucket,
        rule(arn, ["s3:ObjectCreated:*"], Id="made"),
        rule(arn, ["s3:ObjectRemoved:DeleteMarkerCreated"], Id="marked"),
        rule(arn, ["s3:ObjectRemoved:Delete"], Id="removed"),
        rule(arn, ["s3:ObjectTagging:*"], Id="tagged"),
    )
    made = s3.put_object(Bucket=bucket, Key="photo.jpg", Body=b"x")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="photo.jpg")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="photo.jpg", VersionId=marker)
    s3.put_object_tagging(Bucket=bucket, Key="photo.jpg", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    found = wait_records(server, fn, 4)
    time.sleep(1.0)
    found = records(server, fn)
    seen = sorted((r["eventName"], r["s3"]["configurationId"], r["s3"]["object"].get("versionId")) for r in found)
    assert seen == [
        ("ObjectCreated:Put", "made", made),
        ("ObjectRemoved:Delete", "removed", marker),
        ("ObjectRemoved:DeleteMarkerCreated", "marked", marker),
        ("ObjectTagging:Put", "tagged", made),
    ]


def test_function_code_by_object_version(server: Server, lam: Any) -> None:
    s3 = client(server)
    bucket = versioned(s3)
    first = s3.put_object(
        Bucket=bucket, Key="fn.zip", Body=make_zip({"app.py": "def handler(e, c):\n    return 'first'\n"})
    )["VersionId"]
    s3.put_object(Bucket=bucket, Key="fn.zip", Body=make_zip({"app.py": "def handler(e, c):\n    return 'latest'\n"}))
    name = unique("byver")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": "fn.zip", "S3ObjectVersion": first},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "first"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as caught:
        lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="fn.zip", S3ObjectVersion="B" * 32)
    assert "NoSuchVersion" in str(caught.value)
    lam.update_function_code(FunctionName=name, S3Bucket=bucket, S3Key="fn.zip")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "latest"


def test_the_aws_cli_speaks_versions_and_tags(server: Server) -> None:
    bucket = unique("cliver")
    aws(server, "s3", "mb", f"s3://{bucket}")
    aws(server, "s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    out = json.loads(aws(server, "s3api", "put-object", "--bucket", bucket, "--key", "k", "--tagging", "a=1").stdout)
    version = out["VersionId"]
    aws(server, "s3api", "put-object", "--bucket", bucket, "--key", "k")
    listed = json.loads(aws(server, "s3api", "list-object-versions", "--bucket", bucket).stdout)
    assert [v["IsLatest"] for v in listed["Versions"]] == [True, False]
    tags = json.loads(
        aws(server, "s3api", "get-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", version).stdout
    )
    assert tags["TagSet"] == [{"Key": "a", "Value": "1"}]
    status = json.loads(aws(server, "s3api", "get-bucket-versioning", "--bucket", bucket).stdout)
    assert status == {"Status": "Enabled"}
    assert urllib.parse.quote(version) == version  # URL-safe: usable in a copy source as it is
