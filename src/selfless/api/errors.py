"""Domain errors to wire errors: the one place that decides status codes and error bodies.

Also the one place where a failure nothing below foresaw (an ``OSError``, a ``sqlite3.Error``, a bug) becomes
an answer: :func:`unexpected` turns it into AWS's 500 for the service (``ServiceException`` for Lambda,
``ServiceUnavailableException`` for CloudWatch Logs), saying plainly when the server's disk is full and never
showing internals. Each API module catches what escapes its handlers and renders ``unexpected(exc)``, so no
request ends in the HTTP layer's bare "Internal server error".
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import sqlite3

from selfless import errors as e
from selfless.api.model import service_model
from selfless.httpserver import Response

log = logging.getLogger(__name__)

STATUS: dict[type[e.SelflessError], int] = {
    e.ValidationError: 400,
    e.InvalidParameterValue: 400,
    e.InvalidRequestContent: 400,
    e.Serialization: 400,
    e.ResourceNotFound: 404,
    e.ResourceConflict: 409,
    e.PreconditionFailed: 412,
    e.CodeVerificationFailed: 400,
    e.PolicyLengthExceeded: 400,
    e.RequestTooLarge: 413,
    e.RequestEntityTooLarge: 413,
    e.TooManyRequests: 429,
    e.CodeStorageExceeded: 400,
    e.UnsupportedOperation: 501,
    e.MalformedBody: 400,
    e.ServiceError: 500,
    e.AuthError: 403,
}

_FULL = (
    "the server's data disk is full, so this request could not be saved. Nothing of it was kept; try again once "
    "space has been freed."
)
INTERNAL = "The Lambda service encountered an internal error."
DISK_FULL = f"The Lambda service encountered an internal error: {_FULL}"
_LOGS_INTERNAL = "The service cannot complete the request."
_LOGS_DISK_FULL = f"The service cannot complete the request: {_FULL}"
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def status_of(exc: e.SelflessError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says that a disk had no space left: ENOSPC or EDQUOT from the
    operating system, SQLITE_FULL from SQLite."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; this bounds a pathological one
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and (getattr(seen, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unexpected(exc: Exception, service: str = "lambda") -> e.ServiceError:
    """The 500 a caller gets for ``exc``, which no layer below turned into a domain error; logged here."""
    full = disk_full(exc)
    if full:
        log.error("request refused, the data disk is full: %s", exc)
    else:
        log.error("unexpected error serving a %s request", service, exc_info=exc)
    if service == "logs":
        return e.ServiceUnavailable(_LOGS_DISK_FULL if full else _LOGS_INTERNAL)
    return e.ServiceError(DISK_FULL if full else INTERNAL)


@functools.cache
def _modelled_members(aws_type: str) -> frozenset[str] | None:
    """The body members Lambda's model gives the error ``aws_type`` (``Type`` and ``Message`` or ``message``,
    spelled per exception as AWS sends them, plus any others such as ``Reason``); None for an error the model
    does not describe (ValidationException, AccessDeniedException and SigV4's errors, selfless's own)."""
    for shape in service_model("lambda").error_shapes:
        if shape.name == aws_type:
            return frozenset(
                name for name, member in shape.members.items() if member.serialization.get("location") is None
            )
    return None


def rest_json(exc: e.SelflessError, request_id: str) -> Response:
    """Lambda's REST-JSON error: x-amzn-ErrorType names the code; the body carries the members Lambda's model
    gives that error, spelled as AWS sends them (``Message`` for ResourceNotFoundException and
    ServiceException, ``message`` for most others), so that botocore's parsed error holds the same keys as
    against AWS. An error the model does not describe gets ``Type`` and ``message``: AWS's spelling for
    those is not in any model, and every SDK reads either (unverified against AWS)."""
    status = status_of(exc)
    members = _modelled_members(exc.aws_type)
    body: dict[str, str] = {"Type": "User" if status < 500 else "Service"}
    body["Message" if members is not None and "Message" in members else "message"] = exc.message
    headers = [("x-amzn-ErrorType", exc.aws_type), ("x-amzn-RequestId", request_id)]
    if isinstance(exc, e.TooManyRequests):
        body["Reason"] = exc.reason
        # retryAfterSeconds is modelled as the Retry-After header, not a body member.
        headers.append(("Retry-After", str(exc.retry_after_s)))
    return Response(status, json.dumps(body).encode(), headers)


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


# SQS's JSON 1.0 protocol names SigV4's failures with the codes of its query protocol in x-amzn-query-error.
_SQS_QUERY_CODES = {
    "AccessDeniedException": "AccessDenied",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "InvalidSignatureException": "SignatureDoesNotMatch",
}


def sqs_query_code(exc: e.SelflessError) -> str:
    """The code SQS's query protocol gives a signature failure (``SignatureDoesNotMatch``, ...)."""
    return _SQS_QUERY_CODES.get(exc.aws_type, exc.aws_type)


def json_1_0_sqs(exc: e.SelflessError, request_id: str) -> Response:
    """SQS's JSON 1.0 error for a request that failed before reaching the queue service (its signature):
    ``__type`` in the body and the query protocol's code in ``x-amzn-query-error``."""
    code = sqs_query_code(exc)
    body = {"__type": f"com.amazon.coral.service#{exc.aws_type}", "message": exc.message}
    return Response(
        status_of(exc),
        json.dumps(body).encode(),
        [("x-amzn-RequestId", request_id), ("x-amzn-query-error", f"{code};Sender")],
        content_type="application/x-amz-json-1.0",
    )
