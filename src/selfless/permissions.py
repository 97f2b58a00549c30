"""Resource policies of functions (and their versions and aliases) and of layer versions, kept durable.

``policies`` builds statements and documents as AWS renders them; this module decides which resource a
request names, checks that it exists, and stores each policy (its document and revision) in the metadata
store under a resource key: ``function:<name>``, ``function:<name>:<qualifier>``, ``layer:<name>:<version>``.
A function's policies go with the function, a version's or alias's with it, a layer version's with it.

Revisions follow AWS: a function's (version's, alias's) policy is part of it, so GetPolicy reports the
RevisionId of what the policy is attached to, AddPermission's and RemovePermission's RevisionId must name
that one, and both calls give it a new RevisionId. A layer version has no revision of its own, so its
policy keeps its own.

The statements are recorded and returned exactly; selfless does not evaluate them yet (API callers are
its own admin credentials or functions' session credentials, see ``api.lambda_api``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from selfless import policies
from selfless.errors import PreconditionFailed, ResourceNotFound
from selfless.functions import FunctionRegistry
from selfless.layers import LayerRegistry, policy_resource
from selfless.policies import Policy
from selfless.store.base import MetadataStore

_NO_FUNCTION_POLICY = "The resource you requested does not exist."
_NO_LAYER_POLICY = "No policy is associated with the given resource."
_STALE = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetPolicy API to retrieve the latest Revision Id"
)


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

    def _function_resource(self, name_or_arn: str, qualifier: str | None) -> tuple[str, str, str, str | None]:
        """(resource key, resource ARN, function name, qualifier or None) of the function, version or alias a
        request names; raises ResourceNotFound as GetFunction would when it does not exist."""
        name, qualifier = self._functions.resolve(name_or_arn, qualifier)
        fn = self._functions.latest(name)
        if qualifier is None:
            return f"function:{fn.name}", fn.arn, fn.name, None
        if qualifier != "$LATEST":
            self._functions.get(fn.name, qualifier)  # a version or an alias that exists
        return f"function:{fn.name}:{qualifier}", f"{fn.arn}:{qualifier}", fn.name, qualifier

    def _check_revision(self, name: str, qualifier: str | None, revision: str | None) -> None:
        """A request's RevisionId names the function's (version's, alias's) revision, which is also its
        policy's: AWS's policy is part of what it is attached to."""
        if revision is not None and revision != self._functions.revision(name, qualifier):
            raise PreconditionFailed(_STALE)

    async def add_function(self, name_or_arn: str, params: Mapping[str, Any]) -> str:
        """AddPermission: the new statement, as the JSON string AWS returns. The function (version, alias)
        gets a new RevisionId, which GetPolicy reports as the policy's."""
        resource, arn, name, qualifier = self._function_resource(name_or_arn, params.get("Qualifier"))
        statement = policies.function_statement(params, arn)
        async with self._lock:
            self._check_revision(name, qualifier, params.get("RevisionId"))
            policy = policies.add(self._policies.get(resource), statement, None)
            await self._save(resource, policy)
            await self._functions.new_revision(name, qualifier)
        return policies.statement_json(statement)

    def function_policy(self, name_or_arn: str, qualifier: str | None) -> Policy:
        """GetPolicy: the policy, its revision being the RevisionId of what it is attached to."""
        resource, _arn, name, qualifier = self._function_resource(name_or_arn, qualifier)
        policy = self._policies.get(resource)
        if policy is None:
            raise ResourceNotFound(_NO_FUNCTION_POLICY)
        return dataclasses.replace(policy, revision_id=self._functions.revision(name, qualifier))

    async def remove_function(self, name_or_arn: str, sid: str, qualifier: str | None, revision: str | None) -> None:
        """RemovePermission; like AddPermission, a new RevisionId for what the policy is attached to."""
        resource, _arn, name, qualifier = self._function_resource(name_or_arn, qualifier)
        async with self._lock:
            current = self._policies.get(resource)
            if current is not None:
                self._check_revision(name, qualifier, revision)
            policy = policies.remove(current, sid, None)
            await self._save(resource, policy)
            await self._functions.new_revision(name, qualifier)

    def policy(self, name: str, qualifier: str | None) -> Policy | None:
        """The policy of a function (``qualifier`` None) or of one version or alias of it, as evaluated when
        it is invoked (a function URL's access); None when it has none."""
        return self._policies.get(f"function:{name}:{qualifier}" if qualifier else f"function:{name}")

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
