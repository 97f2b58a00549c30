"""The metadata store's contract for function URL configurations: put replaces by (function, qualifier),
None removes, everything survives a reopen, and deleting the function or the alias deletes its URLs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from selfless.models import Alias, CodeRef, Function
from selfless.store.sqlite import SqliteStore


def url_doc(name: str, qualifier: str, url_id: str, auth: str = "NONE") -> dict[str, Any]:
    return {
        "UrlId": url_id,
        "FunctionName": name,
        "Qualifier": qualifier,
        "AuthType": auth,
        "Cors": {"AllowOrigins": ["*"]},
        "InvokeMode": "BUFFERED",
        "CreationTime": "2026-01-01T00:00:00.000000Z",
        "LastModifiedTime": "2026-01-01T00:00:00.000000Z",
    }


def function(name: str) -> Function:
    return Function(
        name=name,
        arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        runtime="python3.12",
        role="arn:aws:iam::000000000000:role/r",
        handler="app.handler",
        code=CodeRef("sha", "key", 1, 1),
    )


def run(tmp_path: Path, steps: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        try:
            await steps(store)
        finally:
            await store.close()
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        try:
            return await store.list_function_url_configs()
        finally:
            await store.close()

    return asyncio.run(go())


def test_put_replace_remove_and_reopen(tmp_path: Path) -> None:
    async def steps(store: SqliteStore) -> None:
        await store.put_function_url_config("b", "", url_doc("b", "", "b" * 32))
        await store.put_function_url_config("a", "live", url_doc("a", "live", "c" * 32))
        await store.put_function_url_config("a", "", url_doc("a", "", "a" * 32))
        await store.put_function_url_config("a", "", url_doc("a", "", "a" * 32, auth="AWS_IAM"))
        await store.put_function_url_config("b", "", None)
        await store.put_function_url_config("zzz", "", None)  # removing what is not there changes nothing

    docs = run(tmp_path, steps)
    assert [(d["FunctionName"], d["Qualifier"], d["AuthType"]) for d in docs] == [
        ("a", "", "AWS_IAM"),
        ("a", "live", "NONE"),
    ]
    assert docs[0] == url_doc("a", "", "a" * 32, auth="AWS_IAM")


def test_deleting_the_alias_or_the_function_deletes_its_urls(tmp_path: Path) -> None:
    async def steps(store: SqliteStore) -> None:
        for name in ("f", "g"):
            await store.put_function(function(name))
            await store.put_alias(Alias(name, "live", f"{function(name).arn}:live", "1"))
            await store.put_function_url_config(name, "", url_doc(name, "", name * 32))
            await store.put_function_url_config(name, "live", url_doc(name, "live", name.upper() * 32))
        await store.delete_alias("g", "live")
        await store.delete_function("f")

    docs = run(tmp_path, steps)
    assert [(d["FunctionName"], d["Qualifier"]) for d in docs] == [("g", "")]
