"""What a served model should reach, like the other loads' expectations, each with its basis.

- Batch-1 decode against the bandwidth roofline: every generated token reads the served file's weights once
  (plus the KV cache, not known from the server's answers here, so the roofline is an upper bound), so
  tokens/s <= bandwidth / weight bytes. Bandwidth: the GPU class's datasheet figure (`--gpu CLASS`), or on
  a CPU the run's own measured copy bandwidth. Floor: 0.50 of the roofline on a CPU — published llama.cpp
  single-stream decode reaches 0.50-0.87 of it; on a GPU uncalibrated until measured (reported, not judged).
- Prefill against the compute peak: 2 x parameters FLOPs per prompt token over the class's tensor peak;
  reported, not judged.
- Ollama's layer offload (/api/ps): part of the model outside GPU memory is a warning, the louder when the
  GPU has the room (`num_gpu` set too low, or the estimate wrong).
"""

from __future__ import annotations

import time

CPU_DECODE_FLOOR = 0.50
FLOOR_BASIS = "published llama.cpp single-stream decode reaches 0.50-0.87 of the bandwidth roofline"
COPY_BYTES = 256 << 20


def measured_copy_bandwidth(repeats: int = 3) -> float:
    """Bytes per second of a plain memory copy (read + write), best of `repeats`: the CPU's basis."""
    source = bytearray(COPY_BYTES)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        copy = bytes(source)
        took = time.perf_counter() - start
        best = max(best, 2 * len(copy) / took)
        del copy
    return best


ABOVE_ROOFLINE = 1.1  # measured over the roofline by more than measurement noise


def decode_roofline(
    weights_bytes: int | None, bandwidth: float | None, basis: str, single_tps: float | None, on_cpu: bool
) -> dict:
    if not weights_bytes or not bandwidth:
        return {
            "status": "skipped",
            "detail": "the served file's size is unknown (llama.cpp /v1/models meta or Ollama /api/tags)"
            if not weights_bytes
            else "no bandwidth for this class (--gpu CLASS)",
        }
    roofline = bandwidth / weights_bytes
    ratio = single_tps / roofline if single_tps else None
    result = {
        "roofline_tps": roofline,
        "measured_tps": single_tps,
        "fraction": ratio,
        "bandwidth_bytes_per_second": bandwidth,
        "bandwidth_basis": basis,
        "weights_bytes": weights_bytes,
        "kv_bytes_per_token": None,
    }
    if ratio is not None and ratio > ABOVE_ROOFLINE:
        # faster than memory allows: the weights are read from the caches, not DRAM, so the roofline
        # (and its floor) says nothing about this model; a small model on a CPU does this
        result["status"] = "info"
        result["detail"] = (
            f"{ratio:.2f} x the roofline: the weights ({weights_bytes / 2**20:.0f} MiB) are served from the "
            "processor's caches, not memory; the bandwidth roofline does not bound this model"
        )
    elif on_cpu:
        result["floor"] = CPU_DECODE_FLOOR
        result["floor_basis"] = FLOOR_BASIS
        result["status"] = "pass" if ratio is not None and ratio >= CPU_DECODE_FLOOR else "warn"
    else:
        result["floor"] = None
        result["floor_basis"] = "uncalibrated on GPUs until measured"
        result["status"] = "info"
    return result


def prefill_peak(
    n_params: int | None, flops: float | None, prompt_tokens: int | None, ttft_s: float | None
) -> dict:
    if not n_params or not flops or not prompt_tokens or not ttft_s:
        return {"status": "skipped", "detail": "parameter count, compute peak or prompt tokens unknown"}
    achieved = 2 * n_params * prompt_tokens / ttft_s
    return {"status": "info", "achieved_flops": achieved, "peak_flops": flops, "fraction": achieved / flops}


def local_gpu_free_bytes(host: str) -> int | None:
    """Free memory of this machine's NVIDIA GPUs (NVML), when the server runs here (a loopback host or
    this machine's name); None when it runs elsewhere or NVML cannot be read."""
    from toolkit import nvml
    from toolkit.peer import is_this_machine

    if not is_this_machine(host):
        return None

    try:
        lib = nvml.init()
    except nvml.NvmlUnavailable:
        return None
    try:
        handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in range(lib.nvmlDeviceGetCount())]
        return sum(int(lib.nvmlDeviceGetMemoryInfo(h).free) for h in handles)
    except lib.NVMLError:
        return None
    finally:
        nvml.shutdown(lib)


def offload_warnings(offload: list[dict], gpu_free_bytes: int | None) -> list[str]:
    warnings = []
    for model in offload:
        size, vram = model.get("size") or 0, model.get("size_vram") or 0  # left out when 0 (ollama#4840)
        if not size or vram >= size:
            continue
        share = 1 - vram / size
        text = f"Ollama runs {share * 100:.0f} % of {model.get('name')} on the CPU"
        text += f" (size_vram {vram} of {size} bytes)"
        if gpu_free_bytes is not None and gpu_free_bytes > size - vram:
            text += " although the GPU has room: raise num_gpu (the layers offloaded) in the model's options"
        warnings.append(text)
    return warnings
