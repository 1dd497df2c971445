#!/usr/bin/env bash
# Build llama.cpp's native `llama-server` (CPU) from the llama.cpp bundled in the llama-cpp-python sdist, once,
# and cache it: the serving tests (tests/test_serving_llamacpp.py) and the health check run against it.
#
#   ./scripts/build_llama_server.sh          build (or find) the cached binary, print its path
#
# Cache: /var/cache/toolkit-tests/llama-server-<version>/ (TOOLKIT_TEST_CACHE overrides the parent folder),
# keyed by the version and the build flags below: a second run with the same key does nothing. Besides the
# binary it keeps the sdist's GGUF converter (convert_hf_to_gguf.py, conversion/, gguf-py/) for the adapter path.
# Only the server target is built: no tests, no examples, no web UI (neither npm nor its download), no OpenSSL.
# About 17 minutes on 2 busy cores; TOOLKIT_BUILD_JOBS (default 2) sets the parallel jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${TOOLKIT_LLAMA_CPP_PYTHON:-0.3.36}"
cache_root="${TOOLKIT_TEST_CACHE:-/var/cache/toolkit-tests}"
dest="$cache_root/llama-server-$version"
jobs="${TOOLKIT_BUILD_JOBS:-2}"
flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
       -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_APP=OFF)
key="$version $(uname -m) ${flags[*]}"

if [ -x "$dest/bin/llama-server" ] && [ "$(cat "$dest/build-key" 2>/dev/null)" = "$key" ]; then
  echo "$dest/bin/llama-server"
  exit 0
fi

. scripts/build_tools.sh
ensure_build_tools
python=$(build_python)
work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
"$python" -m pip --disable-pip-version-check download -q "llama-cpp-python==$version" \
  --no-binary :all: --no-deps -d "$work/sdist" >&2
tar -xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
[ -f "$src/CMakeLists.txt" ] || { echo "build_llama_server.sh: no llama.cpp inside the sdist of $version" >&2; exit 1; }

nice -n 10 cmake -S "$src" -B "$work/build" "${flags[@]}" >&2
nice -n 10 cmake --build "$work/build" --target llama-server -j "$jobs" >&2

# assemble beside the destination, then swap it in whole: a killed build never leaves a half cache
stage="$dest.new.$$"
rm -rf "$stage"
mkdir -p "$stage/bin"
cp "$work/build/bin/llama-server" "$stage/bin/"
cp "$src/convert_hf_to_gguf.py" "$src/LICENSE" "$stage/"
cp -r "$src/gguf-py" "$stage/"
[ -d "$src/conversion" ] && cp -r "$src/conversion" "$stage/"
echo "$key" >"$stage/build-key"
echo "$(( $(date +%s) - start ))" >"$stage/build-seconds"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$stage" "$dest"
rm -rf "$dest.old"
echo "$dest/bin/llama-server"
