"""Code signing configurations: create, read, update, delete and tag them, and check deployments against them.

A code signing configuration names the AWS Signer signing profiles whose signatures a function's code must
carry, and what a deployment that fails the checks gets (``UntrustedArtifactOnDeployment``): ``Warn`` lets
it through with a warning, ``Enforce`` refuses it (CodeVerificationFailedException). Functions are given one
by CreateFunction's ``CodeSigningConfigArn`` or PutFunctionCodeSigningConfig (the attachment lives on the
function's record, see ``selfless.functions``); it applies to the deployments after that, as on AWS.

What is and is not verified: selfless has no AWS Signer, so it has no signing profiles to check a signature
against, and it never reads one. Every package deployed to a function with a configuration (its code, and
the layers it is given) therefore counts as not signed by an allowed profile: the "mismatch" check of AWS's
documentation, which AWS also fails for a package that carries no signature. Under ``Enforce`` the
deployment is refused as AWS refuses an unsigned package; under ``Warn`` it is accepted and the server logs
a warning (AWS records a metric and a CloudTrail entry). A package AWS Signer did sign is refused under
``Enforce`` too, because selfless cannot tell it apart from an unsigned one; answers never carry
``SigningProfileVersionArn`` or ``SigningJobArn``, since nothing was verified. The configuration itself
(profiles, policy, description, tags) is stored and reported exactly as given.

The registry is the in-memory view of the metadata store; every change is durable before it is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from selfless.config import Settings
from selfless.errors import CodeSigningConfigNotFound, CodeVerificationFailed, ResourceConflict, ResourceNotFound
from selfless.functions import check_tags
from selfless.ids import now_lastmodified
from selfless.models import CodeSigningConfig
from selfless.store.base import MetadataStore

log = logging.getLogger(__name__)

DEFAULT_POLICY = "Warn"
# A configuration's ARN as the model's CodeSigningConfigArn pattern has it (the id: csc- and 17 characters).
_ARN_RE = re.compile(
    r"^arn:(?:aws[a-zA-Z-]*)?:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):code-signing-config:"
    r"(?P<id>csc-[a-z0-9]{17})$"
)


def is_arn(value: str) -> bool:
    """Whether ``value`` names a code signing configuration (rather than, say, a function)."""
    return _ARN_RE.match(value) is not None


def config_doc(config: CodeSigningConfig) -> dict[str, Any]:
    """The CodeSigningConfig shape of the service model."""
    return {
        "CodeSigningConfigId": config.id,
        "CodeSigningConfigArn": config.arn,
        "Description": config.description,
        "AllowedPublishers": {"SigningProfileVersionArns": list(config.allowed_profiles)},
        "CodeSigningPolicies": {"UntrustedArtifactOnDeployment": config.policy},
        "LastModified": config.last_modified,
    }


class CodeSigning:
    def __init__(self, settings: Settings, store: MetadataStore) -> None:
        self._settings = settings
        self._store = store
        self._configs: dict[str, CodeSigningConfig] = {}  # by ARN, in creation order
        # Held while a configuration is deleted and while a function's attachment to one is written, so that
        # no function ever names a configuration that is gone (see ``attaching``).
        self._lock = asyncio.Lock()
        # The ARNs of the functions a configuration is attached to; set by the composition root (the function
        # registry knows them).
        self.users_of: Callable[[str], list[str]] = lambda _arn: []

    async def load(self) -> None:
        for config in await self._store.list_code_signing_configs():
            self._configs[config.arn] = config

    # -- configurations -----------------------------------------------------------------------------------

    async def create(self, params: Mapping[str, Any]) -> CodeSigningConfig:
        """A new configuration (its parameters already hold to the model's constraints)."""
        tags = dict(params.get("Tags") or {})
        check_tags(tags)  # a function's tag rules: at most 50, none under the reserved aws: prefix
        s = self._settings
        while True:
            config_id = f"csc-{secrets.token_hex(9)[:17]}"
            arn = f"arn:aws:lambda:{s.region}:{s.account_id}:code-signing-config:{config_id}"
            if arn not in self._configs:
                break
        config = CodeSigningConfig(
            id=config_id,
            arn=arn,
            allowed_profiles=tuple(params["AllowedPublishers"]["SigningProfileVersionArns"]),
            policy=(params.get("CodeSigningPolicies") or {}).get("UntrustedArtifactOnDeployment") or DEFAULT_POLICY,
            description=params.get("Description") or "",
            last_modified=now_lastmodified(),
            tags=tags,
        )
        await self._store.put_code_signing_config(config)
        self._configs[arn] = config
        return config

    def get(self, arn: str) -> CodeSigningConfig:
        """The configuration; ResourceNotFoundException as AWS words it when there is none (another account's
        or region's ARN names none here)."""
        config = self._configs.get(arn)
        if config is None:
            raise ResourceNotFound(f"The Lambda code signing configuration {arn} can not be found.")
        return config

    def for_function(self, arn: str) -> CodeSigningConfig:
        """The configuration a function is to be given; CodeSigningConfigNotFoundException when there is none."""
        config = self._configs.get(arn)
        if config is None:
            raise CodeSigningConfigNotFound(
                "The code signing configuration cannot be found. Check that the provided configuration is not "
                f"deleted: {arn}."
            )
        return config

    async def update(self, arn: str, params: Mapping[str, Any]) -> CodeSigningConfig:
        """Only what the call names changes; a policy left out of CodeSigningPolicies stays as it was."""
        async with self._lock:
            config = self.get(arn)
            changes: dict[str, Any] = {"last_modified": now_lastmodified()}
            if "AllowedPublishers" in params:
                changes["allowed_profiles"] = tuple(params["AllowedPublishers"]["SigningProfileVersionArns"])
            policy = (params.get("CodeSigningPolicies") or {}).get("UntrustedArtifactOnDeployment")
            if policy is not None:
                changes["policy"] = policy
            if "Description" in params:
                changes["description"] = params["Description"] or ""
            config = config.replace(**changes)
            await self._store.put_code_signing_config(config)
            self._configs[arn] = config
        return config

    async def delete(self, arn: str) -> None:
        """Only a configuration no function uses can go, as on AWS (ResourceConflictException otherwise)."""
        async with self._lock:
            config = self.get(arn)
            users = self.users_of(arn)
            if users:
                # AWS's wording for this refusal could not be confirmed; this names what is in the way.
                raise ResourceConflict(
                    f"The code signing configuration {arn} cannot be deleted because it is used by the following "
                    f"functions: [{', '.join(users)}]"
                )
            await self._store.delete_code_signing_config(config.id)
            del self._configs[arn]

    def all(self) -> list[CodeSigningConfig]:
        """Every configuration, oldest first (ListCodeSigningConfigs' order)."""
        return list(self._configs.values())

    @contextlib.asynccontextmanager
    async def attaching(self, arn: str | None) -> AsyncIterator[None]:
        """Hold this while writing a function record that names ``arn``: the configuration exists
        (CodeSigningConfigNotFoundException otherwise) and cannot be deleted until the write is done. Taken
        after the function's own lock (never the other way round). ``None`` (no configuration) holds nothing."""
        if arn is None:
            yield
            return
        async with self._lock:
            self.for_function(arn)
            yield

    # -- deployments --------------------------------------------------------------------------------------

    def check_deployment(self, arn: str | None, function_arn: str) -> None:
        """A package (code or layers) is being deployed to a function with configuration ``arn`` (None: none).
        selfless cannot verify AWS Signer signatures (see the module docstring), so the package counts as not
        signed by an allowed profile: Enforce refuses it, Warn lets it through with a warning."""
        if arn is None:
            return
        config = self._configs.get(arn)
        if config is None:  # cannot happen: a configuration in use is never deleted
            return
        if config.policy == "Enforce":
            # AWS names the function by its ARN here in most reports seen (by its name in some).
            raise CodeVerificationFailed(
                "Lambda cannot deploy the function. The function or layer might be signed using a signature that "
                f"the client is not configured to accept. Check the provided signature for {function_arn}."
            )
        log.warning(
            "code signing (%s, Warn): %s deployed a package whose signature was not verified; selfless has no "
            "AWS Signer signing profiles to check signatures against",
            config.id,
            function_arn,
        )

    # -- tags ---------------------------------------------------------------------------------------------

    async def tag(self, arn: str, tags: Mapping[str, str]) -> None:
        async with self._lock:
            config = self.get(arn)
            merged = {**config.tags, **tags}
            check_tags(merged)
            config = config.replace(tags=merged)
            await self._store.put_code_signing_config(config)
            self._configs[arn] = config

    async def untag(self, arn: str, keys: list[str]) -> None:
        async with self._lock:
            config = self.get(arn)
            gone = set(keys)
            config = config.replace(tags={k: v for k, v in config.tags.items() if k not in gone})
            await self._store.put_code_signing_config(config)
            self._configs[arn] = config

    def tags(self, arn: str) -> dict[str, str]:
        return dict(self.get(arn).tags)
