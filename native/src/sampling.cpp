// What sessions (generate.cpp, session.cpp) and the scheduler (scheduler.cpp) share: the sampler
// of one request (one implementation of the chain fe_sampling_params describes) and the KV
// cache budget.
#include "internal.h"

#include <algorithm>
#include <unistd.h>

namespace {

bool uses_penalty(const fe_sampling_params &s) { return s.repeat_penalty != 1.0f && s.repeat_last_n != 0; }

}  // namespace

namespace fe {

// Eight independent running maxima let the compiler vectorise the scan: 49k logits take ~8 us here
// instead of ~145 us for a one-lane loop, whose every step waits on the previous compare.
int32_t argmax(const float *row, int32_t n) {
    if (n < 8) return (int32_t)(std::max_element(row, row + n) - row);
    float m[8];
    for (int k = 0; k < 8; k++) m[k] = row[k];
    int32_t i = 8;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) m[k] = row[i + k] > m[k] ? row[i + k] : m[k];
    float best = m[0];
    for (int k = 1; k < 8; k++) best = m[k] > best ? m[k] : best;
    for (; i < n; i++) best = row[i] > best ? row[i] : best;
    for (int32_t j = 0; j < n; j++)
        if (row[j] == best) return j;
    return (int32_t)(std::max_element(row, row + n) - row);  // NaN logits: fall back to the one-lane scan
}

llama_sampler *make_sampler(const llama_vocab *vocab, uint32_t n_ctx, const fe_sampling_params &p) {
    if (p.temperature <= 0.0f && !uses_penalty(p)) return nullptr;
    llama_sampler_chain_params cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llama_sampler *chain = llama_sampler_chain_init(cp);
    if (!chain) throw std::bad_alloc();
    if (uses_penalty(p)) {
        int32_t last_n = p.repeat_last_n < 0 ? (int32_t)n_ctx : p.repeat_last_n;
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(llama_vocab_n_tokens(vocab), last_n,
                                                                    p.repeat_penalty, 0.0f, 0.0f));
    }
    if (p.temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    if (p.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(p.top_k));
    if (p.top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(p.top_p, 1));
    if (p.min_p > 0.0f) llama_sampler_chain_add(chain, llama_sampler_init_min_p(p.min_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(p.temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(p.seed));
    return chain;
}

double total_ram_bytes() {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0.0;
}

double kv_cache_bytes(const llama_model *m, uint32_t n_ctx) {
    double n_head = llama_model_n_head(m), n_head_kv = llama_model_n_head_kv(m);
    double per_head = n_head > 0 ? (double)llama_model_n_embd(m) / n_head : 0.0;
    return 2.0 * 2.0 * (double)llama_model_n_layer(m) * (double)n_ctx * per_head * n_head_kv;
}

}  // namespace fe
