"""Event source mappings on RabbitMQ queues, as Lambda makes them for Amazon MQ for RabbitMQ: the broker ARN's
rules, the ``aws:rmq`` event, and ``RabbitPoller``, the consumer of one mapping (aio-pika, AMQP 0-9-1).

Where a broker is: ``Settings.mq_brokers`` (SELFLESS_MQ_BROKERS) names each broker, by its name or its whole
ARN, with an AMQP URL that holds the credentials; BASIC_AUTH's secret ARN is required, as AWS requires it, and
kept, but selfless has no Secrets Manager to read it from. VIRTUAL_HOST, when given, replaces the URL's virtual
host (``/`` when the URL names none).

One consumer per mapping (Lambda runs one for a RabbitMQ mapping): a connection and a channel consuming the queue
with manual acknowledgement, and a prefetch (the unacknowledged messages the broker may have out to selfless) of
at most the batch size, and of at most what fits ``PREFETCH_BYTES`` at the largest message of the last two batches:
it starts at 1 and is set again as messages come (small messages: the batch size at once).

    collect:  messages until the batch is full (BatchSize), the batching window ends (it starts with the batch's
              first message; 0.5 s at least, Lambda's default for MQ), or the event would pass 6 MB (the message
              that does not fit starts the next batch). A message that alone makes an event of more than 6 MB is
              rejected without requeue (the queue's dead-letter exchange gets it, if it has one: Lambda drops
              such records too). With FilterCriteria, a message no filter accepts is acknowledged and never sent.
    invoke:   the function, synchronously, with the ``aws:rmq`` event; a throttle is retried with backoff for as
              long as the mapping runs (the messages stay unacknowledged meanwhile)
    settle:   success acknowledges the batch; a function error or timeout rejects the whole batch with requeue,
              so the broker delivers it again (``redelivered: true``).

Nothing is acknowledged before the function succeeded: a connection lost mid-batch gives the broker its
unacknowledged messages back (delivered at least once). A broker that cannot be reached, refuses the
credentials, or has no such queue or virtual host is retried with backoff (1 s doubling to 30 s), each attempt
within ``connect_timeout_s``, and said in LastProcessingResult (``PROBLEM: ...``) and, for credentials and
configuration, StateTransitionReason (EVENT_SOURCE_AUTHN_ERROR, ESM_CONFIG_NOT_VALID), until it works again.
``stop`` ends a collecting consumer at once and gives an invoking one its deadline, then closes the connection
(whatever it holds goes back to the queue): no connection or task outlives it.

Memory: a consumer holds about ``PREFETCH_BYTES`` of messages (and builds events of at most 6 MB); at worst, when
big messages follow many small ones, the messages the broker sent before the prefetch came down: BatchSize of
them, each at most the broker's ``max_message_size`` (16 MiB by default since RabbitMQ 4.0).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import decimal
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
from aiormq.abc import AbstractChannel, DeliveredMessage

from selfless.errors import ResourceNotFound, TooManyRequests
from selfless.invocation.inflight import Outcome

log = logging.getLogger(__name__)

MQ_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:mq:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):broker:(?P<name>[^:]+):(?P<id>[^:]+)$"
)
DEFAULT_BATCH_SIZE = 100
MIN_WINDOW_S = 0.5  # Lambda's default batching window for MQ
MAX_PAYLOAD = 6_291_456  # a synchronous invocation's request payload
PREFETCH_BYTES = 2 * MAX_PAYLOAD  # the batch being built or invoked, and the next one
CONNECT_TIMEOUT_S = 10.0
_RETRY_FIRST_S = 1.0
_RETRY_MAX_S = 30.0
_THROTTLE_FIRST_S = 0.1
_THROTTLE_MAX_S = 2.0
_IDLE_CHECK_S = 30.0  # an idle consumer looks at its connection this often (heartbeats notice a dead one)
_CLOSE_TIMEOUT_S = 5.0
_EVENT_OVERHEAD = 256  # the event's members around its messages, generously

NO_RECORDS = "No records processed"
OK = "OK"
FUNCTION_FAILED = "PROBLEM: Function call failed"
THROTTLED = "PROBLEM: Function call throttled"
FUNCTION_GONE = "PROBLEM: Function not found"
TOO_LARGE = "PROBLEM: Message too large: an event of one message would pass the 6 MB invocation payload limit"
AUTHN_ERROR = "EVENT_SOURCE_AUTHN_ERROR"
AUTHZ_ERROR = "EVENT_SOURCE_AUTHZ_ERROR"
CONFIG_NOT_VALID = "ESM_CONFIG_NOT_VALID"
USER_INITIATED = "USER_INITIATED"

Invoke = Callable[[bytes], Awaitable[Outcome]]


def broker_url(brokers: Mapping[str, str], arn: str) -> str | None:
    """The AMQP URL ``brokers`` (``Settings.mq_brokers``) gives a broker ARN: by the whole ARN, else by its name."""
    found = MQ_ARN.match(arn)
    if found is None:
        return None
    return brokers.get(arn) or brokers.get(found.group("name"))


def vhost_of(url: str, configured: str | None) -> str:
    """The virtual host a mapping consumes: VIRTUAL_HOST when given, else the URL's (``/`` when it has none)."""
    if configured:
        return configured
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(url: str, vhost: str) -> str:
    """``url`` naming ``vhost`` (percent-encoded whole, so that ``/`` is the vhost ``/``)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


def where(url: str) -> str:
    """``host:port`` of an AMQP URL: what messages may show of it (never its credentials)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"


# -- the event ------------------------------------------------------------------------------------------------


def _timestamp(value: datetime.datetime | None) -> str | None:
    """AMQP's timestamp as Lambda shows it (``Jan 1, 1970, 12:33:41 AM``, UTC)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC)
    hour = value.hour % 12 or 12
    return f"{value:%b} {value.day}, {value.year}, {hour}:{value:%M:%S} {'AM' if value.hour < 12 else 'PM'}"


def _header(value: Any) -> Any:
    """A header value as Lambda shows it: strings as their bytes (``{"bytes": [...]}``), tables and arrays
    member by member, numbers and booleans as they are."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": list(bytes(value))}
    if isinstance(value, Mapping):
        return {str(k): _header(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_header(v) for v in value]
    if isinstance(value, datetime.datetime):
        return _timestamp(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def message_doc(message: DeliveredMessage) -> dict[str, Any]:
    """One message of the ``aws:rmq`` event: its basic properties as the broker sent them (null when the message
    has none), whether the broker delivered it before, and its body in base64."""
    p = message.header.properties
    return {
        "basicProperties": {
            "contentType": p.content_type,
            "contentEncoding": p.content_encoding,
            "headers": _header(dict(p.headers)) if p.headers else None,
            "deliveryMode": p.delivery_mode,
            "priority": p.priority,
            "correlationId": p.correlation_id,
            "replyTo": p.reply_to,
            "expiration": p.expiration,
            "messageId": p.message_id,
            "timestamp": _timestamp(p.timestamp) if isinstance(p.timestamp, datetime.datetime) else None,
            "type": p.message_type,
            "userId": p.user_id,
            "appId": p.app_id,
            "clusterId": p.cluster_id or None,  # pamqp reads an absent one as ""
            "bodySize": len(message.body),
        },
        "redelivered": bool(message.redelivered),
        "data": base64.b64encode(message.body).decode(),
    }


def event(event_source_arn: str, queue: str, vhost: str, messages: Sequence[Mapping[str, Any]]) -> bytes:
    """The ``aws:rmq`` event of a batch, keyed by ``<queue>::<vhost>``."""
    doc = {
        "eventSource": "aws:rmq",
        "eventSourceArn": event_source_arn,
        "rmqMessagesByQueue": {f"{queue}::{vhost}": list(messages)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# -- the consumer ---------------------------------------------------------------------------------------------


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # a delivery of a consumer always has one
    return tag


class _Lost(Exception):
    """The connection or channel closed under the consumer."""


def _problem(exc: BaseException, url: str, queue: str, vhost: str) -> tuple[str, str | None]:
    """(LastProcessingResult, StateTransitionReason or None) for what failed while connecting or consuming."""
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
        return f"PROBLEM: Authentication failed at the broker {where(url)}: {exc}", AUTHN_ERROR
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return f"PROBLEM: The broker {where(url)} does not allow access to the virtual host {vhost}", CONFIG_NOT_VALID
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return f"PROBLEM: The queue {queue} does not exist in the virtual host {vhost}", CONFIG_NOT_VALID
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return f"PROBLEM: Access to the queue {queue} refused: {exc}", AUTHZ_ERROR
    if isinstance(exc, TimeoutError):
        return f"PROBLEM: Connection error. No answer from the broker {where(url)} in time", None
    if isinstance(exc, _Lost):
        return f"PROBLEM: Connection error. The connection to the broker {where(url)} closed: {exc}", None
    if isinstance(exc, OSError | aiormq.exceptions.AMQPError | aiormq.exceptions.ChannelInvalidStateError):
        return f"PROBLEM: Connection error. Could not connect to the broker {where(url)}: {exc}", None
    return f"PROBLEM: Internal error: {exc!r}", None


class RabbitPoller:
    """The consumer of one mapping on one RabbitMQ queue."""

    def __init__(
        self,
        *,
        mapping_id: str,
        url: str,
        queue: str,
        vhost: str,
        event_source_arn: str,
        invoke: Invoke,
        batch_size: int,
        window_s: float,
        on_result: Callable[[str], None],
        on_reason: Callable[[str], None],
        accepts: Callable[[Mapping[str, Any]], bool] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mapping_id = mapping_id
        self._url = url
        self._queue = queue
        self._vhost = vhost
        self._arn = event_source_arn
        self._invoke = invoke
        self._batch_size = batch_size
        self._window_s = max(MIN_WINDOW_S, window_s)
        self._on_result = on_result
        self._on_reason = on_reason
        self._accepts = accepts
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._invoking = False
        self._consuming = False  # the current connection got as far as consuming
        self._prefetch = 1
        self._consumer_tag = ""
        self._delivered: Callable[[DeliveredMessage], Coroutine[Any, Any, None]] | None = None
        # The largest message (its size in the event) of the batch before and of this one: they set the prefetch.
        self._largest = 0
        self._largest_now = 0
        self._stopping = False

    @property
    def workers(self) -> int:
        return 1 if self._task is not None and not self._task.done() else 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"esm-rmq-{self.mapping_id}")

    async def stop(self, deadline_s: float) -> None:
        """A collecting consumer ends at once; an invoking one gets ``deadline_s`` to finish. Idempotent."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        if not self._invoking:
            task.cancel()
        _done, pending = await asyncio.wait([task], timeout=deadline_s)
        if pending:
            task.cancel()
            await asyncio.wait([task], timeout=_CLOSE_TIMEOUT_S + 1)

    # -- connecting -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _RETRY_FIRST_S
        while not self._stopping:
            self._consuming = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker's or the network's: said, then tried again
                if self._consuming:  # a connection that worked and was lost: the next attempt waits the least
                    backoff = _RETRY_FIRST_S
                result, reason = _problem(exc, self._url, self._queue, self._vhost)
                log.info("mapping %s: %s", self.mapping_id, result, exc_info=result.startswith("PROBLEM: Internal"))
                self._on_result(result)
                if reason is not None:
                    self._on_reason(reason)
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(_RETRY_MAX_S, backoff * 2)

    async def _session(self) -> None:
        """One connection: consume until it closes (``_Lost``) or the poller stops (returns)."""
        connection = await asyncio.wait_for(
            aio_pika.connect(
                with_vhost(self._url, self._vhost),
                timeout=self._connect_timeout_s,
                client_properties={"connection_name": f"selfless-esm-{self.mapping_id}"},
            ),
            self._connect_timeout_s + 1,
        )
        try:
            inbox: asyncio.Queue[DeliveredMessage | None] = asyncio.Queue()  # bounded by the prefetch

            def closed(*_: Any) -> None:
                inbox.put_nowait(None)

            connection.close_callbacks.add(closed)
            async with asyncio.timeout(self._connect_timeout_s):
                channel = await connection.channel()
                channel.close_callbacks.add(closed)
                self._prefetch = 1  # until a message shows how big they are
                await channel.set_qos(prefetch_count=self._prefetch)
                await channel.declare_queue(self._queue, passive=True)
                # The protocol's own channel: its deliveries keep the properties as sent (absent ones absent,
                # where aio-pika's messages default them).
                amqp = await channel.get_underlay_channel()
                # The broker cancels a consumer whose queue is deleted, and the channel stays open: start over.
                amqp.on_consumer_cancel_callbacks.add(closed)

            async def delivered(message: DeliveredMessage) -> None:
                inbox.put_nowait(message)

            self._delivered = delivered
            async with asyncio.timeout(self._connect_timeout_s):
                self._consumer_tag = await self._consume(amqp)
            self._consuming = True
            self._on_reason(USER_INITIATED)
            carried: DeliveredMessage | None = None
            while not self._stopping:
                batch, carried = await self._collect(amqp, inbox, carried)
                if batch:
                    await self._process(amqp, batch)
        finally:
            # Unacknowledged messages go back to the queue with the connection.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(connection.close()), _CLOSE_TIMEOUT_S)

    # -- one batch --------------------------------------------------------------------------------------------

    async def _collect(
        self,
        amqp: AbstractChannel,
        inbox: asyncio.Queue[DeliveredMessage | None],
        carried: DeliveredMessage | None,
    ) -> tuple[list[tuple[DeliveredMessage, dict[str, Any]]], DeliveredMessage | None]:
        """One batch (maybe empty: an idle check), and the message that did not fit it (it starts the next)."""
        batch: list[tuple[DeliveredMessage, dict[str, Any]]] = []
        size = _EVENT_OVERHEAD
        # The prefetch follows the largest message of this batch and the one before: big messages once do not
        # keep it low for good.
        self._largest, self._largest_now = self._largest_now, 0
        window_end: float | None = None
        while len(batch) < self._batch_size:
            if carried is not None:
                message, carried = carried, None
            else:
                wait = _IDLE_CHECK_S if window_end is None else window_end - self._clock()
                if wait <= 0:
                    break
                try:
                    # Not wait_for: a get that a timeout cancels leaves its message in the inbox.
                    async with asyncio.timeout(wait):
                        got = await inbox.get()
                except TimeoutError:
                    break
                if got is None:
                    raise _Lost("the broker cancelled the consumer, or the connection closed")
                message = got
            doc = message_doc(message)
            if self._accepts is not None and not self._accepts(doc):
                await amqp.basic_ack(_tag(message))  # filtered out: never sent (Lambda's rule)
                continue
            doc_size = len(json.dumps(doc, separators=(",", ":"))) + 1
            self._largest_now = max(self._largest_now, doc_size)
            await self._fit_prefetch(amqp)
            if _EVENT_OVERHEAD + doc_size > MAX_PAYLOAD:
                log.warning("mapping %s: a message of %d bytes cannot fit an event", self.mapping_id, len(message.body))
                self._on_result(TOO_LARGE)
                await amqp.basic_reject(_tag(message), requeue=False)
                continue
            if size + doc_size > MAX_PAYLOAD:
                return batch, message
            batch.append((message, doc))
            size += doc_size
            if window_end is None:
                window_end = self._clock() + self._window_s
        return batch, carried

    async def _consume(self, amqp: AbstractChannel) -> str:
        assert self._delivered is not None  # set by the session before it consumes
        ok = await amqp.basic_consume(self._queue, self._delivered, no_ack=False)
        return str(ok.consumer_tag)

    async def _fit_prefetch(self, amqp: AbstractChannel) -> None:
        """The prefetch that keeps what the broker has out within ``PREFETCH_BYTES`` at the largest recent message
        (rounded up to a power of two, so that it changes a few times at most; at least 1, at most the batch
        size). RabbitMQ fixes a consumer's prefetch when it starts, so a new one means consuming again: the
        messages out so far stay unacknowledged on the channel, and those the old consumer was sent before the
        broker confirmed its end still arrive, in order."""
        largest = 1 << max(0, (max(self._largest, self._largest_now) - 1).bit_length())
        wanted = max(1, min(self._batch_size, PREFETCH_BYTES // largest))
        if wanted == self._prefetch:
            return
        async with asyncio.timeout(self._connect_timeout_s):
            await amqp.basic_cancel(self._consumer_tag)
            await amqp.basic_qos(prefetch_count=wanted)
            self._consumer_tag = await self._consume(amqp)
        self._prefetch = wanted

    async def _process(self, amqp: AbstractChannel, batch: list[tuple[DeliveredMessage, dict[str, Any]]]) -> None:
        """Invoke with ``batch``: success acknowledges it, a failure rejects it with requeue."""
        payload = event(self._arn, self._queue, self._vhost, [doc for _, doc in batch])
        # Each message on its own (not ``multiple``): a delivery selfless never saw can never be settled with them.
        tags = [_tag(message) for message, _ in batch]
        self._invoking = True
        try:
            succeeded = await self._call(payload)
        finally:
            self._invoking = False
        try:
            for tag in tags:
                if succeeded:
                    await amqp.basic_ack(tag)
                else:
                    await amqp.basic_nack(tag, requeue=True)
        except Exception as exc:  # the channel closed meanwhile: the broker requeues what it had sent
            raise _Lost(f"settling a batch failed: {exc}") from exc

    async def _call(self, payload: bytes) -> bool:
        backoff = _THROTTLE_FIRST_S
        while True:
            try:
                outcome = await self._invoke(payload)
            except TooManyRequests:
                self._on_result(THROTTLED)
                if self._stopping:
                    return False
                await asyncio.sleep(backoff)
                backoff = min(_THROTTLE_MAX_S, backoff * 2)
                continue
            except ResourceNotFound:
                self._on_result(FUNCTION_GONE)
                await asyncio.sleep(_RETRY_FIRST_S)
                return False
            if outcome.failed:
                self._on_result(FUNCTION_FAILED)
                return False
            self._on_result(OK)
            return True
