"""The one pinned llama.cpp: the llama-cpp-python release whose sdist carries vendor/llama.cpp.

The same pin drives the Python wheel (pyproject.toml) and the native/ build.
Change all three values together, and the pin in pyproject.toml.
"""

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_FILENAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/ec/e9/"
    "e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/" + SDIST_FILENAME
)
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

# CMake flags for x86-64 hosts. GGML_NATIVE=ON would pick up AMX on CPUs that report it,
# and ggml's AMX path segfaults in ggml_backend_amx_mul_mat on prompts of more than a few
# tokens. So: no native detection, explicit AVX2/FMA/F16C, AMX off.
X86_SAFE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)

# The AVX-512 host variant (x86-64-avx512-vnni in native/variants.json): the same baseline
# plus AVX-512 F/CD/BW/DQ/VL (GGML_AVX512) and VNNI; VBMI, BF16, AVX-VNNI and AMX off, so
# the CPU features it needs are exactly those the variant table lists (tested).
X86_AVX512_CMAKE_ARGS = X86_SAFE_CMAKE_ARGS + (
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_VBMI=OFF",
    "-DGGML_AVX512_BF16=OFF",
    "-DGGML_AVX_VNNI=OFF",
)

# The llama-cpp-python wheel: the same x86 flags (bootstrap keys its wheel cache on these).
WHEEL_CMAKE_ARGS = X86_SAFE_CMAKE_ARGS + ("-DLLAVA_BUILD=OFF",)
