"""Where asynchronous invocations send what became of them: queues, topics, event buses and buckets.

Two things are sent, as AWS Lambda sends them:

- an invocation record (version 1.0 JSON, see ``events.record``) to an OnSuccess / OnFailure destination:
  an SQS queue (the message body), an SNS topic (the message), an EventBridge bus (an event from source
  ``lambda`` with detail-type ``Lambda Function Invocation Result - Success|Failure``) or, on failure only, an
  S3 bucket (an object under ``aws/lambda/async/<function>/YYYY/MM/DD/``);
- a dead-letter message (DeadLetterConfig) to an SQS queue or SNS topic: the event's payload unchanged, with
  the message attributes RequestID (String), ErrorCode (Number, the HTTP status) and ErrorMessage (String, at
  most 1 KB).

Lambda functions as destinations are not handled here: their record is an Event invocation (``events.py``).

Each service is reached at an endpoint of its own (``Settings.sqs_endpoint``, ``sns_endpoint``,
``events_endpoint``, ``s3_endpoint``) through botocore, with the standard credential chain (unsigned when it
finds none). A destination whose service has no endpoint is refused when it is configured, naming the
setting: selfless never accepts a destination it cannot deliver to.

Buckets, queues, topics and the default event bus are the exception: without their endpoint setting they are the
built-in services' (``Buckets``, ``Queues``, ``Topics``, ``Buses``). Buckets are the built-in object store's,
written in-process through the same atomic write as a PutObject, so the bucket's own notifications fire for the
record (``s3:ObjectCreated:Put``, by ``lambda.amazonaws.com``). Such a destination is accepted only while its bucket
exists, and refused otherwise in Lambda's words for a destination it cannot reach: "The function's execution role
does not have permissions to call PutObject on arn:aws:s3:::BUCKET". Queues, topics and the bus likewise (a
SendMessage / Publish / PutEvents in-process, and in the refusal; FIFO topics are not destinations, and the default
bus is the only bus).

Each delivery is an event in the durable queue (``StoredEvent.target``), accepted in the transaction that
settled the event it reports on; ``Destinations.send`` makes one attempt, and the queue tries again, with
backoff, until it is delivered or too old (then it is kept as failed, listed and re-drivable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import botocore.exceptions

from selfless import aws_clients
from selfless.config import Settings
from selfless.errors import InvalidParameterValue

log = logging.getLogger(__name__)

# One delivery attempt (a queue URL lookup and a send) must finish within this.
SEND_TIMEOUT_S = 30.0
# AWS truncates a dead-letter message's ErrorMessage attribute to 1 KB.
_ERROR_MESSAGE_MAX = 1024

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12})?:"
    r"(?P<resource>.+)$"
)
# The settings that name each service's endpoint, for the refusal's message.
ENDPOINT_SETTINGS = {
    "sqs": "SELFLESS_SQS_ENDPOINT",
    "sns": "SELFLESS_SNS_ENDPOINT",
    "events": "SELFLESS_EVENTS_ENDPOINT",
    "s3": "SELFLESS_S3_ENDPOINT",
}
_NO_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
_KIND_NAMES = {"sqs": "queues", "sns": "topics", "events": "event buses", "s3": "buckets"}


class DeliveryError(Exception):
    """One attempt to deliver failed (the service refused it, or could not be reached in time)."""


@runtime_checkable
class Queues(Protocol):
    """The built-in queue service, as destinations send to it (``services.sqs.destinations.BuiltinQueues``)."""

    async def exists(self, name: str) -> bool: ...

    async def send(
        self, name: str, body: bytes, attributes: Mapping[str, str], fifo: tuple[str, str] | None = None
    ) -> None:
        """Send ``body`` with string ``attributes`` (and ``fifo``: the MessageGroupId and MessageDeduplicationId
        a FIFO queue needs); raises DeliveryError when it was not kept."""
        ...


@runtime_checkable
class Topics(Protocol):
    """The built-in topic service, as destinations publish to it (``services.sns.destinations.BuiltinTopics``)."""

    async def exists(self, name: str) -> bool: ...

    async def send(self, name: str, body: bytes, attributes: Mapping[str, str], subject: str | None = None) -> None:
        """Publish ``body`` with string ``attributes`` (and ``subject``, the message's Subject); raises
        DeliveryError when it was not kept."""
        ...


@runtime_checkable
class Buses(Protocol):
    """The built-in default event bus, as destinations put on it (``services.eventbridge.destinations``)."""

    async def exists(self, name: str) -> bool: ...

    async def put(self, name: str, source: str, detail_type: str, detail: str, resources: Sequence[str]) -> None:
        """Put one event on the bus ``name`` (``event-bus/default``); raises DeliveryError when it was not kept."""
        ...


@runtime_checkable
class Buckets(Protocol):
    """The built-in object store, as destinations write to it (``services.s3.destinations.BuiltinBuckets``)."""

    async def exists(self, bucket: str) -> bool: ...

    async def write(self, bucket: str, key: str, body: bytes) -> None:
        """Store ``body`` as bucket/key (a JSON object); raises DeliveryError when it was not stored."""
        ...


@dataclasses.dataclass(frozen=True)
class Target:
    """A parsed destination ARN."""

    arn: str
    service: str  # sqs, sns, events, s3
    account: str
    resource: str  # the queue name, topic name, event-bus/NAME, or bucket name


def parse(arn: str) -> Target | None:
    """The destination an ARN names, or None when it is not an ARN of a service this module delivers to."""
    found = _ARN.match(arn)
    if found is None or found.group("service") not in ENDPOINT_SETTINGS:
        return None
    return Target(arn, found.group("service"), found.group("account") or "", found.group("resource"))


@dataclasses.dataclass(frozen=True)
class Message:
    """What one delivery sends: ``body`` to ``target``, with the dead-letter message's ``attributes`` (empty
    for an invocation record)."""

    target: str
    body: bytes
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # A FIFO queue's (MessageGroupId, MessageDeduplicationId), for a scheduled run's message.
    fifo: tuple[str, str] | None = None
    # A topic message's Subject (S3's notifications have one).
    subject: str | None = None
    # ``body`` is a whole PutEvents entry (Source, DetailType, Detail, Resources) for a bus, not a record.
    entry: bool = False

    def record_facts(self) -> tuple[str, bool]:
        """The function ARN an invocation record is about, and whether it reports a success."""
        try:
            context = json.loads(self.body).get("requestContext") or {}
        except (ValueError, AttributeError):
            return "", False
        return str(context.get("functionArn") or ""), context.get("condition") == "Success"


# Keys of ``StoredEvent.attributes`` that are instructions to the durable queue, never message attributes.
FIFO_KEY = "@fifo"
ON_FAILURE_KEY = "@onFailure"
SUBJECT_KEY = "@subject"
ENTRY_KEY = "@entry"


@dataclasses.dataclass(frozen=True)
class OnFailure:
    """A scheduled run's own failure handling (EventBridge Scheduler's and rules' RetryPolicy and
    DeadLetterConfig), carried by its durable event: a delivery that has failed more than ``max_retries``
    times, or is older than ``max_age_s``, stops; then (and when the target no longer exists) the run goes to
    ``dead_letter`` (a queue ARN; None: it is dropped, as AWS drops it) with ``attributes`` and the failure's
    own (ERROR_CODE, ERROR_MESSAGE, RETRY_ATTEMPTS, EXHAUSTED_RETRY_CONDITION). ``missing_code`` is the
    ERROR_CODE of a target that no longer exists, ``failed_code`` that of a send that was refused."""

    max_retries: int
    max_age_s: int
    dead_letter: str | None = None
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    missing_code: str = "ResourceNotFoundException"
    failed_code: str = "ERROR_FROM_TARGET"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> OnFailure:
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})

    def dead_letter_attributes(self, code: str, message: str, retries: int, condition: str | None) -> dict[str, str]:
        out = {**self.attributes, "ERROR_CODE": code, "ERROR_MESSAGE": message[:_ERROR_MESSAGE_MAX]}
        out["RETRY_ATTEMPTS"] = str(retries)
        if condition is not None:
            out["EXHAUSTED_RETRY_CONDITION"] = condition
        return dict(sorted(out.items()))


def encode_options(
    attributes: Mapping[str, str] | None,
    fifo: tuple[str, str] | None,
    on_failure: OnFailure | None,
    subject: str | None = None,
    entry: bool = False,
) -> str | None:
    """``StoredEvent.attributes`` for a message's attributes and the durable queue's instructions (and a
    topic message's ``subject``, or ``entry``: the body is a whole PutEvents entry; both read back by
    ``extras_of``)."""
    doc: dict[str, Any] = dict(attributes or {})
    if subject is not None:
        doc[SUBJECT_KEY] = subject
    if entry:
        doc[ENTRY_KEY] = True
    if fifo is not None:
        doc[FIFO_KEY] = list(fifo)
    if on_failure is not None:
        doc[ON_FAILURE_KEY] = on_failure.to_json()
    return json.dumps(doc, separators=(",", ":")) if doc else None


def decode_options(encoded: str | None) -> tuple[dict[str, str], tuple[str, str] | None, OnFailure | None]:
    """The message attributes, FIFO ids and failure handling that ``encode_options`` wrote."""
    doc = json.loads(encoded) if encoded else {}
    fifo = doc.pop(FIFO_KEY, None)
    on_failure = doc.pop(ON_FAILURE_KEY, None)
    doc.pop(SUBJECT_KEY, None)
    doc.pop(ENTRY_KEY, None)
    return (
        {str(k): str(v) for k, v in doc.items()},
        None if fifo is None else (str(fifo[0]), str(fifo[1])),
        None if on_failure is None else OnFailure.from_json(on_failure),
    )


def extras_of(encoded: str | None) -> tuple[str | None, bool]:
    """The topic message's Subject (None: none) and whether the body is a PutEvents entry, as
    ``encode_options`` wrote them."""
    doc = json.loads(encoded) if encoded else {}
    subject = doc.get(SUBJECT_KEY)
    return (None if subject is None else str(subject)), bool(doc.get(ENTRY_KEY))


def dead_letter_attributes(request_id: str, status: int, error_message: str) -> dict[str, str]:
    """AWS's dead-letter message attributes (RequestID, ErrorCode, ErrorMessage truncated to 1 KB)."""
    message = error_message.encode()[:_ERROR_MESSAGE_MAX].decode("utf-8", "ignore")
    return {"RequestID": request_id, "ErrorCode": str(status), "ErrorMessage": message}


class Destinations:
    """Checks destination ARNs against the configured endpoints, and sends messages to them.

    Each service's endpoint comes from ``settings`` (None: it has none). ``buckets`` is the built-in object
    store that bucket destinations use when ``settings.s3_endpoint`` is not set, ``queues`` the built-in queue
    service that queue destinations and dead-letter queues use when ``settings.sqs_endpoint`` is not set, ``topics``
    the built-in topic service likewise for topics and ``settings.sns_endpoint`` (all set by the composition
    root, which builds them after this; None: such destinations are refused)."""

    def __init__(self, settings: Settings, *, timeout_s: float = SEND_TIMEOUT_S) -> None:
        self._endpoints: dict[str, str | None] = {
            "sqs": settings.sqs_endpoint,
            "sns": settings.sns_endpoint,
            "events": settings.events_endpoint,
            "s3": settings.s3_endpoint,
        }
        self._region = settings.region
        self._account = settings.account_id
        self._timeout_s = timeout_s
        self._clients: dict[str, Any] = {}
        self._queue_urls: dict[str, str] = {}
        # Sends run in worker threads; each client is made once, by whichever comes first.
        self._lock = threading.Lock()
        self.buckets: Buckets | None = None
        self.queues: Queues | None = None
        self.topics: Topics | None = None
        self.buses: Buses | None = None

    def _builtin(self, target: Target) -> Buckets | Queues | Topics | Buses | None:
        """The built-in service ``target`` is in (no external endpoint for its service), else None."""
        if target.service == "s3" and self._endpoints["s3"] is None:
            return self.buckets
        if target.service == "sqs" and self._endpoints["sqs"] is None and target.account in ("", self._account):
            return self.queues
        if target.service == "sns" and self._endpoints["sns"] is None and target.account in ("", self._account):
            return self.topics
        if target.service == "events" and self._endpoints["events"] is None and target.account in ("", self._account):
            return self.buses
        return None

    async def _send_builtin(self, target: Target, service: Buckets | Queues | Topics | Buses, message: Message) -> None:
        if target.service == "events":
            source, detail_type, detail, resources = _entry(message)
            await cast(Buses, service).put(target.resource, source, detail_type, detail, resources)
        elif target.service == "s3":
            assert isinstance(service, Buckets)
            await service.write(target.resource, _object_key(message.record_facts()[0]), message.body)
        elif target.service == "sns":
            await cast(Topics, service).send(target.resource, message.body, message.attributes, message.subject)
        else:
            await cast(Queues, service).send(target.resource, message.body, message.attributes, message.fifo)

    def check_form(self, arn: str, *, usage: str) -> Target:
        """Raise InvalidParameterValue unless ``arn`` is a destination this server can deliver to as far as can
        be told without asking the service (AWS's rules for each ``usage`` and the endpoints). ``usage`` is
        "OnSuccess", "OnFailure" or "DeadLetterConfig": buckets are on-failure only, dead letters go to
        queues and topics only."""
        target = parse(arn)
        if usage == "DeadLetterConfig" and (target is None or target.service not in ("sqs", "sns")):
            raise InvalidParameterValue(
                f"The provided target arn {arn} is invalid: a dead-letter target is an SQS queue or an SNS topic."
            )
        if target is None:
            raise InvalidParameterValue(f"The destination ARN {arn} is invalid.")
        if usage == "OnSuccess" and target.service == "s3":
            raise InvalidParameterValue("S3 bucket destinations are supported for OnFailure only.")
        if self._endpoints.get(target.service) is None and self._builtin(target) is None:
            setting = ENDPOINT_SETTINGS[target.service]
            raise InvalidParameterValue(
                f"{arn} cannot be used: selfless delivers to {_KIND_NAMES[target.service]} through {setting}, "
                "which is not set on this server."
            )
        return target

    async def check(self, arn: str, *, usage: str) -> None:
        """``check_form``, and for a bucket or queue of a built-in service, that it exists (refused as Lambda
        refuses a destination its execution role cannot write to)."""
        target = self.check_form(arn, usage=usage)
        builtin = self._builtin(target)
        if builtin is not None and not await builtin.exists(target.resource):
            action = {"s3": "PutObject", "sqs": "SendMessage", "events": "PutEvents"}.get(target.service, "Publish")
            raise InvalidParameterValue(
                f"The function's execution role does not have permissions to call {action} on {arn}"
            )

    async def send(self, message: Message) -> None:
        """One delivery attempt; raises DeliveryError when it did not go through (the caller retries)."""
        target = parse(message.target)
        builtin = None if target is None else self._builtin(target)
        if target is not None and builtin is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._send_builtin(target, builtin, message)
            except TimeoutError:
                kind = {"s3": "object store", "sqs": "queue service", "events": "event bus"}.get(
                    target.service, "topic service"
                )
                raise DeliveryError(f"the {kind} did not keep it within {self._timeout_s:g} s") from None
            return
        if target is None or self._endpoints.get(target.service) is None:
            # Configured while an endpoint was set, and the server restarted without it: kept until it is back.
            raise DeliveryError(f"no endpoint for {message.target}")
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.to_thread(self._send_sync, target, message)
        except TimeoutError:
            raise DeliveryError(f"no answer from the {target.service} endpoint within {self._timeout_s:g} s") from None

    def _send_sync(self, target: Target, message: Message) -> None:
        try:
            if target.service == "sqs":
                self._client("sqs").send_message(
                    QueueUrl=self._queue_url(target),
                    MessageBody=message.body.decode("utf-8", "replace"),
                    **_attributes(message),
                    **_fifo(message),
                )
            elif target.service == "sns":
                subject = {} if message.subject is None else {"Subject": message.subject}
                self._client("sns").publish(
                    TopicArn=target.arn,
                    Message=message.body.decode("utf-8", "replace"),
                    **_attributes(message),
                    **subject,
                )
            elif target.service == "events":
                source, detail_type, detail, resources = _entry(message)
                result = self._client("events").put_events(
                    Entries=[
                        {
                            "Source": source,
                            "DetailType": detail_type,
                            "Detail": detail,
                            "Resources": resources,
                            "EventBusName": target.arn,
                        }
                    ]
                )
                if result.get("FailedEntryCount"):
                    entry = (result.get("Entries") or [{}])[0]
                    raise DeliveryError(f"PutEvents refused it: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")
            else:
                self._client("s3").put_object(
                    Bucket=target.resource, Key=_object_key(message.record_facts()[0]), Body=message.body,
                    ContentType="application/json",
                )  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if target.service == "sqs" and error.get("Code") in _NO_QUEUE:
                self._queue_urls.pop(target.arn, None)
            raise DeliveryError(f"{error.get('Code') or 'Unknown'}: {error.get('Message') or ''}".strip()) from None
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise DeliveryError(str(exc)) from None

    def _queue_url(self, target: Target) -> str:
        url = self._queue_urls.get(target.arn)
        if url is None:
            params: dict[str, str] = {"QueueName": target.resource}
            if target.account:
                params["QueueOwnerAWSAccountId"] = target.account
            url = str(self._client("sqs").get_queue_url(**params)["QueueUrl"])
            self._queue_urls[target.arn] = url
        return url

    def _client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                endpoint = self._endpoints[service]
                assert endpoint is not None  # send refuses a service without one first
                # One attempt: the durable queue retries, with a backoff of its own.
                client = aws_clients.client(service, endpoint, self._region, read_timeout_s=20, max_attempts=1)
                self._clients[service] = client
            return client


def _attributes(message: Message) -> dict[str, Any]:
    if not message.attributes:
        return {}
    return {
        "MessageAttributes": {
            name: {"DataType": "Number" if name == "ErrorCode" else "String", "StringValue": value}
            for name, value in message.attributes.items()
        }
    }


def _fifo(message: Message) -> dict[str, str]:
    if message.fifo is None:
        return {}
    return {"MessageGroupId": message.fifo[0], "MessageDeduplicationId": message.fifo[1]}


def _entry(message: Message) -> tuple[str, str, str, list[str]]:
    """(Source, DetailType, Detail, Resources) of the event a bus delivery puts: the entry the message carries
    (an S3 notification's), else Lambda's invocation record as Lambda puts it."""
    if message.entry:
        try:
            doc = json.loads(message.body)
            return str(doc["Source"]), str(doc["DetailType"]), str(doc["Detail"]), [str(r) for r in doc["Resources"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(f"not an event entry: {exc}") from None
    function, success = message.record_facts()
    detail_type = "Lambda Function Invocation Result - " + ("Success" if success else "Failure")
    return "lambda", detail_type, message.body.decode("utf-8", "replace"), [function] if function else []


def _object_key(function_arn: str) -> str:
    name = function_arn.split(":")[6] if function_arn.count(":") >= 6 else function_arn
    now = time.gmtime()
    return (
        f"aws/lambda/async/{name}/{time.strftime('%Y/%m/%d', now)}/"
        f"{time.strftime('%Y-%m-%dT%H.%M.%S', now)}-{uuid.uuid4()}"
    )
