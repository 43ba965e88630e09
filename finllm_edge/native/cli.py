"""`finllm-edge native fetch | build | info`: the pinned llama.cpp and the native/ build."""

from __future__ import annotations

import argparse
import json
import sys

from .targets import HOST_VARIANT_TARGETS, TARGETS

HOST_VARIANTS = "host-variants"  # pseudo-target of `build`: all of HOST_VARIANT_TARGETS
LLAMA_SERVER = "llama-server"    # pseudo-target of `build`: upstream llama-server (bench_serve's baseline)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="native_cmd", metavar="CMD")
    sub.add_parser("fetch", help="download + verify the pinned llama-cpp-python sdist, extract vendor/llama.cpp")
    b = sub.add_parser("build", help="build llama.cpp (once, cached) and native/ (incremental) for a target")
    b.add_argument("--target", default="host", choices=[*TARGETS, HOST_VARIANTS, LLAMA_SERVER],
                   help=f"build target (default: host); {HOST_VARIANTS}: every x86-64 CPU variant of the "
                        f"library ({', '.join(HOST_VARIANT_TARGETS)}), each copied into finllm_edge/_lib/<variant>/; "
                        f"{LLAMA_SERVER}: upstream llama-server from the same pin and CPU flags (the baseline of "
                        f"benchmarks/bench_serve.py; its own cached build tree)")
    b.add_argument("--force-llama", action="store_true", help="rebuild the cached llama.cpp prefix")
    b.add_argument("--test", action="store_true", help="run the C tests (ctest) after building")
    i = sub.add_parser("info", help="print paths of the built libs, fe-bench and upstream tools as JSON")
    i.add_argument("--target", default="host", choices=list(TARGETS))
    i.add_argument("--build", action="store_true", help="build first if needed")
    sub.add_parser("targets", help="list the build targets")
    c = sub.add_parser("clean", help="remove the build folders of checkouts that no longer exist "
                                     "(each clone builds its own, ~1 GB; scripts/bootstrap.sh runs this)")
    c.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    c.add_argument("--min-age-hours", type=float, default=2.0,
                   help="keep folders built in during the last H hours even when their checkout is not "
                        "visible here (a CI clone in another mount namespace; default: 2)")


def main(args: argparse.Namespace) -> int:
    cmd = getattr(args, "native_cmd", None)
    if cmd == "fetch":
        from .fetch import llama_src_dir, llama_version_string

        path = llama_src_dir()
        print(f"llama.cpp {llama_version_string()} at {path}")
        return 0
    if cmd == "build" and args.target == LLAMA_SERVER:
        from .llama_server import ensure_llama_server

        print(f"built llama-server: {ensure_llama_server(force=args.force_llama)}", file=sys.stderr)
        return 0
    if cmd == "build":
        from .build import ensure_built, run_ctest

        names = HOST_VARIANT_TARGETS if args.target == HOST_VARIANTS else (args.target,)
        infos = [ensure_built(t, force_llama=args.force_llama) for t in names]
        for info in infos:
            print(f"built {info.target}: {info.lib_shared}, {info.fe_bench} (llama.cpp {info.llama_cpp_version})",
                  file=sys.stderr)
        if args.test:
            rcs = []
            for t, info in zip(names, infos):
                if not info.runs_on_host and not TARGETS[t].emulator:
                    print(f"NOT testing {t}: this CPU cannot run the {info.variant} variant", file=sys.stderr)
                    continue
                rcs.append(run_ctest(info))
            return max(rcs, default=0)
        return 0
    if cmd == "info":
        from .build import ensure_built, existing_build

        info = ensure_built(args.target) if args.build else existing_build(args.target)
        if info is None:
            print(f"finllm-edge native info: target {args.target} is not built; run "
                  f"`finllm-edge native build --target {args.target}`", file=sys.stderr)
            return 1
        print(json.dumps(info.to_json(), indent=2))
        return 0
    if cmd == "clean":
        from .cache_prune import prune, report

        if args.min_age_hours < 0:
            print("finllm-edge native clean: --min-age-hours must be >= 0", file=sys.stderr)
            return 2
        print(report(prune(args.min_age_hours * 3600, dry_run=args.dry_run), args.dry_run))
        return 0
    if cmd == "targets":
        for t in TARGETS.values():
            print(f"{t.name:24s} {t.description}")
        return 0
    print("usage: finllm-edge native {fetch,build,info,targets,clean} (see --help)", file=sys.stderr)
    return 2
