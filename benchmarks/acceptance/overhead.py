"""overhead: the toolkit's run of a recipe against a bare TRL + PEFT script of the same load, side by side.

toolkit  `toolkit bench --recipe R ... --json` (the whole harness, as a user runs it), its `train:R` record;
bare     `bare()` below, in a fresh process: the same synthetic model (architectures.build_model) and
         tokenizer, the same synthetic data, the same TRL config values and PEFT LoRA config
         (`benchmarks/harness_overhead.py`'s `bare_spec`, set for the GPU where there is one), written out
         as a user would; a minimal callback reads the clock and TRL's token count at each step's end.

Both count TRL's non-padding tokens over the same measured steps after the same warm-up steps; the
step losses of both are compared (the same load, or the comparison says it is not). Harness overhead =
1 - tokens/s(toolkit) / tokens/s(bare), from the medians of the rounds that fitted in the allowance.

On a GPU the recipe is an 8B-architecture LoRA SFT at seq 2048 (lora-llama2-7b with --arch llama3-8b and
max_length 2048), whose MFU is the issue's target (at least 35 %); at tiny scale sft-smollm2-cpu.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from acceptance.budget import child_command, outcome_of, read_json, run_child, write_json

GPU_REQUEST = {
    "recipe": "lora-llama2-7b",
    "arch": "llama3-8b",
    "scale": "full",
    "sets": [
        "recipe.max_length=2048",
        "recipe.gradient_accumulation_steps=1",
        "train.warmup_steps=2",
        "train.measured_steps=6",
    ],
    "threads": None,
    "max_rounds": 3,
}
TINY_REQUEST = {
    "recipe": "sft-smollm2-cpu",
    "arch": None,
    "scale": "tiny",
    "sets": ["train.warmup_steps=1", "train.measured_steps=3"],
    "threads": 1,
    "max_rounds": 1,
}
MFU_TARGET = 0.35
OVERHEAD_TARGET = 0.02


def resolve(req: dict):
    """(RunContext, recipe at the run's scale), as `toolkit bench --recipe --arch --scale --set` does."""
    from toolkit.bench import recipes
    from toolkit.bench.context import RunContext
    from toolkit.bench.settings import load_settings, override
    from toolkit.bench.workloads import train

    sets = req["sets"]
    settings = load_settings()
    scale = override(settings.scales[req["scale"]], [s for s in sets if not s.startswith("recipe.")])
    recipe = recipes.override(
        recipes.load(req["recipe"], req["arch"]),
        [s.partition(".")[2] for s in sets if s.startswith("recipe.")],
    )
    ctx = RunContext(
        device="cpu", dtype="float32", scale=scale, settings=settings, gpu_class="cpu", spec=None
    )
    return ctx, train.for_scale(ctx, recipe)


def bare_child(req: dict) -> dict:
    """The bare TRL run of `req` (in a fresh process)."""
    import torch
    from harness_overhead import bare, bare_spec

    from toolkit.bench.workloads import train

    ctx, recipe = resolve(req)
    spec = bare_spec(ctx, recipe)
    device, dtype = "cpu", "float32"
    if torch.cuda.is_available():
        device = "cuda"
        dtype = (
            "float16"
            if recipe.precision == "fp16"
            else "bfloat16"
            if recipe.precision == "bf16"
            else "float32"
        )
        spec["trl"].update(
            use_cpu=False,
            bf16=dtype == "bfloat16",
            fp16=dtype == "float16",
            optim=train._optim(recipe, on_gpu=True)[0],
        )
    if req.get("threads"):
        torch.set_num_threads(req["threads"])
    result = bare(spec, device=device, dtype=getattr(torch, dtype))
    return {**result, "device": device, "dtype": dtype, "spec": spec}


def _toolkit_args(req: dict, folder: Path, target: Path) -> list[str]:
    args = ["-m", "toolkit", "bench", "--recipe", req["recipe"], "--scale", req["scale"]]
    args += ["--arch", req["arch"]] if req["arch"] else []
    args += ["--threads", str(req["threads"])] if req["threads"] else []
    for s in req["sets"]:
        args += ["--set", s]
    return [*args, "--results-dir", str(folder), "--json", str(target)]


def _toolkit_round(out: Path, req: dict, i: int, timeout: float) -> tuple[dict, dict | None]:
    import sys

    raw = out / "raw" / "overhead"
    target = raw / f"toolkit-{i}.bench.json"
    child = run_child(
        [sys.executable, *_toolkit_args(req, raw / "results", target)], timeout, raw / f"toolkit-{i}.log"
    )
    doc = read_json(target)
    rec = next(
        (r for r in (doc or {}).get("results", []) if r.get("workload", "").startswith("train:")), None
    )
    if rec is None:
        outcome = outcome_of(child, "toolkit bench")
        if outcome["status"] == "done":
            outcome = {"status": "failed", "reason": "no train: record in the toolkit's document"}
        return outcome, None
    m = rec.get("metrics", {})
    if "tokens_per_second" not in m:
        why = (rec.get("error") or {}).get("message") or rec.get("status")
        return {"status": "failed", "reason": f"the toolkit's load did not measure: {why}"}, None
    return {"status": "done", "reason": None}, {
        "tokens_per_second": m["tokens_per_second"],
        "step_time_seconds_p50": m.get("step_time_seconds_p50"),
        "tokens_per_step_mean": m.get("tokens_per_step_mean"),
        "mfu_ratio": m.get("mfu_ratio"),
        "status": rec.get("status"),
        "losses": rec.get("warmup", {}).get("loss_per_step", []) + m.get("loss_per_step", []),
        "process_seconds": child.seconds,
        **({"spread": rec["spread"]} if rec.get("spread") else {}),
        **({"contention": rec["contention"]} if rec.get("contention") else {}),
    }


def _bare_round(out: Path, req: dict, tiny: bool, i: int, timeout: float) -> tuple[dict, dict | None]:
    raw = out / "raw" / "overhead"
    request, result = raw / "request.json", raw / f"bare-{i}.json"
    write_json(request, req)
    child = run_child(
        child_command("bare", tiny, result, "--request", str(request)), timeout, raw / f"bare-{i}.log"
    )
    got = read_json(result)
    if got is None:
        outcome = outcome_of(child, "the bare TRL script")
        return outcome if outcome["status"] != "done" else {"status": "failed", "reason": "no result"}, None
    got["process_seconds"] = child.seconds
    if i == 0:
        write_json(raw / "bare-spec.json", got.pop("spec"))
    else:
        got.pop("spec", None)
    return {"status": "done", "reason": None}, got


def overhead(out: Path, tiny: bool, allowance: float) -> dict:
    req = TINY_REQUEST if tiny else GPU_REQUEST
    deadline = time.monotonic() + allowance
    rounds: list[dict] = []
    outcome = {"status": "done", "reason": None}
    for i in range(req["max_rounds"]):
        started = time.monotonic()
        pair = {}
        order = ("toolkit", "bare") if i % 2 == 0 else ("bare", "toolkit")
        for side in order:
            left = deadline - time.monotonic()
            if side == "toolkit":
                outcome, found = _toolkit_round(out, req, i, left)
            else:
                outcome, found = _bare_round(out, req, tiny, i, left)
            if found is None:
                break
            pair[side] = found
        if len(pair) < 2:
            break
        rounds.append(pair)
        if deadline - time.monotonic() < 1.2 * (time.monotonic() - started):
            break  # another round would not fit in the allowance
    figures = _figures(req, rounds)
    if rounds and outcome["status"] != "done":
        outcome = {"status": "done", "reason": f"{len(rounds)} round(s) measured; then: {outcome['reason']}"}
    return {**outcome, "figures": figures, "files": ["raw/overhead"]}


def _figures(req: dict, rounds: list[dict]) -> dict:
    figures: dict = {"request": {k: v for k, v in req.items() if k != "max_rounds"}, "rounds": len(rounds)}
    if not rounds:
        return figures
    tk = statistics.median(r["toolkit"]["tokens_per_second"] for r in rounds)
    bare = statistics.median(r["bare"]["tokens_per_second"] for r in rounds)
    diffs = [_loss_difference(r["toolkit"]["losses"], r["bare"]["losses"]) for r in rounds]
    worst = None if None in diffs else max(diffs)
    mfu = [r["toolkit"]["mfu_ratio"] for r in rounds if r["toolkit"].get("mfu_ratio") is not None]
    figures.update(
        toolkit_tokens_per_second=tk,
        bare_tokens_per_second=bare,
        overhead=1 - tk / bare,
        paired_overheads=[
            1 - r["toolkit"]["tokens_per_second"] / r["bare"]["tokens_per_second"] for r in rounds
        ],
        toolkit_mfu_ratio=statistics.median(mfu) if mfu else None,
        loss_max_relative_difference=worst,
        tokens_per_step={
            "toolkit": rounds[0]["toolkit"]["tokens_per_step_mean"],
            "bare": rounds[0]["bare"]["tokens_per_step_mean"],
        },
        per_round=[{side: {k: v for k, v in r[side].items() if k != "losses"} for side in r} for r in rounds],
    )
    return figures


def _loss_difference(a: list, b: list) -> float | None:
    """Largest relative difference of the step losses; None when the two logged different steps."""
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b, strict=True))


def main_bare(request: Path, result: Path) -> int:
    req = json.loads(request.read_text(encoding="utf-8"))
    write_json(result, bare_child(req))
    return 0
