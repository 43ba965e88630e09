// The scheduler: concurrent requests on one model (see "concurrent requests" in finllm_edge.h).
// One llama context with one KV stream per slot (kv_unified off, so each request's cells start at
// 0 as in a session of its own), one decode thread that runs steps: cancel/finish checks,
// prefill chunks of new requests within the step's prompt-token budget (round-robin), then one
// decode batch with the next token of every running request. Requests are shared between the
// caller (events, cancel) and the thread.
#include "internal.h"
#include "grammar.h"
#include "sched_window.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#ifndef _WIN32
#include <unistd.h>
#endif

namespace {

struct Event {
    std::string text;
    int32_t token = -1;
    bool done = false;
    fe_stop_reason reason = FE_STOP_NONE;
    fe_status status = FE_OK;  // != FE_OK: the request failed with `text` as the message
};

// What the caller and the decode thread share (the caller's handle and the thread each hold it).
struct Shared;

struct Request {
    // ---- caller side, under mu
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Event> events;
    bool ended = false;       // the last event was pushed
    bool consumed = false;    // the caller read the last event
    std::string cur_text;     // text of the event returned last (fe_token_event.text)
    fe_profile profile{};     // set when ended
    std::vector<double> token_ms;
    std::atomic<bool> cancel{false};
    std::shared_ptr<Shared> shared;

    // ---- decode thread only
    fe_generate_params gp{};
    std::vector<std::string> stops;
    std::vector<llama_token> prompt;
    llama_sampler *sampler = nullptr;
    llama_sampler *grammar = nullptr;  // grammar / JSON Schema constraint (grammar.cpp)
    std::vector<llama_token_data> candidates;
    double grammar_cpu0 = 0;           // thread CPU time when this token's sampling began
    std::string grammar_error;         // why constrained sampling failed (sample() returned -1)
    std::unique_ptr<fe::TextStream> text;
    int32_t seq = -1;
    int32_t n_prefilled = 0;
    int32_t n_keep = 0;       // prompt tokens its slot's cache gives (chosen at admission)
    int32_t n_reused = 0;     // ... taken (set at its first prefill step)
    bool kv_ready = false;    // the slot's cache was cut to n_keep
    bool kv_ok = true;        // every llama_decode with its tokens succeeded (its cache may be kept)
    int32_t n_past = 0;
    std::vector<llama_token> decoded;  // generated tokens evaluated into the cache, in order
    int32_t n_gen = 0;
    llama_token last = -1;
    bool need_decode = false;
    double t_submit = 0, t_prev = 0, ttft = 0, prefill_ms = 0;
    std::vector<double> lat;  // inter-token latencies

    ~Request() {
        if (sampler) llama_sampler_free(sampler);
        if (grammar) llama_sampler_free(grammar);
    }
};
using RequestPtr = std::shared_ptr<Request>;

struct Shared {
    std::mutex mu;
    std::condition_variable cv;  // wakes the decode thread: a submit, a cancel, closing
    std::deque<RequestPtr> queue;
    bool closing = false;
    std::atomic<bool> closing_flag{false};  // the same, for the compute-loop abort check
    // stats, under mu
    int32_t n_active = 0, batch_size = 1, peak_active = 0, peak_batch_size = 1;
    int64_t steps = 0, generated = 0, submitted = 0, completed = 0, cancelled = 0, rejected = 0, failed = 0;
    int64_t prompt_tokens = 0, prompt_tokens_reused = 0, prefix_copies = 0, prompt_chunks = 0, settled_tokens = 0,
            settles_stopped = 0;
    // set by every submit; an idle settle chunk (settle_step) stops when it is set
    std::atomic<bool> arrival{false};
    fe::LatencyWindow latency{64};
    fe::RateWindow rate{10000.0};
    // fe_scheduler_set_wakeup_fd: written after a step (or a drop) that pushed events
    std::mutex wake_mu;                  // held while writing, so a caller that unsets the fd may close it
    int wake_fd = -1;                    // under wake_mu
    std::atomic<bool> wake_pending{false};
};

void push_event(Request &r, Event ev) {
    std::lock_guard<std::mutex> lk(r.mu);
    if (r.ended) return;
    if (ev.done || ev.status != FE_OK) r.ended = true;
    r.events.push_back(std::move(ev));
    r.cv.notify_all();
    if (r.shared) r.shared->wake_pending.store(true, std::memory_order_relaxed);
}

// One write to the wake-up fd when events were pushed since the last one (decode thread).
void signal_wake(Shared &sh) {
    if (!sh.wake_pending.exchange(false)) return;
#ifndef _WIN32
    std::lock_guard<std::mutex> lk(sh.wake_mu);
    if (sh.wake_fd < 0) return;
    const uint64_t one = 1;  // an eventfd takes exactly 8 bytes; a pipe takes them as well
    ssize_t n;
    do {
        n = write(sh.wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    // EAGAIN: the fd is already readable (a full pipe, a saturated eventfd), so the reader wakes anyway
#endif
}

}  // namespace

struct fe_scheduler {
    fe_model *model = nullptr;
    llama_context *ctx = nullptr;
    fe_scheduler_params params{};
    int32_t n_seq = 0;  // sequences in the context (= n_slots)
    std::shared_ptr<Shared> shared;
    std::thread thread;
    // fe_scheduler_enable_drift: counts requests on the submitting threads (drift_mu guards the
    // pointer; the monitor locks itself)
    std::mutex drift_mu;
    fe_drift_monitor *drift = nullptr;
    // ---- decode thread only
    std::vector<RequestPtr> slots;      // by sequence id; NULL = free
    std::vector<int32_t> cells;         // positions each sequence holds in the KV cache (stats, checks)
    // prefix reuse: the prompt tokens a free slot's KV stream still holds, all computed on the
    // kernel path cached_path (fe::RowPath), so a request on that path may take them
    std::vector<std::vector<llama_token>> cached;
    std::vector<uint8_t> cached_path;
    // settle_answers: a free slot's last answer tokens (decoded one at a time; their K/V removed),
    // evaluated again as prompt rows after cached[seq] while nothing else runs (settle_step)
    std::vector<std::vector<llama_token>> unsettled;
    size_t rr = 0;                      // round-robin position among prefilling requests
    // the busy prefill budget's cost model (prefill_step): moving averages of the ms per prompt
    // token of recent prefill chunks and of the last decode steps; 0 = not measured yet
    double ms_per_prompt_token = 0, decode_step_ms = 0;
    int64_t steps_since_change = 0;
    std::atomic<const std::atomic<bool> *> abort_flag{nullptr};  // the prefilling request's cancel
};

struct fe_sched_request {
    RequestPtr r;
};

namespace {

bool abort_requested(void *data) {
    auto *s = static_cast<fe_scheduler *>(data);
    const std::atomic<bool> *f = s->abort_flag.load(std::memory_order_acquire);
    if (f && f->load(std::memory_order_relaxed)) return true;
    return s->shared->closing_flag.load(std::memory_order_relaxed);
}

// ------------------------------------------------------------------ ending requests (decode thread)

void fill_profile(fe_scheduler *s, Request &r) {
    fe::RequestTimes t;
    t.load_ms = s->model->load_ms;
    t.prefill_ms = r.prefill_ms;
    t.ttft_ms = r.ttft;
    t.t_start = r.t_submit;
    t.n_prompt = (int32_t)r.prompt.size();
    t.n_evaluated = r.n_prefilled - r.n_reused;
    t.n_reused = r.n_reused;
    t.n_gen = r.n_gen;
    r.profile = fe::request_profile(t, r.lat);
}

fe::RowPath path_of(const fe_scheduler *s, const Request &r) {
    return fe::prompt_path(s->params.flash_attn, (int32_t)s->params.n_batch, (int32_t)r.prompt.size());
}

// Frees a request's slot. With prefix reuse, the slot keeps the K/V of the prompt tokens the
// request evaluated (chunks of >= 2 tokens on its path: what a fresh prefill reproduces bit for
// bit); its generated tokens, decoded one at a time, are removed (and, with settle_answers, kept
// to be evaluated again as prompt rows when the scheduler is idle).
void release_slot(fe_scheduler *s, Request &r) {
    if (r.seq < 0) return;
    const size_t seq = (size_t)r.seq;
    llama_memory_t mem = llama_get_memory(s->ctx);
    const bool keep = s->params.prefix_reuse && r.kv_ok && r.kv_ready && r.n_prefilled >= 2;
    // reuse_generated: the answer's evaluated tokens stay too (the cache holds exactly these)
    const bool answer = keep && s->params.reuse_generated && r.n_prefilled == (int32_t)r.prompt.size() &&
                        r.n_past == r.n_prefilled + (int32_t)r.decoded.size();
    const int32_t n_keep = !keep ? 0 : answer ? r.n_past : r.n_prefilled;
    llama_memory_seq_rm(mem, r.seq, n_keep, -1);
    s->cached[seq].assign(r.prompt.begin(), r.prompt.begin() + (keep ? r.n_prefilled : 0));
    if (answer) s->cached[seq].insert(s->cached[seq].end(), r.decoded.begin(), r.decoded.end());
    // settle_answers: the answer follows the whole prompt in the stream; it is evaluated again
    // when the scheduler is idle
    const bool settle = keep && !answer && s->params.settle_answers && r.n_prefilled == (int32_t)r.prompt.size() &&
                        r.n_past == r.n_prefilled + (int32_t)r.decoded.size();
    s->unsettled[seq].assign(settle ? r.decoded.begin() : r.decoded.end(), r.decoded.end());
    s->cached_path[seq] = (uint8_t)path_of(s, r);
    s->cells[seq] = n_keep;
    s->slots[seq].reset();
    r.seq = -1;
}

// Prompt tokens request r may take from a KV stream holding `cached` (the first n tokens of it),
// computed on kernel path `path`: the common prefix when the path is r's, leaving at least the
// path's fewest rows to evaluate (the session's rule: the output stays the same as without reuse).
int32_t keepable(const fe_scheduler *s, const Request &r, const llama_token *cached, size_t n, uint8_t path) {
    const fe::RowPath mine = path_of(s, r);
    // reuse_generated: any cached token counts, whichever path computed it; only the last prompt
    // token is evaluated again (its logits give the first answer token)
    const bool any = s->params.reuse_generated;
    const int32_t n_prompt = (int32_t)r.prompt.size(), lo = any ? 1 : fe::min_rows(mine);
    if (!s->params.prefix_reuse || n == 0 || (!any && path != mine) || n_prompt <= lo) return 0;
    size_t k = 0;
    while (k < n && k < r.prompt.size() && cached[k] == r.prompt[k]) k++;
    return std::min((int32_t)k, n_prompt - lo);
}

// Prompt tokens request r may take from free slot `seq`'s cache.
int32_t reusable(const fe_scheduler *s, const Request &r, size_t seq) {
    const std::vector<llama_token> &c = s->cached[seq];
    return keepable(s, r, c.data(), c.size(), s->cached_path[seq]);
}

// A copy of another KV stream is worth it when it gives this many more prompt tokens than the
// request's own slot (a stream copy costs about as much as evaluating a few tokens).
constexpr int32_t kCopyWorthTokens = 32;

// The slot whose KV stream holds the longest reusable start of r's prompt now (-1: none worth a
// copy over r's own n_keep): a free slot's cached prompt, or a running request's evaluated prompt
// tokens (its rows are on its path; its answer's are not taken). *keep receives the tokens.
int32_t best_donor(const fe_scheduler *s, const Request &r, int32_t *keep) {
    int32_t best = -1, best_keep = r.n_keep + kCopyWorthTokens - 1;
    for (size_t d = 0; d < s->slots.size(); d++) {
        if ((int32_t)d == r.seq) continue;
        const RequestPtr &o = s->slots[d];
        int32_t k;
        if (o && o->kv_ready)
            k = keepable(s, r, o->prompt.data(), (size_t)o->n_prefilled, (uint8_t)path_of(s, *o));
        else
            k = reusable(s, r, d);  // free, or admitted and not started: its stream is still the cache
        if (k > best_keep) best = (int32_t)d, best_keep = k;
    }
    *keep = best_keep;
    return best;
}

// A decode batch splits where the sequence ids of its rows are not consecutive (llama.cpp's
// sequential split over per-sequence KV streams): one graph evaluation per run of ids. A slot
// that starts a new run must save at least this many prompt tokens to be chosen over one that
// does not.
constexpr int32_t kGapWorthTokens = 64;

// The free slot for request r (-1: none): the one whose cache gives the most reuse, among those
// that keep the running ids one run (next to it or in one of its gaps) unless another saves
// kGapWorthTokens more; ties go to the lowest id.
int32_t choose_slot(const fe_scheduler *s, const Request &r, int32_t *keep) {
    const int32_t n = s->params.n_slots;
    int32_t lo_busy = n, hi_busy = -1;
    for (int32_t i = 0; i < n; i++)
        if (s->slots[(size_t)i]) lo_busy = std::min(lo_busy, i), hi_busy = std::max(hi_busy, i);
    int32_t best = -1, best_keep = -1, near = -1, near_keep = -1;
    for (int32_t i = 0; i < n; i++) {
        if (s->slots[(size_t)i]) continue;
        const int32_t k = reusable(s, r, (size_t)i);
        if (k > best_keep) best = i, best_keep = k;
        const bool joins_run = hi_busy < 0 || i == lo_busy - 1 || i == hi_busy + 1 || (i > lo_busy && i < hi_busy);
        if (joins_run && k > near_keep) near = i, near_keep = k;
    }
    if (near >= 0 && best_keep - near_keep < kGapWorthTokens) best = near, best_keep = near_keep;
    *keep = std::max(best_keep, 0);
    return best;
}

// Ends a request: its last event (done with `reason`, or the error `st` with `msg`), its profile,
// its slot. Held-back text is released as a session does (not after a stop string or a cancel).
void end(fe_scheduler *s, RequestPtr rp, fe_stop_reason reason, fe_status st = FE_OK,
         const std::string &msg = "", std::string text = "") {
    Request &r = *rp;
    if (st == FE_OK && r.text && reason != FE_STOP_STRING && reason != FE_STOP_CANCELLED &&
        reason != FE_STOP_CALLBACK)
        text += r.text->finish();
    fill_profile(s, r);
    {
        std::lock_guard<std::mutex> lk(r.mu);
        r.token_ms = r.lat;
    }
    Event ev;
    ev.done = st == FE_OK;
    ev.reason = reason;
    ev.status = st;
    ev.text = st == FE_OK ? std::move(text) : msg;
    release_slot(s, r);
    if (r.sampler) llama_sampler_free(r.sampler);
    r.sampler = nullptr;
    if (r.grammar) llama_sampler_free(r.grammar);
    r.grammar = nullptr;
    {
        std::lock_guard<std::mutex> lk(s->shared->mu);  // counted before the caller can see the end
        if (st != FE_OK) s->shared->failed++;
        else if (reason == FE_STOP_CANCELLED) s->shared->cancelled++;
        else s->shared->completed++;
    }
    push_event(r, std::move(ev));
}

// A sampled token: the event (or the end), as fe_request_next's step does.
void on_token(fe_scheduler *s, const RequestPtr &rp, llama_token tok, double t) {
    Request &r = *rp;
    if (r.n_gen == 0) r.ttft = t - r.t_submit;
    else r.lat.push_back(t - r.t_prev);
    if (r.n_gen > 0) {
        std::lock_guard<std::mutex> lk(s->shared->mu);
        s->shared->latency.add(t - r.t_prev);
    }
    r.t_prev = t;
    // With a grammar, end of generation is only allowed once it is complete: it ends the request.
    if ((!r.gp.ignore_eos || r.grammar) && llama_vocab_is_eog(s->model->vocab, tok)) return end(s, rp, FE_STOP_EOS);
    if (r.grammar) {
        llama_sampler_accept(r.grammar, tok);
        double ms = fe::thread_cpu_ms() - r.grammar_cpu0;
        if (ms > FE_GRAMMAR_MAX_STEP_MS) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "grammar: one token took %.0f ms of CPU for sampling and grammar work (bound %d ms): the grammar "
                     "is too ambiguous (its parse states multiply); make it deterministic",
                     ms, FE_GRAMMAR_MAX_STEP_MS);
            return end(s, rp, FE_STOP_NONE, FE_ERR_INVALID_ARG, msg);
        }
    }
    r.n_gen++;
    r.last = tok;
    r.need_decode = true;
    {
        std::lock_guard<std::mutex> lk(s->shared->mu);
        s->shared->generated++;
        s->shared->rate.add(t, 1);
    }
    std::string piece = fe::token_piece(s->model->vocab, tok, false);
    std::string out = r.text->push(piece.data(), piece.size());
    if (r.text->stopped()) return end(s, rp, FE_STOP_STRING, FE_OK, "", std::move(out));
    Event ev;
    ev.token = tok;
    ev.text = std::move(out);
    push_event(r, std::move(ev));
}

// -1 (with r.grammar_error) when constrained sampling fails.
llama_token sample(fe_scheduler *s, Request &r, int32_t idx) {
    if (r.grammar) {
        r.grammar_cpu0 = fe::thread_cpu_ms();
        llama_token tok = -1;
        if (fe::sample_constrained(s->ctx, idx, r.sampler, r.grammar, r.gp.sampling.temperature <= 0.0f,
                                   llama_vocab_n_tokens(s->model->vocab), r.candidates, &tok) != FE_OK) {
            r.grammar_error = fe_last_error();
            return -1;
        }
        return tok;
    }
    if (r.sampler) return llama_sampler_sample(r.sampler, s->ctx, idx);
    const float *row = llama_get_logits_ith(s->ctx, idx);
    if (!row) throw std::runtime_error("llama.cpp returned no logits");
    return fe::argmax(row, llama_vocab_n_tokens(s->model->vocab));
}

std::string decode_error(int32_t rc, const char *what) {
    std::string why = fe::take_llama_errors();
    char buf[160];
    snprintf(buf, sizeof buf, "llama_decode failed (%d) during %s%s", rc, what, why.empty() ? "" : ": ");
    return buf + why;
}

// ------------------------------------------------------------------ one step (decode thread)

// Latencies under this share of p99_token_ms hold the bound: the batch may grow (adapt), and a
// busy step's prompt tokens are kept within it (busy_budget).
constexpr double kBoundHolds = 0.8;

// A moving average of the costs the busy prefill budget predicts with (0: no sample yet).
double moving_average(double avg, double sample) { return avg > 0 ? 0.75 * avg + 0.25 * sample : sample; }

// A batch of n rows of one sequence at positions pos0.. (logits of the last row when `logits`):
// a prefill chunk, or a settle chunk. Freed with llama_batch_free.
llama_batch seq_rows(const llama_token *tokens, int32_t n, int32_t pos0, int32_t seq, bool logits) {
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int32_t i = 0; i < n; i++) {
        b.token[i] = tokens[i];
        b.pos[i] = pos0 + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = seq;
        b.logits[i] = logits && i == n - 1;
    }
    b.n_tokens = n;
    return b;
}

// One prefill chunk of request rp, at most `limit` tokens. The chunk rule is the session's
// (fe::next_chunk): as large as allowed, every chunk on the kernel path a session's prefill of
// this prompt takes (at least the path's fewest rows, 64 on flash attention's tiled path, and
// leaving none or at least as many). Returns the tokens evaluated: 0 when no chunk on the path
// fits in `limit` (with limit >= 2 x the fewest rows one always does).
int32_t prefill_chunk(fe_scheduler *s, const RequestPtr &rp, int32_t limit) {
    Request &r = *rp;
    const int32_t n_prompt = (int32_t)r.prompt.size();
    const fe::RowPath path = path_of(s, r);
    const int32_t lo = fe::min_rows(path);
    if (!r.kv_ready) {  // the slot's cache, cut to what this prompt reuses
        llama_memory_t mem = llama_get_memory(s->ctx);
        int32_t donor_keep = 0;
        const int32_t donor = best_donor(s, r, &donor_keep);
        if (donor >= 0) {
            // llama.cpp copies a whole stream across streams (at the next decode, before this
            // chunk): the donor's K/V of those prompt tokens are the bits this prompt's own
            // prefill would give (same tokens, positions and kernel path)
            llama_memory_seq_cp(mem, donor, r.seq, -1, -1);
            r.n_keep = donor_keep;
            std::lock_guard<std::mutex> lk(s->shared->mu);
            s->shared->prefix_copies++;
        }
        llama_memory_seq_rm(mem, r.seq, r.n_keep, -1);
        s->cached[(size_t)r.seq].clear();
        s->unsettled[(size_t)r.seq].clear();
        r.n_prefilled = r.n_reused = r.n_keep;
        s->cells[(size_t)r.seq] = r.n_keep;
        r.kv_ready = true;
        std::lock_guard<std::mutex> lk(s->shared->mu);
        s->shared->prompt_tokens += n_prompt;
        s->shared->prompt_tokens_reused += r.n_keep;
    }
    const int32_t left = n_prompt - r.n_prefilled;
    const int32_t n = fe::next_chunk(path, limit, left);
    if (n != left && (n < lo || left - n < lo)) return 0;
    llama_batch b = seq_rows(r.prompt.data() + r.n_prefilled, n, r.n_prefilled, r.seq, r.n_prefilled + n == n_prompt);
    fe::clear_llama_errors();
    double t0 = fe::now_ms();
    s->abort_flag.store(&r.cancel, std::memory_order_release);
    int32_t rc = llama_decode(s->ctx, b);
    s->abort_flag.store(nullptr, std::memory_order_release);
    llama_batch_free(b);
    if (rc != 0) {
        r.kv_ok = false;  // the chunk may be half in the cache: the slot is cleared
        if (rc == 2 || r.cancel.load()) end(s, rp, FE_STOP_CANCELLED);
        else end(s, rp, FE_STOP_NONE, FE_ERR_DECODE, decode_error(rc, "prefill"));
        return n;
    }
    const double chunk_ms = fe::elapsed_ms(t0);
    r.prefill_ms += chunk_ms;
    r.n_prefilled += n;
    s->ms_per_prompt_token = moving_average(s->ms_per_prompt_token, chunk_ms / n);
    {
        std::lock_guard<std::mutex> lk(s->shared->mu);
        s->shared->prompt_chunks++;
    }
    s->cells[(size_t)r.seq] = r.n_prefilled;
    if (r.n_prefilled < n_prompt) return n;
    r.n_past = n_prompt;
    if (r.gp.max_tokens == 0) {
        end(s, rp, FE_STOP_MAX_TOKENS);
        return n;
    }
    llama_token tok = sample(s, r, -1);
    if (tok < 0) end(s, rp, FE_STOP_NONE, FE_ERR_INVALID_ARG, r.grammar_error);
    else on_token(s, rp, tok, fe::now_ms());
    return n;
}

// The prompt tokens a step evaluates while others decode: n_batch_busy, and no more than fit,
// at the measured ms per prompt token, in what a step may take beyond its decode batch: a step
// that evaluates prompt tokens is the longest inter-token gap the running requests see, so it
// is kept where the bound holds (kBoundHolds x p99_token_ms).
int32_t busy_budget(const fe_scheduler *s) {
    int32_t budget = (int32_t)s->params.n_batch_busy;
    if (s->ms_per_prompt_token > 0) {
        const double ms = kBoundHolds * s->params.p99_token_ms - s->decode_step_ms;
        budget = (int32_t)std::min<double>(budget, std::max(0.0, ms / s->ms_per_prompt_token));
    }
    return budget;
}

// Fewest tokens of the step's first chunk while others decode (progress whatever the budget).
constexpr int32_t kBusyFloor = 16;

// The prefill of one step: a budget of prompt tokens (n_batch; busy_budget while others decode)
// spent on one chunk of each new request in turn, round-robin from where the last step began,
// as long as a chunk on the request's path fits in what is left (prefill_chunk). The first
// request of the step always gets one: at least min(kBusyFloor, n_batch_busy) tokens, and on
// the tiled path the path's fewest rows (twice as many when a chunk of that size would leave
// fewer than that, which twice the fewest rows always avoids).
void prefill_step(fe_scheduler *s, bool others_decoding) {
    std::vector<RequestPtr> pre;
    for (auto &r : s->slots)
        if (r && r->n_prefilled < (int32_t)r->prompt.size()) pre.push_back(r);
    if (pre.empty()) return;
    int32_t budget = others_decoding ? busy_budget(s) : (int32_t)s->params.n_batch;
    const size_t first = s->rr++ % pre.size();
    for (size_t j = 0; j < pre.size(); j++) {
        const RequestPtr &rp = pre[(first + j) % pre.size()];
        int32_t done;
        if (j == 0) {
            const int32_t lo = fe::min_rows(path_of(s, *rp));
            const int32_t floor = std::min<int32_t>(kBusyFloor, (int32_t)s->params.n_batch_busy);
            done = prefill_chunk(s, rp, std::max({budget, floor, lo}));
            if (done == 0) done = prefill_chunk(s, rp, std::max(budget, 2 * lo));
        } else {
            done = prefill_chunk(s, rp, budget);
        }
        budget -= done;
        if (budget < 2) break;
    }
}

// One decode batch: the next token of every running request, one row each (its own sequence and
// KV stream). llama.cpp evaluates a row of one sequence with the same bits alone or next to rows
// of other sequences (measured on the pinned build; test_sched compares with sessions), so the
// batch changes throughput, not tokens. Rows go by ascending sequence id (llama.cpp groups
// consecutive ids into one graph evaluation and splits at a gap).
void decode_all(fe_scheduler *s) {
    std::vector<RequestPtr> run;
    for (auto &r : s->slots) {
        if (!r || !r->need_decode) continue;
        if (r->n_gen >= r->gp.max_tokens) { end(s, r, FE_STOP_MAX_TOKENS); continue; }
        if (r->n_past >= (int32_t)s->params.n_ctx) { end(s, r, FE_STOP_CONTEXT_FULL); continue; }
        run.push_back(r);
    }
    if (run.empty()) return;
    const int32_t n = (int32_t)run.size();
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int32_t i = 0; i < n; i++) {
        const Request &r = *run[(size_t)i];
        b.token[i] = r.last;
        b.pos[i] = r.n_past;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = r.seq;
        b.logits[i] = true;
    }
    b.n_tokens = n;
    fe::clear_llama_errors();
    const double t0 = fe::now_ms();
    int32_t rc = llama_decode(s->ctx, b);
    llama_batch_free(b);
    if (rc != 0) {
        std::string msg = decode_error(rc, "generation");
        bool closing = s->shared->closing_flag.load();
        for (auto &r : run) {
            r->kv_ok = false;
            if (rc == 2 && closing) end(s, r, FE_STOP_CANCELLED);
            else end(s, r, FE_STOP_NONE, FE_ERR_DECODE, msg);
        }
        return;
    }
    double t = fe::now_ms();
    s->decode_step_ms = moving_average(s->decode_step_ms, t - t0);
    for (int32_t i = 0; i < n; i++) {
        const RequestPtr &rp = run[(size_t)i];
        if (s->params.reuse_generated || s->params.settle_answers) rp->decoded.push_back(rp->last);
        rp->n_past++;
        s->cells[(size_t)rp->seq] = rp->n_past;
        rp->need_decode = false;
        llama_token tok = sample(s, *rp, i);
        if (tok < 0) {
            end(s, rp, FE_STOP_NONE, FE_ERR_INVALID_ARG, rp->grammar_error);
            continue;
        }
        on_token(s, rp, tok, t);
    }
}

// A free slot whose last answer waits to be settled (-1: none).
int32_t unsettled_slot(const fe_scheduler *s) {
    for (size_t i = 0; i < s->slots.size(); i++)
        if (!s->slots[i] && !s->unsettled[i].empty()) return (int32_t)i;
    return -1;
}

// settle_answers, while nothing runs: one chunk of a free slot's last answer evaluated again as
// prompt rows after the slot's cached prompt, on the kernel path of its cached rows (chunked as
// a prefill, fe::next_chunk), so that a request that repeats the answer (a chat's next turn)
// reuses it as exactly as the prompt. An arrival stops the chunk (the abort callback watches
// Shared::arrival) and it is tried again at the next idle moment; rows that cannot go on the
// path are dropped.
void settle_step(fe_scheduler *s, int32_t seq) {
    const size_t i = (size_t)seq;
    std::vector<llama_token> &rows = s->unsettled[i];
    const fe::RowPath path = (fe::RowPath)s->cached_path[i];
    const int32_t n = fe::next_chunk(path, (int32_t)s->params.n_batch, (int32_t)rows.size());
    const int32_t at = s->cells[i];
    if (fe::batch_path(s->params.flash_attn, n) != (int)path || at != (int32_t)s->cached[i].size()) {
        rows.clear();
        return;
    }
    llama_batch b = seq_rows(rows.data(), n, at, seq, false);
    fe::clear_llama_errors();
    s->abort_flag.store(&s->shared->arrival, std::memory_order_release);
    int32_t rc = llama_decode(s->ctx, b);
    s->abort_flag.store(nullptr, std::memory_order_release);
    llama_batch_free(b);
    if (rc != 0) {  // the stream keeps its cached rows; the chunk's are removed
        llama_memory_t mem = llama_get_memory(s->ctx);
        if (!llama_memory_seq_rm(mem, seq, at, -1)) {
            llama_memory_seq_rm(mem, seq, 0, -1);
            s->cached[i].clear();
            s->cells[i] = 0;
        }
        if (rc != 2) {  // a failed decode: the answer is not settled
            rows.clear();
            return;
        }
        std::lock_guard<std::mutex> lk(s->shared->mu);  // aborted (an arrival, closing): tried again when idle
        s->shared->settles_stopped++;
        return;
    }
    s->cached[i].insert(s->cached[i].end(), rows.begin(), rows.begin() + n);
    rows.erase(rows.begin(), rows.begin() + n);
    s->cells[i] = at + n;
    std::lock_guard<std::mutex> lk(s->shared->mu);
    s->shared->settled_tokens += n;
}

// The adaptive batch size (see the header): grow while requests wait and the p99 holds, shrink
// when it passes the bound.
void adapt(fe_scheduler *s) {
    Shared &sh = *s->shared;
    std::lock_guard<std::mutex> lk(sh.mu);
    sh.steps++;
    s->steps_since_change++;
    double p99 = sh.latency.percentile(99);
    if (sh.latency.size() >= 8 && p99 > s->params.p99_token_ms && sh.batch_size > 1) {
        sh.batch_size--;
        sh.latency.clear();
        s->steps_since_change = 0;
    } else if (s->steps_since_change >= 2 && !sh.queue.empty() && sh.n_active >= sh.batch_size &&
               sh.batch_size < s->params.n_slots && sh.latency.size() > 0 && p99 < kBoundHolds * s->params.p99_token_ms) {
        sh.batch_size = std::min(s->params.n_slots, 2 * sh.batch_size);
        sh.peak_batch_size = std::max(sh.peak_batch_size, sh.batch_size);
        s->steps_since_change = 0;
    }
}

void step(fe_scheduler *s) {
    for (auto &r : s->slots)
        if (r && r->cancel.load(std::memory_order_relaxed)) end(s, RequestPtr(r), FE_STOP_CANCELLED);
    bool decoding = false;
    for (auto &r : s->slots) decoding = decoding || (r && r->need_decode);
    prefill_step(s, decoding);
    decode_all(s);
    adapt(s);
}

// How long the scheduler is idle before it settles answers (settle_step; fe_settle_idle_ms).
constexpr std::chrono::milliseconds kSettleAfterIdle{100};

void run(fe_scheduler *s) {
    Shared &sh = *s->shared;
    bool settled_last = false;  // the last turn of the loop was a settle chunk (still idle)
    for (;;) {
        std::vector<RequestPtr> dropped;
        bool closing;
        int32_t settle = -1;
        {
            std::unique_lock<std::mutex> lk(sh.mu);
            int32_t active = 0;
            for (auto &r : s->slots) active += r ? 1 : 0;
            if (active == 0 && sh.queue.empty() && !sh.closing) {
                // idle: settle an answer (stopped by the next arrival), or wait for work. Once idle,
                // a settle waits kSettleAfterIdle first: a client's next request in a closed loop
                // comes sooner (the settle would take its CPU), a person's next turn later.
                auto work = [&] { return sh.closing || !sh.queue.empty(); };
                settle = unsettled_slot(s);
                if (settle >= 0 && !settled_last && sh.cv.wait_for(lk, kSettleAfterIdle, work)) settle = -1;
                if (settle >= 0) sh.arrival.store(false, std::memory_order_relaxed);
                else if (!work()) sh.cv.wait(lk, work);
            }
            settled_last = settle >= 0;
            closing = sh.closing;
            // queued requests that were cancelled (or all of them when closing) end without a slot
            for (auto it = sh.queue.begin(); it != sh.queue.end();) {
                if (closing || (*it)->cancel.load()) {
                    dropped.push_back(*it);
                    it = sh.queue.erase(it);
                } else {
                    ++it;
                }
            }
            while (!closing && !sh.queue.empty() && active < sh.batch_size) {
                int32_t keep = 0;
                const int32_t seq = choose_slot(s, *sh.queue.front(), &keep);
                if (seq < 0) break;
                RequestPtr r = sh.queue.front();
                sh.queue.pop_front();
                r->seq = seq;
                r->n_keep = keep;
                s->slots[(size_t)seq] = r;
                active++;
            }
            sh.n_active = active;
            sh.peak_active = std::max(sh.peak_active, active);
        }
        for (auto &r : dropped) end(s, r, FE_STOP_CANCELLED);
        if (closing) {
            for (auto &r : s->slots)
                if (r) end(s, RequestPtr(r), FE_STOP_CANCELLED);
            signal_wake(sh);
            return;
        }
        try {
            if (settle >= 0) {
                settle_step(s, settle);
                continue;
            }
            step(s);
        } catch (const std::exception &e) {
            for (auto &r : s->slots)
                if (r) end(s, RequestPtr(r), FE_STOP_NONE, FE_ERR_INTERNAL, std::string("scheduler: ") + e.what());
        }
        signal_wake(sh);
    }
}

// ------------------------------------------------------------------ submit (caller's thread)

// The ranges of the parameters (fe_scheduler_params_check); check_params adds the KV cache's size.
fe_status check_ranges(const fe_scheduler_params &p) {
    const int32_t cpus = fe_cpu_count();
    if (p.n_slots < 1 || p.n_slots > 64)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_slots = %d is out of range: use 1..64", p.n_slots);
    if (p.n_ctx < 8 || p.n_ctx > (1u << 20))
        return fe::set_error(FE_ERR_INVALID_ARG, "n_ctx = %u is out of range: use 8..%u tokens per request",
                             p.n_ctx, 1u << 20);
    if (p.n_batch < 2 || p.n_batch > 512)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_batch = %u is out of range: use 2..512", p.n_batch);
    if (p.n_batch_busy != 0 && (p.n_batch_busy < 2 || p.n_batch_busy > p.n_batch))
        return fe::set_error(FE_ERR_INVALID_ARG, "n_batch_busy = %u is out of range: use 0 (auto) or 2..n_batch (%u)",
                             p.n_batch_busy, p.n_batch);
    if (p.n_threads < 1 || p.n_threads > cpus)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_threads = %d is out of range: use 1..%d (the CPUs online)",
                             p.n_threads, cpus);
    if (p.n_threads_batch < 1 || p.n_threads_batch > cpus)
        return fe::set_error(FE_ERR_INVALID_ARG, "n_threads_batch = %d is out of range: use 1..%d (the CPUs online)",
                             p.n_threads_batch, cpus);
    if (p.max_queued < 1 || p.max_queued > 65536)
        return fe::set_error(FE_ERR_INVALID_ARG, "max_queued = %d is out of range: use 1..65536", p.max_queued);
    if (!(p.p99_token_ms > 0) || p.p99_token_ms > 1e7)
        return fe::set_error(FE_ERR_INVALID_ARG, "p99_token_ms = %g is out of range: use a bound > 0 ms",
                             p.p99_token_ms);
    return FE_OK;
}

fe_status check_params(const fe_model *model, const fe_scheduler_params &p) {
    fe_status st = check_ranges(p);
    if (st != FE_OK) return st;
    // the KV cache of every sequence must fit in RAM (the session's rule, on the total)
    uint32_t total = p.n_ctx * (uint32_t)p.n_slots;
    double need = fe::kv_cache_bytes(model->model, total), ram = fe::total_ram_bytes();
    if (total > (1u << 24) || (ram > 0 && need > ram))
        return fe::set_error(FE_ERR_INVALID_ARG,
                             "n_slots x n_ctx = %u tokens need %.0f MiB of KV cache, more than this machine's %.0f "
                             "MiB of RAM; use fewer slots or a smaller n_ctx",
                             total, need / 1048576.0, ram / 1048576.0);
    return FE_OK;
}

// Checks + tokenization as fe_request_start does, then the queue (bounded).
template <typename Tokenize>
fe_status submit(fe_scheduler *s, const fe_generate_params *params, fe_sched_request **out, Tokenize &&tokenize,
                 const fe_chat_message *chat = nullptr, size_t n_chat = 0) {
    if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "out is NULL");
    *out = nullptr;
    if (!s) return fe::set_error(FE_ERR_INVALID_ARG, "scheduler is NULL");
    double t_submit = fe::now_ms();
    fe_generate_params gp = params ? *params : fe_generate_default_params();
    if (gp.max_tokens < 0)
        return fe::set_error(FE_ERR_INVALID_ARG, "max_tokens = %d is out of range: use 0 or more", gp.max_tokens);
    if (gp.n_stop > 0 && !gp.stop) return fe::set_error(FE_ERR_INVALID_ARG, "n_stop > 0 but stop is NULL");
    fe_status st = fe_sampling_check(&gp.sampling);
    if (st != FE_OK) return st;
    auto r = std::make_shared<Request>();
    for (size_t i = 0; i < gp.n_stop; i++)
        if (gp.stop[i] && *gp.stop[i]) r->stops.emplace_back(gp.stop[i]);
    gp.stop = nullptr;
    gp.n_stop = 0;
    gp.on_token = nullptr;
    r->gp = gp;
    r->t_submit = t_submit;
    st = tokenize(r->prompt);
    if (st != FE_OK) return st;
    st = fe::check_prompt(s->model, r->prompt, (int32_t)s->params.n_ctx, "scheduler");
    if (st != FE_OK) return st;
    r->sampler = fe::make_sampler(s->model->vocab, s->params.n_ctx, r->gp.sampling);
    if (gp.sampling.grammar || gp.sampling.json_schema) {  // converted and checked now, on the caller's thread
        st = fe::make_grammar(s->model->vocab, gp.sampling.grammar, gp.sampling.json_schema, &r->grammar);
        if (st != FE_OK) return st;
    }
    r->gp.sampling.grammar = r->gp.sampling.json_schema = nullptr;  // the caller's text need not outlive submit
    r->text = std::make_unique<fe::TextStream>(r->stops);
    r->shared = s->shared;
    auto h = std::make_unique<fe_sched_request>();
    h->r = r;
    {
        std::lock_guard<std::mutex> lk(s->shared->mu);
        if (s->shared->closing) return fe::set_error(FE_ERR_INVALID_ARG, "the scheduler is closing");
        if ((int32_t)s->shared->queue.size() >= s->params.max_queued) {
            s->shared->rejected++;
            return fe::set_error(FE_ERR_BUSY,
                                 "the scheduler's queue is full (%d requests waiting for a slot); retry later or "
                                 "create it with a larger max_queued",
                                 s->params.max_queued);
        }
        s->shared->queue.push_back(r);
        s->shared->submitted++;
        s->shared->arrival.store(true, std::memory_order_relaxed);
        s->shared->cv.notify_all();
    }
    *out = h.release();
    if (gp.max_tokens > 0) {  // as a session counts it (a queued request; max_tokens 0 is not a question)
        std::lock_guard<std::mutex> lk(s->drift_mu);
        fe::drift_count_request(s->drift, s->model, r->prompt, chat, n_chat);
    }
    return FE_OK;
}

fe_status next_event(fe_sched_request *req, fe_token_event *ev, int32_t timeout_ms) {
    if (!req || !ev) return fe::set_error(FE_ERR_INVALID_ARG, "fe_sched_next: req or ev is NULL");
    memset(ev, 0, sizeof *ev);
    ev->token = -1;
    ev->text = "";
    Request &r = *req->r;
    std::unique_lock<std::mutex> lk(r.mu);
    if (r.consumed) return fe::set_error(FE_ERR_INVALID_ARG, "fe_sched_next: this request has ended");
    auto ready = [&] { return !r.events.empty(); };
    if (timeout_ms < 0) {
        r.cv.wait(lk, ready);
    } else if (timeout_ms == 0 ? !ready() : !r.cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready)) {
        // (0 ms: a plain check; a timed wait would still sleep in the kernel once)
        return fe::set_error(FE_ERR_BUSY, "fe_sched_next: no event within %d ms", timeout_ms);
    }
    Event e = std::move(r.events.front());
    r.events.pop_front();
    if (e.status != FE_OK) {
        r.consumed = true;
        return fe::set_error(e.status, "%s", e.text.c_str());
    }
    if (e.done) r.consumed = true;
    r.cur_text = std::move(e.text);
    ev->text = r.cur_text.c_str();
    ev->text_len = r.cur_text.size();
    ev->token = e.token;
    ev->done = e.done;
    ev->stop_reason = e.reason;
    return FE_OK;
}

}  // namespace

extern "C" {

int32_t fe_settle_idle_ms(void) { return (int32_t)kSettleAfterIdle.count(); }

fe_status fe_scheduler_params_check(const fe_scheduler_params *params) {
    return fe::guard("fe_scheduler_params_check", [&]() -> fe_status {
        fe::clear_error();
        if (!params) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_params_check: params is NULL");
        return check_ranges(*params);
    });
}

fe_scheduler_params fe_scheduler_default_params(void) {
    fe_scheduler_params p;
    memset(&p, 0, sizeof p);
    p.n_slots = 4;
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.n_batch_busy = 0;  // min(64, n_batch)
    p.n_threads = fe_default_n_threads();
    p.n_threads_batch = p.n_threads;
    p.max_queued = 64;
    p.p99_token_ms = 150.0;
    p.prefix_reuse = true;
    p.reuse_generated = false;
    p.settle_answers = true;
    return p;
}

fe_status fe_scheduler_create(fe_model *model, const fe_scheduler_params *params, fe_scheduler **out) {
    return fe::guard("fe_scheduler_create", [&]() -> fe_status {
        fe::clear_error();
        if (!out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_create: out is NULL");
        *out = nullptr;
        if (!model) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_create: model is NULL");
        fe_scheduler_params p = params ? *params : fe_scheduler_default_params();
        fe_status st = check_params(model, p);
        if (st != FE_OK) return st;
        auto s = std::make_unique<fe_scheduler>();
        s->model = model;
        if (p.n_batch_busy == 0) p.n_batch_busy = std::min<uint32_t>(64, p.n_batch);
        s->params = p;
        s->n_seq = p.n_slots;
        s->shared = std::make_shared<Shared>();
        s->slots.resize((size_t)s->n_seq);
        s->cells.assign((size_t)s->n_seq, 0);
        s->cached.assign((size_t)s->n_seq, {});
        s->cached_path.assign((size_t)s->n_seq, 0);
        s->unsettled.assign((size_t)s->n_seq, {});
        fe::ContextSpec spec;  // one KV stream per slot: each request's cells start at 0, as in a session
        spec.n_ctx = p.n_ctx;
        spec.n_seq = (uint32_t)s->n_seq;
        spec.n_batch = std::max<uint32_t>(p.n_batch, (uint32_t)s->n_seq);
        spec.n_ubatch = spec.n_batch;
        spec.n_threads = p.n_threads;
        spec.n_threads_batch = p.n_threads_batch;
        spec.flash_attn = p.flash_attn;  // as sessions: on, prompts are chunked on one kernel path
        spec.abort = abort_requested;
        spec.abort_data = s.get();
        s->ctx = fe::new_context(model, spec);
        if (!s->ctx) return FE_ERR_OUT_OF_MEMORY;
        fe_scheduler *raw = s.get();
        s->thread = std::thread([raw] { run(raw); });
        *out = s.release();
        return FE_OK;
    });
}

void fe_scheduler_free(fe_scheduler *sched) {
    if (!sched) return;
    {
        std::lock_guard<std::mutex> lk(sched->shared->mu);
        sched->shared->closing = true;
        sched->shared->closing_flag.store(true);
        sched->shared->cv.notify_all();
    }
    if (sched->thread.joinable()) sched->thread.join();
    llama_free(sched->ctx);
    fe_drift_monitor_free(sched->drift);
    delete sched;
}

fe_status fe_sched_submit(fe_scheduler *sched, const char *prompt, const fe_generate_params *params,
                          fe_sched_request **out) {
    return fe::guard("fe_sched_submit", [&]() -> fe_status {
        fe::clear_error();
        bool add = params ? params->add_special : true, parse = params ? params->parse_special : true;
        return submit(sched, params, out, [&](std::vector<llama_token> &toks) {
            return fe::tokenize_text(sched->model, prompt, add, parse, toks);
        });
    });
}

fe_status fe_sched_submit_tokens(fe_scheduler *sched, const int32_t *tokens, int32_t n_tokens,
                                 const fe_generate_params *params, fe_sched_request **out) {
    return fe::guard("fe_sched_submit_tokens", [&]() -> fe_status {
        fe::clear_error();
        return submit(sched, params, out, [&](std::vector<llama_token> &toks) {
            if (!tokens || n_tokens <= 0)
                return fe::set_error(FE_ERR_INVALID_ARG, "tokens is NULL or n_tokens <= 0");
            toks.assign(tokens, tokens + n_tokens);
            return FE_OK;
        });
    });
}

fe_status fe_sched_submit_chat(fe_scheduler *sched, const fe_chat_message *messages, size_t n_messages,
                               const fe_generate_params *params, fe_sched_request **out) {
    return fe::guard("fe_sched_submit_chat", [&]() -> fe_status {
        fe::clear_error();
        return submit(sched, params, out, [&](std::vector<llama_token> &toks) {
            return fe::chat_tokens(sched->model, messages, n_messages, true, toks);
        }, messages, n_messages);
    });
}

fe_status fe_chat_tokenize(const fe_model *model, const fe_chat_message *messages, size_t n_messages,
                           int32_t *tokens, int32_t max_tokens, int32_t *n_out) {
    return fe::guard("fe_chat_tokenize", [&]() -> fe_status {
        fe::clear_error();
        if (!model || !n_out || max_tokens < 0 || (max_tokens > 0 && !tokens))
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_chat_tokenize: NULL argument or max_tokens < 0");
        std::vector<llama_token> toks;
        fe_status st = fe::chat_tokens(model, messages, n_messages, true, toks);
        if (st != FE_OK) return st;
        *n_out = (int32_t)toks.size();
        if ((size_t)max_tokens < toks.size())
            return fe::set_error(FE_ERR_BUFFER_TOO_SMALL, "fe_chat_tokenize: %zu tokens, room for %d", toks.size(),
                                 max_tokens);
        std::copy(toks.begin(), toks.end(), tokens);
        return FE_OK;
    });
}

fe_status fe_sched_next(fe_sched_request *req, fe_token_event *ev) {
    return fe::guard("fe_sched_next", [&]() -> fe_status {
        fe::clear_error();
        return next_event(req, ev, -1);
    });
}

fe_status fe_sched_next_timeout(fe_sched_request *req, fe_token_event *ev, int32_t timeout_ms) {
    return fe::guard("fe_sched_next_timeout", [&]() -> fe_status {
        fe::clear_error();
        if (timeout_ms < 0)
            return fe::set_error(FE_ERR_INVALID_ARG, "timeout_ms = %d is out of range: use 0 or more", timeout_ms);
        return next_event(req, ev, timeout_ms);
    });
}

fe_status fe_scheduler_set_wakeup_fd(fe_scheduler *sched, int fd) {
    if (!sched) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_set_wakeup_fd: sched is NULL");
#ifdef _WIN32
    if (fd >= 0) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_set_wakeup_fd: no wake-up fd on Windows");
#endif
    Shared &sh = *sched->shared;
    std::lock_guard<std::mutex> lk(sh.wake_mu);
    sh.wake_fd = fd < 0 ? -1 : fd;
    return FE_OK;
}

void fe_sched_cancel(fe_sched_request *req) {
    if (!req) return;
    req->r->cancel.store(true);
    Shared &sh = *req->r->shared;
    std::lock_guard<std::mutex> lk(sh.mu);
    sh.cv.notify_all();
}

fe_status fe_sched_request_get_profile(const fe_sched_request *req, struct fe_profile *out) {
    if (!req || !out) return fe::set_error(FE_ERR_INVALID_ARG, "fe_sched_request_get_profile: req or out is NULL");
    Request &r = *req->r;
    std::lock_guard<std::mutex> lk(r.mu);
    if (!r.ended) return fe::set_error(FE_ERR_BUSY, "fe_sched_request_get_profile: the request has not ended yet");
    *out = r.profile;
    out->token_ms = r.token_ms.empty() ? nullptr : r.token_ms.data();
    out->n_token_ms = r.token_ms.size();
    return FE_OK;
}

void fe_sched_request_free(fe_sched_request *req) {
    if (!req) return;
    fe_sched_cancel(req);
    delete req;
}

fe_status fe_scheduler_enable_drift(fe_scheduler *sched, const char *path) {
    return fe::guard("fe_scheduler_enable_drift", [&]() -> fe_status {
        fe::clear_error();
        if (!sched) return fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_enable_drift: scheduler is NULL");
        fe_drift_monitor *m = nullptr;
        if (path) {
            fe_status st = fe::drift_monitor_for(sched->model, path, &m);
            if (st != FE_OK) return st;
        }
        {
            std::lock_guard<std::mutex> lk(sched->drift_mu);
            std::swap(sched->drift, m);
        }
        fe_drift_monitor_free(m);  // the one replaced
        return FE_OK;
    });
}

fe_drift_monitor *fe_scheduler_drift_monitor(fe_scheduler *sched) {
    if (!sched) return nullptr;
    std::lock_guard<std::mutex> lk(sched->drift_mu);
    return sched->drift;
}

char *fe_scheduler_stats_json(fe_scheduler *sched) {
    if (!sched) {
        fe::set_error(FE_ERR_INVALID_ARG, "fe_scheduler_stats_json: scheduler is NULL");
        return nullptr;
    }
    Shared &sh = *sched->shared;
    char buf[2048];
    {
        std::lock_guard<std::mutex> lk(sh.mu);
        double now = fe::now_ms();
        snprintf(buf, sizeof buf,
                 "{\"n_slots\": %d, \"queued\": %zu, \"active\": %d, \"batch_size\": %d, \"p99_bound_ms\": %.3f, "
                 "\"tokens_per_s\": %.3f, \"token_ms_p50\": %.3f, \"token_ms_p99\": %.3f, \"steps\": %lld, "
                 "\"generated\": %lld, \"submitted\": %lld, \"completed\": %lld, \"cancelled\": %lld, "
                 "\"rejected\": %lld, \"failed\": %lld, \"peak_active\": %d, \"peak_batch_size\": %d, "
                 "\"prompt_tokens\": %lld, \"prompt_tokens_reused\": %lld, \"prefix_copies\": %lld, "
                 "\"prompt_chunks\": %lld, \"settled_tokens\": %lld, \"settles_stopped\": %lld}",
                 sched->params.n_slots, sh.queue.size(), sh.n_active, sh.batch_size, sched->params.p99_token_ms,
                 sh.rate.per_second(now), sh.latency.percentile(50), sh.latency.percentile(99), (long long)sh.steps,
                 (long long)sh.generated, (long long)sh.submitted, (long long)sh.completed,
                 (long long)sh.cancelled, (long long)sh.rejected, (long long)sh.failed, sh.peak_active,
                 sh.peak_batch_size, (long long)sh.prompt_tokens, (long long)sh.prompt_tokens_reused,
                 (long long)sh.prefix_copies, (long long)sh.prompt_chunks, (long long)sh.settled_tokens,
                 (long long)sh.settles_stopped);
    }
    char *out = (char *)malloc(strlen(buf) + 1);
    if (!out) {
        fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_scheduler_stats_json: out of memory");
        return nullptr;
    }
    memcpy(out, buf, strlen(buf) + 1);
    return out;
}

}  // extern "C"
