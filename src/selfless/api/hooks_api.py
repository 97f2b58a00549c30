"""Webhook triggers over HTTP: the intake endpoint external object stores call, and the operations that
manage the triggers (``events.webhooks`` says what a trigger is).

Intake (no SigV4: the store authenticates with the trigger's token)::

    POST /_selfless/hooks/<name>            200 {"Accepted": n} | 400/403/404/503 {"message": ...}
    GET|HEAD /_selfless/hooks/<name>        200 {} (stores probe their endpoint before they use it)

Management (SigV4 for ``lambda``, administrator only, REST-JSON errors as Lambda's)::

    POST   /_selfless/webhook-triggers          {"Name", "Source", "Bucket", "FunctionName", "Events",
                                                 "Filter", "Token"?} -> 201 the trigger and its Token
    GET    /_selfless/webhook-triggers          -> {"WebhookTriggers": [...]}
    GET    /_selfless/webhook-triggers/<name>   -> the trigger
    DELETE /_selfless/webhook-triggers/<name>   -> 204
"""

from __future__ import annotations

import json
import logging
import urllib.parse

from selfless import json_limits
from selfless.api import errors as wire_errors
from selfless.api.access import Access
from selfless.api.auth import Caller
from selfless.errors import InvalidRequestContent, SelflessError, UnsupportedOperation
from selfless.events.webhooks import PATH_PREFIX, HookRefused, Webhooks
from selfless.httpserver import Request, Response

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_selfless/webhook-triggers"
INTAKE_PREFIX = PATH_PREFIX


def _json(doc: object, status: int = 200) -> Response:
    return Response(status, json.dumps(doc).encode())


class HooksApi:
    def __init__(self, webhooks: Webhooks, access: Access) -> None:
        self._webhooks = webhooks
        self._access = access

    async def intake(self, request: Request) -> Response:
        name = urllib.parse.unquote(request.path[len(INTAKE_PREFIX) :])
        if request.method in ("GET", "HEAD"):
            return _json({})
        if request.method != "POST":
            return _json({"message": "Deliveries are POSTed"}, 405)
        try:
            accepted = await self._webhooks.receive(
                name, request.headers.get("authorization"), request.query, request.body
            )
        except HookRefused as exc:
            return _json({"message": exc.message}, exc.status)
        except Exception:  # a full disk, a bug: the store retries
            log.exception("webhook delivery for %s failed", name)
            return _json({"message": "Internal error: retry later"}, 500)
        return _json({"Accepted": accepted})

    async def manage(self, request: Request, caller: Caller, request_id: str) -> Response:
        try:
            response = await self._manage(request, caller)
        except SelflessError as exc:
            return wire_errors.rest_json(exc, request_id)
        except Exception as exc:
            return wire_errors.rest_json(wire_errors.unexpected(exc), request_id)
        response.headers.append(("x-amzn-RequestId", request_id))
        return response

    async def _manage(self, request: Request, caller: Caller) -> Response:
        rest = request.path[len(ADMIN_PREFIX) :]
        name = urllib.parse.unquote(rest[1:]) if rest.startswith("/") else None
        if rest and name is None:
            raise UnsupportedOperation(f"No selfless operation at {request.method} {request.path}")
        method = request.method
        if name is None and method == "POST":
            self._access.admin_call(caller, "CreateWebhookTrigger")
            try:
                params = json_limits.loads(request.body or b"{}")
            except ValueError:
                raise InvalidRequestContent("Could not parse request body into json") from None
            if not isinstance(params, dict):
                raise InvalidRequestContent("The request body must be a JSON object")
            trigger, token = await self._webhooks.create(params)
            return _json({**trigger.shown(), "Token": token}, 201)
        if name is None and method == "GET":
            self._access.admin_call(caller, "ListWebhookTriggers")
            return _json({"WebhookTriggers": [t.shown() for t in self._webhooks.list()]})
        if name is not None and method == "GET":
            self._access.admin_call(caller, "GetWebhookTrigger")
            return _json(self._webhooks.get(name).shown())
        if name is not None and method == "DELETE":
            self._access.admin_call(caller, "DeleteWebhookTrigger")
            await self._webhooks.delete(name)
            return Response(204, b"", content_type=None)
        raise UnsupportedOperation(f"No selfless operation at {request.method} {request.path}")
