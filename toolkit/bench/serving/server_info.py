"""What the server says about itself before and around the load: which API it speaks (`--api auto`), the
models it serves, its parallel slots, its Prometheus counters (/metrics deltas, never histogram
percentiles), and Ollama's layer offload (`/api/ps`: `size` vs `size_vram`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolkit.bench.serving.client import Target, get_json, get_text

# counters whose deltas over a level are compared with the client's sums: output tokens first
OUTPUT_COUNTERS = (
    "llamacpp:tokens_predicted_total",
    "vllm:generation_tokens_total",
    "tgi_request_generated_tokens_sum",
)
PROMPT_COUNTERS = ("llamacpp:prompt_tokens_total", "vllm:prompt_tokens_total", "tgi_request_input_length_sum")
CACHED_COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prompt_tokens_cached_total")
SERVER_TIME_SUMS = {  # (sum, count) pairs whose delta gives a mean the server measured
    "ttft": ("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"),
    "tpot": ("vllm:time_per_output_token_seconds_sum", "vllm:time_per_output_token_seconds_count"),
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass
class ServerInfo:
    api: str
    models: list[str] = field(default_factory=list)
    slots: int | None = None
    metrics: bool = False  # /metrics answered with Prometheus text
    weights_bytes: int | None = None
    n_params: int | None = None
    offload: list[dict] = field(default_factory=list)  # Ollama /api/ps
    model_sizes: dict[str, int] = field(default_factory=dict)  # Ollama /api/tags: each model's file size

    def use_model(self, name: str | None) -> None:
        """The served model is known: its file size (Ollama's /api/tags) is the weights read per token."""
        if self.weights_bytes is None and name:
            size = self.model_sizes.get(name) or self.model_sizes.get(f"{name}:latest")
            self.weights_bytes = int(size) if size else None

    def as_json(self) -> dict:
        return {
            "api": self.api,
            "models": self.models[:20],
            "slots": self.slots,
            "metrics_endpoint": self.metrics,
            "weights_bytes": self.weights_bytes,
            "n_params": self.n_params,
            "ollama_ps": self.offload,
        }


def detect_api(target: Target) -> str:
    """ollama when /api/tags lists models, llamacpp when /props answers, else openai. OSError when the
    server cannot be reached at all."""
    status, body = get_json(target, "/api/tags")
    if status == 200 and isinstance(body, dict) and "models" in body:
        return "ollama"
    status, body = get_json(target, "/props")
    if status == 200 and isinstance(body, dict):
        return "llamacpp"
    return "openai"


def _openai_models(target: Target, info: ServerInfo) -> None:
    status, body = get_json(target, "/v1/models")
    if status != 200 or not isinstance(body, dict):
        return
    for entry in body.get("data") or []:
        if isinstance(entry, dict) and entry.get("id"):
            info.models.append(str(entry["id"]))
            meta = entry.get("meta") or {}  # llama.cpp's server: size and n_params of the served file
            if isinstance(meta, dict) and info.weights_bytes is None:
                info.weights_bytes = meta.get("size")
                info.n_params = meta.get("n_params")


def _llamacpp_slots(target: Target, info: ServerInfo) -> None:
    status, body = get_json(target, "/props")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("total_slots"), int):
        info.slots = body["total_slots"]
        return
    status, body = get_json(target, "/slots")
    if status == 200 and isinstance(body, list) and body:
        info.slots = len(body)


def _ollama(target: Target, info: ServerInfo) -> None:
    status, body = get_json(target, "/api/tags")
    if status == 200 and isinstance(body, dict):
        listed = [m for m in body.get("models") or [] if isinstance(m, dict)]
        info.models = [str(m.get("name")) for m in listed]
        info.model_sizes = {str(m.get("name")): m["size"] for m in listed if isinstance(m.get("size"), int)}
    status, body = get_json(target, "/api/ps")
    if status == 200 and isinstance(body, dict):
        for model in body.get("models") or []:
            if isinstance(model, dict) and model.get("size"):
                info.offload.append(
                    {
                        "name": model.get("name"),
                        "size": model.get("size"),
                        "size_vram": model.get("size_vram"),
                    }
                )


def probe(target: Target, api: str) -> ServerInfo:
    """Everything the run reads from the server before it starts (missing parts stay unknown)."""
    info = ServerInfo(api=api)
    if api == "ollama":
        _ollama(target, info)
    else:
        _openai_models(target, info)
    if api == "llamacpp" or (api == "openai" and not info.slots):
        _llamacpp_slots(target, info)
    info.metrics = scrape(target) is not None
    return info


def scrape(target: Target) -> dict[str, float] | None:
    """The server's Prometheus samples, summed over label sets; None without /metrics."""
    try:
        status, text = get_text(target, "/metrics", cap=16 << 20)
    except OSError:
        return None
    if status != 200 or ("# TYPE" not in text and ":" not in text):
        return None
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            try:
                samples[match.group(1)] = samples.get(match.group(1), 0.0) + float(match.group(3))
            except ValueError:
                continue
    return samples or None


def deltas(before: dict | None, after: dict | None) -> dict:
    """Counter deltas over a level: output and prompt tokens, cached prompt tokens, server-side means."""
    if not before or not after:
        return {}
    out = {}

    def delta(names):
        for name in names:
            if name in before and name in after:
                return after[name] - before[name]
        return None

    out["output_tokens"] = delta(OUTPUT_COUNTERS)
    out["prompt_tokens"] = delta(PROMPT_COUNTERS)
    out["cached_prompt_tokens"] = delta(CACHED_COUNTERS)
    for key, (sum_name, count_name) in SERVER_TIME_SUMS.items():
        total, count = delta((sum_name,)), delta((count_name,))
        out[f"server_{key}_mean_s"] = total / count if total is not None and count else None
    return {k: v for k, v in out.items() if v is not None}
