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

Measured in calibrated samples, as every figure (`toolkit.bench.timing`): after the warm-up, one call
says how many calls make a sample of at least 50 ms; each of `repeats` (at least 5) samples gives the
mean TTFT and decode time over its calls; the figures are the median sample's, their spread is kept
under `spread`.

Expectations: prefill is compute-bound (floor x peak / forward FLOPs per token);
decode is bound per step by max(weight + KV-cache bytes / bandwidth,
batch x FLOPs per token / peak), and must reach floor x batch / that time.
"""

from __future__ import annotations

import time

from toolkit.bench import flops
from toolkit.bench.timing import MIN_SAMPLES, loops_for, percentile, spread

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
    samples = max(s.repeats, MIN_SAMPLES)
    rec.config["samples"] = samples
    progress = _Counter(ctx, len(s.batch_sizes) * (s.warmup + 1 + samples))
    for b in s.batch_sizes:
        ids = torch.randint(
            len(tokenizer.all_special_ids), len(tokenizer), (b, s.prompt_tokens), generator=gen
        )
        ids, mask = ids.to(ctx.device), torch.ones_like(ids, device=ctx.device)

        def call(ids=ids, mask=mask, model=model) -> tuple[float, float]:
            return _generate(ctx, model, tokenizer, ids, mask)

        for _ in range(s.warmup):
            rec.warmup.setdefault(f"ttft_seconds_batch{b}", []).append(call()[0])
            progress.step()
        loops = loops_for(sum(call()))  # the calibration call: how many calls make one sample
        progress.step()
        rec.config.setdefault("calls_per_sample", {})[f"batch{b}"] = loops
        ttfts, decodes = [], []
        for _ in range(samples):  # each sample: the mean TTFT and decode time over its calls
            measured = [call() for _ in range(loops)]
            ttfts.append(sum(t for t, _ in measured) / loops)
            decodes.append(sum(d for _, d in measured) / loops)
            progress.step()
        _record_batch(rec, b, s, ttfts, decodes)
        _check_batch(ctx, rec, b, prefill_fpt, decode_fpt, dtype_bytes, t_ctx)


class _Counter:
    def __init__(self, ctx, total: int):
        self.ctx, self.total, self.done = ctx, total, 0

    def step(self) -> None:
        self.done += 1
        self.ctx.progress(self.done, self.total)


def _generate(ctx, model, tokenizer, ids, mask) -> tuple[float, float]:
    """One greedy generation: (seconds to the first token, seconds from it to the end)."""
    import torch

    s = ctx.scale.inference
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
    return streamer.first_token_at - t0, t_end - streamer.first_token_at


def _record_batch(rec, b: int, s, ttfts: list[float], decodes: list[float]) -> None:
    prefill = f"prefill_tokens_per_second_batch{b}"
    decode = f"decode_tokens_per_second_batch{b}"
    rec.spread[prefill] = spread([b * s.prompt_tokens / t for t in ttfts])
    rec.spread[decode] = spread([b * (s.new_tokens - 1) / d for d in decodes])
    rec.metrics.update(
        {
            f"ttft_seconds_p50_batch{b}": percentile(ttfts, 0.5),
            f"ttft_seconds_p90_batch{b}": percentile(ttfts, 0.9),
            prefill: b * s.prompt_tokens / percentile(ttfts, 0.5),
            decode: b * (s.new_tokens - 1) / percentile(decodes, 0.5),
        }
    )


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
