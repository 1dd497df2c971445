"""Typed settings of the reference loads, loaded from `data/bench.toml`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources

SCALES = ("tiny", "small", "full")


@dataclass(frozen=True)
class ModelShape:
    """A Llama-architecture shape; the model is built with random weights at run time."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class MatmulSettings:
    size: int
    warmup: int
    repeats: int


@dataclass(frozen=True)
class MemoryBandwidthSettings:
    bytes: int
    warmup: int
    repeats: int


@dataclass(frozen=True)
class KtoSettings:
    """Modelled on the users' LLaMA-Factory KTO recipe (REFERENCE.md); sizes per scale."""

    model: ModelShape
    batch_size: int
    max_length: int
    prompt_words: int
    completion_words: int
    warmup_steps: int
    measured_steps: int
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target: str = "all"
    pref_beta: float = 0.05
    pref_loss: str = "kto_pair"  # LLaMA-Factory's value in the users' recipe; mapped in kto_lora.py
    learning_rate: float = 5.0e-05
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    optim: str = "adamw_torch"
    # LLaMA-Factory checkpoints activations unless told not to; the GPU scale does the same.
    activation_checkpointing: bool = False


@dataclass(frozen=True)
class InferenceSettings:
    model: ModelShape
    prompt_tokens: int
    new_tokens: int
    batch_sizes: tuple[int, ...]
    warmup: int
    repeats: int


@dataclass(frozen=True)
class Scale:
    name: str
    matmul: MatmulSettings
    memory_bandwidth: MemoryBandwidthSettings
    kto_lora: KtoSettings
    inference: InferenceSettings


@dataclass(frozen=True)
class Floor:
    values: dict[str, float]  # "<cpu|gpu>_<scale>" -> fraction of the bound
    basis: str
    uncalibrated: tuple[str, ...] = ()

    def get(self, kind: str, scale: str) -> float | None:
        return self.values.get(f"{kind}_{scale}")


@dataclass(frozen=True)
class BenchSettings:
    scales: dict[str, Scale]
    floors: dict[str, Floor]
    warn_ratio: float


def _build(cls, raw: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    values = dict(raw)
    if "model" in values:
        values["model"] = _build(ModelShape, values["model"])
    if "batch_sizes" in values:
        values["batch_sizes"] = tuple(values["batch_sizes"])
    return cls(**values)


def parse_settings(text: str) -> BenchSettings:
    data = tomllib.loads(text)
    scales = {}
    for name, raw in data["scales"].items():
        scales[name] = Scale(
            name=name,
            matmul=_build(MatmulSettings, raw["matmul"]),
            memory_bandwidth=_build(MemoryBandwidthSettings, raw["memory_bandwidth"]),
            kto_lora=_build(KtoSettings, raw["kto_lora"]),
            inference=_build(InferenceSettings, raw["inference"]),
        )
    floors = {}
    for name, raw in data["floors"].items():
        values = {k: float(v) for k, v in raw.items() if k not in ("basis", "uncalibrated")}
        bad = [
            k for k in values if k.partition("_")[::2] not in {(d, s) for d in ("cpu", "gpu") for s in SCALES}
        ]
        if bad:
            raise ValueError(f"floors.{name}: keys must be <cpu|gpu>_<scale>, not {bad}")
        floors[name] = Floor(values, raw["basis"], tuple(raw.get("uncalibrated", ())))
    return BenchSettings(scales=scales, floors=floors, warn_ratio=float(data["verdict"]["warn_ratio"]))


@cache
def load_settings() -> BenchSettings:
    text = resources.files("toolkit").joinpath("data/bench.toml").read_text(encoding="utf-8")
    return parse_settings(text)


def override(scale: Scale, assignments: list[str]) -> Scale:
    """Apply `load.field=value` (or `load.model.field=value`) to a scale; values take the field's type.

    Lets a user size a load without editing the data file, e.g. `kto_lora.batch_size=8`.
    """
    from dataclasses import replace

    from toolkit.errors import UsageError

    for item in assignments:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) not in (2, 3) or not hasattr(scale, path[0]) or path[0] == "name":
            raise UsageError(
                f"cannot apply --set {item!r}",
                hint="use LOAD.FIELD=VALUE, e.g. kto_lora.batch_size=8 or "
                "inference.model.num_hidden_layers=4",
            )
        target = getattr(scale, path[0])
        holders = [target] if len(path) == 2 else [target, getattr(target, path[1], None)]
        leaf = holders[-1]
        field_name = path[-1]
        if (
            leaf is None
            or not hasattr(leaf, "__dataclass_fields__")
            or field_name not in leaf.__dataclass_fields__
        ):
            raise UsageError(
                f"unknown setting {key!r}",
                hint=f"fields of {path[0]}: {', '.join(target.__dataclass_fields__)}",
            )
        current = getattr(leaf, field_name)
        if hasattr(current, "__dataclass_fields__"):
            raise UsageError(f"--set {key}: set its fields one by one, e.g. {key}.hidden_size=256")
        try:
            if isinstance(current, bool):
                value = raw.lower() in ("1", "true", "yes")
            elif isinstance(current, tuple):
                value = tuple(int(v) for v in raw.split(","))
            else:
                value = type(current)(raw)
        except (TypeError, ValueError):
            raise UsageError(f"--set {key}: {raw!r} is not a valid {type(current).__name__}") from None
        new_leaf = replace(leaf, **{field_name: value})
        if len(path) == 3:
            new_leaf = replace(target, **{path[1]: new_leaf})
        scale = replace(scale, **{path[0]: new_leaf})
    validate(scale)
    return scale


# (load, field) -> smallest value that makes sense
MINIMUMS = {
    ("kto_lora", "batch_size"): 2,  # KTO's KL term needs more than one example per device batch
    ("inference", "new_tokens"): 2,  # decode speed is measured after the first token
}


def validate(scale: Scale) -> None:
    """Refuse sizes no load can run with, before anything runs (exit 2, one message)."""
    from toolkit.errors import UsageError

    for load in ("matmul", "memory_bandwidth", "kto_lora", "inference"):
        settings = getattr(scale, load)
        for name, value in vars(settings).items():
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            minimum = MINIMUMS.get((load, name), 0 if name in ("warmup", "warmup_steps") else 1)
            if value < minimum:
                raise UsageError(f"{load}.{name} must be at least {minimum}, not {value}")
        model = getattr(settings, "model", None)
        for name, value in (vars(model) if model is not None else {}).items():
            if isinstance(value, int) and value < 1:
                raise UsageError(f"{load}.model.{name} must be at least 1, not {value}")
    if any(b < 1 for b in scale.inference.batch_sizes):
        raise UsageError("inference.batch_sizes must all be at least 1")
    from toolkit.bench.workloads.kto_lora import resolve_loss

    resolve_loss(scale.kto_lora.pref_loss)
