"""A CloudWatch Logs API subset (JSON 1.1, ``Logs_20140328``) over the function logs on disk.

Enough for ``aws logs tail /aws/lambda/NAME --follow``, ``aws logs filter-log-events`` and ``selfless
logs``: DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents, and retention policies
(PutRetentionPolicy, DeleteRetentionPolicy). Groups are those functions log to (``/aws/lambda/<name>`` or their
LoggingConfig.LogGroup). Pages follow the events' order (a token names the last event given), and reads run off
the event loop, so a large group costs a page's memory and no stall. Only the administrator may read them
(``selfless.api.access``); a body that is not a JSON object, or is nested too deep, is SerializationException
as CloudWatch Logs answers it.
"""

from __future__ import annotations

import asyncio
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
    ServiceError,
    UnsupportedOperation,
)
from selfless.httpserver import Request, Response
from selfless.observability.logs import RETENTION_DAYS, LogStore

_TARGET_PREFIX = "Logs_20140328."
_MAX_EVENTS = 10_000


def _token(key: tuple[int, int, int, int] | None) -> str:
    """Where the next page starts: after the event with this key (None: from the start)."""
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode()


def _after(token: str | None) -> tuple[int, int, int, int] | None:
    if not token:
        return None
    try:
        key = json_limits.loads(base64.urlsafe_b64decode(token.encode()))["k"]
        if key is None:
            return None
        ts, crc, seq, line = (int(part) for part in key)
        return ts, crc, seq, line
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidParameterValue("The specified nextToken is invalid.") from None


def _limit(p: dict[str, Any]) -> int:
    try:
        return max(1, min(int(p.get("limit") or _MAX_EVENTS), _MAX_EVENTS))
    except (TypeError, ValueError):
        raise InvalidParameterValue("limit must be a number") from None


class LogsApi:
    def __init__(self, logs: LogStore, access: Access) -> None:
        self._logs = logs
        self._access = access
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "DescribeLogGroups": self._describe_log_groups,
            "DescribeLogStreams": self._describe_log_streams,
            "GetLogEvents": self._get_log_events,
            "FilterLogEvents": self._filter_log_events,
            "PutRetentionPolicy": self._put_retention_policy,
            "DeleteRetentionPolicy": self._delete_retention_policy,
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
        groups = []
        for g, created, stored in await asyncio.to_thread(self._logs.groups):
            if not g.startswith(prefix):
                continue
            group: dict[str, Any] = {
                "logGroupName": g,
                "creationTime": created,
                "arn": f"arn:aws:logs:::log-group:{g}:*",
                "storedBytes": stored,
            }
            days = self._logs.retention(g)
            if days is not None:
                group["retentionInDays"] = days
            groups.append(group)
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
                "storedBytes": stored,
            }
            for s, first, last, stored in await asyncio.to_thread(self._logs.streams, name)
            if s.startswith(prefix)
        ]
        if p.get("orderBy") == "LastEventTime":
            streams.sort(key=lambda s: int(str(s["lastEventTimestamp"])))
        if p.get("descending"):
            streams.reverse()
        return {"logStreams": streams}

    async def _get_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        stream = str(p.get("logStreamName"))
        if not any(s == stream for s, *_ in await asyncio.to_thread(self._logs.streams, name)):
            raise ResourceNotFound("The specified log stream does not exist.")
        token = p.get("nextToken")
        after = _after(token[2:] if isinstance(token, str) and token[:2] in ("f/", "b/") else token)
        page = await asyncio.to_thread(
            self._logs.events,
            name,
            streams=[stream],
            start_ms=p.get("startTime"),
            end_ms=p.get("endTime"),
            after=after,
            limit=_limit(p),
        )
        next_token = _token(page[-1].key if page else after)
        return {
            "events": [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp} for e in page],
            "nextForwardToken": "f/" + next_token,
            "nextBackwardToken": "b/" + next_token,
        }

    async def _filter_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        limit = _limit(p)
        found = await asyncio.to_thread(
            self._logs.events,
            name,
            streams=p.get("logStreamNames"),
            start_ms=p.get("startTime"),
            end_ms=p.get("endTime"),
            pattern=(p.get("filterPattern") or "").strip('"') or None,
            after=_after(p.get("nextToken")),
            limit=limit + 1,  # one more: is there a next page?
        )
        page = found[:limit]
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
        if len(found) > limit:
            doc["nextToken"] = _token(page[-1].key)
        return doc

    async def _put_retention_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._group(p.get("logGroupName"))
        days = p.get("retentionInDays")
        if not isinstance(days, int) or isinstance(days, bool) or days not in RETENTION_DAYS:
            valid = ", ".join(str(d) for d in RETENTION_DAYS)
            raise InvalidParameterValue(f"Invalid retention value. Valid values are: [{valid}]")
        await self._keep_retention(name, days)
        return {}

    async def _delete_retention_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        await self._keep_retention(self._group(p.get("logGroupName")), None)
        return {}

    async def _keep_retention(self, group: str, days: int | None) -> None:
        try:
            await self._logs.set_retention(group, days)
        except OSError as exc:  # a full or failing disk: said as AWS says it is unavailable, nothing changed
            raise ServiceError(f"The retention policy could not be stored: {exc.strerror or exc}") from exc
