"""The `qdrant:` settings of `toolkit health`, checked before any collector runs: a bad one stops the run
with its message (exit 3, UNKNOWN) instead of turning into a Qdrant that seems down. The API key is
registered with `toolkit.health.secrets` here, the moment it is read, so it is never printed.

    qdrant: {url: "http://127.0.0.1:6333", api_key: "...", timeout: 3, required: true,
             storage_path: /var/lib/qdrant/storage, expect_gpu_indexing: auto, insecure: false, ca: FILE}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from toolkit.errors import HealthError
from toolkit.health import secrets
from toolkit.peer import is_this_machine

DEFAULT_TIMEOUT = 3.0
KEYS = {"url", "api_key", "timeout", "required", "storage_path", "expect_gpu_indexing", "insecure", "ca"}
API_KEY_ENV = "TOOLKIT_QDRANT_API_KEY"


class QdrantConfigError(HealthError):
    ref = "settings"  # toolkit/errors.py, the stable references


@dataclass
class QdrantSettings:
    url: str  # scheme://host:port[/prefix], no trailing slash
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    required: bool = False
    storage_path: str | None = None
    expect_gpu_indexing: bool | None = None  # None: warn only where this node has NVIDIA GPUs
    verify: bool | str = True
    local: bool = False  # the URL points at this node: its GPUs are Qdrant's GPUs

    @property
    def display(self) -> str:
        return self.url


def _section(cfg) -> dict:
    """The `qdrant:` mapping (empty when absent), refusing another type or a key it does not know."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise QdrantConfigError(
            f"the qdrant setting must be a mapping, not {type(cfg).__name__}",
            hint='for example  qdrant: {url: "http://127.0.0.1:6333", required: true}',
        )
    unknown = sorted(set(cfg) - KEYS)
    if unknown:
        raise QdrantConfigError(
            f"unknown qdrant setting(s) {', '.join(map(str, unknown))}",
            hint=f"known: {', '.join(sorted(KEYS))}",
        )
    return cfg


def _api_key(cfg: dict) -> str | None:
    """The key from the environment or the settings, registered as a secret the moment it is read."""
    api_key = os.environ.get(API_KEY_ENV) or cfg.get("api_key") or None
    if api_key is not None:
        api_key = str(api_key)
        secrets.register(api_key)
    return api_key


def _base_url(url) -> tuple[str, str]:
    """(scheme://host:port[/prefix], host name) of a URL without credentials or a query."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QdrantConfigError(
            f"the Qdrant URL {secrets.redact(str(url))!r} must be http:// or https:// with a host",
            hint="for example --qdrant-url http://127.0.0.1:6333",
        )
    if parts.username or parts.password or parts.query:
        raise QdrantConfigError(  # never echo it: it may hold the key
            "the Qdrant URL must not carry credentials or a query",
            hint=f"put the API key in {API_KEY_ENV} or qdrant.api_key in a 0600 settings file",
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 6333)
    except ValueError as err:
        raise QdrantConfigError(f"bad port in the Qdrant URL: {err}", hint="http://HOST:6333") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}", parts.hostname


def _timeout(cfg: dict) -> float:
    timeout = cfg.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise QdrantConfigError(
            f"qdrant.timeout must be a number of seconds (0-300], not {timeout!r}",
            hint="for example timeout: 3",
        )
    return float(timeout)


def _check_flags(cfg: dict) -> None:
    for key in ("required", "insecure"):
        if not isinstance(cfg.get(key, False), bool):
            raise QdrantConfigError(
                f"qdrant.{key} must be true or false, not {cfg[key]!r}", hint=f"{key}: true"
            )


def _expect_gpu_indexing(cfg: dict) -> bool | None:
    expect = cfg.get("expect_gpu_indexing", "auto")
    if expect not in (True, False, "auto"):
        raise QdrantConfigError(
            f"qdrant.expect_gpu_indexing must be true, false or auto, not {expect!r}",
            hint="auto: expected where Qdrant runs on this node and this node has NVIDIA GPUs",
        )
    return None if expect == "auto" else expect


def _verify(cfg: dict) -> bool | str:
    """False with `insecure`, the CA bundle's path with `ca`, else True."""
    verify: bool | str = not cfg.get("insecure", False)
    if verify and cfg.get("ca"):
        if not os.path.isfile(str(cfg["ca"])):
            raise QdrantConfigError(f"qdrant.ca {cfg['ca']} is not a readable file", hint="a PEM CA bundle")
        verify = str(cfg["ca"])
    return verify


def settings(cfg, url: str | None = None) -> QdrantSettings | None:
    """The Qdrant settings from the settings file's `qdrant:` section and `--qdrant-url` (which wins), or
    None when neither names a URL. Bad settings raise QdrantConfigError (exit 3, UNKNOWN)."""
    cfg = _section(cfg)
    url = url or cfg.get("url")
    if not url:
        return None
    api_key = _api_key(cfg)
    base_url, hostname = _base_url(url)
    timeout = _timeout(cfg)
    _check_flags(cfg)
    expect = _expect_gpu_indexing(cfg)
    verify = _verify(cfg)
    storage = cfg.get("storage_path")
    return QdrantSettings(
        url=base_url,
        api_key=api_key,
        timeout=timeout,
        required=bool(cfg.get("required", False)),
        storage_path=str(storage) if storage else None,
        expect_gpu_indexing=expect,
        verify=verify,
        local=is_this_machine(hostname),
    )
