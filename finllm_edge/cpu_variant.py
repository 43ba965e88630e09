"""Which CPU build variant a CPU can run, and which libfinllm_edge.so the Python binding loads.

The rule lives in one table, ``native/variants.json`` (shipped in the package as
``finllm_edge/_lib/variants.json``); ``native/dispatch/fe-dispatch.c`` is compiled from the
same table (cmake/FeVariants.cmake). Per architecture, best first:

- x86-64: ``x86-64-avx512-vnni`` (AVX-512 F/CD/BW/DQ/VL + VNNI; AMX stays off: it crashes
  ggml here), then the ``x86-64-avx2`` baseline (AVX2/FMA/F16C).
- aarch64 (Linux and Android): ``armv8.2-a+dotprod+fp16`` (Snapdragon 865 class: dot
  product and fp16), then the ``armv8-a`` baseline, so no phone dies of SIGILL.

A variant is runnable when *every* core lists all its features (big.LITTLE phones list
them per core; the weakest core decides, since a thread may migrate onto it). Features
come from /proc/cpuinfo (x86 ``flags`` lines, ARM ``Features`` lines: what ``adb shell cat
/proc/cpuinfo`` prints) or, on ARM, from the ``AT_HWCAP`` bits.

    >>> from finllm_edge.cpu_variant import choose_variant
    >>> choose_variant("processor : 0\\nFeatures : fp asimd asimddp fphp asimdhp\\n")[0]
    'armv8.2-a+dotprod+fp16'
    >>> choose_variant("processor : 0\\nflags : sse4_2 avx avx2 fma f16c bmi2\\n", arch="x86_64")[0]
    'x86-64-avx2'

``library_path()`` picks the libfinllm_edge.so of the best variant this CPU runs among
those built (``FINLLM_EDGE_VARIANT`` overrides, ``FINLLM_EDGE_LIB`` forces a file).
Standard library only: importable without numpy, llama_cpp or torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .errors import FinLLMEdgeError

LIB_NAME = "libfinllm_edge.so"
PACKAGE_LIB_DIR = Path(__file__).resolve().parent / "_lib"   # <variant>/libfinllm_edge.so (+ variants.json)
_REPO_TABLE = Path(__file__).resolve().parent.parent / "native" / "variants.json"


class NativeLibraryError(FinLLMEdgeError, RuntimeError):
    """No usable libfinllm_edge for this CPU (none built, or the requested one cannot run here)."""


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str
    target: str                  # `finllm-edge native build --target` that builds it
    features: tuple[str, ...]    # cpuinfo words every core must list
    present: str                 # reason text when chosen for its features
    absent: str                  # reason text when its features are missing
    summary: str = ""


@dataclass(frozen=True)
class ArchTable:
    arch: str
    cpuinfo_key: str
    variants: tuple[Variant, ...]          # best first; the last is the baseline
    hwcap_bits: dict                       # feature -> AT_HWCAP bit number (ARM)

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature some variant needs, in table order (what a reason lists)."""
        out: list[str] = []
        for v in self.variants:
            out += [f for f in v.features if f not in out]
        return tuple(out)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name or v.target == name:
                return v
        raise KeyError(name)


def table_path() -> Path:
    """The variant table: the packaged copy (a symlink in a checkout), else the repo's."""
    packaged = PACKAGE_LIB_DIR / "variants.json"
    return packaged if packaged.exists() else _REPO_TABLE


@functools.cache
def load_table(path: str | None = None) -> dict[str, ArchTable]:
    data = json.loads(Path(path or table_path()).read_text())
    out = {}
    for arch, a in data["arches"].items():
        variants = tuple(
            Variant(name=v["name"], arch=arch, target=v["target"], features=tuple(v["features"]),
                    present=v["present"], absent=v["absent"], summary=v.get("summary", ""))
            for v in a["variants"]
        )
        out[arch] = ArchTable(arch, a["cpuinfo_key"], variants, dict(a.get("hwcap_bits", {})))
    return out


def arch_table(arch: str | None = None) -> ArchTable:
    arch = normalize_arch(arch or platform.machine())
    try:
        return load_table()[arch]
    except KeyError:
        raise NativeLibraryError(f"no CPU variants are defined for architecture {arch!r} "
                                 f"(known: {', '.join(load_table())}; see {table_path()})") from None


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}.get(m, m)


# ---- the ARM names the lab tools (emulate, device bench, aarch64 bundle) use
_ARM = load_table()["aarch64"]
VARIANT_DOTPROD = _ARM.variants[0].name       # "armv8.2-a+dotprod+fp16"
VARIANT_BASE = _ARM.variants[-1].name         # "armv8-a"
# Best first: the first variant whose features are all present is chosen.
VARIANTS: tuple[str, ...] = tuple(v.name for v in _ARM.variants)
# Features (cpuinfo names) each ARM variant's code may use, beyond ARMv8.0 (fp, asimd).
REQUIRED_FEATURES: dict[str, tuple[str, ...]] = {v.name: v.features for v in _ARM.variants}
# Linux arm64 AT_HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h).
HWCAP_BITS: dict[str, int] = {name: 1 << bit for name, bit in _ARM.hwcap_bits.items()}

# qemu-aarch64 CPU models useful as stand-ins (emulate --cpu). cortex-a76 is the nearest
# model qemu 7.x has to the Snapdragon 865's Cortex-A77 (same ARMv8.2 feature set:
# dotprod, fp16, no i8mm); cortex-a53 is the ARMv8.0 little core of older phones.
QEMU_CPU_MODELS: dict[str, str] = {
    "cortex-a76": "ARMv8.2 + dotprod + fp16 (Snapdragon 865 stand-in)",
    "neoverse-n1": "ARMv8.2 + dotprod + fp16",
    "cortex-a53": "ARMv8.0 (no dotprod, no fp16)",
    "cortex-a57": "ARMv8.0",
    "cortex-a72": "ARMv8.0",
    "a64fx": "ARMv8.2 + fp16 + SVE, no dotprod",
    "max": "every feature qemu implements",
}


@dataclass(frozen=True)
class CpuFeatures:
    """Features present on every core, and where they were read from."""

    features: frozenset[str]
    source: str
    n_cores: int = 0

    def has(self, *names: str) -> bool:
        return all(n in self.features for n in names)


def features_from_cpuinfo(cpuinfo_text: str, arch: str = "aarch64") -> CpuFeatures | None:
    """Intersection of the feature lines (ARM ``Features``, x86 ``flags``) of a /proc/cpuinfo
    text, or None if it has none."""
    key = arch_table(arch).cpuinfo_key.lower()
    common: set[str] | None = None
    n = 0
    for line in cpuinfo_text.splitlines():
        k, sep, value = line.partition(":")
        if not sep or k.strip().lower() != key:
            continue
        n += 1
        words = set(value.split())
        common = words if common is None else common & words
    if common is None:
        return None
    return CpuFeatures(frozenset(common), "/proc/cpuinfo", n)


def features_from_hwcap(hwcap: int) -> CpuFeatures:
    names = frozenset(name for name, bit in HWCAP_BITS.items() if hwcap & bit)
    return CpuFeatures(names, "AT_HWCAP")


def variant_runs(feats: CpuFeatures | None, v: Variant) -> bool:
    """Whether a CPU with these features (None: unreadable) may run variant `v`."""
    return not v.features or (feats is not None and feats.has(*v.features))


_runs = variant_runs


def supported_variants(feats: CpuFeatures | None, arch: str = "aarch64") -> list[str]:
    """Variants this CPU can run, best first (on ARM always ends with the baseline)."""
    return [v.name for v in arch_table(arch).variants if _runs(feats, v)]


def describe(feats: CpuFeatures | None, arch: str = "aarch64") -> str:
    """"<source>: f1=yes f2=no ..." over every feature of the arch's table (as fe-dispatch)."""
    tbl = arch_table(arch)
    if feats is None:
        hw = "no AT_HWCAP, " if tbl.hwcap_bits else ""
        return f"CPU features unreadable ({hw}no {tbl.cpuinfo_key} line in /proc/cpuinfo)"
    flags = " ".join(f"{n}={'yes' if n in feats.features else 'no'}" for n in tbl.features)
    return f"{feats.source}: {flags}"


_describe = describe  # the old private name


def choose(feats: CpuFeatures | None, available: tuple[str, ...] | list[str] | None = None,
           arch: str = "aarch64") -> tuple[str, str]:
    """(variant, reason) for these features, among `available` builds (default: all).

    The reason is "<describe()> -> <verdict>[; <v> supported but not installed]", the verdict
    being the chosen variant's `present` text preceded by "<absent>, " of the first better
    variant whose features are missing: the same words fe-dispatch prints.
    """
    tbl = arch_table(arch)
    avail = tuple(v.name for v in tbl.variants) if available is None else tuple(available)
    desc = describe(feats, arch)
    skipped = ""
    better_missing: Variant | None = None
    for v in tbl.variants:
        if not _runs(feats, v):
            if feats is not None and better_missing is None:
                better_missing = v
            continue
        if v.name not in avail:
            skipped = skipped or f"; {v.name} supported but not installed"
            continue
        verdict = f"{better_missing.absent}, {v.present}" if better_missing else v.present
        return v.name, f"{desc} -> {verdict}{skipped}"
    raise ValueError(f"no runnable variant among {list(avail)} ({desc})")


def choose_variant(cpuinfo_text: str | None = None, hwcap: int | None = None,
                   available: tuple[str, ...] | list[str] | None = None,
                   arch: str = "aarch64") -> tuple[str, str]:
    """(variant, reason) for a CPU described by its /proc/cpuinfo text or (ARM) its AT_HWCAP.

    HWCAP wins when both are given and non-zero (it is what fe-dispatch reads first). An
    unreadable ARM CPU gets the baseline: it runs everywhere. (x86: the baseline needs AVX2,
    so an unreadable x86 CPU gets ValueError.)
    """
    feats = None
    if hwcap and normalize_arch(arch) == "aarch64":
        feats = features_from_hwcap(hwcap)
    elif cpuinfo_text is not None:
        feats = features_from_cpuinfo(cpuinfo_text, arch)
    return choose(feats, available, arch)


# ---------------------------------------------------------------- which library to load

def checkout_key(root: Path | None = None) -> str:
    """The key of this checkout in the native build cache (<cache>/native/<target>-<key>)."""
    root = root or Path(__file__).resolve().parent.parent
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]


def _cache_dir() -> Path:
    env = os.environ.get("FINLLM_EDGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "finllm-edge"


def library_candidates(variant: Variant) -> list[Path]:
    """Where a variant's library may be, in search order: the package, then the build cache."""
    return [PACKAGE_LIB_DIR / variant.name / LIB_NAME,
            _cache_dir() / "native" / f"{variant.target}-{checkout_key()}" / "lib" / LIB_NAME]


def built_libraries(arch: str | None = None) -> dict[str, Path]:
    """{variant: first existing library} for every variant of `arch` (default: this machine's)."""
    out = {}
    for v in arch_table(arch).variants:
        found = next((p for p in library_candidates(v) if p.is_file()), None)
        if found:
            out[v.name] = found
    return out


def _read_host_cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None


def host_features(arch: str | None = None, cpuinfo_text: str | None = None) -> CpuFeatures | None:
    """Features of this machine (every core), from /proc/cpuinfo (or the given text)."""
    text = _read_host_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    return None if text is None else features_from_cpuinfo(text, arch or platform.machine())


@dataclass(frozen=True)
class LibraryChoice:
    path: Path
    variant: str | None      # None when FINLLM_EDGE_LIB forced a file
    reason: str


def choose_library(variant: str | None = None, *, cpuinfo_text: str | None = None,
                   arch: str | None = None) -> LibraryChoice:
    """The libfinllm_edge.so to load, and why. See library_path()."""
    forced = os.environ.get("FINLLM_EDGE_LIB")
    if forced:
        p = Path(forced).expanduser()
        if not p.is_file():
            raise NativeLibraryError(f"FINLLM_EDGE_LIB={forced} does not exist; unset it or point it at a "
                                     f"built {LIB_NAME}")
        return LibraryChoice(p.resolve(), None, "FINLLM_EDGE_LIB")
    tbl = arch_table(arch)
    feats = host_features(tbl.arch, cpuinfo_text)
    built = built_libraries(tbl.arch)
    wanted = variant or os.environ.get("FINLLM_EDGE_VARIANT") or None
    if wanted:
        try:
            v = tbl.variant(wanted)
        except KeyError:
            raise NativeLibraryError(
                f"FINLLM_EDGE_VARIANT={wanted} is not a {tbl.arch} variant; known: "
                f"{', '.join(v.name for v in tbl.variants)}") from None
        if not _runs(feats, v):
            missing = [f for f in v.features if feats is None or f not in feats.features]
            raise NativeLibraryError(
                f"variant {v.name} refused: this CPU lacks {' '.join(missing)} ({describe(feats, tbl.arch)}); "
                f"it would die of SIGILL. Unset FINLLM_EDGE_VARIANT to get the best variant this CPU runs")
        if v.name not in built:
            raise NativeLibraryError(
                f"variant {v.name} is not built (looked in {', '.join(map(str, library_candidates(v)))}); "
                f"run `finllm-edge native build --target {v.target}`")
        return LibraryChoice(built[v.name], v.name, f"FINLLM_EDGE_VARIANT ({describe(feats, tbl.arch)})")
    if not built:
        raise NativeLibraryError(
            f"no {LIB_NAME} is built for {tbl.arch} (looked in {PACKAGE_LIB_DIR}/<variant>/ and "
            f"{_cache_dir() / 'native'}); run `finllm-edge native build` "
            f"(targets: {', '.join(v.target for v in tbl.variants)})")
    try:
        name, reason = choose(feats, tuple(built), tbl.arch)
    except ValueError as e:
        raise NativeLibraryError(f"none of the built variants ({', '.join(built)}) runs on this CPU: {e}; "
                                 f"set FINLLM_EDGE_LIB to a library built for it") from None
    return LibraryChoice(built[name], name, reason)


def library_path(variant: str | None = None, *, cpuinfo_text: str | None = None,
                 arch: str | None = None) -> Path:
    """Path of the libfinllm_edge.so the Python binding should load on this machine.

    - ``FINLLM_EDGE_LIB=/path/libfinllm_edge.so`` forces a file;
    - ``variant`` or ``FINLLM_EDGE_VARIANT=<variant or target name>`` asks for one variant,
      refused (NativeLibraryError) when this CPU lacks its features or it is not built;
    - otherwise the best variant this CPU runs among those built.
    Libraries are looked up in ``finllm_edge/_lib/<variant>/`` (copied there by
    ``finllm-edge native build``; a wheel carries them), then in the build cache.
    """
    return choose_library(variant, cpuinfo_text=cpuinfo_text, arch=arch).path
