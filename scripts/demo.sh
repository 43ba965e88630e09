#!/usr/bin/env bash
# The main job on the embedded default model: set up, convert SmolLM2-135M-Instruct + the shipped
# finance LoRA adapter (merge -> F16/Q8_0/Q4_0/Q4_K_M GGUF -> parity -> quality report ->
# manifest), then answer a finance question with the Q4_K_M artifact and print its latency profile.
# Extra arguments go to `finllm-edge convert` (e.g. --awq --imatrix, --formats gguf,onnx).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
cd "$ROOT"
OUT="${FINLLM_EDGE_DEMO_OUT:-$ROOT/out/demo}"
finllm-edge convert --out "$OUT" --quant q8_0,q4_0,q4_k_m "$@"
echo
finllm-edge run "$OUT/model-q4_k_m.gguf" --max-tokens 96 --profile-out "$OUT/profile.json" \
  -p "In two sentences, what does a falling interest coverage ratio tell a credit analyst?"
echo
echo "artifacts, quality.md, manifest.json and profile.json are in $OUT"
