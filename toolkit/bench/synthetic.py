"""Models, tokenizers and data built locally at run time: nothing is downloaded.

The text is seeded pseudo-words, so runs are repeatable; the tokenizer is a BPE
trained on that text; the model is a Llama-architecture network of the requested
shape with random weights (FLOPs and memory equal the real model's of that shape).
"""

from __future__ import annotations

import random

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
_SYLLABLES = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(n))


def build_tokenizer(vocab_size: int, seed: int = 0):
    """A BPE tokenizer with a pad token distinct from EOS (a lesson from the users' QLoRA runs:
    padding with EOS teaches the model never to stop)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    corpus = [words(rng, 64) for _ in range(400)]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.model_max_length = 1 << 20
    return fast


def build_llama(shape, tokenizer, dtype, device: str, seed: int = 0, max_positions: int = 4096):
    """A LlamaForCausalLM of `shape` with random weights, created directly on `device` in `dtype`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        vocab_size=max(shape.vocab_size, len(tokenizer)),
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def unpaired_preferences(n: int, prompt_words: int, completion_words: int, seed: int = 0) -> dict:
    """KTO's unpaired format: prompt, completion, label (desirable or not), half of each."""
    rng = random.Random(seed + 1)
    return {
        "prompt": [words(rng, prompt_words) for _ in range(n)],
        # A leading space keeps the prompt/completion boundary on a token boundary.
        "completion": [" " + words(rng, completion_words) for _ in range(n)],
        "label": [i % 2 == 0 for i in range(n)],
    }
