"""FLOP and byte counts of the reference loads, from the model's shape alone.

Convention (PaLM appendix B, nanoGPT's estimate_mfu): a matmul of an input row
with a (k x n) weight costs 2kn FLOPs; attention costs 4 * L * d_attn * T per
token in the forward pass (QK^T and AV over a context of T tokens, counted in
full, not halved for the causal mask); a backward pass costs twice the forward.

N is every matmul weight a token passes through (attention, MLP and the LM head;
the embedding lookup is not a matmul). LoRA freezes N, so its backward pass
computes activation gradients through N (2N) but weight gradients only for the
adapter's parameters (N_lora).
"""

from __future__ import annotations

from toolkit.bench.shape import LORA_MODULES, ModelShape


def linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of each per-layer linear module of a Llama block."""
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.head_dim
    q = shape.num_attention_heads * shape.head_dim
    f = shape.intermediate_size
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, f),
        "up_proj": (h, f),
        "down_proj": (f, h),
    }


def matmul_params(shape: ModelShape) -> int:
    """N: matmul weights per token (all layers' linears plus the LM head)."""
    per_layer = sum(i * o for i, o in linear_shapes(shape).values())
    return shape.num_hidden_layers * per_layer + shape.hidden_size * shape.vocab_size


def total_params(shape: ModelShape) -> int:
    """All weights: the matmul weights, the input embedding (apart unless tied to the LM head), the norms."""
    norms = (2 * shape.num_hidden_layers + 1) * shape.hidden_size
    embedding = 0 if shape.tie_word_embeddings else shape.vocab_size * shape.hidden_size
    return matmul_params(shape) + embedding + norms


def lora_params(shape: ModelShape, rank: int, targets: tuple[str, ...] = LORA_MODULES) -> int:
    """N_lora: r * (in + out) for each targeted linear of each layer."""
    per_layer = sum(rank * (i + o) for name, (i, o) in linear_shapes(shape).items() if name in targets)
    return shape.num_hidden_layers * per_layer


def attention_dim(shape: ModelShape) -> int:
    return shape.num_attention_heads * shape.head_dim


def forward_flops_per_token(shape: ModelShape, context: float, extra_params: int = 0) -> float:
    """2 (N + extra) + 4 L d_attn T."""
    n = matmul_params(shape) + extra_params
    return 2 * n + 4 * shape.num_hidden_layers * attention_dim(shape) * context


def lora_train_flops_per_token(shape: ModelShape, n_lora: int, context: float) -> float:
    """Forward 2(N+N_lora) + 4LdT; backward activation grads 2(N+N_lora) + 8LdT; adapter
    weight grads 2 N_lora. Total 4N + 6 N_lora + 12 L d T."""
    n = matmul_params(shape)
    return 4 * n + 6 * n_lora + 12 * shape.num_hidden_layers * attention_dim(shape) * context


def full_train_flops_per_token(shape: ModelShape, context: float) -> float:
    """Every weight trains: forward 2N + 4LdT, backward twice that: 6N + 12 L d T."""
    return 6 * matmul_params(shape) + 12 * shape.num_hidden_layers * attention_dim(shape) * context


LORA_FORMULA = (
    "per counted token: forward 2(N+N_lora) + 4*L*d_attn*T, backward activation gradients through the "
    "frozen base 2(N+N_lora) + 8*L*d_attn*T, adapter weight gradients 2N_lora: 4N + 6N_lora + 12*L*d_attn*T; "
    "N = matmul weights incl. LM head, N_lora = trainable adapter weights, T = mean tokens per sequence; "
    "recomputation under activation checkpointing not counted (MFU, not HFU)"
)
DPO_FORMULA = (
    "per counted token (chosen and rejected): LoRA train step 4N + 6N_lora + 12*L*d_attn*T plus the "
    "reference forward (the base with the adapter disabled) 2N + 4*L*d_attn*T: 6N + 6N_lora + 16*L*d_attn*T"
)

KTO_FORMULA = (
    "per token of the training batch: LoRA train step (4N + 6N_lora + 12*L*d_attn*T) "
    "+ reference forward on the batch (2N + 4*L*d_attn*T) "
    "+ k x policy and reference forwards on the KL batch (2(N+N_lora) + 2N + 8*L*d_attn*T), "
    "k = KL-batch tokens / batch tokens (k = 1: 10N + 8N_lora + 24*L*d_attn*T); "
    "N = matmul weights incl. LM head, T = mean tokens per sequence"
)


def kto_flops_per_token(shape: ModelShape, n_lora: int, context: float, kl_ratio: float = 1.0) -> float:
    """KTO with a LoRA policy and the adapter-disabled base as reference (TRL's PEFT path):
    one training pass, a reference forward on the batch, and a policy and a reference
    forward (no grad) on the KL batch of mismatched completions."""
    return (
        lora_train_flops_per_token(shape, n_lora, context)
        + forward_flops_per_token(shape, context)
        + kl_ratio
        * (
            forward_flops_per_token(shape, context, extra_params=n_lora)
            + forward_flops_per_token(shape, context)
        )
    )


def kv_cache_bytes(shape: ModelShape, tokens: float, batch: int, bytes_per_value: int) -> float:
    """K and V for every layer: 2 * L * kv_heads * head_dim * tokens * batch."""
    per_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim
    return per_token * tokens * batch * bytes_per_value
