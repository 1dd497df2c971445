#!/usr/bin/env bash
# Set up toolkit in ./.venv on a fresh Debian/Ubuntu machine.
#
#   ./scripts/install.sh          the CLI, the ML stack `toolkit bench` needs, Ansible for `toolkit provision`
#   ./scripts/install.sh --test   the same, plus what the tests need (Python packages, and with apt:
#                                 debootstrap, systemd-nspawn, socat ... for the real test hosts), and
#                                 LLaMA-Factory in .venv-llamafactory (the `--engine llamafactory` tests)
#   ./scripts/install.sh --with-llamafactory   also LLaMA-Factory itself, in its own .venv-llamafactory
#                                 (scripts/install_llamafactory.sh; `toolkit bench --engine llamafactory`)
#
# torch is installed first and pinned (TOOLKIT_TORCH, default torch==2.13.0): an
# unpinned torch, asked for directly or by trl/peft/accelerate, pulls a multi-GB
# CUDA build even onto machines without a GPU. Where your pip does not provide a
# CPU build of that version on its own, set TOOLKIT_TORCH_INDEX_URL to PyTorch's
# CPU wheel index. A torch that is already importable in .venv is kept. Where an
# NVIDIA driver is installed, a torch built for a newer CUDA than the driver runs
# is refused with what to set (TOOLKIT_TORCH, TOOLKIT_TORCH_INDEX_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="ml,provision,vectors,fleet,report"
test_packages=""
with_lf=0
if [ "${1:-}" = --with-llamafactory ] && [ $# -eq 1 ]; then
  with_lf=1; shift
fi
case "${1:-}" in
  --test)
    [ $# -eq 1 ] || { echo "usage: $0 [--test | --with-llamafactory]" >&2; exit 2; }
    with_lf=1
    extras="ml,provision,vectors,fleet,report,test"
    # the provisioning tests boot Debian test hosts with systemd-nspawn and build signed apt repositories;
    # the health tests talk to a simulated BMC (OpenIPMI's ipmi_sim) with pyghmi and ipmitool
    test_packages="debootstrap systemd-container socat iproute2 openssh-client zstd apt-utils gnupg dpkg-dev"
    test_packages="$test_packages openipmi ipmitool"
    # `toolkit health --prom` output is checked with Prometheus's own linter (promtool check metrics)
    test_packages="$test_packages prometheus"
    # `toolkit report` is checked by rendering it in headless Chromium and reading the picture back
    test_packages="$test_packages chromium tesseract-ocr"
    ;;
  "") ;;
  *) echo "usage: $0 [--test | --with-llamafactory]" >&2; exit 2 ;;
esac

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "toolkit needs Python 3.11 or newer (Debian 12 and Ubuntu 24.04 ship it; on Ubuntu 22.04: apt install python3.11 python3.11-venv)" >&2
  exit 2
fi

# Debian and Ubuntu split venv/ensurepip into their own package.
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q "python${version}-venv" || \
    as_root apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv
fi

missing=""
for pkg in $test_packages; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  torch_args=("${TOOLKIT_TORCH:-torch==2.13.0}")
  [ -n "${TOOLKIT_TORCH_INDEX_URL:-}" ] && torch_args+=(--index-url "$TOOLKIT_TORCH_INDEX_URL")
  # No NVIDIA driver here: look before installing, and refuse a build that would pull CUDA libraries.
  if [ ! -e /proc/driver/nvidia/version ] && ! command -v nvidia-smi >/dev/null 2>&1 &&
     [ "${TOOLKIT_ALLOW_CUDA_TORCH:-0}" != 1 ]; then
    plan=$("${pip[@]}" install -q --dry-run --report - "${torch_args[@]}" 2>/dev/null) || plan=""
    if .venv/bin/python -c 'import json, sys
names = [i["metadata"]["name"].lower() for i in json.loads(sys.stdin.read() or "{}").get("install", [])]
sys.exit(any(n.startswith("nvidia-") for n in names))' <<<"$plan"; then :; else
      echo "install.sh: this machine has no NVIDIA driver, but ${torch_args[0]} from your package index is a CUDA build" >&2
      echo "  (several GB of nvidia-* libraries). Set TOOLKIT_TORCH_INDEX_URL to PyTorch's CPU wheel index and run" >&2
      echo "  again, or TOOLKIT_ALLOW_CUDA_TORCH=1 to install it anyway." >&2
      exit 2
    fi
  # An NVIDIA driver here: the CUDA build pip would install must be one the driver can run
  # (toolkit/cuda_match.py reads the build from pip's plan; run from the source, toolkit is not installed yet).
  elif command -v nvidia-smi >/dev/null 2>&1 && [ "${TOOLKIT_ALLOW_CUDA_MISMATCH:-0}" != 1 ]; then
    driver_cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1) || true
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1) || true
    report=$(mktemp)
    match=0
    "${pip[@]}" install -q --dry-run --ignore-installed --no-deps --report "$report" "${torch_args[@]}" >/dev/null 2>&1 &&
      PYTHONPATH="$PWD" .venv/bin/python -m toolkit.cuda_match --report "$report" \
        --driver-cuda "$driver_cuda" --driver "$driver" || match=$?
    rm -f "$report"
    if [ "$match" = 2 ]; then
      echo "install.sh: refused: this torch cannot run on this driver (TOOLKIT_ALLOW_CUDA_MISMATCH=1 installs it anyway)" >&2
      exit 2
    fi
  fi
  "${pip[@]}" install -q "${torch_args[@]}"
fi
"${pip[@]}" install -q -e ".[${extras}]"
echo "toolkit installed in .venv: $(.venv/bin/toolkit --version), $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')" >&2
if [ "$with_lf" = 1 ]; then
  ./scripts/install_llamafactory.sh
fi
