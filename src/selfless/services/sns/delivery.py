"""Delivering a topic's messages to its ``sqs`` and ``http``/``https`` subscriptions (Lambda subscriptions are
asynchronous invocations: the durable async queue runs them, ``functions.py``).

Every delivery is durable: committed with its publish (or, for an http subscription's confirmation request,
with its Subscribe), loaded again after a restart, and removed only once it was sent or given up. Delivery is
at least once: a delivery sent just before a crash may be sent again after the restart.

One loop schedules them by due time, at most ``concurrency`` at once, at most ``limit`` pending (a publish
beyond that is refused with SNS's Throttled). A FIFO topic's subscription gets its deliveries one at a time,
in publish order (a failed one holds back those behind it until it is sent or given up).

Retries, as SNS retries (``retry_delay``):

- ``sqs``: 3 immediate retries, 2 after 1 s, 10 backing off from 1 s to 20 s, then every 20 s. SNS keeps
  trying for 23 days; selfless gives up after ``max_age_s`` (6 hours).
- ``http``/``https``: the subscription's delivery policy (``healthyRetryPolicy``: the subscription's
  DeliveryPolicy, over the topic's ``http.defaultHealthyRetryPolicy``, over SNS's default of 3 retries 20 s
  apart): ``numNoDelayRetries`` immediate retries, ``numMinDelayRetries`` after ``minDelayTarget``, a backoff
  from ``minDelayTarget`` to ``maxDelayTarget`` (``backoffFunction``), ``numMaxDelayRetries`` after
  ``maxDelayTarget``, ``numRetries`` in all; never past ``max_age_s`` either. Each attempt has
  ``http_timeout_s`` (SNS's 15 s) to get an answer; a 2xx answer is a delivery, anything else a failure.

A notification given up goes to the subscription's dead-letter queue (RedrivePolicy ``deadLetterTargetArn``,
a built-in queue) when it has one (the envelope SNS would have sent, with the attributes ``ErrorCode`` and
``ErrorMessage`` as SNS's DLQ messages carry the reason), and is dropped with a log line otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selfless.services.sns import messages
from selfless.services.sns.service import http_retry_policy
from selfless.services.sns.store import Delivery, Subscription, TopicStore

log = logging.getLogger(__name__)

CONCURRENCY = 16
LIMIT = 100_000
HTTP_TIMEOUT_S = 15.0
QUEUE_TIMEOUT_S = 30.0
MAX_AGE_S = 21_600.0
_ANSWER_MAX = 65_536  # the longest status line read from an endpoint (only the status is read)
_RETRY_AFTER_FAULT_S = 5.0


class DeliveryFailed(Exception):
    """One attempt did not deliver (the endpoint refused or did not answer in time)."""


class QueueSink(Protocol):
    """The built-in queue service, as deliveries send to it (``sqs_sink.BuiltinQueueSink``)."""

    async def send(
        self,
        name: str,
        body: str,
        attributes: Mapping[str, Mapping[str, Any]],
        group_id: str | None,
        dedup_id: str | None,
    ) -> None:
        """Send one message; raises DeliveryFailed when the queue did not keep it."""
        ...


def sqs_delay(failures: int) -> float:
    """Seconds before the next attempt at an sqs delivery after ``failures`` failed ones (SNS's policy)."""
    if failures <= 3:
        return 0.0
    if failures <= 5:
        return 1.0
    if failures <= 15:
        return float(min(20, 2 ** (failures - 5)))
    return 20.0


def http_delay(policy: Mapping[str, Any], failures: int) -> float | None:
    """Seconds before the next attempt at an http delivery after ``failures`` failed ones, under a
    healthyRetryPolicy; None when its retries are spent."""
    retries = int(policy["numRetries"])
    if failures > retries:
        return None
    low, high = float(policy["minDelayTarget"]), float(policy["maxDelayTarget"])
    no_delay, at_min, at_max = (
        int(policy[k]) for k in ("numNoDelayRetries", "numMinDelayRetries", "numMaxDelayRetries")
    )
    if failures <= no_delay:
        return 0.0
    if failures <= no_delay + at_min:
        return low
    backoff = retries - no_delay - at_min - at_max
    step = failures - no_delay - at_min
    if step > backoff:
        return high
    if backoff <= 1:
        return low if step < backoff else high
    fraction = (step - 1) / (backoff - 1)
    if policy.get("backoffFunction") in ("geometric", "exponential") and low > 0:
        return float(low * (high / low) ** fraction)
    return low + (high - low) * fraction


class Deliverer:
    """The delivery loop (see the module docstring). ``base_url``: the server's address for the URLs in
    envelopes."""

    def __init__(
        self,
        store: TopicStore,
        queues: QueueSink | None,
        *,
        base_url: str,
        concurrency: int = CONCURRENCY,
        limit: int = LIMIT,
        http_timeout_s: float = HTTP_TIMEOUT_S,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._store = store
        self._queues = queues
        self._base = base_url
        self._limit = limit
        self._http_timeout_s = http_timeout_s
        self._max_age_s = max_age_s
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._more = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        # A FIFO topic's subscription: its deliveries in order; only the first is scheduled.
        self._lines: dict[str, collections.deque[Delivery]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return self._count

    def has_room(self, count: int) -> bool:
        return not self._closed and self._count + count <= self._limit

    async def start(self) -> None:
        self.adopt(await self._store.pending())
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    def adopt(self, deliveries: Sequence[Delivery]) -> None:
        """Schedule deliveries already committed (in their commit's order)."""
        for d in deliveries:
            self._count += 1
            if _fifo(d.subscription_arn):
                line = self._lines.setdefault(d.subscription_arn, collections.deque())
                line.append(d)
                if len(line) == 1:
                    self._schedule(d)
            else:
                self._schedule(d)

    def _schedule(self, d: Delivery) -> None:
        heapq.heappush(self._heap, (d.next_at, next(self._seq), d))
        self._more.set()

    def _finished(self, d: Delivery) -> None:
        self._count -= 1
        line = self._lines.get(d.subscription_arn)
        if line is not None and line and line[0].id == d.id:
            line.popleft()
            if line:
                self._schedule(line[0])
            else:
                del self._lines[d.subscription_arn]

    async def _dispatch(self) -> None:
        while True:
            if not self._heap:
                await self._more.wait()
                self._more.clear()
                continue
            wait = self._heap[0][0] - time.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._more.wait()
                self._more.clear()
                continue
            _due, _n, d = heapq.heappop(self._heap)
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._guarded(d))
            self._running.add(task)
            task.add_done_callback(self._ran)

    def _ran(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _guarded(self, d: Delivery) -> None:
        try:
            await self._attempt(d)
        except asyncio.CancelledError:
            raise
        except Exception:  # a store error, a bug: the delivery stays pending and is tried again
            log.exception("delivery %s: the attempt failed; trying again in %g s", d.id, _RETRY_AFTER_FAULT_S)
            self._schedule(_replace(d, next_at=time.time() + _RETRY_AFTER_FAULT_S))

    async def _attempt(self, d: Delivery) -> None:
        s = await self._store.get_subscription(d.subscription_arn)
        if s is None:  # unsubscribed (or its topic deleted): nothing to send
            await self._done(d)
            return
        doc: Mapping[str, Any] | None = None
        if d.kind == "confirmation":
            if not s.pending:
                await self._done(d)
                return
        else:
            message = await self._store.message(d.message_id)
            if message is None:
                await self._done(d)
                return
            doc = message.doc
        try:
            await self._send(s, d, doc)
        except DeliveryFailed as exc:
            await self._failed(s, d, doc, str(exc))
            return
        await self._done(d)

    async def _done(self, d: Delivery) -> None:
        await self._store.done(d)
        self._finished(d)

    async def _failed(self, s: Subscription, d: Delivery, doc: Mapping[str, Any] | None, reason: str) -> None:
        failures = d.attempts + 1
        if s.protocol == "sqs":
            delay: float | None = sqs_delay(failures)
        else:
            topic = await self._store.get_topic(s.topic_arn)
            policy = http_retry_policy(
                topic.attributes.get("DeliveryPolicy") if topic else None, s.attributes.get("DeliveryPolicy")
            )
            delay = http_delay(policy, failures)
        if delay is None or time.time() + delay - d.accepted_at > self._max_age_s:
            log.warning("delivery %s to %s given up after %d attempts: %s", d.id, s.endpoint, failures, reason)
            if doc is not None:
                await self._dead_letter(s, doc, reason)
            await self._done(d)
            return
        log.info("delivery %s to %s: attempt %d failed (%s); again in %g s", d.id, s.endpoint, failures, reason, delay)
        again = _replace(d, attempts=failures, next_at=time.time() + delay)
        await self._store.retry(again)
        self._schedule(again)

    async def _dead_letter(self, s: Subscription, doc: Mapping[str, Any], reason: str) -> None:
        try:
            target = json.loads(s.attributes.get("RedrivePolicy") or "{}").get("deadLetterTargetArn")
        except (ValueError, AttributeError):
            target = None
        if not target or self._queues is None:
            return
        body = messages.encode(messages.envelope(doc, s.arn, s.protocol, self._base))
        attributes = {
            "ErrorCode": {"DataType": "String", "StringValue": "EndpointUnavailable"},
            "ErrorMessage": {"DataType": "String", "StringValue": reason[:1024] or "delivery failed"},
        }
        name = str(target).rsplit(":", 1)[-1]
        group = doc.get("group_id") if name.endswith(".fifo") else None
        try:
            async with asyncio.timeout(QUEUE_TIMEOUT_S):
                await self._queues.send(name, body, attributes, group, doc["message_id"] if group else None)
        except (DeliveryFailed, TimeoutError) as exc:
            log.warning(
                "message %s: its dead-letter queue %s did not take it either: %s", doc["message_id"], target, exc
            )

    # -- sending ----------------------------------------------------------------------------------------------

    async def _send(self, s: Subscription, d: Delivery, doc: Mapping[str, Any] | None) -> None:
        raw = s.attributes.get("RawMessageDelivery") == "true"
        if doc is None:  # an http subscription's confirmation request
            assert s.token is not None
            body = messages.confirmation(s.topic_arn, s.token, d.id, self._base, time.time())
            await self._post(s, "SubscriptionConfirmation", d.id, messages.encode(body).encode(), raw=False)
            return
        if s.protocol == "sqs":
            if self._queues is None:
                raise DeliveryFailed("queues are an external service's on this server")
            name = s.endpoint.rsplit(":", 1)[-1]
            if raw:
                text, attributes = messages.message_text(doc, "sqs"), dict(doc.get("attributes") or {})
            else:
                text, attributes = messages.encode(messages.envelope(doc, s.arn, "sqs", self._base)), {}
            fifo_queue = name.endswith(".fifo")
            group = doc.get("group_id") if fifo_queue else None
            dedup = (doc.get("dedup_id") or doc["message_id"]) if fifo_queue else None
            try:
                async with asyncio.timeout(QUEUE_TIMEOUT_S):
                    await self._queues.send(name, text, attributes, group, dedup)
            except TimeoutError:
                raise DeliveryFailed(f"the queue did not keep it within {QUEUE_TIMEOUT_S:g} s") from None
            return
        if raw:
            await self._post(
                s, "Notification", doc["message_id"], messages.message_text(doc, s.protocol).encode(), raw=True
            )
        else:
            envelope = messages.encode(messages.envelope(doc, s.arn, s.protocol, self._base)).encode()
            await self._post(s, "Notification", doc["message_id"], envelope, raw=False)

    async def _post(self, s: Subscription, kind: str, message_id: str, body: bytes, *, raw: bool) -> None:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent",
            "x-amz-sns-message-type": kind,
            "x-amz-sns-message-id": message_id,
            "x-amz-sns-topic-arn": s.topic_arn,
        }
        if kind == "Notification":
            headers["x-amz-sns-subscription-arn"] = s.arn
        if raw:
            headers["x-amz-sns-rawdelivery"] = "true"
        try:
            async with asyncio.timeout(self._http_timeout_s):
                status = await _post(s.endpoint, body, headers)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._http_timeout_s:g} s") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")

    # -- shutdown ---------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop; deliveries under way are cancelled and stay pending in the store (sent after a restart)."""
        self._closed = True
        tasks = [t for t in (self._task,) if t is not None] + list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """POST ``body`` to ``url`` over HTTP/1.1 and return the answer's status (what follows it is not read).
    Plain asyncio streams, so the caller's deadline covers the whole exchange (connect, TLS, send, answer) and
    a slow endpoint holds no thread; ``Connection: close``, so nothing is left open."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise DeliveryFailed(f"not an http(s) URL: {url[:200]}")
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise DeliveryFailed(f"a bad port in {url[:200]}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    head = [f"POST {target} HTTP/1.1", f"Host: {netloc}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer: asyncio.StreamWriter | None = None
    try:
        context = ssl.create_default_context() if secure else None
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if secure else None, limit=_ANSWER_MAX
        )
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        line = await reader.readline()
    except (OSError, ValueError, UnicodeError, asyncio.IncompleteReadError) as exc:
        raise DeliveryFailed(str(exc)[:300] or type(exc).__name__) from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    fields = line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise DeliveryFailed(f"not an HTTP answer: {line[:100]!r}")
    return int(fields[1])


def _fifo(subscription_arn: str) -> bool:
    return subscription_arn.rpartition(":")[0].endswith(".fifo")


def _replace(d: Delivery, **changes: Any) -> Delivery:
    return dataclasses.replace(d, **changes)
