"""LLaMA-Factory's training YAML read into a `Recipe`: every key the file sets is either mapped to what the
run does, or listed as not honoured with the reason (in the output and the report), never silently
ignored. The `toolkit:` block is this project's (name, description, architecture, profile, tokens).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from toolkit.bench.losses import DPO_LOSSES, resolve_loss
from toolkit.bench.recipe import STAGES, Recipe, as_bool, as_float, as_int, lora_target
from toolkit.bench.shape import ModelShape
from toolkit.errors import UsageError

TOOLKIT_KEYS = {
    "name",
    "description",
    "architecture",
    "profile",
    "source",
    "observed_peak_gb",
    "chat_format",
    "eos_token",
    "pad_token",
}
# LLaMA-Factory keys that describe where data, outputs and logs go: a benchmark runs synthetic data for a
# fixed number of steps and keeps nothing, so they are listed as not honoured with this reason.
NOT_FOR_A_BENCHMARK = {
    "dataset": "the benchmark trains on synthetic data of the recipe's shape",
    "dataset_dir": "the benchmark trains on synthetic data of the recipe's shape",
    "eval_dataset": "no evaluation during a benchmark",
    "val_size": "no evaluation during a benchmark",
    "eval_strategy": "no evaluation during a benchmark",
    "eval_steps": "no evaluation during a benchmark",
    "per_device_eval_batch_size": "no evaluation during a benchmark",
    "num_train_epochs": "a benchmark runs a fixed number of measured steps",
    "max_steps": "a benchmark runs a fixed number of measured steps",
    "max_samples": "a benchmark runs a fixed number of measured steps",
    "output_dir": "a benchmark keeps no checkpoint",
    "overwrite_output_dir": "a benchmark keeps no checkpoint",
    "save_steps": "a benchmark keeps no checkpoint",
    "save_strategy": "a benchmark keeps no checkpoint",
    "save_only_model": "a benchmark keeps no checkpoint",
    "logging_steps": "the benchmark logs every step itself",
    "plot_loss": "the report carries the loss per step",
    "report_to": "nothing is reported to trackers",
    "template": "synthetic text needs no chat template (chat recipes use their own tokens)",
    "overwrite_cache": "no dataset cache",
    "preprocessing_num_workers": "synthetic data needs no preprocessing workers",
    "dataloader_num_workers": "data loading stays in the process for steady timings",
    "do_train": "training is what the benchmark does",
    "ddp_timeout": "multi-process runs use `--gpus N`",
    "resume_from_checkpoint": "a benchmark starts fresh",
    "trust_remote_code": "only shipped architectures or local Transformers models are built",
}


class _Keys:
    """The file's LLaMA-Factory keys, remembering which ones were read: the rest are not honoured."""

    def __init__(self, data: dict, origin: str = ""):
        self.data = data
        self.origin = origin
        self.used: set[str] = set()

    def take(self, key, default=None):
        self.used.add(key)
        return self.data.get(key, default)

    def typed(self, key, parse, default):
        """The key's value read by `parse` (as_int, as_float, as_bool); a value it refuses is exit 2
        naming the file and the key, never coerced."""
        value = self.take(key)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as err:
            raise UsageError(
                f"{self.origin}: {key}: {err}", hint=f"fix {key} in {self.origin} (LLaMA-Factory's key)"
            ) from None

    def __contains__(self, key) -> bool:
        return key in self.data

    def unread(self) -> list[str]:
        return sorted(set(self.data) - self.used)


def _toolkit_meta(data: dict, origin: str) -> dict:
    """The `toolkit:` block (popped from `data`), refusing keys it does not know."""
    meta = data.pop("toolkit", None) or {}
    unknown_meta = set(meta) - TOOLKIT_KEYS
    if unknown_meta:
        raise UsageError(
            f"{origin}: unknown toolkit key(s) {', '.join(sorted(unknown_meta))}",
            hint=f"toolkit: keys are {', '.join(sorted(TOOLKIT_KEYS))}",
        )
    return meta


def _stage_and_finetuning(keys: _Keys, origin: str) -> tuple[str, str]:
    stage = str(keys.take("stage", "sft")).lower()
    if stage not in STAGES:
        raise UsageError(
            f"{origin}: stage {stage!r} is not benchmarked",
            hint=f"stages: {', '.join(STAGES)} (pt, rm and ppo are not)",
        )
    finetuning = str(keys.take("finetuning_type", "lora")).lower()
    if finetuning not in ("lora", "full") or (finetuning == "full" and stage != "sft"):
        raise UsageError(
            f"{origin}: finetuning_type {finetuning!r} with stage {stage} is not benchmarked",
            hint="lora with sft, kto or dpo; full with sft",
        )
    return stage, finetuning


def _architecture(keys: _Keys, meta: dict, architecture: str | None, notes: list[str]):
    """A shipped architecture (toolkit.architecture, --arch, or model_name_or_path's Hub id), or None."""
    from toolkit.bench import architectures

    model_id = keys.take("model_name_or_path")
    arch_name = architecture or meta.get("architecture")
    if arch_name is None and model_id:
        found = architectures.for_hub_id(str(model_id))
        arch_name = found.name if found else None
    arch = architectures.get(arch_name) if arch_name else None
    if model_id and arch is None:
        notes.append(f"model_name_or_path {model_id}: no shipped architecture; give --arch or --model")
    return arch


def _model_fields(arch) -> dict:
    return {
        "model": arch.shape if arch else ModelShape(1, 1, 1, 1, 1, 1),
        "architecture": arch.name if arch else None,
        "model_config": dict(arch.config) if arch else {},
    }


def _precision(keys: _Keys, notes: list[str]) -> str:
    bf16, fp16, pure_bf16 = (keys.typed(k, as_bool, False) for k in ("bf16", "fp16", "pure_bf16"))
    if pure_bf16:
        notes.append("pure_bf16: the base is held in bf16 as with bf16 (the adapter trains in fp32)")
    return "bf16" if (bf16 or pure_bf16) else "fp16" if fp16 else "fp32"


def _quantization(keys: _Keys, origin: str) -> dict:
    bits = keys.typed("quantization_bit", as_int, None)
    method = str(keys.take("quantization_method", "bitsandbytes")).lower()
    if bits is not None and (bits not in (4, 8) or method != "bitsandbytes"):
        raise UsageError(
            f"{origin}: quantization {bits}-bit {method} is not supported",
            hint="4- or 8-bit with bitsandbytes (quantization_method: bitsandbytes)",
        )
    return {
        "quantization_bit": bits,
        "quantization_type": str(keys.take("quantization_type", "nf4")).lower(),
        "double_quantization": keys.typed("double_quantization", as_bool, True),
    }


def _preference(keys: _Keys, stage: str, origin: str, unhonoured: list[tuple[str, str]]) -> tuple[str, float]:
    """(pref_loss, pref_ftx), checked against the stage; pref_beta is read with the other sizes."""
    pref_loss = str(keys.take("pref_loss", "sigmoid" if stage == "dpo" else "kto"))
    pref_ftx = keys.typed("pref_ftx", as_float, 0.0)
    if stage == "kto":
        resolve_loss(pref_loss)  # refuse an unknown one; kto_pair is mapped when the load runs
        if pref_ftx:
            unhonoured.append(("pref_ftx", f"{pref_ftx}: TRL's KTO trainer has no SFT term; ran without"))
    elif stage == "dpo" and pref_loss not in DPO_LOSSES:
        raise UsageError(
            f"{origin}: pref_loss {pref_loss!r} is not mapped for DPO",
            hint=f"DPO losses: {', '.join(DPO_LOSSES)}",
        )
    for key in ("pref_beta", "pref_loss", "pref_ftx"):
        if stage == "sft" and key in keys:
            unhonoured.append((key, "a preference key in an SFT recipe"))
    return pref_loss, pref_ftx


def _training(keys: _Keys, unhonoured: list[tuple[str, str]]) -> dict:
    """The optimizer and gradient checkpointing; warmup_steps is listed (warm-up follows warmup_ratio)."""
    optim = str(keys.take("optim", "adamw_torch"))
    gc_off = keys.typed("disable_gradient_checkpointing", as_bool, False)
    warmup_steps = keys.take("warmup_steps")
    if warmup_steps:
        unhonoured.append(("warmup_steps", f"{warmup_steps}: the learning-rate warm-up follows warmup_ratio"))
    return {"optim": optim, "activation_checkpointing": not gc_off}


def _lora(keys: _Keys) -> dict:
    rank = keys.typed("lora_rank", as_int, 8)
    return {
        "lora_rank": rank,
        "lora_alpha": keys.typed("lora_alpha", as_int, 2 * rank),
        "lora_dropout": keys.typed("lora_dropout", as_float, 0.0),
        "lora_target": lora_target(keys.take("lora_target", "all")),
    }


def _sizes(keys: _Keys) -> dict:
    """Sequence length, batch and the learning-rate schedule (types here; ranges in recipe.validate)."""
    return {
        "max_length": keys.typed("cutoff_len", as_int, 2048),
        "batch_size": keys.typed("per_device_train_batch_size", as_int, 1),
        "gradient_accumulation_steps": keys.typed("gradient_accumulation_steps", as_int, 1),
        "learning_rate": keys.typed("learning_rate", as_float, 5e-5),
        "lr_scheduler_type": str(keys.take("lr_scheduler_type", "cosine")),
        "warmup_ratio": keys.typed("warmup_ratio", as_float, 0.0),
        "max_grad_norm": keys.typed("max_grad_norm", as_float, 1.0),
    }


def _meta_fields(meta: dict, origin: str) -> dict:
    typed = _Keys(meta, f"{origin}: toolkit").typed
    return {
        "name": str(meta.get("name") or Path(origin).stem),
        "description": str(meta.get("description", "")),
        "source": str(meta.get("source", origin)),
        "profile": meta.get("profile"),
        "observed_peak_gb": typed("observed_peak_gb", as_float, None),
        "chat_format": typed("chat_format", as_bool, False),
        "eos_token": meta.get("eos_token"),
        "pad_token": str(meta.get("pad_token", "<pad>")),
    }


def _not_honoured(keys: _Keys) -> list[tuple[str, str]]:
    """Every key nothing read, with the reason it does not apply to a benchmark."""
    return [
        (key, NOT_FOR_A_BENCHMARK.get(key, "not a key this benchmark maps to TRL")) for key in keys.unread()
    ]


def from_llamafactory(data: dict, origin: str, architecture: str | None = None) -> Recipe:
    """Map a LLaMA-Factory training YAML (already parsed) to a Recipe, listing what is not honoured."""
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: not a LLaMA-Factory training YAML (expected a mapping of keys)")
    data = dict(data)
    meta = _toolkit_meta(data, origin)
    keys = _Keys(data, origin)
    unhonoured: list[tuple[str, str]] = []
    notes: list[str] = []

    stage, finetuning = _stage_and_finetuning(keys, origin)
    arch = _architecture(keys, meta, architecture, notes)
    precision = _precision(keys, notes)
    quantization = _quantization(keys, origin)
    pref_loss, pref_ftx = _preference(keys, stage, origin, unhonoured)
    training = _training(keys, unhonoured)
    # LoRA, pref_beta, then the sizes: the order a bad value has always been reported in
    lora = _lora(keys)
    pref_beta = keys.typed("pref_beta", as_float, 0.1)
    sizes = _sizes(keys)
    recipe = Recipe(
        stage=stage,
        finetuning_type=finetuning,
        precision=precision,
        pref_beta=pref_beta,
        pref_loss=pref_loss,
        pref_ftx=pref_ftx,
        origin=origin,
        **_model_fields(arch),
        **_meta_fields(meta, origin),
        **lora,
        **sizes,
        **quantization,
        **training,
    )
    if recipe.finetuning_type == "lora" and "lora_target" not in keys:
        notes.append("lora_target not given: LLaMA-Factory's default is all linear layers")
    unhonoured += _not_honoured(keys)
    # the values' ranges are checked by recipe.validate once --set has been applied (recipes.override),
    # so that `--set recipe.batch_size=2` can rescue a file
    return replace(recipe, unhonoured=tuple(unhonoured), notes=tuple(notes))
