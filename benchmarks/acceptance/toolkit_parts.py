"""health, recipes and burnin: the real `toolkit` command, each in its own process with its allowance.

What each part keeps under `raw/`: the command's own JSON (the health report, the bench documents) and
its stderr, so the figures summarised here can be checked against what the toolkit wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from acceptance.budget import REPO, outcome_of, read_json, run_child

# shipped recipes in the order they run: QLoRA and the 7-9B ones first, so a run cut short has them
RECIPE_ORDER = (
    "qlora-llama3-8b",
    "lora-llama2-7b",
    "qlora-zephyr-7b",
    "dpo-lora",
    "kto-gemma2-9b",
    "sft-smollm2-cpu",
    "kto-lora-cpu",
)
# at full size each recipe runs as written except: 2 warm-up + 4 measured optimizer steps of one
# micro-batch each (no accumulation: the same memory and the same work per token, a fraction of the time)
GPU_RECIPE_SETS = ("train.warmup_steps=2", "train.measured_steps=4", "recipe.gradient_accumulation_steps=1")
TINY_RECIPE_SETS = ("train.warmup_steps=1", "train.measured_steps=1")
TINY_THREADS = ("--threads", "1")  # on a busy 2-core CI machine two OpenMP threads wait on each other
BURNIN_SECONDS = 120.0
BURNIN_TINY_SECONDS = 3.0
BURNIN_STARTUP = 25.0  # import torch, start CUDA, write the document: the part's time beside the burn-in


def toolkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "toolkit", *args]


def shipped_recipes() -> list[str]:
    """Every shipped recipe (toolkit/data/recipes), in RECIPE_ORDER first, then any new one."""
    from toolkit.bench.recipes import shipped

    names = list(shipped())
    return [n for n in RECIPE_ORDER if n in names] + sorted(n for n in names if n not in RECIPE_ORDER)


def health(out: Path, tiny: bool, allowance: float) -> dict:
    raw = out / "raw"
    child = run_child(
        toolkit_cmd("health", "--json", "--skip", "bmc", "--skip", "qdrant", "--skip", "docker"),
        allowance,
        raw / "health.log",
    )
    report = None
    try:
        import json

        report = json.loads(child.stdout)
    except ValueError:
        pass
    result = outcome_of(child, "toolkit health")
    if report is not None and not child.timed_out:
        # health exits 1/2 (Nagios) for a warning or a critical check: the part still did its job
        result = {"status": "done", "reason": None}
        (raw / "health.json").write_text(child.stdout, encoding="utf-8")
    figures = {"toolkit_exit_code": child.rc}
    if report:
        checks = report.get("checks", [])
        figures.update(
            status=report.get("status"),
            checks=len(checks),
            not_ok=[
                f"{c.get('name')}: {c.get('status')}: {c.get('detail')}"
                for c in checks
                if c.get("status") != "ok"
            ],
            gpu_checks=[c.get("name") for c in checks if c.get("collector") == "gpu"],
        )
    files = ["raw/health.json"] if report is not None else []
    left = max(1.0, allowance - child.seconds)  # the snapshot and nvidia-smi stay within the allowance
    snapshot = _nvml_snapshot(raw, min(30.0, left))
    if snapshot is not None:
        files.append("raw/nvml-snapshot.json")
        figures["nvml_snapshot"] = {
            k: snapshot.get(k) for k in ("available", "gpu_count", "driver_version", "error")
        }
    smi = shutil.which("nvidia-smi")
    if smi:
        files += _nvidia_smi(smi, raw, min(30.0, left))
    figures["nvidia_smi"] = "recorded" if smi and "raw/nvidia-smi.xml" in files else "not present"
    return {**result, "figures": figures, "files": files}


def _nvml_snapshot(raw: Path, timeout: float) -> dict | None:
    """The NVML collector's snapshot (`python -m toolkit.health.collectors.gpu_nvidia`): in the exact shape
    of the fixtures under tests/fixtures/health/, so a lent GPU's snapshot becomes one as it is."""
    import json

    cmd = [sys.executable, "-m", "toolkit.health.collectors.gpu_nvidia"]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
        snapshot = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    (raw / "nvml-snapshot.json").write_text(done.stdout, encoding="utf-8")
    return snapshot


def _nvidia_smi(smi: str, raw: Path, timeout: float) -> list[str]:
    """`nvidia-smi -q -x`: the fixture for the NVML collector's tests (docs/GPU_ACCEPTANCE.md)."""
    try:
        done = subprocess.run([smi, "-q", "-x"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0 or not done.stdout.strip():
        return []
    (raw / "nvidia-smi.xml").write_text(done.stdout, encoding="utf-8")
    return ["raw/nvidia-smi.xml"]


def _bench(out: Path, name: str, args: list[str], allowance: float) -> tuple[dict, dict | None]:
    """`toolkit bench ARGS` with its own results folder; (outcome, its document, whole or as far as
    it got: the bench saves its document after every finished load)."""
    raw = out / "raw"
    folder = raw / name
    target = raw / f"{name}.bench.json"
    cmd = toolkit_cmd("bench", *args, "--results-dir", str(folder), "--json", str(target))
    child = run_child(cmd, allowance, raw / f"{name}.log", grace=15.0)
    doc = read_json(target)
    if doc is None:  # cut short: the document as saved after the last finished load
        saved = sorted(folder.glob("bench-*.json"), key=lambda p: p.stat().st_mtime)
        doc = read_json(saved[-1]) if saved else None
        if doc is not None:
            target.write_text(_dump(doc), encoding="utf-8")
    result = outcome_of(child, "toolkit bench")
    if doc is not None and not child.timed_out:
        result = {"status": "done", "reason": None}  # exit 1 or 4 is the bench's verdict, not a failure
    result["toolkit_exit_code"] = child.rc
    result["files"] = [f"raw/{name}.bench.json"] if doc is not None else []
    return result, doc


def _dump(doc: dict) -> str:
    import json

    return json.dumps(doc, indent=1) + "\n"


def recipes(out: Path, tiny: bool, allowance: float) -> dict:
    names = shipped_recipes()
    args = ["--scale", "tiny", *TINY_THREADS] if tiny else ["--scale", "full"]
    for name in names:
        args += ["--recipe", name]
    for assignment in TINY_RECIPE_SETS if tiny else GPU_RECIPE_SETS:
        args += ["--set", assignment]
    result, doc = _bench(out, "recipes", args, allowance)
    rows = [
        recipe_row(r) for r in (doc or {}).get("results", []) if r.get("workload", "").startswith("train:")
    ]
    ran = {r["recipe"] for r in rows}
    rows += [
        {"recipe": n, "status": "not run", "reason": "the run ended before it"} for n in names if n not in ran
    ]
    figures = {
        "verdict": (doc or {}).get("verdict"),
        "complete": (doc or {}).get("complete"),
        "scale": "tiny" if tiny else "full",
        "overrides": list(TINY_RECIPE_SETS if tiny else GPU_RECIPE_SETS),
        "recipes": rows,
    }
    if doc and doc.get("contention"):
        figures["contention_before"] = doc["contention"]
    return {**result, "figures": figures}


def recipe_row(rec: dict) -> dict:
    """One recipe: status (and why), throughput, MFU, and the memory plan against the measured peak."""
    m, cfg = rec.get("metrics", {}), rec.get("config", {})
    row = {
        "recipe": rec["workload"].partition(":")[2],
        "status": rec.get("status"),
        "reason": (rec.get("error") or {}).get("message"),
        "quantization": cfg.get("quantization"),
        "tokens_per_second": m.get("tokens_per_second"),
        "mfu_ratio": m.get("mfu_ratio"),
        "step_time_seconds_p50": m.get("step_time_seconds_p50"),
        "duration_seconds": rec.get("duration_seconds"),
    }
    row.update(memory_plan(m, rec.get("notes") or []))
    for key in ("spread", "contention"):
        if rec.get(key):
            row[key] = rec[key]
    return row


def memory_plan(m: dict, notes: list[str]) -> dict:
    """The load's memory estimate (the estimator `--plan` uses) against what it measured: on a GPU the
    allocator's peak, on the CPU the RSS the load added (peak - baseline). The ratio is the toolkit's own
    (`memory_measured_over_estimate_ratio`, set where the two are comparable); where it declined to compare
    (a CPU estimate under 64 MiB drowns in RSS noise), its note is the reason."""
    estimate, peak = m.get("memory_estimate_bytes"), m.get("peak_memory_bytes")
    found = {"memory_estimate_bytes": estimate, "peak_memory_bytes": peak}
    if peak is not None:
        found["measured_memory_bytes"] = peak - (m.get("baseline_memory_bytes") or 0)
    ratio = m.get("memory_measured_over_estimate_ratio")
    found["measured_over_plan"] = ratio
    found["plan_over_measured"] = 1 / ratio if ratio else None
    if estimate and not ratio:
        why = [n for n in notes if n.startswith("memory estimate")]
        found["plan_not_compared"] = why[0] if why else "no comparable measurement (the load did not finish)"
    return found


def burnin(out: Path, tiny: bool, allowance: float) -> dict:
    wanted = BURNIN_TINY_SECONDS if tiny else BURNIN_SECONDS
    seconds = max(1.0, min(wanted, allowance - BURNIN_STARTUP))
    args = ["--burn-in", f"{seconds:g}"] + (["--scale", "tiny", *TINY_THREADS] if tiny else [])
    result, doc = _bench(out, "burnin", args, allowance)
    rec = next((r for r in (doc or {}).get("results", []) if r.get("workload") == "burn_in"), None)
    figures: dict = {
        "requested_seconds": seconds,
        "wanted_seconds": wanted,
        "verdict": (doc or {}).get("verdict"),
    }
    if seconds < wanted:
        figures["shortened"] = f"{seconds:g} s instead of {wanted:g} s: the allowance was {allowance:.0f} s"
    if rec:
        m = rec.get("metrics", {})
        sampler = (rec.get("burn_in") or {}).get("sampler") or {}
        figures.update(
            status=rec.get("status"),
            reason=(rec.get("error") or {}).get("message"),
            errors_total=m.get("errors_total"),
            flops_per_second=m.get("flops_per_second"),
            sustained_flops_ratio=m.get("sustained_flops_ratio"),
            burn_in_seconds=m.get("burn_in_seconds"),
            sampler={k: v for k, v in sampler.items() if not isinstance(v, list | dict)},
            readings={k: v for k, v in m.items() if _is_reading(k)},
        )
        if rec.get("contention"):
            figures["contention"] = rec["contention"]
    return {**result, "figures": figures}


def _is_reading(key: str) -> bool:
    words = ("temperature", "power", "clock", "throttle", "frequency", "event")
    return any(w in key for w in words)
