"""AWS's query protocol, for every service that speaks it: ``Action=Publish&TopicArn=...`` form posts (or the
same in a GET's query string), answered with XML under ``<PublishResponse><PublishResult>`` and
``<ResponseMetadata>``, errors as ``<ErrorResponse>``.

How a shape's members are named on that wire is a ``Naming``'s business: ``ModelNaming`` reads it from a
query-protocol botocore model (SNS's: lists as ``Name.member.1``, maps as ``Name.entry.1.key`` /
``.value`` unless the model names them otherwise or flattens them), and a service whose current model is
another protocol's (SQS's, AWS JSON 1.0 since 2023) supplies the names its query wire used
(``services.sqs.query``).

Reading is bounded by the request (at most ``MAX_FIELDS`` fields, each parsed once); lists and maps must be
numbered from 1 without gaps, as the protocol numbers them (what follows a gap is ignored, as AWS does). A
field that does not read (a number that is not one) raises ``QueryInputError``, which each service words in
its own error.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol
from xml.sax.saxutils import escape

MAX_FIELDS = 10_000  # a 10-entry batch with 10 attributes each is ~400 fields


class QueryInputError(ValueError):
    """A request the protocol cannot read: ``code`` is the query protocol's error code (MalformedQueryString,
    InvalidParameterValue), the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Naming(Protocol):
    """How the query wire names a structure's members, a list's items and a map's entries."""

    def member(self, structure: Any, member: str) -> str: ...

    def flattened(self, shape: Any) -> bool:
        """A flattened list or map: its items straight under the member's name, no ``member``/``entry``."""
        ...

    def list_item(self, shape: Any, member_name: str) -> str:
        """A list's items' name: after ``member_name.`` (not flattened) or in its place (flattened)."""
        ...

    def map_names(self, shape: Any) -> tuple[str, str]:
        """A map entry's key and value names."""
        ...


class ModelNaming:
    """Names as a query-protocol model (botocore's ``serialization``) gives them, with the protocol's
    defaults (``member``, ``entry``, ``key``, ``value``)."""

    def member(self, structure: Any, member: str) -> str:
        return str(structure.members[member].serialization.get("name", member))

    def flattened(self, shape: Any) -> bool:
        return bool(shape.serialization.get("flattened"))

    def list_item(self, shape: Any, member_name: str) -> str:
        named = shape.member.serialization.get("name")
        if self.flattened(shape):
            return str(named or member_name)
        return str(named or "member")

    def map_names(self, shape: Any) -> tuple[str, str]:
        return str(shape.key.serialization.get("name", "key")), str(shape.value.serialization.get("name", "value"))


def action_of(form: Mapping[str, str]) -> str:
    return form.get("Action", "")


def form_of(body: bytes, query: str) -> dict[str, str]:
    """The request's fields: a form post's body, else its query string (the last value of a repeated one)."""
    text = body.decode("utf-8", "replace") if body else query
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise QueryInputError("MalformedQueryString", "Too many fields in the request") from None
    return dict(pairs)


class Reader:
    """An operation's input, in the JSON protocol's form (member names, typed values), from the fields."""

    def __init__(self, naming: Naming) -> None:
        self._naming = naming

    def parse(self, shape: Any, form: Mapping[str, str]) -> dict[str, Any]:
        if shape is None:
            return {}
        value = self._structure(shape, form, "")
        return value if isinstance(value, dict) else {}

    def _read(self, shape: Any, form: Mapping[str, str], key: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            return self._structure(shape, form, key + ".")
        if kind == "list":
            return self._list(shape, form, key)
        if kind == "map":
            return self._map(shape, form, key)
        raw = form.get(key)
        if raw is None:
            return None
        if kind in ("integer", "long"):
            try:
                return int(raw)
            except ValueError:
                raise QueryInputError(
                    "InvalidParameterValue", f"Value {raw[:100]} for parameter {key} is invalid. Reason: not a number."
                ) from None
        if kind == "boolean":
            return raw.lower() == "true"
        return raw  # blobs stay base64 text, as the JSON protocol carries them

    def _structure(self, shape: Any, form: Mapping[str, str], prefix: str) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for member, member_shape in shape.members.items():
            name = self._naming.member(shape, member)
            if member_shape.type_name == "list" and self._naming.flattened(member_shape):
                name = self._naming.list_item(member_shape, name)
            value = self._read(member_shape, form, prefix + name)
            if value is not None:
                out[member] = value
        return out or None

    def _list(self, shape: Any, form: Mapping[str, str], key: str) -> list[Any] | None:
        flat = self._naming.flattened(shape)
        if not flat and form.get(key) == "":
            return []  # an empty list, as botocore sends one: ``Name=``
        base = key if flat else f"{key}.{self._naming.list_item(shape, key)}"
        items = []
        for i in range(1, MAX_FIELDS + 1):
            item = self._read(shape.member, form, f"{base}.{i}")
            if item is None:
                break
            items.append(item)
        return items or None

    def _map(self, shape: Any, form: Mapping[str, str], key: str) -> dict[str, Any] | None:
        key_name, value_name = self._naming.map_names(shape)
        base = key if self._naming.flattened(shape) else f"{key}.entry"
        out: dict[str, Any] = {}
        for i in range(1, MAX_FIELDS + 1):
            entry_key = form.get(f"{base}.{i}.{key_name}")
            if entry_key is None:
                break
            value = self._read(shape.value, form, f"{base}.{i}.{value_name}")
            out[entry_key] = "" if value is None and shape.value.type_name == "string" else value
        return out or None


class Writer:
    """Answers and errors in the protocol's XML, under ``namespace``."""

    def __init__(self, naming: Naming, namespace: str) -> None:
        self._naming = naming
        self.namespace = namespace

    def answer(self, operation: str, shape: Any, result: Mapping[str, Any], request_id: str) -> bytes:
        """``<{Op}Response>`` with ``<{Op}Result>`` (for operations that have an output) and the request id."""
        parts = [f'<?xml version="1.0"?><{operation}Response xmlns="{self.namespace}">']
        # A model's result wrapper is written even when empty (botocore looks for it); else the result's.
        wrapper = shape.serialization.get("resultWrapper") if shape is not None else None
        if shape is not None and (shape.members or wrapper):
            name = wrapper or f"{operation}Result"
            parts.append(f"<{name}>")
            self._members(shape, result, parts)
            parts.append(f"</{name}>")
        parts.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{operation}Response>")
        return "".join(parts).encode()

    def _members(self, shape: Any, value: Mapping[str, Any], parts: list[str]) -> None:
        naming = self._naming
        for member, member_shape in shape.members.items():
            if value.get(member) is None:
                continue
            name = naming.member(shape, member)
            item = value[member]
            if member_shape.type_name == "list":
                if naming.flattened(member_shape):
                    for element in item:
                        self._write(member_shape.member, naming.list_item(member_shape, name), element, parts)
                else:
                    parts.append(f"<{name}>")
                    for element in item:
                        self._write(member_shape.member, naming.list_item(member_shape, name), element, parts)
                    parts.append(f"</{name}>")
            elif member_shape.type_name == "map":
                key_name, value_name = naming.map_names(member_shape)
                flat = naming.flattened(member_shape)
                if not flat:
                    parts.append(f"<{name}>")
                for k, v in item.items():
                    parts.append(f"<{name if flat else 'entry'}><{key_name}>{escape(str(k))}</{key_name}>")
                    self._write(member_shape.value, value_name, v, parts)
                    parts.append(f"</{name if flat else 'entry'}>")
                if not flat:
                    parts.append(f"</{name}>")
            else:
                self._write(member_shape, name, item, parts)

    def _write(self, shape: Any, name: str, value: Any, parts: list[str]) -> None:
        kind = shape.type_name
        if kind == "structure":
            parts.append(f"<{name}>")
            self._members(shape, value, parts)
            parts.append(f"</{name}>")
            return
        if kind == "blob":
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)  # base64 already
        elif kind == "boolean":
            text = "true" if value else "false"
        else:
            text = escape(str(value))
        parts.append(f"<{name}>{text}</{name}>")

    def error(self, code: str, message: str, request_id: str, *, sender: bool = True) -> bytes:
        kind = "Sender" if sender else "Receiver"
        return (
            f'<?xml version="1.0"?><ErrorResponse xmlns="{self.namespace}"><Error><Type>{kind}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message><Detail/></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
