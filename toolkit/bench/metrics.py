"""Every metric key a `toolkit bench` load writes, declared once: its unit, its table label, and how the
ranks of a `--gpus N` run combine it.

The table drives the report's labels and number formatting (`toolkit.bench.report.label`,
`format_metric`, and through them the HTML report) and the aggregation of the ranks' records
(`toolkit.bench.distributed.aggregation`). A key with a parameter (the batch size of the inference
figures, a percentile, an NVML clock-event reason) is declared once as a template, and every declared
figure that is combined across the ranks has a `<key>_per_rank` list (each rank's value) without being
listed again. A key that is not declared still works: it is shown as it is, under its own name, and a
`--gpus N` run keeps rank 0's value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from toolkit.units import gib, seconds, si

# -- how the ranks combine ---------------------------------------------------------------------------

SUM, ALL_RANKS, MAX, MIN, RANK0 = "sum", "all_ranks", "max", "min", "rank0"
RULE_TEXT = {
    SUM: "sum over the ranks",
    ALL_RANKS: "the Trainer counts the tokens of all ranks (num_input_tokens_seen is gathered): "
    "that count over the slowest rank's time, i.e. the lowest rank figure",
    MAX: "highest rank (slowest step, largest memory)",
    MIN: "lowest rank",
    RANK0: "rank 0's value",
}
PER_RANK = "_per_rank"

# -- units: how `format_metric` shows one value ------------------------------------------------------


def _count(value, unit: bool) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


FORMATS: dict[str, Callable[[float, bool], str]] = {
    "ratio": lambda v, unit: f"{v:.1%}",
    "flops": lambda v, unit: si(v, "FLOP/s"),
    "bytes_per_second": lambda v, unit: si(v, "B/s"),
    "tokens_per_second": lambda v, unit: f"{v:,.0f} tok/s" if unit else f"{v:,.0f}",
    "per_second": lambda v, unit: f"{v:,.0f}/s" if unit else f"{v:,.0f}",  # queries, points
    "recall": lambda v, unit: f"{v:.3f}",
    "speedup": lambda v, unit: f"{v:.1f}x",
    "seconds": lambda v, unit: seconds(v),
    "bytes": lambda v, unit: gib(v),
    "celsius": lambda v, unit: f"{v:g} °C",
    "watts": lambda v, unit: f"{v:.0f} W",
    "hertz": lambda v, unit: si(v, "Hz"),
    "count": _count,  # a plain number (a float to 4 significant digits) or a list
}


@dataclass(frozen=True)
class Metric:
    """One metric key, or a family of keys (`{n}`: a batch size, `{p}`: a percentile such as p50,
    `{reason}`: an NVML clock-event reason).

    `combine`: how a `--gpus N` run combines the ranks' values (a key of RULE_TEXT). `all_ranks`: a
    throughput of counted tokens (or FLOP/s derived from them) that becomes ALL_RANKS when the load's
    token count already covers every rank (the Trainer gathers num_input_tokens_seen), so that summing
    the ranks would count the tokens N times. `label`: the short table label (None: the key itself).
    """

    key: str
    unit: str
    combine: str
    label: str | None = None
    all_ranks: bool = False

    def rule(self, all_ranks_tokens: bool) -> str:
        return ALL_RANKS if self.all_ranks and all_ranks_tokens else self.combine

    @property
    def per_rank(self) -> bool:
        """Whether a `--gpus N` result keeps each rank's value under `<key>_per_rank`."""
        return self.combine in (SUM, MAX)


def _throughput(key: str, unit: str, label: str | None = None, tokens: bool = False) -> Metric:
    return Metric(key, unit, SUM, label, all_ranks=tokens)


def _slowest(key: str, unit: str, label: str | None = None) -> Metric:
    return Metric(key, unit, MAX, label)


def _rank0(key: str, unit: str, label: str | None = None) -> Metric:
    return Metric(key, unit, RANK0, label)


METRICS: tuple[Metric, ...] = (
    # matmul, the training loads, burn_in: FLOP/s
    _throughput("flops_per_second", "flops", "FLOP/s", tokens=True),
    _throughput("flops_per_second_best", "flops", tokens=True),
    _throughput("flops_per_second_per_interval", "flops", tokens=True),  # burn_in: a list
    _throughput("first_minute_flops_per_second", "flops"),
    _throughput("last_minute_flops_per_second", "flops"),
    _slowest("call_time_seconds_p50", "seconds"),
    _slowest("call_time_seconds_p90", "seconds"),
    # memory_bandwidth
    _throughput("bandwidth_bytes_per_second", "bytes_per_second", "bandwidth"),
    _throughput("bandwidth_bytes_per_second_best", "bytes_per_second"),
    _slowest("copy_time_seconds_p50", "seconds"),
    # kto_lora, train:NAME
    _throughput("tokens_per_second", "tokens_per_second", "tokens/s", tokens=True),
    _slowest("step_time_seconds_p50", "seconds", "step p50"),
    _slowest("step_time_seconds_p90", "seconds", "step p90"),
    _rank0("mfu_ratio", "ratio", "MFU"),  # --gpus N: aggregate FLOP/s over the sum of the ranks' peaks
    Metric("steps_completed", "count", MIN),
    _rank0("tokens_per_step_mean", "count"),
    _rank0("loss_per_step", "count"),  # a list
    _rank0("trainable_params", "count"),
    # inference
    _throughput("prefill_tokens_per_second_batch{n}", "tokens_per_second", "prefill tok/s b{n}", tokens=True),
    _throughput("decode_tokens_per_second_batch{n}", "tokens_per_second", "decode tok/s b{n}", tokens=True),
    _slowest("ttft_seconds_{p}_batch{n}", "seconds", "TTFT {p} b{n}"),
    # vectors
    _rank0("recall_at_10", "recall", "recall@10"),
    _rank0("batch_recall_at_10", "recall"),
    _rank0("filtered_recall_at_10", "recall", "filtered recall@10"),
    _rank0("indexed_vectors_ratio", "ratio", "indexed vectors"),
    _throughput("queries_per_second", "per_second", "HNSW query/s"),
    _throughput("batch_queries_per_second", "per_second", "HNSW query/s batched"),
    _throughput("filtered_queries_per_second", "per_second", "filtered query/s"),
    _throughput("exact_queries_per_second", "per_second", "exact query/s"),
    _throughput("filtered_exact_queries_per_second", "per_second"),
    _rank0("hnsw_speedup_vs_exact", "speedup", "HNSW / exact"),
    _throughput("upsert_points_per_second", "per_second", "upsert points/s"),
    _slowest("upsert_seconds", "seconds"),
    _slowest("index_build_seconds", "seconds", "index build"),
    _slowest("latency_seconds_p50", "seconds", "latency p50"),
    _slowest("latency_seconds_p99", "seconds", "latency p99"),
    _slowest("exact_latency_seconds_p50", "seconds"),
    # allreduce (the same on every rank: rank 0's figures are kept whatever the rule)
    _throughput("algorithm_bandwidth_bytes_per_second", "bytes_per_second", "algbw"),
    _throughput("bus_bandwidth_bytes_per_second", "bytes_per_second", "busbw"),
    _slowest("op_time_seconds", "seconds"),
    _slowest("sizes_bytes", "bytes"),  # lists, one value per message size
    _slowest("op_time_seconds_per_size", "seconds"),
    _throughput("algorithm_bandwidth_bytes_per_second_per_size", "bytes_per_second"),
    _throughput("bus_bandwidth_bytes_per_second_per_size", "bytes_per_second"),
    _rank0("mismatched_elements_total", "count"),
    # memory, after every load (toolkit.bench.memory, toolkit.bench.runner)
    _slowest("peak_memory_bytes", "bytes", "peak memory"),
    _slowest("peak_memory_reserved_bytes", "bytes"),
    _slowest("baseline_memory_bytes", "bytes"),
    _slowest("memory_estimate_bytes", "bytes"),
    _rank0("memory_measured_over_estimate_ratio", "ratio"),
    # burn_in (never under --gpus: it runs on every visible GPU itself)
    _rank0("iterations_total", "count"),
    _rank0("errors_total", "count"),
    _rank0("errors_per_interval", "count"),
    _rank0("sustained_flops_ratio", "ratio"),
    _slowest("burn_in_seconds", "seconds"),
    _rank0("temperature_max_celsius", "celsius"),
    _rank0("power_mean_watts", "watts"),
    _rank0("power_max_watts", "watts"),
    _rank0("power_limit_watts", "watts"),
    _rank0("sm_clock_min_hertz", "hertz"),
    _rank0("sm_clock_mean_hertz", "hertz"),
    _rank0("throttled_samples_ratio", "ratio"),
    _rank0("clock_event_{reason}_ratio", "ratio"),
    _rank0("cpu_frequency_mean_hertz", "hertz"),
    _rank0("cpu_temperature_max_celsius", "celsius"),
)

# what a template's parameters match
PARAMETERS = {"n": r"\d+", "p": r"p\d+", "reason": r"[a-z_]+"}
_EXACT = {m.key: m for m in METRICS if "{" not in m.key}
_TEMPLATES = tuple(
    (re.compile(re.sub(r"\\\{(\w+)\\\}", lambda g: f"(?P<{g[1]}>{PARAMETERS[g[1]]})", re.escape(m.key))), m)
    for m in METRICS
    if "{" in m.key
)


@dataclass(frozen=True)
class Declared:
    """A metric key looked up in the table: its declaration, and the template's parameters."""

    key: str
    metric: Metric
    params: dict
    per_rank: bool = False  # `<declared key>_per_rank`: each rank's value

    @property
    def unit(self) -> str:
        return self.metric.unit

    @property
    def label(self) -> str:
        if self.metric.label is None:
            return self.key
        text = self.metric.label.format(**self.params)
        return f"{text} per rank" if self.per_rank else text


@lru_cache(maxsize=4096)
def lookup(key: str) -> Declared | None:
    """The declaration of a metric key, or None for a key the table does not declare."""
    if key in _EXACT:
        return Declared(key, _EXACT[key], {})
    for pattern, metric in _TEMPLATES:
        m = pattern.fullmatch(key)
        if m:
            return Declared(key, metric, m.groupdict())
    base = lookup(key.removesuffix(PER_RANK)) if key.endswith(PER_RANK) else None
    if base is not None and not base.per_rank and base.metric.per_rank:
        return Declared(key, base.metric, base.params, per_rank=True)
    return None


def is_declared(key: str) -> bool:
    return lookup(key) is not None


def unit_of(metric: str) -> str | None:
    """The declared unit of a metric key (a key of FORMATS), None for an undeclared key."""
    found = lookup(metric)
    return found.unit if found is not None else None


def rule_for(metric: str, all_ranks_tokens: bool) -> str:
    """How the ranks' values of one metric combine (a key of RULE_TEXT); rank 0's for an undeclared
    metric, and for the `_per_rank` lists themselves."""
    found = lookup(metric)
    if found is None or found.per_rank:
        return RANK0
    return found.metric.rule(all_ranks_tokens)


def label(metric: str) -> str:
    """Short table label of a metric key: 'prefill_tokens_per_second_batch8' -> 'prefill tok/s b8'; an
    undeclared key is its own label."""
    found = lookup(metric)
    return found.label if found is not None else metric


def format_value(metric: str, value, unit: bool = True) -> str:
    """One number of `metric` in its unit (`unit` False: the tables' columns drop tok/s and /s); a
    number of an undeclared metric as it is."""
    found = lookup(metric)
    return FORMATS[found.unit if found is not None else "count"](value, unit)
