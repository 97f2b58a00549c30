"""S3's REST-XML wire, read and written from botocore's own ``s3`` model: where each input member comes from
(URI label, query string, header, ``x-amz-meta-`` prefix, XML body) and where each output member goes (a
header, the status, the XML body with S3's element names, flattened lists and namespace).

Request XML is parsed with the standard library's expat-based parser after two guards: a size cap, and no
DOCTYPE (so no entity expansion, external or internal) — S3 takes no DTDs either.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import re
import time
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import botocore.session

from selfless.services.s3.errors import S3Error, malformed_xml

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML = 1 << 20  # bytes of request XML (a 1,000-key DeleteObjects is ~100 KB)
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


@functools.cache
def model() -> Any:
    return botocore.session.get_session().get_service_model("s3")


def operation(name: str) -> Any:
    return model().operation_model(name)


# -- input -----------------------------------------------------------------------------------------------------


def parse_input(
    op: Any, labels: Mapping[str, str], query: Mapping[str, str], headers: Mapping[str, str]
) -> dict[str, Any]:
    """The operation's input members from the URI labels, the query string and the headers (not the body)."""
    params: dict[str, Any] = {}
    for member, member_shape, location, name in _input_plan(op):
        raw: Any = None
        if location == "uri":
            raw = labels.get(name)
        elif location == "querystring":
            raw = query.get(name)
        elif location == "header":
            raw = headers.get(name)
        else:  # "headers": a prefix (x-amz-meta-)
            found = {k[len(name) :]: v for k, v in headers.items() if k.startswith(name)}
            if found:
                params[member] = found
            continue
        if raw is None:
            continue
        params[member] = raw if member_shape.type_name == "string" else _scalar(member_shape, raw, member)
    return params


@functools.cache
def _input_plan(op: Any) -> tuple[tuple[str, Any, str, str], ...]:
    """(member, shape, location, wire name; lower-case for headers) of each input member read from the request
    line or headers: worked out once per operation, not per request."""
    shape = op.input_shape
    if shape is None:
        return ()
    plan = []
    for member, member_shape in shape.members.items():
        ser = member_shape.serialization
        location = ser.get("location")
        if location not in ("uri", "querystring", "header", "headers"):
            continue
        name = ser.get("name", member)
        plan.append((member, member_shape, location, name.lower() if location in ("header", "headers") else name))
    return tuple(plan)


def _scalar(shape: Any, raw: str, member: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind == "boolean":
            return raw.lower() == "true"
        if kind == "timestamp":
            return parse_time(raw)
    except (ValueError, TypeError):
        raise S3Error("InvalidArgument", f"Invalid {member}: {raw}", ArgumentName=member, ArgumentValue=raw) from None
    return raw


def parse_time(raw: str) -> float:
    parsed = email.utils.parsedate_tz(raw)
    if parsed is not None:
        return float(email.utils.mktime_tz(parsed))
    return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


def parse_xml(shape: Any, body: bytes) -> dict[str, Any]:
    """A structure from request XML, by the model's element names (MalformedXML when it is not one)."""
    if len(body) > MAX_XML:
        raise S3Error("MalformedXML", f"The XML you provided was larger than {MAX_XML} bytes")
    if not body.strip() or _DOCTYPE.search(body):
        raise malformed_xml()
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise malformed_xml() from None
    value = _read(shape, root)
    if not isinstance(value, dict):
        raise malformed_xml()
    return value


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _read(shape: Any, node: ElementTree.Element) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        children = list(node)
        for member, member_shape in shape.members.items():
            name = member_shape.serialization.get("name", member)
            if member_shape.type_name == "list" and member_shape.serialization.get("flattened"):
                items = [c for c in children if _local(c.tag) == name]
                if items:
                    out[member] = [_read(member_shape.member, c) for c in items]
                continue
            for child in children:
                if _local(child.tag) == name:
                    out[member] = _read(member_shape, child)
                    break
        return out
    if kind == "list":
        item_name = shape.member.serialization.get("name", "member")
        return [_read(shape.member, c) for c in node if _local(c.tag) == item_name]
    text = node.text or ""
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise malformed_xml() from None
    if kind == "boolean":
        return text.strip().lower() == "true"
    if kind == "timestamp":
        return parse_time(text)
    if kind == "blob":
        return base64.b64decode(text)
    return text


# -- output ----------------------------------------------------------------------------------------------------


def iso(epoch: float) -> str:
    """S3's XML timestamps: ISO 8601 with milliseconds, UTC."""
    when = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(epoch: float) -> str:
    """RFC 7231's date (``Wed, 02 Dec 2026 10:00:00 GMT``), in English whatever the locale."""
    t = time.gmtime(epoch)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def output_headers(op: Any, value: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The output members the model puts in headers (``x-amz-meta-`` maps included)."""
    shape = op.output_shape
    out: list[tuple[str, str]] = []
    if shape is None:
        return out
    for member, member_shape in shape.members.items():
        if member not in value or value[member] is None:
            continue
        ser = member_shape.serialization
        name = ser.get("name", member)
        if ser.get("location") == "header":
            out.append((name, _header_text(member_shape, value[member])))
        elif ser.get("location") == "headers":
            out += [(f"{name}{k}", str(v)) for k, v in value[member].items()]
    return out


def _header_text(shape: Any, value: Any) -> str:
    if shape.type_name == "timestamp":
        return http_date(float(value))
    if shape.type_name == "boolean":
        return "true" if value else "false"
    return str(value)


def xml_body(op: Any, value: Mapping[str, Any], root: str) -> bytes:
    """The output's body members as S3's XML document under ``root``."""
    shape = op.output_shape
    payload = shape.serialization.get("payload") if shape is not None else None
    if payload is not None:
        shape = shape.members[payload]
        value = value.get(payload) or {}
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NAMESPACE}">']
    if shape is not None:
        _write_members(shape, value, parts, body_only=payload is None)
    parts.append(f"</{root}>")
    return "".join(parts).encode("utf-8")


def _write_members(shape: Any, value: Mapping[str, Any], parts: list[str], body_only: bool = False) -> None:
    for member, member_shape in shape.members.items():
        if member not in value or value[member] is None:
            continue
        ser = member_shape.serialization
        if body_only and ser.get("location"):
            continue
        name = ser.get("name", member)
        item = value[member]
        if member_shape.type_name == "list":
            item_shape = member_shape.member
            if ser.get("flattened"):
                for element in item:
                    _write(item_shape, name, element, parts)
            else:
                parts.append(f"<{name}>")
                item_name = item_shape.serialization.get("name", "member")
                for element in item:
                    _write(item_shape, item_name, element, parts)
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
    if kind == "timestamp":
        text = iso(float(value))
    elif kind == "boolean":
        text = "true" if value else "false"
    else:
        text = escape(str(value))
    parts.append(f"<{name}>{text}</{name}>")
