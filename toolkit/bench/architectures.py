"""Model architectures shipped as small JSON facts (`data/architectures/*.json`), and models built from them.

Each file is the architecture part of a Hugging Face `config.json` (hidden size, layers, heads, vocabulary,
model-specific switches) plus a `_toolkit` block (name, the Hub ids it stands for, where the facts come
from). `build_model` creates that architecture with random weights on the device, directly in the run's
dtype, so FLOPs and memory equal the real model's without any download. `--model` loads real weights
from a local folder or the local Hugging Face cache instead (`resolve_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from toolkit.bench.shape import ModelShape
from toolkit.errors import UsageError
from toolkit.resources import data_texts

SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    hf_ids: tuple[str, ...]
    source: str
    config: dict  # the Hugging Face config keys, model_type included

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def shape(self) -> ModelShape:
        return shape_from_config(self.config)


def shape_from_config(config: dict) -> ModelShape:
    """The matmul-relevant shape of a Hugging Face config (Llama, Mistral, Gemma, Qwen layouts)."""
    missing = [k for k in SHAPE_KEYS if k not in config and k != "num_key_value_heads"]
    if missing:
        raise UsageError(
            f"model config of type {config.get('model_type', '?')!r} lacks {', '.join(missing)}",
            hint="the benchmark's FLOP and memory counts need a decoder with Llama-style layers",
        )
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    return ModelShape(
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
        num_hidden_layers=int(config["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(config.get("num_key_value_heads") or heads),
        vocab_size=int(config["vocab_size"]),
        attention_head_dim=int(head_dim)
        if head_dim and int(head_dim) != config["hidden_size"] // heads
        else None,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def _parse(text: str, origin: str) -> Architecture:
    data = json.loads(text)
    meta = data.pop("_toolkit", {})
    if "model_type" not in data:
        raise ValueError(f"{origin}: no model_type")
    return Architecture(
        name=meta.get("name") or Path(origin).stem,
        title=meta.get("title", ""),
        hf_ids=tuple(meta.get("hf_ids", ())),
        source=meta.get("source", origin),
        config=data,
    )


@cache
def shipped() -> dict[str, Architecture]:
    archs = (_parse(text, name) for name, text in data_texts("architectures", ".json"))
    return {a.name: a for a in archs}


def get(name: str) -> Architecture:
    archs = shipped()
    if name in archs:
        return archs[name]
    for arch in archs.values():  # a Hub id names its architecture too
        if name in arch.hf_ids:
            return arch
    local = from_local_config(name)
    if local is not None:
        return local
    raise UsageError(
        f"unknown architecture {name!r}",
        hint=f"shipped architectures: {', '.join(archs)}; or a folder with its config.json",
    )


def for_hub_id(model_id: str) -> Architecture | None:
    """The shipped architecture a Hub id stands for; else the config.json of that id in a local Hugging
    Face cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub) or of a local folder; else None."""
    for arch in shipped().values():
        if model_id in arch.hf_ids or model_id.lower() in (i.lower() for i in arch.hf_ids):
            return arch
    return from_local_config(model_id)


def from_local_config(spec: str) -> Architecture | None:
    """An architecture read from a local config.json (folder, file, or Hub id in the local cache)."""
    from toolkit.bench import model_config

    found = model_config.local_config(spec)
    if found is None:
        return None
    try:
        config = model_config.read(found)
    except (OSError, ValueError) as e:
        raise UsageError(
            f"{found}: cannot read it as a model config ({e})", hint="give a config.json"
        ) from None
    if "model_type" not in config:
        raise UsageError(f"{found}: no model_type", hint="a Hugging Face config.json names its model_type")
    return Architecture(
        name=spec, title=f"config.json at {found}", hf_ids=(spec,), source=str(found), config=config
    )


def sized_config(config: dict, shape: ModelShape, tokenizer, max_positions: int) -> dict:
    """The architecture's config with `shape` applied and the tokenizer's special tokens."""
    cfg = dict(config)
    cfg.update({k: getattr(shape, k) for k in SHAPE_KEYS})
    cfg["head_dim"] = shape.head_dim
    cfg["tie_word_embeddings"] = shape.tie_word_embeddings
    cfg["vocab_size"] = max(shape.vocab_size, len(tokenizer))
    cfg["max_position_embeddings"] = max(int(cfg.get("max_position_embeddings", 0)), max_positions)
    cfg["pad_token_id"] = tokenizer.pad_token_id
    cfg["bos_token_id"] = tokenizer.bos_token_id
    cfg["eos_token_id"] = tokenizer.eos_token_id
    return cfg


def attention_kwargs(model_type: str | None) -> dict:
    """How a model is loaded for training: Gemma 2 soft-caps its attention scores, which SDPA cannot do.
    transformers up to 5.17 still gives it SDPA (the soft-capping silently dropped), later releases
    eager; LLaMA-Factory forces eager when FlashAttention-2 is absent. Eager everywhere, so the trained
    model is the real one and the memory plan's attention layout is the one that ran."""
    return {"attn_implementation": "eager"} if model_type == "gemma2" else {}


def build_model(config: dict, dtype, device: str, seed: int = 0):
    """A causal LM of this config with random weights, allocated on `device` directly in `dtype`
    (building in fp32 and converting would need 1.5x the memory at full size)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    hf_config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hf_config, **attention_kwargs(config.get("model_type")))
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = config.get("pad_token_id")
    return model


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_model(spec: str) -> tuple[Path, str]:
    """(folder holding config.json, where it was found) for `--model PATH_OR_ID`; nothing is downloaded."""
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(
                f"--model {spec}: {path} has no config.json",
                hint="give a folder written by save_pretrained, or a Hub id present in the local cache",
            )
        return path.resolve(), f"local folder {path.resolve()}"
    cache_dir = hub_cache_dir()
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(spec, local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            folder = None
        if folder and (folder / "config.json").is_file():
            return folder, f"local Hugging Face cache {cache_dir} ({spec})"
    raise UsageError(
        f"--model {spec}: not found (looked for the folder {path.resolve()} and for {spec} in the "
        f"local Hugging Face cache {cache_dir})",
        hint="nothing is downloaded: fetch the model beforehand (it lands in the cache), or give its folder; "
        "without --model the recipe runs synthetic weights of the exact architecture",
    )


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
