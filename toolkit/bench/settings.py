"""Typed settings of the reference loads, loaded from `data/bench.toml`."""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass, fields
from functools import cache

from toolkit.bench.shape import ModelShape
from toolkit.resources import data_text

SCALES = ("tiny", "small", "full")


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
    """The `kto_lora` load's sizes at one scale. The load *is* the shipped `kto-lora-cpu` recipe (the
    users' LLaMA-Factory KTO hyper-parameters, docs/REFERENCE.md) resized by these; a hyper-parameter
    left None here is the recipe's, one set (`--set kto_lora.pref_loss=kto`) replaces it for the run."""

    model: ModelShape
    batch_size: int
    max_length: int
    prompt_words: int
    completion_words: int
    warmup_steps: int
    measured_steps: int
    # None: the recipe's value
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    lora_target: str | None = None  # all, or q_proj,v_proj,... (PEFT names)
    pref_beta: float | None = None
    pref_loss: str | None = None
    learning_rate: float | None = None
    lr_scheduler_type: str | None = None
    max_grad_norm: float | None = None
    gradient_accumulation_steps: int | None = None
    optim: str | None = None
    # LLaMA-Factory checkpoints activations unless told not to; the GPU scale does the same.
    activation_checkpointing: bool = False

    def recipe_overrides(self) -> dict:
        """The hyper-parameters this scale (or --set) gives, by Recipe field name."""
        names = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "pref_beta", "pref_loss")
        names += (
            "learning_rate",
            "lr_scheduler_type",
            "max_grad_norm",
            "gradient_accumulation_steps",
            "optim",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class InferenceSettings:
    model: ModelShape
    prompt_tokens: int
    new_tokens: int
    batch_sizes: tuple[int, ...]
    warmup: int
    repeats: int


@dataclass(frozen=True)
class TrainSettings:
    """How a recipe (`--recipe`) is sized at this scale: `model` None runs the recipe's own architecture
    and sizes; otherwise its architecture at this shape (head grouping kept), capped sequence and batch."""

    warmup_steps: int
    measured_steps: int
    max_length: int = 0  # 0: the recipe's
    max_batch_size: int = 0  # 0: the recipe's
    model: ModelShape | None = None


@dataclass(frozen=True)
class VectorSettings:
    """The vector load (workloads/vectors.py): synthetic points, HNSW parameters, query counts."""

    points: int
    dim: int
    queries: int
    batch_size: int  # queries per batched request
    upsert_batch: int  # points per upsert request
    m: int
    ef_construct: int
    ef: int  # hnsw_ef at query time
    categories: int  # values of the filtered payload field
    warmup: int  # untimed HNSW queries before the timed ones
    intrinsic_dim: int = 32  # the data's intrinsic dimension (see workloads/vectors.py)
    noise: float = 0.1
    full_scan_threshold_kb: int = 10  # Qdrant's default 10000 would make small segments skip the graph
    indexing_threshold_kb: int = 10  # segments above this get HNSW (Qdrant's default 20000)
    min_recall_at_10: float = 0.95
    build_timeout_seconds: int = 3600  # server: longest wait for the collection to turn green


@dataclass(frozen=True)
class AllreduceSettings:
    """The all-reduce load of `--gpus N` runs (workloads/allreduce.py): message sizes, float32."""

    sizes_bytes: tuple[int, ...]
    warmup: int
    repeats: int


@dataclass(frozen=True)
class Scale:
    name: str
    matmul: MatmulSettings
    memory_bandwidth: MemoryBandwidthSettings
    kto_lora: KtoSettings
    inference: InferenceSettings
    vectors: VectorSettings
    train: TrainSettings
    allreduce: AllreduceSettings


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
    for name in ("batch_sizes", "sizes_bytes"):
        if name in values:
            values[name] = tuple(values[name])
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
            vectors=_build(VectorSettings, raw["vectors"]),
            train=_build(TrainSettings, raw["train"]),
            allreduce=_build(AllreduceSettings, raw["allreduce"]),
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
    return parse_settings(data_text("bench.toml"))


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
        if current is None:  # an optional field: the value takes its declared type
            current = _declared_type(type(leaf), field_name)()
        if hasattr(current, "__dataclass_fields__"):
            raise UsageError(f"--set {key}: set its fields one by one, e.g. {key}.hidden_size=256")
        try:
            value = _parse_value(current, raw)
        except (TypeError, ValueError):
            raise UsageError(f"--set {key}: {raw!r} is not a valid {type(current).__name__}") from None
        new_leaf = replace(leaf, **{field_name: value})
        if len(path) == 3:
            new_leaf = replace(target, **{path[1]: new_leaf})
        scale = replace(scale, **{path[0]: new_leaf})
    validate(scale)
    return scale


def _parse_value(current, raw: str):
    """`raw` as the type of `current`, strictly: `maybe` is no bool, 4.5 no int, nan no float."""
    from toolkit.bench.recipe import as_bool, as_float, as_int

    if isinstance(current, bool):
        return as_bool(raw)
    if isinstance(current, tuple):
        return tuple(as_int(v) for v in raw.split(","))
    if isinstance(current, int):
        return as_int(raw)
    if isinstance(current, float):
        return as_float(raw)
    return type(current)(raw)


def _declared_type(cls, name: str) -> type:
    """`int` of a field declared `int | None`."""
    hint = typing.get_type_hints(cls)[name]
    return next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))


# (load, field) -> smallest value that makes sense
MINIMUMS = {
    ("kto_lora", "batch_size"): 2,  # KTO's KL term needs more than one example per device batch
    ("inference", "new_tokens"): 2,  # decode speed is measured after the first token
}


def validate(scale: Scale) -> None:
    """Refuse sizes no load can run with, before anything runs (exit 2, one message)."""
    from toolkit.errors import UsageError

    for load in ("matmul", "memory_bandwidth", "kto_lora", "inference", "vectors", "allreduce"):
        settings = getattr(scale, load)
        for name, value in vars(settings).items():
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            minimum = MINIMUMS.get((load, name), 0 if name in ("warmup", "warmup_steps") else 1)
            if value < minimum:
                raise UsageError(f"{load}.{name} must be at least {minimum}, not {value}")
        model = getattr(settings, "model", None)
        for name, value in (vars(model) if model is not None else {}).items():
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise UsageError(f"{load}.model.{name} must be at least 1, not {value}")
    if any(b < 1 for b in scale.inference.batch_sizes):
        raise UsageError("inference.batch_sizes must all be at least 1")
    if not scale.allreduce.sizes_bytes or any(b < 4 for b in scale.allreduce.sizes_bytes):
        raise UsageError("allreduce.sizes_bytes must all be at least 4 (one float32)")
    from toolkit.bench.vector_store import MAX_DIM

    vectors = scale.vectors
    if vectors.dim > MAX_DIM:
        raise UsageError(
            f"vectors.dim must be at most {MAX_DIM}, not {vectors.dim}",
            hint="Qdrant's limit for dense vectors",
        )
    if not 0 < vectors.min_recall_at_10 <= 1 or vectors.noise < 0:
        raise UsageError("vectors.min_recall_at_10 must be in (0, 1] and vectors.noise at least 0")
    _validate_kto(scale.kto_lora)


def _validate_kto(kto: KtoSettings) -> None:
    """The hyper-parameters the scale or --set gives the kto_lora load, checked as a recipe's would be."""
    from toolkit.bench.losses import resolve_loss
    from toolkit.bench.recipe import lora_target

    if kto.pref_loss is not None:
        resolve_loss(kto.pref_loss)
    if kto.lora_target is not None:
        lora_target(kto.lora_target)
