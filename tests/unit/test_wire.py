"""Wire shapes: what the server renders is what botocore parses, field for field (property-based)."""

from __future__ import annotations

import json
import string
from typing import Any

import botocore.parsers
from hypothesis import given, settings
from hypothesis import strategies as st

from selfless.api import model
from selfless.api.wire import being_created, configuration
from selfless.models import CodeRef, Function, FunctionState, UpdateStatus

names = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=64)
env_keys = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{1,20}", fullmatch=True)
printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def functions(draw: st.DrawFn) -> Function:
    name = draw(names)
    return Function(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        runtime=draw(st.sampled_from(["python3.11", "python3.12", "provided.al2023"])),
        role="arn:aws:iam::000000000000:role/r",
        handler=draw(st.none() | st.just("app.handler")),
        code=CodeRef(
            draw(st.text(string.ascii_letters, min_size=44, max_size=44)),
            "ab" * 32,
            draw(st.integers(0, 52_428_800)),
            draw(st.integers(0, 262_144_000)),
        ),
        description=draw(printable),
        timeout=draw(st.integers(1, 900)),
        memory_size=draw(st.integers(128, 10240)),
        ephemeral_storage=draw(st.integers(512, 10240)),
        environment=draw(st.dictionaries(env_keys, printable, max_size=5)),
        tags=draw(st.dictionaries(names, printable, max_size=5)),
        last_modified="2026-11-22T20:40:02.123+0000",
        revision_id=draw(st.uuids()).hex,
        generation=draw(st.integers(1, 10**6)),
        state=draw(st.sampled_from(list(FunctionState))),
        last_update_status=draw(st.none() | st.sampled_from(list(UpdateStatus))),
    )


def parse_as(operation: str, doc: dict[str, Any], status: int = 200) -> dict[str, Any]:
    op = model.service_model().operation_model(operation)
    parser = botocore.parsers.create_parser("rest-json")
    response = {"status_code": status, "headers": {}, "body": json.dumps(doc).encode()}
    parsed: dict[str, Any] = parser.parse(response, op.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


@settings(max_examples=150, deadline=None)
@given(fn=functions())
def test_configuration_parses_back_exactly(fn: Function) -> None:
    doc = configuration(fn, "us-east-1")
    parsed = parse_as("GetFunctionConfiguration", doc)
    assert parsed == doc
    assert parsed["CodeSha256"] == fn.code.sha256
    assert parsed["State"] == fn.state.value
    # Every field is one the model knows.
    known = set(model.service_model().shape_for("FunctionConfiguration").members)
    assert set(doc) <= known


@settings(max_examples=150, deadline=None)
@given(fn=functions())
def test_store_document_round_trip(fn: Function) -> None:
    assert Function.from_doc(json.loads(json.dumps(fn.to_doc()))) == fn


def _plain(**changes: Any) -> Function:
    base = Function(
        name="f",
        arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        runtime="python3.12",
        role="arn:aws:iam::000000000000:role/r",
        handler="app.handler",
        code=CodeRef("c" * 44, "ab" * 32, 10, 20),
        state=FunctionState.ACTIVE,
        last_update_status=UpdateStatus.SUCCESSFUL,
    )
    return base.replace(**changes)


def test_configuration_echoes_the_arn_named_and_lists_without_states() -> None:
    fn = _plain()
    assert configuration(fn, "us-east-1")["FunctionArn"] == fn.arn
    assert configuration(fn, "us-east-1", function_arn=f"{fn.arn}:live")["FunctionArn"] == f"{fn.arn}:live"
    listed = configuration(fn, "us-east-1", listed=True)
    for absent in ("State", "LastUpdateStatus", "RuntimeVersionConfig"):
        assert absent not in listed
    assert listed["CodeSha256"] == fn.code.sha256


def test_environment_shown_when_set_even_empty() -> None:
    assert "Environment" not in configuration(_plain(), "us-east-1")
    assert configuration(_plain(environment_set=True), "us-east-1")["Environment"] == {"Variables": {}}
    assert configuration(_plain(environment={"A": "1"}), "us-east-1")["Environment"] == {"Variables": {"A": "1"}}


def test_being_created_is_pending_without_update_status() -> None:
    doc = being_created(configuration(_plain(version="1"), "us-east-1"))
    assert (doc["State"], doc["StateReason"], doc["StateReasonCode"]) == (
        "Pending",
        "The function is being created.",
        "Creating",
    )
    assert not any(key.startswith("LastUpdateStatus") for key in doc)
    assert parse_as("CreateFunction", doc, 201) == doc
