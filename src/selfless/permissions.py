"""Resource policies of functions (and their versions and aliases) and of layer versions, kept durable.

``policies`` builds statements and documents as AWS renders them; this module decides which resource a
request names, checks that it exists, and stores each policy (its document and revision) in the metadata
store under a resource key: ``function:<name>``, ``function:<name>:<qualifier>``, ``layer:<name>:<version>``.
A function's policies go with the function, a version's or alias's with it, a layer version's with it.

The statements are recorded and returned exactly; selfless does not evaluate them yet (API callers are
its own admin credentials or functions' session credentials, see ``api.lambda_api``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from selfless import policies
from selfless.errors import ResourceNotFound
from selfless.functions import FunctionRegistry
from selfless.layers import LayerRegistry, policy_resource
from selfless.policies import Policy
from selfless.store.base import MetadataStore

_NO_FUNCTION_POLICY = "The resource you requested does not exist."
_NO_LAYER_POLICY = "No policy is associated with the given resource."


class Permissions:
    def __init__(self, store: MetadataStore, functions: FunctionRegistry, layers: LayerRegistry) -> None:
        self._store = store
        self._functions = functions
        self._layers = layers
        self._policies: dict[str, Policy] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for resource, text in (await self._store.list_policies()).items():
            doc = json.loads(text)
            self._policies[resource] = policies.from_document(doc["document"], doc["revision"])

    # -- functions ------------------------------------------------------------------------------------------

    def _function_resource(self, name_or_arn: str, qualifier: str | None) -> tuple[str, str]:
        """(resource key, resource ARN) of the function, version or alias a request names; raises
        ResourceNotFound as GetFunction would when it does not exist."""
        name, qualifier = self._functions.resolve(name_or_arn, qualifier)
        fn = self._functions.latest(name)
        if qualifier is None:
            return f"function:{fn.name}", fn.arn
        if qualifier != "$LATEST":
            self._functions.get(fn.name, qualifier)  # a version or an alias that exists
        return f"function:{fn.name}:{qualifier}", f"{fn.arn}:{qualifier}"

    async def add_function(self, name_or_arn: str, params: Mapping[str, Any]) -> str:
        """AddPermission: the new statement, as the JSON string AWS returns."""
        resource, arn = self._function_resource(name_or_arn, params.get("Qualifier"))
        statement = policies.function_statement(params, arn)
        async with self._lock:
            policy = policies.add(self._policies.get(resource), statement, params.get("RevisionId"))
            await self._save(resource, policy)
        return policies.statement_json(statement)

    def function_policy(self, name_or_arn: str, qualifier: str | None) -> Policy:
        resource, _arn = self._function_resource(name_or_arn, qualifier)
        policy = self._policies.get(resource)
        if policy is None:
            raise ResourceNotFound(_NO_FUNCTION_POLICY)
        return policy

    async def remove_function(self, name_or_arn: str, sid: str, qualifier: str | None, revision: str | None) -> None:
        resource, _arn = self._function_resource(name_or_arn, qualifier)
        async with self._lock:
            policy = policies.remove(self._policies.get(resource), sid, revision)
            await self._save(resource, policy)

    def forget(self, name: str, qualifier: str | None = None) -> None:
        """A function (every policy of it) or one version or alias of it went away; the store deleted its
        policies in the same transaction."""
        prefix = f"function:{name}"
        for resource in list(self._policies):
            if (
                (resource == f"{prefix}:{qualifier}")
                if qualifier is not None
                else (resource == prefix or resource.startswith(prefix + ":"))
            ):
                del self._policies[resource]

    # -- layer versions -------------------------------------------------------------------------------------

    async def add_layer(self, name_or_arn: str, version: int, params: Mapping[str, Any]) -> tuple[str, str]:
        """AddLayerVersionPermission: the new statement (JSON string) and the policy's revision."""
        layer = self._layers.get(name_or_arn, version, named=True)
        resource = policy_resource(layer.name, layer.version)
        statement = policies.layer_statement(params, layer.arn)
        async with self._lock:
            policy = policies.add(self._policies.get(resource), statement, params.get("RevisionId"), layer=True)
            await self._save(resource, policy)
        return policies.statement_json(statement), policy.revision_id

    def layer_policy(self, name_or_arn: str, version: int) -> Policy:
        layer = self._layers.get(name_or_arn, version, named=True)
        policy = self._policies.get(policy_resource(layer.name, layer.version))
        if policy is None:
            raise ResourceNotFound(_NO_LAYER_POLICY)
        return policy

    async def remove_layer(self, name_or_arn: str, version: int, sid: str, revision: str | None) -> None:
        layer = self._layers.get(name_or_arn, version, named=True)
        resource = policy_resource(layer.name, layer.version)
        async with self._lock:
            policy = policies.remove(self._policies.get(resource), sid, revision, layer=True)
            await self._save(resource, policy)

    def forget_layer(self, name: str, version: int) -> None:
        """A layer version went away (its stored policy went with it, in the same transaction)."""
        self._policies.pop(policy_resource(name, version), None)

    # -- storage --------------------------------------------------------------------------------------------

    async def _save(self, resource: str, policy: Policy | None) -> None:
        """Durable first, then visible."""
        if policy is None:
            await self._store.put_policy(resource, None)
            self._policies.pop(resource, None)
            return
        doc = {"revision": policy.revision_id, "document": policies.document(policy)}
        await self._store.put_policy(resource, json.dumps(doc, separators=(",", ":")))
        self._policies[resource] = policy
