"""The metadata store keeps code signing configurations, and a function's attachment to one, across a reopen
(a restart): created, replaced and deleted by id, listed oldest first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from selfless.models import CodeRef, CodeSigningConfig, Function
from selfless.store.sqlite import SqliteStore

ARN = "arn:aws:lambda:us-east-1:000000000000:code-signing-config:"


def config(n: int, **changes: object) -> CodeSigningConfig:
    made = CodeSigningConfig(
        id=f"csc-{n:017d}",
        arn=f"{ARN}csc-{n:017d}",
        allowed_profiles=("arn:aws:signer:us-east-1:000000000000:/signing-profiles/p/1",),
        policy="Enforce",
        description=f"config {n}",
        last_modified="2026-01-01T00:00:00.000+0000",
        tags={"team": "a"},
    )
    return made.replace(**changes)


def test_configurations_survive_a_reopen(tmp_path: Path) -> None:
    first, second, third = config(3), config(1), config(2)
    replaced = second.replace(policy="Warn", description="", allowed_profiles=("a", "b"), tags={})
    fn = Function(
        name="f",
        arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        runtime="python3.12",
        role="arn:aws:iam::000000000000:role/r",
        handler="app.handler",
        code=CodeRef("sha", "key", 1, 1),
        code_signing_config_arn=first.arn,
    )

    async def write() -> None:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        for c in (first, second, third):
            await store.put_code_signing_config(c)
        await store.put_code_signing_config(replaced)
        await store.delete_code_signing_config(third.id)
        await store.delete_code_signing_config("csc-nothing")  # deleting what is not there changes nothing
        await store.put_function(fn)
        await store.close()

    async def read() -> tuple[list[CodeSigningConfig], list[Function]]:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        try:
            return await store.list_code_signing_configs(), await store.list_functions()
        finally:
            await store.close()

    asyncio.run(write())
    configs, functions = asyncio.run(read())
    assert configs == [first, replaced]  # oldest first; a replacement keeps its place
    assert functions == [fn] and functions[0].code_signing_config_arn == first.arn


def test_a_function_record_from_before_code_signing_has_none() -> None:
    doc = Function(name="f", arn="a", runtime=None, role="r", handler=None, code=CodeRef("s", "k", 1, 1)).to_doc()
    del doc["code_signing_config_arn"]
    assert Function.from_doc(doc).code_signing_config_arn is None
