"""Who may do what: the one place that decides whether an authenticated caller may make a call.

Until roles carry policies there are two kinds of principal (``selfless.api.auth.Principal``):

* the administrator (the server's own key) may do everything;
* a function, through the session credentials each of its execution environments gets, may invoke any
  function (Invoke, InvokeAsync), read the account's settings (GetAccountSettings) and read its own
  configuration, code and tags, on any version or alias of itself (GetFunction, GetFunctionConfiguration,
  ListTags). Nothing else: not another function's configuration (its environment variables are its
  secrets), code, policy, aliases, versions, tags or concurrency; not ListFunctions (it lists every
  function's configuration); no change to anything; not the CloudWatch Logs API; none of selfless's own
  ``/_selfless/`` operations.

A refusal is AccessDeniedException (403) worded as IAM words an identity-based denial, naming the caller as
Lambda names a function's session (``arn:aws:sts::<account>:assumed-role/<role name>/<function name>``, the
role's name without its path), the IAM action and the resource the call is about::

    User: arn:aws:sts::000000000000:assumed-role/app-role/reader is not authorized to perform:
    lambda:GetFunction on resource: arn:aws:lambda:us-east-1:000000000000:function:other because no
    identity-based policy allows the lambda:GetFunction action

Calls are decided after their parameters are validated (AWS validates before it authorizes) and before
anything is looked up, so a refusal never tells whether the resource exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from selfless.api.auth import Caller, Principal
from selfless.config import Settings
from selfless.errors import AccessDenied, SelflessError
from selfless.functions import FunctionRegistry

# What a function's own credentials may do, by Lambda operation: whatever the resource, or on itself only.
_ANYWHERE = frozenset({"Invoke", "InvokeAsync", "GetAccountSettings"})
_ITSELF = frozenset({"GetFunction", "GetFunctionConfiguration", "ListTags"})
# IAM's action where it is not the operation's name.
_IAM_ACTION = {"Invoke": "InvokeFunction", "GetLayerVersionByArn": "GetLayerVersion"}
# selfless's own operations (``/_selfless/``), named as IAM actions of a "selfless" service.
LIST_EVENTS = "ListFunctionEvents"
REDRIVE_EVENTS = "RedriveFunctionEvents"

_ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::(?P<account>\d{12}):role/(?:.*/)?(?P<name>[^/]+)$")


class Access:
    """Decides every call of a principal (see the module docstring); raises AccessDenied for a refusal."""

    def __init__(self, settings: Settings, registry: FunctionRegistry) -> None:
        self._settings = settings
        self._registry = registry

    def lambda_call(self, caller: Caller, operation: str, params: Mapping[str, Any] | None = None) -> None:
        """May ``caller`` make this Lambda call? ``params``: the validated input, which names the resource
        (Invoke's lean path has none: any function may invoke any function)."""
        principal = caller.principal
        if principal.kind == "admin" or operation in _ANYWHERE:
            return
        resource, function = self._lambda_resource(params or {})
        if operation in _ITSELF and function is not None and function == _function_name(principal):
            return
        raise self._denied(principal, "lambda", _IAM_ACTION.get(operation, operation), resource)

    def logs_call(self, caller: Caller, operation: str, params: Mapping[str, Any]) -> None:
        """May ``caller`` make this CloudWatch Logs call? Only the administrator may: a function's role has
        no policy that lets it read logs."""
        if caller.principal.kind == "admin":
            return
        raise self._denied(caller.principal, "logs", operation, self._log_resource(operation, params))

    def selfless_call(self, caller: Caller, action: str, function_name: str) -> None:
        """May ``caller`` use one of selfless's own operations on a function's events? The administrator only."""
        if caller.principal.kind == "admin":
            return
        raise self._denied(caller.principal, "selfless", action, self._function_resource(function_name, None)[0])

    def admin_call(self, caller: Caller, action: str) -> None:
        """May ``caller`` use one of selfless's own account-wide operations (webhook triggers)? The
        administrator only."""
        if caller.principal.kind == "admin":
            return
        s = self._settings
        raise self._denied(caller.principal, "selfless", action, f"arn:aws:lambda:{s.region}:{s.account_id}:*")

    # -- resources --------------------------------------------------------------------------------------------

    def _lambda_resource(self, params: Mapping[str, Any]) -> tuple[str, str | None]:
        """The ARN IAM names for a call with these parameters, and the function it belongs to (None when it
        is no function's)."""
        if "FunctionName" in params:
            return self._function_resource(str(params["FunctionName"]), params.get("Qualifier"))
        if "Resource" in params:  # TagResource, UntagResource, ListTags: a function's ARN
            return self._function_resource(str(params["Resource"]), None)
        if "LayerName" in params:
            layer = str(params["LayerName"])
            s = self._settings
            arn = layer if layer.startswith("arn:") else f"arn:aws:lambda:{s.region}:{s.account_id}:layer:{layer}"
            return (f"{arn}:{params['VersionNumber']}" if "VersionNumber" in params else arn), None
        if "Arn" in params:  # GetLayerVersionByArn
            return str(params["Arn"]), None
        if "CodeSigningConfigArn" in params:  # a code signing configuration's own operations
            return str(params["CodeSigningConfigArn"]), None
        return "*", None

    def _function_resource(self, name_or_arn: str, qualifier: str | None) -> tuple[str, str | None]:
        try:
            name, in_arn = self._registry.resolve_name(name_or_arn)
        except SelflessError:  # another account's or region's ARN: named as given, nobody's here
            return name_or_arn, None
        qualifier = qualifier or in_arn
        return self._registry.arn(name) + (f":{qualifier}" if qualifier else ""), name

    def _log_resource(self, operation: str, params: Mapping[str, Any]) -> str:
        s = self._settings
        prefix = f"arn:aws:logs:{s.region}:{s.account_id}:log-group:"
        if operation == "DescribeLogGroups":
            return f"{prefix}:log-stream:"
        group = params.get("logGroupName")
        stream = params.get("logStreamName") if operation == "GetLogEvents" else None
        return f"{prefix}{_text(group)}:log-stream:{_text(stream)}"

    # -- the refusal -------------------------------------------------------------------------------------------

    def _denied(self, principal: Principal, service: str, action: str, resource: str) -> AccessDenied:
        return AccessDenied(
            f"User: {self._session_arn(principal)} is not authorized to perform: {service}:{action} on resource: "
            f"{resource} because no identity-based policy allows the {service}:{action} action"
        )

    def _session_arn(self, principal: Principal) -> str:
        """The caller as IAM names it: a function's role session, or the administrator's root user."""
        if principal.kind != "function":
            return f"arn:aws:iam::{self._settings.account_id}:root"
        name = _function_name(principal)
        try:
            role = self._registry.get(principal.function_arn or name).role
        except SelflessError:  # deleted while one of its environments still runs
            role = ""
        found = _ROLE_ARN.match(role or "")
        account, role_name = (found["account"], found["name"]) if found else (self._settings.account_id, name)
        return f"arn:aws:sts::{account}:assumed-role/{role_name}/{name}"


def _function_name(principal: Principal) -> str:
    """The function whose environment holds the key (its ARN may name a version)."""
    parts = (principal.function_arn or "").split(":")
    return parts[6] if len(parts) > 6 else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
