"""The model server in `toolkit health` (the `serving` section): the real `llama-server` (built from the
llama-cpp-python sdist and cached, tests/llama_server.py) serving a tiny model on loopback — up, the model
it serves, its slots idle and then all busy with a request deferred, its API key enforced and never
printed — and Ollama's `/api/version`, `/api/tags` and `/api/ps` as Ollama's own API reference publishes
them (tests/fixtures/serving/PROVENANCE.md), served as they are by a loopback server. Ollama itself cannot
be installed here.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

import pytest
from llama_server import (
    BUILD_HINT,
    LlamaServer,
    build_tiny_llama,
    build_wide_llama,
    free_port,
    llama_server_binary,
)

from toolkit.health.collectors import serving as collector
from toolkit.health.collectors.serving_settings import ServingSettings
from toolkit.health.model import Status

from conftest import toolkit

FIXTURES = Path(__file__).parent / "fixtures" / "serving"
ONLY = ("--skip", "gpu", "--skip", "docker", "--skip", "system", "--skip", "bmc", "--skip", "qdrant")
EXIT = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
KEY = "sk-Serving-Key-for-the-leak-test-5521"


def health(url: str, *args: str, env: dict | None = None, config: Path | None = None):
    extra = ("--config", str(config)) if config else ()
    proc = toolkit("health", *ONLY, "--serving-url", url, "--json", *extra, *args, env=env, timeout=120)
    doc = json.loads(proc.stdout)
    return proc, {c["name"]: c for c in doc["checks"] if c["collector"] == "serving"}, doc


# ---- llama.cpp: the real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"llama-server not built: {BUILD_HINT}")
    folder = tmp_path_factory.mktemp("serving-health")
    base, _ = build_tiny_llama(folder, steps=1, base_steps=1)
    return binary, build_wide_llama(folder, base)  # ~1500 tokens/s here: a long request lasts seconds


def test_llama_server_up_with_its_model_and_idle_slots(gguf, tmp_path):
    binary, model = gguf
    with LlamaServer(binary, model, slots=2) as server:
        proc, checks, doc = health(server.url, "--prom", str(tmp_path / "serving.prom"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert checks["serving.up"]["status"] == "ok"
    assert checks["serving.model"]["status"] == "ok" and model.name in checks["serving.model"]["detail"]
    assert (
        checks["serving.slots"]["value"] == 0 and "0 of 2 slot(s) busy" in checks["serving.slots"]["detail"]
    )
    assert checks["serving.deferred"]["value"] == 0
    section = next(c for c in doc["collectors"] if c["name"] == "serving")
    assert section["info"]["api"] == "llamacpp" and section["info"]["slots"] == 2  # found by itself
    prom = (tmp_path / "serving.prom").read_text()
    assert "toolkit_serving_up 1" in prom and "toolkit_serving_slots_busy 0" in prom
    assert "# HELP toolkit_serving_slots_busy" in prom


def _generate(url: str, tokens: int, headers: dict | None = None) -> None:
    body = json.dumps({"prompt": "a b c", "n_predict": tokens, "ignore_eos": True}).encode()
    request = urllib.request.Request(
        url + "/completion", body, {"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        answer.read()


def test_all_slots_busy_and_a_deferred_request_warn(gguf):
    """One slot: a long generation (30,000 tokens, tens of seconds) holds it and a second request waits
    for it (llama.cpp defers it)."""
    binary, model = gguf
    with LlamaServer(binary, model, slots=1, ctx=32768) as server:
        threads = [
            threading.Thread(target=_generate, args=(server.url, 30000), daemon=True) for _ in range(2)
        ]
        for t in threads:
            t.start()
            time.sleep(0.5)
        deadline, checks = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            proc, checks, _ = health(server.url)
            if checks["serving.deferred"]["value"] >= 1:
                break
        assert checks["serving.slots"]["status"] == "warning", checks
        assert "all 1 slot(s) busy" in checks["serving.slots"]["detail"]
        assert checks["serving.deferred"]["status"] == "warning" and checks["serving.deferred"]["value"] == 1
        assert proc.returncode == EXIT["warning"], proc.stdout


def test_api_key_is_enforced_and_never_printed(gguf, tmp_path):
    binary, model = gguf
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    with LlamaServer(binary, model, slots=1, extra=("--api-key-file", str(key_file))) as server:
        ok, with_key, _ = health(server.url, env={"TOOLKIT_SERVING_API_KEY": KEY})
        no, without, _ = health(server.url)
        bad, wrong, _ = health(server.url, env={"TOOLKIT_SERVING_API_KEY": KEY + "-wrong"})
    assert ok.returncode == 0 and with_key["serving.slots"]["status"] == "ok", ok.stdout
    assert (
        without["serving.auth"]["status"] == "unknown"
        and "needs an API key" in without["serving.auth"]["detail"]
    )
    assert "TOOLKIT_SERVING_API_KEY" in without["serving.auth"]["detail"] and no.returncode == EXIT["unknown"]
    assert "rejected the API key" in wrong["serving.auth"]["detail"]
    for proc in (ok, no, bad):
        assert KEY not in proc.stdout + proc.stderr


def test_a_server_that_is_down(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc, checks, _ = health(url)
    assert checks["serving.up"]["status"] == "unknown" and proc.returncode == EXIT["unknown"]
    assert "cannot connect" in checks["serving.up"]["detail"]
    config = tmp_path / "health.yml"
    config.write_text(json.dumps({"serving": {"url": url, "required": True, "api": "llamacpp"}}))
    proc = toolkit("health", *ONLY, "--config", str(config), "--json", timeout=60)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["serving.up"]["status"] == "critical" and proc.returncode == EXIT["critical"]


@pytest.mark.parametrize(
    ("setting", "words"),
    [({"api": "vllm-ish"}, "serving.api must be one of"), ({"timeout": 0}, "serving.timeout"),
     ({"colour": 1}, "unknown serving setting(s) colour"), ({"required": "yes"}, "serving.required")],
)  # fmt: skip
def test_bad_settings_stop_the_run_with_their_message(setting, words, tmp_path):
    config = tmp_path / "health.yml"
    config.write_text(json.dumps({"serving": {"url": "http://127.0.0.1:9", **setting}}))
    proc = toolkit("health", *ONLY, "--config", str(config), timeout=60)
    assert proc.returncode == EXIT["unknown"] and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# ---- Ollama: its published answers ---------------------------------------------------------------------


class _Ollama(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.answers.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body or b'{"error":"not found"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def ollama():
    """A loopback server answering with the published /api/version, /api/tags and /api/ps; a test may
    change /api/ps (simulated offload cases, labelled where they are made)."""
    answers = {
        f"/api/{name}": (FIXTURES / f"ollama-api-{name}-doc.json").read_bytes()
        for name in ("version", "tags", "ps")
    }
    handler = type("Handler", (_Ollama,), {"answers": answers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def test_ollama_as_its_api_reference_answers(ollama):
    url, _ = ollama
    proc, checks, doc = health(url)
    assert proc.returncode == 0, proc.stdout
    assert checks["serving.up"]["detail"].startswith("Ollama 0.5.1")
    assert checks["serving.model"]["value"] == 1 and "mistral:latest" in checks["serving.model"]["detail"]
    offload = checks["serving.offload.mistral:latest"]
    assert offload["value"] == 100.0 and "100% GPU" in offload["detail"]  # what `ollama ps` prints
    assert next(c for c in doc["collectors"] if c["name"] == "serving")["info"]["api"] == "ollama"


def test_ollama_model_expected_but_not_pulled_or_not_loaded(ollama, tmp_path):
    url, _ = ollama
    config = tmp_path / "health.yml"
    config.write_text(json.dumps({"serving": {"model": "qwen2.5:7b"}}))
    proc, checks, _ = health(url, config=config)
    assert (
        checks["serving.model"]["status"] == "critical"
        and "ollama pull qwen2.5:7b" in checks["serving.model"]["detail"]
    )
    assert proc.returncode == EXIT["critical"]
    config.write_text(json.dumps({"serving": {"model": "llama3.2"}}))  # pulled (as :latest), not in memory
    proc, checks, _ = health(url, config=config)
    assert (
        checks["serving.model"]["status"] == "ok"
        and "first request pays its load" in checks["serving.model"]["detail"]
    )


def _ps_with(answers: dict, vram) -> None:
    """SIMULATED: the published /api/ps with `size_vram` changed (None: left out, as Ollama did for 0)."""
    doc = json.loads(answers["/api/ps"])
    model = copy.deepcopy(doc["models"][0])
    if vram is None:
        model.pop("size_vram")
    else:
        model["size_vram"] = int(model["size"] * vram)
    answers["/api/ps"] = json.dumps({"models": [model]}).encode()


@pytest.mark.parametrize(
    ("vram", "share", "split"),
    [(0.17, 17.0, "83%/17% CPU/GPU"), (0.125, 12.5, "88%/12%"), (None, 0.0, "100% CPU")],
)
def test_ollama_offload_warns_only_where_the_node_has_gpus(ollama, vram, share, split):
    url, answers = ollama
    _ps_with(answers, vram)
    proc, checks, _ = health(url)
    check = checks["serving.offload.mistral:latest"]
    assert check["value"] == share and split in check["detail"]
    assert check["status"] == "ok" and proc.returncode == 0  # this machine has no GPU: CPU is all there is
    result = collector.collect(ServingSettings(url, api="ollama"))
    collector.judge_offload(result, gpus=True)
    (judged,) = [c for c in result.checks if c.name.startswith("serving.offload.")]
    assert judged.status == Status.WARNING and "run on the CPU" in judged.detail
