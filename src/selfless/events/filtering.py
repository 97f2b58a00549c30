"""Lambda's event filtering: the FilterCriteria of an event source mapping, in EventBridge's event-pattern syntax
as Lambda documents it ("Control which events Lambda sends to your function"), and how an SQS record meets it.

A pattern is a JSON object shaped like the record it matches. Every key must match (AND); a key's value is
either a nested object (a pattern for the object under that key) or a non-empty list of rules, of which any
one must match (OR). ``"$or": [pattern, ...]`` matches when any of its patterns does. A rule is:

    "Alice", 100, true, null, ""              the value itself: strings character by character, numbers by
                                              their text (300, 300.0 and 3.0e2 differ), booleans, null, empty
    {"prefix": "us-"}                         begins with; {"prefix": {"equals-ignore-case": "us-"}} too
    {"suffix": ".png"}                        ends with; {"suffix": {"equals-ignore-case": ".PNG"}} too
    {"equals-ignore-case": "alice"}           equal without regard to case
    {"anything-but": "x" | 5 | ["x", "y"] | [1, 2] | {"prefix": "p"} | {"suffix": "s"}
                     | {"equals-ignore-case": "x" | ["x", "y"]}}
                                              any value present that is not one of those
    {"numeric": ["=", 5]}, {"numeric": [">", 0, "<=", 5]}
                                              JSON numbers compared as numbers (-5e9 to 5e9, as EventBridge)
    {"exists": true | false}                  whether the key has a value (a leaf: an object is no value)
    {"cidr": "10.0.0.0/24"}                   an IPv4 or IPv6 address inside the network

When the record holds an array, a rule matches if it matches any element, and a nested pattern matches if it
matches any object of the array. ``wildcard`` is EventBridge's, but Lambda does not document it for event
source mappings (nor do EventBridge Pipes, which filter the same way), so it is refused like any unknown
operator.

Validation (``criteria``) refuses what AWS refuses on Create/UpdateEventSourceMapping, with its wording
(InvalidParameterValueException ``Invalid filter pattern definition.``): a pattern that is not a JSON object,
an empty object or rule list, an unknown or malformed operator; at most 5 filters (Lambda's default quota),
each pattern at most 4,096 characters (the service model's limit).

SQS (``sqs_accepts``): the pattern is matched against the record as the function would see it. When the body is
a JSON object, a ``body`` pattern object matches into it; when it is not, only a ``body`` rule list (a plain
string pattern) can match, and a pattern that expects the other format drops the message, as AWS does.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from selfless.errors import InvalidParameterValue

MAX_FILTERS = 5
MAX_PATTERN_CHARS = 4096
NUMERIC_LIMIT = 5.0e9
INVALID = "Invalid filter pattern definition."


class InvalidPattern(ValueError):
    """A filter pattern AWS would refuse; the message says why (for logs and tests, not for clients)."""


@dataclasses.dataclass(frozen=True)
class Number:
    """A JSON number with its text: exact matching compares the text, ``numeric`` the value."""

    text: str
    value: float


def _number(text: str) -> Number:
    return Number(text, float(text))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str) -> Any:
    """JSON with numbers as ``Number``; ValueError when ``text`` is not JSON (NaN and Infinity are not)."""
    return json.loads(text, parse_int=_number, parse_float=_number, parse_constant=_no_constant)


# -- the compiled pattern -------------------------------------------------------------------------------------

Leaf = str | Number | bool | None
Rule = Callable[[list[Leaf]], bool]  # the key's leaf values (empty: the key has none) -> match


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A compiled pattern: ``fields`` AND-ed, each with its rules (OR-ed) or a nested pattern; ``alternatives``
    (``$or``) of which one must match as well."""

    fields: tuple[tuple[str, tuple[Rule, ...] | Pattern], ...]
    alternatives: tuple[tuple[Pattern, ...], ...] = ()

    def matches(self, event: Any) -> bool:
        if isinstance(event, list):  # an array of objects: one of them must match the whole pattern
            return any(self.matches(e) for e in _flat(event) if isinstance(e, dict))
        found: Mapping[str, Any] = event if isinstance(event, dict) else {}
        for key, test in self.fields:
            if isinstance(test, Pattern):
                if not test.matches(found.get(key, {})):
                    return False
            else:
                values = _leaves(found[key]) if key in found else []
                if not any(rule(values) for rule in test):
                    return False
        return all(any(p.matches(found) for p in options) for options in self.alternatives)

    def keys(self) -> set[str]:
        """The top-level keys the pattern names (in ``$or`` too)."""
        out = {key for key, _ in self.fields}
        for options in self.alternatives:
            for p in options:
                out |= p.keys()
        return out

    def field(self, key: str) -> tuple[Rule, ...] | Pattern | None:
        return next((test for k, test in self.fields if k == key), None)


def _flat(values: list[Any]) -> Iterator[Any]:
    for v in values:
        if isinstance(v, list):
            yield from _flat(v)
        else:
            yield v


def _leaves(value: Any) -> list[Leaf]:
    """The leaf values under a key: the value, or the elements of an array; objects are not leaves."""
    items = list(_flat(value)) if isinstance(value, list) else [value]
    return [v for v in items if not isinstance(v, dict)]


# -- compiling (and validating) ------------------------------------------------------------------------------


def compile_pattern(text: str, max_chars: int = MAX_PATTERN_CHARS) -> Pattern:
    """The compiled pattern; InvalidPattern when AWS would refuse it (``max_chars``: the caller's service's
    limit on its length, Lambda's by default)."""
    if len(text) > max_chars:
        raise InvalidPattern(f"longer than {max_chars} characters")
    try:
        doc = loads(text)
    except ValueError as exc:
        raise InvalidPattern(f"not JSON: {exc}") from None
    return _object(doc, "pattern")


def _object(doc: Any, where: str) -> Pattern:
    if not isinstance(doc, dict) or not doc:
        raise InvalidPattern(f"{where}: expected a non-empty object")
    fields: list[tuple[str, tuple[Rule, ...] | Pattern]] = []
    alternatives: list[tuple[Pattern, ...]] = []
    for key, value in doc.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise InvalidPattern(f"{where}: $or takes a list of at least two patterns")
            alternatives.append(tuple(_object(p, f"{where}.$or") for p in value))
        elif isinstance(value, dict):
            fields.append((key, _object(value, f"{where}.{key}")))
        elif isinstance(value, list) and value:
            fields.append((key, tuple(_rule(r, f"{where}.{key}") for r in value)))
        else:
            raise InvalidPattern(f"{where}.{key}: expected an object or a non-empty list of rules")
    return Pattern(tuple(fields), tuple(alternatives))


def _rule(spec: Any, where: str) -> Rule:
    if spec is None or isinstance(spec, str | bool | Number):
        return _any(lambda v: _same(v, spec))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise InvalidPattern(f"{where}: a rule is a value or an object with one operator")
    ((op, arg),) = spec.items()
    if op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern(f"{where}: exists takes true or false")
        return (lambda values: bool(values)) if arg else (lambda values: not values)
    if op in ("prefix", "suffix"):
        text, fold = _string_or_ignore_case(arg, op, where)
        test = str.startswith if op == "prefix" else str.endswith
        if fold:
            return _any(lambda v: isinstance(v, str) and test(v.casefold(), text))
        return _any(lambda v: isinstance(v, str) and test(v, text))
    if op == "equals-ignore-case":
        if not isinstance(arg, str):
            raise InvalidPattern(f"{where}: equals-ignore-case takes a string")
        folded = arg.casefold()
        return _any(lambda v: isinstance(v, str) and v.casefold() == folded)
    if op == "anything-but":
        excluded = _anything_but(arg, where)
        return _any(lambda v: not excluded(v))
    if op == "numeric":
        within = _numeric(arg, where)
        return _any(lambda v: isinstance(v, Number) and within(v.value))
    if op == "cidr":
        network = _network(arg, where)
        return _any(lambda v: _in_network(v, network))
    raise InvalidPattern(f"{where}: unknown operator {op!r}")


def _any(test: Callable[[Leaf], bool]) -> Rule:
    return lambda values: any(test(v) for v in values)


def _same(value: Leaf, spec: Leaf) -> bool:
    if spec is None or isinstance(spec, bool):
        return value is spec
    if isinstance(spec, Number):
        return isinstance(value, Number) and value.text == spec.text
    return isinstance(value, str) and value == spec


def _string_or_ignore_case(arg: Any, op: str, where: str) -> tuple[str, bool]:
    if isinstance(arg, str):
        return arg, False
    if isinstance(arg, dict) and list(arg) == ["equals-ignore-case"] and isinstance(arg["equals-ignore-case"], str):
        return arg["equals-ignore-case"].casefold(), True
    raise InvalidPattern(f'{where}: {op} takes a string or {{"equals-ignore-case": string}}')


def _anything_but(arg: Any, where: str) -> Callable[[Leaf], bool]:
    """Which values the anything-but excludes."""
    if isinstance(arg, str | Number):
        arg = [arg]
    if isinstance(arg, list):
        if not arg:
            raise InvalidPattern(f"{where}: anything-but takes a non-empty list")
        if all(isinstance(a, str) for a in arg):
            words = set(arg)
            return lambda v: isinstance(v, str) and v in words
        if all(isinstance(a, Number) for a in arg):
            numbers = {a.value for a in arg}
            return lambda v: isinstance(v, Number) and v.value in numbers
        raise InvalidPattern(f"{where}: anything-but takes strings or numbers, not both")
    if isinstance(arg, dict) and len(arg) == 1:
        ((op, value),) = arg.items()
        if op in ("prefix", "suffix") and isinstance(value, str) and value:
            test = str.startswith if op == "prefix" else str.endswith
            return lambda v: isinstance(v, str) and test(v, value)
        if op == "equals-ignore-case":
            words_list = [value] if isinstance(value, str) else value
            if isinstance(words_list, list) and words_list and all(isinstance(w, str) for w in words_list):
                folded = {w.casefold() for w in words_list}
                return lambda v: isinstance(v, str) and v.casefold() in folded
    raise InvalidPattern(f"{where}: anything-but takes a value, a list, or one of prefix, suffix, equals-ignore-case")


_LOWER = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_UPPER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def _numeric(arg: Any, where: str) -> Callable[[float], bool]:
    def bound(op: Any, n: Any) -> float:
        if not isinstance(n, Number) or not -NUMERIC_LIMIT <= n.value <= NUMERIC_LIMIT:
            raise InvalidPattern(f"{where}: numeric {op} takes a number between -5e9 and 5e9")
        return n.value

    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidPattern(f"{where}: numeric takes [op, number] or [op, number, op, number]")
    op1 = arg[0]
    if len(arg) == 2:
        n = bound(op1, arg[1])
        if op1 == "=":
            return lambda v: v == n
        if op1 in _LOWER:
            return lambda v: _LOWER[op1](v, n)
        if op1 in _UPPER:
            return lambda v: _UPPER[op1](v, n)
        raise InvalidPattern(f"{where}: unknown numeric operator {op1!r}")
    op2 = arg[2]
    low, high = bound(op1, arg[1]), bound(op2, arg[3])
    if op1 not in _LOWER or op2 not in _UPPER or low > high:
        raise InvalidPattern(f"{where}: a numeric range is a lower bound (> or >=) then an upper one (< or <=)")
    return lambda v: _LOWER[op1](v, low) and _UPPER[op2](v, high)


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(arg: Any, where: str) -> IpNetwork:
    if isinstance(arg, str):
        try:
            return ipaddress.ip_network(arg, strict=False)
        except ValueError:
            pass
    raise InvalidPattern(f"{where}: cidr takes an IPv4 or IPv6 network such as 10.0.0.0/24")


def _in_network(value: Leaf, network: IpNetwork) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return address.version == network.version and address in network


# -- FilterCriteria on the API --------------------------------------------------------------------------------


def criteria(value: Any) -> tuple[str, ...]:
    """The patterns of a FilterCriteria member as given (``{}`` or no Filters: none), each validated;
    InvalidParameterValue as AWS words it otherwise."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidParameterValue(INVALID)
    filters = value.get("Filters") or []
    if not isinstance(filters, list):
        raise InvalidParameterValue(INVALID)
    if len(filters) > MAX_FILTERS:
        raise InvalidParameterValue(
            f"The maximum number of filters per event source mapping has been reached: {MAX_FILTERS}"
        )
    patterns: list[str] = []
    for f in filters:
        pattern = f.get("Pattern") if isinstance(f, dict) else None
        if not isinstance(pattern, str):
            raise InvalidParameterValue(INVALID)
        try:
            compile_pattern(pattern)
        except InvalidPattern:
            raise InvalidParameterValue(INVALID) from None
        patterns.append(pattern)
    return tuple(patterns)


def criteria_doc(patterns: Sequence[str]) -> dict[str, Any]:
    """The FilterCriteria shape of the service model."""
    return {"Filters": [{"Pattern": p} for p in patterns]}


# -- SQS ------------------------------------------------------------------------------------------------------


def sqs_accepts(patterns: Sequence[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A test of SQS records (the event's shape) against the mapping's patterns (OR-ed)."""
    compiled = [compile_pattern(p) for p in patterns]

    def accepts(record: Mapping[str, Any]) -> bool:
        body = record.get("body")
        parsed: Any = None
        if isinstance(body, str):
            try:
                parsed = loads(body)
            except ValueError:
                parsed = None
        is_json = isinstance(parsed, dict)
        event = dict(record)
        if is_json:
            event["body"] = parsed
        return any(_body_format_fits(p, is_json) and p.matches(event) for p in compiled)

    return accepts


def mq_accepts(patterns: Sequence[str]) -> Callable[[Mapping[str, Any]], bool]:
    """A test of Amazon MQ messages (the event's message objects) against the mapping's patterns (OR-ed):
    ``data`` is filtered on as what its base64 decodes to, the JSON object when it is one, else the text, as
    Lambda does for MQ; the other members (``basicProperties``, ``redelivered``) as they are."""
    compiled = [compile_pattern(p) for p in patterns]

    def accepts(message: Mapping[str, Any]) -> bool:
        parsed: Any = None
        text: str | None = None
        try:
            text = base64.b64decode(str(message.get("data") or "")).decode()
            parsed = loads(text)
        except ValueError:  # not UTF-8 (UnicodeDecodeError) or not JSON
            parsed = None
        is_json = isinstance(parsed, dict)
        event = dict(message)
        event["data"] = parsed if is_json else text
        return any(_body_format_fits(p, is_json, "data") and p.matches(event) for p in compiled)

    return accepts


def _body_format_fits(pattern: Pattern, body_is_json: bool, field: str = "body") -> bool:
    """A ``body`` (``field``) pattern object needs a JSON body; a ``body`` rule list (a plain string pattern)
    needs one that is not. A pattern without ``body`` filters on the other members only."""
    test = pattern.field(field)
    if test is None:
        return True
    return isinstance(test, Pattern) == body_is_json
