#!/bin/sh
# Pull the LatencyProfile JSONs from the phone into a folder (run.sh's thermal notes are there already).
#   usage: scripts/device/pull.sh [OUT_DIR]    (default: device-results)
#   then:  finllm-edge report OUT_DIR/*.json -o OUT_DIR/report
set -eu
OUT="${1:-${RESULTS:-device-results}}"
. "$(dirname "$0")/common.sh"
mkdir -p "$OUT"
files="$(dsh "ls $WORK_DIR/results" | tr -d '\r')"
[ -n "$files" ] || { echo "no results on the phone in $WORK_DIR/results" >&2; exit 1; }
for f in $files; do $ADB_S pull "$WORK_DIR/results/$f" "$OUT/$f" >/dev/null && echo "pulled $OUT/$f"; done
