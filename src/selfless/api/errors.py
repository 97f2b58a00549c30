"""Domain errors to wire errors: the one place that decides status codes and error bodies."""

from __future__ import annotations

import json

from selfless import errors as e
from selfless.httpserver import Response

STATUS: dict[type[e.SelflessError], int] = {
    e.ValidationError: 400,
    e.InvalidParameterValue: 400,
    e.InvalidRequestContent: 400,
    e.ResourceNotFound: 404,
    e.ResourceConflict: 409,
    e.PreconditionFailed: 412,
    e.PolicyLengthExceeded: 400,
    e.RequestTooLarge: 413,
    e.RequestEntityTooLarge: 413,
    e.TooManyRequests: 429,
    e.UnsupportedOperation: 501,
    e.ServiceError: 500,
    e.AuthError: 403,
}


def status_of(exc: e.SelflessError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def rest_json(exc: e.SelflessError, request_id: str) -> Response:
    """Lambda's REST-JSON error: x-amzn-ErrorType names the code, the body carries Type and message."""
    body: dict[str, str] = {"Type": "User" if status_of(exc) < 500 else "Service", "message": exc.message}
    headers = [("x-amzn-ErrorType", exc.aws_type), ("x-amzn-RequestId", request_id)]
    if isinstance(exc, e.TooManyRequests):
        body["Reason"] = exc.reason
        body["retryAfterSeconds"] = str(exc.retry_after_s)
        headers.append(("Retry-After", str(exc.retry_after_s)))
    return Response(status_of(exc), json.dumps(body).encode(), headers)


# CloudWatch Logs names some errors otherwise than Lambda does.
_LOGS_TYPES = {
    "InvalidParameterValueException": "InvalidParameterException",
    "ServiceException": "ServiceUnavailableException",
}


def json_1_1(exc: e.SelflessError, request_id: str) -> Response:
    """The JSON 1.1 protocol's error (CloudWatch Logs): ``__type`` in the body."""
    body = {"__type": _LOGS_TYPES.get(exc.aws_type, exc.aws_type), "message": exc.message}
    return Response(
        status_of(exc),
        json.dumps(body).encode(),
        [("x-amzn-RequestId", request_id)],
        content_type="application/x-amz-json-1.1",
    )
