"""SQS's older wire, the query protocol (what SDKs spoke before AWS JSON 1.0 in 2023, and older clients still
do): ``Action=SendMessage&QueueUrl=...`` form posts (or the same in a GET's query string), answered with XML
under ``<SendMessageResponse><SendMessageResult>`` and ``<ResponseMetadata>``, errors as ``<ErrorResponse>``.

The shapes are botocore's current model's (the JSON protocol's); what the query protocol names differently is
the table below, SQS's query wire names as its query-protocol model stated them: every list and map is
flattened, a flattened list's items are named after its member (``AttributeName.1``, ``SendMessageBatchRequest
Entry.1.Id``), a flattened map's entries are ``<prefix>.<n>.<key name>`` / ``.<value name>`` (``Attribute.1.Name``,
``Attribute.1.Value``), and some members carry a name of their own (``Attributes`` is ``Attribute``).

Reading is bounded by the request (at most the form's fields, each parsed once); lists and maps must be
numbered from 1 without gaps, as the protocol numbers them (what follows a gap is ignored, as SQS does).
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from selfless.services.sqs import errors as E

NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
MAX_FIELDS = 10_000  # a 10-entry batch with 10 attributes each is ~400 fields

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


def action_of(form: Mapping[str, str]) -> str:
    return form.get("Action", "")


def form_of(body: bytes, query: str) -> dict[str, str]:
    """The request's fields: a form post's body, else its query string (the last value of a repeated one)."""
    text = body.decode("utf-8", "replace") if body else query
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise E.SqsError("MalformedQueryString", "MalformedQueryString", "Too many fields in the request") from None
    return dict(pairs)


def _name(structure: Any, member: str) -> str:
    named = _MEMBER_NAMES.get(f"{structure.name}.{member}")
    return named or _SHAPE_NAMES.get(structure.members[member].name, member)


def parse(shape: Any, form: Mapping[str, str]) -> dict[str, Any]:
    """An operation's input, in the JSON protocol's form, from the query protocol's fields."""
    if shape is None:
        return {}
    value = _read_structure(shape, form, "")
    return value if isinstance(value, dict) else {}


def _read(shape: Any, form: Mapping[str, str], key: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _read_structure(shape, form, key + ".")
    if kind == "list":
        return _read_list(shape, form, key)
    if kind == "map":
        return _read_map(shape, form, key)
    raw = form.get(key)
    if raw is None:
        return None
    if kind in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise E.invalid_parameter(f"Value {raw} for parameter {key} is invalid. Reason: not a number.") from None
    if kind == "boolean":
        return raw.lower() == "true"
    return raw  # blobs stay base64 text, as the JSON protocol carries them


def _read_structure(shape: Any, form: Mapping[str, str], prefix: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for member, member_shape in shape.members.items():
        name = _name(shape, member)
        if member_shape.type_name == "list" and member_shape.name in _LIST_ITEMS:
            name = _LIST_ITEMS[member_shape.name]
        value = _read(member_shape, form, prefix + name)
        if value is not None:
            out[member] = value
    return out or None


def _read_list(shape: Any, form: Mapping[str, str], key: str) -> list[Any] | None:
    items = []
    for i in range(1, MAX_FIELDS + 1):
        item = _read(shape.member, form, f"{key}.{i}")
        if item is None:
            break
        items.append(item)
    return items or None


def _read_map(shape: Any, form: Mapping[str, str], key: str) -> dict[str, Any] | None:
    key_name, value_name = _MAP_ENTRIES.get(shape.name, ("key", "value"))
    out: dict[str, Any] = {}
    for i in range(1, MAX_FIELDS + 1):
        entry_key = form.get(f"{key}.{i}.{key_name}")
        if entry_key is None:
            break
        value = _read(shape.value, form, f"{key}.{i}.{value_name}")
        out[entry_key] = "" if value is None and shape.value.type_name == "string" else value
    return out or None


# -- answers ---------------------------------------------------------------------------------------------------


def answer(operation: str, shape: Any, result: Mapping[str, Any], request_id: str) -> bytes:
    """``<{Op}Response>`` with ``<{Op}Result>`` (for operations that have an output) and the request id."""
    parts = [f'<?xml version="1.0"?><{operation}Response xmlns="{NAMESPACE}">']
    if shape is not None and shape.members:
        parts.append(f"<{operation}Result>")
        _write_members(shape, result, parts)
        parts.append(f"</{operation}Result>")
    parts.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{operation}Response>")
    return "".join(parts).encode()


def _write_members(shape: Any, value: Mapping[str, Any], parts: list[str]) -> None:
    for member, member_shape in shape.members.items():
        if value.get(member) is None:
            continue
        name = _name(shape, member)
        item = value[member]
        if member_shape.type_name == "list":
            item_name = _LIST_ITEMS.get(member_shape.name, name)
            for element in item:
                _write(member_shape.member, item_name, element, parts)
        elif member_shape.type_name == "map":
            key_name, value_name = _MAP_ENTRIES.get(member_shape.name, ("key", "value"))
            for k, v in item.items():
                parts.append(f"<{name}><{key_name}>{escape(str(k))}</{key_name}>")
                _write(member_shape.value, value_name, v, parts)
                parts.append(f"</{name}>")
        else:
            _write(member_shape, name, item, parts)


def _write(shape: Any, name: str, value: Any, parts: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        parts.append(f"<{name}>")
        _write_members(shape, value, parts)
        parts.append(f"</{name}>")
        return
    if kind == "blob":
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)  # base64 already
    elif kind == "boolean":
        text = "true" if value else "false"
    else:
        text = escape(str(value))
    parts.append(f"<{name}>{text}</{name}>")


def error(exc: E.SqsError, request_id: str) -> bytes:
    kind = "Sender" if exc.sender else "Receiver"
    return (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(exc.query_code)}</Code><Message>{escape(exc.message)}</Message><Detail/></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
