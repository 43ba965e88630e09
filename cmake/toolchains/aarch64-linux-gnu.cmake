# Cross toolchain: Debian's aarch64-linux-gnu gcc (apt: gcc-aarch64-linux-gnu
# g++-aarch64-linux-gnu). Executables are linked statically (FE_STATIC_EXE / -static) so
# qemu-aarch64 runs them without a sysroot. The CPU variant comes from
# -DGGML_CPU_ARM_ARCH=... (llama.cpp stage) and -DFE_VARIANT=... (our stage).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER   aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_AR           aarch64-linux-gnu-ar CACHE FILEPATH "")
set(CMAKE_RANLIB       aarch64-linux-gnu-ranlib CACHE FILEPATH "")
set(CMAKE_STRIP        aarch64-linux-gnu-strip CACHE FILEPATH "")

set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
endif()

# llama.cpp without OpenMP (ggml's own thread pool), as in the Android NDK build
# (android-arm64.cmake, llama.cpp docs/android.md): for -static executables FindOpenMP
# hands the linker libgomp.so ("attempted static link of dynamic object"), and the
# linux-aarch64 bundle that phones run over adb should thread like the NDK build.
# A -DGGML_OPENMP=ON on the command line still wins.
set(GGML_OPENMP OFF CACHE BOOL "ggml: use OpenMP")
