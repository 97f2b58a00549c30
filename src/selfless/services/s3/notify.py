"""Bucket notifications as S3 has them: the configuration, validated as S3 validates it; which of its
function configurations an object event matches; and the event S3 sends a function (eventVersion 2.1).

The configuration arrives as botocore's ``NotificationConfiguration`` shape (member names, not XML
names): ``LambdaFunctionConfigurations`` of ``{Id, LambdaFunctionArn, Events, Filter: {Key: {FilterRules:
[{Name, Value}]}}}``. :func:`parse` checks it in S3's order and words and returns the function targets;
:func:`stored` gives the document as GetBucketNotificationConfiguration returns it (generated ids filled in).

What S3 checks and selfless checks alike:

* every event is one of S3's event types (botocore's ``Event`` enum);
* a filter has at most one ``prefix`` and one ``suffix`` rule (names compared without case, as S3 does),
  each value at most 1024 bytes;
* no two configurations share an event type for keys both could match ("Configurations overlap"): their
  event types overlap (equal, or one is ``X:*`` and the other ``X:...``), their prefixes overlap (one
  empty or a prefix of the other) and their suffixes overlap (one empty or a suffix of the other);
* each function exists and its resource policy lets ``s3.amazonaws.com`` invoke it for this bucket
  (:func:`check_destinations`, with the policy check given by the caller): otherwise S3's
  ``Unable to validate the following destination configurations``, naming each failed destination.

Queue and topic configurations name queues and topics of the built-in services (or of the external ones
the endpoint settings name). An EventBridge configuration sends every object event to the default event bus,
in EventBridge's shape (``bus_entry``), where rules match it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import botocore.session

__all__ = [
    "CREATED",
    "REMOVED",
    "NotificationError",
    "Sequencer",
    "Target",
    "check_destinations",
    "event_payload",
    "event_record",
    "parse",
    "stored",
]

# The event types S3 sends for what selfless's store does.
CREATED = (
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
)
REMOVED = ("s3:ObjectRemoved:Delete", "s3:ObjectRemoved:DeleteMarkerCreated")

_MAX_FILTER_VALUE = 1024
_MAX_ID = 255
_MAX_CONFIGURATIONS = 1000  # bounds a document's checks (quadratic in its configurations); S3 has no lower one
_UNVALIDATED = "Unable to validate the following destination configurations"


def _event_types() -> frozenset[str]:
    model = botocore.session.get_session().get_service_model("s3")
    return frozenset(model.shape_for("Event").enum)


EVENT_TYPES = _event_types()


class NotificationError(Exception):
    """A configuration S3 refuses: ``code`` (InvalidArgument, MalformedXML), ``message``, and the
    ``arguments`` S3 names in the error body as ArgumentName{n}/ArgumentValue{n} pairs."""

    def __init__(self, message: str, arguments: Sequence[tuple[str, str]] = (), code: str = "InvalidArgument"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.arguments = tuple(arguments)


@dataclasses.dataclass(frozen=True)
class Target:
    """One LambdaFunctionConfiguration (``kind`` "function": ``arn`` the function's, maybe qualified),
    QueueConfiguration (``kind`` "queue": ``arn`` the queue's) or TopicConfiguration (``kind`` "topic"):
    its id, event types and key filter ("" when a rule is absent); or the EventBridgeConfiguration (``kind``
    "bus", no id or ARN: every object event goes to the account's default bus)."""

    id: str
    arn: str
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""
    kind: str = "function"

    def matches(self, event_name: str, key: str) -> bool:
        """Whether an event of type ``event_name`` (``s3:ObjectCreated:Put``) on ``key`` goes to this target."""
        if not (key.startswith(self.prefix) and key.endswith(self.suffix)):
            return False
        return any(_covers(wanted, event_name) for wanted in self.events)


def _covers(wanted: str, event_name: str) -> bool:
    if wanted == event_name:
        return True
    return wanted.endswith(":*") and event_name.startswith(wanted[:-1])


def _events_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    return any(_covers(x, y) or _covers(y, x) for x in a for y in b)


def _overlap(a: Target, b: Target) -> bool:
    prefixes = not a.prefix or not b.prefix or a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)
    suffixes = not a.suffix or not b.suffix or a.suffix.endswith(b.suffix) or b.suffix.endswith(a.suffix)
    return prefixes and suffixes and _events_overlap(a.events, b.events)


def _generated_id() -> str:
    # S3 names an unnamed configuration with a random printable id.
    return base64.b64encode(os.urandom(24)).decode("ascii").rstrip("=")


def parse(doc: Mapping[str, Any]) -> tuple[Target, ...]:
    """The function targets of a NotificationConfiguration; raises NotificationError as S3 refuses it.
    Targets without an Id get a generated one (see :func:`stored`)."""
    configs = [(c, kind) for name, kind in _KINDS.items() for c in doc.get(name) or []]
    if len(configs) > _MAX_CONFIGURATIONS:
        raise NotificationError(f"A bucket takes at most {_MAX_CONFIGURATIONS} notification configurations")
    targets: list[Target] = []
    ids: set[str] = set()
    for config, (kind, arn_member) in configs:
        target = _target(config, kind, arn_member)
        if target.id in ids:
            raise NotificationError(
                "Configuration id must be unique within a notification configuration", [("Id", target.id)]
            )
        ids.add(target.id)
        targets.append(target)
    for i, a in enumerate(targets):
        for b in targets[i + 1 :]:
            if _overlap(a, b):
                raise NotificationError(
                    "Configurations overlap. Configurations on the same bucket cannot share a common event type.",
                    [("Event", ", ".join(sorted(set(a.events) | set(b.events))))],
                )
    if doc.get("EventBridgeConfiguration") is not None:  # present, even empty, turns it on: every event goes
        targets.append(Target("", "", (_CREATED_ALL, _REMOVED_ALL), kind="bus"))
    return tuple(targets)


# Each configuration list: its targets' kind and the member naming the destination.
_KINDS = {
    "LambdaFunctionConfigurations": ("function", "LambdaFunctionArn"),
    "QueueConfigurations": ("queue", "QueueArn"),
    "TopicConfigurations": ("topic", "TopicArn"),
}


def _target(config: Mapping[str, Any], kind: str, arn_member: str) -> Target:
    arn = config.get(arn_member)
    if not isinstance(arn, str) or not arn:
        raise NotificationError(
            "The XML you provided was not well-formed or did not validate against our published schema",
            code="MalformedXML",
        )
    events = config.get("Events") or []
    if not events:
        raise NotificationError(
            "The XML you provided was not well-formed or did not validate against our published schema",
            code="MalformedXML",
        )
    for event in events:
        if event not in EVENT_TYPES:
            raise NotificationError("The event is not supported for notifications", [("Event", str(event))])
    ident = config.get("Id") or _generated_id()
    if len(ident) > _MAX_ID:
        raise NotificationError(f"The Id must be at most {_MAX_ID} characters long", [("Id", ident)])
    rules = ((config.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
    found: dict[str, str] = {}
    for rule in rules:
        name = str(rule.get("Name") or "").lower()
        value = str(rule.get("Value") or "")
        if name not in ("prefix", "suffix"):
            raise NotificationError(
                "filter rule name must be either prefix or suffix", [("FilterRule", str(rule.get("Name") or ""))]
            )
        if name in found:
            raise NotificationError(f"Cannot specify more than one {name} rule in a filter.", [("FilterRule", name)])
        if len(value.encode("utf-8")) > _MAX_FILTER_VALUE:
            raise NotificationError(
                f"The {name} filter value must be at most {_MAX_FILTER_VALUE} bytes long", [("FilterRule", name)]
            )
        found[name] = value
    return Target(ident, arn, tuple(dict.fromkeys(events)), found.get("prefix", ""), found.get("suffix", ""), kind)


def stored(doc: Mapping[str, Any], targets: Sequence[Target]) -> dict[str, Any]:
    """The configuration as GetBucketNotificationConfiguration returns it: as given, with each configuration's
    Id (generated where none was given) and its filter rules named ``Prefix``/``Suffix``."""
    given = [(name, config) for name in _KINDS for config in doc.get(name) or []]
    out: dict[str, Any] = {}
    for (name, config), target in zip(given, [t for t in targets if t.kind != "bus"], strict=True):
        shown = {**config, "Id": target.id}
        rules = [{"Name": n, "Value": v} for n, v in (("Prefix", target.prefix), ("Suffix", target.suffix)) if v]
        if config.get("Filter"):
            # S3 gives the rules back capitalized, whatever case they were put in.
            shown["Filter"] = {"Key": {"FilterRules": rules}}
        out.setdefault(name, []).append(shown)
    if any(t.kind == "bus" for t in targets):
        out["EventBridgeConfiguration"] = {}
    return out


def check_destinations(targets: Iterable[Target], refusal: Callable[[Target], str | None]) -> None:
    """Raise S3's destination error naming every target ``refusal`` refuses (it returns why, or None when S3
    may deliver to the target's function or queue for this bucket)."""
    failed = []
    for target in targets:
        why = refusal(target)
        if why is not None:
            failed.append((target.arn, why))
    if failed:
        raise NotificationError(_UNVALIDATED, failed)


class Sequencer:
    """S3's ``sequencer``: hex strings that grow with each event of a bucket (compare them as S3 says: pad
    the shorter with leading zeros, then as strings). Nanoseconds since the epoch, kept strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        self._last = max(self._last + 1, time.time_ns())
        return f"{self._last:016X}"


def _event_key(key: str) -> str:
    # As S3 encodes keys in events: form encoding (a space is '+'), '/' kept; unquote_plus gives the key back.
    return urllib.parse.quote_plus(key, safe="/")


def event_record(
    *,
    event_name: str,
    bucket: str,
    key: str,
    config_id: str,
    region: str,
    owner_id: str,
    principal_id: str,
    source_ip: str,
    request_id: str,
    host_id: str,
    sequencer: str,
    size: int | None = None,
    etag: str | None = None,
    version_id: str | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """One record of S3's event (eventVersion 2.1) for one matched configuration. ``event_name`` with its
    ``s3:`` prefix, as configurations name it; ``etag`` without quotes; ``size``/``etag`` absent for
    removals, ``version_id`` only for a versioned bucket's objects and delete markers."""
    when = datetime.datetime.fromtimestamp(time.time() if at is None else at, tz=datetime.UTC)
    obj: dict[str, Any] = {"key": _event_key(key)}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "eventName": event_name.removeprefix("s3:"),
        "userIdentity": {"principalId": principal_id},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": host_id},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": config_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": owner_id},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def event_payload(record: Mapping[str, Any]) -> bytes:
    """The invocation payload S3 sends a function: one record per event."""
    return json.dumps({"Records": [record]}, separators=(",", ":")).encode()


_CREATED_ALL = "s3:ObjectCreated:*"
_REMOVED_ALL = "s3:ObjectRemoved:*"
# EventBridge's "reason" for each event type S3 sends it.
_REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete": "DeleteObject",
    "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
}


def bus_entry(event: ObjectEvent, owner_id: str, sequencer: str) -> bytes:
    """The PutEvents entry S3 puts on the default bus for ``event`` (source ``aws.s3``, detail-type ``Object
    Created`` / ``Object Deleted``, the bucket's ARN as resource; the key as it is, not form-encoded)."""
    created = event.event_name.startswith("s3:ObjectCreated:")
    obj: dict[str, Any] = {"key": event.key}
    if event.size is not None:
        obj["size"] = event.size
    if event.etag is not None:
        obj["etag"] = event.etag
    if event.version_id is not None:
        obj["version-id"] = event.version_id
    obj["sequencer"] = sequencer
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": event.bucket},
        "object": obj,
        "request-id": event.request_id,
        "requester": owner_id,
        "source-ip-address": event.source_ip,
        "reason": _REASONS.get(event.event_name, "PutObject"),
    }
    if not created:
        marker = event.event_name == "s3:ObjectRemoved:DeleteMarkerCreated"
        detail["deletion-type"] = "Delete Marker Created" if marker else "Permanently Deleted"
    entry = {
        "Source": "aws.s3",
        "DetailType": "Object Created" if created else "Object Deleted",
        "Detail": json.dumps(detail, separators=(",", ":")),
        "Resources": [f"arn:aws:s3:::{event.bucket}"],
    }
    return json.dumps(entry, separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True)
class ObjectEvent:
    """What happened to an object, for the notifications it matches: ``event_name`` with its ``s3:`` prefix;
    ``size``/``etag`` (unquoted) for creations; ``version_id`` for a versioned bucket's objects and markers;
    who did it (``principal_id``, ``source_ip``) and the request's ids."""

    event_name: str
    bucket: str
    key: str
    principal_id: str
    source_ip: str
    request_id: str
    host_id: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None


def matching_payloads(
    targets: Iterable[Target],
    event: ObjectEvent,
    *,
    region: str,
    owner_id: str,
    sequencer: Sequencer,
    at: float | None = None,
) -> list[tuple[Target, bytes]]:
    """The invocation payload for each target ``event`` matches (one invocation per matched configuration,
    as S3 sends one message per configuration)."""
    out = []
    stamp = time.time() if at is None else at
    for target in targets:
        if not target.matches(event.event_name, event.key):
            continue
        if target.kind == "bus":
            out.append((target, bus_entry(event, owner_id, sequencer.next())))
            continue
        record = event_record(
            event_name=event.event_name,
            bucket=event.bucket,
            key=event.key,
            config_id=target.id,
            region=region,
            owner_id=owner_id,
            principal_id=event.principal_id,
            source_ip=event.source_ip,
            request_id=event.request_id,
            host_id=event.host_id,
            sequencer=sequencer.next(),
            size=event.size,
            etag=event.etag,
            version_id=event.version_id,
            at=stamp,
        )
        out.append((target, event_payload(record)))
    return out
