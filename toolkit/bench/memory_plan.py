"""A memory plan per trainer: the same recipe as LLaMA-Factory, TRL (what `toolkit bench` runs) and
Unsloth hold it, plus what the launcher adds on top (DeepSpeed ZeRO sharding and offload, a separate
reference model) and the runtime's own reserve.

- DeepSpeed (LLaMA-Factory's `deepspeed:` file; bf16 engine): the module is cast to 16-bit (2 B a
  parameter), gradients 16-bit (2 B), the optimizer holds the fp32 master copy and Adam's two states
  (4 + 8 = 12 B a trainable parameter). ZeRO-1 divides the optimizer states by the GPU count, ZeRO-2 also
  the gradients, ZeRO-3 also the weights (plus one layer gathered at a time). `offload_optimizer` moves
  the optimizer states to host memory, `offload_param` (ZeRO-3) the weights.
- `ref_model:` a second, frozen model for DPO/KTO: its weights (16-bit) on the same GPU.
- reserve: what the process holds outside torch's allocator: the CUDA context, about 300 MiB since CUDA
  11.7's lazy module loading and over 1000 MiB before it (pytorch/pytorch#107667, a maintainer's answer),
  200-700 MiB by device (pytorch/pytorch#28113); the plan reserves 512 MiB a GPU. The allocator's cached
  but unused blocks are the verdict's 10 % "tight" band, not a figure.
"""

from __future__ import annotations

from dataclasses import replace

from toolkit.bench.estimate import Estimate, Part, _counts, estimate_training

CONTEXT_RESERVE_BYTES = 512 * 2**20
RESERVE_SOURCE = (
    "CUDA context ~300 MiB with lazy module loading (CUDA >= 11.7), >1000 MiB before "
    "(pytorch/pytorch#107667); 200-700 MiB by device (pytorch/pytorch#28113): 512 MiB reserved"
)
# Unsloth patches these model families (its FastLanguageModel); elsewhere it does not apply
UNSLOTH_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3")


def default_trainer(recipe) -> str:
    """The trainer planned first: LLaMA-Factory for a user's LF file, TRL for shipped recipes."""
    return "llamafactory" if getattr(recipe, "source_format", "shipped") == "llamafactory" else "trl"


def trainers_for(recipe) -> list[str]:
    found = [default_trainer(recipe)]
    found += [t for t in ("llamafactory", "trl") if t not in found]
    family = (recipe.model_config or {}).get("model_type", "llama")
    if recipe.finetuning_type == "lora" and family in UNSLOTH_FAMILIES:
        found.append("unsloth")
    return found


def _scaled(parts: list[Part], name: str, factor: float, why: str) -> list[Part]:
    return [
        replace(p, bytes=p.bytes * factor, formula=f"{p.formula}; {why}") if p.name == name else p
        for p in parts
    ]


def _deepspeed(est: Estimate, recipe, gpus: int) -> Estimate:
    ds = getattr(recipe, "deepspeed", None) or {}
    stage = int(ds.get("stage") or 0)
    if not ds:
        return est
    parts = list(est.parts)
    notes = list(est.notes)
    full = recipe.finetuning_type != "lora"
    if full:  # DeepSpeed's bf16 engine: 16-bit module and gradients, fp32 master + Adam in the optimizer
        n = _counts(recipe, recipe.model)[1]
        parts = [p for p in parts if p.name not in ("16-bit weight copies",)]
        parts = [
            Part("weights", n * 2, f"{n / 1e9:.3f} B x 2 B (DeepSpeed bf16 module)")
            if p.name == "weights"
            else Part("gradients", n * 2, f"{n / 1e9:.3f} B x 2 B (16-bit gradients)")
            if p.name == "gradients"
            else Part("optimizer states", n * 12, f"{n / 1e9:.3f} B x 12 B (fp32 master 4 + Adam 8)")
            if p.name == "optimizer states"
            else p
            for p in parts
        ]
    share = f"/ {gpus} GPUs (ZeRO-{stage})"
    if ds.get("offload_optimizer"):
        parts = _scaled(parts, "optimizer states", 0.0, "offloaded to host memory (offload_optimizer)")
    elif stage >= 1:
        parts = _scaled(parts, "optimizer states", 1 / gpus, share)
    if stage >= 2:
        parts = _scaled(parts, "gradients", 1 / gpus, share)
    if stage >= 3:
        layer = next(p.bytes for p in parts if p.name == "weights") / max(1, recipe.model.num_hidden_layers)
        factor = 0.0 if ds.get("offload_param") else 1 / gpus
        why = "offloaded to host memory (offload_param)" if ds.get("offload_param") else share
        parts = _scaled(parts, "weights", factor, why)
        parts.append(Part("gathered layer", layer, "ZeRO-3 gathers one layer's full weights at a time"))
    notes.append(
        f"DeepSpeed ZeRO-{stage} planned for {gpus} GPU(s)" + ("" if gpus > 1 else " (give --gpus N)")
    )
    return replace(est, parts=tuple(parts), notes=tuple(notes))


def _ref_model(est: Estimate, recipe) -> Estimate:
    if not getattr(recipe, "ref_model", None) or recipe.stage not in ("dpo", "kto"):
        return est
    weights = next(p for p in est.parts if p.name == "weights")
    part = Part(
        "reference model",
        weights.bytes,
        f"ref_model {recipe.ref_model}: a second frozen copy ({weights.formula})",
    )
    return replace(est, parts=(*est.parts, part))


def trainer_estimates(recipe, device: str, gpus: int = 1) -> dict[str, Estimate]:
    """{trainer: Estimate} for every trainer that applies, the default trainer first."""
    found = {}
    for trainer in trainers_for(recipe):
        est = estimate_training(recipe, device, trainer=trainer)
        if trainer == "llamafactory":
            est = _deepspeed(est, recipe, max(1, gpus))
        est = _ref_model(est, recipe)
        found[trainer] = est
    if (
        "unsloth" in found
        and abs(found["unsloth"].total - found["llamafactory"].total) < 0.01 * found["llamafactory"].total
    ):
        del found["unsloth"]  # only where it differs
    return found


def reserve_bytes(device: str) -> int:
    return CONTEXT_RESERVE_BYTES if device != "cpu" else 0
