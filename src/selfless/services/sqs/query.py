"""SQS's older wire, the query protocol (what SDKs spoke before AWS JSON 1.0 in 2023, and older clients still
do), read and written by the shared ``services.query`` with the names SQS's query wire used.

The shapes are botocore's current model's (the JSON protocol's); what the query protocol names differently is
the table below, SQS's query wire names as its query-protocol model stated them: every list and map is
flattened, a flattened list's items are named after its member (``AttributeName.1``, ``SendMessageBatchRequest
Entry.1.Id``), a flattened map's entries are ``<prefix>.<n>.<key name>`` / ``.<value name>`` (``Attribute.1.Name``,
``Attribute.1.Value``), and some members carry a name of their own (``Attributes`` is ``Attribute``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfless.services import query as protocol
from selfless.services.sqs import errors as E

NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
MAX_FIELDS = protocol.MAX_FIELDS

# Structure members with a wire name of their own: "<structure shape>.<member>" -> name.
_MEMBER_NAMES = {
    "CreateQueueRequest.Attributes": "Attribute",
    "CreateQueueRequest.tags": "Tag",
    "GetQueueAttributesResult.Attributes": "Attribute",
    "ListQueueTagsResult.Tags": "Tag",
    "Message.Attributes": "Attribute",
    "Message.MessageAttributes": "MessageAttribute",
    "MessageAttributeValue.StringListValues": "StringListValue",
    "MessageAttributeValue.BinaryListValues": "BinaryListValue",
    "MessageSystemAttributeValue.StringListValues": "StringListValue",
    "MessageSystemAttributeValue.BinaryListValues": "BinaryListValue",
    "SendMessageBatchRequestEntry.MessageAttributes": "MessageAttribute",
    "SendMessageBatchRequestEntry.MessageSystemAttributes": "MessageSystemAttribute",
    "SendMessageRequest.MessageAttributes": "MessageAttribute",
    "SendMessageRequest.MessageSystemAttributes": "MessageSystemAttribute",
    "SetQueueAttributesRequest.Attributes": "Attribute",
}
# Shapes with a wire name of their own, wherever a member names them without one.
_SHAPE_NAMES = {"MessageSystemAttributeMap": "Attribute", "QueueAttributeMap": "Attribute", "TagMap": "Tag"}
# Flattened lists: list shape -> its items' name.
_LIST_ITEMS = {
    "AWSAccountIdList": "AWSAccountId",
    "ActionNameList": "ActionName",
    "AttributeNameList": "AttributeName",
    "BatchResultErrorEntryList": "BatchResultErrorEntry",
    "ChangeMessageVisibilityBatchRequestEntryList": "ChangeMessageVisibilityBatchRequestEntry",
    "ChangeMessageVisibilityBatchResultEntryList": "ChangeMessageVisibilityBatchResultEntry",
    "DeleteMessageBatchRequestEntryList": "DeleteMessageBatchRequestEntry",
    "DeleteMessageBatchResultEntryList": "DeleteMessageBatchResultEntry",
    "ListMessageMoveTasksResultEntryList": "ListMessageMoveTasksResultEntry",
    "MessageAttributeNameList": "MessageAttributeName",
    "MessageList": "Message",
    "MessageSystemAttributeList": "MessageSystemAttributeName",
    "QueueUrlList": "QueueUrl",
    "SendMessageBatchRequestEntryList": "SendMessageBatchRequestEntry",
    "SendMessageBatchResultEntryList": "SendMessageBatchResultEntry",
    "TagKeyList": "TagKey",
}
# Flattened maps: map shape -> (key name, value name).
_MAP_ENTRIES = {
    "MessageBodyAttributeMap": ("Name", "Value"),
    "MessageBodySystemAttributeMap": ("Name", "Value"),
    "MessageSystemAttributeMap": ("Name", "Value"),
    "QueueAttributeMap": ("Name", "Value"),
    "TagMap": ("Key", "Value"),
}


class SqsNaming:
    """SQS's query names (the table above): every list and map flattened."""

    def member(self, structure: Any, member: str) -> str:
        named = _MEMBER_NAMES.get(f"{structure.name}.{member}")
        return named or _SHAPE_NAMES.get(structure.members[member].name, member)

    def flattened(self, shape: Any) -> bool:
        return True

    def list_item(self, shape: Any, member_name: str) -> str:
        return _LIST_ITEMS.get(shape.name, member_name)

    def map_names(self, shape: Any) -> tuple[str, str]:
        return _MAP_ENTRIES.get(shape.name, ("key", "value"))


_READER = protocol.Reader(SqsNaming())
_WRITER = protocol.Writer(SqsNaming(), NAMESPACE)
action_of = protocol.action_of


def _sqs_error(exc: protocol.QueryInputError) -> E.SqsError:
    if exc.code == "InvalidParameterValue":
        return E.invalid_parameter(exc.message)
    return E.SqsError(exc.code, exc.code, exc.message)


def form_of(body: bytes, query: str) -> dict[str, str]:
    """The request's fields: a form post's body, else its query string (the last value of a repeated one)."""
    try:
        return protocol.form_of(body, query)
    except protocol.QueryInputError as exc:
        raise _sqs_error(exc) from None


def parse(shape: Any, form: Mapping[str, str]) -> dict[str, Any]:
    """An operation's input, in the JSON protocol's form, from the query protocol's fields."""
    try:
        return _READER.parse(shape, form)
    except protocol.QueryInputError as exc:
        raise _sqs_error(exc) from None


def answer(operation: str, shape: Any, result: Mapping[str, Any], request_id: str) -> bytes:
    """``<{Op}Response>`` with ``<{Op}Result>`` (for operations that have an output) and the request id."""
    return _WRITER.answer(operation, shape, result, request_id)


def error(exc: E.SqsError, request_id: str) -> bytes:
    return _WRITER.error(exc.query_code, exc.message, request_id, sender=exc.sender)
