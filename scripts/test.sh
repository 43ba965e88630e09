#!/usr/bin/env bash
# The test command: sets up what it needs (scripts/bootstrap.sh), then runs every test,
# slow, native and emulated ones included. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
cd "$ROOT"
exec python -m pytest "$@"
