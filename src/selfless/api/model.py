"""The Lambda service model from botocore: routes, request parsing and constraint validation.

botocore ships the model every SDK is generated from; selfless reads it instead of retyping shapes. From it:

- ``Router`` matches ``(method, raw path)`` to an operation, with each ``{Label}`` as one path segment and
  ``{Label+}`` greedy (trailing slashes tolerated: ListFunctions arrives without one, older clients with).
- ``parse`` builds an operation's input dict from URI labels, query string, headers and the JSON body (or
  the raw payload for blob-payload operations such as Invoke).
- ``validate`` checks the modelled constraints (required, type, min/max, length, pattern, enum) and raises
  ``ValidationError`` with AWS's wording: ``1 validation error detected: Value '100' at 'memorySize'
  failed to satisfy constraint: Member must have value greater than or equal to 128``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import botocore.session

from selfless import json_limits
from selfless.errors import InvalidRequestContent, ValidationError

# Limits AWS enforces beyond what the model states (by shape name: recent models allow memory and /tmp up
# to 32768 for other compute types, and state no timeout maximum).
EXTRA_LIMITS: dict[str, dict[str, int]] = {
    "MemorySize": {"max": 10240},
    "Timeout": {"max": 900},
    "EphemeralStorageSize": {"max": 10240},
}


@functools.cache
def service_model(name: str = "lambda") -> Any:
    return botocore.session.get_session().get_service_model(name)


@dataclasses.dataclass(frozen=True)
class Route:
    operation: str
    method: str
    regex: re.Pattern[str]
    labels: tuple[str, ...]
    status: int
    # Literal query parameters the model's requestUri carries (``?List=ALL``): the request must have them.
    query: tuple[tuple[str, str], ...] = ()


class Router:
    def __init__(self, model: Any) -> None:
        self._routes: dict[str, list[Route]] = {}
        for name in model.operation_names:
            op = model.operation_model(name)
            uri, _, literal = op.http["requestUri"].partition("?")
            query = tuple((k, v) for k, v in urllib.parse.parse_qsl(literal, keep_blank_values=True))
            labels: list[str] = []

            def label(m: re.Match[str], labels: list[str] = labels) -> str:
                greedy = m.group(1).endswith("+")
                labels.append(m.group(1).rstrip("+"))
                return "(.+)" if greedy else "([^/]+)"

            pattern = re.sub(r"\\\{([^}]+)\\\}", label, re.escape(uri).replace(r"\+", "+"))
            regex = re.compile("^" + pattern.rstrip("/") + "/?$")
            route = Route(name, op.http["method"], regex, tuple(labels), int(op.http.get("responseCode", 200)), query)
            self._routes.setdefault(route.method, []).append(route)
        # Routes that need a literal query first (same path otherwise), literal routes before labelled ones,
        # longer before shorter, so /functions/{F}/code beats /functions/{F}.
        for routes in self._routes.values():
            routes.sort(key=lambda r: (not r.query, len(r.labels), -len(r.regex.pattern)))

    def match(self, method: str, path: str, query: str = "") -> tuple[Route, dict[str, str]] | None:
        given = set(urllib.parse.parse_qsl(query, keep_blank_values=True)) if query else set()
        for route in self._routes.get(method, ()):
            if route.query and not given.issuperset(route.query):
                continue
            m = route.regex.match(path)
            if m:
                return route, {k: urllib.parse.unquote(v) for k, v in zip(route.labels, m.groups(), strict=True)}
        return None

    def allows_path(self, path: str) -> bool:
        return any(r.regex.match(path) for routes in self._routes.values() for r in routes)


def parse(op: Any, labels: Mapping[str, str], query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The operation's input parameters from the wire, before validation."""
    shape = op.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    qs = urllib.parse.parse_qs(query, keep_blank_values=True)
    payload_member = shape.serialization.get("payload")
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if loc == "uri":
            if wire in labels:
                params[name] = labels[wire]
        elif loc == "querystring":
            if wire in qs:
                values = qs[wire]
                params[name] = values if member.type_name == "list" else values[-1]
        elif loc == "header":
            value = headers.get(wire.lower())
            if value is not None:
                params[name] = value
    if payload_member is not None:
        member = shape.members[payload_member]
        if member.type_name == "blob":
            params[payload_member] = body
        elif body:
            params[payload_member] = _json_body(body)
    elif body:
        doc = _json_body(body)
        if not isinstance(doc, dict):
            raise InvalidRequestContent("Could not parse request body into json: expected an object")
        for name, member in shape.members.items():
            if "location" not in member.serialization and name in doc:
                params[name] = doc[name]
    return params


def _json_body(body: bytes) -> Any:
    try:
        return json_limits.loads(body)
    except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
        raise InvalidRequestContent(f"Could not parse request body into json: {exc}") from None


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _coerce(shape: Any, value: Any) -> Any:
    """Values from the URI, query string and headers arrive as text; make them the modelled type."""
    if isinstance(value, str):
        if shape.type_name in ("integer", "long"):
            try:
                return int(value)
            except ValueError:
                raise ValidationError(
                    f"1 validation error detected: Value '{value}' failed to satisfy constraint: "
                    "Member must be a number"
                ) from None
        if shape.type_name == "boolean":
            return value.lower() == "true"
    return value


def coerce_params(op: Any, params: dict[str, Any]) -> dict[str, Any]:
    shape = op.input_shape
    if shape is None:
        return params
    for name, member in shape.members.items():
        if name in params and "location" in member.serialization:
            params[name] = _coerce(member, params[name])
    return params


def validate(op: Any, params: Mapping[str, Any]) -> None:
    """Raise ValidationError listing every modelled constraint the input breaks, in AWS's words."""
    errors: list[str] = []
    shape = op.input_shape
    if shape is not None:
        _check_structure(shape, params, "", errors)
    _raise_for(errors)


def validate_member(op: Any, name: str, value: Any) -> None:
    """``validate`` for one member of the operation's input (a lean parser's way to the same words)."""
    errors: list[str] = []
    _check(op.input_shape.members[name], value, _lower_camel(name), errors)
    _raise_for(errors)


def _raise_for(errors: list[str]) -> None:
    if errors:
        n = len(errors)
        raise ValidationError(f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors))


def _shown(shape: Any, value: Any) -> str:
    if shape.metadata.get("sensitive"):
        return "Value"
    if isinstance(value, bool):
        value = str(value).lower()
    return f"Value '{value}'"


def _check_structure(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(value, Mapping):
        errors.append(f"Value at '{path}' failed to satisfy constraint: Member must be a structure")
        return
    for req in shape.required_members:
        if value.get(req) is None:
            errors.append(f"Value null at '{_join(path, req)}' failed to satisfy constraint: Member must not be null")
    for name, member in shape.members.items():
        if name in value and value[name] is not None:
            _check(member, value[name], _join(path, name), errors)


def _join(path: str, name: str) -> str:
    return f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    t = shape.type_name
    meta = dict(shape.metadata)
    meta.update(EXTRA_LIMITS.get(shape.name, {}))
    shown = _shown(shape, value)
    if t == "structure":
        _check_structure(shape, value, path, errors)
        return
    if t == "list":
        if not isinstance(value, list):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a list")
            return
        _length(meta, len(value), shown, path, errors)
        if shape.member.type_name == "string":
            _check_string_list(shape.member, value, path, errors)
            return
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}.{i + 1}.member", errors)
        return
    if t == "map":
        if not isinstance(value, Mapping):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a map")
            return
        _length(meta, len(value), shown, path, errors)
        _check_map_members(shape, value, path, errors)
        return
    if t in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a number")
            return
        for rule in _value_rules(meta, float):
            limit = meta["min"] if "greater" in rule else meta["max"]
            if ("greater" in rule and value < limit) or ("less" in rule and value > limit):
                errors.append(f"{shown} at '{path}' failed to satisfy constraint: {rule}")
        return
    if t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a number")
            return
        if "min" in meta and value < meta["min"]:
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )
        return
    if t == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a boolean")
        return
    if t == "blob":
        return
    if t == "string":
        if not isinstance(value, str):
            errors.append(f"{shown} at '{path}' failed to satisfy constraint: Member must be a string")
            return
        _length(meta, len(value), shown, path, errors)
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(enum)}]"
            )
        pattern = meta.get("pattern")
        if pattern and not _full_match(pattern, value):
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )


def _check_string_list(member: Any, value: list[Any], path: str, errors: list[str]) -> None:
    """AWS reports a list of strings with a bad member once, at the list, naming every constraint of its
    members: "Value '[a, b]' at 'layers' failed to satisfy constraint: Member must satisfy constraint:
    [Member must have length less than or equal to 140, ..., Member must satisfy regular expression ...]"."""
    found: list[str] = []
    for i, item in enumerate(value):
        _check(member, item, f"{path}.{i + 1}.member", found)
    if not found:
        return
    meta = dict(member.metadata)
    meta.update(EXTRA_LIMITS.get(member.name, {}))
    rules = []
    if "max" in meta:
        rules.append(f"Member must have length less than or equal to {meta['max']}")
    if "min" in meta:
        rules.append(f"Member must have length greater than or equal to {meta['min']}")
    enum = getattr(member, "enum", None)
    if enum:
        rules.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    if "pattern" in meta:
        rules.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    if not all(isinstance(item, str) for item in value):
        rules.insert(0, "Member must be a string")
    shown = "Value" if member.metadata.get("sensitive") else f"Value '[{', '.join(str(v) for v in value)}]'"
    errors.append(
        f"{shown} at '{path}' failed to satisfy constraint: Member must satisfy constraint: [{', '.join(rules)}]"
    )


def _check_map_members(shape: Any, value: Mapping[Any, Any], path: str, errors: list[str]) -> None:
    """AWS reports a map with a bad key (or value) once, at the map, shown as Java renders it, naming every
    constraint of its keys (values): "Value '{k=v}' at 'tags' failed to satisfy constraint: Map keys must
    satisfy constraint: [Member must have length less than or equal to 128, ..., Member must not be null]"."""
    shown = "Value" if shape.metadata.get("sensitive") else f"Value '{_java_map(value)}'"
    for member, items, what in ((shape.key, list(value), "Map keys"), (shape.value, list(value.values()), "Map value")):
        found: list[str] = []
        for item in items:
            _check(member, item, path, found)
        if found:
            errors.append(
                f"{shown} at '{path}' failed to satisfy constraint: {what} must satisfy constraint: "
                f"[{', '.join(_member_rules(member))}]"
            )


def _java_map(value: Mapping[Any, Any]) -> str:
    return "{" + ", ".join(f"{k}={_java_scalar(v)}" for k, v in value.items()) + "}"


def _java_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _value_rules(meta: Mapping[str, Any], kind: type) -> list[str]:
    rules = []
    if "max" in meta:
        rules.append(f"Member must have value less than or equal to {kind(meta['max'])}")
    if "min" in meta:
        rules.append(f"Member must have value greater than or equal to {kind(meta['min'])}")
    return rules


def _member_rules(member: Any) -> list[str]:
    """Every constraint of a map's keys or values, in the order AWS lists them."""
    meta = dict(member.metadata)
    meta.update(EXTRA_LIMITS.get(member.name, {}))
    rules: list[str] = []
    if member.type_name in ("double", "float"):
        rules += _value_rules(meta, float)
    elif member.type_name in ("integer", "long"):
        rules += _value_rules(meta, int)
    else:
        if "max" in meta:
            rules.append(f"Member must have length less than or equal to {meta['max']}")
        if "min" in meta:
            rules.append(f"Member must have length greater than or equal to {meta['min']}")
        enum = getattr(member, "enum", None)
        if enum:
            rules.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
        if "pattern" in meta:
            rules.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    rules.append("Member must not be null")
    return rules


def _length(meta: Mapping[str, Any], n: int, shown: str, path: str, errors: list[str]) -> None:
    if "min" in meta and n < meta["min"]:
        errors.append(
            f"{shown} at '{path}' failed to satisfy constraint: "
            f"Member must have length greater than or equal to {meta['min']}"
        )
    if "max" in meta and n > meta["max"]:
        errors.append(
            f"{shown} at '{path}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {meta['max']}"
        )


# Java's Unicode classes that model patterns use (TagKey, TagValue), inside a character class, in Python's
# terms: letters and numbers are word characters (\w, which adds "_", a character those patterns allow
# anyway); separators are listed (Unicode category Z).
_JAVA_CLASSES = {
    r"\p{L}": r"\w",
    r"\p{N}": r"\w",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
}


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern)
    except re.error:
        # A few model patterns use Java classes (\p{...}) that Python's re lacks; those go unchecked.
        return None


def _full_match(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return compiled is None or compiled.fullmatch(value) is not None


def output_members(op: Any) -> dict[str, Any]:
    shape = op.output_shape
    return dict(shape.members) if shape is not None else {}
