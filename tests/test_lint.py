"""Lint as CI runs it: ansible-lint's production profile on playbooks/, ruff on the Python, yamllint on the
YAML (the same linters .pre-commit-config.yaml runs as git hooks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def test_ansible_lint_production_profile():
    lint = shutil.which("ansible-lint", path=str(BIN)) or shutil.which("ansible-lint")
    assert lint, "ansible-lint is part of the test extra"
    proc = subprocess.run(
        [lint, "--offline", "--profile", "production", "playbooks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(BIN)) or shutil.which("ruff")
    proc = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout


def test_yamllint_clean():
    """yamllint with the repository's .yamllint, strict (warnings fail too), over the YAML the hooks lint."""
    yamllint = shutil.which("yamllint", path=str(BIN)) or shutil.which("yamllint")
    assert yamllint, "yamllint is part of the test extra"
    paths = [
        "playbooks",
        "inventory",
        "toolkit/data/recipes",
        "tests/fixtures",
        ".pre-commit-config.yaml",
        ".yamllint",
    ]
    proc = subprocess.run(
        [yamllint, "--strict", "--format", "parsable", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
