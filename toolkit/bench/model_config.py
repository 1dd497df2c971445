"""What a Hugging Face `config.json` says about a model's size: parameters in total and per token (MoE
experts counted once each in the total, only the routed ones in the active count), and where a local
config.json lives (a folder, or the Hugging Face cache's `models--org--name/snapshots/*/config.json`).

Counted per layer, in the model's own module names:

- attention: grouped-query q/k/v/o (`hidden x heads*head_dim`, `hidden x kv_heads*head_dim` twice,
  `heads*head_dim x hidden`), or DeepSeek's multi-head latent attention (MLA: q through an optional
  `q_lora_rank` bottleneck to heads x (nope + rope), kv_a `hidden x (kv_lora_rank + rope)`, kv_b
  `kv_lora_rank x heads x (nope + v)`, o `heads*v x hidden`, plus the bottlenecks' norms);
- MLP: dense `3 x hidden x intermediate` (gate, up, down); a sparse layer has `experts x 3 x hidden x
  moe_intermediate` routed weights, shared experts (DeepSeek's `n_shared_experts x moe_intermediate`,
  Qwen-MoE's `shared_expert_intermediate_size` + its 1-wide gate) and the router `hidden x experts`;
  which layers are sparse follows each family (DeepSeek: `first_k_dense_replace`, `moe_layer_freq`;
  Qwen-MoE: `decoder_sparse_step`, `mlp_only_layers`; Mixtral: every layer);
- norms `2 x hidden` per layer (Gemma 2/3: 4, Qwen3: + q/k norms of head_dim), the final norm, the
  embeddings and the LM head (once when tied). Biases are not counted (under 0.1 %).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every weight, each expert once
    active: int  # the weights one token passes through (routed experts: only num_experts_per_tok)
    linear: int  # decoder linear weights (attention + MLP + router), every expert
    linear_active: int
    embedding: int  # input embedding + LM head (once when tied)
    experts: int  # routed experts per sparse layer (0: dense)
    experts_per_token: int
    sparse_layers: int

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "experts": self.experts,
            "experts_per_token": self.experts_per_token,
            "sparse_layers": self.sparse_layers,
        }


def _int(config: dict, key: str, default: int = 0) -> int:
    value = config.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def text_config(config: dict) -> dict:
    """The language model's part of a config (multimodal configs nest it under text_config)."""
    inner = config.get("text_config")
    if isinstance(inner, dict) and "hidden_size" not in config:
        return {"model_type": config.get("model_type"), **inner}
    return config


def n_experts(config: dict) -> int:
    return max((_int(config, k) for k in EXPERT_KEYS), default=0)


def _sparse_layer(config: dict, i: int) -> bool:
    if n_experts(config) == 0:
        return False
    kind = str(config.get("model_type", ""))
    if kind.startswith("deepseek"):
        freq = max(1, _int(config, "moe_layer_freq", 1))
        return i >= _int(config, "first_k_dense_replace") and i % freq == 0
    if "mlp_only_layers" in config or "decoder_sparse_step" in config:
        step = max(1, _int(config, "decoder_sparse_step", 1))
        return i not in (config.get("mlp_only_layers") or []) and (i + 1) % step == 0
    return True


def attention_params(config: dict) -> int:
    h, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    if config.get("kv_lora_rank"):
        nope, rope = _int(config, "qk_nope_head_dim"), _int(config, "qk_rope_head_dim")
        v, kv_rank, q_rank = (
            _int(config, "v_head_dim"),
            _int(config, "kv_lora_rank"),
            _int(config, "q_lora_rank"),
        )
        q = (h * q_rank + q_rank + q_rank * heads * (nope + rope)) if q_rank else h * heads * (nope + rope)
        return q + h * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v) + heads * v * h
    head_dim = _int(config, "head_dim") or h // max(heads, 1)
    kv = _int(config, "num_key_value_heads", heads)
    qk_norm = (
        2 * head_dim if config.get("model_type") in ("qwen3", "qwen3_moe", "gemma3_text", "gemma3") else 0
    )
    return 2 * h * heads * head_dim + 2 * h * kv * head_dim + qk_norm


def _mlp(config: dict, sparse: bool) -> tuple[int, int]:
    """(all weights, weights one token uses) of one layer's MLP."""
    h = _int(config, "hidden_size")
    if not sparse:
        dense = 3 * h * _int(config, "intermediate_size")
        return dense, dense
    experts, k = n_experts(config), _int(config, "num_experts_per_tok", 1)
    f = _int(config, "moe_intermediate_size") or _int(config, "intermediate_size")
    shared = 3 * h * f * _int(config, "n_shared_experts")
    if _int(config, "shared_expert_intermediate_size"):
        shared += 3 * h * _int(config, "shared_expert_intermediate_size") + h
    router = h * experts
    return experts * 3 * h * f + shared + router, k * 3 * h * f + shared + router


def param_counts(config: dict) -> ParamCounts:
    config = text_config(config)
    h, layers, vocab = (
        _int(config, "hidden_size"),
        _int(config, "num_hidden_layers"),
        _int(config, "vocab_size"),
    )
    attn = attention_params(config)
    norms_per_layer = 4 if str(config.get("model_type", "")).startswith("gemma") else 2
    linear = linear_active = sparse_layers = 0
    for i in range(layers):
        sparse = _sparse_layer(config, i)
        sparse_layers += sparse
        every, used = _mlp(config, sparse)
        linear += attn + every
        linear_active += attn + used
    embedding = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    norms = layers * norms_per_layer * h + h
    return ParamCounts(
        total=linear + embedding + norms,
        active=linear_active + embedding + norms,
        linear=linear,
        linear_active=linear_active,
        embedding=embedding,
        experts=n_experts(config),
        experts_per_token=_int(config, "num_experts_per_tok") if n_experts(config) else 0,
        sparse_layers=sparse_layers,
    )


def active_intermediate(config: dict) -> int:
    """MLP width of one token's activations: routed + shared experts on a sparse layer, else dense."""
    config = text_config(config)
    if not n_experts(config):
        return _int(config, "intermediate_size")
    f = _int(config, "moe_intermediate_size") or _int(config, "intermediate_size")
    width = _int(config, "num_experts_per_tok", 1) * f + _int(config, "n_shared_experts") * f
    return width + _int(config, "shared_expert_intermediate_size")


def lora_params(config: dict, rank: int, targets: tuple[str, ...]) -> int:
    """r x (in + out) per targeted linear; on a sparse layer gate/up/down exist once per expert
    (and per shared expert), as PEFT's `all-linear` finds them; the router is not a target."""
    config = text_config(config)
    h, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    head_dim = _int(config, "head_dim") or h // max(heads, 1)
    kv = _int(config, "num_key_value_heads", heads) * head_dim
    q = heads * head_dim
    attn = {"q_proj": h + q, "k_proj": h + kv, "v_proj": h + kv, "o_proj": q + h}
    total = 0
    for i in range(_int(config, "num_hidden_layers")):
        total += sum(rank * width for name, width in attn.items() if name in targets)
        if _sparse_layer(config, i):
            f = _int(config, "moe_intermediate_size") or _int(config, "intermediate_size")
            copies = n_experts(config) + _int(config, "n_shared_experts")
            mlp = copies * (h + f)
            if _int(config, "shared_expert_intermediate_size"):
                mlp += h + _int(config, "shared_expert_intermediate_size")
        else:
            mlp = h + _int(config, "intermediate_size")
        total += sum(rank * mlp for name in ("gate_proj", "up_proj", "down_proj") if name in targets)
    return total


def hf_home_caches() -> list[Path]:
    """The Hugging Face hub caches this machine uses: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub."""
    found = []
    if os.environ.get("HF_HUB_CACHE"):
        found.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        found.append(Path(os.environ["HF_HOME"]) / "hub")
    found.append(Path.home() / ".cache" / "huggingface" / "hub")
    return list(dict.fromkeys(p.expanduser() for p in found))


def cached_config(model_id: str) -> Path | None:
    """`models--org--name/snapshots/<rev>/config.json` of a Hub id in a local cache (newest snapshot)."""
    if model_id.count("/") != 1:
        return None
    name = "models--" + model_id.replace("/", "--")
    for cache in hf_home_caches():
        snapshots = cache / name / "snapshots"
        found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        if found:
            return found[0]
    return None


def local_config(spec: str) -> Path | None:
    """config.json of a folder path, or of a Hub id in a local cache; None when neither exists."""
    path = Path(spec).expanduser()
    if path.is_file() and path.name == "config.json":
        return path
    if (path / "config.json").is_file():
        return path / "config.json"
    return cached_config(spec)


def read(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return text_config(data)
