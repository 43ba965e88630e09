# Shared settings of the plain adb scripts (sourced, not run). Needs only adb and a POSIX shell.
#   SERIAL     phone serial (default: $ANDROID_SERIAL, else the only attached device)
#   WORK_DIR   folder on the phone (default /data/local/tmp/finllm-edge)
WORK_DIR="${WORK_DIR:-/data/local/tmp/finllm-edge}"
ADB="${ADB:-adb}"
command -v "$ADB" >/dev/null 2>&1 || { echo "error: adb not found on PATH (install platform-tools, e.g. apt-get install adb)" >&2; exit 2; }
if [ -n "${SERIAL:-${ANDROID_SERIAL:-}}" ]; then
  ADB_S="$ADB -s ${SERIAL:-$ANDROID_SERIAL}"
else
  ADB_S="$ADB"
fi
state="$($ADB_S get-state 2>&1)" || { echo "error: no usable device: $state (check \`adb devices\`; accept the USB debugging dialog)" >&2; exit 2; }
# run a command on the phone; print its output; return its exit status (works without shell v2)
dsh() {
  out="$($ADB_S shell "$1; echo __FE_RC__=\$?")" || { echo "error: adb shell failed (device disconnected?)" >&2; return 255; }
  printf '%s\n' "$out" | sed '/__FE_RC__=/d'
  rc="$(printf '%s\n' "$out" | sed -n 's/.*__FE_RC__=\([0-9]*\).*/\1/p' | tail -n 1)"
  return "${rc:-255}"
}
