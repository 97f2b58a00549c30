"""The Lambda API (REST-JSON, 2015-03-31): route, parse, validate, call the domain, render.

Handlers translate and never decide: rules live in ``selfless.functions`` and ``selfless.invocation``, and
who may make a call is decided by ``selfless.api.access`` (once the call's parameters are validated, before
its handler runs). Invoke has its own lean parser because it is the hot path; every other operation goes
through the generic model-driven parser and validator. Whatever escapes a handler becomes an AWS-shaped error
here (``selfless.api.errors.unexpected`` for what no layer foresaw, a full disk included).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from selfless import codesigning, policies
from selfless.api import errors as wire_errors
from selfless.api import model as m
from selfless.api.access import LIST_EVENTS, REDRIVE_EVENTS, Access
from selfless.api.auth import Caller, Principal
from selfless.api.wire import alias_doc, being_created, configuration, layer_version_doc, layer_version_item
from selfless.artifacts.local import LocalCodeStore
from selfless.codesigning import CodeSigning
from selfless.config import Settings
from selfless.errors import (
    InvalidParameterValue,
    RequestEntityTooLarge,
    RequestTooLarge,
    ResourceNotFound,
    SelflessError,
    UnsupportedOperation,
    ValidationError,
)
from selfless.events import mappings as esm
from selfless.events.mappings import EventSourceMappings
from selfless.function_urls.configs import FunctionUrls
from selfless.functions import MAX_ZIPPED, FunctionRegistry
from selfless.httpserver import Request, Response
from selfless.invocation.events import AsyncInvoker, EventInvokeConfigs
from selfless.invocation.inflight import Outcome
from selfless.invocation.leases import Leases
from selfless.invocation.provisioned import ProvisionedConcurrency
from selfless.invocation.service import MAX_SYNC_PAYLOAD, InvocationService
from selfless.layers import LayerRegistry
from selfless.models import InvocationType, InvokeRequest, InvokeResult, LayerVersion
from selfless.permissions import Permissions

# The largest request body any Lambda operation takes: a 50 MB zip as base64 inside JSON.
MAX_REQUEST = 70_167_211
_INVOKE_RE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
# selfless's own operations (no AWS equivalent), signed like Lambda's: the asynchronous events of a function.
SELFLESS_PREFIX = "/_selfless/"
_EVENTS_RE = re.compile(r"^/_selfless/functions/([^/]+)/events(/redrive)?$")
_CODE_URL_TTL_S = 600
_INVOCATION_TYPES = {t.value: t for t in InvocationType}

Op = Callable[[dict[str, Any], Request], Awaitable[Response]]
T = TypeVar("T")


def _page(items: list[T], key: Callable[[T], str], params: dict[str, Any]) -> tuple[list[T], str | None]:
    """One page of ``items`` after the one whose ``key`` is the Marker (MaxItems at most, 50 by default),
    and the Marker of the next page (None on the last)."""
    start = 0
    marker = params.get("Marker")
    if marker:
        found = [i for i, item in enumerate(items) if key(item) == marker]
        if not found:
            raise InvalidParameterValue("Invalid marker")
        start = found[0] + 1
    limit = params.get("MaxItems") or 50
    chosen = items[start : start + limit]
    return chosen, (key(chosen[-1]) if chosen and start + limit < len(items) else None)


def _invoke_response(result: InvokeResult) -> Response:
    headers = [("X-Amz-Executed-Version", result.executed_version)]
    if result.function_error is not None:
        headers.append(("X-Amz-Function-Error", result.function_error))
    if result.log_tail is not None:
        headers.append(("X-Amz-Log-Result", result.log_tail))
    headers.append(("x-amzn-RequestId", result.request_id))
    return Response(result.status, result.payload, headers, content_type="application/json")


def _json(doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(doc).encode(), headers or [])


class CodeUrls:
    """Time-limited download links for packages (GetFunction's Code.Location), signed with a server key."""

    PREFIX = "/_selfless/code/"

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _sig(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{key}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, base: str, key: str) -> str:
        expires = int(time.time()) + _CODE_URL_TTL_S
        return f"{base}{self.PREFIX}{key}.zip?Expires={expires}&Signature={self._sig(key, expires)}"

    def check(self, path: str, query: str) -> str | None:
        """The package key a valid, unexpired link names; None otherwise."""
        name = path[len(self.PREFIX) :]
        if not name.endswith(".zip") or not re.fullmatch(r"[0-9a-f]{64}", name[:-4]):
            return None
        key = name[:-4]
        qs = urllib.parse.parse_qs(query)
        try:
            expires = int(qs["Expires"][0])
            sig = qs["Signature"][0]
        except (KeyError, ValueError, IndexError):
            return None
        if expires < time.time() or not hmac.compare_digest(sig, self._sig(key, expires)):
            return None
        return key


class LambdaApi:
    def __init__(
        self,
        settings: Settings,
        registry: FunctionRegistry,
        invocations: InvocationService,
        code: LocalCodeStore,
        code_urls: CodeUrls,
        leases: Leases,
        provisioned: ProvisionedConcurrency,
        layers: LayerRegistry,
        permissions: Permissions,
        event_configs: EventInvokeConfigs,
        events: AsyncInvoker,
        access: Access,
        code_signing: CodeSigning,
    ) -> None:
        self._access = access
        self._code_signing = code_signing
        self._event_configs = event_configs
        self._events = events
        # The chain of the invocation the calling environment runs now: set by the composition root, which
        # knows the environments (recursive loop detection).
        self.lineage_of: Callable[[Principal], Mapping[str, int]] = lambda _principal: {}
        self._permissions = permissions
        # Event source mappings: set by the composition root, which builds them after the queue service.
        self.mappings: EventSourceMappings | None = None
        # Function URL configurations: set by the composition root, which also serves them (front door).
        self.function_urls: FunctionUrls | None = None
        self._provisioned = provisioned
        self._layers = layers
        self._settings = settings
        self._registry = registry
        self._invocations = invocations
        self._code = code
        self._code_urls = code_urls
        self._leases = leases
        self._model = m.service_model("lambda")
        self._invoke_op = self._model.operation_model("Invoke")
        self._router = m.Router(self._model)
        self._ops: dict[str, Op] = {
            "CreateFunction": self._create_function,
            "GetFunction": self._get_function,
            "GetFunctionConfiguration": self._get_function_configuration,
            "UpdateFunctionCode": self._update_function_code,
            "UpdateFunctionConfiguration": self._update_function_configuration,
            "DeleteFunction": self._delete_function,
            "ListFunctions": self._list_functions,
            "GetAccountSettings": self._get_account_settings,
            "TagResource": self._tag_resource,
            "UntagResource": self._untag_resource,
            "ListTags": self._list_tags,
            "PutFunctionConcurrency": self._put_function_concurrency,
            "GetFunctionConcurrency": self._get_function_concurrency,
            "DeleteFunctionConcurrency": self._delete_function_concurrency,
            "PublishVersion": self._publish_version,
            "CreateAlias": self._create_alias,
            "GetAlias": self._get_alias,
            "UpdateAlias": self._update_alias,
            "DeleteAlias": self._delete_alias,
            "ListAliases": self._list_aliases,
            "ListVersionsByFunction": self._list_versions_by_function,
            "PutProvisionedConcurrencyConfig": self._put_provisioned,
            "GetProvisionedConcurrencyConfig": self._get_provisioned,
            "DeleteProvisionedConcurrencyConfig": self._delete_provisioned,
            "ListProvisionedConcurrencyConfigs": self._list_provisioned,
            "PublishLayerVersion": self._publish_layer_version,
            "GetLayerVersion": self._get_layer_version,
            "GetLayerVersionByArn": self._get_layer_version_by_arn,
            "ListLayers": self._list_layers,
            "ListLayerVersions": self._list_layer_versions,
            "DeleteLayerVersion": self._delete_layer_version,
            "AddPermission": self._add_permission,
            "GetPolicy": self._get_policy,
            "RemovePermission": self._remove_permission,
            "AddLayerVersionPermission": self._add_layer_version_permission,
            "GetLayerVersionPolicy": self._get_layer_version_policy,
            "RemoveLayerVersionPermission": self._remove_layer_version_permission,
            "InvokeAsync": self._invoke_async,
            "GetFunctionRecursionConfig": self._get_recursion_config,
            "PutFunctionRecursionConfig": self._put_recursion_config,
            "PutFunctionEventInvokeConfig": self._put_event_invoke_config,
            "UpdateFunctionEventInvokeConfig": self._update_event_invoke_config,
            "GetFunctionEventInvokeConfig": self._get_event_invoke_config,
            "DeleteFunctionEventInvokeConfig": self._delete_event_invoke_config,
            "ListFunctionEventInvokeConfigs": self._list_event_invoke_configs,
            "CreateCodeSigningConfig": self._create_code_signing_config,
            "GetCodeSigningConfig": self._get_code_signing_config,
            "UpdateCodeSigningConfig": self._update_code_signing_config,
            "DeleteCodeSigningConfig": self._delete_code_signing_config,
            "ListCodeSigningConfigs": self._list_code_signing_configs,
            "PutFunctionCodeSigningConfig": self._put_function_code_signing_config,
            "GetFunctionCodeSigningConfig": self._get_function_code_signing_config,
            "DeleteFunctionCodeSigningConfig": self._delete_function_code_signing_config,
            "ListFunctionsByCodeSigningConfig": self._list_functions_by_code_signing_config,
            "CreateEventSourceMapping": self._create_event_source_mapping,
            "GetEventSourceMapping": self._get_event_source_mapping,
            "UpdateEventSourceMapping": self._update_event_source_mapping,
            "DeleteEventSourceMapping": self._delete_event_source_mapping,
            "ListEventSourceMappings": self._list_event_source_mappings,
            "CreateFunctionUrlConfig": self._create_function_url_config,
            "GetFunctionUrlConfig": self._get_function_url_config,
            "UpdateFunctionUrlConfig": self._update_function_url_config,
            "DeleteFunctionUrlConfig": self._delete_function_url_config,
            "ListFunctionUrlConfigs": self._list_function_url_configs,
        }

    def handle(
        self, request: Request, caller: Caller, request_id: str
    ) -> Response | asyncio.Future[Response] | Awaitable[Response]:
        """The answer to one signed Lambda request: at once (an error), a Future (a RequestResponse Invoke:
        no task and no chain of coroutines on the warm path) or a coroutine (everything else)."""
        if request.method == "POST":
            hit = _INVOKE_RE.match(request.path)
            if hit is not None:
                try:
                    return self._invoke(hit.group(1), request, caller, request_id)
                except SelflessError as exc:
                    return wire_errors.rest_json(exc, request_id)
                except Exception as exc:  # a full disk, a bug: AWS's 500, never the HTTP layer's bare one
                    return wire_errors.rest_json(wire_errors.unexpected(exc), request_id)
        return self._handle_other(request, caller, request_id)

    async def _handle_other(self, request: Request, caller: Caller, request_id: str) -> Response:
        try:
            response = await self._handle(request, caller, request_id)
        except SelflessError as exc:
            return wire_errors.rest_json(exc, request_id)
        except Exception as exc:  # a full disk, a bug: AWS's 500, never the HTTP layer's bare one
            return wire_errors.rest_json(wire_errors.unexpected(exc), request_id)
        response.headers.append(("x-amzn-RequestId", request_id))
        return response

    async def _handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        if request.path.startswith(SELFLESS_PREFIX):
            return await self._selfless(request, caller)
        found = self._router.match(request.method, request.path, request.query)
        if found is None:
            raise UnsupportedOperation(f"No Lambda operation at {request.method} {request.path}")
        route, labels = found
        op = self._model.operation_model(route.operation)
        params = m.coerce_params(op, m.parse(op, labels, request.query, request.headers, request.body))
        m.validate(op, params)
        self._access.lambda_call(caller, route.operation, params)
        handler = self._ops.get(route.operation)
        if handler is None:
            raise UnsupportedOperation(f"{route.operation} is not supported by selfless yet")
        response = await handler(params, request)
        if response.status == 200 and route.status != 200:
            response.status = route.status
        return response

    def too_large(self, request: Request) -> Response:
        """A request body past what any operation takes (so past 6 MB for Invoke, 70 MB for the rest)."""
        exc: SelflessError
        if _INVOKE_RE.match(request.path):
            exc = RequestTooLarge(
                f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"
            )
        else:
            exc = RequestEntityTooLarge(
                f"Request must be smaller than {MAX_REQUEST} bytes for the CreateFunction operation"
            )
        return wire_errors.rest_json(exc, "")

    # -- invoke (hot path) ------------------------------------------------------------------------------

    def _invoke(
        self, quoted_name: str, request: Request, caller: Caller, request_id: str
    ) -> asyncio.Future[Response] | Awaitable[Response]:
        """Invoke, parsed and checked here (raising what the caller maps); a RequestResponse call is started
        at once and answered through a callback on its outcome, the other types in a coroutine."""
        self._access.lambda_call(caller, "Invoke")
        lineage = self.lineage_of(caller.principal) if caller.principal.kind == "function" else {}
        function_name = urllib.parse.unquote(quoted_name) if "%" in quoted_name else quoted_name
        h = request.headers
        qualifier = None
        if request.query:
            given = urllib.parse.parse_qs(request.query, keep_blank_values=True).get("Qualifier")
            if given:
                qualifier = given[-1]
                m.validate_member(self._invoke_op, "Qualifier", qualifier)
        itype_raw = h.get("x-amz-invocation-type", "RequestResponse")
        itype = _INVOCATION_TYPES.get(itype_raw)
        if itype is None:
            raise ValidationError(
                f"1 validation error detected: Value '{itype_raw}' at 'invocationType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        log_type = h.get("x-amz-log-type", "None")
        if log_type not in ("None", "Tail"):
            raise ValidationError(
                f"1 validation error detected: Value '{log_type}' at 'logType' failed to satisfy constraint: "
                "Member must satisfy enum value set: [None, Tail]"
            )
        if log_type == "Tail" and itype is not InvocationType.REQUEST_RESPONSE:
            raise InvalidParameterValue("LogType Tail is only supported for RequestResponse invocations.")
        req = InvokeRequest(
            function_name,
            qualifier,
            request.body,
            itype,
            log_type == "Tail",
            h.get("x-amz-client-context"),
            request_id,
            lineage,
            h.get("x-amzn-trace-id"),
        )
        if itype is not InvocationType.REQUEST_RESPONSE:
            return self._invoke_later(req)

        def answered(done: asyncio.Future[Outcome]) -> None:
            if answer.done():
                return  # the client went away (its connection cancelled the answer); the call ran anyway
            try:
                response = _invoke_response(self._invocations.result(started, done.result()))
            except SelflessError as exc:
                response = wire_errors.rest_json(exc, request_id)
            except asyncio.CancelledError:  # only a shutdown cancels a call's start
                response = wire_errors.rest_json(wire_errors.unexpected(RuntimeError("cancelled")), request_id)
            except Exception as exc:  # a bug: AWS's 500, never the HTTP layer's bare one
                response = wire_errors.rest_json(wire_errors.unexpected(exc), request_id)
            answer.set_result(response)

        # ``answered`` runs in the outcome's own callback, after the service's bookkeeping (never before this
        # returns: a Future's callbacks run from the loop).
        started = self._invocations.start(req, answered)
        answer: asyncio.Future[Response] = started.outcome.get_loop().create_future()
        return answer

    async def _invoke_later(self, req: InvokeRequest) -> Response:
        try:
            return _invoke_response(await self._invocations.invoke(req))
        except SelflessError as exc:
            return wire_errors.rest_json(exc, req.request_id)
        except Exception as exc:  # a full disk, a bug: AWS's 500, never the HTTP layer's bare one
            return wire_errors.rest_json(wire_errors.unexpected(exc), req.request_id)

    async def _invoke_async(self, params: dict[str, Any], request: Request) -> Response:
        """The deprecated InvokeAsync: an Event invocation (same queue, same 1 MB limit), answered
        ``{"Status": 202}``."""
        payload = params.get("InvokeArgs") or b""
        await self._invocations.invoke(InvokeRequest(params["FunctionName"], None, payload, InvocationType.EVENT))
        return _json({"Status": 202}, 202)

    # -- functions --------------------------------------------------------------------------------------

    def _base_url(self, request: Request) -> str:
        host = request.headers.get("host") or f"{self._settings.host}:{self._settings.port}"
        return f"http://{host}"

    def _named_arn(self, params: dict[str, Any]) -> str | None:
        """The qualified ARN a read names (Qualifier, or the qualifier in FunctionName), which AWS echoes as
        FunctionArn: an alias's ARN through an alias, ``...:$LATEST`` for $LATEST named explicitly; None
        when no qualifier was named (the record's own ARN is shown)."""
        name, in_name = self._registry.resolve_name(params["FunctionName"])
        qualifier = params.get("Qualifier") or in_name
        return None if qualifier is None else f"{self._registry.arn(name)}:{qualifier}"

    async def _create_function(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.create(params)
        if params.get("Publish"):
            await self._registry.wait_settled()
            version = await self._registry.publish_version(fn.name, {})
            # AWS answers with the new version (Version "1"), still Pending, under the function's unqualified ARN.
            doc = being_created(configuration(version, self._settings.region, function_arn=fn.arn))
            return _json(doc, 201)
        return _json(configuration(fn, self._settings.region), 201)

    async def _get_function(self, params: dict[str, Any], request: Request) -> Response:
        fn = self._registry.get(params["FunctionName"], params.get("Qualifier"))
        doc: dict[str, Any] = {
            "Configuration": configuration(fn, self._settings.region, function_arn=self._named_arn(params)),
            "Code": {
                "RepositoryType": "S3",
                "Location": self._code_urls.url(self._base_url(request), fn.code.key),
            },
        }
        if fn.tags:
            doc["Tags"] = dict(fn.tags)
        if fn.reserved_concurrency is not None:
            doc["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved_concurrency}
        return _json(doc)

    async def _get_function_configuration(self, params: dict[str, Any], request: Request) -> Response:
        fn = self._registry.get(params["FunctionName"], params.get("Qualifier"))
        return _json(configuration(fn, self._settings.region, function_arn=self._named_arn(params)))

    async def _update_function_code(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.update_code(params["FunctionName"], params)
        if params.get("Publish") and not params.get("DryRun"):
            # As CreateFunction's Publish: the new code becomes the next version, which the answer shows.
            await self._registry.wait_settled()
            version = await self._registry.publish_version(fn.name, {})
            # AWS answers with the new version under its own (qualified) ARN, still Pending.
            return _json(being_created(configuration(version, self._settings.region)))
        return _json(configuration(fn, self._settings.region))

    async def _update_function_configuration(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.update_configuration(params["FunctionName"], params)
        return _json(configuration(fn, self._settings.region))

    async def _delete_function(self, params: dict[str, Any], request: Request) -> Response:
        await self._registry.delete(params["FunctionName"], params.get("Qualifier"))
        return Response(204, b"", content_type=None)

    async def _list_functions(self, params: dict[str, Any], request: Request) -> Response:
        fns, marker = self._registry.page(
            params.get("Marker"), params.get("MaxItems"), params.get("FunctionVersion") == "ALL"
        )
        every = params.get("FunctionVersion") == "ALL"
        # Listing every version, AWS qualifies $LATEST's ARN too (each item names one version).
        doc: dict[str, Any] = {
            "Functions": [
                configuration(
                    f,
                    self._settings.region,
                    function_arn=f"{f.arn}:$LATEST" if every and f.version == "$LATEST" else None,
                    listed=True,
                )
                for f in fns
            ]
        }
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    async def _get_account_settings(self, params: dict[str, Any], request: Request) -> Response:
        fns = self._registry.all()
        return _json(
            {
                "AccountLimit": {
                    "TotalCodeSize": 80_530_636_800,
                    "CodeSizeUnzipped": 262_144_000,
                    "CodeSizeZipped": MAX_ZIPPED,
                    "ConcurrentExecutions": self._leases.account_limit,
                    "UnreservedConcurrentExecutions": self._leases.unreserved_limit,
                },
                "AccountUsage": {
                    # Deployment packages of every version and layer archives, as AWS counts them.
                    "TotalCodeSize": self._registry.code_size() + self._layers.code_size(),
                    "FunctionCount": len(fns),
                },
            }
        )

    # -- concurrency ------------------------------------------------------------------------------------

    async def _put_function_concurrency(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.put_concurrency(params["FunctionName"], params["ReservedConcurrentExecutions"])
        return _json({"ReservedConcurrentExecutions": fn.reserved_concurrency})

    async def _get_function_concurrency(self, params: dict[str, Any], request: Request) -> Response:
        fn = self._registry.unqualified(params["FunctionName"])
        if fn.reserved_concurrency is None:
            return _json({})
        return _json({"ReservedConcurrentExecutions": fn.reserved_concurrency})

    async def _delete_function_concurrency(self, params: dict[str, Any], request: Request) -> Response:
        await self._registry.delete_concurrency(params["FunctionName"])
        return Response(204, b"", content_type=None)

    # -- versions and provisioned concurrency -------------------------------------------------------------

    async def _publish_version(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.publish_version(params["FunctionName"], params)
        return _json(configuration(fn, self._settings.region), 201)

    async def _list_versions_by_function(self, params: dict[str, Any], request: Request) -> Response:
        versions = self._registry.versions(params["FunctionName"])
        start = 0
        marker = params.get("Marker")
        if marker:
            found = [i for i, v in enumerate(versions) if v.version == marker]
            if not found:
                raise InvalidParameterValue("Invalid marker")
            start = found[0] + 1
        limit = params.get("MaxItems") or 50
        chosen = versions[start : start + limit]
        doc: dict[str, Any] = {
            "Versions": [
                configuration(
                    v,
                    self._settings.region,
                    function_arn=f"{v.arn}:$LATEST" if v.version == "$LATEST" else None,
                    listed=True,
                )
                for v in chosen
            ]
        }
        if start + limit < len(versions) and chosen:
            doc["NextMarker"] = chosen[-1].version
        return _json(doc)

    async def _create_alias(self, params: dict[str, Any], request: Request) -> Response:
        return _json(alias_doc(await self._registry.create_alias(params["FunctionName"], params)), 201)

    async def _get_alias(self, params: dict[str, Any], request: Request) -> Response:
        return _json(alias_doc(self._registry.alias(params["FunctionName"], params["Name"])))

    async def _update_alias(self, params: dict[str, Any], request: Request) -> Response:
        return _json(alias_doc(await self._registry.update_alias(params["FunctionName"], params)))

    async def _delete_alias(self, params: dict[str, Any], request: Request) -> Response:
        await self._registry.delete_alias(params["FunctionName"], params["Name"])
        return Response(204, b"", content_type=None)

    async def _list_aliases(self, params: dict[str, Any], request: Request) -> Response:
        aliases = self._registry.aliases(params["FunctionName"], params.get("FunctionVersion"))
        start = 0
        marker = params.get("Marker")
        if marker:
            start = next((i for i, a in enumerate(aliases) if a.name > marker), len(aliases))
        limit = params.get("MaxItems") or 50
        chosen = aliases[start : start + limit]
        doc: dict[str, Any] = {"Aliases": [alias_doc(a) for a in chosen]}
        if start + limit < len(aliases) and chosen:
            doc["NextMarker"] = chosen[-1].name
        return _json(doc)

    async def _put_provisioned(self, params: dict[str, Any], request: Request) -> Response:
        doc = await self._provisioned.put(
            params["FunctionName"], params["Qualifier"], params["ProvisionedConcurrentExecutions"]
        )
        return _json(doc, 202)

    async def _get_provisioned(self, params: dict[str, Any], request: Request) -> Response:
        return _json(self._provisioned.get(params["FunctionName"], params["Qualifier"]))

    async def _delete_provisioned(self, params: dict[str, Any], request: Request) -> Response:
        await self._provisioned.delete(params["FunctionName"], params["Qualifier"])
        return Response(204, b"", content_type=None)

    async def _list_provisioned(self, params: dict[str, Any], request: Request) -> Response:
        configs, marker = self._provisioned.page(params["FunctionName"], params.get("Marker"), params.get("MaxItems"))
        doc: dict[str, Any] = {"ProvisionedConcurrencyConfigs": configs}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- layers -----------------------------------------------------------------------------------------

    def _layer_doc(self, request: Request, layer: LayerVersion) -> dict[str, Any]:
        return layer_version_doc(layer, self._code_urls.url(self._base_url(request), layer.code.key))

    async def _publish_layer_version(self, params: dict[str, Any], request: Request) -> Response:
        zip_bytes = await self._registry.package(params["Content"])
        layer = await self._layers.publish(params["LayerName"], params, zip_bytes)
        return _json(self._layer_doc(request, layer), 201)

    async def _get_layer_version(self, params: dict[str, Any], request: Request) -> Response:
        return _json(self._layer_doc(request, self._layers.get(params["LayerName"], params["VersionNumber"])))

    async def _get_layer_version_by_arn(self, params: dict[str, Any], request: Request) -> Response:
        return _json(self._layer_doc(request, self._layers.get_by_arn(params["Arn"])))

    async def _delete_layer_version(self, params: dict[str, Any], request: Request) -> Response:
        await self._layers.delete(params["LayerName"], params["VersionNumber"])
        self._permissions.forget_layer(self._layers.name_of(params["LayerName"]), params["VersionNumber"])
        return Response(204, b"", content_type=None)

    async def _list_layers(self, params: dict[str, Any], request: Request) -> Response:
        found = self._layers.latest_matching(params.get("CompatibleRuntime"), params.get("CompatibleArchitecture"))
        chosen, marker = _page(found, lambda layer: layer.name, params)
        doc: dict[str, Any] = {
            "Layers": [
                {"LayerName": v.name, "LayerArn": v.layer_arn, "LatestMatchingVersion": layer_version_item(v)}
                for v in chosen
            ]
        }
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    async def _list_layer_versions(self, params: dict[str, Any], request: Request) -> Response:
        found = self._layers.versions(
            params["LayerName"], params.get("CompatibleRuntime"), params.get("CompatibleArchitecture")
        )
        chosen, marker = _page(found, lambda layer: str(layer.version), params)
        doc: dict[str, Any] = {"LayerVersions": [layer_version_item(v) for v in chosen]}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- selfless's own: asynchronous events -------------------------------------------------------------

    async def _selfless(self, request: Request, caller: Caller) -> Response:
        """``GET /_selfless/functions/NAME/events``: the function's queued, retrying and failed events;
        ``POST .../events/redrive``: queue its failed events again. Admin credentials only."""
        found = _EVENTS_RE.match(request.path)
        if found is None:
            raise UnsupportedOperation(f"No selfless operation at {request.method} {request.path}")
        given = urllib.parse.unquote(found.group(1))
        self._access.selfless_call(caller, REDRIVE_EVENTS if found.group(2) else LIST_EVENTS, given)
        name = self._registry.latest(given).name
        if found.group(2):
            if request.method != "POST":
                raise UnsupportedOperation("Re-driving events is a POST")
            return _json({"Redriven": await self._events.redrive(name)})
        if request.method != "GET":
            raise UnsupportedOperation("Listing events is a GET")
        events = []
        for e in await self._events.events(name):
            state = "failed" if e.state == "failed" else ("retrying" if e.attempts else "queued")
            doc: dict[str, Any] = {
                "RequestId": e.id,
                "Qualifier": e.qualifier or "$LATEST",
                "State": state,
                "Attempts": e.attempts,
                "AcceptedAt": e.accepted_at,
            }
            if state == "retrying":
                doc["NextAttemptAt"] = e.next_at
            if e.target:
                doc["DeliverTo"] = e.target  # a record or dead-letter message on its way to a queue, topic...
            if e.failure:
                doc["Failure"] = e.failure
            if e.last_error:
                doc["LastError"] = e.last_error
            events.append(doc)
        return _json({"Events": events})

    # -- recursive loop detection -----------------------------------------------------------------------

    async def _get_recursion_config(self, params: dict[str, Any], request: Request) -> Response:
        return _json({"RecursiveLoop": self._registry.latest(params["FunctionName"]).recursive_loop})

    async def _put_recursion_config(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.put_recursion(params["FunctionName"], params["RecursiveLoop"])
        return _json({"RecursiveLoop": fn.recursive_loop})

    # -- asynchronous invocation configuration -----------------------------------------------------------

    async def _put_event_invoke_config(self, params: dict[str, Any], request: Request) -> Response:
        doc = await self._event_configs.put(params["FunctionName"], params.get("Qualifier"), params, merge=False)
        return _json(doc)

    async def _update_event_invoke_config(self, params: dict[str, Any], request: Request) -> Response:
        doc = await self._event_configs.put(params["FunctionName"], params.get("Qualifier"), params, merge=True)
        return _json(doc)

    async def _get_event_invoke_config(self, params: dict[str, Any], request: Request) -> Response:
        return _json(self._event_configs.get(params["FunctionName"], params.get("Qualifier")))

    async def _delete_event_invoke_config(self, params: dict[str, Any], request: Request) -> Response:
        await self._event_configs.delete(params["FunctionName"], params.get("Qualifier"))
        return Response(204, b"", content_type=None)

    async def _list_event_invoke_configs(self, params: dict[str, Any], request: Request) -> Response:
        found = self._event_configs.list(params["FunctionName"])
        chosen, marker = _page(found, lambda doc: str(doc["FunctionArn"]), params)
        doc: dict[str, Any] = {"FunctionEventInvokeConfigs": chosen}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- resource policies --------------------------------------------------------------------------------

    async def _add_permission(self, params: dict[str, Any], request: Request) -> Response:
        statement = await self._permissions.add_function(params["FunctionName"], params)
        return _json({"Statement": statement}, 201)

    async def _get_policy(self, params: dict[str, Any], request: Request) -> Response:
        policy = self._permissions.function_policy(params["FunctionName"], params.get("Qualifier"))
        return _json({"Policy": policies.document(policy), "RevisionId": policy.revision_id})

    async def _remove_permission(self, params: dict[str, Any], request: Request) -> Response:
        await self._permissions.remove_function(
            params["FunctionName"], params["StatementId"], params.get("Qualifier"), params.get("RevisionId")
        )
        return Response(204, b"", content_type=None)

    async def _add_layer_version_permission(self, params: dict[str, Any], request: Request) -> Response:
        statement, revision = await self._permissions.add_layer(params["LayerName"], params["VersionNumber"], params)
        return _json({"Statement": statement, "RevisionId": revision}, 201)

    async def _get_layer_version_policy(self, params: dict[str, Any], request: Request) -> Response:
        policy = self._permissions.layer_policy(params["LayerName"], params["VersionNumber"])
        return _json({"Policy": policies.document(policy), "RevisionId": policy.revision_id})

    async def _remove_layer_version_permission(self, params: dict[str, Any], request: Request) -> Response:
        await self._permissions.remove_layer(
            params["LayerName"], params["VersionNumber"], params["StatementId"], params.get("RevisionId")
        )
        return Response(204, b"", content_type=None)

    # -- tags -------------------------------------------------------------------------------------------

    async def _tag_resource(self, params: dict[str, Any], request: Request) -> Response:
        if esm.is_arn(params["Resource"]):
            await self._mappings().tag(params["Resource"], params["Tags"])
            return Response(204, b"", content_type=None)
        if codesigning.is_arn(params["Resource"]):
            await self._code_signing.tag(params["Resource"], params["Tags"])
            return Response(204, b"", content_type=None)
        await self._registry.tag(params["Resource"], params["Tags"])
        return Response(204, b"", content_type=None)

    async def _untag_resource(self, params: dict[str, Any], request: Request) -> Response:
        if esm.is_arn(params["Resource"]):
            await self._mappings().untag(params["Resource"], list(params["TagKeys"]))
            return Response(204, b"", content_type=None)
        if codesigning.is_arn(params["Resource"]):
            await self._code_signing.untag(params["Resource"], list(params["TagKeys"]))
            return Response(204, b"", content_type=None)
        await self._registry.untag(params["Resource"], list(params["TagKeys"]))
        return Response(204, b"", content_type=None)

    async def _list_tags(self, params: dict[str, Any], request: Request) -> Response:
        if esm.is_arn(params["Resource"]):
            return _json({"Tags": self._mappings().tags(params["Resource"])})
        if codesigning.is_arn(params["Resource"]):
            return _json({"Tags": self._code_signing.tags(params["Resource"])})
        return _json({"Tags": self._registry.tags(params["Resource"])})

    # -- code signing -----------------------------------------------------------------------------------

    async def _create_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        config = await self._code_signing.create(params)
        return _json({"CodeSigningConfig": codesigning.config_doc(config)}, 201)

    async def _get_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        config = self._code_signing.get(params["CodeSigningConfigArn"])
        return _json({"CodeSigningConfig": codesigning.config_doc(config)})

    async def _update_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        config = await self._code_signing.update(params["CodeSigningConfigArn"], params)
        return _json({"CodeSigningConfig": codesigning.config_doc(config)})

    async def _delete_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        await self._code_signing.delete(params["CodeSigningConfigArn"])
        return Response(204, b"", content_type=None)

    async def _list_code_signing_configs(self, params: dict[str, Any], request: Request) -> Response:
        chosen, marker = _page(self._code_signing.all(), lambda config: config.id, params)
        doc: dict[str, Any] = {"CodeSigningConfigs": [codesigning.config_doc(c) for c in chosen]}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    async def _put_function_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        fn = await self._registry.put_code_signing(params["FunctionName"], params["CodeSigningConfigArn"])
        return _json({"CodeSigningConfigArn": fn.code_signing_config_arn, "FunctionName": fn.name})

    async def _get_function_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        fn = self._registry.latest(params["FunctionName"])
        # Both members are required by the model: a function without a configuration answers an empty ARN
        # (what AWS answers then could not be confirmed; this keeps the shape whole for SDKs and Terraform).
        return _json({"CodeSigningConfigArn": fn.code_signing_config_arn or "", "FunctionName": fn.name})

    async def _delete_function_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        await self._registry.put_code_signing(params["FunctionName"], None)
        return Response(204, b"", content_type=None)

    async def _list_functions_by_code_signing_config(self, params: dict[str, Any], request: Request) -> Response:
        arn = params["CodeSigningConfigArn"]
        self._code_signing.get(arn)
        chosen, marker = _page(self._registry.code_signing_users(arn), lambda fn_arn: fn_arn, params)
        doc: dict[str, Any] = {"FunctionArns": chosen}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- event source mappings ------------------------------------------------------------------------------

    def _mappings(self) -> EventSourceMappings:
        if self.mappings is None:
            raise UnsupportedOperation("Event source mappings are not available on this server")
        return self.mappings

    async def _create_event_source_mapping(self, params: dict[str, Any], request: Request) -> Response:
        return _json(await self._mappings().create(params), 202)

    async def _get_event_source_mapping(self, params: dict[str, Any], request: Request) -> Response:
        return _json(self._mappings().get(params["UUID"]))

    async def _update_event_source_mapping(self, params: dict[str, Any], request: Request) -> Response:
        return _json(await self._mappings().update(params["UUID"], params), 202)

    async def _delete_event_source_mapping(self, params: dict[str, Any], request: Request) -> Response:
        return _json(await self._mappings().delete(params["UUID"]), 202)

    async def _list_event_source_mappings(self, params: dict[str, Any], request: Request) -> Response:
        found = self._mappings().matching(params.get("EventSourceArn"), params.get("FunctionName"))
        paging = {**params, "MaxItems": params.get("MaxItems") or 100}
        chosen, marker = _page(found, lambda doc: str(doc["UUID"]), paging)
        doc: dict[str, Any] = {"EventSourceMappings": chosen}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- function URLs ----------------------------------------------------------------------------------------

    def _urls(self) -> FunctionUrls:
        if self.function_urls is None:
            raise UnsupportedOperation("Function URLs are not available on this server")
        return self.function_urls

    async def _create_function_url_config(self, params: dict[str, Any], request: Request) -> Response:
        urls = self._urls()
        config = await urls.create(params["FunctionName"], params.get("Qualifier"), params)
        return _json(urls.shown(config, modified=False), 201)

    async def _get_function_url_config(self, params: dict[str, Any], request: Request) -> Response:
        urls = self._urls()
        return _json(urls.shown(urls.get(params["FunctionName"], params.get("Qualifier"))))

    async def _update_function_url_config(self, params: dict[str, Any], request: Request) -> Response:
        urls = self._urls()
        return _json(urls.shown(await urls.update(params["FunctionName"], params.get("Qualifier"), params)))

    async def _delete_function_url_config(self, params: dict[str, Any], request: Request) -> Response:
        await self._urls().delete(params["FunctionName"], params.get("Qualifier"))
        return Response(204, b"", content_type=None)

    async def _list_function_url_configs(self, params: dict[str, Any], request: Request) -> Response:
        urls = self._urls()
        chosen, marker = _page(urls.list(params["FunctionName"]), lambda c: c.url_id, params)
        doc: dict[str, Any] = {"FunctionUrlConfigs": [urls.shown(c) for c in chosen]}
        if marker is not None:
            doc["NextMarker"] = marker
        return _json(doc)

    # -- code downloads ---------------------------------------------------------------------------------

    def download(self, request: Request) -> Response:
        key = self._code_urls.check(request.path, request.query)
        if key is None:
            return Response(
                403,
                b"<Error><Code>AccessDenied</Code><Message>Request has expired or the signature does not "
                b"match</Message></Error>",
                content_type="application/xml",
            )
        try:
            data = self._code.blob(key).read_bytes()
        except FileNotFoundError:
            return wire_errors.rest_json(ResourceNotFound("The package no longer exists"), "")
        except OSError as exc:
            return wire_errors.rest_json(wire_errors.unexpected(exc), "")
        return Response(200, data, content_type="application/zip")
