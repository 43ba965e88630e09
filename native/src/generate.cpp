// The generation loop: prefill in n_batch chunks, then sample/decode token by token,
// with streaming, stop strings, cancellation and the latency profile.
#include "internal.h"

#include <algorithm>
#include <climits>
#include <cstring>

namespace {

// Streams pieces to the user callback, holding back text that may be the start of a stop
// string. Each token is delivered once, in order; text after a stop string is dropped.
class Streamer {
  public:
    Streamer(const fe_generate_params &gp) : gp_(gp) {
        for (size_t i = 0; i < gp.n_stop; i++)
            if (gp.stop[i] && *gp.stop[i]) stops_.emplace_back(gp.stop[i]);
    }

    // Adds one token; returns false when generation must stop (stop string or callback).
    bool push(llama_token tok, const std::string &piece) {
        pending_.push_back({tok, piece});
        text_ += piece;
        if (stops_.empty()) return flush_upto(text_.size());
        size_t hit = std::string::npos;
        for (const auto &s : stops_) hit = std::min(hit, text_.find(s));
        if (hit != std::string::npos) {
            hit_stop_ = true;
            flush_upto(hit);
            return false;
        }
        size_t hold = 0;
        for (const auto &s : stops_)
            for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; k--)
                if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
                    hold = k;
                    break;
                }
        return flush_upto(text_.size() - hold);
    }

    bool finish() { return flush_upto(text_.size()); }
    bool hit_stop() const { return hit_stop_; }
    bool callback_stopped() const { return cb_stopped_; }

  private:
    struct Item {
        llama_token tok;
        std::string piece;
    };

    // Delivers queued tokens whose text ends at or before byte `limit` of text_; a token
    // straddling a stop string (limit inside it, hit_stop_) is delivered cut at `limit`.
    bool flush_upto(size_t limit) {
        size_t taken = 0;
        while (!pending_.empty()) {
            Item &it = pending_.front();
            size_t end = emitted_ + it.piece.size();
            if (end > limit) {
                if (hit_stop_ && limit > emitted_) {
                    if (!deliver(it.tok, it.piece.data(), limit - emitted_)) return false;
                }
                break;
            }
            if (!deliver(it.tok, it.piece.data(), it.piece.size())) return false;
            emitted_ = end;
            pending_.erase(pending_.begin());
            taken++;
        }
        (void)taken;
        return true;
    }

    bool deliver(llama_token tok, const char *p, size_t n) {
        if (!gp_.on_token) return true;
        if (!gp_.on_token(p, n, tok, gp_.user_data)) {
            cb_stopped_ = true;
            return false;
        }
        return true;
    }

    const fe_generate_params &gp_;
    std::vector<std::string> stops_;
    std::vector<Item> pending_;
    std::string text_;
    size_t emitted_ = 0;
    bool hit_stop_ = false;
    bool cb_stopped_ = false;
};

std::string token_piece(const llama_vocab *vocab, llama_token tok) {
    char small[128];
    int32_t n = llama_token_to_piece(vocab, tok, small, sizeof small, 0, false);
    if (n >= 0) return std::string(small, (size_t)n);
    std::string big((size_t)(-n), '\0');
    n = llama_token_to_piece(vocab, tok, &big[0], (int32_t)big.size(), 0, false);
    return n >= 0 ? big.substr(0, (size_t)n) : std::string();
}

// Index of the largest value, the lowest index on ties (as llama.cpp's greedy sampler). Eight
// independent running maxima let the compiler vectorise the scan: 49k logits take ~8 us here
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

// The next token: argmax of the last logits row for plain greedy sessions, otherwise the
// session's sampler chain.
llama_token next_token(fe_session *s, int32_t n_vocab) {
    if (!s->argmax) return llama_sampler_sample(s->sampler, s->ctx, -1);
    const float *row = llama_get_logits_ith(s->ctx, -1);
    if (!row) return llama_sampler_sample(s->sampler, s->ctx, -1);
    return argmax(row, n_vocab);
}

fe_status decode_status(fe_session *s, int32_t rc, const char *what) {
    if (rc == 2 || s->cancel.load(std::memory_order_relaxed))
        return fe::set_error(FE_ERR_CANCELLED, "generation cancelled during %s", what);
    if (rc == 1)
        return fe::set_error(FE_ERR_CONTEXT_OVERFLOW, "no room left in the context (n_ctx %u) during %s",
                             s->params.n_ctx, what);
    std::string why = fe::take_llama_errors();
    return fe::set_error(FE_ERR_DECODE, "llama_decode failed (%d) during %s%s%s", rc, what,
                         why.empty() ? "" : ": ", why.c_str());
}

void finish_profile(fe_session *s, double t_start, double t_prefill, double ttft, int32_t n_prompt, int32_t n_gen) {
    fe_profile &p = s->profile;
    p.load_ms = s->model->load_ms;
    p.prefill_ms = t_prefill;
    p.ttft_ms = ttft;
    p.prefill_tok_s = t_prefill > 0 ? 1000.0 * n_prompt / t_prefill : 0.0;
    double sum = 0;
    for (double v : s->token_ms) sum += v;
    p.decode_tok_s = sum > 0 ? 1000.0 * (double)s->token_ms.size() / sum : 0.0;
    p.token_ms_p50 = fe_percentile(s->token_ms.data(), s->token_ms.size(), 50);
    p.token_ms_p90 = fe_percentile(s->token_ms.data(), s->token_ms.size(), 90);
    p.token_ms_p99 = fe_percentile(s->token_ms.data(), s->token_ms.size(), 99);
    p.e2e_ms = fe::elapsed_ms(t_start);
    p.peak_rss_mb = fe_peak_rss_mb();
    p.n_prompt = n_prompt;
    p.n_gen = n_gen;
}

fe_status run(fe_session *s, double t_start, const fe_generate_params &gp, fe_generate_result *res) {
    const int32_t n_prompt = (int32_t)s->scratch.size();
    const int32_t n_ctx = (int32_t)s->params.n_ctx;
    if (res) res->n_prompt = n_prompt;
    if (n_prompt <= 0) return fe::set_error(FE_ERR_INVALID_ARG, "the prompt has no tokens");
    if (n_prompt >= n_ctx)
        return fe::set_error(FE_ERR_CONTEXT_OVERFLOW,
                             "the prompt has %d tokens but the session context holds n_ctx = %d (and the answer "
                             "needs room too); shorten the prompt or create the session with a larger n_ctx",
                             n_prompt, n_ctx);
    const llama_vocab *vocab = s->model->vocab;
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (int32_t i = 0; i < n_prompt; i++)
        if (s->scratch[i] < 0 || s->scratch[i] >= n_vocab)
            return fe::set_error(FE_ERR_INVALID_ARG, "prompt token %d at index %d is outside the vocabulary", s->scratch[i], i);

    llama_memory_clear(llama_get_memory(s->ctx), true);
    llama_sampler_reset(s->sampler);
    fe::clear_llama_errors();

    // Prefill.
    double t0 = fe::now_ms();
    const int32_t n_batch = (int32_t)s->params.n_batch;
    for (int32_t i = 0; i < n_prompt; i += n_batch) {
        if (s->cancel.load(std::memory_order_relaxed)) return decode_status(s, 2, "prefill");
        int32_t n = std::min(n_batch, n_prompt - i);
        int32_t rc = llama_decode(s->ctx, llama_batch_get_one(s->scratch.data() + i, n));
        if (rc != 0) return decode_status(s, rc, "prefill");
    }
    llama_synchronize(s->ctx);
    double t_prefill = fe::elapsed_ms(t0);

    Streamer out(gp);
    fe_stop_reason reason = FE_STOP_MAX_TOKENS;
    fe_status status = FE_OK;
    int32_t n_gen = 0, n_past = n_prompt;
    double ttft = 0, t_prev = 0;
    for (;;) {
        if (s->cancel.load(std::memory_order_relaxed)) {
            reason = FE_STOP_CANCELLED;
            status = fe::set_error(FE_ERR_CANCELLED, "generation cancelled after %d tokens", n_gen);
            break;
        }
        llama_token tok = next_token(s, n_vocab);
        double t = fe::now_ms();
        if (n_gen == 0) ttft = t - t_start;
        else s->token_ms.push_back(t - t_prev);
        t_prev = t;
        if (!gp.ignore_eos && llama_vocab_is_eog(vocab, tok)) {
            reason = FE_STOP_EOS;
            break;
        }
        n_gen++;
        if (!out.push(tok, token_piece(vocab, tok))) {
            reason = out.hit_stop() ? FE_STOP_STRING : FE_STOP_CALLBACK;
            break;
        }
        if (n_gen >= gp.max_tokens) {
            reason = FE_STOP_MAX_TOKENS;
            break;
        }
        if (n_past >= n_ctx) {
            reason = FE_STOP_CONTEXT_FULL;
            break;
        }
        int32_t rc = llama_decode(s->ctx, llama_batch_get_one(&tok, 1));
        if (rc != 0) {
            status = decode_status(s, rc, "generation");
            reason = status == FE_ERR_CANCELLED ? FE_STOP_CANCELLED : FE_STOP_NONE;
            break;
        }
        n_past++;
    }
    if (status == FE_OK && (reason == FE_STOP_EOS || reason == FE_STOP_MAX_TOKENS || reason == FE_STOP_CONTEXT_FULL))
        if (!out.finish()) reason = FE_STOP_CALLBACK;
    finish_profile(s, t_start, t_prefill, ttft, n_prompt, n_gen);
    if (res) {
        res->stop_reason = reason;
        res->n_generated = n_gen;
    }
    return status;
}

fe_status begin(fe_session *s, const fe_generate_params *params, fe_generate_params *gp, fe_generate_result *res) {
    if (res) memset(res, 0, sizeof *res);
    if (!s) return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate: session is NULL");
    *gp = params ? *params : fe_generate_default_params();
    if (gp->max_tokens <= 0) return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate: max_tokens must be > 0");
    if (gp->n_stop > 0 && !gp->stop) return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate: n_stop > 0 but stop is NULL");
    s->cancel.store(false, std::memory_order_relaxed);
    s->token_ms.clear();
    s->token_ms.reserve((size_t)gp->max_tokens);
    s->profile = fe_profile{};
    return FE_OK;
}

}  // namespace

extern "C" {

fe_generate_params fe_generate_default_params(void) {
    fe_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 256;
    p.add_special = true;
    p.parse_special = true;
    p.ignore_eos = false;
    return p;
}

fe_status fe_generate(fe_session *session, const char *prompt, const fe_generate_params *params,
                      fe_generate_result *result) {
    return fe::guard("fe_generate", [&]() -> fe_status {
        fe::clear_error();
        double t_start = fe::now_ms();
        fe_generate_params gp;
        fe_status st = begin(session, params, &gp, result);
        if (st != FE_OK) return st;
        if (!prompt) return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate: prompt is NULL");
        size_t len = strlen(prompt);
        if (len > (size_t)INT32_MAX / 2) return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate: prompt too long");
        const llama_vocab *vocab = session->model->vocab;
        session->scratch.resize(len + 8);
        int32_t n = llama_tokenize(vocab, prompt, (int32_t)len, session->scratch.data(),
                                   (int32_t)session->scratch.size(), gp.add_special, gp.parse_special);
        if (n < 0) {
            session->scratch.resize((size_t)(-(int64_t)n));
            n = llama_tokenize(vocab, prompt, (int32_t)len, session->scratch.data(), (int32_t)session->scratch.size(),
                               gp.add_special, gp.parse_special);
            if (n < 0) return fe::set_error(FE_ERR_INTERNAL, "fe_generate: tokenization failed");
        }
        session->scratch.resize((size_t)n);
        double t_tok = fe::elapsed_ms(t_start);
        st = run(session, t_start, gp, result);
        session->profile.tokenize_ms = t_tok;
        return st;
    });
}

fe_status fe_generate_tokens(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                             const fe_generate_params *params, fe_generate_result *result) {
    return fe::guard("fe_generate_tokens", [&]() -> fe_status {
        fe::clear_error();
        double t_start = fe::now_ms();
        fe_generate_params gp;
        fe_status st = begin(session, params, &gp, result);
        if (st != FE_OK) return st;
        if (!tokens || n_tokens <= 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_generate_tokens: tokens is NULL or n_tokens <= 0");
        session->scratch.assign(tokens, tokens + n_tokens);
        return run(session, t_start, gp, result);
    });
}

}  // extern "C"
