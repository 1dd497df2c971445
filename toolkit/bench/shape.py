"""A transformer's shape and the names of its linear layers: the vocabulary that settings, recipes,
architectures, FLOP counts and memory estimates share. A leaf: it imports nothing from toolkit."""

from __future__ import annotations

from dataclasses import dataclass

# The linear layers of a Llama-family decoder block, in PEFT's names: what LoRA `all` targets.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """A Llama-architecture shape; the model is built with random weights at run time."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    # Gemma's heads are wider than hidden / heads; None: hidden / heads
    attention_head_dim: int | None = None
    # the LM head shares the input embedding's weights (Gemma, SmolLM): counted once
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.hidden_size // self.num_attention_heads
