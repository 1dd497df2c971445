"""The NVIDIA roles refuse a version set that cannot work (issue 16): a driver branch NVIDIA no longer
supports, a CUDA toolkit newer than the driver runs, a container toolkit with the known container
escapes. Only the roles' always-tagged checks run (`--tags always --check`, on localhost): no host
is touched, no package installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PLAYBOOK = yaml.safe_dump(
    [
        {
            "name": "Version checks of the NVIDIA roles",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "gather_subset": ["min"],
            "roles": ["nvidia_driver", "cuda_toolkit", "nvidia_container_toolkit"],
        }
    ]
)


def checks(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "checks.yml"
    playbook.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "playbooks/roles"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    command = [str(ansible_playbook), "-i", "localhost,", "--tags", "always", "--check", str(playbook)]
    command += ["-e", f"ansible_python_interpreter={sys.executable}"]
    return subprocess.run(
        [*command, *extra], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_default_versions_fit_together(tmp_path):
    proc = checks(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "failed=0" in proc.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["-e", "nvidia_driver_branch=550", "-e", "nvidia_driver_version=550.127.08"],
            "the branch must be 580 or newer",
        ),
        (["-e", "nvidia_driver_version=590.44.01"], "the version must belong to it"),
        (["-e", "cuda_toolkit_version=13.1"], "a driver runs CUDA only up to its own version"),
        (
            ["-e", "nvidia_container_toolkit_version=1.17.7-1"],
            "is affected by CVE-2025-23266/CVE-2025-23359",
        ),
        (["-e", "nvidia_driver_fabricmanager=maybe"], "nvidia_driver_fabricmanager"),
        (
            ["-e", '{"nvidia_driver_fabricmanager": true, "nvidia_driver_source": "debian_nonfree"}'],
            "which Debian non-free does not ship",
        ),
    ],
)
def test_a_version_set_that_cannot_work_is_refused(tmp_path, extra, message):
    proc = checks(tmp_path, *extra)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert message in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("value", ["true", "false", "auto", '{"nvidia_driver_fabricmanager": true}'])
def test_fabricmanager_setting_takes_yaml_booleans_and_words(tmp_path, value):
    """YAML `true` (a boolean) and `-e nvidia_driver_fabricmanager=true` (a string) mean the same."""
    extra = value if value.startswith("{") else f"nvidia_driver_fabricmanager={value}"
    proc = checks(tmp_path, "-e", extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
