"""LLaMA-Factory's training YAML read into a `Recipe` as LLaMA-Factory reads it: keys and values checked
against its own argument schema (bench/lf_schema.py: a key it would refuse is refused here, exit 2, with
the nearest real key), its defaults where a key is absent, and every valid key the benchmark does not
map listed as not honoured with what it does in LLaMA-Factory and why the run does not reproduce it
(bench/lf_unhonoured.py). The `toolkit:` block is this project's (name, description, architecture,
profile, tokens).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from toolkit.bench import lf_schema, lf_unhonoured
from toolkit.bench.lf_checks import (
    inferred_precision,
    refuse_non_training,
    refuse_prequantized,
    refuse_unmodelled,
)
from toolkit.bench.losses import DPO_LOSSES, TRL_KTO_LOSSES
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
    """A shipped architecture (toolkit.architecture, --arch, or model_name_or_path's Hub id), or None;
    `--arch` replacing the model the file names is said in the notes."""
    from toolkit.bench import architectures

    model_id = keys.take("model_name_or_path")
    arch_name = architecture or meta.get("architecture")
    named = architectures.for_hub_id(str(model_id)) if model_id else None
    if arch_name is None and named:
        arch_name = named.name
    arch = architectures.get(arch_name) if arch_name else None
    overridden = bool(architecture and model_id and (named is None or named.name != arch.name))
    if overridden:
        notes.append(
            f"--arch {arch.name} replaces the file's model {model_id}: planned and run as {arch.name}, "
            f"not as {model_id}"
        )
    elif model_id and arch is None:
        notes.append(f"model_name_or_path {model_id}: no shipped architecture; give --arch or --model")
    return arch, (str(model_id) if model_id else None), overridden


def _model_fields(arch) -> dict:
    return {
        "model": arch.shape if arch else ModelShape(1, 1, 1, 1, 1, 1),
        "architecture": arch.name if arch else None,
        "model_config": dict(arch.config) if arch else {},
    }


def _precision(keys: _Keys, model_config: dict, notes: list[str]) -> str:
    """bf16/pure_bf16, fp16, or the dtype LLaMA-Factory infers when neither is set (parser.py,
    patcher.py)."""
    bf16, fp16, pure_bf16 = (keys.typed(k, as_bool, False) for k in ("bf16", "fp16", "pure_bf16"))
    if bf16 or pure_bf16:
        return "bf16"
    if fp16:
        return "fp16"
    precision, note = inferred_precision(model_config)
    notes.append(note)
    return precision


def _quantization(
    keys: _Keys, model_id: str | None, model_config: dict, origin: str, notes: list[str]
) -> dict:
    """On-the-fly bitsandbytes quantization (LLaMA-Factory's `bnb`), or a bitsandbytes checkpoint; any
    other method or a GPTQ/AWQ/AQLM checkpoint is refused with the reason."""
    bits = keys.typed("quantization_bit", as_int, None)
    method = str(keys.take("quantization_method", "bnb")).lower()
    if bits is not None and (bits not in (4, 8) or method != "bnb"):
        raise UsageError(
            f"{origin}: on-the-fly quantization {bits}-bit {method} is not benchmarked",
            hint="4- or 8-bit with bitsandbytes (quantization_method: bnb, LLaMA-Factory's default)",
        )
    stored = refuse_prequantized(model_id or "", model_config, origin)
    if stored and bits is None:
        bits = stored
        notes.append(
            f"{model_id}: a bitsandbytes {stored}-bit checkpoint, planned and run as {stored}-bit bnb"
        )
    return {
        "quantization_bit": bits,
        "quantization_method": method,
        "quantization_type": str(keys.take("quantization_type", "nf4")).lower(),
        "double_quantization": keys.typed("double_quantization", as_bool, True),
    }


def _preference(keys: _Keys, stage: str, origin: str, notes: list[str]) -> tuple[str, float]:
    """(pref_loss, pref_ftx), checked against the stage; pref_beta is read with the other sizes. LLaMA-
    Factory's KTO trainer ignores pref_loss (its default, sigmoid, is what its web UI writes): noted.
    An SFT file's preference keys are left unread, so that they are listed as ignored."""
    if stage == "sft":
        return str(lf_schema.default("pref_loss")), 0.0
    pref_loss = str(keys.take("pref_loss", lf_schema.default("pref_loss")))
    pref_ftx = keys.typed("pref_ftx", as_float, 0.0)
    if stage == "kto":
        if "pref_loss" in keys and pref_loss not in (*TRL_KTO_LOSSES, "kto_pair"):
            notes.append(
                f"pref_loss {pref_loss}: LLaMA-Factory's KTO trainer ignores pref_loss (it always trains "
                "KTO's loss); run as TRL's kto"
            )
        pref_loss = pref_loss if pref_loss in (*TRL_KTO_LOSSES, "kto_pair") else "kto"
        if pref_ftx:
            notes.append(f"pref_ftx {pref_ftx}: LLaMA-Factory adds an SFT term; TRL's KTO trainer has none")
    elif stage == "dpo" and pref_loss not in DPO_LOSSES:
        raise UsageError(
            f"{origin}: pref_loss {pref_loss!r} is not mapped for DPO",
            hint=f"DPO losses: {', '.join(DPO_LOSSES)}",
        )
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
    rank = keys.typed("lora_rank", as_int, lf_schema.default("lora_rank"))
    return {
        "lora_rank": rank,
        "lora_alpha": keys.typed("lora_alpha", as_int, None) or 2 * rank,  # LoraArguments: alpha or 2 x rank
        "lora_dropout": keys.typed("lora_dropout", as_float, lf_schema.default("lora_dropout")),
        "lora_target": lora_target(keys.take("lora_target", "all")),
    }


def _sizes(keys: _Keys) -> dict:
    """Sequence length, batch and the learning-rate schedule, LLaMA-Factory's defaults where absent
    (per_device_train_batch_size 8, transformers' default; types here; ranges in recipe.validate)."""
    default = lf_schema.default
    return {
        "max_length": keys.typed("cutoff_len", as_int, default("cutoff_len")),
        "batch_size": keys.typed(
            "per_device_train_batch_size", as_int, default("per_device_train_batch_size")
        ),
        "gradient_accumulation_steps": keys.typed(
            "gradient_accumulation_steps", as_int, default("gradient_accumulation_steps")
        ),
        "learning_rate": keys.typed("learning_rate", as_float, default("learning_rate")),
        "lr_scheduler_type": str(keys.take("lr_scheduler_type", default("lr_scheduler_type"))),
        "warmup_ratio": keys.typed("warmup_ratio", as_float, default("warmup_ratio") or 0.0),  # None: none
        "max_grad_norm": keys.typed("max_grad_norm", as_float, default("max_grad_norm")),
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


def _not_honoured(keys: _Keys, stage: str) -> list[tuple[str, str]]:
    """Every key nothing read, with what it does in LLaMA-Factory and why the benchmark does not."""
    known = lf_schema.keys()
    out = []
    for key in keys.unread():
        if stage == "sft" and key in ("pref_beta", "pref_loss", "pref_ftx"):
            out.append((key, "a preference key in an SFT recipe: LLaMA-Factory's SFT trainer ignores it"))
        else:
            out.append((key, lf_unhonoured.reason(key, known.get(key))))
    return out


def _checked(data, origin: str) -> tuple[dict, dict, list[str]]:
    """The file's keys as LLaMA-Factory would take them, or exit 2 before anything runs."""
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: not a LLaMA-Factory training YAML (expected a mapping of keys)")
    data = dict(data)
    meta = _toolkit_meta(data, origin)
    lf_schema.refuse_other_formats(data, origin)
    lf_schema.refuse_unknown_keys(data, origin)
    notes = refuse_non_training(data, origin)
    lf_schema.refuse_bad_values(data, origin)
    refuse_unmodelled(data, str(data.get("model_name_or_path") or ""), origin)
    return data, meta, notes


def from_llamafactory(data: dict, origin: str, architecture: str | None = None) -> Recipe:
    """Map a LLaMA-Factory training YAML (already parsed) to a Recipe, listing what is not honoured."""
    data, meta, notes = _checked(data, origin)
    keys = _Keys(data, origin)
    keys.take("do_train")  # honoured: the benchmark trains (refuse_non_training noted its absence)
    unhonoured: list[tuple[str, str]] = []

    stage, finetuning = _stage_and_finetuning(keys, origin)
    arch, model_id, overridden = _architecture(keys, meta, architecture, notes)
    model = _model_fields(arch)
    precision = _precision(keys, model["model_config"], notes)
    quantization = _quantization(keys, model_id, model["model_config"], origin, notes)
    pref_loss, pref_ftx = _preference(keys, stage, origin, notes)
    training = _training(keys, unhonoured)
    # LoRA, pref_beta, then the sizes: the order a bad value has always been reported in
    lora = _lora(keys)
    pref_beta = lf_schema.default("pref_beta")
    if stage != "sft":
        pref_beta = keys.typed("pref_beta", as_float, pref_beta)
    sizes = _sizes(keys)
    if stage == "kto" and sizes["batch_size"] < 2:
        notes.append(KTO_BATCH_ONE)
    recipe = Recipe(
        stage=stage,
        finetuning_type=finetuning,
        precision=precision,
        pref_beta=pref_beta,
        pref_loss=pref_loss,
        pref_ftx=pref_ftx,
        origin=origin,
        lf_version=lf_schema.LF_VERSION,
        model_name=model_id,
        arch_overridden=overridden,
        **model,
        **_meta_fields(meta, origin),
        **lora,
        **sizes,
        **quantization,
        **training,
        **lf_unhonoured.features(data, notes),
    )
    if recipe.finetuning_type == "lora" and "lora_target" not in keys:
        notes.append("lora_target not given: LLaMA-Factory's default is all linear layers")
    unhonoured += _not_honoured(keys, stage)
    # the values' ranges are checked by recipe.validate once --set has been applied (recipes.override),
    # so that `--set recipe.batch_size=2` can rescue a file
    return replace(recipe, unhonoured=tuple(unhonoured), notes=tuple(notes))


KTO_BATCH_ONE = (
    "KTO at per_device_train_batch_size 1: LLaMA-Factory builds each example's KL pair when it prepares "
    "the data (the previous example's response), so batch 1 trains and is planned as such; TRL's "
    "KTOTrainer pairs within the batch, so a run here uses batch 2"
)
