#!/usr/bin/env bash
# Set up LLaMA-Factory itself in its own virtual environment, for `toolkit bench --engine llamafactory`.
#
#   ./scripts/install_llamafactory.sh      creates ./.venv-llamafactory (or $TOOLKIT_LF_VENV)
#
# LLaMA-Factory pins its own transformers, TRL, PEFT, accelerate and datasets ranges, which are not
# toolkit's: it cannot share .venv, so it gets a venv of its own, which toolkit runs as a subprocess.
#
#   TOOLKIT_LF_VERSION       the LLaMA-Factory release (default 0.9.5)
#   TOOLKIT_TORCH            the torch to install first (default torch==2.13.0, as scripts/install.sh)
#   TOOLKIT_TORCH_INDEX_URL  PyTorch's CPU wheel index, where your pip's torch/torchvision are CUDA builds
#   TOOLKIT_ALLOW_CUDA_TORCH=1  install a CUDA torch on a machine without an NVIDIA driver anyway
#
# torch goes in first and stays pinned through the rest of the install (a constraint on the version
# installed), so nothing LLaMA-Factory asks for (torchvision, torchaudio, accelerate) replaces it with
# another build. A second run with everything in place installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TOOLKIT_LF_VENV:-.venv-llamafactory}"
lf_version="${TOOLKIT_LF_VERSION:-0.9.5}"
[ $# -eq 0 ] || { echo "usage: $0   (settings through TOOLKIT_LF_VENV, TOOLKIT_LF_VERSION, TOOLKIT_TORCH...)" >&2; exit 2; }

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "install_llamafactory.sh: LLaMA-Factory ${lf_version} needs Python 3.11 or newer" >&2
  exit 2
fi

py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

# already complete: nothing to install (the check imports what a training run imports)
if [ -x "$py" ] && "$py" - "$lf_version" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
assert version("llamafactory") == sys.argv[1]
import torch, torchaudio, llamafactory.train.tuner  # noqa: E401,F401
EOF
then
  echo "LLaMA-Factory ${lf_version} already installed in ${venv} (torch $("$py" -c 'import torch; print(torch.__version__)')): nothing to do" >&2
  exit 0
fi

[ -x "$py" ] || "$python" -m venv "$venv"
"${pip[@]}" install -q --upgrade pip

no_driver() { [ ! -e /proc/driver/nvidia/version ] && ! command -v nvidia-smi >/dev/null 2>&1; }

# refuse a plan that pulls CUDA libraries (nvidia-*) onto a machine without a driver
check_plan() {
  local what="$1"; shift
  no_driver && [ "${TOOLKIT_ALLOW_CUDA_TORCH:-0}" != 1 ] || return 0
  local plan
  plan=$("${pip[@]}" install -q --dry-run --report - "$@" 2>/dev/null) || plan=""
  if ! "$py" -c 'import json, sys
names = [i["metadata"]["name"].lower() for i in json.loads(sys.stdin.read() or "{}").get("install", [])]
sys.exit(any(n.startswith("nvidia-") for n in names))' <<<"$plan"; then
    echo "install_llamafactory.sh: this machine has no NVIDIA driver, but ${what} from your package index is a" >&2
    echo "  CUDA build (several GB of nvidia-* libraries). Set TOOLKIT_TORCH_INDEX_URL to PyTorch's CPU wheel" >&2
    echo "  index and run again, or TOOLKIT_ALLOW_CUDA_TORCH=1 to install it anyway." >&2
    exit 2
  fi
}

index_args=()
[ -n "${TOOLKIT_TORCH_INDEX_URL:-}" ] && index_args=(--extra-index-url "$TOOLKIT_TORCH_INDEX_URL")

if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  torch_args=("${TOOLKIT_TORCH:-torch==2.13.0}")
  [ -n "${TOOLKIT_TORCH_INDEX_URL:-}" ] && torch_args+=(--index-url "$TOOLKIT_TORCH_INDEX_URL")
  check_plan "${torch_args[0]}" "${torch_args[@]}"
  "${pip[@]}" install -q "${torch_args[@]}"
fi

# the installed torch, kept: every later step resolves against it
torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${torch_version}" >"$constraints"

# LLaMA-Factory imports torchaudio (its multimodal plugin) even for text; torchvision comes with it.
# With a CPU index given they come from there (PyPI's torchvision is a CUDA build).
lf_args=("llamafactory==${lf_version}" -c "$constraints" "${index_args[@]}")
check_plan "llamafactory==${lf_version} (torchvision, torchaudio)" "${lf_args[@]}"
"${pip[@]}" install -q "${lf_args[@]}"

# torchaudio's newest release can lag torch's: its compiled extension (torchaudio/lib) is then built for
# another torch and refuses to load, and `import torchaudio` fails, which stops LLaMA-Factory before it
# starts. Its Python part imports without the extension, so that is removed: text training never calls
# it (audio datasets' load and resample run without it; forced alignment and the RNN-T loss would not).
if ! ta_error=$("$py" -c 'import torchaudio' 2>&1); then
  ta_lib=$("$py" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("torchaudio").origin), "lib"))')
  if [[ "$ta_error" == *"Could not load this library"* ]]; then
    echo "install_llamafactory.sh: torchaudio $("$py" -m pip show torchaudio 2>/dev/null | sed -n 's/^Version: //p')'s compiled extension" \
         "does not load with torch ${torch_version}: removed (${ta_lib}/*.so); text training does not use it" >&2
    rm -f "$ta_lib"/*.so
  fi
fi

# PyPI's torchvision is a CUDA build: on a CPU torch its operators do not register and `import torchvision`
# fails. LLaMA-Factory never imports it for training, and transformers uses it only where it imports, so
# such a torchvision is uninstalled (with a CPU index in TOOLKIT_TORCH_INDEX_URL its CPU build is kept).
if ! tv_error=$("$py" -c 'import torchvision' 2>&1) && [[ "$tv_error" == *"does not exist"* || "$tv_error" == *"Could not load"* ]]; then
  echo "install_llamafactory.sh: torchvision is a build for another torch (a CUDA build on CPU torch ${torch_version}):" \
       "uninstalled; text training does not use it (TOOLKIT_TORCH_INDEX_URL=PyTorch's CPU index installs its CPU build)" >&2
  "${pip[@]}" uninstall -q -y torchvision
fi

"$py" - <<'EOF'
import warnings
warnings.simplefilter("ignore")
import importlib.util
import torch, torchaudio  # noqa: E401,F401
import llamafactory.train.tuner  # noqa: F401
from importlib.metadata import version
vision = version("torchvision") if importlib.util.find_spec("torchvision") else "(not installed)"
print(f"LLaMA-Factory {version('llamafactory')} ready: torch {torch.__version__}, transformers {version('transformers')}, "
      f"trl {version('trl')}, peft {version('peft')}, torchaudio {torchaudio.__version__}, torchvision {vision}")
EOF
echo "installed in ${venv}; run: toolkit bench --recipe FILE.yaml --engine llamafactory" >&2
