"""The environment a run happened in: host, CPU, memory, accelerator, library versions, commit."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

from toolkit import __version__
from toolkit.detect import cpu_model

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "nvidia-ml-py")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    """The toolkit checkout's commit, when it runs from one (editable install)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def collect(device: str, detection) -> dict:
    import sys

    torch = sys.modules.get("torch")  # imported by then when a load needs it; a vectors-only run may not
    env = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": _memory_total(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "device": device,
        "accelerator": detection.as_dict(),
        "libraries": {lib: _version(lib) for lib in LIBRARIES},
        "toolkit": {"version": __version__, "commit": _commit()},
    }
    if device != "cpu":
        props = torch.cuda.get_device_properties(0)
        env["torch_device"] = {
            "name": props.name,
            "memory_total_bytes": props.total_memory,
            "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None),
            "capability": f"{props.major}.{props.minor}",
        }
    return env
