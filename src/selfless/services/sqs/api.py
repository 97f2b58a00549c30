"""SQS's wire: the AWS JSON 1.0 protocol of botocore's ``sqs`` model (``POST /`` with ``X-Amz-Target:
AmazonSQS.<Operation>`` and an ``application/x-amz-json-1.0`` body), errors rendered once here.

An error answers with its status, ``{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": ...}`` and the
``x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender`` header, so that botocore raises the
modelled exception class (``sqs.exceptions.QueueDoesNotExist``) while the ClientError's code is the one SQS's
query protocol used, as against AWS.

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
may send, receive, delete and change the visibility of messages on any queue, and look queues up
(GetQueueUrl, ListQueues, GetQueueAttributes, ListQueueTags, ListDeadLetterSourceQueues, ListMessageMoveTasks) -
not create, delete, purge, reconfigure or tag them, nor change permissions or start or cancel message moves
(AccessDenied). The older query protocol (``Action=...`` form posts or GETs, XML answers:
``services.sqs.query``) reaches the same operations.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless import json_limits
from selfless.api import errors as wire_errors
from selfless.api.auth import Caller
from selfless.api.model import service_model
from selfless.errors import AuthError
from selfless.httpserver import Request, Response
from selfless.services.sqs import errors as E
from selfless.services.sqs import query
from selfless.services.sqs.service import Call, QueueService

_TARGET_PREFIX = "AmazonSQS."
_CONTENT_TYPE = "application/x-amz-json-1.0"
_FOR_FUNCTIONS = frozenset(
    {
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
        "GetQueueUrl",
        "ListQueues",
        "GetQueueAttributes",
        "ListQueueTags",
        "ListDeadLetterSourceQueues",
        "ListMessageMoveTasks",
    }
)

Operation = Callable[[Mapping[str, Any], Call], Awaitable[dict[str, Any]]]


class SqsApi:
    def __init__(self, service: QueueService) -> None:
        self._service = service
        s = service
        self._ops: dict[str, Operation] = {
            "CreateQueue": s.create_queue,
            "GetQueueUrl": s.get_queue_url,
            "ListQueues": s.list_queues,
            "DeleteQueue": s.delete_queue,
            "PurgeQueue": s.purge_queue,
            "GetQueueAttributes": s.get_queue_attributes,
            "SetQueueAttributes": s.set_queue_attributes,
            "ListDeadLetterSourceQueues": s.list_dead_letter_source_queues,
            "TagQueue": s.tag_queue,
            "UntagQueue": s.untag_queue,
            "ListQueueTags": s.list_queue_tags,
            "SendMessage": s.send_message,
            "SendMessageBatch": s.send_message_batch,
            "ReceiveMessage": s.receive_message,
            "DeleteMessage": s.delete_message,
            "DeleteMessageBatch": s.delete_message_batch,
            "ChangeMessageVisibility": s.change_message_visibility,
            "ChangeMessageVisibilityBatch": s.change_message_visibility_batch,
            "AddPermission": s.add_permission,
            "RemovePermission": s.remove_permission,
            "StartMessageMoveTask": s.start_message_move_task,
            "ListMessageMoveTasks": s.list_message_move_tasks,
            "CancelMessageMoveTask": s.cancel_message_move_task,
        }
        self._model = service_model("sqs")

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        target = request.headers.get("x-amz-target", "")
        if not target:
            return await self._handle_query(request, caller, request_id)
        try:
            name = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
            if name not in self._model.operation_names:
                raise E.SqsError(
                    "com.amazon.coral.service#UnknownOperationException",
                    "InvalidAction",
                    f"The action or operation requested is invalid: {target or 'no X-Amz-Target'}.",
                )
            doc = await self._run(name, _params(request.body or b"{}"), request, caller)
        except E.SqsError as exc:
            return error(exc, request_id)
        except Exception as exc:  # a full disk, a bug: SQS's 500, never the HTTP layer's bare one
            return error(_internal(exc), request_id)
        return Response(200, json.dumps(doc).encode(), [("x-amzn-RequestId", request_id)], content_type=_CONTENT_TYPE)

    def refused(self, exc: AuthError, request: Request, request_id: str) -> Response:
        if request.headers.get("x-amz-target"):
            return wire_errors.json_1_0_sqs(exc, request_id)
        code = wire_errors.sqs_query_code(exc)
        failure = E.SqsError(code, code, exc.message, status=wire_errors.status_of(exc))
        headers = [("x-amzn-RequestId", request_id)]
        return Response(failure.status, query.error(failure, request_id), headers, content_type="text/xml")

    async def _handle_query(self, request: Request, caller: Caller, request_id: str) -> Response:
        """The query protocol: the operation named by ``Action``, its fields read and its answer written as
        that protocol has them (``services.sqs.query``)."""
        headers = [("x-amzn-RequestId", request_id)]
        try:
            form = query.form_of(request.body or b"", request.query)
            name = query.action_of(form)
            if name not in self._model.operation_names:
                raise E.SqsError(
                    "com.amazon.coral.service#InvalidActionException",
                    "InvalidAction",
                    f"The action {name or '(none)'} is not valid for this endpoint.",
                )
            model = self._model.operation_model(name)
            doc = await self._run(name, query.parse(model.input_shape, form), request, caller)
            body = query.answer(name, model.output_shape, doc, request_id)
        except E.SqsError as exc:
            return Response(exc.status, query.error(exc, request_id), headers, content_type="text/xml")
        except Exception as exc:  # a full disk, a bug: SQS's 500, never the HTTP layer's bare one
            failure = _internal(exc)
            return Response(failure.status, query.error(failure, request_id), headers, content_type="text/xml")
        return Response(200, body, headers, content_type="text/xml")

    async def _run(self, name: str, params: dict[str, Any], request: Request, caller: Caller) -> dict[str, Any]:
        op = self._ops.get(name)
        if op is None:
            raise E.unsupported(name)
        if caller.principal.kind != "admin" and name not in _FOR_FUNCTIONS:
            raise E.access_denied(name)
        for required in self._model.operation_model(name).input_shape.required_members:
            if params.get(required) in (None, ""):
                raise E.missing_parameter(required)
        call = Call(request.headers.get("host") or "localhost", caller.principal.access_key_id)
        return await op(params, call)


def _internal(exc: Exception) -> E.SqsError:
    failure = wire_errors.unexpected(exc, "sqs")
    return E.internal(failure.message.replace("Lambda", "queue"))


def _params(body: bytes) -> dict[str, Any]:
    try:
        params = json_limits.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
        raise E.SqsError(
            "com.amazon.coral.service#SerializationException", "MalformedInput", f"The body is not JSON: {exc}"
        ) from None
    if not isinstance(params, dict):
        raise E.SqsError(
            "com.amazon.coral.service#SerializationException", "MalformedInput", "The body must be a JSON object"
        )
    return params


def error(exc: E.SqsError, request_id: str) -> Response:
    body = {"__type": exc.wire_type, "message": exc.message}
    headers = [
        ("x-amzn-RequestId", request_id),
        ("x-amzn-query-error", f"{exc.query_code};{'Sender' if exc.sender else 'Receiver'}"),
    ]
    return Response(exc.status, json.dumps(body).encode(), headers, content_type=_CONTENT_TYPE)
