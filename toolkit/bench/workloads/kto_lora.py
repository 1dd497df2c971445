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


def recipe_from_settings(s, dtype: str):
    """The KTO load as a recipe: the users' hyper-parameters at the scale's Llama shape."""
    from toolkit.bench.recipes import LORA_MODULES, Recipe

    return Recipe(
        name="kto-lora-cpu",
        stage="kto",
        model=s.model,
        architecture="llama (the scale's shape)",
        model_config={"model_type": "llama"},
        description="the foundation's KTO LoRA load",
        source="toolkit/data/bench.toml",
        lora_rank=s.lora_rank,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        lora_target=LORA_MODULES,
        pref_beta=s.pref_beta,
        pref_loss=s.pref_loss,
        max_length=s.max_length,
        batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler_type,
        max_grad_norm=s.max_grad_norm,
        optim=s.optim,
        precision={"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "fp32"),
        activation_checkpointing=s.activation_checkpointing,
        prompt_words=s.prompt_words,
        completion_words=s.completion_words,
        warmup_steps=s.warmup_steps,
        measured_steps=s.measured_steps,
    )


def run(ctx, rec) -> None:
    from toolkit.bench.workloads.train import run_recipe

    s = ctx.scale.kto_lora
    if s.gradient_accumulation_steps != 16:
        rec.notes.append(
            f"gradient_accumulation_steps {s.gradient_accumulation_steps} (the users' recipe: 16): "
            "accumulation changes how often the optimizer steps, not tokens/s per micro-batch"
        )
    run_recipe(
        ctx,
        rec,
        recipe_from_settings(s, ctx.dtype),
        model_note=f"Llama shape, random weights: {s.model}",
    )
