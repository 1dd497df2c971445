"""A training recipe: what one `train:NAME` load runs, as LLaMA-Factory would name it, and the value
parsers the importer and `--set recipe.FIELD=VALUE` share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from toolkit.bench.shape import LORA_MODULES, ModelShape
from toolkit.errors import UsageError

STAGES = ("sft", "kto", "dpo")


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
    # what the LLaMA-Factory file asks of its trainer beyond the TRL run (the memory plan reads them)
    source_format: str = "llamafactory"  # llamafactory (--recipe FILE) | shipped (toolkit/data/recipes)
    lf_version: str = ""  # the LLaMA-Factory schema the keys were checked against
    model_name: str | None = None  # model_name_or_path as the file writes it
    arch_overridden: bool = False  # --arch replaced the model the file names
    quantization_method: str = "bnb"  # as LLaMA-Factory spells it
    deepspeed: dict | None = None  # {"stage", "offload_optimizer", "offload_param", "config"}
    liger: bool = False  # enable_liger_kernel
    unsloth: bool = False  # use_unsloth
    unsloth_gc: bool = False  # use_unsloth_gc
    packing: bool = False  # packing or neat_packing
    pure_bf16: bool = False
    ref_model: str | None = None
    upcast_lmhead_output: bool = False
    upcast_layernorm: bool = False
    flash_attn: str = "auto"
    optimizer_variant: str | None = None  # galore | apollo | badam | adam_mini | muon
    fp8: bool = False

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


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def as_bool(value) -> bool:
    """true/false (yes/no, on/off, 1/0); anything else is a ValueError, never read as false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise ValueError(f"must be true or false, not {value!r}")


def as_int(value) -> int:
    """A whole number: an int or its digits; true, 4.5 and "abc" are ValueErrors, never rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"must be a whole number, not {value!r}")


def as_float(value) -> float:
    """A finite number (an int, a float or its text); true, .nan, inf and "abc" are ValueErrors."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {value!r}")
    return number


def lora_target(value) -> tuple[str, ...]:
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


# the recipe's fields under the LLaMA-Factory key a user wrote, for the messages
FILE_KEYS = {"max_length": "cutoff_len", "batch_size": "per_device_train_batch_size"}
# (field, lowest, highest, lowest allowed?, highest allowed?) of the real-valued settings
RANGES = (
    ("lora_dropout", 0.0, 1.0, True, False),
    ("learning_rate", 0.0, math.inf, False, False),
    ("warmup_ratio", 0.0, 1.0, True, True),
    ("max_grad_norm", 0.0, math.inf, True, False),
    ("pref_beta", 0.0, math.inf, False, False),
    ("pref_ftx", 0.0, math.inf, True, False),
)
# a recipe's name is a load's name (`train:NAME`), a file name and a table cell: plain characters only
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,79}")


def _range_problem(value, low: float, high: float, with_low: bool, with_high: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    too_low = value < low or (value == low and not with_low)
    too_high = value > high or (value == high and not with_high)
    if too_low or too_high:
        bounds = f"{'[' if with_low else '('}{low:g}, {high:g}{']' if with_high else ')'}"
        return f"must be in {bounds}, not {value!r}"
    return None


def _value_problems(recipe: Recipe) -> list[str]:
    problems = []
    for name in ("max_length", "batch_size", "gradient_accumulation_steps", "measured_steps", "lora_rank"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{FILE_KEYS.get(name, name)}: must be a whole number, not {value!r}")
        elif value < 1:
            problems.append(f"{name} must be at least 1, not {value}")
    for name, *bounds in RANGES:
        why = _range_problem(getattr(recipe, name), *bounds)
        if why:
            problems.append(f"{name}: {why}")
    if recipe.quantization_bit not in (None, 4, 8):
        problems.append(f"quantization_bit: must be 4 or 8 (or none), not {recipe.quantization_bit!r}")
    if not NAME.fullmatch(recipe.name):
        problems.append(
            f"name {recipe.name!r}: letters, digits and . _ + - only (it names the load and its files); "
            "set toolkit: {name: ...} in the file"
        )
    return problems


def validate(recipe: Recipe) -> None:
    """Every value the recipe runs with, checked before any load runs (exit 2, every problem at once)."""
    problems = _value_problems(recipe)
    if recipe.warmup_steps < 0:
        problems.append(f"warmup_steps must be at least 0, not {recipe.warmup_steps}")
    if recipe.precision not in ("bf16", "fp16", "fp32"):
        problems.append(f"precision {recipe.precision!r}: bf16, fp16 or fp32")
    if recipe.eos_token is not None and recipe.eos_token == recipe.pad_token:
        problems.append(
            f"pad token {recipe.pad_token!r} is the EOS token: a model trained so never learns to stop"
        )
    if problems:
        where = recipe.origin or f"recipe {recipe.name}"
        raise UsageError(
            f"{where}: {'; '.join(problems)}",
            hint="fix the recipe file, or override with --set recipe.FIELD=VALUE",
        )
