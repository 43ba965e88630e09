#!/usr/bin/env bash
# The test command: sets up what it needs (scripts/bootstrap.sh), then runs every test,
# slow, native and emulated ones included. Extra arguments go to pytest.
#
#   bash scripts/test.sh                  # the full suite (what CI runs: .ci/run)
#   bash scripts/test.sh --fast           # the fast lane: no slow, emulated (qemu) or convert (torch)
#                                         # tests; native ones use the cached host build
#   bash scripts/test.sh --fast tests/test_cli_errors.py -x    # pytest arguments after the flag
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FAST_MARKERS="not slow and not emulated and not convert"

fast=0
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=1; else args+=("$a"); fi
done

bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
cd "$ROOT"
if [ "$fast" = 1 ]; then
  exec python -m pytest -m "$FAST_MARKERS" ${args[@]+"${args[@]}"}
fi
exec python -m pytest ${args[@]+"${args[@]}"}
