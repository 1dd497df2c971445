"""The LM head as each trainer runs it: what exists of the batch x sequence x vocabulary logits.

TRL 1.16 (what `toolkit bench` runs) never materialises them (`trl.kernels.chunked_logprob`; counted in
estimate.py). LLaMA-Factory and Unsloth differ:

- LLaMA-Factory SFT (transformers' ForCausalLMLoss): the 16-bit logits (2 B per element), their fp32
  upcast (4 B) and cross-entropy's fp32 log-softmax (4 B, saved for backward); in backward the saved
  log-softmax, its incoming fp32 gradient and the fp32 gradient of the logits: 12 B per element at the peak.
- LLaMA-Factory DPO (`CustomDPOTrainer.concatenated_forward`): `logits.to(float32)` (4 B, kept for the
  logits metrics) and `get_batch_logps`' log-softmax (4 B, saved); the reference pass (no grad) then
  builds its own fp32 logits and log-softmax while the policy's 8 B are alive: 16 B per element.
- LLaMA-Factory KTO (`CustomKTOTrainer`): the policy's fp32 logits and saved log-softmax (8 B), the
  chosen/rejected logits selected by boolean index (a copy, kept for the metrics), and the reference
  model's `concatenated_forward` keeps its target fp32 logits (4 B) while its KL pass builds fp32
  logits and log-softmax (8 B): 20 B per element at the reference pass (KL rows = batch rows).
- Gemma 2's final soft-capping (`logits / cap`, `tanh`, `* cap` in 16-bit): the tanh output is saved for
  backward (+2 B at the peak; the chain's other 16-bit copies are transient and gone by then).
- `enable_liger_kernel` (LF), `use_unsloth` (LF) and Unsloth: a fused linear cross-entropy in chunks:
  no full logits; counted as TRL's tile (estimate.py).
"""

from __future__ import annotations

TRAINERS = ("llamafactory", "trl", "unsloth", "hf")  # hf: TRL/Trainer before chunked log-probs
# bytes per logit element at the head's peak, per LLaMA-Factory stage (see above)
LF_BYTES_PER_LOGIT = {"sft": 12, "dpo": 16, "kto": 20}
LF_WHY = {
    "sft": "16-bit logits + fp32 upcast + fp32 log-softmax (saved); backward: saved log-softmax + its "
    "fp32 gradient + the logits' fp32 gradient = 12 B",
    "dpo": "policy fp32 logits (kept for metrics) + saved fp32 log-softmax = 8 B, plus the reference "
    "pass's fp32 logits + log-softmax = 8 B: 16 B",
    "kto": "policy fp32 logits + saved log-softmax + chosen/rejected copies (8-12 B), then the reference "
    "model's target fp32 logits (4 B) + its KL pass's fp32 logits and log-softmax (8 B): 20 B",
}
# "hf" (transformers <= 4.45, the Unsloth tables' baseline): LlamaForCausalLM upcast the logits to fp32 and
# cross-entropy ran on `logits[..., :-1, :].contiguous()`; backward: saved log-softmax + its gradient + the
# shifted logits' gradient + the zero-filled full-size gradient the slice's backward allocates = 16 B
HF_BYTES_PER_LOGIT = 16
HF_WHY = "transformers <= 4.45: fp32 logits, shifted copy, log-softmax; backward 16 B"
SOFTCAP_EXTRA = 2  # the tanh output, saved for backward


def materialises_logits(trainer: str, recipe) -> bool:
    """LLaMA-Factory (without Liger), and "hf": a Trainer with transformers' own loss and PEFT's
    prepare_model_for_kbit_training layout (the "Hugging Face + FA2" baseline of Unsloth's tables)."""
    fused = getattr(recipe, "liger", False) or getattr(recipe, "unsloth", False)  # fused/chunked CE
    return trainer == "hf" or (trainer == "llamafactory" and not fused)


def lf_logits_bytes(
    recipe, rows: int, vocab: int, softcap: bool, trainer: str = "llamafactory"
) -> tuple[float, str]:
    """(bytes, words) of LLaMA-Factory's materialised logits over `rows` tokens (the whole step)."""
    per = LF_BYTES_PER_LOGIT.get(recipe.stage, 12) + (SOFTCAP_EXTRA if softcap else 0)
    if trainer == "hf":
        per = HF_BYTES_PER_LOGIT + (SOFTCAP_EXTRA if softcap else 0)
    n = rows * vocab
    words = (
        f"{rows} tokens x {vocab} vocabulary = {n / 1e9:.2f} G logits x {per} B "
        f"({HF_WHY if trainer == 'hf' else LF_WHY.get(recipe.stage, LF_WHY['sft'])}"
        + (f"; + {SOFTCAP_EXTRA} B Gemma 2 soft-capping copies" if softcap else "")
        + ")"
    )
    return n * per, words
