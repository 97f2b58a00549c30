"""A CloudWatch Logs API subset (JSON 1.1, ``Logs_20140328``) over the function logs on disk.

Enough for ``aws logs tail /aws/lambda/NAME --follow``, ``aws logs filter-log-events`` and ``selfless
logs``: DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents. Only function log groups
(``/aws/lambda/<name>``) exist. Only the administrator may read them (``selfless.api.access``); a body that
is not a JSON object, or is nested too deep, is SerializationException as CloudWatch Logs answers it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any

from selfless import json_limits
from selfless.api import errors as wire_errors
from selfless.api.access import Access
from selfless.api.auth import Caller
from selfless.errors import (
    InvalidParameterValue,
    ResourceNotFound,
    SelflessError,
    Serialization,
    UnsupportedOperation,
)
from selfless.httpserver import Request, Response
from selfless.observability.logs import LogStore

_TARGET_PREFIX = "Logs_20140328."
_MAX_EVENTS = 10_000


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json_limits.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidParameterValue("The specified nextToken is invalid.") from None


class LogsApi:
    def __init__(self, logs: LogStore, access: Access) -> None:
        self._logs = logs
        self._access = access
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "DescribeLogGroups": self._describe_log_groups,
            "DescribeLogStreams": self._describe_log_streams,
            "GetLogEvents": self._get_log_events,
            "FilterLogEvents": self._filter_log_events,
        }

    async def handle(self, request: Request, caller: Caller, request_id: str) -> Response:
        try:
            target = request.headers.get("x-amz-target", "")
            name = target[len(_TARGET_PREFIX) :] if target.startswith(_TARGET_PREFIX) else ""
            op = self._ops.get(name)
            if op is None:
                raise UnsupportedOperation(f"{target or 'this operation'} is not supported by selfless yet")
            try:
                params = json_limits.loads(request.body or b"{}")
            except ValueError as exc:  # not JSON, not UTF-8, or nested too deep
                raise Serialization(f"The request body could not be parsed as JSON: {exc}") from None
            if not isinstance(params, dict):
                raise Serialization("The request body must be a JSON object")
            self._access.logs_call(caller, name, params)
            await self._logs.synced()  # every line written so far is readable
            doc = await op(params)
        except SelflessError as exc:
            return wire_errors.json_1_1(exc, request_id)
        except Exception as exc:  # a full disk, a bug: the service's 500, never the HTTP layer's bare one
            return wire_errors.json_1_1(wire_errors.unexpected(exc, "logs"), request_id)
        return Response(
            200,
            json.dumps(doc).encode(),
            [("x-amzn-RequestId", request_id)],
            content_type="application/x-amz-json-1.1",
        )

    def _group(self, group: Any) -> str:
        name = str(group or "")
        if not name or not self._logs.has_group(name):
            raise ResourceNotFound("The specified log group does not exist.")
        return name

    async def _describe_log_groups(self, p: dict[str, Any]) -> dict[str, Any]:
        prefix = p.get("logGroupNamePrefix") or ""
        groups = [
            {"logGroupName": g, "creationTime": t, "arn": f"arn:aws:logs:::log-group:{g}:*", "storedBytes": 0}
            for g, t in self._logs.groups()
            if g.startswith(prefix)
        ]
        return {"logGroups": groups}

    async def _describe_log_streams(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        prefix = p.get("logStreamNamePrefix") or ""
        streams = [
            {
                "logStreamName": s,
                "creationTime": first,
                "firstEventTimestamp": first,
                "lastEventTimestamp": last,
                "lastIngestionTime": last,
                "storedBytes": 0,
            }
            for s, first, last in self._logs.streams(name)
            if s.startswith(prefix)
        ]
        if p.get("orderBy") == "LastEventTime":
            streams.sort(key=lambda s: int(str(s["lastEventTimestamp"])))
        if p.get("descending"):
            streams.reverse()
        return {"logStreams": streams}

    async def _get_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        stream = p.get("logStreamName")
        if not any(s == stream for s, _f, _l in self._logs.streams(name)):
            raise ResourceNotFound("The specified log stream does not exist.")
        events = self._logs.events(name, streams=[str(stream)], start_ms=p.get("startTime"), end_ms=p.get("endTime"))
        offset = _offset(p.get("nextToken"))
        limit = min(int(p.get("limit") or _MAX_EVENTS), _MAX_EVENTS)
        page = events[offset : offset + limit]
        token = _token(offset + len(page))
        return {
            "events": [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp} for e in page],
            "nextForwardToken": "f/" + token,
            "nextBackwardToken": "b/" + token,
        }

    async def _filter_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        events = self._logs.events(
            name,
            streams=p.get("logStreamNames"),
            start_ms=p.get("startTime"),
            end_ms=p.get("endTime"),
            pattern=(p.get("filterPattern") or "").strip('"') or None,
        )
        offset = _offset(p.get("nextToken"))
        limit = min(int(p.get("limit") or _MAX_EVENTS), _MAX_EVENTS)
        page = events[offset : offset + limit]
        doc: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": e.stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.timestamp,
                    "eventId": e.event_id,
                }
                for e in page
            ],
            "searchedLogStreams": [],
        }
        if offset + len(page) < len(events):
            doc["nextToken"] = _token(offset + len(page))
        return doc
