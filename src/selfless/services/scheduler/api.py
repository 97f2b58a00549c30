"""EventBridge Scheduler's wire: the REST-JSON protocol of botocore's ``scheduler`` model (``POST
/schedules/{Name}``, ``GET /schedules?NamePrefix=...``), routed, parsed and validated from that model
(``api.model``), errors rendered once here as ``x-amzn-ErrorType`` and a ``{"Message": ...}`` body (every
error of the model has ``Message``).

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
nothing (AccessDeniedException): a schedule's target carries its Input, which may hold another function's
data, and no function needs to read schedules to run.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless.api import errors as wire_errors
from selfless.api import model
from selfless.api.auth import Caller
from selfless.errors import ResourceNotFound, SelflessError
from selfless.httpserver import Request, Response
from selfless.services.scheduler.service import Schedules

Operation = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
_FOR_FUNCTIONS: frozenset[str] = frozenset()


class AccessDenied(SelflessError):
    aws_type = "AccessDeniedException"


class SchedulerApi:
    def __init__(self, schedules: Schedules) -> None:
        self._model = model.service_model("scheduler")
        self._router = model.Router(self._model)
        s = schedules
        self._ops: dict[str, Operation] = {
            "CreateSchedule": s.create,
            "GetSchedule": s.get,
            "UpdateSchedule": s.update,
            "DeleteSchedule": s.delete,
            "ListSchedules": s.list_all,
            "CreateScheduleGroup": s.create_group,
            "GetScheduleGroup": s.get_group,
            "DeleteScheduleGroup": s.delete_group,
            "ListScheduleGroups": s.list_groups,
            "TagResource": s.tag,
            "UntagResource": s.untag,
            "ListTagsForResource": s.list_tags,
        }

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        try:
            found = self._router.match(request.method, request.path, request.query)
            if found is None:
                raise ResourceNotFound(f"No operation at {request.method} {request.path}")
            route, labels = found
            op = self._model.operation_model(route.operation)
            handler = self._ops.get(route.operation)
            if handler is None:
                raise ResourceNotFound(f"{route.operation} is not offered by selfless's scheduler yet.")
            if caller.principal.kind != "admin" and route.operation not in _FOR_FUNCTIONS:
                raise AccessDenied(f"Function credentials may not call {route.operation}.")
            params = model.coerce_params(op, model.parse(op, labels, request.query, request.headers, request.body))
            model.validate(op, params)
            doc = await handler(params)
        except SelflessError as exc:
            return error(exc, request_id)
        except Exception as exc:  # a full disk, a bug: the service's 500, never the HTTP layer's bare one
            failure = wire_errors.unexpected(exc, "scheduler")
            failure.message = failure.message.replace("The Lambda service", "The scheduler")
            return error(failure, request_id)
        return Response(route.status, json.dumps(doc).encode(), [("x-amzn-RequestId", request_id)])


_STATUS = {
    "ValidationException": 400,
    "InvalidRequestContentException": 400,
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
    "AccessDeniedException": 403,
    "ThrottlingException": 429,
}


def error(exc: SelflessError, request_id: str) -> Response:
    code = exc.aws_type
    status = _STATUS.get(code, 500)
    if status == 500:
        code = "InternalServerException"
    elif code == "InvalidRequestContentException":
        code = "ValidationException"
    headers = [("x-amzn-ErrorType", code), ("x-amzn-RequestId", request_id)]
    return Response(status, json.dumps({"Message": exc.message}).encode(), headers)
