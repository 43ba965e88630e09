// Internal declarations shared by the C API sources. Not installed.
#pragma once

#include "finllm_edge.h"
#include "llama.h"

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <exception>
#include <new>
#include <string>
#include <vector>

struct fe_model {
    llama_model *model = nullptr;
    const llama_vocab *vocab = nullptr;
    std::string path;
    uint64_t file_size = 0;
    double load_ms = 0.0;
};

struct fe_session {
    fe_model *model = nullptr;
    llama_context *ctx = nullptr;
    llama_sampler *sampler = nullptr;
    bool argmax = false;                  // greedy without penalties: argmax over the logits row
    fe_session_params params{};
    std::atomic<bool> cancel{false};
    std::vector<llama_token> scratch;     // prompt tokens handed to llama_decode
    std::vector<double> token_ms;         // per-token latencies of the last generation
    fe_profile profile{};
};

namespace fe {

// errors.cpp: thread-local last error. set_error returns `status` for `return set_error(...)`.
fe_status set_error(fe_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void clear_error();
// llama.cpp error lines logged on this thread since the last clear (see logging.cpp).
std::string take_llama_errors();
void clear_llama_errors();

// logging.cpp: installs the llama.cpp/ggml log bridge once; idempotent and thread-safe.
void ensure_backend();
void log(fe_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// metrics.cpp
double now_ms();
double elapsed_ms(double since_ms);

// Runs `body` and turns any C++ exception into a status + message (the C boundary).
template <typename F>
fe_status guard(const char *where, F &&body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return set_error(FE_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
    } catch (const std::exception &e) {
        return set_error(FE_ERR_INTERNAL, "%s: %s", where, e.what());
    } catch (...) {
        return set_error(FE_ERR_INTERNAL, "%s: unknown C++ exception", where);
    }
}

}  // namespace fe
