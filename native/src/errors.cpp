// Status names and the thread-local last-error message.
#include "internal.h"

#include <cstdio>

namespace {
thread_local std::string t_last_error;
}

namespace fe {

fe_status set_error(fe_status status, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    try {
        t_last_error = buf;
    } catch (...) {
        // keep the previous message rather than throw out of a C function
    }
    log(FE_LOG_ERROR, "%s\n", buf);
    return status;
}

void clear_error() { t_last_error.clear(); }

}  // namespace fe

extern "C" {

const char *fe_status_str(fe_status status) {
    switch (status) {
        case FE_OK: return "FE_OK";
        case FE_ERR_INVALID_ARG: return "FE_ERR_INVALID_ARG";
        case FE_ERR_FILE_NOT_FOUND: return "FE_ERR_FILE_NOT_FOUND";
        case FE_ERR_BAD_MODEL: return "FE_ERR_BAD_MODEL";
        case FE_ERR_OUT_OF_MEMORY: return "FE_ERR_OUT_OF_MEMORY";
        case FE_ERR_CONTEXT_OVERFLOW: return "FE_ERR_CONTEXT_OVERFLOW";
        case FE_ERR_CANCELLED: return "FE_ERR_CANCELLED";
        case FE_ERR_DECODE: return "FE_ERR_DECODE";
        case FE_ERR_TEMPLATE: return "FE_ERR_TEMPLATE";
        case FE_ERR_BUFFER_TOO_SMALL: return "FE_ERR_BUFFER_TOO_SMALL";
        case FE_ERR_INTERNAL: return "FE_ERR_INTERNAL";
        case FE_ERR_BUSY: return "FE_ERR_BUSY";
    }
    return "FE_ERR_UNKNOWN";
}

const char *fe_last_error(void) { return t_last_error.c_str(); }

void fe_clear_error(void) { t_last_error.clear(); }

}  // extern "C"
