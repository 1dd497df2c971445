"""The summary of an acceptance run: one line per part, the recipes' memory plan against the measured
peak, and the issue's GPU targets with what was measured (judged only at full size on a GPU)."""

from __future__ import annotations

from acceptance.overhead import MFU_TARGET, OVERHEAD_TARGET

MATMUL_TARGET = 0.90  # the toolkit's matmul at least 90 % of the plain-loop ceiling


def si(value, unit: str) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def headline(rec: dict) -> str:
    f, part = rec.get("figures") or {}, rec["part"]
    if rec["status"] == "skipped" or not f:
        return rec.get("reason") or ""
    if part == "health":
        return (
            f"health {f.get('status')}, {f.get('checks')} checks, {len(f.get('not_ok') or [])} not ok; "
            f"nvidia-smi {f.get('nvidia_smi')}"
        )
    if part in ("matmul", "bandwidth") and "ratio" in f:
        return (
            f"toolkit {si(f['toolkit'], f['unit'])}, plain loop {si(f['plain'], f['unit'])}: "
            f"ratio {f['ratio']:.3f}"
        )
    if part == "recipes":
        rows = f.get("recipes", [])
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return f"{len(rows)} recipes: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if part == "burnin" and "status" in f:
        return (
            f"{f['status']} over {f.get('burn_in_seconds')} s, {f.get('errors_total')} errors, "
            f"sustained {f.get('sustained_flops_ratio')}, sampler {f.get('sampler', {}).get('source')}"
        )
    if part == "overhead" and "overhead" in f:
        return (
            f"toolkit {f['toolkit_tokens_per_second']:.1f} tok/s, bare TRL {f['bare_tokens_per_second']:.1f} "
            f"tok/s: overhead {f['overhead']:+.2%}"
        )
    return rec.get("reason") or ""


def brief(rec: dict) -> dict:
    """A part's line in summary.json."""
    return {
        "part": rec["part"],
        "status": rec["status"],
        "reason": rec.get("reason"),
        "seconds": rec.get("seconds"),
        "allowance_seconds": rec.get("allowance_seconds"),
        "headline": headline(rec),
        "file": f"{rec['part']}.json",
    }


def targets(records: dict, judged: bool) -> list[dict]:
    """The issue's GPU targets against what this run measured."""
    mm = (records.get("matmul") or {}).get("figures") or {}
    ov = (records.get("overhead") or {}).get("figures") or {}
    found = [
        ("matmul at least 90% of the plain torch.matmul loop", mm.get("ratio"), MATMUL_TARGET, True),
        (
            "8B-architecture LoRA SFT at seq 2048: MFU at least 35%",
            ov.get("toolkit_mfu_ratio"),
            MFU_TARGET,
            True,
        ),
        ("harness overhead under 2% against bare TRL", ov.get("overhead"), OVERHEAD_TARGET, False),
    ]
    out = []
    for what, value, target, at_least in found:
        met = None if value is None or not judged else (value >= target if at_least else value < target)
        out.append({"target": what, "measured": value, "goal": target, "met": met})
    return out


def table(summary: dict, records: dict) -> str:
    lines = [
        f"GPU acceptance run · {summary['device']} · "
        f"{'tiny (CPU, CI)' if summary['tiny'] else 'full size'} · "
        f"budget {summary['budget_seconds']:.0f} s · {summary['started_at']}",
        f"{'part':<10} {'status':<8} {'seconds':>7} {'allowed':>7}  figures",
    ]
    for p in summary["parts"]:
        allowed = "-" if p.get("allowance_seconds") is None else f"{p['allowance_seconds']:.0f}"
        seconds = "-" if p.get("seconds") is None else f"{p['seconds']:.1f}"
        lines.append(f"{p['part']:<10} {p['status']:<8} {seconds:>7} {allowed:>7}  {p.get('headline') or ''}")
        if p["status"] not in ("done", "pending") and p.get("reason") and p["reason"] != p.get("headline"):
            lines.append(f"{'':<36}{p['reason']}")
    rows = ((records.get("recipes") or {}).get("figures") or {}).get("recipes") or []
    if rows:
        lines += [
            "",
            f"{'recipe':<18} {'status':<12} {'tokens/s':>9} {'MFU':>6} {'plan':>9} {'measured':>9} "
            "plan/measured",
        ]
        for r in rows:
            ratio = r.get("plan_over_measured")
            mfu = r.get("mfu_ratio")
            lines.append(
                f"{r['recipe']:<18} {r['status']:<12} "
                f"{'-' if r.get('tokens_per_second') is None else format(r['tokens_per_second'], '.1f'):>9} "
                f"{'-' if mfu is None else format(mfu, '.1%'):>6} {mib(r.get('memory_estimate_bytes')):>9} "
                f"{mib(r.get('measured_memory_bytes')):>9} {'-' if ratio is None else format(ratio, '.2f')}"
            )
            if r.get("reason"):
                lines.append(f"{'':<20}{r['reason']}")
    lines += ["", "targets" + ("" if summary["tiny"] else " (full size on a GPU)") + ":"]
    for t in summary["targets"]:
        value = "-" if t["measured"] is None else f"{t['measured']:.3f}"
        verdict = (
            "not judged at tiny scale"
            if summary["tiny"]
            else {True: "met", False: "NOT met", None: "-"}[t["met"]]
        )
        lines.append(f"  {t['target']}: {value} (goal {t['goal']}) {verdict}")
    lines.append(f"results: {summary['out']}")
    return "\n".join(lines)
