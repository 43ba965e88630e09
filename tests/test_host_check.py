import pytest

from finllm_edge.lab.host_check import (
    UnsafeBuildError,
    amx_compiled_in,
    check_llama_build,
    ensure_safe_llama_cpp_python,
)

AMX_CPUINFO = "processor : 0\nflags : fpu sse avx2 amx_bf16 amx_tile amx_int8\n"
PLAIN_CPUINFO = "processor : 0\nflags : fpu sse avx2 fma f16c\n"
AMX_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | OPENMP = 1 |"
SAFE_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 |"


def test_amx_build_on_amx_host_is_refused_with_the_fix():
    with pytest.raises(UnsafeBuildError, match="GGML_NATIVE=OFF"):
        check_llama_build(AMX_BUILD, AMX_CPUINFO)


@pytest.mark.parametrize("build,cpu",
                         [(SAFE_BUILD, AMX_CPUINFO), (AMX_BUILD, PLAIN_CPUINFO), (SAFE_BUILD, PLAIN_CPUINFO)])
def test_safe_combinations_pass(build, cpu):
    check_llama_build(build, cpu)


def test_amx_detection_reads_values_not_names():
    assert amx_compiled_in(AMX_BUILD)
    assert not amx_compiled_in("CPU : AMX_INT8 = 0 | AVX2 = 1")


def test_installed_llama_cpp_python_is_amx_safe():
    # scripts/bootstrap.sh builds the wheel with AMX off; this fails if someone swaps it.
    ensure_safe_llama_cpp_python()
