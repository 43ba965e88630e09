# Imported targets for the static llama.cpp libraries in FE_LLAMA_PREFIX (built by
# finllm_edge/native/build.py, stage 1).
#   fe::llama_common  llama.cpp's common library: Jinja engine (common/jinja), chat.h,
#                     json-schema-to-grammar, nlohmann json. Include dirs:
#                     <prefix>/include/llama-common ("common.h", "jinja/runtime.h", ...) and
#                     <prefix>/include (<nlohmann/json.hpp>). Links llama-common ->
#                     llama-common-base -> llama.
#   fe::llama         fe::llama_common + llama -> ggml -> ggml-cpu -> ggml-base.
# The archives are static: only the objects our code references are linked in, so common's
# HTTP/download code (cpp-httplib) never reaches libfinllm_edge.
if(NOT FE_LLAMA_PREFIX OR NOT EXISTS "${FE_LLAMA_PREFIX}/include/llama.h")
  message(FATAL_ERROR "FE_LLAMA_PREFIX='${FE_LLAMA_PREFIX}' has no include/llama.h; "
                      "run `finllm-edge native build --target host` (it builds llama.cpp and passes the prefix)")
endif()
if(NOT EXISTS "${FE_LLAMA_PREFIX}/lib/libllama-common.a" OR NOT EXISTS "${FE_LLAMA_PREFIX}/include/llama-common/jinja/runtime.h")
  message(FATAL_ERROR "FE_LLAMA_PREFIX='${FE_LLAMA_PREFIX}' predates llama.cpp's common library in the prefix "
                      "(stage-1 layout 2); run `finllm-edge native build` again (it rebuilds the prefix)")
endif()

find_package(Threads REQUIRED)
set(_fe_llama_extra Threads::Threads ${CMAKE_DL_LIBS})
if(FE_LLAMA_OPENMP)
  find_package(OpenMP REQUIRED COMPONENTS C CXX)
  list(APPEND _fe_llama_extra OpenMP::OpenMP_CXX)
endif()
if(UNIX)
  list(APPEND _fe_llama_extra m)
endif()

set(_fe_prev "")
foreach(_lib ggml-base ggml-cpu ggml llama llama-common-base llama-common)
  set(_tgt fe_llama_${_lib})
  add_library(${_tgt} STATIC IMPORTED)
  set_target_properties(${_tgt} PROPERTIES IMPORTED_LOCATION "${FE_LLAMA_PREFIX}/lib/lib${_lib}.a")
  if(_fe_prev)
    set_property(TARGET ${_tgt} PROPERTY INTERFACE_LINK_LIBRARIES ${_fe_prev})
  else()
    set_property(TARGET ${_tgt} PROPERTY INTERFACE_LINK_LIBRARIES ${_fe_llama_extra})
  endif()
  set(_fe_prev ${_tgt})
endforeach()
# libggml.a (the backend registry) references both ggml-cpu and ggml-base.
set_property(TARGET fe_llama_ggml APPEND PROPERTY INTERFACE_LINK_LIBRARIES fe_llama_ggml-base)
# libllama-common.a references llama and ggml directly, not only through llama-common-base.
set_property(TARGET fe_llama_llama-common APPEND PROPERTY INTERFACE_LINK_LIBRARIES fe_llama_llama)

add_library(fe::llama_common INTERFACE IMPORTED)
set_target_properties(fe::llama_common PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${FE_LLAMA_PREFIX}/include/llama-common;${FE_LLAMA_PREFIX}/include"
  INTERFACE_COMPILE_FEATURES cxx_std_17
  INTERFACE_LINK_LIBRARIES fe_llama_llama-common)

add_library(fe::llama INTERFACE IMPORTED)
set_target_properties(fe::llama PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${FE_LLAMA_PREFIX}/include;${FE_LLAMA_PREFIX}/include/llama-common"
  INTERFACE_LINK_LIBRARIES fe::llama_common)
