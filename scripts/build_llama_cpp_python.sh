#!/usr/bin/env bash
# Build llama-cpp-python's own server (`python -m llama_cpp.server`, the "weak server" of the serving tests:
# tests/test_serving_llamacpp.py) from its sdist, once, into a virtual environment of its own, and cache it.
#
#   ./scripts/build_llama_cpp_python.sh      build (or find) the cached environment, print its Python
#
# Cache: /var/cache/toolkit-tests/llama-cpp-python-<version>/venv (TOOLKIT_TEST_CACHE overrides the parent
# folder), keyed by the version and the build flags below: a second run with the same key does nothing.
# Its own environment, so toolkit's .venv never carries it. Only the shared library the package loads is
# built (no llava/mtmd, tests, examples, tools or server of llama.cpp). About 12 minutes on 2 busy cores;
# TOOLKIT_BUILD_JOBS (default 2) sets the parallel jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${TOOLKIT_LLAMA_CPP_PYTHON:-0.3.36}"
cache_root="${TOOLKIT_TEST_CACHE:-/var/cache/toolkit-tests}"
dest="$cache_root/llama-cpp-python-$version"
jobs="${TOOLKIT_BUILD_JOBS:-2}"
cmake_args="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
cmake_args="$cmake_args -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
key="$version $(uname -m) $cmake_args [server]"

if [ -x "$dest/venv/bin/python" ] && [ "$(cat "$dest/build-key" 2>/dev/null)" = "$key" ]; then
  echo "$dest/venv/bin/python"
  exit 0
fi

. scripts/build_tools.sh
ensure_build_tools
python=$(build_python)
start=$(date +%s)
# built in place beside the destination, then swapped in whole: a killed build never leaves a half cache
# (the environment is used as `venv/bin/python -m ...`, which a move does not break)
stage="$dest.new.$$"
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT
"$python" -m venv "$stage/venv"
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" nice -n 10 "$stage/venv/bin/python" -m pip \
  --disable-pip-version-check install -q --no-binary llama-cpp-python "llama-cpp-python[server]==$version" >&2
"$stage/venv/bin/python" -c "import llama_cpp, llama_cpp.server.app" >&2
echo "$key" >"$stage/build-key"
echo "$(( $(date +%s) - start ))" >"$stage/build-seconds"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$stage" "$dest"
trap - EXIT
rm -rf "$dest.old"
echo "$dest/venv/bin/python"
