"""Training loads: a recipe (`--recipe NAME|FILE.yaml`) through TRL's SFT, KTO or DPO trainer with PEFT.

    toolkit bench --recipe kto-gemma2-9b --gpu a40      # the users' A40 recipe at full size
    toolkit bench --recipe lora-llama2-7b --scale tiny  # its architecture, shrunk, on any machine
    toolkit bench --recipe my-llamafactory.yaml --arch gemma2-9b

The model is the recipe's architecture with random weights (FLOPs and memory equal the real model's),
or real weights with `--model`. Data is synthetic in the stage's format: prompt/completion (SFT,
chat messages for chat recipes), unpaired desirable/undesirable completions (KTO), prompt with chosen
and rejected completions (DPO). 4-bit and 8-bit recipes load their base quantized by bitsandbytes
(toolkit.bench.workloads.quantized), on CUDA or through its CPU backend; without bitsandbytes installed
they are skipped with that reason, never passed.

Timed: optimizer steps end to end after the warm-up steps. Counted tokens: the non-padding tokens of
the training batches (TRL's `num_input_tokens_seen`), for DPO chosen and rejected both. MFU: model
FLOPs per counted token (formula in the record; recomputation under activation checkpointing is not
counted, as MFU and not HFU) x tokens/s over the profile's dense peak.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from dataclasses import replace

from toolkit.bench import flops
from toolkit.bench.shape import LORA_MODULES
from toolkit.bench.timing import percentile, spread
from toolkit.bench.workloads import quantized
from toolkit.bench.workloads.step_timer import make_step_timer

# a Llama-3-style chat layout for chat recipes: each turn closes with the recipe's EOS token
CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def run(ctx, rec) -> None:
    recipe = ctx.recipes[rec.workload.partition(":")[2]]
    run_recipe(ctx, rec, for_scale(ctx, recipe))


def for_scale(ctx, recipe):
    """The recipe at the run's scale (the recipe's own sizes at scale full); real weights keep their shape."""
    from toolkit.bench.recipes import sized

    t = ctx.scale.train
    shape = None if ctx.model_path else t.model
    recipe = sized(
        recipe,
        shape,
        t.max_length or recipe.max_length,
        t.max_batch_size or recipe.batch_size,
        (t.warmup_steps, t.measured_steps),
    )
    if ctx.model_path and t.model is not None:
        recipe = replace(
            recipe,
            max_length=min(recipe.max_length, t.max_length or recipe.max_length),
            batch_size=min(recipe.batch_size, t.max_batch_size or recipe.batch_size),
            gradient_accumulation_steps=1,
        )
    return recipe


def _dtype_name(ctx, recipe) -> str:
    if ctx.device == "cpu":
        return "float32"
    if recipe.precision == "fp16" or ctx.dtype == "float16":
        return "float16"
    return "bfloat16" if recipe.precision == "bf16" else "float32"


def _tokenizer(recipe, vocab_size: int, seed: int, folder=None):
    from toolkit.bench.synthetic import build_tokenizer

    notes = []
    if folder is not None and any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    else:
        tok = build_tokenizer(min(vocab_size, 8192), seed=seed)
    if recipe.eos_token and tok.eos_token != recipe.eos_token:
        tok.add_special_tokens({"eos_token": recipe.eos_token})
    if recipe.chat_format:
        tok.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
        tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.add_special_tokens({"pad_token": recipe.pad_token})
        notes.append(f"pad token set to {recipe.pad_token!r}: padding with EOS teaches a model never to stop")
    return tok, notes


def _data(recipe, n: int, seed: int) -> dict:
    from toolkit.bench.synthetic import unpaired_preferences, words

    prompt_words, completion_words = recipe.words
    if recipe.stage == "kto":
        return unpaired_preferences(n, prompt_words, completion_words, seed)
    rng = random.Random(seed + 1)
    prompts = [words(rng, prompt_words) for _ in range(n)]
    if recipe.stage == "dpo":
        return {
            "prompt": prompts,
            "chosen": [" " + words(rng, completion_words) for _ in range(n)],
            "rejected": [" " + words(rng, completion_words) for _ in range(n)],
        }
    answers = [" " + words(rng, completion_words) for _ in range(n)]
    if recipe.chat_format:  # the users' chat JSONL: {"chats": [{"role", "content"}, ...]}
        chats = [
            [{"role": "user", "content": p}, {"role": "assistant", "content": a.strip()}]
            for p, a in zip(prompts, answers, strict=True)
        ]
        return {"prompt": [c[:1] for c in chats], "completion": [c[1:] for c in chats]}
    return {"prompt": prompts, "completion": answers}


def _optim(recipe, on_gpu: bool) -> tuple[str, str | None]:
    """The recipe's optimizer; bitsandbytes' 8-bit ones run on its CPU backend too."""
    needs_bnb = "8bit" in recipe.optim or "bnb" in recipe.optim
    if needs_bnb and quantized.unavailable():
        return "adamw_torch", f"optim {recipe.optim} needs bitsandbytes (not installed): ran adamw_torch"
    if needs_bnb and "paged" in recipe.optim and not on_gpu:
        return recipe.optim, f"optim {recipe.optim} on the CPU: 8-bit states in RAM (nothing to page)"
    return recipe.optim, None


def _model(ctx, recipe, tok, dtype, folder):
    """(model, notes, quantized): synthetic weights of the architecture, or the weights in `folder`;
    `quantized` describes a 4-/8-bit base (None for a 16/32-bit one)."""
    from toolkit.bench import architectures

    notes, cfg, described = [], None, None
    if folder is None:
        cfg = architectures.sized_config(
            recipe.model_config or {"model_type": "llama"}, recipe.model, tok, max(4096, recipe.max_length)
        )
        if not recipe.quantized:
            return architectures.build_model(cfg, dtype, ctx.device, seed=ctx.seed), notes, None
    if recipe.quantized:
        model, described, notes = quantized.build(ctx, recipe, dtype, folder, cfg)
    else:
        from transformers import AutoModelForCausalLM

        kind = architectures.read_config(folder).get("model_type")
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, local_files_only=True, **architectures.attention_kwargs(kind)
        )
        model = model.to(ctx.device)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
        notes.append(f"embeddings resized to {len(tok)} for the added special tokens")
    model.config.pad_token_id = tok.pad_token_id
    if described is not None:
        model = quantized.prepare(model, recipe)
    return model, notes, described


def _trainer(ctx, recipe, model, tok, data, out, optim):
    from datasets import Dataset
    from peft import LoraConfig

    on_gpu = ctx.device != "cpu"
    dtype = _dtype_name(ctx, recipe)
    common = dict(
        output_dir=out,
        max_steps=recipe.warmup_steps + recipe.measured_steps,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio,  # a float in [0, 1) is a ratio of the steps (transformers 5)
        max_grad_norm=recipe.max_grad_norm,
        optim=optim,
        max_length=recipe.max_length,
        bf16=on_gpu and dtype == "bfloat16",
        fp16=on_gpu and dtype == "float16",
        use_cpu=not on_gpu,
        **{_checkpointing_key(): recipe.activation_checkpointing},
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        seed=ctx.seed,
        dataloader_num_workers=0,
        # under --gpus N every parameter gets a gradient: no extra autograd pass looking for unused ones
        ddp_find_unused_parameters=False,
    )
    lora = None
    if recipe.finetuning_type == "lora":
        targets = "all-linear" if set(recipe.lora_target) == set(LORA_MODULES) else list(recipe.lora_target)
        lora = LoraConfig(
            r=recipe.lora_rank,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
    dataset = Dataset.from_dict(data)
    if recipe.stage == "kto":
        from trl import KTOConfig, KTOTrainer

        from toolkit.bench.losses import resolve_loss

        loss_type, _ = resolve_loss(ctx.kto_loss or recipe.pref_loss)
        args = KTOConfig(beta=recipe.pref_beta, loss_type=loss_type, **common)
        cls = KTOTrainer
    elif recipe.stage == "dpo":
        from trl import DPOConfig, DPOTrainer

        from toolkit.bench.losses import DPO_LOSSES

        losses = [DPO_LOSSES[recipe.pref_loss]] + (["sft"] if recipe.pref_ftx else [])
        weights = [1.0, recipe.pref_ftx] if recipe.pref_ftx else None
        args = DPOConfig(beta=recipe.pref_beta, loss_type=losses, loss_weights=weights, **common)
        cls = DPOTrainer
    else:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(packing=False, **common)
        cls = SFTTrainer
    return cls(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora)


def _loss_type(ctx, recipe) -> str:
    """The TRL loss the stage runs (LLaMA-Factory's pref_loss mapped)."""
    if recipe.stage == "kto":
        from toolkit.bench.losses import resolve_loss

        return resolve_loss(ctx.kto_loss or recipe.pref_loss)[0]
    if recipe.stage == "dpo":
        from toolkit.bench.losses import DPO_LOSSES

        return DPO_LOSSES[recipe.pref_loss] + (f" + sft x {recipe.pref_ftx}" if recipe.pref_ftx else "")
    return "nll"


def _flops(recipe, shape, n_trainable: int, context: float, kl_ratio: float) -> tuple[float, str]:
    attn = "12*L*d_attn*T"
    if recipe.stage == "kto":
        return flops.kto_flops_per_token(shape, n_trainable, context, kl_ratio), flops.KTO_FORMULA
    if recipe.finetuning_type == "full":
        return flops.full_train_flops_per_token(shape, context), f"full fine-tuning: 6N + {attn}"
    train = flops.lora_train_flops_per_token(shape, n_trainable, context)
    if recipe.stage == "dpo":
        return train + flops.forward_flops_per_token(shape, context), flops.DPO_FORMULA
    return train, flops.LORA_FORMULA


def _synthetic_note(recipe) -> str:
    kind = recipe.model_config.get("model_type", "llama")
    if getattr(recipe, "arch_overridden", False):
        return (
            f"synthetic (random) weights of architecture {recipe.architecture} ({kind}), standing in for "
            f"the file's model {recipe.model_name} (--arch)"
        )
    return f"synthetic (random) weights of the exact architecture {recipe.architecture} ({kind})"


def _model_source(ctx, recipe):
    """(recipe, folder, where it was found): --model's folder with its own shape, or no folder."""
    if not ctx.model_path:
        return recipe, None, None
    from toolkit.bench import architectures

    folder, found_at = architectures.resolve_model(ctx.model_path)
    shape = architectures.shape_from_config(architectures.read_config(folder))
    return replace(recipe, model=shape, architecture=None), folder, found_at


def run_recipe(ctx, rec, recipe, model_note: str | None = None) -> None:
    """Train `recipe` for its warm-up and measured steps and fill `rec` (config, flops, metrics, checks)."""
    import torch
    from transformers import PrinterCallback

    recipe, folder, found_at = _model_source(ctx, recipe)
    on_gpu = ctx.device != "cpu"
    optim, optim_note = _optim(recipe, on_gpu)
    dtype = _dtype_name(ctx, recipe)
    rec.config = {
        "recipe": recipe.name,
        "origin": recipe.origin,
        "stage": recipe.stage,
        "weights": f"real: {found_at}" if folder else model_note or _synthetic_note(recipe),
        "model": {k: v for k, v in vars(recipe.model).items() if v is not None},
        "parameters": flops.total_params(recipe.model),
        "finetuning_type": recipe.finetuning_type,
        "lora_rank": recipe.lora_rank,
        "lora_alpha": recipe.lora_alpha,
        "lora_dropout": recipe.lora_dropout,
        "lora_target": list(recipe.lora_target),
        "quantization": f"{recipe.quantization_bit}-bit {recipe.quantization_type}"
        if recipe.quantized
        else None,
        "pref_loss": (ctx.kto_loss or recipe.pref_loss) if recipe.stage != "sft" else None,
        "loss_type": _loss_type(ctx, recipe),
        "pref_beta": recipe.pref_beta if recipe.stage != "sft" else None,
        "max_length": recipe.max_length,
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.lr_scheduler_type,
        "optim": optim,
        "dtype": dtype,
        "activation_checkpointing": recipe.activation_checkpointing,
        "warmup_steps": recipe.warmup_steps,
        "measured_steps": recipe.measured_steps,
        "device": ctx.device,
        "not_honoured": [{"key": k, "why": why} for k, why in recipe.unhonoured],
        "tokens_counted": "non-padding tokens of the training batches (TRL num_input_tokens_seen)"
        + ("; chosen and rejected both" if recipe.stage == "dpo" else "")
        + ("; the KL batch is in the FLOP count, not in the tokens" if recipe.stage == "kto" else ""),
        # the Trainer sums its token count over DDP ranks (--gpus N): aggregation must not add them again
        "tokens_scope": "all_ranks",
    }
    rec.notes.extend(recipe.notes)
    rec.notes.extend(f"not honoured: {k} ({why})" for k, why in recipe.unhonoured)
    if optim_note:
        rec.notes.append(optim_note)
    if recipe.stage == "kto" and (ctx.kto_loss or recipe.pref_loss) == "kto_pair":
        from toolkit.bench.losses import resolve_loss

        rec.notes.append(resolve_loss("kto_pair")[1])
    _estimate(rec, recipe, ctx.device)
    if recipe.quantized and (why := quantized.unavailable()):
        rec.fail("skipped", "needs_cuda", why)
        return

    tok, tok_notes = _tokenizer(recipe, recipe.model.vocab_size, ctx.seed, folder)
    rec.notes.extend(tok_notes)
    try:
        model, model_notes, described = _model(ctx, recipe, tok, getattr(torch, dtype), folder)
    except quantized.CannotQuantize as exc:
        rec.fail("skipped", "needs_cuda", str(exc))
        return
    rec.notes.extend(model_notes)
    if described is not None:
        rec.config["quantized_base"] = described
    total = recipe.warmup_steps + recipe.measured_steps
    n_examples = recipe.batch_size * recipe.gradient_accumulation_steps * total
    data = _data(recipe, n_examples, ctx.seed)

    with tempfile.TemporaryDirectory(prefix="toolkit-train-") as out:
        trainer = _trainer(ctx, recipe, model, tok, data, out, optim)
        trainer.remove_callback(PrinterCallback)  # stdout may carry JSON
        n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        if described is not None:
            described["adapter_dtype"] = quantized.adapter_dtype(trainer.model)
        rec.metrics.update(steps_completed=0, loss_per_step=[], trainable_params=n_trainable)
        if not _kept_examples(rec, trainer.train_dataset, n_examples, recipe):
            return
        timer = make_step_timer(ctx, rec, recipe.warmup_steps, total)
        trainer.add_callback(timer)
        trainer.train()
        context, kl_ratio = _context(trainer.train_dataset, recipe)

    measured = timer.measured
    times = [t for t, _ in measured]
    tokens = sum(n for _, n in measured)
    sequences = recipe.batch_size * recipe.gradient_accumulation_steps * (2 if recipe.stage == "dpo" else 1)
    if context is None:  # mean tokens per sequence from what the trainer counted
        context = tokens / len(measured) / sequences
    fpt, formula = _flops(recipe, recipe.model, n_trainable, context, kl_ratio)
    rec.flops = {
        "flops_per_token": fpt,
        "formula": formula,
        "matmul_params": flops.matmul_params(recipe.model),
        "trainable_params": n_trainable,
        "mean_tokens_per_sequence": context,
        **({"kl_token_ratio": kl_ratio} if recipe.stage == "kto" else {}),
    }
    tps = tokens / sum(times)
    rec.metrics.update(
        tokens_per_second=tps,
        step_time_seconds_p50=percentile(times, 0.5),
        step_time_seconds_p90=percentile(times, 0.9),
        tokens_per_step_mean=tokens / len(measured),
        flops_per_second=tps * fpt,
    )
    if ctx.peaks.flops:
        rec.metrics["mfu_ratio"] = tps * fpt / ctx.peaks.flops
    if len(measured) > 1:  # each measured optimizer step is one sample of the throughput
        rec.spread["tokens_per_second"] = spread([n / t for t, n in measured if t > 0])
    floor, f = ctx.floor(
        "kto_lora" if rec.workload == "kto_lora" else "train_quantized" if recipe.quantized else "train"
    )
    minimum = floor * ctx.peaks.flops / fpt if floor and ctx.peaks.flops else None
    ctx.check(
        rec,
        "tokens_per_second",
        minimum,
        f"MFU floor {floor} x peak {ctx.peaks.flops_basis} / {fpt:.3g} FLOP per token",
        f,
    )
    del trainer, model
    if on_gpu:
        torch.cuda.empty_cache()


def _checkpointing_key() -> str:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing` within 5.x (5.17 has
    only the old name, 5.25 both): the name the installed TrainingArguments takes."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _kept_examples(rec, dataset, n_examples: int, recipe) -> bool:
    """TRL drops an example whose prompt alone fills max_length: none left is a clear error before
    training (not a crash on an empty epoch), some dropped a note."""
    try:
        kept = len(dataset)
    except TypeError:  # an iterable dataset: nothing to count
        return True
    if kept == 0:
        rec.fail(
            "error",
            "no_data",
            f"TRL dropped all {n_examples} examples: each prompt ({recipe.words[0]} words) fills the "
            f"{recipe.max_length} tokens of max_length by itself; lower recipe.prompt_words "
            "(--set recipe.prompt_words=N) or raise the cutoff",
        )
        return False
    if kept < n_examples:
        rec.notes.append(f"TRL dropped {n_examples - kept} of {n_examples} examples (prompt past max_length)")
    return True


def _context(dataset, recipe) -> tuple[float | None, float]:
    """KTO: mean tokens per training sequence and the KL batch's share, from the tokenized dataset (the
    KL batch is not in the counted tokens). Other stages: None (taken from the counted tokens)."""
    if recipe.stage != "kto" or "prompt_ids" not in dataset.column_names:
        return None, 0.0
    prompts = [len(p) for p in dataset["prompt_ids"]]
    batch = [
        min(p + len(c), recipe.max_length) for p, c in zip(prompts, dataset["completion_ids"], strict=True)
    ]
    if "KL_completion_ids" in dataset.column_names:
        kl = [
            min(p + len(c), recipe.max_length)
            for p, c in zip(prompts, dataset["KL_completion_ids"], strict=True)
        ]
    else:
        kl = [0]
    return statistics.fmean(batch), sum(kl) / sum(batch)


def _estimate(rec, recipe, device: str) -> None:
    """Memory estimate of the load (toolkit.bench.estimate) next to the measured peak (the runner adds the
    ratio once the peak is read)."""
    try:
        from toolkit.bench.estimate import estimate_training
    except ImportError:  # the estimator ships with --plan; a run never depends on it
        return
    est = estimate_training(recipe, device)
    rec.metrics["memory_estimate_bytes"] = int(est.total)
    rec.config["memory_estimate"] = est.as_dict()
