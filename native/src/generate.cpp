// The one token loop: a request is started (tokenize + checks), then stepped one token at a
// time (prefill on the first step), with sampling, stop strings, cancel and the profile.
// fe_generate/fe_generate_tokens drive the same steps with a callback.
#include "internal.h"
#include "grammar.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>

namespace {

llama_token next_token(fe_session *s, int32_t n_vocab) {
    fe_request &r = s->req;
    if (r.grammar) {  // grammar.cpp: the grammar-valid argmax (greedy) or a sample of the masked vocabulary
        llama_token tok = -1;
        fe_status st = fe::sample_constrained(s->ctx, -1, r.sampler, r.grammar, r.gp.sampling.temperature <= 0.0f,
                                              n_vocab, r.candidates, &tok);
        if (st != FE_OK) throw fe::Status{st};
        return tok;
    }
    if (s->req.sampler) return llama_sampler_sample(s->req.sampler, s->ctx, -1);
    const float *row = llama_get_logits_ith(s->ctx, -1);
    if (!row) throw std::runtime_error("llama.cpp returned no logits");
    return fe::argmax(row, n_vocab);
}

fe_status decode_status(fe_session *s, int32_t rc, const char *what) {
    if (rc == 2 || s->cancel.load(std::memory_order_relaxed))
        return fe::set_error(FE_ERR_CANCELLED, "generation cancelled during %s", what);
    if (rc == 1)
        return fe::set_error(FE_ERR_CONTEXT_OVERFLOW, "no room left in the context (n_ctx %u) during %s",
                             s->params.n_ctx, what);
    std::string why = fe::take_llama_errors();
    return fe::set_error(FE_ERR_DECODE, "llama_decode failed (%d) during %s%s%s", rc, what, why.empty() ? "" : ": ",
                         why.c_str());
}

// Tokens per prefill decode call: n_batch, at most the micro-batch (512) so that llama.cpp does
// not split a call itself.
int32_t chunk_limit(const fe_session *s) { return (int32_t)std::min<uint32_t>(s->params.n_batch, 512u); }

}  // namespace

fe::RowPath fe::prompt_path(bool flash_attn, int32_t chunk_limit, int32_t n_prompt) {
    if (!flash_attn) return fe::ROWS_PLAIN;
    return n_prompt >= fe::kFaTileRows && chunk_limit >= 2 * fe::kFaTileRows ? fe::ROWS_FA_TILED : fe::ROWS_FA_VEC;
}

fe::RowPath fe::prompt_path(const fe_session *s, int32_t n_prompt) {
    return prompt_path(s->params.flash_attn, chunk_limit(s), n_prompt);
}

int fe::batch_path(bool flash_attn, int32_t n) {
    if (n < 2) return -1;
    if (!flash_attn) return fe::ROWS_PLAIN;
    return n >= fe::kFaTileRows ? fe::ROWS_FA_TILED : fe::ROWS_FA_VEC;
}

int32_t fe::min_rows(fe::RowPath path) { return path == fe::ROWS_FA_TILED ? fe::kFaTileRows : 2; }

namespace {

// The path of the rows of one prefill chunk of n tokens (-1: a lone token, never reusable).
int row_path(const fe_session *s, int32_t n) { return fe::batch_path(s->params.flash_attn, n); }

}  // namespace

// Measured on the pinned build: a token's K/V bits depend only on the kernel path its batch
// takes (and on the tokens before it):
//   flash attention off: any batch of >= 2 tokens gives the same bits; a lone token differs
//     (logits by ~1 here);
//   flash attention on: the tiled kernel (>= 64 rows) and the row kernel (2..63 rows) round
//     differently, and a lone token takes a third (split-KV) kernel over >= 512 cells.
// So a prompt evaluated in any split of chunks on one path gives the same K/V and logits: the
// basis of exact prefix reuse.
int32_t fe::next_chunk(fe::RowPath path, int32_t limit, int32_t left) {
    const int32_t lo = fe::min_rows(path);
    const int32_t hi = path == fe::ROWS_FA_VEC ? std::min(limit, fe::kFaTileRows - 1) : limit;
    int32_t n = std::min(hi, left);
    if (left - n > 0 && left - n < lo && n - (lo - (left - n)) >= lo) n -= lo - (left - n);
    return n;
}

namespace {

// The prefix of the prompt kept from the KV cache (0 = start from an empty cache). Only tokens
// that a fresh prefill of this prompt would give the same bits are reusable: the leading
// s->n_exact cached tokens, when they came from the path this prompt's prefill takes (not
// generated tokens, which are decoded one at a time). At least the last min_rows(path) prompt
// tokens are evaluated again (the last one's logits give the first answer token, and the
// chunk must stay on the path). Any disagreement between the cache and s->cached clears both.
// The KV cache holds exactly s->cached: sequence 0 at positions 0..n-1 (else neither is trusted).
bool cache_agrees(const fe_session *s) {
    llama_memory_t mem = llama_get_memory(s->ctx);
    return llama_memory_seq_pos_min(mem, 0) == 0 && llama_memory_seq_pos_max(mem, 0) + 1 == (llama_pos)s->cached.size();
}

int32_t keep_prefix(fe_session *s) {
    llama_memory_t mem = llama_get_memory(s->ctx);
    const std::vector<llama_token> &prompt = s->req.prompt;
    std::vector<llama_token> &cached = s->cached;
    const fe::RowPath path = fe::prompt_path(s, (int32_t)prompt.size());
    // reuse_generated: every cached token counts, whichever path computed it, and only the last
    // prompt token must be evaluated again (not bit-exact anyway)
    const bool any = s->params.reuse_generated;
    const size_t lo = any ? 1 : (size_t)fe::min_rows(path);
    int32_t n_keep = 0;
    if (s->params.prefix_reuse && chunk_limit(s) >= 3 && prompt.size() > lo && !cached.empty() &&
        (any || s->exact_path == path) && cache_agrees(s)) {
        size_t n = std::min({cached.size(), any ? cached.size() : (size_t)s->n_exact, prompt.size() - lo});
        size_t k = 0;
        while (k < n && cached[k] == prompt[k]) k++;
        n_keep = (int32_t)k;
    }
    if (n_keep > 0 && (size_t)n_keep < cached.size() && !llama_memory_seq_rm(mem, 0, n_keep, -1)) n_keep = 0;
    if (n_keep == 0) {
        fe::forget_cache(s);
    } else {
        cached.resize((size_t)n_keep);
        s->n_exact = std::min(s->n_exact, n_keep);
    }
    return n_keep;
}

// After a failed decode: keep only the tokens fully evaluated before it (or nothing).
void drop_uncached(fe_session *s) {
    llama_memory_t mem = llama_get_memory(s->ctx);
    if (s->cached.empty() || !llama_memory_seq_rm(mem, 0, (llama_pos)s->cached.size(), -1) ||
        llama_memory_seq_pos_max(mem, 0) + 1 != (llama_pos)s->cached.size())
        fe::forget_cache(s);
    s->n_exact = std::min(s->n_exact, (int32_t)s->cached.size());
}

// Evaluates toks[0..n) as prompt rows after the cached tokens, in next_chunk chunks on `path`,
// appending them to s->cached; the reusable prefix grows while every chunk stays on one path.
// On a failed decode only the chunks evaluated before it stay (the status says why).
fe_status prefill_rows(fe_session *s, llama_token *toks, int32_t n, fe::RowPath path, const char *what) {
    for (int32_t i = 0, m = 0; i < n; i += m) {
        m = fe::next_chunk(path, chunk_limit(s), n - i);
        int32_t rc = llama_decode(s->ctx, llama_batch_get_one(toks + i, m));
        if (rc != 0) {
            fe_status st = decode_status(s, rc, what);
            drop_uncached(s);
            return st;
        }
        const int rp = row_path(s, m);
        bool exact = rp >= 0 && s->n_exact == (int32_t)s->cached.size() && (s->n_exact == 0 || s->exact_path == rp);
        s->cached.insert(s->cached.end(), toks + i, toks + i + m);
        if (exact) {
            s->n_exact = (int32_t)s->cached.size();
            s->exact_path = (uint8_t)rp;
        }
    }
    return FE_OK;
}

void finish_profile(fe_session *s) {
    const fe_request &r = s->req;
    fe::RequestTimes t;
    t.load_ms = s->model->load_ms;
    t.tokenize_ms = r.t_tokenized;
    t.prefill_ms = r.prefill_ms;
    t.ttft_ms = r.ttft;
    t.t_start = r.t_start;
    t.n_prompt = (int32_t)r.prompt.size();
    t.n_evaluated = (int32_t)r.prompt.size() - r.n_reused;
    t.n_reused = r.n_reused;
    t.n_gen = r.n_gen;
    s->profile = fe::request_profile(t, s->token_ms);
}

// Checks shared by every way of starting a request; the session becomes busy on FE_OK.
fe_status begin(fe_session *s, const fe_generate_params *params, double t_start) {
    if (!s) return fe::set_error(FE_ERR_INVALID_ARG, "session is NULL");
    if (s->req.active)
        return fe::set_error(FE_ERR_BUSY, "this session is already generating (one request at a time): finish it, "
                                          "cancel it, or use another session");
    fe_generate_params gp = params ? *params : fe_generate_default_params();
    if (gp.max_tokens < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "max_tokens = %d is out of range: use 0 or more", gp.max_tokens);
    if (gp.n_stop > 0 && !gp.stop) return fe::set_error(FE_ERR_INVALID_ARG, "n_stop > 0 but stop is NULL");
    fe_status st = fe_sampling_check(&gp.sampling);
    if (st != FE_OK) return st;
    fe_request &r = s->req;
    r = fe_request{};
    r.gp = gp;
    for (size_t i = 0; i < gp.n_stop; i++)
        if (gp.stop[i] && *gp.stop[i]) r.stops.emplace_back(gp.stop[i]);
    r.gp.stop = nullptr;  // the caller's array need not outlive this call
    r.gp.n_stop = 0;
    if ((r.has_grammar = gp.sampling.grammar != nullptr)) r.grammar_src = gp.sampling.grammar;
    if ((r.has_schema = gp.sampling.json_schema != nullptr)) r.schema_src = gp.sampling.json_schema;
    r.gp.sampling.grammar = r.gp.sampling.json_schema = nullptr;  // the copies above are used
    r.t_start = t_start;
    return FE_OK;
}

// After the prompt is in r.prompt: the checks that need it, then the request is active.
fe_status activate(fe_session *s) {
    fe_request &r = s->req;
    fe_status st = fe::check_prompt(s->model, r.prompt, (int32_t)s->params.n_ctx, "session");
    if (st != FE_OK) return st;
    if (r.has_grammar || r.has_schema) {
        llama_sampler *g = nullptr;
        st = fe::make_grammar(s->model->vocab, r.has_grammar ? r.grammar_src.c_str() : nullptr,
                                        r.has_schema ? r.schema_src.c_str() : nullptr, &g);
        if (st != FE_OK) return st;
        r.grammar = g;
    }
    try {
        r.sampler = fe::make_sampler(s->model->vocab, s->params.n_ctx, r.gp.sampling);
    } catch (...) {
        llama_sampler_free(r.grammar);
        r.grammar = nullptr;
        throw;
    }
    r.text = std::make_unique<fe::TextStream>(r.stops);
    r.t_tokenized = fe::elapsed_ms(r.t_start);
    s->cancel.store(false, std::memory_order_relaxed);
    s->token_ms.clear();
    s->token_ms.reserve((size_t)std::min(r.gp.max_tokens, 1 << 16));
    s->profile = fe_profile{};
    fe::drift_on_request(s);  // counts the prompt when a drift monitor is attached
    r.active = true;
    return FE_OK;
}

fe_status tokenize_into(fe_session *s, const char *prompt, bool add_special, bool parse_special) {
    return fe::tokenize_text(s->model, prompt, add_special, parse_special, s->req.prompt);
}

fe_status start_failed(fe_session *s, fe_status st) {
    if (s) {  // idle again; the prompt is kept so that callers can report its length
        std::vector<llama_token> prompt = std::move(s->req.prompt);
        s->req = fe_request{};
        s->req.prompt = std::move(prompt);
    }
    return st;
}

// Ends the request with `reason`, releasing held-back text into r.event_text.
void finish(fe_session *s, fe_stop_reason reason, fe_token_event *ev) {
    fe_request &r = s->req;
    if (reason != FE_STOP_STRING && reason != FE_STOP_CANCELLED && reason != FE_STOP_CALLBACK)
        r.event_text += r.text->finish();
    ev->done = true;
    ev->stop_reason = reason;
    fe::end_request(s, reason);
}

void note_token_time(fe_session *s) {
    fe_request &r = s->req;
    double t = fe::now_ms();
    if (r.n_gen == 0) r.ttft = t - r.t_start;
    else s->token_ms.push_back(t - r.t_prev);
    r.t_prev = t;
}

fe_status step(fe_session *s, fe_token_event *ev) {
    fe_request &r = s->req;
    const llama_vocab *vocab = s->model->vocab;
    const int32_t n_vocab = llama_vocab_n_tokens(vocab), n_ctx = (int32_t)s->params.n_ctx;
    r.event_text.clear();
    ev->token = -1;
    ev->done = false;
    ev->stop_reason = FE_STOP_NONE;
    if (s->cancel.load(std::memory_order_relaxed)) return finish(s, FE_STOP_CANCELLED, ev), FE_OK;
    if (!r.prefilled) {
        fe::clear_llama_errors();
        double t0 = fe::now_ms();
        const int32_t n_prompt = (int32_t)r.prompt.size();
        const fe::RowPath path = fe::prompt_path(s, n_prompt);
        int32_t n_keep = keep_prefix(s);
        r.n_reused = n_keep;
        fe_status st = prefill_rows(s, r.prompt.data() + n_keep, n_prompt - n_keep, path, "prefill");
        if (st != FE_OK) {
            if (st == FE_ERR_CANCELLED) {
                fe::clear_error();
                return finish(s, FE_STOP_CANCELLED, ev), FE_OK;
            }
            fe::end_request(s, FE_STOP_NONE);
            return st;
        }
        llama_synchronize(s->ctx);
        r.prefill_ms = fe::elapsed_ms(t0);
        r.prefilled = true;
        r.n_past = n_prompt;
        if (r.gp.max_tokens == 0) return finish(s, FE_STOP_MAX_TOKENS, ev), FE_OK;
    } else if (r.need_decode) {
        if (r.n_gen >= r.gp.max_tokens) return finish(s, FE_STOP_MAX_TOKENS, ev), FE_OK;
        if (r.n_past >= n_ctx) return finish(s, FE_STOP_CONTEXT_FULL, ev), FE_OK;
        int32_t rc = llama_decode(s->ctx, llama_batch_get_one(&r.last, 1));
        if (rc != 0) {
            fe_status st = decode_status(s, rc, "generation");
            drop_uncached(s);
            if (st == FE_ERR_CANCELLED) {
                fe::clear_error();
                return finish(s, FE_STOP_CANCELLED, ev), FE_OK;
            }
            fe::end_request(s, FE_STOP_NONE);
            return st;
        }
        s->cached.push_back(r.last);  // decoded alone: cached, but not reusable (s->n_exact)
        r.n_past++;
        r.need_decode = false;
    }
    double t_grammar = r.grammar ? fe::thread_cpu_ms() : 0.0;  // CPU time: load on other cores does not trip it
    llama_token tok;
    try {
        tok = next_token(s, n_vocab);
    } catch (const fe::Status &e) {
        fe::end_request(s, FE_STOP_NONE);
        return e.status;
    }
    // With a grammar, end of generation is only allowed once it is complete: it ends the request.
    if ((!r.gp.ignore_eos || r.grammar) && llama_vocab_is_eog(vocab, tok)) {
        note_token_time(s);
        return finish(s, FE_STOP_EOS, ev), FE_OK;
    }
    if (r.grammar) {
        llama_sampler_accept(r.grammar, tok);
        double ms = fe::thread_cpu_ms() - t_grammar;
        if (ms > FE_GRAMMAR_MAX_STEP_MS) {
            fe::end_request(s, FE_STOP_NONE);
            return fe::set_error(FE_ERR_INVALID_ARG,
                                 "grammar: one token took %.0f ms of CPU for sampling and grammar work (bound %d ms): the "
                                 "grammar is too ambiguous (its parse states multiply); make it deterministic",
                                 ms, FE_GRAMMAR_MAX_STEP_MS);
        }
    }
    note_token_time(s);
    r.n_gen++;
    r.last = tok;
    r.need_decode = true;
    ev->token = tok;
    std::string piece = fe::token_piece(vocab, tok, false);
    r.event_text += r.text->push(piece.data(), piece.size());
    if (r.text->stopped()) return finish(s, FE_STOP_STRING, ev), FE_OK;
    return FE_OK;
}

fe_status next_event(fe_session *s, fe_token_event *ev) {
    fe_status st = step(s, ev);
    ev->text = s->req.event_text.c_str();
    ev->text_len = s->req.event_text.size();
    return st;
}

// fe_generate*: the same steps, delivering each event's text to the callback.
fe_status drive(fe_session *s, fe_generate_result *res) {
    fe_token_event ev{};
    fe_token_callback cb = s->req.gp.on_token;
    void *ud = s->req.gp.user_data;
    fe_stop_reason reason = FE_STOP_NONE;
    fe_status st = FE_OK;
    for (;;) {
        st = next_event(s, &ev);
        if (st != FE_OK) break;
        bool more = true;
        if (cb && (ev.text_len > 0 || ev.token >= 0)) more = cb(ev.text, ev.text_len, ev.token, ud);
        if (ev.done) {
            reason = ev.stop_reason;
            break;
        }
        if (!more) {
            reason = FE_STOP_CALLBACK;
            fe::end_request(s, FE_STOP_CALLBACK);
            break;
        }
    }
    if (res) {
        res->stop_reason = reason;
        res->n_prompt = s->profile.n_prompt;
        res->n_generated = s->profile.n_gen;
    }
    if (st == FE_OK && reason == FE_STOP_CANCELLED) {
        if (!s->req.prefilled) return fe::set_error(FE_ERR_CANCELLED, "generation cancelled during prefill");
        return fe::set_error(FE_ERR_CANCELLED, "generation cancelled after %d tokens", s->profile.n_gen);
    }
    return st;
}

}  // namespace

namespace fe {

void end_request(fe_session *s, fe_stop_reason reason) {
    fe_request &r = s->req;
    if (!r.active) return;
    r.active = false;
    r.reason = reason;
    if (reason == FE_STOP_NONE) forget_cache(s);  // an error: trust nothing in the cache
    if (r.sampler) llama_sampler_free(r.sampler);
    r.sampler = nullptr;
    if (r.grammar) llama_sampler_free(r.grammar);
    r.grammar = nullptr;
    finish_profile(s);
}

void forget_cache(fe_session *s) {
    llama_memory_clear(llama_get_memory(s->ctx), true);
    s->cached.clear();
    s->n_exact = 0;
}

fe_status tokenize_text(const fe_model *model, const char *text, bool add_special, bool parse_special,
                        std::vector<llama_token> &toks) {
    if (!text) return set_error(FE_ERR_INVALID_ARG, "prompt is NULL");
    size_t len = strlen(text);
    if (len > (size_t)INT32_MAX / 2) return set_error(FE_ERR_INVALID_ARG, "prompt too long (%zu bytes)", len);
    toks.resize(len + 8);
    int32_t n = llama_tokenize(model->vocab, text, (int32_t)len, toks.data(), (int32_t)toks.size(), add_special,
                               parse_special);
    if (n < 0) {
        toks.resize((size_t)(-(int64_t)n));
        n = llama_tokenize(model->vocab, text, (int32_t)len, toks.data(), (int32_t)toks.size(), add_special,
                           parse_special);
        if (n < 0) return set_error(FE_ERR_INTERNAL, "tokenization failed");
    }
    toks.resize((size_t)n);
    return FE_OK;
}

fe_status chat_tokens(const fe_model *model, const fe_chat_message *messages, size_t n, bool add_assistant,
                      std::vector<llama_token> &out) {
    std::string prompt;
    fe_status st = render_chat(model, messages, n, add_assistant, prompt);
    if (st != FE_OK) return st;
    // The template may write BOS itself; add it only when it did not.
    const llama_vocab *vocab = model->vocab;
    llama_token bos = llama_vocab_bos(vocab);
    bool add_bos = llama_vocab_get_add_bos(vocab);
    if (add_bos && bos >= 0) {
        std::string bos_text = token_piece(vocab, bos, true);
        if (!bos_text.empty() && prompt.compare(0, bos_text.size(), bos_text) == 0) add_bos = false;
    }
    return tokenize_text(model, prompt.c_str(), add_bos, true, out);
}

}  // namespace fe

extern "C" {

fe_generate_params fe_generate_default_params(void) {
    fe_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 256;
    p.add_special = true;
    p.parse_special = true;
    p.ignore_eos = false;
    p.sampling = fe_sampling_default_params();
    return p;
}

const char *fe_finish_reason(fe_stop_reason reason) {
    switch (reason) {
        case FE_STOP_EOS:
        case FE_STOP_STRING: return "stop";
        case FE_STOP_MAX_TOKENS:
        case FE_STOP_CONTEXT_FULL: return "length";
        case FE_STOP_CALLBACK:
        case FE_STOP_CANCELLED: return "cancelled";
        default: return "error";
    }
}

fe_status fe_request_start(fe_session *session, const char *prompt, const fe_generate_params *params) {
    return fe::guard("fe_request_start", [&]() -> fe_status {
        fe::clear_error();
        fe_status st = begin(session, params, fe::now_ms());
        if (st != FE_OK) return st;
        st = tokenize_into(session, prompt, session->req.gp.add_special, session->req.gp.parse_special);
        if (st == FE_OK) st = activate(session);
        return st == FE_OK ? st : start_failed(session, st);
    });
}

fe_status fe_request_start_tokens(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                                  const fe_generate_params *params) {
    return fe::guard("fe_request_start_tokens", [&]() -> fe_status {
        fe::clear_error();
        fe_status st = begin(session, params, fe::now_ms());
        if (st != FE_OK) return st;
        if (!tokens || n_tokens <= 0)
            return start_failed(session, fe::set_error(FE_ERR_INVALID_ARG, "tokens is NULL or n_tokens <= 0"));
        session->req.prompt.assign(tokens, tokens + n_tokens);
        st = activate(session);
        return st == FE_OK ? st : start_failed(session, st);
    });
}

fe_status fe_request_start_chat(fe_session *session, const fe_chat_message *messages, size_t n_messages,
                                const fe_generate_params *params) {
    return fe::guard("fe_request_start_chat", [&]() -> fe_status {
        fe::clear_error();
        fe_status st = begin(session, params, fe::now_ms());
        if (st != FE_OK) return st;
        st = fe::chat_tokens(session->model, messages, n_messages, true, session->req.prompt);
        session->req.chat = messages;  // the drift monitor counts the last user message (drift_monitor.cpp)
        session->req.n_chat = n_messages;
        if (st == FE_OK) st = activate(session);
        session->req.chat = nullptr;
        return st == FE_OK ? st : start_failed(session, st);
    });
}

fe_status fe_request_next(fe_session *session, fe_token_event *ev) {
    return fe::guard("fe_request_next", [&]() -> fe_status {
        fe::clear_error();
        if (!session || !ev) return fe::set_error(FE_ERR_INVALID_ARG, "fe_request_next: session or ev is NULL");
        memset(ev, 0, sizeof *ev);
        ev->token = -1;
        if (!session->req.active)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_request_next: no request is active on this session");
        try {
            return next_event(session, ev);
        } catch (...) {
            fe::end_request(session, FE_STOP_NONE);
            throw;
        }
    });
}

void fe_request_end(fe_session *session) {
    if (session) fe::end_request(session, FE_STOP_CALLBACK);
}

bool fe_request_active(const fe_session *session) { return session && session->req.active; }

fe_status fe_request_prompt_tokens(const fe_session *session, int32_t *tokens, int32_t max_tokens, int32_t *n_out) {
    if (!session || !n_out || max_tokens < 0 || (max_tokens > 0 && !tokens))
        return fe::set_error(FE_ERR_INVALID_ARG, "fe_request_prompt_tokens: NULL argument or max_tokens < 0");
    const auto &p = session->req.prompt;
    *n_out = (int32_t)p.size();
    std::copy_n(p.begin(), std::min<size_t>(p.size(), (size_t)max_tokens), tokens);
    return FE_OK;
}

fe_status fe_generate(fe_session *session, const char *prompt, const fe_generate_params *params,
                      fe_generate_result *result) {
    if (result) memset(result, 0, sizeof *result);
    fe_status st = fe_request_start(session, prompt, params);
    if (st != FE_OK) {
        if (result && session) result->n_prompt = (int32_t)session->req.prompt.size();
        return st;
    }
    return fe::guard("fe_generate", [&]() -> fe_status {
        try {
            return drive(session, result);
        } catch (...) {
            fe::end_request(session, FE_STOP_NONE);
            throw;
        }
    });
}

fe_status fe_session_settle(fe_session *session, int32_t *n_evaluated) {
    if (n_evaluated) *n_evaluated = 0;
    return fe::guard("fe_session_settle", [&]() -> fe_status {
        fe::clear_error();
        fe_session *s = session;
        if (!s) return fe::set_error(FE_ERR_INVALID_ARG, "fe_session_settle: session is NULL");
        if (s->req.active)
            return fe::set_error(FE_ERR_BUSY, "fe_session_settle: a request is running; settle once it has ended");
        const int32_t n = (int32_t)s->cached.size();
        if (!s->params.prefix_reuse || chunk_limit(s) < 3 || n < 2) return FE_OK;  // nothing a request would reuse
        llama_memory_t mem = llama_get_memory(s->ctx);
        if (!cache_agrees(s)) {
            fe::forget_cache(s);  // the cache and s->cached disagree: trust neither
            return FE_OK;
        }
        // The rows after the reusable prefix are evaluated again as a prompt of n tokens would be
        // (at least min_rows of them, so that every chunk stays on the path).
        const fe::RowPath path = fe::prompt_path(s, n);
        int32_t from = s->n_exact > 0 && s->exact_path == path ? s->n_exact : 0;
        if (from == n) return FE_OK;
        from = std::max(0, std::min(from, n - fe::min_rows(path)));
        std::vector<llama_token> rows(s->cached.begin() + from, s->cached.end());
        if (!llama_memory_seq_rm(mem, 0, from, -1)) {
            fe::forget_cache(s);
            return FE_OK;
        }
        s->cached.resize((size_t)from);
        s->n_exact = std::min(s->n_exact, from);
        s->cancel.store(false, std::memory_order_relaxed);
        fe::clear_llama_errors();
        fe_status st = prefill_rows(s, rows.data(), (int32_t)rows.size(), path, "settle");
        if (st == FE_OK) llama_synchronize(s->ctx);
        if (n_evaluated) *n_evaluated = (int32_t)s->cached.size() - from;
        return st;
    });
}

fe_status fe_generate_tokens(fe_session *session, const int32_t *tokens, int32_t n_tokens,
                             const fe_generate_params *params, fe_generate_result *result) {
    if (result) memset(result, 0, sizeof *result);
    fe_status st = fe_request_start_tokens(session, tokens, n_tokens, params);
    if (st != FE_OK) {
        if (result && session) result->n_prompt = (int32_t)session->req.prompt.size();
        return st;
    }
    return fe::guard("fe_generate_tokens", [&]() -> fe_status {
        try {
            return drive(session, result);
        } catch (...) {
            fe::end_request(session, FE_STOP_NONE);
            throw;
        }
    });
}

}  // extern "C"
