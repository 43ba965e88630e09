"""Stage `quantize`: F16 GGUF -> Q8_0 / Q4_0 / Q4_K_M ... with upstream llama-quantize (pinned build).

k-quants need rows divisible by 256; SmolLM2 (hidden 576) has many tensors llama-quantize
quantizes with a fallback type instead. `tensor_type_counts` reads the output file and
reports what each tensor really became.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .atomic import commit, partial_name
from .tools import run_tool, upstream_tool


@dataclass(frozen=True)
class QuantType:
    name: str        # our name, lower case: "q4_k_m"
    upstream: str    # llama-quantize's type name: "Q4_K_M"
    note: str


QUANT_TYPES: dict[str, QuantType] = {q.name: q for q in (
    QuantType("q8_0", "Q8_0", "8-bit, blocks of 32; near-lossless"),
    QuantType("q6_k", "Q6_K", "6-bit k-quant"),
    QuantType("q5_k_m", "Q5_K_M", "5-bit k-quant, mixed"),
    QuantType("q5_0", "Q5_0", "5-bit, blocks of 32"),
    QuantType("q4_k_m", "Q4_K_M", "4-bit k-quant, mixed (repacked 8x4 for dotprod on ARM)"),
    QuantType("q4_k_s", "Q4_K_S", "4-bit k-quant, small"),
    QuantType("q4_1", "Q4_1", "4-bit with min, blocks of 32"),
    QuantType("q4_0", "Q4_0", "4-bit, blocks of 32 (repacked 4x4 for dotprod on ARM)"),
)}

_FALLBACK = re.compile(r"fallback", re.I)


def parse_quant_list(text: str) -> list[str]:
    from .errors import ConversionError

    names = [q.strip().lower() for q in text.split(",") if q.strip()]
    bad = [q for q in names if q not in QUANT_TYPES]
    if bad:
        raise ConversionError(f"unknown --quant type(s) {bad}; choose from {', '.join(QUANT_TYPES)}")
    return names


def tensor_type_counts(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    return dict(sorted(Counter(t.tensor_type.name for t in GGUFReader(path).tensors).items()))


def gguf_weight_stats(path: Path) -> dict:
    """Parameters, tensor-data bytes and bits per weight of a GGUF (tensor data only, as llama.cpp reports)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    n = sum(int(t.n_elements) for t in r.tensors)
    b = sum(int(t.n_bytes) for t in r.tensors)
    return {"n_params": n, "tensor_bytes": b, "bits_per_weight": 8.0 * b / n if n else 0.0,
            "file_bytes": Path(path).stat().st_size}


def quantize(src_f16: Path, out: Path, qtype: str, threads: int | None = None, imatrix: Path | None = None,
             extra_args: list[str] | None = None) -> dict:
    """Run llama-quantize; return {"type", "tool", "fallbacks", "tensor_types", ...stats}."""
    q = QUANT_TYPES[qtype]
    tool = upstream_tool("llama-quantize")
    tmp = partial_name(out)
    cmd = [tool, *(extra_args or [])]
    if imatrix:
        cmd += ["--imatrix", imatrix]
    cmd += [src_f16, tmp, q.upstream, str(threads or os.cpu_count() or 2)]
    try:
        proc = run_tool(cmd, f"llama-quantize {q.upstream}")
        commit(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log = (proc.stdout or "") + (proc.stderr or "")
    fallbacks = sum(1 for line in log.splitlines() if _FALLBACK.search(line) and "tensor" in line.lower())
    return {"type": qtype, "upstream_type": q.upstream, "tool": str(tool), "fallback_tensors": fallbacks,
            "tensor_types": tensor_type_counts(out), **gguf_weight_stats(out)}


def compute_imatrix(src_f16: Path, calib: Path, out: Path, threads: int | None = None, n_ctx: int = 256) -> Path:
    """llama.cpp's importance matrix (upstream llama-imatrix) of `src_f16` over the calibration text."""
    tool = upstream_tool("llama-imatrix")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(out)
    try:
        run_tool([tool, "-m", src_f16, "-f", calib, "-o", tmp, "-c", str(n_ctx), "-b", str(n_ctx),
                  "-t", str(threads or os.cpu_count() or 2)], "llama-imatrix")
        commit(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
