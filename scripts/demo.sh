#!/usr/bin/env bash
# The main job on the embedded default model: set up, then answer a finance question with
# SmolLM2-135M-Instruct and print the latency profile.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
cd "$ROOT"
OUT="${FINLLM_EDGE_DEMO_OUT:-$ROOT/out/demo}"
mkdir -p "$OUT"
finllm-edge run --max-tokens 96 --profile-out "$OUT/profile.json" \
  -p "In two sentences, what does a falling interest coverage ratio tell a credit analyst?"
