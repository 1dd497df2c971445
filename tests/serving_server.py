"""A deterministic-timing inference server for tests and benchmarks: SIMULATED, shaped like the real ones.

It speaks the streaming shapes of three real APIs (tests/fixtures/serving/PROVENANCE.md names the
sources they follow) on loopback, with token timing the test sets and the server records:
- OpenAI-compatible (vLLM's shape): GET /v1/models, POST /v1/completions (SSE `data: {...}` chunks,
  `usage` on a chunk of its own with `stream_options.include_usage`, `data: [DONE]`), GET /metrics with
  vLLM's counter names;
- llama.cpp's server: GET /props (total_slots), /slots, /v1/models (with `meta.size`), /metrics
  (`llamacpp:` counters), POST /completion (SSE chunks with `content`, `stop`, `timings` at the end);
- Ollama: GET /api/tags, /api/ps, POST /api/generate (NDJSON, `done` and durations in ns at the end).

The behaviour is one `Scenario` for the whole server, set by a test (`POST /_scenario` or
`ServingServer(scenario)`): time to first token, gap between chunks, tokens per chunk, parallel slots,
and the bad cases — a role-only/empty first chunk, SSE comment pings, a stream cut after N chunks (an
abort, or a clean end without finish reason), a malformed line, a final burst, a missing usage, short
answers, cached prompt tokens. `GET /_truth` returns, per request, when it arrived and when each
token-carrying chunk was written (time.monotonic(), CLOCK_MONOTONIC: the same clock as the client's in
another process on this machine).

In tests:   with ServingServer(Scenario(ttft_s=0.2)) as server: server.url, server.truth()
Benchmarks: python tests/serving_server.py --port 0 --ttft 0.05 --gap 0.001   (prints the URL)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAVOURS = ("any", "openai", "llamacpp", "ollama")


@dataclass
class Scenario:
    flavour: str = "any"  # which API's endpoints answer (any: all of them)
    models: list[str] = field(default_factory=lambda: ["tiny-llama"])
    ttft_s: float = 0.05
    gap_s: float = 0.01
    tokens_per_chunk: int = 1
    slots: int = 4
    role_first: bool = False  # an empty first chunk before any token
    pings: bool = False  # ": ping" SSE comments between chunks
    cut_after: int | None = None  # chunks written before the stream is cut
    cut_clean: bool = False  # cut: end the HTTP body properly (no finish reason) instead of aborting
    malformed_after: int | None = None  # a broken line after N chunks
    burst: bool = False  # every token written at once at the end (after the full decode time)
    usage: bool = True
    short_by: int = 0  # answers this many tokens shorter than asked
    cached_tokens: int = 0
    weights_bytes: int = 10_000_000


class State:
    def __init__(self, scenario: Scenario):
        self.lock = threading.Lock()
        self.set(scenario)

    def set(self, scenario: Scenario) -> None:
        with self.lock:
            self.scenario = scenario
            self.slots = threading.BoundedSemaphore(scenario.slots)
            self.truth: list[dict] = []
            self.counters = {"prompt": 0, "generated": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "serving-sim/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def state(self) -> State:
        return self.server.state

    def _json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _allowed(self, flavour: str) -> bool:
        return self.state.scenario.flavour in ("any", flavour)

    def do_GET(self) -> None:
        sc = self.state.scenario
        path = self.path.split("?")[0]
        if path == "/_truth":
            with self.state.lock:
                return self._json(200, list(self.state.truth))
        if path == "/v1/models" and (self._allowed("openai") or self._allowed("llamacpp")):
            meta = (
                {"size": sc.weights_bytes, "n_params": sc.weights_bytes // 2}
                if sc.flavour == "llamacpp"
                else None
            )
            return self._json(
                200,
                {"object": "list", "data": [{"id": m, "object": "model", "meta": meta} for m in sc.models]},
            )
        if path == "/props" and self._allowed("llamacpp"):
            return self._json(200, {"total_slots": sc.slots, "model_path": "/models/tiny.gguf"})
        if path == "/slots" and self._allowed("llamacpp"):
            return self._json(200, [{"id": i, "is_processing": False} for i in range(sc.slots)])
        if path == "/api/tags" and self._allowed("ollama"):
            return self._json(200, {"models": [{"name": m, "size": sc.weights_bytes} for m in sc.models]})
        if path == "/api/ps" and self._allowed("ollama"):
            ps = [{"name": sc.models[0], "size": sc.weights_bytes, "size_vram": sc.weights_bytes // 2}]
            return self._json(200, {"models": ps})
        if path == "/metrics" and sc.flavour in ("openai", "llamacpp"):
            return self._metrics(sc.flavour)
        self._json(404, {"error": f"not found: {path}"})

    def _metrics(self, flavour: str) -> None:
        c = self.state.counters
        if flavour == "llamacpp":
            text = (
                "# TYPE llamacpp:prompt_tokens_total counter\n"
                f"llamacpp:prompt_tokens_total {c['prompt']}\n"
                "# TYPE llamacpp:tokens_predicted_total counter\n"
                f"llamacpp:tokens_predicted_total {c['generated']}\n"
            )
        else:
            text = (
                "# TYPE vllm:prompt_tokens_total counter\n"
                f'vllm:prompt_tokens_total{{model_name="m"}} {float(c["prompt"])}\n'
                "# TYPE vllm:generation_tokens_total counter\n"
                f'vllm:generation_tokens_total{{model_name="m"}} {float(c["generated"])}\n'
            )
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        received = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._json(400, {"error": "bad JSON"})
        if self.path == "/_scenario":
            self.state.set(Scenario(**body))
            return self._json(200, asdict(self.state.scenario))
        routes = {"/v1/completions": ("openai", "openai"), "/completion": ("llamacpp", "llamacpp")}
        routes["/api/generate"] = ("ollama", "ollama")
        route = routes.get(self.path)
        if route is None or not (
            self._allowed(route[0]) or (route[0] == "openai" and self._allowed("llamacpp"))
        ):
            return self._json(404, {"error": f"not found: {self.path}"})
        sc = self.state.scenario
        model = body.get("model")
        if model is not None and model not in sc.models:
            return self._json(
                404, {"error": {"message": f"The model `{model}` does not exist.", "code": 404}}
            )
        asked = (
            body.get("max_tokens")
            or body.get("n_predict")
            or (body.get("options") or {}).get("num_predict")
            or 16
        )
        with self.state.slots:
            self._stream(route[1], sc, int(asked), len(str(body.get("prompt", "")).split()), received)

    # -- the stream -------------------------------------------------------------------------------
    def _start(self, ndjson: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson" if ndjson else "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _line(self, fmt: str, obj) -> None:
        self._write(json.dumps(obj) + "\n" if fmt == "ollama" else f"data: {json.dumps(obj)}\n\n")

    def _token_chunk(self, fmt: str, n: int, index: int) -> dict:
        text = "".join(f" t{index + k}" for k in range(n))
        if fmt == "ollama":
            return {"model": "m", "response": text, "done": False}
        if fmt == "llamacpp":
            return {"content": text, "stop": False}
        return {
            "id": "cmpl-sim",
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": None}],
        }

    def _plan(self, sc: Scenario, total: int) -> list[int]:
        sizes, left = [], total
        while left > 0:
            sizes.append(min(sc.tokens_per_chunk, left))
            left -= sizes[-1]
        return sizes

    def _stream(self, fmt: str, sc: Scenario, asked: int, prompt_words: int, received: float) -> None:
        started = time.monotonic()  # a slot is free: prefill starts
        total = max(0, asked - sc.short_by)
        sizes = self._plan(sc, total)
        sends: list[float] = []
        self._start(fmt == "ollama")
        if sc.role_first and fmt == "openai":
            self._line(fmt, {"id": "cmpl-sim", "choices": [{"index": 0, "text": "", "finish_reason": None}]})
        produced = 0
        for i, n in enumerate(sizes):
            due = started + sc.ttft_s + i * sc.gap_s
            if not sc.burst:
                _sleep_until(due)
            if sc.cut_after is not None and i >= sc.cut_after:
                return self._cut(sc, sends, received, produced, prompt_words)
            if sc.malformed_after is not None and i >= sc.malformed_after:
                self._write("data: {not json\n\n" if fmt != "ollama" else "{not json\n")
                return self._finish_truth(sends, received, produced, prompt_words, end=False)
            if sc.pings and fmt != "ollama":
                self._write(": ping\n\n")
            if sc.burst and i == 0:
                _sleep_until(started + sc.ttft_s + (len(sizes) - 1) * sc.gap_s)
            self._line(fmt, self._token_chunk(fmt, n, produced))
            sends.append(time.monotonic())
            produced += n
        self._final(fmt, sc, sends, started, produced, prompt_words)
        self._write("")  # the chunked body's end
        self._finish_truth(sends, received, produced, prompt_words)

    def _final(self, fmt, sc, sends, started, produced, prompt_words) -> None:
        first, last = (sends[0], sends[-1]) if sends else (started, started)
        if sc.burst:  # the server decoded at its pace; only the writing was held back
            first, last = started + sc.ttft_s, started + sc.ttft_s + max(0, len(sends) - 1) * sc.gap_s
        if fmt == "ollama":
            self._line(
                fmt,
                {
                    "model": "m",
                    "response": "",
                    "done": True,
                    "done_reason": "length",
                    "load_duration": 1_000_000,
                    "prompt_eval_count": prompt_words,
                    "prompt_eval_duration": int((first - started) * 1e9),
                    "eval_count": produced,
                    "eval_duration": int((last - first + sc.gap_s) * 1e9),  # every token one gap
                },
            )
            return
        if fmt == "llamacpp":
            timings = {
                "prompt_n": prompt_words,
                "prompt_ms": (first - started) * 1e3,
                "predicted_n": produced,
                "predicted_ms": (last - first) * 1e3,
                "cache_n": sc.cached_tokens,
            }
            self._line(
                fmt,
                {
                    "content": "",
                    "stop": True,
                    "stop_type": "limit",
                    "timings": timings,
                    "tokens_predicted": produced,
                },
            )
            return
        self._line(fmt, {"id": "cmpl-sim", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        if sc.usage:
            usage = {
                "prompt_tokens": prompt_words,
                "completion_tokens": produced,
                "total_tokens": prompt_words + produced,
            }
            if sc.cached_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": sc.cached_tokens}
            self._line(fmt, {"id": "cmpl-sim", "choices": [], "usage": usage})
        self._write("data: [DONE]\n\n")

    def _cut(self, sc, sends, received, produced, prompt_words) -> None:
        if sc.cut_clean:
            self._write("")
        else:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
        self._finish_truth(sends, received, produced, prompt_words, end=False)

    def _finish_truth(self, sends, received, produced, prompt_words, end: bool = True) -> None:
        with self.state.lock:
            self.state.truth.append({"received": received, "sends": sends, "tokens": produced, "ended": end})
            self.state.counters["generated"] += produced
            self.state.counters["prompt"] += prompt_words


def _sleep_until(when: float) -> None:
    while True:
        left = when - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05) if left > 0.002 else left)


class ServingServer:
    """The server in a process of its own (its own interpreter: the client's timing is not disturbed by the
    server's GIL), on 127.0.0.1 and a free port."""

    def __init__(self, scenario: Scenario | None = None):
        self.scenario = scenario or Scenario()
        self.proc = None
        self.url = ""

    def __enter__(self) -> ServingServer:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--port", "0", "--scenario", json.dumps(asdict(self.scenario))],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.proc.kill()
            raise RuntimeError("the serving test server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def _call(self, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def set(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._call("/_scenario", asdict(scenario))

    def truth(self) -> list[dict]:
        return self._call("/_truth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="{}", help="the Scenario as JSON")
    parser.add_argument("--ttft", type=float)
    parser.add_argument("--gap", type=float)
    args = parser.parse_args()
    scenario = Scenario(**json.loads(args.scenario))
    if args.ttft is not None:
        scenario.ttft_s = args.ttft
    if args.gap is not None:
        scenario.gap_s = args.gap
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(scenario)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
