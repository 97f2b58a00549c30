"""The Lambda service model from botocore: routes, request parsing and constraint validation.

botocore ships the model every SDK is generated from; selfless reads it instead of retyping shapes. From it:

- ``Router`` matches ``(method, raw path)`` to an operation, with each ``{Label}`` as one path segment and
  ``{Label+}`` greedy (trailing slashes tolerated: ListFunctions arrives without one, older clients with).
- ``parse`` builds an operation's input dict from URI labels, query string, headers and the JSON body (or
  the raw payload for blob-payload operations such as Invoke).
- ``validate`` checks the modelled constraints (required, type, min/max, length, pattern, enum) and raises
  ``ValidationError`` with AWS's wording, every violation in one message: ``1 validation error detected:
  Value '100' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to
  128``. Paths are AWS's (Java-side) member names: lowerCamel, dotted (``environment.variables``), list
  members as ``fileSystemConfigs.1.member``; a collection whose members break their rules is reported once,
  at the collection, naming every rule of its members.
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


def _coerce(shape: Any, value: Any, path: str) -> Any:
    """Values from the URI, query string and headers arrive as text; make them the modelled type."""
    if isinstance(value, str):
        if shape.type_name in ("integer", "long"):
            try:
                return int(value)
            except ValueError:
                raise ValidationError(
                    f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: "
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
            params[name] = _coerce(member, params[name], _lower_camel(name))
    return params


# Input members whose modelled enum Lambda does not enforce as a ValidationException: a Runtime may also be
# a runtime's ARN, so Lambda refuses an unknown one itself, with InvalidParameterValueException and its own
# words (``selfless.functions``).
_SERVICE_CHECKED: dict[str, frozenset[str]] = {
    "CreateFunction": frozenset({"Runtime"}),
    "UpdateFunctionConfiguration": frozenset({"Runtime"}),
}


def validate(op: Any, params: Mapping[str, Any]) -> None:
    """Raise ValidationError listing every modelled constraint the input breaks, in AWS's words: members in
    the model's order, each member's constraints in the order AWS checks them (type, length, enum, pattern),
    values rendered as AWS's validator prints them (:func:`render`)."""
    errors: list[str] = []
    shape = op.input_shape
    if shape is not None:
        _check_structure(shape, params, "", errors, _SERVICE_CHECKED.get(op.name, frozenset()))
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


def render(value: Any) -> str:
    """A value as AWS's (Java) validator prints it in a message: text as it is, ``null``, ``true``/``false``,
    a double with its fraction (``1.0``), a list as ``[a, b]``, a map as ``{k=v, k2=v2}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(k)}={render(v)}" for k, v in value.items()) + "}"
    return str(value)


def _sensitive(shape: Any) -> bool:
    if shape.metadata.get("sensitive"):
        return True
    if shape.type_name == "map":
        return bool(shape.key.metadata.get("sensitive") or shape.value.metadata.get("sensitive"))
    if shape.type_name == "list":
        return bool(shape.member.metadata.get("sensitive"))
    return False


def _shown(shape: Any, value: Any) -> str:
    """How a message names the value: never echoed for a sensitive member (``Value at 'x'``)."""
    if _sensitive(shape):
        return "Value"
    if value is None:
        return "Value null"
    return f"Value '{render(value)}'"


def _failed(shown: str, path: str, rule: str) -> str:
    return f"{shown} at '{path}' failed to satisfy constraint: {rule}"


def _meta(shape: Any) -> dict[str, Any]:
    meta = dict(shape.metadata)
    meta.update(EXTRA_LIMITS.get(shape.name, {}))
    return meta


def _check_structure(
    shape: Any, value: Any, path: str, errors: list[str], service_checked: frozenset[str] = frozenset()
) -> None:
    if not isinstance(value, Mapping):
        errors.append(_failed(_shown(shape, value), path, "Member must be a structure"))
        return
    # Member by member in the model's order, a missing required one where it stands.
    required = set(shape.required_members)
    for name, member in shape.members.items():
        given = value.get(name)
        if given is None:
            if name in required:
                errors.append(_failed("Value null", _join(path, name), "Member must not be null"))
            continue
        _check(member, given, _join(path, name), errors, enum=name not in service_checked)


def _join(path: str, name: str) -> str:
    return f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)


_NUMBERS = ("integer", "long", "float", "double")


def _number(shape: Any, bound: Any) -> str:
    return render(float(bound)) if shape.type_name in ("float", "double") else str(bound)


def _type_rule(shape: Any, value: Any) -> str | None:
    """The rule a value of the wrong JSON type breaks (None when the type is right)."""
    t = shape.type_name
    if t == "string" and not isinstance(value, str):
        return "Member must be a string"
    if t in ("integer", "long") and (isinstance(value, bool) or not isinstance(value, int)):
        return "Member must be a number"
    if t in ("float", "double") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "Member must be a number"
    if t == "boolean" and not isinstance(value, bool):
        return "Member must be a boolean"
    if t == "list" and not isinstance(value, list):
        return "Member must be a list"
    if t == "map" and not isinstance(value, Mapping):
        return "Member must be a map"
    return None


def _broken(shape: Any, value: Any, enum: bool = True) -> list[str]:
    """The rules a scalar (or a collection's size) breaks, in the order AWS checks them: bounds (the lower
    first), then the enum, then the pattern."""
    meta = _meta(shape)
    t = shape.type_name
    rules: list[str] = []
    if t in _NUMBERS:
        if "min" in meta and value < meta["min"]:
            rules.append(f"Member must have value greater than or equal to {_number(shape, meta['min'])}")
        if "max" in meta and value > meta["max"]:
            rules.append(f"Member must have value less than or equal to {_number(shape, meta['max'])}")
        return rules
    if t in ("string", "list", "map"):
        n = len(value)
        if "min" in meta and n < meta["min"]:
            rules.append(f"Member must have length greater than or equal to {meta['min']}")
        if "max" in meta and n > meta["max"]:
            rules.append(f"Member must have length less than or equal to {meta['max']}")
    if t == "string":
        allowed = getattr(shape, "enum", None)
        if enum and allowed and value not in allowed:
            rules.append(f"Member must satisfy enum value set: [{', '.join(allowed)}]")
        pattern = meta.get("pattern")
        if pattern and not _full_match(pattern, value):
            rules.append(f"Member must satisfy regular expression pattern: {pattern}")
    return rules


def _all_rules(shape: Any) -> list[str]:
    """Every rule of a collection's member (key, value) shape, as AWS lists them when one member breaks any:
    upper bound, lower bound, enum, pattern, and last that it may not be null."""
    meta = _meta(shape)
    t = shape.type_name
    rules: list[str] = []
    if t in _NUMBERS:
        if "max" in meta:
            rules.append(f"Member must have value less than or equal to {_number(shape, meta['max'])}")
        if "min" in meta:
            rules.append(f"Member must have value greater than or equal to {_number(shape, meta['min'])}")
    else:
        if "max" in meta:
            rules.append(f"Member must have length less than or equal to {meta['max']}")
        if "min" in meta:
            rules.append(f"Member must have length greater than or equal to {meta['min']}")
        allowed = getattr(shape, "enum", None)
        if allowed:
            rules.append(f"Member must satisfy enum value set: [{', '.join(allowed)}]")
        if "pattern" in meta:
            rules.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    rules.append("Member must not be null")
    return rules


def _check(shape: Any, value: Any, path: str, errors: list[str], enum: bool = True) -> None:
    t = shape.type_name
    if t == "structure":
        _check_structure(shape, value, path, errors)
        return
    if t == "blob":
        return
    wrong = _type_rule(shape, value)
    if wrong is not None:
        errors.append(_failed(_shown(shape, value), path, wrong))
        return
    shown = _shown(shape, value)
    errors.extend(_failed(shown, path, rule) for rule in _broken(shape, value, enum))
    if t == "list":
        _check_members(shape, value, shown, path, errors)
    elif t == "map":
        _check_entries(shape, value, shown, path, errors)


def _is_collection_of_scalars(shape: Any) -> bool:
    return shape.type_name not in ("structure", "list", "map", "blob")


def _scalar_ok(shape: Any, item: Any) -> bool:
    return item is not None and _type_rule(shape, item) is None and not _broken(shape, item)


def _collection_rule(what: str, shape: Any, items: list[Any]) -> str:
    rules = _all_rules(shape)
    wrong = next((rule for item in items if item is not None and (rule := _type_rule(shape, item))), None)
    if wrong is not None:
        rules.insert(0, wrong)
    return f"{what} must satisfy constraint: [{', '.join(rules)}]"


def _check_members(shape: Any, value: list[Any], shown: str, path: str, errors: list[str]) -> None:
    """AWS reports a list of scalars with a bad member once, at the list, naming every rule of its members:
    "Value '[a, b]' at 'layers' failed to satisfy constraint: Member must satisfy constraint: [Member must
    have length less than or equal to 140, ..., Member must not be null]". A list of structures is checked
    member by member, each at ``<list>.<n>.member``."""
    member = shape.member
    if _is_collection_of_scalars(member):
        if not all(_scalar_ok(member, item) for item in value):
            errors.append(_failed(shown, path, _collection_rule("Member", member, value)))
        return
    for i, item in enumerate(value):
        if item is None:
            errors.append(_failed("Value null", f"{path}.{i + 1}.member", "Member must not be null"))
        else:
            _check(member, item, f"{path}.{i + 1}.member", errors)


def _check_entries(shape: Any, value: Mapping[Any, Any], shown: str, path: str, errors: list[str]) -> None:
    """A map with a bad key or value is reported at the map, once for its keys and once for its values:
    "Value '{k=v}' at 'x' failed to satisfy constraint: Map keys must satisfy constraint: [...]"."""
    if not all(_scalar_ok(shape.key, key) for key in value):
        errors.append(_failed(shown, path, _collection_rule("Map keys", shape.key, list(value))))
    if _is_collection_of_scalars(shape.value):
        if not all(_scalar_ok(shape.value, v) for v in value.values()):
            errors.append(_failed(shown, path, _collection_rule("Map value", shape.value, list(value.values()))))
        return
    for v in value.values():
        if v is not None:
            _check(shape.value, v, f"{path}.value", errors)


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
