"""Upstream llama.cpp tools built from the pinned tree (finllm_edge.native.build)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import ToolError


def upstream_tool(name: str) -> Path:
    """Path of an upstream tool (llama-quantize, llama-perplexity, ...) built from the pinned tree.

    These are the files `finllm_edge.native.build.ensure_built("host").tools` points at: they live in
    the stage-1 llama.cpp prefix, so only that stage is required (a no-op once built; it builds under
    the shared heavy lock otherwise). $FINLLM_EDGE_LLAMA_BIN overrides the folder.
    """
    override = os.environ.get("FINLLM_EDGE_LLAMA_BIN")
    if override:
        path = Path(override) / name
    else:
        from finllm_edge.errors import NativeBuildError
        from finllm_edge.native import build
        from finllm_edge.native.targets import get_target

        try:
            path = Path(build.build_llama(get_target("host"))) / "bin" / name
        except NativeBuildError as exc:
            raise ToolError(f"the pinned llama.cpp tools could not be built: {exc}") from exc
    if not path.exists():
        raise ToolError(f"{name} not found at {path}; run `finllm-edge native build` (it builds the upstream tools)")
    return path


def run_tool(cmd: list, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-25:])
        raise ToolError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc
