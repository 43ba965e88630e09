"""llama.cpp's own `llama-server`, built from the same pinned tree: the baseline of
benchmarks/bench_serve.py (continuous batching, -np N slots) against `finllm-edge serve`.

Built once per (pin, target flags) into
    <cache>/llama-server/<target>-<hash>/{build/, bin/llama-server, finllm-edge-stamp.json}
in its own build tree, so the stage-1 prefixes every other build uses (LLAMA_BUILD_SERVER=OFF,
no cpp-httplib) stay as they are and keep their cache keys. Same CPU flags as the library
variant the Python binding loads on this machine (`host-avx512` here, `host` on an AVX2 CPU),
so the two servers run the same kernels. No web UI (LLAMA_BUILD_UI=OFF) and no prebuilt UI
download (LLAMA_USE_PREBUILT_UI=OFF): the build touches no network. Under the heavy lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from ..cpu_variant import arch_table, host_features, variant_runs
from ..errors import NativeBuildError
from ..paths import cache_dir
from . import fetch
from .build import STAMP, _jobs, _log, _run, _tool, heavy_lock
from .targets import HOST_VARIANT_TARGETS, get_target

# What differs from the stage-1 flags: the server on, its web UI off (no npm, no download).
SERVER_ARGS = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
LAYOUT = 1  # bump when how this is built changes


def default_target() -> str:
    """The best x86-64 host target this CPU runs (the variant the Python binding loads)."""
    feats = host_features("x86_64")
    for v in arch_table("x86_64").variants:
        if v.target in HOST_VARIANT_TARGETS and variant_runs(feats, v):
            return v.target
    raise NativeBuildError("no x86-64 host variant runs on this CPU; llama-server is built for the host only")


def _args(target: str) -> list[str]:
    tgt = get_target(target)
    if tgt.toolchain:
        raise NativeBuildError(f"llama-server is a host benchmark baseline; {target} is a cross target")
    args = [a for a in tgt.llama_key_args if not a.startswith(("-DLLAMA_BUILD_SERVER=", "-DBUILD_SHARED_LIBS="))]
    return args + ["-DBUILD_SHARED_LIBS=OFF", *SERVER_ARGS]


def server_dir(target: str) -> Path:
    blob = json.dumps({"layout": LAYOUT, "identity": fetch.llama_identity(), "args": _args(target)}, sort_keys=True)
    return cache_dir() / "llama-server" / f"{target}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def existing_llama_server(target: str | None = None) -> Path | None:
    """Path of the built llama-server for `target` (default: this CPU's), None when not built."""
    root = server_dir(target or default_target())
    exe = root / "bin" / "llama-server"
    return exe if (root / STAMP).exists() and exe.exists() else None


def ensure_llama_server(target: str | None = None, force: bool = False) -> Path:
    """Build llama-server (once; ~10 min on 2 cores cold) and return its path."""
    target = target or default_target()
    root = server_dir(target)
    exe = root / "bin" / "llama-server"
    if not force and existing_llama_server(target):
        return exe
    src = fetch.llama_src_dir()
    cmake, ninja = _tool("cmake", "cmake"), _tool("ninja", "ninja")
    with heavy_lock():
        if not force and existing_llama_server(target):
            return exe
        build = root / "build"
        root.mkdir(parents=True, exist_ok=True)
        (root / STAMP).unlink(missing_ok=True)
        log = root / "build.log"
        log.write_text("")
        _log(f"building llama-server ({fetch.llama_version_string()}, {target}) in {root} (once; log: {log})")
        t0 = time.time()
        _run([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
              *_args(target)], log=log)
        _run([cmake, "--build", str(build), "-j", _jobs(), "--target", "llama-server"], log=log)
        built = build / "bin" / "llama-server"
        if not built.exists():
            raise NativeBuildError(f"llama-server was not built ({built} missing); see {log}")
        exe.parent.mkdir(exist_ok=True)
        tmp = exe.with_name(f".llama-server.{os.getpid()}.tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, exe)
        stamp = {"target": target, "llama_cpp_version": fetch.llama_version_string(),
                 "identity": fetch.llama_identity(), "cmake_args": _args(target),
                 "build_seconds": round(time.time() - t0, 1),
                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (root / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")  # last: its presence means complete
        _log(f"llama-server built in {stamp['build_seconds']} s -> {exe}")
    return exe
