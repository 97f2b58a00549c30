"""The queue rules: SQS's operations on the wire's own shapes (dicts as botocore's ``sqs`` model has them), over
a ``QueueStore``.

- Queues: standard and FIFO (``.fifo`` names with ``FifoQueue=true``), attributes validated and defaulted as
  SQS does; CreateQueue is idempotent for identical attributes and QueueNameExists otherwise. URLs are
  ``http://<host the client used>/<account>/<name>``.
- Messages: committed before the send is answered. MD5OfMessageBody and MD5OfMessageAttributes are computed as
  SQS computes them (``attributes_md5``). Sizes up to the queue's MaximumMessageSize (1 MiB at most, as the
  current model states). FIFO: MessageGroupId required, deduplication by id or content within 5 minutes,
  strict order per group, and a group with a message in flight gives nothing more until that message is
  deleted or visible again.
- Receive: at most 10, hidden for the visibility timeout in the same commit that picks them. Long polling
  (WaitTimeSeconds up to 20) is woken by sends to the queue and re-checks at least every second (delays and
  visibility windows ending); waiting receives are bounded (``max_waiters``): one more is refused with
  RequestThrottled, never queued. A message received more than its queue's RedrivePolicy maxReceiveCount
  times moves to the dead-letter queue.
- Receipt handles name the queue, the message and a random token of its latest receive; a malformed one, or
  one for another queue, is ReceiptHandleIsInvalid; one of an earlier receive deletes nothing (as SQS).

- Message move tasks (dead-letter queue redrive): StartMessageMoveTask moves the messages a dead-letter queue
  holds when it starts, oldest first, to DestinationArn or each back to the queue it was dead-lettered from, at
  MaxNumberOfMessagesPerSecond (1-500; 500 when not given). Each message moves in one transaction (a new
  message, never received, inserted at the destination and the old one deleted, the task's count raised), so a
  move loses nothing and, the store being one, duplicates nothing. One RUNNING task per source queue; the ten
  most recent of a queue are kept (ListMessageMoveTasks). Messages in flight or delayed are left where they are
  (as a FIFO group with one in flight is), expired ones dropped. A server restart resumes every RUNNING task
  where it stood; a shutdown stops the tasks between two moves. Cancelling is immediate (CANCELLED: no
  CANCELLING is ever shown).

- AddPermission / RemovePermission: statements (Sid = Label, Allow, the accounts' root principals, ``SQS:``
  actions, the queue as Resource) added to and removed from the queue's Policy attribute, as SQS writes them,
  with its refusals (a label that exists or does not, more than 7 actions, an action not grantable). Stored,
  shown by GetQueueAttributes; not enforced (selfless has one account).

QueueDeletedRecently is not enforced: a deleted queue's name may be reused at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import re
import secrets
import struct
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from selfless.services.sqs import errors as E
from selfless.services.sqs.store import InFlightLimit, Message, MoveTask, Outcome, Queue, QueueStore, Redrive, Step

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 300.0
MAX_MESSAGE_SIZE = 1_048_576
MAX_WAIT_S = 20
_QUEUE_CACHE = 10_000
MAX_WAITERS = 1024
# SQS's in-flight quotas: received messages not yet deleted or visible again, per queue. At the quota a standard
# queue's receive is refused (OverLimit); a FIFO queue's answers no messages (SELFLESS_SQS_MAX_IN_FLIGHT sets
# both lower, for tests and small machines).
MAX_IN_FLIGHT = 120_000
MAX_IN_FLIGHT_FIFO = 20_000
MAX_MOVE_RATE = 500  # MaxNumberOfMessagesPerSecond's maximum, and the rate of a task started without one
MOVE_TASKS_KEPT = 10  # per source queue: what ListMessageMoveTasks can show
MAX_RUNNING_MOVES = 100  # server-wide; one more start is RequestThrottled
_MOVE_RETRY_S = 1.0  # after a store failure, a move task tries again this much later
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ACCOUNT = re.compile(r"[0-9]{12}")
# What AddPermission may grant (SendMessage, DeleteMessage and ChangeMessageVisibility grant their batches too).
_GRANTABLE = frozenset(
    {
        "*",
        "ChangeMessageVisibility",
        "DeleteMessage",
        "GetQueueAttributes",
        "GetQueueUrl",
        "ListDeadLetterSourceQueues",
        "PurgeQueue",
        "ReceiveMessage",
        "SendMessage",
    }
)
MAX_ACTIONS = 7  # per statement, as SQS allows
MAX_POLICY = 20_480  # characters of a Policy AddPermission may grow (one more statement is OverLimit)
_POLL_S = 1.0  # a long poll re-checks at least this often (delays and visibility windows end by themselves)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_FIFO_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}\.fifo")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_INVALID_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")

# Settable attributes: (default for every queue or None, validator).
_NUMERIC = {
    "DelaySeconds": (0, 900, "0"),
    "MaximumMessageSize": (1024, MAX_MESSAGE_SIZE, str(MAX_MESSAGE_SIZE)),
    "MessageRetentionPeriod": (60, 1_209_600, "345600"),
    "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT_S, "0"),
    "VisibilityTimeout": (0, 43_200, "30"),
    "KmsDataKeyReusePeriodSeconds": (60, 86_400, None),
}
_FIFO_ONLY = {"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"}
_SETTABLE = (
    set(_NUMERIC)
    | _FIFO_ONLY
    | {
        "FifoQueue",
        "Policy",
        "RedrivePolicy",
        "RedriveAllowPolicy",
        "KmsMasterKeyId",
        "SqsManagedSseEnabled",
    }
)
_COMPUTED = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
}
_SYSTEM_NAMES = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)


def attributes_md5(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """MD5OfMessageAttributes as SQS computes it: for each attribute in name order, the name, the data type
    and the value, each as a 4-byte big-endian length and its bytes, with a transport byte (1 for a
    String/Number value, 2 for a Binary one) before the value."""
    digest = hashlib.md5(usedforsecurity=False)

    def put(data: bytes) -> None:
        digest.update(struct.pack(">I", len(data)) + data)

    for name in sorted(attributes):
        attribute = attributes[name]
        put(name.encode())
        data_type = str(attribute["DataType"])
        put(data_type.encode())
        if "StringValue" in attribute and attribute["StringValue"] is not None:
            digest.update(b"\x01")
            put(str(attribute["StringValue"]).encode())
        else:
            digest.update(b"\x02")
            put(_binary(attribute.get("BinaryValue")))
    return digest.hexdigest()


def _binary(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except (binascii.Error, ValueError):
        raise E.invalid_parameter("The BinaryValue of a message attribute is not valid base64.") from None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclasses.dataclass(frozen=True)
class Call:
    """Who asks, and how they reached us (queue URLs use the host they used)."""

    host: str
    sender: str


class QueueService:
    def __init__(
        self,
        store: QueueStore,
        *,
        account_id: str,
        region: str,
        clock: Callable[[], float] = time.time,
        max_waiters: int = MAX_WAITERS,
        max_in_flight: int | None = None,
        max_running_moves: int = MAX_RUNNING_MOVES,
    ) -> None:
        self._store = store
        self._account = account_id
        self._region = region
        self._clock = clock
        self.max_waiters = max_waiters
        self.max_in_flight = min(MAX_IN_FLIGHT, max_in_flight or MAX_IN_FLIGHT)
        self.max_in_flight_fifo = min(MAX_IN_FLIGHT_FIFO, max_in_flight or MAX_IN_FLIGHT_FIFO)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._waiting = 0
        self._purged: dict[str, float] = {}
        # Queue rows, kept in memory: they change through this service only (one server owns the embedded
        # store), so a message operation costs no store round trip to find its queue. ``_generation`` grows
        # with every change, so a read that raced one is not kept.
        self._queues: dict[str, Queue] = {}
        self._generation = 0
        self.max_running_moves = max_running_moves
        self._moves: dict[str, asyncio.Task[None]] = {}  # task id -> the background task moving its messages
        self._starting = 0  # starts between their check of the bound and their task's run
        self._closed = False
        self._policy_lock = asyncio.Lock()  # AddPermission / RemovePermission: one read-modify-write at a time

    @property
    def waiting(self) -> int:
        return self._waiting

    # -- names and addresses ---------------------------------------------------------------------------------

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self._region}:{self._account}:{name}"

    def url(self, call: Call, name: str) -> str:
        return f"http://{call.host}/{self._account}/{name}"

    def _name_of_url(self, url: Any) -> str:
        if not isinstance(url, str) or not url:
            raise E.missing_parameter("QueueUrl")
        path = urllib.parse.urlsplit(url).path if "://" in url else url
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[0] != self._account:
            raise E.no_queue()
        return parts[1]

    def _name_of_arn(self, arn: str) -> str | None:
        prefix = f"arn:aws:sqs:{self._region}:{self._account}:"
        return arn[len(prefix) :] if arn.startswith(prefix) else None

    async def _queue(self, params: Mapping[str, Any]) -> Queue:
        queue = await self._lookup(self._name_of_url(params.get("QueueUrl")))
        if queue is None:
            raise E.no_queue()
        return queue

    async def _lookup(self, name: str) -> Queue | None:
        found = self._queues.get(name)
        if found is not None:
            return found
        generation = self._generation
        found = await self._store.get_queue(name)
        if found is not None and generation == self._generation:
            if len(self._queues) >= _QUEUE_CACHE:
                self._queues.clear()
            self._queues[name] = found
        return found

    def _changed(self, name: str, queue: Queue | None) -> None:
        """After a queue row changed in the store: the cache follows (None: the queue is gone)."""
        self._generation += 1
        if queue is None:
            self._queues.pop(name, None)
        else:
            self._queues[name] = queue

    # -- queues ----------------------------------------------------------------------------------------------

    async def create_queue(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        name = p.get("QueueName")
        if not isinstance(name, str) or not name:
            raise E.missing_parameter("QueueName")
        given = dict(p.get("Attributes") or {})
        fifo = given.get("FifoQueue", "false").lower() == "true"
        if not (_FIFO_NAME if fifo else _NAME).fullmatch(name):
            raise E.invalid_parameter(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length"
                + (" and must end with .fifo." if fifo or name.endswith(".fifo") else ".")
            )
        attributes = await self._checked_attributes(given, fifo=fifo, name=name, creating=True)
        now = self._clock()
        queue = Queue(name, now, now, attributes, dict(p.get("tags") or {}))
        stored = await self._store.create_queue(queue)
        self._changed(name, stored)
        if stored is not queue:
            for key in sorted(set(stored.attributes) | set(attributes)):
                if stored.attributes.get(key) != attributes.get(key):
                    raise E.queue_exists(
                        f"A queue already exists with the same name and a different value for attribute {key}"
                    )
        return {"QueueUrl": self.url(call, name)}

    async def _checked_attributes(
        self, given: Mapping[str, Any], *, fifo: bool, name: str, creating: bool, old: Queue | None = None
    ) -> dict[str, str]:
        """The stored attributes: ``given`` validated (as SQS words each refusal), over the old ones or the
        defaults."""
        if creating:
            out: dict[str, str] = {k: d for k, (_, _, d) in _NUMERIC.items() if d is not None}
            out["SqsManagedSseEnabled"] = "true"
            if fifo:
                out.update({"FifoQueue": "true", "ContentBasedDeduplication": "false"})
                out.update({"DeduplicationScope": "queue", "FifoThroughputLimit": "perQueue"})
        else:
            assert old is not None
            out = dict(old.attributes)
        for key, raw in given.items():
            if key not in _SETTABLE:
                raise E.invalid_attribute_name(f"Unknown Attribute {key}.")
            value = str(raw)
            if key in _NUMERIC:
                low, high, _ = _NUMERIC[key]
                if not re.fullmatch(r"-?[0-9]{1,12}", value) or not low <= int(value) <= high:
                    raise E.invalid_attribute_value(f"Invalid value for the parameter {key}.")
                value = str(int(value))
            elif key == "FifoQueue":
                if value.lower() not in ("true", "false") or (value.lower() == "true") != fifo:
                    raise E.invalid_attribute_value(f"Invalid value for the parameter {key}.")
                if not fifo:
                    continue  # FifoQueue=false on a standard queue is accepted and not shown
                value = "true"
            elif key in _FIFO_ONLY:
                if not fifo:
                    raise E.invalid_attribute_name(f"Unknown Attribute {key}.")
                allowed = {
                    "ContentBasedDeduplication": ("true", "false"),
                    "DeduplicationScope": ("queue", "messageGroup"),
                    "FifoThroughputLimit": ("perQueue", "perMessageGroupId"),
                }[key]
                if value not in allowed and value.lower() not in allowed:
                    raise E.invalid_attribute_value(f"Invalid value for the parameter {key}.")
                value = value.lower() if key == "ContentBasedDeduplication" else value
            elif key == "SqsManagedSseEnabled":
                if value.lower() not in ("true", "false"):
                    raise E.invalid_attribute_value(f"Invalid value for the parameter {key}.")
                value = value.lower()
            elif key == "RedrivePolicy":
                if value == "":
                    out.pop(key, None)
                    continue
                value = await self._redrive_policy(value, fifo=fifo, name=name)
            elif key == "RedriveAllowPolicy":
                if value == "":
                    out.pop(key, None)
                    continue
                value = _redrive_allow_policy(value)
            out[key] = value
        return out

    async def _redrive_policy(self, value: str, *, fifo: bool, name: str) -> str:
        def refuse(reason: str) -> E.SqsError:
            return E.invalid_parameter(f"Value {value} for parameter RedrivePolicy is invalid. Reason: {reason}")

        try:
            policy = json.loads(value)
        except ValueError:
            raise refuse("Redrive policy is not a valid JSON map.") from None
        if not isinstance(policy, dict):
            raise refuse("Redrive policy is not a valid JSON map.")
        target, count = policy.get("deadLetterTargetArn"), policy.get("maxReceiveCount")
        if not target or count is None:
            raise refuse(
                "Redrive policy does not contain mandatory attribute: "
                + ("deadLetterTargetArn." if not target else "maxReceiveCount.")
            )
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise refuse("Invalid value for maxReceiveCount: must be an integer from 1 to 1000.") from None
        if not 1 <= count <= 1000:
            raise refuse(f"Invalid value for maxReceiveCount: {count}, valid values are from 1 to 1000 both inclusive.")
        target_name = self._name_of_arn(str(target))
        dlq = await self._lookup(target_name) if target_name else None
        if dlq is None:
            raise refuse("Dead letter target does not exist.")
        if dlq.fifo != fifo:
            raise refuse("Dead-letter queue must be same type of queue as the source.")
        allow = json.loads(dlq.attributes.get("RedriveAllowPolicy") or '{"redrivePermission":"allowAll"}')
        permission = allow.get("redrivePermission")
        if permission == "denyAll" or (
            permission == "byQueue" and self.arn(name) not in allow.get("sourceQueueArns", [])
        ):
            raise refuse(f"Queue {self.arn(name)} is not allowed as a source by the dead-letter queue's policy.")
        return json.dumps({"deadLetterTargetArn": str(target), "maxReceiveCount": count}, separators=(",", ":"))

    async def get_queue_url(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        name = p.get("QueueName")
        if not isinstance(name, str) or not name:
            raise E.missing_parameter("QueueName")
        owner = p.get("QueueOwnerAWSAccountId")
        if (owner and owner != self._account) or await self._lookup(name) is None:
            raise E.no_queue()
        return {"QueueUrl": self.url(call, name)}

    async def list_queues(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        limit = _page_size(p)
        after = _token_after(p.get("NextToken"))
        found = await self._store.list_queues(str(p.get("QueueNamePrefix") or ""), after, (limit or 1000) + 1)
        page = found[: limit or 1000]
        out: dict[str, Any] = {}
        if page:
            out["QueueUrls"] = [self.url(call, q.name) for q in page]
        if limit is not None and len(found) > limit:
            out["NextToken"] = _token(page[-1].name)
        return out

    async def list_dead_letter_source_queues(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        dlq = await self._queue(p)
        arn = self.arn(dlq.name)
        limit = _page_size(p)
        after = _token_after(p.get("NextToken"))
        sources: list[str] = []
        cursor = after
        while True:  # every queue, a thousand at a time
            batch = await self._store.list_queues("", cursor, 1000)
            for q in batch:
                policy = q.attributes.get("RedrivePolicy")
                if policy and json.loads(policy).get("deadLetterTargetArn") == arn:
                    sources.append(q.name)
            if len(batch) < 1000 or (limit is not None and len(sources) > limit):
                break
            cursor = batch[-1].name
        page = sources[: limit or 1000]
        out: dict[str, Any] = {"queueUrls": [self.url(call, name) for name in page]}
        if limit is not None and len(sources) > limit:
            out["NextToken"] = _token(page[-1])
        return out

    async def delete_queue(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        await self._store.delete_queue(queue.name)
        self._changed(queue.name, None)
        self._wake(queue.name)
        return {}

    async def purge_queue(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        now = self._clock()
        last = self._purged.get(queue.name)
        if last is not None and now - last < 60:
            raise E.purge_in_progress(self.arn(queue.name))
        self._purged = {k: v for k, v in self._purged.items() if now - v < 60}  # bounded by recent purges
        self._purged[queue.name] = now
        await self._store.purge(queue.name)
        return {}

    async def get_queue_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        wanted = list(p.get("AttributeNames") or [])
        every = "All" in wanted
        for name in wanted:
            if name != "All" and name not in _SETTABLE and name not in _COMPUTED:
                raise E.invalid_attribute_name(f"Unknown Attribute {name}.")
        shown: dict[str, str] = dict(queue.attributes)
        if {
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        } & set(wanted) or every:
            visible, in_flight, delayed = await self._store.counts(queue.name, self._clock())
            shown["ApproximateNumberOfMessages"] = str(visible)
            shown["ApproximateNumberOfMessagesNotVisible"] = str(in_flight)
            shown["ApproximateNumberOfMessagesDelayed"] = str(delayed)
        shown["CreatedTimestamp"] = str(int(queue.created))
        shown["LastModifiedTimestamp"] = str(int(queue.modified))
        shown["QueueArn"] = self.arn(queue.name)
        picked = {k: v for k, v in shown.items() if every or k in wanted}
        return {"Attributes": picked} if picked else {}

    async def set_queue_attributes(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        given = dict(p.get("Attributes") or {})
        if "FifoQueue" in given and str(given["FifoQueue"]).lower() != ("true" if queue.fifo else "false"):
            raise E.invalid_attribute_value(
                "Invalid value for the parameter FifoQueue. Reason: Modifying queue type is not supported."
            )
        attributes = await self._checked_attributes(given, fifo=queue.fifo, name=queue.name, creating=False, old=queue)
        changed = dataclasses.replace(queue, attributes=attributes, modified=self._clock())
        if not await self._store.update_queue(changed):
            self._changed(queue.name, None)
            raise E.no_queue()
        self._changed(queue.name, changed)
        return {}

    async def tag_queue(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        tags = {**queue.tags, **dict(p.get("Tags") or {})}
        if len(tags) > 50:
            raise E.invalid_parameter("Too many tags added for queue " + queue.name + ".")
        tagged = dataclasses.replace(queue, tags=tags)
        self._changed(queue.name, tagged if await self._store.update_queue(tagged) else None)
        return {}

    async def untag_queue(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        drop = set(p.get("TagKeys") or [])
        untagged = dataclasses.replace(queue, tags={k: v for k, v in queue.tags.items() if k not in drop})
        self._changed(queue.name, untagged if await self._store.update_queue(untagged) else None)
        return {}

    async def list_queue_tags(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        return {"Tags": dict(queue.tags)} if queue.tags else {}

    # -- permissions (the queue's Policy attribute) -----------------------------------------------------------

    def _policy_of(self, queue: Queue) -> dict[str, Any]:
        text = queue.attributes.get("Policy")
        if not text:
            return {"Version": "2012-10-17", "Id": f"{self.arn(queue.name)}/SQSDefaultPolicy", "Statement": []}
        try:
            policy = json.loads(text)
        except ValueError:
            policy = None
        if isinstance(policy, dict) and isinstance(policy.get("Statement"), dict):
            policy["Statement"] = [policy["Statement"]]  # one statement may stand alone; a list holds more
        if not isinstance(policy, dict) or not isinstance(policy.get("Statement", []), list):
            raise E.invalid_attribute_value(
                "The queue's Policy attribute is not a policy document with a Statement list; set one first."
            )
        policy.setdefault("Statement", [])
        return policy

    async def _set_policy(self, queue: Queue, policy: dict[str, Any] | None) -> None:
        attributes = dict(queue.attributes)
        if policy is None:
            attributes.pop("Policy", None)
        else:
            attributes["Policy"] = json.dumps(policy, separators=(",", ":"))
        changed = dataclasses.replace(queue, attributes=attributes, modified=self._clock())
        if not await self._store.update_queue(changed):
            self._changed(queue.name, None)
            raise E.no_queue()
        self._changed(queue.name, changed)

    async def add_permission(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        label = p.get("Label")
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise E.invalid_parameter(
                f"Value {label} for parameter Label is invalid. Reason: Can only include alphanumeric characters, "
                "hyphens, or underscores. 1 to 80 in length."
            )
        accounts = p.get("AWSAccountIds")
        if not isinstance(accounts, list) or not accounts:
            raise E.invalid_parameter("Value [] for parameter PrincipalId is invalid. Reason: Unable to verify.")
        for account in accounts:
            if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
                raise E.invalid_parameter(
                    f"Value [{account}] for parameter PrincipalId is invalid. Reason: Unable to verify."
                )
        actions = p.get("Actions")
        if not isinstance(actions, list) or not actions:
            raise E.missing_parameter("Actions")
        if len(actions) > MAX_ACTIONS:
            raise E.policy_over_limit(f"{len(actions)} Actions were found, maximum allowed is {MAX_ACTIONS}.")
        for action in actions:
            if action not in _GRANTABLE:
                raise E.invalid_parameter(
                    f"Value SQS:{action} for parameter ActionName is invalid. Reason: Only the queue owner is allowed "
                    "to invoke this action."
                )
        async with self._policy_lock:
            queue = await self._queue(p)
            policy = self._policy_of(queue)
            if any(isinstance(s, dict) and s.get("Sid") == label for s in policy["Statement"]):
                raise E.invalid_parameter(f"Value {label} for parameter Label is invalid. Reason: Already exists.")
            principals = [f"arn:aws:iam::{a}:root" for a in accounts]
            granted = [f"SQS:{a}" for a in actions]
            policy["Statement"].append(
                {
                    "Sid": label,
                    "Effect": "Allow",
                    "Principal": {"AWS": principals[0] if len(principals) == 1 else principals},
                    "Action": granted[0] if len(granted) == 1 else granted,
                    "Resource": self.arn(queue.name),
                }
            )
            if len(json.dumps(policy, separators=(",", ":"))) > MAX_POLICY:
                raise E.policy_over_limit(f"The queue's policy would be longer than {MAX_POLICY} characters.")
            await self._set_policy(queue, policy)
        return {}

    async def remove_permission(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        label = p.get("Label")
        async with self._policy_lock:
            queue = await self._queue(p)
            policy = self._policy_of(queue)
            kept = [s for s in policy["Statement"] if not (isinstance(s, dict) and s.get("Sid") == label)]
            if len(kept) == len(policy["Statement"]):
                raise E.invalid_parameter(
                    f"Value {label} for parameter Label is invalid. Reason: can't find label on existing policy."
                )
            policy["Statement"] = kept
            await self._set_policy(queue, policy if kept else None)  # the last statement gone, the policy too
        return {}

    # -- sending ---------------------------------------------------------------------------------------------

    def _message(self, queue: Queue, entry: Mapping[str, Any], now: float, call: Call) -> Message:
        body = entry.get("MessageBody")
        if not isinstance(body, str) or body == "":
            raise E.missing_parameter("MessageBody")
        bad = _INVALID_BODY.search(body)
        if bad is not None:
            raise E.message_contents(
                f"Invalid binary character '#x{ord(bad.group()):X}' was found in the message body, the set of "
                "allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
            )
        attributes = _message_attributes(entry.get("MessageAttributes"))
        system = _message_attributes(entry.get("MessageSystemAttributes"), system=True)
        size = len(body.encode()) + _attributes_size(attributes)
        limit = int(queue.attributes["MaximumMessageSize"])
        if size > limit:
            raise E.invalid_parameter(
                f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            )
        delay = entry.get("DelaySeconds")
        group, dedup = entry.get("MessageGroupId"), entry.get("MessageDeduplicationId")
        if queue.fifo:
            if delay is not None:
                raise E.invalid_parameter(
                    f"Value {delay} for parameter DelaySeconds is invalid. Reason: The request include parameter "
                    "that is not valid for this queue type."
                )
            if not group:
                raise E.missing_parameter("MessageGroupId")
            if not dedup:
                if queue.attributes.get("ContentBasedDeduplication") != "true":
                    raise E.invalid_parameter(
                        "The queue should either have ContentBasedDeduplication enabled or "
                        "MessageDeduplicationId provided explicitly"
                    )
                dedup = hashlib.sha256(body.encode()).hexdigest()
            for what, value in (("MessageGroupId", group), ("MessageDeduplicationId", dedup)):
                if not re.fullmatch(r"[!-~]{1,128}", str(value)):
                    raise E.invalid_parameter(
                        f"Value {value} for parameter {what} is invalid. Reason: Invalid characters or length."
                    )
        else:
            if dedup is not None:
                raise E.invalid_parameter(
                    f"Value {dedup} for parameter MessageDeduplicationId is invalid. Reason: The request include "
                    "parameter that is not valid for this queue type."
                )
        seconds = int(queue.attributes["DelaySeconds"]) if delay is None else delay
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= 900:
            raise E.invalid_parameter(
                f"Value {seconds} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
            )
        return Message(
            message_id=_message_id(),
            body=body,
            sent=now,
            visible_at=now + seconds,
            attributes=attributes,
            system=system,
            md5_body=_md5(body),
            md5_attributes=attributes_md5(attributes) if attributes else None,
            md5_system=attributes_md5(system) if system else None,
            sender=call.sender,
            group_id=str(group) if group else None,
            dedup_id=str(dedup) if queue.fifo else None,
        )

    def _sent(self, m: Message, message_id: str, seq: int, fifo: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"MessageId": message_id, "MD5OfMessageBody": m.md5_body}
        if m.md5_attributes is not None:
            out["MD5OfMessageAttributes"] = m.md5_attributes
        if m.md5_system is not None:
            out["MD5OfMessageSystemAttributes"] = m.md5_system
        if fifo:
            out["SequenceNumber"] = _sequence(seq)
        return out

    async def send_message(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        now = self._clock()
        message = self._message(queue, p, now, call)
        (sent,) = await self._store.send(queue.name, [message], now - DEDUP_WINDOW_S)
        self._wake(queue.name)
        return self._sent(message, sent.message_id, sent.seq, queue.fifo)

    async def send_message_batch(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        entries = _batch_entries(p.get("Entries"))
        now = self._clock()
        total = sum(
            len(str(e.get("MessageBody") or "").encode()) + _attributes_size(e.get("MessageAttributes") or {})
            for e in entries
        )
        limit = int(queue.attributes["MaximumMessageSize"])
        if total > limit:
            raise E.batch(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {limit} bytes. You have sent {total} bytes.",
            )
        ok: list[tuple[str, Message]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            try:
                ok.append((entry["Id"], self._message(queue, entry, now, call)))
            except E.SqsError as exc:
                failed.append(_failure(entry["Id"], exc))
        sent = await self._store.send(queue.name, [m for _, m in ok], now - DEDUP_WINDOW_S) if ok else []
        if ok:
            self._wake(queue.name)
        successful = [
            {"Id": entry_id, **self._sent(m, s.message_id, s.seq, queue.fifo)}
            for (entry_id, m), s in zip(ok, sent, strict=True)
        ]
        return {"Successful": successful, "Failed": failed}

    # -- receiving -------------------------------------------------------------------------------------------

    async def receive_message(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        limit = p.get("MaxNumberOfMessages", 1)
        if not isinstance(limit, int) or not 1 <= limit <= 10:
            raise E.invalid_parameter(
                f"Value {limit} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, "
                "if provided."
            )
        wait = p.get("WaitTimeSeconds")
        if wait is None:
            wait = int(queue.attributes["ReceiveMessageWaitTimeSeconds"])
        if not isinstance(wait, int) or not 0 <= wait <= MAX_WAIT_S:
            raise E.invalid_parameter(
                f"Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
            )
        visible_for = p.get("VisibilityTimeout")
        if visible_for is None:
            visible_for = int(queue.attributes["VisibilityTimeout"])
        if not isinstance(visible_for, int) or not 0 <= visible_for <= 43_200:
            raise E.invalid_parameter(
                f"Value {visible_for} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= 43200, "
                "if provided."
            )
        system_names = set(p.get("AttributeNames") or []) | set(p.get("MessageSystemAttributeNames") or [])
        attribute_names = list(p.get("MessageAttributeNames") or [])
        redrive = self._redrive(queue)
        retention = int(queue.attributes["MessageRetentionPeriod"])
        deadline = self._clock() + wait
        registered = False
        waiter: asyncio.Future[None] | None = None
        try:
            while True:
                if wait > 0:
                    waiter = self._wait_on(queue.name, registered)
                    registered = True
                now = self._clock()
                receipts = [secrets.token_hex(16) for _ in range(limit)]
                max_in_flight = self.max_in_flight_fifo if queue.fifo else self.max_in_flight
                try:
                    got = await self._store.receive(
                        queue.name, now, limit, visible_for, receipts, queue.fifo, now - retention, redrive,
                        max_in_flight,
                    )  # fmt: skip
                except InFlightLimit:
                    if not queue.fifo:
                        raise E.over_limit() from None
                    got = []  # a FIFO queue at its quota answers no messages, and no error (as SQS does)
                remaining = deadline - self._clock()
                if got or remaining <= 0 or waiter is None:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout=min(remaining, _POLL_S))
                self._unwait(queue.name, waiter)
                waiter = None
        finally:
            if waiter is not None:
                self._unwait(queue.name, waiter)
            if registered:
                self._waiting -= 1
        messages = [self._received(queue, m, system_names, attribute_names) for m in got]
        return {"Messages": messages} if messages else {}

    def _redrive(self, queue: Queue) -> Redrive | None:
        policy = queue.attributes.get("RedrivePolicy")
        if not policy:
            return None
        doc = json.loads(policy)
        target = self._name_of_arn(doc["deadLetterTargetArn"])
        return None if target is None else Redrive(int(doc["maxReceiveCount"]), target, self.arn(queue.name))

    def _wait_on(self, name: str, registered: bool) -> asyncio.Future[None]:
        """A future a send to ``name`` completes; the first for a receive counts against ``max_waiters``."""
        if not registered:
            if self._waiting >= self.max_waiters:
                raise E.throttled(
                    f"Too many long-polling receives are waiting ({self.max_waiters}); retry, or poll less widely."
                )
            self._waiting += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, set()).add(future)
        return future

    def _unwait(self, name: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiters.get(name)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[name]

    def _wake(self, name: str) -> None:
        for future in self._waiters.pop(name, ()):
            if not future.done():
                future.set_result(None)

    def _received(self, queue: Queue, m: Message, system: set[str], names: list[str]) -> dict[str, Any]:
        handle = base64.urlsafe_b64encode(f"{queue.name}\n{m.seq}\n{m.receipt}".encode()).decode()
        out: dict[str, Any] = {
            "MessageId": m.message_id,
            "ReceiptHandle": handle,
            "MD5OfBody": m.md5_body,
            "Body": m.body,
        }
        values: dict[str, str | None] = {
            "SenderId": m.sender,
            "SentTimestamp": str(int(m.sent * 1000)),
            "ApproximateReceiveCount": str(m.receive_count),
            "ApproximateFirstReceiveTimestamp": str(int((m.first_received or m.sent) * 1000)),
            "SequenceNumber": _sequence(m.seq) if queue.fifo else None,
            "MessageDeduplicationId": m.dedup_id,
            "MessageGroupId": m.group_id,
            "AWSTraceHeader": (m.system.get("AWSTraceHeader") or {}).get("StringValue"),
            "DeadLetterQueueSourceArn": m.source_arn,
        }
        every = "All" in system
        attributes = {k: v for k, v in values.items() if v is not None and (every or k in system)}
        if attributes:
            out["Attributes"] = attributes
        chosen = {
            k: v
            for k, v in m.attributes.items()
            if any(n in ("All", ".*") or n == k or (n.endswith(".*") and k.startswith(n[:-1])) for n in names)
        }
        if chosen:
            out["MD5OfMessageAttributes"] = attributes_md5(chosen)
            out["MessageAttributes"] = chosen
        return out

    # -- message move tasks (dead-letter queue redrive) ------------------------------------------------------

    async def resume_moves(self) -> int:
        """After a start: every task the store has as RUNNING carries on where it stood (each move being one
        commit, a stop between two loses and repeats nothing). Returns how many resumed."""
        tasks = await self._store.running_moves()
        for task in tasks:
            self._run_move(task)
        return len(tasks)

    async def close(self) -> None:
        """Stop the move tasks (between two moves: a move in its transaction completes or never happened);
        they stay RUNNING in the store, to resume at the next start."""
        self._closed = True
        running = list(self._moves.values())
        for runner in running:
            runner.cancel()
        if running:
            await asyncio.wait(running, timeout=10.0)

    def _run_move(self, task: MoveTask) -> None:
        if self._closed or task.task_id in self._moves:
            return
        runner = asyncio.get_running_loop().create_task(self._move_messages(task), name=f"sqs-move-{task.task_id}")
        self._moves[task.task_id] = runner
        runner.add_done_callback(lambda _: self._moves.pop(task.task_id, None))

    async def _move_messages(self, task: MoveTask) -> None:
        """Move until the store says the task is over, at most ``rate`` messages a second (no burst to catch up
        on more than a second's lag)."""
        interval = 1.0 / (task.rate or MAX_MOVE_RATE)
        prefix = self.arn("")
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                step, target = await self._store.move_one(task.task_id, self._clock(), _message_id(), prefix)
            except Exception:  # a full disk, a locked database: the task stays RUNNING and tries again
                log.exception("message move task %s: a move failed; retrying", task.task_id)
                await asyncio.sleep(_MOVE_RETRY_S)
                continue
            if step is not Step.MOVED:
                return
            if target is not None:
                self._wake(target)
            next_at = max(next_at + interval, loop.time() - 1.0)
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _queue_of_arn(self, arn: Any, parameter: str) -> Queue:
        name = self._name_of_arn(arn) if isinstance(arn, str) else None
        queue = await self._lookup(name) if name else None
        if queue is None:
            raise E.resource_not_found(f"The resource that you specified for the {parameter} parameter doesn't exist.")
        return queue

    async def _dead_letter_sources(self, dlq: Queue) -> list[str]:
        """The queues whose RedrivePolicy names ``dlq`` and that its RedriveAllowPolicy allows."""
        arn = self.arn(dlq.name)
        allow = json.loads(dlq.attributes.get("RedriveAllowPolicy") or '{"redrivePermission":"allowAll"}')
        permission = allow.get("redrivePermission")
        sources: list[str] = []
        cursor: str | None = None
        while True:  # every queue, a thousand at a time
            batch = await self._store.list_queues("", cursor, 1000)
            for q in batch:
                policy = q.attributes.get("RedrivePolicy")
                if not policy or json.loads(policy).get("deadLetterTargetArn") != arn:
                    continue
                if permission == "denyAll":
                    continue
                if permission == "byQueue" and self.arn(q.name) not in allow.get("sourceQueueArns", []):
                    continue
                sources.append(q.name)
            if len(batch) < 1000 or sources:
                return sources
            cursor = batch[-1].name

    async def start_message_move_task(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        source = await self._queue_of_arn(p.get("SourceArn"), "SourceArn")
        if not await self._dead_letter_sources(source):
            raise E.invalid_parameter("Source queue must be configured as a Dead Letter Queue.")
        rate = p.get("MaxNumberOfMessagesPerSecond")
        if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= MAX_MOVE_RATE):
            raise E.invalid_parameter(
                f"Value {rate} for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: You must enter a "
                f"number that's between 1 and {MAX_MOVE_RATE}."
            )
        destination: Queue | None = None
        if p.get("DestinationArn") not in (None, ""):
            destination = await self._queue_of_arn(p.get("DestinationArn"), "DestinationArn")
            if destination.fifo != source.fifo:
                raise E.invalid_parameter("The source queue and destination queue must be of the same queue type.")
            if destination.name == source.name:
                raise E.invalid_parameter("The source queue and destination queue must be different queues.")
        if len(self._moves) + self._starting >= self.max_running_moves:
            raise E.throttled(
                f"Too many message move tasks are running ({self.max_running_moves}); retry when one has ended."
            )
        task = MoveTask(
            task_id=str(uuid.uuid4()),
            source=source.name,
            destination=destination.name if destination else None,
            rate=rate,
            started=self._clock(),
        )
        self._starting += 1
        try:
            stored = await self._store.start_move(task, MOVE_TASKS_KEPT)
        finally:
            self._starting -= 1
        if stored is None:
            raise E.invalid_parameter(
                "There is already a task running. Only one active task is allowed for a source queue arn at a "
                "given time."
            )
        self._run_move(stored)
        return {"TaskHandle": self._task_handle(stored)}

    def _task_handle(self, task: MoveTask) -> str:
        doc = {"taskId": task.task_id, "sourceArn": self.arn(task.source)}
        return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()

    async def list_message_move_tasks(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        source = await self._queue_of_arn(p.get("SourceArn"), "SourceArn")
        limit = p.get("MaxResults", 1)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MOVE_TASKS_KEPT:
            raise E.invalid_parameter(
                f"Value {limit} for parameter MaxResults is invalid. Reason: You must enter a number that's between "
                f"1 and {MOVE_TASKS_KEPT}."
            )
        results = []
        for task in await self._store.move_tasks(source.name, limit):
            entry: dict[str, Any] = {
                "Status": task.status,
                "SourceArn": self.arn(task.source),
                "ApproximateNumberOfMessagesMoved": task.moved,
                "ApproximateNumberOfMessagesToMove": task.to_move,
                "StartedTimestamp": int(task.started * 1000),
            }
            if task.status == "RUNNING":  # only a task that can still be cancelled shows its handle
                entry["TaskHandle"] = self._task_handle(task)
            if task.destination is not None:
                entry["DestinationArn"] = self.arn(task.destination)
            if task.rate is not None:
                entry["MaxNumberOfMessagesPerSecond"] = task.rate
            if task.failure is not None:
                entry["FailureReason"] = task.failure
            results.append(entry)
        return {"Results": results}

    async def cancel_message_move_task(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        handle = p.get("TaskHandle")
        try:
            doc = json.loads(base64.b64decode(str(handle), validate=True))
            task_id, source_arn = str(doc["taskId"]), doc["sourceArn"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise E.invalid_parameter("Value for parameter TaskHandle is invalid.") from None
        source = await self._queue_of_arn(source_arn, "SourceArn")
        found = await self._store.move_task(task_id)
        if found is None or found.source != source.name:  # checked first: a handle cancels its own queue's task only
            raise E.resource_not_found("Task does not exist.")
        task, cancelled = await self._store.cancel_move(task_id)
        if task is None:
            raise E.resource_not_found("Task does not exist.")
        if not cancelled:
            raise E.invalid_parameter(f"Only a RUNNING task can be cancelled; this one is {task.status}.")
        runner = self._moves.get(task_id)
        if runner is not None:
            runner.cancel()  # it would stop at its next move anyway; this spares it the wait
        return {"ApproximateNumberOfMessagesMoved": task.moved}

    # -- after receiving -------------------------------------------------------------------------------------

    def _handle(self, queue: Queue, handle: Any) -> tuple[int, str]:
        """A receipt handle's (message seq, receipt token): the service's own opaque format, the queue's name,
        the message's seq and the token of its receive. Anything else (a handle of an earlier version, which
        named the message by its id) is ReceiptHandleIsInvalid."""
        if not isinstance(handle, str) or not handle:
            raise E.missing_parameter("ReceiptHandle")
        try:
            name, seq, token = base64.urlsafe_b64decode(handle.encode()).decode().split("\n")
        except (binascii.Error, ValueError, UnicodeError):
            raise E.receipt_invalid(handle) from None
        if name != queue.name or not (seq.isascii() and seq.isdigit() and len(seq) <= 18) or not token:
            raise E.receipt_invalid(handle)
        return int(seq), token

    async def delete_message(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        handle = self._handle(queue, p.get("ReceiptHandle"))
        await self._store.delete(queue.name, [handle])  # a stale or spent handle deletes nothing
        return {}

    async def delete_message_batch(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue = await self._queue(p)
        successful, failed = [], []
        handles: list[tuple[int, str]] = []
        for entry in _batch_entries(p.get("Entries")):
            try:
                handles.append(self._handle(queue, entry.get("ReceiptHandle")))
                successful.append({"Id": entry["Id"]})
            except E.SqsError as exc:
                failed.append(_failure(entry["Id"], exc))
        if handles:
            await self._store.delete(queue.name, handles)  # one commit for the batch
        return {"Successful": successful, "Failed": failed}

    def _change(self, queue: Queue, entry: Mapping[str, Any], now: float) -> tuple[int, str, float]:
        """The store's change for one ChangeMessageVisibility entry (the entry's refusal raised)."""
        seq, token = self._handle(queue, entry.get("ReceiptHandle"))
        seconds = entry.get("VisibilityTimeout")
        if seconds is None:
            raise E.missing_parameter("VisibilityTimeout")
        if not isinstance(seconds, int) or not 0 <= seconds <= 43_200:
            raise E.invalid_parameter(
                f"Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )
        return seq, token, now + seconds

    @staticmethod
    def _check_change(outcome: Outcome, entry: Mapping[str, Any]) -> None:
        if outcome is Outcome.STALE or outcome is Outcome.GONE:
            raise E.receipt_invalid(str(entry.get("ReceiptHandle")))
        if outcome is Outcome.NOT_IN_FLIGHT:
            raise E.not_in_flight()

    async def change_message_visibility(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue, now = await self._queue(p), self._clock()
        change = self._change(queue, p, now)
        self._check_change((await self._store.change_visibility(queue.name, [change], now))[0], p)
        if change[2] <= now:
            self._wake(queue.name)
        return {}

    async def change_message_visibility_batch(self, p: Mapping[str, Any], call: Call) -> dict[str, Any]:
        queue, now = await self._queue(p), self._clock()
        failed: list[dict[str, Any]] = []
        valid: list[tuple[Mapping[str, Any], tuple[int, str, float]]] = []
        entries = _batch_entries(p.get("Entries"))
        for entry in entries:
            try:
                valid.append((entry, self._change(queue, entry, now)))
            except E.SqsError as exc:
                failed.append(_failure(entry["Id"], exc))
        outcomes = await self._store.change_visibility(queue.name, [c for _, c in valid], now) if valid else []
        successful = []
        for (entry, change), outcome in zip(valid, outcomes, strict=True):
            try:
                self._check_change(outcome, entry)
                successful.append({"Id": entry["Id"]})
                if change[2] <= now:
                    self._wake(queue.name)
            except E.SqsError as exc:
                failed.append(_failure(entry["Id"], exc))
        order = {e["Id"]: i for i, e in enumerate(entries)}  # failures in the request's order
        failed.sort(key=lambda f: order[f["Id"]])
        return {"Successful": successful, "Failed": failed}


def _message_id() -> str:
    # A version-4 UUID as SQS's are. Ids name messages and guard nothing (receipt handles carry the secret
    # token), so they come from the process's fast generator, not a system call per message.
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _sequence(seq: int) -> str:
    return str(10**19 + seq)  # 20 digits, growing with each message, as SQS's look


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": name}).encode()).decode()


def _token_after(token: Any) -> str | None:
    if not token:
        return None
    try:
        return str(json.loads(base64.urlsafe_b64decode(str(token).encode()))["after"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise E.invalid_parameter("Invalid NextToken value.") from None


def _page_size(p: Mapping[str, Any]) -> int | None:
    limit = p.get("MaxResults")
    if limit is None:
        if p.get("NextToken"):
            raise E.invalid_parameter("MaxResults is a mandatory parameter when you provide a value for NextToken.")
        return None
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise E.invalid_parameter(
            f"Value {limit} for parameter MaxResults is invalid. Reason: Must be between 1 and 1000."
        )
    return limit


def _batch_entries(entries: Any) -> list[Mapping[str, Any]]:
    if not entries:
        raise E.batch("EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the request.")
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise E.invalid_parameter("Entries must be a list of structures.")
    if len(entries) > 10:
        raise E.batch(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
        )
    ids = [e.get("Id") for e in entries]
    for entry_id in ids:
        if not isinstance(entry_id, str) or not _BATCH_ID.fullmatch(entry_id):
            raise E.batch(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long.",
            )
    if len(set(ids)) != len(ids):
        raise E.batch("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
    return list(entries)


def _failure(entry_id: str, exc: E.SqsError) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": exc.sender, "Code": exc.query_code, "Message": exc.message}


def _message_attributes(given: Any, system: bool = False) -> dict[str, dict[str, Any]]:
    if not given:
        return {}
    if not isinstance(given, Mapping):
        raise E.invalid_parameter("MessageAttributes must be a map.")
    if len(given) > 10:
        raise E.invalid_parameter(f"Number of message attributes [{len(given)}] exceeds the allowed maximum [10].")
    out: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        if system and name != "AWSTraceHeader":
            raise E.invalid_parameter(f"Message system attribute name '{name}' is invalid.")
        if (
            not _ATTRIBUTE_NAME.fullmatch(name)
            or name.lower().startswith(("aws.", "amazon."))
            or name.startswith(".")
            or name.endswith(".")
            or ".." in name
        ) and not system:
            raise E.invalid_parameter(f"Message (user) attribute '{name}' is invalid.")
        if not isinstance(value, Mapping):
            raise E.invalid_parameter(f"The message attribute '{name}' must be a structure.")
        data_type = value.get("DataType")
        if not isinstance(data_type, str) or not data_type:
            raise E.invalid_parameter(f"The message attribute '{name}' must contain non-empty message attribute type.")
        base = data_type.split(".", 1)[0]
        if base not in ("String", "Number", "Binary") or len(data_type) > 256:
            raise E.invalid_parameter(
                f"The type of message (user) attribute '{name}' is invalid. You must use only the following "
                "supported type prefixes: Binary, Number, String."
            )
        if base == "Binary":
            if value.get("BinaryValue") in (None, "", b""):
                raise E.invalid_parameter(f"The message attribute '{name}' with type 'Binary' must use field 'Binary'.")
            data = value["BinaryValue"]
            kept = base64.b64encode(data).decode() if isinstance(data, bytes) else str(data)
            _binary(kept)
            out[name] = {"DataType": data_type, "BinaryValue": kept}
        else:
            text = value.get("StringValue")
            if text in (None, ""):
                raise E.invalid_parameter(
                    f"The message attribute '{name}' must contain non-empty message attribute value for "
                    f"message attribute type '{base}'."
                )
            if base == "Number" and not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", str(text)):
                raise E.invalid_parameter(f"Can't cast the value of message (user) attribute '{name}' to a number.")
            out[name] = {"DataType": data_type, "StringValue": str(text)}
    return out


def _attributes_size(attributes: Mapping[str, Any]) -> int:
    size = 0
    for name, value in attributes.items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if value.get("StringValue") is not None:
            size += len(str(value["StringValue"]).encode())
        elif value.get("BinaryValue") is not None:
            data = value["BinaryValue"]
            size += len(data) if isinstance(data, bytes) else len(str(data)) * 3 // 4
    return size


def _redrive_allow_policy(value: str) -> str:
    def refuse(reason: str) -> E.SqsError:
        return E.invalid_attribute_value(f"Invalid value for the parameter RedriveAllowPolicy. Reason: {reason}")

    try:
        policy = json.loads(value)
    except ValueError:
        raise refuse("Amazon SQS can't parse the policy.") from None
    if not isinstance(policy, dict) or policy.get("redrivePermission") not in ("allowAll", "denyAll", "byQueue"):
        raise refuse("redrivePermission must be one of allowAll, denyAll, byQueue.")
    sources = policy.get("sourceQueueArns")
    if policy["redrivePermission"] == "byQueue":
        if not isinstance(sources, list) or not 1 <= len(sources) <= 10:
            raise refuse("byQueue needs sourceQueueArns: 1 to 10 queue ARNs.")
    elif sources:
        raise refuse("sourceQueueArns may be given only with redrivePermission byQueue.")
    return json.dumps(policy, separators=(",", ":"))
