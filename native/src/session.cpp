// Sessions: a llama context over a shared model, the cancel flag, the request in progress
// and the last profile. Every option is checked here, before anything is allocated.
#include "internal.h"
#include "grammar.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <unistd.h>

namespace {

bool abort_requested(void *data) {
    auto *s = static_cast<fe_session *>(data);
    return s->cancel.load(std::memory_order_relaxed);
}

constexpr uint32_t kMaxCtx = 1u << 24;  // tokens of context at most

// The ranges of the parameters (fe_session_params_check); check_params adds the KV cache's size.
fe_status check_ranges(const fe_session_params &p) {
    const int32_t cpus = fe_cpu_count();
    if (p.n_ctx == 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_ctx is 0; give the context length in tokens (e.g. 2048)");
    if (p.n_ctx > kMaxCtx)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_ctx = %u is out of range: use 1..%u tokens", p.n_ctx, kMaxCtx);
    if (p.n_batch == 0) return fe::set_error(FE_ERR_INVALID_ARG, "n_batch is 0; use 1..n_ctx (e.g. 512)");
    if (p.n_threads < 1 || p.n_threads > cpus)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_threads = %d is out of range: use 1..%d (the CPUs online)",
                             p.n_threads, cpus);
    if (p.n_threads_batch < 1 || p.n_threads_batch > cpus)
        return fe::set_error(FE_ERR_INVALID_ARG,
                             "n_threads_batch = %d is out of range: use 1..%d (the CPUs online)", p.n_threads_batch,
                             cpus);
    return FE_OK;
}

fe_status check_params(const fe_model *model, const fe_session_params &p) {
    fe_status st = check_ranges(p);
    if (st != FE_OK) return st;
    double need = fe::kv_cache_bytes(model->model, p.n_ctx), ram = fe::total_ram_bytes();
    if (ram > 0 && need > ram)
        return fe::set_error(FE_ERR_INVALID_ARG,
                             "n_ctx = %u needs %.0f MiB of KV cache, more than this machine's %.0f MiB of RAM; "
                             "use a smaller n_ctx (the model was trained with %d)",
                             p.n_ctx, need / 1048576.0, ram / 1048576.0, llama_model_n_ctx_train(model->model));
    int32_t train = llama_model_n_ctx_train(model->model);
    if (train > 0 && p.n_ctx > (uint32_t)train)
        fe::log(FE_LOG_WARN, "n_ctx = %u is above the model's training context (%d): quality may drop past %d tokens",
                p.n_ctx, train, train);
    return FE_OK;
}

}  // namespace

extern "C" {

int32_t fe_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = (long)std::thread::hardware_concurrency();
    return n < 1 ? 1 : (int32_t)n;
}

fe_sampling_params fe_sampling_default_params(void) {
    fe_sampling_params s;
    memset(&s, 0, sizeof s);
    s.temperature = 0.0f;
    s.top_k = 40;
    s.top_p = 0.95f;
    s.min_p = 0.05f;
    s.repeat_penalty = 1.0f;
    s.repeat_last_n = 64;
    s.seed = FE_SEED_RANDOM;
    return s;
}

fe_status fe_sampling_check(const fe_sampling_params *p) {
    if (!p) return fe::set_error(FE_ERR_INVALID_ARG, "sampling params are NULL");
    if (!std::isfinite(p->temperature) || p->temperature < 0.0f || p->temperature > 100.0f)
        return fe::set_error(FE_ERR_INVALID_ARG, "temperature = %g is out of range: use 0 (greedy) .. 100",
                             (double)p->temperature);
    if (p->top_k < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "top_k = %d is out of range: use 0 (off) or more", p->top_k);
    if (!std::isfinite(p->top_p) || p->top_p <= 0.0f || p->top_p > 1.0f)
        return fe::set_error(FE_ERR_INVALID_ARG, "top_p = %g is out of range: use 0 < top_p <= 1 (1 = off)",
                             (double)p->top_p);
    if (!std::isfinite(p->min_p) || p->min_p < 0.0f || p->min_p >= 1.0f)
        return fe::set_error(FE_ERR_INVALID_ARG, "min_p = %g is out of range: use 0 (off) <= min_p < 1",
                             (double)p->min_p);
    if (!std::isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f || p->repeat_penalty > 10.0f)
        return fe::set_error(FE_ERR_INVALID_ARG, "repeat_penalty = %g is out of range: use 0 < r <= 10 (1 = off)",
                             (double)p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return fe::set_error(FE_ERR_INVALID_ARG, "repeat_last_n = %d is out of range: use -1 (whole context) or more",
                             p->repeat_last_n);
    return fe::check_grammar_params(*p);
}

fe_status fe_session_params_check(const fe_session_params *params) {
    return fe::guard("fe_session_params_check", [&]() -> fe_status {
        fe::clear_error();
        if (!params) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_params_check: params is NULL");
        return check_ranges(*params);
    });
}

fe_session_params fe_session_default_params(void) {
    fe_session_params p;
    memset(&p, 0, sizeof p);
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.n_threads = fe_default_n_threads();
    p.n_threads_batch = p.n_threads;
    p.prefix_reuse = true;
    p.flash_attn = false;
    p.reuse_generated = false;
    return p;
}

fe_status fe_session_create(fe_model *model, const fe_session_params *params, fe_session **out) {
    return fe::guard("fe_session_create", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: out is NULL");
        *out = nullptr;
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: model is NULL");
        fe_session_params p = params ? *params : fe_session_default_params();
        fe_status st = check_params(model, p);
        if (st != FE_OK) return st;
        if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;

        auto s = std::make_unique<fe_session>();
        s->model = model;
        s->params = p;
        fe::ContextSpec spec;
        spec.n_ctx = p.n_ctx;
        spec.n_batch = p.n_batch;
        spec.n_ubatch = p.n_batch < 512 ? p.n_batch : 512;
        spec.n_threads = p.n_threads;
        spec.n_threads_batch = p.n_threads_batch;
        spec.flash_attn = p.flash_attn;  // fe_session_params.flash_attn (see fe::new_context)
        spec.abort = abort_requested;
        spec.abort_data = s.get();
        s->ctx = fe::new_context(model, spec);
        if (!s->ctx) return FE_ERR_OUT_OF_MEMORY;
        *out = s.release();
        return FE_OK;
    });
}

void fe_session_free(fe_session *session) {
    if (!session) return;
    fe::end_request(session, FE_STOP_CALLBACK);
    fe::drift_detach(session);
    llama_free(session->ctx);
    fe::session_drop_adapters(session);
    delete session;
}

fe_status fe_session_reset(fe_session *session) {
    return fe::guard("fe_session_reset", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_reset: session is NULL");
        if (session->req.active)
            return fe::set_error(FE_ERR_BUSY, "fe_session_reset: a request is running; end or cancel it first");
        fe::forget_cache(session);
        session->token_ms.clear();
        session->profile = fe_profile{};
        return FE_OK;
    });
}

void fe_session_cancel(fe_session *session) {
    if (session) session->cancel.store(true, std::memory_order_relaxed);
}

fe_status fe_session_cached_tokens(const fe_session *session, int32_t *tokens, int32_t max_tokens, int32_t *n_out) {
    if (!session || !n_out || max_tokens < 0 || (max_tokens > 0 && !tokens))
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_cached_tokens: NULL argument or max_tokens < 0");
    const auto &c = session->cached;
    *n_out = (int32_t)c.size();
    std::copy_n(c.begin(), std::min<size_t>(c.size(), (size_t)max_tokens), tokens);
    return FE_OK;
}

fe_status fe_session_get_profile(const fe_session *session, fe_profile *out) {
    if (!session || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_get_profile: session or out is NULL");
    *out = session->profile;
    out->token_ms = session->token_ms.empty() ? nullptr : session->token_ms.data();
    out->n_token_ms = session->token_ms.size();
    return FE_OK;
}

}  // extern "C"
