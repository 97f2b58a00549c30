"""Layers: publishing, reading, listing and deleting layer versions with boto3, and a function's Layers
extracted into /opt in order (later layers override earlier ones), with AWS's paths for Python (python/ and
python/lib/pythonX.Y/site-packages on sys.path), bin/ on PATH and lib/ on LD_LIBRARY_PATH."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import make_zip, unique

ROLE = "arn:aws:iam::000000000000:role/test"
PYTHONS = [f"3.{minor}" for minor in range(9, 16)]

HANDLER = """import os, sys


def handler(event, context):
    import mod_a, mod_b, shared
    return {
        "a": mod_a.VALUE,
        "b": mod_b.VERSION,
        "python": "%d.%d" % sys.version_info[:2],
        "shared": shared.WHO,
        "path": [p for p in sys.path if p.startswith("/opt")],
        "PATH": os.environ["PATH"],
        "LD_LIBRARY_PATH": os.environ["LD_LIBRARY_PATH"],
        "tool": open("/opt/bin/tool").read(),
        "lib": sorted(os.listdir("/opt/lib")),
    }
"""


def layer_a() -> bytes:
    return make_zip(
        {
            "python/mod_a.py": "VALUE = 'a'\n",
            "python/shared.py": "WHO = 'A'\n",
            "bin/tool": "#!/bin/sh\necho A\n",
            "lib/liba.so": b"\x7fELF-not-really",
        },
        {"bin/tool": 0o755},
    )


def layer_b() -> bytes:
    # mod_b for every Python the function might really run on: which one imports says which path is used.
    files: dict[str, str | bytes] = {
        f"python/lib/python{v}/site-packages/mod_b.py": f"VERSION = '{v}'\n" for v in PYTHONS
    }
    files["python/shared.py"] = "WHO = 'B'\n"
    files["bin/tool"] = "#!/bin/sh\necho B\n"
    files["lib/libb.so"] = b"\x7fELF-not-really"
    return make_zip(files, {"bin/tool": 0o755})


@pytest.fixture
def layers(lam: Any) -> Iterator[Callable[[bytes], dict[str, Any]]]:
    """Publish layer versions (of fresh layers); all deleted after the test."""
    made: list[tuple[str, int]] = []

    def publish(content: bytes, name: str | None = None, **kwargs: Any) -> dict[str, Any]:
        answer = lam.publish_layer_version(LayerName=name or unique("layer"), Content={"ZipFile": content}, **kwargs)
        made.append((answer["LayerArn"].rsplit(":", 1)[1], answer["Version"]))
        return dict(answer)

    yield publish
    for name, version in made:
        lam.delete_layer_version(LayerName=name, VersionNumber=version)


def test_layer_versions_round_trip(lam: Any, layers: Callable[..., dict[str, Any]]) -> None:
    package = layer_a()
    name = unique("layer")
    first = layers(
        package,
        name,
        Description="first",
        CompatibleRuntimes=["python3.12", "python3.11"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert first["Version"] == 1
    assert first["LayerArn"] == f"arn:aws:lambda:us-east-1:000000000000:layer:{name}"
    assert first["LayerVersionArn"] == first["LayerArn"] + ":1"
    assert first["Description"] == "first" and first["LicenseInfo"] == "MIT"
    assert first["CompatibleRuntimes"] == ["python3.12", "python3.11"]
    assert first["CompatibleArchitectures"] == ["x86_64"]
    assert first["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(package).digest()).decode()
    assert first["Content"]["CodeSize"] == len(package)
    with urllib.request.urlopen(first["Content"]["Location"], timeout=10) as r:
        assert r.read() == package, "Content.Location downloads the layer's zip"

    second = layers(layer_b(), name, CompatibleRuntimes=["nodejs20.x"])
    assert second["Version"] == 2 and "LicenseInfo" not in second

    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    by_arn = lam.get_layer_version_by_arn(Arn=first["LayerVersionArn"])
    by_layer_arn = lam.get_layer_version(LayerName=first["LayerArn"], VersionNumber=1)
    for doc in (got, by_arn, by_layer_arn):
        assert doc["LayerVersionArn"] == first["LayerVersionArn"]
        assert doc["CreatedDate"] == first["CreatedDate"]
        assert doc["Content"]["CodeSha256"] == first["Content"]["CodeSha256"]

    versions = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1], "newest first"
    python = lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")["LayerVersions"]
    assert [v["Version"] for v in python] == [1]
    page = lam.list_layer_versions(LayerName=name, MaxItems=1)
    assert [v["Version"] for v in page["LayerVersions"]] == [2] and "NextMarker" in page
    rest = lam.list_layer_versions(LayerName=name, MaxItems=1, Marker=page["NextMarker"])
    assert [v["Version"] for v in rest["LayerVersions"]] == [1] and "NextMarker" not in rest

    listed = {layer["LayerName"]: layer for layer in lam.list_layers()["Layers"]}
    assert listed[name]["LatestMatchingVersion"]["Version"] == 2
    assert listed[name]["LayerArn"] == first["LayerArn"]
    matching = {layer["LayerName"]: layer for layer in lam.list_layers(CompatibleRuntime="python3.11")["Layers"]}
    assert matching[name]["LatestMatchingVersion"]["Version"] == 1
    assert name not in {layer["LayerName"] for layer in lam.list_layers(CompatibleArchitecture="arm64")["Layers"]}

    # Deleting is idempotent, and a number is never given out again.
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as missing:
        lam.get_layer_version(LayerName=name, VersionNumber=2)
    assert missing.value.response["Error"]["Message"] == "The resource you requested does not exist."
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert layers(layer_a(), name)["Version"] == 3


def test_missing_layers_answer_as_aws(lam: Any) -> None:
    name = unique("layer")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=name, VersionNumber=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_by_arn(Arn=f"arn:aws:lambda:us-east-1:000000000000:layer:{name}:1")
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []
    with pytest.raises(lam.exceptions.ClientError) as bad:
        lam.publish_layer_version(LayerName="no spaces allowed", Content={"ZipFile": layer_a()})
    assert bad.value.response["Error"]["Code"] == "ValidationException"


def test_layers_are_merged_into_opt_in_order(
    lam: Any, layers: Callable[..., dict[str, Any]], make_function: Callable[..., str]
) -> None:
    a, b = layers(layer_a()), layers(layer_b())
    name = make_function(HANDLER, runtime="python3.12", Layers=[a["LayerVersionArn"], b["LayerVersionArn"]])
    config = lam.get_function_configuration(FunctionName=name)
    assert config["Layers"] == [
        {"Arn": a["LayerVersionArn"], "CodeSize": a["Content"]["CodeSize"]},
        {"Arn": b["LayerVersionArn"], "CodeSize": b["Content"]["CodeSize"]},
    ]
    body = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    python = body["python"]
    assert body["a"] == "a", "python/ of a layer is importable"
    assert body["b"] == python, "python/lib/pythonX.Y/site-packages of the running Python is importable"
    assert body["path"] == [f"/opt/python/lib/python{python}/site-packages", "/opt/python"]
    assert body["shared"] == "B" and body["tool"] == "#!/bin/sh\necho B\n", "the later layer overrides"
    assert body["lib"] == ["liba.so", "libb.so"], "both layers' lib/ files are there"
    assert body["PATH"].split(":")[-1] == "/opt/bin"
    assert "/opt/lib" in body["LD_LIBRARY_PATH"].split(":")

    # The other order: the other layer wins. Layers=[] takes them all away.
    lam.update_function_configuration(FunctionName=name, Layers=[b["LayerVersionArn"], a["LayerVersionArn"]])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    body = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert body["shared"] == "A" and body["tool"] == "#!/bin/sh\necho A\n"
    lam.update_function_configuration(FunctionName=name, Layers=[])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert "Layers" not in lam.get_function_configuration(FunctionName=name)
    answer = lam.invoke(FunctionName=name)
    assert answer.get("FunctionError") == "Unhandled"
    assert "No module named 'mod_a'" in answer["Payload"].read().decode()


def test_a_deleted_layer_version_keeps_working_for_its_functions(lam: Any, make_function: Callable[..., str]) -> None:
    layer_name = unique("layer")
    a = lam.publish_layer_version(LayerName=layer_name, Content={"ZipFile": layer_a()})
    code = "import mod_a\n\ndef handler(event, context):\n    return mod_a.VALUE\n"
    name = make_function(code, runtime="python3.12", Layers=[a["LayerVersionArn"]])
    lam.delete_layer_version(LayerName=layer_name, VersionNumber=a["Version"])
    # An update of something else keeps the layer (its package is the function's now), as on AWS.
    lam.update_function_configuration(FunctionName=name, Description="after the layer went")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == "a"
    assert lam.get_function_configuration(FunctionName=name)["Layers"][0]["Arn"] == a["LayerVersionArn"]
    # Naming it anew is refused: it does not exist any more.
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as gone:
        lam.create_function(
            FunctionName=unique(),
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": make_zip({"app.py": code})},
            Layers=[a["LayerVersionArn"]],
        )
    assert gone.value.response["Error"]["Message"] == f"Layer version {a['LayerVersionArn']} does not exist."


def test_function_layer_errors(lam: Any, layers: Callable[..., dict[str, Any]]) -> None:
    package = make_zip({"app.py": "def handler(e, c):\n    return 1\n"})

    def create(arns: list[str]) -> Any:
        return lam.create_function(
            FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
            Code={"ZipFile": package}, Layers=arns,
        )  # fmt: skip

    name = unique("layer")
    one, two = layers(layer_a(), name), layers(layer_a(), name)
    others = [layers(layer_a())["LayerVersionArn"] for _ in range(5)]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as many:
        create([*others, one["LayerVersionArn"]])
    assert many.value.response["Error"]["Message"] == "Cannot reference more than 5 layers."
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as same:
        create([one["LayerVersionArn"], two["LayerVersionArn"]])
    assert "Two different versions of the same layer" in same.value.response["Error"]["Message"]
    missing = f"arn:aws:lambda:us-east-1:000000000000:layer:{unique('nope')}:1"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as nope:
        create([missing])
    assert nope.value.response["Error"]["Message"] == f"Layer version {missing} does not exist."
    with pytest.raises(lam.exceptions.ClientError) as malformed:
        create(["not-an-arn"])
    assert malformed.value.response["Error"]["Code"] == "ValidationException"
    message = malformed.value.response["Error"]["Message"]
    # AWS's words for a bad member of a list of strings: one error at the list, naming all member rules.
    assert message.startswith(
        "1 validation error detected: Value '[not-an-arn]' at 'layers' failed to satisfy constraint: Member must "
        "satisfy constraint: [Member must have length less than or equal to "
    ), message
    assert ", Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: " in (
        message
    )


def test_code_and_layers_together_stay_within_250_mb(
    lam: Any, layers: Callable[..., dict[str, Any]], make_function: Callable[..., str]
) -> None:
    # Two layers of 130 MiB of zeros each (a few hundred KB zipped): each fits, both do not.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("blob", bytes(130 * 1024 * 1024))
    big = buf.getvalue()
    first, second = layers(big), layers(big)
    name = make_function("def handler(e, c):\n    return 1\n", Layers=[first["LayerVersionArn"]])
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as too_big:
        lam.update_function_configuration(
            FunctionName=name, Layers=[first["LayerVersionArn"], second["LayerVersionArn"]]
        )
    message = too_big.value.response["Error"]["Message"]
    assert message.startswith(
        "Function code combined with layers exceeds the maximum allowed size of 262144000 bytes. The actual size is "
    )
    assert lam.get_function_configuration(FunctionName=name)["Layers"] == [
        {"Arn": first["LayerVersionArn"], "CodeSize": first["Content"]["CodeSize"]}
    ], "a refused update changes nothing"
