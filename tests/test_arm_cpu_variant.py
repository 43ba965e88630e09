"""CPU-variant choice in Python (finllm_edge.cpu_variant), the twin of native/dispatch/fe-dispatch.c.

Pure Python: no build, no qemu. The launcher itself is checked against this module under
qemu in test_arm_emulated.py.
"""

from __future__ import annotations

import pytest

from finllm_edge.cpu_variant import (
    HWCAP_BITS,
    VARIANT_BASE,
    VARIANT_DOTPROD,
    choose,
    choose_variant,
    features_from_cpuinfo,
    features_from_hwcap,
    supported_variants,
)

# Kryo 585 (Snapdragon 865): 4x Cortex-A77 + 4x Cortex-A55, as `adb shell cat /proc/cpuinfo` shows it.
SD865_CORE = (
    "processor\t: {i}\nBogoMIPS\t: 38.40\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
    "CPU implementer\t: 0x51\nCPU architecture: 8\nCPU variant\t: 0xd\nCPU part\t: {part}\nCPU revision\t: 14\n\n"
)
SD865 = ("".join(SD865_CORE.format(i=i, part="0x805" if i < 4 else "0x804") for i in range(8))
         + "Hardware\t: Qualcomm Technologies, Inc KONA\n")

# Snapdragon 625 class: 8x Cortex-A53, ARMv8.0.
A53_CORE = (
    "processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd03\nCPU revision\t: 4\n\n"
)
A53 = "".join(A53_CORE.format(i=i) for i in range(8))


def test_snapdragon_865_gets_dotprod():
    variant, reason = choose_variant(SD865)
    assert variant == VARIANT_DOTPROD
    assert reason == "/proc/cpuinfo: asimddp=yes fphp=yes asimdhp=yes -> dot product and fp16 present"
    feats = features_from_cpuinfo(SD865)
    assert feats is not None and feats.n_cores == 8


def test_cortex_a53_gets_baseline():
    variant, reason = choose_variant(A53)
    assert variant == VARIANT_BASE
    assert "asimddp=no" in reason and "missing dot product/fp16" in reason


def test_mixed_cores_use_the_weakest():
    # A big core with dotprod next to a little core without it: threads migrate, so baseline.
    mixed = SD865_CORE.format(i=0, part="0x805") + A53_CORE.format(i=1)
    assert choose_variant(mixed)[0] == VARIANT_BASE


def test_dotprod_without_fp16_is_baseline():
    # The variant is compiled with +fp16 as well: dot product alone is not enough.
    text = "processor : 0\nFeatures : fp asimd asimddp\n"
    assert choose_variant(text)[0] == VARIANT_BASE


def test_feature_words_match_whole_words_only():
    # "asimddp" must not be found inside another word, nor "fphp" inside "asimdfphpx".
    text = "processor : 0\nFeatures : fp asimd asimddpx xfphp asimdhpz\n"
    feats = features_from_cpuinfo(text)
    assert feats is not None and not feats.has("asimddp") and not feats.has("fphp")
    assert choose_variant(text)[0] == VARIANT_BASE


def test_unreadable_cpu_gets_baseline():
    variant, reason = choose_variant("")
    assert variant == VARIANT_BASE
    assert "unreadable" in reason
    assert features_from_cpuinfo("Hardware : x\n") is None
    assert supported_variants(None) == [VARIANT_BASE]


def test_hwcap_bits():
    # qemu-aarch64 -cpu cortex-a76 reports AT_HWCAP 0x119ffb, -cpu cortex-a53 0x8fb (measured).
    assert choose_variant(hwcap=0x119FFB)[0] == VARIANT_DOTPROD
    assert choose_variant(hwcap=0x8FB)[0] == VARIANT_BASE
    # a64fx: fp16 and SVE but no dot product
    assert choose_variant(hwcap=0x415FFB)[0] == VARIANT_BASE
    assert features_from_hwcap(HWCAP_BITS["asimddp"] | HWCAP_BITS["fphp"]).features == {"asimddp", "fphp"}
    # HWCAP wins over a cpuinfo text that says otherwise (fe-dispatch reads HWCAP first)
    assert choose_variant(A53, hwcap=0x119FFB)[0] == VARIANT_DOTPROD


def test_installed_variants_limit_the_choice():
    variant, reason = choose_variant(SD865, available=[VARIANT_BASE])
    assert variant == VARIANT_BASE
    assert reason.endswith(f"; {VARIANT_DOTPROD} supported but not installed")
    with pytest.raises(ValueError):
        choose(features_from_cpuinfo(A53), available=[VARIANT_DOTPROD])
