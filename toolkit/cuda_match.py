"""Does a torch build fit this node's NVIDIA driver? A driver runs CUDA up to its own version (what
`nvidia-smi` prints as "CUDA Version"); a torch built for a newer major CUDA cannot initialise on it, one
built for a newer minor of the same major mostly runs (CUDA's minor-version compatibility, without PTX
JIT). Forward compatibility (`cuda-compat`) covers datacenter GPUs only and is not assumed.

Two callers: `scripts/install.sh` before it installs torch (the build pip would install, read from
`pip install --dry-run --report`), and `toolkit bench` when torch cannot use the GPU NVML sees.

    python -m toolkit.cuda_match --report REPORT.json --driver-cuda 12.4 [--driver 550.127.08]

exits 0 (fits, or no CUDA build), 1 (newer minor: a warning) or 2 (newer major: it will not run), with
the reason on stderr. Standard library only: install.sh runs it before toolkit's dependencies exist.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

# the CUDA runtime a torch wheel depends on: `cuda-toolkit[...]==13.0.3` (torch 2.10 and later from the
# default index) or `nvidia-cuda-runtime-cu12==12.8.90` (earlier); a local version tag (+cu126) otherwise
REQUIREMENT = re.compile(
    r"^(?:cuda-toolkit(?:\[[^\]]*\])?|nvidia-cuda-runtime(?:-cu\d+)?)\s*==\s*(\d+)\.(\d+)"
)
LOCAL_TAG = re.compile(r"\+cu(\d+)(\d)$")
DRIVER_FOR_CUDA = {13: "R580", 12: "R525"}  # the first driver branch of each CUDA major (Linux)


def parse(version: str | None) -> tuple[int, int] | None:
    found = re.match(r"^\s*(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else None


def torch_cuda(version: str, requires: list[str]) -> str | None:
    """The CUDA version a torch distribution was built for, from its metadata; None for a CPU build."""
    for requirement in requires:
        found = REQUIREMENT.match(requirement.strip())
        if found:
            return f"{found[1]}.{found[2]}"
    tag = LOCAL_TAG.search(version)
    return f"{tag[1]}.{tag[2]}" if tag else None


def verdict(built_for: str | None, driver_cuda: str | None) -> tuple[int, str]:
    """(0 fits | 1 newer minor | 2 newer major, why)."""
    built, runs = parse(built_for), parse(driver_cuda)
    if built is None:
        return 0, "not a CUDA build"
    if runs is None:
        return 0, f"built for CUDA {built_for}; the driver's CUDA version is unknown"
    if built[0] > runs[0]:
        branch = DRIVER_FOR_CUDA.get(built[0], f"a driver for CUDA {built[0]}")
        return 2, (
            f"built for CUDA {built_for}, which needs {branch} or newer; this driver runs CUDA up to "
            f"{driver_cuda}: torch cannot initialise the GPU"
        )
    if built > runs:
        return 1, (
            f"built for CUDA {built_for}, newer than the driver's CUDA {driver_cuda}: it runs through CUDA's "
            "minor-version compatibility, but kernels compiled just in time (PTX) fail"
        )
    return 0, f"built for CUDA {built_for}; the driver runs CUDA up to {driver_cuda}"


def hint(driver_cuda: str | None) -> str:
    older = f"CUDA {driver_cuda} or older" if driver_cuda else "this driver's CUDA version"
    return (
        "upgrade the driver (`toolkit provision HOST --roles nvidia_driver`: its default branch is R580, "
        f"CUDA 13.0), or install a torch build for {older}: TOOLKIT_TORCH=torch==VERSION and "
        "TOOLKIT_TORCH_INDEX_URL=PyTorch's wheel index for that CUDA (cu126, cu128, ...), then "
        "scripts/install.sh again"
    )


def bench_reason(torch_version: str, built_for: str | None, hip: str | None, devices) -> tuple[str, str]:
    """(message, hint) for `toolkit bench` when torch cannot use the GPU NVML (or amdsmi) found."""
    device = devices[0] if devices else None
    extra = getattr(device, "extra", None) or {}
    driver, driver_cuda = getattr(device, "driver_version", None), extra.get("cuda_driver_version")
    if getattr(device, "vendor", "nvidia") == "amd":
        if hip:
            why = f"torch {torch_version} (ROCm {hip}) cannot use the AMD GPU"
            return why, "check the ROCm release and that this user may open /dev/kfd"
        return (
            f"torch {torch_version} is not a ROCm build: it cannot use the AMD GPU",
            "install torch from PyTorch's ROCm wheel index (TOOLKIT_TORCH_INDEX_URL)",
        )
    on = f"driver {driver}" + (f", CUDA {driver_cuda}" if driver_cuda else "") if driver else "the driver"
    if built_for is None:
        return (
            f"torch {torch_version} is a CPU build: it cannot use the NVIDIA GPU ({on})",
            f"install a CUDA build: {hint(driver_cuda)}",
        )
    level, why = verdict(built_for, driver_cuda)
    if level == 2:
        return f"torch {torch_version} is {why} ({on})", hint(driver_cuda)
    return (
        f"torch {torch_version} ({why}) cannot use the NVIDIA GPU ({on})",
        "check that the driver is loaded (nvidia-smi) and that CUDA_VISIBLE_DEVICES does not hide the GPU",
    )


def main(argv: list[str] | None = None) -> int:
    first = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m toolkit.cuda_match", description=first)
    parser.add_argument("--report", required=True, help="`pip install --dry-run --report` JSON of torch")
    parser.add_argument("--driver-cuda", help="the CUDA version the driver runs (nvidia-smi)")
    parser.add_argument("--driver", help="the driver's version, for the message")
    args = parser.parse_args(argv)
    with open(args.report, encoding="utf-8") as f:
        report = json.load(f)
    torch = next((i["metadata"] for i in report.get("install", []) if i["metadata"]["name"] == "torch"), None)
    if torch is None:
        return 0
    built_for = torch_cuda(torch["version"], torch.get("requires_dist") or [])
    level, why = verdict(built_for, args.driver_cuda)
    driver = f" (driver {args.driver})" if args.driver else ""
    print(f"torch {torch['version']}: {why}{driver}", file=sys.stderr)
    if level:
        print(f"  {hint(args.driver_cuda)}", file=sys.stderr)
    return level


if __name__ == "__main__":
    raise SystemExit(main())
