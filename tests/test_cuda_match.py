"""A torch build against the node's NVIDIA driver (toolkit/cuda_match.py): the CUDA version each build was
made for, read from the metadata pip reports for the published wheels (tests/fixtures/install: the
`install` entries of `pip install --dry-run --report` for torch 2.7.1, 2.9.1 and 2.13.0 from the default
index, and the 2.13.0+cpu wheel; the reports' download URLs left out), judged against the CUDA version
the driver runs; `scripts/install.sh` refusing a build the driver cannot run; `toolkit bench` saying why
torch cannot use the GPU that NVML sees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from toolkit import cuda_match
from toolkit.detect import Device

from conftest import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "install"
BUILDS = {  # fixture -> the CUDA version its torch was built for
    "torch-2.13.0-default-index.json": "13.0",
    "torch-2.9.1-default-index.json": "12.8",
    "torch-2.7.1-default-index.json": "12.6",
    "torch-2.13.0-cpu-wheel.json": None,
}


def _torch(name: str) -> dict:
    report = json.loads((FIXTURES / name).read_text())
    return next(i["metadata"] for i in report["install"] if i["metadata"]["name"] == "torch")


@pytest.mark.parametrize(("name", "cuda"), BUILDS.items())
def test_the_cuda_version_each_published_build_was_made_for(name, cuda):
    torch = _torch(name)
    assert cuda_match.torch_cuda(torch["version"], torch.get("requires_dist") or []) == cuda


def test_a_local_version_tag_names_the_build_too():
    assert cuda_match.torch_cuda("2.6.0+cu124", []) == "12.4"
    assert cuda_match.torch_cuda("2.6.0+cu118", []) == "11.8"
    assert cuda_match.torch_cuda("2.6.0+rocm6.2", []) is None


@pytest.mark.parametrize(
    ("built", "driver", "level"),
    [("13.0", "12.4", 2), ("12.8", "12.4", 1), ("12.4", "12.4", 0), ("12.6", "13.0", 0), (None, "12.4", 0),
     ("13.0", None, 0)],
)  # fmt: skip
def test_a_newer_major_cannot_run_a_newer_minor_warns(built, driver, level):
    assert cuda_match.verdict(built, driver)[0] == level


@pytest.mark.parametrize(
    ("name", "code"), [(n, {"13.0": 2, "12.8": 1, "12.6": 1, None: 0}[c]) for n, c in BUILDS.items()]
)
def test_the_command_install_sh_runs(name, code):
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit.cuda_match", "--report", str(FIXTURES / name),
         "--driver-cuda", "12.4", "--driver", "550.127.08"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    if code == 2:
        assert "needs R580 or newer" in proc.stderr and "TOOLKIT_TORCH_INDEX_URL" in proc.stderr


def test_bench_says_why_torch_cannot_use_the_gpu():
    h100 = Device("NVIDIA H100 80GB HBM3", "nvidia", 0, driver_version="550.127.08",
                  extra={"cuda_driver_version": "12.4"})  # fmt: skip
    why, hint = cuda_match.bench_reason("2.13.0+cpu", None, None, [h100])
    assert why.startswith("torch 2.13.0+cpu is a CPU build") and "driver 550.127.08, CUDA 12.4" in why
    assert "TOOLKIT_TORCH_INDEX_URL" in hint
    why, hint = cuda_match.bench_reason("2.13.0", "13.0", None, [h100])
    assert "built for CUDA 13.0, which needs R580" in why and "toolkit provision" in hint
    why, _ = cuda_match.bench_reason("2.13.0", None, None, [Device("Radeon RX 7900 XTX", "amd", 0)])
    assert "not a ROCm build" in why


def _fake_torch_wheel(folder: Path, requires: list[str]) -> Path:
    """SIMULATED: a wheel named torch 2.13.0 that carries the published wheel's Requires-Dist lines (from
    the fixture) and nothing else, so pip's plan reads the same metadata without a 900 MB download."""
    wheel = folder / "torch-2.13.0-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("torch/__init__.py", "")
        z.writestr("torch-2.13.0.dist-info/METADATA", meta)
        z.writestr(
            "torch-2.13.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr("torch-2.13.0.dist-info/RECORD", "")
    return wheel


def test_install_sh_refuses_a_torch_the_driver_cannot_run(tmp_path):
    source = tmp_path / "source"
    skip = (".venv*", ".git", ".whl", ".device", "results", "__pycache__", "*.egg-info")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*skip))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # TEST STUB of nvidia-smi: the banner line as the driver prints it (R550: "CUDA Version: 12.4")
    (bin_dir / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu*) echo 550.127.08; exit 0;; esac\n'
        "echo '| NVIDIA-SMI 550.127.08             Driver Version: 550.127.08     CUDA Version: 12.4     |'\n"
    )
    (bin_dir / "nvidia-smi").chmod(0o755)
    wheel = _fake_torch_wheel(tmp_path, _torch("torch-2.13.0-default-index.json")["requires_dist"])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TOOLKIT_TORCH": str(wheel)}
    proc = subprocess.run(
        ["./scripts/install.sh"], cwd=source, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "built for CUDA 13.0, which needs R580 or newer; this driver runs CUDA up to 12.4" in proc.stderr
    assert "refused" in proc.stderr and "TOOLKIT_ALLOW_CUDA_MISMATCH=1" in proc.stderr
    probe = subprocess.run([str(source / ".venv/bin/python"), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0  # nothing was installed
