#!/bin/sh
# Run fe-bench on the phone, pinned to the big cores, with temperatures + cpufreq around it.
#   usage: scripts/device/run.sh VARIANT MODEL_NAME THREADS [fe-bench args...]
#   e.g.   scripts/device/run.sh armv8.2-a+dotprod+fp16 SmolLM2-135M-Instruct.Q4_1.gguf 4 -p 64 -n 64 -r 3
# The big cores are those whose cpuinfo_max_freq is above the slowest cluster (SD865: cpu4-7,
# mask f0); MASK=ff overrides. Writes $WORK_DIR/results/t<THREADS>.json on the phone and
# $RESULTS/t<THREADS>.thermal.txt here (default RESULTS=device-results; before/after: thermal
# zones in millidegrees C, cpufreq cur/max in kHz; a max below cpuinfo_max_freq = throttled).
set -eu
[ $# -ge 3 ] || { echo "usage: $0 VARIANT MODEL_NAME THREADS [fe-bench args...]" >&2; exit 2; }
VARIANT="$1"; MODEL_NAME="$2"; THREADS="$3"; shift 3
. "$(dirname "$0")/common.sh"
if [ -z "${MASK:-}" ]; then
  freqs="$(dsh 'for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "${c##*/cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null || echo 0)"; done' | tr -d '\r')"
  min="$(printf '%s\n' "$freqs" | awk '$2>0{print $2}' | sort -n | head -n 1)"
  MASK="$(printf '%s\n' "$freqs" | awk -v min="${min:-0}" '$2>min{m+=2^$1} END{printf "%x", m}')"
  [ "$MASK" != "0" ] || MASK="$(printf '%s\n' "$freqs" | awk '{m+=2^$1} END{printf "%x", m}')"
fi
SNAP='for z in /sys/class/thermal/thermal_zone*; do echo "temp ${z##*/} $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"; done; for c in /sys/devices/system/cpu/cpu[0-9]*; do echo "freq ${c##*/cpu} $(cat $c/cpufreq/scaling_cur_freq 2>/dev/null) $(cat $c/cpufreq/scaling_max_freq 2>/dev/null)"; done'
# the Android Emulator (ro.boot.qemu / ro.kernel.qemu = 1): mark the profile emulated
EMU=""
n_qemu="$(dsh 'getprop ro.boot.qemu; getprop ro.kernel.qemu' | tr -d '\r' | grep -c '^1$' || true)"
[ "${n_qemu:-0}" -eq 0 ] || EMU="--emulated"
OUT="$WORK_DIR/results/t$THREADS"
RESULTS="${RESULTS:-device-results}"
mkdir -p "$RESULTS"
NOTE="$RESULTS/t$THREADS.thermal.txt"
{ echo "# before"; dsh "$SNAP"; } > "$NOTE"
echo "running: taskset $MASK fe-bench-$VARIANT -t $THREADS $*"
set +e
dsh "taskset $MASK $WORK_DIR/fe-bench-$VARIANT -m $WORK_DIR/$MODEL_NAME -t $THREADS -o $OUT.json --json-only $EMU $* 2>&1"
rc=$?
set -e
{ echo "# after (fe-bench exit $rc)"; dsh "$SNAP"; } >> "$NOTE"
echo "thermal before/after: $NOTE"
if [ "$rc" -eq 132 ]; then
  echo "error: fe-bench-$VARIANT died of SIGILL: this CPU lacks an instruction of that build; push and run the armv8-a variant (VARIANT=armv8-a scripts/device/push.sh ...)" >&2
fi
exit "$rc"
