"""`finllm-edge emulate`: run the aarch64 build under qemu-aarch64 with a chosen CPU model.

    finllm-edge emulate                                  # fe-bench, cortex-a76, profile on stdout
    finllm-edge emulate --cpu cortex-a53 -o a53.json     # ARMv8.0 core: the launcher picks armv8-a
    finllm-edge emulate --variant armv8-a                # force the baseline (refused if unsupported)
    finllm-edge emulate --generate "A bond coupon is" -n 8   # greedy text, no profile
    finllm-edge emulate --build-only                     # build/assemble the aarch64 bundle and exit

The bundle's launcher (native/dispatch) runs inside qemu, reads the emulated CPU's AT_HWCAP
and execs the variant; since this host has no binfmt_misc entry for aarch64, it re-enters
qemu through FE_DISPATCH_WRAPPER, and QEMU_CPU carries the CPU model across the exec.

The LatencyProfile is fe-bench's own (same schema as on x86 and on phones), with
"emulated": true, "variant" as fe-bench reports it (checked against the launcher's choice)
and device.cpu_model naming the qemu CPU model. Emulated speed is not device speed:
qemu runs SmolLM2-135M at roughly 3 s per token here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from finllm_edge.cpu_variant import QEMU_CPU_MODELS, VARIANTS
from finllm_edge.errors import FinLLMEdgeError
from finllm_edge.fileio import atomic_write_text

from .argtypes import float_range, non_negative_int, positive_int

DEFAULT_CPU = "cortex-a76"
_DISPATCH_RE = re.compile(r"^fe-dispatch: (?P<tool>\S+): variant (?P<variant>\S+) \((?P<reason>.*)\)$", re.M)


class EmulationError(FinLLMEdgeError, RuntimeError):
    pass


def qemu_binary() -> str:
    exe = shutil.which("qemu-aarch64")
    if not exe:
        raise EmulationError("qemu-aarch64 not found; install it (apt-get install qemu-user) "
                             "or run scripts/bootstrap.sh")
    return exe


def qemu_env(cpu: str, variant: str | None = None) -> dict:
    env = dict(os.environ)
    env["QEMU_CPU"] = cpu
    env["FE_DISPATCH_WRAPPER"] = qemu_binary()
    env.pop("FE_DISPATCH_DRY_RUN", None)
    env.pop("FE_DISPATCH_QUIET", None)
    if variant:
        env["FE_VARIANT_OVERRIDE"] = variant
    else:
        env.pop("FE_VARIANT_OVERRIDE", None)
    return env


@dataclass
class QemuRun:
    cmd: list[str]
    cpu: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    variant: str | None = None      # what the launcher chose (None when run without it)
    reason: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def check(self) -> "QemuRun":
        if self.returncode != 0:
            what = f"signal {self.signal}" if self.signal else f"exit {self.returncode}"
            raise EmulationError(f"{' '.join(self.cmd)} under -cpu {self.cpu} failed ({what}):\n"
                                 f"{self.stderr[-3000:]}")
        return self


def _no_core_dumps() -> None:
    # qemu-user writes qemu_<prog>_<time>.core into the cwd when a guest dies of a signal
    # (the SIGILL check does that on purpose): keep those out of the checkout.
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_qemu(binary: Path, args: list[str], cpu: str = DEFAULT_CPU, variant: str | None = None,
             timeout: float = 900, env_extra: dict | None = None) -> QemuRun:
    """Run an aarch64 executable (a launcher or a variant binary) under qemu-aarch64 -cpu CPU."""
    if cpu not in QEMU_CPU_MODELS:
        raise EmulationError(f"unknown CPU model {cpu!r}; choose one of {', '.join(QEMU_CPU_MODELS)}")
    cmd = [qemu_binary(), "-cpu", cpu, str(binary), *args]
    env = qemu_env(cpu, variant)
    env.update(env_extra or {})
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=timeout, preexec_fn=_no_core_dumps)
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from exc
    run = QemuRun(cmd, cpu, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
    m = _DISPATCH_RE.search(proc.stderr)
    if m:
        run.variant, run.reason = m.group("variant"), m.group("reason")
    return run


def dispatch_choice(cpu: str, tool: str = "fe-bench", variant: str | None = None,
                    bundle: dict | None = None) -> tuple[str, str]:
    """(variant, reason) the launcher picks on this qemu CPU model (dry run, nothing executed)."""
    from .aarch64 import aarch64_bundle

    b = bundle or aarch64_bundle()
    run = run_qemu(b["launchers"][tool], [], cpu=cpu, variant=variant,
                   env_extra={"FE_DISPATCH_DRY_RUN": "1"}, timeout=60).check()
    chosen, _path, reason = run.stdout.rstrip("\n").split("\t", 2)
    return chosen, reason


def emulated_profile(profile: dict, cpu: str, dispatch_variant: str | None, host_cpu: str | None = None) -> dict:
    """fe-bench's profile from under qemu, flagged: emulated, qemu CPU model, variant checked."""
    from finllm_edge.profile import validate_profile

    p = dict(profile)
    if dispatch_variant and p.get("variant") and p["variant"] != dispatch_variant:
        raise EmulationError(f"the launcher chose {dispatch_variant} but fe-bench reports variant {p['variant']}")
    p["variant"] = p.get("variant") or dispatch_variant
    p["emulated"] = True
    dev = dict(p["device"])
    host = host_cpu or dev.get("cpu_model") or "unknown host"
    dev["cpu_model"] = f"qemu-aarch64 -cpu {cpu} (emulated on {host})"
    dev["arch"] = "aarch64"
    # qemu-user shows the host's cpufreq/governor files; they say nothing about the guest.
    dev["governor"] = {}
    dev["max_freq_khz"] = {}
    p["device"] = dev
    p["thermal"] = None
    return validate_profile(p)


def run_fe_bench(model: Path, cpu: str = DEFAULT_CPU, variant: str | None = None, n_prompt: int = 8,
                 n_gen: int = 4, threads: int = 2, repetitions: int = 1, warmup: int = 0,
                 prompt_file: Path | None = None, bundle: dict | None = None,
                 timeout: float = 900) -> QemuRun:
    """fe-bench through the launcher under qemu; run.extra["profile"] is the emulated profile."""
    from .aarch64 import aarch64_bundle

    b = bundle or aarch64_bundle()
    with tempfile.TemporaryDirectory(prefix="fe-emulate-") as td:
        out = Path(td) / "profile.json"
        args = ["-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                "-r", str(repetitions), "--warmup", str(warmup), "--emulated", "--json-only", "-o", str(out)]
        if prompt_file:
            args += ["--prompt-file", str(prompt_file)]
        run = run_qemu(b["launchers"]["fe-bench"], args, cpu=cpu, variant=variant, timeout=timeout).check()
        if not out.exists():
            raise EmulationError(f"fe-bench exited 0 but wrote no profile:\n{run.stderr[-2000:]}")
        run.extra["profile"] = emulated_profile(json.loads(out.read_text()), cpu, run.variant)
    return run


def run_probe(model: Path, prompt: str, n_gen: int = 8, cpu: str = DEFAULT_CPU, variant: str | None = None,
              threads: int = 2, top_k: int = 5, logits_out: Path | None = None, log: bool = False,
              bundle: dict | None = None, direct: bool = False, timeout: float = 900) -> QemuRun:
    """fe-logits under qemu (through the launcher, or the variant binary itself with direct=True).

    run.extra["result"] is its JSON (prompt tokens, top logits, greedy tokens) when it succeeded.
    """
    from .aarch64 import aarch64_bundle

    b = bundle or aarch64_bundle()
    if direct:
        if not variant:
            raise EmulationError("direct=True needs a variant")
        exe = b["variants"][variant]["fe-logits"]
    else:
        exe = b["launchers"]["fe-logits"]
    args = ["-m", str(model), "-p", prompt, "-n", str(n_gen), "-t", str(threads), "-k", str(top_k)]
    if logits_out:
        args += ["--logits-out", str(logits_out)]
    if log:
        args.append("--log")
    run = run_qemu(exe, args, cpu=cpu, variant=None if direct else variant, timeout=timeout)
    if run.returncode == 0:
        run.extra["result"] = json.loads(run.stdout)
    return run


# ---------------------------------------------------------------- CLI

def configure(parser) -> None:
    parser.add_argument("--cpu", default=DEFAULT_CPU, choices=list(QEMU_CPU_MODELS),
                        help=f"qemu CPU model (default {DEFAULT_CPU}, the Snapdragon 865 stand-in; "
                             "cortex-a53 for ARMv8.0)")
    parser.add_argument("--variant", default="auto", choices=["auto", *VARIANTS],
                        help="auto: the launcher picks from the emulated CPU's features (default); "
                             "else force one (refused when the CPU lacks its features)")
    parser.add_argument("-m", "--model", type=Path, default=None,
                        help="GGUF model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("-p", "--n-prompt", type=positive_int, default=8, help="prompt tokens (default 8)")
    parser.add_argument("-n", "--n-gen", type=positive_int, default=4, help="tokens to generate (default 4)")
    parser.add_argument("-t", "--threads", type=positive_int, default=2)
    parser.add_argument("-r", "--repetitions", type=positive_int, default=1)
    parser.add_argument("--warmup", type=non_negative_int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="write the LatencyProfile JSON here (default: stdout)")
    parser.add_argument("--generate", metavar="PROMPT", default=None,
                        help="greedy-generate -n tokens from PROMPT (fe-logits) and print the text "
                             "instead of benchmarking")
    parser.add_argument("--no-build", action="store_true",
                        help="use the existing bundle; fail instead of building")
    parser.add_argument("--build-only", action="store_true",
                        help="build both aarch64 variants and assemble the bundle, then exit")
    parser.add_argument("--timeout", type=float_range(0.0, lo_open=True), default=1800,
                        help="seconds per qemu run (default 1800)")


def main(args) -> int:
    from .aarch64 import aarch64_bundle, bundle_json

    bundle = aarch64_bundle(build=not args.no_build)
    if args.build_only:
        print(json.dumps(bundle_json(bundle), indent=2))
        return 0
    if args.model is None:
        from finllm_edge.models import default_model_path

        args.model = default_model_path()
    variant = None if args.variant == "auto" else args.variant
    if args.n_prompt < 1 or args.n_gen < 1 or args.repetitions < 1 or args.warmup < 0:
        raise EmulationError("--n-prompt, --n-gen and --repetitions must be >= 1, --warmup >= 0")

    if args.generate is not None:
        run = run_probe(args.model, args.generate, n_gen=args.n_gen, cpu=args.cpu, variant=variant,
                        threads=args.threads, bundle=bundle, timeout=args.timeout).check()
        res = run.extra["result"]
        print(f"[emulate] qemu-aarch64 -cpu {args.cpu}: variant {run.variant} ({run.reason})", file=sys.stderr)
        print(f"[emulate] {len(res['gen_tokens'])} tokens in {run.seconds:.1f} s wall (emulated; not device "
              f"speed): {res['gen_tokens']}", file=sys.stderr)
        print(res.get("gen_text", ""))
        return 0

    run = run_fe_bench(args.model, cpu=args.cpu, variant=variant, n_prompt=args.n_prompt, n_gen=args.n_gen,
                       threads=args.threads, repetitions=args.repetitions, warmup=args.warmup,
                       bundle=bundle, timeout=args.timeout)
    profile = run.extra["profile"]
    text = json.dumps(profile, indent=2) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    print(f"[emulate] qemu-aarch64 -cpu {args.cpu}: variant {profile['variant']} ({run.reason}); "
          f"{run.seconds:.1f} s wall; EMULATED: decode {profile['decode_tok_s']:.3f} tok/s is not device speed",
          file=sys.stderr)
    return 0
