"""The front door of the one public port: health, signed code downloads, then SigV4 and the service router.

Requests are routed by the service named in their SigV4 credential scope, the way AWS SDKs sign them.
Nothing past ``/health`` and a signed download link is reachable without a valid signature, with one exception
that carries its signature in its body: S3's browser-based upload (an unsigned ``POST /bucket`` of
``multipart/form-data``), whose form holds a policy signed with an access key; the front door hands it, body
streaming, to the object store with the verifier that checks that signature; and function URLs (by Host
``<url-id>.lambda-url.<region>.localhost``, or by path ``/lambda-url/<url-id>/``), which are public or
signed as their configuration says (``selfless.function_urls.serving``). A request whose
signature fails is answered in its service's protocol (JSON 1.1 for CloudWatch Logs and EventBridge, JSON 1.0 for SQS,
REST-JSON otherwise),
so that the SDK raises the right exception.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Protocol

from selfless import ids
from selfless.api import errors as wire_errors
from selfless.api import hooks_api
from selfless.api.auth import Caller, SigV4Verifier
from selfless.api.lambda_api import CodeUrls, LambdaApi
from selfless.api.logs_api import LogsApi
from selfless.api.payload import Payload, open_payload
from selfless.errors import AuthError, UnsupportedOperation
from selfless.function_urls.serving import is_function_url, too_large_for_url, url_form
from selfless.httpserver import Request, Response
from selfless.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from selfless.observability.metrics import Metrics

Answer = Response | asyncio.Future[Response] | Awaitable[Response]


class QueueApi(Protocol):
    """What the front door needs of the SQS service (``selfless.services.sqs.api.SqsApi``)."""

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response: ...

    def refused(self, exc: AuthError, request: Request, request_id: str) -> Response:
        """SQS's error for a request whose signature failed, in the protocol the request spoke."""
        ...


class SchedulerApi(Protocol):
    """What the front door needs of the scheduler (``selfless.services.scheduler.api.SchedulerApi``) and of
    EventBridge (``selfless.services.eventbridge.api.EventsApi``)."""

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response: ...


class TopicApi(Protocol):
    """What the front door needs of the SNS service (``selfless.services.sns.api.SnsApi``)."""

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response: ...

    def refused(self, exc: AuthError, request: Request, request_id: str) -> Response: ...

    def is_confirmation_link(self, request: Request) -> bool: ...

    async def confirm_link(self, request: Request, request_id: str) -> Response:
        """An endpoint following its SubscribeURL: unsigned, authenticated by the token it carries."""
        ...


class FunctionUrlApi(Protocol):
    """What the front door needs of function URLs (``selfless.function_urls.serving.FunctionUrlServer``)."""

    async def serve(self, request: Request, verifier: SigV4Verifier) -> Response: ...


class ObjectStoreApi(Protocol):
    """What the front door needs of the S3 service (``selfless.services.s3.api.S3Api``)."""

    def bucket_from_host(self, host: str) -> str | None: ...

    async def handle(self, request: Request, caller: Caller, request_id: str, payload: Payload) -> Response: ...

    def error(self, exc: Exception, request: Request, request_id: str) -> Response: ...

    async def post_object(
        self, request: Request, request_id: str, body: AsyncIterable[bytes], signers: SigV4Verifier
    ) -> Response: ...


# The service part of a credential scope (``Credential=AKID/20260101/us-east-1/logs/aws4_request``).
_SCOPED_SERVICE = re.compile(r"Credential=[^/,&\s]*/[^/,&\s]*/[^/,&\s]*/([^/,&\s]*)")


class FrontDoor:
    def __init__(
        self,
        verifier: SigV4Verifier,
        lambda_api: LambdaApi,
        logs_api: LogsApi,
        metrics: Metrics,
        health: dict[str, str],
        hooks: hooks_api.HooksApi | None = None,
        s3: ObjectStoreApi | None = None,
        sqs: QueueApi | None = None,
        scheduler: SchedulerApi | None = None,
        events: SchedulerApi | None = None,
        sns: TopicApi | None = None,
        function_urls: FunctionUrlApi | None = None,
    ) -> None:
        self._function_urls = function_urls
        self._sns = sns
        self._scheduler = scheduler
        self._events = events
        self._sqs = sqs
        self._hooks = hooks
        self._s3 = s3
        self._verifier = verifier
        self._metrics = metrics
        self._lambda = lambda_api
        self._logs = logs_api
        self._health = health
        self.ready = False

    def handle_inside(self, request: Request) -> Answer:
        """A request from inside an execution environment (the API served in its network namespace): the
        signed API only. /health and /metrics are for operators on the host."""
        if request.method == "GET" and request.path in ("/health", "/metrics"):
            return self._signed(request)
        return self.handle(request)

    def handle(self, request: Request) -> Answer:
        """The answer to one request, as the HTTP server takes it: a Response, a Future of one (Invoke) or
        a coroutine (the rest)."""
        path = request.path
        if request.stream is not None:
            return self._object_store(request)
        if self._function_urls is not None and is_function_url(request.headers.get("host"), path):
            return self._function_urls.serve(request, self._verifier)  # public, or signed as configured
        if request.method == "GET":
            if path == "/health":
                if not self.ready:
                    return Response(503, b'{"status":"starting"}')
                return Response(200, json.dumps({"status": "ok", **self._health}).encode())
            if path == "/metrics":
                return self._metrics_page()
            if path.startswith(CodeUrls.PREFIX):
                return self._lambda.download(request)
        if self._sns is not None and self._sns.is_confirmation_link(request):
            return self._sns.confirm_link(request, ids.request_id())  # authenticated by its token
        if self._hooks is not None and path.startswith(hooks_api.INTAKE_PREFIX):
            return self._hooks.intake(request)  # authenticated by the trigger's token, not SigV4
        return self._signed(request)

    async def _metrics_page(self) -> Response:
        # In a thread: with thousands of functions' series, rendering takes tens of milliseconds.
        self._metrics.flush()  # the invoke path's tally, here on the loop's thread
        body = await asyncio.to_thread(self._metrics.render)
        return Response(200, body, content_type=METRICS_CONTENT_TYPE)

    def _signed(self, request: Request) -> Answer:
        path = request.path
        request_id = ids.request_id()
        try:
            caller = self._verifier.verify(request.method, path, request.query, request.headers, request.body)
        except AuthError as exc:
            scoped = _scoped_service(request)
            if scoped in ("logs", "events"):
                return wire_errors.json_1_1(exc, request_id)
            if scoped == "sqs" and self._sqs is not None:
                return self._sqs.refused(exc, request, request_id)
            if scoped == "sns" and self._sns is not None:
                return self._sns.refused(exc, request, request_id)
            return wire_errors.rest_json(exc, request_id)
        if caller.service == "lambda":
            if self._hooks is not None and path.startswith(hooks_api.ADMIN_PREFIX):
                return self._hooks.manage(request, caller, request_id)
            return self._lambda.handle(request, caller, request_id)
        if caller.service == "logs":
            return self._logs.handle(request, caller, request_id)
        if caller.service == "sqs" and self._sqs is not None:
            return self._sqs.handle(request, caller, request_id)
        if caller.service == "sns" and self._sns is not None:
            return self._sns.handle(request, caller, request_id)
        if caller.service == "scheduler" and self._scheduler is not None:
            return self._scheduler.handle(request, caller, request_id)
        if caller.service == "events" and self._events is not None:
            return self._events.handle(request, caller, request_id)
        unsupported = UnsupportedOperation(f"The {caller.service} service is not offered by selfless yet")
        return wire_errors.rest_json(unsupported, request_id)

    def streams(self, method: str, url: str, headers: dict[str, str]) -> bool:
        """For the HTTP server, from a request's head: does it go to the object store (its body then
        streams)? When it is signed for ``s3`` (header or presigned query), is a browser-based upload (an
        unsigned form POSTed to a bucket) or is addressed to a bucket's virtual host."""
        if self._s3 is None:
            return False
        # A function URL's Host is the URL's alone; its path form yields to a request signed for S3 (a
        # path-style request to a bucket named lambda-url).
        form = url_form(headers.get("host"), url) if self._function_urls is not None else None
        if form == "host":
            return False
        authorization = headers.get("authorization")
        upload = form is None and authorization is None and method == "POST"
        if upload and _is_upload_form(url, headers, self._s3.bucket_from_host):
            return True
        if authorization is not None:
            # The warm Invoke path passes here: a substring test first, the regex only for a likely S3 scope.
            found = _SCOPED_SERVICE.search(authorization) if "/s3/" in authorization else None
        else:
            _, _, query = url.partition("?")
            found = _SCOPED_SERVICE.search(urllib.parse.unquote(query)) if "Credential" in query else None
        if found is not None and found.group(1) == "s3":
            return True
        if form is not None:
            return False
        if authorization is None and "AWSAccessKeyId=" in url and "Signature=" in url:
            return True  # a URL presigned with S3's older query signature
        host = headers.get("host")
        return host is not None and ".localhost" in host and self._s3.bucket_from_host(host) is not None

    async def _object_store(self, request: Request) -> Response:
        assert self._s3 is not None and request.stream is not None  # streams() chose it
        request_id = ids.request_id()
        target = f"{request.path}?{request.query}"
        if request.method == "POST" and _is_upload_form(target, request.headers, self._s3.bucket_from_host):
            # Authenticated by the policy its form carries, once the form's fields have been read.
            return await self._s3.post_object(request, request_id, request.stream, self._verifier)
        try:
            if "AWSAccessKeyId=" in request.query and "authorization" not in request.headers:
                host = self._s3.bucket_from_host(request.headers.get("host", ""))
                caller = self._verifier.verify_s3_v2_query(
                    request.method, request.path, request.query, request.headers, host
                )
            else:
                caller = self._verifier.verify(request.method, request.path, request.query, request.headers, None)
        except AuthError as exc:
            return self._s3.error(exc, request, request_id)
        payload = open_payload(request.stream, request.headers, caller.content_sha256, caller.chunk_signing)
        return await self._s3.handle(request, caller, request_id, payload)

    def too_large(self, request: Request) -> Response:
        if self._function_urls is not None and is_function_url(request.headers.get("host"), request.path):
            return too_large_for_url()
        return self._lambda.too_large(request)


def _is_upload_form(target: str, headers: Mapping[str, str], bucket_from_host: Callable[[str], str | None]) -> bool:
    """Whether a POST (``target``: its path, or path and query) is an S3 browser-based upload: a form to a
    bucket (``/bucket``, or ``/`` of a bucket's virtual host) carrying no SigV4 signature of its own."""
    content_type = headers.get("content-type")
    if content_type is None or content_type[:19].lower() != "multipart/form-data" or "authorization" in headers:
        return False
    path, _, query = target.partition("?")
    if "X-Amz-Credential" in query or "AWSAccessKeyId" in query:
        return False
    if path == "/":
        return bucket_from_host(headers.get("host", "")) is not None
    return path[:1] == "/" and "/" not in path[1:].rstrip("/")


def _scoped_service(request: Request) -> str:
    """The service a request was signed for, read loosely (for choosing how to say that it failed)."""
    found = _SCOPED_SERVICE.search(request.headers.get("authorization") or urllib.parse.unquote(request.query))
    return found.group(1) if found else ""
