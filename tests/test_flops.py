"""FLOP formulas against the real models they describe (transformers + PEFT, built locally)."""

from __future__ import annotations

import pytest

from toolkit.bench import flops
from toolkit.bench.settings import ModelShape, load_settings

SHAPES = [
    load_settings().scales["tiny"].kto_lora.model,
    load_settings().scales["small"].kto_lora.model,
    ModelShape(
        hidden_size=96,
        intermediate_size=200,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=700,
    ),
]


@pytest.fixture(scope="module")
def tokenizer():
    from toolkit.bench.synthetic import build_tokenizer

    return build_tokenizer(512)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"h{s.hidden_size}-L{s.num_hidden_layers}")
def test_param_counts_match_the_real_model(shape, tokenizer):
    import torch
    from peft import LoraConfig, get_peft_model

    from toolkit.bench.synthetic import build_llama

    model = build_llama(shape, tokenizer, torch.float32, "cpu")
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops.matmul_params(shape) == linear
    assert flops.total_params(shape) == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert flops.lora_params(shape, 16) == trainable


def test_lora_training_costs_two_thirds_of_full_training_plus_adapter():
    shape = SHAPES[1]
    n, n_lora, ctx = flops.matmul_params(shape), flops.lora_params(shape, 16), 256
    attn = shape.num_hidden_layers * flops.attention_dim(shape) * ctx
    assert flops.forward_flops_per_token(shape, ctx) == 2 * n + 4 * attn
    assert flops.lora_train_flops_per_token(shape, n_lora, ctx) == 4 * n + 6 * n_lora + 12 * attn
    # KTO with k = 1: 10N + 8 N_lora + 24 L d T
    assert flops.kto_flops_per_token(shape, n_lora, ctx) == 10 * n + 8 * n_lora + 24 * attn
    # without the KL batch (apo_zero_unpaired) only the training pass and the reference forward remain
    assert flops.kto_flops_per_token(shape, n_lora, ctx, kl_ratio=0) == 6 * n + 6 * n_lora + 16 * attn


def test_kv_cache_bytes():
    shape = SHAPES[2]  # 3 layers, 2 KV heads of 16
    assert flops.kv_cache_bytes(shape, tokens=10, batch=4, bytes_per_value=2) == 2 * 3 * 2 * 16 * 10 * 4 * 2


@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: f"h{s.hidden_size}-L{s.num_hidden_layers}")
def test_formulas_match_torch_flop_counter(shape, tokenizer):
    """Forward and LoRA training FLOPs as torch's own counter sees them on the real PEFT model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    from toolkit.bench.synthetic import build_llama

    model = build_llama(shape, tokenizer, torch.float32, "cpu")
    model.config._attn_implementation = "eager"  # explicit matmuls: the counter sees attention
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    batch, seq = 2, 64
    ids = torch.randint(4, len(tokenizer), (batch, seq))
    with torch.no_grad(), model.disable_adapter(), FlopCounterMode(display=False) as fwd:
        model(input_ids=ids)
    with FlopCounterMode(display=False) as train:
        model(input_ids=ids, labels=ids).loss.backward()
    tokens = batch * seq
    assert fwd.get_total_flops() / (flops.forward_flops_per_token(shape, seq) * tokens) == pytest.approx(
        1, abs=0.02
    )
    expected = flops.lora_train_flops_per_token(shape, flops.lora_params(shape, 16), seq) * tokens
    assert train.get_total_flops() / expected == pytest.approx(1, abs=0.05)
