"""The per-call instruments, kept as plain numbers, expose what prometheus-client's own
counters and histogram would."""

from __future__ import annotations

from prometheus_client import generate_latest

from server.metrics import Metrics


def _lines(metrics: Metrics) -> set[str]:
    return set(generate_latest(metrics.registry).decode().splitlines())


def test_calls_latency_buckets_and_outcomes_are_exposed_as_prometheus_reads_them() -> None:
    metrics = Metrics()
    for seconds in (0.0002, 0.0005, 0.003, 0.003, 7.0):
        metrics.observe_call("Allocate", "OK", seconds)
    metrics.observe_call("Allocate", "INVALID_ARGUMENT", 0.001)
    metrics.observe_outcome("sold_out")
    metrics.observe_outcome("sold_out")
    lines = _lines(metrics)
    assert 'liveresource_rpc_total{code="OK",method="Allocate"} 5.0' in lines
    assert 'liveresource_rpc_total{code="INVALID_ARGUMENT",method="Allocate"} 1.0' in lines
    assert 'liveresource_allocate_outcomes_total{outcome="sold_out"} 2.0' in lines
    buckets = {
        "0.0005": 2.0,  # le: 0.0005 itself counts in its bucket
        "0.001": 3.0,
        "0.0025": 3.0,
        "0.005": 5.0,
        "5": 5.0,
        "+Inf": 6.0,  # 7 s is above every bound
    }
    for le, count in buckets.items():
        line = f'liveresource_rpc_duration_seconds_bucket{{le="{le}",method="Allocate"}} {count}'
        assert line in lines, line
    assert 'liveresource_rpc_duration_seconds_count{method="Allocate"} 6.0' in lines
    total = 0.0002 + 0.0005 + 0.003 + 0.003 + 7.0 + 0.001
    assert f'liveresource_rpc_duration_seconds_sum{{method="Allocate"}} {total}' in lines


def test_a_method_never_called_exposes_nothing() -> None:
    samples = [line for line in _lines(Metrics()) if not line.startswith("#")]
    assert not any('method="' in line or "outcome=" in line for line in samples), samples
