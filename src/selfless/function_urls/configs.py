"""Create/Get/Update/Delete/ListFunctionUrlConfigs: the rules, kept in the metadata store.

A function has at most one URL per qualifier, and the only qualifiers are none (the unqualified function,
which runs $LATEST) and an alias: the model's Qualifier pattern refuses $LATEST and version numbers before
this module sees them. Each URL has a 32-character lower-case alphanumeric id, as AWS's, which names it on
the wire (``http://<url-id>.lambda-url.<region>.localhost:<port>/``). A function's URLs go with the function,
an alias's with the alias: the store deletes them in the same transaction, and ``forget`` drops them here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

from selfless.config import Settings
from selfless.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound
from selfless.functions import FunctionRegistry
from selfless.store.base import MetadataStore

_ID_ALPHABET = string.ascii_lowercase + string.digits
_NO_URL = "The resource you requested does not exist."
_CORS_KEYS = ("AllowCredentials", "AllowHeaders", "AllowMethods", "AllowOrigins", "ExposeHeaders", "MaxAge")
# Response streaming is not offered yet: refused rather than accepted and served buffered.
_NO_STREAMING = "InvokeMode RESPONSE_STREAM is not supported by selfless yet; use BUFFERED"


def new_url_id() -> str:
    """A URL id as AWS makes them: 32 lower-case letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(32))


def _now() -> str:
    """AWS's timestamp for URL configurations: ISO 8601 with microseconds, in UTC."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1_000_000) % 1_000_000:06d}Z"


@dataclasses.dataclass(frozen=True)
class UrlConfig:
    """One function URL: ``qualifier`` "" for the unqualified function, else an alias name."""

    url_id: str
    function_name: str
    qualifier: str
    auth_type: str
    cors: Mapping[str, Any]
    invoke_mode: str
    created: str
    modified: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "UrlId": self.url_id,
            "FunctionName": self.function_name,
            "Qualifier": self.qualifier,
            "AuthType": self.auth_type,
            "Cors": dict(self.cors),
            "InvokeMode": self.invoke_mode,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> UrlConfig:
        return cls(
            url_id=doc["UrlId"],
            function_name=doc["FunctionName"],
            qualifier=doc["Qualifier"],
            auth_type=doc["AuthType"],
            cors=dict(doc.get("Cors") or {}),
            invoke_mode=doc.get("InvokeMode", "BUFFERED"),
            created=doc["CreationTime"],
            modified=doc["LastModifiedTime"],
        )


def _cors(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Cors as stored and shown: the members given (AWS echoes what was set, nothing more)."""
    return {k: given[k] for k in _CORS_KEYS if given is not None and given.get(k) is not None}


class FunctionUrls:
    """The function URL configurations of every function, loaded at start and written through."""

    def __init__(self, settings: Settings, store: MetadataStore, registry: FunctionRegistry) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._configs: dict[tuple[str, str], UrlConfig] = {}
        self._by_id: dict[str, UrlConfig] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for doc in await self._store.list_function_url_configs():
            self._remember(UrlConfig.from_doc(doc))

    def _remember(self, config: UrlConfig) -> None:
        self._configs[(config.function_name, config.qualifier)] = config
        self._by_id[config.url_id] = config

    # -- the API ------------------------------------------------------------------------------------------

    def _target(self, name_or_arn: str, qualifier: str | None) -> tuple[str, str]:
        """(function name, qualifier or "") a request names; ResourceNotFound when the function or alias
        does not exist."""
        name, qualifier = self._registry.resolve(name_or_arn, qualifier)
        fn = self._registry.latest(name)
        if qualifier:
            self._registry.alias(fn.name, qualifier)
        return fn.name, qualifier or ""

    def function_arn(self, config: UrlConfig) -> str:
        arn = self._registry.arn(config.function_name)
        return f"{arn}:{config.qualifier}" if config.qualifier else arn

    def url(self, config: UrlConfig) -> str:
        return f"http://{config.url_id}.lambda-url.{self._settings.region}.localhost:{self._settings.port}/"

    def shown(self, config: UrlConfig, *, modified: bool = True) -> dict[str, Any]:
        """FunctionUrlConfig as AWS returns it (CreateFunctionUrlConfig's answer has no LastModifiedTime)."""
        doc: dict[str, Any] = {
            "FunctionUrl": self.url(config),
            "FunctionArn": self.function_arn(config),
            "AuthType": config.auth_type,
            "CreationTime": config.created,
            "InvokeMode": config.invoke_mode,
        }
        if config.cors:
            doc["Cors"] = dict(config.cors)
        if modified:
            doc["LastModifiedTime"] = config.modified
        return doc

    async def create(self, name_or_arn: str, qualifier: str | None, params: Mapping[str, Any]) -> UrlConfig:
        name, qualifier = self._target(name_or_arn, qualifier)
        mode = params.get("InvokeMode") or "BUFFERED"
        if mode != "BUFFERED":
            raise InvalidParameterValue(_NO_STREAMING)
        async with self._lock:
            if (name, qualifier) in self._configs:
                arn = self._registry.arn(name) + (f":{qualifier}" if qualifier else "")
                raise ResourceConflict(
                    f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
                    "FunctionUrlConfig exists for this Lambda function"
                )
            url_id = new_url_id()
            while url_id in self._by_id:  # 36**32 ids: never in practice, but an id names one URL only
                url_id = new_url_id()
            now = _now()
            config = UrlConfig(url_id, name, qualifier, params["AuthType"], _cors(params.get("Cors")), mode, now, now)
            await self._store.put_function_url_config(name, qualifier, config.to_doc())
            self._remember(config)
        return config

    def get(self, name_or_arn: str, qualifier: str | None) -> UrlConfig:
        config = self._configs.get(self._target(name_or_arn, qualifier))
        if config is None:
            raise ResourceNotFound(_NO_URL)
        return config

    async def update(self, name_or_arn: str, qualifier: str | None, params: Mapping[str, Any]) -> UrlConfig:
        """UpdateFunctionUrlConfig: what is given replaces what was set (Cors as a whole), the rest stays."""
        key = self._target(name_or_arn, qualifier)
        if params.get("InvokeMode") not in (None, "BUFFERED"):
            raise InvalidParameterValue(_NO_STREAMING)
        async with self._lock:
            old = self._configs.get(key)
            if old is None:
                raise ResourceNotFound(_NO_URL)
            config = dataclasses.replace(
                old,
                auth_type=params.get("AuthType") or old.auth_type,
                cors=_cors(params["Cors"]) if "Cors" in params else old.cors,
                invoke_mode=params.get("InvokeMode") or old.invoke_mode,
                modified=_now(),
            )
            await self._store.put_function_url_config(key[0], key[1], config.to_doc())
            self._remember(config)
        return config

    async def delete(self, name_or_arn: str, qualifier: str | None) -> None:
        key = self._target(name_or_arn, qualifier)
        async with self._lock:
            config = self._configs.get(key)
            if config is None:
                raise ResourceNotFound(_NO_URL)
            await self._store.put_function_url_config(key[0], key[1], None)
            del self._configs[key]
            self._by_id.pop(config.url_id, None)

    def list(self, name_or_arn: str) -> list[UrlConfig]:
        """The function's URLs (its own first, then its aliases' by name)."""
        name = self._registry.latest(name_or_arn).name
        return [c for (n, _q), c in sorted(self._configs.items()) if n == name]

    # -- serving and lifecycle -----------------------------------------------------------------------------

    def by_id(self, url_id: str) -> UrlConfig | None:
        return self._by_id.get(url_id)

    def forget(self, name: str, qualifier: str | None) -> None:
        """A function (every URL of it) or an alias went away; the store dropped them in the same transaction."""
        for key in [k for k in self._configs if k[0] == name and (qualifier is None or k[1] == qualifier)]:
            self._by_id.pop(self._configs.pop(key).url_id, None)
