"""The composition root: every component built explicitly from one ``Settings``, in dependency order."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import gc
import inspect
import logging
import os
import platform
import resource
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfless import ids, json_limits
from selfless.api.access import Access
from selfless.api.auth import Keyring, Principal, SigV4Verifier, generate_key_pair
from selfless.api.front import FrontDoor
from selfless.api.hooks_api import HooksApi
from selfless.api.lambda_api import MAX_REQUEST, CodeUrls, LambdaApi
from selfless.api.logs_api import LogsApi
from selfless.artifacts.local import LocalCodeStore
from selfless.artifacts.s3 import S3Source
from selfless.codesigning import CodeSigning
from selfless.config import Settings, mem_info_mb
from selfless.errors import ResourceNotFound
from selfless.events.external_sqs import ExternalQueueSource
from selfless.events.mapping_sqlite import SqliteMappingStore
from selfless.events.mappings import EventSourceMappings
from selfless.events.rules import EventBus, RuleTimetable
from selfless.events.schedules import Scheduler, ScheduleTimetable
from selfless.events.sqs import BuiltinQueueSource
from selfless.events.targets import Targets
from selfless.events.webhooks import Webhooks
from selfless.function_urls.configs import FunctionUrls
from selfless.function_urls.serving import FunctionUrlServer
from selfless.functions import FunctionRegistry
from selfless.httpserver import ConnectionBudget, Handler, HttpServer
from selfless.invocation.destinations import Destinations
from selfless.invocation.events import AsyncInvoker, EventInvokeConfigs
from selfless.invocation.inflight import Outcome
from selfless.invocation.leases import Leases
from selfless.invocation.provisioned import ProvisionedConcurrency
from selfless.invocation.service import InvocationService
from selfless.layers import LayerRegistry
from selfless.models import Function
from selfless.observability.logs import LogStore, stream_name
from selfless.observability.metering import Meter
from selfless.observability.metrics import Metrics
from selfless.permissions import Permissions
from selfless.runtime import packages as runtime_packages
from selfless.runtime.runtimes import RuntimeCatalog, discover_interpreters
from selfless.sandbox import process as proc
from selfless.sandbox.base import Backend
from selfless.sandbox.environment import Environment, wait_for_releases
from selfless.sandbox.linux import LinuxBackend, SandboxUnavailable
from selfless.sandbox.pool import EnvironmentPool
from selfless.services.eventbridge.api import EventsApi
from selfless.services.eventbridge.destinations import BuiltinBuses
from selfless.services.eventbridge.service import Rules
from selfless.services.eventbridge.sqlite import SqliteRuleStore
from selfless.services.s3.api import S3Api
from selfless.services.s3.blobs import LocalBlobs
from selfless.services.s3.code import BuiltinCodeObjects
from selfless.services.s3.destinations import BuiltinBuckets
from selfless.services.s3.functions import NotificationFunctions
from selfless.services.s3.service import ObjectService
from selfless.services.s3.sqlite import SqliteObjectMetadata
from selfless.services.scheduler.api import SchedulerApi
from selfless.services.scheduler.service import Schedules
from selfless.services.scheduler.sqlite import SqliteScheduleStore
from selfless.services.sns.api import SnsApi
from selfless.services.sns.delivery import Deliverer
from selfless.services.sns.destinations import BuiltinTopics
from selfless.services.sns.functions import SubscribedFunctions
from selfless.services.sns.queues import BuiltinQueueSink
from selfless.services.sns.service import TopicService
from selfless.services.sns.sqlite import SqliteTopicStore
from selfless.services.sqs.api import SqsApi
from selfless.services.sqs.destinations import BuiltinQueues
from selfless.services.sqs.service import QueueService
from selfless.services.sqs.sqlite import SqliteQueueStore
from selfless.store.sqlite import SqliteStore

log = logging.getLogger("selfless")

# How long /health waits for the zygote prewarm before it says ready anyway.
PREWARM_WAIT_S = 15.0
# Lambda's name for this machine's architecture.
HOST_ARCHITECTURE = {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x86_64")

PROFILE = "selfless"


def load_or_create_credentials(settings: Settings) -> tuple[str, str, bool]:
    """The admin key: from settings, else from <data-dir>/credentials, else newly generated there.
    Returns (key id, secret, created)."""
    if settings.access_key_id and settings.secret_access_key:
        return settings.access_key_id, settings.secret_access_key, False
    path = settings.data_dir / "credentials"
    parser = configparser.ConfigParser()
    if path.is_file():
        parser.read(path)
        if parser.has_section(PROFILE):
            section = parser[PROFILE]
            key_id, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
            if key_id and secret:
                return key_id, secret, False
    key_id, secret = generate_key_pair()
    parser[PROFILE] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        parser.write(f)
    os.replace(tmp, path)
    return key_id, secret, True


class App:
    """Owns every component; ``start`` and ``close`` run them up and down in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data = settings.data_dir
        self.envs_root = data / "envs"
        self.reaper = proc.ChildReaper()
        self.store = SqliteStore(data / "metadata.sqlite3")
        self.code = LocalCodeStore(data / "code")
        self.metrics = Metrics()
        self.logs = LogStore(
            data / "logs", group_max_bytes=settings.log_group_max_mb << 20, on_dropped=self.metrics.log_dropped
        )
        self.meter = Meter(data / "metering")
        self.keyring = Keyring()
        self.runtimes = RuntimeCatalog(discover_interpreters(settings.python_interpreters))
        self.backend: Backend = proc.ProcessBackend(self.reaper, proc.can_mount())
        self.backend_warning: str | None = None
        self.pool = EnvironmentPool(
            self._new_environment,
            keep_alive_s=settings.keep_alive_s,
            max_environments=settings.max_environments,
            memory_budget_mb=settings.memory_budget_mb,
            max_starting=settings.max_starting,
            min_free_mb=settings.resolved_min_free_mb(),
            mem_available_mb=lambda: mem_info_mb("MemAvailable"),
            on_evict=lambda reason: self.metrics.evictions.labels(reason).inc(),
        )
        self.leases = Leases(settings.concurrency_limit)
        # Code in S3 comes from SELFLESS_S3_ENDPOINT's store when set, else from the built-in one (made below).
        self._code_objects = BuiltinCodeObjects()
        self.registry = FunctionRegistry(
            settings,
            self.store,
            self.code,
            self.runtimes,
            self._changed,
            self.leases,
            S3Source(settings.s3_endpoint, settings.region) if settings.s3_endpoint else self._code_objects,
        )
        self.provisioned = ProvisionedConcurrency(self.registry, self.pool, self.store, self.leases)
        self.registry.on_alias_change = self._alias_changed
        self.registry.provisioned = self.provisioned.totals
        self.layers = LayerRegistry(settings, self.store, self.code, self.registry.collect)
        self.registry.layers = self.layers
        self.registry.in_use = self._packages_in_use
        self.permissions = Permissions(self.store, self.registry, self.layers)
        self.code_signing = CodeSigning(settings, self.store)
        self.code_signing.users_of = self.registry.code_signing_users
        self.registry.code_signing = self.code_signing
        self.health_info: dict[str, str] = {
            "region": settings.region,
            "account": settings.account_id,
            "sandbox": "process",
        }
        self.metrics.watch_environments(self.pool.count)
        self.metrics.watch_templates(lambda: self.backend.templates_ready())
        self.metrics.watch_concurrency(self.leases.in_use)
        self.invocations = InvocationService(settings, self.registry, self.pool, self.store, self.metrics, self.leases)
        # Bucket destinations go to the built-in store when SELFLESS_S3_ENDPOINT is not set (given below).
        self.destinations = Destinations(settings)
        self.registry.check_target = lambda arn, usage: self.destinations.check(arn, usage=usage)
        self.event_configs = EventInvokeConfigs(self.store, self.registry, self.destinations)
        self.events = AsyncInvoker(
            self.store,
            self.registry,
            self.event_configs,
            self.invocations.run,
            self.destinations,
            limit=settings.async_queue_limit,
            retry_delay_s=settings.async_retry_delay_s,
        )
        self.invocations.events = self.events
        self.code_urls = CodeUrls()
        access = Access(settings, self.registry)
        self.lambda_api = LambdaApi(
            settings,
            self.registry,
            self.invocations,
            self.code,
            self.code_urls,
            self.leases,
            self.provisioned,
            self.layers,
            self.permissions,
            self.event_configs,
            self.events,
            access,
            self.code_signing,
        )
        self.lambda_api.lineage_of = self._lineage_of
        self.function_urls = FunctionUrls(settings, self.store, self.registry)
        self.lambda_api.function_urls = self.function_urls
        self.webhooks = Webhooks(self.store, self.registry, self.events)
        self.s3_meta = SqliteObjectMetadata(self.store)
        self.s3_notifications = NotificationFunctions(
            self.registry, self.permissions, settings.account_id, settings.region
        )
        self.s3 = ObjectService(
            self.s3_meta,
            LocalBlobs(data / "s3"),
            self.s3_notifications,
            self.events,
            region=settings.region,
            owner_id=settings.account_id,
        )
        self._code_objects.service = self.s3
        self.destinations.buckets = BuiltinBuckets(self.s3)
        self.sqs_store = SqliteQueueStore(self.store)
        self.sqs = QueueService(
            self.sqs_store,
            account_id=settings.account_id,
            region=settings.region,
            max_waiters=settings.sqs_max_waiters,
            max_in_flight=settings.sqs_max_in_flight,
            max_running_moves=settings.sqs_max_move_tasks,
        )
        queues = BuiltinQueues(self.sqs)
        self.destinations.queues = queues
        if settings.sqs_endpoint is None:  # else S3's queue notifications go to that endpoint's queues
            self.s3_notifications.queues = queues
        # The built-in topic service: its lambda subscriptions are async invocations, its sqs ones go to the
        # built-in queues (none are taken while SELFLESS_SQS_ENDPOINT is set).
        self.sns_store = SqliteTopicStore(self.store)
        self.sns = TopicService(
            self.sns_store,
            account_id=settings.account_id,
            region=settings.region,
            base_url=settings.endpoint,
            max_subscriptions=settings.sns_max_subscriptions,
        )
        self.sns_deliveries = Deliverer(
            self.sns_store, BuiltinQueueSink(self.sqs) if settings.sqs_endpoint is None else None,
            base_url=settings.endpoint, limit=settings.sns_max_pending,
        )  # fmt: skip
        self.sns.invoker = self.events
        self.sns.builtin_queues = settings.sqs_endpoint is None
        self.sns.deliveries = self.sns_deliveries
        self.sns.functions = SubscribedFunctions(self.registry, self.permissions, settings.account_id)
        topics = BuiltinTopics(self.sns)
        self.destinations.topics = topics
        if settings.sns_endpoint is None:  # else S3's topic notifications go to that endpoint's topics
            self.s3_notifications.topics = topics
        self.sns_api = SnsApi(self.sns)
        self.sns_api.lineage_of = self._lineage_of
        self.mapping_store = SqliteMappingStore(self.store)
        self.mappings = EventSourceMappings(
            settings,
            self.mapping_store,
            self.registry,
            BuiltinQueueSource(self.sqs, settings.account_id)
            if settings.sqs_endpoint is None
            else ExternalQueueSource(settings.sqs_endpoint, settings.region),
            self._run_batch,
        )
        self.lambda_api.mappings = self.mappings
        self.schedule_store = SqliteScheduleStore(self.store)
        self.schedules = Schedules(self.schedule_store, settings.account_id, settings.region)
        self.rule_store = SqliteRuleStore(self.store)
        self.rules = Rules(self.rule_store, settings.account_id, settings.region)
        # Scheduled runs' targets: functions, and the built-in queues and topics (unless they are an external
        # service's).
        targets = Targets(
            self.registry,
            self.permissions,
            queues if settings.sqs_endpoint is None else None,
            settings.account_id,
            settings.region,
            topics if settings.sns_endpoint is None else None,
        )
        self.scheduler = Scheduler(
            [
                ScheduleTimetable(self.schedule_store, targets, self.schedules.arn),
                RuleTimetable(self.rule_store, targets, settings.account_id, settings.region),
            ],
            self.events,
        )
        self.schedules.on_change = self.scheduler.changed
        self.rules.on_change = self.scheduler.changed
        self.event_bus = EventBus(self.rule_store, targets, self.events, settings.account_id, settings.region)
        if settings.events_endpoint is None:  # else bus destinations go to that endpoint's buses
            self.destinations.buses = BuiltinBuses(self.event_bus)
        self.front = FrontDoor(
            SigV4Verifier(self.keyring, settings.region),
            self.lambda_api,
            LogsApi(self.logs, access),
            self.metrics,
            self.health_info,
            hooks=HooksApi(self.webhooks, access),
            s3=S3Api(self.s3),
            sqs=SqsApi(self.sqs),
            scheduler=SchedulerApi(self.schedules),
            events=EventsApi(self.rules, self.event_bus),
            sns=self.sns_api,
            function_urls=FunctionUrlServer(settings, self.function_urls, self.invocations, self.permissions),
        )
        self.http = self._http_server(
            self.front.handle,
            max_connections=settings.max_connections,
            on_refused=lambda: self.metrics.connections_refused.labels("api").inc(),
        )
        self.metrics.watch_connections(lambda: len(self.http.connections))
        self.descriptor_warning: str | None = None
        # What every environment's own API listener holds together (each also has its own cap).
        self._environment_budget = ConnectionBudget(settings.max_connections)
        self.address: tuple[str, int] | None = None
        self._prewarm: asyncio.Task[None] | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self.created_credentials = False

    def _changed(self, qualified_name: str, generation: int | None) -> None:
        """A function or version changed (``generation``) or went away (None)."""
        if generation is None:
            self.provisioned.forget(qualified_name)
            name, _, qualifier = qualified_name.partition(":")
            self.permissions.forget(name, qualifier or None)
            self.event_configs.forget(name, qualifier or None)
            if not qualifier:
                self.function_urls.forget(name, None)
        self.pool.retire(qualified_name, generation)
        self.backend.retire(qualified_name, generation)

    async def _run_batch(self, function: Function, payload: bytes, invoked_arn: str) -> Outcome:
        """A poller's batch: one synchronous invocation (TooManyRequests when throttled)."""
        return await self.invocations.run(function, payload, None, ids.request_id(), invoked_arn)

    def _packages_in_use(self) -> list[str]:
        """Package keys and /opt trees of every live environment's function."""
        keys = []
        for env in self.pool.environments():
            fn = env.function
            keys.append(fn.code.key)
            keys += [layer.code.key for layer in fn.layers]
            if fn.opt_key is not None:
                keys.append(fn.opt_key)
        return keys

    def _lineage_of(self, principal: Principal) -> Mapping[str, int]:
        """The chain of the invocation the calling environment runs now (empty when none)."""
        env = self.pool.get(principal.environment_id or "")
        return env.current.lineage if env is not None and env.current is not None else {}

    def _alias_changed(self, function_name: str, alias: str) -> None:
        """An alias moved or went away: provisioned concurrency follows it; a deleted one's policy goes."""
        self.provisioned.alias_changed(function_name, alias)
        try:
            self.registry.alias(function_name, alias)
        except ResourceNotFound:
            self.permissions.forget(function_name, alias)
            self.event_configs.forget(function_name, alias)
            self.function_urls.forget(function_name, alias)

    def _new_environment(self, function: Function, env_id: str, provisioned: bool = False) -> Environment:
        runtime = self.runtimes.get(function.runtime or "")
        if runtime is None:
            raise OSError(f"runtime {function.runtime} is not available on this server")
        if function.architectures and function.architectures[0] != HOST_ARCHITECTURE:
            # Accepted and kept as set (deployment tools compare it), but run only where it can be.
            raise OSError(
                f"{function.architectures[0]} functions run only on {function.architectures[0]} hosts; "
                f"this host is {HOST_ARCHITECTURE}"
            )
        on_free, on_dead = self.pool.callbacks()
        return Environment(
            env_id=env_id,
            function=function,
            runtime=runtime,
            settings=self.settings,
            root=self.envs_root / env_id,
            code_tree=self.code.tree(function.code.key),
            stream=self.logs.stream(
                function.logging_config["LogGroup"],
                stream_name(function.version, env_id),
                json_format=function.logging_config["LogFormat"] == "JSON",
            ),
            meter=self.meter,
            keyring=self.keyring,
            backend=self.backend,
            on_free=on_free,
            on_dead=on_dead,
            endpoint=self.settings.endpoint,
            first_substitution=self.runtimes.first_substitution,
            provisioned=provisioned,
        )

    async def start(self) -> tuple[str, int]:
        s = self.settings
        # First: an impossible --sandbox linux must refuse before anything is touched.
        self._choose_backend()
        # JSON from clients and functions may nest up to AWS's 1,000 levels; Python's parser needs the stack.
        json_limits.reserve_stack()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(s.data_dir, 0o700)
        key_id, secret, self.created_credentials = load_or_create_credentials(s)
        self.keyring.add(key_id, secret, Principal(key_id, "admin"))
        self._sweep_environments()
        self.envs_root.mkdir(exist_ok=True)
        self.backend.runtime_packages = await asyncio.to_thread(runtime_packages.prepare, s.data_dir)
        proc.become_subreaper()
        self.reaper.install(asyncio.get_running_loop())
        await self.store.open()
        self.code.open()
        self.logs.open()
        self.meter.open()
        await self.layers.load()
        await self.permissions.load()
        await self.code_signing.load()
        await self.registry.load()
        self.pool.start()
        await self.provisioned.load()
        await self.event_configs.load()
        await self.function_urls.load()
        await self.webhooks.load()
        await self.s3_meta.open()
        await self.sqs_store.open()
        resumed = await self.sqs.resume_moves()
        if resumed:
            log.info("queue service: %d message move task(s) resumed", resumed)
        await self.sns_store.open()
        swept = await self.s3.start()
        if swept:
            log.info("object store: removed %d blobs of writes a stop interrupted", swept)
        await self.events.start()
        await self.sns_deliveries.start()
        await self.mapping_store.open()
        await self.mappings.load()
        await self.schedule_store.open()
        await self.rule_store.open()
        self.scheduler.start()
        self.http.max_connections, self.descriptor_warning = descriptor_budget(
            s.max_connections, descriptor_reserve(s.max_environments) + self._environment_budget.limit
        )
        self.address = await self.http.start(s.host, s.port)
        if isinstance(self.backend, LinuxBackend):
            wanted = [self.runtimes.get(name) for name in s.zygote_prewarm]
            interpreters = list(dict.fromkeys(rt.interpreter for rt in wanted if rt and rt.interpreter))
            self._prewarm = asyncio.get_running_loop().create_task(self.backend.prewarm(interpreters))
        # Everything built so far (botocore's model above all) lives as long as the server: keep the
        # collector from walking it again and again, which shows up as p99 spikes on the invoke path.
        gc.collect()
        gc.freeze()
        if self._prewarm is None:
            self.front.ready = True
        else:
            # /health says ready once the zygotes are up (a first call then starts in milliseconds, not in
            # the ~1 s a zygote takes), or after PREWARM_WAIT_S whatever the prewarm's state.
            self._ready_task = asyncio.get_running_loop().create_task(self._ready_after_prewarm(self._prewarm))
        return self.address

    async def _ready_after_prewarm(self, prewarm: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(prewarm), PREWARM_WAIT_S)
            self.health_info["prewarm"] = "done"
        except TimeoutError:
            log.warning("the zygote prewarm took more than %.0f s; ready without it", PREWARM_WAIT_S)
            self.health_info["prewarm"] = "timed out"
        except Exception as exc:  # calls start their zygotes themselves then
            log.warning("the zygote prewarm failed: %s", exc)
            self.health_info["prewarm"] = "failed"
        self.front.ready = True

    def _choose_backend(self) -> None:
        """linux when asked for (or, unasked, when available); process otherwise, with the reason why."""
        wanted = self.settings.sandbox
        if wanted == "process":
            return
        interpreters = [rt.interpreter for name in self.runtimes.names() if (rt := self.runtimes.get(name))]
        fallback = next((i for i in interpreters if i), sys.executable)
        backend = LinuxBackend(
            self.settings.data_dir,
            fallback,
            preload=self.settings.zygote_preload,
            ksm=self.settings.ksm,
            egress=self.settings.egress,
            sandbox_network=self.settings.sandbox_network,
        )
        backend.serve_api = self._serve_api_inside
        self.metrics.watch_namespaces(backend.network_namespaces)
        try:
            backend.setup(self.settings.max_environments)
        except SandboxUnavailable as exc:
            if wanted == "linux":
                raise SandboxUnavailable(f"--sandbox linux is not possible here: {exc}") from exc
            self.backend_warning = f"warning: the linux sandbox is unavailable ({exc}); using the process backend"
            return
        self.backend = backend
        self.health_info["sandbox"] = backend.name
        self.health_info["sandbox_uids"] = f"{backend.uid_range[0]}-{backend.uid_range[1]}"
        self.health_info["sandbox_cgroup"] = backend.cgroups.name

    def _http_server(self, handler: Handler, **options: Any) -> HttpServer:
        """A listener of selfless's API, with the request limits of the settings."""
        s = self.settings
        return HttpServer(
            handler,
            streams=self.front.streams,
            max_body=MAX_REQUEST,
            on_too_large=self.front.too_large,
            max_head=s.max_header_bytes,
            max_headers=s.max_headers,
            head_timeout=s.head_timeout_s,
            min_body_rate=s.min_body_rate,
            **options,
        )

    def _serve_api_inside(self, listener: socket.socket) -> HttpServer:
        """selfless's API on a listening socket inside an environment's network namespace (its
        AWS_ENDPOINT_URL): the same front door as the public port's."""
        server = self._http_server(
            self.front.handle_inside,
            max_connections=self.settings.environment_connections,
            budget=self._environment_budget,
            on_refused=lambda: self.metrics.connections_refused.labels("environment").inc(),
        )
        server.listen_on(listener)
        server.serve_on_demand()
        return server

    def _sweep_environments(self) -> None:
        """Remove what a previous run that died left behind: mounts first, then the directories."""
        for mount in proc.mounts_under(self.envs_root):
            proc.unmount(mount)
        if self.envs_root.is_dir() and not self.envs_root.is_symlink():
            shutil.rmtree(self.envs_root, ignore_errors=True)

    async def close(self) -> None:
        """Ordered shutdown: stop listening, drain invocations with a deadline, stop environments, close the
        store. Leaves no child process behind."""
        s = self.settings
        self.front.ready = False
        self.http.stop_listening()
        await self.scheduler.close()
        await self.sqs.close()  # its message move tasks, between two moves; they resume at the next start
        await self.sns_deliveries.close()
        try:
            await self.mappings.close(s.shutdown_timeout_s)
        except Exception:
            log.exception("stopping the event source mappings' pollers failed")
        drained = await self.invocations.drain(s.shutdown_timeout_s)
        if not drained:
            log.warning("shutdown deadline passed with invocations still running; stopping them")
        # Every step runs even when one before it failed (what is left behind otherwise is processes and
        # cgroups); a failure is logged with its traceback and makes the shutdown end in an error.
        failed: list[str] = []

        async def step(name: str, action: Callable[[], Awaitable[object] | object]) -> None:
            try:
                result = action()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("shutdown step %s failed", name)
                failed.append(name)

        await step("settle updates", self.registry.wait_settled)
        await step("provisioned concurrency", self.provisioned.close)
        await step("prewarm", self._stop_prewarm)
        await step("environments", lambda: self.pool.close(s.kill_grace_s))
        await step("environment releases", lambda: wait_for_releases(10.0))
        await step("sandbox backend", self.backend.close)
        await step("connections", self.http.close_all)
        await step("adopted children", self._kill_adopted)
        await step("reaper", self.reaper.uninstall)
        await step("metering", self.meter.close)
        await step("store", self.store.close)
        await step("environment directories", self._sweep_environments)
        await step("logs", self.logs.close)  # after the environments: their last lines are written too
        if failed:
            raise OSError(f"shutdown steps failed: {', '.join(failed)} (see the log)")

    async def _stop_prewarm(self) -> None:
        if self._ready_task is not None:
            self._ready_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ready_task
        if self._prewarm is not None:
            self._prewarm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prewarm

    def _kill_adopted(self) -> None:
        for pid in self.reaper.adopted_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    def describe(self) -> str:
        lines = [f"runtimes: {', '.join(self.runtimes.names())}", self.backend.describe()]
        if self.backend_warning:
            lines.append(self.backend_warning)
        if self.descriptor_warning:
            lines.append(self.descriptor_warning)
        return "\n".join(lines)


def descriptor_reserve(max_environments: int) -> int:
    """Descriptors the server needs besides its API connections: a base (store, logs, zygotes, stocked
    namespaces and cgroups...) and ~8 per live environment (measured: its Runtime API listener and
    connection, its API listener, output pipes, scratch disk, log file), rounded up."""
    return 1024 + 10 * max_environments


def descriptor_budget(
    max_connections: int,
    reserve: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, str | None]:
    """The connection cap the open-files limit allows, and a warning when it is not ``max_connections``.

    The cap plus ``reserve`` must fit under RLIMIT_NOFILE, or a flood of connections takes the descriptors
    that starting environments, the store and /health's own connections need. The soft limit is raised to
    the hard one when that is needed (functions get their own limits: 1,024 in the linux sandbox); when even
    the hard limit is short, the cap shrinks to fit (connections keep at least a quarter of the limit)."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)  # finite on Linux
    needed = max_connections + reserve
    if soft < needed and soft < hard:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    if soft >= needed:
        return max_connections, None
    cap = max(1, min(max_connections, max(soft - reserve, soft // 4)))
    return cap, (
        f"warning: open files are limited to {soft} (RLIMIT_NOFILE), short of the {needed} that "
        f"{max_connections} API connections and ~{reserve} descriptors for environments need; API connections "
        f"are capped at {cap}. Raise the limit (ulimit -n, systemd's LimitNOFILE=) or lower "
        "SELFLESS_MAX_CONNECTIONS / SELFLESS_MAX_ENVIRONMENTS."
    )


def default_credentials_hint(settings: Settings) -> str:
    path = settings.data_dir / "credentials"
    return (
        f"  export AWS_SHARED_CREDENTIALS_FILE={path} AWS_PROFILE={PROFILE} AWS_DEFAULT_REGION={settings.region}\n"
        f"  aws --endpoint-url {settings.endpoint} lambda list-functions"
    )
