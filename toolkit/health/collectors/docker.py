"""Docker: the daemon answers, the nvidia runtime is registered (where NVIDIA GPUs are), named
containers run (and are healthy where they have a health check)."""

from __future__ import annotations

import os

from toolkit.health.collector import Context
from toolkit.health.model import CollectorResult, Status

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def collect(cfg: dict, nvidia_gpus: bool = False) -> CollectorResult:
    result = CollectorResult("docker")
    url = cfg.get("url") or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    expected = bool(cfg.get("required")) or bool(cfg.get("containers"))
    if url.startswith("unix://") and not os.path.exists(url[len("unix://") :]):
        status = Status.CRITICAL if expected else Status.OK
        result.up = not expected
        result.add(
            "docker.daemon",
            status,
            None,
            None,
            f"no Docker socket at {url[len('unix://') :]}" + ("" if expected else " (Docker not installed)"),
        )
        return result
    try:
        import docker
    except ImportError:
        result.add("docker.daemon", Status.UNKNOWN, None, None, "the docker Python SDK is not installed")
        result.up = False
        return result
    timeout = float(cfg.get("timeout", 3))
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        info = client.info()
        version = client.version().get("Version")
    except Exception as err:  # docker raises DockerException, requests errors, OSError
        result.up = False
        reason = str(err).split(":", 1)[-1].strip() or type(err).__name__
        result.add("docker.daemon", Status.CRITICAL, None, None, f"daemon at {url} does not answer: {reason}")
        return result
    result.info["server_version"] = version
    result.add(
        "docker.daemon",
        Status.OK,
        version,
        None,
        f"daemon {version} answers at {url}",
        "toolkit_docker_up",
        prom_value=1.0,
    )
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    want_nvidia = cfg.get("require_nvidia_runtime")
    if want_nvidia is None:
        want_nvidia = nvidia_gpus
    if "nvidia" in runtimes:
        result.add(
            "docker.nvidia_runtime",
            Status.OK,
            "registered",
            None,
            f"runtimes: {', '.join(runtimes)}; default {info.get('DefaultRuntime')}",
        )
    else:
        result.add(
            "docker.nvidia_runtime",
            Status.CRITICAL if want_nvidia else Status.OK,
            "missing",
            None,
            f"runtimes: {', '.join(runtimes) or 'none'}"
            + (
                "; run the nvidia_container_toolkit role (nvidia-ctk runtime configure)"
                if want_nvidia
                else "; not required on this node"
            ),
        )
    for name in cfg.get("containers") or []:
        _container_check(result, client, name)
    client.close()
    return result


class DockerCollector:
    name = "docker"

    def collect(self, ctx: Context) -> CollectorResult:
        return collect(ctx.config.get("docker") or {}, bool(ctx.nvidia_gpus()))


def _container_check(result: CollectorResult, client, name: str) -> None:
    import docker

    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        result.add(
            f"docker.container.{name}",
            Status.CRITICAL,
            "missing",
            None,
            f"no container named {name}",
            "toolkit_docker_container_running",
            prom_value=0.0,
            container=name,
        )
        return
    except Exception as err:
        result.add(
            f"docker.container.{name}",
            Status.UNKNOWN,
            None,
            None,
            f"cannot inspect {name}: {err}",
            container=name,
        )
        return
    state = container.attrs.get("State", {})
    status_text = state.get("Status", "unknown")
    health = (state.get("Health") or {}).get("Status")
    running = status_text == "running"
    if not running or health == "unhealthy":
        status = Status.CRITICAL
    elif health == "starting" or state.get("Restarting"):
        status = Status.WARNING
    else:
        status = Status.OK
    detail = (
        f"{status_text}"
        + (f", health {health}" if health else "")
        + f", restarts {container.attrs.get('RestartCount', 0)}"
    )
    result.add(
        f"docker.container.{name}",
        status,
        status_text,
        None,
        detail,
        "toolkit_docker_container_running",
        prom_value=1.0 if running else 0.0,
        container=name,
    )
