"""The invoke path's metrics tally: what a scrape shows after ``flush`` is what per-call updates would show."""

from __future__ import annotations

from prometheus_client import generate_latest

from selfless.observability.metrics import Metrics


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_tallied_invocations_reach_the_series_on_flush() -> None:
    metrics = Metrics()
    metrics.invocation("f", "response", 0.0005)  # on a bucket's bound: counted in that bucket (le)
    metrics.invocation("f", "response", 0.0007)
    metrics.invocation("f", "error", 1000.0)  # past the last finite bound: +Inf only
    metrics.invocation("g", "timeout", 3.0)
    assert _sample(metrics, "selfless_invocations_total", {"function": "f", "outcome": "response"}) is None
    metrics.flush()
    assert _sample(metrics, "selfless_invocations_total", {"function": "f", "outcome": "response"}) == 2
    assert _sample(metrics, "selfless_invocations_total", {"function": "f", "outcome": "error"}) == 1
    assert _sample(metrics, "selfless_invocations_total", {"function": "g", "outcome": "timeout"}) == 1
    bucket = "selfless_invocation_duration_seconds_bucket"
    assert _sample(metrics, bucket, {"le": "0.0005"}) == 1
    assert _sample(metrics, bucket, {"le": "0.001"}) == 2
    assert _sample(metrics, bucket, {"le": "5.0"}) == 3
    assert _sample(metrics, bucket, {"le": "900.0"}) == 3
    assert _sample(metrics, bucket, {"le": "+Inf"}) == 4
    assert _sample(metrics, "selfless_invocation_duration_seconds_count", {}) == 4
    total = _sample(metrics, "selfless_invocation_duration_seconds_sum", {})
    assert total is not None and abs(total - 1003.0012) < 1e-9

    metrics.invocation("f", "response", 0.002)
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    assert _sample(metrics, "selfless_invocations_total", {"function": "f", "outcome": "response"}) == 3
    assert _sample(metrics, "selfless_invocation_duration_seconds_count", {}) == 5
    assert b'selfless_invocations_total{function="f",outcome="response"} 3.0' in generate_latest(metrics.registry)
