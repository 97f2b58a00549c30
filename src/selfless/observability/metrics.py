"""Prometheus metrics, served as text at ``GET /metrics``.

Kept to a few low-cardinality series: per-function counters, one latency histogram for all functions, and
gauges read at scrape time. The invoke path's updates (``invocation``) are tallied in plain dictionaries and
lists, a lookup and two adds per call with no lock, and added to the Prometheus series in one go by ``flush``
(on the event loop, before each scrape is rendered): what a scrape shows is exact, and the tally's size is
bounded by the functions and outcomes it counts.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _count_of(counts: Callable[[], dict[str, int]], key: str) -> int:
    return counts().get(key, 0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.invocations = Counter(
            "selfless_invocations",
            "Invocations by function and outcome (response, error, timeout, exit, ...)",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "selfless_invocation_duration_seconds",
            "Function run time as the REPORT line states it",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 900),
            registry=self.registry,
        )
        # The invoke path's tally, not yet in the series above (see the module docstring).
        self._counts: dict[tuple[str, str], int] = {}
        self._bounds: list[float] = list(self.duration._upper_bounds)  # the last is +Inf
        self._buckets = [0] * len(self._bounds)
        self._duration_sum = 0.0
        self.cold_starts = Counter(
            "selfless_cold_starts", "Invocations that started a new environment", ["function"], registry=self.registry
        )
        self.start_overhead = Histogram(
            "selfless_environment_start_overhead_seconds",
            "Platform cost of starting an environment: everything of a cold start but the function's own init",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=self.registry,
        )
        self.throttles = Counter(
            "selfless_throttles", "Invocations refused with TooManyRequests", ["reason"], registry=self.registry
        )
        self.evictions = Counter(
            "selfless_evictions",
            "Idle environments stopped to make room (budget: count or memory budget; memory_pressure: the host)",
            ["reason"],
            registry=self.registry,
        )
        self.log_lines_dropped = Counter(
            "selfless_log_lines_dropped",
            "Function log lines not kept, by reason: backlog (the log writer too far behind), write_failed (e.g. a "
            "full disk), group_cap (a group's oldest deleted for its size cap), retention (past its retention)",
            ["reason"],
            registry=self.registry,
        )
        self.log_bytes_dropped = Counter(
            "selfless_log_bytes_dropped",
            "Bytes of the function log lines counted by selfless_log_lines_dropped_total",
            ["reason"],
            registry=self.registry,
        )
        self.environments = Gauge("selfless_environments", "Live execution environments", registry=self.registry)
        self.templates = Gauge(
            "selfless_fork_templates_ready",
            "Fork-after-init templates that new environments can fork from",
            registry=self.registry,
        )
        self.concurrent = Gauge(
            "selfless_concurrent_executions", "Concurrency leases held (invocations running)", registry=self.registry
        )
        self.namespaces = Gauge(
            "selfless_network_namespaces",
            "Environments' network namespaces (in_use; stocked: made ahead; recycled: kept for their function's "
            "next environment), ~290 KB of kernel memory each",
            ["state"],
            registry=self.registry,
        )
        self.connections = Gauge("selfless_connections", "Open connections to the API port", registry=self.registry)
        self.connections_refused = Counter(
            "selfless_connections_refused",
            "Connections reset on arrival because their listener was at its cap (api: the API port)",
            ["listener"],
            registry=self.registry,
        )

    def invocation(self, function: str, outcome: str, duration_s: float) -> None:
        """One finished invocation: counted by function and outcome, its duration in the histogram. Loop
        thread only (the tally is flushed there)."""
        key = (function, outcome)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self._buckets[bisect.bisect_left(self._bounds, duration_s)] += 1  # Prometheus's le: value <= bound
        self._duration_sum += duration_s

    def flush(self) -> None:
        """Add the tally to the Prometheus series (on the event loop's thread, before rendering)."""
        counts, self._counts = self._counts, {}
        for (function, outcome), n in counts.items():
            self.invocations.labels(function, outcome).inc(n)
        buckets, self._buckets = self._buckets, [0] * len(self._bounds)
        for i, n in enumerate(buckets):
            if n:
                self.duration._buckets[i].inc(n)
        if self._duration_sum:
            self.duration._sum.inc(self._duration_sum)
            self._duration_sum = 0.0

    def log_dropped(self, reason: str, lines: int, size: int) -> None:
        """Thread-safe: the log writer thread counts what it could not keep."""
        self.log_lines_dropped.labels(reason).inc(lines)
        self.log_bytes_dropped.labels(reason).inc(size)

    def watch_templates(self, count: Callable[[], int]) -> None:
        self.templates.set_function(count)

    def watch_environments(self, count: Callable[[], int]) -> None:
        self.environments.set_function(count)

    def watch_namespaces(self, counts: Callable[[], dict[str, int]]) -> None:
        for state in ("in_use", "stocked", "recycled"):
            self.namespaces.labels(state=state).set_function(functools.partial(_count_of, counts, state))

    def watch_concurrency(self, count: Callable[[], int]) -> None:
        self.concurrent.set_function(count)

    def watch_connections(self, count: Callable[[], int]) -> None:
        self.connections.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
