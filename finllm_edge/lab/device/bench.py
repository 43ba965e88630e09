"""`finllm-edge device bench`: fe-bench on a phone over adb, one thread count at a time.

Per device: read its info -> pick the fe-bench variant it can run -> push fe-bench and the
model to /data/local/tmp/finllm-edge/ (skip what is already there with the same sha256;
push to NAME.part, check, `mv` into place) -> for each thread count: wait (bounded) until
the CPU is back near its starting temperature, snapshot temperatures + cpufreq, run fe-bench
pinned with `taskset` to the big cores, snapshot again, pull the LatencyProfile -> merge
into <out>/<serial>/report.json after every run (a disconnect keeps what was measured).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from finllm_edge.errors import FinLLMEdgeError
from finllm_edge.fileio import atomic_write_json
from finllm_edge.hashing import sha256_file
from finllm_edge.profile import ProfileSchemaError, validate_profile

from .adb import (
    Adb,
    BenchmarkCrashError,
    Device,
    DeviceEntry,
    DeviceError,
    NotEnoughSpaceError,
    PushFailedError,
    WrongAbiError,
)
from .info import WORK_DIR, DeviceInfo, core_mask, read_info, read_snapshot

REPORT_KIND = "finllm-edge.device-report"
SPACE_MARGIN_BYTES = 16 * 2**20   # room left for results and logs after the push
SIGILL_RC = 128 + signal.SIGILL   # 132: what sh reports for a child killed by SIGILL
_BUNDLE: dict = {}
_BUNDLE_LOCK = threading.Lock()


@dataclass
class BenchOptions:
    model: Path
    threads: list[int] | None = None       # None: 1, 2, 4, ... up to the number of big cores
    n_prompt: int = 64
    n_gen: int = 64
    repetitions: int = 3
    warmup: int = 1
    n_ctx: int = 0
    pin: str = "big"                        # big | all | none
    variant: str | None = None              # force a variant (default: what the phone supports)
    fe_bench: Path | None = None            # use this fe-bench binary for the chosen variant
    cool_tolerance_c: float = 3.0
    cool_timeout_s: float = 180.0
    cool_poll_s: float = 5.0
    run_timeout_s: float = 3600.0
    work_dir: str = WORK_DIR
    keep_remote: bool = True                # keep pushed files for the next run (sha256 skip)


@dataclass
class DeviceResult:
    serial: str
    out_dir: Path
    report_path: Path | None = None
    profiles: list = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", s)


def default_threads(n_big: int) -> list[int]:
    """1, 2, 4, ... and the number of big cores (SD865: 1, 2, 4)."""
    out, t = [], 1
    while t < n_big:
        out.append(t)
        t *= 2
    out.append(max(1, n_big))
    return sorted(set(out))


# --- fe-bench binaries -----------------------------------------------------------------------

def fe_bench_for(variant: str, override: Path | None = None) -> Path:
    """The aarch64 fe-bench built for `variant` (building it once if needed)."""
    if override is not None:
        if not Path(override).is_file():
            raise DeviceError(f"--fe-bench {override} does not exist")
        return Path(override)
    with _BUNDLE_LOCK:  # several phones in parallel: build/look up once
        if variant not in _BUNDLE:
            _BUNDLE[variant] = _aarch64_fe_bench(variant)
        return _BUNDLE[variant]


def _aarch64_fe_bench(variant: str) -> Path:
    """fe-bench of the linux-aarch64 target of `variant` (static: runs on Android arm64 too).

    The same file finllm_edge.lab.aarch64.aarch64_bundle() copies into its bin/ as
    fe-bench-<variant>; built through ensure_built so it is never stale (a ninja no-op when
    up to date) and without building the launcher and probes a phone run does not need.
    """
    from finllm_edge.native.build import ensure_built

    from ..aarch64 import AARCH64_TARGETS

    target = AARCH64_TARGETS.get(variant)
    if target is None:
        raise DeviceError(f"unknown variant {variant!r}; known: {', '.join(AARCH64_TARGETS)}")
    return Path(ensure_built(target).fe_bench)


# --- steps -----------------------------------------------------------------------------------

class DeviceBench:
    """One phone's benchmark. `log` gets every command and its output."""

    def __init__(self, adb: Adb, entry: DeviceEntry, opts: BenchOptions, out_dir: Path):
        self.adb = adb
        self.entry = entry
        self.opts = opts
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = _file_logger(entry.serial, self.out / "bench.log")
        self.report: dict = {
            "kind": REPORT_KIND,
            "serial": entry.serial,
            "complete": False,
            "error": None,
            "started_at": _now(),
            "device": None,
            "variant": None,
            "variant_reason": None,
            "pinning": None,
            "workload": {"n_prompt": opts.n_prompt, "n_gen": opts.n_gen,
                         "repetitions": opts.repetitions, "warmup": opts.warmup},
            "pushed": [],
            "runs": [],
            "profiles": [],
            "estimate": None,
            "estimates": [],   # Estimate dicts ("kind": "estimate"), the form `finllm-edge report` reads
        }

    def save(self) -> Path:
        return atomic_write_json(self.out / "report.json", self.report)

    # --- device checks -----------------------------------------------------------------------
    def check_abi(self, info: DeviceInfo) -> None:
        if info.abi != "arm64-v8a":
            raise WrongAbiError(
                f"ABI is {info.abi or 'unknown'!r} (ro.product.cpu.abi), but fe-bench is built for "
                "arm64-v8a; use a 64-bit ARM phone (an x86 emulator or a 32-bit-only Android "
                "cannot run it)", info.serial)

    def choose_variant(self, info: DeviceInfo) -> tuple[str, str]:
        from finllm_edge.cpu_variant import choose_variant

        if self.opts.variant:
            supported, why = choose_variant(info.cpuinfo_text)
            note = "" if self.opts.variant == supported else f" (the phone supports {supported}: {why})"
            return self.opts.variant, f"forced with --variant{note}"
        return choose_variant(info.cpuinfo_text)

    # --- push ----------------------------------------------------------------------------------
    def push_files(self, dev: Device, info: DeviceInfo, files: list[tuple[Path, str, bool]]) -> None:
        """files: (local, remote name, executable). Skip same-sha256 files; .part then mv."""
        wd = self.opts.work_dir
        dev.shell(f"mkdir -p {shlex.quote(wd)}/results", check=True)
        todo = []
        for local, name, exe in files:
            local_sha = sha256_file(local)
            remote = f"{wd}/{name}"
            remote_sha = dev.sha256(remote)
            entry = {"local": str(local), "remote": remote, "sha256": local_sha,
                     "bytes": local.stat().st_size}
            if remote_sha == local_sha:
                self.log.info("skip %s: already on the device with sha256 %s", remote, local_sha[:12])
                entry["skipped"] = True
                self.report["pushed"].append(entry)
                continue
            todo.append((local, remote, exe, local_sha, entry))
        need = sum(e["bytes"] for *_, e in todo)
        if todo:
            free = _free_bytes(dev, wd)
            if free is not None and free < need + SPACE_MARGIN_BYTES:
                raise NotEnoughSpaceError(
                    f"not enough space in {wd}: {free / 2**20:.0f} MB free, {need / 2**20:.0f} MB to push "
                    f"(+{SPACE_MARGIN_BYTES // 2**20} MB for results); free some space on the phone or "
                    f"remove old files with `adb -s {info.serial} shell rm -rf {wd}`", info.serial)
        for local, remote, exe, local_sha, entry in todo:
            part = remote + ".part"
            self.log.info("push %s -> %s (%d bytes)", local, part, entry["bytes"])
            t0 = time.monotonic()
            try:
                dev.push(str(local), part)
                got = dev.sha256(part)
                if got != local_sha:
                    raise PushFailedError(
                        f"{part} has sha256 {got or 'unreadable'} after the push, expected {local_sha}; "
                        "the transfer was corrupted: retry", info.serial)
                mode = "755" if exe else "644"
                dev.shell(f"chmod {mode} {shlex.quote(part)} && mv -f {shlex.quote(part)} {shlex.quote(remote)}",
                          check=True)
            except DeviceError as exc:
                self._remove_part(dev, part)
                if isinstance(exc, PushFailedError) and "No space left" in str(exc):
                    raise PushFailedError(
                        f"push of {local.name} failed halfway: the phone ran out of space "
                        f"({exc.detail}); the partial file was removed, nothing is left half-written in {wd}. "
                        "Free space on the phone and retry", info.serial) from exc
                if isinstance(exc, PushFailedError):
                    raise PushFailedError(
                        f"push of {local.name} failed halfway ({exc.detail}); the partial file was removed. "
                        "Check the cable and retry", info.serial) from exc
                raise
            entry["seconds"] = round(time.monotonic() - t0, 2)
            entry["skipped"] = False
            self.report["pushed"].append(entry)

    def _remove_part(self, dev: Device, part: str) -> None:
        try:
            dev.shell(f"rm -f {shlex.quote(part)}")
        except DeviceError as exc:  # the device may be gone; say so in the log
            self.log.warning("could not remove %s: %s", part, exc)

    # --- cool-down -------------------------------------------------------------------------------
    def cool_down(self, dev: Device, start_c: float | None) -> dict:
        o = self.opts
        if start_c is None:
            return {"waited_s": 0.0, "reached": None, "reason": "no readable CPU thermal zone"}
        target = start_c + o.cool_tolerance_c
        t0 = time.monotonic()
        snap = read_snapshot(dev)
        polls = 1
        while (snap["cpu_temp_c"] is not None and snap["cpu_temp_c"] > target
               and time.monotonic() - t0 < o.cool_timeout_s):
            time.sleep(o.cool_poll_s)
            snap = read_snapshot(dev)
            polls += 1
        now = snap["cpu_temp_c"]
        reached = now is not None and now <= target
        rec = {"start_c": start_c, "target_c": round(target, 1), "end_c": now,
               "waited_s": round(time.monotonic() - t0, 2), "polls": polls, "reached": reached,
               "timeout_s": o.cool_timeout_s}
        if not reached:
            self.log.warning("cool-down: still %.1f C after %.0f s (target %.1f C); running anyway",
                             now if now is not None else float("nan"), rec["waited_s"], target)
        else:
            self.log.info("cool-down: %.1f C <= %.1f C after %.1f s", now, target, rec["waited_s"])
        return rec

    # --- one run ---------------------------------------------------------------------------------
    def run_one(self, dev: Device, info: DeviceInfo, bench_remote: str, model_remote: str,
                variant: str, n_threads: int, mask: str | None, cooldown: dict, index: int) -> dict:
        o = self.opts
        remote_json = f"{o.work_dir}/results/{safe_name(info.serial)}-run{index}-t{n_threads}.json"
        args = [bench_remote, "-m", model_remote, "-t", str(n_threads), "-p", str(o.n_prompt),
                "-n", str(o.n_gen), "-r", str(o.repetitions), "--warmup", str(o.warmup),
                "-o", remote_json, "--json-only"]
        if o.n_ctx:
            args += ["-c", str(o.n_ctx)]
        cmd = " ".join(shlex.quote(a) for a in args)
        if mask:
            cmd = f"taskset {mask} {cmd}"
        before = read_snapshot(dev)
        self.log.info("run %d: %s", index, cmd)
        t0 = time.monotonic()
        res = dev.shell(f"rm -f {shlex.quote(remote_json)}; {cmd} 2>&1", timeout=o.run_timeout_s,
                        what=f"run {index} (fe-bench, {n_threads} threads)")
        wall = time.monotonic() - t0
        self.log.info("fe-bench exit %d after %.1f s; output:\n%s", res.returncode, wall, res.stdout.strip())
        after = read_snapshot(dev)
        run = {"index": index, "n_threads": n_threads, "taskset_mask": mask, "command": cmd,
               "exit_code": res.returncode, "wall_s": round(wall, 2), "cooldown": cooldown,
               "thermal_before": before, "thermal_after": after, "profile": None}
        self.report["runs"].append(run)
        if res.returncode != 0:
            raise _crash_error(res.returncode, res.stdout, variant, info.serial, n_threads)
        local = self.out / "profiles" / f"run{index}-t{n_threads}.json"
        local.parent.mkdir(exist_ok=True)
        dev.pull(remote_json, str(local))
        try:
            profile = json.loads(local.read_text())
        except ValueError as exc:
            raise DeviceError(f"fe-bench wrote unreadable JSON ({exc}); see {local}", info.serial) from exc
        profile = self.annotate(profile, info, variant, mask, before, after, cooldown)
        try:
            validate_profile(profile)
        except ProfileSchemaError as exc:
            raise DeviceError(f"fe-bench wrote an invalid profile ({exc}); see {local}", info.serial) from exc
        atomic_write_json(local, profile)
        run["profile"] = str(local.relative_to(self.out))
        self.report["profiles"].append(profile)
        return profile

    def annotate(self, profile: dict, info: DeviceInfo, variant: str, mask: str | None,
                 before: dict, after: dict, cooldown: dict) -> dict:
        """Fill `thermal` (adb snapshots around the run) and the device block (from adb info)."""
        used = _mask_cpus(mask) if mask else [c["cpu"] for c in info.cores]
        throttled = {}
        for cpu in used:
            k = str(cpu)
            cmax = after["cpuinfo_max_freq_khz"].get(k)
            smax = after["scaling_max_freq_khz"].get(k)
            if cmax and smax and smax < cmax:
                throttled[k] = {"cpuinfo_max_freq_khz": cmax, "scaling_max_freq_khz": smax}
        thermal = {
            "source": "adb (sysfs read around the fe-bench process)",
            "before": before,
            "after": after,
            "cpu_temp_rise_c": (round(after["cpu_temp_c"] - before["cpu_temp_c"], 1)
                                if after.get("cpu_temp_c") is not None and before.get("cpu_temp_c") is not None
                                else None),
            "throttled": bool(throttled),
            "throttled_cpus": throttled,
            "taskset_mask": mask,
            "cooldown": cooldown,
        }
        if isinstance(profile.get("thermal"), dict):
            thermal["fe_bench"] = profile["thermal"]  # fe-bench's own samples, when it had them
        profile["thermal"] = thermal
        # The phone's description as adb read it (SoC, model, clusters); fe-bench's own measured
        # cores_used/affinity are kept as they are (the taskset mask is in the report's runs[]).
        dev = profile.get("device") or {}
        dev["cpu_model"] = f"{info.cpu_model} [{info.model}]" if info.model else info.cpu_model
        dev["arch"] = "aarch64"
        dev["cores_total"] = len(info.cores) or dev.get("cores_total", 0)
        dev.setdefault("affinity", used)
        dev.setdefault("cores_used", used)
        dev["governor"] = {str(c["cpu"]): c["governor"] for c in info.cores if c["governor"]}
        dev["max_freq_khz"] = {str(c["cpu"]): c["max_freq_khz"] for c in info.cores if c["max_freq_khz"]}
        if info.mem_total_mb:
            dev["mem_total_mb"] = info.mem_total_mb
        profile["device"] = dev
        profile["variant"] = variant
        if info.is_emulator:  # an emulator's speed must never be quoted as a phone's
            profile["emulated"] = True
        return profile

    # --- the whole thing ------------------------------------------------------------------------
    def run(self) -> DeviceResult:
        result = DeviceResult(self.entry.serial, self.out)
        try:
            self._run()
            self.report["complete"] = True
        except FinLLMEdgeError as exc:  # DeviceError, or a build/model error on the host side
            self.report["error"] = str(exc)
            self.report["error_type"] = type(exc).__name__
            result.error, result.error_type = str(exc), type(exc).__name__
            self.log.error("%s: %s", type(exc).__name__, exc)
        except Exception as exc:  # a bug must not take the other phones' results down with it
            self.report["error"] = f"unexpected {type(exc).__name__}: {exc} (see {self.out / 'bench.log'})"
            self.report["error_type"] = type(exc).__name__
            result.error, result.error_type = self.report["error"], type(exc).__name__
            self.log.exception("unexpected error")
        finally:
            self.report["finished_at"] = _now()
            self.report["summary"] = summarize(self.report)
            result.report_path = self.save()
            (self.out / "summary.md").write_text(summary_markdown(self.report), encoding="utf-8")
            for h in list(self.log.handlers):
                h.close()
                self.log.removeHandler(h)
            result.profiles = list(self.report["profiles"])
        return result

    def _run(self) -> None:
        o = self.opts
        dev = self.adb.device(self.entry)
        info = read_info(dev, o.work_dir)
        self.report["device"] = info.to_json()
        self.log.info("device: %s", json.dumps(info.to_json()))
        self.check_abi(info)
        variant, reason = self.choose_variant(info)
        self.report["variant"], self.report["variant_reason"] = variant, reason
        self.log.info("variant %s: %s", variant, reason)
        binary = fe_bench_for(variant, o.fe_bench)
        bench_name = f"fe-bench-{safe_name(variant)}"
        model_name = safe_name(o.model.name)
        self.push_files(dev, info, [(binary, bench_name, True), (o.model, model_name, False)])
        self.save()
        n_big = len(info.big_cores)
        threads = o.threads or default_threads(n_big or len(info.cores) or 1)
        mask = self._mask(info)
        self.report["pinning"] = {"mode": o.pin, "mask": mask, "big_cores": info.big_cores,
                                  "clusters": info.clusters}
        if self.report["device"]["is_sd865"]:
            self.report["estimate"] = sd865_estimate(o.model, threads, o.n_prompt, o.n_gen)
            self.report["estimates"] = list(self.report["estimate"].get("by_threads", {}).values())
        start = read_snapshot(dev)
        self.report["thermal_start"] = start
        for i, t in enumerate(threads):
            run_mask = mask
            if mask and o.pin == "big" and t > len(info.big_cores):
                run_mask = core_mask([c["cpu"] for c in info.cores])  # more threads than big cores
            cool = (self.cool_down(dev, start["cpu_temp_c"]) if i > 0
                    else {"waited_s": 0.0, "reached": True, "reason": "first run",
                          "start_c": start["cpu_temp_c"]})
            self.run_one(dev, info, f"{o.work_dir}/{bench_name}", f"{o.work_dir}/{model_name}",
                         variant, t, run_mask, cool, i)
            self.save()
        if not o.keep_remote:
            dev.shell(f"rm -rf {shlex.quote(o.work_dir)}")

    def _mask(self, info: DeviceInfo) -> str | None:
        if self.opts.pin == "none":
            return None
        if self.opts.pin == "all" or not info.big_cores:
            return core_mask([c["cpu"] for c in info.cores]) or None
        return core_mask(info.big_cores)


# --- helpers ---------------------------------------------------------------------------------

def _crash_error(rc: int, output: str, variant: str, serial: str, n_threads: int) -> BenchmarkCrashError:
    tail = "\n".join(output.strip().splitlines()[-8:])
    if rc == SIGILL_RC or "Illegal instruction" in output or "signal 4" in output:
        from finllm_edge.cpu_variant import VARIANT_BASE

        hint = ("" if variant == VARIANT_BASE else
                f"; this CPU lacks an instruction of the {variant} build: rerun with "
                f"`--variant {VARIANT_BASE}` (the baseline runs on every ARMv8 core)")
        return BenchmarkCrashError(
            f"fe-bench ({variant}) died of SIGILL (illegal instruction, exit {rc}) with {n_threads} "
            f"threads{hint}", serial, rc, variant)
    if rc > 128:
        try:
            name = signal.Signals(rc - 128).name
        except ValueError:
            name = f"signal {rc - 128}"
        hint = " (SIGKILL: often the low-memory killer; try a smaller model or close apps)" if name == "SIGKILL" else ""
        return BenchmarkCrashError(f"fe-bench ({variant}) was killed by {name} (exit {rc}){hint}:\n{tail}",
                                   serial, rc, variant)
    return BenchmarkCrashError(f"fe-bench ({variant}) failed with exit {rc}:\n{tail}", serial, rc, variant)


def _free_bytes(dev: Device, wd: str) -> int | None:
    from .info import parse_df

    res = dev.shell(f"df -k {shlex.quote(wd)}")
    return parse_df(res.stdout) if res.returncode == 0 else None


def _mask_cpus(mask: str) -> list[int]:
    m = int(mask, 16)
    return [i for i in range(m.bit_length()) if m >> i & 1]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _file_logger(serial: str, path: Path) -> logging.Logger:
    log = logging.getLogger(f"finllm_edge.lab.device.{serial}.{id(path)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    h = logging.FileHandler(path, mode="a", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(h)
    return log


def sd865_estimate(model: Path, threads: list[int], n_prompt: int, n_gen: int) -> dict:
    """The Snapdragon 865 roofline estimate (finllm_edge.lab.estimate), per thread count."""
    try:
        from ..estimate import estimate, load_device, model_stats

        stats = model_stats(model)
        spec = load_device("snapdragon-865")
    except (ImportError, ValueError, OSError) as exc:
        return {"available": False, "reason": f"no estimate: {exc}"}
    return {
        "available": True,
        "label": "ESTIMATE (roofline, not measured)",
        "device": "snapdragon-865",
        "by_threads": {str(t): estimate(stats, spec, n_prompt=n_prompt, n_gen=n_gen, n_threads=t).to_dict()
                       for t in threads},
    }


def summarize(report: dict) -> list[dict]:
    """One row per measured run: threads, decode/prefill tok/s, TTFT, temps, throttling, estimate."""
    rows = []
    est = (report.get("estimate") or {}).get("by_threads", {})
    for p in report.get("profiles", []):
        th = p.get("thermal") or {}
        row = {
            "n_threads": p["n_threads"],
            "decode_tok_s": p["decode_tok_s"],
            "prefill_tok_s": p["prefill_tok_s"],
            "ttft_ms": p["ttft_ms"],
            "token_ms_p90": p["token_ms_p90"],
            "cpu_temp_before_c": (th.get("before") or {}).get("cpu_temp_c"),
            "cpu_temp_after_c": (th.get("after") or {}).get("cpu_temp_c"),
            "throttled": th.get("throttled"),
            "cooldown_waited_s": (th.get("cooldown") or {}).get("waited_s"),
        }
        e = est.get(str(p["n_threads"]))
        if isinstance(e, dict):
            for key in ("decode_tok_s", "ttft_ms"):
                if isinstance(e.get(key), (int, float)) and e[key]:
                    row[f"estimate_{key}"] = e[key]
                    row[f"measured_over_estimate_{key}"] = round(p[key] / e[key], 3)
        rows.append(row)
    return rows


def format_summary(report: dict) -> str:
    lines = [f"{report['serial']}: variant {report.get('variant')} "
             f"({'complete' if report.get('complete') else 'INCOMPLETE: ' + str(report.get('error'))})"]
    hdr = (f"  {'threads':>7} {'decode tok/s':>12} {'prefill tok/s':>13} {'TTFT ms':>9} "
           f"{'CPU C before->after':>20} {'throttled':>9} {'cooled s':>8}")
    rows = report.get("summary") or []
    if rows:
        lines.append(hdr)
    for r in rows:
        tb, ta = r["cpu_temp_before_c"], r["cpu_temp_after_c"]
        temps = f"{tb if tb is not None else '?'} -> {ta if ta is not None else '?'}"
        est = (f"  (estimate {r['estimate_decode_tok_s']:.1f} tok/s, "
               f"measured/estimate {r['measured_over_estimate_decode_tok_s']:.2f})"
               if "estimate_decode_tok_s" in r else "")
        lines.append(f"  {r['n_threads']:>7} {r['decode_tok_s']:>12.2f} {r['prefill_tok_s']:>13.2f} "
                     f"{r['ttft_ms']:>9.1f} {temps:>20} {str(r['throttled']):>9} "
                     f"{r['cooldown_waited_s'] or 0:>8.1f}{est}")
    return "\n".join(lines)


def summary_markdown(report: dict) -> str:
    """<out>/<serial>/summary.md: the runs with their temperatures, throttling and cool-down waits."""
    dev = report.get("device") or {}
    lines = [f"# {report['serial']}: {dev.get('model', '?')} — {dev.get('soc', '?')}", "",
             f"- variant: `{report.get('variant')}` ({report.get('variant_reason')})",
             f"- pinning: {json.dumps(report.get('pinning'))}",
             f"- status: {'complete' if report.get('complete') else 'INCOMPLETE — ' + str(report.get('error'))}",
             ""]
    rows = report.get("summary") or []
    if rows:
        lines += ["| threads | decode tok/s | prefill tok/s | TTFT ms | p90 ms/token | CPU °C before → after "
                  "| throttled | cool-down wait s | SD865 estimate decode tok/s | measured / estimate |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            est = f"{r['estimate_decode_tok_s']:.1f}" if "estimate_decode_tok_s" in r else "—"
            ratio = (f"{r['measured_over_estimate_decode_tok_s']:.2f}"
                     if "measured_over_estimate_decode_tok_s" in r else "—")
            lines.append(f"| {r['n_threads']} | {r['decode_tok_s']:.2f} | {r['prefill_tok_s']:.2f} "
                         f"| {r['ttft_ms']:.1f} | {r['token_ms_p90']:.2f} "
                         f"| {r['cpu_temp_before_c']} → {r['cpu_temp_after_c']} "
                         f"| {'**yes**' if r['throttled'] else 'no'} | {r['cooldown_waited_s']} | {est} | {ratio} |")
    lines += ["", "Throttled = after the run, a pinned core's scaling_max_freq was below its cpuinfo_max_freq "
              "(the thermal governor capped it). Cool-down waits are bounded; a wait that hit its timeout is "
              "flagged in runs[].cooldown.reached = false in report.json.", ""]
    for run in report.get("runs", []):
        if run.get("exit_code"):
            lines.append(f"- run {run['index']} ({run['n_threads']} threads) exited {run['exit_code']}")
    return "\n".join(lines) + "\n"
