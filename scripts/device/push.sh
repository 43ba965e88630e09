#!/bin/sh
# Push fe-bench for the variant this phone supports, and a model, to /data/local/tmp/finllm-edge/.
#   usage: scripts/device/push.sh BUNDLE_BIN_DIR MODEL.gguf
# BUNDLE_BIN_DIR holds fe-bench-armv8.2-a+dotprod+fp16 and fe-bench-armv8-a (the linux-aarch64
# bundle: `python -c 'from finllm_edge.lab.aarch64 import aarch64_bundle as b; print(b()["bin"])'`).
# Files already on the phone with the same sha256 are skipped; each push goes to NAME.part
# and is renamed only once its sha256 matches, so a failed push leaves no half file in place.
# Prints the variant chosen. VARIANT=armv8-a forces the baseline.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 BUNDLE_BIN_DIR MODEL.gguf" >&2; exit 2; }
BIN_DIR="$1"; MODEL="$2"
. "$(dirname "$0")/common.sh"
abi="$(dsh 'getprop ro.product.cpu.abi' | tr -d '\r')"
[ "$abi" = "arm64-v8a" ] || { echo "error: phone ABI is '$abi', fe-bench needs arm64-v8a" >&2; exit 3; }
if [ -z "${VARIANT:-}" ]; then
  # dotprod build only if every core lists asimddp, fphp and asimdhp
  n_feat="$(dsh 'grep -c "^Features" /proc/cpuinfo' | tr -d '\r')"
  n_dp="$(dsh 'grep "^Features" /proc/cpuinfo | grep asimddp | grep fphp | grep -c asimdhp' | tr -d '\r')" || true
  if [ "${n_feat:-0}" -gt 0 ] && [ "$n_feat" = "$n_dp" ]; then VARIANT="armv8.2-a+dotprod+fp16"; else VARIANT="armv8-a"; fi
fi
BENCH="$BIN_DIR/fe-bench-$VARIANT"
[ -f "$BENCH" ] || { echo "error: $BENCH not found" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "error: $MODEL not found" >&2; exit 2; }
dsh "mkdir -p $WORK_DIR/results" >/dev/null
push_one() {  # LOCAL REMOTE_NAME MODE
  local_sha="$(sha256sum "$1" | cut -d' ' -f1)"
  remote="$WORK_DIR/$2"
  remote_sha="$(dsh "sha256sum $remote 2>/dev/null" | cut -d' ' -f1 | tr -d '\r')" || remote_sha=""
  if [ "$remote_sha" = "$local_sha" ]; then echo "skip $2 (same sha256 on the phone)"; return 0; fi
  need_kb=$(( $(wc -c < "$1") / 1024 + 16384 ))
  free_kb="$(dsh "df -k $WORK_DIR" | tail -n 1 | awk '{print $4}' | tr -d '\r')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ] 2>/dev/null; then
    echo "error: not enough space in $WORK_DIR: ${free_kb} kB free, ${need_kb} kB needed" >&2; exit 4
  fi
  if ! $ADB_S push "$1" "$remote.part"; then
    dsh "rm -f $remote.part" >/dev/null || true
    echo "error: push of $1 failed halfway; the partial file was removed" >&2; exit 5
  fi
  got="$(dsh "sha256sum $remote.part" | cut -d' ' -f1 | tr -d '\r')"
  if [ "$got" != "$local_sha" ]; then
    dsh "rm -f $remote.part" >/dev/null || true
    echo "error: $2 arrived corrupted (sha256 $got != $local_sha); retry" >&2; exit 5
  fi
  dsh "chmod $3 $remote.part && mv -f $remote.part $remote" >/dev/null
  echo "pushed $2"
}
push_one "$BENCH" "fe-bench-$VARIANT" 755
push_one "$MODEL" "$(basename "$MODEL")" 644
echo "variant=$VARIANT"
