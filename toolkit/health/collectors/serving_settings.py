"""The `serving:` settings of `toolkit health`, checked before any collector runs (a bad one stops the run
with its message, exit 3). The API key is registered with `toolkit.health.secrets` the moment it is read
and travels only in the Authorization header to the URL named here.

    serving: {url: "http://127.0.0.1:8080", api: auto, model: NAME, timeout: 3, required: true}

`api`: auto (Ollama when /api/version answers, llama.cpp when /props does, else OpenAI-compatible),
llamacpp, ollama or openai (vLLM, TGI and other OpenAI-compatible servers). `model`: the model that must
be served (llama.cpp: an id /v1/models lists; Ollama: a model in /api/tags, loaded or not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from toolkit.errors import HealthError
from toolkit.health import secrets

DEFAULT_TIMEOUT = 3.0
APIS = ("auto", "llamacpp", "ollama", "openai")
KEYS = {"url", "api", "model", "timeout", "required", "api_key"}
API_KEY_ENV = "TOOLKIT_SERVING_API_KEY"
EXAMPLE = 'serving: {url: "http://127.0.0.1:8080", api: llamacpp, required: true}'


class ServingConfigError(HealthError):
    ref = "settings"  # toolkit/errors.py, the stable references


@dataclass
class ServingSettings:
    url: str  # scheme://host:port[/prefix], no trailing slash
    api: str = "auto"
    model: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    required: bool = False
    api_key: str | None = field(default=None, repr=False)


def _problem(message: str, hint: str = EXAMPLE) -> ServingConfigError:
    return ServingConfigError(message, hint=hint)


def _section(cfg) -> dict:
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise _problem(f"the serving setting must be a mapping, not {type(cfg).__name__}")
    unknown = sorted(map(str, set(cfg) - KEYS))
    if unknown:
        known = ", ".join(sorted(KEYS))
        raise _problem(f"unknown serving setting(s) {', '.join(unknown)}", f"known: {known}")
    return cfg


def _url(url) -> str:
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _problem(
            f"the serving URL {secrets.redact(str(url))!r} must be http:// or https:// with a host",
            "for example --serving-url http://127.0.0.1:8080",
        )
    if parts.username or parts.password or parts.query:
        raise _problem(  # never echo it: it may hold the key
            "the serving URL must not carry credentials or a query",
            f"put the API key in {API_KEY_ENV} or serving.api_key in a 0600 settings file",
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise _problem(f"bad port in the serving URL: {err}", "http://HOST:8080") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def _checked(cfg: dict) -> tuple[str, float, bool, str | None]:
    api = cfg.get("api", "auto")
    if api not in APIS:
        raise _problem(f"serving.api must be one of {', '.join(APIS)}, not {api!r}")
    timeout = cfg.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise _problem(f"serving.timeout must be a number of seconds (0-300], not {timeout!r}", "timeout: 3")
    required = cfg.get("required", False)
    if not isinstance(required, bool):
        raise _problem(f"serving.required must be true or false, not {required!r}", "required: true")
    model = cfg.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _problem(f"serving.model must be a model name, not {model!r}", "model: qwen2.5:7b")
    return api, float(timeout), required, model


def settings(cfg, url: str | None = None) -> ServingSettings | None:
    """From the settings file's `serving:` section and `--serving-url` (which wins); None when neither
    names a URL (the section is then left out). Bad settings raise ServingConfigError (exit 3)."""
    cfg = _section(cfg)
    url = url or cfg.get("url")
    if not url:
        return None
    api_key = os.environ.get(API_KEY_ENV) or cfg.get("api_key") or None
    if api_key is not None:
        api_key = str(api_key)
        secrets.register(api_key)
    api, timeout, required, model = _checked(cfg)
    return ServingSettings(_url(url), api, model, timeout, required, api_key)
