"""The `serving` load: `toolkit bench --serve URL` drives a running inference server (OpenAI-compatible,
Ollama, llama.cpp's server, vLLM, TGI) with streaming requests and measures it as it serves
(docs/SERVING.md). Standard library only on the request path, so the client's own overhead stays small.

- `api.py`: what each API is sent and how its stream is read (SSE, NDJSON) into `Stream` events
- `client.py`: one streaming request over `http.client`, with a total deadline and size caps
- `server_info.py`: probing the server (API, models, slots, /metrics, Ollama's /api/ps)
- `prompts.py`, `arrivals.py`: what is sent and when; `metrics.py`, `checks.py`: what it measured and
  whether it may be believed; `expectations.py`: the roofline; `run.py`: the command's path and document
"""
