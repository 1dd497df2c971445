"""Reference load 1: KTO with LoRA through TRL's KTOTrainer and PEFT.

    toolkit bench --workloads kto_lora            # CPU: small Llama shape, fp32
    toolkit bench --gpu a40 --workloads kto_lora  # GPU: TinyLlama-1.1B shape, bf16

The load is the shipped recipe `kto-lora-cpu` (toolkit/data/recipes/kto-lora-cpu.yaml: the users'
LLaMA-Factory KTO hyper-parameters, docs/REFERENCE.md — LoRA r16, alpha 32, dropout 0 on all linear
layers, beta 0.05, cosine schedule, AdamW, max grad norm 1.0, per-device batch 4) resized by the
scale's `kto_lora` settings (shape, sequence, batch, steps); a change to the YAML reaches this load.
The policy is the base with the adapter; the reference is the same base with the adapter disabled
(TRL's PEFT path, no second copy).

Counted tokens: the non-padding prompt+completion tokens of the training batch
(TRL's `num_input_tokens_seen` with "non_padding"). The KL batch is not counted
as tokens, but its forward passes are in the FLOP count (see flops.KTO_FORMULA).
"""

from __future__ import annotations

from dataclasses import replace

RECIPE = "kto-lora-cpu"
USERS_ACCUMULATION = 16  # the users' recipe accumulates 16 micro-batches per optimizer step


def recipe_for_scale(s, dtype: str):
    """The shipped recipe at the scale's Llama shape and sizes, with the scale's (or --set) overrides."""
    from toolkit.bench.recipe import lora_target
    from toolkit.bench.recipes import shipped

    overrides = s.recipe_overrides()
    if "lora_target" in overrides:
        overrides["lora_target"] = lora_target(overrides["lora_target"])
    return replace(
        shipped()[RECIPE],
        model=s.model,
        architecture="llama (the scale's shape)",
        model_config={"model_type": "llama"},
        max_length=s.max_length,
        batch_size=s.batch_size,
        precision={"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "fp32"),
        activation_checkpointing=s.activation_checkpointing,
        prompt_words=s.prompt_words,
        completion_words=s.completion_words,
        warmup_steps=s.warmup_steps,
        measured_steps=s.measured_steps,
        **overrides,
    )


def run(ctx, rec) -> None:
    from toolkit.bench.workloads.train import run_recipe

    s = ctx.scale.kto_lora
    recipe = recipe_for_scale(s, ctx.dtype)
    if recipe.gradient_accumulation_steps != USERS_ACCUMULATION:
        rec.notes.append(
            f"gradient_accumulation_steps {recipe.gradient_accumulation_steps} "
            f"(the A40 KTO recipe kto-gemma2-9b: {USERS_ACCUMULATION}): accumulation changes how often "
            "the optimizer steps, not tokens/s per micro-batch"
        )
    run_recipe(ctx, rec, recipe, model_note=f"Llama shape, random weights: {s.model}")
