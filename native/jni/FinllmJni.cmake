# CMake helpers for the JNI library of finllm-edge (libfinllm_jni*.so), shared by
#   - native/jni/CMakeLists.txt          (the normal build: host, linux-aarch64-*), and
#   - android_demo/app/src/main/cpp/      (the Android superbuild: two CPU variants in one
#                                          CMake project, built by Gradle/AGP with the NDK).
#
# Library names by CPU variant (FinLlm.java picks one at run time from /proc/cpuinfo):
#   ""                      -> finllm_jni          (x86-64 host)
#   armv8.2-a+dotprod+fp16  -> finllm_jni_dotprod  (Cortex-A55/A75/A76/A77, Snapdragon 865)
#   armv8-a                 -> finllm_jni_armv8    (every arm64 CPU)

get_filename_component(FE_JNI_DIR "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
get_filename_component(FE_NATIVE_DIR "${FE_JNI_DIR}/.." ABSOLUTE)

# fe_jni_library_name(<variant> <out-var>)
function(fe_jni_library_name variant out)
  if(variant STREQUAL "" OR variant MATCHES "^x86-64")
    set(name finllm_jni)  # desktop JVMs (tests): FinLlm.LIB_HOST, whichever x86 variant built it
  elseif(variant STREQUAL "armv8.2-a+dotprod+fp16")
    set(name finllm_jni_dotprod)
  elseif(variant STREQUAL "armv8-a")
    set(name finllm_jni_armv8)
  else()
    string(MAKE_C_IDENTIFIER "${variant}" id)
    set(name finllm_jni_${id})
  endif()
  set(${out} ${name} PARENT_SCOPE)
endfunction()

# fe_jni_find_headers(<found-var> <include-dirs-var>)
# Android: the NDK sysroot has jni.h (nothing to add). Elsewhere: a JDK's include/ and
# include/linux (jni_md.h). jni.h is architecture-independent and the Linux jni_md.h is
# the same for x86-64 and aarch64, so the host JDK serves cross builds too; the search
# ignores CMAKE_FIND_ROOT_PATH for that reason.
function(fe_jni_find_headers found_var dirs_var)
  if(ANDROID OR CMAKE_SYSTEM_NAME STREQUAL "Android")
    set(${found_var} TRUE PARENT_SCOPE)
    set(${dirs_var} "" PARENT_SCOPE)
    return()
  endif()
  set(hints)
  if(DEFINED ENV{JAVA_HOME} AND NOT "$ENV{JAVA_HOME}" STREQUAL "")
    list(APPEND hints "$ENV{JAVA_HOME}/include")
  endif()
  file(GLOB jvm_includes LIST_DIRECTORIES true "/usr/lib/jvm/*/include")
  list(SORT jvm_includes)
  list(REVERSE jvm_includes)
  find_path(FE_JNI_INCLUDE_DIR jni.h
    HINTS ${hints}
    PATHS /usr/lib/jvm/default-java/include /usr/lib/jvm/java-17-openjdk-amd64/include ${jvm_includes}
    NO_CMAKE_FIND_ROOT_PATH
    DOC "directory of the JDK's jni.h")
  if(FE_JNI_INCLUDE_DIR AND EXISTS "${FE_JNI_INCLUDE_DIR}/linux/jni_md.h")
    set(${found_var} TRUE PARENT_SCOPE)
    set(${dirs_var} "${FE_JNI_INCLUDE_DIR};${FE_JNI_INCLUDE_DIR}/linux" PARENT_SCOPE)
  elseif(FE_JNI_INCLUDE_DIR AND EXISTS "${FE_JNI_INCLUDE_DIR}/jni_md.h")
    set(${found_var} TRUE PARENT_SCOPE)
    set(${dirs_var} "${FE_JNI_INCLUDE_DIR}" PARENT_SCOPE)
  else()
    set(${found_var} FALSE PARENT_SCOPE)
    set(${dirs_var} "" PARENT_SCOPE)
  endif()
endfunction()

# fe_jni_c_api_sources(<out-var>): the C API sources, absolute paths, read from the
# `set(FE_SOURCES ...)` list in native/CMakeLists.txt (the one list of them), so the
# Android superbuild compiles exactly what libfinllm_edge is made of.
function(fe_jni_c_api_sources out)
  file(READ "${FE_NATIVE_DIR}/CMakeLists.txt" text)
  string(REGEX MATCH "set\\(FE_SOURCES([^)]*)\\)" m "${text}")
  string(REGEX REPLACE "#[^\n]*" "" body "${CMAKE_MATCH_1}")
  string(REGEX MATCHALL "[^ \t\r\n]+" items "${body}")
  set(srcs)
  foreach(item ${items})
    list(APPEND srcs "${FE_NATIVE_DIR}/${item}")
  endforeach()
  if(NOT srcs)
    message(FATAL_ERROR "could not read set(FE_SOURCES ...) from ${FE_NATIVE_DIR}/CMakeLists.txt")
  endif()
  list(SORT srcs)
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()

# fe_jni_configure(<target> <jni-include-dirs>): flags common to every JNI library.
function(fe_jni_configure target jni_dirs)
  target_include_directories(${target} PRIVATE ${jni_dirs} "${FE_NATIVE_DIR}/include")
  set_target_properties(${target} PROPERTIES
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS "${FE_JNI_DIR}/jni_exports.map")
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  # Only Java_io_finllm_edge_* leaves the library; fe_*, llama.cpp and ggml stay inside,
  # so two variant libraries can never resolve symbols into each other.
  target_link_options(${target} PRIVATE
    "-Wl,--version-script=${FE_JNI_DIR}/jni_exports.map" -Wl,--exclude-libs,ALL -Wl,--no-undefined)
  if(ANDROID OR CMAKE_SYSTEM_NAME STREQUAL "Android")
    # 16 KB page alignment (required for new apps on Android 15+ devices).
    target_link_options(${target} PRIVATE -Wl,-z,max-page-size=16384)
  endif()
endfunction()

# fe_add_jni_variant(<target> VARIANT <arch> LLAMA_VERSION <str>
#                    (LLAMA_PREFIX <dir> | LLAMA_SRC <dir> LLAMA_BUILD_DIR <dir>)
#                    [FE_VERSION <str>] [OPENMP] [DEPENDS <targets...>])
# The Android superbuild path: the whole library (C API compiled for this variant + the
# bridge + that variant's static llama.cpp) as one self-contained shared library. Several
# variants can live in one CMake project because every name is prefixed by <target>.
# llama.cpp comes either from a prefix made by finllm_edge/native/build.py (lib/*.a,
# include/) or from a build tree of the pinned source (an ExternalProject).
function(fe_add_jni_variant target)
  cmake_parse_arguments(A "OPENMP" "VARIANT;LLAMA_PREFIX;LLAMA_SRC;LLAMA_BUILD_DIR;LLAMA_VERSION;FE_VERSION" "DEPENDS" ${ARGN})
  if(NOT A_FE_VERSION)
    set(A_FE_VERSION "0.1.0")
  endif()
  # The core also needs llama.cpp's C++ Jinja engine (common/jinja, chat templates): from the
  # prefix's libllama-common, or compiled here from the source tree (only the files it uses).
  set(common_sources "")
  set(common_libs "")
  if(A_LLAMA_PREFIX)
    set(lib_llama "${A_LLAMA_PREFIX}/lib/libllama.a")
    set(lib_ggml_dir "${A_LLAMA_PREFIX}/lib")
    set(llama_includes "${A_LLAMA_PREFIX}/include" "${A_LLAMA_PREFIX}/include/llama-common")
    set(common_libs "${A_LLAMA_PREFIX}/lib/libllama-common.a" "${A_LLAMA_PREFIX}/lib/libllama-common-base.a")
  elseif(A_LLAMA_SRC AND A_LLAMA_BUILD_DIR)
    set(lib_llama "${A_LLAMA_BUILD_DIR}/src/libllama.a")
    set(lib_ggml_dir "${A_LLAMA_BUILD_DIR}/ggml/src")
    set(llama_includes "${A_LLAMA_SRC}/include" "${A_LLAMA_SRC}/ggml/include" "${A_LLAMA_SRC}/common"
                       "${A_LLAMA_SRC}/vendor")
    foreach(f jinja/lexer.cpp jinja/parser.cpp jinja/runtime.cpp jinja/value.cpp jinja/string.cpp jinja/caps.cpp
              json.cpp unicode.cpp)
      list(APPEND common_sources "${A_LLAMA_SRC}/common/${f}")
    endforeach()
  else()
    message(FATAL_ERROR "fe_add_jni_variant(${target}): give LLAMA_PREFIX, or LLAMA_SRC and LLAMA_BUILD_DIR")
  endif()
  fe_jni_find_headers(found jni_dirs)
  if(NOT found)
    message(FATAL_ERROR "fe_add_jni_variant(${target}): no jni.h (install a JDK or set JAVA_HOME)")
  endif()
  # Static llama.cpp of this variant: llama -> ggml -> ggml-cpu -> ggml-base.
  set(extra ${CMAKE_DL_LIBS})
  find_package(Threads REQUIRED)
  list(APPEND extra Threads::Threads)
  if(A_OPENMP)
    find_package(OpenMP REQUIRED COMPONENTS C CXX)
    list(APPEND extra OpenMP::OpenMP_CXX)
  endif()
  if(UNIX)
    list(APPEND extra m)
  endif()
  set(prev "")
  foreach(lib ggml-base ggml-cpu ggml llama)
    set(imp ${target}_llama_${lib})
    add_library(${imp} STATIC IMPORTED)
    if(lib STREQUAL "llama")
      set_target_properties(${imp} PROPERTIES IMPORTED_LOCATION "${lib_llama}")
    else()
      set_target_properties(${imp} PROPERTIES IMPORTED_LOCATION "${lib_ggml_dir}/lib${lib}.a")
    endif()
    if(prev)
      set_property(TARGET ${imp} PROPERTY INTERFACE_LINK_LIBRARIES ${prev})
    else()
      set_property(TARGET ${imp} PROPERTY INTERFACE_LINK_LIBRARIES ${extra})
    endif()
    set(prev ${imp})
  endforeach()
  set_property(TARGET ${target}_llama_ggml APPEND PROPERTY INTERFACE_LINK_LIBRARIES ${target}_llama_ggml-base)

  fe_jni_c_api_sources(c_api)
  fe_jni_library_name("${A_VARIANT}" libname)
  add_library(${target} SHARED "${FE_JNI_DIR}/finllm_jni.cpp" ${c_api} ${common_sources})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${libname})
  target_include_directories(${target} PRIVATE "${FE_NATIVE_DIR}/src" ${llama_includes})
  # The same definitions as native/CMakeLists.txt gives finllm_edge_obj (the normal build
  # checks that they still match: see native/jni/CMakeLists.txt).
  target_compile_definitions(${target} PRIVATE
    FE_BUILDING_LIB
    FE_VERSION_STR="${A_FE_VERSION}"
    FE_LLAMA_VERSION_STR="${A_LLAMA_VERSION}"
    FE_VARIANT_STR="${A_VARIANT}")
  target_link_libraries(${target} PRIVATE ${common_libs} ${target}_llama_llama)
  fe_jni_configure(${target} "${jni_dirs}")
  if(A_DEPENDS)
    add_dependencies(${target} ${A_DEPENDS})
  endif()
endfunction()
