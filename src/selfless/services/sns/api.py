"""SNS's wire: the query protocol of botocore's ``sns`` model (``Action=Publish&TopicArn=...`` form posts, XML
answers under ``<PublishResponse><PublishResult>``), read and written by the shared ``services.query`` with the
model's own names; errors rendered once here as ``<ErrorResponse>`` with SNS's codes and statuses.

Who may do what until IAM policies exist: the administrator everything; a function's session credentials
may publish and read (Publish, PublishBatch, ListTopics, GetTopicAttributes, ListSubscriptions,
ListSubscriptionsByTopic, GetSubscriptionAttributes, ListTagsForResource), not create, delete, subscribe or
reconfigure (AuthorizationError, 403).

The AWS JSON 1.0 form of the same operations (``X-Amz-Target: AmazonSimpleNotificationService.<Op>``, a JSON
body, JSON answers; errors with ``__type`` naming the modelled shape and SNS's code in ``x-amzn-query-error``)
is answered too, for SDKs generated from SNS's Smithy model with that protocol.

One request is served without a signature: the SubscribeURL an http/https endpoint is sent
(``GET /?Action=ConfirmSubscription&TopicArn=...&Token=...``), authenticated by its token, as on SNS.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless import json_limits
from selfless.api import errors as wire_errors
from selfless.api.auth import Caller, Principal
from selfless.api.model import service_model
from selfless.errors import AuthError
from selfless.httpserver import Request, Response
from selfless.services import query
from selfless.services.sns import errors as E
from selfless.services.sns.service import Call, TopicService

NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
_TARGET_PREFIX = "AmazonSimpleNotificationService."
_JSON = "application/x-amz-json-1.0"
_FOR_FUNCTIONS = frozenset(
    {
        "Publish",
        "PublishBatch",
        "ListTopics",
        "GetTopicAttributes",
        "ListSubscriptions",
        "ListSubscriptionsByTopic",
        "GetSubscriptionAttributes",
        "ListTagsForResource",
    }
)

Operation = Callable[[Mapping[str, Any], Call], Awaitable[dict[str, Any]]]


class SnsApi:
    def __init__(self, service: TopicService) -> None:
        self._service = service
        s = service
        self._ops: dict[str, Operation] = {
            "CreateTopic": s.create_topic,
            "DeleteTopic": s.delete_topic,
            "ListTopics": s.list_topics,
            "GetTopicAttributes": s.get_topic_attributes,
            "SetTopicAttributes": s.set_topic_attributes,
            "Subscribe": s.subscribe,
            "Unsubscribe": s.unsubscribe,
            "ConfirmSubscription": s.confirm_subscription,
            "ListSubscriptions": s.list_subscriptions,
            "ListSubscriptionsByTopic": s.list_subscriptions_by_topic,
            "GetSubscriptionAttributes": s.get_subscription_attributes,
            "SetSubscriptionAttributes": s.set_subscription_attributes,
            "Publish": s.publish,
            "PublishBatch": s.publish_batch,
            "TagResource": s.tag_resource,
            "UntagResource": s.untag_resource,
            "ListTagsForResource": s.list_tags_for_resource,
        }
        self._model = service_model("sns")
        naming = query.ModelNaming()
        self._reader = query.Reader(naming)
        self._writer = query.Writer(naming, NAMESPACE)
        # SNS's codes -> the modelled error shapes (``NotFound`` -> ``NotFoundException``), for JSON errors.
        self._error_shapes = {
            str(shape.metadata.get("error", {}).get("code", shape.name)): shape.name
            for op in self._model.operation_names
            for shape in self._model.operation_model(op).error_shapes
        }
        # The chain of the invocation a function's credentials call from (set by the composition root).
        self.lineage_of: Callable[[Principal], Mapping[str, int]] = lambda _principal: {}

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        if request.headers.get("x-amz-target"):
            return await self._handle_json(request, caller, request_id)
        try:
            form = self._form(request)
            name = query.action_of(form)
            if name not in self._model.operation_names:
                raise E.SnsError(
                    "InvalidAction", f"The action {name[:100] or '(none)'} is not valid for this endpoint."
                )
            model = self._model.operation_model(name)
            try:
                params = self._reader.parse(model.input_shape, form)
            except query.QueryInputError as exc:
                raise E.invalid_parameter(exc.message) from None
            doc = await self._run(name, params, caller)
            body = self._writer.answer(name, model.output_shape, doc, request_id)
        except E.SnsError as exc:
            return self.error(exc, request_id)
        except Exception as exc:  # a full disk, a bug: SNS's 500, never the HTTP layer's bare one
            return self.error(_internal(exc), request_id)
        return Response(200, body, [("x-amzn-RequestId", request_id)], content_type="text/xml")

    async def _handle_json(self, request: Request, caller: Caller, request_id: str) -> Response:
        target = request.headers.get("x-amz-target", "")
        try:
            name = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
            if name not in self._model.operation_names:
                raise E.SnsError("InvalidAction", f"The action or operation requested is invalid: {target[:100]}.")
            try:
                params = json_limits.loads(request.body or b"{}")
            except ValueError as exc:
                raise E.SnsError("SerializationException", f"The body is not JSON: {exc}") from None
            if not isinstance(params, dict):
                raise E.SnsError("SerializationException", "The body must be a JSON object")
            doc = await self._run(name, params, caller)
        except E.SnsError as exc:
            return self._json_error(exc, request_id)
        except Exception as exc:  # a full disk, a bug: SNS's 500
            return self._json_error(_internal(exc), request_id)
        headers = [("x-amzn-RequestId", request_id)]
        return Response(200, json.dumps(doc).encode(), headers, content_type=_JSON)

    def _json_error(self, exc: E.SnsError, request_id: str) -> Response:
        shape = self._error_shapes.get(exc.code)
        kind = f"com.amazonaws.sns#{shape}" if shape else f"com.amazon.coral.service#{exc.code}"
        headers = [
            ("x-amzn-RequestId", request_id),
            ("x-amzn-query-error", f"{exc.code};{'Sender' if exc.sender else 'Receiver'}"),
        ]
        body = json.dumps({"__type": kind, "message": str(exc)}).encode()
        return Response(exc.status, body, headers, content_type=_JSON)

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        try:
            return query.form_of(request.body or b"", request.query)
        except query.QueryInputError as exc:
            raise E.SnsError(exc.code, exc.message) from None

    def refused(self, exc: AuthError, request: Request, request_id: str) -> Response:
        """A request whose signature failed, in SNS's words for it (SignatureDoesNotMatch, ...)."""
        code = wire_errors.sqs_query_code(exc)
        failure = E.SnsError(code, exc.message, wire_errors.status_of(exc))
        if request.headers.get("x-amz-target"):
            return self._json_error(failure, request_id)
        return self.error(failure, request_id)

    def error(self, exc: E.SnsError, request_id: str) -> Response:
        body = self._writer.error(exc.code, str(exc), request_id, sender=exc.sender)
        return Response(exc.status, body, [("x-amzn-RequestId", request_id)], content_type="text/xml")

    async def _run(self, name: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        op = self._ops.get(name)
        if op is None:
            raise E.unsupported(name)
        principal = caller.principal
        who = principal.function_arn or f"arn:aws:iam::{self._service.account}:root"
        if principal.kind != "admin" and name not in _FOR_FUNCTIONS:
            resource = params.get("TopicArn") or params.get("SubscriptionArn") or params.get("ResourceArn") or "*"
            raise E.authorization(who, name, str(resource)[:300])
        for required in self._model.operation_model(name).input_shape.required_members:
            if params.get(required) is None:  # an empty value is the operation's to refuse, in its words
                raise E.missing(required)
        lineage = self.lineage_of(principal) if principal.kind == "function" else None
        return await op(params, Call(who, lineage))

    # -- the SubscribeURL -------------------------------------------------------------------------------------

    @staticmethod
    def is_confirmation_link(request: Request) -> bool:
        """An unsigned ``GET /?Action=ConfirmSubscription&...`` (an endpoint following its SubscribeURL)."""
        return (
            request.method == "GET"
            and request.path == "/"
            and "authorization" not in request.headers
            and "Action=ConfirmSubscription" in request.query
            and "X-Amz-Credential" not in request.query
        )

    async def confirm_link(self, request: Request, request_id: str) -> Response:
        form = dict(urllib.parse.parse_qsl(request.query[:8192], keep_blank_values=True, max_num_fields=10))
        params = {"TopicArn": form.get("TopicArn", ""), "Token": form.get("Token", "")}
        try:
            doc = await self._service.confirm_subscription(params, Call())
            model = self._model.operation_model("ConfirmSubscription")
            body = self._writer.answer("ConfirmSubscription", model.output_shape, doc, request_id)
        except E.SnsError as exc:
            return self.error(exc, request_id)
        except Exception as exc:
            return self.error(_internal(exc), request_id)
        return Response(200, body, [("x-amzn-RequestId", request_id)], content_type="text/xml")


def _internal(exc: Exception) -> E.SnsError:
    failure = wire_errors.unexpected(exc, "sns")
    return E.internal(failure.message.replace("Lambda service", "topic service"))
