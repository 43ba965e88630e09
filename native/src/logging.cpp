// Log bridge: llama.cpp/ggml log lines go to the user's sink (filtered by level), and
// llama.cpp's error lines are kept per thread so a failing call can quote them.
#include "internal.h"

#include <cstdio>
#include <mutex>

namespace {

std::atomic<int> g_level{FE_LOG_NONE};
std::mutex g_sink_mutex;
fe_log_callback g_sink = nullptr;
void *g_sink_user = nullptr;

thread_local std::string t_llama_errors;
thread_local int t_prev_level = GGML_LOG_LEVEL_INFO;

void emit(fe_log_level level, const char *text) {
    if (level < g_level.load(std::memory_order_relaxed)) return;
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    if (g_sink) {
        g_sink(level, text, g_sink_user);
    } else {
        fputs(text, stderr);
    }
}

void llama_log_bridge(enum ggml_log_level level, const char *text, void *) {
    if (!text) return;
    int lvl = level == GGML_LOG_LEVEL_CONT ? t_prev_level : (int)level;
    t_prev_level = lvl;
    if (lvl == GGML_LOG_LEVEL_ERROR && t_llama_errors.size() < 2048) {
        try {
            t_llama_errors += text;
        } catch (...) {
        }
    }
    fe_log_level fl = lvl <= GGML_LOG_LEVEL_DEBUG ? FE_LOG_DEBUG
                    : lvl == GGML_LOG_LEVEL_INFO  ? FE_LOG_INFO
                    : lvl == GGML_LOG_LEVEL_WARN  ? FE_LOG_WARN
                                                  : FE_LOG_ERROR;
    emit(fl, text);
}

std::once_flag g_once;

}  // namespace

namespace fe {

void ensure_backend() {
    std::call_once(g_once, [] {
        llama_log_set(llama_log_bridge, nullptr);
        llama_backend_init();
    });
}

void log(fe_log_level level, const char *fmt, ...) {
    if (level < g_level.load(std::memory_order_relaxed)) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    emit(level, buf);
}

std::string take_llama_errors() {
    std::string out;
    out.swap(t_llama_errors);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    for (char &c : out)
        if (c == '\n') c = ' ';
    return out;
}

void clear_llama_errors() { t_llama_errors.clear(); }

}  // namespace fe

extern "C" {

void fe_set_log_level(fe_log_level level) {
    int l = (int)level;
    if (l < FE_LOG_DEBUG) l = FE_LOG_DEBUG;
    if (l > FE_LOG_NONE) l = FE_LOG_NONE;
    g_level.store(l, std::memory_order_relaxed);
}

void fe_set_log_callback(fe_log_callback callback, void *user_data) {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    g_sink = callback;
    g_sink_user = user_data;
}

}  // extern "C"
