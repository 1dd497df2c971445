"""Shared helpers: run the real `toolkit` CLI in a subprocess, and one real tiny benchmark run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `toolkit health` with only the BMC collector: what the BMC tests look at
BMC_ONLY = ("--skip", "gpu", "--skip", "docker", "--skip", "system")


def toolkit(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: int = 600,
    python: str = sys.executable,
    memory_limit: int | None = None,
) -> subprocess.CompletedProcess:
    """Run the real CLI; `memory_limit` caps its address space (RLIMIT_AS) like a small machine would."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}

    def limit():
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [python, "-m", "toolkit", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`toolkit bench --scale tiny` with every load, run once for the whole session."""
    out = tmp_path_factory.mktemp("tiny-run")
    json_path = out / "run.json"
    proc = toolkit(
        "bench",
        "--scale",
        "tiny",
        "--json",
        str(json_path),
        "--results-dir",
        str(out / "results"),
        "--threads",
        "1",
    )
    doc = json.loads(json_path.read_text()) if json_path.exists() else None
    return proc, doc, out


def load_schema() -> dict:
    return json.loads((REPO / "toolkit" / "data" / "bench-result.schema.json").read_text())
