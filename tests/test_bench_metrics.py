"""The declared metrics table (`toolkit.bench.metrics`): every figure a real run writes is declared, and
the labels, units and rank rules it drives are the ones the report and `--gpus N` used before it."""

from __future__ import annotations

import copy
import json
import re

import pytest

from toolkit.bench import metrics
from toolkit.bench.distributed.aggregation import aggregate, rule_for
from toolkit.bench.report import format_metric, label

from conftest import REPO

EXAMPLE = {"n": "8", "p": "p50", "reason": "sw_thermal_slowdown"}


def _instances() -> list[str]:
    """Every declared key, a template filled with example parameters."""
    return [m.key.format(**EXAMPLE) for m in metrics.METRICS]


def _rule_by_name(metric: str, all_ranks_tokens: bool) -> str:
    """How the ranks combined a figure before the table: regexes on its name (kept here as the
    reference the table must reproduce)."""
    if re.search(r"_per_second(_|$)", metric):
        if all_ranks_tokens and ("tokens_per_second" in metric or metric.startswith("flops_per_second")):
            return "all_ranks"
        return "sum"
    if "_seconds" in metric or metric.endswith("_bytes"):
        return "max"
    if metric == "steps_completed":
        return "min"
    return "rank0"


@pytest.mark.slow
def test_every_metric_of_a_real_run_is_declared(tiny_run):
    proc, doc, _ = tiny_run
    assert doc is not None, proc.stderr
    keys = {k for r in doc["results"] for k in r["metrics"]}
    assert keys and sorted(k for k in keys if not metrics.is_declared(k)) == []


def test_declared_keys_are_unique_and_match_the_schema():
    schema = json.loads((REPO / "toolkit" / "data" / "bench-result.schema.json").read_text())
    pattern = schema["$defs"]["result"]["properties"]["metrics"]["propertyNames"]["pattern"]
    keys = [m.key for m in metrics.METRICS]
    assert len(keys) == len(set(keys))
    for key in _instances():
        assert re.search(pattern, key), key
        assert re.search(pattern, f"{key}_per_rank"), key
        assert metrics.lookup(key).metric.unit in metrics.FORMATS
        assert metrics.lookup(key).metric.combine in metrics.RULE_TEXT


@pytest.mark.parametrize("all_ranks_tokens", [False, True])
def test_rules_are_the_rules_by_name(all_ranks_tokens):
    for key in _instances():
        assert rule_for(key, all_ranks_tokens) == _rule_by_name(key, all_ranks_tokens), key


def test_templates_and_per_rank_lists_are_declared_once():
    assert label("prefill_tokens_per_second_batch32") == "prefill tok/s b32"
    assert label("decode_tokens_per_second_batch1") == "decode tok/s b1"
    assert label("ttft_seconds_p90_batch8") == "TTFT p90 b8"
    assert label("tokens_per_second_per_rank") == "tokens/s per rank"
    assert label("step_time_seconds_p50_per_rank") == "step p50 per rank"
    assert label("peak_memory_bytes_per_rank") == "peak memory per rank"
    assert metrics.is_declared("clock_event_hw_power_brake_slowdown_ratio")
    # each rank's value is kept only for a figure the ranks combine, and never a list of lists
    assert not metrics.is_declared("steps_completed_per_rank")
    assert not metrics.is_declared("recall_at_10_per_rank")
    assert not metrics.is_declared("tokens_per_second_per_rank_per_rank")
    assert not metrics.is_declared("prefill_tokens_per_second_batchX")


def test_units_format_as_the_tables_show_them():
    cases = [
        ("tokens_per_second", 3535.4, True, "3,535 tok/s"),
        ("tokens_per_second", 3535.4, False, "3,535"),
        ("flops_per_second", 1.597e11, True, "160 GFLOP/s"),
        ("bus_bandwidth_bytes_per_second", 6.75e8, False, "675 MB/s"),
        ("queries_per_second", 1234.5, True, "1,234/s"),
        ("upsert_points_per_second", 1234.5, False, "1,234"),
        ("mfu_ratio", 0.0213, True, "2.1%"),
        ("recall_at_10", 1, True, "1.000"),
        ("hnsw_speedup_vs_exact", 0.9, True, "0.9x"),
        ("ttft_seconds_p50_batch8", 0.0123, True, "12.3 ms"),
        ("peak_memory_bytes", 654 * 2**20, True, "654 MiB"),
        ("temperature_max_celsius", 71.5, True, "71.5 °C"),
        ("power_max_watts", 301.4, True, "301 W"),
        ("sm_clock_min_hertz", 1.41e9, True, "1.41 GHz"),
        ("steps_completed", 12, True, "12"),
        ("tokens_per_step_mean", 123.456, True, "123.5"),
        ("loss_per_step", [1.0, 0.5], True, "2 values"),
        ("step_time_seconds_p50_per_rank", [0.1275, 0.1296], True, "127.5 ms / 129.6 ms"),
        ("tokens_per_second_per_rank", [3603.2, None], True, "3,603 / -"),
        ("tokens_per_second", None, True, "-"),
    ]
    for key, value, unit, shown in cases:
        assert format_metric(key, value, unit=unit) == shown, key


def test_an_undeclared_metric_is_shown_raw_and_keeps_rank_0s_value():
    assert not metrics.is_declared("widgets_per_second")
    assert label("widgets_per_second") == "widgets_per_second"
    assert format_metric("widgets_per_second", 1234.5678) == "1235"
    assert format_metric("widgets_per_second", 7) == "7"
    assert rule_for("widgets_per_second", True) == "rank0"
    a, b = _record(0), _record(1)
    a["metrics"]["widgets_per_second"], b["metrics"]["widgets_per_second"] = 10.0, 20.0
    out = aggregate([a, b], warn_ratio=0.8)
    assert out["metrics"]["widgets_per_second"] == 10.0
    assert "widgets_per_second_per_rank" not in out["metrics"]
    assert out["aggregation"]["rules"]["widgets_per_second"] == "rank 0's value"


def _record(rank: int, **config) -> dict:
    """One rank's record of a training load: rank 1 is slower and holds more memory."""
    return {
        "workload": "kto_lora",
        "status": "pass",
        "metrics": {
            "tokens_per_second": [100.0, 90.0][rank],
            "flops_per_second": [1e9, 0.9e9][rank],
            "queries_per_second": [40.0, 60.0][rank],
            "step_time_seconds_p50": [0.10, 0.12][rank],
            "peak_memory_bytes": [500, 700][rank],
            "steps_completed": [12, 11][rank],
            "mfu_ratio": [0.5, 0.45][rank],
            "recall_at_10": [0.9, 0.8][rank],
            "loss_per_step": [[1.0, 0.5], [1.1, 0.6]][rank],
        },
        "expected": {
            "tokens_per_second": {"min": 80.0, "basis": "floor", "status": "pass"},
            "step_time_seconds_p50": {"min": None, "basis": "no expectation: none", "status": "warn"},
        },
        "warmup": {},
        "config": dict(config),
        "flops": {},
        "notes": [],
        "duration_seconds": [3.0, 3.5][rank],
    }


@pytest.mark.parametrize(
    ("config", "tokens", "flops", "rule"),
    [
        ({}, 190.0, 1.9e9, "sum over the ranks"),
        # the Trainer's gathered token count: that count over the slowest rank's time
        ({"tokens_scope": "all_ranks"}, 90.0, 0.9e9, "the Trainer counts the tokens of all ranks"),
    ],
)
def test_each_rule_combines_a_pair_of_ranks_as_before(config, tokens, flops, rule):
    records = [_record(0, **config), _record(1, **config)]
    out = aggregate(copy.deepcopy(records), warn_ratio=0.8)
    m, rules = out["metrics"], out["aggregation"]["rules"]
    assert m["tokens_per_second"] == pytest.approx(tokens)
    assert m["tokens_per_second_per_rank"] == [100.0, 90.0]
    assert m["flops_per_second"] == pytest.approx(flops)
    assert rules["tokens_per_second"].startswith(rule)
    assert m["queries_per_second"] == pytest.approx(100.0)  # a sum whatever the token count
    assert (m["step_time_seconds_p50"], m["peak_memory_bytes"]) == (0.12, 700)
    assert m["peak_memory_bytes_per_rank"] == [500, 700]
    assert rules["peak_memory_bytes"] == "highest rank (slowest step, largest memory)"
    assert m["steps_completed"] == 11 and "steps_completed_per_rank" not in m
    assert rules["steps_completed"] == "lowest rank"
    assert m["recall_at_10"] == 0.9 and rules["recall_at_10"] == "rank 0's value"
    assert m["loss_per_step"] == [1.0, 0.5] and "loss_per_step" not in rules
    # MFU: the aggregate FLOP/s over the sum of the ranks' peaks (1e9 / 0.5 + 0.9e9 / 0.45 = 4e9)
    assert m["mfu_ratio"] == pytest.approx(flops / 4e9)
    assert rules["mfu_ratio"] == "aggregate FLOP/s over the sum of the ranks' peaks"
    # an additive figure is checked against the sum of the ranks' minimums
    exp = out["expected"]["tokens_per_second"]
    assert exp["min"] == 160.0 and exp["basis"].startswith("sum of the 2 ranks' minimums, each: floor")
    assert (
        out["aggregation"]["slowest_rank"] == 1
        and out["aggregation"]["slowest_by"] == "step_time_seconds_p50"
    )
    assert [r["rank"] for r in out["ranks"]] == [0, 1] and out["duration_seconds"] == 3.5


def test_a_load_the_same_on_every_rank_keeps_rank_0s_figures_but_each_ranks_memory():
    records = [_record(r, same_on_all_ranks=True) for r in (0, 1)]
    out = aggregate(records, warn_ratio=0.8)
    m = out["metrics"]
    assert m["tokens_per_second"] == 100.0 and "tokens_per_second_per_rank" not in m
    assert m["peak_memory_bytes"] == 700 and m["peak_memory_bytes_per_rank"] == [500, 700]
    assert m["mfu_ratio"] == 0.5
    assert out["aggregation"]["rules"] == "every rank reports the same figures: rank 0's are kept"
    assert out["expected"]["tokens_per_second"]["min"] == 80.0


def test_a_skipped_loads_reason_is_its_cell_in_the_table():
    """A 4-bit recipe skipped on the CPU carries notes (scaled down, estimate) before the reason; the table
    shows the reason, not the first note. The record is the shape the train load writes (see
    test_every_recipe_runs_at_tiny_scale_and_4bit_is_skipped_on_cpu for the real one)."""
    from rich.console import Console

    from toolkit.bench import report

    record = {
        "workload": "train:qlora-zephyr-7b",
        "status": "skipped",
        "metrics": {"memory_estimate_bytes": 2**30},
        "expected": {},
        "notes": ["scaled down for this run: 2 layers", "memory estimate 1.0 GiB"],
        "error": {"kind": "needs_cuda", "message": "needs CUDA (bitsandbytes): 4-bit recipes run on a GPU"},
    }
    doc = {
        "gpu_class": {"name": "cpu", "mismatch": None},
        "host": "node",
        "configuration": {"scale": "tiny"},
        "results": [record],
        "verdict": "pass",
    }
    console = Console(record=True, width=200)
    report.render(doc, console)
    table = console.export_text()
    # (issue 18) the cell references the reason, note [1] below the table, not the first note
    assert "see [1]" in table
    assert " [1] train:qlora-zephyr-7b: needs CUDA (bitsandbytes): 4-bit recipes run on a GPU" in table
    assert "scaled down for this run" not in table.split(" [1] ")[0]  # not in the table itself
