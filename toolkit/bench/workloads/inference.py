"""Reference load 2: inference prefill and decode, at batch 1 and 8.

    toolkit bench --workloads inference

Greedy generation with `model.generate` on a Llama shape with random weights
(the same shape as the training load). Every sequence generates exactly
`new_tokens` tokens (EOS is not allowed to stop it early).

Time to first token (TTFT): from the call to `generate` until the first
generated token reaches the host (a streamer's second `put()`; the first is the
prompt). Prefill tokens/s = batch x prompt tokens / TTFT. Decode tokens/s =
batch x (new tokens - 1) / (end - first token). Counted tokens: prompt tokens
for prefill, generated tokens for decode.

Expectations: prefill is compute-bound (floor x peak / forward FLOPs per token);
decode is bound per step by max(weight + KV-cache bytes / bandwidth,
batch x FLOPs per token / peak), and must reach floor x batch / that time.
"""

from __future__ import annotations

import time

from toolkit.bench import flops
from toolkit.bench.timing import percentile

PREFILL_FORMULA = "forward per prompt token: 2N + 4*L*d_attn*T (T = prompt tokens)"
DECODE_FORMULA = (
    "per decode step: bytes = matmul weights x dtype size + KV cache (2*L*kv_heads*head_dim*T_ctx*batch "
    "x dtype size); FLOPs = batch x (2N + 4*L*d_attn*T_ctx); T_ctx = prompt + new_tokens/2; "
    "step time bound = max(bytes / bandwidth, FLOPs / peak)"
)


class _FirstToken:
    """A generation streamer that records when the first generated token arrives."""

    def __init__(self):
        self.puts = 0
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:  # the first put() is the prompt; `value` is already on the host
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def run(ctx, rec) -> None:
    import torch

    from toolkit.bench.synthetic import build_llama, build_tokenizer

    s = ctx.scale.inference
    shape = s.model
    rec.config = {
        "model": f"Llama shape, random weights: {shape}",
        "prompt_tokens": s.prompt_tokens,
        "new_tokens": s.new_tokens,
        "batch_sizes": list(s.batch_sizes),
        "dtype": ctx.dtype,
        "warmup": s.warmup,
        "repeats": s.repeats,
        "decoding": "greedy",
        "device": ctx.device,
        "tokens_counted": "prefill: prompt tokens (batch x prompt_tokens); "
        "decode: generated tokens after the first",
    }
    tokenizer = build_tokenizer(min(shape.vocab_size, 8192), seed=ctx.seed)
    model = build_llama(shape, tokenizer, ctx.torch_dtype, ctx.device, seed=ctx.seed).eval()
    dtype_bytes = torch.tensor([], dtype=ctx.torch_dtype).element_size()
    prefill_fpt = flops.forward_flops_per_token(shape, s.prompt_tokens)
    t_ctx = s.prompt_tokens + s.new_tokens / 2
    decode_fpt = flops.forward_flops_per_token(shape, t_ctx)
    rec.flops = {
        "prefill_flops_per_token": prefill_fpt,
        "prefill_formula": PREFILL_FORMULA,
        "decode_flops_per_token": decode_fpt,
        "decode_formula": DECODE_FORMULA,
        "matmul_params": flops.matmul_params(shape),
    }
    gen = torch.Generator().manual_seed(ctx.seed)
    total = len(s.batch_sizes) * (s.warmup + s.repeats)
    done = 0
    for b in s.batch_sizes:
        ids = torch.randint(
            len(tokenizer.all_special_ids), len(tokenizer), (b, s.prompt_tokens), generator=gen
        )
        ids, mask = ids.to(ctx.device), torch.ones_like(ids, device=ctx.device)
        ttfts, decodes = [], []
        for i in range(s.warmup + s.repeats):
            streamer = _FirstToken()
            ctx.sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=s.new_tokens,
                    min_new_tokens=s.new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    pad_token_id=tokenizer.pad_token_id,
                )
            ctx.sync()
            t_end = time.perf_counter()
            done += 1
            ctx.progress(done, total)
            if i < s.warmup:
                rec.warmup.setdefault(f"ttft_seconds_batch{b}", []).append(streamer.first_token_at - t0)
                continue
            ttfts.append(streamer.first_token_at - t0)
            decodes.append(t_end - streamer.first_token_at)
        ttft, decode = percentile(ttfts, 0.5), percentile(decodes, 0.5)
        rec.metrics.update(
            {
                f"ttft_seconds_p50_batch{b}": ttft,
                f"ttft_seconds_p90_batch{b}": percentile(ttfts, 0.9),
                f"prefill_tokens_per_second_batch{b}": b * s.prompt_tokens / ttft,
                f"decode_tokens_per_second_batch{b}": b * (s.new_tokens - 1) / decode,
            }
        )
        _check_batch(ctx, rec, b, prefill_fpt, decode_fpt, dtype_bytes, t_ctx)
    del model


def _check_batch(ctx, rec, b, prefill_fpt, decode_fpt, dtype_bytes, t_ctx) -> None:
    shape, peaks = ctx.scale.inference.model, ctx.peaks
    floor, f = ctx.floor("prefill")
    ctx.check(
        rec,
        f"prefill_tokens_per_second_batch{b}",
        floor * peaks.flops / prefill_fpt if floor and peaks.flops else None,
        f"floor {floor} x peak {peaks.flops_basis} / {prefill_fpt:.3g} FLOP per token",
        f,
    )
    floor, f = ctx.floor("decode")
    if not (floor and peaks.flops and peaks.bandwidth):
        ctx.check(
            rec,
            f"decode_tokens_per_second_batch{b}",
            None,
            f"no floor for {ctx.floor_key} or peaks unknown",
            f,
        )
        return
    step_bytes = flops.matmul_params(shape) * dtype_bytes + flops.kv_cache_bytes(shape, t_ctx, b, dtype_bytes)
    step_time = max(step_bytes / peaks.bandwidth, b * decode_fpt / peaks.flops)
    bound = "bandwidth" if step_bytes / peaks.bandwidth >= b * decode_fpt / peaks.flops else "compute"
    ctx.check(
        rec,
        f"decode_tokens_per_second_batch{b}",
        floor * b / step_time,
        f"floor {floor} x roofline {b / step_time:.4g} tokens/s ({bound}-bound: {step_bytes:.3g} bytes "
        f"at {peaks.bandwidth_basis}, {b * decode_fpt:.3g} FLOP at {peaks.flops_basis})",
        f,
    )
