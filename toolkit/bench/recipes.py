"""Training recipes: the users' own configurations, in LLaMA-Factory's YAML, mapped to a TRL run.

Shipped recipes live in `data/recipes/*.yaml` (`toolkit bench --list`); `--recipe FILE.yaml` reads a
user's LLaMA-Factory training file with the same importer. A recipe file is LLaMA-Factory's keys plus
an optional `toolkit:` block (name, description, architecture, profile, tokens). Every key the
benchmark cannot honour is listed with the reason, in the output and in the report: never silently
ignored.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

from toolkit.bench.llamafactory import from_llamafactory
from toolkit.bench.recipe import STAGES, Recipe, as_bool, as_float, as_int, lora_target, validate
from toolkit.bench.shape import ModelShape
from toolkit.errors import UsageError
from toolkit.inputs import SETTINGS_CAP, read_text
from toolkit.resources import data_texts

__all__ = [
    "STAGES",
    "Recipe",
    "from_llamafactory",
    "load",
    "override",
    "parse_yaml",
    "shipped",
    "sized",
    "validate",
]


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
    found = [
        replace(parse_yaml(text, name), source_format="shipped")
        for name, text in data_texts("recipes", ".yaml")
    ]
    for recipe in found:
        validate(recipe)
    return {r.name: r for r in found}


def load(spec: str, architecture: str | None = None) -> Recipe:
    """A shipped recipe by name, or a LLaMA-Factory YAML file by path (at most 4 MiB of UTF-8). A file's
    types are checked here, its values' ranges by `override`, after `--set recipe.*` is applied."""
    if spec in shipped() and architecture is None:
        return shipped()[spec]
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        text = read_text(path, "the recipe", SETTINGS_CAP, UsageError, hint="a LLaMA-Factory training YAML")
        return parse_yaml(text, str(path), architecture)
    if spec in shipped():
        return replace_architecture(shipped()[spec], architecture)
    import difflib

    close = difflib.get_close_matches(spec, list(shipped()), n=1, cutoff=0.6)
    raise UsageError(
        f"unknown recipe {spec!r}",
        hint=(f"did you mean {close[0]!r}? " if close else "")
        + f"shipped recipes: {', '.join(shipped())} (toolkit bench --list), or a LLaMA-Factory YAML file",
    )


def replace_architecture(recipe: Recipe, name: str | None) -> Recipe:
    from toolkit.bench import architectures

    if not name:
        return recipe
    arch = architectures.get(name)
    notes = recipe.notes
    overridden = bool(recipe.architecture and recipe.architecture != arch.name)
    if overridden:
        notes = (
            *notes,
            f"--arch {arch.name} replaces the recipe's model {recipe.model_name or recipe.architecture}: "
            f"planned and run as {arch.name}",
        )
    return replace(
        recipe,
        architecture=arch.name,
        model=arch.shape,
        model_config=dict(arch.config),
        notes=notes,
        arch_overridden=overridden or recipe.arch_overridden,
    )


def sized(recipe: Recipe, shape: ModelShape | None, max_length: int, max_batch: int, steps: tuple[int, int]):
    """The recipe at a smaller scale: `shape` (None keeps the architecture's) with the architecture's
    head grouping, at most `max_length` tokens and `max_batch` sequences, no accumulation."""
    warmup, measured = steps
    if shape is None:
        if recipe.stage == "kto" and recipe.batch_size < 2:  # TRL's KTOTrainer pairs within the batch
            return replace(
                recipe,
                batch_size=2,
                warmup_steps=warmup,
                measured_steps=measured,
                notes=(
                    *recipe.notes,
                    "run at batch 2: TRL's KTOTrainer builds the KL pairs within the batch",
                ),
            )
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
                "deepspeed",
                "source_format",
                "lf_version",
                "arch_overridden",
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
                value = as_bool(raw)
            elif name == "lora_target":
                value = lora_target(raw)
            elif name == "quantization_bit" or isinstance(current, int):
                value = as_int(raw)
            elif isinstance(current, float) or name == "observed_peak_gb":
                value = as_float(raw)
            elif current is None or isinstance(current, str):
                value = raw
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
