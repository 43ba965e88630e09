"""Which ARM build variant a CPU can run: the Python twin of native/dispatch/fe-dispatch.c.

Two variants exist for aarch64 (Linux and Android):

- ``armv8.2-a+dotprod+fp16``: Snapdragon 865 class (Cortex-A77 + A55) and any core with
  the ARMv8.2 dot product (SDOT/UDOT) and half-precision arithmetic;
- ``armv8-a``: the ARMv8.0 baseline (Cortex-A53/A57/A72, ...), so no phone dies of SIGILL.

The rule: the dotprod variant needs ``asimddp``, ``fphp`` and ``asimdhp`` on *every* core
(big.LITTLE phones list features per core; the weakest core decides, since a thread may
migrate onto it). Features come from the ``Features`` lines of ``/proc/cpuinfo`` (what
``adb shell cat /proc/cpuinfo`` prints) or from the ``AT_HWCAP`` bits.

    >>> from finllm_edge.cpu_variant import choose_variant
    >>> choose_variant("processor : 0\\nFeatures : fp asimd asimddp fphp asimdhp\\n")[0]
    'armv8.2-a+dotprod+fp16'
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANT_DOTPROD = "armv8.2-a+dotprod+fp16"
VARIANT_BASE = "armv8-a"

# Best first: the first variant whose features are all present is chosen.
VARIANTS: tuple[str, ...] = (VARIANT_DOTPROD, VARIANT_BASE)

# Features (cpuinfo names) each variant's code may use, beyond ARMv8.0 (fp, asimd).
REQUIRED_FEATURES: dict[str, tuple[str, ...]] = {
    VARIANT_DOTPROD: ("asimddp", "fphp", "asimdhp"),
    VARIANT_BASE: (),
}

# Linux arm64 AT_HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h).
HWCAP_BITS: dict[str, int] = {
    "fp": 1 << 0,
    "asimd": 1 << 1,
    "fphp": 1 << 9,
    "asimdhp": 1 << 10,
    "asimddp": 1 << 20,
}

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


def features_from_cpuinfo(cpuinfo_text: str) -> CpuFeatures | None:
    """Intersection of the ``Features`` lines of a /proc/cpuinfo text, or None if it has none."""
    common: set[str] | None = None
    n = 0
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or key.strip().lower() != "features":
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


def supported_variants(feats: CpuFeatures | None) -> list[str]:
    """Variants this CPU can run, best first (always ends with the baseline)."""
    out = []
    for v in VARIANTS:
        req = REQUIRED_FEATURES[v]
        if not req or (feats is not None and feats.has(*req)):
            out.append(v)
    return out


def _describe(feats: CpuFeatures | None) -> str:
    if feats is None:
        return "CPU features unreadable (no Features line in the cpuinfo text)"
    flags = " ".join(f"{n}={'yes' if n in feats.features else 'no'}" for n in REQUIRED_FEATURES[VARIANT_DOTPROD])
    return f"{feats.source}: {flags}"


def choose(feats: CpuFeatures | None, available: tuple[str, ...] | list[str] | None = None) -> tuple[str, str]:
    """(variant, reason) for these features, among `available` builds (default: all)."""
    avail = tuple(VARIANTS if available is None else available)
    desc = _describe(feats)
    skipped = ""
    for v in supported_variants(feats):
        if v not in avail:
            skipped = skipped or f"; {v} supported but not installed"
            continue
        if REQUIRED_FEATURES[v]:
            return v, f"{desc} -> dot product and fp16 present{skipped}"
        if feats is not None and not feats.has(*REQUIRED_FEATURES[VARIANT_DOTPROD]):
            return v, f"{desc} -> missing dot product/fp16, baseline{skipped}"
        return v, f"{desc} -> baseline{skipped}"
    raise ValueError(f"no runnable variant among {list(avail)} ({desc})")


def choose_variant(cpuinfo_text: str | None = None, hwcap: int | None = None,
                   available: tuple[str, ...] | list[str] | None = None) -> tuple[str, str]:
    """(variant, reason) for a CPU described by its /proc/cpuinfo text or its AT_HWCAP.

    HWCAP wins when both are given and non-zero (it is what fe-dispatch reads first). An
    unreadable CPU gets the baseline: it runs everywhere.
    """
    feats = None
    if hwcap:
        feats = features_from_hwcap(hwcap)
    elif cpuinfo_text is not None:
        feats = features_from_cpuinfo(cpuinfo_text)
    return choose(feats, available)
