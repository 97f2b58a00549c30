"""Resource-based policies of functions and layer versions: the pure logic, no storage and no HTTP.

AddPermission and AddLayerVersionPermission each turn their request into one IAM statement; the statements of a
resource (a function, a version, an alias, a layer version) form its policy, which GetPolicy and
GetLayerVersionPolicy return as a compact JSON string::

    {"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"s3","Effect":"Allow",
     "Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction",
     "Resource":"arn:aws:lambda:us-east-2:123456789012:function:f",
     "Condition":{"StringEquals":{"AWS:SourceAccount":"123456789012"},"ArnLike":{"AWS:SourceArn":"arn:aws:s3:::b"}}}]}

A ``Policy`` is an immutable value: ``add`` and ``remove`` return a new one with a new ``revision_id``, which
callers store, and the RevisionId a request carries must name the current one. Statement order is insertion
order, as AWS keeps it. Messages are AWS's, as recorded against AWS (botocore's examples, LocalStack's
AWS-validated snapshots, and error reports from AWS users).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from selfless.errors import (
    InvalidParameterValue,
    PolicyLengthExceeded,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)

VERSION = "2012-10-17"
POLICY_ID = "default"
# AWS's quota on a resource-based policy: "The final policy size (20749) is bigger than the limit (20480)."
MAX_POLICY_BYTES = 20480

# The model's patterns (service-2.json shapes Action, LayerPermissionAllowedAction and
# LayerPermissionAllowedPrincipal), quoted in AWS's ValidationException messages.
ACTION_PATTERN = "(lambda:[*]|lambda:[a-zA-Z]+|[*])"
LAYER_ACTION_PATTERN = "lambda:GetLayerVersion"
LAYER_PRINCIPAL_PATTERN = r"\d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root"

_ACTION = re.compile(ACTION_PATTERN)
_LAYER_PRINCIPAL = re.compile(LAYER_PRINCIPAL_PATTERN)
_ACCOUNT = re.compile(r"\d{12}")
# Service principals are DNS names under AWS's service domains: s3.amazonaws.com, logs.us-east-2.amazonaws.com,
# alexa-appkit.amazon.com, and the China partition's *.amazonaws.com.cn.
_SERVICE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.(amazonaws\.com(\.cn)?|amazon\.com)")
# An IAM entity: the account root, a user or a role. AWS also checks that the entity exists; we cannot.
_IAM_ARN = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:\S+")

# Which request parameter becomes which condition, in the order AWS writes them (an AWS-recorded statement with
# FunctionUrlAuthType, PrincipalOrgID, SourceAccount and SourceArn lists them in this order).
_CONDITIONS = (
    ("FunctionUrlAuthType", "StringEquals", "lambda:FunctionUrlAuthType"),
    ("PrincipalOrgID", "StringEquals", "aws:PrincipalOrgID"),
    ("SourceAccount", "StringEquals", "AWS:SourceAccount"),
    ("EventSourceToken", "StringEquals", "lambda:EventSourceToken"),
    ("SourceArn", "ArnLike", "AWS:SourceArn"),
)

_STALE_FUNCTION = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)
_STALE_LAYER = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetLayerPolicy API to retrieve the latest Revision Id"
)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The statements of one resource, in the order they were added, and the revision that names this state.

    A policy is never empty: removing its last statement leaves no policy (``remove`` returns None).
    """

    statements: tuple[dict[str, Any], ...]
    revision_id: str

    @property
    def sids(self) -> tuple[str, ...]:
        return tuple(s["Sid"] for s in self.statements)


def function_statement(params: Mapping[str, Any], resource_arn: str) -> dict[str, Any]:
    """The statement AddPermission stores for ``params`` (its request) on ``resource_arn``.

    ``resource_arn`` is the function's ARN, qualified when the permission is for a version or an alias.
    The partition of account principals comes from ``resource_arn``. Raises ValidationError when Action
    breaks the model's pattern and InvalidParameterValue when Principal is none of: ``*``, an account id, a
    service principal, an IAM ARN.
    """
    action = params["Action"]
    if not _ACTION.fullmatch(action):
        raise ValidationError(_pattern_error(action, "action", ACTION_PATTERN))
    statement: dict[str, Any] = {
        "Sid": params["StatementId"],
        "Effect": "Allow",
        "Principal": _function_principal(params["Principal"], _partition(resource_arn)),
        "Action": action,
        "Resource": resource_arn,
    }
    condition: dict[str, dict[str, str]] = {}
    for param, operator, key in _CONDITIONS:
        if params.get(param):
            condition.setdefault(operator, {})[key] = params[param]
    # A Bool condition, which IAM writes as a string. False is written too: dropping it would widen the grant
    # to invocations through the URL, which the caller excluded.
    if isinstance(params.get("InvokedViaFunctionUrl"), bool):
        condition["Bool"] = {"lambda:InvokedViaFunctionUrl": str(params["InvokedViaFunctionUrl"]).lower()}
    if condition:
        statement["Condition"] = condition
    return statement


def layer_statement(params: Mapping[str, Any], layer_version_arn: str) -> dict[str, Any]:
    """The statement AddLayerVersionPermission stores for ``params`` (its request) on ``layer_version_arn``.

    Principal ``*`` stays ``*``; an account id becomes its root ARN. OrganizationId limits ``*`` to one
    organization. Raises ValidationError, in the model's words, for any Action but ``lambda:GetLayerVersion``
    and for a Principal outside the model's pattern.
    """
    action = params["Action"]
    if action != LAYER_ACTION_PATTERN:
        raise ValidationError(_pattern_error(action, "action", LAYER_ACTION_PATTERN))
    principal = params["Principal"]
    if not _LAYER_PRINCIPAL.fullmatch(principal):
        raise ValidationError(_pattern_error(principal, "principal", LAYER_PRINCIPAL_PATTERN))
    statement: dict[str, Any] = {
        "Sid": params["StatementId"],
        "Effect": "Allow",
        "Principal": _account_principal(principal, _partition(layer_version_arn)),
        "Action": action,
        "Resource": layer_version_arn,
    }
    if params.get("OrganizationId"):
        statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": params["OrganizationId"]}}
    return statement


def add(policy: Policy | None, statement: Mapping[str, Any], revision_id: str | None, *, layer: bool = False) -> Policy:
    """``policy`` with ``statement`` appended, under a new revision id.

    ``revision_id`` (the request's RevisionId, None when absent) must equal ``policy.revision_id``; with no
    policy yet there is nothing it can name, so any value fails. ``layer`` picks the layer wording of that error.
    Raises PreconditionFailed on a stale revision, ResourceConflict when the Sid exists, and
    PolicyLengthExceeded when the policy would pass 20480 bytes, checked
    in that order.
    """
    _check_revision(policy, revision_id, layer)
    current = policy.statements if policy is not None else ()
    sid = statement["Sid"]
    if any(s["Sid"] == sid for s in current):
        raise ResourceConflict(
            f"The statement id ({sid}) provided already exists. "
            "Please provide a new statement id, or remove the existing statement."
        )
    # A copy, so that no caller can change a stored policy through the dict it passed in.
    statements = (*current, copy.deepcopy(dict(statement)))
    size = len(_document(statements).encode())
    if size > MAX_POLICY_BYTES:
        raise PolicyLengthExceeded(f"The final policy size ({size}) is bigger than the limit ({MAX_POLICY_BYTES}).")
    return Policy(statements, str(uuid.uuid4()))


def remove(policy: Policy | None, sid: str, revision_id: str | None, *, layer: bool = False) -> Policy | None:
    """``policy`` without the statement ``sid``, under a new revision id; None when no statement is left.

    Raises ResourceNotFound when there is no policy or no such statement, and PreconditionFailed when
    ``revision_id`` (None when absent) is not ``policy.revision_id`` (checked before the statement).
    """
    if policy is None:
        raise ResourceNotFound("No policy is associated with the given resource.")
    _check_revision(policy, revision_id, layer)
    kept = tuple(s for s in policy.statements if s["Sid"] != sid)
    if len(kept) == len(policy.statements):
        raise ResourceNotFound(f"Statement {sid} is not found in resource policy.")
    return Policy(kept, str(uuid.uuid4())) if kept else None


def document(policy: Policy) -> str:
    """The Policy string GetPolicy and GetLayerVersionPolicy return: compact JSON, keys in AWS's order."""
    return _document(policy.statements)


def statement_json(statement: Mapping[str, Any]) -> str:
    """The Statement string AddPermission and AddLayerVersionPermission return, written as ``document`` writes it."""
    return _dumps(statement)


def from_document(text: str, revision_id: str) -> Policy:
    """The Policy whose ``document`` is ``text``: how a stored policy comes back."""
    return Policy(tuple(json.loads(text)["Statement"]), revision_id)


def _check_revision(policy: Policy | None, revision_id: str | None, layer: bool) -> None:
    if revision_id is not None and (policy is None or revision_id != policy.revision_id):
        raise PreconditionFailed(_STALE_LAYER if layer else _STALE_FUNCTION)


def _function_principal(principal: str, partition: str) -> str | dict[str, str]:
    if principal == "*" or _ACCOUNT.fullmatch(principal):
        return _account_principal(principal, partition)
    if _SERVICE.fullmatch(principal):
        return {"Service": principal}
    if _IAM_ARN.fullmatch(principal):
        return {"AWS": principal}
    raise InvalidParameterValue("The provided principal was invalid. Please check the principal and try again.")


def _account_principal(principal: str, partition: str) -> str | dict[str, str]:
    """``*`` as is, an account id as its root ARN, an ARN as is (the forms both operations share)."""
    if principal == "*":
        return "*"
    if _ACCOUNT.fullmatch(principal):
        return {"AWS": f"arn:{partition}:iam::{principal}:root"}
    return {"AWS": principal}


def _partition(arn: str) -> str:
    # arn:<partition>:lambda:...: accounts are named in the resource's partition (aws, aws-cn, aws-us-gov).
    parts = arn.split(":")
    return parts[1] if len(parts) > 1 and parts[0] == "arn" and parts[1] else "aws"


def _pattern_error(value: str, field: str, pattern: str) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}"
    )


def _document(statements: Iterable[Mapping[str, Any]]) -> str:
    return _dumps({"Version": VERSION, "Id": POLICY_ID, "Statement": list(statements)})


def _dumps(value: object) -> str:
    # AWS writes compact JSON, non-ASCII as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def of_attributes(attributes: Mapping[str, str]) -> Policy:
    """The policy in a queue's or topic's ``Policy`` attribute (its statements; none when it is absent or not
    a policy document)."""
    try:
        statements = json.loads(attributes.get("Policy") or "{}").get("Statement") or []
    except (ValueError, AttributeError):
        statements = []
    if isinstance(statements, dict):
        statements = [statements]
    return Policy(tuple(s for s in statements if isinstance(s, dict)), "")


def allows_service(
    policy: Policy | None,
    service: str,
    action: str,
    *,
    source_arn: str | None = None,
    source_account: str | None = None,
) -> bool:
    """Whether ``policy`` lets the service principal ``service`` (``s3.amazonaws.com``) do ``action``
    (``lambda:InvokeFunction``) on behalf of ``source_arn`` / ``source_account``: an Allow statement naming
    that principal (or ``*``) and the action (or ``lambda:*``, ``*``), whose conditions all hold. The
    conditions evaluated are those AddPermission writes (ArnLike/ArnEquals/StringEquals/StringLike on
    AWS:SourceArn and AWS:SourceAccount); a statement with any other condition key grants nothing here,
    as a condition that cannot be shown to hold must not widen a grant."""
    if policy is None:
        return False
    context = {"aws:sourcearn": source_arn, "aws:sourceaccount": source_account}
    return any(_grants(statement, service, action, context) for statement in policy.statements)


def allows_anyone(policy: Policy | None, action: str, context: Mapping[str, str]) -> bool:
    """Whether ``policy`` lets everyone (principal ``*``) do ``action``, its conditions evaluated against
    ``context`` ({lower-case condition key: value}); a statement with any other condition key grants nothing,
    as for ``allows_service``."""
    if policy is None:
        return False
    return any(_grants(statement, "", action, context) for statement in policy.statements)


def _grants(statement: Mapping[str, Any], service: str, action: str, context: Mapping[str, str | None]) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    principal = statement.get("Principal")
    services = principal.get("Service") if isinstance(principal, dict) else None
    if principal != "*" and service not in (services if isinstance(services, list) else [services]):
        return False
    actions = statement.get("Action")
    # IAM compares action names without case ("SNS:Publish" grants sns:Publish).
    patterns = actions if isinstance(actions, list) else [actions]
    if not any(isinstance(p, str) and _glob(p.lower(), action.lower()) for p in patterns):
        return False
    for operator, clauses in (statement.get("Condition") or {}).items():
        for key, wanted in clauses.items():
            value = context.get(key.lower())
            if value is None or operator not in _OPERATORS:
                return False
            patterns = wanted if isinstance(wanted, list) else [wanted]
            if not any(_OPERATORS[operator](str(pattern), value) for pattern in patterns):
                return False
    return True


def _glob(pattern: object, value: str) -> bool:
    """IAM's wildcard match: ``*`` any run, ``?`` one character, case-sensitive."""
    if not isinstance(pattern, str):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _bool(pattern: str, value: str) -> bool:
    """IAM compares booleans as strings, without case (AddPermission writes "true" / "false")."""
    return pattern.lower() == value.lower()


_OPERATORS = {
    "StringEquals": lambda pattern, value: pattern == value,
    "StringLike": _glob,
    "ArnEquals": lambda pattern, value: pattern == value,
    "ArnLike": _glob,
    "Bool": _bool,
}
