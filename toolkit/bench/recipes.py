"""Training recipes: the users' own configurations, in LLaMA-Factory's YAML, mapped to a TRL run.

Shipped recipes live in `data/recipes/*.yaml` (`toolkit bench --list`); `--recipe FILE.yaml` reads a
user's LLaMA-Factory training file with the same importer. A recipe file is LLaMA-Factory's keys plus
an optional `toolkit:` block (name, description, architecture, profile, tokens). Every key the
benchmark cannot honour is listed with the reason, in the output and in the report: never silently
ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from toolkit.bench.losses import DPO_LOSSES, resolve_loss
from toolkit.bench.shape import LORA_MODULES, ModelShape
from toolkit.errors import UsageError
from toolkit.resources import data_texts

STAGES = ("sft", "kto", "dpo")
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


@dataclass(frozen=True)
class Recipe:
    name: str
    stage: str  # sft | kto | dpo
    model: ModelShape
    architecture: str | None = None  # shipped architecture name (None with --model)
    model_config: dict = field(default_factory=dict)  # the architecture's Hugging Face config keys
    description: str = ""
    source: str = ""
    profile: str | None = None  # the GPU class the recipe was written for
    observed_peak_gb: float | None = None
    finetuning_type: str = "lora"  # lora | full
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target: tuple[str, ...] = LORA_MODULES
    pref_beta: float = 0.1
    pref_loss: str = "sigmoid"
    pref_ftx: float = 0.0
    max_length: int = 2048
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    precision: str = "bf16"  # bf16 | fp16 | fp32 (fp32 on the CPU whatever the recipe says)
    quantization_bit: int | None = None  # 4 or 8 (bitsandbytes)
    quantization_type: str = "nf4"
    double_quantization: bool = True
    activation_checkpointing: bool = True  # LLaMA-Factory's default
    chat_format: bool = False
    eos_token: str | None = None
    pad_token: str = "<pad>"
    prompt_words: int = 0  # 0: derived from max_length
    completion_words: int = 0
    warmup_steps: int = 3
    measured_steps: int = 10
    unhonoured: tuple[tuple[str, str], ...] = ()  # (key, why) of the imported file
    notes: tuple[str, ...] = ()
    origin: str = ""

    @property
    def quantized(self) -> bool:
        return self.quantization_bit is not None

    @property
    def words(self) -> tuple[int, int]:
        """Synthetic prompt and completion lengths in words: about a fifth and a half of the context."""
        if self.prompt_words and self.completion_words:
            return self.prompt_words, self.completion_words
        return max(4, self.max_length * 2 // 10), max(8, self.max_length * 45 // 100)

    def summary(self) -> dict:
        from toolkit.bench import flops

        params = flops.total_params(self.model)
        return {
            "name": self.name,
            "stage": self.stage,
            "finetuning": (
                f"{'QLoRA' if self.quantized else 'LoRA'} r{self.lora_rank}"
                if self.finetuning_type == "lora"
                else "full"
            ),
            "architecture": self.architecture or "(from --model)",
            "parameters": params,
            "quantization": f"{self.quantization_bit}-bit {self.quantization_type}"
            if self.quantized
            else None,
            "max_length": self.max_length,
            "batch": f"{self.batch_size} x {self.gradient_accumulation_steps}",
            "profile": self.profile,
            "description": self.description,
        }


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _lora_target(value) -> tuple[str, ...]:
    if value in (None, "all", ["all"]):
        return LORA_MODULES
    items = value if isinstance(value, list) else str(value).split(",")
    items = tuple(i.strip() for i in items if str(i).strip())
    unknown = [i for i in items if i not in LORA_MODULES]
    if unknown:
        raise UsageError(
            f"lora_target {', '.join(unknown)} is not a linear module of the supported architectures",
            hint=f"use all, or some of {', '.join(LORA_MODULES)}",
        )
    return items


def from_llamafactory(data: dict, origin: str, architecture: str | None = None) -> Recipe:
    """Map a LLaMA-Factory training YAML (already parsed) to a Recipe, listing what is not honoured."""
    from toolkit.bench import architectures

    if not isinstance(data, dict):
        raise UsageError(f"{origin}: not a LLaMA-Factory training YAML (expected a mapping of keys)")
    data = dict(data)
    meta = data.pop("toolkit", None) or {}
    unknown_meta = set(meta) - TOOLKIT_KEYS
    if unknown_meta:
        raise UsageError(
            f"{origin}: unknown toolkit key(s) {', '.join(sorted(unknown_meta))}",
            hint=f"toolkit: keys are {', '.join(sorted(TOOLKIT_KEYS))}",
        )
    unhonoured: list[tuple[str, str]] = []
    notes: list[str] = []
    used: set[str] = set()

    def take(key, default=None):
        used.add(key)
        return data.get(key, default)

    stage = str(take("stage", "sft")).lower()
    if stage not in STAGES:
        raise UsageError(
            f"{origin}: stage {stage!r} is not benchmarked",
            hint=f"stages: {', '.join(STAGES)} (pt, rm and ppo are not)",
        )
    finetuning = str(take("finetuning_type", "lora")).lower()
    if finetuning not in ("lora", "full") or (finetuning == "full" and stage != "sft"):
        raise UsageError(
            f"{origin}: finetuning_type {finetuning!r} with stage {stage} is not benchmarked",
            hint="lora with sft, kto or dpo; full with sft",
        )

    # the model: a shipped architecture (toolkit.architecture, --arch, or model_name_or_path's Hub id)
    model_id = take("model_name_or_path")
    arch_name = architecture or meta.get("architecture")
    if arch_name is None and model_id:
        found = architectures.for_hub_id(str(model_id))
        arch_name = found.name if found else None
    arch = architectures.get(arch_name) if arch_name else None
    if model_id and arch is None:
        notes.append(f"model_name_or_path {model_id}: no shipped architecture; give --arch or --model")

    # precision
    bf16, fp16, pure_bf16 = (_as_bool(take(k, False)) for k in ("bf16", "fp16", "pure_bf16"))
    precision = "bf16" if (bf16 or pure_bf16) else "fp16" if fp16 else "fp32"
    if pure_bf16:
        notes.append("pure_bf16: the base is held in bf16 as with bf16 (the adapter trains in fp32)")

    # quantization
    bits = take("quantization_bit")
    method = str(take("quantization_method", "bitsandbytes")).lower()
    if bits is not None:
        bits = int(bits)
        if bits not in (4, 8) or method != "bitsandbytes":
            raise UsageError(
                f"{origin}: quantization {bits}-bit {method} is not supported",
                hint="4- or 8-bit with bitsandbytes (quantization_method: bitsandbytes)",
            )
    qtype = str(take("quantization_type", "nf4")).lower()
    double = _as_bool(take("double_quantization", True))

    # preference keys
    pref_loss = str(take("pref_loss", "sigmoid" if stage == "dpo" else "kto"))
    pref_ftx = float(take("pref_ftx", 0) or 0)
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
        if stage == "sft" and key in data:
            unhonoured.append((key, "a preference key in an SFT recipe"))

    optim = str(take("optim", "adamw_torch"))
    gc_off = _as_bool(take("disable_gradient_checkpointing", False))
    warmup_steps = take("warmup_steps")
    if warmup_steps:
        unhonoured.append(("warmup_steps", f"{warmup_steps}: the learning-rate warm-up follows warmup_ratio"))
    recipe = Recipe(
        name=str(meta.get("name") or Path(origin).stem),
        stage=stage,
        model=arch.shape if arch else ModelShape(1, 1, 1, 1, 1, 1),
        architecture=arch.name if arch else None,
        model_config=dict(arch.config) if arch else {},
        description=str(meta.get("description", "")),
        source=str(meta.get("source", origin)),
        profile=meta.get("profile"),
        observed_peak_gb=meta.get("observed_peak_gb"),
        finetuning_type=finetuning,
        lora_rank=int(take("lora_rank", 8)),
        lora_alpha=int(take("lora_alpha", 2 * int(data.get("lora_rank", 8)))),
        lora_dropout=float(take("lora_dropout", 0.0)),
        lora_target=_lora_target(take("lora_target", "all")),
        pref_beta=float(take("pref_beta", 0.1)),
        pref_loss=pref_loss,
        pref_ftx=pref_ftx,
        max_length=int(take("cutoff_len", 2048)),
        batch_size=int(take("per_device_train_batch_size", 1)),
        gradient_accumulation_steps=int(take("gradient_accumulation_steps", 1)),
        learning_rate=float(take("learning_rate", 5e-5)),
        lr_scheduler_type=str(take("lr_scheduler_type", "cosine")),
        warmup_ratio=float(take("warmup_ratio", 0.0)),
        max_grad_norm=float(take("max_grad_norm", 1.0)),
        optim=optim,
        precision=precision,
        quantization_bit=bits,
        quantization_type=qtype,
        double_quantization=double,
        activation_checkpointing=not gc_off,
        chat_format=bool(meta.get("chat_format", False)),
        eos_token=meta.get("eos_token"),
        pad_token=str(meta.get("pad_token", "<pad>")),
        origin=origin,
    )
    if recipe.finetuning_type == "lora" and "lora_target" not in data:
        notes.append("lora_target not given: LLaMA-Factory's default is all linear layers")
    for key in sorted(set(data) - used):
        why = NOT_FOR_A_BENCHMARK.get(key, "not a key this benchmark maps to TRL")
        unhonoured.append((key, why))
    validate(recipe)
    return replace(recipe, unhonoured=tuple(unhonoured), notes=tuple(notes))


def validate(recipe: Recipe) -> None:
    problems = []
    for name in ("max_length", "batch_size", "gradient_accumulation_steps", "measured_steps", "lora_rank"):
        if getattr(recipe, name) < 1:
            problems.append(f"{name} must be at least 1, not {getattr(recipe, name)}")
    if recipe.warmup_steps < 0:
        problems.append(f"warmup_steps must be at least 0, not {recipe.warmup_steps}")
    if recipe.stage == "kto" and recipe.batch_size < 2:
        problems.append("KTO needs per_device_train_batch_size of at least 2 (its KL term mixes the batch)")
    if recipe.precision not in ("bf16", "fp16", "fp32"):
        problems.append(f"precision {recipe.precision!r}: bf16, fp16 or fp32")
    if recipe.eos_token is not None and recipe.eos_token == recipe.pad_token:
        problems.append(
            f"pad token {recipe.pad_token!r} is the EOS token: a model trained so never learns to stop"
        )
    if problems:
        raise UsageError(f"recipe {recipe.name}: {'; '.join(problems)}")


def parse_yaml(text: str, origin: str, architecture: str | None = None) -> Recipe:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"{origin}{where}: not valid YAML", hint=str(getattr(err, "problem", err))) from None
    return from_llamafactory(data, origin, architecture)


@cache
def shipped() -> dict[str, Recipe]:
    found = (parse_yaml(text, name) for name, text in data_texts("recipes", ".yaml"))
    return {r.name: r for r in found}


def load(spec: str, architecture: str | None = None) -> Recipe:
    """A shipped recipe by name, or a LLaMA-Factory YAML file by path."""
    if spec in shipped() and architecture is None:
        return shipped()[spec]
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot read recipe {spec}: {err.strerror or err}") from None
        return parse_yaml(text, str(path), architecture)
    if spec in shipped():
        return replace_architecture(shipped()[spec], architecture)
    raise UsageError(
        f"unknown recipe {spec!r}",
        hint=f"shipped recipes: {', '.join(shipped())} (toolkit bench --list), or a LLaMA-Factory YAML file",
    )


def replace_architecture(recipe: Recipe, name: str | None) -> Recipe:
    from toolkit.bench import architectures

    if not name:
        return recipe
    arch = architectures.get(name)
    return replace(recipe, architecture=arch.name, model=arch.shape, model_config=dict(arch.config))


def sized(recipe: Recipe, shape: ModelShape | None, max_length: int, max_batch: int, steps: tuple[int, int]):
    """The recipe at a smaller scale: `shape` (None keeps the architecture's) with the architecture's
    head grouping, at most `max_length` tokens and `max_batch` sequences, no accumulation."""
    warmup, measured = steps
    if shape is None:
        return replace(recipe, warmup_steps=warmup, measured_steps=measured)
    ratio = max(1, recipe.model.num_attention_heads // max(1, recipe.model.num_key_value_heads))
    kv = max(1, shape.num_attention_heads // ratio)
    while shape.num_attention_heads % kv:
        kv -= 1
    small = replace(
        shape,
        num_key_value_heads=kv,
        attention_head_dim=None,
        tie_word_embeddings=recipe.model.tie_word_embeddings,
    )
    batch = min(recipe.batch_size, max_batch)
    if recipe.stage == "kto":
        batch = max(2, batch)
    return replace(
        recipe,
        model=small,
        max_length=min(recipe.max_length, max_length),
        batch_size=batch,
        gradient_accumulation_steps=1,
        warmup_steps=warmup,
        measured_steps=measured,
        notes=(
            *recipe.notes,
            f"scaled down for this run: {small.num_hidden_layers} layers, hidden {small.hidden_size}, "
            f"vocabulary {small.vocab_size}, at most {max_length} tokens, batch {batch}, no accumulation "
            "(the recipe's own sizes run at scale full)",
        ),
    )


def override(recipe: Recipe, assignments: list[str]) -> Recipe:
    """`--set recipe.FIELD=VALUE` / `recipe.model.FIELD=VALUE`.

    E.g. shrink a model to test a recipe (`recipe.model.num_hidden_layers=2`), or run a 4-bit recipe
    unquantized (`recipe.quantization_bit=none`)."""
    for item in assignments:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        holder = recipe.model if path[0] == "model" and len(path) == 2 else recipe
        name = path[-1]
        if (
            not sep
            or len(path) > 2
            or (len(path) == 2 and path[0] != "model")
            or name
            in (
                "model",
                "unhonoured",
                "notes",
                "model_config",
            )
        ):
            raise UsageError(
                f"cannot apply --set recipe.{item}",
                hint="use recipe.FIELD=VALUE or recipe.model.FIELD=VALUE, e.g. recipe.max_length=512",
            )
        if name not in holder.__dataclass_fields__:
            raise UsageError(
                f"unknown recipe setting {key!r}",
                hint="fields: " + ", ".join(f for f in holder.__dataclass_fields__ if f not in ("notes",)),
            )
        current = getattr(holder, name)
        try:
            if raw.strip().lower() in ("none", "null", "") and name in (
                "quantization_bit",
                "eos_token",
                "profile",
            ):
                value = None
            elif isinstance(current, bool):
                value = _as_bool(raw)
            elif name == "lora_target":
                value = _lora_target(raw)
            elif current is None or name == "quantization_bit":
                value = int(raw) if name == "quantization_bit" else raw
            else:
                value = type(current)(raw)
        except (TypeError, ValueError):
            raise UsageError(f"--set recipe.{key}: {raw!r} is not a valid {type(current).__name__}") from None
        if holder is recipe:
            recipe = replace(recipe, **{name: value})
        else:
            recipe = replace(recipe, model=replace(recipe.model, **{name: value}))
        recipe = replace(recipe, notes=(*recipe.notes, f"--set recipe.{key}={raw}"))
    validate(recipe)
    return recipe
