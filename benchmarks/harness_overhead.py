"""Overhead of the benchmark harness. Goal: under 2% of training tokens/s against a bare TRL script.

    .venv/bin/python benchmarks/harness_overhead.py --threads 1
        [--recipe sft-smollm2-cpu] [--scale small] [--set train.measured_steps=16 ...] [--rounds 5]
        [--variants cli,load,bare[,load-mmap]] [--no-micro] [--no-side-by-side]

1. Side by side, each run in a fresh process; the variants alternate round after round (the order
   rotated each round) so the machine's noise hits them alike; each figure is the median over rounds,
   and each round's ratio to the bare run is shown too (paired, so slow drift cancels):
   cli    `toolkit bench --recipe NAME --scale S --threads N --json -` with its stderr on a terminal
          (a pty), as a user runs it: the whole harness (the cpu profile's peak loads first, the live
          rich progress, the result saved about once a second while the steps run);
   load   the toolkit's training load alone: `train.run(ctx, rec)` on a RunContext, as the runner calls it;
   bare   a plain TRL script of the same load (`bare()` below): the same synthetic model
          (architectures.build_model) and tokenizer, the same synthetic data, the same TRL config values
          and PEFT LoRA config, written out as a user would; a minimal callback reads the clock and
          TRL's token count at each optimizer step's end.
   Diagnosis, on request: `load-mmap` is `load` under glibc's M_MMAP_THRESHOLD fixed at 64 KiB, which
   the CLI set for steadier peak-RSS figures until this script showed it cost 38-43% of tokens/s (every
   freed activation went back to the kernel and came back as fresh zeroed pages: 3x the page faults).
   All count the same tokens (TRL's `num_input_tokens_seen`, non-padding) over the same measured steps
   after the same warm-up steps. The losses of every step must agree across all runs, or the loads
   differ and the script stops. Harness overhead = 1 - tokens/s(cli) / tokens/s(bare); "by p50" is the
   same from the median step times (robust to a burst of noise inside one run).
2. Micro costs inside the timed steps: the step timer (device sync, clock, token delta, rich progress
   update) once per optimizer step, and the CLI's saving of the result (JSON of the real document,
   fsync, rename) at most once a second; the per-load peak-memory bookkeeping outside the steps.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit.bench.context import RunContext  # noqa: E402
from toolkit.bench.losses import resolve_loss  # noqa: E402
from toolkit.bench.memory import PeakMemory  # noqa: E402
from toolkit.bench.record import WorkloadRecord  # noqa: E402
from toolkit.bench.settings import load_settings  # noqa: E402
from toolkit.bench.shape import LORA_MODULES  # noqa: E402
from toolkit.bench.workloads import kto_lora, train  # noqa: E402

GOAL_OVERHEAD = 0.02
VARIANTS = ("cli", "load", "bare", "load-mmap")  # the last: a diagnosis


# --- the load, as the CLI resolves it ---------------------------------------------------------------


def resolve(recipe_name: str, scale_name: str, sets: list[str]):
    """(RunContext, recipe at the run's scale), exactly as `toolkit bench --recipe --scale --set` does."""
    from toolkit.bench import recipes
    from toolkit.bench.settings import override

    settings = load_settings()
    scale = override(settings.scales[scale_name], [s for s in sets if not s.startswith("recipe.")])
    recipe = recipes.override(
        recipes.load(recipe_name), [s.partition(".")[2] for s in sets if s.startswith("recipe.")]
    )
    ctx = RunContext(
        device="cpu",
        dtype="float32",
        scale=scale,
        settings=settings,
        gpu_class="cpu",
        spec=None,
        recipes={recipe.name: recipe},
    )
    return ctx, train.for_scale(ctx, recipe)


def bare_spec(ctx, recipe) -> dict:
    """The recipe's values as plain numbers and strings: what a user copies into a TRL script."""
    from toolkit.bench import architectures
    from toolkit.bench.synthetic import build_tokenizer

    if recipe.chat_format or recipe.eos_token or recipe.quantized or recipe.finetuning_type != "lora":
        raise SystemExit(f"recipe {recipe.name}: the bare script covers plain-text LoRA recipes only")
    vocab = min(recipe.model.vocab_size, 8192)
    tok = build_tokenizer(vocab, seed=ctx.seed)
    assert tok.pad_token != tok.eos_token  # else the toolkit adds a pad token, and so must the script
    stage_args: dict = {}
    if recipe.stage == "kto":
        stage_args = {"beta": recipe.pref_beta, "loss_type": resolve_loss(recipe.pref_loss)[0]}
    elif recipe.stage == "dpo":
        from toolkit.bench.losses import DPO_LOSSES

        stage_args = {
            "beta": recipe.pref_beta,
            "loss_type": [DPO_LOSSES[recipe.pref_loss]] + (["sft"] if recipe.pref_ftx else []),
            "loss_weights": [1.0, recipe.pref_ftx] if recipe.pref_ftx else None,
        }
    else:
        stage_args = {"packing": False}
    all_linear = set(recipe.lora_target) == set(LORA_MODULES)
    return {
        "stage": recipe.stage,
        "seed": ctx.seed,
        "vocab": vocab,
        "model_config": architectures.sized_config(
            recipe.model_config or {"model_type": "llama"}, recipe.model, tok, max(4096, recipe.max_length)
        ),
        "examples": recipe.batch_size
        * recipe.gradient_accumulation_steps
        * (recipe.warmup_steps + recipe.measured_steps),
        "words": list(recipe.words),
        "warmup_steps": recipe.warmup_steps,
        "trl": {
            "max_steps": recipe.warmup_steps + recipe.measured_steps,
            "per_device_train_batch_size": recipe.batch_size,
            "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
            "learning_rate": recipe.learning_rate,
            "lr_scheduler_type": recipe.lr_scheduler_type,
            "warmup_steps": recipe.warmup_ratio,
            "max_grad_norm": recipe.max_grad_norm,
            "optim": train._optim(recipe, on_gpu=False)[0],
            "max_length": recipe.max_length,
            "use_cpu": True,
            "bf16": False,
            "fp16": False,
            "activation_checkpointing": recipe.activation_checkpointing,
            "logging_steps": 1,
            "report_to": "none",
            "save_strategy": "no",
            "disable_tqdm": True,
            "include_num_input_tokens_seen": "non_padding",
            "seed": ctx.seed,
            "dataloader_num_workers": 0,
            "ddp_find_unused_parameters": False,
            **stage_args,
        },
        "lora": {
            "r": recipe.lora_rank,
            "lora_alpha": recipe.lora_alpha,
            "lora_dropout": recipe.lora_dropout,
            "target_modules": "all-linear" if all_linear else list(recipe.lora_target),
        },
    }


# --- the three variants, each run in a fresh process ------------------------------------------------


def bare(spec: dict, threads: int | None = None, device: str = "cpu", dtype=None) -> dict:
    """A bare TRL + PEFT script of the load: no toolkit code but the synthetic model, tokenizer and words.
    On a GPU each step mark waits for the device (the GPU acceptance run uses it there)."""

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback

    from toolkit.bench.architectures import build_model
    from toolkit.bench.synthetic import build_tokenizer, unpaired_preferences, words

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []

        def on_train_begin(self, args, state, control, **kw):
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

        def on_step_end(self, args, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seed, n, (prompt_words, completion_words) = spec["seed"], spec["examples"], spec["words"]
    tok = build_tokenizer(spec["vocab"], seed=seed)
    model = build_model(spec["model_config"], dtype or torch.float32, device, seed=seed)
    rng = random.Random(seed + 1)
    if spec["stage"] == "kto":
        data = unpaired_preferences(n, prompt_words, completion_words, seed)
        config, trainer_cls = trl.KTOConfig, trl.KTOTrainer
    elif spec["stage"] == "dpo":
        prompts = [words(rng, prompt_words) for _ in range(n)]
        chosen = [" " + words(rng, completion_words) for _ in range(n)]
        rejected = [" " + words(rng, completion_words) for _ in range(n)]
        data = {"prompt": prompts, "chosen": chosen, "rejected": rejected}
        config, trainer_cls = trl.DPOConfig, trl.DPOTrainer
    else:
        prompts = [words(rng, prompt_words) for _ in range(n)]
        data = {"prompt": prompts, "completion": [" " + words(rng, completion_words) for _ in range(n)]}
        config, trainer_cls = trl.SFTConfig, trl.SFTTrainer
    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_cls(
            model=model,
            args=config(output_dir=out, **spec["trl"]),
            train_dataset=Dataset.from_dict(data),
            processing_class=tok,
            peft_config=LoraConfig(task_type="CAUSAL_LM", **spec["lora"]),
        )
        trainer.remove_callback(PrinterCallback)
        clock = Clock()
        trainer.add_callback(clock)
        trainer.train()
    load_seconds = time.perf_counter() - t0
    marks, w = clock.marks, spec["warmup_steps"]
    (t_w, n_w), (t_end, n_end) = marks[w], marks[-1]
    steps = [b[0] - a[0] for a, b in itertools.pairwise(marks[w:])]
    return {
        "tokens_per_second": (n_end - n_w) / (t_end - t_w),
        "step_p50": statistics.median(steps),
        "step_time_seconds_p50": statistics.median(steps),
        "tokens_per_step": [b[1] - a[1] for a, b in itertools.pairwise(marks)],
        "tokens_per_step_mean": (n_end - n_w) / len(steps),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "load_seconds": load_seconds,
    }


def load(args) -> dict:
    """The toolkit's training load in a fresh process, as the runner calls it (no CLI around it)."""
    import torch

    from toolkit.commands.bench import _quiet_libraries

    _quiet_libraries()
    torch.set_num_threads(args.threads)
    if args.cli_malloc:  # what `toolkit bench` did before each CPU run until it was measured here
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: 64 KiB, fixed
    import peft  # noqa: F401  (imported before the load, as the CLI does)
    import trl  # noqa: F401

    ctx, recipe = resolve(args.recipe, args.scale, args.sets)
    rec = WorkloadRecord(f"train:{recipe.name}")
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    train.run(ctx, rec)
    return _from_record(rec.as_dict(), time.perf_counter() - t0)


def _from_record(rec: dict, load_seconds: float) -> dict:
    if rec["status"] not in ("pass", "warn"):
        raise SystemExit(f"{rec['workload']}: {rec['status']}: {rec.get('error')}")
    m = rec["metrics"]
    return {
        "tokens_per_second": m["tokens_per_second"],
        "step_p50": m["step_time_seconds_p50"],
        "tokens_per_step": None,  # the record keeps the mean only
        "tokens_per_step_mean": m["tokens_per_step_mean"],
        "losses": rec["warmup"].get("loss_per_step", []) + m["loss_per_step"],
        "load_seconds": load_seconds,
    }


def _run(cmd: list[str], env: dict, tty: bool) -> tuple[int, str, str]:
    """Run `cmd`; with `tty` its stderr is a terminal, so the CLI draws its live progress as for a user."""
    if not tty:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr
    import pty
    import threading

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=slave, text=True) as proc:
        os.close(slave)
        stdout, _ = proc.communicate()
    reader.join(timeout=5)
    os.close(master)
    return proc.returncode, stdout, b"".join(chunks).decode(errors="replace")


def run_variant(variant: str, args, spec_path: Path, results_dir: Path) -> dict:
    """One run of `variant` in a fresh process: its figures and the process's wall time."""
    bench_args = ["--recipe", args.recipe, "--scale", args.scale, "--threads", str(args.threads)]
    for s in args.sets:
        bench_args += ["--set", s]
    if variant == "cli":
        cmd = [sys.executable, "-m", "toolkit", "bench", *bench_args, "--json", "-"]
    else:
        cmd = [sys.executable, __file__, "--child", variant.partition("-")[0], "--spec", str(spec_path)]
        cmd += [*bench_args, *(["--cli-malloc"] if variant == "load-mmap" else [])]
    env = dict(os.environ, TOOLKIT_RESULTS_DIR=str(results_dir))
    t0 = time.perf_counter()
    rc, stdout, stderr = _run(cmd, env, tty=variant.startswith("cli"))
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"{variant} run failed (exit {rc}): {' '.join(cmd)}")
    if variant.startswith("cli"):
        doc = json.loads(stdout)
        rec = next(r for r in doc["results"] if r["workload"].startswith("train:"))
        result = _from_record(rec, rec["duration_seconds"])
        result["doc"] = doc
    else:
        result = json.loads(stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


# --- side by side -----------------------------------------------------------------------------------


def side_by_side(args) -> dict:
    ctx, recipe = resolve(args.recipe, args.scale, args.sets)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= set(VARIANTS) or "bare" not in variants or len(variants) < 2:
        raise SystemExit(
            f"--variants: bare and at least one of {', '.join(v for v in VARIANTS if v != 'bare')}"
        )
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="harness-overhead-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(bare_spec(ctx, recipe)), encoding="utf-8")
        print(
            f"side by side: train:{recipe.name} at scale {args.scale} ({recipe.model.num_hidden_layers} "
            f"layers, hidden {recipe.model.hidden_size}, seq {recipe.max_length}, batch {recipe.batch_size}, "
            f"{recipe.warmup_steps} warm-up + {recipe.measured_steps} measured steps), "
            f"{args.threads} thread(s), {args.rounds} rounds",
            flush=True,
        )
        for i in range(args.rounds):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for v in order:
                r = run_variant(v, args, spec_path, Path(tmp) / "results")
                runs[v].append(r)
                print(
                    f"  round {i + 1} {v:<14} {r['tokens_per_second']:9.1f} tok/s  "
                    f"step p50 {r['step_p50'] * 1e3:7.1f} ms  process {r['process_seconds']:5.1f} s",
                    flush=True,
                )
    _same_load(runs)
    med = {v: {k: statistics.median(r[k] for r in rs) for k in _FIGURES} for v, rs in runs.items()}
    base = med["bare"]
    print()
    print(f"medians of {args.rounds} rounds; overhead = 1 - tokens/s(variant) / tokens/s(bare)")
    print(
        f"{'variant':<15}{'tokens/s':>9}{'step p50':>12}{'load':>8}{'process':>9}"
        f"{'overhead':>10}{'by p50':>9}   paired per round: median [min, max]"
    )
    overheads = {}
    for v in variants:
        m = med[v]
        line = (
            f"{v:<15}{m['tokens_per_second']:9.1f}{m['step_p50'] * 1e3:9.1f} ms{m['load_seconds']:6.1f} s"
            f"{m['process_seconds']:7.1f} s"
        )
        if v != "bare":
            overheads[v] = 1 - m["tokens_per_second"] / base["tokens_per_second"]
            paired = [
                1 - a["tokens_per_second"] / b["tokens_per_second"]
                for a, b in zip(runs[v], runs["bare"], strict=True)
            ]
            line += (
                f"{overheads[v]:+10.2%}{1 - base['step_p50'] / m['step_p50']:+9.2%}   "
                f"{statistics.median(paired):+.2%} [{min(paired):+.1%}, {max(paired):+.1%}]"
            )
        print(line)
    headline = "cli" if "cli" in variants else variants[0] if variants[0] != "bare" else variants[1]
    overhead = overheads[headline]
    print(
        f"harness overhead ({headline} vs bare, medians of {args.rounds}): {overhead:.2%}   "
        f"goal < {GOAL_OVERHEAD:.0%}: {'met' if overhead < GOAL_OVERHEAD else 'NOT met'}"
    )
    doc = next((rs[-1]["doc"] for v, rs in runs.items() if v.startswith("cli")), None)
    return {"overhead": overhead, "doc": doc, "step_p50": med["bare"]["step_p50"]}


_FIGURES = ("tokens_per_second", "step_p50", "load_seconds", "process_seconds")


def _same_load(runs: dict[str, list[dict]]) -> None:
    """Every run of every variant trained the same steps on the same tokens with the same losses."""
    ref = runs["bare"][0]
    tokens, warmup = ref["tokens_per_step"], ref["warmup_steps"]
    measured_mean = statistics.fmean(tokens[warmup:])
    worst = 0.0
    for v, rs in runs.items():
        for r in rs:
            if len(r["losses"]) != len(ref["losses"]):
                raise SystemExit(f"{v}: {len(r['losses'])} losses logged, bare {len(ref['losses'])}")
            worst = max(
                worst,
                *(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(r["losses"], ref["losses"], strict=True)),
            )
            if r["tokens_per_step"] is not None and r["tokens_per_step"] != tokens:
                raise SystemExit(f"{v}: tokens per step {r['tokens_per_step']}, bare {tokens}")
            if r["tokens_per_step"] is None and abs(r["tokens_per_step_mean"] - measured_mean) > 1e-6:
                raise SystemExit(f"{v}: {r['tokens_per_step_mean']} tokens per step, bare {measured_mean}")
    if worst > 1e-4:
        raise SystemExit(
            f"the variants trained different loads: losses differ by up to {worst:.1e} (relative)"
        )
    print(
        f"same load in every run: {len(ref['losses'])} step losses agree (largest relative difference "
        f"{worst:.1e}); tokens per measured step {measured_mean:g}"
    )


# --- micro costs ------------------------------------------------------------------------------------


def micro(threads: int, doc: dict | None, step_time: float | None) -> None:
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from toolkit.bench import report
    from toolkit.commands.bench import _quiet_libraries

    _quiet_libraries()
    torch.set_num_threads(threads)
    settings = load_settings()
    ctx = RunContext(
        device="cpu",
        dtype="float32",
        scale=settings.scales["tiny"],
        settings=settings,
        gpu_class="cpu",
        spec=None,
    )
    ctx.peaks.flops = 1e11
    rec = WorkloadRecord("kto_lora")
    memory = PeakMemory("cpu")
    t0 = time.perf_counter()
    memory.reset()
    kto_lora.run(ctx, rec)
    memory.read()
    load_seconds = time.perf_counter() - t0
    step = step_time or rec.metrics["step_time_seconds_p50"]

    # the same rich progress update the CLI does, rendered into a buffer
    progress = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    task = progress.add_task("kto_lora", total=None)
    progress.start()
    ctx.progress = lambda done, total: progress.update(task, completed=done, total=total)
    timer = train.make_step_timer(ctx, WorkloadRecord("x"), warmup=0, total=10**9)
    timer.rec.metrics["loss_per_step"] = []
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0)
    timer.on_train_begin(None, state, None)
    calls = 20000
    t0 = time.perf_counter()
    for i in range(calls):
        state.global_step = i + 1
        state.num_input_tokens_seen += 100
        timer.on_step_end(None, state, None)
    per_call = (time.perf_counter() - t0) / calls
    progress.stop()

    # the CLI's live progress (its columns) redrawn on a terminal: rich does it 10 times a second on a
    # thread, holding the GIL while it renders
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    live = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=io.StringIO(), force_terminal=True, width=80),
        transient=True,
        auto_refresh=False,
    )
    live.update(live.add_task("train:sft-smollm2-cpu", total=18), completed=5)
    live.start()
    t0 = time.perf_counter()
    for _ in range(500):
        live.refresh()
    per_redraw = (time.perf_counter() - t0) / 500
    live.stop()

    t0 = time.perf_counter()
    for _ in range(200):
        memory.reset()
        memory.read()
    per_load = (time.perf_counter() - t0) / 200

    what = "side-by-side bare step p50" if step_time else "tiny KTO step p50"
    print()
    print(f"{what:<29}{step * 1e3:9.2f} ms")
    print(f"step timer per step          {per_call * 1e6:9.2f} µs   ratio {per_call / step:.2e}")
    print(
        f"live progress redraw         {per_redraw * 1e3:9.2f} ms   ratio {per_redraw * 10:.2e} "
        "(10 redraws a second, rich's default)"
    )
    if doc is not None:  # the CLI saves its result at most once a second while the steps run
        with tempfile.TemporaryDirectory(prefix="harness-overhead-save-") as tmp:
            path = Path(tmp) / "result.json"
            t0 = time.perf_counter()
            for _ in range(50):
                report.save(doc, path)
            per_save = (time.perf_counter() - t0) / 50
        every = max(1.0, step)
        print(
            f"result save (fsync) per save  {per_save * 1e3:8.2f} ms   ratio {per_save / every:.2e} "
            f"(one save per {every:.2f} s of steps)"
        )
    print(f"tiny KTO load duration       {load_seconds:9.2f} s")
    print(f"peak-memory bookkeeping/load {per_load * 1e6:9.2f} µs   ratio {per_load / load_seconds:.2e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="sft-smollm2-cpu")
    p.add_argument("--scale", default="small")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="cli,load,bare")
    p.add_argument("--no-micro", action="store_true")
    p.add_argument("--no-side-by-side", action="store_true")
    p.add_argument("--child", choices=("load", "bare"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--cli-malloc", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "bare":
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        print(json.dumps({**bare(spec, args.threads), "warmup_steps": spec["warmup_steps"]}))
        return 0
    if args.child == "load":
        print(json.dumps(load(args)))
        return 0
    found = {} if args.no_side_by_side else side_by_side(args)
    if not args.no_micro:
        micro(args.threads, found.get("doc"), found.get("step_p50"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
