"""Settings: the one place that reads environment variables and command-line flags.

``Settings.from_env(os.environ, **flags)`` builds one frozen object that is passed down to every component;
nothing else in the package reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selfless.httpserver import HEAD_TIMEOUT_S, MAX_HEAD, MAX_HEADERS, MIN_BODY_RATE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400
DEFAULT_DATA_DIR = "./.selfless"

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


class SettingsError(ValueError):
    """A flag or environment variable holds a value selfless cannot run with."""


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    access_key_id: str | None = None
    secret_access_key: str | None = None
    account_id: str = "000000000000"
    region: str = "us-east-1"
    # Idle environments stop after this many seconds (AWS keeps them for minutes, undocumented).
    keep_alive_s: float = 300.0
    # SIGTERM/SIGINT: in-flight invocations get this long to finish before environments are killed.
    shutdown_timeout_s: float = 30.0
    # Environments get this long after SIGTERM to exit before SIGKILL.
    kill_grace_s: float = 2.0
    # Upper bound on environments of all functions alive at once (a bounded resource, not a lease limit).
    max_environments: int = 1000
    # The account's concurrency limit (GetAccountSettings' ConcurrentExecutions).
    concurrency_limit: int = 1000
    # What all environments together may use (the sum of their MemorySize, MB); 0: no budget. Declared
    # sizes overstate real use, so a default from the host's memory would refuse calls that fit.
    memory_budget_mb: int = 0
    # Under memory pressure (the host's MemAvailable below this many MB), idle environments are stopped,
    # least recently used first, until it is back above. None: 5% of the host's memory, at least 256 MB;
    # 0: off. Real memory, unlike the budget above, so a sensible default can be on.
    min_free_mb: int | None = None
    # An environment whose runtime has waited for its next invocation this long (ms) is frozen (the linux
    # sandbox's cgroup freezer) until that invocation: what the function left running makes no progress
    # meanwhile, as on AWS. The wait spares calls that follow each other closely a thaw (~40-60 us here); it
    # is also how long a leftover may still run unbilled after a call. None: never frozen.
    freeze_after_ms: float | None = 10.0
    # Environments starting (spawned, init not done) at once. Starts are CPU-bound: past a few per CPU,
    # more at once only makes every one of them finish later; callers beyond it wait (boundedly) for a
    # start slot or for an environment of their function to come free, whichever is first.
    max_starting: int = dataclasses.field(default_factory=lambda: 8 * (os.cpu_count() or 1))
    # Accepted-but-not-yet-run asynchronous events held at once; past it Event invokes get 429.
    async_queue_limit: int = 100_000
    # Long-polling ReceiveMessage calls of the queue service waiting at once; one more is refused
    # (RequestThrottled), never queued (SELFLESS_SQS_MAX_WAITERS).
    sqs_max_waiters: int = 1024
    # Received-but-not-deleted messages a queue holds at most (SQS's quotas: 120,000, FIFO 20,000); set lower,
    # both are capped at it (SELFLESS_SQS_MAX_IN_FLIGHT).
    sqs_max_in_flight: int | None = None
    # Message move tasks (dead-letter queue redrive) running at once; one more start is refused
    # (RequestThrottled) until one ends (SELFLESS_SQS_MAX_MOVE_TASKS).
    sqs_max_move_tasks: int = 100
    # Subscriptions one topic of the topic service may have (SELFLESS_SNS_MAX_SUBSCRIPTIONS; SNS's own quota
    # is millions, but every publish fans out to each of them) and deliveries to sqs/http subscriptions
    # pending at once (SELFLESS_SNS_MAX_PENDING; past it a publish is refused with Throttled).
    sns_max_subscriptions: int = 1_000
    sns_max_pending: int = 100_000
    # The delay before an asynchronous event's retry is this times the attempts so far: AWS waits about 1
    # minute, then 2 (SELFLESS_ASYNC_RETRY_DELAY; tests set milliseconds).
    async_retry_delay_s: float = 60.0
    # Function logs a log group keeps on disk at most (MB): past it its oldest logs are deleted, and said.
    log_group_max_mb: int = 256
    # Python runtimes: name -> interpreter path. Empty means "discover the installed ones".
    python_interpreters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    log_level: str = "info"
    # "linux", "process", or None: linux when it is available (root on Linux), else process with a warning.
    sandbox: str | None = None
    # Modules each Python zygote imports before forking (comma-separated; missing ones are skipped).
    zygote_preload: str = "boto3"
    # Runtimes whose zygote starts with the server instead of at their first cold start.
    zygote_prewarm: tuple[str, ...] = ("python3.12",)
    # Start the kernel's same-page merging daemon (ksmd) while serving, for density (host-wide; restored).
    ksm: bool = False
    # An S3-compatible endpoint (http:// or https:// URL) for Code's S3Bucket/S3Key; None: S3 locations are refused.
    s3_endpoint: str | None = None
    # Where asynchronous invocations deliver records and dead-letter messages to queues, topics and event buses
    # (SQS-, SNS- and EventBridge-compatible endpoints); None: such destinations are refused when configured.
    sqs_endpoint: str | None = None
    sns_endpoint: str | None = None
    events_endpoint: str | None = None
    # RabbitMQ brokers that event source mappings of Amazon MQ broker ARNs consume (SELFLESS_MQ_BROKERS:
    # comma-separated ``name-or-ARN=amqp[s]://user:password@host:port[/vhost]``): a broker name or whole ARN ->
    # its AMQP URL, credentials included (selfless has no Secrets Manager: BASIC_AUTH's secret ARN is kept, the
    # URL's user and password are used). A mapping of a broker not named here is refused.
    mq_brokers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What environments of the linux sandbox reach outside (see sandbox/network.py and the README): "public"
    # (the outside world, not the host, link-local or private ranges), "private" (private ranges too), "none".
    egress: str = "public"
    # The addresses environments' links take (each running server an equal share).
    sandbox_network: str = "10.200.0.0/14"
    # Open connections to the API port (each one a descriptor): past it new ones are reset at once. Well under
    # the open-files limit, which is raised to its hard limit at start-up when the cap needs it.
    max_connections: int = 4096
    # Connections one environment may hold to selfless's API (its own listener, inside its namespace); all
    # environments together hold at most ``max_connections`` more (a budget apart from the API port's, so
    # that functions never take the operators' connections).
    environment_connections: int = 64
    # A request head (request line and header fields) takes at most this many bytes and fields: 431 past them.
    max_header_bytes: int = MAX_HEAD
    max_headers: int = MAX_HEADERS
    # A request head must be complete this long after its first byte (a new connection's first: after its
    # accept), and a body must then keep arriving at min_body_rate bytes a second on average after the same
    # grace; 408 otherwise. Keep-alive connections idle between requests are not cut by it.
    head_timeout_s: float = HEAD_TIMEOUT_S
    min_body_rate: int = MIN_BODY_RATE

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **flags: Any) -> Settings:
        """Flags given explicitly (not None) win over SELFLESS_* variables, which win over defaults."""

        def pick(name: str, env: str, default: Any) -> Any:
            value = flags.get(name)
            if value is not None:
                return value
            return environ.get(env, default)

        try:
            port = int(pick("port", "SELFLESS_PORT", DEFAULT_PORT))
            keep_alive = float(pick("keep_alive_s", "SELFLESS_KEEP_ALIVE", 300.0))
            shutdown = float(pick("shutdown_timeout_s", "SELFLESS_SHUTDOWN_TIMEOUT", 30.0))
            max_envs = int(pick("max_environments", "SELFLESS_MAX_ENVIRONMENTS", 1000))
            concurrency = int(pick("concurrency_limit", "SELFLESS_CONCURRENCY_LIMIT", 1000))
            budget = int(pick("memory_budget_mb", "SELFLESS_MEMORY_BUDGET_MB", 0))
            starting = int(pick("max_starting", "SELFLESS_MAX_STARTING", 8 * (os.cpu_count() or 1)))
            min_free_raw = pick("min_free_mb", "SELFLESS_MIN_FREE_MB", None)
            min_free = None if min_free_raw in (None, "") else max(0, int(min_free_raw))
            log_group_max = int(environ.get("SELFLESS_LOG_GROUP_MAX_MB", "256"))
            max_connections = int(pick("max_connections", "SELFLESS_MAX_CONNECTIONS", 4096))
            environment_connections = int(environ.get("SELFLESS_ENVIRONMENT_CONNECTIONS", "64"))
            async_queue_limit = max(1, int(environ.get("SELFLESS_ASYNC_QUEUE_LIMIT", "100000")))
            sqs_max_waiters = max(1, int(environ.get("SELFLESS_SQS_MAX_WAITERS", "1024")))
            in_flight_raw = environ.get("SELFLESS_SQS_MAX_IN_FLIGHT")
            sqs_max_in_flight = max(1, int(in_flight_raw)) if in_flight_raw else None
            sqs_max_move_tasks = max(1, int(environ.get("SELFLESS_SQS_MAX_MOVE_TASKS", "100")))
            sns_max_subscriptions = max(1, int(environ.get("SELFLESS_SNS_MAX_SUBSCRIPTIONS", "1000")))
            sns_max_pending = max(1, int(environ.get("SELFLESS_SNS_MAX_PENDING", "100000")))
            max_header_bytes = int(pick("max_header_bytes", "SELFLESS_MAX_HEADER_BYTES", MAX_HEAD))
            max_headers = int(pick("max_headers", "SELFLESS_MAX_HEADERS", MAX_HEADERS))
            head_timeout = float(pick("head_timeout_s", "SELFLESS_HEAD_TIMEOUT", HEAD_TIMEOUT_S))
            min_body_rate = int(pick("min_body_rate", "SELFLESS_MIN_BODY_RATE", MIN_BODY_RATE))
            freeze_raw = str(pick("freeze_after_ms", "SELFLESS_FREEZE_AFTER_MS", "10")).strip().lower()
            freeze_after = None if freeze_raw == "off" else float(freeze_raw)
        except ValueError as exc:
            raise SettingsError(f"not a number: {exc}") from exc
        if max_connections < 1:
            raise SettingsError(f"SELFLESS_MAX_CONNECTIONS must be at least 1, got {max_connections}")
        if not 1 <= environment_connections <= 1024:
            raise SettingsError(f"SELFLESS_ENVIRONMENT_CONNECTIONS must be 1-1024, got {environment_connections}")
        # Below these a SigV4-signed request may not fit (its Authorization alone is ~250 bytes, a session token ~1 KB).
        if max_header_bytes < 8192:
            raise SettingsError(f"SELFLESS_MAX_HEADER_BYTES must be at least 8192, got {max_header_bytes}")
        if max_headers < 20:
            raise SettingsError(f"SELFLESS_MAX_HEADERS must be at least 20, got {max_headers}")
        if not 0 < head_timeout <= 3600:
            raise SettingsError(
                f"SELFLESS_HEAD_TIMEOUT must be more than 0 and at most 3600 seconds, got {head_timeout}"
            )
        if min_body_rate < 1:
            raise SettingsError(f"SELFLESS_MIN_BODY_RATE must be at least 1 byte a second, got {min_body_rate}")
        if freeze_after is not None and not 0 <= freeze_after <= 1000:
            raise SettingsError(f"SELFLESS_FREEZE_AFTER_MS must be 0-1000 (ms) or off, got {freeze_raw}")
        if concurrency < 1:
            raise SettingsError(f"SELFLESS_CONCURRENCY_LIMIT must be at least 1, got {concurrency}")
        if log_group_max < 1:
            raise SettingsError(f"SELFLESS_LOG_GROUP_MAX_MB must be at least 1, got {log_group_max}")
        if not 0 <= port <= 65535:
            raise SettingsError(f"port out of range: {port}")
        account = str(pick("account_id", "SELFLESS_ACCOUNT_ID", "000000000000"))
        if not _ACCOUNT_RE.match(account):
            raise SettingsError(f"SELFLESS_ACCOUNT_ID must be 12 digits, got {account!r}")
        region = str(pick("region", "SELFLESS_REGION", "us-east-1"))
        if not _REGION_RE.match(region):
            raise SettingsError(f"SELFLESS_REGION is not a region name: {region!r}")
        key_id = pick("access_key_id", "SELFLESS_ACCESS_KEY_ID", None)
        secret = pick("secret_access_key", "SELFLESS_SECRET_ACCESS_KEY", None)
        if (key_id is None) != (secret is None):
            raise SettingsError("set both SELFLESS_ACCESS_KEY_ID and SELFLESS_SECRET_ACCESS_KEY, or neither")
        sandbox = pick("sandbox", "SELFLESS_SANDBOX", None)
        if sandbox is not None and sandbox not in ("linux", "process"):
            raise SettingsError(f"--sandbox must be linux or process, got {sandbox!r}")
        try:
            retry_delay = float(environ.get("SELFLESS_ASYNC_RETRY_DELAY", "60"))
        except ValueError as exc:
            raise SettingsError(f"SELFLESS_ASYNC_RETRY_DELAY is not a number: {exc}") from exc
        if not 0 <= retry_delay <= 3600:
            raise SettingsError(f"SELFLESS_ASYNC_RETRY_DELAY must be 0-3600 seconds, got {retry_delay}")
        egress = str(pick("egress", "SELFLESS_EGRESS", "public")).lower()
        if egress not in ("public", "private", "none"):
            raise SettingsError(f"SELFLESS_EGRESS must be public, private or none, got {egress!r}")
        sandbox_network = str(pick("sandbox_network", "SELFLESS_SANDBOX_NETWORK", "10.200.0.0/14"))
        try:
            network = ipaddress.IPv4Network(sandbox_network)
        except ValueError as exc:
            raise SettingsError(f"SELFLESS_SANDBOX_NETWORK is not an IPv4 network: {exc}") from exc
        if network.prefixlen > 18:
            raise SettingsError(f"SELFLESS_SANDBOX_NETWORK must be a /18 or larger, got {sandbox_network}")
        endpoints: dict[str, str | None] = {}
        for service in ("s3", "sqs", "sns", "events"):
            env = f"SELFLESS_{service.upper()}_ENDPOINT"
            url = pick(f"{service}_endpoint", env, None) or None
            if url is not None and not _is_http_url(str(url)):
                raise SettingsError(f"{env} must be an http:// or https:// URL, got {url!r}")
            endpoints[f"{service}_endpoint"] = None if url is None else str(url)
        mq_brokers = _mq_brokers(str(environ.get("SELFLESS_MQ_BROKERS", "")))
        interpreters: dict[str, str] = {}
        for entry in str(environ.get("SELFLESS_PYTHON_RUNTIMES", "")).split(","):
            if entry.strip():
                name, _, path = entry.partition("=")
                interpreters[name.strip()] = path.strip()
        return cls(
            host=str(pick("host", "SELFLESS_HOST", DEFAULT_HOST)),
            port=port,
            data_dir=Path(pick("data_dir", "SELFLESS_DATA_DIR", DEFAULT_DATA_DIR)).absolute(),
            access_key_id=key_id,
            secret_access_key=secret,
            account_id=account,
            region=region,
            keep_alive_s=keep_alive,
            shutdown_timeout_s=shutdown,
            max_environments=max_envs,
            async_queue_limit=async_queue_limit,
            sqs_max_waiters=sqs_max_waiters,
            sqs_max_in_flight=sqs_max_in_flight,
            sqs_max_move_tasks=sqs_max_move_tasks,
            sns_max_subscriptions=sns_max_subscriptions,
            sns_max_pending=sns_max_pending,
            concurrency_limit=concurrency,
            memory_budget_mb=max(0, budget),
            max_starting=max(1, starting),
            min_free_mb=min_free,
            freeze_after_ms=freeze_after,
            python_interpreters=interpreters,
            log_level=str(pick("log_level", "SELFLESS_LOG_LEVEL", "info")),
            sandbox=sandbox,
            zygote_preload=str(environ.get("SELFLESS_ZYGOTE_PRELOAD", "boto3")),
            ksm=str(environ.get("SELFLESS_KSM", "")).lower() in ("1", "true", "on", "yes"),
            s3_endpoint=endpoints["s3_endpoint"],
            sqs_endpoint=endpoints["sqs_endpoint"],
            sns_endpoint=endpoints["sns_endpoint"],
            events_endpoint=endpoints["events_endpoint"],
            mq_brokers=mq_brokers,
            async_retry_delay_s=retry_delay,
            egress=egress,
            sandbox_network=str(network),
            log_group_max_mb=log_group_max,
            max_connections=max_connections,
            environment_connections=environment_connections,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            head_timeout_s=head_timeout,
            min_body_rate=min_body_rate,
            zygote_prewarm=tuple(
                r.strip() for r in environ.get("SELFLESS_ZYGOTE_PREWARM", "python3.12").split(",") if r.strip()
            ),
        )

    def resolved_min_free_mb(self) -> int:
        if self.min_free_mb is not None:
            return self.min_free_mb
        total = mem_info_mb("MemTotal")
        return max(256, total // 20) if total else 0  # the host's memory unknown: no pressure evictor

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def _is_http_url(value: str) -> bool:
    """An absolute http:// or https:// URL with a host (what botocore's endpoint_url needs)."""
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a bad port, or brackets that do not close
        return False


def _mq_brokers(text: str) -> dict[str, str]:
    """SELFLESS_MQ_BROKERS: ``name-or-ARN=amqp[s]://...`` entries, comma-separated (an AMQP URL has no comma)."""
    brokers: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, _, url = entry.partition("=")
        key, url = key.strip(), url.strip()
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("amqp", "amqps") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            ok = False
        if not key or not ok:
            # Never echo the entry: its URL holds a password.
            raise SettingsError(
                f"SELFLESS_MQ_BROKERS entries are name-or-ARN=amqp[s]://user:password@host[:port][/vhost]; "
                f"entry {len(brokers) + 1} ({key or 'no name'}) is not"
            )
        brokers[key] = url
    return brokers


def mem_info_mb(field: str, path: str = "/proc/meminfo") -> int | None:
    """A /proc/meminfo field in MB; None when it cannot be read (no file, no such field, not a number):
    an unknown amount, never to be taken for none."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        pass
    return None


def environ_snapshot() -> dict[str, str]:
    """A copy of the process environment, for the composition root only."""
    return dict(os.environ)
