"""Packages no function refers to any more are removed, except those a live environment still runs (an
update's old code serves the calls in flight until they end)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from selfless.artifacts import local
from selfless.artifacts.local import LocalCodeStore
from selfless.artifacts.s3 import S3Source
from selfless.config import Settings
from selfless.functions import FunctionRegistry
from selfless.invocation.leases import Leases
from selfless.store.sqlite import SqliteStore


class Runtimes:
    """The one runtime these functions name."""

    def get(self, name: str) -> Any:
        return object() if name == "python3.12" else None

    def names(self) -> list[str]:
        return ["python3.12"]


def package(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", f"def handler(e, c):\n    return {text!r}\n")
    return buf.getvalue()


def test_packages_in_use_outlive_their_function_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_RECENT_S", 0.0)  # no grace for packages stored moments ago: only use counts

    async def scenario() -> None:
        store = SqliteStore(tmp_path / "meta.db")
        await store.open()
        code = LocalCodeStore(tmp_path / "code")
        code.open()
        registry = FunctionRegistry(
            Settings(), store, code, Runtimes(), lambda _n, _g: None, Leases(1000), S3Source(None, "us-east-1")
        )  # type: ignore[arg-type]
        fn = await registry.create(
            {"FunctionName": "f", "Runtime": "python3.12", "Role": "arn:aws:iam::000000000000:role/r",
             "Handler": "app.handler", "Code": {"ZipFile": package("old")}}
        )  # fmt: skip
        await registry.wait_settled()
        old = fn.code.key
        registry.in_use = lambda: [old]  # an environment of the old code is still serving a call
        updated = await registry.update_code("f", {"ZipFile": package("new")})
        assert updated.code.key != old
        assert code.tree(old).is_dir() and code.blob(old).is_file(), "kept while in use"
        registry.in_use = lambda: []  # that environment is gone
        await registry.collect()
        assert not code.tree(old).exists() and not code.blob(old).exists()
        assert code.tree(updated.code.key).is_dir()
        await store.close()

    asyncio.run(scenario())
