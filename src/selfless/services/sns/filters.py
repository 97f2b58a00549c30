"""Subscription filter policies, as SNS has them: the event-pattern syntax of ``events.filtering`` (exact
values, prefix, suffix, equals-ignore-case, anything-but, numeric, exists, cidr, ``$or``), matched against

- the message's attributes (``FilterPolicyScope`` MessageAttributes, the default): a flat policy whose keys
  are attribute names. A String attribute matches by its text, a Number attribute by its number (exact values
  by their text, ``numeric`` by value), a String.Array attribute when any of its elements matches; Binary
  attributes match nothing. A message without the attribute matches only ``{"exists": false}``;
- the message body (``MessageBody``): the body parsed as JSON, the policy shaped like it (nested objects
  allowed); a body that is not a JSON object matches no policy.

Validation, as SNS refuses a policy on Subscribe / SetSubscriptionAttributes (InvalidParameter, "Invalid
parameter: FilterPolicy: ..."): JSON that is an object of rules, at most 5 keys (leaf keys, ``$or`` branches
included), at most 150 combinations of values (the product of each key's rule count, summed over ``$or``
branches), at most 256 KB.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from selfless.events import filtering
from selfless.services.sns import errors as E

MAX_KEYS = 5
MAX_COMBINATIONS = 150
MAX_POLICY_BYTES = 256 * 1024
SCOPES = ("MessageAttributes", "MessageBody")


def _refuse(reason: str) -> E.SnsError:
    return E.invalid_parameter(f"FilterPolicy: {reason}")


@functools.lru_cache(maxsize=1024)
def compiled(text: str, scope: str) -> filtering.Pattern:
    """The policy compiled (cached: a publish matches every subscription's policy); SnsError when SNS would
    refuse it."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise _refuse(f"Filter policy is too long (at most {MAX_POLICY_BYTES} bytes)")
    try:
        pattern = filtering.compile_pattern(text, max_chars=MAX_POLICY_BYTES)
    except filtering.InvalidPattern as exc:
        raise _refuse(f"{exc}") from None
    except RecursionError:  # nested past what a policy of at most 5 keys can need
        raise _refuse("Filter policy is too deeply nested") from None
    if scope == "MessageAttributes" and _nested(pattern):
        raise _refuse("Filter policy scope MessageAttributes does not support nested filter policy")
    if len(_leaf_keys(pattern, "")) > MAX_KEYS:
        raise _refuse(f"Filter policy can not have more than {MAX_KEYS} keys")
    if _combinations(pattern) > MAX_COMBINATIONS:
        raise _refuse("Filter policy is too complex")
    return pattern


def check(text: str, scope: str) -> None:
    compiled(text, scope)


def _nested(pattern: filtering.Pattern) -> bool:
    if any(isinstance(test, filtering.Pattern) for _key, test in pattern.fields):
        return True
    return any(_nested(p) for options in pattern.alternatives for p in options)


def _leaf_keys(pattern: filtering.Pattern, path: str) -> set[str]:
    keys: set[str] = set()
    for key, test in pattern.fields:
        if isinstance(test, filtering.Pattern):
            keys |= _leaf_keys(test, f"{path}{key}.")
        else:
            keys.add(path + key)
    for options in pattern.alternatives:
        for p in options:
            keys |= _leaf_keys(p, path)
    return keys


def _combinations(pattern: filtering.Pattern) -> int:
    total = 1
    for _key, test in pattern.fields:
        total *= _combinations(test) if isinstance(test, filtering.Pattern) else len(test)
    for options in pattern.alternatives:
        total *= sum(_combinations(p) for p in options)
    return total


def attribute_values(attributes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Message attributes (wire form: DataType, StringValue / BinaryValue) as the values a policy sees."""
    out: dict[str, Any] = {}
    for name, attribute in attributes.items():
        kind = str(attribute.get("DataType", "")).split(".", 1)
        text = attribute.get("StringValue")
        if text is None:
            continue  # Binary: matched by nothing
        if kind[0] == "Number":
            try:
                out[name] = filtering.Number(str(text), float(text))
            except ValueError:
                continue
        elif kind[0] == "String" and len(kind) > 1 and kind[1] == "Array":
            try:
                values = filtering.loads(str(text))
            except (ValueError, RecursionError):
                continue
            if isinstance(values, list):
                out[name] = values
        else:
            out[name] = str(text)
    return out


def matches(policy: str, scope: str, attributes: Mapping[str, Mapping[str, Any]], body: str) -> bool:
    """Whether a message passes a subscription's policy (a stored policy that no longer compiles passes
    nothing)."""
    try:
        pattern = compiled(policy, scope)
    except E.SnsError:
        return False
    if scope == "MessageBody":
        try:
            doc = filtering.loads(body)
        except (ValueError, RecursionError):
            return False
        return isinstance(doc, dict) and pattern.matches(doc)
    return pattern.matches(attribute_values(attributes))


def policy_text(value: str) -> str:
    """A policy as GetSubscriptionAttributes shows it: as given (SNS keeps the text)."""
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        raise _refuse("failed to parse JSON") from None
    return value
