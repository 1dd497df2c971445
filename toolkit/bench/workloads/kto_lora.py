"""Reference load 1: KTO with LoRA through TRL's KTOTrainer and PEFT.

    toolkit bench --workloads kto_lora            # CPU: small Llama shape, fp32
    toolkit bench --gpu a40 --workloads kto_lora  # GPU: TinyLlama-1.1B shape, bf16

Modelled on the users' LLaMA-Factory recipe (REFERENCE.md): LoRA r16, alpha 32,
dropout 0 on all linear layers, beta 0.05, cosine schedule, AdamW, max grad norm
1.0, per-device batch 4. The policy is the base with the adapter; the reference
is the same base with the adapter disabled (TRL's PEFT path, no second copy).

Counted tokens: the non-padding prompt+completion tokens of the training batch
(TRL's `num_input_tokens_seen` with "non_padding"). The KL batch is not counted
as tokens, but its forward passes are in the FLOP count (see flops.KTO_FORMULA).
"""

from __future__ import annotations

import statistics
import tempfile
import time

from toolkit.bench import flops
from toolkit.bench.timing import percentile
from toolkit.errors import UsageError

TRL_KTO_LOSSES = ("kto", "apo_zero_unpaired")


def resolve_loss(pref_loss: str) -> tuple[str, str | None]:
    """LLaMA-Factory's `pref_loss` -> TRL's KTO `loss_type`, with a note when mapped.

    TRL removed `kto_pair` (it was a paired DPO-style loss); `KTOConfig` still
    accepts the string and `train()` crashes later, so refuse or map it here.
    """
    if pref_loss in TRL_KTO_LOSSES:
        return pref_loss, None
    if pref_loss == "kto_pair":
        return "kto", (
            "pref_loss kto_pair (removed from TRL) is run as TRL's KTO loss on unpaired data: "
            "each example is a prompt, a completion and a desirable/undesirable label"
        )
    raise UsageError(
        f"unsupported KTO loss {pref_loss!r}",
        hint=f"use one of {', '.join((*TRL_KTO_LOSSES, 'kto_pair'))} (kto_pair is mapped to kto)",
    )


def _sequence_lengths(dataset, max_length: int) -> tuple[float, float]:
    """Mean tokens per training sequence, and KL-batch tokens over batch tokens (after truncation)."""
    prompts = [len(p) for p in dataset["prompt_ids"]]
    completions = [len(c) for c in dataset["completion_ids"]]
    batch = [min(p + c, max_length) for p, c in zip(prompts, completions, strict=True)]
    if "KL_completion_ids" in dataset.column_names:
        kl = [min(p + len(c), max_length) for p, c in zip(prompts, dataset["KL_completion_ids"], strict=True)]
    else:
        kl = [0]
    return statistics.fmean(batch), sum(kl) / sum(batch)


def run(ctx, rec) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import KTOConfig, KTOTrainer

    from toolkit.bench.synthetic import build_llama, build_tokenizer, unpaired_preferences

    s = ctx.scale.kto_lora
    loss_type, mapped = resolve_loss(ctx.kto_loss or s.pref_loss)
    if mapped:
        rec.notes.append(mapped)
    total_steps = s.warmup_steps + s.measured_steps
    n_examples = s.batch_size * s.gradient_accumulation_steps * total_steps
    rec.config = {
        "model": f"Llama shape, random weights: {s.model}",
        "loss_type": loss_type,
        "pref_loss": ctx.kto_loss or s.pref_loss,
        "beta": s.pref_beta,
        "lora_rank": s.lora_rank,
        "lora_alpha": s.lora_alpha,
        "lora_dropout": s.lora_dropout,
        "lora_target": "all-linear (LLaMA-Factory lora_target: all)",
        "per_device_train_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "max_length": s.max_length,
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": s.lr_scheduler_type,
        "max_grad_norm": s.max_grad_norm,
        "optim": s.optim,
        "dtype": ctx.dtype,
        "warmup_steps": s.warmup_steps,
        "measured_steps": s.measured_steps,
        "device": ctx.device,
        "activation_checkpointing": s.activation_checkpointing,
        "tokens_counted": "non-padding prompt+completion tokens of the training batch "
        "(TRL num_input_tokens_seen); the KL batch is in the FLOP count, not in the tokens",
    }
    if s.gradient_accumulation_steps != 16:
        rec.notes.append(
            f"gradient_accumulation_steps {s.gradient_accumulation_steps} (the users' recipe: 16): "
            "accumulation changes how often the optimizer steps, not tokens/s per micro-batch"
        )

    tokenizer = build_tokenizer(min(s.model.vocab_size, 8192), seed=ctx.seed)
    model = build_llama(
        s.model, tokenizer, ctx.torch_dtype, ctx.device, seed=ctx.seed, max_positions=max(4096, s.max_length)
    )
    data = Dataset.from_dict(unpaired_preferences(n_examples, s.prompt_words, s.completion_words, ctx.seed))

    on_gpu = ctx.device != "cpu"
    with tempfile.TemporaryDirectory(prefix="toolkit-kto-") as out:
        args = KTOConfig(
            output_dir=out,
            max_steps=total_steps,
            per_device_train_batch_size=s.batch_size,
            gradient_accumulation_steps=s.gradient_accumulation_steps,
            learning_rate=s.learning_rate,
            lr_scheduler_type=s.lr_scheduler_type,
            max_grad_norm=s.max_grad_norm,
            optim=s.optim,
            beta=s.pref_beta,
            loss_type=loss_type,
            max_length=s.max_length,
            bf16=on_gpu and ctx.dtype == "bfloat16",
            fp16=on_gpu and ctx.dtype == "float16",
            use_cpu=not on_gpu,
            activation_checkpointing=s.activation_checkpointing,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",
            seed=ctx.seed,
            dataloader_num_workers=0,
        )
        lora = LoraConfig(
            r=s.lora_rank,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        trainer = KTOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora
        )
        trainer.remove_callback(PrinterCallback)  # stdout may carry JSON

        n_lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        mean_len, kl_ratio = _sequence_lengths(trainer.train_dataset, s.max_length)
        fpt = flops.kto_flops_per_token(s.model, n_lora, mean_len, kl_ratio)
        rec.flops = {
            "flops_per_token": fpt,
            "formula": flops.KTO_FORMULA,
            "matmul_params": flops.matmul_params(s.model),
            "lora_params": n_lora,
            "mean_tokens_per_sequence": mean_len,
            "kl_token_ratio": kl_ratio,
        }
        rec.metrics.update(steps_completed=0, loss_per_step=[], lora_params=n_lora)

        timer = make_step_timer(ctx, rec, s.warmup_steps, total_steps)
        trainer.add_callback(timer)
        trainer.train()

    measured = timer.measured
    times = [t for t, _ in measured]
    tokens = sum(n for _, n in measured)
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
    floor, f = ctx.floor("kto_lora")
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


class _StepTimerBase:
    """Times optimizer steps end to end (data loading included), synchronising the device."""

    def __init__(self, ctx, rec, warmup: int, total: int):
        self.ctx, self.rec, self.warmup, self.total = ctx, rec, warmup, total
        self.measured: list[tuple[float, int]] = []
        self._t = self._tokens = None

    def on_train_begin(self, args, state, control, **kw):
        self.ctx.sync()
        self._t, self._tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kw):
        self.ctx.sync()
        now = time.perf_counter()
        dt, n = now - self._t, state.num_input_tokens_seen - self._tokens
        self._t, self._tokens = now, state.num_input_tokens_seen
        step = state.global_step
        if step <= self.warmup:
            self.rec.warmup.setdefault("step_time_seconds", []).append(dt)
        else:
            self.measured.append((dt, n))
        self.rec.metrics["steps_completed"] = step
        self.ctx.progress(step, self.total)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            loss = round(float(logs["loss"]), 6)
            if state.global_step <= self.warmup:
                self.rec.warmup.setdefault("loss_per_step", []).append(loss)
            else:
                self.rec.metrics["loss_per_step"].append(loss)


def make_step_timer(ctx, rec, warmup: int, total: int):
    """A `TrainerCallback` built on first use, so importing this module stays free of transformers."""
    from transformers import TrainerCallback

    class StepTimer(_StepTimerBase, TrainerCallback):
        pass

    return StepTimer(ctx, rec, warmup, total)
