"""Event source mappings: Lambda's Create/Get/Update/Delete/ListEventSourceMappings for SQS queues, their
lifecycle, and the pollers they run (``selfless.events.poller``). The queues are the built-in ones, or, with
``SELFLESS_SQS_ENDPOINT`` set, those of that SQS-compatible endpoint (AWS SQS itself or another server: the
same ``QueueSource`` seam, ``selfless.events.sqs``), as queue destinations are.

Rules, as AWS words its refusals: the queue must exist (InvalidParameterValueException, the ReceiveMessage
wording); one mapping per queue and function (ResourceConflictException naming the existing UUID); BatchSize
1-10,000, 10 by default, above 10 only with a batching window; no batching window on a FIFO queue; no
stream-only parameters (StartingPosition ...); FilterCriteria as ``selfless.events.filtering`` validates it (up
to 5 filters, OR-ed; a message no filter accepts is deleted without invoking the function). FunctionArn may be
qualified (a version or an alias).

Lifecycle (``State``): Create answers Creating, then the mapping is Enabled (its pollers run) or Disabled;
Update answers Updating (or Enabling / Disabling when Enabled changes), then the same; Delete answers Deleting,
then the mapping is gone once its pollers stopped. StateTransitionReason is USER_INITIATED. Every change is
durable before it is answered, and a restart settles a mapping caught between states and starts its pollers.
LastProcessingResult is kept in memory (``No records processed`` after a restart).

Which queues an SQS ARN names: the built-in ones, or, when ``Settings.sqs_endpoint`` is set, that endpoint's
(``events.external_sqs``: AWS SQS itself or another SQS-compatible server), as for async destinations. One
setting for the server, not one per mapping: the mapping API is unchanged. A queue elsewhere is checked the same
way (it must exist, else the same refusal; a refusal of the endpoint's, e.g. of the credentials, is
InvalidParameterValueException with SQS's code and message), and a poller whose calls fail says why in
LastProcessingResult (``PROBLEM: Error occurred while ReceiveMessage. SQS Error Code: ...``).

RabbitMQ queues: a mapping whose EventSourceArn is an Amazon MQ broker ARN (``arn:aws:mq:<region>:<account>:
broker:<name>:<id>``) consumes the queue its Queues names on that broker (``events.rabbitmq``), by Lambda's rules
for Amazon MQ for RabbitMQ: exactly one queue; SourceAccessConfigurations with one BASIC_AUTH secret ARN and at
most one VIRTUAL_HOST; BatchSize 1-10,000, 100 by default, with no batching window needed above 10; no
FunctionResponseTypes, ScalingConfig or stream-, Kafka- or DocumentDB-only parameters. The broker must be one of
``Settings.mq_brokers`` (refused at creation otherwise); whether it can be reached shows in LastProcessingResult
and StateTransitionReason once the mapping runs. One mapping per broker, queue and function. The kind of a
mapping (SQS or MQ) is its ARN's.

Tags: Create's Tags, and TagResource / UntagResource / ListTags on the mapping's ARN
(``arn:aws:lambda:<region>:<account>:event-source-mapping:<UUID>``, EventSourceMappingArn in every answer), with
the functions' rules (50 at most, no ``aws:`` keys). An ARN that names no mapping here (another region's or
account's included) is ResourceNotFoundException, as Get words it.

Not offered yet: mappings of other sources (Kinesis, DynamoDB, Kafka, ActiveMQ).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless.config import Settings
from selfless.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound, UnsupportedOperation
from selfless.events import filtering, rabbitmq
from selfless.events.mapping_store import EventSourceMapping, MappingStore
from selfless.events.poller import NO_RECORDS, QueuePoller
from selfless.events.rabbitmq import RabbitPoller
from selfless.events.sqs import MappableQueues, SourceUnavailable
from selfless.functions import FunctionRegistry, check_tags
from selfless.invocation.inflight import Outcome
from selfless.models import Function

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10
USER_INITIATED = "USER_INITIATED"
_SQS_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:sqs:(?P<region>[^:]*):(?P<account>[^:]*):(?P<name>[^:]+)$")
_NO_QUEUE = (
    "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
    "SQS Error Message: The specified queue does not exist or you do not have access to it."
)
# Members of the model that SQS mappings do not take (streams', Kafka's, MQ's, DocumentDB's).
_NOT_FOR_SQS = (
    "StartingPosition",
    "StartingPositionTimestamp",
    "ParallelizationFactor",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "MaximumRetryAttempts",
    "TumblingWindowInSeconds",
    "DestinationConfig",
    "Topics",
    "Queues",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig",
    "DocumentDBEventSourceConfig",
    "ProvisionedPollerConfig",
)

# Amazon MQ takes Queues and SourceAccessConfigurations, and none of SQS's own (Lambda's list for MQ).
_NOT_FOR_MQ = (
    *(name for name in _NOT_FOR_SQS if name not in ("Queues", "SourceAccessConfigurations")),
    "FunctionResponseTypes",
    "ScalingConfig",
)
_MQ_ACCESS_TYPES = ("BASIC_AUTH", "VIRTUAL_HOST")
_SECRET_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")

# (function, event payload, invoked ARN) -> the invocation's outcome (``InvocationService.run``).
RunBatch = Callable[[Function, bytes, str], Awaitable[Outcome]]


_ESM_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):event-source-mapping:"
    r"(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)


def is_arn(value: str) -> bool:
    """Whether ``value`` names an event source mapping (rather than, say, a function)."""
    return _ESM_ARN.match(value) is not None


def _not_found() -> ResourceNotFound:
    return ResourceNotFound("The resource you requested does not exist.")


class EventSourceMappings:
    def __init__(
        self,
        settings: Settings,
        store: MappingStore,
        registry: FunctionRegistry,
        queues: MappableQueues,
        run: RunBatch,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._queues = queues
        self._run = run
        self._clock = clock
        self._mappings: dict[str, EventSourceMapping] = {}  # by UUID, in creation order
        self._results: dict[str, str] = {}
        self._reasons: dict[str, str] = {}  # StateTransitionReason a running consumer reports (in memory)
        self._pollers: dict[str, QueuePoller | RabbitPoller] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._settle_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # -- start and stop ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the mappings, settle those a stop caught between states, and start the enabled ones' pollers."""
        for mapping in await self._store.list_mappings():
            if mapping.state == "Deleting":
                await self._store.delete_mapping(mapping.uuid)
                continue
            final = "Enabled" if mapping.enabled else "Disabled"
            if mapping.state != final:
                mapping = mapping.replace(state=final)
                await self._store.put_mapping(mapping)
            self._mappings[mapping.uuid] = mapping
            if mapping.enabled:
                self._start_poller(mapping)

    async def close(self, deadline_s: float) -> None:
        """Stop every poller (see ``QueuePoller.stop``) within ``deadline_s``."""
        self._closed = True
        for task in list(self._settling):
            task.cancel()
        pollers = list(self._pollers.values())
        self._pollers.clear()
        if pollers:
            await asyncio.gather(*(p.stop(deadline_s) for p in pollers))

    # -- the API's operations -------------------------------------------------------------------------------

    async def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        source = params.get("EventSourceArn")
        if not source:
            raise InvalidParameterValue(
                "Unrecognized event source, must be kafka or MQ type event source if event source arn is not specified."
            )
        mq = rabbitmq.MQ_ARN.match(str(source)) is not None
        queues: tuple[str, ...] = ()
        access: tuple[tuple[str, str], ...] = ()
        fifo = False
        if mq:
            queues, access = self._mq_source(str(source), params)
        else:
            _, fifo = await self._queue_of(str(source))
            self._refuse_unsupported(params)
        filters = filtering.criteria(params.get("FilterCriteria"))
        function_arn = self._function_arn(str(params["FunctionName"]))
        tags = dict(params.get("Tags") or {})
        check_tags(tags)
        async with self._lock:
            for other in self._mappings.values():
                if other.event_source_arn == source and other.function_arn == function_arn and other.queues == queues:
                    raise _duplicate(str(source), function_arn, other.uuid, queues)
            batch_size = params.get("BatchSize") or (rabbitmq.DEFAULT_BATCH_SIZE if mq else DEFAULT_BATCH_SIZE)
            window = params.get("MaximumBatchingWindowInSeconds")
            if not mq:
                self._check_batching(batch_size, window or 0, fifo)
            enabled = params.get("Enabled", True)
            mapping = EventSourceMapping(
                uuid=str(uuid.uuid4()),
                function_arn=function_arn,
                event_source_arn=str(source),
                batch_size=batch_size,
                window_s=window or 0,
                enabled=bool(enabled),
                state="Creating",
                reason=USER_INITIATED,
                last_modified=self._clock(),
                last_result=NO_RECORDS,
                response_types=tuple(params.get("FunctionResponseTypes") or ()),
                max_concurrency=(params.get("ScalingConfig") or {}).get("MaximumConcurrency"),
                filters=filters,
                tags=tags,
                queues=queues,
                access=access,
            )
            await self._store.put_mapping(mapping)
            self._mappings[mapping.uuid] = mapping
        self._settle_later(mapping.uuid)
        return self.doc(mapping)

    def get(self, mapping_id: str) -> dict[str, Any]:
        mapping = self._mappings.get(mapping_id)
        if mapping is None:
            raise _not_found()
        return self.doc(mapping)

    def matching(self, source: str | None, function_name: str | None) -> list[dict[str, Any]]:
        wanted: tuple[str, str | None] | None = None
        if function_name:
            name, qualifier = self._registry.resolve_name(function_name)
            wanted = (name, qualifier)
        found = []
        for mapping in self._mappings.values():
            if source and mapping.event_source_arn != source:
                continue
            if wanted is not None:
                name, _, qualifier = _short(mapping.function_arn).partition(":")
                if name != wanted[0] or (wanted[1] is not None and (qualifier or None) != wanted[1]):
                    continue
            found.append(self.doc(mapping))
        return found

    async def update(self, mapping_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        async with self._lock:
            mapping = self._mappings.get(mapping_id)
            if mapping is None or mapping.state == "Deleting":
                raise _not_found()
            mq = _is_mq(mapping)
            changes: dict[str, Any] = {}
            fifo = False
            if mq:
                _refuse(params, _NOT_FOR_MQ, "Amazon MQ")
                if params.get("SourceAccessConfigurations") is not None:
                    changes["access"] = _mq_access(params["SourceAccessConfigurations"])
            else:
                self._refuse_unsupported(params)
                _, fifo = await self._queue_of(mapping.event_source_arn)
            if params.get("FunctionName"):
                function_arn = self._function_arn(str(params["FunctionName"]))
                for other in self._mappings.values():
                    if (
                        other.uuid != mapping.uuid
                        and other.event_source_arn == mapping.event_source_arn
                        and other.function_arn == function_arn
                        and other.queues == mapping.queues
                    ):
                        raise _duplicate(mapping.event_source_arn, function_arn, other.uuid, mapping.queues)
                changes["function_arn"] = function_arn
            if "BatchSize" in params:
                changes["batch_size"] = params["BatchSize"]
            if "MaximumBatchingWindowInSeconds" in params:
                changes["window_s"] = params["MaximumBatchingWindowInSeconds"]
            if "FunctionResponseTypes" in params:
                changes["response_types"] = tuple(params["FunctionResponseTypes"] or ())
            if "ScalingConfig" in params:
                changes["max_concurrency"] = (params["ScalingConfig"] or {}).get("MaximumConcurrency")
            if "FilterCriteria" in params:
                changes["filters"] = filtering.criteria(params["FilterCriteria"])
            state = "Updating"
            if "Enabled" in params and bool(params["Enabled"]) != mapping.enabled:
                changes["enabled"] = bool(params["Enabled"])
                state = "Enabling" if params["Enabled"] else "Disabling"
            updated = mapping.replace(**changes, state=state, reason=USER_INITIATED, last_modified=self._clock())
            if not mq:
                self._check_batching(updated.batch_size, updated.window_s, fifo)
            await self._store.put_mapping(updated)
            self._mappings[mapping_id] = updated
        self._settle_later(mapping_id)
        return self.doc(updated)

    async def delete(self, mapping_id: str) -> dict[str, Any]:
        async with self._lock:
            mapping = self._mappings.get(mapping_id)
            if mapping is None:
                raise _not_found()
            deleting = mapping.replace(state="Deleting", reason=USER_INITIATED)
            await self._store.put_mapping(deleting)
            self._mappings[mapping_id] = deleting
        self._settle_later(mapping_id)
        return self.doc(deleting)

    # -- tags -----------------------------------------------------------------------------------------------

    def _by_arn(self, arn: str) -> EventSourceMapping:
        found = _ESM_ARN.match(arn)
        s = self._settings
        if found is None or found.group("region") != s.region or found.group("account") != s.account_id:
            raise _not_found()
        mapping = self._mappings.get(found.group("uuid").lower())
        if mapping is None:
            raise _not_found()
        return mapping

    async def tag(self, arn: str, tags: Mapping[str, str]) -> None:
        """TagResource: ``tags`` merged over the mapping's (a key given again takes the new value)."""
        check_tags(tags)
        async with self._lock:
            mapping = self._by_arn(arn)
            merged = {**mapping.tags, **tags}
            check_tags(merged)
            tagged = mapping.replace(tags=merged)
            await self._store.put_mapping(tagged)
            self._mappings[mapping.uuid] = tagged

    async def untag(self, arn: str, keys: list[str]) -> None:
        async with self._lock:
            mapping = self._by_arn(arn)
            gone = set(keys)
            untagged = mapping.replace(tags={k: v for k, v in mapping.tags.items() if k not in gone})
            await self._store.put_mapping(untagged)
            self._mappings[mapping.uuid] = untagged

    def tags(self, arn: str) -> dict[str, str]:
        return dict(self._by_arn(arn).tags)

    # -- rules ----------------------------------------------------------------------------------------------

    async def _queue_of(self, arn: str) -> tuple[str, bool]:
        """The queue an SQS ARN names (as the queue source names it), and whether it is FIFO."""
        found = _SQS_ARN.match(arn)
        if found is None:
            raise UnsupportedOperation(
                f"selfless maps SQS queues and Amazon MQ (RabbitMQ) brokers so far; {arn} is neither (Kinesis, "
                "DynamoDB and Kafka are not supported yet)"
            )
        queue = self._queues.queue_of(arn, found.group("region"), found.group("account"))
        if queue is None:
            raise InvalidParameterValue(_NO_QUEUE)
        try:
            attributes = await self._queues.attributes(queue)
        except SourceUnavailable as exc:
            raise InvalidParameterValue(str(exc)) from None
        if attributes is None:
            raise InvalidParameterValue(_NO_QUEUE)
        return queue, attributes.get("FifoQueue") == "true"

    @staticmethod
    def _refuse_unsupported(params: Mapping[str, Any]) -> None:
        _refuse(params, _NOT_FOR_SQS, "SQS")

    def _mq_source(self, arn: str, params: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """The queue and access configurations of a mapping of an Amazon MQ broker, by Lambda's rules; the
        broker must be one of ``Settings.mq_brokers``."""
        queues = tuple(str(q) for q in params.get("Queues") or ())
        if len(queues) != 1:
            raise InvalidParameterValue("Queues is required for Amazon MQ event sources: one queue name.")
        _refuse(params, _NOT_FOR_MQ, "Amazon MQ")
        access = _mq_access(params.get("SourceAccessConfigurations"))
        if rabbitmq.broker_url(self._settings.mq_brokers, arn) is None:
            raise InvalidParameterValue(
                f"The broker {arn} does not exist or you do not have access to it (selfless reaches the brokers that "
                "SELFLESS_MQ_BROKERS names)."
            )
        return queues, access

    @staticmethod
    def _check_batching(batch_size: int, window_s: int, fifo: bool) -> None:
        if fifo and window_s:
            raise InvalidParameterValue("Batching window is not supported for FIFO queues")
        if batch_size > 10 and not window_s:
            raise InvalidParameterValue(
                "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"
            )

    def _function_arn(self, name_or_arn: str) -> str:
        """The function's ARN, qualified as given; ResourceNotFound when it (or the version or alias) is not."""
        name, qualifier = self._registry.resolve(name_or_arn, None)
        self._registry.get(name, qualifier)
        return self._registry.arn(name) + (f":{qualifier}" if qualifier else "")

    # -- lifecycle ------------------------------------------------------------------------------------------

    def _settle_later(self, mapping_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(mapping_id))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, mapping_id: str) -> None:
        """Bring a mapping from its transitional state to its final one, its pollers stopped and (when enabled)
        started again with its settings. Changes to one mapping settle one after the other."""
        async with self._settle_locks.setdefault(mapping_id, asyncio.Lock()):
            poller = self._pollers.pop(mapping_id, None)
            if poller is not None:
                await poller.stop(self._settings.shutdown_timeout_s)
            self._reasons.pop(mapping_id, None)
            async with self._lock:
                mapping = self._mappings.get(mapping_id)
                if mapping is None or self._closed:
                    return
                if mapping.state == "Deleting":
                    await self._store.delete_mapping(mapping_id)
                    self._mappings.pop(mapping_id, None)
                    self._results.pop(mapping_id, None)
                    self._settle_locks.pop(mapping_id, None)
                    return
                final = mapping.replace(state="Enabled" if mapping.enabled else "Disabled")
                await self._store.put_mapping(final)
                self._mappings[mapping_id] = final
                if final.enabled:
                    self._start_poller(final)

    def _start_poller(self, mapping: EventSourceMapping) -> None:
        if _is_mq(mapping):
            self._start_consumer(mapping)
            return
        found = _SQS_ARN.match(mapping.event_source_arn)
        assert found is not None
        # Checked when the mapping was made; a queue that cannot be named now (the server's queue setting
        # changed) is reported by the poller as gone.
        queue = self._queues.queue_of(mapping.event_source_arn, found.group("region"), found.group("account"))
        mapping_id = mapping.uuid

        async def invoke(payload: bytes) -> Outcome:
            fn, invoked = self._registry.for_invoke(mapping.function_arn)
            return await self._run(fn, payload, invoked)

        def on_result(result: str) -> None:
            self._results[mapping_id] = result

        poller = QueuePoller(
            mapping_id=mapping_id,
            queue=found.group("name") if queue is None else queue,
            event_source_arn=mapping.event_source_arn,
            region=found.group("region") or self._settings.region,
            source=self._queues,
            invoke=invoke,
            batch_size=mapping.batch_size,
            window_s=mapping.window_s,
            report_failures="ReportBatchItemFailures" in mapping.response_types,
            max_workers=mapping.max_concurrency,
            on_result=on_result,
            accepts=filtering.sqs_accepts(mapping.filters) if mapping.filters else None,
        )
        self._pollers[mapping_id] = poller
        poller.start()

    def _start_consumer(self, mapping: EventSourceMapping) -> None:
        """The RabbitMQ consumer of an Amazon MQ mapping; a broker no longer configured is said, not consumed."""
        mapping_id = mapping.uuid
        url = rabbitmq.broker_url(self._settings.mq_brokers, mapping.event_source_arn)
        if url is None:
            self._results[mapping_id] = f"PROBLEM: The broker {mapping.event_source_arn} is not in SELFLESS_MQ_BROKERS"
            self._reasons[mapping_id] = rabbitmq.CONFIG_NOT_VALID
            return

        async def invoke(payload: bytes) -> Outcome:
            fn, invoked = self._registry.for_invoke(mapping.function_arn)
            return await self._run(fn, payload, invoked)

        def on_result(result: str) -> None:
            self._results[mapping_id] = result

        def on_reason(reason: str) -> None:
            if reason == USER_INITIATED:
                self._reasons.pop(mapping_id, None)
            else:
                self._reasons[mapping_id] = reason

        poller = RabbitPoller(
            mapping_id=mapping_id,
            url=url,
            queue=mapping.queues[0],
            vhost=rabbitmq.vhost_of(url, dict(mapping.access).get("VIRTUAL_HOST")),
            event_source_arn=mapping.event_source_arn,
            invoke=invoke,
            batch_size=mapping.batch_size,
            window_s=mapping.window_s,
            on_result=on_result,
            on_reason=on_reason,
            accepts=filtering.mq_accepts(mapping.filters) if mapping.filters else None,
        )
        self._pollers[mapping_id] = poller
        poller.start()

    # -- the wire shape -------------------------------------------------------------------------------------

    def doc(self, mapping: EventSourceMapping) -> dict[str, Any]:
        """The EventSourceMappingConfiguration shape of the service model."""
        s = self._settings
        doc: dict[str, Any] = {
            "UUID": mapping.uuid,
            "BatchSize": mapping.batch_size,
            "MaximumBatchingWindowInSeconds": mapping.window_s,
            "EventSourceArn": mapping.event_source_arn,
            "FunctionArn": mapping.function_arn,
            "LastModified": mapping.last_modified,
            "LastProcessingResult": self._results.get(mapping.uuid, mapping.last_result),
            "State": mapping.state,
            "StateTransitionReason": self._reasons.get(mapping.uuid, mapping.reason),
            "FunctionResponseTypes": list(mapping.response_types),
            "EventSourceMappingArn": f"arn:aws:lambda:{s.region}:{s.account_id}:event-source-mapping:{mapping.uuid}",
        }
        if _is_mq(mapping):
            del doc["FunctionResponseTypes"]
            doc["Queues"] = list(mapping.queues)
            doc["SourceAccessConfigurations"] = [{"Type": t, "URI": u} for t, u in mapping.access]
        if mapping.filters:
            doc["FilterCriteria"] = filtering.criteria_doc(mapping.filters)
        if mapping.max_concurrency:
            doc["ScalingConfig"] = {"MaximumConcurrency": mapping.max_concurrency}
        return doc

    def pollers(self, mapping_id: str) -> int:
        """How many workers poll for this mapping now (0 when it has no poller)."""
        poller = self._pollers.get(mapping_id)
        return poller.workers if poller is not None else 0


def _is_mq(mapping: EventSourceMapping) -> bool:
    return rabbitmq.MQ_ARN.match(mapping.event_source_arn) is not None


def _refuse(params: Mapping[str, Any], names: tuple[str, ...], kind: str) -> None:
    for name in names:
        if params.get(name) not in (None, [], {}):
            raise InvalidParameterValue(f"{name} is not valid for {kind} event sources.")


def _mq_access(value: Any) -> tuple[tuple[str, str], ...]:
    """SourceAccessConfigurations of an Amazon MQ for RabbitMQ mapping: exactly one BASIC_AUTH (a Secrets Manager
    secret ARN) and at most one VIRTUAL_HOST."""
    pairs: list[tuple[str, str]] = []
    for item in value or ():
        kind, uri = str(item.get("Type") or ""), str(item.get("URI") or "")
        if kind not in _MQ_ACCESS_TYPES:
            raise InvalidParameterValue(
                f"Unsupported SourceAccessConfiguration Type {kind} for Amazon MQ event sources: "
                "use BASIC_AUTH and VIRTUAL_HOST."
            )
        if any(k == kind for k, _ in pairs):
            raise InvalidParameterValue(f"Only one {kind} SourceAccessConfiguration is allowed.")
        if kind == "BASIC_AUTH" and not _SECRET_ARN.match(uri):
            raise InvalidParameterValue(f"The BASIC_AUTH URI must be a Secrets Manager secret ARN, got {uri}.")
        if not uri:
            raise InvalidParameterValue(f"The {kind} SourceAccessConfiguration needs a URI.")
        pairs.append((kind, uri))
    if not any(k == "BASIC_AUTH" for k, _ in pairs):
        raise InvalidParameterValue(
            "SourceAccessConfigurations must contain a BASIC_AUTH secret for Amazon MQ event sources."
        )
    return tuple(pairs)


def _duplicate(source: str, function_arn: str, existing: str, queues: tuple[str, ...] = ()) -> ResourceConflict:
    if queues:
        return ResourceConflict(
            f'An event source mapping with MQ arn (" {source} "), queue (" {queues[0]} ") and function '
            f'(" {_short(function_arn)} ") already exists. Please update or delete the existing mapping with UUID '
            f"{existing}"
        )
    return ResourceConflict(
        f'An event source mapping with SQS arn (" {source} ") and function (" {_short(function_arn)} ") already '
        f"exists. Please update or delete the existing mapping with UUID {existing}"
    )


def _short(function_arn: str) -> str:
    """``name`` or ``name:qualifier`` of a function ARN."""
    return function_arn.split(":function:", 1)[-1]
