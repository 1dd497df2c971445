"""What each serving API is sent, and how its stream is read.

One `Stream` per request collects what the server said, whatever the format: the arrival time of every
chunk that carries generated text (`token_chunks`), how the stream ended, and the counts and timings the
server reported about itself. The parsers never interpret time; the client stamps each line on arrival.

- OpenAI-compatible (openai, vllm, tgi; also llama.cpp's and Ollama's /v1): `POST /v1/completions`, SSE
  `data: {...}` lines, `data: [DONE]` at the end, `: comment` pings ignored; token counts from `usage`
  (asked for with `stream_options.include_usage`), accepted on a chunk of its own (`choices: []`) or on the
  chunk that also carries `finish_reason` (llama.cpp does that).
- llama.cpp (`POST /completion`): SSE with `content`, `stop`, and on the last chunk `timings`
  (prompt_n/ms, predicted_n/ms, cache_n) and `tokens_predicted`.
- Ollama (`POST /api/generate`): NDJSON lines with `response` and `done`; the last carries `eval_count`,
  `prompt_eval_count` and durations in nanoseconds (`load_duration`, `prompt_eval_duration`,
  `eval_duration`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

APIS = ("openai", "ollama", "llamacpp", "vllm", "tgi")
OPENAI_LIKE = ("openai", "vllm", "tgi")


class Malformed(ValueError):
    """A line the API's format does not allow (broken JSON, an SSE field that is not one)."""


@dataclass
class Stream:
    """What one streamed answer said. Times are the client's `time.monotonic()` at each line's arrival."""

    token_chunks: list[tuple[float, int | None]] = field(default_factory=list)  # (time, tokens if told)
    chunks: int = 0  # every data chunk, also role-only, empty and usage-only ones
    ended: bool = False  # finish_reason / [DONE] / done / stop seen
    done_marker: bool = False
    finish_reason: str | None = None
    output_tokens: int | None = None  # as the server counted them
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    count_source: str | None = None  # usage | timings | eval_count
    server_prefill_s: float | None = None
    server_decode_s: float | None = None  # the server's time for its generated tokens
    server_decode_tokens: int | None = None
    load_duration_s: float | None = None
    server_error: str | None = None
    text_chars: int = 0

    @property
    def tokens(self) -> int:
        """The server's count, else the chunks' (one token for a chunk that does not say)."""
        if self.output_tokens is not None:
            return self.output_tokens
        return sum(c or 1 for _, c in self.token_chunks)

    def token(self, when: float, text: str, count: int | None = None) -> None:
        if text or count:
            self.token_chunks.append((when, count))
            self.text_chars += len(text)


def request_for(api: str, model: str | None, prompt: str, output_tokens: int) -> tuple[str, dict]:
    """The path and JSON body of one streaming request that asks for exactly `output_tokens` tokens
    where the API can force it (`ignore_eos`; Ollama cannot, its lengths are normalised per token)."""
    if api == "llamacpp":
        body = {
            "prompt": prompt,
            "n_predict": output_tokens,
            "ignore_eos": True,
            "stream": True,
            "cache_prompt": False,
            "temperature": 0,
        }
        return "/completion", body
    if api == "ollama":
        options = {"num_predict": output_tokens, "temperature": 0}
        return "/api/generate", {
            "model": model,
            "prompt": prompt,
            "raw": True,
            "stream": True,
            "options": options,
        }
    body = {
        "prompt": prompt,
        "max_tokens": output_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "ignore_eos": True,
    }
    if model:
        body["model"] = model
    return "/v1/completions", body


def forces_length(api: str) -> bool:
    return api != "ollama"


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise Malformed(f"not JSON: {text[:60]!r}") from None
    if not isinstance(value, dict):
        raise Malformed(f"not a JSON object: {text[:60]!r}")
    return value


def _sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for comments, other fields and blank lines."""
    if not line or line.startswith(":"):
        return None
    name, sep, value = line.partition(":")
    if not sep:
        raise Malformed(f"not an SSE line: {line[:60]!r}")
    if name in ("event", "id", "retry"):
        return None
    if name != "data":
        raise Malformed(f"unknown SSE field {name[:20]!r}")
    return value[1:] if value.startswith(" ") else value


def _openai_usage(stream: Stream, usage: dict) -> None:
    if not isinstance(usage, dict) or usage.get("completion_tokens") is None:
        return
    stream.output_tokens = int(usage["completion_tokens"])
    stream.prompt_tokens = usage.get("prompt_tokens")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    stream.cached_prompt_tokens = cached if cached is not None else stream.cached_prompt_tokens
    stream.count_source = "usage"


def _openai_line(stream: Stream, data: str, when: float) -> None:
    if data.strip() == "[DONE]":
        stream.done_marker = True
        stream.ended = True
        return
    chunk = _json(data)
    stream.chunks += 1
    if "error" in chunk:
        stream.server_error = str(chunk["error"])[:200]
        return
    for choice in chunk.get("choices") or []:
        text = choice.get("text")
        if text is None:
            text = _delta_text(choice.get("delta") or {})
        ids = choice.get("token_ids")
        stream.token(when, text, len(ids) if isinstance(ids, list) and ids else None)
        if choice.get("finish_reason"):
            stream.finish_reason = choice["finish_reason"]
            stream.ended = True
    if chunk.get("usage"):
        _openai_usage(stream, chunk["usage"])
    if isinstance(chunk.get("timings"), dict):  # llama.cpp's server adds its timings on /v1 too
        _llamacpp_timings(stream, chunk["timings"], counts=stream.output_tokens is None)


def _delta_text(delta: dict) -> str:
    """What a chat delta generated: its content, a refusal's text, or a tool call's name and arguments
    (all generated tokens; a role-only or empty delta generated none)."""
    parts = [delta.get("content"), delta.get("refusal")]
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {}
        parts += [function.get("name"), function.get("arguments")]
    return "".join(p for p in parts if isinstance(p, str))


def _llamacpp_timings(stream: Stream, timings: dict, counts: bool = True) -> None:
    if timings.get("prompt_ms") is not None:
        stream.server_prefill_s = float(timings["prompt_ms"]) / 1e3
    if timings.get("predicted_ms") is not None:
        stream.server_decode_s = float(timings["predicted_ms"]) / 1e3
        # llama.cpp's clock for generation starts at the first token: predicted_ms spans predicted_n - 1 gaps
        predicted = timings.get("predicted_n")
        stream.server_decode_tokens = predicted - 1 if isinstance(predicted, int) and predicted > 1 else None
    if counts and timings.get("predicted_n") is not None:
        stream.output_tokens = int(timings["predicted_n"])
        stream.prompt_tokens = timings.get("prompt_n")
        stream.count_source = "timings"
    if timings.get("cache_n") is not None:
        stream.cached_prompt_tokens = int(timings["cache_n"])


def _llamacpp_line(stream: Stream, data: str, when: float) -> None:
    chunk = _json(data)
    stream.chunks += 1
    if "error" in chunk:
        stream.server_error = str(chunk["error"])[:200]
        return
    tokens = chunk.get("tokens")
    stream.token(
        when, chunk.get("content") or "", len(tokens) if isinstance(tokens, list) and tokens else None
    )
    if chunk.get("stop"):
        stream.ended = True
        stream.finish_reason = chunk.get("stop_type") or ("length" if chunk.get("stopped_limit") else "stop")
        if isinstance(chunk.get("timings"), dict):
            _llamacpp_timings(stream, chunk["timings"])
        elif chunk.get("tokens_predicted") is not None:
            stream.output_tokens = int(chunk["tokens_predicted"])
            stream.prompt_tokens = chunk.get("tokens_evaluated")
            stream.count_source = "timings"


def _ollama_line(stream: Stream, line: str, when: float) -> None:
    chunk = _json(line)
    stream.chunks += 1
    if "error" in chunk:
        stream.server_error = str(chunk["error"])[:200]
        return
    text = chunk.get("response")
    if text is None:
        text = (chunk.get("message") or {}).get("content") or ""
    stream.token(when, text)
    if chunk.get("done"):
        stream.ended = True
        stream.finish_reason = chunk.get("done_reason") or "stop"
        if chunk.get("eval_count") is not None:
            stream.output_tokens = int(chunk["eval_count"])
            stream.prompt_tokens = chunk.get("prompt_eval_count")
            stream.count_source = "eval_count"
        for key, attr in (
            ("load_duration", "load_duration_s"),
            ("prompt_eval_duration", "server_prefill_s"),
            ("eval_duration", "server_decode_s"),
        ):
            if chunk.get(key) is not None:
                setattr(stream, attr, float(chunk[key]) / 1e9)
        stream.server_decode_tokens = chunk.get("eval_count")


def feed(api: str, stream: Stream, raw: bytes, when: float) -> None:
    """Read one line of a stream into `stream`; `Malformed` for a line the format does not allow."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise Malformed("a line that is not UTF-8") from None
    if api == "ollama":
        if line.strip():
            _ollama_line(stream, line, when)
        return
    data = _sse_data(line)
    if data is None:
        return
    if api == "llamacpp":
        _llamacpp_line(stream, data, when)
    else:
        _openai_line(stream, data, when)
