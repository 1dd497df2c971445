"""What changed on a node since its previous comparable run, beyond the noise the runs measured.

A baseline is the newest earlier run of the same node, GPU class and scale that finished (an interrupted
or still running one is history, not a baseline) and that started strictly before the latest run (the
same run stored twice is one run). Only the figures a node owner reads are compared: each load's
headline figure and the figures it is checked on. A move counts when it is larger than the noise band:
twice the larger coefficient of variation either run measured for that figure (`spread`), and never
less than the threshold (`--threshold`, default 5 %), which is the whole band when a run measured no
spread."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit import history

# The figure that stands for each load over time and on the card (the first checked figure otherwise).
HEADLINE = {
    "matmul": "flops_per_second",
    "memory_bandwidth": "bandwidth_bytes_per_second",
    "kto_lora": "tokens_per_second",
    "inference": "decode_tokens_per_second_batch1",
    "vectors": "queries_per_second",
    "allreduce": "bus_bandwidth_bytes_per_second",
    "burn_in": "flops_per_second",
}
UNFINISHED = ("interrupted", "incomplete")


def headline(rec: dict) -> str | None:
    name = rec.get("workload", "")
    metric = HEADLINE.get(name) or ("tokens_per_second" if name.startswith("train:") else None)
    if metric and metric in (rec.get("metrics") or {}):
        return metric
    return next(iter(rec.get("expected") or {}), None)


def distinct_runs(runs: list[history.Entry]) -> list[history.Entry]:
    """One entry per run: a run stored twice (gathered and local, or a `--json` copy) is one run."""
    seen, out = set(), []
    for e in runs:
        key = (e.profile, e.time, e.doc.get("finished_at"))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _scale(e: history.Entry):
    return (e.doc.get("configuration") or {}).get("scale")


def finished(e: history.Entry) -> bool:
    return e.doc.get("complete", True) is not False and e.doc.get("verdict") not in UNFINISHED


def baseline(runs: list[history.Entry]) -> history.Entry | None:
    """The previous comparable run of the latest one in `runs` (oldest first), or None."""
    if len(runs) < 2:
        return None
    latest = runs[-1]
    earlier = [
        e
        for e in runs[:-1]
        if e.profile == latest.profile
        and _scale(e) == _scale(latest)
        and e.time < latest.time
        and finished(e)
    ]
    return earlier[-1] if earlier else None


def compared_figures(rec: dict) -> list[str]:
    names = list(rec.get("expected") or {})
    top = headline(rec)
    if top and top not in names:
        names.insert(0, top)
    return [m for m in names if history.direction(m)]


def _cv(rec: dict, metric: str) -> float | None:
    spread = (rec.get("spread") or {}).get(metric)
    cv = spread.get("cv") if isinstance(spread, dict) else None
    return float(cv) if isinstance(cv, int | float) and not isinstance(cv, bool) and cv >= 0 else None


@dataclass(frozen=True)
class Move:
    workload: str
    metric: str
    before: float
    after: float
    band: float  # the noise band this figure was judged against (a fraction)
    measured_noise: bool  # the band comes from the runs' spread, not only the threshold
    verdict: str  # regression | improvement | unchanged

    @property
    def change(self) -> float:
        return self.after / self.before - 1


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def moves(base: dict, latest: dict, threshold: float) -> list[Move]:
    """Every compared figure both runs hold, judged against its noise band."""
    old = {r["workload"]: r for r in base.get("results", []) if r.get("status") not in ("error", "skipped")}
    out = []
    for rec in latest.get("results", []):
        prev = old.get(rec["workload"])
        if prev is None or rec.get("status") in ("error", "skipped"):
            continue
        for metric in compared_figures(rec):
            b, a = (
                _number((prev.get("metrics") or {}).get(metric)),
                _number((rec.get("metrics") or {}).get(metric)),
            )
            if b is None or a is None or b == 0:
                continue
            cvs = [c for c in (_cv(prev, metric), _cv(rec, metric)) if c is not None]
            band = max([threshold, *(2 * c for c in cvs)])
            change = a / b - 1
            better = (change > 0) == (history.direction(metric) > 0)
            verdict = "unchanged" if abs(change) <= band else "improvement" if better else "regression"
            out.append(Move(rec["workload"], metric, b, a, band, bool(cvs), verdict))
    return out
