"""Refuse the llama.cpp build that crashes on this host before it can crash.

ggml's AMX kernels (compiled in by GGML_NATIVE=ON on a CPU that reports AMX, and by
llama-cpp-python's default build there) segfault in ggml_backend_amx_mul_mat on prompts
longer than a few tokens. finllm-edge builds everything with AMX off; this check catches
a llama-cpp-python that was installed some other way.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from finllm_edge import pins
from finllm_edge.errors import FinLLMEdgeError


class UnsafeBuildError(FinLLMEdgeError, RuntimeError):
    pass


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def amx_compiled_in(system_info: str) -> bool:
    """True when llama.cpp's system-info line says an AMX kernel is built in."""
    for part in system_info.split("|"):
        key, _, value = part.partition("=")
        if key.strip().startswith("AMX") and value.strip() == "1":
            return True
    return False


def check_llama_build(system_info: str, cpuinfo: str | None = None) -> None:
    """Raise UnsafeBuildError when an AMX-enabled llama.cpp would run on an AMX host."""
    if amx_compiled_in(system_info) and any(f.startswith("amx") for f in cpu_flags(cpuinfo)):
        raise UnsafeBuildError(
            "this llama-cpp-python was built with ggml's AMX kernels and this CPU reports AMX: "
            "that path segfaults on prompts longer than a few tokens. Reinstall it AMX-safe: "
            f'CMAKE_ARGS="{" ".join(pins.X86_SAFE_CMAKE_ARGS)}" pip install --force-reinstall '
            f"--no-binary llama-cpp-python llama-cpp-python=={pins.LLAMA_CPP_PYTHON_VERSION} "
            "(scripts/bootstrap.sh does this for you)."
        )


@lru_cache(maxsize=1)
def ensure_safe_llama_cpp_python() -> None:
    """Check the installed llama-cpp-python once per process."""
    from llama_cpp import llama_cpp as _ll

    check_llama_build(_ll.llama_print_system_info().decode(errors="replace"))
