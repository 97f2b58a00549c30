"""The HTTP endpoint of function URLs: routing, authorization, the payload format 2.0 event, the response
mapping and CORS, as AWS applies them.

A request reaches a function URL in one of two forms, both on the server's one port:

* by Host: ``<url-id>.lambda-url.<region>.localhost[:port]`` (the URL CreateFunctionUrlConfig answers), any
  path;
* by path, for clients that cannot set Host: ``/lambda-url/<url-id>/<path>`` on any host; the function sees
  ``/<path>`` as its rawPath.

The front door routes these here before SigV4 (a public URL is unsigned). Authorization, as AWS:

* ``AWS_IAM``: the request must be SigV4-signed for service ``lambda`` (header or presigned query) with the
  administrator's key. Until selfless has IAM, a function's session credentials are refused too (their role
  policy cannot grant ``lambda:InvokeFunctionUrl``).
* ``NONE``: the function's (or alias's) resource policy must allow principal ``*`` both
  ``lambda:InvokeFunctionUrl`` (the statement ``add-permission --function-url-auth-type NONE`` writes) and
  ``lambda:InvokeFunction`` (``add-permission --invoked-via-function-url``, or unconditioned): AWS requires
  both for function URLs created since October 2025.

Anything else is AWS's 403. A CORS preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) to a URL with a Cors configuration is answered here, unauthenticated, as
browsers send it without credentials.

The invocation is a synchronous Invoke through the invocation service: the same limits (6 MB request event,
6 MB response, the function's timeout), the same concurrency. A function error or timeout is 502, a
throttle 429, a request past 6 MB 413.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from selfless import ids, policies
from selfless.api.auth import Caller, SigV4Verifier
from selfless.config import Settings
from selfless.errors import AuthError, RequestTooLarge, SelflessError, TooManyRequests
from selfless.function_urls.configs import FunctionUrls, UrlConfig
from selfless.httpserver import Request, Response
from selfless.invocation.service import MAX_SYNC_PAYLOAD, InvocationService
from selfless.models import InvocationType, InvokeRequest
from selfless.policies import Policy

PATH_PREFIX = "/lambda-url/"
_HOST = re.compile(r"([a-z0-9]{32})\.lambda-url\.[a-z0-9-]+\.localhost(?::\d+)?", re.IGNORECASE)
_PATH = re.compile(r"/lambda-url/([a-z0-9]{32})(/.*)?", re.DOTALL)
_PATH_FORM = re.compile(r"/lambda-url/[a-z0-9]{32}(?:[/?]|$)")
# AWS's words, which its troubleshooting guides quote.
_FORBIDDEN = (
    b'{"Message":"Forbidden. For troubleshooting Function URL authorization issues, see: '
    b'https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"}'
)
_TOO_LARGE = b'{"Message":"Request Entity Too Large"}'
# Headers that frame the HTTP response, which the server writes itself: a function's are dropped.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"})
_TEXT_TYPES = re.compile(r"(text/.*|.*[/+](json|xml|javascript)|application/x-www-form-urlencoded)(;.*)?", re.I)


class Policies(Protocol):
    """What serving needs of ``selfless.permissions.Permissions``."""

    def policy(self, name: str, qualifier: str | None) -> Policy | None: ...


def url_form(host: str | None, target: str) -> str | None:
    """How a request (its Host, and its raw path or request target) is addressed to a function URL: "host",
    "path", or None when it is not."""
    # Substring tests first: every request's head passes here (the warm Invoke path too).
    if host is not None and ".lambda-url." in host and _HOST.fullmatch(host) is not None:
        return "host"
    return "path" if target.startswith(PATH_PREFIX) and _PATH_FORM.match(target) else None


def is_function_url(host: str | None, target: str) -> bool:
    return url_form(host, target) is not None


def _address(request: Request) -> tuple[str, str] | None:
    """(url id, the path the function sees) of a request to a function URL; None when it names none."""
    host = _HOST.fullmatch(request.headers.get("host", ""))
    if host is not None:
        return host.group(1).lower(), request.path
    found = _PATH.fullmatch(request.path)
    if found is None:
        return None
    return found.group(1), found.group(2) or "/"


def too_large_for_url() -> Response:
    """AWS's answer to a request body past the 6 MB an invocation takes."""
    response = _error(413, _TOO_LARGE)
    response.headers.append(("x-amzn-RequestId", ids.request_id()))
    return response


def _error(status: int, body: bytes, content_type: str = "application/json") -> Response:
    return Response(status, body, content_type=content_type)


class FunctionUrlServer:
    def __init__(
        self, settings: Settings, urls: FunctionUrls, invocations: InvocationService, permissions: Policies
    ) -> None:
        self._settings = settings
        self._urls = urls
        self._invocations = invocations
        self._permissions = permissions

    async def serve(self, request: Request, verifier: SigV4Verifier) -> Response:
        """The answer to one request to a function URL (``is_function_url`` chose it), with its request id
        (the invocation's, when there is one)."""
        request_id = ids.request_id()
        response = await self._serve(request, verifier, request_id)
        response.headers.append(("x-amzn-RequestId", request_id))
        if request.method == "HEAD":  # the length the body would have, and no body
            response.length, response.body = len(response.body), b""
        return response

    async def _serve(self, request: Request, verifier: SigV4Verifier, request_id: str) -> Response:
        address = _address(request)
        config = self._urls.by_id(address[0]) if address is not None else None
        if address is None or config is None:
            return _error(404, b'{"Message":"Not Found"}')
        url_id, path = address
        cors = config.cors
        if cors and request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return _preflight(cors, request.headers)
        if len(request.body) > MAX_SYNC_PAYLOAD:
            return _error(413, _TOO_LARGE)
        caller: Caller | None = None
        if config.auth_type == "AWS_IAM":
            try:
                caller = verifier.verify(request.method, request.path, request.query, request.headers, request.body)
            except AuthError:
                return _error(403, _FORBIDDEN)
            if caller.service != "lambda" or caller.principal.kind != "admin":
                return _error(403, _FORBIDDEN)
        elif not self._public(config):
            return _error(403, _FORBIDDEN)
        event = self._event(config, url_id, path, request, caller, request_id)
        payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        if len(payload) > MAX_SYNC_PAYLOAD:  # a binary body grows by a third as base64
            return _error(413, _TOO_LARGE)
        invoke = InvokeRequest(
            config.function_name,
            config.qualifier or None,
            payload,
            InvocationType.REQUEST_RESPONSE,
            request_id=request_id,
            trace_header=request.headers.get("x-amzn-trace-id"),
        )
        try:
            result = await self._invocations.invoke(invoke)
        except TooManyRequests:
            return _error(429, b'{"Message":"Rate Exceeded."}')
        except RequestTooLarge:
            return _error(413, _TOO_LARGE)
        except SelflessError:
            return _error(502, b"Internal Server Error", "text/plain")
        if result.function_error is not None:
            response = _error(502, b"Internal Server Error", "text/plain")
        else:
            response = _mapped(result.payload)
        if cors:
            _add_cors(response, cors, request.headers.get("origin"))
        return response

    def _public(self, config: UrlConfig) -> bool:
        """Whether the resource policy of the URL's function (or alias) opens it to everyone, as AWS requires
        for AuthType NONE."""
        policy = self._permissions.policy(config.function_name, config.qualifier or None)
        context = {"lambda:functionurlauthtype": "NONE", "lambda:invokedviafunctionurl": "true"}
        return policies.allows_anyone(policy, "lambda:InvokeFunctionUrl", context) and policies.allows_anyone(
            policy, "lambda:InvokeFunction", context
        )

    def _event(
        self, config: UrlConfig, url_id: str, path: str, request: Request, caller: Caller | None, request_id: str
    ) -> dict[str, Any]:
        """The payload format 2.0 event AWS sends for a function URL request."""
        s = self._settings
        headers = {k: v for k, v in request.headers.items() if k != "cookie"}
        source_ip = request.peer[0] if request.peer else "127.0.0.1"
        headers.setdefault("x-forwarded-for", source_ip)
        headers.setdefault("x-forwarded-proto", "http")
        headers.setdefault("x-forwarded-port", str(s.port))
        host = request.headers.get("host", "")
        domain = host.rpartition(":")[0] if _HOST.fullmatch(host) and ":" in host else host
        if not _HOST.fullmatch(host):
            domain = f"{url_id}.lambda-url.{s.region}.localhost"
        now = time.time()
        context: dict[str, Any] = {
            "accountId": s.account_id if caller is not None else "anonymous",
            "apiId": url_id,
            "domainName": domain,
            "domainPrefix": url_id,
            "http": {
                "method": request.method,
                "path": urllib.parse.unquote(path),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        }
        if caller is not None:
            key = caller.principal.access_key_id
            context["authorizer"] = {
                "iam": {
                    "accessKey": key,
                    "accountId": s.account_id,
                    "callerId": key,
                    "cognitoIdentity": None,
                    "principalOrgId": None,
                    "userArn": f"arn:aws:iam::{s.account_id}:root",
                    "userId": s.account_id,
                }
            }
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": request.query,
        }
        cookie = request.headers.get("cookie")
        if cookie:
            event["cookies"] = [c.strip() for c in cookie.split(";") if c.strip()]
        event["headers"] = headers
        if request.query:
            params: dict[str, str] = {}
            for key, value in urllib.parse.parse_qsl(request.query, keep_blank_values=True):
                params[key] = f"{params[key]},{value}" if key in params else value
            event["queryStringParameters"] = params
        event["requestContext"] = context
        body = request.body
        if body:
            text = _as_text(body, request.headers.get("content-type"))
            event["body"] = text if text is not None else base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = text is None
        else:
            event["isBase64Encoded"] = False
        return event


def _as_text(body: bytes, content_type: str | None) -> str | None:
    """The body as text when its content type is textual (or not given) and it is UTF-8; else None (it
    travels base64-encoded)."""
    if content_type is not None and not _TEXT_TYPES.fullmatch(content_type.strip()):
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _mapped(payload: bytes) -> Response:
    """The HTTP response for a function's result, as AWS infers it: an object with ``statusCode`` gives the
    status, ``headers``, ``cookies`` (Set-Cookie each), ``body`` (base64-decoded when ``isBase64Encoded``);
    any other JSON value is a 200 of ``application/json`` whose body is that value's JSON (a string with
    its quotes). A
    result that cannot be read that way is AWS's 502."""
    bad = _error(502, b"Internal Server Error", "text/plain")
    try:
        value = json.loads(payload) if payload.strip() else None
    except ValueError:
        return bad
    if not (isinstance(value, dict) and "statusCode" in value):
        # The output itself, as JSON: a string keeps its quotes (AWS's "Hello, world!" answers 15 bytes).
        return Response(200, payload, content_type="application/json")
    status = value["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return bad
    headers: list[tuple[str, str]] = []
    content_type = "application/json"
    given = value.get("headers") or {}
    cookies = value.get("cookies") or []
    if not isinstance(given, dict) or not isinstance(cookies, list):
        return bad
    for name, header in given.items():
        text = _header_text(header)
        if text is None or not _token(str(name)):
            return bad
        lower = str(name).lower()
        if lower == "content-type":
            content_type = text
        elif lower not in _FRAMING:
            headers.append((str(name), text))
    for cookie in cookies:
        text = _header_text(cookie)
        if text is None:
            return bad
        headers.append(("Set-Cookie", text))
    body = value.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        if value.get("isBase64Encoded") is True:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return bad
        else:
            data = body.encode()
    else:
        return bad
    return Response(status, data, headers, content_type=content_type)


def _header_text(value: object) -> str | None:
    """A header value as text (numbers and booleans as JSON writes them); None when it is not one, or holds
    a line break (which would split the response) or a character HTTP headers cannot carry."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        return None
    if "\r" in text or "\n" in text:
        return None
    try:
        text.encode("latin-1")  # what HTTP/1.1 headers carry (the server writes them so)
    except UnicodeEncodeError:
        return None
    return text


def _token(name: str) -> bool:
    return re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) is not None


def _origin_allowed(cors: Mapping[str, Any], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for ``origin``, or None when the configuration does not allow it."""
    if origin is None:
        return None
    allowed = [o.lower() for o in cors.get("AllowOrigins") or []]
    if "*" in allowed:
        return "*" if not cors.get("AllowCredentials") else origin
    return origin if origin.lower() in allowed else None


def _preflight(cors: Mapping[str, Any], headers: Mapping[str, str]) -> Response:
    """AWS's answer to a CORS preflight: 200, with the Access-Control-Allow-* headers when the origin and
    method are allowed (without them, the browser refuses the request)."""
    response = Response(200, b"", content_type=None)
    origin = _origin_allowed(cors, headers.get("origin"))
    method = headers.get("access-control-request-method", "").upper()
    methods = [m.upper() for m in cors.get("AllowMethods") or []]
    if origin is None or not ("*" in methods or method in methods):
        return response
    response.headers.append(("Access-Control-Allow-Origin", origin))
    response.headers.append(("Access-Control-Allow-Methods", ",".join(methods)))
    if cors.get("AllowHeaders"):
        response.headers.append(("Access-Control-Allow-Headers", ",".join(cors["AllowHeaders"])))
    if cors.get("AllowCredentials"):
        response.headers.append(("Access-Control-Allow-Credentials", "true"))
    if cors.get("MaxAge") is not None:
        response.headers.append(("Access-Control-Max-Age", str(cors["MaxAge"])))
    response.headers.append(("Vary", "Origin"))
    return response


# Which response header each Cors member sets (AllowMethods, AllowHeaders and MaxAge answer preflights).
_CORS_HEADERS = {
    "AllowOrigins": "access-control-allow-origin",
    "ExposeHeaders": "access-control-expose-headers",
    "AllowCredentials": "access-control-allow-credentials",
}


def _add_cors(response: Response, cors: Mapping[str, Any], origin: str | None) -> None:
    """The URL's CORS headers on a function's response. AWS: "If there are conflicting headers, the
    configured CORS headers on the function URL take precedence", so the function's own headers of the
    kinds the configuration sets are dropped (even when this origin is not allowed: the configuration
    decides)."""
    configured = {header for member, header in _CORS_HEADERS.items() if cors.get(member) is not None}
    response.headers = [(k, v) for k, v in response.headers if k.lower() not in configured]
    allowed = _origin_allowed(cors, origin)
    if allowed is None:
        return
    response.headers.append(("Access-Control-Allow-Origin", allowed))
    if cors.get("ExposeHeaders"):
        response.headers.append(("Access-Control-Expose-Headers", ",".join(cors["ExposeHeaders"])))
    if cors.get("AllowCredentials"):
        response.headers.append(("Access-Control-Allow-Credentials", "true"))
    response.headers.append(("Vary", "Origin"))
