"""`finllm-edge device list | info | bench`: phones over adb.

    finllm-edge device list
    finllm-edge device info [-s SERIAL]...
    finllm-edge device bench [MODEL.gguf] [-s SERIAL]... [-o OUT] [--threads 1,2,4]

Without -s every attached device is used; benches run in parallel, one thread per phone,
each with its own log and results folder (<OUT>/<serial>/{bench.log,report.json,profiles/}).
<OUT>/report.json merges every phone's profiles (`finllm-edge report OUT/report.json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from finllm_edge.fileio import atomic_write_json

from ..argtypes import non_negative_int, positive_int
from .adb import (  # noqa: F401  (re-exported: the typed errors)
    Adb,
    AdbNotFoundError,
    BenchmarkCrashError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceOfflineError,
    DeviceUnauthorizedError,
    NoDeviceError,
    NotEnoughSpaceError,
    PushFailedError,
    WrongAbiError,
    check_state,
)

if TYPE_CHECKING:
    from .bench import BenchOptions


def configure(parser: argparse.ArgumentParser) -> None:
    from finllm_edge.cpu_variant import VARIANTS

    sub = parser.add_subparsers(dest="device_cmd", metavar="{list,info,bench}")
    sub.required = True
    p = sub.add_parser("list", help="attached devices and their state")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("info", help="ABI, SoC, CPU features, clusters, memory, free space, thermal zones")
    p.add_argument("-s", "--serial", action="append", help="device serial (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("bench", help="push fe-bench + model, sweep thread counts on the big cores, "
                                     "record thermals, pull and merge LatencyProfiles")
    p.add_argument("model", nargs="?", help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("-s", "--serial", action="append", help="device serial (repeatable; default: all)")
    p.add_argument("-o", "--out", default="device-bench", help="results folder (default: ./device-bench)")
    p.add_argument("--threads", help="comma list of thread counts (default: 1,2,4,.. up to the big cores)")
    p.add_argument("-p", "--n-prompt", type=positive_int, default=64, help="prompt tokens (default 64)")
    p.add_argument("-n", "--n-gen", type=positive_int, default=64, help="generated tokens (default 64)")
    p.add_argument("-r", "--repetitions", type=positive_int, default=3, help="measured repetitions (default 3)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="warm-up repetitions (default 1)")
    p.add_argument("-c", "--ctx", type=non_negative_int, default=0, help="context size (default: fe-bench's)")
    p.add_argument("--pin", choices=("big", "all", "none"), default="big",
                   help="taskset pinning: big cores (default), all cores, or none")
    p.add_argument("--variant", choices=VARIANTS,
                   help="force the fe-bench CPU variant (armv8.2-a+dotprod+fp16 or armv8-a); "
                        "default: the best one the phone supports")
    p.add_argument("--fe-bench", help="use this aarch64/arm64-v8a fe-bench binary (e.g. an NDK build)")
    p.add_argument("--cool-tolerance", type=float, default=3.0,
                   help="between runs wait until the CPU is within this many C of its start (default 3)")
    p.add_argument("--cool-timeout", type=float, default=180.0, help="longest cool-down wait, s (default 180)")
    p.add_argument("--cool-poll", type=float, default=5.0, help="seconds between temperature reads (default 5)")
    p.add_argument("--run-timeout", type=float, default=3600.0, help="longest single fe-bench run, s")
    p.add_argument("--clean", action="store_true",
                   help="remove /data/local/tmp/finllm-edge from the phone afterwards "
                        "(default: keep it so the next run skips the push)")


def main(args: argparse.Namespace) -> int:
    return {"list": cmd_list, "info": cmd_info, "bench": cmd_bench}[args.device_cmd](args)


def cmd_list(args) -> int:
    adb = Adb()
    devs = adb.devices()
    if args.json:
        print(json.dumps([{"serial": d.serial, "state": d.state, **d.details} for d in devs], indent=2))
        return 0
    if not devs:
        print("no devices attached (enable USB debugging and check the cable; `adb devices` must list the phone)")
        return 1
    for d in devs:
        note = {"unauthorized": "  <- accept the USB debugging dialog on the phone",
                "offline": "  <- reconnect the cable / adb reconnect"}.get(d.state, "")
        print(f"{d.serial:<24} {d.state:<13} {d.model}{note}")
    return 0


def cmd_info(args) -> int:
    from .info import format_info, read_info

    adb = Adb()
    entries = adb.resolve(args.serial)
    failures = 0
    out = []
    for e in entries:
        try:
            info = read_info(adb.device(e))
        except DeviceError as exc:
            failures += 1
            print(f"finllm-edge device info: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        out.append(info.to_json())
        if not args.json:
            print(format_info(info))
    if args.json:
        print(json.dumps(out, indent=2))
    return 1 if failures else 0


def _parse_threads(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DeviceError(f"--threads must be a comma list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise DeviceError(f"--threads must list positive integers, got {text!r}")
    return vals


def bench_options(args) -> "BenchOptions":
    from finllm_edge.models import default_model_path

    from .bench import BenchOptions

    model = Path(args.model) if args.model else default_model_path()
    if not model.is_file():
        from finllm_edge.errors import ModelNotFoundError

        raise ModelNotFoundError(f"model {model} does not exist")
    return BenchOptions(
        model=model, threads=_parse_threads(args.threads), n_prompt=args.n_prompt, n_gen=args.n_gen,
        repetitions=args.repetitions, warmup=args.warmup, n_ctx=args.ctx, pin=args.pin,
        variant=args.variant, fe_bench=Path(args.fe_bench) if args.fe_bench else None,
        cool_tolerance_c=args.cool_tolerance, cool_timeout_s=args.cool_timeout,
        cool_poll_s=args.cool_poll, run_timeout_s=args.run_timeout, keep_remote=not args.clean,
    )


def bench_devices(adb: Adb, serials: list[str] | None, opts, out: Path) -> dict:
    """Bench every selected device in parallel; write and return the merged report."""
    from .bench import DeviceBench, DeviceResult, format_summary, safe_name

    entries = adb.resolve(serials)
    out.mkdir(parents=True, exist_ok=True)

    def one(entry) -> DeviceResult:
        dev_out = out / safe_name(entry.serial)
        print(f"[{entry.serial}] benchmarking; log: {dev_out / 'bench.log'}", file=sys.stderr, flush=True)
        return DeviceBench(adb, entry, opts, dev_out).run()

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(entries))) as pool:
        results = list(pool.map(one, entries))
    merged = {
        "kind": "finllm-edge.device-reports",
        "seconds": round(time.monotonic() - t0, 1),
        "devices": {},
        "profiles": [],
        "estimates": [],
    }
    for r in results:
        rep = json.loads(r.report_path.read_text())
        merged["devices"][r.serial] = {
            "report": str(r.report_path), "complete": rep["complete"], "error": rep["error"],
            "error_type": rep.get("error_type"), "variant": rep["variant"], "summary": rep["summary"],
            "estimate": rep["estimate"], "n_profiles": len(rep["profiles"]),
        }
        merged["profiles"].extend(rep["profiles"])
        merged["estimates"].extend(e for e in rep.get("estimates", []) if e not in merged["estimates"])
        print(format_summary(rep), file=sys.stderr)
    atomic_write_json(out / "report.json", merged)
    return merged


def cmd_bench(args) -> int:
    opts = bench_options(args)
    out = Path(args.out)
    merged = bench_devices(Adb(), args.serial, opts, out)
    print(f"merged report: {out / 'report.json'} ({len(merged['profiles'])} profiles; "
          f"render with `finllm-edge report {out / 'report.json'} -o {out / 'report'}`)")
    bad = {s: d for s, d in merged["devices"].items() if not d["complete"]}
    for s, d in bad.items():
        print(f"finllm-edge device bench: {s}: {d['error_type']}: {d['error']}", file=sys.stderr)
    return 1 if bad else 0
