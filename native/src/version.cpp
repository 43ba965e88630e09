// Version strings, passed in as compile definitions by CMake.
#include "internal.h"

#ifndef FE_VERSION_STR
#error "FE_VERSION_STR must be defined by the build"
#endif
#ifndef FE_LLAMA_VERSION_STR
#error "FE_LLAMA_VERSION_STR must be defined by the build"
#endif
#ifndef FE_VARIANT_STR
#define FE_VARIANT_STR ""
#endif

extern "C" {
const char *fe_version(void) { return FE_VERSION_STR; }
const char *fe_llama_version(void) { return FE_LLAMA_VERSION_STR; }
const char *fe_build_variant(void) { return FE_VARIANT_STR; }
}
