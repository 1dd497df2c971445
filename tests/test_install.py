"""The core install stays light, and `toolkit bench` without the ML stack says how to get it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, toolkit


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory):
    """A fresh venv with only the core install (no `ml` extra)."""
    base = tmp_path_factory.mktemp("core")
    venv, source = base / "venv", base / "source"
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "results", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
        ),
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return py


def test_core_install_pulls_no_ml_stack(core_venv):
    out = subprocess.run(
        [str(core_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for heavy in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        assert f"\n{heavy}==" not in f"\n{out}", f"core install pulled {heavy}"


def test_bench_without_ml_stack_exits_2_with_install_hint(core_venv, tmp_path):
    proc = toolkit("bench", "--results-dir", str(tmp_path), python=str(core_venv), cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs the ML stack; missing: torch" in proc.stderr
    assert "pip install torch==2.13.0" in proc.stderr and "llm-node-toolkit[ml]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_gpus_works_on_the_core_install(core_venv, tmp_path):
    proc = toolkit("gpus", python=str(core_venv), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "h100-sxm" in proc.stdout


def test_provision_without_ansible_says_so(core_venv, tmp_path):
    # the core install has no ansible-playbook, and PATH offers none either
    proc = toolkit(
        "provision",
        "all",
        "-i",
        str(REPO / "inventory"),
        python=str(core_venv),
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TOOLKIT_STATE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "ansible-playbook was not found" in proc.stderr and "llm-node-toolkit[provision]" in proc.stderr
    assert "Traceback" not in proc.stderr
