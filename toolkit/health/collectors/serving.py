"""A model server on this node (llama.cpp's `llama-server`, Ollama, or an OpenAI-compatible server such as
vLLM or TGI): it answers, the model is loaded, and how busy its slots are.

- llama.cpp: `/health` (200 ok; 503 while the model loads), `/v1/models` (the served model), `/slots`
  (each slot's `is_processing`), `/metrics` (`llamacpp:requests_deferred`: requests waiting for a slot).
- Ollama: `/api/version`, `/api/tags` (the pulled models), `/api/ps` (the loaded ones, `size` and
  `size_vram`: the share of the model in GPU memory; `size_vram` absent means 0, issue ollama#4840).
  A model partly or wholly on the CPU of a node with GPUs is a WARNING: the users' Ollama ran 56 of 61
  layers on the GPU and lost speed until `num_gpu` was set by hand.
- OpenAI-compatible: `/v1/models`, and vLLM's running/waiting gauges from `/metrics` where it has them.

One deadline covers the whole read (`serving.timeout`, 3 s), as for Qdrant; a server that is down is
CRITICAL where `serving.required`, otherwise UNKNOWN. The API key goes only to the named URL, in the
Authorization header, and is never printed.
"""

from __future__ import annotations

import math
import re

from toolkit.health import secrets
from toolkit.health.collector import Context
from toolkit.health.collectors.serving_settings import API_KEY_ENV, ServingSettings, settings
from toolkit.health.model import CollectorResult, Status

GAUGE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)", re.M)


class _Failed(Exception):
    """No usable answer: `kind` is down, timeout, auth or protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _Client:
    def __init__(self, s: ServingSettings):
        from toolkit.peer import Peer

        headers = {"Accept": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        self.s = s
        self.peer = Peer(s.url, s.timeout, name=s.url, headers=headers)

    def get(self, path: str):
        import requests

        from toolkit.peer import PeerError

        try:
            answer = self.peer.request("GET", path)
        except PeerError as err:
            raise _Failed("timeout" if err.kind == "timeout" else "protocol", str(err)) from None
        except requests.exceptions.Timeout:
            raise _Failed("timeout", f"{self.s.url} did not answer within {self.s.timeout:g} s") from None
        except requests.exceptions.RequestException as err:
            why = secrets.redact(str(err).rsplit(": ", 1)[-1])[:200]
            raise _Failed("down", f"cannot connect to {self.s.url}: {why}") from None
        if answer.status_code in (401, 403):
            said = secrets.redact(answer.text.strip()[:200]) or answer.reason
            need = "rejected the API key" if self.s.api_key else "needs an API key"
            raise _Failed("auth", f"{self.s.url}{path} {need} (HTTP {answer.status_code}: {said})")
        return answer

    def json(self, path: str, expect=dict):
        answer = self.get(path)
        try:
            doc = answer.json()
        except ValueError:
            doc = None
        if answer.status_code != 200 or not isinstance(doc, expect):
            raise _Failed("protocol", f"{path}: HTTP {answer.status_code}, not the expected JSON")
        return doc


def _down(s: ServingSettings) -> Status:
    return Status.CRITICAL if s.required else Status.UNKNOWN


def _up(result: CollectorResult, detail: str, **labels: str) -> None:
    result.add("serving.up", Status.OK, "up", None, detail, "toolkit_serving_up", 1.0, **labels)


def detect(client: _Client) -> str:
    """llamacpp when /health answers llama.cpp's JSON (public even with an API key), ollama when
    /api/version answers with a version, else openai."""
    answer = client.get("/health")
    if answer.status_code in (200, 503) and _keys(answer) & {"status", "error"}:
        return "llamacpp"
    try:
        answer = client.get("/api/version")
    except _Failed as err:
        if err.kind != "auth":
            raise
        return "openai"
    return "ollama" if answer.status_code == 200 and "version" in _keys(answer) else "openai"


def _keys(answer) -> set:
    try:
        doc = answer.json()
    except ValueError:
        return set()
    return set(doc) if isinstance(doc, dict) else set()


def _model_ids(client: _Client) -> list[str]:
    data = client.json("/v1/models").get("data")
    return [str(m.get("id")) for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _served(result: CollectorResult, s: ServingSettings, ids: list[str]) -> None:
    shown = ", ".join(ids[:5]) or "none"
    if s.model and not any(s.model == i or i.rsplit("/", 1)[-1] == s.model for i in ids):
        result.add("serving.model", Status.CRITICAL, "missing", None, f"serves {shown}, not {s.model}")
    elif not ids:
        result.add("serving.model", Status.CRITICAL, "none", None, "/v1/models lists no model")
    else:
        result.add(
            "serving.model",
            Status.OK,
            ids[0],
            None,
            f"serves {shown}",
            "toolkit_serving_model_loaded",
            1.0,
            model=ids[0],
        )


def _gauges(client: _Client) -> dict[str, float]:
    """The unlabelled samples of /metrics (empty when it is off)."""
    try:
        answer = client.get("/metrics")
    except _Failed as err:
        if err.kind in ("down", "timeout"):
            raise
        return {}
    if answer.status_code != 200:
        return {}
    found = {}
    for name, value in GAUGE.findall(answer.text):
        try:
            found.setdefault(name, float(value))
        except ValueError:
            continue
    return found


def _llamacpp(client: _Client, result: CollectorResult) -> None:
    s = client.s
    health = client.get("/health")
    if health.status_code == 503:  # the model is still loading
        result.add(
            "serving.up",
            Status.WARNING,
            "loading",
            None,
            f"{s.url} is loading its model (HTTP 503)",
            "toolkit_serving_up",
            1.0,
        )
        return
    if health.status_code != 200:
        raise _Failed("down", f"{s.url}/health answered HTTP {health.status_code}")
    _up(result, f"llama.cpp server at {s.url} answers /health")
    _served(result, s, _model_ids(client))
    answer = client.get("/slots")
    gauges = _gauges(client)
    deferred = gauges.get("llamacpp:requests_deferred")
    slots = None
    if answer.status_code == 200:
        try:
            slots = answer.json()
        except ValueError:
            slots = None
    if isinstance(slots, list) and slots:
        busy = sum(1 for x in slots if isinstance(x, dict) and (x.get("is_processing") or x.get("state")))
        _slots(result, busy, len(slots), deferred)
    elif "llamacpp:requests_processing" in gauges:
        _slots(result, int(gauges["llamacpp:requests_processing"]), None, deferred)
    else:
        why = "neither /slots nor /metrics answered: start llama-server with --slots or --metrics"
        result.add("serving.slots", Status.UNKNOWN, None, None, why)


def _slots(result: CollectorResult, busy: int, total: int | None, deferred: float | None) -> None:
    waiting = f"; {int(deferred)} request(s) waiting for a slot" if deferred else ""
    if total is None:
        detail = f"{busy} request(s) in progress (slot count unknown: /slots is off){waiting}"
        status = Status.OK
    elif busy >= total:
        detail, status = f"all {total} slot(s) busy: new requests wait{waiting}", Status.WARNING
    else:
        detail, status = f"{busy} of {total} slot(s) busy{waiting}", Status.OK
    result.add("serving.slots", status, busy, "slots", detail, "toolkit_serving_slots_busy")
    if total is not None:
        result.info["slots"] = total
    if deferred is not None:
        result.add(
            "serving.deferred",
            Status.WARNING if deferred else Status.OK,
            int(deferred),
            "requests",
            "requests waiting for a free slot",
            "toolkit_serving_requests_deferred",
        )


def _ollama(client: _Client, result: CollectorResult) -> None:
    s = client.s
    version = client.json("/api/version").get("version")
    _up(result, f"Ollama {version} at {s.url}", version=str(version))
    result.info["version"] = version
    pulled = [str(m.get("name")) for m in client.json("/api/tags").get("models") or [] if isinstance(m, dict)]
    loaded = [m for m in client.json("/api/ps").get("models") or [] if isinstance(m, dict)]
    names = [str(m.get("name") or m.get("model")) for m in loaded]
    result.info["loaded"] = names
    if s.model and not {s.model, f"{s.model}:latest"} & set(pulled):
        detail = f"{s.model} is not pulled (ollama pull {s.model})"
        result.add("serving.model", Status.CRITICAL, "missing", None, detail)
    elif s.model and not {s.model, f"{s.model}:latest"} & set(names):
        result.add(
            "serving.model",
            Status.OK,
            "not loaded",
            None,
            f"{s.model} is pulled, not in memory: the first request pays its load",
        )
    else:
        detail = f"loaded: {', '.join(names)}" if names else "no model in memory (Ollama loads on demand)"
        result.add("serving.model", Status.OK, len(names), "models", detail, "toolkit_serving_models_loaded")
    for model, name in zip(loaded, names, strict=True):
        size, vram = model.get("size"), model.get("size_vram") or 0
        if not isinstance(size, int | float) or size <= 0 or not isinstance(vram, int | float):
            continue
        share = min(1.0, vram / size)
        split = f"{_processor(size, vram)} (as `ollama ps` says it)"
        result.add(
            f"serving.offload.{name}",
            Status.OK,
            round(share * 100, 1),
            "% on GPU",
            f"{vram / 2**30:.1f} of {size / 2**30:.1f} GiB in GPU memory, {split}",
            "toolkit_serving_gpu_share",
            round(share, 4),
            model=name,
        )


def _processor(size: float, vram: float) -> str:
    """`ollama ps`'s PROCESSOR column, computed as Ollama's CLI computes it (cmd/cmd.go)."""
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if vram > size:
        return "Unknown"
    cpu = math.floor((size - vram) / size * 100 + 0.5)  # Go's math.Round: halves away from zero
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _openai(client: _Client, result: CollectorResult) -> None:
    s = client.s
    ids = _model_ids(client)
    _up(result, f"OpenAI-compatible server at {s.url} answers /v1/models")
    _served(result, s, ids)
    gauges = _gauges(client)
    running, waiting = gauges.get("vllm:num_requests_running"), gauges.get("vllm:num_requests_waiting")
    if running is not None:
        result.add(
            "serving.running",
            Status.OK,
            int(running),
            "requests",
            "requests in progress (vLLM)",
            "toolkit_serving_requests_running",
        )
    if waiting is not None:
        result.add(
            "serving.waiting",
            Status.WARNING if waiting else Status.OK,
            int(waiting),
            "requests",
            "requests queued for the engine (vLLM)",
            "toolkit_serving_requests_waiting",
        )


READERS = {"llamacpp": _llamacpp, "ollama": _ollama, "openai": _openai}


def collect(s: ServingSettings) -> CollectorResult:
    result = CollectorResult("serving", info={"url": s.url})
    client = _Client(s)
    try:
        api = s.api if s.api != "auto" else detect(client)
        result.info["api"] = api
        READERS[api](client, result)
    except _Failed as err:
        _unreadable(result, s, err)
    finally:
        client.peer.close()
    return result


def _unreadable(result: CollectorResult, s: ServingSettings, err: _Failed) -> None:
    if not any(c.name == "serving.up" for c in result.checks):
        result.up = False
        result.add("serving.up", _down(s), err.kind, None, str(err), "toolkit_serving_up", 0.0)
    elif err.kind == "auth":
        verb = "check" if s.api_key else "set"
        result.add("serving.auth", Status.UNKNOWN, "rejected", None, f"{err}; {verb} {API_KEY_ENV}")
    else:
        read = ", ".join(c.name.removeprefix("serving.") for c in result.checks)
        result.add("serving.read", _down(s), err.kind, None, f"{err}; read so far: {read}")


def judge_offload(result: CollectorResult, gpus: bool | None) -> None:
    """A model partly or wholly in CPU memory is a WARNING on a node with GPUs (known only when the GPU
    section was read): its layers run on the CPU."""
    if not gpus:
        return
    for check in result.checks:
        if check.name.startswith("serving.offload.") and check.value < 100:
            check.status = Status.WARNING
            check.detail += (
                "; this node has GPUs: the layers in CPU memory run on the CPU (free GPU memory, or set "
                "num_gpu / OLLAMA_GPU_OVERHEAD, or use a smaller quantization)"
            )


def overdue(s: ServingSettings, waited: float) -> CollectorResult:
    result = CollectorResult("serving", up=False, info={"url": s.url})
    detail = f"{s.url} did not finish answering within {waited:.1f} s (slow)"
    result.add("serving.up", _down(s), "timeout", None, detail, "toolkit_serving_up", 0.0)
    return result


class ServingCollector:
    """Reads beside the local collectors; the offload is judged once the GPU section is known."""

    name = "serving"

    def __init__(self) -> None:
        self.settings: ServingSettings | None = None

    def prepare(self, ctx: Context) -> bool:
        self.settings = settings(ctx.config.get("serving"), ctx.opts.serving_url)
        return self.settings is not None

    def deadline(self) -> float:
        return self.settings.timeout + 1.0

    def collect(self, ctx: Context) -> CollectorResult:
        return collect(self.settings)

    def settle(self, ctx: Context, result: CollectorResult | None, waited: float) -> CollectorResult:
        if result is None:
            result = overdue(self.settings, waited)
        judge_offload(result, ctx.nvidia_gpus())
        return result
