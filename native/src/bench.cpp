// The benchmark loop (llama-bench-like), once for every binding: warm-up + repetitions of
// (prefill exactly n_prompt tokens + greedy decode of n_gen tokens, EOS ignored). Built on
// the public entry points only (fe_tokenize, fe_generate_tokens, fe_session_get_profile).
#include "device.h"
#include "internal.h"

#include <cstdlib>
#include <cstring>

namespace {

const char kBenchText[] =
    "Quarterly revenue rose 12% while operating margin narrowed as input costs climbed; the "
    "board kept the dividend, extended the buyback and guided free cash flow toward the top of "
    "the range, citing lower capital expenditure and a stronger order book in the services unit. ";

fe_status text_prompt(const fe_model *m, const char *text, int32_t n_prompt, std::vector<int32_t> &out) {
    size_t len = strlen(text);
    if (len == 0) return fe::set_error(FE_ERR_INVALID_ARG, "fe_benchmark: prompt_text is empty");
    std::vector<int32_t> toks(len + 16);
    int32_t n = 0;
    fe_status st = fe_tokenize(m, text, true, false, toks.data(), (int32_t)toks.size(), &n);
    if (st == FE_ERR_BUFFER_TOO_SMALL) {
        toks.resize((size_t)n);
        st = fe_tokenize(m, text, true, false, toks.data(), (int32_t)toks.size(), &n);
    }
    if (st != FE_OK) return st;
    toks.resize((size_t)n);
    size_t body = !toks.empty() && toks[0] == fe_token_bos(m) ? 1 : 0;  // repeat the text, not BOS
    if (toks.size() <= body) return fe::set_error(FE_ERR_INVALID_ARG, "fe_benchmark: prompt_text gives no tokens");
    out.assign(toks.begin(), toks.end());
    while ((int32_t)out.size() < n_prompt) out.insert(out.end(), toks.begin() + (long)body, toks.end());
    out.resize((size_t)n_prompt);
    return FE_OK;
}

// llama-bench's kind of prompt: BOS, then a fixed pseudo-random sequence of token ids.
void random_prompt(const fe_model *m, int32_t n_prompt, int32_t n_vocab, std::vector<int32_t> &out) {
    out.clear();
    uint64_t state = 0x2545F4914F6CDD1Dull;
    int32_t bos = fe_token_bos(m);
    for (int32_t i = 0; i < n_prompt; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        out.push_back(i == 0 && bos >= 0 ? bos : (int32_t)((state >> 33) % (uint64_t)n_vocab));
    }
}

void free_runs(fe_bench_result *r) {
    if (!r) return;
    if (r->runs)
        for (size_t i = 0; i < r->n_runs; i++) free((void *)r->runs[i].token_ms);
    free(r->runs);
    free(r->thermal_before_json);
    memset(r, 0, sizeof *r);
}

}  // namespace

extern "C" {

const char *fe_bench_text(void) { return kBenchText; }

fe_bench_params fe_bench_default_params(void) {
    fe_bench_params p;
    memset(&p, 0, sizeof p);
    p.n_prompt = 64;
    p.n_gen = 64;
    p.repetitions = 5;
    p.warmup = 1;
    return p;
}

void fe_bench_result_free(fe_bench_result *result) { free_runs(result); }

fe_status fe_benchmark(fe_session *session, const fe_bench_params *params, fe_bench_result *out) {
    if (out) memset(out, 0, sizeof *out);
    fe_bench_result res;
    memset(&res, 0, sizeof res);
    fe_status st = fe::guard("fe_benchmark", [&]() -> fe_status {
        fe::clear_error();
        if (!session || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_benchmark: session or out is NULL");
        const fe_bench_params p = params ? *params : fe_bench_default_params();
        if (p.n_prompt < 1 || p.n_gen < 1 || p.repetitions < 1 || p.warmup < 0)
            return fe::set_error(FE_ERR_INVALID_ARG,
                                 "fe_benchmark: n_prompt = %d, n_gen = %d, repetitions = %d, warmup = %d; use "
                                 "n_prompt, n_gen, repetitions >= 1 and warmup >= 0",
                                 p.n_prompt, p.n_gen, p.repetitions, p.warmup);
        const uint32_t n_ctx = session->params.n_ctx;
        if ((uint64_t)p.n_prompt + (uint64_t)p.n_gen > n_ctx)
            return fe::set_error(FE_ERR_CONTEXT_OVERFLOW,
                                 "fe_benchmark: n_prompt + n_gen = %d does not fit in the session's n_ctx = %u; "
                                 "create the session with a larger n_ctx",
                                 p.n_prompt + p.n_gen, n_ctx);
        const fe_model *m = session->model;
        std::vector<int32_t> prompt;
        if (p.random_tokens) {
            fe_model_info info;
            fe_status s = fe_model_get_info(m, &info);
            if (s != FE_OK) return s;
            random_prompt(m, p.n_prompt, info.n_vocab, prompt);
        } else {
            fe_status s = text_prompt(m, p.prompt_text ? p.prompt_text : kBenchText, p.n_prompt, prompt);
            if (s != FE_OK) return s;
        }

        fe_generate_params gp = fe_generate_default_params();
        gp.max_tokens = p.n_gen;
        gp.ignore_eos = true;
        gp.sampling.temperature = 0.0f;  // greedy
        gp.sampling.repeat_penalty = 1.0f;

        res.thermal_before_json = fe_thermal_json();
        if (!res.thermal_before_json) return FE_ERR_OUT_OF_MEMORY;
        res.runs = (fe_run_timing *)calloc((size_t)p.repetitions, sizeof(fe_run_timing));
        if (!res.runs) return fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_benchmark: out of memory");
        for (int32_t i = 0; i < p.warmup + p.repetitions; i++) {
            fe_generate_result gr;
            // Every run measures a cold prefill of all n_prompt tokens (as llama-bench does):
            // forget the previous run's cache, or prefix reuse would skip the prompt.
            fe_status s = fe_session_reset(session);
            if (s != FE_OK) return s;
            s = fe_generate_tokens(session, prompt.data(), (int32_t)prompt.size(), &gp, &gr);
            if (s != FE_OK) return s;  // fe_last_error() has the reason
            if (gr.stop_reason == FE_STOP_CANCELLED)
                return fe::set_error(FE_ERR_CANCELLED, "fe_benchmark: cancelled");
            if (i < p.warmup) continue;
            fe_profile prof;
            s = fe_session_get_profile(session, &prof);
            if (s != FE_OK) return s;
            fe_run_timing &t = res.runs[res.n_runs];
            t.ttft_ms = prof.ttft_ms;
            t.prefill_ms = prof.prefill_ms;
            t.e2e_ms = prof.e2e_ms;
            t.n_prompt = prof.n_prompt;
            t.n_gen = prof.n_gen;
            t.n_prompt_reused = prof.n_prompt_reused;
            if (prof.n_token_ms) {
                double *copy = (double *)malloc(prof.n_token_ms * sizeof(double));
                if (!copy) return fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_benchmark: out of memory");
                memcpy(copy, prof.token_ms, prof.n_token_ms * sizeof(double));
                t.token_ms = copy;
                t.n_token_ms = prof.n_token_ms;
            }
            res.n_runs++;
        }
        return FE_OK;
    });
    if (st != FE_OK) {
        free_runs(&res);
        return st;
    }
    *out = res;
    return FE_OK;
}

}  // extern "C"
