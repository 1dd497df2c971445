#!/usr/bin/env bash
# The GPU acceptance run on a lent GPU machine, in one command (docs/GPU_ACCEPTANCE.md). No network:
# the Python it uses must already have torch (a CUDA build), transformers, trl, peft, datasets,
# accelerate, bitsandbytes and nvidia-ml-py, or a folder of wheels must be carried to install them from.
#
#   bash benchmarks/gpu_acceptance.sh [gpu_acceptance.py options, e.g. --parts recipes,overhead]
#
# Python: $PYTHON if set, else .venv/bin/python if carried and torch there sees CUDA, else python3.
# Wheels: $WHEELS (default ./wheels), used only when an import is missing: installed offline
# (--no-index) into a virtualenv under /tmp that also sees the system's packages.
# The script's own budget is 465 s; `timeout` stops it at 480 s (8 minutes) with SIGTERM, which the
# script turns into a stop that writes every part (the one running is marked timeout), then SIGKILL 15 s
# later. Results: benchmarks/results/<UTC date>-<device>/ (printed at the end).
set -u
cd "$(dirname "$0")/.."

# the ML stack and the toolkit's own core dependencies (the repository runs from its folder, uninstalled)
NEEDED="import torch, transformers, trl, peft, datasets, accelerate, bitsandbytes, pynvml, rich, psutil, yaml, requests"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    PY=python3
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        PY=.venv/bin/python
    fi
fi
if ! "$PY" -c "$NEEDED" 2>/dev/null; then
    WHEELS="${WHEELS:-wheels}"
    if [ ! -d "$WHEELS" ]; then
        echo "gpu_acceptance.sh: $PY lacks one of: ${NEEDED#import } (and no $WHEELS/ folder to install from)" >&2
        exit 2
    fi
    "$PY" -m venv --system-site-packages /tmp/gpu-acceptance-venv || exit 2
    PY=/tmp/gpu-acceptance-venv/bin/python
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" \
        torch transformers trl peft datasets accelerate bitsandbytes nvidia-ml-py rich psutil pyyaml requests \
        || exit 2
    "$PY" -c "$NEEDED" || exit 2
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
exec timeout --kill-after=15 480 "$PY" benchmarks/gpu_acceptance.py --budget 465 "$@"
