"""EventBridge's wire: the AWS JSON 1.1 protocol of botocore's ``events`` model (``POST /`` with ``X-Amz-Target:
AWSEvents.<Operation>`` and an ``application/x-amz-json-1.1`` body), parsed and validated from that model,
errors rendered once here as ``{"__type": CODE, "message": ...}`` with status 400 (500 for InternalException),
as EventBridge sends them.

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
PutEvents only (AccessDeniedException otherwise): a rule's targets carry their Input, which may hold another
function's data, and a rule could make EventBridge invoke any function that trusts it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from selfless import json_limits
from selfless.api import errors as wire_errors
from selfless.api import model
from selfless.api.auth import Caller
from selfless.errors import SelflessError
from selfless.httpserver import Request, Response
from selfless.services.eventbridge.service import Rules

Operation = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
_TARGET_PREFIX = "AWSEvents."
_CONTENT_TYPE = "application/x-amz-json-1.1"
_FOR_FUNCTIONS = frozenset({"PutEvents"})


class Bus(Protocol):
    """PutEvents (``events.rules.EventBus``)."""

    async def put_events(self, params: Mapping[str, Any]) -> dict[str, Any]: ...


class AccessDenied(SelflessError):
    aws_type = "AccessDeniedException"


class UnknownOperation(SelflessError):
    aws_type = "UnknownOperationException"


class Serialization(SelflessError):
    aws_type = "SerializationException"


class Internal(SelflessError):
    aws_type = "InternalException"


class EventsApi:
    def __init__(self, rules: Rules, bus: Bus | None = None) -> None:
        self._model = model.service_model("events")
        r = rules
        self._ops: dict[str, Operation] = {
            "PutRule": r.put_rule,
            "DescribeRule": r.describe_rule,
            "DeleteRule": r.delete_rule,
            "ListRules": r.list_rules,
            "EnableRule": r.enable_rule,
            "DisableRule": r.disable_rule,
            "PutTargets": r.put_targets,
            "RemoveTargets": r.remove_targets,
            "ListTargetsByRule": r.list_targets_by_rule,
            "ListRuleNamesByTarget": r.list_rule_names_by_target,
            "TagResource": r.tag_resource,
            "UntagResource": r.untag_resource,
            "ListTagsForResource": r.list_tags_for_resource,
            "DescribeEventBus": r.describe_event_bus,
            "ListEventBuses": r.list_event_buses,
        }
        if bus is not None:
            self._ops["PutEvents"] = bus.put_events

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        try:
            target = request.headers.get("x-amz-target", "")
            name = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
            if name not in self._model.operation_names:
                raise UnknownOperation(f"The operation {target or '(no X-Amz-Target)'} is not valid.")
            handler = self._ops.get(name)
            if handler is None:
                raise UnknownOperation(f"{name} is not offered by selfless's EventBridge yet.")
            if caller.principal.kind != "admin" and name not in _FOR_FUNCTIONS:
                raise AccessDenied(f"Function credentials may not call {name}.")
            params = _params(request.body or b"{}")
            model.validate(self._model.operation_model(name), params)
            doc = await handler(params)
        except SelflessError as exc:
            return error(exc, request_id)
        except Exception as exc:  # a full disk, a bug: EventBridge's 500, never the HTTP layer's bare one
            failure = wire_errors.unexpected(exc, "events")
            return error(Internal(failure.message.replace("The Lambda service", "EventBridge")), request_id)
        return Response(200, json.dumps(doc).encode(), [("x-amzn-RequestId", request_id)], content_type=_CONTENT_TYPE)


def _params(body: bytes) -> dict[str, Any]:
    try:
        params = json_limits.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
        raise Serialization(f"The body is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise Serialization("The body must be a JSON object")
    return params


def error(exc: SelflessError, request_id: str) -> Response:
    code = exc.aws_type
    if code in ("ServiceException", "InternalException") or code.startswith("Service"):
        code, status = "InternalException", 500
    else:
        status = 400
    if code == "InvalidRequestContentException":
        code = "ValidationException"
    elif code == "TooManyRequestsException":  # the async queue is full or closing
        code = "ThrottlingException"
    body = {"__type": code, "message": exc.message}
    headers = [("x-amzn-RequestId", request_id)]
    return Response(status, json.dumps(body).encode(), headers, content_type=_CONTENT_TYPE)
