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


# a fresh parent whose only child is toolkit, so that RUSAGE_CHILDREN is toolkit's own peak (in the test
# process it is the largest of every child the suite has run, e.g. a torch bench)
_PEAK_PROBE = (
    "import os, resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
    "open(os.environ['TOOLKIT_TEST_PEAK_FILE'], 'w').write(str(peak)); "
    "sys.exit(rc)"
)


def toolkit_peak_mib(*args: str, tmp: Path, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """`toolkit(*args)` and the peak resident memory of that toolkit process alone, in MiB."""
    peak_file = tmp / "toolkit-peak-rss"
    env = {**(kwargs.pop("env", None) or {}), "TOOLKIT_TEST_PEAK_FILE": str(peak_file)}
    proc = toolkit(*args, env=env, python_prefix=(sys.executable, "-c", _PEAK_PROBE), **kwargs)
    return proc, int(peak_file.read_text()) / 1024


def toolkit(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: int = 600,
    python: str = sys.executable,
    memory_limit: int | None = None,
    python_prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Run the real CLI; `memory_limit` caps its address space (RLIMIT_AS) like a small machine would."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}

    def limit():
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [*python_prefix, python, "-m", "toolkit", *args],
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
