"""Rank 0's part after each load of a `--gpus N` run: one result from the ranks' records.

How each figure combines (a sum, the slowest rank, the lowest rank, rank 0's) is declared with the
figure in `toolkit.bench.metrics`; the result keeps every rank's record under `ranks` and says under
`aggregation` how each metric was combined and which rank was the slowest.
"""

from __future__ import annotations

from toolkit.bench.metrics import ALL_RANKS, MAX, MIN, RULE_TEXT, SUM, rule_for
from toolkit.glossary import STATUS_ORDER, LoadStatus

__all__ = ["RULE_TEXT", "aggregate", "rank_entry", "rule_for", "tokens_over_all_ranks"]

COMBINE = {SUM: sum, ALL_RANKS: min, MIN: min, MAX: max}
# the rules that keep each rank's value under `<metric>_per_rank`
PER_RANK_RULES = (SUM, ALL_RANKS, MAX)
MFU_RULE = "aggregate FLOP/s over the sum of the ranks' peaks"
SAME_ON_ALL_RANKS = "every rank reports the same figures: rank 0's are kept"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def tokens_over_all_ranks(record: dict) -> bool:
    """True when a load's token count already covers every rank.

    The Trainer gathers `num_input_tokens_seen` over the processes, so under DDP each rank's
    tokens/s is all ranks' tokens over that rank's time; summing the ranks would count them N times.
    """
    config = record.get("config") or {}
    scope = config.get("tokens_scope")
    if scope:
        return scope == "all_ranks"
    return "num_input_tokens_seen" in str(config.get("tokens_counted", ""))


def aggregate(records: list[dict], warn_ratio: float, shared_cores: bool = False) -> dict:
    """One result from the ranks' records of the same load, with the ranks kept under `ranks`.

    `shared_cores`: CPU processes on one machine. The CPU floors were set for one process with
    every core, so a shortfall of N processes sharing them warns and never fails.
    """
    from toolkit.bench.record import WorkloadRecord

    base = records[0]
    out = WorkloadRecord(base["workload"])
    out.config, out.flops, out.warmup = base["config"], base["flops"], base["warmup"]
    out.notes = list(base["notes"])
    out.duration_seconds = max((r["duration_seconds"] or 0) for r in records)
    same = bool(base["config"].get("same_on_all_ranks"))
    all_ranks = tokens_over_all_ranks(base)
    rules = _combine_metrics(out, records, same, all_ranks)
    if not same:
        _combine_mfu(out, records, rules)
    for metric, entry in base["expected"].items():
        additive = not same and rule_for(metric, all_ranks) in (SUM, ALL_RANKS)
        _check(out, records, metric, entry, warn_ratio, additive, shared_cores)
    _settle(out, records)
    doc = out.as_dict()
    doc["aggregation"] = _aggregation(records, rules if not same else SAME_ON_ALL_RANKS)
    doc["ranks"] = [rank_entry(i, r) for i, r in enumerate(records)]
    return doc


def _combine_metrics(out, records: list[dict], same: bool, all_ranks: bool) -> dict[str, str]:
    """The aggregate of every metric into `out.metrics`; returns the rule text of each combined one."""
    rules: dict[str, str] = {}
    for metric, value in records[0]["metrics"].items():
        values = [r["metrics"].get(metric) for r in records]
        # a load whose figures are the same on every rank still has its own memory per rank
        if (same and not metric.endswith("memory_bytes")) or not all(_is_number(v) for v in values):
            out.metrics[metric] = value
            continue
        rule = rule_for(metric, all_ranks)
        rules[metric] = RULE_TEXT[rule]
        out.metrics[metric] = COMBINE[rule](values) if rule in COMBINE else value
        if rule in PER_RANK_RULES:
            out.metrics[f"{metric}_per_rank"] = values
    return rules


def _combine_mfu(out, records: list[dict], rules: dict[str, str]) -> None:
    """The aggregate FLOP/s over the sum of the ranks' peaks (each rank's peak = its FLOP/s / its MFU)."""
    mfu = [r["metrics"].get("mfu_ratio") for r in records]
    flops = [r["metrics"].get("flops_per_second") for r in records]
    if all(_is_number(m) and m > 0 for m in mfu) and all(_is_number(f) for f in flops):
        out.metrics["mfu_ratio"] = out.metrics["flops_per_second"] / sum(
            f / m for f, m in zip(flops, mfu, strict=True)
        )
        rules["mfu_ratio"] = MFU_RULE


def _check(out, records: list[dict], metric: str, entry: dict, warn_ratio, additive, shared_cores) -> None:
    """The aggregate checked against the ranks' expectation: the sum of their minimums for a figure
    that adds up over the ranks, rank 0's minimum otherwise."""
    n = len(records)
    basis = entry["basis"].removeprefix("no expectation: ")
    minimum = entry.get("min")
    if additive and minimum is not None:
        mins = [r["expected"].get(metric, {}).get("min") for r in records]
        minimum = sum(mins) if all(_is_number(m) for m in mins) else None
        basis = f"sum of the {n} ranks' minimums, each: {basis}"
    if shared_cores and minimum is not None:
        basis += f" (a floor set for one process using every core; {n} processes share them here)"
    out.check(
        metric,
        minimum,
        basis,
        warn_ratio,
        entry.get("floor_source"),
        calibrated=entry.get("calibrated", True) and not shared_cores,
    )


def _settle(out, records: list[dict]) -> None:
    """The load's status: the worst rank's error, naming the ranks that had one; else its checks'."""
    errors = [(i, r) for i, r in enumerate(records) if r.get("error")]
    if errors:
        _, worst = max(errors, key=lambda e: STATUS_ORDER.get(e[1]["status"], 3))
        ranks = ", ".join(str(i) for i, _ in errors)
        out.fail(worst["status"], worst["error"]["kind"], f"rank {ranks}: {worst['error']['message']}")
    elif all(r["status"] == LoadStatus.SKIPPED for r in records):
        out.status = LoadStatus.SKIPPED.value
    else:
        out.settle()


def _aggregation(records: list[dict], rules) -> dict:
    n = len(records)
    steps = [r["metrics"].get("step_time_seconds_p50") for r in records]
    timed = steps if all(_is_number(s) for s in steps) else [r["duration_seconds"] or 0 for r in records]
    return {
        "world_size": n,
        "rules": rules,
        "slowest_rank": max(range(n), key=timed.__getitem__),
        "slowest_by": "step_time_seconds_p50" if timed is steps else "duration_seconds",
    }


def rank_entry(rank: int, record: dict) -> dict:
    """One rank's own record of a load, as a result keeps it under `ranks`."""
    entry = {
        "rank": rank,
        "metrics": record.get("metrics", {}),
        "warmup": record.get("warmup", {}),
        "duration_seconds": record.get("duration_seconds"),
    }
    if record.get("error"):
        entry["error"] = record["error"]
    return entry
