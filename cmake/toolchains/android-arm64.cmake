# Android arm64-v8a with the NDK, API level 28 (Android 9), for the same two CPU variants
# as linux-aarch64. The NDK is NOT installed on the finllm-edge build machines: this file is
# written for users who have it, and nothing here was built with it (see the README).
#
#   export ANDROID_NDK=$HOME/Android/Sdk/ndk/27.2.12479018      # any NDK r23 or newer
#   # llama.cpp (stage 1) for one variant, then native/ against it (stage 2):
#   finllm-edge native build --target android-arm64-dotprod       # or android-arm64-armv8
#   # or by hand:
#   cmake -S ~/.cache/finllm-edge/src/llama.cpp-0.3.36 -B build-llama-android \
#         -DCMAKE_TOOLCHAIN_FILE=$PWD/cmake/toolchains/android-arm64.cmake \
#         -DFE_ARM_VARIANT=armv8.2-a+dotprod+fp16 -DBUILD_SHARED_LIBS=OFF
#
# Options (cache variables, set them with -D):
#   FE_ARM_VARIANT     armv8.2-a+dotprod+fp16 (Snapdragon 865 class; default) | armv8-a
#   ANDROID_PLATFORM   android-28 by default (minSdk 28; AT_HWCAP/getauxval exist since 18)
#   ANDROID_STL        c++_static by default (one self-contained .so per variant)
#
# What it sets for llama.cpp (only when the caller did not): GGML_NATIVE=OFF (the host is
# not the phone), GGML_CPU_ARM_ARCH=${FE_ARM_VARIANT}, GGML_OPENMP=OFF (the NDK's libomp
# is not installed by CMake, llama.cpp docs/android.md), GGML_LLAMAFILE=OFF,
# LLAMA_OPENSSL=OFF (not in the NDK's stable API set).

if(NOT DEFINED ANDROID_NDK OR ANDROID_NDK STREQUAL "")
  if(DEFINED ENV{ANDROID_NDK} AND NOT "$ENV{ANDROID_NDK}" STREQUAL "")
    set(ANDROID_NDK "$ENV{ANDROID_NDK}")
  elseif(DEFINED ENV{ANDROID_NDK_HOME} AND NOT "$ENV{ANDROID_NDK_HOME}" STREQUAL "")
    set(ANDROID_NDK "$ENV{ANDROID_NDK_HOME}")
  endif()
endif()
set(_fe_ndk_toolchain "${ANDROID_NDK}/build/cmake/android.toolchain.cmake")
if(NOT ANDROID_NDK OR NOT EXISTS "${_fe_ndk_toolchain}")
  message(FATAL_ERROR
    "android-arm64: the Android NDK was not found (ANDROID_NDK='${ANDROID_NDK}'). "
    "Install it (Android Studio > SDK Manager > NDK, or sdkmanager \"ndk;27.2.12479018\") "
    "and export ANDROID_NDK=<path to the NDK root>.")
endif()

set(ANDROID_ABI "arm64-v8a" CACHE STRING "Android ABI (finllm-edge supports arm64-v8a only)")
set(ANDROID_PLATFORM "android-28" CACHE STRING "minimum Android API level")
set(ANDROID_STL "c++_static" CACHE STRING "C++ runtime")
if(NOT ANDROID_ABI STREQUAL "arm64-v8a")
  message(FATAL_ERROR "android-arm64: ANDROID_ABI must be arm64-v8a, got ${ANDROID_ABI}")
endif()

# try_compile() projects re-read this file: hand them what it was given.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ANDROID_NDK FE_ARM_VARIANT)

include("${_fe_ndk_toolchain}")

set(FE_ARM_VARIANT "armv8.2-a+dotprod+fp16" CACHE STRING
    "CPU variant: armv8.2-a+dotprod+fp16 | armv8-a")
set_property(CACHE FE_ARM_VARIANT PROPERTY STRINGS "armv8.2-a+dotprod+fp16" "armv8-a")
if(NOT FE_ARM_VARIANT MATCHES "^(armv8\\.2-a\\+dotprod\\+fp16|armv8-a)$")
  message(FATAL_ERROR "android-arm64: unknown FE_ARM_VARIANT '${FE_ARM_VARIANT}'")
endif()

# Defaults for llama.cpp's options; a -D on the command line still wins.
set(GGML_NATIVE OFF CACHE BOOL "host CPU detection (never for cross builds)")
set(GGML_CPU_ARM_ARCH "${FE_ARM_VARIANT}" CACHE STRING "ggml: CPU architecture for ARM")
set(GGML_OPENMP OFF CACHE BOOL "ggml: use OpenMP")
set(GGML_LLAMAFILE OFF CACHE BOOL "ggml: use llamafile SGEMM")
set(LLAMA_OPENSSL OFF CACHE BOOL "llama: use OpenSSL")
