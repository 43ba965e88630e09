// Sessions: a llama context, its sampler chain, the cancel flag and the last profile.
#include "internal.h"

#include <cstring>
#include <thread>

namespace {

bool abort_requested(void *data) {
    auto *s = static_cast<fe_session *>(data);
    return s->cancel.load(std::memory_order_relaxed);
}

int32_t default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : (int32_t)n;
}

llama_sampler *make_sampler(const fe_model *m, const fe_session_params &p) {
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llama_sampler *chain = llama_sampler_chain_init(cp);
    if (!chain) return nullptr;
    const fe_sampling_params &s = p.sampling;
    if (s.repeat_penalty != 1.0f && s.repeat_last_n != 0)
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(llama_vocab_n_tokens(m->vocab),
                                                                    s.repeat_last_n, s.repeat_penalty, 0.0f, 0.0f));
    if (s.temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    if (s.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(s.top_k));
    if (s.top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(s.top_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(s.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(p.seed));
    return chain;
}

fe_status check_params(const fe_session_params &p) {
    if (p.n_ctx == 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: n_ctx is 0; give the context length in tokens (e.g. 2048)");
    if (p.n_batch == 0) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: n_batch is 0");
    if (p.n_ctx > (1u << 24)) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: n_ctx %u is too large", p.n_ctx);
    const fe_sampling_params &s = p.sampling;
    if (!(s.temperature == s.temperature) || !(s.top_p == s.top_p) || !(s.repeat_penalty > 0.0f))
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: temperature/top_p must be numbers and repeat_penalty > 0");
    if (s.repeat_last_n < -1) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: repeat_last_n must be >= -1");
    return FE_OK;
}

}  // namespace

extern "C" {

fe_session_params fe_session_default_params(void) {
    fe_session_params p;
    memset(&p, 0, sizeof p);
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.n_threads = 0;
    p.n_threads_batch = 0;
    p.seed = 42;
    p.sampling.temperature = 0.0f;
    p.sampling.top_k = 40;
    p.sampling.top_p = 0.95f;
    p.sampling.repeat_penalty = 1.0f;
    p.sampling.repeat_last_n = 64;
    return p;
}

fe_status fe_session_create(fe_model *model, const fe_session_params *params, fe_session **out) {
    return fe::guard("fe_session_create", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: out is NULL");
        *out = nullptr;
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_create: model is NULL");
        fe_session_params p = params ? *params : fe_session_default_params();
        fe_status st = check_params(p);
        if (st != FE_OK) return st;
        if (p.n_threads <= 0) p.n_threads = default_threads();
        if (p.n_threads_batch <= 0) p.n_threads_batch = p.n_threads;
        if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;

        auto *s = new fe_session();
        s->model = model;
        s->params = p;
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = p.n_ctx;
        cp.n_batch = p.n_batch;
        cp.n_ubatch = p.n_batch < 512 ? p.n_batch : 512;
        cp.n_seq_max = 1;
        cp.n_threads = p.n_threads;
        cp.n_threads_batch = p.n_threads_batch;
        cp.abort_callback = abort_requested;
        cp.abort_callback_data = s;
        cp.no_perf = true;
        fe::clear_llama_errors();
        s->ctx = llama_init_from_model(model->model, cp);
        if (!s->ctx) {
            std::string why = fe::take_llama_errors();
            delete s;
            return fe::set_error(FE_ERR_OUT_OF_MEMORY, "llama.cpp could not create a context of %u tokens: %s",
                                 p.n_ctx, why.empty() ? "no details" : why.c_str());
        }
        s->sampler = make_sampler(model, p);
        // Greedy with no penalty has no state: read the logits row directly instead of building
        // llama.cpp's n_vocab candidate array every token (the same token, fewer cycles).
        s->argmax = p.sampling.temperature <= 0.0f && !(p.sampling.repeat_penalty != 1.0f && p.sampling.repeat_last_n != 0);
        if (!s->sampler) {
            llama_free(s->ctx);
            delete s;
            return fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_session_create: could not create the sampler chain");
        }
        *out = s;
        return FE_OK;
    });
}

void fe_session_free(fe_session *session) {
    if (!session) return;
    llama_sampler_free(session->sampler);
    llama_free(session->ctx);
    delete session;
}

fe_status fe_session_reset(fe_session *session) {
    return fe::guard("fe_session_reset", [&]() -> fe_status {
        fe::clear_error();
        if (!session) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_reset: session is NULL");
        llama_memory_clear(llama_get_memory(session->ctx), true);
        llama_sampler_reset(session->sampler);
        session->token_ms.clear();
        session->profile = fe_profile{};
        return FE_OK;
    });
}

void fe_session_cancel(fe_session *session) {
    if (session) session->cancel.store(true, std::memory_order_relaxed);
}

fe_status fe_session_get_profile(const fe_session *session, fe_profile *out) {
    if (!session || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_get_profile: session or out is NULL");
    *out = session->profile;
    out->token_ms = session->token_ms.empty() ? nullptr : session->token_ms.data();
    out->n_token_ms = session->token_ms.size();
    return FE_OK;
}

}  // extern "C"
