"""`toolkit bench --recipe FILE.yaml --engine llamafactory`: the recipe run by LLaMA-Factory itself.

The same `train:NAME` load as TRL's path (`workloads/train.py`), at the same scale, on the same model
and the same synthetic data, but trained by LLaMA-Factory's own entry point (`run_exp`, what
`llamafactory-cli train` calls) in its own virtual environment (`scripts/install_llamafactory.sh`:
LLaMA-Factory pins transformers, TRL and PEFT ranges of its own). So a user compares "as LLaMA-Factory
runs it" with "as TRL runs it": the record has the same metrics and the same layout.

How: this process builds the model (the recipe's architecture at the scale's shape, random weights, or
`--model`'s folder as it is) and the tokenizer, writes both to a temporary folder with the data as a
local LLaMA-Factory dataset (`dataset_info.json`), and starts `lf_runner/run.py` with that
environment's Python. The runner calls LLaMA-Factory with the file's own keys (the benchmark replaces
only model, data, outputs, step count and sizes) and toolkit's step timer as a callback, which appends
step times, tokens, losses and the peak memory of LLaMA-Factory's process to a JSON-lines file. What it
reached is kept when LLaMA-Factory fails; the failure is said with LLaMA-Factory's last error lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from toolkit.bench import flops
from toolkit.bench.timing import percentile, spread
from toolkit.errors import MissingDependency

ENGINES = ("trl", "llamafactory")
VENV_VARIABLE = "TOOLKIT_LF_VENV"
VENV_NAME = ".venv-llamafactory"
INSTALL_HINT = (
    f"run scripts/install_llamafactory.sh (it creates {VENV_NAME} beside toolkit's .venv; "
    f"{VENV_VARIABLE}=DIR names another place), or scripts/install.sh --with-llamafactory"
)
RUNNER = Path(__file__).with_name("lf_runner") / "run.py"
DATASET = "toolkit_bench"
# the file's keys about data, evaluation, outputs and trackers: a benchmark replaces them (see _args)
REPLACED = (
    "dataset", "dataset_dir", "eval_dataset", "val_size", "eval_strategy", "eval_steps", "do_eval",
    "do_predict", "per_device_eval_batch_size", "num_train_epochs", "max_steps", "max_samples",
    "output_dir", "overwrite_output_dir", "save_steps", "save_strategy", "save_only_model",
    "save_total_limit", "logging_steps", "plot_loss", "report_to", "resume_from_checkpoint",
    "push_to_hub", "preprocessing_num_workers", "dataloader_num_workers", "overwrite_cache",
    "streaming", "tokenized_path", "predict_with_generate", "run_name", "logging_dir",
)  # fmt: skip
TAIL_LINES = 20


def venv_dir() -> Path:
    """LLaMA-Factory's environment: $TOOLKIT_LF_VENV, else .venv-llamafactory in the current folder or
    beside the toolkit checkout."""
    if os.environ.get(VENV_VARIABLE):
        return Path(os.environ[VENV_VARIABLE]).expanduser()
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / VENV_NAME).is_dir():
            return base / VENV_NAME
    return Path(__file__).resolve().parents[2] / VENV_NAME


def check_available() -> Path:
    """The environment's Python, or exit 2 (missing-dependency) with the install hint, before any load."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    installed = any(venv.glob("lib/python3*/site-packages/llamafactory/__init__.py"))
    if not (python.exists() and installed):
        what = "has no LLaMA-Factory" if python.exists() else "does not exist"
        raise MissingDependency(f"--engine llamafactory: {venv} {what}", hint=INSTALL_HINT)
    return python


def run(ctx, rec) -> None:
    """The `train:NAME` load of an `--engine llamafactory` run (dispatched by `runner.run_loads`)."""
    from toolkit.bench.workloads.train import for_scale

    recipe = ctx.recipes[rec.workload.partition(":")[2]]
    run_recipe(ctx, rec, for_scale(ctx, recipe))


def file_keys(recipe) -> dict:
    """The recipe's LLaMA-Factory keys as its file has them (the `toolkit:` block left out)."""
    import yaml

    from toolkit.inputs import SETTINGS_CAP, read_text
    from toolkit.resources import data_text

    path = Path(recipe.origin).expanduser()
    if path.is_file():
        text = read_text(path, "the recipe", SETTINGS_CAP, OSError)
    else:  # a shipped recipe: its origin is its file's name
        text = data_text(f"recipes/{recipe.origin}")
    data = dict(yaml.safe_load(text) or {})
    data.pop("toolkit", None)
    return data


def _args(recipe, raw: dict, folder: Path, model: Path, on_gpu: bool, seed: int) -> tuple[dict, list[str]]:
    """LLaMA-Factory's arguments: the file's keys, with model, data, outputs and the run's sizes replaced
    (the sizes toolkit's TRL path runs at this scale, `--set recipe.*` applied); and the notes saying so."""
    args = {k: v for k, v in raw.items() if k not in REPLACED}
    replaced = sorted(k for k in raw if k in REPLACED)
    sizes = {
        "cutoff_len": recipe.max_length,
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "learning_rate": recipe.learning_rate,
    }
    if recipe.finetuning_type == "lora":
        sizes.update(
            lora_rank=recipe.lora_rank, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout
        )
    if recipe.stage != "sft":
        sizes["pref_beta"] = recipe.pref_beta
    changed = sorted(k for k, v in sizes.items() if k in raw and raw[k] != v)
    args.update(sizes)
    args.pop("quantization_bit", None)
    if recipe.quantization_bit is not None:
        args["quantization_bit"] = recipe.quantization_bit
    notes = []
    if not on_gpu:
        for key in ("bf16", "fp16", "pure_bf16"):
            if args.pop(key, False):
                notes.append(f"{key}: off on the CPU (toolkit's TRL path trains in fp32 there too)")
    args.update(
        model_name_or_path=str(model),
        stage=recipe.stage,
        do_train=True,
        dataset=DATASET,
        dataset_dir=str(folder / "data"),
        output_dir=str(folder / "output"),
        overwrite_output_dir=True,
        overwrite_cache=True,
        max_steps=recipe.warmup_steps + recipe.measured_steps,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        plot_loss=False,
        disable_tqdm=True,
        seed=seed,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )
    if replaced:
        notes.append(
            f"replaced for the benchmark: {', '.join(replaced)} (synthetic data, fixed steps, no outputs)"
        )
    if changed:
        notes.append(f"sized for this run: {', '.join(f'{k}={args[k]}' for k in changed)}")
    return args, notes


def _dataset(recipe, n: int, seed: int, folder: Path) -> None:
    """The TRL path's synthetic examples (same seed, same text) as a local LLaMA-Factory dataset in the
    alpaca layout: instruction/output (SFT), with a kto_tag (KTO), chosen/rejected with ranking (DPO)."""
    import random

    from toolkit.bench.synthetic import unpaired_preferences, words

    prompt_words, completion_words = recipe.words
    columns: dict = {"prompt": "instruction", "response": "output"}
    info: dict = {"file_name": "train.json", "formatting": "alpaca"}
    if recipe.stage == "kto":
        data = unpaired_preferences(n, prompt_words, completion_words, seed)
        rows = [
            {"instruction": p, "output": c, "kto_tag": tag}
            for p, c, tag in zip(data["prompt"], data["completion"], data["label"], strict=True)
        ]
        columns["kto_tag"] = "kto_tag"
    else:
        rng = random.Random(seed + 1)
        prompts = [words(rng, prompt_words) for _ in range(n)]
        if recipe.stage == "dpo":
            chosen = [" " + words(rng, completion_words) for _ in range(n)]
            rejected = [" " + words(rng, completion_words) for _ in range(n)]
            rows = [
                {"instruction": p, "chosen": c, "rejected": r}
                for p, c, r in zip(prompts, chosen, rejected, strict=True)
            ]
            columns = {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}
            info["ranking"] = True
        else:
            rows = [{"instruction": p, "output": " " + words(rng, completion_words)} for p in prompts]
    info["columns"] = columns
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "data" / "dataset_info.json").write_text(
        json.dumps({DATASET: info}, indent=1), encoding="utf-8"
    )


def _model_folder(ctx, recipe, folder: Path) -> tuple[Path, str]:
    """(folder LLaMA-Factory loads, what it holds): --model's folder as it is, or the recipe's
    architecture at this scale's shape with random weights, saved with toolkit's synthetic tokenizer."""
    from toolkit.bench import architectures
    from toolkit.bench.synthetic import build_tokenizer

    if ctx.model_path:
        found, at = architectures.resolve_model(ctx.model_path)
        return found, f"real: {at}"
    tok = build_tokenizer(min(recipe.model.vocab_size, 8192), seed=ctx.seed)
    if recipe.eos_token and tok.eos_token != recipe.eos_token:
        tok.add_special_tokens({"eos_token": recipe.eos_token})
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.add_special_tokens({"pad_token": recipe.pad_token})
    cfg = architectures.sized_config(
        recipe.model_config or {"model_type": "llama"}, recipe.model, tok, max(4096, recipe.max_length)
    )
    dtype = "float32" if ctx.device == "cpu" else "bfloat16" if recipe.precision == "bf16" else "float16"
    import torch

    # built where the run trains: a GPU fills 9B random weights in a second where the CPU takes minutes;
    # its memory is handed back before LLaMA-Factory's process starts (only this process's context stays)
    model = architectures.build_model(cfg, getattr(torch, dtype), ctx.device, seed=ctx.seed)
    target = folder / "model"
    model.save_pretrained(target)
    tok.save_pretrained(target)
    del model
    if ctx.device != "cpu":
        import gc

        gc.collect()
        torch.cuda.empty_cache()
    return target, (
        f"synthetic (random) weights of the exact architecture {recipe.architecture} "
        f"({cfg.get('model_type', 'llama')}), saved for LLaMA-Factory to load"
    )


def _environment(ctx) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1",
        WANDB_DISABLED="true", TOKENIZERS_PARALLELISM="false",
    )  # fmt: skip
    env.pop("PYTHONPATH", None)  # toolkit's environment is not LLaMA-Factory's
    if ctx.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:  # one process on one GPU, as the TRL path (the Trainer would use DataParallel over several)
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    return env


def _read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete lines appended since `offset`, and the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


def _train(ctx, python: Path, folder: Path, total: int) -> tuple[list[dict], int, Path]:
    """Run LLaMA-Factory to the end, following its steps; (events, exit code, log file). Ctrl-C stops
    it and is raised again once what it finished is read."""
    events_path, log_path = folder / "events.jsonl", folder / "llamafactory.log"
    events, offset = [], 0
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [str(python), str(RUNNER), str(folder / "spec.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=_environment(ctx),
        )  # fmt: skip
        try:
            while child.poll() is None:
                time.sleep(0.25)
                new, offset = _read_events(events_path, offset)
                events += new
                steps = [e["step"] for e in new if e["event"] == "step"]
                if steps:
                    ctx.progress(steps[-1], total)
        except BaseException:  # Ctrl-C (or SIGTERM through the runner's guard): stop LLaMA-Factory too
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
        finally:
            events += _read_events(events_path, offset)[0]
    return events, child.returncode, log_path


def _tail(log_path: Path) -> str:
    """LLaMA-Factory's last non-empty output lines."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join([line for line in lines if line.strip()][-TAIL_LINES:])


def _config(ctx, recipe, weights: str, args: dict) -> dict:
    return {
        "engine": "llamafactory",
        "recipe": recipe.name,
        "origin": recipe.origin,
        "stage": recipe.stage,
        "weights": weights,
        "model": {k: v for k, v in vars(recipe.model).items() if v is not None},
        "parameters": flops.total_params(recipe.model),
        "finetuning_type": recipe.finetuning_type,
        "max_length": recipe.max_length,
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "warmup_steps": recipe.warmup_steps,
        "measured_steps": recipe.measured_steps,
        "device": ctx.device,
        "llamafactory_args": {k: v for k, v in args.items() if not str(v).startswith(("/", "."))},
        "tokens_counted": "non-padding tokens of the training batches (the Trainer's num_input_tokens_seen, "
        "counted in LLaMA-Factory's process)"
        + ("; chosen and rejected both" if recipe.stage == "dpo" else "")
        + ("; the KL batch is in the FLOP count, not in the tokens" if recipe.stage == "kto" else ""),
        "tokens_scope": "all_ranks",
    }


def run_recipe(ctx, rec, recipe) -> None:
    """Train `recipe` with LLaMA-Factory for its warm-up and measured steps and fill `rec` as the TRL
    path fills it (config, flops, metrics, checks)."""
    python = check_available()
    total = recipe.warmup_steps + recipe.measured_steps
    with tempfile.TemporaryDirectory(prefix="toolkit-lf-") as tmp:
        folder = Path(tmp)
        model, weights = _model_folder(ctx, recipe, folder)
        if ctx.model_path:
            from toolkit.bench import architectures

            shape = architectures.shape_from_config(architectures.read_config(model))
            recipe = _with_shape(recipe, shape)
        args, notes = _args(recipe, file_keys(recipe), folder, model, ctx.device != "cpu", ctx.seed)
        rec.config = _config(ctx, recipe, weights, args)
        rec.notes.extend(recipe.notes)
        rec.notes.extend(notes)
        _estimate(rec, recipe, ctx.device)
        _dataset(recipe, recipe.batch_size * recipe.gradient_accumulation_steps * total, ctx.seed, folder)
        spec = {"args": args, "events": str(folder / "events.jsonl")}
        (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        rec.metrics.update(steps_completed=0, loss_per_step=[])
        events = []
        try:
            events, code, log_path = _train(ctx, python, folder, total)
        finally:
            _fill(ctx, rec, recipe, events)
        if code != 0:
            _failed(rec, code, _tail(log_path), events)


def _with_shape(recipe, shape):
    from dataclasses import replace

    return replace(recipe, model=shape, architecture=None)


def _estimate(rec, recipe, device: str) -> None:
    """The plan of the trainer that runs: LLaMA-Factory's layout, not the TRL path's."""
    from toolkit.bench.estimate import estimate_training

    est = estimate_training(recipe, device, trainer="llamafactory")
    rec.metrics["memory_estimate_bytes"] = int(est.total)
    rec.config["memory_estimate"] = est.as_dict()


def _failed(rec, code: int, tail: str, events: list[dict]) -> None:
    """LLaMA-Factory ended with an error: its last error line in the message, its last lines kept."""
    from toolkit.bench.runner import OOM_MARKERS

    error = next((e for e in reversed(events) if e["event"] == "error"), None)
    last = (
        f"{error['type']}: {error['message'].strip().splitlines()[0]}" if error and error["message"] else None
    )
    lines = tail.splitlines()
    last = last or next(
        (ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else ""
    )
    oom = any(m in tail.lower() for m in OOM_MARKERS)
    reached = rec.metrics.get("steps_completed") or 0
    what = "ran out of memory" if oom else f"failed (exit {code})"
    rec.fail(
        "fail" if oom else "error",
        "out_of_memory" if oom else "crashed",
        f"LLaMA-Factory {what} (reached {reached} step(s)): {last}",
        f"LLaMA-Factory's last lines:\n{tail}",
    )


def _fill(ctx, rec, recipe, events: list[dict]) -> None:
    """The record from LLaMA-Factory's events: what it reached, even when it failed."""
    begin = next((e for e in events if e["event"] == "train_begin"), {})
    start = next((e for e in events if e["event"] == "start"), {})
    end = next((e for e in events if e["event"] == "end"), None)
    steps = [e for e in events if e["event"] == "step"]
    if start.get("versions"):
        rec.config["llamafactory_versions"] = start["versions"]
    if begin.get("trainable_params") is not None:
        rec.metrics["trainable_params"] = begin["trainable_params"]
        rec.config["dtype"] = begin.get("dtype")
    for e in steps:
        if e["step"] <= recipe.warmup_steps:
            rec.warmup.setdefault("step_time_seconds", []).append(e["seconds"])
    for e in (e for e in events if e["event"] == "log"):
        into = rec.warmup.setdefault("loss_per_step", []) if e["step"] <= recipe.warmup_steps else None
        (into if into is not None else rec.metrics["loss_per_step"]).append(round(e["loss"], 6))
    if steps:
        rec.metrics["steps_completed"] = steps[-1]["step"]
    if end:
        rec.metrics["peak_memory_bytes"] = end["peak_memory_bytes"]
        if end.get("peak_memory_reserved_bytes") is not None:
            rec.metrics["peak_memory_reserved_bytes"] = end["peak_memory_reserved_bytes"]
        elif start.get("baseline_memory_bytes") is not None:  # on the CPU: RSS, from LLaMA-Factory's start
            rec.metrics["baseline_memory_bytes"] = start["baseline_memory_bytes"]
        how = (
            "torch.cuda.max_memory_allocated"
            if end.get("scope") == "cuda"
            else "peak RSS since it started; the baseline is its RSS after importing torch and LLaMA-Factory"
        )
        rec.notes.append(f"peak_memory_bytes: measured in LLaMA-Factory's process ({how})")
    measured = [(e["seconds"], e["tokens"]) for e in steps if e["step"] > recipe.warmup_steps]
    if measured:
        _throughput(ctx, rec, recipe, measured, begin)


def _throughput(ctx, rec, recipe, measured: list[tuple[float, int]], begin: dict) -> None:
    """tokens/s, step times, FLOPs and MFU from the measured steps, as the TRL path computes them."""
    times = [t for t, _ in measured]
    tokens = sum(n for _, n in measured)
    rec.metrics.update(
        step_time_seconds_p50=percentile(times, 0.5),
        step_time_seconds_p90=percentile(times, 0.9),
    )
    if len(times) > 1:
        rec.spread["step_time_seconds"] = spread(times)
    if not tokens:
        rec.notes.append("LLaMA-Factory's Trainer counted no tokens (num_input_tokens_seen): no tokens/s")
        return
    sequences = recipe.batch_size * recipe.gradient_accumulation_steps * (2 if recipe.stage == "dpo" else 1)
    context = begin.get("mean_tokens_per_sequence") or tokens / len(measured) / sequences
    n_trainable = begin.get("trainable_params") or 0
    fpt, formula = _flops(recipe, n_trainable, context, begin.get("kl_token_ratio", 0.0))
    rec.flops = {
        "flops_per_token": fpt,
        "formula": formula,
        "matmul_params": flops.matmul_params(recipe.model),
        "trainable_params": n_trainable,
        "mean_tokens_per_sequence": context,
        **({"kl_token_ratio": begin.get("kl_token_ratio", 0.0)} if recipe.stage == "kto" else {}),
    }
    tps = tokens / sum(times)
    rec.metrics.update(
        tokens_per_second=tps, tokens_per_step_mean=tokens / len(measured), flops_per_second=tps * fpt
    )
    if ctx.peaks.flops:
        rec.metrics["mfu_ratio"] = tps * fpt / ctx.peaks.flops
    if len(measured) > 1:
        rec.spread["tokens_per_second"] = spread([n / t for t, n in measured if t > 0])
    floor, f = ctx.floor("train_quantized" if recipe.quantized else "train")
    minimum = floor * ctx.peaks.flops / fpt if floor and ctx.peaks.flops else None
    basis = f"MFU floor {floor} x peak {ctx.peaks.flops_basis} / {fpt:.3g} FLOP per token"
    ctx.check(rec, "tokens_per_second", minimum, basis, f)


def _flops(recipe, n_trainable: int, context: float, kl_ratio: float) -> tuple[float, str]:
    """FLOPs per counted token by stage and fine-tuning type (the formulas of the TRL path)."""
    shape = recipe.model
    if recipe.stage == "kto":
        return flops.kto_flops_per_token(shape, n_trainable, context, kl_ratio), flops.KTO_FORMULA
    if recipe.finetuning_type == "full":
        return flops.full_train_flops_per_token(shape, context), "full fine-tuning: 6N + 12*L*d_attn*T"
    train = flops.lora_train_flops_per_token(shape, n_trainable, context)
    if recipe.stage == "dpo":
        return train + flops.forward_flops_per_token(shape, context), flops.DPO_FORMULA
    return train, flops.LORA_FORMULA
