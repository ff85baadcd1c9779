#!/usr/bin/env bash
# Sets lmfactory up on a fresh machine, idempotently: npm dependencies, libtorch and a fast BLAS
# (installed with apt when missing and we may), Chromium for the web board's browser tests, the
# native addon. Used by `npm test`, `npm run demo` and .ci/run.
#   --quiet       print only what changes
#   --build-only  rebuild the addon and nothing else
set -euo pipefail
cd "$(dirname "$0")/.."

quiet=0
build_only=0
for arg in "$@"; do
  case "$arg" in
    --quiet) quiet=1 ;;
    --build-only) build_only=1 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
say() { [ "$quiet" = 1 ] || echo "setup: $*"; }
fail() { echo "setup: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || return 1
  echo "setup: installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

if [ "$build_only" = 0 ]; then
  # 1. libtorch: LIBTORCH, python3's torch, or the system package.
  if ! node native/find-libtorch.mjs json >/dev/null 2>&1; then
    apt_install libtorch-dev libopenblas0-pthread || fail "no libtorch found. Install one of:
  - Debian/Ubuntu:  sudo apt-get install libtorch-dev libopenblas0-pthread
  - any Linux:      a libtorch folder from pytorch.org, then export LIBTORCH=/path/to/libtorch
  - or:             a python3 with torch installed (pip install torch)"
  fi

  # 2. A fast BLAS: Debian's libtorch otherwise runs matmul on the reference BLAS, ~15x slower.
  if [ -e /usr/lib/x86_64-linux-gnu/libtorch_cpu.so ] || [ -e /usr/lib/aarch64-linux-gnu/libtorch_cpu.so ]; then
    if command -v dpkg >/dev/null && ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
      apt_install libopenblas0-pthread || echo "setup: warning: libopenblas0-pthread is missing and could not be installed; matmul will be ~15x slower (sudo apt-get install libopenblas0-pthread)" >&2
    fi
  fi

  # 2b. Gloo's headers, for distributed training over c10d (libtorch_cpu has ProcessGroupGloo;
  # Debian ships Gloo's own headers and library apart).
  if [ -e /usr/include/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp ] && [ ! -e /usr/include/gloo/config.h ]; then
    apt_install libgloo-dev || echo "setup: warning: libgloo-dev is missing and could not be installed; distributed training will be unavailable (sudo apt-get install libgloo-dev)" >&2
  fi

  # 3. The PyTorch reference the tests compare against (same libtorch, Debian's python3-torch).
  if [ "${LMF_SKIP_REFERENCE:-0}" != 1 ] && ! /usr/bin/python3 -c "import torch" >/dev/null 2>&1; then
    apt_install python3-torch || echo "setup: warning: python3-torch is not installed; tests that compare against PyTorch will be skipped" >&2
  fi

  # 4. Chromium for the web board's browser tests (playwright-core drives it; it downloads no browser).
  if [ "${LMF_SKIP_CHROMIUM:-0}" != 1 ] && [ -z "${LMF_CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
    apt_install chromium || echo "setup: warning: chromium is not installed and could not be installed; the web board's browser tests will be skipped, saying so (sudo apt-get install chromium, or set LMF_CHROMIUM)" >&2
  fi

  # 5. npm dependencies.
  if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
    say "installing npm dependencies"
    npm install --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi

# 6. The addon: `lmf setup` (src/setup/), which also finds libtorch as steps 1-2 do, rebuilds the
#    addon when a source, the op table or the libtorch found has changed, and loads it once.
flags=()
[ "$quiet" = 1 ] && flags+=(--quiet)
[ "$build_only" = 1 ] && flags+=(--rebuild)
node bin/lmf.mjs setup "${flags[@]}"
