# Sourced by the scripts that compile llama.cpp (build_llama_server.sh, build_llama_cpp_python.sh), from
# the repository root: the compilers with apt when they are missing, and the Python that drives the build.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_build_tools() {
  local missing="" pkg
  for pkg in cmake g++ make; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q
    # shellcheck disable=SC2086  # one word per package
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      --no-install-recommends $missing
  fi
}

# toolkit's own .venv when it exists (pip and a recent Python), else the system's python3
build_python() { if [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi; }
