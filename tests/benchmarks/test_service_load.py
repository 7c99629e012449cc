"""The load benchmark's bookkeeping (no servers, no timing): batch sizes from /metrics, targets, summaries."""

from __future__ import annotations

from prometheus_client import generate_latest

from benchmarks.servers import ready_processes, server_spec, service_spec
from benchmarks.service_load import (
    LevelStats,
    RoundResult,
    batch_totals,
    parse_args,
    server_specs,
    summarize,
    verdict,
)
from service.metrics import Metrics


def test_batch_totals_reads_the_services_histogram():
    metrics = Metrics()
    for size in (8, 8, 3):
        metrics.batch_started(size, [0.0] * size)
    assert batch_totals(generate_latest(metrics.registry).decode()) == (19.0, 3.0)
    assert batch_totals("") == (0.0, 0.0)


def test_ready_processes_reads_the_services_gauge():
    metrics = Metrics()
    assert ready_processes(generate_latest(metrics.registry).decode()) == 0.0
    metrics.ready.set(1)
    assert ready_processes(generate_latest(metrics.registry).decode()) == 1.0
    assert ready_processes("") == 0.0


def test_the_service_is_measured_once_per_process_count(tmp_path):
    args = parse_args(["--servers", "ours", "plain", "--processes", "1", "4", "--service-env", "FACEPARSE_FLIP=1"])
    specs = [spec for name in args.servers for spec in server_specs(name, args, tmp_path, {"FACEPARSE_FLIP": "1"})]
    assert [s.name for s in specs] == ["ours", "ours-p4", "plain"]
    assert [s.env.get("FACEPARSE_PROCESSES") for s in specs] == ["1", "4", None]
    assert [s.processes for s in specs] == [1, 4, 1]  # running() waits for all of them
    assert specs[1].env["FACEPARSE_FLIP"] == "1" and specs[1].args == specs[0].args


def test_summarize_takes_the_median_round_and_pools_latencies():
    rounds = [RoundResult([0.1] * 10, 0, 1.0), RoundResult([0.2] * 10, 1, 2.0), RoundResult([0.3] * 10, 0, 4.0)]
    stats = summarize("ours", 4, rounds, 2.5)
    assert stats.img_per_s == 5.0 and stats.requests == 31 and stats.errors == 1
    assert round(stats.p50_ms) == 200 and round(stats.p99_ms) == 300


def level(server: str, concurrency: int, img_per_s: float, p50_ms: float, p99_ms: float) -> LevelStats:
    return LevelStats(server, concurrency, 100, 0, img_per_s, p50_ms, p50_ms, p99_ms, 1.0)


def test_verdict_compares_with_the_best_batch_and_the_baselines():
    forward = {1: {"ms_per_image": 50.0, "img_per_s": 20.0}, 8: {"ms_per_image": 40.0, "img_per_s": 25.0}}
    stats = [level("ours", 1, 12.0, 75.0, 90.0), level("ours", 16, 20.0, 700.0, 900.0),
             level("plain", 16, 15.0, 900.0, 1500.0), level("litserve", 16, 21.0, 650.0, 800.0)]
    v = verdict(forward, stats, low=1, high=16)
    assert v["best_batch"] == 8
    assert v["throughput_ratio"]["value"] == 0.8 and v["throughput_ratio"]["met"]
    assert v["latency_overhead_ms"] == {"value": 25.0, "target": "<= 30", "met": True}
    assert v["vs_plain"] == {"img_per_s": True, "p99_lower": True}
    assert v["vs_litserve"] == {"img_per_s": False, "p99_lower": False}


def test_the_service_spec_passes_settings_as_faceparse_variables(tmp_path):
    spec = service_spec("models/x", max_queue_size=4, log_level="warning")
    assert spec.env == {"FACEPARSE_MAX_QUEUE_SIZE": "4", "FACEPARSE_LOG_LEVEL": "warning",
                        "FACEPARSE_MODEL_DIR": "models/x"}
    ours = server_spec("ours", "models/x", 8, 5.0, tmp_path, {"FACEPARSE_WORKER_THREADS": "4"})
    assert ours.args == spec.args and ours.ready_path == "/readyz"
    assert ours.env["FACEPARSE_MAX_BATCH_SIZE"] == "8" and ours.env["FACEPARSE_WORKER_THREADS"] == "4"


def test_verdict_compares_faces_auto_with_faces_whole_in_the_same_run():
    forward = {1: {"ms_per_image": 50.0, "img_per_s": 20.0}}
    stats = [level("ours", 1, 12.0, 80.0, 90.0), level("ours", 16, 20.0, 700.0, 900.0),
             level("ours:auto", 1, 10.0, 130.0, 150.0), level("ours:auto", 16, 11.0, 1400.0, 1800.0)]
    v = verdict(forward, stats, low=1, high=16)
    assert v["auto_throughput_ratio"] == {"value": 0.55, "target": ">= 0.6", "met": False}
    assert v["auto_latency_extra_ms"] == {"value": 50.0, "target": "<= 40", "met": False}


def test_verdict_compares_each_mode_next_to_the_busy_neighbour_with_itself_quiet():
    forward = {1: {"ms_per_image": 50.0, "img_per_s": 20.0}}
    stats = [level("ours", 1, 12.0, 80.0, 90.0), level("ours+busy", 1, 5.0, 160.0, 300.0),
             level("ours:auto", 1, 10.0, 100.0, 150.0), level("ours:auto+busy", 1, 2.0, 400.0, 900.0)]
    v = verdict(forward, stats, low=1, high=1)
    assert v["busy_p50_ratio"] == {"value": 2.0, "target": "<= 2.5", "met": True}
    assert v["busy_auto_p50_ratio"] == {"value": 4.0, "target": "<= 2.5", "met": False}

